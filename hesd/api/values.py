"""COSEM values as JSON and as one line of text, for the API and hesctl."""

from __future__ import annotations

from typing import Any

from protocols.dlms.apdu import ActionResult, DataAccessResult
from protocols.dlms.axdr import BitString, CompactArray, Date, DateTime, Time, Value
from protocols.errors import RemoteProtocolError

__all__ = ["value_json", "value_text"]


def _date_time(raw: bytes) -> str | None:
    try:
        stamp = DateTime.from_octets(raw)
    except RemoteProtocolError:
        return None
    try:
        return stamp.to_datetime().isoformat()
    except ValueError:
        return None


def value_json(value: Value | DataAccessResult | ActionResult | None) -> Any:
    """JSON-ready: octet-strings as hex (with a ``date_time`` reading when they are one)."""
    if isinstance(value, DataAccessResult | ActionResult):
        return {"error": value.name.lower().replace("_", "-")}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        stamp = _date_time(value) if len(value) == 12 else None
        return {"octets": value.hex().upper(), "date_time": stamp} if stamp else value.hex().upper()
    if isinstance(value, list | tuple):
        return [value_json(v) for v in value]
    if isinstance(value, BitString):
        return value.bits
    if isinstance(value, CompactArray):
        # each value is the plain mapping of the type description: a Value
        return [value_json(v) for v in value.values]  # type: ignore[arg-type]
    if isinstance(value, DateTime | Date | Time):
        return value.to_octets().hex().upper()
    return repr(value)


def value_text(value: Value | DataAccessResult | ActionResult | None) -> str:
    """One line for a table cell."""
    data = value_json(value)
    if isinstance(data, dict) and "error" in data:
        return f"({data['error']})"
    if isinstance(data, dict):
        return str(data["date_time"])
    if isinstance(value, bytes) and value.isascii() and value.decode().isprintable() and value:
        return f'"{value.decode()}"'
    return str(data)
