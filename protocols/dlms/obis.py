"""OBIS codes, the logical names of COSEM objects (IEC 62056-61; Blue Book 4.1.8.2).

An OBIS code is six value groups A..F, each 0..255, carried on the wire as a 6-octet octet-string
(the ``logical_name`` attribute). Text forms accepted by ``ObisCode.parse``:

* ``1.0.1.8.0.255`` (all six groups, dotted) and ``1.0.1.8.0`` (F omitted: 255);
* ``1-0:1.8.0*255`` (IEC 62056-61 reduced notation), ``1-0:1.8.0.255``, ``1-0:1.8.0&255`` and
  ``1-0:1.8.0`` (F omitted: 255).

A bad code in a configuration is the operator's error (``parse`` raises ``ValueError``); a bad
logical name on the wire is the meter's (``from_bytes`` raises ``RemoteProtocolError``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocols.errors import RemoteProtocolError

_GROUP = r"([0-9]{1,3})"
_DOTTED = re.compile(r"\.".join([_GROUP] * 5) + rf"(?:\.{_GROUP})?")
_REDUCED = re.compile(rf"{_GROUP}-{_GROUP}:{_GROUP}\.{_GROUP}\.{_GROUP}(?:[.*&]{_GROUP})?")
_CACHE_SIZE = 4096  # distinct logical names kept by from_bytes; a meter has a few hundred


@dataclass(frozen=True, slots=True, order=True)
class ObisCode:
    """Six value groups A..F, each 0..255 (IEC 62056-61 §4)."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for group, value in zip("ABCDEF", self.to_tuple(), strict=True):
            if type(value) is not int or not 0 <= value <= 255:  # IEC 62056-61 §4: one octet
                raise ValueError(f"OBIS value group {group} must be an int 0..255, got {value!r}")

    @classmethod
    def parse(cls, text: str) -> ObisCode:
        """``ObisCode`` from its dotted or IEC 62056-61 reduced text; ``ValueError`` if neither."""
        stripped = text.strip()
        match = _DOTTED.fullmatch(stripped) or _REDUCED.fullmatch(stripped)
        if match is None:
            raise ValueError(
                f"{text!r} is not an OBIS code: expected A.B.C.D.E[.F] or A-B:C.D.E[*F], "
                "each group 0..255"
            )
        groups = [int(g) for g in match.groups(default="255")]
        if max(groups) > 255:
            raise ValueError(f"{text!r} is not an OBIS code: value groups must be 0..255")
        return cls(*groups)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> ObisCode:
        """``ObisCode`` from a 6-octet logical name; ``RemoteProtocolError`` if not 6 octets."""
        key = data if type(data) is bytes else bytes(data)
        code = _CACHE.get(key)
        if code is None:
            if len(key) != 6:  # Blue Book 4.1.8.2: logical_name is octet-string[6]
                raise RemoteProtocolError(f"a logical name is 6 octets, got {len(key)}")
            code = cls(*key)
            if len(_CACHE) >= _CACHE_SIZE:  # bounded: garbage names cannot grow it without end
                _CACHE.clear()
            _CACHE[key] = code
        return code

    def to_bytes(self) -> bytes:
        return bytes(self.to_tuple())

    def to_tuple(self) -> tuple[int, int, int, int, int, int]:
        return (self.a, self.b, self.c, self.d, self.e, self.f)

    def __str__(self) -> str:
        return f"{self.a}.{self.b}.{self.c}.{self.d}.{self.e}.{self.f}"

    @property
    def reduced(self) -> str:
        """IEC 62056-61 reduced notation: ``1-0:1.8.0*255``."""
        return f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}*{self.f}"


_CACHE: dict[bytes, ObisCode] = {}
