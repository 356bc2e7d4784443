"""Cron times: the five fields of Vixie cron (crontab(5)), evaluated in a time zone.

``CronSpec.parse("*/30 * * * *")`` gives a spec; ``spec.next_after(t, zone)`` the first matching
minute strictly after the instant ``t``, as an aware datetime in ``zone``.

Fields, in order: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or ``jan``-``dec``, day of
week 0-7 (0 and 7 are Sunday) or ``sun``-``sat``. A field is a comma-separated list of items;
an item is ``*``, a value, or a range ``a-b``, each optionally followed by a step ``/n``
(``*/15``, ``8-18/2``); names are case-insensitive and may end ranges (``mon-fri``). The macros
``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and
``@hourly`` stand for their five fields.

Day of month and day of week, as Vixie cron has it: when both fields are restricted (neither
starts with ``*``), a day matches when *either* matches (``0 0 1,15 * mon``: the 1st, the 15th
and every Monday); when one of them starts with ``*``, both must match, so ``*/2`` in one of them
counts as unrestricted for this rule, as in Vixie cron.

Times are wall-clock times of the zone. A wall-clock minute that does not exist (skipped when
the clock is put forward) does not match; one that occurs twice (the clock put back) matches
once, at its first occurrence. India Standard Time (``Asia/Kolkata``) has no daylight saving
time, so neither case arises there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from protocols.errors import HesdError

__all__ = ["CronError", "CronSpec"]

MONTHS: Final = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS: Final = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# (name, lowest, highest, names of values from `lowest`)
_FIELDS: Final = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),
)
# Searching day by day: a day-of-month/month combination that exists recurs within 8 years (29
# February: leap years are at most 8 years apart, 2096 -> 2104).
_SEARCH_DAYS: Final = 8 * 366 + 1
_REFERENCE: Final = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)


class CronError(HesdError):
    """A cron expression that is not valid; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class CronSpec:
    """A parsed cron expression: the values each field allows."""

    text: str  # as written (macros kept), for display
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]  # of the month
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 Sunday .. 6 Saturday (7 folded into 0)
    day_or: bool  # both day fields restricted: a day matches when either does (Vixie cron)

    def __post_init__(self) -> None:
        for name, values, lo, hi in (
            ("minute", self.minutes, 0, 59),
            ("hour", self.hours, 0, 23),
            ("day of month", self.days, 1, 31),
            ("month", self.months, 1, 12),
            ("day of week", self.weekdays, 0, 6),
        ):
            if not values or min(values) < lo or max(values) > hi:
                raise CronError(f"{self.text!r}: {name}: values {sorted(values)} not in {lo}..{hi}")
        if list(self.minutes) != sorted(set(self.minutes)) or list(self.hours) != sorted(
            set(self.hours)
        ):
            raise CronError(f"{self.text!r}: minutes and hours must be sorted and distinct")

    @classmethod
    def parse(cls, text: str) -> CronSpec:
        """Parse a five-field expression or a macro; ``CronError`` names what is wrong."""
        written = text.strip()
        expanded = MACROS.get(written.lower(), written)
        if expanded.startswith("@"):
            raise CronError(f"{written!r}: unknown macro (one of {', '.join(MACROS)})")
        fields = expanded.split()
        if len(fields) != 5:
            raise CronError(
                f"{written!r}: expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(fields)}"
            )
        sets = [_field(written, field, rule) for field, rule in zip(fields, _FIELDS, strict=True)]
        spec = cls(
            text=written,
            minutes=tuple(sorted(sets[0])),
            hours=tuple(sorted(sets[1])),
            days=frozenset(sets[2]),
            months=frozenset(sets[3]),
            weekdays=frozenset(d % 7 for d in sets[4]),
            day_or=not fields[2].startswith("*") and not fields[4].startswith("*"),
        )
        if spec.next_after(_REFERENCE, dt.UTC) is None:
            raise CronError(f"{written!r}: no date matches (e.g. day 31 of a 30-day month)")
        return spec

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        return (by_date or by_weekday) if self.day_or else (by_date and by_weekday)

    def matches(self, wall: dt.datetime) -> bool:
        """``wall``'s wall-clock minute matches (its date, hour and minute; not its zone)."""
        return wall.minute in self.minutes and wall.hour in self.hours and self.day_matches(wall)

    def next_after(self, after: dt.datetime, zone: dt.tzinfo) -> dt.datetime | None:
        """The first matching minute of ``zone`` strictly after the instant ``after`` (aware);
        ``None`` if none comes within 8 years (``parse`` refuses such specs)."""
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        instant = after.timestamp()
        wall = after.astimezone(zone).replace(tzinfo=None, second=0, microsecond=0, fold=0)
        first_day = wall.date()
        for offset in range(_SEARCH_DAYS):
            day = first_day + dt.timedelta(days=offset)
            if not self.day_matches(day):
                continue
            for hour in self.hours:
                if offset == 0 and hour < wall.hour:
                    continue
                for minute in self.minutes:
                    if offset == 0 and hour == wall.hour and minute < wall.minute:
                        continue
                    local = dt.datetime.combine(day, dt.time(hour, minute), zone)
                    if local.timestamp() > instant and _exists(local, zone):
                        return local
        return None


def _exists(local: dt.datetime, zone: dt.tzinfo) -> bool:
    """The wall-clock time exists in ``zone`` (it is not in a gap left by a DST change)."""
    back = local.astimezone(dt.UTC).astimezone(zone)
    return back.replace(tzinfo=None) == local.replace(tzinfo=None)


def _field(text: str, field: str, spec: tuple[str, int, int, tuple[str, ...]]) -> set[int]:
    name, lo, hi, names = spec
    values: set[int] = set()
    for item in field.split(","):
        where = f"{text!r}: {name} {item!r}"
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{where}: the step must be a whole number from 1")
            step = int(step_text)
        if body == "*":
            first, last = lo, hi
        elif "-" in body:
            start, _, end = body.partition("-")
            first, last = _value(where, start, lo, hi, names), _value(where, end, lo, hi, names)
            if names is DAYS and end.lower() == "sun":
                last = 7  # "mon-sun": Sunday as the end of a week
            if first > last:
                raise CronError(f"{where}: the range runs backwards ({first} > {last})")
        else:
            if slash:
                raise CronError(f"{where}: a step needs * or a range (e.g. {body}-{hi}/{step})")
            first = last = _value(where, body, lo, hi, names)
        values.update(range(first, last + 1, step))
    return values


def _value(where: str, text: str, lo: int, hi: int, names: tuple[str, ...]) -> int:
    lower = text.lower()
    if names and lower in names:
        return names.index(lower) + lo
    if not text.isdigit():
        named = f" or one of {', '.join(names)}" if names else ""
        raise CronError(f"{where}: {text!r} is not a number {lo}..{hi}{named}")
    value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"{where}: {value} is not in {lo}..{hi}")
    return value
