"""A-XDR encoding of COSEM data (IEC 62056-6-2 §4.1.5 common data types, §4.1.6 date and time).

The ``Data`` CHOICE of IEC 62056-6-2 §4.1.5 is encoded with the A-XDR rules of IEC 61334-6: one
tag octet (``Tag``), then the content; variable-length content is preceded by an A-XDR length
(``encode_length``). Values map to Python as follows (plain mode):

null-data, dont-care -> ``None``; boolean -> ``bool``; integer .. long64-unsigned, enum, bcd (the
raw octet) -> ``int``; float32/64 -> ``float``; octet-string -> ``bytes`` (12 octets stay bytes:
a caller who knows a date-time is there calls ``DateTime.from_octets``); visible-string and
utf8-string -> ``str``; bit-string -> ``BitString``; array -> ``list``; structure -> ``tuple``;
compact-array -> ``CompactArray``; date-time/date/time -> ``DateTime``/``Date``/``Time``.

A bare ``int`` or ``float`` cannot be encoded, because A-XDR needs to know its width: wrap it in
``Typed``. ``decode(..., typed=True)`` returns every node as a ``Typed`` so that a decoded value
can be encoded back to the same octets.

Decoding is bounded: nesting depth, the total number of elements and every declared length are
checked against the remaining octets before anything is allocated or looped over. Input that
ends early raises ``Truncated``; any other malformed input raises ``RemoteProtocolError``.
Pass ``bytes`` to ``decode``: any other buffer is copied to ``bytes`` first.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any, TypeAlias, Union

from protocols.dlms.calendar import (
    DST_BEGIN,
    DST_END,
    LAST_DAY,
    SECOND_LAST_DAY,
    CalendarValue,
    Date,
    DateTime,
    Time,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DST_BEGIN",
    "DST_END",
    "LAST_DAY",
    "SECOND_LAST_DAY",
    "ArrayOf",
    "BitString",
    "CompactArray",
    "Date",
    "DateTime",
    "StructureOf",
    "Tag",
    "Time",
    "Truncated",
    "TypeDescription",
    "Typed",
    "Value",
    "decode",
    "decode_all",
    "decode_length",
    "encode",
    "encode_into",
    "encode_length",
]


class Tag(enum.IntEnum):
    """The tags of the ``Data`` CHOICE (IEC 62056-6-2 §4.1.5, Table 2)."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


class Truncated(RemoteProtocolError):
    """The input ends before the value does: more octets may complete it."""


_TAGS: dict[int, Tag] = {int(t): t for t in Tag}
_NAMES: dict[int, str] = {int(t): t.name.lower().replace("_", "-") for t in Tag}
_STRUCTS: dict[int, struct.Struct] = {  # IEC 62056-6-2 §4.1.5: fixed-size types, big-endian
    Tag.INTEGER: struct.Struct(">b"),
    Tag.LONG: struct.Struct(">h"),
    Tag.DOUBLE_LONG: struct.Struct(">i"),
    Tag.LONG64: struct.Struct(">q"),
    Tag.UNSIGNED: struct.Struct(">B"),
    Tag.LONG_UNSIGNED: struct.Struct(">H"),
    Tag.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    Tag.LONG64_UNSIGNED: struct.Struct(">Q"),
    Tag.ENUM: struct.Struct(">B"),
    Tag.BCD: struct.Struct(">B"),  # one octet; kept raw, not converted to digits
    Tag.FLOAT32: struct.Struct(">f"),
    Tag.FLOAT64: struct.Struct(">d"),
}
_INT_RANGES: dict[int, tuple[int, int]] = {  # signed formats are lower case
    t: (-(1 << (8 * s.size - 1)), (1 << (8 * s.size - 1)) - 1)
    if s.format.islower()
    else (0, (1 << (8 * s.size)) - 1)
    for t, s in _STRUCTS.items()
    if s.format[-1] not in "fd"
}
_F32 = _STRUCTS[Tag.FLOAT32]
_U16 = _STRUCTS[Tag.LONG_UNSIGNED]
_new, _set = object.__new__, object.__setattr__  # to build checked values without re-checking


# -- bit-string, compact-array, Typed ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BitString:
    """A bit-string: ``length`` bits, MSB first in ``value``, unused trailing bits zero."""

    value: bytes
    length: int

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes | bytearray):
            raise LocalProtocolError("bit-string value must be bytes")
        object.__setattr__(self, "value", bytes(self.value))
        if type(self.length) is not int or not 0 <= self.length <= 0xFFFF_FFFF:
            raise LocalProtocolError(f"bit-string length {self.length!r} is not 0..2**32-1")
        if len(self.value) != (self.length + 7) // 8:
            raise LocalProtocolError(
                f"bit-string of {self.length} bits needs {(self.length + 7) // 8} octets, "
                f"got {len(self.value)}"
            )
        if self.length % 8 and self.value[-1] & (0xFF >> (self.length % 8)):
            raise LocalProtocolError("bit-string: the unused bits of the last octet must be 0")

    @classmethod
    def from_bits(cls, bits: str) -> BitString:
        """From a string of '0' and '1', first bit first (``BitString.from_bits("101")``)."""
        if bits.strip("01"):
            raise ValueError(f"not a string of 0 and 1: {bits!r}")
        padded = bits + "0" * (-len(bits) % 8)
        return cls(int(padded or "0", 2).to_bytes(len(padded) // 8, "big"), len(bits))

    @property
    def bits(self) -> str:
        """The bits as a string of '0' and '1', first bit first."""
        if not self.length:
            return ""
        return format(int.from_bytes(self.value, "big"), f"0{len(self.value) * 8}b")[: self.length]


@dataclass(frozen=True, slots=True)
class ArrayOf:
    """Compact-array type description of an array: ``count`` elements of ``element``."""

    count: int
    element: TypeDescription

    def __post_init__(self) -> None:
        if type(self.count) is not int or not 0 <= self.count <= 0xFFFF:
            raise LocalProtocolError(f"array type: count {self.count!r} is not an Unsigned16")
        object.__setattr__(self, "element", _check_description(self.element))


@dataclass(frozen=True, slots=True)
class StructureOf:
    """Compact-array type description of a structure: its elements' descriptions."""

    elements: tuple[TypeDescription, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.elements, list | tuple):
            raise LocalProtocolError("structure type: elements must be a tuple")
        object.__setattr__(self, "elements", tuple(map(_check_description, self.elements)))


TypeDescription: TypeAlias = Union[Tag, ArrayOf, StructureOf]  # noqa: UP007 (runtime alias)
# IEC 62056-6-2 §4.1.5 TypeDescription: simple types; arrays and structures through ArrayOf and
# StructureOf; never compact-array or dont-care.
_DESCRIBABLE = frozenset(_TAGS) - {1, 2, 19, 255}


def _check_description(desc: object) -> TypeDescription:
    if isinstance(desc, ArrayOf | StructureOf):
        return desc
    if isinstance(desc, int) and not isinstance(desc, bool) and desc in _DESCRIBABLE:
        return _TAGS[desc]
    raise LocalProtocolError(
        f"compact-array type description must be a simple Tag, ArrayOf or StructureOf, not {desc!r}"
    )


_FIXED_SIZES: dict[int, int] = {t: s.size for t, s in _STRUCTS.items()}
_FIXED_SIZES.update({0: 0, 3: 1, 4: 1, 9: 1, 10: 1, 12: 1, 25: 12, 26: 5, 27: 4})


def _min_size(desc: TypeDescription) -> int:
    """The fewest octets one element of ``desc`` takes in compact-array contents."""
    if isinstance(desc, ArrayOf):
        return desc.count * _min_size(desc.element)
    if isinstance(desc, StructureOf):
        return sum(map(_min_size, desc.elements))
    return _FIXED_SIZES[desc]


def _nodes(desc: TypeDescription) -> int:
    if isinstance(desc, ArrayOf):
        return 1 + desc.count * _nodes(desc.element)
    if isinstance(desc, StructureOf):
        return 1 + sum(map(_nodes, desc.elements))
    return 1


def _check_element(desc: TypeDescription, value: object) -> object:
    if isinstance(desc, ArrayOf):
        if not isinstance(value, list | tuple) or len(value) != desc.count:
            raise LocalProtocolError(f"compact-array: {value!r} is not {desc.count} elements")
        return [_check_element(desc.element, v) for v in value]
    if isinstance(desc, StructureOf):
        if not isinstance(value, list | tuple) or len(value) != len(desc.elements):
            raise LocalProtocolError(f"compact-array: {value!r} does not match {desc}")
        return tuple(_check_element(d, v) for d, v in zip(desc.elements, value, strict=True))
    return _normalize(desc, value)


@dataclass(frozen=True, slots=True)
class CompactArray:
    """Compact-array (IEC 62056-6-2 §4.1.5): one type description, then untagged values.

    Each value follows the plain mapping of its description: ``list`` for ``ArrayOf``, ``tuple``
    for ``StructureOf``, and for a simple tag what ``Typed(tag, value)`` accepts.
    """

    type_description: TypeDescription
    values: tuple[object, ...]

    def __post_init__(self) -> None:
        desc = _check_description(self.type_description)
        object.__setattr__(self, "type_description", desc)
        if _min_size(desc) == 0:  # else the number of elements could not be told from the octets
            raise LocalProtocolError("compact-array: an element must take at least one octet")
        if not isinstance(self.values, list | tuple):
            raise LocalProtocolError("compact-array values must be a tuple")
        object.__setattr__(self, "values", tuple(_check_element(desc, v) for v in self.values))


def _normalize(tag: Tag, value: object) -> object:
    """``value`` checked (and made canonical) for ``tag``; LocalProtocolError if it does not fit."""
    name = _NAMES[tag]  # for the messages
    rng = _INT_RANGES.get(tag)
    if rng is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise LocalProtocolError(f"{name} needs an int, got {type(value).__name__}")
        if not rng[0] <= value <= rng[1]:
            raise LocalProtocolError(f"{name} {value} is out of range {rng[0]}..{rng[1]}")
        return int(value)
    if tag in (Tag.FLOAT32, Tag.FLOAT64):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise LocalProtocolError(f"{name} needs a float, got {type(value).__name__}")
        if tag == Tag.FLOAT64:
            return float(value)
        try:  # round to the nearest float32, so a decoded value compares equal
            return float(_F32.unpack(_F32.pack(value))[0])
        except (struct.error, OverflowError) as exc:
            raise LocalProtocolError(f"float32 {value!r} is out of range") from exc
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        if not isinstance(value, list | tuple):
            raise LocalProtocolError(
                f"{name} needs a tuple of elements, got {type(value).__name__}"
            )
        return tuple(value)
    if tag == Tag.OCTET_STRING:
        if isinstance(value, DateTime | Date | Time):
            return value.to_octets()
        if not isinstance(value, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"octet-string needs bytes, got {type(value).__name__}")
        return bytes(value)
    if tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        if not isinstance(value, str):
            raise LocalProtocolError(f"{name} needs a str, got {type(value).__name__}")
        if tag == Tag.VISIBLE_STRING and not value.isascii():
            raise LocalProtocolError(f"visible-string must be ASCII: {value!r}")
        _utf8(value)
        return value
    expected = _VALUE_TYPES[tag]
    if not isinstance(value, expected) or (tag == Tag.BOOLEAN and type(value) is not bool):
        raise LocalProtocolError(f"{name} needs {expected}, got {type(value).__name__}")
    return value


_VALUE_TYPES: dict[int, type | tuple[type, ...]] = {
    Tag.NULL: type(None),
    Tag.DONT_CARE: type(None),
    Tag.BOOLEAN: bool,
    Tag.BIT_STRING: BitString,
    Tag.COMPACT_ARRAY: CompactArray,
    Tag.DATE_TIME: DateTime,
    Tag.DATE: Date,
    Tag.TIME: Time,
}


@dataclass(frozen=True, slots=True)
class Typed:
    """A value with its A-XDR tag. For ARRAY and STRUCTURE, ``value`` is a tuple of elements
    (``Typed`` or plain values); ``decode(..., typed=True)`` makes every element ``Typed``.

    The constructor checks that the value fits the tag and makes it canonical (lists become
    tuples, bytearrays bytes, float32 values are rounded to float32, a DateTime/Date/Time given
    for an octet-string becomes its octets), so that ``decode(encode(t), typed=True)`` equals ``t``.
    """

    tag: Tag
    value: object = None

    def __post_init__(self) -> None:
        raw: object = self.tag
        tag, value = self.tag, self.value
        if type(raw) is not Tag:
            found = _TAGS.get(raw) if type(raw) is int else None
            if found is None:
                raise LocalProtocolError(f"{raw!r} is not an A-XDR tag")
            tag = found
            object.__setattr__(self, "tag", tag)
        rng = _INT_RANGES.get(tag)
        if type(value) is int and rng is not None and rng[0] <= value <= rng[1]:
            return  # the common case, already canonical
        object.__setattr__(self, "value", _normalize(tag, value))


Value: TypeAlias = (  # what encode takes and decode gives; int and float only inside Typed
    "bool | int | float | bytes | str | list[Value] | tuple[Value, ...] | BitString | DateTime"
    " | Date | Time | CompactArray | Typed | None"
)


# -- lengths (IEC 61334-6 A-XDR: like BER definite lengths) --------------------------------------


def encode_length(n: int) -> bytes:
    """A-XDR length: 0..0x7F in one octet, else 0x81..0x84 and 1..4 big-endian octets."""
    if n < 0x80:
        if n < 0:
            raise LocalProtocolError(f"length {n} is negative")
        return bytes((n,))
    if n > 0xFFFF_FFFF:
        raise LocalProtocolError(f"length {n} does not fit in 4 octets")
    k = (n.bit_length() + 7) // 8
    return bytes((0x80 | k,)) + n.to_bytes(k, "big")


def _put_length(out: bytearray, n: int) -> None:
    if n < 0x80:
        out.append(n)
    else:
        out += encode_length(n)


def _length(data: bytes, p: int, end: int, at: int, tag: int) -> tuple[int, int]:
    """The A-XDR length at ``p``, for the value of ``tag`` at offset ``at``."""
    if p >= end:
        raise Truncated(f"A-XDR {_NAMES[tag]} at offset {at}: input ends before its length")
    first = data[p]
    if first < 0x80:
        return first, p + 1
    k = first - 0x80
    if not 1 <= k <= 4:
        raise RemoteProtocolError(
            f"A-XDR {_NAMES[tag]} at offset {at}: length octet 0x{first:02x} at offset {p} "
            "is neither 0x00..0x7F nor 0x81..0x84"
        )
    q = p + 1 + k
    if q > end:
        raise Truncated(f"A-XDR {_NAMES[tag]} at offset {at}: input ends inside its length")
    return int.from_bytes(data[p + 1 : q], "big"), q


def decode_length(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """The A-XDR length at ``offset`` and the offset after it."""
    if offset < 0:
        raise LocalProtocolError(f"offset {offset} is negative")
    data = bytes(data)
    return _length(data, offset, len(data), offset, Tag.OCTET_STRING)


# -- encoding ------------------------------------------------------------------------------------


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{text!r} cannot be encoded as UTF-8") from exc


def _put_octets(out: bytearray, raw: bytes | bytearray) -> None:
    _put_length(out, len(raw))
    out += raw


def _put_description(out: bytearray, desc: TypeDescription) -> None:
    if isinstance(desc, ArrayOf):  # IEC 62056-6-2 §4.1.5: array: number-of-elements Unsigned16
        out.append(1)
        out += _U16.pack(desc.count)
        _put_description(out, desc.element)
    elif isinstance(desc, StructureOf):  # structure: SEQUENCE OF TypeDescription
        out.append(2)
        _put_length(out, len(desc.elements))
        for element in desc.elements:
            _put_description(out, element)
    else:
        out.append(desc)


def _put_element(out: bytearray, desc: TypeDescription, value: Any) -> None:
    if isinstance(desc, ArrayOf):
        for item in value:
            _put_element(out, desc.element, item)
    elif isinstance(desc, StructureOf):
        for element, item in zip(desc.elements, value, strict=True):
            _put_element(out, element, item)
    else:
        _put_body(out, desc, value)


def _put_body(out: bytearray, tag: int, value: Any) -> None:
    """The content (no tag) of ``value``, already checked for ``tag`` by Typed/CompactArray."""
    st = _STRUCTS.get(tag)
    if st is not None:
        out += st.pack(value)
    elif tag == 9:
        _put_octets(out, value)
    elif tag in {1, 2}:
        _put_length(out, len(value))
        for item in value:
            encode_into(out, item)
    elif tag == 10:
        _put_octets(out, value.encode("ascii"))
    elif tag == 12:
        _put_octets(out, _utf8(value))
    elif tag == 3:
        out.append(1 if value else 0)
    elif tag == 4:
        _put_length(out, value.length)
        out += value.value
    elif tag == 19:
        _put_description(out, value.type_description)
        contents = bytearray()
        for item in value.values:
            _put_element(contents, value.type_description, item)
        _put_octets(out, contents)
    elif tag >= 25 and tag != 255:  # date-time, date, time: fixed size, no length
        out += value.to_octets()
    # null-data and dont-care have no content


def encode_into(out: bytearray, value: Value) -> None:
    """Append the A-XDR encoding of ``value`` to ``out``."""
    kind: Any = type(value)
    value_: Any = value
    if kind is Typed:
        tag = value_.tag
        out.append(tag)
        _put_body(out, tag, value_.value)
    elif kind is bytes:
        out.append(9)
        _put_octets(out, value_)
    elif kind is tuple or kind is list:
        out.append(2 if kind is tuple else 1)
        _put_length(out, len(value_))
        for item in value_:
            encode_into(out, item)
    elif value is None:
        out.append(0)
    elif kind is bool:
        out += b"\x03\x01" if value else b"\x03\x00"
    elif kind is str:
        if value_.isascii():
            out.append(10)
            _put_octets(out, value_.encode("ascii"))
        else:
            out.append(12)
            _put_octets(out, _utf8(value_))
    elif kind is DateTime or kind is Date or kind is Time:
        # COSEM attributes hold them as octet-strings (IEC 62056-6-2 §4.1.6.1); Typed(Tag.DATE,
        # ...) gives the date/time/date-time tags instead
        out.append(9)
        _put_octets(out, value_.to_octets())
    elif kind is BitString or kind is CompactArray:
        tag = 4 if kind is BitString else 19
        out.append(tag)
        _put_body(out, tag, value)
    elif isinstance(value, int | float):
        raise LocalProtocolError(
            f"{kind.__name__} {value!r} needs a type: use e.g. Typed(Tag.LONG_UNSIGNED, 5)"
        )
    elif isinstance(value, bytes | bytearray | memoryview):
        encode_into(out, bytes(value))
    elif isinstance(value, str | list | tuple):
        base = next(t for t in (str, list, tuple) if isinstance(value, t))
        encode_into(out, str.__str__(value_) if base is str else base(value_))
    else:
        raise LocalProtocolError(f"cannot encode a {kind.__name__} as A-XDR")


def encode(value: Value) -> bytes:
    """The A-XDR encoding of ``value`` (mapping: module docstring; ints, floats need Typed)."""
    out = bytearray()
    encode_into(out, value)
    return bytes(out)


# -- decoding ------------------------------------------------------------------------------------

Budget: TypeAlias = list[int]  # one cell: how many more elements may be decoded


def _short(tag: int, at: int, need: int, end: int) -> Truncated:
    return Truncated(
        f"A-XDR {_NAMES[tag]} at offset {at}: needs {need} octets, only {max(end - at, 0)} remain"
    )


def _read_octets(data: bytes, p: int, end: int, tag: int) -> tuple[bytes, int]:
    n, s = _length(data, p, end, p, tag)
    q = s + n
    if q > end:
        raise _short(tag, s, n, end)
    return data[s:q], q


def _read(data: bytes, p: int, end: int, tag: int) -> tuple[Any, int]:
    """The content at ``p`` of a value of ``tag``, for every tag but array/structure/compact."""
    st = _STRUCTS.get(tag)
    if st is not None:
        q = p + st.size
        if q > end:
            raise _short(tag, p, st.size, end)
        return st.unpack_from(data, p)[0], q
    if tag == 9:
        return _read_octets(data, p, end, tag)
    if tag == 10:
        raw, q = _read_octets(data, p, end, tag)
        if not raw.isascii():  # IEC 62056-6-2 §4.1.5: visible-string holds ISO 646 characters
            raise RemoteProtocolError(f"A-XDR visible-string at offset {p} has non-ASCII octets")
        return raw.decode("ascii"), q
    if tag == 12:
        raw, q = _read_octets(data, p, end, tag)
        try:
            return raw.decode("utf-8"), q
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"A-XDR utf8-string at offset {p}: bad UTF-8") from None
    if tag == 3:
        if p >= end:
            raise _short(tag, p, 1, end)
        return data[p] != 0, p + 1  # A-XDR BOOLEAN: any non-zero octet is TRUE
    if tag == 4:
        bits, s = _length(data, p, end, p, tag)
        q = s + (bits + 7) // 8
        if q > end:
            raise _short(tag, s, q - s, end)
        raw = data[s:q]
        if bits % 8 and raw[-1] & (0xFF >> (bits % 8)):  # unused trailing bits: ignored, made 0
            raw = raw[:-1] + bytes((raw[-1] & (0xFF00 >> (bits % 8)) & 0xFF,))
        return BitString(raw, bits), q
    if tag in {0, 255}:
        return None, p
    kind = _CALENDARS.get(tag)
    if kind is None:
        raise RemoteProtocolError(f"unknown A-XDR tag {tag} at offset {p - 1}")
    q = p + kind._FORMAT.size
    if q > end:
        raise _short(tag, p, q - p, end)
    try:
        return kind.from_octets(data[p:q]), q
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"A-XDR {_NAMES[tag]} at offset {p}: {exc}") from None


_CALENDARS: dict[int, type[CalendarValue]] = {25: DateTime, 26: Date, 27: Time}
# Fixed-size values inlined in the array/structure loop: tag -> (size with tag, unpack_from).
_FAST_GET = {t: (1 + s.size, s.unpack_from) for t, s in _STRUCTS.items()}.get


def _elements(data: bytes, pos: int, end: int, depth: int, budget: Budget) -> tuple[int, int]:
    """Check the header of the array or structure at ``pos``: (element count, offset after it)."""
    tag = data[pos]
    if depth <= 0:
        raise RemoteProtocolError(f"A-XDR {_NAMES[tag]} at offset {pos} is nested too deep")
    n, p = _length(data, pos + 1, end, pos, tag)
    if n > end - p:  # every element takes at least its tag octet
        raise Truncated(
            f"A-XDR {_NAMES[tag]} at offset {pos} declares {n} elements, "
            f"only {end - p} octets remain"
        )
    budget[0] -= n
    if budget[0] < 0:
        raise RemoteProtocolError(f"A-XDR {_NAMES[tag]} at offset {pos}: too many elements")
    return n, p


def _ended(pos: int, tag: int, done: int, n: int) -> Truncated:
    return Truncated(f"A-XDR {_NAMES[tag]} at offset {pos}: input ends after {done} of {n}")


def _plain(data: bytes, pos: int, end: int, depth: int, budget: Budget) -> tuple[Value, int]:
    tag = data[pos]
    if tag in {1, 2}:
        n, p = _elements(data, pos, end, depth, budget)
        items: list[Value] = []
        append = items.append
        for _ in range(n):
            if p >= end:
                raise _ended(pos, tag, len(items), n)
            t = data[p]
            fast = _FAST_GET(t)
            if fast is not None:
                q = p + fast[0]
                if q > end:
                    raise _short(t, p, fast[0], end)
                append(fast[1](data, p + 1)[0])
                p = q
            elif t == 9:
                if p + 1 < end and data[p + 1] < 0x80:
                    s = p + 2
                    q = s + data[p + 1]
                    if q > end:
                        raise _short(t, p, q - p, end)
                    append(data[s:q])
                    p = q
                else:
                    raw, p = _read_octets(data, p + 1, end, 9)
                    append(raw)
            else:
                value, p = _plain(data, p, end, depth - 1, budget)
                append(value)
        return (items if tag == 1 else tuple(items)), p
    if tag == 19:
        return _compact(data, pos, end, depth, budget)
    return _read(data, pos + 1, end, tag)


def _node(tag: int, value: object) -> Typed:
    """A Typed for a decoded value, which is canonical already: skip the constructor's checks."""
    node: Typed = _new(Typed)
    _set(node, "tag", _TAGS[tag])
    _set(node, "value", value)
    return node


def _typed(data: bytes, pos: int, end: int, depth: int, budget: Budget) -> tuple[Typed, int]:
    tag = data[pos]
    if tag in {1, 2}:
        n, p = _elements(data, pos, end, depth, budget)
        children: list[Typed] = []
        for _ in range(n):
            if p >= end:
                raise _ended(pos, tag, len(children), n)
            child, p = _typed(data, p, end, depth - 1, budget)
            children.append(child)
        return _node(tag, tuple(children)), p
    if tag == 19:
        value, p = _compact(data, pos, end, depth, budget)
        return _node(tag, value), p
    value, p = _read(data, pos + 1, end, tag)
    return _node(tag, value), p


def _description(
    data: bytes, p: int, end: int, depth: int, budget: Budget
) -> tuple[TypeDescription, int]:
    if p >= end:
        raise Truncated(f"compact-array type description: input ends at offset {p}")
    t = data[p]
    if t == 1:  # IEC 62056-6-2 §4.1.5: array: number-of-elements Unsigned16, type-description
        if depth <= 0:
            raise RemoteProtocolError(f"compact-array type at offset {p} is nested too deep")
        if p + 3 > end:
            raise _short(t, p, 3, end)
        element, q = _description(data, p + 3, end, depth - 1, budget)
        return ArrayOf(_U16.unpack_from(data, p + 1)[0], element), q
    if t == 2:  # structure: SEQUENCE OF TypeDescription
        n, q = _elements(data, p, end, depth, budget)
        elements = []
        for _ in range(n):
            element, q = _description(data, q, end, depth - 1, budget)
            elements.append(element)
        return StructureOf(tuple(elements)), q
    if t not in _DESCRIBABLE:
        raise RemoteProtocolError(f"compact-array type description at offset {p}: tag {t}")
    return _TAGS[t], p + 1


def _element(data: bytes, p: int, end: int, desc: TypeDescription) -> tuple[object, int]:
    if isinstance(desc, ArrayOf):
        items = []
        for _ in range(desc.count):
            item, p = _element(data, p, end, desc.element)
            items.append(item)
        return items, p
    if isinstance(desc, StructureOf):
        fields = []
        for element in desc.elements:
            item, p = _element(data, p, end, element)
            fields.append(item)
        return tuple(fields), p
    return _read(data, p, end, desc)


def _compact(
    data: bytes, pos: int, end: int, depth: int, budget: Budget
) -> tuple[CompactArray, int]:
    """compact-array [19] SEQUENCE {contents-description, array-contents OCTET STRING}."""
    if depth <= 0:
        raise RemoteProtocolError(f"A-XDR compact-array at offset {pos} is nested too deep")
    desc, p = _description(data, pos + 1, end, depth - 1, budget)
    n, p = _length(data, p, end, pos, Tag.COMPACT_ARRAY)
    stop = p + n
    if stop > end:
        raise _short(Tag.COMPACT_ARRAY, p, n, end)
    if _min_size(desc) == 0:
        raise RemoteProtocolError(f"A-XDR compact-array at offset {pos}: elements of no octets")
    nodes = _nodes(desc)
    values = []
    try:
        while p < stop:
            budget[0] -= nodes
            if budget[0] < 0:
                raise RemoteProtocolError(f"A-XDR compact-array at offset {pos}: too many elements")
            value, p = _element(data, p, stop, desc)
            values.append(value)
    except Truncated as exc:  # the contents' length is known: an element that overruns it is bad
        raise RemoteProtocolError(f"A-XDR compact-array at offset {pos}: {exc}") from None
    return CompactArray(desc, tuple(values)), stop


def decode(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    typed: bool = False,
    max_depth: int = 16,
    max_elements: int = 100_000,
) -> tuple[Value, int]:
    """Decode the A-XDR value at ``offset``: (value, offset after it). Trailing octets are left.

    ``max_depth`` bounds the nesting of arrays, structures and compact-array type descriptions;
    ``max_elements`` the number of elements of all of them together. ``Truncated`` if the input
    ends inside the value, ``RemoteProtocolError`` if it is malformed; never a partial value.
    """
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    if not 0 <= offset <= end:
        raise LocalProtocolError(f"offset {offset} is outside the {end} octets given")
    if not 0 <= max_depth <= 256:
        raise LocalProtocolError(f"max_depth {max_depth} is not 0..256")
    if offset == end:
        raise Truncated(f"A-XDR data at offset {offset}: input ends before the tag")
    if typed:
        return _typed(data, offset, end, max_depth, [max_elements])
    return _plain(data, offset, end, max_depth, [max_elements])


def decode_all(
    data: bytes | bytearray | memoryview,
    *,
    typed: bool = False,
    max_depth: int = 16,
    max_elements: int = 100_000,
) -> Value:
    """Decode the one A-XDR value that fills ``data``; octets after it: RemoteProtocolError."""
    value, end = decode(data, typed=typed, max_depth=max_depth, max_elements=max_elements)
    if end != len(data):
        raise RemoteProtocolError(f"{len(data) - end} octets after the A-XDR value at offset {end}")
    return value
