"""The COSEM objects a simulated meter of one vendor holds, built once per vendor profile.

``vendor_tables(profile)`` maps every logical name of the profile to an ``ObjectDef`` (what kind
of object it is and which quantity, profile or event category it serves), and precomputes what
all meters of the vendor share: capture objects of the profiles, the association object list per
access level, which association has which level. Meters keep only their own small state.

Access levels follow the IS 15959 associations: a public client (no security) reads the clock,
the logical device name, the serial number, the firmware version and the association object; a
meter reader (LLS) reads everything; the utility settings client (HLS) reads, writes and invokes
everything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from adapters.cosem_map import CAPTURE_TIME, STATUS, LoadProfile, Quantity, register_columns
from adapters.is15959 import EVENT_CATEGORIES
from adapters.profile import VendorProfile
from hesd.sim.events import TAMPER_KINDS
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.cosem import INTERFACE_CLASSES
from protocols.dlms.obis import ObisCode

__all__ = ["PUBLIC", "READER", "UTILITY", "Kind", "ObjectDef", "VendorTables", "vendor_tables"]

PUBLIC, READER, UTILITY = 0, 1, 2  # access levels
_LEVELS: Final = {"none": PUBLIC, "lls": READER, "hls-gmac": UTILITY}
DISCONNECT_SCRIPT: Final = ObisCode(0, 0, 10, 0, 106)  # Blue Book: disconnect control script table


class Kind(enum.Enum):
    CLOCK = "clock"
    LOGICAL_DEVICE_NAME = "logical_device_name"
    SERIAL_NUMBER = "serial_number"
    MANUFACTURER_NAME = "manufacturer_name"
    METER_MODEL = "meter_model"
    FIRMWARE_VERSION = "firmware_version"
    QUANTITY = "quantity"  # Data, Register or Extended register of one quantity
    LOAD_PROFILE = "load_profile"
    SCALER_PROFILE = "scaler_profile"
    EVENT_PROFILE = "event_profile"
    EVENT_SCALER_PROFILE = "event_scaler_profile"
    EVENT_CODE = "event_code"  # last event code of one category
    PROFILE_STATUS = "profile_status"  # AMR profile status, for profiles with a status column
    NAMEPLATE = "nameplate"
    DISCONNECT_CONTROL = "disconnect_control"
    LIMITER = "limiter"
    IMAGE_TRANSFER = "image_transfer"
    PUSH_SETUP = "push_setup"
    SECURITY_SETUP = "security_setup"
    ASSOCIATION = "association"
    GSM_DIAGNOSTIC = "gsm_diagnostic"  # only if the profile names one
    IMAGE_ACTIVATION = "image_activation"  # only if the profile names one


_PUBLIC_KINDS: Final = frozenset(
    {
        Kind.CLOCK,
        Kind.LOGICAL_DEVICE_NAME,
        Kind.SERIAL_NUMBER,
        Kind.FIRMWARE_VERSION,
        Kind.ASSOCIATION,
    }
)
_STANDARD: Final = (
    Kind.CLOCK,
    Kind.LOGICAL_DEVICE_NAME,
    Kind.SERIAL_NUMBER,
    Kind.MANUFACTURER_NAME,
    Kind.METER_MODEL,
    Kind.FIRMWARE_VERSION,
    Kind.NAMEPLATE,
    Kind.DISCONNECT_CONTROL,
    Kind.LIMITER,
    Kind.IMAGE_TRANSFER,
    Kind.PUSH_SETUP,
    Kind.SECURITY_SETUP,
    Kind.ASSOCIATION,
)
_CLASS_OF: Final = {
    Kind.CLOCK: 8,
    Kind.LOAD_PROFILE: 7,
    Kind.SCALER_PROFILE: 7,
    Kind.EVENT_PROFILE: 7,
    Kind.EVENT_SCALER_PROFILE: 7,
    Kind.NAMEPLATE: 7,
    Kind.DISCONNECT_CONTROL: 70,
    Kind.LIMITER: 71,
    Kind.IMAGE_TRANSFER: 18,
    Kind.PUSH_SETUP: 40,
    Kind.SECURITY_SETUP: 64,
    Kind.ASSOCIATION: 15,
    Kind.GSM_DIAGNOSTIC: 47,
    Kind.IMAGE_ACTIVATION: 22,
}


@dataclass(frozen=True, slots=True)
class ObjectDef:
    kind: Kind
    class_id: int
    obis: ObisCode
    ref: str = ""  # quantity, profile or event category name
    index: int = 0  # event category index

    @property
    def public(self) -> bool:
        return self.kind in _PUBLIC_KINDS


def capture_object(class_id: int, obis: ObisCode, attribute: int) -> Typed:
    # Blue Book 4.3.6: capture_object_definition ::= structure { class_id long-unsigned,
    # logical_name octet-string, attribute_index integer, data_index long-unsigned }
    return Typed(
        Tag.STRUCTURE,
        (
            Typed(Tag.LONG_UNSIGNED, class_id),
            Typed(Tag.OCTET_STRING, obis.to_bytes()),
            Typed(Tag.INTEGER, attribute),
            Typed(Tag.LONG_UNSIGNED, 0),
        ),
    )


@dataclass(frozen=True, slots=True)
class VendorTables:
    """What all meters of one vendor share."""

    profile: VendorProfile
    objects: dict[ObisCode, ObjectDef]
    quantities: dict[str, Quantity]
    levels: dict[str, int]  # association name -> access level
    profiles: dict[str, LoadProfile]
    block_interval: int  # seconds: block load period and demand integration period
    capture: dict[str, tuple[Typed, ...]]  # capture objects: profile name, "event:<category>",
    # "scaler:<profile>" or "nameplate"
    scaler_columns: dict[str, tuple[str, ...]]  # register columns of each scaler profile
    object_lists: tuple[Typed, ...]  # association object_list per access level
    push_objects: tuple[Typed, ...]  # push_object_list
    category_index: dict[str, int]  # event category -> index in EVENT_CATEGORIES
    tamper_codes: frozenset[int]  # event codes that count as tampers

    def nameplate_columns(self) -> tuple[tuple[Kind, ObisCode], ...]:
        return nameplate_columns(self.profile)

    @property
    def limiter_monitored(self) -> Quantity | None:
        """What the limiter (IC 71) monitors: active power, if the vendor's meters have it."""
        return self.quantities.get("active_power")


def nameplate_columns(profile: VendorProfile) -> tuple[tuple[Kind, ObisCode], ...]:
    objects = profile.objects
    return (
        (Kind.SERIAL_NUMBER, objects.serial_number),
        (Kind.MANUFACTURER_NAME, objects.manufacturer_name),
        (Kind.FIRMWARE_VERSION, objects.firmware_version),
        (Kind.METER_MODEL, objects.meter_model),
    )


def _column_capture(profile: VendorProfile, quantities: dict[str, Quantity], column: str) -> Typed:
    """The capture object definition of a profile column."""
    if column == "clock":
        return capture_object(8, profile.objects.clock, 2)
    if column == STATUS:
        return capture_object(1, profile.objects.profile_status, 2)
    name = column.removesuffix(CAPTURE_TIME)
    quantity = quantities[name]
    return capture_object(quantity.class_id, quantity.obis, 5 if column != name else 2)


_BUILT: dict[int, VendorTables] = {}  # by id() of the profile, which its tables keep alive


def vendor_tables(profile: VendorProfile) -> VendorTables:
    """The shared tables of ``profile``, built once per profile object (a reloaded profile
    gets new tables; hashing a whole profile for every meter would cost more than building)."""
    tables = _BUILT.get(id(profile))
    if tables is None or tables.profile is not profile:
        tables = _BUILT[id(profile)] = _build(profile)
    return tables


def _build(profile: VendorProfile) -> VendorTables:
    objs = profile.objects
    objects: dict[ObisCode, ObjectDef] = {}

    def add(kind: Kind, obis: ObisCode, ref: str = "", index: int = 0, class_id: int = 0) -> None:
        objects[obis] = ObjectDef(kind, class_id or _CLASS_OF.get(kind, 1), obis, ref, index)

    for kind in _STANDARD:
        add(kind, getattr(objs, kind.value))
    if objs.gsm_diagnostic is not None:
        add(Kind.GSM_DIAGNOSTIC, objs.gsm_diagnostic)
    if objs.image_activation is not None:
        add(Kind.IMAGE_ACTIVATION, objs.image_activation)
    quantities = {q.name: q for q in profile.quantities}
    for quantity in profile.quantities:
        add(Kind.QUANTITY, quantity.obis, quantity.name, class_id=quantity.class_id)
    capture: dict[str, tuple[Typed, ...]] = {}
    scaler_columns: dict[str, tuple[str, ...]] = {}
    for load in profile.profiles:
        add(Kind.LOAD_PROFILE, load.obis, load.name)
        if STATUS in load.columns:  # the meter has the object when a profile captures it
            add(Kind.PROFILE_STATUS, objs.profile_status)
        capture[load.name] = tuple(_column_capture(profile, quantities, c) for c in load.columns)
        if load.scaler_obis is not None:
            add(Kind.SCALER_PROFILE, load.scaler_obis, load.name)
            scaler_columns[load.name] = register_columns(quantities, load.columns)
    events = profile.events
    snapshot = tuple(_column_capture(profile, quantities, c) for c in events.snapshot)
    for index, category in enumerate(EVENT_CATEGORIES):
        add(Kind.EVENT_PROFILE, events.profiles[index], category, index)
        add(Kind.EVENT_CODE, events.code_objects[index], category, index)
        capture[f"event:{category}"] = (
            capture_object(8, objs.clock, 2),
            capture_object(1, events.code_objects[index], 2),
            *snapshot,
        )
    if events.scaler_obis is not None:
        add(Kind.EVENT_SCALER_PROFILE, events.scaler_obis, "events")
        scaler_columns["events"] = register_columns(quantities, events.snapshot)
    capture["nameplate"] = tuple(
        capture_object(1, obis, 2) for _, obis in nameplate_columns(profile)
    )
    for name, columns in scaler_columns.items():
        capture[f"scaler:{name}"] = tuple(
            capture_object(quantities[c].class_id, quantities[c].obis, 3) for c in columns
        )
    profiles = {p.name: p for p in profile.profiles}
    instantaneous = capture.get("instantaneous", (capture_object(8, objs.clock, 2),))
    return VendorTables(
        profile=profile,
        objects=objects,
        quantities=quantities,
        levels={a.name: _LEVELS[a.security] for a in profile.associations},
        profiles=profiles,
        block_interval=profiles["block_load"].interval if "block_load" in profiles else 1800,
        capture=capture,
        scaler_columns=scaler_columns,
        object_lists=tuple(_object_list(objects, level) for level in (PUBLIC, READER, UTILITY)),
        push_objects=(
            capture_object(1, objs.logical_device_name, 2),
            capture_object(8, objs.clock, 2),
            *instantaneous[1:],
        ),
        category_index={c: i for i, c in enumerate(EVENT_CATEGORIES)},
        tamper_codes=frozenset(
            e.code for e in events.codes if e.occurrence and e.kind in TAMPER_KINDS
        ),
    )


# -- access rights ----------------------------------------------------------------------------

# Association LN v1 (Blue Book 4.4.3): attribute access_mode 0 no access, 1 read, 2 write,
# 3 read and write; method access_mode 0 no access, 1 access.
_WRITABLE: Final = {
    Kind.CLOCK: frozenset({2}),
    Kind.DISCONNECT_CONTROL: frozenset({4}),
    Kind.LIMITER: frozenset({3, 4, 5, 6, 7}),
    Kind.IMAGE_TRANSFER: frozenset({5}),
    Kind.PUSH_SETUP: frozenset({3, 4, 5, 6, 7}),
    Kind.IMAGE_ACTIVATION: frozenset({4}),  # execution_time
}


def can_read(kind: Kind, level: int) -> bool:
    return level >= READER or kind in _PUBLIC_KINDS


def can_write(kind: Kind, attribute: int, level: int) -> bool:
    return level >= UTILITY and attribute in _WRITABLE.get(kind, frozenset())


def _secret(kind: Kind, attribute: int) -> bool:
    return kind is Kind.ASSOCIATION and attribute == 7  # Association LN secret: never read


def can_act(level: int) -> bool:
    return level >= UTILITY


def _object_list(objects: dict[ObisCode, ObjectDef], level: int) -> Typed:
    # Blue Book 4.4.3 object_list_element ::= structure { class_id long-unsigned, version
    # unsigned, logical_name octet-string, access_rights structure { attribute_access array,
    # method_access array } }
    items: list[Value] = []
    for definition in objects.values():
        cls = INTERFACE_CLASSES[definition.class_id]
        attributes: list[Value] = []
        for attr in cls.attributes:
            mode = 0
            if can_read(definition.kind, level) and not _secret(definition.kind, attr.index):
                mode = 1
            if can_write(definition.kind, attr.index, level):
                mode |= 2
            attributes.append(
                Typed(
                    Tag.STRUCTURE,
                    (Typed(Tag.INTEGER, attr.index), Typed(Tag.ENUM, mode), None),
                )
            )
        methods: list[Value] = [
            Typed(
                Tag.STRUCTURE,
                (Typed(Tag.INTEGER, m.index), Typed(Tag.ENUM, int(can_act(level)))),
            )
            for m in cls.methods
        ]
        items.append(
            Typed(
                Tag.STRUCTURE,
                (
                    Typed(Tag.LONG_UNSIGNED, definition.class_id),
                    Typed(Tag.UNSIGNED, cls.version),
                    Typed(Tag.OCTET_STRING, definition.obis.to_bytes()),
                    Typed(
                        Tag.STRUCTURE,
                        (Typed(Tag.ARRAY, tuple(attributes)), Typed(Tag.ARRAY, tuple(methods))),
                    ),
                ),
            )
        )
    return Typed(Tag.ARRAY, tuple(items))
