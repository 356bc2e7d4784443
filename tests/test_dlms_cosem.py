"""COSEM interface class tables, units, scaler_unit and clock status."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms.axdr import Tag, Typed, decode_all, encode
from protocols.dlms.cosem import (
    INTERFACE_CLASSES,
    Attribute,
    ClockStatus,
    InterfaceClass,
    Method,
    ScalerUnit,
    Unit,
    attribute,
    interface_class,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

# The classes the brief names, with the version IS 15959 meters implement.
EXPECTED_VERSIONS = {1: 0, 3: 0, 4: 0, 5: 0, 7: 1, 8: 0, 9: 0, 15: 1, 18: 0}
EXPECTED_VERSIONS |= {23: 1, 40: 0, 64: 0, 70: 0, 71: 0}


def test_the_classes_hesd_uses_are_there() -> None:
    assert {c: k.version for c, k in INTERFACE_CLASSES.items()} == EXPECTED_VERSIONS


@pytest.mark.parametrize("cls", list(INTERFACE_CLASSES.values()), ids=lambda c: c.name)
def test_table_sanity(cls: InterfaceClass) -> None:
    assert INTERFACE_CLASSES[cls.class_id] is cls
    assert cls.attributes[0] == Attribute(1, "logical_name", Tag.OCTET_STRING, static=True)
    assert [a.index for a in cls.attributes] == list(range(1, len(cls.attributes) + 1))
    assert [m.index for m in cls.methods] == list(range(1, len(cls.methods) + 1))
    assert len({a.name for a in cls.attributes}) == len(cls.attributes)
    for a in cls.attributes:
        assert a.type is None or isinstance(a.type, Tag)
        assert attribute(cls.class_id, a.name) is a
        assert attribute(cls.class_id, a.index) is a
    for m in cls.methods:
        assert cls.method(m.name) is m
        assert cls.method(m.index) is m


# gurux-dlms knows the same classes; where its tables say otherwise, gurux is wrong (or models
# a later version) and the reason is given.
GURUX_VERSION_DIFFERS = {
    15: "gurux models Association LN version 2 (user_list, current_user); IS 15959 uses 1",
    40: "gurux models Push setup version 2; IS 15959 uses 0",
    64: "gurux models Security setup version 1 (certificates); IS 15959 uses 0",
    70: "gurux models Disconnect control version 1",
}
GURUX_TYPE_WRONG = {
    (4, 3): "scaler_unit is a structure, gurux says array",
    (5, 4): "scaler_unit is a structure, gurux says array",
    (7, 6): "sort_object is a capture object definition, a structure; gurux says array",
    (15, 4): "application_context_name: structure or octet-string, we keep it open",
    (15, 6): "authentication_mechanism_name: structure or octet-string, we keep it open",
    (40, 7): "repetition_delay: long-unsigned in version 0, a structure from version 2 on",
}


def test_tables_agree_with_gurux() -> None:
    from gurux_dlms.enums import DataType
    from gurux_dlms.objects import (
        GXDLMSAssociationLogicalName,
        GXDLMSClock,
        GXDLMSData,
        GXDLMSDemandRegister,
        GXDLMSDisconnectControl,
        GXDLMSExtendedRegister,
        GXDLMSHdlcSetup,
        GXDLMSImageTransfer,
        GXDLMSLimiter,
        GXDLMSProfileGeneric,
        GXDLMSPushSetup,
        GXDLMSRegister,
        GXDLMSScriptTable,
        GXDLMSSecuritySetup,
    )

    gurux = {
        1: GXDLMSData,
        3: GXDLMSRegister,
        4: GXDLMSExtendedRegister,
        5: GXDLMSDemandRegister,
        7: GXDLMSProfileGeneric,
        8: GXDLMSClock,
        9: GXDLMSScriptTable,
        15: GXDLMSAssociationLogicalName,
        18: GXDLMSImageTransfer,
        23: GXDLMSHdlcSetup,
        40: GXDLMSPushSetup,
        64: GXDLMSSecuritySetup,
        70: GXDLMSDisconnectControl,
        71: GXDLMSLimiter,
    }
    tags = {DataType.OCTET_STRING: Tag.OCTET_STRING, DataType.NONE: None}
    tags |= {
        getattr(DataType, n): getattr(Tag, t)
        for n, t in [
            ("STRUCTURE", "STRUCTURE"),
            ("ARRAY", "ARRAY"),
            ("UINT32", "DOUBLE_LONG_UNSIGNED"),
            ("UINT16", "LONG_UNSIGNED"),
            ("UINT8", "UNSIGNED"),
            ("INT16", "LONG"),
            ("INT8", "INTEGER"),
            ("ENUM", "ENUM"),
            ("BOOLEAN", "BOOLEAN"),
            ("BITSTRING", "BIT_STRING"),
        ]
    }
    for class_id, kind in gurux.items():
        ours, theirs = INTERFACE_CLASSES[class_id], kind()
        if class_id not in GURUX_VERSION_DIFFERS:
            assert theirs.version == ours.version, ours.name
            assert theirs.getAttributeCount() == len(ours.attributes), ours.name
        for a in ours.attributes:
            if (class_id, a.index) not in GURUX_TYPE_WRONG:
                assert tags[theirs.getDataType(a.index)] == a.type, (ours.name, a.name)


def test_lookup_errors() -> None:
    with pytest.raises(KeyError, match="interface class 99"):
        interface_class(99)
    with pytest.raises(KeyError, match="has no attribute 'nope'"):
        attribute(3, "nope")
    with pytest.raises(KeyError, match="has no attribute 4"):
        attribute(3, 4)
    with pytest.raises(KeyError, match="has no method"):
        interface_class(8).method(7)
    with pytest.raises(TypeError):
        INTERFACE_CLASSES[1] = INTERFACE_CLASSES[3]  # type: ignore[index]


def test_interface_class_checks_its_table() -> None:
    ln = Attribute(1, "logical_name", Tag.OCTET_STRING)
    with pytest.raises(ValueError, match=r"not 1\.\.n"):
        InterfaceClass(1, "x", 0, (ln, Attribute(3, "value", None)))
    with pytest.raises(ValueError, match="duplicate"):
        InterfaceClass(1, "x", 0, (ln, Attribute(2, "logical_name", None)))
    with pytest.raises(ValueError, match="logical_name"):
        InterfaceClass(1, "x", 0, (Attribute(1, "name", Tag.OCTET_STRING),))
    with pytest.raises(ValueError, match="method indexes"):
        InterfaceClass(1, "x", 0, (ln,), (Method(2, "m"),))


def test_well_known_entries() -> None:
    assert attribute(3, "scaler_unit").type is Tag.STRUCTURE
    assert attribute(8, 2) == Attribute(2, "time", Tag.OCTET_STRING, static=False)
    assert attribute(7, "buffer").static is False
    assert interface_class(15).method(1).name == "reply_to_HLS_authentication"
    assert interface_class(18).method("image_block_transfer").parameter is Tag.STRUCTURE
    assert interface_class(70).method(1).name == "remote_disconnect"


# -- units and scaler_unit -----------------------------------------------------------------------


def test_units_agree_with_gurux() -> None:
    from gurux_dlms.enums import Unit as GXUnit

    theirs = {int(u) for u in GXUnit} - {0}  # gurux's 0 "none" is not a Blue Book code
    assert {int(u) for u in Unit} == theirs
    assert (Unit.WATT, Unit.VOLT_AMPERE, Unit.VAR) == (27, 28, 29)
    assert (Unit.WATT_HOUR, Unit.VOLT_AMPERE_HOUR, Unit.VAR_HOUR) == (30, 31, 32)
    assert (Unit.AMPERE, Unit.VOLT, Unit.HERTZ, Unit.COUNT) == (33, 35, 44, 255)
    assert [Unit(c).symbol for c in (27, 30, 32, 33, 35, 44, 56)] == [
        "W",
        "Wh",
        "varh",
        "A",
        "V",
        "Hz",
        "%",
    ]


def test_scaler_unit() -> None:
    su = ScalerUnit(-3, 30)
    assert su.unit is Unit.WATT_HOUR
    assert su.symbol == "Wh"
    assert su.apply(1234) == 1.234  # not 1.2340000000000002
    assert su.apply(3) == 0.003
    assert su.apply_decimal(1234) == Decimal("1.234")
    assert ScalerUnit(2, 27).apply(5) == 500.0
    assert ScalerUnit(0, 255).apply(7) == 7.0
    assert ScalerUnit(-1, 35).apply(2301.5) == 230.15
    assert ScalerUnit(-1, 35).apply_decimal(2301.5) == Decimal("230.15")
    assert ScalerUnit(-2, 200).unit == 200  # reserved code: kept as int
    assert ScalerUnit(-2, 200).symbol == "unit 200"
    assert math.isnan(ScalerUnit(1, 27).apply(math.nan))
    for bad in ((128, 27), (-129, 27), (0, 256), (0, -1), (True, 27), (0, 1.0)):
        with pytest.raises(LocalProtocolError):
            ScalerUnit(*bad)  # type: ignore[arg-type]
    for raw in (b"1", None, True, "5"):
        with pytest.raises(RemoteProtocolError, match="not a number"):
            su.apply(raw)  # type: ignore[arg-type]
        with pytest.raises(RemoteProtocolError, match="not a number"):
            su.apply_decimal(raw)  # type: ignore[arg-type]


@given(st.integers(-(2**63), 2**64 - 1), st.integers(-128, 127))
def test_apply_is_the_correctly_rounded_exact_value(raw: int, scaler: int) -> None:
    su = ScalerUnit(scaler, 30)
    exact = su.apply_decimal(raw)
    assert exact == Decimal(raw) * Decimal(10) ** scaler
    assert su.apply(raw) == float(exact)  # float(Decimal) is correctly rounded


def test_scaler_unit_from_the_wire() -> None:
    wire = encode(ScalerUnit(-1, 35).to_value())
    assert wire == bytes.fromhex("02020fff1623")
    assert ScalerUnit.from_value(decode_all(wire)) == ScalerUnit(-1, Unit.VOLT)
    assert ScalerUnit.from_value(decode_all(wire, typed=True)) == ScalerUnit(-1, 35)
    for bad in [(1,), (1, 2, 3), b"\x01\x02", (b"", 1), (200, 30), (0, 300), None]:
        with pytest.raises(RemoteProtocolError, match="scaler_unit"):
            ScalerUnit.from_value(bad)
    assert ScalerUnit.from_value(Typed(Tag.STRUCTURE, (Typed(Tag.INTEGER, 0), Typed(Tag.ENUM, 27))))


def test_clock_status_bits() -> None:
    # Blue Book 4.1.6.1 clock_status
    assert ClockStatus.INVALID_VALUE == 0x01
    assert ClockStatus.DOUBTFUL_VALUE == 0x02
    assert ClockStatus.DIFFERENT_CLOCK_BASE == 0x04
    assert ClockStatus.INVALID_CLOCK_STATUS == 0x08
    assert ClockStatus.DAYLIGHT_SAVING_ACTIVE == 0x80
    status = ClockStatus(0x81)
    assert ClockStatus.DAYLIGHT_SAVING_ACTIVE in status
    assert ClockStatus.INVALID_VALUE in status
    assert ClockStatus(0x10) == 0x10  # a reserved bit does not make a valid status unreadable
