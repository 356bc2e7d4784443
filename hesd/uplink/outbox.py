"""The outbox: every normalised record on disk before hesd counts it as accepted.

``Outbox.offer`` turns readings, events and command results into outbox rows (msgpack of their
JSON form) and submits them to the store's group-commit writer in one submission: they commit
together, in the order given, within a few milliseconds, and the returned future resolves once
they are durable. Sequence numbers (``seq``) grow with every row, so a meter's records keep their
order. The forwarder (``hesd/uplink/forwarder.py``) deletes rows once the MDM has taken them, or
parks them as dead letters.

The outbox is bounded by ``uplink.max_backlog_bytes`` of stored payload:

* from 90 % (``pressure``) hesd raises an alarm (``outbox.pressure`` in the log and the status)
  and the scheduler slows its reads;
* from 100 % pulled and scheduled records are refused (``OutboxFull``): the caller still has them
  and says so; pushes, events and command results go in up to 110 %, then they too are refused;
* every refusal is logged and counted (``refused``): nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack
import structlog

from adapters.model import CommandResult, Event, Reading, Source
from hesd.store.db import Store
from protocols.errors import HesdError

__all__ = ["KINDS", "DeadBatch", "Outbox", "OutboxFull", "OutboxState", "Record"]

log = structlog.get_logger("hesd.outbox")

KINDS: Final = ("reading", "event", "command_result")
PRESSURE: Final = 0.9  # of the budget: alarm, slower scheduled reads
URGENT_ROOM: Final = 1.1  # of the budget: pushes, events and command results still go in
INSERT: Final = "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES (?, ?, ?, ?)"
Record = Reading | Event | CommandResult


class OutboxFull(HesdError):
    """The outbox is at its disk budget: these records were not accepted."""


@dataclass(frozen=True, slots=True)
class OutboxState:
    depth: int  # records waiting (pending, in flight)
    dead_letters: int
    bytes: int  # payload bytes stored (what the budget counts)
    limit: int
    oldest_age: float | None  # seconds since the oldest waiting record was accepted
    in_flight: int  # records in batches being sent now
    refused: int  # records refused since start (budget)
    pressure: bool


@dataclass(frozen=True, slots=True)
class DeadBatch:
    batch_id: str
    kind: str
    records: int
    oldest: float  # when its oldest record was accepted
    error: str | None  # the MDM's answer


def _kind(record: Record) -> str:
    if isinstance(record, Reading):
        return "reading"
    if isinstance(record, Event):
        return "event"
    return "command_result"


def _urgent(record: Record) -> bool:
    """Pushes, events and command results get the room above the budget; pulls do not."""
    return not isinstance(record, Reading) or record.source is Source.PUSH


class Outbox:
    __slots__ = ("_alarm", "_bytes", "_new", "_store", "in_flight", "limit", "refused")

    def __init__(self, store: Store, limit: int) -> None:
        self._store = store
        self.limit = limit
        self._bytes = 0
        self._alarm = False
        self._new = asyncio.Event()  # set when rows were committed: the forwarder looks
        self.refused = 0
        self.in_flight = 0  # maintained by the forwarder

    async def load(self) -> None:
        """Count what a previous run left (call once, before offering)."""
        self._bytes = int(
            await self._store.scalar("SELECT coalesce(sum(length(payload)), 0) FROM outbox") or 0
        )
        self._check_pressure()
        if self._bytes:
            self._new.set()

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def pressure(self) -> bool:
        """Near the budget: scheduled work should slow down."""
        return self._bytes >= self.limit * PRESSURE

    def offer(self, records: Sequence[Record], now: float | None = None) -> asyncio.Future[None]:
        """Store ``records`` (committed together, in order); ``OutboxFull`` if over budget.

        The future resolves when they are durable; it fails with ``StoreError`` if the commit
        fails (then nothing of them is stored).
        """
        now = time.time() if now is None else now
        rows = []
        size = 0
        urgent = True
        for record in records:
            payload = msgpack.packb(record.to_json())
            size += len(payload)
            urgent = urgent and _urgent(record)
            rows.append((_kind(record), record.meter_id, now, payload))
        room = self.limit * (URGENT_ROOM if urgent else 1.0)
        if rows and self._bytes + size > room:
            self.refused += len(rows)
            log.error(
                "outbox.full",
                refused=len(rows),
                meters=sorted({r[1] for r in rows})[:10],
                bytes=self._bytes,
                limit=self.limit,
                refused_total=self.refused,
            )
            raise OutboxFull(
                f"outbox full ({self._bytes} of {self.limit} bytes): {len(rows)} records refused"
            )
        self._bytes += size
        self._check_pressure()
        future = self._store.submit([(INSERT, row) for row in rows]) if rows else _done()
        future.add_done_callback(self._committed(size))
        return future

    def _committed(self, size: int) -> Callable[[asyncio.Future[None]], None]:
        def done(future: asyncio.Future[None]) -> None:
            if future.cancelled() or future.exception() is not None:
                self._bytes -= size  # not stored
                self._check_pressure()
                return
            self._new.set()

        return done

    def released(self, size: int) -> None:
        """The forwarder deleted rows of ``size`` payload bytes."""
        self._bytes = max(0, self._bytes - size)
        self._check_pressure()

    async def wait_new(self) -> None:
        await self._new.wait()
        self._new.clear()

    def poke(self) -> None:
        self._new.set()

    def _check_pressure(self) -> None:
        if self.pressure and not self._alarm:
            self._alarm = True
            log.warning("outbox.pressure", bytes=self._bytes, limit=self.limit)
        elif not self.pressure and self._alarm:
            self._alarm = False
            log.info("outbox.pressure_cleared", bytes=self._bytes, limit=self.limit)

    async def dead_batches(self, limit: int = 20) -> list[DeadBatch]:
        """The oldest parked batches, with the MDM's answer."""
        rows = await self._store.fetchall(
            "SELECT batch_key, kind, count(*), min(created_at), max(last_error) FROM outbox"
            " WHERE state = 'dead' GROUP BY batch_key, kind ORDER BY min(seq) LIMIT ?",
            (limit,),
        )
        return [DeadBatch(*row) for row in rows]

    async def replay(self) -> int:
        """Dead letters back to pending, to be batched afresh; how many records. The forwarder
        must be told (``Forwarder.rescan``): its cursor has passed them."""
        count = int(
            await self._store.scalar("SELECT count(*) FROM outbox WHERE state = 'dead'") or 0
        )
        await self._store.execute(
            "UPDATE outbox SET state = 'pending', batch_key = NULL, last_error = NULL"
            " WHERE state = 'dead'"
        )
        log.info("outbox.replayed", records=count)
        return count

    async def purge_dead(self) -> int:
        """Delete the dead letters for good; how many records."""
        row = await self._store.fetchone(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox WHERE state = 'dead'"
        )
        assert row is not None
        await self._store.execute("DELETE FROM outbox WHERE state = 'dead'")
        self.released(int(row[1]))
        log.warning("outbox.purged", records=int(row[0]), bytes=int(row[1]))
        return int(row[0])

    async def state(self, now: float | None = None) -> OutboxState:
        now = time.time() if now is None else now
        row = await self._store.fetchone(
            "SELECT coalesce(sum(state != 'dead'), 0), coalesce(sum(state = 'dead'), 0),"
            " min(CASE WHEN state != 'dead' THEN created_at END) FROM outbox"
        )
        assert row is not None
        return OutboxState(
            depth=int(row[0]),
            dead_letters=int(row[1]),
            bytes=self._bytes,
            limit=self.limit,
            oldest_age=None if row[2] is None else max(0.0, now - row[2]),
            in_flight=self.in_flight,
            refused=self.refused,
            pressure=self.pressure,
        )


def _done() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
