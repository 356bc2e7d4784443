"""Fakes for the scheduler's unit tests: a clock moved by hand, a reader that makes profile rows
and counts what is in flight, an outbox whose pressure the test sets."""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from adapters.model import Event, Reading, Source
from adapters.normalise import Batch, NormaliseError
from hesd.schedule_budget import link_of
from hesd.schedule_reads import Step, grid
from hesd.session import SessionError
from hesd.store import MeterEntry
from hesd.uplink.outbox import Record

IST_MINUTES = 330  # the shipped IS 15959 profiles' utc_offset


class FakeClock:
    """Wall-clock time that moves only when the test says so."""

    def __init__(self, now: float) -> None:
        self._now = now
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, when: float) -> None:
        if when <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (when, next(self._order), future))
        await future

    @property
    def sleepers(self) -> int:
        return sum(not f.done() for _, _, f in self._sleepers)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    def set(self, now: float) -> None:
        self._now = now
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)


async def until(predicate: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll ``predicate`` (yielding to the loop) until true; fail naming ``what`` after
    ``within`` real seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.001)


@dataclass
class FakeSink:
    """The outbox: keeps what it is offered; ``pressure`` is the test's."""

    pressure: bool = False
    records: list[Record] = field(default_factory=list)

    def offer(self, records: Sequence[Record]) -> asyncio.Future[None]:
        self.records.extend(records)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@dataclass
class FakeReader:
    """Meters that answer from a model: profile rows on the interval grid (minus ``gaps``),
    one reading per quantity, an event per category. ``hold`` (if set) keeps every read waiting
    until it is set; ``lock`` serialises a meter's requests as its session would."""

    clock: FakeClock
    entries: dict[str, MeterEntry]
    per_destination: int = 4
    offline: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)
    gaps: dict[str, set[float]] = field(default_factory=dict)  # interval ends a meter lacks
    interval: int = 1800
    hold: asyncio.Event | None = None
    log: list[tuple[str, str, float, float, float]] = field(default_factory=list)
    in_flight: int = 0
    most: int = 0
    by_link: dict[str, int] = field(default_factory=dict)
    most_by_link: dict[str, int] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def reachable(self, meter_id: str) -> bool:
        return meter_id not in self.offline

    def lock(self, meter_id: str) -> asyncio.Lock:
        return self.locks.setdefault(meter_id, asyncio.Lock())

    async def read(self, meter_id: str, step: Step) -> Batch:
        link, _ = link_of(self.entries[meter_id], self.per_destination)
        self.in_flight += 1
        self.by_link[link] = self.by_link.get(link, 0) + 1
        self.most = max(self.most, self.in_flight)
        self.most_by_link[link] = max(self.most_by_link.get(link, 0), self.by_link[link])
        try:
            async with self.lock(meter_id):
                if self.hold is not None:
                    await self.hold.wait()
                self.log.append((meter_id, step.mark_key, step.start, step.end, self.clock.now()))
                if meter_id in self.failing:
                    raise SessionError(f"meter {meter_id}: no answer")
                return self._answer(meter_id, step)
        finally:
            self.in_flight -= 1
            self.by_link[link] -= 1

    def _answer(self, meter_id: str, step: Step) -> Batch:
        now = dt.datetime.fromtimestamp(self.clock.now(), dt.UTC)
        if step.kind == "quantities":
            out = Batch()
            for name in step.quantities:
                if name == "no_such_quantity":
                    out.errors.append(NormaliseError(f"meter {meter_id}: no {name!r}"))
                    continue
                out.readings.append(_reading(meter_id, name, now, None))
            return out
        if step.kind == "events":
            stamp = dt.datetime.fromtimestamp(step.end, dt.UTC).replace(microsecond=0)
            event = Event(
                meter_id=meter_id,
                kind="magnet_tamper",
                category="other",
                severity="critical",
                occurrence=True,
                code=201,
                name="magnet tamper",
                timestamp=stamp,
                source=Source.SCHEDULE,
                obis="0.0.99.98.4.255",
            )
            return Batch(events=[event] if step.what == "other" else [])
        lacking = self.gaps.get(meter_id, set())
        out = Batch()
        for end in grid(step.start, step.end, self.interval, IST_MINUTES):
            if end not in lacking and end <= self.clock.now():
                at = dt.datetime.fromtimestamp(end, dt.UTC)
                out.readings.append(
                    _reading(meter_id, "block_energy_active_import", at, self.interval)
                )
        return out


def _reading(meter_id: str, quantity: str, at: dt.datetime, interval: int | None) -> Reading:
    return Reading(
        meter_id=meter_id,
        quantity=quantity,
        value=Decimal("1.5"),
        unit="kWh",
        timestamp=at,
        source=Source.SCHEDULE,
        obis="1.0.1.29.0.255",
        interval=interval,
    )
