"""End to end: a tamper on a simulated meter reaches the MDM as an event within seconds.

A real hesd, real hesd-sim meters (time running at its real pace) and the reference MDM receiver
(bench/mdm_receiver.py, checking every body against docs/mdm-api.yaml). The simulator's control
API logs tampers on meters; each meter pushes its alert at once. The MDM gets the alert's event
(source alert) within a few seconds, then the same event read from the meter's log (source pull,
with its snapshot and the alert's event_id as alert_id): one read per meter for a burst of
alarms, and no two records of one event that do not say so by their identity. Meters that dial in
(tcp-in, IS 15959 with the ESW and Kalpa with the event code) and a meter hesd dials out to
(tcp-out: it pushes only while hesd's connection is up)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, HesdProcess, free_port, wait_for, write_config
from tests.sim_process import START, VENDORS, SimProcess
from tests.test_uplink_e2e import TOKEN, ReceiverThread

pytestmark = pytest.mark.integration

StartHesd = Callable[..., HesdProcess]
WITHIN = 5.0  # seconds from the tamper to the MDM: "within seconds"
ALERTS = "coalesce = 1.0"  # hesd.toml's: a burst of alarms shares one read


@pytest.fixture
def mdm() -> Iterator[ReceiverThread]:
    receiver = ReceiverThread()
    yield receiver
    receiver.close()


def events(mdm: ReceiverThread) -> list[dict[str, Any]]:
    return mdm.sync(lambda: list(mdm.mdm.records("events")))


def found(mdm: ReceiverThread, meter_id: str, **fields: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in events(mdm)
        if e["meter_id"] == meter_id and all(e.get(k) == v for k, v in fields.items())
    ]


def arrives(mdm: ReceiverThread, meter_id: str, within: float, **fields: Any) -> dict[str, Any]:
    """The first event of ``meter_id`` with ``fields`` at the MDM, waiting up to ``within``."""
    wait_for(lambda: bool(found(mdm, meter_id, **fields)), within, f"{meter_id} {fields}")
    return found(mdm, meter_id, **fields)[0]


def hesd_config(tmp_path: Path, mdm: ReceiverThread, keys: Path, **sections: str) -> Path:
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(keys.read_text() + f'\n[tokens]\nmdm = "{TOKEN}"\n')
    secrets.chmod(0o600)
    return write_config(
        tmp_path,
        daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{secrets}"',
        uplink=(
            f'url = "{mdm.url}"\nhes_id = "e2e"\ntoken = "mdm"\nbatch_delay = 0.1\n'
            "backoff_initial = 0.05\nbackoff_max = 0.5\ntimeout = 5.0"
        ),
        alerts=ALERTS,
        **sections,
    )


def instant(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def log_lines(hesd: HesdProcess, event: str) -> list[dict[str, Any]]:
    lines = (json.loads(line) for line in hesd.log_text().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def one_identity_per_event(records: list[dict[str, Any]]) -> None:
    """Records of one event (meter, log, time, code) share its event_id; per event_id at most one
    alert record and one record read from a log, the latter naming the alert it confirms."""
    ids: dict[tuple[str, str, str, int], set[str]] = {}
    by_id: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        key = (record["meter_id"], record["category"], record["timestamp"], record["code"])
        ids.setdefault(key, set()).add(record["event_id"])
        by_id.setdefault(record["event_id"], []).append(record)
    assert all(len(found) == 1 for found in ids.values()), ids
    for event_id, group in by_id.items():
        sources = Counter(r["source"] for r in group)
        assert sources["alert"] <= 1, group
        assert sources["pull"] <= 1, group
        for logged in (r for r in group if r["source"] == "pull" and sources["alert"]):
            assert logged["alert_id"] == event_id, group


def test_tampers_on_meters_that_dial_in_reach_the_mdm_as_events_within_seconds(
    tmp_path: Path, start_hesd: StartHesd, mdm: ReceiverThread
) -> None:
    port = free_port()
    fleet = ("--meters", "3", "--vendor", "is15959:2,kalpa:1", "--mode", "dial")
    probe = tmp_path / "probe"  # the inventory and keys first, then hesd, then the meters
    probe.mkdir()
    subprocess.run(
        [
            *(str(BIN / "hesd-sim"), "--vendors-dir", str(VENDORS), "--seed", "11", *fleet),
            *("--hes", "127.0.0.1:1", "--duration", "0.2", "--stats-interval", "0"),
            *("--inventory-out", str(probe / "meters.csv")),
            *("--secrets-out", str(probe / "secrets.toml")),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = hesd_config(
        tmp_path, mdm, probe / "secrets.toml", tcp=f'listen = ["127.0.0.1:{port}"]'
    )
    hesd = start_hesd(config)
    assert "3 created" in hesd.hesctl("meters", "import", str(probe / "meters.csv")).stdout
    sim = SimProcess(
        tmp_path, *fleet, "--hes", f"127.0.0.1:{port}", "--time-scale", "1", "--start", START
    )

    def online() -> int:
        return int(json.loads(hesd.hesctl("status", "--json").stdout)["meters"]["online"])

    wait_for(lambda: online() == 3, 20, "the meters to dial in")
    one, burst, kalpa = (m["id"] for m in sim.api("/meters")["meters"])
    assert "kalpa" in kalpa

    # one tamper: its alert, then the same event from the meter's log
    started = time.monotonic()
    tamper = sim.api(f"/meters/{one}/events", {"kind": "magnet_tamper"})
    assert (tamper["pushed"], tamper["alert"], tamper["esw_bit"]) == (True, True, 16)
    alert = arrives(mdm, one, WITHIN, source="alert")
    assert time.monotonic() - started < WITHIN
    assert (alert["kind"], alert["code"], alert["category"], alert["esw_bit"]) == (
        "magnet_tamper",
        201,
        "other",
        16,
    )
    assert abs(instant(alert["timestamp"]) - instant(tamper["time"])) < 0.011  # hundredths
    assert alert["snapshot"] == []
    logged = arrives(mdm, one, WITHIN, source="pull", alert_id=alert["event_id"])
    assert time.monotonic() - started < 2 * WITHIN
    assert (logged["event_id"], logged["timestamp"], logged["obis"]) == (
        alert["event_id"],
        alert["timestamp"],
        "0.0.99.98.4.255",
    )
    snapshot = {r["quantity"]: r for r in logged["snapshot"]}
    assert snapshot["tamper_count"]["value"] == "1"
    truth = sim.api(f"/meters/{one}")["truth"]["last_events"]
    assert [(e["code"], e["kind"]) for e in truth][-1] == (201, "magnet_tamper")
    assert abs(instant(truth[-1]["time"]) - instant(logged["timestamp"])) < 0.011

    # a burst of three tampers on one meter, and one on a Kalpa meter (the code, not the ESW)
    for kind in ("magnet_tamper", "cover_open", "current_bypass"):
        assert sim.api(f"/meters/{burst}/events", {"kind": kind})["pushed"]
    cover = sim.api(f"/meters/{kalpa}/events", {"kind": "cover_open"})
    assert (cover["alert"], cover["esw_bit"]) == (True, None)  # Kalpa pushes the code itself
    wait_for(lambda: len(found(mdm, burst, source="pull")) >= 3, 2 * WITHIN, "the burst's events")
    kalpa_alert = arrives(mdm, kalpa, WITHIN, source="alert")
    assert (kalpa_alert["kind"], kalpa_alert["code"], kalpa_alert["category"]) == (
        "cover_open",
        251,
        "non_rollover",
    )
    assert "esw_bit" not in kalpa_alert
    arrives(mdm, kalpa, WITHIN, source="pull", alert_id=kalpa_alert["event_id"])
    announced = found(mdm, burst, source="alert")
    assert sorted(e["kind"] for e in announced) == ["cover_open", "current_bypass", "magnet_tamper"]
    confirmed = {e["alert_id"] for e in found(mdm, burst, source="pull")}
    assert confirmed == {e["event_id"] for e in announced}

    reads = Counter(line["meter"] for line in log_lines(hesd, "alerts.read"))
    assert reads == {one: 1, burst: 1, kalpa: 1}  # the burst: one read of three logs
    [burst_read] = [line for line in log_lines(hesd, "alerts.read") if line["meter"] == burst]
    assert burst_read["logs"] == ["current", "other", "non_rollover"]
    assert burst_read["confirmed"] == 3
    one_identity_per_event(events(mdm))
    assert mdm.sync(lambda: mdm.mdm.duplicates) == 0
    status = json.loads(hesd.hesctl("status", "--json").stdout)["alerts"]
    assert status == {"received": 5, "events": 5, "reads": 3, "read_failures": 0, "unconfirmed": 0}
    sim.stop()
    hesd.stop()


def test_a_meter_hesd_dials_pushes_its_alert_while_the_link_is_up(
    tmp_path: Path,
    start_hesd: StartHesd,
    mdm: ReceiverThread,
    sim_process: Callable[..., SimProcess],
) -> None:
    sim = sim_process(
        *("--meters", "1", "--vendor", "is15959", "--mode", "serve", "--port", "0"),
        *("--time-scale", "1"),
    )
    hesd = start_hesd(hesd_config(tmp_path, mdm, sim.secrets))
    assert "1 created" in hesd.hesctl("meters", "import", str(sim.inventory)).stdout
    [meter] = sim.api("/meters")["meters"]
    meter_id = meter["id"]
    # no link: the meter has nowhere to push its alert
    unheard = sim.api(f"/meters/{meter_id}/events", {"kind": "magnet_tamper"})
    assert (unheard["alert"], unheard["pushed"]) == (True, False)
    # hesd dials it for a read; the connection stays up (tcp.idle_close) and carries the alert
    hesd.hesctl("read", meter_id, "-q", "energy_active_import")
    assert sim.api(f"/meters/{meter_id}")["connected"]
    started = time.monotonic()
    heard = sim.api(f"/meters/{meter_id}/events", {"kind": "cover_open"})
    assert (heard["alert"], heard["pushed"]) == (True, True)
    alert = arrives(mdm, meter_id, WITHIN, source="alert")
    assert time.monotonic() - started < WITHIN
    assert (alert["kind"], alert["code"], alert["esw_bit"]) == ("cover_open", 251, 19)
    logged = arrives(mdm, meter_id, WITHIN, source="pull")
    assert (logged["kind"], logged["alert_id"]) == ("cover_open", alert["event_id"])
    wait_for(lambda: bool(log_lines(hesd, "alerts.read")), WITHIN, "the read to be logged")
    [read] = log_lines(hesd, "alerts.read")
    assert read["logs"] == ["non_rollover"]  # the cover's log: the unheard magnet's is not read
    assert [e["kind"] for e in events(mdm)] == ["cover_open", "cover_open"]
    assert sim.api("/stats")["connections"] == 1  # the read ran on the link the alert came on
    hesd.stop()
    sim.stop()
