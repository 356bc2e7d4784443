"""IS 15959 defaults and hesd's normalised vocabulary for vendor profiles.

A vendor profile (``adapters/profile.py``) that leaves a table out gets what IS 15959 (the Indian
DLMS/COSEM companion standard, Part 1 and the three-phase whole-current annex) prescribes; this
module holds those tables, and the two vocabularies every profile maps onto:

* ``QUANTITIES``: canonical names of physical quantities, the names the MDM sees. Each has the
  IS 15959 OBIS code and the representation a typical IS 15959 meter uses (interface class,
  A-XDR type, scaler), its DLMS unit, and what kind of quantity it is (``Measure``).
* ``EVENT_KINDS``: normalised event kinds; ``True`` marks a restoration (the end of a condition).

The event code table ``EVENT_CODES`` is the one of IS 15959 (event codes 1..12 voltage,
51..68 current, 101/102 power, 151..166 transaction, 201..206 other, 251 non-rollover,
301/302 control), as implemented by the public IS 15959 meter and HES code bases that
docs/vendors.md cites. Codes that differ between revisions and parts of the standard (21/22,
69/70, 83/84, 207/208) are left to vendor profiles.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "EVENT_CATEGORIES",
    "EVENT_CODES",
    "EVENT_KINDS",
    "OBJECTS",
    "PROFILES",
    "QUANTITIES",
    "SEVERITIES",
    "TIME_UNITS",
    "UNKNOWN_KIND",
    "Measure",
    "ProfileDefault",
    "QuantityDefault",
]


class Measure(enum.Enum):
    """What kind of quantity a canonical name is: how it is sampled and rounded."""

    INSTANT = "instant"  # sampled at the read: voltage, current, power, PF, frequency
    CUMULATIVE = "cumulative"  # register that only grows: energies (floor when scaled)
    BLOCK = "block"  # energy in the last completed load-profile block
    AVERAGE = "average"  # average over the last completed load-profile block
    DEMAND = "demand"  # maximum demand since the last billing reset, with capture time
    DURATION = "duration"  # cumulative time (power-on duration)
    COUNT = "count"  # a counter (tampers, billings)


@dataclass(frozen=True, slots=True)
class QuantityDefault:
    obis: str
    class_id: int  # 1 Data, 3 Register, 4 Extended register
    type: str  # A-XDR type name
    scaler: int
    unit: str  # DLMS unit symbol (protocols.dlms.cosem.Unit), "" = count / unitless
    measure: Measure


_I, _C, _B, _A = Measure.INSTANT, Measure.CUMULATIVE, Measure.BLOCK, Measure.AVERAGE
_LU, _DLU, _L, _DL = "long-unsigned", "double-long-unsigned", "long", "double-long"


def _q(
    obis: str, type_: str, scaler: int, unit: str, measure: Measure, *, class_id: int = 3
) -> QuantityDefault:
    return QuantityDefault(obis, class_id, type_, scaler, unit, measure)


QUANTITIES: Final = MappingProxyType(
    {
        "voltage_l1": _q("1.0.32.7.0.255", _LU, -2, "V", _I),
        "voltage_l2": _q("1.0.52.7.0.255", _LU, -2, "V", _I),
        "voltage_l3": _q("1.0.72.7.0.255", _LU, -2, "V", _I),
        "current_l1": _q("1.0.31.7.0.255", _LU, -2, "A", _I),
        "current_l2": _q("1.0.51.7.0.255", _LU, -2, "A", _I),
        "current_l3": _q("1.0.71.7.0.255", _LU, -2, "A", _I),
        "current_neutral": _q("1.0.91.7.0.255", _LU, -2, "A", _I),
        "power_factor_l1": _q("1.0.33.7.0.255", _L, -3, "", _I),
        "power_factor_l2": _q("1.0.53.7.0.255", _L, -3, "", _I),
        "power_factor_l3": _q("1.0.73.7.0.255", _L, -3, "", _I),
        "power_factor": _q("1.0.13.7.0.255", _L, -3, "", _I),
        "frequency": _q("1.0.14.7.0.255", _LU, -2, "Hz", _I),
        "active_power": _q("1.0.1.7.0.255", _DL, 0, "W", _I),
        "apparent_power": _q("1.0.9.7.0.255", _DLU, 0, "VA", _I),
        "reactive_power": _q("1.0.3.7.0.255", _DL, 0, "var", _I),
        "energy_active_import": _q("1.0.1.8.0.255", _DLU, 0, "Wh", _C),
        "energy_active_export": _q("1.0.2.8.0.255", _DLU, 0, "Wh", _C),
        "energy_apparent_import": _q("1.0.9.8.0.255", _DLU, 0, "VAh", _C),
        "energy_apparent_export": _q("1.0.10.8.0.255", _DLU, 0, "VAh", _C),
        "energy_reactive_lag": _q("1.0.5.8.0.255", _DLU, 0, "varh", _C),  # quadrant I
        "energy_reactive_lead": _q("1.0.8.8.0.255", _DLU, 0, "varh", _C),  # quadrant IV
        "demand_active_max": _q("1.0.1.6.0.255", _DLU, 0, "W", Measure.DEMAND, class_id=4),
        "demand_apparent_max": _q("1.0.9.6.0.255", _DLU, 0, "VA", Measure.DEMAND, class_id=4),
        "block_energy_active_import": _q("1.0.1.29.0.255", _DLU, 0, "Wh", _B),
        "block_energy_apparent_import": _q("1.0.9.29.0.255", _DLU, 0, "VAh", _B),
        "voltage_avg": _q("1.0.12.27.0.255", _LU, -2, "V", _A),
        "current_avg": _q("1.0.11.27.0.255", _LU, -2, "A", _A),
        "power_on_duration": _q("0.0.94.91.14.255", _DLU, 0, "min", Measure.DURATION),
        "tamper_count": _q("0.0.94.91.0.255", _LU, 0, "", Measure.COUNT, class_id=1),
        "billing_count": _q("0.0.0.1.0.255", _LU, 0, "", Measure.COUNT, class_id=1),
    }
)

# A duration may be reported in any of these DLMS units (seconds in each).
TIME_UNITS: Final = MappingProxyType({"s": 1, "min": 60, "h": 3600})

OBJECTS: Final = MappingProxyType(
    {
        "clock": "0.0.1.0.0.255",
        "logical_device_name": "0.0.42.0.0.255",
        "serial_number": "0.0.96.1.0.255",
        "manufacturer_name": "0.0.96.1.1.255",
        "meter_model": "0.0.96.1.2.255",  # IS 15959 has no model object: "device ID 3" here
        "firmware_version": "1.0.0.2.0.255",
        "nameplate": "0.0.94.91.10.255",
        "disconnect_control": "0.0.96.3.10.255",
        "limiter": "0.0.17.0.0.255",
        "image_transfer": "0.0.44.0.0.255",
        "push_setup": "0.0.25.9.0.255",
        # Blue Book 4.4.7: 0.0.43.0.e.255, one per association; IS 15959 lists e = 2 for the
        # meter reader (LLS) and e = 3 for the utility settings (HLS) association
        "security_setup": "0.0.43.0.3.255",
        "association": "0.0.40.0.0.255",  # Blue Book: 0.0.40.0.0.255 is "current association"
        # Not an IS 15959 object: the AMR profile status of IDIS and DSMR, the unsigned Data
        # object a load profile captures in its "status" column (OBIS 0.b.96.10.e.255 is a
        # "status register" in IEC 62056-6-1; e = 1 is the first load profile's)
        "profile_status": "0.0.96.10.1.255",
    }
)


@dataclass(frozen=True, slots=True)
class ProfileDefault:
    obis: str
    columns: tuple[str, ...]
    interval: int  # seconds; 0: captured on demand (instantaneous) or by schedule (billing)
    depth: int  # entries kept
    scaler_obis: str  # the IS 15959 scaler profile of this profile


_ENERGIES = (
    "energy_active_import",
    "energy_active_export",
    "energy_apparent_import",
    "energy_apparent_export",
)
PROFILES: Final = MappingProxyType(
    {
        "instantaneous": ProfileDefault(
            "1.0.94.91.0.255",
            (
                "clock",
                *("voltage_l1", "voltage_l2", "voltage_l3"),
                *("current_l1", "current_l2", "current_l3", "current_neutral"),
                *("power_factor_l1", "power_factor_l2", "power_factor_l3", "power_factor"),
                *("frequency", "apparent_power", "active_power", "reactive_power"),
                *_ENERGIES,
                *("energy_reactive_lag", "energy_reactive_lead"),
                *("demand_active_max", "demand_active_max.capture_time"),
                *("demand_apparent_max", "demand_apparent_max.capture_time"),
                *("power_on_duration", "tamper_count", "billing_count"),
            ),
            0,
            1,
            "1.0.94.91.3.255",
        ),
        "block_load": ProfileDefault(
            "1.0.99.1.0.255",
            (
                "clock",
                "current_avg",
                "voltage_avg",
                "block_energy_active_import",
                "block_energy_apparent_import",
            ),
            1800,
            35 * 48,
            "1.0.94.91.4.255",
        ),
        "daily_load": ProfileDefault(
            "1.0.99.2.0.255", ("clock", *_ENERGIES), 86400, 35, "1.0.94.91.5.255"
        ),
        "billing": ProfileDefault(
            "1.0.98.1.0.255",
            (
                "clock",
                "energy_active_import",
                "energy_reactive_lag",
                "energy_reactive_lead",
                "energy_apparent_import",
                *("demand_active_max", "demand_active_max.capture_time"),
                *("demand_apparent_max", "demand_apparent_max.capture_time"),
                "power_on_duration",
                "energy_active_export",
                "energy_apparent_export",
            ),
            0,
            12,
            "1.0.94.91.6.255",
        ),
    }
)

EVENT_CATEGORIES: Final = (
    "voltage",
    "current",
    "power",
    "transaction",
    "other",
    "non_rollover",
    "control",
)
# IS 15959: one event profile (0.0.99.98.n.255) and one "last event code" Data object
# (0.0.96.11.n.255) per category, n = 0..6 in the order above
EVENT_PROFILES: Final = MappingProxyType(
    {c: f"0.0.99.98.{n}.255" for n, c in enumerate(EVENT_CATEGORIES)}
)
EVENT_CODE_OBJECTS: Final = MappingProxyType(
    {c: f"0.0.96.11.{n}.255" for n, c in enumerate(EVENT_CATEGORIES)}
)
EVENT_DEPTHS: Final = MappingProxyType(
    {
        "voltage": 100,
        "current": 100,
        "power": 100,
        "transaction": 50,
        "other": 100,
        "non_rollover": 1,
        "control": 25,
    }
)
EVENT_SCALER_OBIS: Final = "1.0.94.91.7.255"
EVENT_SNAPSHOT: Final = (
    *("current_l1", "current_l2", "current_l3"),
    *("voltage_l1", "voltage_l2", "voltage_l3"),
    *("power_factor_l1", "power_factor_l2", "power_factor_l3"),
    "energy_active_import",
    "tamper_count",
)
SEVERITIES: Final = ("info", "minor", "major", "critical")

UNKNOWN_KIND: Final = "unknown"
_PAIRED = (
    *("voltage_missing_l1", "voltage_missing_l2", "voltage_missing_l3"),
    *("over_voltage", "low_voltage", "voltage_unbalance"),
    *("current_reverse_l1", "current_reverse_l2", "current_reverse_l3"),
    *("ct_open_l1", "ct_open_l2", "ct_open_l3"),
    *("current_unbalance", "current_bypass", "over_current", "earth_loading"),
    "high_neutral_current",
    *("magnet_tamper", "neutral_disturbance", "low_power_factor", "neutral_missing"),
    "module_removed",
)
_SINGLE = (
    *("clock_set", "demand_integration_period_set", "profile_capture_period_set"),
    *("billing_dates_set", "activity_calendar_set", "firmware_activated"),
    *("load_limit_set", "load_limit_enabled", "load_limit_disabled"),
    *("lls_secret_changed", "hls_key_changed", "firmware_key_changed", "global_key_changed"),
    *("eswf_changed", "md_reset", "cover_open"),
    *("load_switch_disconnected", "load_switch_connected", "power_failure"),
)
EVENT_KINDS: Final = MappingProxyType(
    {
        **{kind: False for kind in _SINGLE},
        "power_restored": True,
        **{kind: False for kind in _PAIRED},
        **{f"{kind}_restored": True for kind in _PAIRED},
        # an alert hesd cannot name: an ESW bit or an event code the vendor profile does not
        # map (adapters/alerts.py); never a kind of a profile's [event_codes]
        UNKNOWN_KIND: False,
    }
)


@dataclass(frozen=True, slots=True)
class EventCodeDefault:
    code: int
    name: str
    category: str
    kind: str
    severity: str


def _pair(
    code: int, name: str, category: str, kind: str, severity: str
) -> tuple[EventCodeDefault, EventCodeDefault]:
    return (
        EventCodeDefault(code, f"{name} - occurrence", category, kind, severity),
        EventCodeDefault(code + 1, f"{name} - restoration", category, f"{kind}_restored", "info"),
    )


def _one(code: int, name: str, category: str, kind: str, severity: str) -> EventCodeDefault:
    return EventCodeDefault(code, name, category, kind, severity)


_V, _CU, _T, _O = "voltage", "current", "transaction", "other"
EVENT_CODES: Final = (
    *_pair(1, "R phase voltage missing", _V, "voltage_missing_l1", "major"),
    *_pair(3, "Y phase voltage missing", _V, "voltage_missing_l2", "major"),
    *_pair(5, "B phase voltage missing", _V, "voltage_missing_l3", "major"),
    *_pair(7, "Over voltage in any phase", _V, "over_voltage", "major"),
    *_pair(9, "Low voltage in any phase", _V, "low_voltage", "minor"),
    *_pair(11, "Voltage unbalance", _V, "voltage_unbalance", "minor"),
    *_pair(51, "R phase current reverse", _CU, "current_reverse_l1", "major"),
    *_pair(53, "Y phase current reverse", _CU, "current_reverse_l2", "major"),
    *_pair(55, "B phase current reverse", _CU, "current_reverse_l3", "major"),
    *_pair(57, "R phase CT open", _CU, "ct_open_l1", "major"),
    *_pair(59, "Y phase CT open", _CU, "ct_open_l2", "major"),
    *_pair(61, "B phase CT open", _CU, "ct_open_l3", "major"),
    *_pair(63, "Current unbalance", _CU, "current_unbalance", "minor"),
    *_pair(65, "Current bypass", _CU, "current_bypass", "critical"),
    *_pair(67, "Over current in any phase", _CU, "over_current", "major"),
    _one(101, "Power failure - occurrence", "power", "power_failure", "major"),
    _one(102, "Power failure - restoration", "power", "power_restored", "info"),
    _one(151, "Real time clock - date and time", _T, "clock_set", "info"),
    _one(152, "Demand integration period", _T, "demand_integration_period_set", "info"),
    _one(153, "Profile capture period", _T, "profile_capture_period_set", "info"),
    _one(154, "Single-action schedule for billing dates", _T, "billing_dates_set", "info"),
    _one(155, "Activity calendar for time zones", _T, "activity_calendar_set", "info"),
    _one(157, "New firmware activated", _T, "firmware_activated", "minor"),
    _one(158, "Load limit (kW) set", _T, "load_limit_set", "info"),
    _one(159, "Enabled - load limit function", _T, "load_limit_enabled", "info"),
    _one(160, "Disabled - load limit function", _T, "load_limit_disabled", "info"),
    _one(161, "LLS secret (MR) change", _T, "lls_secret_changed", "minor"),
    _one(162, "HLS key (US) change", _T, "hls_key_changed", "minor"),
    _one(163, "HLS key (FW) change", _T, "firmware_key_changed", "minor"),
    _one(
        164, "Global key change (encryption and authentication)", _T, "global_key_changed", "minor"
    ),
    _one(165, "ESWF change", _T, "eswf_changed", "info"),
    _one(166, "MD reset", _T, "md_reset", "info"),
    *_pair(
        201, "Influence of permanent magnet or AC/DC electromagnet", _O, "magnet_tamper", "critical"
    ),
    *_pair(203, "Neutral disturbance - HF and DC", _O, "neutral_disturbance", "critical"),
    *_pair(205, "Very low PF", _O, "low_power_factor", "minor"),
    _one(251, "Meter cover opening - occurrence", "non_rollover", "cover_open", "critical"),
    _one(301, "Load switch status - disconnected", "control", "load_switch_disconnected", "minor"),
    _one(302, "Load switch status - connected", "control", "load_switch_connected", "info"),
)
