"""JSON uplink records: what a JSON-speaking meter or concentrator publishes over MQTT.

A vendor profile with ``[mqtt] payload = "json"`` maps the fields of one JSON object to the
meter id, the time of the values and canonical quantities (``[mqtt.json]``, docs/vendors.md).
``parse_json_record`` applies that mapping to one message and returns a ``JsonRecord``; anything
else (not UTF-8 JSON, not an object, another meter's id, no usable time, no value, a value that
is not a finite number) raises ``RemoteProtocolError`` saying which field was wrong. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal

from adapters.profile import JsonPayload
from protocols.errors import RemoteProtocolError

__all__ = ["JsonRecord", "parse_json_record"]

MAX_TEXT = 64  # characters of a meter id or ISO 8601 time
MAX_EXPONENT = 30  # a meter's value is below 1e30 (and a JSON number's exponent is bounded)


@dataclass(frozen=True, slots=True)
class JsonRecord:
    """One JSON uplink message, mapped: values in the quantities' units, time in UTC."""

    meter_id: str  # the registry's id of the meter (not necessarily the JSON's spelling)
    timestamp: dt.datetime  # aware, UTC
    values: tuple[tuple[str, Decimal], ...]  # (canonical quantity, exact value), mapping's order

    def __post_init__(self) -> None:
        if self.timestamp.utcoffset() != dt.timedelta(0):
            raise ValueError("timestamp must be aware and in UTC")
        if not self.values:
            raise ValueError("a record holds at least one value")
        if not all(value.is_finite() for _, value in self.values):
            raise ValueError("values must be finite")

    def as_dict(self) -> dict[str, Decimal]:
        return dict(self.values)


def parse_json_record(
    payload: bytes, mapping: JsonPayload, meter_id: str, names: Collection[str]
) -> JsonRecord:
    """Map one message of meter ``meter_id``; its id field must hold one of ``names``."""
    try:
        doc = json.loads(payload, parse_float=Decimal)  # exact, as the meter wrote it
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, ...
        raise RemoteProtocolError(f"not JSON: {_short(exc)}") from None
    if not isinstance(doc, dict):
        raise RemoteProtocolError(f"expected a JSON object, got {type(doc).__name__}")

    named = doc.get(mapping.meter_id)
    if isinstance(named, int) and not isinstance(named, bool):
        named = str(named)
    if not isinstance(named, str) or not named or len(named) > MAX_TEXT:
        raise RemoteProtocolError(f"field {mapping.meter_id}: expected the meter id (a string)")
    if named not in names:
        raise RemoteProtocolError(
            f"field {mapping.meter_id}: names meter {named!r}, not {meter_id} (its topic)"
        )

    timestamp = _timestamp(doc.get(mapping.timestamp), mapping)

    values: list[tuple[str, Decimal]] = []
    for entry in mapping.values:
        if entry.field not in doc:
            continue  # a record may carry some of the values
        raw = doc[entry.field]
        if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
            raise RemoteProtocolError(f"field {entry.field}: expected a number")
        value = Decimal(raw)
        if not value.is_finite() or abs(value.adjusted()) > MAX_EXPONENT:
            raise RemoteProtocolError(f"field {entry.field}: number out of range")
        value = value.scaleb(entry.scaler)
        values.append((entry.quantity, value))
    if not values:
        fields = ", ".join(entry.field for entry in mapping.values)
        raise RemoteProtocolError(f"no value: none of the fields {fields}")
    return JsonRecord(meter_id, timestamp, tuple(values))


def _timestamp(raw: object, mapping: JsonPayload) -> dt.datetime:
    field, kind = mapping.timestamp, mapping.timestamp_format
    if kind == "iso8601":
        if not isinstance(raw, str) or len(raw) > MAX_TEXT:
            raise RemoteProtocolError(f"field {field}: expected an ISO 8601 time")
        try:
            when = dt.datetime.fromisoformat(raw)
        except ValueError:
            raise RemoteProtocolError(f"field {field}: {raw!r} is not an ISO 8601 time") from None
        if when.utcoffset() is None:  # local time of an unknown zone: not guessed at
            raise RemoteProtocolError(f"field {field}: {raw!r} has no UTC offset")
        return when.astimezone(dt.UTC)
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal):
        raise RemoteProtocolError(f"field {field}: expected a {kind} time (a number)")
    try:
        seconds = Decimal(raw) / 1000 if kind == "unix-ms" else Decimal(raw)
        return dt.datetime.fromtimestamp(float(seconds), dt.UTC)
    except (OverflowError, OSError, ValueError, ArithmeticError):
        raise RemoteProtocolError(f"field {field}: {raw!r} is out of range") from None


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
