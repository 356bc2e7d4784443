"""Vendor profiles, schema 1 with the COSEM map: every shipped vendor, defaults, and the errors of
each new kind of key (file, dotted key, what was expected)."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import is15959
from adapters.cosem_map import STATUS, LoadProfile, Quantity
from adapters.is15959 import Measure
from adapters.profile import VendorProfile, load_profile
from adapters.schema import ConfigError
from protocols.dlms.axdr import Tag
from protocols.dlms.cosem import Unit
from protocols.dlms.obis import ObisCode

REPO = Path(__file__).resolve().parent.parent
VENDORS = REPO / "conf" / "vendors"

MINIMAL = """\
[profile]
schema = 1
name = "acme"
version = "1"
[associations.public]
client_address = 16
security = "none"
"""


def load(tmp_path: Path, text: str, name: str = "acme") -> VendorProfile:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_profile(path)


def error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "acme.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: "), "the error names the file"
    return str(info.value).removeprefix(f"{path}: ")


def shipped(name: str) -> VendorProfile:
    return load_profile(VENDORS / f"{name}.toml")


# -- the shipped vendors --------------------------------------------------------------------------


def test_the_four_vendors_are_shipped_and_load() -> None:
    names = sorted(p.stem for p in VENDORS.glob("*.toml"))
    assert names == ["is15959", "kalpa", "meghdoot", "sunrise"]
    for name in names:
        profile = shipped(name)
        assert profile.name == name
        assert profile.manufacturer
        assert profile.model
        assert {p.name for p in profile.profiles} == set(is15959.PROFILES)


def test_is15959_file_states_the_defaults(tmp_path: Path) -> None:
    """conf/vendors/is15959.toml spells out what a profile that leaves the tables out gets."""
    minimal = load(tmp_path, MINIMAL)
    written = shipped("is15959")
    for field in ("objects", "quantities", "profiles", "events", "mqtt", "utc_offset", "adapter"):
        assert getattr(minimal, field) == getattr(written, field), field


def test_minimal_profile_gets_is15959(tmp_path: Path) -> None:
    profile = load(tmp_path, MINIMAL)
    assert profile.objects.clock == ObisCode.parse("0.0.1.0.0.255")
    assert profile.objects.security_setup == ObisCode.parse("0.0.43.0.3.255")
    assert [q.name for q in profile.quantities] == list(is15959.QUANTITIES)
    energy = profile.quantity("energy_active_import")
    assert energy == Quantity(
        "energy_active_import",
        ObisCode.parse("1.0.1.8.0.255"),
        3,
        2,
        0,
        Unit.WATT_HOUR,
        Tag.DOUBLE_LONG_UNSIGNED,
        Measure.CUMULATIVE,
    )
    block = profile.profile("block_load")
    assert block is not None
    assert (block.interval, block.depth, block.columns[0]) == (1800, 1680, "clock")
    assert profile.events.by_kind("magnet_tamper") is not None
    assert profile.events.code(201) == profile.events.by_kind("magnet_tamper")
    assert profile.events.code(202) is not None
    assert not profile.events.code(202).occurrence  # type: ignore[union-attr]
    assert profile.mqtt is None
    assert (profile.manufacturer, profile.model) == ("", "")


def test_kalpa_differs_where_its_file_says() -> None:
    kalpa, standard = shipped("kalpa"), shipped("is15959")
    energy = kalpa.quantity("energy_active_import")
    assert energy is not None
    assert energy.scaler == 1  # 10 Wh per unit
    assert kalpa.quantity("active_power").obis == ObisCode.parse("1.0.16.7.0.255")  # type: ignore[union-attr]
    assert standard.quantity("active_power").obis == ObisCode.parse("1.0.1.7.0.255")  # type: ignore[union-attr]
    assert kalpa.quantity("energy_active_export") is None
    assert kalpa.profile("block_load").interval == 900  # type: ignore[union-attr]
    assert kalpa.framing.kind == "wrapper"
    assert kalpa.events == standard.events


def test_sunrise_differs_where_its_file_says() -> None:
    sunrise = shipped("sunrise")
    assert sunrise.framing.kind == "hdlc"
    assert sunrise.quantity("voltage_l1").scaler == -1  # type: ignore[union-attr]
    current = sunrise.quantity("current_l1")
    assert current is not None
    assert (current.scaler, current.type) == (-3, Tag.DOUBLE_LONG_UNSIGNED)
    assert sunrise.quantity("power_on_duration").unit == Unit.SECOND  # type: ignore[union-attr]
    magnet = sunrise.events.by_kind("magnet_tamper")
    assert magnet is not None
    assert (magnet.code, magnet.category, magnet.severity) == (211, "other", "critical")
    assert sunrise.events.code(201) is None  # renumbered
    assert sunrise.events.by_kind("earth_loading").code == 69  # type: ignore[union-attr]
    assert sunrise.events.snapshot[0] == "voltage_l1"


def test_meghdoot_reports_json_over_mqtt() -> None:
    meghdoot = shipped("meghdoot")
    assert meghdoot.mqtt is not None
    assert meghdoot.mqtt.payload == "json"
    assert meghdoot.mqtt.uplink_topic == "meghdoot/dcu/{meter_id}/data"
    json = meghdoot.mqtt.json
    assert json is not None
    assert (json.meter_id, json.timestamp, json.timestamp_format) == (
        "meterSerial",
        "readingTime",
        "iso8601",
    )
    fields = {v.quantity: (v.field, v.scaler) for v in json.values}
    assert fields["energy_active_import"] == ("kwhImport", 3)
    assert fields["voltage_l1"] == ("vR", 0)
    assert meghdoot.quantities == shipped("is15959").quantities  # its DLMS objects: IS 15959


def test_shipped_profiles_read_as_the_reader_and_command_as_the_utility_client() -> None:
    for name in ("is15959", "kalpa", "sunrise", "meghdoot"):
        profile = shipped(name)
        assert (profile.default_association, profile.command_association) == ("reader", "utility")
        utility = profile.association("utility")
        assert (utility.client_address, utility.security, utility.ciphered) == (
            48,
            "hls-gmac",
            True,
        )


def test_command_association_defaults_to_the_read_association(tmp_path: Path) -> None:
    profile = load(tmp_path, MINIMAL)
    assert (profile.default_association, profile.command_association) == ("public", "public")
    text = MINIMAL + '[associations.utility]\nclient_address = 48\nsecurity = "hls-gmac"\n'
    profile = load(tmp_path, text + '[session]\ncommand_association = "utility"\n')
    assert (profile.default_association, profile.command_association) == ("public", "utility")
    assert error(tmp_path, text + "[session]\ncommand_association = 48\n") == (
        'session.command_association: expected one of "public", "utility", got 48'
    )


def test_profiles_are_hashable_for_the_simulator_cache() -> None:
    for name in ("is15959", "kalpa", "sunrise", "meghdoot"):
        hash(shipped(name))


def test_every_default_event_kind_is_in_the_vocabulary() -> None:
    for entry in is15959.EVENT_CODES:
        assert entry.kind in is15959.EVENT_KINDS
        assert entry.category in is15959.EVENT_CATEGORIES
        assert entry.severity in is15959.SEVERITIES
    codes = [e.code for e in is15959.EVENT_CODES]
    assert len(codes) == len(set(codes))


# -- errors name the file, the key and what was expected ------------------------------------------

QUANTITIES_ONLY_VOLTAGE = MINIMAL + "[quantities]\nvoltage_l1 = {}\n"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[objects]\nclock = "1.2.3"\n',
            'objects.clock: expected an OBIS code such as "1.0.1.8.0.255", got "1.2.3"',
        ),
        ('[objects]\nclok = "0.0.1.0.0.255"\n', "objects.clok: unknown key (expected one of:"),
        (
            '[objects]\nlimiter = "0.0.1.0.0.255"\n',
            "objects.limiter: 0.0.1.0.0.255 is already used by objects.clock",
        ),
        (
            "[quantities]\nvoltage = {}\n",
            "quantities.voltage: not a canonical quantity name (the list is in docs/vendors.md)",
        ),
        (
            "[quantities]\nvoltage_l1 = { scaler = 9 }\n",
            "quantities.voltage_l1.scaler: expected integer -6..6, got 9",
        ),
        (
            '[quantities]\nenergy_active_import = { unit = "kWh" }\n',
            'quantities.energy_active_import.unit: expected a DLMS unit symbol such as "Wh": '
            '"kWh" is not a DLMS unit, use "Wh" with a scaler',
        ),
        (
            '[quantities]\nvoltage_l1 = { unit = "A" }\n',
            'quantities.voltage_l1.unit: voltage_l1 is measured in "V", got "A"',
        ),
        (
            '[quantities]\npower_on_duration = { unit = "d" }\n',
            'quantities.power_on_duration.unit: power_on_duration is measured in "s" or "min" or '
            '"h", got "d"',
        ),
        (
            '[quantities]\nvoltage_l1 = { type = "float32" }\n',
            'quantities.voltage_l1.type: expected one of "integer", "long", "double-long", '
            '"long64", "unsigned", "long-unsigned", "double-long-unsigned", "long64-unsigned", '
            'got "float32"',
        ),
        (
            "[quantities]\nvoltage_l1 = { class = 2 }\n",
            "quantities.voltage_l1.class: expected 1 (Data), 3 (Register) or 4 (Extended "
            "register), got 2",
        ),
        (
            "[quantities]\ndemand_active_max = { class = 3 }\n",
            "quantities.demand_active_max.class: maximum demand, and only maximum demand, is an "
            "extended register (4): it has a capture time",
        ),
        (
            "[quantities]\nvoltage_l1 = { class = 4 }\n",
            "quantities.voltage_l1.class: maximum demand, and only maximum demand",
        ),
        (
            "[quantities]\nvoltage_l1 = { class = 1, scaler = -2 }\n",
            "quantities.voltage_l1.scaler: a Data object (class 1) has no scaler_unit; expected 0",
        ),
        (
            "[quantities]\nvoltage_l1 = { attribute = 3 }\n",
            "quantities.voltage_l1.attribute: expected integer 2..2, got 3",
        ),
        (
            '[quantities]\nvoltage_l1 = { obis = "1.0.32.7.0.255", colour = "red" }\n',
            "quantities.voltage_l1.colour: unknown key",
        ),
        (
            '[quantities]\nvoltage_l1 = { obis = "1.0.1.8.0.255" }\nvoltage_l2 = { obis = '
            '"1.0.1.8.0.255" }\n',
            "quantities.voltage_l2.obis: 1.0.1.8.0.255 is already used by "
            "quantities.voltage_l1.obis",
        ),
        (
            "[profiles.monthly]\n",
            "profiles.monthly: unknown profile (expected one of: instantaneous, block_load, "
            "daily_load, billing)",
        ),
        (
            "[profiles.block_load]\ninterval = 600\n",
            "profiles.block_load.interval: expected integer 900..1800, got 600",
        ),
        (
            "[profiles.block_load]\ninterval = 1200\n",
            "profiles.block_load.interval: expected 900 or 1800 (seconds), got 1200",
        ),
        (
            "[profiles.daily_load]\ninterval = 3600\n",
            "profiles.daily_load.interval: expected integer 86400..86400, got 3600",
        ),
        (
            "[profiles.billing]\ninterval = 0\n",
            "profiles.billing.interval: unknown key",
        ),
        (
            '[profiles.block_load]\ncolumns = ["voltage_avg", "clock"]\n',
            'profiles.block_load.columns: the first column must be "clock"',
        ),
        (
            '[profiles.block_load]\ncolumns = ["clock", "voltage_average"]\n',
            'profiles.block_load.columns[1]: quantity "voltage_average" is not defined in '
            "[quantities]",
        ),
        (
            '[profiles.block_load]\ncolumns = ["clock", "voltage_avg.capture_time"]\n',
            'profiles.block_load.columns[1]: "voltage_avg" is not an extended register (class 4): '
            "it has no capture time",
        ),
        (
            '[profiles.block_load]\ncolumns = ["clock", "voltage_avg", "voltage_avg"]\n',
            'profiles.block_load.columns[2]: "voltage_avg" is listed twice',
        ),
        (
            "[profiles.billing]\ndepth = 0\n",
            "profiles.billing.depth: expected integer 1..100000, got 0",
        ),
        (
            '[profiles.billing]\nscaler_obis = "0.0.1.0.0.255"\n',
            "profiles.billing.scaler_obis: 0.0.1.0.0.255 is already used by objects.clock",
        ),
        (
            '[events.profiles]\nvoltage = "0.0.99.98"\n',
            'events.profiles.voltage: expected an OBIS code such as "1.0.1.8.0.255", got '
            '"0.0.99.98"',
        ),
        (
            '[events.profiles]\nvoltages = "0.0.99.98.0.255"\n',
            "events.profiles.voltages: unknown key",
        ),
        ("[events.depth]\npower = 0\n", "events.depth.power: expected integer 1..10000, got 0"),
        (
            '[events]\nsnapshot = ["voltage_l1", "volts"]\n',
            'events.snapshot[1]: quantity "volts" is not defined in [quantities]',
        ),
        (
            '[event_codes]\nx1 = { name = "a", category = "power", kind = "power_failure", '
            'severity = "major" }\n',
            "event_codes.x1: the key must be an event code 0..65535 in decimal",
        ),
        (
            '[event_codes]\n70000 = { name = "a", category = "power", kind = "power_failure", '
            'severity = "major" }\n',
            "event_codes.70000: the key must be an event code 0..65535 in decimal",
        ),
        (
            '[event_codes]\n101 = { name = "a", category = "mains", kind = "power_failure", '
            'severity = "major" }\n',
            'event_codes.101.category: expected one of "voltage", "current", "power", '
            '"transaction", "other", "non_rollover", "control", got "mains"',
        ),
        (
            '[event_codes]\n101 = { name = "a", category = "power", kind = "blackout", '
            'severity = "major" }\n',
            'event_codes.101.kind: "blackout" is not a normalised event kind (the list is in '
            "docs/vendors.md)",
        ),
        (
            '[event_codes]\n101 = { name = "a", category = "power", kind = "power_failure", '
            'severity = "high" }\n',
            'event_codes.101.severity: expected one of "info", "minor", "major", "critical", '
            'got "high"',
        ),
        (
            '[event_codes]\n102 = { name = "a", category = "power", kind = "power_restored", '
            'severity = "info", occurrence = true }\n',
            "event_codes.102.occurrence: power_restored is a restoration: occurrence must be false",
        ),
        (
            '[event_codes]\n101 = { category = "power", kind = "power_failure", severity = '
            '"info" }\n',
            "event_codes.101.name: missing; expected 1..80 printable ASCII characters",
        ),
        ("[event_codes]\n101 = 5\n", "event_codes.101: expected a table, got 5"),
        (
            '[mqtt]\npayload = "xml"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n',
            'mqtt.payload: expected one of "dlms", "json", got "xml"',
        ),
        (
            '[mqtt]\nuplink_topic = "meters/up"\ndownlink_topic = "b/{meter_id}"\n',
            "mqtt.uplink_topic: expected an MQTT topic with {meter_id} once and no + or #, got "
            '"meters/up"',
        ),
        (
            '[mqtt]\nuplink_topic = "m/+/{meter_id}"\ndownlink_topic = "b/{meter_id}"\n',
            "mqtt.uplink_topic: expected an MQTT topic with {meter_id} once and no + or #",
        ),
        (
            '[mqtt]\nuplink_topic = "a/{meter_id}"\ndownlink_topic = "b/{meter_id}"\n'
            '[mqtt.json]\nmeter_id = "m"\n',
            'mqtt.json: only for payload = "json", but payload is "dlms"',
        ),
        (
            '[mqtt]\npayload = "json"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n',
            "mqtt.json: missing; expected a table",
        ),
        (
            '[mqtt]\npayload = "json"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n[mqtt.json]\nmeter_id = "m"\ntimestamp = "t"\ntimestamp_format = '
            '"unix"\nvalues = { kwh = "e" }\n',
            "mqtt.json.values.kwh: not a canonical quantity name",
        ),
        (
            '[mqtt]\npayload = "json"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n[mqtt.json]\nmeter_id = "m"\ntimestamp = "t"\ntimestamp_format = '
            '"unix"\nvalues = { voltage_l1 = "v", voltage_l2 = "v" }\n',
            "mqtt.json.values: two values (or the meter id or timestamp) share a field",
        ),
        (
            '[mqtt]\npayload = "json"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n[mqtt.json]\nmeter_id = "m"\ntimestamp = "t"\ntimestamp_format = '
            '"unix"\nvalues = { voltage_l1 = 5 }\n',
            "mqtt.json.values.voltage_l1: expected a JSON field name or { field, scaler }, got 5",
        ),
        (
            '[mqtt]\npayload = "json"\nuplink_topic = "a/{meter_id}"\ndownlink_topic = '
            '"b/{meter_id}"\n[mqtt.json]\nmeter_id = "m"\ntimestamp = "t"\ntimestamp_format = '
            '"unix"\nvalues = { voltage_l1 = { field = "v", scaler = 7 } }\n',
            "mqtt.json.values.voltage_l1.scaler: expected integer -6..6, got 7",
        ),
        (
            '[identity]\nmanufacturer = "' + "x" * 40 + '"\n',
            "identity.manufacturer: expected 0..32 printable ASCII characters, got",
        ),
    ],
)
def test_errors_of_the_new_keys(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, MINIMAL + extra).startswith(expected)


def test_default_columns_need_their_quantities(tmp_path: Path) -> None:
    """A vendor that lists its quantities lists its profiles' columns too."""
    message = error(tmp_path, QUANTITIES_ONLY_VOLTAGE)
    assert message == (
        'profiles.instantaneous.columns[2]: quantity "voltage_l2" is not defined in [quantities]'
    )


def test_a_vendor_with_few_quantities(tmp_path: Path) -> None:
    text = (
        QUANTITIES_ONLY_VOLTAGE
        + "energy_active_import = {}\n"
        + '[profiles.daily_load]\ncolumns = ["clock", "energy_active_import"]\n'
        + '[events]\nsnapshot = ["voltage_l1"]\n'
    )
    profile = load(tmp_path, text)
    assert [p.name for p in profile.profiles] == ["daily_load"]
    assert [q.name for q in profile.quantities] == ["voltage_l1", "energy_active_import"]


# -- garbage in a quantity entry is refused cleanly ------------------------------------------------

_values = st.one_of(
    st.integers(-100, 100),
    st.booleans(),
    st.text(string.ascii_letters + string.digits + ".-", max_size=16),
    st.sampled_from(["1.0.99.1.0.255", "W", "Wh", "long", "long-unsigned", ""]),
    st.lists(st.integers(0, 5), max_size=3),
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return str(value)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(list(is15959.QUANTITIES)),
    entry=st.dictionaries(
        st.sampled_from(["obis", "class", "attribute", "scaler", "unit", "type", "other"]),
        _values,
        max_size=4,
    ),
)
def test_any_quantity_entry_loads_or_names_its_key(
    tmp_path_factory: pytest.TempPathFactory, name: str, entry: dict[str, object]
) -> None:
    directory = tmp_path_factory.mktemp("q")
    body = ", ".join(f"{k} = {_toml(v)}" for k, v in entry.items())
    text = MINIMAL + f"[quantities]\n{name} = {{ {body} }}\n[events]\nsnapshot = []\n"
    text += "".join(f'[profiles.{p}]\ncolumns = ["clock"]\n' for p in ("billing",))
    path = directory / "acme.toml"
    path.write_text(text)
    try:
        profile = load_profile(path)
    except ConfigError as exc:
        assert str(exc).startswith(f"{path}: quantities.{name}"), str(exc)
    else:
        quantity = profile.quantities[0]
        assert quantity.name == name
        assert dataclasses.replace(quantity) == quantity


# -- the profile status column ---------------------------------------------------------------------

BLOCK_COLUMNS = '"current_avg", "voltage_avg", "block_energy_active_import"'


def test_a_status_column_after_the_clock_and_its_object(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + f'[profiles.block_load]\ncolumns = ["clock", "status", {BLOCK_COLUMNS}]\n'
        + '[profiles.daily_load]\ncolumns = ["clock", "energy_active_import", "status"]\n'
    )
    profile = load(tmp_path, text)
    assert profile.profile("block_load").columns[:2] == ("clock", "status")  # type: ignore[union-attr]
    assert profile.profile("daily_load").columns[-1] == "status"  # type: ignore[union-attr]
    assert profile.objects.profile_status == ObisCode.parse("0.0.96.10.1.255")
    moved = load(tmp_path, MINIMAL + '[objects]\nprofile_status = "0.0.96.10.7.255"\n')
    assert moved.objects.profile_status == ObisCode.parse("0.0.96.10.7.255")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[profiles.instantaneous]\ncolumns = ["clock", "voltage_l1", "status"]\n',
            'profiles.instantaneous.columns[2]: "status" (the profile status of each interval) '
            "is only for profiles captured every interval: block_load and daily_load",
        ),
        (
            '[profiles.billing]\ncolumns = ["clock", "status"]\n',
            'profiles.billing.columns[1]: "status" (the profile status of each interval) is only '
            "for profiles captured every interval: block_load and daily_load",
        ),
        (
            '[profiles.block_load]\ncolumns = ["status", "clock"]\n',
            'profiles.block_load.columns: the first column must be "clock"',
        ),
        (
            '[profiles.block_load]\ncolumns = ["clock", "status", "voltage_avg", "status"]\n',
            'profiles.block_load.columns[3]: "status" is listed twice',
        ),
        (
            '[profiles.block_load]\ncolumns = ["clock", "status.capture_time"]\n',
            'profiles.block_load.columns[1]: quantity "status" is not defined in [quantities]',
        ),
        (
            '[events]\nsnapshot = ["voltage_l1", "status"]\n',
            'events.snapshot[1]: quantity "status" is not defined in [quantities]',
        ),
        (
            '[objects]\nprofile_status = "96.10.1"\n',
            'objects.profile_status: expected an OBIS code such as "1.0.1.8.0.255", got "96.10.1"',
        ),
        (
            '[objects]\nprofile_status = "0.0.96.1.0.255"\n',
            "objects.profile_status: 0.0.96.1.0.255 is already used by objects.serial_number",
        ),
        (
            '[quantities]\ntamper_count = { obis = "0.0.96.10.1.255" }\n',
            "quantities.tamper_count.obis: 0.0.96.10.1.255 is already used by "
            "objects.profile_status",
        ),
    ],
)
def test_errors_of_the_status_column(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, MINIMAL + extra) == expected


def test_a_load_profile_checks_its_status_column() -> None:
    clock = ObisCode.parse("1.0.99.1.0.255")
    with pytest.raises(ValueError, match="a status column needs a capture period"):
        LoadProfile("billing", clock, ("clock", "status"), 0, 12, None)
    assert LoadProfile("block_load", clock, ("clock", "status"), 900, 1, None).columns[1] == STATUS


# -- optional objects: the GSM diagnostic ----------------------------------------------------------


def test_a_profile_has_a_gsm_diagnostic_only_if_it_names_one(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL).objects.gsm_diagnostic is None
    gsm = ObisCode.parse("0.0.25.6.0.255")
    cellular = {name: shipped(name).objects.gsm_diagnostic for name in ("is15959", "kalpa")}
    assert cellular == {"is15959": None, "kalpa": gsm}
    assert shipped("sunrise").objects.gsm_diagnostic is None  # RS-485 and optical: no modem
    assert shipped("meghdoot").objects.gsm_diagnostic is None  # RF mesh
    named = load(tmp_path, MINIMAL + '[objects]\ngsm_diagnostic = "0.0.25.6.0.255"\n')
    assert named.objects.gsm_diagnostic == gsm
    default = load(tmp_path, MINIMAL).objects
    assert dataclasses.replace(named.objects, gsm_diagnostic=None) == default  # the rest: defaults
    assert shipped("kalpa").objects.clock == default.clock
    none = load(tmp_path, MINIMAL + '[objects]\ngsm_diagnostic = ""\n')
    assert none.objects.gsm_diagnostic is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[objects]\ngsm_diagnostic = "0.0.25.9.0.255"\n',
            "objects.gsm_diagnostic: 0.0.25.9.0.255 is already used by objects.push_setup",
        ),
        (
            '[objects]\ngsm_diagnostic = "25.6.0"\n',
            'objects.gsm_diagnostic: expected an OBIS code such as "1.0.1.8.0.255", got "25.6.0"',
        ),
        (
            '[objects]\ngsm_diagnostic = "0.0.25.6.0.255"\n'
            '[quantities]\ntamper_count = { obis = "0.0.25.6.0.255" }\n',
            "quantities.tamper_count.obis: 0.0.25.6.0.255 is already used by "
            "objects.gsm_diagnostic",
        ),
    ],
)
def test_errors_of_the_gsm_diagnostic(tmp_path: Path, extra: str, expected: str) -> None:
    assert error(tmp_path, MINIMAL + extra) == expected
