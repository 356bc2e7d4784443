"""The COSEM side of a vendor profile: which objects carry which quantities and events.

Read from the ``[objects]``, ``[quantities]``, ``[profiles]``, ``[events]`` and ``[event_codes]``
tables of a vendor profile (``adapters/profile.py`` reads the rest). Every table that is left out
takes its IS 15959 defaults (``adapters/is15959.py``); a table that is given is the vendor's
complete list (a ``[quantities]`` table names every quantity the meters have). Within one entry,
keys that are left out take the IS 15959 value of that entry.

Format reference: ``docs/vendors.md``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from adapters import is15959
from adapters.is15959 import Measure
from adapters.model import Event, Quality, Source
from adapters.schema import ConfigError, Table, format_value
from protocols.dlms.axdr import Tag
from protocols.dlms.cosem import Unit
from protocols.dlms.obis import ObisCode

__all__ = [
    "CAPTURE_TIME",
    "OPTIONAL_OBJECTS",
    "STATUS",
    "EventCode",
    "EventLog",
    "LoadProfile",
    "ProfileStatus",
    "Quantity",
    "StandardObjects",
    "read_event_log",
    "read_objects",
    "read_profiles",
    "read_quantities",
    "register_columns",
]

CAPTURE_TIME: Final = ".capture_time"  # column suffix: capture_time (attribute 5) of class 4
STATUS: Final = "status"  # column: the profile status (``[objects] profile_status``)
INTEGER_TYPES: Final = {  # the A-XDR types a register value may have (IEC 62056-6-2 §4.1.5)
    t.name.lower().replace("_", "-"): t
    for t in (
        Tag.INTEGER,
        Tag.LONG,
        Tag.DOUBLE_LONG,
        Tag.LONG64,
        Tag.UNSIGNED,
        Tag.LONG_UNSIGNED,
        Tag.DOUBLE_LONG_UNSIGNED,
        Tag.LONG64_UNSIGNED,
    )
}
UNITS: Final = {u.symbol: u for u in reversed(Unit)}  # first code of a symbol wins
CLASS_NAMES: Final = {1: "Data", 3: "Register", 4: "Extended register"}
# Standard objects that meters may lack, IS 15959 having no such object: none unless the profile
# names one ("" says none as well). The others always exist, at the IS 15959 code by default.
OPTIONAL_OBJECTS: Final = ("gsm_diagnostic", "image_activation")
PROFILE_NAMES: Final = tuple(is15959.PROFILES)


class ProfileStatus(enum.IntFlag):
    """The AMR profile status a load profile captures in its ``"status"`` column: what happened
    during the interval of each row (an unsigned Data object, ``[objects] profile_status``).

    The bits are those of the IDIS and DSMR P3 companion specifications ("AMR profile status
    code"); DLMS UA 1000-1 names the object (0.b.96.10.e.255, a status register), not its bits.
    Bits 4 and 6 are reserved and always 0.
    """

    CRITICAL_ERROR = 0x01  # b0 ERR: a serious error (hardware, checksum); set with DNV
    CLOCK_INVALID = 0x02  # b1 CIV: the clock's power reserve ran out, its time is invalid; with DNV
    DATA_NOT_VALID = 0x04  # b2 DNV: the entry is not for billing without further validation
    DAYLIGHT_SAVING = 0x08  # b3 DST: daylight saving time was active
    CLOCK_ADJUSTED = 0x20  # b5 CAD: the clock was adjusted (beyond the synchronisation limit)
    POWER_DOWN = 0x80  # b7 PDN: a total power outage during the interval


@dataclass(frozen=True, slots=True)
class StandardObjects:
    """OBIS codes of the standard objects (IS 15959 Part 1 defaults in ``is15959.OBJECTS``); an
    optional one (``OPTIONAL_OBJECTS``) is None where the meters have none."""

    clock: ObisCode
    logical_device_name: ObisCode
    serial_number: ObisCode
    manufacturer_name: ObisCode
    meter_model: ObisCode
    firmware_version: ObisCode
    nameplate: ObisCode
    disconnect_control: ObisCode
    limiter: ObisCode
    image_transfer: ObisCode
    push_setup: ObisCode
    security_setup: ObisCode
    association: ObisCode
    profile_status: ObisCode  # the AMR profile status (``ProfileStatus``) of "status" columns
    # Optional objects (``OPTIONAL_OBJECTS``): None when the meters have none.
    gsm_diagnostic: ObisCode | None  # GSM diagnostic (IC 47) of a cellular modem
    image_activation: ObisCode | None = None  # image activation scheduler (IC 22)


@dataclass(frozen=True, slots=True)
class Quantity:
    """How this vendor's meters expose one canonical quantity."""

    name: str  # canonical name (is15959.QUANTITIES)
    obis: ObisCode
    class_id: int  # 1 Data, 3 Register, 4 Extended register
    attribute: int  # the value attribute, 2 for all three classes
    scaler: int  # the scaler in the meter's scaler_unit: value = raw * 10**scaler
    unit: Unit  # the unit in the meter's scaler_unit
    type: Tag  # A-XDR type of the value
    measure: Measure

    def __post_init__(self) -> None:
        if self.class_id not in CLASS_NAMES:
            raise ValueError(f"{self.name}: class {self.class_id} is not 1, 3 or 4")
        if self.class_id == 1 and self.scaler != 0:  # Blue Book 4.3.1: Data has no scaler_unit
            raise ValueError(f"{self.name}: a Data object has no scaler")
        if self.type not in INTEGER_TYPES.values():
            raise ValueError(f"{self.name}: {self.type!r} is not an integer type")


@dataclass(frozen=True, slots=True)
class LoadProfile:
    """One profile generic object (Blue Book 4.3.6) and what it captures."""

    name: str  # instantaneous, block_load, daily_load, billing
    obis: ObisCode
    columns: tuple[str, ...]  # "clock", quantity names, "<quantity>.capture_time", "status"
    interval: int  # capture_period in seconds; 0 for instantaneous and billing
    depth: int  # profile_entries
    scaler_obis: ObisCode | None  # the IS 15959 scaler profile of this profile, if any

    def __post_init__(self) -> None:
        if not self.columns or self.columns[0] != "clock":
            raise ValueError(f"profile {self.name}: the first column must be the clock")
        if self.depth < 1:
            raise ValueError(f"profile {self.name}: depth {self.depth} < 1")
        if STATUS in self.columns and not self.interval:
            raise ValueError(f"profile {self.name}: a status column needs a capture period")


@dataclass(frozen=True, slots=True)
class EventCode:
    code: int  # long-unsigned, as the event profile reports it
    name: str  # the vendor's name for it
    category: str  # is15959.EVENT_CATEGORIES
    kind: str  # normalised kind, is15959.EVENT_KINDS
    severity: str  # is15959.SEVERITIES
    occurrence: bool  # False for a restoration (the end of a condition)

    def event(
        self,
        meter_id: str,
        timestamp: dt.datetime,
        source: Source,
        obis: str,
        quality: Quality,
        **more: Any,
    ) -> Event:
        """The normalised event this entry describes, logged at ``timestamp`` in ``obis``
        (``more``: the snapshot, an alert's ESW bit)."""
        return Event(
            meter_id=meter_id,
            kind=self.kind,
            category=self.category,
            severity=self.severity,
            occurrence=self.occurrence,
            code=self.code,
            name=self.name,
            timestamp=timestamp,
            source=source,
            obis=obis,
            quality=quality,
            **more,
        )


@dataclass(frozen=True, slots=True)
class EventLog:
    """The event profiles (one per category) and the vendor's event code table."""

    profiles: tuple[ObisCode, ...]  # indexed like is15959.EVENT_CATEGORIES
    code_objects: tuple[ObisCode, ...]  # "last event code" Data objects, same order
    depths: tuple[int, ...]  # entries kept per category, same order
    snapshot: tuple[str, ...]  # quantities captured with each event, after clock and code
    scaler_obis: ObisCode | None
    codes: tuple[EventCode, ...]

    def code(self, code: int) -> EventCode | None:
        for entry in self.codes:
            if entry.code == code:
                return entry
        return None

    def by_kind(self, kind: str) -> EventCode | None:
        """The lowest code of ``kind``, or None if this vendor's meters do not log it."""
        found = [entry for entry in self.codes if entry.kind == kind]
        return min(found, key=lambda e: e.code) if found else None


def register_columns(quantities: Mapping[str, Quantity], columns: Sequence[str]) -> tuple[str, ...]:
    """The columns that have a scaler_unit (registers and extended registers), in order: what
    an IS 15959 scaler profile holds for ``columns``; not the clock, the status, capture times
    or Data objects (Blue Book 4.3.1: Data has no scaler_unit)."""
    return tuple(
        c
        for c in columns
        if c not in ("clock", STATUS) and CAPTURE_TIME not in c and quantities[c].class_id != 1
    )


# -- readers ----------------------------------------------------------------------------------


class ObisRegistry:
    """Which key claimed which OBIS code: two objects of one profile may not share one."""

    __slots__ = ("_claims", "_source")

    def __init__(self, source: str) -> None:
        self._source = source
        self._claims: dict[ObisCode, str] = {}

    def claim(self, obis: ObisCode, key: str) -> None:
        other = self._claims.setdefault(obis, key)
        if other != key:
            raise ConfigError(self._source, key, f"{obis} is already used by {other}")


_OBIS_HELP: Final = 'an OBIS code such as "1.0.1.8.0.255"'


def read_obis(table: Table, key: str, default: str | None, registry: ObisRegistry) -> ObisCode:
    if default is None:
        text = table.string(key, describe=_OBIS_HELP)
    else:
        text = table.string(key, default=default, describe=_OBIS_HELP)
    try:
        code = ObisCode.parse(text)
    except ValueError:
        raise table.error(key, f"expected {_OBIS_HELP}, got {format_value(text)}") from None
    registry.claim(code, table.key_path(key))
    return code


def _optional_obis(table: Table, key: str, default: str, registry: ObisRegistry) -> ObisCode | None:
    if table.string(key, default=default, describe=f'{_OBIS_HELP} or ""') == "":
        return None
    return read_obis(table, key, default, registry)


def read_objects(doc: Table, registry: ObisRegistry) -> StandardObjects:
    table = doc.table("objects")
    codes = {
        f.name: read_obis(table, f.name, is15959.OBJECTS[f.name], registry)
        for f in fields(StandardObjects)
        if f.name not in OPTIONAL_OBJECTS
    }
    gsm_diagnostic = _optional_obis(table, "gsm_diagnostic", "", registry)
    image_activation = _optional_obis(table, "image_activation", "", registry)
    table.finish()
    return StandardObjects(
        **codes, gsm_diagnostic=gsm_diagnostic, image_activation=image_activation
    )


def _unit(table: Table, name: str, default: str) -> Unit:
    symbol = table.string("unit", default=default)
    unit = UNITS.get(symbol)
    expected = is15959.QUANTITIES[name].unit
    allowed = tuple(is15959.TIME_UNITS) if expected in is15959.TIME_UNITS else (expected,)
    if unit is None:
        hint = ""
        if symbol[:1] in "kM" and symbol[1:] in UNITS:
            hint = f': "{symbol}" is not a DLMS unit, use "{symbol[1:]}" with a scaler'
        raise table.error("unit", f'expected a DLMS unit symbol such as "{expected}"{hint}')
    if symbol not in allowed:
        shown = " or ".join(f'"{a}"' for a in allowed)
        raise table.error("unit", f'{name} is measured in {shown}, got "{symbol}"')
    return unit


def _read_quantity(name: str, table: Table, registry: ObisRegistry) -> Quantity:
    spec = is15959.QUANTITIES[name]
    obis = read_obis(table, "obis", spec.obis, registry)
    class_id = table.integer("class", lo=1, hi=4, default=spec.class_id)
    if class_id not in CLASS_NAMES:
        raise table.error(
            "class", f"expected 1 (Data), 3 (Register) or 4 (Extended register), got {class_id}"
        )
    if (spec.measure is Measure.DEMAND) != (class_id == 4):
        raise table.error(
            "class",
            "maximum demand, and only maximum demand, is an extended register (4): it has a "
            "capture time",
        )
    attribute = table.integer("attribute", lo=2, hi=2, default=2)
    scaler = table.integer("scaler", lo=-6, hi=6, default=spec.scaler if class_id != 1 else 0)
    if class_id == 1 and scaler != 0:
        raise table.error("scaler", "a Data object (class 1) has no scaler_unit; expected 0")
    unit = _unit(table, name, spec.unit)
    type_name = table.choice("type", tuple(INTEGER_TYPES), default=spec.type)
    table.finish()
    return Quantity(
        name, obis, class_id, attribute, scaler, unit, INTEGER_TYPES[type_name], spec.measure
    )


def read_quantities(doc: Table, registry: ObisRegistry) -> tuple[Quantity, ...]:
    if "quantities" not in doc:
        doc.table("quantities")  # consumed: absent means all of IS 15959
        return tuple(
            _read_quantity(name, Table(doc.source, {}, f"quantities.{name}"), registry)
            for name in is15959.QUANTITIES
        )
    outer = doc.table("quantities")
    names = list(outer.keys())
    for name in names:
        if name not in is15959.QUANTITIES:
            raise outer.error(
                name, "not a canonical quantity name (the list is in docs/vendors.md)"
            )
    return tuple(_read_quantity(n, outer.table(n), registry) for n in names)


def _check_columns(
    table: Table,
    key: str,
    columns: tuple[str, ...],
    quantities: Mapping[str, Quantity],
    *,
    clock: bool,
    status: bool = False,
) -> None:
    seen: set[str] = set()
    for index, column in enumerate(columns):
        where = f"{table.key_path(key)}[{index}]"
        name = column.removesuffix(CAPTURE_TIME)
        if (column == "clock" and clock) or (column == STATUS and status):
            pass
        elif column == STATUS and clock:
            raise ConfigError(
                table.source,
                where,
                '"status" (the profile status of each interval) is only for profiles captured '
                "every interval: block_load and daily_load",
            )
        elif name not in quantities:
            raise ConfigError(
                table.source, where, f'quantity "{name}" is not defined in [quantities]'
            )
        elif column != name and quantities[name].class_id != 4:
            raise ConfigError(
                table.source,
                where,
                f'"{name}" is not an extended register (class 4): it has no capture time',
            )
        if column in seen:
            raise ConfigError(table.source, where, f'"{column}" is listed twice')
        seen.add(column)


def _read_profile(
    name: str, table: Table, quantities: Mapping[str, Quantity], registry: ObisRegistry
) -> LoadProfile:
    spec = is15959.PROFILES[name]
    obis = read_obis(table, "obis", spec.obis, registry)
    columns = table.string_list(
        "columns", default=spec.columns, describe="column names", describe_item="a column name"
    )
    if not columns or columns[0] != "clock":
        raise table.error("columns", 'the first column must be "clock"')
    periodic = name in ("block_load", "daily_load")
    _check_columns(table, "columns", columns, quantities, clock=True, status=periodic)
    if name == "block_load":
        interval = table.integer("interval", lo=900, hi=1800, default=spec.interval)
        if interval not in (900, 1800):
            raise table.error("interval", f"expected 900 or 1800 (seconds), got {interval}")
    elif name == "daily_load":
        interval = table.integer("interval", lo=86400, hi=86400, default=spec.interval)
    else:
        interval = 0
    depth = table.integer("depth", lo=1, hi=100_000, default=spec.depth)
    scaler_obis = _optional_obis(table, "scaler_obis", spec.scaler_obis, registry)
    table.finish()
    return LoadProfile(name, obis, columns, interval, depth, scaler_obis)


def read_profiles(
    doc: Table, quantities: tuple[Quantity, ...], registry: ObisRegistry
) -> tuple[LoadProfile, ...]:
    by_name = {q.name: q for q in quantities}
    if "profiles" not in doc:
        doc.table("profiles")
        tables = {n: Table(doc.source, {}, f"profiles.{n}") for n in PROFILE_NAMES}
    else:
        outer = doc.table("profiles")
        names = list(outer.keys())
        for name in names:
            if name not in PROFILE_NAMES:
                expected = ", ".join(PROFILE_NAMES)
                raise outer.error(name, f"unknown profile (expected one of: {expected})")
        tables = {name: outer.table(name) for name in names}
    return tuple(_read_profile(n, t, by_name, registry) for n, t in tables.items())


def _category_obis(
    table: Table, key: str, defaults: Mapping[str, str], registry: ObisRegistry
) -> tuple[ObisCode, ...]:
    sub = table.table(key)
    codes = tuple(read_obis(sub, c, defaults[c], registry) for c in is15959.EVENT_CATEGORIES)
    sub.finish()
    return codes


_CODE_KEY = re.compile(r"0|[1-9][0-9]{0,4}")


def _read_code(outer: Table, key: str) -> EventCode:
    if _CODE_KEY.fullmatch(key) is None or int(key) > 0xFFFF:
        raise outer.error(key, "the key must be an event code 0..65535 in decimal")
    table = outer.table(key)
    name = table.string("name", pattern=r"[ -~]{1,80}", describe="1..80 printable ASCII characters")
    category = table.choice("category", is15959.EVENT_CATEGORIES)
    kind = table.string("kind", pattern=r"[a-z0-9_]{1,64}", describe="a normalised event kind")
    if kind not in is15959.EVENT_KINDS:
        raise table.error(
            "kind", f'"{kind}" is not a normalised event kind (the list is in docs/vendors.md)'
        )
    if kind == is15959.UNKNOWN_KIND:
        raise table.error(
            "kind", f'"{kind}" is what hesd calls an alert the profile does not map; name the kind'
        )
    severity = table.choice("severity", is15959.SEVERITIES)
    restoration = is15959.EVENT_KINDS[kind]
    occurrence = table.boolean("occurrence", default=not restoration)
    if occurrence == restoration:
        what = (
            "a restoration: occurrence must be false"
            if restoration
            else "not a restoration: occurrence must be true"
        )
        raise table.error("occurrence", f"{kind} is {what}")
    table.finish()
    return EventCode(int(key), name, category, kind, severity, occurrence)


def read_event_log(
    doc: Table, quantities: tuple[Quantity, ...], registry: ObisRegistry
) -> EventLog:
    table = doc.table("events")

    profiles = _category_obis(table, "profiles", is15959.EVENT_PROFILES, registry)
    code_objects = _category_obis(table, "code_objects", is15959.EVENT_CODE_OBJECTS, registry)
    depth_table = table.table("depth")
    depths = tuple(
        depth_table.integer(c, lo=1, hi=10_000, default=is15959.EVENT_DEPTHS[c])
        for c in is15959.EVENT_CATEGORIES
    )
    depth_table.finish()
    snapshot = table.string_list(
        "snapshot",
        default=is15959.EVENT_SNAPSHOT,
        describe="quantity names",
        describe_item="a quantity name",
    )
    _check_columns(table, "snapshot", snapshot, {q.name: q for q in quantities}, clock=False)
    scaler_obis = _optional_obis(table, "scaler_obis", is15959.EVENT_SCALER_OBIS, registry)
    table.finish()

    if "event_codes" not in doc:
        doc.table("event_codes")
        codes = tuple(
            EventCode(
                e.code, e.name, e.category, e.kind, e.severity, not is15959.EVENT_KINDS[e.kind]
            )
            for e in is15959.EVENT_CODES
        )
    else:
        outer = doc.table("event_codes")
        codes = tuple(_read_code(outer, key) for key in list(outer.keys()))
    return EventLog(
        profiles=profiles,
        code_objects=code_objects,
        depths=depths,
        snapshot=snapshot,
        scaler_obis=scaler_obis,
        codes=codes,
    )
