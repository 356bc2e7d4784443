"""The normalised data model: what hesd hands to the MDM, whatever the vendor or transport.

Every vendor's registers, profile rows, pushes and event logs become the records below
(``adapters/normalise.py`` builds them from a vendor profile). They are what the outbox stores
and what ``POST /api/v1/meters/readings`` and ``…/events`` carry (docs/mdm-api.yaml):

* values are exact ``Decimal``s in SI-normalised units (``UNITS``: kWh, kVAh, kvarh, kW, kVA,
  kvar, V, A, Hz, s; "" for power factor; "count" for counters), with no trailing zeros, so two
  meters that measured the same thing give equal records whatever their scalers;
* timestamps are aware datetimes in UTC, taken from the meter's clock with its deviation applied
  (or the vendor's UTC offset when the meter sends none), and the clock status turned into
  quality flags; a profile row's timestamp is the end of its interval, on an interval boundary;
* ``quality`` says what the MDM should know about a value (``Quality``).

``to_json()`` gives the wire form (decimal values as strings, ISO 8601 times),
``from_json()`` reads it back exactly; ``json_text()`` is that form as compact JSON text, what the
outbox stores and the forwarder sends. A reading's is written, without a dict, by a
``ReadingForm``: the text of one quantity's readings from one source, built once and filled per
reading, by ``Reading.json_text()`` and by the push path, which builds no ``Reading``
(``Normaliser.push_wire`` fills one form per column, push after push).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from adapters import is15959

__all__ = [
    "EVENT_SEVERITIES",
    "NO_CODE",
    "UNITS",
    "CommandResult",
    "CommandStatus",
    "Event",
    "Quality",
    "Reading",
    "ReadingForm",
    "Source",
    "canonical",
    "event_id",
    "iso_time",
    "json_text",
    "meter_json",
    "quality_json",
    "scaled_text",
]

# The normalised unit of each DLMS unit symbol, and the power of ten that takes a value there.
UNITS: Final = {
    "Wh": ("kWh", -3),
    "VAh": ("kVAh", -3),
    "varh": ("kvarh", -3),
    "W": ("kW", -3),
    "VA": ("kVA", -3),
    "var": ("kvar", -3),
    "V": ("V", 0),
    "A": ("A", 0),
    "Hz": ("Hz", 0),
    "s": ("s", 0),
    "min": ("s", 0),  # times 60: see normalise.to_si
    "h": ("s", 0),  # times 3600
    "": ("", 0),
}
EVENT_SEVERITIES: Final = is15959.SEVERITIES
_QUANTITY: Final = frozenset(is15959.QUANTITIES)
_NORMAL_UNITS: Final = frozenset({unit for unit, _ in UNITS.values()} | {"count"})
# ReadingForm puts these in JSON strings as they are: nothing in them needs escaping
assert all(re.fullmatch(r"[A-Za-z0-9_]*", name) for name in _QUANTITY | _NORMAL_UNITS)


class Source(enum.StrEnum):
    """How a record reached hesd."""

    PUSH = "push"  # the meter sent it unasked (Data-Notification, JSON uplink)
    PULL = "pull"  # an on-demand read (an operator, the MDM, a command, an alert's log read)
    SCHEDULE = "schedule"  # a scheduled bulk read
    ALERT = "alert"  # the meter's alert push announced it: no snapshot (adapters/alerts.py)


class Quality(enum.Flag):
    """What the MDM should know about a value or a timestamp; no flag: a good value."""

    CLOCK_INVALID = enum.auto()  # clock status bit 0, or the profile status's clock invalid bit
    CLOCK_DOUBTFUL = enum.auto()  # ... or doubtful (bit 1), or the status was invalid (bit 3)
    CLOCK_ADJUSTED = enum.auto()  # the clock was set during the interval (profile status)
    POWER_DOWN = enum.auto()  # a power failure during the interval (profile status)
    OVERFLOW = enum.auto()  # the register is at its type's limit: the true value may exceed it
    ESTIMATED = enum.auto()  # not measured: filled in by the meter or hesd
    DATA_INVALID = enum.auto()  # the meter marked the value not valid (profile status)
    VENDOR = enum.auto()  # a vendor adapter corrected the value (adapters.hooks)

    @property
    def names(self) -> tuple[str, ...]:
        """The flags' names, lower case, in declaration order (the wire form)."""
        # every record's to_json asks: walking the flags took 10 us, a third of Outbox.offer
        names = _QUALITY_NAMES.get(self._value_)
        if names is None:
            names = tuple(f.name.lower() for f in Quality if f in self and f.name)
            _QUALITY_NAMES[self._value_] = names  # at most 256 combinations
        return names

    @classmethod
    def parse(cls, names: object) -> Quality:
        if not isinstance(names, list | tuple):
            raise ValueError(f"quality: expected a list of flag names, got {names!r}")  # noqa: TRY004 - bad input, not a bad call
        flags = cls(0)
        for name in names:
            try:
                flags |= cls[str(name).upper()]
            except KeyError:
                raise ValueError(f"quality: unknown flag {name!r}") from None
        return flags


NO_FLAGS: Final = Quality(0)
NO_CODE: Final = -1  # the code of an event for an ESW bit the vendor profile does not map
_QUALITY_NAMES: Final[dict[int, tuple[str, ...]]] = {}  # Quality.names by value
_QUALITY_JSON: Final[dict[int, str]] = {}  # the names as a JSON array, by value


def json_text(data: object) -> str:
    """Compact JSON (no spaces, UTF-8 as it is): the form of every record on the wire."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# a fleet's meter ids and its vendors' OBIS codes, in JSON: each is in thousands of records
_json_string: Final = functools.lru_cache(maxsize=1 << 16)(json_text)


def _quality_json(quality: Quality) -> str:
    text = _QUALITY_JSON.get(quality._value_)
    if text is None:
        text = _QUALITY_JSON[quality._value_] = json_text(list(quality.names))
    return text


def canonical(value: Decimal) -> Decimal:
    """``value`` without trailing zeros and never in exponent form (12.340 → 12.34, 1E+2 → 100).

    Exact whatever its length (``Decimal.normalize`` would round to the context's precision).
    A value that is canonical already is returned as it is (every reading is checked here: its
    text tells, three times faster than its digits).
    """
    text = str(value)
    if "." in text:
        if text[-1] != "0" and "E" not in text:
            return value  # a fraction without trailing zeros
    elif text.isdigit() or (text[0] == "-" and text[1:].isdigit() and text != "-0"):
        return value  # an integer (inf, NaN and exponents have letters)
    sign, digits, exponent = value.as_tuple()
    if not value.is_finite():
        raise ValueError(f"value {value} is not a finite number")
    assert isinstance(exponent, int)  # finite
    end = len(digits)
    while exponent < 0 and end > 1 and digits[end - 1] == 0:
        end -= 1
        exponent += 1
    kept = digits[:end]
    if exponent > 0:
        kept, exponent = kept + (0,) * exponent, 0
    if not any(kept):
        return Decimal(0)
    return Decimal((sign, kept, exponent))


def _utc(stamp: dt.datetime, what: str) -> None:
    if stamp.tzinfo is dt.UTC:
        return
    if stamp.tzinfo is None or stamp.utcoffset() != dt.timedelta(0):
        raise ValueError(f"{what} {stamp.isoformat()} is not in UTC")


def _plain(value: Decimal) -> str:
    """``format(value, "f")`` of a canonical value (``str`` only uses an exponent below 1E-6)."""
    text = str(value)
    return format(value, "f") if "E" in text else text


def _iso(stamp: dt.datetime) -> str:
    if not stamp.microsecond:
        spec = "seconds"
    else:
        spec = "microseconds" if stamp.microsecond % 1000 else "milliseconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")


_iso_of: Final = functools.lru_cache(maxsize=4096)(_iso)  # a push's readings share their time


def _parse_time(data: Mapping[str, Any], key: str) -> dt.datetime:
    text = data.get(key)
    if not isinstance(text, str):
        raise ValueError(f"{key}: expected an ISO 8601 time, got {text!r}")  # noqa: TRY004
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key}: {text!r} is not an ISO 8601 time") from None
    if stamp.tzinfo is None:
        raise ValueError(f"{key}: {text!r} has no UTC offset")
    return stamp.astimezone(dt.UTC)


def _decimal(data: Mapping[str, Any], key: str) -> Decimal:
    text = data.get(key)
    if not isinstance(text, str):
        raise ValueError(f"{key}: expected a decimal string, got {text!r}")  # noqa: TRY004
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{key}: {text!r} is not a decimal number") from None


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one quantity of one meter at one instant (or for one interval)."""

    meter_id: str
    quantity: str  # canonical name (docs/vendors.md), e.g. "energy_active_import"
    value: Decimal  # exact, canonical (see ``canonical``)
    unit: str  # normalised unit: kWh, kVAh, kvarh, kW, kVA, kvar, V, A, Hz, s, "", count
    timestamp: dt.datetime  # UTC; for interval data the end of the interval
    source: Source
    obis: str  # the COSEM object it came from, "A.B.C.D.E.F" ("" for JSON uplinks)
    interval: int | None = None  # seconds the value covers (profile data), None for a sample
    quality: Quality = NO_FLAGS
    capture_time: dt.datetime | None = None  # when a maximum demand occurred (UTC)

    def __post_init__(self) -> None:
        if not self.meter_id:
            raise ValueError("reading: empty meter id")
        if self.quantity not in _QUANTITY:
            raise ValueError(f"reading: {self.quantity!r} is not a canonical quantity")
        if self.unit not in _NORMAL_UNITS:
            raise ValueError(f"reading {self.quantity}: {self.unit!r} is not a normalised unit")
        value = canonical(self.value)
        if value is not self.value:
            object.__setattr__(self, "value", value)
        _utc(self.timestamp, f"reading {self.quantity}: timestamp")
        if self.capture_time is not None:
            _utc(self.capture_time, f"reading {self.quantity}: capture time")
        if self.interval is not None and (type(self.interval) is not int or self.interval <= 0):
            raise ValueError(
                f"reading {self.quantity}: interval {self.interval!r} is not seconds > 0"
            )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "meter_id": self.meter_id,
            "quantity": self.quantity,
            "value": format(self.value, "f"),
            "unit": self.unit,
            "timestamp": _iso(self.timestamp),
            "source": self.source.value,
            "obis": self.obis,
            "quality": list(self.quality.names),
        }
        if self.interval is not None:
            data["interval"] = self.interval
        if self.capture_time is not None:
            data["capture_time"] = _iso(self.capture_time)
        return data

    def json_text(self) -> str:
        """``json_text(self.to_json())``, character for character, in a fifth of the time: its
        ``ReadingForm``'s text (one layout, whether a reading is built or not)."""
        capture = None if self.capture_time is None else _iso_of(self.capture_time)
        return _form(self.quantity, self.unit, self.source, self.obis, self.interval).fill(
            meter_json(self.meter_id),
            _plain(self.value),
            _iso_of(self.timestamp),
            _quality_json(self.quality),
            capture,
        )

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Reading:
        """Back from ``to_json()``; ``ValueError`` naming the field that is wrong."""
        interval = data.get("interval")
        if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)):
            raise ValueError(f"interval: expected seconds as an integer, got {interval!r}")
        said = data.get("source")
        if said not in tuple(Source):
            raise ValueError(f"source: {said!r} is not push, pull, schedule or alert")
        return cls(
            meter_id=str(data.get("meter_id", "")),
            quantity=str(data.get("quantity", "")),
            value=_decimal(data, "value"),
            unit=str(data.get("unit", "")),
            timestamp=_parse_time(data, "timestamp"),
            source=Source(str(said)),
            obis=str(data.get("obis", "")),
            interval=interval,
            quality=Quality.parse(data.get("quality", [])),
            capture_time=None if "capture_time" not in data else _parse_time(data, "capture_time"),
        )


@dataclass(frozen=True, slots=True)
class ReadingForm:
    """The wire form of one quantity's readings from one source, built once and filled per
    reading: ``fill`` writes character for character what ``Reading.json_text()`` writes for
    a ``Reading`` of the same fields (a test holds them to that), without the object: its
    construction and validation were most of a push's cost. The caller vouches for what
    ``Reading`` would check (``Normaliser.push_wire``: a layout resolved against the profile,
    an exact scaled integer, a UTC time)."""

    quantity: str
    unit: str
    source: Source
    obis: str
    interval: int | None
    _value: str = field(init=False, repr=False, compare=False)
    _stamp: str = field(init=False, repr=False, compare=False)
    _quality: str = field(init=False, repr=False, compare=False)
    _tail: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.quantity not in _QUANTITY or self.unit not in _NORMAL_UNITS:
            raise ValueError(f"reading form {self.quantity!r} in {self.unit!r}: not canonical")
        pieces = {
            "_value": f',"quantity":"{self.quantity}","value":"',
            "_stamp": f'","unit":"{self.unit}","timestamp":"',
            "_quality": f'","source":"{self.source.value}","obis":{_json_string(self.obis)},'
            '"quality":',
            "_tail": "" if self.interval is None else f',"interval":{self.interval}',
        }
        for name, text in pieces.items():
            object.__setattr__(self, name, text)

    def fill(
        self, meter: str, value: str, stamp: str, quality: str, capture: str | None = None
    ) -> str:
        """The text of a reading: ``meter`` its id as ``meter_json`` gives it, ``value`` as
        ``scaled_text``, ``stamp`` and ``capture`` as ``iso_time``, ``quality`` as
        ``quality_json``."""
        text = f"{{{meter}{self._value}{value}{self._stamp}{stamp}{self._quality}{quality}"
        if capture is None:
            return f"{text}{self._tail}}}"
        return f'{text}{self._tail},"capture_time":"{capture}"}}'


# the forms of ``Reading.json_text``: a fleet's are its vendors' quantities by source and interval
_form: Final = functools.lru_cache(maxsize=4096)(ReadingForm)


def meter_json(meter_id: str) -> str:
    """The start of a reading's text: its meter id (``ReadingForm.fill``)."""
    return f'"meter_id":{_json_string(meter_id)}'


def iso_time(stamp: dt.datetime) -> str:
    """A UTC time as a reading's text has it (``ReadingForm.fill``)."""
    return _iso_of(stamp)


def quality_json(quality: Quality) -> str:
    """Quality flags as a reading's text has them (``ReadingForm.fill``)."""
    return _quality_json(quality)


def scaled_text(raw: int, exponent: int) -> str:
    """``raw * 10**exponent`` as a reading's value: exact, without trailing zeros or exponent,
    what ``Reading.json_text()`` writes for that value (``ReadingForm.fill``)."""
    if not raw:
        return "0"
    if exponent >= 0:
        return str(raw * 10**exponent)
    while exponent < 0 and not raw % 10:
        raw //= 10
        exponent += 1
    if not exponent:
        return str(raw)
    digits = str(-raw if raw < 0 else raw)
    places = -exponent
    if len(digits) <= places:
        digits = "0" * (places - len(digits) + 1) + digits
    return f"{'-' if raw < 0 else ''}{digits[:-places]}.{digits[-places:]}"


def event_id(
    meter_id: str, category: str, timestamp: dt.datetime, code: int, bit: int | None = None
) -> str:
    """The identity of an event: 32 hex digits of BLAKE2b-128 over the UTF-8 of meter id,
    category (the event log), time (UTC, the wire form) and code, joined by U+001F, then the
    ESW bit of an event with no code (``NO_CODE``; docs/mdm-api.yaml, "Events")."""
    parts = [meter_id, category, _iso(timestamp), str(code)]
    if bit is not None:
        parts.append(str(bit))
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


_EVENT_ID: Final = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True, slots=True)
class Event:
    """One event a meter logged or pushed, in the normalised vocabulary (docs/vendors.md).

    ``event_id`` is its identity (meter, log, time, code): a log read, an alert and a schedule
    that see the same event give the same one, so the MDM keeps one. An alert's events
    (``Source.ALERT``) carry ``esw_bit`` when the push held the Event Status Word; an event read
    from a log that confirms an alert carries that alert's ``event_id`` as ``alert_id``.
    """

    meter_id: str
    kind: str  # normalised kind, e.g. "magnet_tamper", "power_restored"
    category: str  # voltage, current, power, transaction, other, non_rollover, control
    severity: str  # critical, major, minor, info
    occurrence: bool  # True: a condition began; False: it ended (restoration) or a one-off
    code: int  # the vendor's event code
    name: str  # the vendor's name for it
    timestamp: dt.datetime  # UTC, from the meter's clock
    source: Source
    obis: str  # the event profile it came from
    quality: Quality = NO_FLAGS
    snapshot: tuple[Reading, ...] = field(default=())  # values the meter captured with it
    esw_bit: int | None = None  # the Event Status Word bit an alert push set for it
    alert_id: str | None = None  # a logged event that confirms an alert: the alert's event_id

    def __post_init__(self) -> None:
        if not self.meter_id:
            raise ValueError("event: empty meter id")
        if self.esw_bit is not None and self.esw_bit < 0:
            raise ValueError(f"event {self.kind}: ESW bit {self.esw_bit} is negative")
        if self.alert_id is not None and _EVENT_ID.fullmatch(self.alert_id) is None:
            raise ValueError(f"event {self.kind}: alert id {self.alert_id!r} is not 32 hex digits")
        if self.kind not in is15959.EVENT_KINDS:
            raise ValueError(f"event: {self.kind!r} is not a normalised event kind")
        if self.category not in is15959.EVENT_CATEGORIES:
            raise ValueError(f"event {self.kind}: {self.category!r} is not an event category")
        if self.severity not in EVENT_SEVERITIES:
            raise ValueError(f"event {self.kind}: {self.severity!r} is not a severity")
        _utc(self.timestamp, f"event {self.kind}: timestamp")

    @property
    def event_id(self) -> str:
        bit = self.esw_bit if self.code == NO_CODE else None  # two unmapped bits at one time
        return event_id(self.meter_id, self.category, self.timestamp, self.code, bit)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "event_id": self.event_id,
            "meter_id": self.meter_id,
            "kind": self.kind,
            "category": self.category,
            "severity": self.severity,
            "occurrence": self.occurrence,
            "code": self.code,
            "name": self.name,
            "timestamp": _iso(self.timestamp),
            "source": self.source.value,
            "obis": self.obis,
            "quality": list(self.quality.names),
            "snapshot": [
                {"quantity": r.quantity, "value": format(r.value, "f"), "unit": r.unit}
                for r in self.snapshot
            ],
        }
        if self.esw_bit is not None:
            data["esw_bit"] = self.esw_bit
        if self.alert_id is not None:
            data["alert_id"] = self.alert_id
        return data

    def json_text(self) -> str:
        return json_text(self.to_json())


class CommandStatus(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended, for the MDM and hesctl (the command router fills it in)."""

    command_id: str
    meter_id: str
    command: str  # read, disconnect, reconnect, limit, sync_time, firmware_upgrade, ...
    status: CommandStatus
    requested_by: str
    requested_at: dt.datetime
    finished_at: dt.datetime
    attempts: int
    detail: str  # what happened, in words: the meter's answer or why it failed
    readings: tuple[Reading, ...] = ()  # what a read returned, or the read-back that confirms
    data: Mapping[str, Any] = field(default_factory=dict)  # command-specific, JSON-ready

    def __post_init__(self) -> None:
        if not self.command_id or not self.meter_id or not self.command:
            raise ValueError("command result: empty command id, meter id or command")
        _utc(self.requested_at, f"command {self.command_id}: requested_at")
        _utc(self.finished_at, f"command {self.command_id}: finished_at")
        if self.attempts < 0:
            raise ValueError(f"command {self.command_id}: attempts {self.attempts} < 0")

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "meter_id": self.meter_id,
            "command": self.command,
            "status": self.status.value,
            "requested_by": self.requested_by,
            "requested_at": _iso(self.requested_at),
            "finished_at": _iso(self.finished_at),
            "attempts": self.attempts,
            "detail": self.detail,
            "readings": [r.to_json() for r in self.readings],
            "data": dict(self.data),
        }

    def json_text(self) -> str:
        return json_text(self.to_json())
