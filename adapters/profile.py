"""Vendor profiles: one TOML file per vendor under ``conf/vendors/``.

A profile says how to recognise a vendor's meters and how to talk to them: associations (client
addresses, security level, which secrets), framing, timeouts and PDU size, MQTT topics and
payloads; and what the meters hold: the OBIS codes of the standard objects, how each canonical
quantity is exposed (OBIS, class, scaler, unit, type), the load profiles and their columns, and
the event profiles with the vendor's event code table (``adapters/cosem_map.py`` reads those),
and the alert push (``adapters/alert_map.py``).
``profile.schema`` names the version a file was written for, and a file written for a newer
schema than this hesd knows is refused.

Format reference: ``docs/vendors.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters import is15959
from adapters.alert_map import AlertPush, read_alerts
from adapters.cosem_map import (
    EventCode,
    EventLog,
    LoadProfile,
    ObisRegistry,
    Quantity,
    StandardObjects,
    read_event_log,
    read_objects,
    read_profiles,
    read_quantities,
)
from adapters.schema import ConfigError, Table, load_toml

__all__ = [
    "PROFILE_SCHEMA",
    "AlertPush",
    "Association",
    "EventCode",
    "EventLog",
    "Framing",
    "JsonField",
    "JsonPayload",
    "LoadProfile",
    "MqttSettings",
    "Quantity",
    "StandardObjects",
    "VendorProfile",
    "load_profile",
    "load_profiles",
]

PROFILE_SCHEMA: Final = 1
VENDOR_NAME: Final = r"[a-z0-9][a-z0-9_-]{0,31}"
ADAPTER_NAME: Final = r"(?:[a-z0-9][a-z0-9_-]{0,63})?"
SECURITY_LEVELS: Final = ("none", "lls", "hls-gmac")
SECRET_NAMES: Final = ("lls_password", "hls_secret")
_PRINTABLE: Final = r"[ -~]{0,32}"
_PRINT_HELP: Final = "0..32 printable ASCII characters"


@dataclass(frozen=True, slots=True)
class Association:
    """One DLMS client association the vendor's meters offer (IEC 62056-53 client SAP)."""

    name: str
    client_address: int  # client SAP, 1..127 (IEC 62056-46 §6.4.2.3: client addresses are 7 bits)
    security: str  # "none" | "lls" | "hls-gmac"
    secret: str | None  # which key of the meter's keyset authenticates (LLS password, HLS secret)
    ciphered: bool  # suite-0 ciphering of xDLMS APDUs (needs the keyset's GUEK/GAK)

    def __post_init__(self) -> None:
        if not 1 <= self.client_address <= 127:
            raise ValueError(f"client address {self.client_address} outside 1..127")
        if self.security not in SECURITY_LEVELS:
            raise ValueError(f"security {self.security!r} not one of {SECURITY_LEVELS}")
        if (self.security == "none") != (self.secret is None):
            raise ValueError("an authenticated association names its secret, a public one none")


@dataclass(frozen=True, slots=True)
class Framing:
    """How APDUs travel: the TCP/UDP WRAPPER (IEC 62056-47) or HDLC (IEC 62056-46)."""

    kind: str  # "wrapper" | "hdlc"
    server_wport: int  # WRAPPER destination wPort of the management logical device
    hdlc_logical_address: int  # HDLC upper server address (logical device), 1 = management
    max_pdu_size: int  # proposed in the AARQ (IEC 62056-53 §8.3: 12..65535)

    def __post_init__(self) -> None:
        if self.kind not in ("wrapper", "hdlc"):
            raise ValueError(f"framing {self.kind!r} is not wrapper or hdlc")
        if not 12 <= self.max_pdu_size <= 65535:
            raise ValueError(f"max PDU size {self.max_pdu_size} outside 12..65535")


@dataclass(frozen=True, slots=True)
class JsonField:
    """One value of a JSON uplink: ``quantity`` is ``field`` * 10**scaler (in its DLMS unit)."""

    quantity: str
    field: str
    scaler: int


@dataclass(frozen=True, slots=True)
class JsonPayload:
    """Where a JSON uplink message keeps the meter id, the timestamp and the values."""

    meter_id: str  # field holding the meter id
    timestamp: str  # field holding the time of the values
    timestamp_format: str  # "unix" (s), "unix-ms" or "iso8601"
    values: tuple[JsonField, ...]


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """How meters (or their concentrator) talk over MQTT; topics hold ``{meter_id}``."""

    payload: str  # "dlms": APDUs as message bodies; "json": JsonPayload records
    uplink_topic: str
    downlink_topic: str
    json: JsonPayload | None  # set exactly when payload is "json"

    def __post_init__(self) -> None:
        if (self.payload == "json") != (self.json is not None):
            raise ValueError("a JSON payload needs its field mapping, a DLMS payload none")


@dataclass(frozen=True, slots=True)
class VendorProfile:
    """What hesd knows about one vendor's meters, validated from its profile file."""

    name: str
    version: str
    description: str
    source: str
    flag_ids: tuple[str, ...]  # three-letter manufacturer ids (FLAG) in the logical device name
    system_title_prefix: bytes  # leading bytes of the meters' system titles
    framing: Framing
    associations: tuple[Association, ...]
    default_association: str  # [session] association: for reads
    command_association: str  # [session] command_association: for commands that act (SET, ACTION)
    response_timeout: float  # seconds to wait for one response
    inactivity_timeout: float  # seconds of silence after which the association is considered lost
    manufacturer: str  # manufacturer name, as the nameplate reports it
    model: str  # meter model
    objects: StandardObjects
    quantities: tuple[Quantity, ...]
    profiles: tuple[LoadProfile, ...]
    events: EventLog
    alerts: AlertPush  # the alert push (adapters/alert_map.py)
    mqtt: MqttSettings | None  # None: the meters do not use MQTT
    utc_offset: int = 330  # minutes local time is ahead of UTC, for date-times without deviation
    adapter: str = ""  # the vendor adapter (entry point in group hesd.adapters), "" for none

    def association(self, name: str) -> Association:
        for assoc in self.associations:
            if assoc.name == name:
                return assoc
        raise KeyError(name)

    def quantity(self, name: str) -> Quantity | None:
        for quantity in self.quantities:
            if quantity.name == name:
                return quantity
        return None

    def profile(self, name: str) -> LoadProfile | None:
        for profile in self.profiles:
            if profile.name == name:
                return profile
        return None


def _read_association(name: str, table: Table) -> Association:
    client = table.integer("client_address", lo=1, hi=127)
    security = table.choice("security", SECURITY_LEVELS)
    secret: str | None = None
    if security == "none" and "secret" in table:
        raise table.error("secret", 'a public association (security = "none") has no secret')
    if security != "none":
        default = "lls_password" if security == "lls" else "hls_secret"
        secret = table.choice("secret", SECRET_NAMES, default=default)
    ciphered = table.boolean("ciphered", default=False)
    if ciphered and security == "none":
        raise table.error(
            "ciphered", "ciphering needs an authenticated association (lls or hls-gmac)"
        )
    table.finish()
    return Association(name, client, security, secret, ciphered)


_TOPIC = r"[^+#{}\x00]*\{meter_id\}[^+#{}\x00]*"
_TOPIC_HELP = "an MQTT topic with {meter_id} once and no + or #"
_FIELD = r"[A-Za-z0-9_.$@-]{1,64}"


def _read_mqtt(doc: Table) -> MqttSettings | None:
    if "mqtt" not in doc:
        doc.table("mqtt")
        return None
    table = doc.table("mqtt")
    payload = table.choice("payload", ("dlms", "json"), default="dlms")
    uplink = table.string("uplink_topic", pattern=_TOPIC, describe=_TOPIC_HELP, max_length=256)
    downlink = table.string("downlink_topic", pattern=_TOPIC, describe=_TOPIC_HELP, max_length=256)
    json = None
    if payload == "json":
        json = _read_json(table.table("json", required=True))
    elif "json" in table:
        raise table.error("json", f'only for payload = "json", but payload is "{payload}"')
    table.finish()
    return MqttSettings(payload, uplink, downlink, json)


def _read_json(table: Table) -> JsonPayload:
    meter_id = table.string("meter_id", pattern=_FIELD, describe="a JSON field name")
    timestamp = table.string("timestamp", pattern=_FIELD, describe="a JSON field name")
    timestamp_format = table.choice("timestamp_format", ("unix", "unix-ms", "iso8601"))
    values_table = table.table("values", required=True)
    values: list[JsonField] = []
    for quantity in list(values_table.keys()):
        if quantity not in is15959.QUANTITIES:
            raise values_table.error(
                quantity, "not a canonical quantity name (the list is in docs/vendors.md)"
            )
        try:
            entry = values_table.table(quantity)
        except ConfigError:  # not a table: then it is the field name
            field = values_table.string(
                quantity, pattern=_FIELD, describe="a JSON field name or { field, scaler }"
            )
            values.append(JsonField(quantity, field, 0))
            continue
        field = entry.string("field", pattern=_FIELD, describe="a JSON field name")
        values.append(JsonField(quantity, field, entry.integer("scaler", lo=-6, hi=6, default=0)))
        entry.finish()
    if not values:
        raise table.error("values", "expected at least one quantity")
    fields = [v.field for v in values] + [meter_id, timestamp]
    if len(set(fields)) != len(fields):
        raise table.error("values", "two values (or the meter id or timestamp) share a field")
    table.finish()
    return JsonPayload(meter_id, timestamp, timestamp_format, tuple(values))


def load_profile(path: Path) -> VendorProfile:
    """Load and validate one vendor profile; the file name (without .toml) is the vendor name."""
    doc = load_toml(path, source=str(path))
    name = path.stem

    head = doc.table("profile", required=True)
    schema = head.integer("schema", lo=1, hi=1_000_000)
    if schema > PROFILE_SCHEMA:
        raise head.error(
            "schema", f"profile written for schema {schema}, this hesd reads up to {PROFILE_SCHEMA}"
        )
    declared = head.string("name", pattern=VENDOR_NAME, describe="vendor name (a-z, 0-9, _ and -)")
    if declared != name:
        raise head.error("name", f'must equal the file name "{name}", got "{declared}"')
    version = head.string(
        "version",
        pattern=r"[0-9A-Za-z.+-]{1,32}",
        describe='a version: 1..32 letters, digits, ".", "+" and "-"',
    )
    description = head.string("description", default="")
    head.finish()

    ident = doc.table("identity")
    flag_ids = ident.string_list(
        "flag_ids",
        default=(),
        pattern=r"[A-Z@]{3}",
        describe="three-letter FLAG manufacturer ids",
        describe_item="a three-letter FLAG manufacturer id (A-Z or @)",
    )
    prefix_hex = ident.string(
        "system_title_prefix",
        default="",
        pattern=r"(?:[0-9A-Fa-f]{2}){0,8}",
        describe="hex of up to 8 bytes",
    )
    manufacturer = ident.string(
        "manufacturer", default="", pattern=_PRINTABLE, describe=_PRINT_HELP
    )
    model = ident.string("model", default="", pattern=_PRINTABLE, describe=_PRINT_HELP)
    ident.finish()

    frame = doc.table("framing")
    kind = frame.choice("kind", ("wrapper", "hdlc"), default="wrapper")
    framing = Framing(
        kind=kind,
        server_wport=frame.integer("server_wport", lo=1, hi=0xFFFF, default=1),
        hdlc_logical_address=frame.integer("hdlc_logical_address", lo=1, hi=0x3FFF, default=1),
        max_pdu_size=frame.integer("max_pdu_size", lo=12, hi=0xFFFF, default=1024),
    )
    frame.finish()

    times = doc.table("timeouts")
    response_timeout = times.number("response", lo=0.1, hi=600, default=10.0)
    inactivity_timeout = times.number("inactivity", lo=1, hi=86400, default=120.0)
    times.finish()

    assoc_tables = doc.tables(
        "associations",
        name_pattern=r"[a-z0-9_-]{1,32}",
        describe="an association name (1..32 of a-z, 0-9, _ and -)",
    )
    if not assoc_tables:
        raise ConfigError(
            doc.source, "associations", "missing; expected at least one [associations.<name>]"
        )
    associations = tuple(_read_association(n, t) for n, t in assoc_tables.items())
    clients: dict[int, str] = {}
    for assoc in associations:
        other = clients.setdefault(assoc.client_address, assoc.name)
        if other != assoc.name:
            raise assoc_tables[assoc.name].error(
                "client_address",
                f"{assoc.client_address} is already used by associations.{other}; expected a "
                "client address of its own",
            )

    session = doc.table("session")
    default_assoc = session.choice(
        "association", tuple(assoc_tables), default=next(iter(assoc_tables))
    )
    command_assoc = session.choice(
        "command_association", tuple(assoc_tables), default=default_assoc
    )
    session.finish()

    registry = ObisRegistry(doc.source)
    objects = read_objects(doc, registry)
    quantities = read_quantities(doc, registry)
    profiles = read_profiles(doc, quantities, registry)
    events = read_event_log(doc, quantities, registry)
    instantaneous = next((p for p in profiles if p.name == "instantaneous"), None)
    push_width = 0 if instantaneous is None else len(instantaneous.columns) + 1
    alerts = read_alerts(doc, events, registry, push_width)
    mqtt = _read_mqtt(doc)

    clock = doc.table("clock")
    offset = clock.string(
        "utc_offset",
        default="+05:30",
        pattern=r"[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00)",
        describe='a UTC offset "-14:00".."+14:00" such as "+05:30"',
    )
    clock.finish()
    sign = -1 if offset[0] == "-" else 1
    utc_offset = sign * (int(offset[1:3]) * 60 + int(offset[4:6]))

    hooks = doc.table("adapter")
    adapter = hooks.string(
        "name", default="", pattern=ADAPTER_NAME, describe="an adapter name (a-z, 0-9, _ and -)"
    )
    hooks.finish()
    doc.finish()

    return VendorProfile(
        name=name,
        version=version,
        description=description,
        source=str(path),
        flag_ids=flag_ids,
        system_title_prefix=bytes.fromhex(prefix_hex),
        framing=framing,
        associations=associations,
        default_association=default_assoc,
        command_association=command_assoc,
        response_timeout=response_timeout,
        inactivity_timeout=inactivity_timeout,
        manufacturer=manufacturer,
        model=model,
        objects=objects,
        quantities=quantities,
        profiles=profiles,
        events=events,
        alerts=alerts,
        mqtt=mqtt,
        utc_offset=utc_offset,
        adapter=adapter,
    )


def load_profiles(
    directory: Path, enabled: tuple[str, ...], source: str
) -> dict[str, VendorProfile]:
    """Load the enabled profiles from ``directory`` (every ``*.toml`` when ``enabled`` is empty).

    ``source`` names the config file that asked for them, for the error of a missing profile.
    """
    if not directory.is_dir():
        raise ConfigError(source, "vendors.dir", f"{directory} is not a directory")
    if enabled:
        paths = []
        for index, name in enumerate(enabled):
            path = directory / f"{name}.toml"
            if not path.is_file():
                raise ConfigError(
                    source, f"vendors.enabled[{index}]", f"vendor file {path} not found"
                )
            paths.append(path)
    else:
        paths = sorted(directory.glob("*.toml"))
        if not paths:
            raise ConfigError(source, "vendors.dir", f"no vendor profiles (*.toml) in {directory}")
    profiles = [load_profile(p) for p in paths]
    return {p.name: p for p in profiles}
