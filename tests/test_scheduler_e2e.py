"""End to end, issue 8: a real hesd runs a schedule of block-load reads over simulated meters
(hesd-sim, running in real time so the profile has intervals up to now); the readings reach the
reference MDM receiver once each, a second run reads only what is new, and ``hesctl schedule``
shows the run and its success ratio, also after a restart."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HesdProcess, wait_for, write_config
from tests.sim_process import SimProcess
from tests.test_uplink_e2e import TOKEN, ReceiverThread

pytestmark = pytest.mark.integration

METERS = 24
StartHesd = Callable[..., HesdProcess]


@pytest.fixture
def mdm() -> Iterator[ReceiverThread]:
    receiver = ReceiverThread()
    yield receiver
    receiver.close()


def _schedules(hesd: HesdProcess) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(hesd.hesctl("schedule", "--json").stdout)
    return info


def test_a_scheduled_bulk_read_reaches_the_mdm_and_hesctl_shows_it(
    start_hesd: StartHesd,
    sim_process: Callable[..., SimProcess],
    tmp_path: Path,
    mdm: ReceiverThread,
) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    sim = sim_process(
        *("--meters", str(METERS), "--mode", "serve", "--port", "0"),
        *("--start", now.isoformat().replace("+00:00", "Z"), "--time-scale", "1"),
    )
    secrets = tmp_path / "secrets.toml"
    secrets.write_text(sim.secrets.read_text() + f'\n[tokens]\nmdm = "{TOKEN}"\n')
    secrets.chmod(0o600)
    config = write_config(
        tmp_path,
        daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{secrets}"',
        uplink=f'url = "{mdm.url}"\nhes_id = "e2e"\ntoken = "mdm"\nbatch_delay = 0.1',
        scheduler='time_zone = "Asia/Kolkata"',
        **{
            "schedules.block_load": (
                'cron = "0 0 1 1 *"\nread = { profile = "block_load" }\nvendors = ["is15959"]\n'
                "window = 3.0\nmax_backfill = 7200.0"
            )
        },
    )
    hesd = start_hesd(config)
    hesd.hesctl("meters", "import", str(sim.inventory))

    ran = hesd.hesctl("schedule", "run", "block_load", "--wait", "60")
    assert ran.stdout.startswith(f"block_load: finished, {METERS} of {METERS} meters read"), (
        ran.stdout
    )
    [shown] = _schedules(hesd)["schedules"]
    last = shown["last_run"]
    assert (shown["state"], last["trigger"], last["success_ratio"]) == ("idle", "manual", 1.0)
    assert (last["selected"], last["failed"], last["skipped"], last["missed"]) == (METERS, 0, 0, 0)
    assert last["link_overruns"] == 0
    assert 1 <= last["max_link_in_flight"] <= 4  # tcp.per_destination; each meter its own host
    assert shown["next_run"].endswith("T18:30:00Z")  # 00:00 IST on 1 January
    # two hours of 30-minute blocks: four or five rows, four quantities each, per meter
    per_meter = last["readings"] // METERS
    assert last["readings"] == per_meter * METERS
    assert per_meter in (16, 20)

    wait_for(lambda: len(mdm.readings()) >= last["readings"], 20, "the readings at the MDM")
    first = mdm.readings()
    assert len(first) == last["readings"]
    assert {r["source"] for r in first} == {"schedule"}
    assert set(Counter(r["meter_id"] for r in first).values()) == {per_meter}
    energies = [r for r in first if r["quantity"] == "block_energy_active_import"]
    newest = max(energies, key=lambda r: r["timestamp"])
    truth = sim.api(
        f"/meters/{newest['meter_id']}/truth?quantity=block_energy_active_import"
        f"&t={newest['timestamp']}"
    )
    assert Decimal(newest["value"]) == Decimal(truth["raw"]).scaleb(int(truth["scaler"]) - 3)

    # a second run reads only after the newest row hesd has: nothing twice
    hesd.hesctl("schedule", "run", "block_load", "--wait", "60")
    second = _schedules(hesd)["schedules"][0]["last_run"]
    assert second["succeeded"] == METERS
    assert second["readings"] in (0, 4 * METERS)  # a new block, if one ended meanwhile
    wait_for(lambda: len(mdm.readings()) >= len(first) + second["readings"], 20, "the second run's")
    keys = Counter((r["meter_id"], r["quantity"], r["timestamp"]) for r in mdm.readings())
    assert max(keys.values()) == 1

    table = hesd.hesctl("schedule").stdout.splitlines()
    assert table[0].split()[:2] == ["SCHEDULE", "CRON"]
    assert table[1].split()[0] == "block_load"
    assert "100.0 %" in table[1]

    # the last run is on disk: a restarted hesd shows it
    assert hesd.stop() == 0
    again = start_hesd(config)
    [shown] = _schedules(again)["schedules"]
    assert shown["last_run"]["started_at"] == second["started_at"]
    assert shown["last_run"]["success_ratio"] == 1.0
    runs = json.loads(again.hesctl("schedule", "show", "block_load", "--json").stdout)["runs"]
    assert [r["trigger"] for r in runs] == ["manual", "manual"]
    assert again.stop() == 0
    sim.stop()


def test_sighup_reloads_the_schedules_and_refuses_a_bad_one(
    start_hesd: StartHesd, tmp_path: Path
) -> None:
    def config(schedules: str) -> Path:
        return write_config(
            tmp_path, scheduler='time_zone = "Asia/Kolkata"', **schedules_of(schedules)
        )

    def schedules_of(text: str) -> dict[str, str]:
        name, _, body = text.partition("\n")
        return {f"schedules.{name}": body}

    hesd = start_hesd(config('hourly\ncron = "@hourly"\nread = { events = "all" }'))
    assert [s["name"] for s in _schedules(hesd)["schedules"]] == ["hourly"]

    config('quarter\ncron = "*/15 * * * *"\nread = { quantities = ["energy_active_import"] }')
    hesd.proc.send_signal(1)  # SIGHUP
    hesd.notify.wait_count("READY=1", 2)
    [shown] = _schedules(hesd)["schedules"]
    assert (shown["name"], shown["cron"], shown["state"]) == ("quarter", "*/15 * * * *", "idle")
    minute = int(shown["next_run"][14:16])
    assert minute in (0, 15, 30, 45)

    config('broken\ncron = "*/15 * * *"\nread = { profile = "block_load" }')
    hesd.proc.send_signal(1)
    hesd.notify.wait_count("READY=1", 3)
    assert [s["name"] for s in _schedules(hesd)["schedules"]] == ["quarter"]  # kept
    assert "schedules.broken.cron: '*/15 * * *': expected 5 fields" in hesd.log_text()
    assert hesd.stop() == 0


def test_outbox_pressure_pauses_a_run_until_the_outbox_drains(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    """A real hesd whose outbox is at 95 % of its budget (a dead letter of ~1 MB): a run starts
    no read, says so in the log, the API and hesctl schedule; purging the dead letter (what the
    forwarder's deliveries do too) lets it read every meter."""
    sim = sim_process("--meters", str(METERS), "--mode", "serve", "--port", "0")
    config = write_config(
        tmp_path,
        daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"',
        uplink=f"max_backlog_bytes = {1 << 20}",  # no url: nothing is forwarded
        **{
            "schedules.now": (
                'cron = "@yearly"\nread = { quantities = ["energy_active_import"] }\n'
                'jitter = "none"\nwindow = 120.0'
            )
        },
    )
    first = start_hesd(config)
    first.hesctl("meters", "import", str(sim.inventory))
    assert first.stop() == 0
    with sqlite3.connect(first.state_dir / "hesd.db") as db:
        db.execute(
            "INSERT INTO outbox (kind, meter_id, created_at, payload, state)"
            " VALUES ('reading', 'OLD-1', 0, ?, 'dead')",
            (b"\x00" * 1_000_000,),
        )
    hesd = start_hesd(config)
    hesd.hesctl("schedule", "run", "now")
    wait_for(lambda: '"scheduler.paused"' in hesd.log_text(), 20, "scheduler.paused")
    info = _schedules(hesd)
    [shown] = info["schedules"]
    assert info["paused"] is True
    assert shown["state"] == "paused"
    assert shown["current_run"]["done"] == 0
    table = hesd.hesctl("schedule").stdout
    assert "paused 0 %" in table.splitlines()[1]
    assert "paused: the outbox is at 90 % of uplink.max_backlog_bytes" in table

    hesd.hesctl("outbox", "purge", "--dead-letters", "--yes")
    wait_for(lambda: _schedules(hesd)["schedules"][0]["current_run"] is None, 30, "the run's end")
    [shown] = _schedules(hesd)["schedules"]
    assert (shown["last_run"]["succeeded"], shown["last_run"]["missed"]) == (METERS, 0)
    events = [json.loads(line)["event"] for line in hesd.log_text().splitlines()]
    assert events.count("scheduler.paused") == 1
    assert events.count("scheduler.resumed") == 1
    assert events.index("scheduler.paused") < events.index("scheduler.resumed")
    assert hesd.stop() == 0
