"""The outbox and the forwarder against the reference MDM receiver (bench/mdm_receiver.py):
in order per meter, through outages, errors and restarts, nothing accepted lost, nothing
stored twice after idempotency; the disk budget refuses loudly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import random
import re
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.model import Event, Reading, Source
from bench.mdm_receiver import MdmReceiver
from hesd.config import StoreConfig, UplinkConfig, load_config
from hesd.secrets import Secret, SecretStore
from hesd.store import Store
from hesd.uplink.forwarder import Forwarder
from hesd.uplink.outbox import Outbox, OutboxFull, payload

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-tests"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def reading(meter: str, n: int, source: Source = Source.PUSH) -> Reading:
    return Reading(
        meter,
        "energy_active_import",
        Decimal(n) / 1000,
        "kWh",
        T0 + dt.timedelta(minutes=15 * n),
        source,
        "1.0.1.8.0.255",
    )


def interleaved(meters: int, per_meter: int, seed: int = 1) -> list[Reading]:
    """Each meter's readings in order, the meters interleaved at random."""
    rng = random.Random(seed)  # noqa: S311 - a test's shuffle
    queues = {f"M{m:03d}": 0 for m in range(meters)}
    out = []
    while queues:
        meter = rng.choice(sorted(queues))
        out.append(reading(meter, queues[meter]))
        queues[meter] += 1
        if queues[meter] == per_meter:
            del queues[meter]
    return out


@dataclasses.dataclass
class Rig:
    tmp_path: Path
    store: Store
    writer: asyncio.Task[None]
    outbox: Outbox
    mdm: MdmReceiver
    url: str
    forwarder: Forwarder | None = None
    task: asyncio.Task[None] | None = None

    def config(self, **changes: object) -> UplinkConfig:
        base = load_config(None).uplink
        settings: dict[str, object] = {
            "url": self.url,
            "hes_id": "hes-test",
            "token": "mdm",
            "batch_size": 100,
            "batch_delay": 0.02,
            "backoff_initial": 0.02,
            "backoff_max": 0.2,
            "timeout": 5.0,
        }
        return dataclasses.replace(base, **(settings | changes))  # type: ignore[arg-type]

    def start(self, **changes: object) -> Forwarder:
        secrets = SecretStore("secrets.toml", tokens={"mdm": Secret(TOKEN.encode())})
        self.forwarder = Forwarder(self.config(**changes), self.store, self.outbox, secrets)
        self.task = asyncio.create_task(self.forwarder.run(), name="uplink:forwarder")
        return self.forwarder

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def offer(self, records: list[Reading]) -> None:
        for start in range(0, len(records), 50):
            await self.outbox.offer(records[start : start + 50])

    async def drained(self, within: float = 20.0) -> None:
        async with asyncio.timeout(within):
            while (await self.outbox.state()).depth:  # noqa: ASYNC110 - the forwarder's progress
                await asyncio.sleep(0.02)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 1000, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    outbox = Outbox(store, 64 << 20)
    await outbox.load()
    mdm = MdmReceiver(token=TOKEN)
    url = await mdm.start()
    r = Rig(tmp_path, store, writer, outbox, mdm, url)
    yield r
    await r.stop()
    await mdm.stop()
    await store.close()
    await writer


def sequences(mdm: MdmReceiver) -> dict[str, list[int]]:
    """Each meter's reading numbers as the MDM stored them."""
    out: dict[str, list[int]] = {}
    for record in mdm.records("readings"):
        n = int(Decimal(record["value"]) * 1000)
        out.setdefault(record["meter_id"], []).append(n)
    return out


def assert_complete(mdm: MdmReceiver, meters: int, per_meter: int) -> None:
    got = sequences(mdm)
    assert len(got) == meters
    for meter, numbers in got.items():
        assert numbers == list(range(per_meter)), meter  # all, once, in order
    mdm.check_order()


async def test_every_reading_arrives_in_order_per_meter(rig: Rig) -> None:
    records = interleaved(40, 50)
    forwarder = rig.start()
    await rig.offer(records)
    await rig.mdm.wait_for_records("readings", len(records), timeout=20)
    await rig.drained()
    assert_complete(rig.mdm, 40, 50)
    state = await rig.outbox.state()
    assert (state.depth, state.bytes, state.dead_letters) == (0, 0, 0)
    assert forwarder.stats.delivered["reading"] == len(records)
    [batch, *_] = rig.mdm.batches
    assert batch.key.startswith("hes-test-")


async def test_a_backlog_goes_in_full_batches(rig: Rig) -> None:
    """Rows older than batch_delay (a backlog after an outage or a restart) still fill their
    batches while more can be read: a partial batch only at the end of each lane's rows."""
    records = interleaved(20, 50)
    for start in range(0, len(records), 50):
        await rig.outbox.offer(records[start : start + 50], now=time.time() - 60)
    rig.start(batch_size=100, lanes=2)
    await rig.mdm.wait_for_records("readings", len(records), timeout=20)
    await rig.drained()
    sizes = [batch.count for batch in rig.mdm.batches]
    assert sum(sizes) == len(records)
    assert sum(size < 100 for size in sizes) <= 2, sizes  # one per lane at most
    assert_complete(rig.mdm, 20, 50)


async def test_mdm_down_for_a_while_then_back(rig: Rig) -> None:
    records = interleaved(20, 30)
    await rig.mdm.go_away()
    forwarder = rig.start()
    await rig.offer(records)
    async with asyncio.timeout(10):
        while forwarder.stats.retries < 5:  # noqa: ASYNC110 - the forwarder's retries
            await asyncio.sleep(0.02)
    assert rig.mdm.records("readings") == []
    assert (await rig.outbox.state()).depth == len(records)  # waiting safely on disk
    await rig.mdm.come_back()
    await rig.mdm.wait_for_records("readings", len(records), timeout=20)
    await rig.drained()
    assert_complete(rig.mdm, 20, 30)


async def test_a_third_of_answers_are_500_and_nothing_is_stored_twice(rig: Rig) -> None:
    records = interleaved(30, 40, seed=7)
    rig.mdm.fail(1 / 3, status=500)
    forwarder = rig.start()
    await rig.offer(records)
    await rig.mdm.wait_for_records("readings", len(records), timeout=30)
    await rig.drained()
    assert_complete(rig.mdm, 30, 40)
    assert forwarder.stats.retries > 0


async def test_lost_answers_are_retried_under_the_same_key_and_deduplicated(rig: Rig) -> None:
    """The MDM stored the batch but hesd never saw the answer (timeout): the retry is the same
    batch under the same Idempotency-Key and the MDM does not store it twice."""
    records = interleaved(5, 20)
    rig.mdm.slow(1.0)
    rig.start(timeout=0.3, batch_size=1000, batch_delay=0.05)
    await rig.offer(records)
    async with asyncio.timeout(10):
        while not rig.mdm.records("readings"):  # noqa: ASYNC110 - the receiver's state
            await asyncio.sleep(0.02)
    rig.mdm.slow(0.0)
    await rig.drained()
    assert rig.mdm.duplicates >= 1
    assert_complete(rig.mdm, 5, 20)


async def test_429_waits_as_retry_after_says(rig: Rig) -> None:
    rig.mdm.throttle(429, retry_after=1, count=1)
    with capture_logs() as logs:
        rig.start(backoff_max=5.0)
        await rig.offer([reading("M1", 0)])
        await rig.mdm.wait_for_records("readings", 1, timeout=10)
    [retry] = [e for e in logs if e["event"] == "uplink.retry"]
    assert (retry["status"], retry["retry_in"]) == (429, 1.0)


async def test_a_refused_batch_is_parked_then_replayed(rig: Rig) -> None:
    records = [reading("M1", 0), reading("BAD", 0), reading("M2", 0)]
    rig.mdm.reject("BAD")
    forwarder = rig.start(lanes=1, batch_delay=0.05)
    await rig.offer(records[:1])
    await rig.mdm.wait_for_records("readings", 1, timeout=10)
    await rig.offer(records[1:2])
    async with asyncio.timeout(10):
        while not (await rig.outbox.state()).dead_letters:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await rig.offer(records[2:])
    await rig.mdm.wait_for_records("readings", 2, timeout=10)  # the others carry on
    dead = await rig.store.fetchall("SELECT meter_id, last_error FROM outbox WHERE state = 'dead'")
    assert [row[0] for row in dead] == ["BAD"]
    assert dead[0][1].startswith("HTTP 400: ")
    assert "BAD" in dead[0][1]
    rig.mdm.reset_faults()
    assert await rig.outbox.replay() == 1
    forwarder.rescan()
    await rig.mdm.wait_for_records("readings", 3, timeout=10)
    await rig.drained()


async def test_a_restart_resends_sealed_batches_as_they_were(rig: Rig) -> None:
    records = interleaved(10, 10)
    await rig.mdm.go_away()
    forwarder = rig.start(batch_size=1000)
    await rig.offer(records)
    async with asyncio.timeout(10):
        while forwarder.stats.retries < 2:  # noqa: ASYNC110 - sealed and being retried
            await asyncio.sleep(0.02)
    await rig.stop()  # the process ends here, as if killed
    rows = await rig.store.fetchall("SELECT DISTINCT batch_key FROM outbox")
    sealed = {row[0] for row in rows} - {None}  # the rest was waiting for a free lane
    assert sealed
    await rig.mdm.come_back()
    rig.start(batch_size=1000)
    await rig.mdm.wait_for_records("readings", len(records), timeout=20)
    await rig.drained()
    assert sealed <= {b.key for b in rig.mdm.batches}  # the same batches, under the same keys
    assert_complete(rig.mdm, 10, 10)


def delete_failures(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == "uplink.delete_failed"]


async def test_a_failed_delete_keeps_the_rows_until_a_restart_sends_them_again(rig: Rig) -> None:
    """A lane does not wait for the DELETE of a batch the MDM took: when that commit fails, the
    rows stay (in the depth and the disk budget), the error is logged, and the next start sends
    them again under the same key, which the MDM answers as a duplicate."""
    await rig.store.execute(
        "CREATE TRIGGER keep BEFORE DELETE ON outbox BEGIN SELECT RAISE(ABORT, 'disk trouble'); END"
    )
    records = interleaved(6, 10)
    await rig.offer(records)
    stored = rig.outbox.bytes
    assert stored > 0
    with capture_logs() as logs:
        forwarder = rig.start(batch_size=1000, lanes=2)
        await rig.mdm.wait_for_records("readings", len(records), timeout=10)
        async with asyncio.timeout(10):
            while len(delete_failures(logs)) < len(rig.mdm.batches):  # noqa: ASYNC110 - the lanes
                await asyncio.sleep(0.02)
    failed = delete_failures(logs)
    assert {e["batch"] for e in failed} == {b.key for b in rig.mdm.batches}
    assert all("disk trouble" in e["error"] for e in failed)
    assert forwarder.stats.delivered["reading"] == len(records)
    state = await rig.outbox.state()
    assert (state.depth, state.bytes) == (len(records), stored)  # nothing released
    await rig.stop()
    await rig.store.execute("DROP TRIGGER keep")
    rig.start(batch_size=1000, lanes=2)
    await rig.drained()
    assert rig.mdm.duplicates == len(failed)  # the same batches again, under the same keys
    assert rig.outbox.bytes == 0
    assert_complete(rig.mdm, 6, 10)


async def test_disk_budget_alarm_backpressure_and_loud_refusal(tmp_path: Path) -> None:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 1000, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    try:
        await _fill_to_the_budget(store)
    finally:
        await store.close()
        await writer


def one(n: int, source: Source = Source.PUSH) -> Reading:
    """Readings of equal size: one per meter M000, M001, ..."""
    return reading(f"M{n:03d}", 0, source)


async def _fill_to_the_budget(store: Store) -> None:
    push = len(payload([one(0)]))
    scheduled = len(payload([one(0, Source.SCHEDULE)]))
    outbox = Outbox(store, limit=90 * push + 10 * scheduled)  # full after the 100 below
    with capture_logs() as logs:
        for n in range(80):
            await outbox.offer([one(n)])
        assert not outbox.pressure
        for n in range(80, 90):
            await outbox.offer([one(n)])
        for n in range(90, 100):
            await outbox.offer([one(n, Source.SCHEDULE)])
        assert outbox.pressure  # from 90 %: the alarm, once
        assert [e["event"] for e in logs].count("outbox.pressure") == 1
        with pytest.raises(OutboxFull, match=r"outbox full .*1 records refused"):
            outbox.offer([one(100, Source.SCHEDULE)])
        for n in range(100, 110):  # pushes and events still go in, up to 110 %
            await outbox.offer([one(n)])
        with pytest.raises(OutboxFull):
            outbox.offer([one(110)])
    assert outbox.refused == 2
    assert [e["event"] for e in logs].count("outbox.full") == 2
    assert (await outbox.state()).depth == 110  # everything accepted is there
    event = Event("M1", "magnet_tamper", "other", "major", True, 201, "magnet", T0, Source.PUSH, "")
    with pytest.raises(OutboxFull):
        outbox.offer([event])


def test_every_log_event_of_the_outbox_and_the_forwarder_is_in_architecture_md() -> None:
    """docs/architecture.md names what the outbox, the forwarder and the push path log."""
    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "architecture.md").read_text()
    sources = ("hesd/uplink/outbox.py", "hesd/uplink/forwarder.py", "hesd/daemon.py")
    pattern = re.compile(
        r'log\.(?:warning|error|info|exception)\(\s*"((?:outbox|uplink|daemon)\.\w+)"'
    )
    named = {e for path in sources for e in pattern.findall((root / path).read_text())}
    assert {"outbox.full", "uplink.dead_letter", "daemon.records_lost"} <= named
    assert sorted(e for e in named if f"`{e}`" not in doc) == []
