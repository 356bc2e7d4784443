"""COSEM date, time and date-time (IEC 62056-6-2 §4.1.6.1), as A-XDR carries them.

``DateTime`` (12 octets), ``Date`` (5) and ``Time`` (4) keep every field, "not specified" as
``None`` and the special values (daylight-saving begin/end months, last and second-last day of
the month) as their octets. The deviation follows the standard: UTC = local time + deviation, in
minutes, so Indian Standard Time is sent as -330. ``axdr`` re-exports these types.
"""

from __future__ import annotations

import datetime as _dt
import struct
from dataclasses import dataclass
from typing import ClassVar, Self

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DST_BEGIN",
    "DST_END",
    "LAST_DAY",
    "SECOND_LAST_DAY",
    "CalendarValue",
    "Date",
    "DateTime",
    "Time",
    "date_time_from_octets",
]

_UNSPECIFIED_FIELD = {"year": 0xFFFF, "deviation": -0x8000}  # others: 0xFF
# IEC 62056-6-2 §4.1.6.1: field -> (low, high, special values); None in a field is "not specified"
_FIELD_RANGES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    "year": (0, 0xFFFE, ()),
    "month": (1, 12, (0xFD, 0xFE)),  # 0xFD daylight_savings_end, 0xFE daylight_savings_begin
    "day": (1, 31, (0xFD, 0xFE)),  # 0xFD second last day of the month, 0xFE last day
    "weekday": (1, 7, ()),  # 1 is Monday
    "hour": (0, 23, ()),
    "minute": (0, 59, ()),
    "second": (0, 59, ()),
    "hundredths": (0, 99, ()),
    "deviation": (-720, 720, ()),  # minutes, UTC = local time + deviation
    "clock_status": (0, 0xFE, ()),
}
_new, _set = object.__new__, object.__setattr__  # to build checked values without re-checking
DST_END, DST_BEGIN = 0xFD, 0xFE  # special months
SECOND_LAST_DAY, LAST_DAY = 0xFD, 0xFE  # special days of the month


class CalendarValue:
    """The octet codec shared by Date, Time and DateTime: fields in order, big-endian."""

    __slots__ = ()
    _FORMAT: ClassVar[struct.Struct]
    _KIND: ClassVar[str]
    _RULES: ClassVar[tuple[tuple[str, int, int, tuple[int, ...]], ...]]  # set below the classes
    _UNSPECIFIED: ClassVar[tuple[int, ...]]

    def __post_init__(self) -> None:
        for name, lo, hi, special in self._RULES:
            value = getattr(self, name)
            if value is None or (type(value) is int and (lo <= value <= hi or value in special)):
                continue
            extra = "".join(f", 0x{v:X}" for v in special)
            raise LocalProtocolError(
                f"{self._KIND}: {name} {value!r} is not {lo}..{hi}{extra} or None"
            )

    @classmethod
    def from_octets(cls, data: bytes | bytearray | memoryview) -> Self:
        """Parse the octets; RemoteProtocolError if their number or a field is wrong."""
        if len(data) != cls._FORMAT.size:
            raise RemoteProtocolError(
                f"a COSEM {cls._KIND} is {cls._FORMAT.size} octets, got {len(data)}"
            )
        if cls is DateTime and (value := date_time_from_octets(data)) is not None:
            return value  # type: ignore[return-value]
        fields = cls._FORMAT.unpack(data)
        try:
            return cls(
                *[None if v == u else v for v, u in zip(fields, cls._UNSPECIFIED, strict=True)]
            )
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def to_octets(self) -> bytes:
        return self._FORMAT.pack(
            *[
                u if (v := getattr(self, rule[0])) is None else v
                for rule, u in zip(self._RULES, self._UNSPECIFIED, strict=True)
            ]
        )


@dataclass(frozen=True, slots=True)
class Date(CalendarValue):
    """COSEM date, 5 octets (IEC 62056-6-2 §4.1.6.1)."""

    _FORMAT = struct.Struct(">HBBB")
    _KIND = "date"
    year: int | None
    month: int | None
    day: int | None
    weekday: int | None = None

    @classmethod
    def from_date(cls, date: _dt.date) -> Date:
        return cls(date.year, date.month, date.day, date.isoweekday())

    def to_date(self) -> _dt.date:
        """The calendar date; ``ValueError`` if a field is unspecified, special or impossible."""
        y, m, d = self.year, self.month, self.day
        if y is None or m is None or d is None or m > 12 or d > 31:
            raise ValueError(f"{self} is not a single calendar date")
        return _dt.date(y, m, d)


@dataclass(frozen=True, slots=True)
class Time(CalendarValue):
    """COSEM time, 4 octets (IEC 62056-6-2 §4.1.6.1)."""

    _FORMAT = struct.Struct(">BBBB")
    _KIND = "time"
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None = None

    @classmethod
    def from_time(cls, time: _dt.time) -> Time:
        return cls(time.hour, time.minute, time.second, time.microsecond // 10_000)

    def to_time(self) -> _dt.time:
        """The time of day (unspecified hundredths count as 0); ``ValueError`` if h/m/s are not."""
        if self.hour is None or self.minute is None or self.second is None:
            raise ValueError(f"{self} is not a single time of day")
        return _dt.time(self.hour, self.minute, self.second, (self.hundredths or 0) * 10_000)


@dataclass(frozen=True, slots=True)
class DateTime(CalendarValue):
    """COSEM date-time, 12 octets (IEC 62056-6-2 §4.1.6.1).

    ``None`` in a field is "not specified" on the wire (0xFFFF year, 0x8000 deviation, else
    0xFF). Month 0xFD/0xFE (DST end/begin) and day 0xFD/0xFE (second last/last day of the month)
    stay those ints. ``weekday`` is 1..7, 1 = Monday.

    ``deviation`` follows the standard, "deviation of local time to UTC in minutes", that is
    ``UTC = local time + deviation``: it is the NEGATED ISO 8601 offset, and includes the DST
    shift. India (UTC+05:30) is -330; Central European Summer Time (UTC+02:00) is -120.
    gurux-dlms reads it the same way by default (``GXDateTime.value.utcoffset()`` is
    ``-deviation``; its ``useUtc2NormalTime`` setting flips it for meters that send the ISO sign).
    """

    _FORMAT = struct.Struct(">HBBBBBBBhB")
    _KIND = "date-time"
    year: int | None
    month: int | None
    day: int | None
    weekday: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None
    clock_status: int | None

    def to_datetime(self) -> _dt.datetime:
        """The instant this date-time names.

        With a deviation: an aware datetime in UTC. Without one (0x8000): a naive datetime, the
        meter's wall-clock time, for a caller who knows the meter's time zone. Unspecified
        hundredths count as 0. ``ValueError`` if the year, month, day, hour, minute or second is
        unspecified or special (DST begin/end, last days), or names no real date.
        """
        y, mo, d, h, mi, s = self.year, self.month, self.day, self.hour, self.minute, self.second
        if y is None or mo is None or d is None or h is None or mi is None or s is None:
            raise ValueError(f"{self} has unspecified fields: not a single point in time")
        if mo > 12 or d > 31:
            raise ValueError(f"{self} names a recurring day, not a single point in time")
        local = _dt.datetime(y, mo, d, h, mi, s, (self.hundredths or 0) * 10_000)
        if self.deviation is None:
            return local
        try:  # IEC 62056-6-2 §4.1.6.1: UTC = local time + deviation
            return (local + _dt.timedelta(minutes=self.deviation)).replace(tzinfo=_dt.UTC)
        except OverflowError as exc:
            raise ValueError(f"{self} is out of datetime's range in UTC") from exc

    @classmethod
    def from_datetime(cls, dt: _dt.datetime, *, clock_status: int | None = 0) -> DateTime:
        """A date-time for ``dt``: naive gives no deviation; aware gives ``-utcoffset`` minutes.

        If ``dt`` is in daylight saving time (``dt.dst()`` non-zero) the clock status gets the
        daylight-saving-active bit 0x80 (IEC 62056-6-2 §4.1.6.1). Hundredths are truncated.
        """
        deviation = None
        offset = dt.utcoffset()
        if offset is not None:
            minutes, rest = divmod(offset, _dt.timedelta(minutes=1))
            if rest or not -720 <= minutes <= 720:
                raise ValueError(f"UTC offset {offset} is not a whole number of minutes in ±12 h")
            deviation = -minutes
            if clock_status is not None and dt.dst():
                clock_status |= 0x80
        return cls(
            *(dt.year, dt.month, dt.day, dt.isoweekday()),
            *(dt.hour, dt.minute, dt.second, dt.microsecond // 10_000),
            deviation,
            clock_status,
        )


for _kind in (Date, Time, DateTime):
    _kind._RULES = tuple((n, *_FIELD_RANGES[n]) for n in _kind.__slots__)
    _kind._UNSPECIFIED = tuple(_UNSPECIFIED_FIELD.get(n, 0xFF) for n in _kind.__slots__)
_OK_MONTHS = frozenset([*range(1, 13), 0xFD, 0xFE, 0xFF])
_OK_DAYS = frozenset([*range(1, 32), 0xFD, 0xFE, 0xFF])
_OK_WEEKDAYS, _OK_HOURS = frozenset([*range(1, 8), 0xFF]), frozenset([*range(24), 0xFF])
_OK_SIXTY, _OK_HUNDREDTHS = frozenset([*range(60), 0xFF]), frozenset([*range(100), 0xFF])


def date_time_from_octets(data: bytes | bytearray | memoryview) -> DateTime | None:
    """The common case of ``DateTime.from_octets`` unrolled (a profile has one per row); None
    for anything else, which the general path then parses or refuses with the field's name."""
    y, mo, d, wd, h, mi, s, hs, dev, st = DateTime._FORMAT.unpack(data)
    if not (
        mo in _OK_MONTHS
        and d in _OK_DAYS
        and wd in _OK_WEEKDAYS
        and h in _OK_HOURS
        and mi in _OK_SIXTY
        and s in _OK_SIXTY
        and hs in _OK_HUNDREDTHS
        and (-720 <= dev <= 720 or dev == -0x8000)
        and st != 0xFF
    ):
        return None
    value: DateTime = _new(DateTime)  # every field checked: skip __init__ and __post_init__
    _set(value, "year", None if y == 0xFFFF else y)
    _set(value, "month", None if mo == 0xFF else mo)
    _set(value, "day", None if d == 0xFF else d)
    _set(value, "weekday", None if wd == 0xFF else wd)
    _set(value, "hour", None if h == 0xFF else h)
    _set(value, "minute", None if mi == 0xFF else mi)
    _set(value, "second", None if s == 0xFF else s)
    _set(value, "hundredths", None if hs == 0xFF else hs)
    _set(value, "deviation", None if dev == -0x8000 else dev)
    _set(value, "clock_status", st)
    return value
