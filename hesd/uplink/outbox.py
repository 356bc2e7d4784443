"""The outbox: every normalised record on disk before hesd counts it as accepted.

``Outbox.offer`` turns readings, events and command results into outbox rows and submits them to
the store's group-commit writer in one submission: they commit together, in the order given,
within a few milliseconds, and the returned future resolves once they are durable.

**Records and rows.** What hesd promises about is *records* (a reading, an event, a command
result): each has its own sequence number, ``seq``, unique and increasing across restarts, which
the MDM sees; every count hesd shows (depth, in flight, dead letters, refused, delivered,
``hesctl outbox``, ``GET /api/v1/outbox``) is in records. What SQLite stores is *rows*: a row
holds the records of one meter and one kind that were offered together, in order (a push's 26
readings are one row; at most ``row_records``, the uplink's ``batch_size``, per row). A row of
``records`` records owns the seqs ``seq - records + 1`` .. ``seq`` (its ``seq`` column is the
last; rows are numbered from the outbox's AUTOINCREMENT counter, ``sqlite_sequence``, in the
insert itself). Its payload is a msgpack array of the records' wire form, each record's compact
JSON text (``json_text()``) without its ``seq``, built once here so that the forwarder only
splices the ``seq`` in. Rows written before schema version 5 hold one record each, a msgpack map
of its ``to_json()``; the forwarder sends them as it always did (``record_texts``). One row per
push rather than per reading costs SQLite a twenty-sixth of the inserts, seals and deletes.

A row is batched, sealed, delivered, parked as a dead letter, replayed and purged whole, so the
forwarder's promises hold per record (``hesd/uplink/forwarder.py``): a meter's records in
``seq`` order; a batch's key and body fixed once sealed, through retries and restarts; no batch
of more than ``batch_size`` records (a row written under a larger ``batch_size`` is cut, by
``split``, into rows of ``batch_size`` before it is batched: each record keeps its seq).

The outbox is bounded by ``uplink.max_backlog_bytes`` of stored payload (rows as stored, dead
letters included; released when delivered rows are deleted or dead letters purged):

* from 90 % (``pressure``) hesd raises an alarm (``outbox.pressure`` in the log and the status)
  and the scheduler slows its reads;
* from 100 % pulled and scheduled records are refused (``OutboxFull``): the caller still has them
  and says so; pushes, events and command results go in up to 110 %, then they too are refused;
* every refusal is logged and counted (``refused``, in records): nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import msgpack
import structlog

from adapters.model import CommandResult, Event, Reading, Source, json_text
from hesd.store.db import Store
from protocols.errors import HesdError

__all__ = [
    "KINDS",
    "DeadBatch",
    "Outbox",
    "OutboxCorrupt",
    "OutboxFull",
    "OutboxState",
    "Record",
    "RowPart",
    "payload",
    "record_texts",
]

log = structlog.get_logger("hesd.outbox")

KINDS: Final = ("reading", "event", "command_result")
PRESSURE: Final = 0.9  # of the budget: alarm, slower scheduled reads
URGENT_ROOM: Final = 1.1  # of the budget: pushes, events and command results still go in
ROW_RECORDS: Final = 1000  # most records in a row (hesd.toml's uplink.batch_size)
# A row's seq: the outbox's counter (the last seq ever given, AUTOINCREMENT's) plus its records
INSERT: Final = (
    "INSERT INTO outbox (seq, kind, meter_id, created_at, records, payload) VALUES ("
    "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0) + ?4, ?1, ?2, ?3, ?4, ?5)"
)
# Cutting a row in two: the first records go to a new row (their last seq is free: it is inside
# the row's range), the row keeps the rest; both only while the row is pending and unsealed
SPLIT_OFF: Final = (
    "INSERT INTO outbox (seq, kind, meter_id, created_at, records, payload, attempts)"
    " SELECT ?, kind, meter_id, created_at, ?, ?, attempts FROM outbox"
    " WHERE seq = ? AND state = 'pending' AND batch_key IS NULL"
)
SPLIT_KEEP: Final = (
    "UPDATE outbox SET records = ?, payload = ?"
    " WHERE seq = ? AND state = 'pending' AND batch_key IS NULL"
)
Record = Reading | Event | CommandResult
_SEQS: Final = "SELECT value FROM json_each(?)"  # rows named by their seqs, a JSON array


class OutboxFull(HesdError):
    """The outbox is at its disk budget: these records were not accepted."""


class OutboxCorrupt(HesdError):
    """An outbox row whose payload is not what its columns say (a damaged database)."""


def payload(records: Sequence[Record]) -> bytes:
    """The payload of a row holding ``records`` (of one meter and kind, in order)."""
    return _pack([record.json_text() for record in records])


def _pack(texts: Sequence[str]) -> bytes:
    """The payload of a row from its records' wire form (``record_texts`` reads it back)."""
    data: bytes = msgpack.packb(texts)
    return data


def record_texts(seq: int, records: int, payload: bytes) -> list[str]:
    """The wire form (compact JSON, without ``seq``) of each record of an outbox row.

    ``OutboxCorrupt`` naming the row when the payload is no msgpack, holds other than
    ``records`` records, or a record that is no JSON object.
    """
    try:
        data = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException) as exc:
        raise OutboxCorrupt(f"outbox row {seq}: payload is not msgpack: {exc}") from None
    if isinstance(data, dict):  # a row from before schema version 5: one record, its to_json() map
        texts = [json_text(data)]
    elif isinstance(data, list) and all(type(t) is str and t[:1] == "{" for t in data):
        texts = data
    else:
        raise OutboxCorrupt(
            f"outbox row {seq}: payload is a msgpack {type(data).__name__}, not records"
        )
    if len(texts) != records:
        raise OutboxCorrupt(f"outbox row {seq}: {len(texts)} records in a row of {records}")
    return texts


Payload = bytes  # a row's payload (inside Outbox, ``bytes`` names its property)
RowPart = tuple[int, int, Payload]  # (seq, records, payload) of a row
NewRow = tuple[str, str, float, int, Payload]  # (kind, meter_id, created_at, records, payload)


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
    error: str | None  # the MDM's answer, or why the batch could not be sent


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
    __slots__ = (
        "_admin",
        "_alarm",
        "_bytes",
        "_new",
        "_store",
        "in_flight",
        "limit",
        "refused",
        "row_records",
    )

    def __init__(self, store: Store, limit: int, row_records: int = ROW_RECORDS) -> None:
        if not 1 <= row_records <= 10_000:
            raise ValueError(f"row_records {row_records}: expected 1..10000")
        self._store = store
        self.limit = limit
        self.row_records = row_records  # at most the uplink's batch_size: a row is never split
        self._bytes = 0
        self._alarm = False
        self._new = asyncio.Event()  # set when rows were committed: the forwarder looks
        self.refused = 0
        self.in_flight = 0  # maintained by the forwarder
        self._admin = asyncio.Lock()  # replay and purge_dead, one at a time

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
        runs: list[tuple[str, str, list[str]]] = []  # kind, meter, the records' wire form
        texts: list[str] = []
        kind = meter_id = ""
        for record in records:
            this = _kind(record)
            if this != kind or record.meter_id != meter_id:
                kind, meter_id, texts = this, record.meter_id, []
                runs.append((kind, meter_id, texts))
            texts.append(record.json_text())
        rows = [row for run in runs for row in self._rows(*run, now)]
        # the room above the budget is asked for only past 100 %: the records' kinds and sources
        return self._submit(rows, len(records), lambda: all(map(_urgent, records)))

    def offer_texts(
        self, kind: str, meter_id: str, texts: Sequence[str], now: float | None = None
    ) -> asyncio.Future[None]:
        """``offer`` for records of one ``kind`` and meter given in their wire form (each a
        record's ``json_text()``: ``Normaliser.push_wire``), urgent as pushes are."""
        if kind not in KINDS:
            raise ValueError(f"outbox: {kind!r} is no record kind")
        now = time.time() if now is None else now
        return self._submit(self._rows(kind, meter_id, texts, now), len(texts), lambda: True)

    def _rows(self, kind: str, meter_id: str, texts: Sequence[str], now: float) -> list[NewRow]:
        """The rows of one meter's records of one kind, in order, at most ``row_records`` a row."""
        step = self.row_records
        return [
            (kind, meter_id, now, len(part), _pack(part))
            for part in (texts[i : i + step] for i in range(0, len(texts), step))
        ]

    def _submit(
        self,
        rows: list[NewRow],
        records: int,
        urgent: Callable[[], bool],
    ) -> asyncio.Future[None]:
        """Rows within the budget to the store (``OutboxFull`` if not: ``urgent()`` says whether
        all of the ``records`` may use the room above it)."""
        size = sum(len(row[4]) for row in rows)
        if rows and self._over_budget(size, urgent):
            self.refused += records
            log.error(
                "outbox.full",
                refused=records,
                meters=sorted({r[1] for r in rows})[:10],
                bytes=self._bytes,
                limit=self.limit,
                refused_total=self.refused,
            )
            raise OutboxFull(
                f"outbox full ({self._bytes} of {self.limit} bytes): {records} records refused"
            )
        self._bytes += size
        self._check_pressure()
        future = self._store.submit([(INSERT, row) for row in rows]) if rows else _done()
        future.add_done_callback(self._committed(size))
        return future

    def _over_budget(self, size: int, urgent: Callable[[], bool]) -> bool:
        """``size`` more bytes exceed the budget: 100 %, or 110 % if ``urgent()`` (pushes,
        events and command results, ``_urgent``; asked only past 100 %)."""
        total = self._bytes + size
        return total > self.limit and (total > self.limit * URGENT_ROOM or not urgent())

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

    async def split(self, seq: int, records: int, payload: Payload, most: int) -> list[RowPart]:
        """Cut the pending, unsealed row ``seq`` into rows of at most ``most`` records (the
        uplink's ``batch_size`` went down since it was written), committed before this returns;
        every record keeps its seq. The parts as ``(seq, records, payload)``, in order.

        ``OutboxCorrupt`` if the payload does not hold ``records`` records (nothing changes);
        ``StoreError`` if the commit fails (nothing changes either).
        """
        texts = record_texts(seq, records, payload)
        first = seq - records + 1
        parts: list[RowPart] = []
        for start in range(0, records, most):
            chunk = texts[start : start + most]
            parts.append((first + start + len(chunk) - 1, len(chunk), _pack(chunk)))
        *new, kept = parts
        await self._store.submit(
            [
                *((SPLIT_OFF, (part, count, data, seq)) for part, count, data in new),
                (SPLIT_KEEP, (kept[1], kept[2], seq)),
            ]
        )
        self._bytes += sum(len(data) for _, _, data in parts) - len(payload)
        self._check_pressure()
        return parts

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
            "SELECT batch_key, kind, sum(records), min(created_at), max(last_error) FROM outbox"
            " WHERE state = 'dead' GROUP BY batch_key, kind ORDER BY min(seq) LIMIT ?",
            (limit,),
        )
        return [DeadBatch(*row) for row in rows]

    async def replay(self) -> int:
        """Dead letters back to pending, to be batched afresh; how many records. The forwarder
        must be told (``Forwarder.rescan``): its cursor has passed them."""
        async with self._admin:
            rows = await self._dead_rows()
            await self._store.execute(
                "UPDATE outbox SET state = 'pending', batch_key = NULL, last_error = NULL"
                f" WHERE seq IN ({_SEQS}) AND state = 'dead'",
                (json.dumps([seq for seq, _, _ in rows]),),
            )
        count = sum(records for _, records, _ in rows)
        log.info("outbox.replayed", records=count)
        return count

    async def purge_dead(self) -> int:
        """Delete the dead letters for good; how many records."""
        async with self._admin:
            rows = await self._dead_rows()
            await self._store.execute(
                f"DELETE FROM outbox WHERE seq IN ({_SEQS}) AND state = 'dead'",
                (json.dumps([seq for seq, _, _ in rows]),),
            )
        count, size = sum(r for _, r, _ in rows), sum(n for _, _, n in rows)
        self.released(size)
        log.warning("outbox.purged", records=count, bytes=size)
        return count

    async def _dead_rows(self) -> list[tuple[int, int, int]]:
        """The dead letters now, as (seq, records, payload bytes): replay and purge change
        exactly these rows and count exactly them (a batch the forwarder parks meanwhile stays
        parked, for the next time; the two, operators' actions, run one at a time)."""
        found = await self._store.fetchall(
            "SELECT seq, records, length(payload) FROM outbox WHERE state = 'dead'"
        )
        return [(int(seq), int(records), int(size)) for seq, records, size in found]

    async def state(self, now: float | None = None) -> OutboxState:
        now = time.time() if now is None else now
        row = await self._store.fetchone(
            "SELECT coalesce(sum(CASE WHEN state != 'dead' THEN records END), 0),"
            " coalesce(sum(CASE WHEN state = 'dead' THEN records END), 0),"
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
