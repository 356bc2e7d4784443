"""End to end, issue 7: hesd-sim meters push to a real hesd, which forwards to the reference MDM
receiver (bench/mdm_receiver.py). The MDM goes away and comes back, answers 500 to a third of
requests, and hesd is killed with SIGKILL in the middle of a push storm: every reading hesd
acknowledged (committed to its outbox) reaches the MDM, once, in order per meter."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.mdm_receiver import MdmReceiver
from hesd.config import load_config
from hesd.uplink.outbox import record_texts
from tests.conftest import BIN, HesdProcess, free_port, wait_for, write_config
from tests.sim_process import START, VENDORS, SimProcess

pytestmark = pytest.mark.integration

T = TypeVar("T")
TOKEN = "e2e-mdm-token"
METERS = 40
StartHesd = Callable[..., HesdProcess]


class ReceiverThread:
    """The reference receiver on its own event loop, so the test may block (hesctl, waits)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mdm", daemon=True)
        self.thread.start()
        self.mdm = MdmReceiver(token=TOKEN)
        self.url = self.call(self.mdm.start())

    def call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def sync(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        return self.call(run())  # type: ignore[no-any-return]

    def readings(self) -> list[dict[str, Any]]:
        return self.sync(lambda: list(self.mdm.records("readings")))

    def close(self) -> None:
        self.call(self.mdm.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def mdm() -> Iterator[ReceiverThread]:
    receiver = ReceiverThread()
    yield receiver
    receiver.close()


class Fleet:
    """hesd listening, its inventory imported, and hesd-sim meters dialling in and pushing."""

    def __init__(
        self, tmp_path: Path, start_hesd: StartHesd, mdm: ReceiverThread, push_every: float
    ) -> None:
        self.tmp_path = tmp_path
        self.start_hesd = start_hesd
        self.port = free_port()
        args = ["--meters", str(METERS), "--mode", "dial", "--hes", f"127.0.0.1:{self.port}"]
        # the inventory and keys first (the same seed makes the same fleet), then hesd, then
        # the meters, so that none dials in before hesd knows it
        probe = tmp_path / "probe"
        probe.mkdir()
        subprocess.run(
            [
                *(str(BIN / "hesd-sim"), "--vendors-dir", str(VENDORS), "--seed", "11"),
                *args[:4],
                *("--hes", "127.0.0.1:1", "--duration", "0.2", "--stats-interval", "0"),
                *("--inventory-out", str(probe / "meters.csv")),
                *("--secrets-out", str(probe / "secrets.toml")),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        secrets = tmp_path / "secrets.toml"
        secrets.write_text((probe / "secrets.toml").read_text() + f'\n[tokens]\nmdm = "{TOKEN}"\n')
        secrets.chmod(0o600)
        daemon = f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{secrets}"'
        uplink = (
            f'url = "{mdm.url}"\nhes_id = "e2e"\ntoken = "mdm"\nbatch_delay = 0.1\n'
            "backoff_initial = 0.05\nbackoff_max = 0.5\ntimeout = 5.0"
        )
        self.config = write_config(
            tmp_path, daemon=daemon, uplink=uplink, tcp=f'listen = ["127.0.0.1:{self.port}"]'
        )
        self.hesd = start_hesd(self.config)
        imported = self.hesd.hesctl("meters", "import", str(probe / "meters.csv"))
        assert f"{METERS} created" in imported.stdout, imported.stdout
        # pushes every push_every real seconds: 900 simulated seconds at this time scale
        self.sim = SimProcess(
            tmp_path,
            *args,
            *("--time-scale", str(900 / push_every), "--push-interval", "900"),
            *("--start", START, "--stats-interval", "0"),
        )

    def restart_hesd(self) -> None:
        self.hesd = self.start_hesd(self.config)

    def outbox_rows(self) -> list[dict[str, Any]]:
        """What the (killed) hesd had committed to its outbox and not yet delivered."""
        path = load_config(self.config).store.path
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT seq, records, payload FROM outbox WHERE kind = 'reading'"
            ).fetchall()
        return [json.loads(text) for row in rows for text in record_texts(*row)]

    def pushes_sent_before(self, moment: float) -> int:
        count = 0
        for line in self.sim.events("sim.push.sent"):
            stamp = dt.datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
            count += stamp.timestamp() < moment
        return count

    def stop(self) -> None:
        self.sim.kill()
        self.hesd.stop()


def pushes(readings: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Each push gives one reading per instantaneous value, all with the push's clock."""
    return {(r["meter_id"], r["timestamp"]) for r in readings}


def in_order(readings: list[dict[str, Any]]) -> None:
    """Per meter and quantity, the timestamps arrive without going back."""
    last: dict[tuple[str, str], str] = {}
    for r in readings:
        key = (r["meter_id"], r["quantity"])
        assert r["timestamp"] >= last.get(key, ""), (key, r["timestamp"], last[key])
        last[key] = r["timestamp"]


def no_duplicates(readings: list[dict[str, Any]]) -> None:
    keys = [(r["meter_id"], r["quantity"], r["timestamp"]) for r in readings]
    assert len(keys) == len(set(keys))


def wait_drained(fleet: Fleet, within: float = 30) -> None:
    def drained() -> bool:
        info = fleet.hesd.hesctl("outbox", "--json", check=False)
        return info.returncode == 0 and '"depth": 0' in info.stdout

    wait_for(drained, within, "the outbox to drain")


def test_mdm_away_then_back_and_failing_a_third(
    tmp_path: Path, start_hesd: StartHesd, mdm: ReceiverThread
) -> None:
    fleet = Fleet(tmp_path, start_hesd, mdm, push_every=1.0)
    wait_for(lambda: len(pushes(mdm.readings())) >= METERS, 30, "a push of every meter")
    mdm.call(mdm.mdm.go_away())
    away = len(mdm.readings())
    time.sleep(3)  # the outage itself (not a wait for a state): meters push meanwhile
    assert len(mdm.readings()) == away
    mdm.sync(lambda: mdm.mdm.fail(1 / 3, status=500))
    mdm.call(mdm.mdm.come_back())
    wait_for(lambda: len(mdm.readings()) > away, 30, "readings after the outage")
    fleet.sim.kill()  # no more pushes: what was accepted must all arrive
    wait_drained(fleet)
    readings = mdm.readings()
    no_duplicates(readings)
    in_order(readings)
    mdm.sync(mdm.mdm.check_order)
    assert mdm.sync(lambda: mdm.mdm.refused.get(500, 0)) > 0
    assert fleet.pushes_sent_before(time.time()) >= len(pushes(readings))
    status = fleet.hesd.hesctl("outbox", "--json")
    assert '"dead_letters": 0' in status.stdout
    fleet.hesd.stop()


def test_kill_9_in_a_push_storm_loses_nothing_acknowledged(
    tmp_path: Path, start_hesd: StartHesd, mdm: ReceiverThread
) -> None:
    fleet = Fleet(tmp_path, start_hesd, mdm, push_every=0.2)  # 200 pushes/s
    mdm.sync(lambda: mdm.mdm.slow(0.3))  # a backlog in the outbox at the kill
    wait_for(lambda: len(pushes(mdm.readings())) >= 3 * METERS, 60, "the storm under way")
    fleet.hesd.stop(9)
    killed_at = time.time()
    delivered = mdm.readings()
    committed = fleet.outbox_rows()
    acknowledged = pushes(delivered) | pushes(committed)
    assert committed, "the kill found nothing in the outbox: no backlog to test"
    # the loss window: pushes that reached hesd's socket but not its outbox at the kill. Every
    # push the meters sent more than 1 s before the kill was acknowledged.
    sent = fleet.pushes_sent_before(killed_at - 1.0)
    assert len(acknowledged) >= sent, (len(acknowledged), sent)
    mdm.sync(lambda: mdm.mdm.slow(0.0))
    fleet.restart_hesd()
    wait_for(
        lambda: acknowledged <= pushes(mdm.readings()), 60, "every acknowledged push at the MDM"
    )
    fleet.sim.kill()
    wait_drained(fleet)
    readings = mdm.readings()
    no_duplicates(readings)  # batches resent after the restart were deduplicated
    in_order(readings)
    assert acknowledged <= pushes(readings)
    fleet.hesd.stop()


def test_dead_letters_are_shown_replayed_and_purged_with_hesctl(
    tmp_path: Path, start_hesd: StartHesd, mdm: ReceiverThread
) -> None:
    fleet = Fleet(tmp_path, start_hesd, mdm, push_every=1.0)
    refused = "SIM-is15959-000001"
    mdm.sync(lambda: mdm.mdm.reject(refused))
    wait_for(lambda: len(pushes(mdm.readings())) >= 2 * (METERS - 1), 30, "pushes")

    def dead() -> dict[str, Any]:
        info: dict[str, Any] = json.loads(fleet.hesd.hesctl("outbox", "--json").stdout)
        return info

    wait_for(lambda: dead()["dead_letters"] > 0, 30, "a dead letter")
    fleet.sim.kill()
    wait_drained(fleet)  # everything else delivered or parked: the counts stay
    shown = fleet.hesd.hesctl("outbox").stdout
    assert "DEAD BATCH" in shown
    assert refused in shown  # the MDM's answer names the meter
    assert all(r["meter_id"] != refused for r in mdm.readings())
    parked = dead()
    # counted in records: whole pushes of 26 readings, batch by batch
    assert parked["dead_letters"] % 26 == 0
    assert parked["dead_letters"] == sum(b["records"] for b in parked["dead_batches"])
    assert f"dead letters  {parked['dead_letters']} records" in shown

    mdm.sync(mdm.mdm.reset_faults)
    replayed = fleet.hesd.hesctl("outbox", "replay").stdout
    assert f"{parked['dead_letters']} records queued again" in replayed
    wait_for(
        lambda: any(r["meter_id"] == refused for r in mdm.readings()), 30, "the replayed meter"
    )
    wait_drained(fleet)

    mdm.sync(lambda: mdm.mdm.reject("SIM-is15959-000002"))
    fleet.hesd.stop()
    fleet.sim = SimProcess(
        tmp_path,
        *("--meters", str(METERS), "--mode", "dial", "--hes", f"127.0.0.1:{fleet.port}"),
        *("--time-scale", "900", "--push-interval", "900", "--start", START),
    )
    fleet.restart_hesd()
    wait_for(lambda: dead()["dead_letters"] > 0, 30, "another dead letter")
    fleet.sim.kill()
    declined = fleet.hesd.hesctl("outbox", "purge", "--dead-letters", stdin="n\n", check=False)
    assert declined.returncode != 0  # asked, and the answer was no
    assert dead()["dead_letters"] > 0
    wait_drained(fleet)
    count = dead()["dead_letters"]
    purged = fleet.hesd.hesctl("outbox", "purge", "--dead-letters", "--yes").stdout
    assert f"{count} records deleted" in purged
    assert dead()["dead_letters"] == 0
    fleet.hesd.stop()
