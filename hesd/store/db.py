"""The store: one SQLite database in WAL mode, written through a group-commit writer.

Two connections: the *writer* owns every write and lives on a thread of its own (a one-thread
executor, ``hesd-store-writer``); the *reader* (aiosqlite, with its own thread) serves queries
(WAL lets readers see the last commit while a write is in progress). Writers do not execute SQL
themselves: they ``submit`` statements and await a future that resolves once those statements are
committed, durably (``synchronous=FULL``). The writer task puts everything queued (up to
``commit_max_batch`` submissions) into one transaction; what arrives while a commit runs joins the
next, so batches grow by themselves with load and disk latency, one fsync serves many sessions,
and a slow disk delays acknowledgements without ever blocking the event loop. A positive
``commit_interval`` additionally waits that long to gather writes (fewer fsyncs on a quiet disk).

A commit is one call into the writer's thread: ``BEGIN IMMEDIATE``, every statement, ``COMMIT``
(``ROLLBACK`` on an error, and the one-by-one retry below) run there, and the thread hands the
outcome back to the loop, which resolves the senders' futures in one callback. With an await per
statement, each a round trip through the loop, a commit cost several loop iterations; under
overload every iteration is long, and commits fell to about one a second while pushes kept coming.
Now a commit costs two: one in which the senders learn the outcome and the writer task learns the
thread is free, and one in which the next batch goes (the senders' next writes join it). Opening,
the PRAGMAs, migrations, the checkpoint and closing go through the same thread, so the writer
connection is only ever used by it, one call at a time.

State that changes often and only matters in its latest value (a meter's last-seen time, its
signal quality) is not submitted at all: owners register a *flusher* that hands the writer its
coalesced statements once per commit.

A submission is atomic: its statements commit together or not at all. When a batch fails, the
writer retries each submission in its own transaction so one bad statement fails only its sender.
Cancelling the writer task does not stop a commit its thread has begun: the batch's senders hear
what that commit did once it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import aiosqlite
import structlog

from hesd.config import StoreConfig
from hesd.store.migrations import MIGRATIONS, SCHEMA_VERSION
from protocols.errors import HesdError

__all__ = ["Statement", "Store", "StoreError"]

log = structlog.get_logger("hesd.store")

Params: TypeAlias = Sequence[Any]
Statement: TypeAlias = tuple[str, Params]
Flusher: TypeAlias = Callable[[], list[Statement]]
T = TypeVar("T")


class StoreError(HesdError):
    """The store could not be opened, migrated or written."""


@dataclass(slots=True)
class _Submission:
    statements: list[Statement]
    future: asyncio.Future[None]
    submitted_at: float


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one commit did, as the writer's thread reports it to the loop."""

    batch_error: str | None  # why the batch as a whole failed (each was then retried alone)
    errors: list[str | None]  # per submission: None if committed, else why not
    flush_error: str | None  # why the flushers' statements failed on their own, if they did


def _runs(statements: Iterable[Statement]) -> list[tuple[str, list[Params]]]:
    """Group consecutive statements with the same SQL, so each run is one ``executemany``."""
    runs: list[tuple[str, list[Params]]] = []
    for sql, params in statements:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return runs


def _transaction(conn: sqlite3.Connection, statements: list[Statement]) -> None:
    """One transaction, in the writer's thread: all of ``statements`` or, on an error, none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in _runs(statements):
            if len(params) == 1:
                conn.execute(sql, params[0])
            else:
                conn.executemany(sql, params)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _try_transaction(conn: sqlite3.Connection, statements: list[Statement]) -> str | None:
    """``_transaction``; returns None if it committed, else the SQLite error that undid it."""
    try:
        _transaction(conn, statements)
    except sqlite3.Error as exc:
        return str(exc)
    return None


def _commit(
    conn: sqlite3.Connection, submissions: list[list[Statement]], flushed: list[Statement]
) -> _Outcome:
    """A group commit, in the writer's thread: the whole batch in one transaction or, if that
    fails with an SQLite error, each submission (and then the flushed state) in its own."""
    batch_error = _try_transaction(
        conn, [s for statements in submissions for s in statements] + flushed
    )
    if batch_error is None:
        return _Outcome(None, [None] * len(submissions), None)
    errors = [_try_transaction(conn, statements) for statements in submissions]
    flush_error = _try_transaction(conn, flushed) if flushed else None
    return _Outcome(batch_error, errors, flush_error)


def _connect(path: Path) -> sqlite3.Connection:
    # autocommit mode (isolation_level=None): hesd writes BEGIN and COMMIT itself; the connection
    # moves between threads only through the one-thread executor, never two at once
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


def _writer_pragmas(conn: sqlite3.Connection, path: Path) -> int:
    """WAL and the writer's PRAGMAs; returns the schema version found (``PRAGMA user_version``)."""
    row = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if row is None or str(row[0]).lower() != "wal":
        raise StoreError(f"{path}: the filesystem does not support WAL mode")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0]) if row else 0


def _migrate_step(conn: sqlite3.Connection, version: int, sql: str) -> None:
    # executescript commits any open transaction first; the script is one transaction itself
    conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;")


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class Store:
    """The hesd database: ``await Store.open(config)``, run ``run_writer()``, then ``close()``."""

    def __init__(
        self,
        config: StoreConfig,
        writer: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        reader: aiosqlite.Connection,
    ) -> None:
        self.config = config
        self.path = config.path
        self._writer = writer
        self._executor = executor
        self._reader = reader
        self._queue: deque[_Submission] = deque()
        self._wakeup = asyncio.Event()
        self._flushers: list[Flusher] = []
        self._closing = False
        self._closed = False
        self._writer_running = False
        self._writer_done = asyncio.Event()
        self.commits = 0
        self.last_commit_seconds = 0.0

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(cls, config: StoreConfig) -> Store:
        path = config.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"{path.parent}: cannot create state directory: {exc.strerror}"
            ) from None
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hesd-store-writer")
        loop = asyncio.get_running_loop()
        try:
            try:
                writer = await loop.run_in_executor(executor, _connect, path)
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot open database: {exc}") from None
            try:
                await cls._prepare_writer(loop, executor, writer, path)
                reader = await aiosqlite.connect(path, isolation_level=None)
                await reader.execute("PRAGMA query_only = ON")
                await reader.execute("PRAGMA busy_timeout = 5000")
            except BaseException:
                await loop.run_in_executor(executor, writer.close)
                raise
        except BaseException:
            executor.shutdown(wait=False)
            raise
        reader.row_factory = sqlite3.Row
        return cls(config, writer, executor, reader)

    @staticmethod
    async def _prepare_writer(
        loop: asyncio.AbstractEventLoop,
        executor: ThreadPoolExecutor,
        conn: sqlite3.Connection,
        path: Path,
    ) -> None:
        """The PRAGMAs, then the migrations, each step one call in the writer's thread (and
        logged from the loop, where the log's context lives)."""
        try:
            found = await loop.run_in_executor(executor, _writer_pragmas, conn, path)
            if found > SCHEMA_VERSION:
                raise StoreError(
                    f"{path}: database schema version {found} is newer than this hesd "
                    f"understands ({SCHEMA_VERSION}); run the hesd that wrote it, or restore a "
                    "backup"
                )
            for version, what, sql in MIGRATIONS:
                if version <= found:
                    continue
                log.info("store.migrating", to_version=version, what=what)
                await loop.run_in_executor(executor, _migrate_step, conn, version, sql)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: {exc}") from None

    # -- writing -----------------------------------------------------------------------------

    def submit(self, statements: Sequence[Statement]) -> asyncio.Future[None]:
        """Queue statements for the next group commit; the future resolves once they are durable."""
        if self._closing:
            raise StoreError("store is closing; no new writes are accepted")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(_Submission(list(statements), future, time.monotonic()))
        self._wakeup.set()
        return future

    async def execute(self, sql: str, params: Params = ()) -> None:
        """Run one write statement and wait until it is committed."""
        await self.submit([(sql, params)])

    async def execute_many(self, sql: str, seq: Iterable[Params]) -> None:
        await self.submit([(sql, p) for p in seq])

    async def sync(self) -> None:
        """Wait until everything submitted or noted so far (flushers included) is committed."""
        await self.submit([])

    def add_flusher(self, flusher: Flusher) -> None:
        """Register a source of coalesced statements, drained into every commit."""
        self._flushers.append(flusher)

    def poke(self) -> None:
        """Tell the writer that a flusher has something, so it commits soon."""
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def oldest_pending_age(self, now: float | None = None) -> float:
        """Seconds the oldest queued submission has waited (0 when nothing waits)."""
        if not self._queue:
            return 0.0
        return (time.monotonic() if now is None else now) - self._queue[0].submitted_at

    async def run_writer(self) -> None:
        """The group-commit loop; returns after ``close()`` once everything queued is committed."""
        self._writer_running = True
        try:
            while True:
                if not self._queue:
                    self._wakeup.clear()
                    flushed = self._collect_flushers()
                    if flushed:
                        await self._commit_batch([], flushed)
                        continue
                    if self._closing:
                        return
                    await self._wakeup.wait()
                    continue
                if (
                    self.config.commit_interval > 0
                    and len(self._queue) < self.config.commit_max_batch
                ):
                    # let concurrent writers join this commit; a full batch does not wait
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.config.commit_interval):
                            while len(self._queue) < self.config.commit_max_batch:
                                await self._wakeup.wait()
                                self._wakeup.clear()
                batch = [
                    self._queue.popleft()
                    for _ in range(min(len(self._queue), self.config.commit_max_batch))
                ]
                await self._commit_batch(batch, self._collect_flushers())
        finally:
            self._writer_running = False
            self._writer_done.set()

    def _collect_flushers(self) -> list[Statement]:
        statements: list[Statement] = []
        for flusher in self._flushers:
            statements.extend(flusher())
        return statements

    def _in_writer_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _commit_batch(self, batch: list[_Submission], flushed: list[Statement]) -> None:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        job = self._executor.submit(self._commit_in_thread, loop, batch, flushed, started)
        try:
            await asyncio.wrap_future(job, loop=loop)
        except asyncio.CancelledError:
            # a commit the thread has begun runs to its end and tells its senders itself
            if job.cancelled():
                self._fail(batch, f"{self.path}: writer cancelled before its commit began")
            raise
        # any other error: the thread has told the senders; the writer task fails with it

    def _commit_in_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[_Submission],
        flushed: list[Statement],
        started: float,
    ) -> None:
        """In the writer's thread: the group commit, then its outcome handed to the loop (which
        resolves the senders' futures even if the writer task was cancelled meanwhile)."""
        try:
            outcome = _commit(self._writer, [sub.statements for sub in batch], flushed)
        except BaseException as exc:  # the connection itself failed: nobody may wait forever
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._fail, batch, f"{self.path}: writer failed: {exc!r}")
            raise
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._settle, batch, flushed, outcome, started)

    def _settle(
        self, batch: list[_Submission], flushed: list[Statement], outcome: _Outcome, started: float
    ) -> None:
        """Resolve each sender's future with what the commit did to its statements, and count
        the commit (before any sender runs again, so a sender sees its commit counted)."""
        elapsed = time.monotonic() - started
        self.commits += 1
        self.last_commit_seconds = elapsed
        if elapsed > self.config.slow_commit:
            statements = sum(len(sub.statements) for sub in batch) + len(flushed)
            log.warning("store.commit_slow", seconds=round(elapsed, 3), statements=statements)
        if outcome.batch_error is not None:
            log.warning("store.batch_failed", error=outcome.batch_error, submissions=len(batch))
        for sub, error in zip(batch, outcome.errors, strict=True):
            if sub.future.done():
                continue
            if error is None:
                sub.future.set_result(None)
            else:
                sub.future.set_exception(StoreError(f"{self.path}: write failed: {error}"))
        if outcome.flush_error is not None:
            log.error("store.flush_failed", error=outcome.flush_error, statements=len(flushed))

    @staticmethod
    def _fail(batch: list[_Submission], message: str) -> None:
        for sub in batch:
            if not sub.future.done():
                sub.future.set_exception(StoreError(message))

    # -- reading -----------------------------------------------------------------------------

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        rows = await self._reader.execute_fetchall(sql, params)
        return list(rows)

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        """The first row, for a query whose rows are few (a key or an indexed lookup)."""
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def scalar(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    # -- health and closing ------------------------------------------------------------------

    def healthy(self, stall_after: float) -> bool:
        """False when a submission has waited longer than ``stall_after`` seconds (disk stuck)."""
        return self.oldest_pending_age() <= stall_after

    async def close(self) -> None:
        """Commit what is queued, checkpoint the WAL into the database file and close."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        if self._writer_running:
            await self._writer_done.wait()
        elif self._queue or self._flushers:
            # the writer task never ran (or already ended): commit the remainder here
            batch = list(self._queue)
            self._queue.clear()
            await self._commit_batch(batch, self._collect_flushers())
        try:
            await self._in_writer_thread(_checkpoint, self._writer)
        except sqlite3.Error as exc:
            log.warning("store.checkpoint_failed", error=str(exc))
        await self._reader.close()
        await self._in_writer_thread(self._writer.close)
        self._executor.shutdown(wait=True)  # the thread is idle: its last call has returned
        self._closed = True
