"""Event logs of a simulated meter: generated from the load model, plus logged and injected ones.

Two kinds of events are never stored: supply failures (``power_failure``/``power_restored``, one
every 8 days) and over-voltages on L1 (``over_voltage``/``over_voltage_restored``, one every 16
days) come from the load model (``hesd.sim.load``), so they agree with the energy and voltage
the meter reports. Everything else (relay operations, clock settings, firmware activation, load
limit changes, and what tests inject: magnet, cover open, ...) is kept in the meter's small
bounded log, ``EventLog`` below. An event is logged only if the vendor's code table has a code
for its kind.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from adapters.cosem_map import EventLog as CodeTable
from adapters.is15959 import EVENT_CATEGORIES
from hesd.sim import load

__all__ = ["LOG_SIZE", "TAMPER_KINDS", "Event", "EventLog", "category_events"]

LOG_SIZE: Final = 32  # events a meter keeps besides the generated ones
TAMPER_KINDS: Final = frozenset(
    {
        "magnet_tamper",
        "neutral_disturbance",
        "cover_open",
        "current_bypass",
        "current_reverse_l1",
        "current_reverse_l2",
        "current_reverse_l3",
    }
)
_DAY: Final = 86400
_LONGEST: Final = 3600  # seconds: no generated episode lasts longer


@dataclass(frozen=True, slots=True, order=True)
class Event:
    time: float  # simulated UNIX time it happened
    code: int
    category: int  # index in EVENT_CATEGORIES


class EventLog:
    """The events a meter logged or had injected: the newest ``LOG_SIZE``, and a tamper count."""

    __slots__ = ("_events", "tampers")

    def __init__(self) -> None:
        self._events: deque[Event] = deque(maxlen=LOG_SIZE)
        self.tampers = 0  # occurrences of tamper kinds ever logged (the register counts on)

    def add(self, event: Event, tamper: bool) -> None:
        if self._events and event < self._events[-1]:  # keep time order (injected in the past)
            items = sorted([*self._events, event])
            self._events = deque(items[-LOG_SIZE:], maxlen=LOG_SIZE)
        else:
            self._events.append(event)
        self.tampers += tamper

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def tampers_after(self, t: float, codes: frozenset[int]) -> int:
        return sum(1 for e in self._events if e.time > t and e.code in codes)


def generated(
    params: load.LoadParams, codes: CodeTable, category: int, t0: float, t1: float
) -> list[Event]:
    """The events the load model produces in [t0, t1) for one category."""
    name = EVENT_CATEGORIES[category]
    if name == "power":
        episodes, kinds = (
            load.outages(params, t0 - _LONGEST, t1),
            ("power_failure", "power_restored"),
        )
    elif name == "voltage":
        episodes, kinds = (
            load.over_voltages(params, t0 - _LONGEST, t1),
            ("over_voltage", "over_voltage_restored"),
        )
    else:
        return []
    start_code, end_code = (codes.by_kind(kind) for kind in kinds)
    found = []
    for start, end in episodes:
        if start_code is not None and start_code.category == name and t0 <= start < t1:
            found.append(Event(float(start), start_code.code, category))
        if end_code is not None and end_code.category == name and t0 <= end < t1:
            found.append(Event(float(end), end_code.code, category))
    return found


def category_events(
    params: load.LoadParams,
    codes: CodeTable,
    log: EventLog | None,
    category: int,
    *,
    start: float,
    now: float,
) -> list[Event]:
    """The entries of one event profile at ``now``: its newest ``depth`` events since ``start``,
    oldest first."""
    depth = codes.depths[category]
    name = EVENT_CATEGORIES[category]
    block = {"power": load.OUTAGE_BLOCK, "voltage": load.OVER_VOLTAGE_BLOCK}.get(name, 0)
    # each block gives two events: look back far enough for depth of them
    window = (depth // 2 + 2) * block * _DAY
    events = (
        generated(params, codes, category, max(start, now - window), now + 1e-9) if block else []
    )
    if log is not None:
        events.extend(e for e in log if e.category == category and start <= e.time <= now)
        events.sort()
    return events[-depth:]
