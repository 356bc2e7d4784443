"""COSEM interface class tables, units, scaler_unit and clock status."""

from __future__ import annotations

import math
import re
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms.axdr import Tag, Typed, decode_all, encode
from protocols.dlms.cosem import (
    INTERFACE_CLASSES,
    Attribute,
    CellInfo,
    ClockStatus,
    InterfaceClass,
    Method,
    ScalerUnit,
    Unit,
    attribute,
    interface_class,
    likely_class,
)
from protocols.dlms.obis import ObisCode
from protocols.errors import LocalProtocolError, RemoteProtocolError

# The classes the brief names, with the version IS 15959 meters implement.
EXPECTED_VERSIONS = {1: 0, 3: 0, 4: 0, 5: 0, 7: 1, 8: 0, 9: 0, 15: 1, 18: 0, 22: 0}
EXPECTED_VERSIONS |= {23: 1, 40: 0, 47: 1, 64: 0, 70: 0, 71: 0}


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
    (22, 2): "executed_script is a structure {script_logical_name, script_selector}, gurux says "
    "array",
    (40, 7): "repetition_delay: long-unsigned in version 0, a structure from version 2 on",
    (47, 8): "capture_time: date-time is an octet-string(12) (Blue Book 4.1.6.1), not tag 25",
}


def test_tables_agree_with_gurux() -> None:
    from gurux_dlms.enums import DataType
    from gurux_dlms.objects import (
        GXDLMSActionSchedule,
        GXDLMSAssociationLogicalName,
        GXDLMSClock,
        GXDLMSData,
        GXDLMSDemandRegister,
        GXDLMSDisconnectControl,
        GXDLMSExtendedRegister,
        GXDLMSGSMDiagnostic,
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
        22: GXDLMSActionSchedule,
        23: GXDLMSHdlcSetup,
        40: GXDLMSPushSetup,
        47: GXDLMSGSMDiagnostic,
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
            ("STRING", "VISIBLE_STRING"),
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
    assert attribute(47, 6) == Attribute(6, "cell_info", Tag.STRUCTURE, static=False)
    assert likely_class(ObisCode.parse("0.0.25.6.0.255")) == 47


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


# -- GSM diagnostic cell_info (IC 47 attribute 6) --------------------------------------------------

# version 1: cell_ID 0x0001E240, location_ID 0x1A2B, signal_quality 12, ber 99, mcc 404, mnc 45,
# channel_number 1850 (an LTE band 3 EARFCN)
CELL_V1 = CellInfo(123456, 0x1A2B, 12, 99, 404, 45, 1850)
CELL_V1_WIRE = bytes.fromhex("0207060001e240121a2b110c116312019412002d060000073a")
CELL_V0 = CellInfo(0x1234, 0x1A2B, 31, 0)
CELL_V0_WIRE = bytes.fromhex("0204121234121a2b111f1100")


def test_cell_info_on_the_wire() -> None:
    assert encode(CELL_V1.to_value()) == CELL_V1_WIRE
    assert encode(CELL_V0.to_value()) == CELL_V0_WIRE
    for cell, wire in ((CELL_V1, CELL_V1_WIRE), (CELL_V0, CELL_V0_WIRE)):
        assert CellInfo.from_value(decode_all(wire)) == cell
        assert CellInfo.from_value(decode_all(wire, typed=True)) == cell


def test_signal_quality_in_dbm() -> None:
    # 3GPP TS 27.007 §8.5: 0 is -113 dBm or less, 1 is -111, 2..30 are -109..-53, 31 is -51 or more
    assert [CellInfo(1, 1, q, 99).rssi_dbm for q in (0, 1, 2, 12, 30, 31)] == [
        -113,
        -111,
        -109,
        -89,
        -53,
        -51,
    ]
    assert CellInfo(1, 1, 99, 99).rssi_dbm is None


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "structure of 4 or 7"),
        ((1, 2, 3), "structure of 4 or 7"),
        ((1, 2, 3, 4, 5), "structure of 4 or 7"),
        (Typed(Tag.ARRAY, (1, 2, 3, 4)), "structure of 4 or 7"),
        ((1, 2, 32, 0), "signal_quality 32 is not 0..31 or 99"),
        ((1, 2, 255, 0), "signal_quality 255 is not 0..31 or 99"),
        ((1, 2, -1, 0), "signal_quality must be unsigned, got -1"),
        ((1, 2, 256, 0), "signal_quality must be unsigned, got 256"),
        ((0x10000, 2, 5, 0), "cell_id must be long-unsigned, got 65536"),  # version 0: 16 bits
        ((1, 0x10000, 5, 0), "location_id must be long-unsigned, got 65536"),
        ((1 << 32, 2, 5, 0, 404, 45, 1), "cell_id must be double-long-unsigned, got 4294967296"),
        ((1, 2, True, 0), "signal_quality must be unsigned, got True"),
        ((1, 2, b"\x05", 0), "signal_quality must be unsigned, got b'\\x05'"),
        ((1, 2, 5.0, 0), "signal_quality must be unsigned, got 5.0"),
        ((1, 2, 5, None, 404, 45, 1), "ber must be unsigned, got None"),
        (
            Typed(
                Tag.STRUCTURE,
                (
                    Typed(Tag.LONG_UNSIGNED, 1),
                    Typed(Tag.LONG_UNSIGNED, 2),
                    Typed(Tag.LONG_UNSIGNED, 5),  # signal_quality must be an unsigned
                    Typed(Tag.UNSIGNED, 0),
                ),
            ),
            "signal_quality must be unsigned, got long-unsigned",
        ),
    ],
)
def test_a_malformed_cell_info_is_the_meters_fault(value: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(message)):
        CellInfo.from_value(value)


def test_cell_info_checks_itself() -> None:
    with pytest.raises(LocalProtocolError, match="come together"):
        CellInfo(1, 2, 3, 4, mcc=404)
    with pytest.raises(LocalProtocolError, match="signal_quality 50"):
        CellInfo(1, 2, 50, 4)
    with pytest.raises(LocalProtocolError, match="cell_id must be long-unsigned, got 70000"):
        CellInfo(70000, 2, 3, 4)  # version 0
    assert CellInfo(70000, 2, 3, 4, 404, 45, 1).cell_id == 70000  # version 1: 32 bits
    assert CellInfo(1, 2, 3, 200).ber == 200  # a reserved <ber> code is kept


_U16, _U32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFF_FFFF)
_QUALITY = st.one_of(st.integers(0, 31), st.just(99))


@given(
    st.one_of(
        st.builds(CellInfo, _U16, _U16, _QUALITY, st.integers(0, 255)),
        st.builds(CellInfo, _U32, _U16, _QUALITY, st.integers(0, 255), _U16, _U16, _U32),
    )
)
def test_cell_info_round_trip(cell: CellInfo) -> None:
    wire = encode(cell.to_value())
    assert CellInfo.from_value(decode_all(wire)) == cell
    assert CellInfo.from_value(decode_all(wire, typed=True)) == cell


_ANY_VALUE = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.binary(max_size=4), st.text()
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=8), st.tuples(inner, inner, inner, inner)),
    max_leaves=20,
)


@given(_ANY_VALUE)
def test_any_decoded_value_is_a_cell_info_or_a_remote_error(value: object) -> None:
    try:
        cell = CellInfo.from_value(value)
    except RemoteProtocolError:
        return
    assert 0 <= cell.signal_quality <= 31 or cell.signal_quality == 99


def test_gurux_agrees_on_cell_info() -> None:
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo
    from gurux_dlms.objects import GXDLMSGSMDiagnostic
    from gurux_dlms.ValueEventArgs import ValueEventArgs

    settings = GXDLMSSettings(True, None)
    for version, ours in ((1, CELL_V1), (0, CELL_V0)):
        theirs = GXDLMSGSMDiagnostic()
        theirs.version = version
        info = theirs.cellInfo
        info.cellId, info.locationId = ours.cell_id, ours.location_id
        info.signalQuality, info.ber = ours.signal_quality, ours.ber
        if version:
            info.mobileCountryCode, info.mobileNetworkCode = ours.mcc, ours.mnc
            info.channelNumber = ours.channel_number
        # what gurux encodes, we decode the same
        encoded = theirs.getValue(settings, ValueEventArgs(settings, theirs, 6))
        assert CellInfo.from_value(decode_all(bytes(encoded.array()))) == ours
        # what we encode, gurux decodes the same
        decoded = _GXCommon.getData(settings, GXByteBuffer(encode(ours.to_value())), _GXDataInfo())
        back = GXDLMSGSMDiagnostic()
        back.version = version
        event = ValueEventArgs(settings, back, 6)
        event.value = decoded
        back.setValue(settings, event)
        got = back.cellInfo
        assert (got.cellId, got.locationId, got.signalQuality, got.ber) == (
            ours.cell_id,
            ours.location_id,
            ours.signal_quality,
            ours.ber,
        )
        if version:
            assert (got.mobileCountryCode, got.mobileNetworkCode, got.channelNumber) == (
                ours.mcc,
                ours.mnc,
                ours.channel_number,
            )
