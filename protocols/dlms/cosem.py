"""COSEM interface classes hesd uses, units, scaler_unit, clock status, a cellular modem's
cell_info (Blue Book, IEC 62056-6-2).

``INTERFACE_CLASSES`` holds, for each class id, the version that IS 15959 meters implement (for
GSM diagnostic, which IS 15959 does not name: version 1, as gurux-dlms models it), and
that version's attributes (index, name as spelled in the Blue Book, A-XDR type or ``None`` for a
CHOICE, static or dynamic) and methods (index, name, parameter type).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import TypeVar

from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.obis import ObisCode
from protocols.errors import LocalProtocolError, RemoteProtocolError


@dataclass(frozen=True, slots=True)
class Attribute:
    index: int
    name: str
    type: Tag | None  # None: a CHOICE (any simple or structured type)
    static: bool = True  # False: "dyn." in the Blue Book, the meter changes it by itself


@dataclass(frozen=True, slots=True)
class Method:
    index: int
    name: str
    parameter: Tag | None = None  # None: a CHOICE


_T = TypeVar("_T", Attribute, Method)


@dataclass(frozen=True, slots=True)
class InterfaceClass:
    class_id: int
    name: str
    version: int
    attributes: tuple[Attribute, ...]
    methods: tuple[Method, ...] = ()

    def __post_init__(self) -> None:
        # Blue Book 4.1.2: attributes and methods are numbered from 1 without gaps, and
        # attribute 1 of every class is logical_name, an octet-string[6]
        for kind, items in (("attribute", self.attributes), ("method", self.methods)):
            indexes = [item.index for item in items]
            if indexes != list(range(1, len(items) + 1)):
                raise ValueError(f"class {self.class_id}: {kind} indexes {indexes} are not 1..n")
            names = [item.name for item in items]
            if len(set(names)) != len(names):
                raise ValueError(f"class {self.class_id}: duplicate {kind} names")
        if self.attributes[0] != Attribute(1, "logical_name", Tag.OCTET_STRING):
            raise ValueError(f"class {self.class_id}: attribute 1 must be logical_name")

    def attribute(self, name_or_index: str | int) -> Attribute:
        return _find(self, "attribute", self.attributes, name_or_index)

    def method(self, name_or_index: str | int) -> Method:
        return _find(self, "method", self.methods, name_or_index)


def _find(cls: InterfaceClass, kind: str, items: tuple[_T, ...], key: str | int) -> _T:
    for item in items:
        if (item.index if type(key) is int else item.name) == key:
            return item
    raise KeyError(f"{cls.name} (class {cls.class_id}) has no {kind} {key!r}")


_OCT, _STRUCT, _ARR = Tag.OCTET_STRING, Tag.STRUCTURE, Tag.ARRAY
LN = Attribute(1, "logical_name", _OCT)


def _dyn(index: int, name: str, type_: Tag | None) -> Attribute:
    return Attribute(index, name, type_, static=False)


_CLASSES = (
    InterfaceClass(1, "Data", 0, (LN, _dyn(2, "value", None))),
    InterfaceClass(
        3,
        "Register",
        0,
        (LN, _dyn(2, "value", None), Attribute(3, "scaler_unit", _STRUCT)),
        (Method(1, "reset", Tag.INTEGER),),
    ),
    InterfaceClass(
        4,
        "Extended register",
        0,
        (
            *(LN, _dyn(2, "value", None), Attribute(3, "scaler_unit", _STRUCT)),
            *(_dyn(4, "status", None), _dyn(5, "capture_time", _OCT)),  # capture_time: date-time
        ),
        (Method(1, "reset", Tag.INTEGER),),
    ),
    InterfaceClass(
        5,
        "Demand register",
        0,
        (
            *(LN, _dyn(2, "current_average_value", None), _dyn(3, "last_average_value", None)),
            *(Attribute(4, "scaler_unit", _STRUCT), _dyn(5, "status", None)),
            *(_dyn(6, "capture_time", _OCT), _dyn(7, "start_time_current", _OCT)),
            Attribute(8, "period", Tag.DOUBLE_LONG_UNSIGNED),
            Attribute(9, "number_of_periods", Tag.LONG_UNSIGNED),
        ),
        (Method(1, "reset", Tag.INTEGER), Method(2, "next_period", Tag.INTEGER)),
    ),
    InterfaceClass(
        7,
        "Profile generic",
        1,
        (
            *(LN, _dyn(2, "buffer", _ARR), Attribute(3, "capture_objects", _ARR)),
            Attribute(4, "capture_period", Tag.DOUBLE_LONG_UNSIGNED),
            *(Attribute(5, "sort_method", Tag.ENUM), Attribute(6, "sort_object", _STRUCT)),
            _dyn(7, "entries_in_use", Tag.DOUBLE_LONG_UNSIGNED),
            Attribute(8, "profile_entries", Tag.DOUBLE_LONG_UNSIGNED),
        ),
        (Method(1, "reset", Tag.INTEGER), Method(2, "capture", Tag.INTEGER)),
    ),
    InterfaceClass(
        8,
        "Clock",
        0,
        (
            *(LN, _dyn(2, "time", _OCT), Attribute(3, "time_zone", Tag.LONG)),
            *(_dyn(4, "status", Tag.UNSIGNED), Attribute(5, "daylight_savings_begin", _OCT)),
            Attribute(6, "daylight_savings_end", _OCT),
            Attribute(7, "daylight_savings_deviation", Tag.INTEGER),
            Attribute(8, "daylight_savings_enabled", Tag.BOOLEAN),
            Attribute(9, "clock_base", Tag.ENUM),
        ),
        (
            Method(1, "adjust_to_quarter", Tag.INTEGER),
            Method(2, "adjust_to_measuring_period", Tag.INTEGER),
            Method(3, "adjust_to_minute", Tag.INTEGER),
            Method(4, "adjust_to_preset_time", Tag.INTEGER),
            Method(5, "preset_adjusting_time", _STRUCT),
            Method(6, "shift_time", Tag.LONG),
        ),
    ),
    InterfaceClass(
        9,
        "Script table",
        0,
        (LN, Attribute(2, "scripts", _ARR)),
        (Method(1, "execute", Tag.LONG_UNSIGNED),),
    ),
    InterfaceClass(
        15,
        "Association LN",
        1,
        (
            *(
                LN,
                Attribute(2, "object_list", _ARR),
                Attribute(3, "associated_partners_id", _STRUCT),
            ),
            Attribute(4, "application_context_name", None),  # structure, or octet-string (OID)
            Attribute(5, "xDLMS_context_info", _STRUCT),
            Attribute(6, "authentication_mechanism_name", None),  # ditto
            *(Attribute(7, "secret", _OCT), _dyn(8, "association_status", Tag.ENUM)),
            Attribute(9, "security_setup_reference", _OCT),
        ),
        (
            Method(1, "reply_to_HLS_authentication", _OCT),
            Method(2, "change_HLS_secret", _OCT),
            *(Method(3, "add_object", _STRUCT), Method(4, "remove_object", _STRUCT)),
        ),
    ),
    InterfaceClass(
        18,
        "Image transfer",
        0,
        (
            *(LN, Attribute(2, "image_block_size", Tag.DOUBLE_LONG_UNSIGNED)),
            _dyn(3, "image_transferred_blocks_status", Tag.BIT_STRING),
            _dyn(4, "image_first_not_transferred_block_number", Tag.DOUBLE_LONG_UNSIGNED),
            Attribute(5, "image_transfer_enabled", Tag.BOOLEAN),
            *(_dyn(6, "image_transfer_status", Tag.ENUM), _dyn(7, "image_to_activate_info", _ARR)),
        ),
        (
            *(
                Method(1, "image_transfer_initiate", _STRUCT),
                Method(2, "image_block_transfer", _STRUCT),
            ),
            *(Method(3, "image_verify", Tag.INTEGER), Method(4, "image_activate", Tag.INTEGER)),
        ),
    ),
    InterfaceClass(  # Blue Book 4.5.7; the image activation scheduler is 0.0.15.0.2.255
        22,
        "Single action schedule",
        0,
        (
            *(LN, Attribute(2, "executed_script", _STRUCT), Attribute(3, "type", Tag.ENUM)),
            Attribute(4, "execution_time", _ARR),
        ),
    ),
    InterfaceClass(
        23,
        "IEC HDLC setup",
        1,
        (
            *(LN, Attribute(2, "comm_speed", Tag.ENUM)),
            Attribute(3, "window_size_transmit", Tag.UNSIGNED),
            Attribute(4, "window_size_receive", Tag.UNSIGNED),
            Attribute(5, "max_info_field_length_transmit", Tag.LONG_UNSIGNED),
            Attribute(6, "max_info_field_length_receive", Tag.LONG_UNSIGNED),
            Attribute(7, "inter_octet_time_out", Tag.LONG_UNSIGNED),
            Attribute(8, "inactivity_time_out", Tag.LONG_UNSIGNED),
            Attribute(9, "device_address", Tag.LONG_UNSIGNED),
        ),
    ),
    InterfaceClass(
        40,
        "Push setup",
        0,
        (
            *(LN, Attribute(2, "push_object_list", _ARR)),
            *(
                Attribute(3, "send_destination_and_method", _STRUCT),
                Attribute(4, "communication_window", _ARR),
            ),
            Attribute(5, "randomisation_start_interval", Tag.LONG_UNSIGNED),
            Attribute(6, "number_of_retries", Tag.UNSIGNED),
            Attribute(7, "repetition_delay", Tag.LONG_UNSIGNED),
        ),
        (Method(1, "push", Tag.INTEGER),),
    ),
    InterfaceClass(
        47,
        "GSM diagnostic",
        1,  # version 0's cell_info has 4 elements and a long-unsigned cell_ID (CellInfo)
        (
            *(LN, _dyn(2, "operator", Tag.VISIBLE_STRING), _dyn(3, "status", Tag.ENUM)),
            *(_dyn(4, "cs_attachment", Tag.ENUM), _dyn(5, "ps_status", Tag.ENUM)),
            *(_dyn(6, "cell_info", _STRUCT), _dyn(7, "adjacent_cells", _ARR)),
            _dyn(8, "capture_time", _OCT),  # date-time
        ),
    ),
    InterfaceClass(
        64,
        "Security setup",
        0,
        (
            *(
                LN,
                Attribute(2, "security_policy", Tag.ENUM),
                Attribute(3, "security_suite", Tag.ENUM),
            ),
            *(_dyn(4, "client_system_title", _OCT), Attribute(5, "server_system_title", _OCT)),
        ),
        (Method(1, "security_activate", Tag.ENUM), Method(2, "global_key_transfer", _ARR)),
    ),
    InterfaceClass(
        70,
        "Disconnect control",
        0,
        (
            *(LN, _dyn(2, "output_state", Tag.BOOLEAN), _dyn(3, "control_state", Tag.ENUM)),
            Attribute(4, "control_mode", Tag.ENUM),
        ),
        (Method(1, "remote_disconnect", Tag.INTEGER), Method(2, "remote_reconnect", Tag.INTEGER)),
    ),
    InterfaceClass(
        71,
        "Limiter",
        0,
        (
            *(LN, Attribute(2, "monitored_value", _STRUCT), _dyn(3, "threshold_active", None)),
            *(Attribute(4, "threshold_normal", None), Attribute(5, "threshold_emergency", None)),
            Attribute(6, "min_over_threshold_duration", Tag.DOUBLE_LONG_UNSIGNED),
            Attribute(7, "min_under_threshold_duration", Tag.DOUBLE_LONG_UNSIGNED),
            Attribute(8, "emergency_profile", _STRUCT),
            Attribute(9, "emergency_profile_group_id_list", _ARR),
            *(_dyn(10, "emergency_profile_active", Tag.BOOLEAN), Attribute(11, "actions", _STRUCT)),
        ),
    ),
)
INTERFACE_CLASSES: Mapping[int, InterfaceClass] = MappingProxyType(
    {cls.class_id: cls for cls in _CLASSES}
)


def interface_class(class_id: int) -> InterfaceClass:
    """The interface class ``class_id``; ``KeyError`` if hesd does not know it."""
    try:
        return INTERFACE_CLASSES[class_id]
    except KeyError:
        raise KeyError(f"interface class {class_id} is not one hesd knows") from None


def attribute(class_id: int, name_or_index: str | int) -> Attribute:
    """Attribute ``name_or_index`` of class ``class_id``; ``KeyError`` if there is none."""
    return interface_class(class_id).attribute(name_or_index)


# -- units, scaler_unit, clock status ------------------------------------------------------------


class Unit(enum.IntEnum):
    """Physical units of scaler_unit (Blue Book 4.3.2, "enumerated values for physical units").

    ``Unit.WATT.symbol == "W"``. Codes 58..59, 68..69, 73..127 and 175..253 are reserved.
    """

    symbol: str

    def __new__(cls, code: int, symbol: str) -> Unit:
        member = int.__new__(cls, code)
        member._value_ = code
        member.symbol = symbol
        return member

    YEAR = 1, "a"
    MONTH = 2, "mo"
    WEEK = 3, "wk"
    DAY = 4, "d"
    HOUR = 5, "h"
    MINUTE = 6, "min"
    SECOND = 7, "s"
    DEGREE = 8, "°"  # phase angle
    DEGREE_CELSIUS = 9, "°C"
    CURRENCY = 10, "currency"  # local currency
    METRE = 11, "m"
    METRE_PER_SECOND = 12, "m/s"
    CUBIC_METRE = 13, "m³"
    CUBIC_METRE_CORRECTED = 14, "m³"
    CUBIC_METRE_PER_HOUR = 15, "m³/h"
    CUBIC_METRE_PER_HOUR_CORRECTED = 16, "m³/h"
    CUBIC_METRE_PER_DAY = 17, "m³/d"
    CUBIC_METRE_PER_DAY_CORRECTED = 18, "m³/d"
    LITRE = 19, "l"
    KILOGRAM = 20, "kg"
    NEWTON = 21, "N"
    NEWTON_METRE = 22, "Nm"
    PASCAL = 23, "Pa"
    BAR = 24, "bar"
    JOULE = 25, "J"
    JOULE_PER_HOUR = 26, "J/h"
    WATT = 27, "W"
    VOLT_AMPERE = 28, "VA"
    VAR = 29, "var"
    WATT_HOUR = 30, "Wh"
    VOLT_AMPERE_HOUR = 31, "VAh"
    VAR_HOUR = 32, "varh"
    AMPERE = 33, "A"
    COULOMB = 34, "C"
    VOLT = 35, "V"
    VOLT_PER_METRE = 36, "V/m"
    FARAD = 37, "F"
    OHM = 38, "Ω"
    OHM_METRE = 39, "Ωm²/m"  # resistivity
    WEBER = 40, "Wb"
    TESLA = 41, "T"
    AMPERE_PER_METRE = 42, "A/m"
    HENRY = 43, "H"
    HERTZ = 44, "Hz"
    PER_WATT_HOUR = 45, "1/(Wh)"  # active energy meter constant
    PER_VAR_HOUR = 46, "1/(varh)"  # reactive energy meter constant
    PER_VOLT_AMPERE_HOUR = 47, "1/(VAh)"  # apparent energy meter constant
    VOLT_SQUARED_HOUR = 48, "V²h"
    AMPERE_SQUARED_HOUR = 49, "A²h"
    KILOGRAM_PER_SECOND = 50, "kg/s"
    SIEMENS = 51, "S"
    KELVIN = 52, "K"
    PER_VOLT_SQUARED_HOUR = 53, "1/(V²h)"
    PER_AMPERE_SQUARED_HOUR = 54, "1/(A²h)"
    PER_CUBIC_METRE = 55, "1/m³"  # volume meter constant
    PERCENT = 56, "%"
    AMPERE_HOUR = 57, "Ah"
    WATT_HOUR_PER_CUBIC_METRE = 60, "Wh/m³"
    JOULE_PER_CUBIC_METRE = 61, "J/m³"  # calorific value, Wobbe index
    MOLE_PERCENT = 62, "Mol %"
    GRAM_PER_CUBIC_METRE = 63, "g/m³"
    PASCAL_SECOND = 64, "Pa s"
    JOULE_PER_KILOGRAM = 65, "J/kg"
    GRAM_PER_SQUARE_CENTIMETRE = 66, "g/cm²"
    ATMOSPHERE = 67, "atm"
    DECIBEL_MILLIWATT = 70, "dBm"
    DECIBEL_MICROVOLT = 71, "dBµV"
    DECIBEL = 72, "dB"
    INCH = 128, "in"
    FOOT = 129, "ft"
    POUND = 130, "lb"
    DEGREE_FAHRENHEIT = 131, "°F"
    DEGREE_RANKINE = 132, "°R"
    SQUARE_INCH = 133, "in²"
    SQUARE_FOOT = 134, "ft²"
    ACRE = 135, "ac"
    CUBIC_INCH = 136, "in³"
    CUBIC_FOOT = 137, "ft³"
    ACRE_FOOT = 138, "ac-ft"
    GALLON_IMPERIAL = 139, "gal (imp)"
    GALLON_US = 140, "gal (US)"
    POUND_FORCE = 141, "lbf"
    POUND_FORCE_PER_SQUARE_INCH = 142, "psi"
    POUND_PER_CUBIC_FOOT = 143, "lb/ft³"
    POUND_PER_FOOT_SECOND = 144, "lb/(ft s)"
    SQUARE_FOOT_PER_SECOND = 145, "ft²/s"
    BRITISH_THERMAL_UNIT = 146, "Btu"
    THERM_EU = 147, "thm (EU)"
    THERM_US = 148, "thm (US)"
    BTU_PER_POUND = 149, "Btu/lb"
    BTU_PER_CUBIC_FOOT = 150, "Btu/ft³"
    CUBIC_FEET = 151, "ft³"
    FOOT_PER_SECOND = 152, "ft/s"
    CUBIC_FOOT_PER_SECOND = 153, "ft³/s"
    CUBIC_FOOT_PER_MINUTE = 154, "ft³/min"
    CUBIC_FOOT_PER_HOUR = 155, "ft³/h"
    CUBIC_FOOT_PER_DAY = 156, "ft³/d"
    ACRE_FOOT_PER_SECOND = 157, "ac-ft/s"
    ACRE_FOOT_PER_MINUTE = 158, "ac-ft/min"
    ACRE_FOOT_PER_HOUR = 159, "ac-ft/h"
    ACRE_FOOT_PER_DAY = 160, "ac-ft/d"
    IMPERIAL_GALLON = 161, "gal (imp)"
    IMPERIAL_GALLON_PER_SECOND = 162, "gal (imp)/s"
    IMPERIAL_GALLON_PER_MINUTE = 163, "gal (imp)/min"
    IMPERIAL_GALLON_PER_HOUR = 164, "gal (imp)/h"
    IMPERIAL_GALLON_PER_DAY = 165, "gal (imp)/d"
    US_GALLON = 166, "gal (US)"
    US_GALLON_PER_SECOND = 167, "gal (US)/s"
    US_GALLON_PER_MINUTE = 168, "gal (US)/min"
    US_GALLON_PER_HOUR = 169, "gal (US)/h"
    US_GALLON_PER_DAY = 170, "gal (US)/d"
    BTU_PER_SECOND = 171, "Btu/s"
    BTU_PER_MINUTE = 172, "Btu/min"
    BTU_PER_HOUR = 173, "Btu/h"
    BTU_PER_DAY = 174, "Btu/d"
    OTHER = 254, "other"  # other unit
    COUNT = 255, ""  # no unit, unitless, count


_UNITS: Mapping[int, Unit] = {int(u): u for u in Unit}
_POW10: list[int] = [10**k for k in range(129)]


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    """Register scaler_unit (Blue Book 4.3.2): structure {scaler integer, unit enum}.

    ``unit`` is a ``Unit`` when the code is known, else the raw code (a reserved or vendor code
    is the meter's business, not a reason to drop the reading).
    """

    scaler: int
    unit: Unit | int

    def __post_init__(self) -> None:
        # Blue Book 4.3.2: scaler is an integer (-128..127), unit an enum (0..255)
        if type(self.scaler) is not int or not -128 <= self.scaler <= 127:
            raise LocalProtocolError(f"scaler {self.scaler!r} is not an integer -128..127")
        if (
            not isinstance(self.unit, int)
            or isinstance(self.unit, bool)
            or not 0 <= self.unit <= 255
        ):
            raise LocalProtocolError(f"unit {self.unit!r} is not an enum 0..255")
        object.__setattr__(self, "unit", _UNITS.get(self.unit, int(self.unit)))

    @classmethod
    def from_value(cls, value: object) -> ScalerUnit:
        """From a decoded scaler_unit, plain ``(scaler, unit)`` or typed; RemoteProtocolError if
        it is not a structure of two integers in range."""
        if isinstance(value, Typed):
            value = value.value
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise RemoteProtocolError(f"scaler_unit must be a structure of 2, got {value!r}")
        scaler, unit = (v.value if isinstance(v, Typed) else v for v in value)
        if not isinstance(scaler, int) or not isinstance(unit, int):
            raise RemoteProtocolError(f"scaler_unit must hold two integers, got {value!r}")
        try:
            return cls(scaler, unit)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(f"scaler_unit: {exc}") from None

    def to_value(self) -> Typed:
        return Typed(Tag.STRUCTURE, (Typed(Tag.INTEGER, self.scaler), Typed(Tag.ENUM, self.unit)))

    @property
    def symbol(self) -> str:
        return self.unit.symbol if isinstance(self.unit, Unit) else f"unit {self.unit}"

    def apply(self, raw: int | float) -> float:
        """``raw * 10**scaler`` as a float, the nearest double to the exact decimal value.

        A negative scaler divides by the exact power of ten (``1234`` with scaler -3 gives
        ``1.234``, not ``1.2340000000000002``). Use ``apply_decimal`` where every digit counts.
        RemoteProtocolError if the meter's value is not a number.
        """
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise RemoteProtocolError(f"register value {raw!r} is not a number")
        if self.scaler >= 0:
            return float(raw * _POW10[self.scaler])
        return raw / _POW10[-self.scaler]

    def apply_decimal(self, raw: int | float) -> Decimal:
        """``raw * 10**scaler`` as an exact Decimal (a float raw is taken at its shortest repr)."""
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise RemoteProtocolError(f"register value {raw!r} is not a number")
        return (Decimal(raw) if isinstance(raw, int) else Decimal(repr(raw))).scaleb(self.scaler)


# GSM diagnostic (IC 47) cell_info, Blue Book 4.7: the A-XDR types of its elements. Version 1
# (gurux-dlms GXDLMSGSMDiagnostic, version 1; the OSGP DLMS simulator's GsmDiagnostic) has seven;
# version 0 has the first four, with a long-unsigned cell_ID.
_CELL_INFO: tuple[tuple[str, Tag], ...] = (
    ("cell_id", Tag.DOUBLE_LONG_UNSIGNED),
    ("location_id", Tag.LONG_UNSIGNED),
    ("signal_quality", Tag.UNSIGNED),
    ("ber", Tag.UNSIGNED),
    ("mcc", Tag.LONG_UNSIGNED),
    ("mnc", Tag.LONG_UNSIGNED),
    ("channel_number", Tag.DOUBLE_LONG_UNSIGNED),
)
_CELL_INFO_V0: tuple[tuple[str, Tag], ...] = (
    ("cell_id", Tag.LONG_UNSIGNED),
    *_CELL_INFO[1:4],
)
_UNSIGNED_MAX = {
    Tag.UNSIGNED: 0xFF,
    Tag.LONG_UNSIGNED: 0xFFFF,
    Tag.DOUBLE_LONG_UNSIGNED: 0xFFFF_FFFF,
}
SIGNAL_UNKNOWN = 99  # 3GPP TS 27.007 §8.5 <rssi>: not known or not detectable


def _name(tag: Tag) -> str:
    return tag.name.lower().replace("_", "-")  # as the Blue Book spells it


@dataclass(frozen=True, slots=True)
class CellInfo:
    """The serving cell of a cellular modem: GSM diagnostic (IC 47) attribute 6, cell_info.

    ``signal_quality`` is the ``<rssi>`` of 3GPP TS 27.007 §8.5 (``AT+CSQ``), as the Blue Book
    takes it: 0 is -113 dBm or less, n is -113 + 2n dBm, 31 is -51 dBm or more, 99 is not known.
    ``ber`` is the ``<ber>`` of the same clause (RXQUAL 0..7 of 3GPP TS 45.008 §8.2.4, 99 not
    known); another code is kept, not refused (it costs the reading nothing). ``mcc``, ``mnc``
    and ``channel_number`` are None for a version 0 object, which does not have them.
    """

    cell_id: int
    location_id: int
    signal_quality: int
    ber: int
    mcc: int | None = None
    mnc: int | None = None
    channel_number: int | None = None

    def __post_init__(self) -> None:
        version_1 = (self.mcc, self.mnc, self.channel_number)
        if None in version_1 and version_1 != (None, None, None):
            raise LocalProtocolError("cell_info: mcc, mnc and channel_number come together")
        for name, tag in _CELL_INFO_V0 if self.mcc is None else _CELL_INFO:
            number = getattr(self, name)
            # Blue Book 4.7 (GSM diagnostic): each element is an unsigned of the width given
            if type(number) is not int or not 0 <= number <= _UNSIGNED_MAX[tag]:
                raise LocalProtocolError(f"cell_info: {name} must be {_name(tag)}, got {number!r}")
        # 3GPP TS 27.007 §8.5: <rssi> 0..31, or 99
        if not (0 <= self.signal_quality <= 31 or self.signal_quality == SIGNAL_UNKNOWN):
            raise LocalProtocolError(
                f"cell_info: signal_quality {self.signal_quality} is not 0..31 or 99"
            )

    @property
    def rssi_dbm(self) -> int | None:
        """The received signal strength in dBm (-113..-51, each end meaning "or beyond"), or
        None when the modem does not know it."""
        if self.signal_quality == SIGNAL_UNKNOWN:
            return None
        return -113 + 2 * self.signal_quality

    @classmethod
    def from_value(cls, value: object) -> CellInfo:
        """From a decoded cell_info, plain or typed; RemoteProtocolError if it is not a
        structure of 4 or 7 unsigned integers of the widths and ranges above."""
        if isinstance(value, Typed):
            value = value.value if value.tag == Tag.STRUCTURE else None
        if not isinstance(value, tuple | list) or len(value) not in (4, 7):
            shown = repr(value)[:80]
            raise RemoteProtocolError(f"cell_info must be a structure of 4 or 7, got {shown}")
        layout = _CELL_INFO if len(value) == 7 else _CELL_INFO_V0
        numbers: list[int] = []
        for (name, tag), element in zip(layout, value, strict=True):
            number = element
            if isinstance(element, Typed):
                if element.tag != tag:
                    raise RemoteProtocolError(
                        f"cell_info: {name} must be {_name(tag)}, got {_name(element.tag)}"
                    )
                number = element.value
            if type(number) is not int or not 0 <= number <= _UNSIGNED_MAX[tag]:
                raise RemoteProtocolError(
                    f"cell_info: {name} must be {_name(tag)}, got {repr(number)[:40]}"
                )
            numbers.append(number)
        try:
            return cls(*numbers)
        except LocalProtocolError as exc:
            raise RemoteProtocolError(str(exc)) from None

    def to_value(self) -> Typed:
        """The structure of a version 1 object, or of version 0 without mcc."""
        layout = _CELL_INFO_V0 if self.mcc is None else _CELL_INFO
        return Typed(Tag.STRUCTURE, tuple(Typed(t, getattr(self, n)) for n, t in layout))


class ClockStatus(enum.IntFlag):
    """The clock_status octet of a date-time (Blue Book 4.1.6.1); bits 4..6 are reserved."""

    INVALID_VALUE = 0x01
    DOUBTFUL_VALUE = 0x02
    DIFFERENT_CLOCK_BASE = 0x04
    INVALID_CLOCK_STATUS = 0x08
    DAYLIGHT_SAVING_ACTIVE = 0x80


def likely_class(obis: ObisCode) -> int:
    """The interface class an object with this logical name most likely has (Blue Book 7.x,
    IS 15959 object lists), for reading by OBIS alone; a caller who knows says so instead."""
    a, b, c, d, e, _f = obis.a, obis.b, obis.c, obis.d, obis.e, obis.f
    fixed = {
        (0, 0, 1, 0, 0): 8,  # clock
        (0, 0, 96, 3, 10): 70,  # disconnect control
        (0, 0, 17, 0, 0): 71,  # limiter
        (0, 0, 44, 0, 0): 18,  # image transfer
        (0, 0, 15, 0, 2): 22,  # image activation scheduler (single action schedule)
        (0, 0, 25, 9, 0): 40,  # push setup
        (0, 0, 25, 6, 0): 47,  # GSM diagnostic
    }
    if (a, b, c, d, e) in fixed:
        return fixed[(a, b, c, d, e)]
    if (a, b, c, d) == (0, 0, 40, 0):
        return 15  # association LN
    if (a, b, c, d) == (0, 0, 43, 0):
        return 64  # security setup
    if c in (98, 99) or ((c, d) == (94, 91) and e in (0, 3, 4, 5, 6, 10)):
        return 7  # profile generic (incl. IS 15959 instantaneous, scaler and nameplate profiles)
    if a == 1 and c not in (0, 96) and d in (6,):
        return 4  # maximum demand: extended register with capture time
    if a == 1 and c not in (0, 96):
        return 3  # register
    return 1  # data
