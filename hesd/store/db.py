"""The store: one SQLite database in WAL mode, written through a group-commit writer.

Two aiosqlite connections, each with its own thread: the *writer* owns every write, the *reader*
serves queries (WAL lets readers see the last commit while a write is in progress). Writers do not
execute SQL themselves: they ``submit`` statements and await a future that resolves once those
statements are committed, durably (``synchronous=FULL``). The writer task puts everything queued
(up to ``commit_max_batch`` submissions) into one transaction; what arrives while a commit runs
joins the next, so batches grow by themselves with load and disk latency, one fsync serves many
sessions, and a slow disk delays acknowledgements without ever blocking the event loop. A positive
``commit_interval`` additionally waits that long to gather writes (fewer fsyncs on a quiet disk).

State that changes often and only matters in its latest value (a meter's last-seen time, its
signal quality) is not submitted at all: owners register a *flusher* that hands the writer its
coalesced statements once per commit.

A submission is atomic: its statements commit together or not at all. When a batch fails, the
writer retries each submission in its own transaction so one bad statement fails only its sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

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


class StoreError(HesdError):
    """The store could not be opened, migrated or written."""


@dataclass(slots=True)
class _Submission:
    statements: list[Statement]
    future: asyncio.Future[None]
    submitted_at: float


def _runs(statements: Iterable[Statement]) -> list[tuple[str, list[Params]]]:
    """Group consecutive statements with the same SQL, so each run is one ``executemany``."""
    runs: list[tuple[str, list[Params]]] = []
    for sql, params in statements:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return runs


class Store:
    """The hesd database: ``await Store.open(config)``, run ``run_writer()``, then ``close()``."""

    def __init__(
        self, config: StoreConfig, writer: aiosqlite.Connection, reader: aiosqlite.Connection
    ) -> None:
        self.config = config
        self.path = config.path
        self._writer = writer
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
        try:
            writer = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from None
        try:
            await cls._prepare_writer(writer, path)
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("PRAGMA query_only = ON")
            await reader.execute("PRAGMA busy_timeout = 5000")
        except BaseException:
            await writer.close()
            raise
        reader.row_factory = sqlite3.Row
        return cls(config, writer, reader)

    @staticmethod
    async def _prepare_writer(conn: aiosqlite.Connection, path: Path) -> None:
        try:
            async with conn.execute("PRAGMA journal_mode = WAL") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != "wal":
                raise StoreError(f"{path}: the filesystem does not support WAL mode")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            await conn.execute("PRAGMA busy_timeout = 5000")
            await migrate(conn, path)
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

    async def _transaction(self, statements: list[Statement]) -> None:
        conn = self._writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in _runs(statements):
                if len(params) == 1:
                    await conn.execute(sql, params[0])
                else:
                    await conn.executemany(sql, params)
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise

    async def _commit_batch(self, batch: list[_Submission], flushed: list[Statement]) -> None:
        started = time.monotonic()
        statements = [s for sub in batch for s in sub.statements] + flushed
        try:
            await self._transaction(statements)
        except sqlite3.Error as exc:
            log.warning("store.batch_failed", error=str(exc), submissions=len(batch))
            await self._commit_one_by_one(batch, flushed)
        except BaseException as exc:  # the connection itself failed: nobody may wait forever
            for sub in batch:
                if not sub.future.done():
                    sub.future.set_exception(StoreError(f"{self.path}: writer failed: {exc!r}"))
            raise
        else:
            for sub in batch:
                if not sub.future.done():
                    sub.future.set_result(None)
        elapsed = time.monotonic() - started
        self.commits += 1
        self.last_commit_seconds = elapsed
        if elapsed > self.config.slow_commit:
            log.warning("store.commit_slow", seconds=round(elapsed, 3), statements=len(statements))

    async def _commit_one_by_one(self, batch: list[_Submission], flushed: list[Statement]) -> None:
        for sub in batch:
            try:
                await self._transaction(sub.statements)
            except sqlite3.Error as exc:
                if not sub.future.done():
                    sub.future.set_exception(StoreError(f"{self.path}: write failed: {exc}"))
            else:
                if not sub.future.done():
                    sub.future.set_result(None)
        if flushed:
            try:
                await self._transaction(flushed)
            except sqlite3.Error as exc:
                log.error("store.flush_failed", error=str(exc), statements=len(flushed))

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
            await self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.warning("store.checkpoint_failed", error=str(exc))
        await self._reader.close()
        await self._writer.close()
        self._closed = True


async def migrate(conn: aiosqlite.Connection, path: Path) -> int:
    """Bring the schema to ``SCHEMA_VERSION``; returns the version found before."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    found = int(row[0]) if row else 0
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: database schema version {found} is newer than this hesd understands "
            f"({SCHEMA_VERSION}); run the hesd that wrote it, or restore a backup"
        )
    for version, what, sql in MIGRATIONS:
        if version <= found:
            continue
        log.info("store.migrating", to_version=version, what=what)
        # executescript commits any open transaction first; the script is one transaction itself
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
        )
    return found
