"""OBIS codes: every notation, round trips, errors, and the from_bytes cache."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms import obis
from protocols.dlms.obis import ObisCode
from protocols.errors import RemoteProtocolError

groups = st.integers(0, 255)
codes = st.builds(ObisCode, groups, groups, groups, groups, groups, groups)


@pytest.mark.parametrize(
    "text",
    [
        "1.0.1.8.0.255",
        "1-0:1.8.0*255",
        "1-0:1.8.0.255",
        "1-0:1.8.0&255",
        "1.0.1.8.0",
        "1-0:1.8.0",
        "  1.0.1.8.0.255\n",
        "001.000.001.008.000.255",
    ],
)
def test_every_notation_names_the_same_code(text: str) -> None:
    code = ObisCode.parse(text)
    assert code == ObisCode(1, 0, 1, 8, 0, 255)
    assert str(code) == "1.0.1.8.0.255"
    assert code.reduced == "1-0:1.8.0*255"
    assert code.to_bytes() == bytes.fromhex("0100010800ff")


@given(codes)
def test_round_trips(code: ObisCode) -> None:
    assert ObisCode.parse(str(code)) == code
    assert ObisCode.parse(code.reduced) == code
    assert ObisCode.from_bytes(code.to_bytes()) == code
    assert ObisCode.from_bytes(bytearray(code.to_bytes())) == code
    assert ObisCode.from_bytes(memoryview(code.to_bytes())) == code
    assert hash(ObisCode(*code.to_tuple())) == hash(code)
    assert {code: 1}[ObisCode.parse(str(code))] == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1.0.1.8",
        "1.0.1.8.0.255.0",
        "1.0.1.8.0.256",
        "1-0:1.8.0*256",
        "1-0:1.8",
        "1-0-1.8.0.255",
        "a.b.c.d.e.f",
        "1.0.1.8.0.-1",
        "1..1.8.0.255",
        "1.0.1.8.0.\uff12\uff15\uff15",  # fullwidth digits are not ASCII digits
        "0100010800FF",
        "1.0.1.8.0.1000",
    ],
)
def test_parse_errors_are_value_errors(text: str) -> None:
    with pytest.raises(ValueError, match="is not an OBIS code"):
        ObisCode.parse(text)


def test_constructor_checks_the_groups() -> None:
    for bad in (256, -1, True, 1.0, "1"):
        with pytest.raises(ValueError, match="value group F"):
            ObisCode(1, 0, 1, 8, 0, bad)  # type: ignore[arg-type]
    assert ObisCode(1, 0, 1, 8, 0).f == 255


@given(st.binary(max_size=12).filter(lambda b: len(b) != 6))
def test_from_bytes_needs_six_octets(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="6 octets"):
        ObisCode.from_bytes(data)


def test_from_bytes_caches_and_stays_bounded() -> None:
    first = ObisCode.from_bytes(b"\x01\x00\x01\x08\x00\xff")
    assert ObisCode.from_bytes(bytearray(b"\x01\x00\x01\x08\x00\xff")) is first
    for n in range(3 * obis._CACHE_SIZE):  # a meter sending garbage names cannot grow it
        ObisCode.from_bytes(n.to_bytes(6, "big"))
    assert len(obis._CACHE) <= obis._CACHE_SIZE
    assert ObisCode.from_bytes(b"\x01\x00\x01\x08\x00\xff") == first


def test_order_and_immutability() -> None:
    assert sorted([ObisCode.parse("1.0.2.8.0"), ObisCode.parse("1.0.1.8.0")])[0].c == 1
    code = ObisCode.parse("0.0.1.0.0.255")
    with pytest.raises(AttributeError):
        code.a = 2  # type: ignore[misc]
