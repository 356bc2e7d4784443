"""Simulated time: the meter's clock, Indian Standard Time, and COSEM date-time octets.

``now`` everywhere in ``hesd.sim`` is the simulated instant as a UNIX timestamp (UTC); the
transport computes it and the model never reads a clock. A meter's own clock is ``ClockMap``
applied to it: an offset (set by the HES, shifted by ``shift_time``) and a drift in ppm from an
anchor instant. Meters keep local time in IST (UTC+05:30, no daylight saving); a COSEM date-time
carries it with deviation -330 (IEC 62056-6-2 §4.1.6.1: UTC = local time + deviation).
"""

from __future__ import annotations

import datetime
import struct
import time
from dataclasses import dataclass
from typing import Final

from protocols.dlms.calendar import DateTime

__all__ = [
    "DAY",
    "DEVIATION",
    "IST",
    "ClockMap",
    "date_time_octets",
    "instant_of",
    "month_index",
    "month_start",
]

IST: Final = 19800  # seconds east of UTC
DEVIATION: Final = -330  # minutes, UTC = local time + deviation
DAY: Final = 86400
_DATE_TIME: Final = struct.Struct(">HBBBBBBBhB")  # IEC 62056-6-2 §4.1.6.1, 12 octets


@dataclass(frozen=True, slots=True)
class ClockMap:
    """meter time = t + offset + ppm·10⁻⁶·(t - anchor), for true (simulated) time t."""

    offset: float = 0.0
    ppm: float = 0.0
    anchor: float = 0.0

    def __post_init__(self) -> None:
        if not -1e5 < self.ppm < 1e5:  # a drift of 10 % is not a clock any more
            raise ValueError(f"clock drift {self.ppm} ppm is outside ±100000")

    @property
    def identity(self) -> bool:
        return self.offset == 0.0 and self.ppm == 0.0

    def meter_time(self, t: float) -> float:
        return t + self.offset + self.ppm * 1e-6 * (t - self.anchor)

    def true_time(self, m: float) -> float:
        """The instant at which the meter's clock shows ``m``."""
        return self.anchor + (m - self.offset - self.anchor) / (1.0 + self.ppm * 1e-6)

    def reset(self, t: float, meter_time: float) -> ClockMap:
        """This clock, set at true time ``t`` to show ``meter_time``; the drift stays."""
        return ClockMap(meter_time - t, self.ppm, t)

    def with_drift(self, t: float, ppm: float) -> ClockMap:
        """This clock with a new drift from ``t`` on; what it shows at ``t`` is unchanged."""
        return ClockMap(self.meter_time(t) - t, ppm, t)


def date_time_octets(m: float, clock_status: int = 0) -> bytes:
    """The 12-octet COSEM date-time of meter time ``m`` in IST (deviation -330)."""
    whole = int(m // 1)
    tm = time.gmtime(whole + IST)
    hundredths = int((m - whole) * 100)
    return _DATE_TIME.pack(
        *(tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_wday + 1),
        *(tm.tm_hour, tm.tm_min, tm.tm_sec, hundredths),
        DEVIATION,
        clock_status,
    )


def instant_of(value: DateTime) -> float | None:
    """The UNIX time a COSEM date-time names (without a deviation: IST); None if it names no
    single instant (unspecified or special fields)."""
    try:
        dt = value.to_datetime()
    except ValueError:
        return None
    if dt.tzinfo is None:  # no deviation: the meter's local time
        return dt.replace(tzinfo=datetime.UTC).timestamp() - IST
    return dt.timestamp()


def month_index(m: float) -> int:
    """12·year + month - 1 of meter time ``m`` in IST."""
    tm = time.gmtime(int((m + IST) // 1))
    return tm.tm_year * 12 + tm.tm_mon - 1


def month_start(index: int) -> int:
    """The UNIX time of 00:00 IST on the 1st of month ``index`` (12·year + month - 1)."""
    year, month0 = divmod(index, 12)
    days = _days_from_civil(year, month0 + 1, 1)
    return days * DAY - IST


def _days_from_civil(y: int, m: int, d: int) -> int:
    # days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
