"""The store: migrations, group commit, failure isolation, coalesced state, invocation counters."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hesd.config import StoreConfig
from hesd.store import (
    CounterExhausted,
    InvocationCounters,
    MeterEntry,
    Registry,
    RegistryConflict,
    Store,
    StoreError,
)
from hesd.store.migrations import MIGRATIONS, SCHEMA_VERSION
from hesd.store.registry import IDENTIFY_BY_SERIAL, IDENTIFY_BY_SYSTEM_TITLE
from hesd.uplink.outbox import Outbox

INSERT_EVENT = (  # one outbox row, meter_id the parameter
    "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('event', ?, 0, x'00')"
)


def store_config(tmp_path: Path, interval: float = 0.005) -> StoreConfig:
    return StoreConfig(
        path=tmp_path / "state" / "hesd.db",
        commit_interval=interval,
        commit_max_batch=2000,
        slow_commit=5.0,
    )


class Running:
    """A store with its writer task, closed (and the task awaited) at the end."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writer = asyncio.create_task(store.run_writer(), name="store:writer")

    async def close(self) -> None:
        await self.store.close()
        await self.writer


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    r = Running(await Store.open(store_config(tmp_path)))
    yield r
    await r.close()


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_open_migrates_and_uses_wal(tmp_path: Path) -> None:
    r = Running(await Store.open(store_config(tmp_path)))
    assert await r.store.scalar("PRAGMA journal_mode") == "wal"
    await r.close()
    path = tmp_path / "state" / "hesd.db"
    assert user_version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as conn:
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert {"meters", "outbox", "commands", "command_audit", "invocation_counters"} <= tables


async def test_a_database_at_version_3_gains_the_scheduler_tables_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """Migration 4 (the scheduler's tables) on a store that hesd with migrations 1..3 wrote
    (and the later ones after it)."""
    assert [m[0] for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))  # none skipped
    path = tmp_path / "state" / "hesd.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path, isolation_level=None)
    for version, _, sql in MIGRATIONS[:3]:
        conn.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")
    conn.execute(
        "INSERT INTO api_audit (at, listener, client, peer, method, path, status, duration_ms)"
        " VALUES (1.0, 'socket', 'socket', 'uid:0', 'GET', '/api/v1/status', 200, 0.5)"
    )
    conn.close()
    assert user_version(path) == 3
    r = Running(await Store.open(store_config(tmp_path)))
    await r.store.execute(
        "INSERT INTO read_marks (what, meter_id, last_at, updated_at) VALUES (?, ?, ?, ?)",
        ("profile:block_load", "M1", 1800.0, 2000.0),
    )
    assert await r.store.scalar("SELECT count(*) FROM api_audit") == 1
    assert await r.store.scalar("SELECT last_at FROM read_marks") == 1800.0
    await r.close()
    assert user_version(path) == SCHEMA_VERSION
    with sqlite3.connect(path) as check:
        tables = {
            row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
    assert {"api_audit", "schedule_runs", "read_marks", "profile_holes"} <= tables


async def test_database_from_a_newer_hesd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "hesd.db"
    path.parent.mkdir()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1} is newer"):
        await Store.open(store_config(tmp_path))


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "state" / "hesd.db"
    path.parent.mkdir()
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"hesd\.db: file is not a database"):
        await Store.open(store_config(tmp_path))


async def test_concurrent_writes_share_commits(running: Running) -> None:
    store = running.store
    sql = INSERT_EVENT
    await asyncio.gather(*(store.execute(sql, (f"m{i}",)) for i in range(500)))
    assert await store.scalar("SELECT count(*) FROM outbox") == 500
    assert store.commits < 50, f"500 concurrent writes took {store.commits} commits"


async def test_a_bad_statement_fails_only_its_sender(running: Running) -> None:
    store = running.store
    good = INSERT_EVENT
    bad = (
        "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('nonsense', ?, 0, x'00')"
    )
    results = await asyncio.gather(
        store.execute(good, ("a",)),
        store.execute(bad, ("b",)),
        store.execute(good, ("c",)),
        return_exceptions=True,
    )
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], StoreError)
    assert "CHECK constraint failed" in str(results[1])
    rows = await store.fetchall("SELECT meter_id FROM outbox ORDER BY seq")
    assert [r[0] for r in rows] == ["a", "c"]


async def test_a_submission_is_atomic(running: Running) -> None:
    store = running.store
    good = (
        "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('event', 'x', 0, x'00')",
        (),
    )
    bad = (
        "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('bad', 'y', 0, x'00')",
        (),
    )
    with pytest.raises(StoreError):
        await store.submit([good, bad])
    assert await store.scalar("SELECT count(*) FROM outbox") == 0


async def test_a_commit_is_one_call_into_the_writer_thread(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN, every run of statements and COMMIT happen in one call on the writer's thread: the
    event loop awaits one future per commit, not a round trip per statement (under overload,
    every loop iteration is long, and a commit of several trips took several of them)."""
    store = running.store
    await store.sync()  # the flushers' first commit, if any, out of the way
    executor = store._executor
    submit = executor.submit
    calls: list[str] = []

    def counted(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(executor, "submit", counted)
    event = INSERT_EVENT
    reading = (
        "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('reading', ?, 0, x'00')"
    )
    mark = "INSERT INTO read_marks (what, meter_id, last_at, updated_at) VALUES (?, ?, 1, 1)"
    statements: list[tuple[str, tuple[Any, ...]]] = [
        *((event, (f"e{i}",)) for i in range(3)),
        (mark, ("profile:block_load", "M1")),
        *((reading, (f"r{i}",)) for i in range(3)),
        (event, ("last",)),
    ]
    await store.submit(statements)
    assert calls == ["_commit_in_thread"]
    assert await store.scalar("SELECT count(*) FROM outbox") == 7
    assert await store.scalar("SELECT count(*) FROM read_marks") == 1


async def test_a_failing_statement_mid_transaction_rolls_back_its_whole_submission(
    running: Running,
) -> None:
    """Runs before the bad statement were executed in the transaction; none of them stays. The
    submission committed beside it in the same batch does."""
    store = running.store
    event = INSERT_EVENT
    mark = "INSERT INTO read_marks (what, meter_id, last_at, updated_at) VALUES (?, ?, 1, 1)"
    bad = "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('bad', ?, 0, x'00')"
    doomed = store.submit(
        [
            (event, ("a1",)),
            (event, ("a2",)),
            (mark, ("profile:block_load", "A")),
            (bad, ("a3",)),
            (event, ("a4",)),
        ]
    )
    fine = store.submit([(event, ("b1",)), (mark, ("profile:block_load", "B"))])
    results = await asyncio.gather(doomed, fine, return_exceptions=True)
    assert isinstance(results[0], StoreError)
    assert "CHECK constraint failed" in str(results[0])
    assert str(store.path) in str(results[0])
    assert results[1] is None
    rows = await store.fetchall("SELECT meter_id FROM outbox ORDER BY seq")
    assert [r[0] for r in rows] == ["b1"]
    marks = await store.fetchall("SELECT meter_id FROM read_marks")
    assert [r[0] for r in marks] == ["B"]


async def cancelled(writer: asyncio.Task[None]) -> None:
    """Cancel the writer task and wait until it has ended."""
    writer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await writer


class Held:
    """An SQL function, ``held()``, that holds the writer's thread inside a transaction until the
    test releases it, and says when it got there."""

    def __init__(self, store: Store) -> None:
        self.inside = asyncio.Event()
        self.release = threading.Event()
        loop = asyncio.get_running_loop()

        def held() -> str:
            loop.call_soon_threadsafe(self.inside.set)
            self.release.wait(5)
            return "held"

        store._writer.create_function("held", 0, held)


async def test_cancelling_the_writer_mid_commit_tells_the_senders_what_the_commit_did(
    tmp_path: Path,
) -> None:
    """The thread does not stop mid-transaction when the writer task is cancelled: the commit it
    began ends, and its senders' futures say so rather than waiting forever or lying."""
    store = await Store.open(store_config(tmp_path, interval=0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    held = Held(store)
    sql = INSERT_EVENT
    future = store.submit([(sql, ("m1",)), (sql.replace("?", "held()"), ())])
    async with asyncio.timeout(5):
        await held.inside.wait()
    await cancelled(writer)
    assert not future.done()
    held.release.set()
    async with asyncio.timeout(5):
        await asyncio.wait([future])
    assert future.exception() is None
    await store.close()
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT meter_id FROM outbox ORDER BY seq").fetchall()
    assert rows == [("m1",), ("held",)]


async def test_close_after_a_cancelled_writer_commits_the_rest_after_the_held_commit(
    tmp_path: Path,
) -> None:
    store = await Store.open(store_config(tmp_path, interval=0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    held = Held(store)
    sql = INSERT_EVENT
    first = store.submit([(sql.replace("?", "held()"), ())])
    async with asyncio.timeout(5):
        await held.inside.wait()
    await cancelled(writer)
    # the writer task is gone: close() commits what is queued itself, after the held commit
    second = store.submit([(sql, ("m2",))])
    closing = asyncio.create_task(store.close(), name="store:close")
    held.release.set()
    async with asyncio.timeout(5):
        await closing
    assert first.exception() is None
    assert second.exception() is None
    with sqlite3.connect(store.path) as conn:
        rows = conn.execute("SELECT meter_id FROM outbox ORDER BY seq").fetchall()
    assert rows == [("held",), ("m2",)]


async def test_cancelling_the_writer_before_its_commit_began_fails_the_senders(
    tmp_path: Path,
) -> None:
    """A commit still queued for the thread when the writer task is cancelled never runs: its
    senders get a StoreError at once (nobody else would tell them)."""
    store = await Store.open(store_config(tmp_path, interval=0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    busy = threading.Event()
    release = threading.Event()

    def occupy() -> None:
        busy.set()
        release.wait(5)

    occupied = store._in_writer_thread(occupy)
    sql = INSERT_EVENT
    future = store.submit([(sql, ("m1",))])
    async with asyncio.timeout(5):
        while store.pending or not busy.is_set():  # noqa: ASYNC110 - the writer takes the batch
            await asyncio.sleep(0.001)
    await cancelled(writer)
    assert future.done()
    with pytest.raises(StoreError, match="writer cancelled before its commit began"):
        future.result()
    release.set()
    await occupied
    await store.close()
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


async def test_a_lookup_is_one_trip_to_the_reader_thread(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fetchone runs its query and takes its rows in one call on the reader's thread, so the
    statement is done before the next query starts. With a cursor per call (execute, fetchone,
    close: three trips), 10,000 meters dialling in at once held 10,000 prepared statements open in
    that thread: 7 s of CPU, and some 80 MB of C heap that glibc then kept (bench/sessions.py)."""
    store = running.store
    sql = INSERT_EVENT
    await store.execute_many(sql, [(f"m{i}",) for i in range(100)])
    reader = store._reader
    calls = reader._execute
    trips = 0

    async def counted(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await calls(fn, *args, **kwargs)

    monkeypatch.setattr(reader, "_execute", counted)
    query = "SELECT meter_id FROM outbox WHERE meter_id = ?"
    rows = await asyncio.gather(*(store.fetchone(query, (f"m{i}",)) for i in range(100)))
    assert [row[0] if row is not None else None for row in rows] == [f"m{i}" for i in range(100)]
    assert trips == 100
    assert await store.fetchone(query, ("nobody",)) is None
    assert await store.scalar("SELECT count(*) FROM outbox") == 100


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    r = Running(await Store.open(store_config(tmp_path, interval=0.5)))
    future = r.store.submit(
        [
            (
                "INSERT INTO outbox (kind, meter_id, created_at, payload)"
                " VALUES ('event', 'q', 0, x'00')",
                (),
            )
        ]
    )
    await r.close()
    assert future.done()
    assert future.exception() is None
    with sqlite3.connect(tmp_path / "state" / "hesd.db") as conn:
        assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 1
    with pytest.raises(StoreError, match="closing"):
        r.store.submit([])


async def test_outbox_stats(running: Running) -> None:
    store = running.store
    sql = (
        "INSERT INTO outbox (kind, meter_id, created_at, payload, state)"
        " VALUES ('event', 'm', ?, x'00', ?)"
    )
    await store.execute_many(sql, [(100.0, "pending"), (150.0, "inflight"), (50.0, "dead")])
    outbox = Outbox(store, 1 << 20)
    await outbox.load()
    stats = await outbox.state(now=200.0)
    assert (stats.depth, stats.dead_letters, stats.oldest_age, stats.bytes) == (2, 1, 100.0, 3)


# -- registry ---------------------------------------------------------------------------------


def entry(meter_id: str, **kw: object) -> MeterEntry:
    fields: dict[str, object] = {"vendor": "is15959", "transport": "tcp-in", **kw}
    return MeterEntry(meter_id, **fields)  # type: ignore[arg-type]


async def test_registry_upsert_counts_and_keeps_state(running: Running) -> None:
    registry = Registry(running.store)
    first = await registry.upsert([entry("A"), entry("B"), entry("C")])
    assert (first.created, first.updated, first.unchanged) == (3, 0, 0)
    registry.note_state("A", status="online", last_seen=1000.0, signal_quality=-71)
    await running.store.sync()
    second = await registry.upsert([entry("A", serial_number="SN1"), entry("B"), entry("D")])
    assert (second.created, second.updated, second.unchanged) == (1, 1, 1)
    a = await registry.get("A")
    assert a is not None
    assert a.entry.serial_number == "SN1"
    assert (a.status, a.last_seen, a.signal_quality) == ("online", 1000.0, -71)
    assert await registry.get("Z") is None


async def test_registry_state_updates_are_coalesced(running: Running) -> None:
    registry = Registry(running.store)
    await registry.upsert([entry("A")])
    commits = running.store.commits
    for i in range(1000):
        registry.note_state("A", status="online", last_seen=float(i))
    await running.store.sync()
    record = await registry.get("A")
    assert record is not None
    assert record.last_seen == 999.0
    assert running.store.commits - commits <= 2


async def test_registry_select_filters_and_pages(running: Running) -> None:
    registry = Registry(running.store)
    await registry.upsert(
        [entry(f"M{i:03d}", vendor="acme" if i % 2 else "is15959") for i in range(10)]
    )
    registry.note_state("M003", status="offline")
    await running.store.sync()
    assert [r.meter_id for r in await registry.select(status="offline")] == ["M003"]
    assert len(await registry.select(vendor="acme")) == 5
    page1 = await registry.select(limit=4)
    page2 = await registry.select(limit=4, after=page1[-1].meter_id)
    assert [r.meter_id for r in page1 + page2] == [f"M{i:03d}" for i in range(8)]
    # each(): every page, whatever the page size (a last page full, or short)
    everyone = [r.meter_id for r in await registry.select(limit=1000)]
    for page in (1, 3, 5, len(everyone), 1000):
        assert [r.meter_id async for r in registry.each(page=page)] == everyone
    assert [r.meter_id async for r in registry.each(status="offline", page=1)] == ["M003"]
    assert await registry.counts() == {"unknown": 9, "online": 0, "offline": 1}


async def test_registry_identify_searches_the_partial_indexes(running: Running) -> None:
    """identify() runs for every meter that dials in: a table scan there costs O(meters²) for a
    fleet reconnecting, so both lookups must search their partial index."""
    registry = Registry(running.store)
    await registry.upsert(
        [entry(f"M{i}", serial_number=f"SN{i}", system_title=f"{i:016X}") for i in range(20)]
        + [entry("BARE")]  # no serial number, no system title: in neither index
    )
    for sql, index in (
        (IDENTIFY_BY_SYSTEM_TITLE, "meters_by_system_title (system_title=?)"),
        (IDENTIFY_BY_SERIAL, "meters_by_serial (serial_number=?)"),
    ):
        plan = await running.store.fetchall(f"EXPLAIN QUERY PLAN {sql}", ("X",))
        assert [row[3] for row in plan] == [f"SEARCH meters USING COVERING INDEX {index}"]
    assert await registry.identify(system_title=f"{7:016x}") == "M7"
    assert await registry.identify(serial_number="SN9") == "M9"
    assert await registry.identify(serial_number="SN9", system_title="FFFFFFFFFFFFFFFF") == "M9"
    assert await registry.identify(serial_number="", system_title="") is None
    assert await registry.identify(serial_number="SN99") is None


def test_registry_refuses_unknown_state_fields(tmp_path: Path) -> None:
    registry = Registry.__new__(Registry)
    registry._dirty = {}  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="not registry state fields"):
        registry.note_state("A", colour="red")
    with pytest.raises(ValueError, match="status 'asleep'"):
        registry.note_state("A", status="asleep")


# -- invocation counters ----------------------------------------------------------------------


async def test_tx_counters_never_repeat_across_a_crash(tmp_path: Path) -> None:
    r1 = Running(await Store.open(store_config(tmp_path)))
    counters = InvocationCounters(r1.store)
    first = await counters.reserve_tx("M1", 48, 10)
    second = await counters.reserve_tx("M1", 48, 5)
    assert (first, second) == (range(0, 10), range(10, 15))
    assert await counters.reserve_tx("M2", 48, 3) == range(0, 3)  # per meter
    # a crash: the first process never closes; a second one opens the same database
    r2 = Running(await Store.open(store_config(tmp_path)))
    after_crash = await InvocationCounters(r2.store).reserve_tx("M1", 48, 10)
    assert after_crash.start == 15, "a counter was reused after a restart"
    await r2.close()
    await r1.close()


async def test_tx_counters_end_at_32_bits(running: Running) -> None:
    counters = InvocationCounters(running.store)
    await running.store.execute(
        "INSERT INTO invocation_counters VALUES ('M1', 48, 'tx', 4294967290, 0)"
    )
    assert await counters.reserve_tx("M1", 48, 100) == range(4294967290, 4294967296)
    with pytest.raises(CounterExhausted, match="exhausted"):
        await counters.reserve_tx("M1", 48, 1)


async def test_rx_counters_refuse_replay_and_survive_restart(tmp_path: Path) -> None:
    r = Running(await Store.open(store_config(tmp_path)))
    counters = InvocationCounters(r.store)
    assert await counters.accept_rx("M1", 48, 5)
    assert not await counters.accept_rx("M1", 48, 5)
    assert not await counters.accept_rx("M1", 48, 4)
    assert await counters.accept_rx("M1", 48, 9)
    await r.close()
    r = Running(await Store.open(store_config(tmp_path)))
    counters = InvocationCounters(r.store)
    assert await counters.last_rx("M1", 48) == 9
    assert not await counters.accept_rx("M1", 48, 9)
    await r.close()


async def test_a_system_title_belongs_to_one_meter(running: Running) -> None:
    registry = Registry(running.store)
    await registry.upsert([entry("A", system_title="00AA00AA00AA00AA")])
    with pytest.raises(RegistryConflict) as info:
        await registry.upsert([entry("B", system_title="00AA00AA00AA00AA")])
    assert info.value.conflicts == [
        "meter B: system_title 00AA00AA00AA00AA already belongs to meter A"
    ]
    assert await registry.get("B") is None
    # moving the title in one import is fine: A gives it up, B takes it
    summary = await registry.upsert([entry("A"), entry("B", system_title="00AA00AA00AA00AA")])
    assert (summary.created, summary.updated) == (1, 1)
