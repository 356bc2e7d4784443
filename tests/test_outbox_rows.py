"""Outbox rows of several records (a push's readings in one row, hesd/uplink/outbox.py): every
record keeps its own seq, a row is batched, parked, replayed and counted whole, the disk budget
counts what is stored, and rows written before schema version 5 (one record, a msgpack map) are
still sent exactly as they were."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import json
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from adapters.model import Reading, Source, json_text
from bench.mdm_receiver import MdmReceiver
from hesd.config import StoreConfig
from hesd.store import Store
from hesd.store.migrations import MIGRATIONS
from hesd.uplink.outbox import Outbox, OutboxCorrupt, OutboxFull, payload, record_texts
from tests.test_uplink import T0, TOKEN, Rig, rig

pytestmark = pytest.mark.integration
__all__ = ["rig"]  # the fixture, shared with test_uplink

QUANTITIES = ("voltage_l1", "current_l1", "frequency", "energy_active_import")


def push(meter: str, n: int, size: int = 26, source: Source = Source.PUSH) -> list[Reading]:
    """Push ``n`` of a meter: ``size`` readings at one time (their values count 0, 1, ...);
    with ``source=Source.SCHEDULE``, the same readings read on schedule."""
    at = T0 + dt.timedelta(minutes=15 * n)
    return [
        Reading(meter, QUANTITIES[i % 4], Decimal(i), "V", at, source, "1.0.32.7.0.255")
        for i in range(size)
    ]


def interleaved_pushes(meters: int, per_meter: int) -> list[list[Reading]]:
    return [push(f"M{m:02d}", n) for n in range(per_meter) for m in range(meters)]


async def outbox_rows(store: Store) -> list[tuple[int, str, int, int]]:
    rows = await store.fetchall(
        "SELECT seq, meter_id, records, length(payload) FROM outbox ORDER BY seq"
    )
    return [tuple(row) for row in rows]


async def test_a_push_is_one_row_and_each_record_keeps_its_own_seq(rig: Rig) -> None:
    first, second = push("M1", 0), push("M2", 0)
    event_free = [*first, *second, *push("M1", 1, size=3)]
    await rig.outbox.offer(event_free)
    rows = await outbox_rows(rig.store)
    assert [(meter, records) for _, meter, records, _ in rows] == [
        ("M1", 26),
        ("M2", 26),
        ("M1", 3),
    ]
    assert [seq for seq, *_ in rows] == [26, 52, 55]  # the last record's seq
    assert rig.outbox.bytes == sum(size for *_, size in rows)
    assert (await rig.outbox.state()).depth == 55
    rig.start(batch_size=1000)
    await rig.mdm.wait_for_records("readings", 55, timeout=10)
    records = sorted(rig.mdm.records("readings"), key=lambda r: r["seq"])  # lanes interleave
    assert [r["seq"] for r in records] == list(range(1, 56))
    assert [r["meter_id"] for r in records] == ["M1"] * 26 + ["M2"] * 26 + ["M1"] * 3
    assert records[:26] == [{**r.to_json(), "seq": n} for n, r in enumerate(first, 1)]
    await rig.drained()
    # the counter goes on after the rows are gone, and after a restart
    assert await rig.store.scalar("SELECT count(*) FROM outbox") == 0
    again = Outbox(rig.store, 64 << 20)
    await again.load()
    await again.offer(push("M3", 0, size=2))
    assert [seq for seq, *_ in await outbox_rows(rig.store)] == [57]


async def test_rows_hold_at_most_row_records(rig: Rig) -> None:
    outbox = Outbox(rig.store, 64 << 20, row_records=10)
    await outbox.offer(push("M1", 0))
    assert [records for _, _, records, _ in await outbox_rows(rig.store)] == [10, 10, 6]
    with pytest.raises(ValueError, match="row_records 0"):
        Outbox(rig.store, 1 << 20, row_records=0)


async def test_batches_hold_whole_pushes_and_at_most_batch_size_records(rig: Rig) -> None:
    pushes = interleaved_pushes(meters=6, per_meter=8)
    for start in range(0, len(pushes), 5):
        await asyncio.gather(*(rig.outbox.offer(p) for p in pushes[start : start + 5]))
    rig.start(batch_size=100, lanes=2)
    total = 6 * 8 * 26
    await rig.mdm.wait_for_records("readings", total, timeout=20)
    await rig.drained()
    per_batch: list[Counter[tuple[str, str]]] = [Counter() for _ in rig.mdm.batches]
    records = rig.mdm.records("readings")
    start = 0
    for counter, batch in zip(per_batch, rig.mdm.batches, strict=True):
        for record in records[start : start + batch.count]:
            counter[record["meter_id"], record["timestamp"]] += 1
        start += batch.count
    for counter, batch in zip(per_batch, rig.mdm.batches, strict=True):
        assert batch.count <= 100
        assert set(counter.values()) == {26}  # whole pushes only
    rig.mdm.check_order()
    sequences = rig.mdm.per_meter_sequences("readings")
    for meter, seqs in sequences.items():
        assert seqs == sorted(seqs), meter
        assert len(seqs) == len(set(seqs))


async def test_a_refused_push_is_parked_whole_and_replayed_whole(rig: Rig) -> None:
    rig.mdm.reject("BAD")
    forwarder = rig.start(lanes=1, batch_delay=0.02)
    await rig.outbox.offer(push("M1", 0))
    await rig.mdm.wait_for_records("readings", 26, timeout=10)
    await rig.outbox.offer(push("BAD", 0))
    async with asyncio.timeout(10):
        while not (await rig.outbox.state()).dead_letters:  # noqa: ASYNC110 - the forwarder
            await asyncio.sleep(0.02)
    state = await rig.outbox.state()
    assert (state.dead_letters, state.depth) == (26, 0)
    [dead] = await rig.outbox.dead_batches()
    assert dead.records == 26
    assert dead.error is not None
    assert dead.error.startswith("HTTP 400: ")
    assert "meter BAD is refused" in dead.error  # the MDM's answer, kept with the batch
    assert forwarder.stats.delivered["reading"] == 26
    rig.mdm.reset_faults()
    assert await rig.outbox.replay() == 26
    forwarder.rescan()
    await rig.mdm.wait_for_records("readings", 52, timeout=10)
    await rig.drained()
    assert forwarder.stats.delivered["reading"] == 52
    assert rig.outbox.bytes == 0


async def test_purging_dead_pushes_releases_their_bytes(rig: Rig) -> None:
    rig.mdm.reject("BAD")
    rig.start(lanes=1, batch_delay=0.02)
    await rig.outbox.offer(push("BAD", 0))
    await rig.outbox.offer(push("BAD", 1))
    async with asyncio.timeout(10):
        while (await rig.outbox.state()).dead_letters < 52:  # noqa: ASYNC110 - the forwarder
            await asyncio.sleep(0.02)
    assert rig.outbox.bytes > 0
    assert await rig.outbox.purge_dead() == 52
    assert rig.outbox.bytes == 0
    assert (await rig.outbox.state()).dead_letters == 0


async def test_a_batch_parked_during_a_purge_stays_parked_and_counted(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge deletes and releases exactly the dead letters it found: one the forwarder
    parks between its look and its delete stays, and the disk budget's count stays true."""
    rig.mdm.reject("BAD")
    rig.start(lanes=1, batch_delay=0.02)
    await rig.outbox.offer(push("BAD", 0))
    async with asyncio.timeout(10):
        while (await rig.outbox.state()).dead_letters < 26:  # noqa: ASYNC110 - the forwarder
            await asyncio.sleep(0.02)
    looked = rig.store.fetchall

    async def look_then_park(sql: str, params: Any = ()) -> Any:
        rows = await looked(sql, params)
        if "state = 'dead'" in sql:  # the purge's look: now the forwarder parks another push
            await rig.outbox.offer(push("BAD", 1))
            async with asyncio.timeout(10):
                while (await rig.outbox.state()).dead_letters < 52:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        return rows

    monkeypatch.setattr(rig.store, "fetchall", look_then_park)
    assert await rig.outbox.purge_dead() == 26
    monkeypatch.undo()
    assert (await rig.outbox.state()).dead_letters == 26  # the one parked meanwhile
    stored = await rig.store.scalar("SELECT coalesce(sum(length(payload)), 0) FROM outbox")
    assert rig.outbox.bytes == stored > 0
    assert await rig.outbox.purge_dead() == 26
    assert rig.outbox.bytes == 0


async def test_the_budget_counts_stored_bytes_and_refusals_count_records(tmp_path: Path) -> None:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 1000, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    try:
        one = len(payload(push("M1", 0)))
        outbox = Outbox(store, limit=1 << 20)
        await outbox.load()
        pushes = 0
        with capture_logs() as logs:
            while True:
                try:
                    await outbox.offer(push(f"M{pushes % 7}", pushes))
                except OutboxFull:
                    break
                pushes += 1
        assert outbox.refused == 26  # the whole push, counted in records
        [full] = [e for e in logs if e["event"] == "outbox.full"]
        assert full["refused"] == 26
        stored = await store.scalar("SELECT sum(length(payload)) FROM outbox")
        assert outbox.bytes == stored
        assert stored <= outbox.limit * 1.1 < stored + one  # pushes go in up to 110 %
        reopened = Outbox(store, limit=1 << 20)
        await reopened.load()
        assert reopened.bytes == stored
        assert (await reopened.state()).depth == 26 * pushes
    finally:
        await store.close()
        await writer


async def test_the_budget_thresholds_with_rows_of_26(rig: Rig) -> None:
    """90 %: the alarm; 100 %: scheduled rows refused; 110 %: pushes refused too; the alarm
    clears once delivered rows are deleted. All in stored bytes, refusals counted in records."""
    one = len(payload(push("M01", 0)))
    scheduled = len(payload(push("M01", 0, source=Source.SCHEDULE)))
    assert scheduled > one  # "schedule" is longer than "push", 26 times
    outbox = rig.outbox = Outbox(rig.store, limit=20 * one)
    with capture_logs() as logs:
        for n in range(17):
            await outbox.offer(push("M01", n))
        assert not outbox.pressure  # 85 %
        await outbox.offer(push("M01", 17))
        assert outbox.pressure  # 90 %
        await outbox.offer(push("M02", 0, source=Source.SCHEDULE))  # 19 pushes' worth and more
        with pytest.raises(OutboxFull, match="26 records refused"):
            outbox.offer(push("M02", 1, source=Source.SCHEDULE))  # past 100 %
        await outbox.offer(push("M01", 18))
        await outbox.offer(push("M01", 19))  # 21 pushes' worth and more: under 110 %
        with pytest.raises(OutboxFull):
            outbox.offer(push("M01", 20))  # past 110 %
        assert outbox.bytes == await rig.store.scalar("SELECT sum(length(payload)) FROM outbox")
        assert outbox.bytes == 20 * one + scheduled
        assert outbox.refused == 52
        state = await outbox.state()
        assert (state.depth, state.refused, state.pressure) == (21 * 26, 52, True)
        rig.start(batch_size=100)
        await rig.drained()
    events = [e["event"] for e in logs]
    assert events.count("outbox.pressure") == 1
    assert events.count("outbox.full") == 2
    assert events.count("outbox.pressure_cleared") == 1
    assert outbox.bytes == 0


async def test_past_100_percent_an_offer_goes_in_only_if_every_record_is_urgent(rig: Rig) -> None:
    """Between 100 and 110 % of the budget, an offer goes in only when all its records may use
    that room: one pulled reading among 25 pushed keeps the whole offer out."""
    pushed = push("M01", 0)
    mixed = [*pushed[:25], dataclasses.replace(pushed[25], source=Source.PULL)]
    size = len(payload(pushed))
    assert len(payload(mixed)) == size  # "pull" and "push": the same bytes
    limit = size * 100 // 105  # one push is 105 % of it
    with pytest.raises(OutboxFull, match="26 records refused"):
        Outbox(rig.store, limit).offer(mixed)
    await Outbox(rig.store, limit).offer(pushed)
    with pytest.raises(OutboxFull, match="26 records refused"):
        Outbox(rig.store, size * 100 // 115).offer(pushed)  # past 110 %


async def test_rows_larger_than_batch_size_are_cut_before_they_are_batched(rig: Rig) -> None:
    """Rows written under a larger batch_size: no batch holds more than batch_size records;
    every record keeps its seq and its place, and the budget follows the rows as stored."""
    pushes = interleaved_pushes(meters=3, per_meter=2)
    for p in pushes:
        await rig.outbox.offer(p)  # rows of 26, written under batch_size 500
    with capture_logs() as logs:
        rig.start(batch_size=10, lanes=2)
        await rig.mdm.wait_for_records("readings", 6 * 26, timeout=10)
        await rig.drained()
    assert max(b.count for b in rig.mdm.batches) == 10
    assert [e["rows"] for e in logs if e["event"] == "uplink.row_split"] == [3] * 6
    records = sorted(rig.mdm.records("readings"), key=lambda r: r["seq"])
    assert [r["seq"] for r in records] == list(range(1, 6 * 26 + 1))  # each once, as numbered
    expected = [{**r.to_json(), "seq": n} for n, r in enumerate((r for p in pushes for r in p), 1)]
    assert records == expected
    rig.mdm.check_order()
    assert rig.outbox.bytes == 0


async def test_a_413_is_parked_and_replayed_in_smaller_batches(tmp_path: Path) -> None:
    """The MDM takes no body this large (413): the batch is parked with its answer; with a
    smaller batch_size, a replay cuts the parked rows and every record arrives once."""
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 1000, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    mdm = MdmReceiver(token=TOKEN, max_body_bytes=8000)  # one push's JSON is about 5 kB
    rig = Rig(tmp_path, store, writer, Outbox(store, 64 << 20), mdm, await mdm.start())
    try:
        pushes = [push("M1", 0), push("M2", 0), push("M1", 1), push("M2", 1)]
        for p in pushes:
            await rig.outbox.offer(p)
        forwarder = rig.start(batch_size=100, lanes=1)  # 3 pushes, then 1
        async with asyncio.timeout(10):
            while not (await rig.outbox.state()).dead_letters:  # noqa: ASYNC110 - the forwarder
                await asyncio.sleep(0.02)
        await rig.mdm.wait_for_records("readings", 26, timeout=10)
        [dead] = await rig.outbox.dead_batches()
        assert (dead.records, dead.batch_id) == (78, "hes-test-1-78")
        assert dead.error is not None
        assert dead.error.startswith("HTTP 413: ")
        assert forwarder.stats.dead_letters == 1
        await rig.stop()
        forwarder = rig.start(batch_size=20, lanes=1)  # what the operator does: smaller batches
        assert await rig.outbox.replay() == 78
        forwarder.rescan()
        await rig.mdm.wait_for_records("readings", 104, timeout=10)
        await rig.drained()
        assert [b.count for b in rig.mdm.batches] == [26, 20, 6, 20, 6, 20, 6]
        assert sorted(r["seq"] for r in rig.mdm.records("readings")) == list(range(1, 105))
        state = await rig.outbox.state()
        assert (state.depth, state.dead_letters, state.bytes) == (0, 0, 0)
    finally:
        await rig.stop()
        await mdm.stop()
        await store.close()
        await writer


# -- rows written before schema version 5, and damaged rows ---------------------------------


class RawReceiver:
    """An MDM that keeps each request's body as it came, gzip and all (answering 500 while
    ``failing``), and its JSON."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []  # (key, JSON) of each request
        self.raw: list[tuple[str, bytes]] = []  # (key, gzip body) of each request
        self.failing = False
        self.runner: web.AppRunner | None = None

    async def start(self) -> str:
        async def take(request: web.Request) -> web.Response:
            key = request.headers["Idempotency-Key"]
            self.raw.append((key, await request.read()))  # not inflated
            self.bodies.append((key, gzip.decompress(self.raw[-1][1])))
            if self.failing:
                return web.json_response({"detail": "down"}, status=500)
            return web.json_response({"accepted": 1})

        app = web.Application()
        app.router.add_post("/api/v1/meters/{kind}", take)
        self.runner = web.AppRunner(app, auto_decompress=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def raw() -> AsyncIterator[RawReceiver]:
    receiver = RawReceiver()
    yield receiver
    await receiver.stop()


def version_1_store(path: Path, readings: list[Reading], created_at: float) -> None:
    """A database as hesd left it before schema version 5 (here 1): one msgpack map per reading."""
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0][2])
        db.execute("PRAGMA user_version = 1")
        db.executemany(
            "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('reading', ?, ?, ?)",
            [(r.meter_id, created_at, msgpack.packb(r.to_json())) for r in readings],
        )


def old_body(hes_id: str, key: str, sent_at: str, records: list[dict[str, Any]]) -> bytes:
    """The JSON the forwarder before schema version 5 built: json.dumps of the document."""
    document = {"hes_id": hes_id, "batch_id": key, "sent_at": sent_at, "records": records}
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


async def test_rows_of_schema_versions_before_5_are_sent_byte_for_byte_as_before(
    tmp_path: Path, raw: RawReceiver
) -> None:
    readings = [*push("M1", 0, size=3), *push("Mé", 0, size=2)]
    created_at = 1_767_225_600.25
    version_1_store(tmp_path / "hesd.db", readings, created_at)
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 1000, 5.0))  # migrates
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    rig = Rig(tmp_path, store, writer, Outbox(store, 64 << 20), None, await raw.start())  # type: ignore[arg-type]
    try:
        await rig.outbox.load()
        await rig.outbox.offer(push("M1", 1, size=2))  # a row of the new form after them
        rig.start(batch_size=1000, lanes=1, batch_delay=0.02)
        await rig.drained()
        [(key, body)] = raw.bodies
        assert key == "hes-test-1-7"
        texts = [r.to_json() for r in [*readings, *push("M1", 1, size=2)]]
        expected = [{**record, "seq": seq} for seq, record in enumerate(texts, 1)]
        document = json.loads(body)
        assert document["records"] == expected
        assert body == old_body("hes-test", key, document["sent_at"], expected)
    finally:
        await rig.stop()
        await store.close()
        await writer


async def test_a_batch_of_pushes_sealed_before_a_crash_is_resent_byte_for_byte(
    rig: Rig, raw: RawReceiver
) -> None:
    """Sealed batches of push rows, retried, then hesd stops as if killed: the next start sends
    each under its key with the very body (gzip bytes) it sent before, and every record once."""
    pushes = interleaved_pushes(meters=4, per_meter=3)
    for p in pushes:
        await rig.outbox.offer(p)
    raw.failing = True
    rig.url = await raw.start()
    forwarder = rig.start(batch_size=60, lanes=2)
    async with asyncio.timeout(10):
        while forwarder.stats.retries < 4:  # noqa: ASYNC110 - sealed and being retried
            await asyncio.sleep(0.02)
    await rig.stop()  # killed
    sealed = {k for (k,) in await rig.store.fetchall("SELECT DISTINCT batch_key FROM outbox")}
    sealed.discard(None)
    assert sealed
    assert raw.raw
    assert {key for key, _ in raw.raw} <= sealed  # only sealed batches are sent
    raw.failing = False
    attempts = len(raw.raw)
    rig.outbox = Outbox(rig.store, 64 << 20)
    await rig.outbox.load()
    rig.start(batch_size=60, lanes=2)
    await rig.drained()
    again = dict(raw.raw[attempts:])
    assert len(again) == len(raw.raw) - attempts  # each batch once: nothing failed any more
    assert sealed <= set(again)  # the sealed batches, under their keys
    for key, body in raw.raw:
        assert body == again[key], key  # byte for byte, every attempt before and after
    accepted = [json.loads(body) for _, body in raw.bodies[attempts:]]
    seqs = sorted(r["seq"] for doc in accepted for r in doc["records"])
    assert seqs == list(range(1, 12 * 26 + 1))
    for doc in accepted:
        assert len(doc["records"]) <= 60


async def test_a_damaged_row_is_parked_naming_it_and_the_rest_goes_on(rig: Rig) -> None:
    await rig.outbox.offer(push("M1", 0, size=4))
    await rig.store.execute("UPDATE outbox SET records = 5")  # says 5, holds 4
    with capture_logs() as logs:
        rig.start(lanes=1, batch_delay=0.02)
        async with asyncio.timeout(10):
            while not (await rig.outbox.state()).dead_letters:  # noqa: ASYNC110 - the forwarder
                await asyncio.sleep(0.02)
        await rig.outbox.offer(push("M2", 0, size=3))
        await rig.mdm.wait_for_records("readings", 3, timeout=10)
    [dead] = await rig.outbox.dead_batches()
    assert dead.records == 5
    assert dead.error == "not sent: outbox row 4: 4 records in a row of 5"
    [logged] = [e for e in logs if e["event"] == "uplink.dead_letter"]
    assert (logged["status"], logged["records"]) == (None, 5)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (b"\xc1", "payload is not msgpack"),
        (msgpack.packb(7), "payload is a msgpack int, not records"),
        (msgpack.packb(["not json"]), "payload is a msgpack list, not records"),
        (msgpack.packb(['{"a":1}', '{"b":2}']), "2 records in a row of 1"),
    ],
)
def test_record_texts_name_the_row_that_is_damaged(stored: bytes, message: str) -> None:
    with pytest.raises(OutboxCorrupt, match=rf"^outbox row 9: {message}"):
        record_texts(9, 1, stored)


def test_record_texts_of_both_forms() -> None:
    [reading] = push("M1", 0, size=1)
    assert record_texts(1, 1, msgpack.packb(reading.to_json())) == [reading.json_text()]
    assert record_texts(1, 1, payload([reading])) == [json_text(reading.to_json())]
