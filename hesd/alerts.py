"""Alerts: what a meter's alert push announces reaches the MDM at once, its event logs right after.

The daemon hands every Data-Notification of a meter with a session to ``Alerts.on_push``, which
asks the vendor's alert layout (``adapters/alerts.py``) whether it is the alert push. If it is:

1. its events (``Source.ALERT``: kind, category and code from the vendor's tables, the time the
   push carries, the ESW bit) go to the outbox at once, committed together (``alerts.received``
   in the log; ``alerts.unknown`` for a bit or code the profile does not map);
2. unless ``alerts.read_logs`` is false, the meter's event logs that hold them are read: a task
   per meter, ``meter:{id}:alerts``, lets the meter's alerts gather for ``alerts.coalesce``
   seconds (one read serves a burst), then reads each log in one ``SessionManager.request``
   (the fleet budget; a meter that dialled in is read on the link it pushed on, a dial-out
   meter is dialled), from the newest event hesd has of that log (``read_marks``, key
   ``events:<category>``, shared with the scheduler's event-log schedules) or
   ``alerts.lookback`` before the alert when it has none, to now (or the alert's time, if the
   meter's clock runs ahead) plus ``READ_AHEAD``. Alerts that arrive during a read wait for
   the next one;
3. every event read that is newer than the mark goes to the outbox complete (``Source.PULL``,
   with its snapshot); one that confirms an alert (same log and code, the nearest in time
   within ``alerts.match_window``) carries the alert's ``event_id`` as ``alert_id``, and goes
   again even if hesd had sent it before (same ``event_id``: the MDM keeps one). The marks
   advance once the records are durable (``alerts.read``). An alert no logged event confirms
   is logged ``alerts.unconfirmed``.

A read that fails with a ``SessionError`` is tried again after ``BACKOFF`` s, twice as long the
next time, ``ATTEMPTS`` times in all, then given up (``alerts.read_failed``): the marks stay, so
the next alert or scheduled read of those logs reads what this one could not.

Priority: scheduled reads of a meter wait while it has an alert read pending or running, as
they wait for its commands (``Yielding`` joins the router and this, for the scheduler).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from adapters.alerts import Alert, decode_alert
from adapters.hooks import MeterContext
from adapters.is15959 import EVENT_CATEGORIES, UNKNOWN_KIND
from adapters.model import Event, Source
from adapters.normalise import Batch, NormaliseError, Normaliser
from hesd.config_alerts import AlertsConfig
from hesd.reads import read_events, reading_with
from hesd.router import MeterAccess
from hesd.schedule_reads import READ_AHEAD
from hesd.session import MeterSession, SessionError
from hesd.store import Statement, Store
from hesd.store.schedules import ScheduleStore, read_mark, set_mark
from hesd.timefmt import iso, utc
from hesd.uplink.outbox import Record
from protocols.errors import HesdError

__all__ = ["ATTEMPTS", "BACKOFF", "Alerts", "Yielding", "confirm"]

log = structlog.get_logger("hesd.alerts")

ATTEMPTS: Final = 3  # tries of one event-log read
BACKOFF: Final = 5.0  # seconds before the second try, doubled for each next one
LOGGED: Final = 5  # unknown bits, unconfirmed alerts, read errors logged per alert or read


class Sink(Protocol):
    """Where records go (the outbox)."""

    def offer(self, records: Sequence[Record]) -> asyncio.Future[None]: ...


class Busy(Protocol):
    """Something that may have work for a meter that scheduled reads wait for."""

    def has_work(self, meter_id: str) -> bool: ...

    async def wait_idle(self, meter_id: str) -> None: ...


class Yielding:
    """What scheduled reads of a meter wait for: its commands and its alert reads."""

    def __init__(self, *parts: Busy) -> None:
        self._parts = parts

    def has_work(self, meter_id: str) -> bool:
        return any(part.has_work(meter_id) for part in self._parts)

    async def wait_idle(self, meter_id: str) -> None:
        while self.has_work(meter_id):
            for part in self._parts:
                await part.wait_idle(meter_id)


@dataclass(slots=True)
class _Pending:
    """A meter's alerts since its last read began."""

    categories: set[str]
    alerts: list[Event] = field(default_factory=list)  # to confirm (kind not unknown)
    earliest: float = float("inf")  # the alerts' times, UNIX seconds
    latest: float = float("-inf")

    def add(self, alert: Alert) -> None:
        self.categories.update(alert.categories)
        self.alerts.extend(e for e in alert.events if e.kind != UNKNOWN_KIND)
        at = alert.time.timestamp()
        self.earliest, self.latest = min(self.earliest, at), max(self.latest, at)


def confirm(
    events: Sequence[Event], alerts: Sequence[Event], window: float
) -> tuple[list[Event], list[Event]]:
    """``events`` read from logs, those that confirm one of ``alerts`` with its ``alert_id``
    set; and the alerts no event confirmed. An event confirms the alert of its log and code
    nearest in time, within ``window`` seconds; each alert is confirmed once."""
    left = list(alerts)
    out = []
    for event in events:
        best: tuple[float, Event] | None = None
        for alert in left:
            if alert.category != event.category or alert.code != event.code:
                continue
            gap = abs((event.timestamp - alert.timestamp).total_seconds())
            if gap <= window and (best is None or gap < best[0]):
                best = (gap, alert)
        if best is None:
            out.append(event)
        else:
            left.remove(best[1])
            out.append(dataclasses.replace(event, alert_id=best[1].event_id))
    return out, left


class Alerts:
    """See the module docstring. ``run()`` is its task; ``close()`` ends it and its reads."""

    def __init__(
        self,
        config: AlertsConfig,
        *,
        store: Store,
        access: MeterAccess,
        normalisers: Callable[[], Mapping[str, Normaliser]],
        sink: Sink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._store = store
        self._marks = ScheduleStore(store)
        self._access = access
        self._normalisers = normalisers
        self._sink = sink
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle: dict[str, asyncio.Event] = {}
        self._stop = asyncio.Event()
        self.received = 0  # alert pushes
        self.events = 0  # events they announced
        self.reads = 0  # event-log reads that ended (delivered)
        self.read_failures = 0  # given up after ATTEMPTS
        self.unconfirmed = 0  # alerts no logged event confirmed

    # -- a push ------------------------------------------------------------------------------

    def on_push(self, meter: MeterContext, normaliser: Normaliser, body: object) -> bool:
        """Handle ``body`` if it is the vendor's alert push; False if it is not (then it is
        for the instantaneous push's normaliser)."""
        meter_id = meter.meter_id
        try:
            alert = decode_alert(normaliser, meter, body, received=utc(self._clock()))
        except NormaliseError as exc:  # it named the alert push setup and does not fit
            log.warning("alerts.malformed", meter=meter_id, error=str(exc))
            return True
        except Exception:  # a vendor adapter's bug must not end the meter's session
            log.exception(
                "alerts.adapter_crashed", meter=meter_id, adapter=normaliser.profile.adapter
            )
            return True
        if alert is None:
            return False
        self.received += 1
        self.events += len(alert.events)
        log.info(
            "alerts.received",
            meter=meter_id,
            time=iso(alert.time.timestamp()),
            kinds=[e.kind for e in alert.events],
            codes=[e.code for e in alert.events],
            esw_bits=[e.esw_bit for e in alert.events if e.esw_bit is not None],
            logs=list(alert.categories) if self.config.read_logs else [],
        )
        if alert.clock_error:
            log.warning("alerts.clock_unusable", meter=meter_id, error=alert.clock_error)
        if not alert.events:
            log.warning("alerts.empty", meter=meter_id, detail="an alert push with no event")
        for event in alert.unknown[:LOGGED]:
            log.warning(
                "alerts.unknown", meter=meter_id, esw_bit=event.esw_bit, code=event.code,
                detail=event.name,
            )  # fmt: skip
        self._forward(meter_id, alert.events)
        if self.config.read_logs and alert.categories and not self._stop.is_set():
            self._pending.setdefault(meter_id, _Pending(set())).add(alert)
            if meter_id not in self._tasks:
                self._tasks[meter_id] = asyncio.get_running_loop().create_task(
                    self._serve(meter_id), name=f"meter:{meter_id}:alerts"
                )
        return True

    def _forward(self, meter_id: str, events: Sequence[Event]) -> None:
        if not events:
            return
        try:
            committed = self._sink.offer(events)
        except HesdError as exc:  # OutboxFull (logged and counted there), the store closing
            log.error("alerts.refused", meter=meter_id, events=len(events), error=str(exc))
            return

        def done(future: asyncio.Future[None]) -> None:
            if not future.cancelled() and future.exception() is not None:
                log.error(
                    "alerts.lost", meter=meter_id, events=len(events), error=str(future.exception())
                )

        committed.add_done_callback(done)

    # -- what the scheduler waits for --------------------------------------------------------

    def has_work(self, meter_id: str) -> bool:
        """An event-log read of the meter is waiting or running."""
        return meter_id in self._tasks

    async def wait_idle(self, meter_id: str) -> None:
        while self.has_work(meter_id):
            await self._idle.setdefault(meter_id, asyncio.Event()).wait()

    # -- the reads ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Until ``close()``; then the reads in flight are cancelled (their marks stay)."""
        try:
            await self._stop.wait()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._stop.set()

    async def _serve(self, meter_id: str) -> None:
        try:
            while not self._stop.is_set():
                if self.config.coalesce > 0:
                    await asyncio.sleep(self.config.coalesce)
                pending = self._pending.pop(meter_id, None)
                if pending is None:
                    return
                await self._read(meter_id, pending)
                if meter_id not in self._pending:  # no alert came during the read
                    return
        except Exception:  # a bug here must not end other meters' reads
            self._pending.pop(meter_id, None)
            log.exception("alerts.read_crashed", meter=meter_id)
        finally:
            del self._tasks[meter_id]
            idle = self._idle.pop(meter_id, None)
            if idle is not None:
                idle.set()

    async def _read(self, meter_id: str, pending: _Pending) -> None:
        started = self._clock()
        categories: list[str] = [c for c in EVENT_CATEGORIES if c in pending.categories]
        marks = {c: await self._marks.mark(read_mark("events", c), meter_id) for c in categories}
        end = max(started, pending.latest) + READ_AHEAD
        first = pending.earliest - self.config.lookback
        spans = {c: (min(first if m is None else m, end), end) for c, m in marks.items()}
        batches = await self._attempts(meter_id, spans, pending)
        if batches is None:
            return
        fresh: list[Event] = []
        old: list[Event] = []  # at or before the mark: hesd sent them already
        errors: list[NormaliseError] = []
        statements: list[Statement] = []
        now = self._clock()
        for category, batch in batches.items():
            mark = marks[category]
            for event in batch.events:
                (fresh if mark is None or event.timestamp.timestamp() > mark else old).append(event)
            errors.extend(batch.errors)
            newest = max((e.timestamp.timestamp() for e in batch.events), default=None)
            if newest is not None and (mark is None or newest > mark):
                statements.append(set_mark(read_mark("events", category), meter_id, newest, now))
        # alerts that came during the read may already be in what it got: confirmed now, they
        # are not sent again by the next read
        later = self._pending.get(meter_id)
        waiting = [*pending.alerts, *(later.alerts if later is not None else ())]
        found, unmatched = confirm([*fresh, *old], waiting, self.config.match_window)
        remaining = {id(a) for a in unmatched}
        left = [a for a in pending.alerts if id(a) in remaining]
        if later is not None:
            later.alerts = [a for a in later.alerts if id(a) in remaining]
        records: list[Record] = [
            e for i, e in enumerate(found) if i < len(fresh) or e.alert_id is not None
        ]
        try:
            if records:
                await self._sink.offer(records)
            if statements:
                await self._store.submit(statements)
        except HesdError as exc:  # OutboxFull, the store closing: the marks stay where they were
            log.error("alerts.records_refused", meter=meter_id, events=len(records), error=str(exc))
            return
        self.reads += 1
        log.info(
            "alerts.read",
            meter=meter_id,
            logs=categories,
            events=len(records),
            confirmed=len(waiting) - len(unmatched),
            errors=len(errors),
            seconds=round(self._clock() - started, 3),
        )
        for error in errors[:LOGGED]:
            log.warning("alerts.read_error", meter=meter_id, error=str(error))
        self._unconfirmed(meter_id, left, "no event in the meter's log matches it")

    async def _attempts(
        self, meter_id: str, spans: dict[str, tuple[float, float]], pending: _Pending
    ) -> dict[str, Batch] | None:
        delay = BACKOFF
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await self._access.request(
                    meter_id, lambda session: self._read_logs(session, spans)
                )
            except SessionError as exc:
                if attempt == ATTEMPTS:
                    self.read_failures += 1
                    log.warning(
                        "alerts.read_failed", meter=meter_id, logs=sorted(spans),
                        attempts=attempt, error=str(exc),
                    )  # fmt: skip
                    self._unconfirmed(meter_id, pending.alerts, "the event logs were not read")
                    return None
                log.info("alerts.read_retrying", meter=meter_id, error=str(exc), after=delay)
                await asyncio.sleep(delay)
                delay *= 2
        return None  # not reached: the last attempt returns or gives up

    async def _read_logs(
        self, session: MeterSession, spans: dict[str, tuple[float, float]]
    ) -> dict[str, Batch]:
        normaliser, meter = reading_with(session, self._normalisers())
        found = {}
        for category, (start, end) in spans.items():
            found[category] = await read_events(
                session, normaliser, meter, category, start=utc(start), end=utc(end),
                source=Source.PULL,
            )  # fmt: skip
        return found

    def _unconfirmed(self, meter_id: str, alerts: Sequence[Event], why: str) -> None:
        self.unconfirmed += len(alerts)
        for alert in alerts[:LOGGED]:
            log.warning(
                "alerts.unconfirmed", meter=meter_id, kind=alert.kind, code=alert.code,
                time=iso(alert.timestamp.timestamp()), event_id=alert.event_id, detail=why,
            )  # fmt: skip
