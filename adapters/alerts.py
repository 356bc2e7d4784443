"""Alert pushes, decoded: the events a meter's alert push announces (no I/O).

``decode_alert(normaliser, meter, body, received=...)`` answers ``None`` when ``body`` (the
values of a Data-Notification) is not the vendor's alert push (``VendorProfile.alerts``,
``adapters/alert_map.py``): then it is the instantaneous push, or garbage the push normaliser
reports. A body is the alert push when it has the layout's number of values and each value has
the type its object has (the push setup's logical name, when the layout lists it, must be the
alert push setup's: a push that names it and does not fit is an error, not another push).

An ``Alert`` holds:

* ``time``: the event's time when the push carries it (``event_time``), else the push's clock;
  a clock the normaliser cannot read makes it the time hesd received the push, flagged
  ``clock_invalid`` (the alert is not lost);
* ``events``: one ``Event`` per ESW bit set, or the pushed event code, ``Source.ALERT``, with
  the kind, category and severity of the vendor's code table, no snapshot (the event log read
  that follows brings it), and the ESW bit. A bit the profile does not map, or a code its table
  lacks, is an event of kind ``unknown`` (category ``other``, severity ``major``, code -1 for a
  bit), not dropped;
* ``categories``: the event logs to read now: those of the events, every log when one is
  unknown (hesd cannot tell which log holds it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from adapters.alert_map import ALERT_OBJECTS
from adapters.cosem_map import EventCode
from adapters.hooks import MeterContext
from adapters.is15959 import EVENT_CATEGORIES, UNKNOWN_KIND
from adapters.model import NO_CODE, Event, Quality, Source
from adapters.normalise import NormaliseError, Normaliser
from adapters.profile import VendorProfile
from protocols.dlms.axdr import BitString, Typed
from protocols.dlms.calendar import DateTime

__all__ = ["Alert", "decode_alert"]

_UNKNOWN_CATEGORY: Final = "other"
_UNKNOWN_SEVERITY: Final = "major"


@dataclass(frozen=True, slots=True)
class Alert:
    """What one alert push announced."""

    meter_id: str
    time: dt.datetime  # UTC
    quality: Quality
    events: tuple[Event, ...]
    categories: tuple[str, ...]  # event logs to read, in EVENT_CATEGORIES order
    clock_error: str = ""  # why the push's time could not be used ("": it was)

    def __post_init__(self) -> None:
        if self.time.utcoffset() != dt.timedelta(0):
            raise ValueError(f"alert of {self.meter_id}: time {self.time} is not UTC")
        if any(c not in EVENT_CATEGORIES for c in self.categories):
            raise ValueError(f"alert of {self.meter_id}: categories {self.categories}")

    @property
    def unknown(self) -> tuple[Event, ...]:
        return tuple(e for e in self.events if e.kind == UNKNOWN_KIND)


def _fits(name: str, value: object) -> bool:
    """Whether ``value`` has the type of alert push object ``name``."""
    if name in ("clock", "event_time"):
        return isinstance(value, DateTime) or (isinstance(value, bytes) and len(value) == 12)
    if name == "esw":
        return isinstance(value, BitString)
    if name == "event_code":
        return type(value) is int and 0 <= value <= 0xFFFF
    if name == "push_setup":
        return isinstance(value, bytes) and len(value) == 6
    return isinstance(value, bytes | str)  # logical device name, serial number


def _describe(value: object) -> str:
    if isinstance(value, bytes):
        return f"octet-string of {len(value)}"
    if isinstance(value, BitString):
        return f"bit-string of {value.length}"
    return type(value).__name__


def decode_alert(
    normaliser: Normaliser, meter: MeterContext, body: object, *, received: dt.datetime
) -> Alert | None:
    """The alert ``body`` announces, or None if it is not the vendor's alert push;
    ``NormaliseError`` for a push that names the alert push setup and does not fit."""
    profile = normaliser.profile
    layout = profile.alerts
    if not isinstance(body, list | tuple) or len(body) != len(layout.objects):
        return None
    plain = (v.value if isinstance(v, Typed) else v for v in body)  # as built, not as decoded
    values = dict(zip(layout.objects, plain, strict=True))
    named = "push_setup" in values
    if named and values["push_setup"] != layout.push_setup.to_bytes():
        return None  # another push setup's push
    for name, value in values.items():
        if not _fits(name, value):
            if not named:
                return None
            raise NormaliseError(
                f"meter {meter.meter_id}: alert push ({layout.push_setup}): {name}: expected "
                f"{ALERT_OBJECTS[name]}, got {_describe(value)}"
            )
    at, quality, clock_error = _time(normaliser, values, received)
    if layout.carries_esw:
        esw = values["esw"]
        assert isinstance(esw, BitString)
        found = [
            _event(normaliser, meter, code=layout.code_of(bit), bit=bit, at=at, quality=quality)
            for bit, set_ in enumerate(esw.bits)
            if set_ == "1"
        ]
    else:
        code = values["event_code"]
        assert isinstance(code, int)
        found = [_event(normaliser, meter, code=code, bit=None, at=at, quality=quality)]
    events = tuple(normaliser.adapter.adjust_event(e, meter) for e in found)
    wanted = {e.category for e in events}
    if any(e.kind == UNKNOWN_KIND for e in events):
        wanted = set(EVENT_CATEGORIES)
    categories = tuple(c for c in EVENT_CATEGORIES if c in wanted)
    return Alert(meter.meter_id, at, quality, events, categories, clock_error)


def _time(
    normaliser: Normaliser, values: dict[str, object], received: dt.datetime
) -> tuple[dt.datetime, Quality, str]:
    """The event's time if the push carries a usable one, else the push's clock, else when hesd
    received it (flagged: the meter's clock said nothing usable)."""
    errors = []
    for name in ("event_time", "clock"):
        if name in values:
            try:
                at, quality = normaliser.timestamp(values[name], name)
            except NormaliseError as exc:
                errors.append(str(exc))
                continue
            return at, quality, "; ".join(errors)
    return received.astimezone(dt.UTC), Quality.CLOCK_INVALID, "; ".join(errors)


def _event(
    normaliser: Normaliser,
    meter: MeterContext,
    *,
    code: int | None,
    bit: int | None,
    at: dt.datetime,
    quality: Quality,
) -> Event:
    """The event of ``code`` (ESW bit ``bit``'s, or the pushed one) from the vendor's code
    table, or of kind ``unknown`` when the bit or the code is not in the profile."""
    profile = normaliser.profile
    entry = None if code is None else profile.events.code(code)
    if entry is None:
        entry = _unknown(profile, code, bit)
        obis = profile.alerts.esw if bit is not None else profile.alerts.push_setup
    else:
        obis = profile.events.profiles[EVENT_CATEGORIES.index(entry.category)]
    return entry.event(meter.meter_id, at, Source.ALERT, str(obis), quality, esw_bit=bit)


def _unknown(profile: VendorProfile, code: int | None, bit: int | None) -> EventCode:
    """What hesd says of a bit the profile does not map (``code`` None) or a code its table
    lacks."""
    if code is None:
        name = f"ESW bit {bit}: not in [alerts.bits] of vendor profile {profile.name}"
    else:
        name = f"event code {code}: not in [event_codes] of vendor profile {profile.name}"
    return EventCode(
        code=NO_CODE if code is None else code,
        name=name,
        category=_UNKNOWN_CATEGORY,
        kind=UNKNOWN_KIND,
        severity=_UNKNOWN_SEVERITY,
        occurrence=True,
    )
