"""Rendering of COSEM values for people: A-XDR types, OBIS, date-time and unit hints.

Used by ``translator``: values arrive decoded with ``axdr.decode(..., typed=True)`` so that each
node shows its type (``long-unsigned 230``); octet-strings that look like a date-time or an OBIS
code get a hint, and enums show their names.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any, Final

from protocols.dlms import axdr, cosem
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.obis import ObisCode
from protocols.errors import RemoteProtocolError

Fields = dict[str, Any]

__all__ = [
    "children",
    "date_time_hint",
    "enum_name",
    "hex_lines",
    "jsonable",
    "labelled",
    "plain_text",
    "value_lines",
]


# -- values -------------------------------------------------------------------------------------

_TAG_NAMES: Final = {tag: tag.name.lower().replace("_", "-") for tag in Tag} | {
    Tag.NULL: "null-data"
}
_CONTAINERS: Final = (Tag.ARRAY, Tag.STRUCTURE)


def enum_name(member: enum.Enum) -> str:
    """An enum member as the standard spells it: ``OBJECT_UNDEFINED`` -> ``object-undefined``."""
    return str(member.name).lower().replace("_", "-")


def _inner(value: Typed) -> Any:
    return value.value


def children(value: Any, tag: Tag = Tag.STRUCTURE) -> tuple[Any, ...]:
    """The elements of ``value`` if it is a typed structure (or ``tag``), else none."""
    return _inner(value) if isinstance(value, Typed) and value.tag == tag else ()


def _two(value: int | None) -> str:
    if value is None:
        return "**"  # IEC 62056-6-2 §4.1.6.1: not specified
    return f"{value:02d}" if value < 0xFD else f"0x{value:02X}"  # 0xFD, 0xFE: special days


def _calendar(value: axdr.DateTime | axdr.Date | axdr.Time) -> str:
    parts = []
    if not isinstance(value, axdr.Time):
        year = "****" if value.year is None else f"{value.year:04d}"
        parts.append(f"{year}-{_two(value.month)}-{_two(value.day)}")
    if not isinstance(value, axdr.Date):
        clock = f"{_two(value.hour)}:{_two(value.minute)}:{_two(value.second)}"
        parts.append(clock + (f".{value.hundredths:02d}" if value.hundredths else ""))
    text = " ".join(parts)
    if isinstance(value, axdr.DateTime):
        deviation = "unspecified" if value.deviation is None else value.deviation
        status = value.clock_status
        text += f", deviation {deviation}, status " + ("unspecified" if status is None else "")
        if status is not None:
            names = [enum_name(flag) for flag in cosem.ClockStatus if flag & status]
            text += f"0x{status:02X}" + (f" ({', '.join(names)})" if names else "")
    return text


def date_time_hint(raw: bytes) -> str | None:
    """What 12 octets say as a COSEM date-time, if they are a valid one."""
    try:
        return _calendar(axdr.DateTime.from_octets(raw))
    except RemoteProtocolError:
        return None


def _hints(value: Typed) -> list[str]:
    """What the elements of a structure are, where its shape says so: a class id then a logical
    name (capture objects, object lists, script actions), or a scaler_unit."""
    kids = children(value)
    hints = [""] * len(children(value, value.tag))
    if len(kids) >= 2:
        first, second = kids[0].tag, kids[1].tag
        if first == Tag.LONG_UNSIGNED and second == Tag.OCTET_STRING and len(kids[1].value) == 6:
            hints[1] = "obis"
        elif len(kids) == 2 and first == Tag.INTEGER and second == Tag.ENUM:
            hints[1] = "unit"  # Blue Book 4.3.2 scaler_unit
    return hints


def _hint_of(tag: Tag, value: Any, hint: str) -> str | None:
    if tag == Tag.OCTET_STRING and hint == "obis":
        return f"OBIS {ObisCode.from_bytes(value)}"
    if tag == Tag.OCTET_STRING and len(value) == 12 and (stamp := date_time_hint(value)):
        return f"date-time {stamp}"
    if tag == Tag.ENUM and hint == "unit":
        unit = cosem.ScalerUnit(0, value).unit
        return unit.symbol if isinstance(unit, cosem.Unit) else None
    return None


def _simple(tag: Tag, value: Any) -> str:
    if tag in (Tag.NULL, Tag.DONT_CARE):
        return ""
    if tag == Tag.OCTET_STRING:
        return f"[{len(value)}] {value.hex().upper()}"
    if tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        return " " + json.dumps(value, ensure_ascii=False)
    if tag == Tag.BIT_STRING:
        return f"[{value.length}] {value.bits}"
    if tag == Tag.BOOLEAN:
        return " true" if value else " false"
    if tag == Tag.BCD:
        return f" 0x{value:02X}"
    return " " + plain_text(value)


def value_lines(value: Any, hint: str = "") -> list[str]:
    """A typed value: its head line, then its elements indented by two spaces."""
    if not isinstance(value, Typed):  # compact-array elements are plain values
        return [plain_text(value)]
    tag, inner = value.tag, _inner(value)
    if tag in _CONTAINERS:
        lines = [f"{_TAG_NAMES[tag]}[{len(inner)}]"]
        for kid, kid_hint in zip(inner, _hints(value), strict=True):
            lines += ["  " + line for line in value_lines(kid, kid_hint)]
        return lines
    if tag == Tag.COMPACT_ARRAY:
        head = f"compact-array[{len(inner.values)}] of {inner.type_description}"
        return [head, *("  " + plain_text(item) for item in inner.values)]
    extra = _hint_of(tag, inner, hint)
    return [_TAG_NAMES[tag] + _simple(tag, inner) + (f" ({extra})" if extra else "")]


def plain_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, list | tuple):
        return "(" + ", ".join(map(plain_text, value)) + ")"
    if isinstance(value, axdr.DateTime | axdr.Date | axdr.Time):
        return _calendar(value)
    if isinstance(value, axdr.BitString):
        return value.bits
    return str(value) if isinstance(value, ObisCode | int | str) else repr(value)


def jsonable(obj: Any, hint: str = "") -> Any:
    """JSON for ``--json``: typed values with their type, enums by name, bytes as hex, and the
    codec's dataclasses field by field, without the fields they keep out of repr (secrets)."""
    if isinstance(obj, Typed):
        tag, inner = obj.tag, _inner(obj)
        out: Fields = {"type": _TAG_NAMES[tag]}
        if tag in _CONTAINERS:
            out["value"] = [jsonable(k, h) for k, h in zip(inner, _hints(obj), strict=True)]
        elif tag == Tag.COMPACT_ARRAY:
            out.update(type_description=str(inner.type_description), value=jsonable(inner.values))
        else:
            out["value"] = jsonable(inner)
            if (extra := _hint_of(tag, inner, hint)) is not None:
                out["hint"] = extra
        return out
    if isinstance(obj, enum.IntFlag):
        return int(obj)
    if isinstance(obj, enum.Enum):
        return enum_name(obj)
    if isinstance(obj, list | tuple):
        return [jsonable(item) for item in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, bytes | ObisCode | axdr.DateTime | axdr.Date | axdr.Time | axdr.BitString):
        return plain_text(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.repr}
    return obj


def labelled(label: str, value: Any, *, secret: bool = False) -> list[str]:
    if secret:
        inner = _inner(value) if isinstance(value, Typed) else value
        size = f"{len(inner)} bytes, " if isinstance(inner, bytes | str) else ""
        return [f"{label}: ({size}secret, not shown)"]
    lines = value_lines(value)
    return [f"{label}: {lines[0]}", *lines[1:]]


def hex_lines(raw: bytes, indent: str = "") -> list[str]:
    text = raw.hex().upper()
    return [indent + text[i : i + 64] for i in range(0, len(text), 64)]
