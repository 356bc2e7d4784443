"""The forwarder: outbox rows to the MDM over HTTP, at least once, in order per meter.

Rows are read in ``seq`` order and put in per-(lane, kind) buffers; a meter's rows always go to
the same lane (a hash of its id), and each lane sends one batch at a time, so a meter's records
reach the MDM in order while ``uplink.lanes`` batches travel at once. A row (the records of one
meter offered together, ``hesd/uplink/outbox.py``) goes whole into one batch: a buffer becomes a
batch of whole rows, at most ``uplink.batch_size`` records, when it holds that many or its
oldest row has waited ``uplink.batch_delay``. A row of more than ``batch_size`` records (written
under a larger one) is cut into rows of ``batch_size`` in the outbox before it is buffered
(``uplink.row_split``), so no batch holds more: a receiver that answered 413 takes the records
again, replayed, once ``batch_size`` is lowered.

A batch is *sealed* before it is sent: its rows get the batch's key (``<hes_id>-<first seq>-<last
seq>``, of its records), committed, so that a retry, even after a crash and restart, sends the
same rows under the same ``Idempotency-Key`` with a byte-identical body (JSON in outbox order,
gzip without a timestamp). The body is spliced from the rows' stored wire form: each record's
JSON text with its ``seq`` added last, as ``json.dumps`` of the record would write it. A row
whose payload does not hold what its columns say cannot be sent: its batch is parked as a dead
letter naming the row (``uplink.dead_letter``). What the MDM answers decides:

* 2xx: delivered; the rows are deleted (the lane sends its next batch meanwhile);
* 429, 503: wait as ``Retry-After`` says (or back off), then again;
* 401, 403: hesd's credentials are wrong, not the data: alarm (``uplink.auth_refused``) and retry
  with back-off, so that fixing the token loses nothing;
* other 4xx: the MDM will never take it: the rows are parked as dead letters with its answer
  (``hesctl outbox``, ``hesctl outbox replay``);
* 5xx, timeouts, refused connections: back off (doubling, capped, with jitter) and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import gzip
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Final

import aiohttp
import structlog

from adapters.model import json_text
from hesd import __version__
from hesd.backoff import backoff
from hesd.config import UplinkConfig
from hesd.secrets import SecretStore
from hesd.store.db import Store, StoreError
from hesd.timefmt import iso
from hesd.tls import client_context
from hesd.uplink.outbox import Outbox, OutboxCorrupt, RowPart, record_texts

__all__ = ["PATHS", "Forwarder"]

log = structlog.get_logger("hesd.uplink")

PATHS: Final = {
    "reading": "/api/v1/meters/readings",
    "event": "/api/v1/meters/events",
    "command_result": "/api/v1/meters/command-results",
}
# Sealed batches waiting per lane. The dispatcher hands batches over once their seal has
# committed, so a lane delivers at most this many batches per group commit: under load a commit
# takes tens of milliseconds or more (it carries every push accepted meanwhile), and 2 capped the
# uplink below what hesd took in (docs/benchmarks.md, uplink).
LANE_DEPTH: Final = 8
ERROR_TEXT: Final = 2000  # characters of an MDM answer kept with a dead letter
LOG_EVERY: Final = 10  # a failing batch logs its 1st, 11th, 21st ... attempt
# A batch's rows by primary key, in one statement: their seqs as a JSON array (json_each)
SEAL: Final = "UPDATE outbox SET batch_key = ? WHERE seq IN (SELECT value FROM json_each(?))"
DELETE: Final = "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) AND batch_key = ?"


@dataclass(slots=True)
class _Row:
    seq: int  # its last record's
    meter_id: str
    created_at: float
    records: int
    payload: bytes


@dataclass(slots=True)
class _Buffer:
    """A lane's rows of one kind, waiting to be cut into batches."""

    rows: list[_Row] = field(default_factory=list)
    records: int = 0

    def append(self, row: _Row) -> None:
        self.rows.append(row)
        self.records += row.records

    def take(self, size: int) -> list[_Row]:
        """The oldest rows holding at most ``size`` records (at least one row)."""
        count = taken = 0
        for row in self.rows:
            if taken and count + row.records > size:
                break
            taken += 1
            count += row.records
        cut = self.rows[:taken]
        del self.rows[:taken]
        self.records -= count
        return cut


@dataclass(slots=True)
class _Batch:
    key: str
    kind: str
    lane: int
    rows: list[_Row]
    size: int = field(init=False)  # payload bytes
    records: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = sum(len(r.payload) for r in self.rows)
        self.records = sum(r.records for r in self.rows)


@dataclass(slots=True)
class UplinkStats:
    delivered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))
    batches: int = 0
    retries: int = 0
    dead_letters: int = 0  # batches parked since start
    last_error: str | None = None
    last_delivery: float | None = None


class Forwarder:
    def __init__(
        self,
        config: UplinkConfig,
        store: Store,
        outbox: Outbox,
        secrets: SecretStore,
        source: str = "hesd.toml",
    ) -> None:
        self.config = config
        self._store = store
        self._outbox = outbox
        self._headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "User-Agent": f"hesd/{__version__}",
        }
        if config.token:
            value = secrets.token(config.token, "uplink.token").reveal().decode()
            if config.auth == "bearer":
                self._headers["Authorization"] = f"Bearer {value}"
            elif config.auth == "api-key":
                self._headers["X-API-Key"] = value
        self._ssl = (
            client_context(source, "uplink", config.ca_file, config.cert_file, config.key_file)
            if config.url.startswith("https://")
            else None
        )
        self._lanes: list[asyncio.Queue[_Batch]] = [
            asyncio.Queue(LANE_DEPTH) for _ in range(config.lanes)
        ]
        self._buffers: dict[tuple[int, str], _Buffer] = {}
        self._per_row = 1  # records per row in the last rows read (how many rows fill the window)
        self._cursor = 0
        self._behind = False  # the last read filled the window: more rows wait in the outbox
        self._sealing: tuple[asyncio.Future[None], list[_Batch]] | None = None
        self._rescan = False
        self.stats = UplinkStats()

    # -- control -----------------------------------------------------------------------------

    def rescan(self) -> None:
        """Rows behind the cursor became pending again (a replay): read the outbox afresh."""
        self._rescan = True
        self._outbox.poke()

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.lanes, ssl=self._ssl or True)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            asyncio.TaskGroup() as tg,
        ):
            for index, lane in enumerate(self._lanes):
                tg.create_task(self._lane(http, lane), name=f"uplink:lane{index}")
            tg.create_task(self._dispatch(), name="uplink:dispatch")

    # -- batching ----------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        await self._resume()
        while True:
            if self._rescan:
                await self._hand_over()  # rows being sealed must not be read again
                self._rescan = False
                self._buffers.clear()
                self._cursor = 0
                self._behind = False
            await self._fetch()  # meanwhile the batches cut last time round are being sealed
            await self._hand_over()
            now = time.time()
            batches = self._cut(now)
            if batches:
                self._sealing = (self._seal(batches), batches)  # one commit for all of them
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait(now)):
                    await self._outbox.wait_new()  # new rows, or a lane took a batch

    async def _hand_over(self) -> None:
        """Once their seal is committed, give the batches being sealed to their lanes."""
        if self._sealing is None:
            return
        sealed, batches = self._sealing
        await sealed
        self._sealing = None
        for batch in batches:
            self._lanes[batch.lane].put_nowait(batch)  # _cut left room for it

    def _cut(self, now: float) -> list[_Batch]:
        """The batches to send now, for lanes with room (a full lane never holds up the others).

        A buffer becomes a batch when it is full, or when its oldest row has waited
        ``batch_delay`` and no more rows can be read for it now. While a backlog is read, rows
        are old but their batches can still fill: partial batches would only mean more requests
        (unless the read window is full of partial buffers, which would never fill then).
        """
        size = self.config.batch_size
        stuck = self._buffered() >= self._window() and all(
            buffer.records < size for buffer in self._buffers.values()
        )
        partial_ok = not self._behind or stuck
        batches: list[_Batch] = []
        for (lane, kind), buffer in self._buffers.items():
            room = LANE_DEPTH - self._lanes[lane].qsize() - sum(b.lane == lane for b in batches)
            while room > 0 and buffer.rows:
                if buffer.records < size and not (
                    partial_ok and buffer.rows[0].created_at <= now - self.config.batch_delay
                ):
                    break
                cut = buffer.take(size)
                first = cut[0].seq - cut[0].records + 1
                key = f"{self.config.hes_id}-{first}-{cut[-1].seq}"
                batches.append(_Batch(key, kind, lane, cut))
                room -= 1
        return batches

    def _wait(self, now: float) -> float | None:
        """Seconds until a buffer whose lane has room is due (None: until something happens)."""
        due = None
        for (lane, _), buffer in self._buffers.items():
            if buffer.rows and not self._lanes[lane].full():  # a full lane pokes when it takes one
                at = buffer.rows[0].created_at + self.config.batch_delay
                due = at if due is None else min(due, at)
        return None if due is None else max(0.0, due - now)

    def _window(self) -> int:
        """Records read ahead: enough to fill every lane."""
        return self.config.lanes * self.config.batch_size * LANE_DEPTH

    def _buffered(self) -> int:
        return sum(buffer.records for buffer in self._buffers.values())

    async def _fetch(self) -> None:
        room = self._window() - self._buffered()
        if room <= 0:
            return
        limit = max(1, room // self._per_row)  # rows
        rows = await self._store.fetchall(
            "SELECT seq, kind, meter_id, created_at, records, payload FROM outbox"
            " WHERE seq > ? AND state = 'pending' AND batch_key IS NULL ORDER BY seq LIMIT ?",
            (self._cursor, limit),
        )
        records = 0
        size = self.config.batch_size
        for seq, kind, meter_id, created_at, count, payload in rows:
            key = (self._lane_of(meter_id), kind)
            buffer = self._buffers.get(key)
            if buffer is None:
                buffer = self._buffers[key] = _Buffer()
            parts = [(seq, count, payload)]
            if count > size:
                parts = await self._split(seq, count, payload)
            for part, part_count, data in parts:
                buffer.append(_Row(part, meter_id, created_at, part_count, data))
            records += count
            self._cursor = seq
        if rows:
            self._per_row = max(1, records // len(rows))
        self._behind = len(rows) == limit
        if self._behind:
            self._outbox.poke()  # more to read once there is room

    async def _split(self, seq: int, records: int, payload: bytes) -> list[RowPart]:
        """A row of more records than ``batch_size`` (written under a larger one): cut into rows
        of ``batch_size`` before it is batched, so that no batch holds more. A row that cannot be
        cut is batched alone as it is (a damaged one is then parked, naming it)."""
        try:
            parts = await self._outbox.split(seq, records, payload, self.config.batch_size)
        except (OutboxCorrupt, StoreError) as exc:
            log.error("uplink.split_failed", row=seq, records=records, error=str(exc))
            return [(seq, records, payload)]
        log.info("uplink.row_split", row=seq, records=records, rows=len(parts))
        return parts

    def _lane_of(self, meter_id: str) -> int:
        return zlib.crc32(meter_id.encode()) % self.config.lanes

    def _seal(self, batches: list[_Batch]) -> asyncio.Future[None]:
        """Give the batches' rows their keys, durably, before any of them is sent."""
        return self._store.submit([(SEAL, (batch.key, _seqs(batch.rows))) for batch in batches])

    async def _resume(self) -> None:
        """Batches sealed by a previous run: sent first, as they were."""
        found = await self._store.fetchall(
            "SELECT seq, kind, meter_id, created_at, records, payload, batch_key FROM outbox"
            " WHERE state = 'pending' AND batch_key IS NOT NULL ORDER BY seq"
        )
        rows: dict[str, tuple[str, str, list[_Row]]] = {}
        for seq, kind, meter_id, created_at, records, payload, key in found:
            row = _Row(seq, meter_id, created_at, records, payload)
            rows.setdefault(key, (kind, meter_id, []))[2].append(row)
        batches = [
            _Batch(key, kind, self._lane_of(meter_id), sealed)
            for key, (kind, meter_id, sealed) in rows.items()
        ]
        for batch in batches:
            await self._lanes[batch.lane].put(batch)
        if batches:
            log.info(
                "uplink.resumed", batches=len(batches), records=sum(b.records for b in batches)
            )

    # -- delivery ----------------------------------------------------------------------------

    async def _lane(self, http: aiohttp.ClientSession, lane: asyncio.Queue[_Batch]) -> None:
        while True:
            batch = await lane.get()
            self._outbox.poke()  # room in this lane: the dispatcher may seal the next
            self._outbox.in_flight += batch.records
            try:
                await self._deliver(http, batch)
            finally:
                self._outbox.in_flight -= batch.records

    async def _deliver(self, http: aiohttp.ClientSession, batch: _Batch) -> None:
        url = self.config.url + PATHS[batch.kind]
        try:
            # gzip releases the GIL: compressing on another thread takes it off the event loop
            body = await asyncio.get_running_loop().run_in_executor(
                None, _gzip, self._document(batch)
            )
        except OutboxCorrupt as exc:
            await self._park(batch, None, f"not sent: {exc}")
            return
        headers = {**self._headers, "Idempotency-Key": batch.key}
        attempt = 0
        while True:
            attempt += 1
            wait: float | None = None
            try:
                async with http.post(url, data=body, headers=headers) as response:
                    status = response.status
                    text = (await response.text(errors="replace"))[:ERROR_TEXT]
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, text, retry_after = 0, f"{type(exc).__name__}: {exc}", None
            if 200 <= status < 300:
                self._delivered(batch)
                return
            if status in (429, 503):
                wait = retry_after
            elif status in (401, 403):
                log.error("uplink.auth_refused", status=status, url=url, answer=text[:200])
            elif 400 <= status < 500 and status != 408:
                await self._park(batch, status, text)
                return
            self.stats.retries += 1
            self.stats.last_error = f"{status or 'no answer'}: {text[:200]}"
            if wait is None:
                wait = self._backoff(attempt)
            wait = min(wait, self.config.backoff_max)
            if attempt % LOG_EVERY == 1:
                log.warning(
                    "uplink.retry",
                    batch=batch.key,
                    status=status,
                    answer=text[:200],
                    attempt=attempt,
                    retry_in=round(wait, 3),
                )
            await asyncio.sleep(wait)  # the back-off itself

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, self.config.backoff_initial, self.config.backoff_max)

    def _document(self, batch: _Batch) -> bytes:
        """The batch's JSON: what ``json.dumps`` of the document (the records in outbox order,
        each with its ``seq`` last) would write, spliced from the stored wire form."""
        records = []
        for row in batch.rows:
            seq = row.seq - row.records
            for text in record_texts(row.seq, row.records, row.payload):
                seq += 1
                records.append(f'{text[:-1]},"seq":{seq}}}')
        sent_at = iso(max(r.created_at for r in batch.rows), "auto")
        head = json_text({"hes_id": self.config.hes_id, "batch_id": batch.key, "sent_at": sent_at})
        return f'{head[:-1]},"records":[{",".join(records)}]}}'.encode()

    def _delivered(self, batch: _Batch) -> None:
        """The MDM has the batch: its rows go. The lane does not wait for that commit (a lane
        waiting for a commit per batch capped the uplink at a few batches per commit time): if
        hesd stops before it, the batch is sent again under its key, and the MDM drops it."""
        deleted = self._store.submit([(DELETE, (_seqs(batch.rows), batch.key))])
        deleted.add_done_callback(functools.partial(self._deleted, batch))
        self.stats.delivered[batch.kind] += batch.records
        self.stats.batches += 1
        self.stats.last_delivery = time.time()

    def _deleted(self, batch: _Batch, deleted: asyncio.Future[None]) -> None:
        if deleted.cancelled():
            return
        error = deleted.exception()
        if error is not None:  # the rows stay, and go again after a restart: the MDM drops them
            log.error(
                "uplink.delete_failed", batch=batch.key, records=batch.records, error=str(error)
            )
            return
        self._outbox.released(batch.size)

    async def _park(self, batch: _Batch, status: int | None, text: str) -> None:
        """Rows the MDM refused (``status``), or that cannot be sent (None: ``text`` says why)."""
        error = text if status is None else f"HTTP {status}: {text}"
        await self._store.submit(
            [
                (
                    "UPDATE outbox SET state = 'dead', last_error = ?, attempts = attempts + 1"
                    " WHERE batch_key = ?",
                    (error, batch.key),
                )
            ]
        )
        self.stats.dead_letters += 1
        self.stats.last_error = error[:200]
        log.error(
            "uplink.dead_letter",
            batch=batch.key,
            kind=batch.kind,
            records=batch.records,
            status=status,
            answer=text[:500],
        )


def _gzip(data: bytes) -> bytes:
    """A batch's body: level 1 (the fastest), no timestamp, so that the same batch is the same
    body, byte for byte, on every retry."""
    return gzip.compress(data, compresslevel=1, mtime=0)


def _seqs(rows: list[_Row]) -> str:
    return json.dumps([row.seq for row in rows])


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
