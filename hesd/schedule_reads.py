"""What one scheduled read of one meter asks of it, and what the answer says is missing.

``plan`` turns a schedule's read into the meter's *steps*, each one request on its session
(``SessionReader.read``, through ``SessionManager.request``):

* quantities: one step, the values now;
* a profile: first the holes found by earlier runs (each its own range), then the span from just
  after the newest row hesd has (its *mark*, ``read_marks``) to now (plus ``READ_AHEAD``), never
  further back than the schedule's ``max_backfill``, cut into chunks of ``CHUNK_ROWS``
  intervals (at least a day) so a meter back from a long absence is read in several requests
  and a command can come between them;
* event logs: one step per category, from just after the newest event hesd has of it.

``missing`` finds the intervals absent from a profile read: interval ends (aligned to the
vendor's local time, as ``adapters.normalise`` aligns rows) between two rows the meter gave, or
between the mark and the first row. The span after the last row is not missing: the meter may
not have captured it yet.

``hole_statements`` turns what a profile read found into ``profile_holes`` rows: new holes
(tried again by the next runs), what is left of a hole read again, or, after
``scheduler.hole_retries`` reads that found it still missing, nothing (``scheduler.hole_abandoned``:
the meter does not have those intervals).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import structlog

from adapters.model import Source
from adapters.normalise import Batch, Normaliser
from hesd.config import ScheduleConfig
from hesd.reads import read_events, read_profile, read_quantities, reading_with
from hesd.router import MeterAccess
from hesd.session import MeterSession
from hesd.store import MeterEntry, Statement
from hesd.store.schedules import Hole, add_hole, drop_hole, read_mark
from hesd.timefmt import iso, utc
from protocols.errors import HesdError

__all__ = [
    "CHUNK_ROWS",
    "READ_AHEAD",
    "Plan",
    "Reader",
    "ScheduleError",
    "SessionReader",
    "Step",
    "grid",
    "hole_statements",
    "missing",
    "plan",
    "runs_of",
    "slot_fraction",
]

log = structlog.get_logger("hesd.scheduler")

CHUNK_ROWS: Final = 96  # profile intervals per request when back-filling (at least a day)
READ_AHEAD: Final = 300.0  # ranges end this far after now: meters whose clock runs ahead (or
# that capture a row as they are read, the instantaneous profile) still give their newest row


class ScheduleError(HesdError):
    """A scheduled read that cannot be made for this meter (its vendor lacks the profile...)."""


@dataclass(frozen=True, slots=True)
class Step:
    """One request of a scheduled read: quantities now, or a profile/event log over a range."""

    kind: str  # "quantities" | "profile" | "events"
    what: str = ""  # the profile's name or the event category
    quantities: tuple[str, ...] = ()
    start: float = 0.0  # UNIX seconds, inclusive (profile and events)
    end: float = 0.0
    hole: Hole | None = None  # this step reads a hole found earlier again

    def __post_init__(self) -> None:
        if self.kind not in ("quantities", "profile", "events"):
            raise ValueError(f"step kind {self.kind!r}")
        if self.kind == "quantities" and not self.quantities:
            raise ValueError("a quantities step needs quantities")
        if self.kind != "quantities" and (not self.what or self.end < self.start):
            raise ValueError(f"{self.kind} step {self.what!r}: empty name or range")

    @property
    def mark_key(self) -> str:
        """The ``read_marks`` key this step advances."""
        return read_mark(self.kind, self.what)


@dataclass(slots=True)
class Plan:
    """What the run knows before reading: marks by key and meter, holes by meter."""

    marks: dict[str, dict[str, float]] = field(default_factory=dict)
    holes: dict[str, list[Hole]] = field(default_factory=dict)


class Reader(Protocol):
    """How the scheduler reaches meters (``SessionReader``; tests give a fake)."""

    async def reachable(self, meter_id: str) -> bool: ...

    async def read(self, meter_id: str, step: Step) -> Batch: ...


class SessionReader:
    """Runs steps on meters' sessions with ``hesd.reads``; records are ``Source.SCHEDULE``."""

    def __init__(
        self, access: MeterAccess, normalisers: Callable[[], Mapping[str, Normaliser]]
    ) -> None:
        self._access = access
        self._normalisers = normalisers

    async def reachable(self, meter_id: str) -> bool:
        return await self._access.reachable(meter_id)

    async def read(self, meter_id: str, step: Step) -> Batch:
        async def run(session: MeterSession) -> Batch:
            normaliser, meter = reading_with(session, self._normalisers())
            if step.kind == "quantities":
                return await read_quantities(
                    session, normaliser, meter, step.quantities, source=Source.SCHEDULE
                )
            start, end = utc(step.start), utc(step.end)
            if step.kind == "profile":
                return await read_profile(
                    session, normaliser, meter, step.what, start=start, end=end,
                    source=Source.SCHEDULE,
                )  # fmt: skip
            return await read_events(
                session, normaliser, meter, step.what, start=start, end=end, source=Source.SCHEDULE
            )

        return await self._access.request(meter_id, run)


def slot_fraction(schedule: str, meter_id: str) -> float:
    """A stable place in [0, 1) for the meter in the schedule's window (the same every run)."""
    digest = hashlib.blake2b(f"{schedule}\0{meter_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def plan(
    schedule: ScheduleConfig,
    entry: MeterEntry,
    normalisers: Mapping[str, Normaliser],
    known: Plan,
    now: float,
) -> list[Step]:
    """The steps of ``schedule``'s read of the meter ``entry`` at ``now``."""
    read = schedule.read
    if read.quantities:
        return [Step("quantities", quantities=read.quantities)]
    floor = now - schedule.max_backfill
    horizon = now + READ_AHEAD
    meter_id = entry.meter_id
    if read.events:
        steps = []
        for category in read.categories:
            mark = known.marks.get(read_mark("events", category), {}).get(meter_id)
            start = floor if mark is None else max(floor, mark + 1)
            steps.append(Step("events", category, start=min(start, horizon), end=horizon))
        return steps
    normaliser = normalisers.get(entry.vendor)
    if normaliser is None:
        raise ScheduleError(f"meter {meter_id}: vendor {entry.vendor!r} is not loaded")
    load = normaliser.profile.profile(read.profile)
    if load is None:
        raise ScheduleError(
            f"meter {meter_id}: vendor {entry.vendor} has no {read.profile} profile"
        )
    steps = [
        Step("profile", read.profile, start=max(h.start_at, floor), end=h.end_at, hole=h)
        for h in known.holes.get(meter_id, ())
        if h.end_at >= floor
    ]
    mark = known.marks.get(read_mark("profile", read.profile), {}).get(meter_id)
    start = floor if mark is None else max(floor, mark + 1)
    chunk = max(86400.0, load.interval * CHUNK_ROWS) if load.interval else horizon - start
    while True:
        end = min(start + chunk, horizon)
        steps.append(Step("profile", read.profile, start=min(start, horizon), end=end))
        if end >= horizon:
            return steps
        start = end + 1


def grid(start: float, end: float, interval: int, utc_offset_minutes: int) -> list[float]:
    """Interval ends from ``start`` to ``end`` (inclusive) on the local-time grid."""
    offset = utc_offset_minutes * 60
    first = -(-(start + offset) // interval) * interval - offset
    count = int((end - first) // interval) + 1
    return [first + i * interval for i in range(max(0, count))]


def missing(
    received: Iterable[float], interval: int, anchor: float | None
) -> list[tuple[float, float]]:
    """Runs of interval ends absent between the rows ``received`` (aligned interval ends), and
    between ``anchor`` (the newest row hesd had before) and the first of them."""
    points = sorted(set(received))
    if anchor is not None and points and anchor < points[0]:
        points.insert(0, anchor)
    gaps = []
    for before, after in itertools.pairwise(points):
        if after - before > interval * 1.5:  # an aligned next row is exactly one interval on
            gaps.append((before + interval, after - interval))
    return gaps


def runs_of(points: list[float], interval: int) -> list[tuple[float, float]]:
    """Consecutive runs of interval ends, as (first, last)."""
    found: list[tuple[float, float]] = []
    for point in sorted(points):
        if found and point - found[-1][1] <= interval * 1.5:
            found[-1] = (found[-1][0], point)
        else:
            found.append((point, point))
    return found


def hole_statements(
    step: Step,
    *,
    meter_id: str,
    stamps: list[float],
    mark: float | None,
    grid_of: tuple[int, int],
    retries: int,
    now: float,
) -> tuple[int, list[Statement]]:
    """What a profile read found missing: (intervals newly found missing, statements).

    ``stamps`` are the rows' interval ends, ``mark`` the newest row hesd had before the read,
    ``grid_of`` the profile's interval and the vendor's UTC offset in minutes.
    """
    interval, offset = grid_of
    hole = step.hole
    if hole is not None:
        got = set(stamps)
        left = [t for t in grid(hole.start_at, hole.end_at, interval, offset) if t not in got]
        statements = [drop_hole(hole)]
        if left and hole.attempts >= retries:
            log.warning(
                "scheduler.hole_abandoned", meter=meter_id, profile=step.what,
                start=iso(left[0]), end=iso(left[-1]), intervals=len(left),
                attempts=hole.attempts,
            )  # fmt: skip
            return 0, statements
        for first, last in runs_of(left, interval):
            statements.append(
                add_hole(Hole(meter_id, step.what, first, last, hole.attempts + 1), now)
            )
        return 0, statements
    anchor = mark if mark is not None and mark >= step.start - interval else None
    found, statements = 0, []
    for first, last in missing(stamps, interval, anchor):
        found += int((last - first) // interval) + 1
        if retries:
            statements.append(add_hole(Hole(meter_id, step.what, first, last, 1), now))
    return found, statements
