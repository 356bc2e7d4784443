"""The alert push, without a daemon: the vendor profiles' ``[alerts]`` (defaults, every shipped
vendor, errors naming file and key), what the simulator pushes, how hesd decodes it
(adapters/alerts.py: the ESW bits, an event code, unknown bits, a clock that says nothing,
pushes that are not alerts), gurux-dlms reading the same bits, the event identity an alert shares
with the logged event."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from gurux_dlms import GXBitString, GXByteBuffer, GXDLMSNotify, GXReplyData
from gurux_dlms.enums import DataType, InterfaceType
from gurux_dlms.internal._GXCommon import _GXCommon
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.alert_map import DEFAULT_BITS, ESW_BITS
from adapters.alerts import decode_alert
from adapters.hooks import MeterContext
from adapters.is15959 import EVENT_CATEGORIES
from adapters.model import NO_CODE, Quality, Source
from adapters.normalise import NormaliseError, Normaliser
from adapters.profile import VendorProfile, load_profile
from adapters.schema import ConfigError
from hesd.sim import MeterSpec, SimulatedMeter
from hesd.sim.events import TAMPER_KINDS
from hesd.sim.timebase import date_time_octets
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.axdr import BitString, Typed
from protocols.dlms.wrapper import encode_wrapper

REPO = Path(__file__).resolve().parent.parent
VENDORS = REPO / "conf" / "vendors"
NOW = 1_767_225_605.25  # 2026-01-01 00:00:05.25 UTC
UTC = dt.UTC
RECEIVED = dt.datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def vendor(name: str) -> VendorProfile:
    return load_profile(VENDORS / f"{name}.toml")


PROFILES = {name: vendor(name) for name in ("is15959", "kalpa", "meghdoot", "sunrise")}


def meter(name: str = "is15959") -> SimulatedMeter:
    title = bytes.fromhex("4953430000000007")
    return SimulatedMeter(MeterSpec("SIM-7", "SN0007", title, 7, PROFILES[name], start=NOW - 86400))


def context(name: str = "is15959") -> MeterContext:
    return MeterContext("SIM-7", name, "1.0.0", PROFILES[name].model)


def alert_of(name: str, kind: str, now: float = NOW) -> tuple[SimulatedMeter, object]:
    """A simulated meter of vendor ``name`` that logged ``kind`` at ``now``, and its alert body."""
    sim = meter(name)
    entry = sim.inject_event(kind, now)
    body = sim.alert_body(entry, now)
    assert body is not None, kind
    return sim, body


def esw(*bits: int) -> BitString:
    return BitString.from_bits("".join("1" if i in bits else "0" for i in range(ESW_BITS)))


# -- vendor profiles ---------------------------------------------------------------------------


MINIMAL = """\
[profile]
schema = 1
name = "acme"
version = "1"
[associations.public]
client_address = 16
security = "none"
"""


def test_is15959_file_states_the_alert_defaults(tmp_path: Path) -> None:
    (tmp_path / "acme.toml").write_text(MINIMAL)
    minimal = load_profile(tmp_path / "acme.toml")
    assert minimal.alerts == PROFILES["is15959"].alerts
    assert dict(minimal.alerts.bits) == dict(DEFAULT_BITS)
    assert str(minimal.alerts.push_setup) == "0.4.25.9.0.255"
    assert str(minimal.alerts.esw) == "0.0.94.91.18.255"
    assert minimal.alerts.objects == ("logical_device_name", "clock", "esw")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_shipped_vendor_raises_an_alert_for_every_tamper(name: str) -> None:
    profile = PROFILES[name]
    for kind in TAMPER_KINDS:
        entry = profile.events.by_kind(kind)
        if entry is None:
            continue  # the vendor's meters do not log it
        bit = profile.alerts.bit_of(entry.code)
        assert bit is not None, (name, kind)
        assert profile.alerts.code_of(bit) == entry.code


BAD_ALERTS = [
    ('objects = ["clock", "esw", "beer"]', "alerts.objects[2]", 'got "beer"'),
    ('objects = ["clock", "esw", "clock"]', "alerts.objects[2]", '"clock" is listed twice'),
    ('objects = ["clock", "esw", "event_code"]', "alerts.objects", "exactly one of"),
    ('objects = ["clock", "logical_device_name"]', "alerts.objects", "exactly one of"),
    ('objects = ["esw", "logical_device_name"]', "alerts.objects", 'expected a time: "clock"'),
    ('objects = ["clock", "esw", "event_time"]', "alerts.objects", '"event_time" is the time'),
    ('push_setup = "0.4.25.9"', "alerts.push_setup", "expected an OBIS code"),
    ('esw = "0.0.1.0.0.255"', "alerts.esw", "0.0.1.0.0.255 is already used by objects.clock"),
    ("[alerts.bits]\n128 = 1", "alerts.bits.128", "an ESW bit 0..127"),
    ("[alerts.bits]\nx = 1", "alerts.bits.x", "an ESW bit 0..127"),
    ("[alerts.bits]\n3 = 999", "alerts.bits.3", "event code 999 is not in [event_codes]"),
    ('[alerts.bits]\n3 = "magnet"', "alerts.bits.3", "expected integer 0..65535"),
    ("[alerts.bits]\n3 = 201\n4 = 201", "alerts.bits.4", "event code 201 is already bit 3"),
    ("colour = 1", "alerts.colour", "unknown key"),
]


@pytest.mark.parametrize(("text", "key", "message"), BAD_ALERTS)
def test_a_bad_alerts_table_names_the_key(
    tmp_path: Path, text: str, key: str, message: str
) -> None:
    path = tmp_path / "acme.toml"
    header = "" if text.startswith("[alerts.") else "[alerts]\n"
    path.write_text(f"{MINIMAL}{header}{text}\n")
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: {key}: "), str(info.value)
    assert message in str(info.value)


def test_an_own_code_table_takes_the_default_bits_of_its_codes(tmp_path: Path) -> None:
    """A profile written before [alerts] existed still loads: the default bits of its codes."""
    path = tmp_path / "acme.toml"
    path.write_text(
        MINIMAL
        + '[event_codes]\n201 = { name = "Magnet", category = "other", kind = "magnet_tamper",'
        ' severity = "critical" }\n999 = { name = "Relay", category = "control",'
        ' kind = "load_switch_disconnected", severity = "minor" }\n'
    )
    assert load_profile(path).alerts.bits == ((16, 201),)
    path.write_text(path.read_text() + "[alerts.bits]\n16 = 201\n40 = 999\n")
    assert load_profile(path).alerts.bits == ((16, 201), (40, 999))


def test_an_alert_that_looks_like_the_instantaneous_push_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    columns = '["clock", "voltage_l1"]'  # an instantaneous push of 3 values
    path.write_text(
        MINIMAL + f"[profiles.instantaneous]\ncolumns = {columns}\n"
        '[alerts]\nobjects = ["logical_device_name", "clock", "esw"]\n'
    )
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert "as many as the instantaneous push" in str(info.value)


def test_the_kind_unknown_is_hesds_not_a_profiles(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(
        MINIMAL + '[event_codes]\n9 = { name = "?", category = "other", kind = "unknown",'
        ' severity = "info" }\n'
    )
    with pytest.raises(ConfigError, match=r"event_codes\.9\.kind: \"unknown\" is what hesd"):
        load_profile(path)


# -- what the simulator pushes, decoded --------------------------------------------------------


def test_a_magnet_alert_of_an_is15959_meter() -> None:
    sim, body = alert_of("is15959", "magnet_tamper")
    assert isinstance(body, tuple)
    assert body[0] == sim.logical_device_name()
    assert body[1] == date_time_octets(NOW)
    assert body[2] == esw(16)
    alert = decode_alert(Normaliser(PROFILES["is15959"]), context(), body, received=RECEIVED)
    assert alert is not None
    [event] = alert.events
    assert (event.kind, event.category, event.code, event.severity, event.occurrence) == (
        "magnet_tamper",
        "other",
        201,
        "critical",
        True,
    )
    assert event.timestamp == dt.datetime(2026, 1, 1, 0, 0, 5, 250000, tzinfo=UTC)
    assert alert.time == event.timestamp
    assert (event.source, event.esw_bit, event.snapshot, event.obis) == (
        Source.ALERT,
        16,
        (),
        "0.0.99.98.4.255",
    )
    assert alert.categories == ("other",)
    assert (alert.quality, alert.clock_error) == (Quality(0), "")
    wire = event.to_json()
    assert (wire["source"], wire["esw_bit"], wire["event_id"]) == ("alert", 16, event.event_id)
    assert "alert_id" not in wire


def test_a_kalpa_alert_carries_its_push_setup_and_the_event_code() -> None:
    _, body = alert_of("kalpa", "cover_open")
    assert isinstance(body, tuple)
    assert body[0] == bytes((0, 4, 25, 9, 0, 255))
    assert body[3] == Typed(x.axdr.Tag.LONG_UNSIGNED, 251)
    decoded = x.decode_apdu(x.DataNotification(1, None, body).encode())
    assert isinstance(decoded, x.DataNotification)
    alert = decode_alert(
        Normaliser(PROFILES["kalpa"]), context("kalpa"), decoded.body, received=RECEIVED
    )
    assert alert is not None
    [event] = alert.events
    assert (event.kind, event.category, event.code, event.esw_bit) == (
        "cover_open",
        "non_rollover",
        251,
        None,
    )
    assert alert.categories == ("non_rollover",)


def test_a_sunrise_alert_carries_the_serial_number_and_sunrise_codes() -> None:
    _, body = alert_of("sunrise", "magnet_tamper")
    assert isinstance(body, tuple)
    assert body[0] == "SN0007"
    alert = decode_alert(
        Normaliser(PROFILES["sunrise"]), context("sunrise"), body, received=RECEIVED
    )
    assert alert is not None
    assert [(e.kind, e.code, e.esw_bit) for e in alert.events] == [("magnet_tamper", 211, 16)]


def test_an_event_that_raises_no_alert_has_no_alert_body() -> None:
    sim = meter()
    entry = sim.inject_event("magnet_tamper_restored", NOW)
    assert sim.alert_body(entry, NOW) is None


@pytest.mark.parametrize("name", ["is15959", "kalpa"])
def test_the_alert_and_the_logged_event_have_one_identity(name: str) -> None:
    """The push carries the event's own time: the alert's event_id is the log row's."""
    sim, body = alert_of(name, "magnet_tamper")
    norm = Normaliser(PROFILES[name])
    alert = decode_alert(norm, context(name), body, received=RECEIVED)
    assert alert is not None
    [announced] = alert.events
    log = PROFILES[name].events.profiles[EVENT_CATEGORIES.index("other")]
    buffer = sim.get("reader", x.AttributeDescriptor(7, log, 2), None, NOW + 60)
    rows = axdr.decode_all(axdr.encode(buffer))  # type: ignore[arg-type]  # as hesd gets it
    assert isinstance(rows, list)
    logged = norm.event_rows(context(name), "other", rows, source=Source.PULL)
    assert not logged.errors
    [found] = [e for e in logged.events if e.kind == "magnet_tamper"]
    assert found.snapshot  # the log has what the alert has not
    assert found.event_id == announced.event_id
    assert found.timestamp == announced.timestamp


def test_a_bit_the_profile_does_not_map_is_an_unknown_event_and_every_log_is_read() -> None:
    body = (b"HES00000007", date_time_octets(NOW), esw(16, 100, 101))
    alert = decode_alert(Normaliser(PROFILES["is15959"]), context(), body, received=RECEIVED)
    assert alert is not None
    magnet, first, second = alert.events
    assert magnet.kind == "magnet_tamper"
    for event, bit in ((first, 100), (second, 101)):
        assert (event.kind, event.category, event.code, event.esw_bit) == (
            "unknown",
            "other",
            NO_CODE,
            bit,
        )
        assert (event.severity, event.obis) == ("major", "0.0.94.91.18.255")
        assert f"ESW bit {bit}: not in [alerts.bits]" in event.name
    assert first.event_id != second.event_id  # one time, no code: the bit tells them apart
    assert alert.unknown == (first, second)
    assert alert.categories == EVENT_CATEGORIES


def test_a_code_the_table_lacks_is_an_unknown_event() -> None:
    profile = PROFILES["kalpa"]
    setup = profile.alerts.push_setup.to_bytes()
    body = (setup, b"KLP0007", date_time_octets(NOW), 4242)
    alert = decode_alert(Normaliser(profile), context("kalpa"), body, received=RECEIVED)
    assert alert is not None
    [event] = alert.events
    assert (event.kind, event.code, event.esw_bit, event.obis) == (
        "unknown",
        4242,
        None,
        "0.4.25.9.0.255",
    )
    assert alert.categories == EVENT_CATEGORIES


def test_a_clock_that_says_nothing_gives_the_time_of_receipt_flagged() -> None:
    body = (b"HES00000007", b"\xff" * 12, esw(16))
    alert = decode_alert(Normaliser(PROFILES["is15959"]), context(), body, received=RECEIVED)
    assert alert is not None
    assert (alert.time, alert.quality) == (RECEIVED, Quality.CLOCK_INVALID)
    assert "clock" in alert.clock_error
    assert [e.quality for e in alert.events] == [Quality.CLOCK_INVALID]


def test_pushes_that_are_not_alerts() -> None:
    is15959, kalpa = Normaliser(PROFILES["is15959"]), Normaliser(PROFILES["kalpa"])
    sim = meter()
    instantaneous = sim.push_body(NOW)
    identification = ("SN0007", bytes(8), sim.logical_device_name())
    for body in (instantaneous, identification, [], 7, (b"x", date_time_octets(NOW), 16)):
        assert decode_alert(is15959, context(), body, received=RECEIVED) is None
    other_setup = (bytes((0, 0, 25, 9, 0, 255)), b"KLP0007", date_time_octets(NOW), 251)
    assert decode_alert(kalpa, context("kalpa"), other_setup, received=RECEIVED) is None


def test_a_push_naming_the_alert_setup_that_does_not_fit_is_an_error() -> None:
    setup = PROFILES["kalpa"].alerts.push_setup.to_bytes()
    body = (setup, b"KLP0007", date_time_octets(NOW), "251")
    with pytest.raises(NormaliseError) as info:
        decode_alert(Normaliser(PROFILES["kalpa"]), context("kalpa"), body, received=RECEIVED)
    assert str(info.value) == (
        "meter SIM-7: alert push (0.4.25.9.0.255): event_code: expected the code of the event "
        "that raised the alert (long-unsigned), got str"
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=ESW_BITS))
def test_every_bit_set_is_one_event(bits: list[bool]) -> None:
    value = BitString.from_bits("".join("1" if b else "0" for b in bits))
    body = (b"HES00000007", date_time_octets(NOW), value)
    alert = decode_alert(Normaliser(PROFILES["is15959"]), context(), body, received=RECEIVED)
    assert alert is not None
    assert [e.esw_bit for e in alert.events] == [i for i, b in enumerate(bits) if b]
    for event in alert.events:
        mapped = PROFILES["is15959"].alerts.code_of(event.esw_bit or 0)
        assert event.code == (NO_CODE if mapped is None else mapped)
    assert len({e.event_id for e in alert.events}) == len(alert.events)


# -- gurux-dlms as the oracle ------------------------------------------------------------------


def test_gurux_reads_the_bits_of_our_alert_push() -> None:
    sim, body = alert_of("is15959", "current_bypass")
    apdu = x.DataNotification(0xC0000001, None, body).encode()  # type: ignore[arg-type]
    notify = GXDLMSNotify(True, 1, 102, InterfaceType.WRAPPER)
    reply = GXReplyData()
    assert notify.getData(GXByteBuffer(bytearray(encode_wrapper(1, 102, apdu))), reply)
    name, clock, bits = reply.value
    assert bytes(name) == sim.logical_device_name() == b"HESSN0007"
    assert bytes(clock) == date_time_octets(NOW)
    assert str(bits) == "0" * 13 + "1" + "0" * (ESW_BITS - 14)  # current bypass: bit 13


def test_we_read_the_bits_of_a_gurux_push() -> None:
    notify = GXDLMSNotify(True, 1, 1, InterfaceType.WRAPPER)
    data = GXByteBuffer()
    data.setUInt8(DataType.STRUCTURE)
    data.setUInt8(3)
    _GXCommon.setData(notify.settings, data, DataType.OCTET_STRING, b"HES00000007")
    _GXCommon.setData(notify.settings, data, DataType.OCTET_STRING, date_time_octets(NOW))
    bits = "0" * ESW_BITS
    bits = bits[:19] + "1" + bits[20:]  # cover open
    _GXCommon.setData(notify.settings, data, DataType.BITSTRING, GXBitString(bits))
    [frame] = notify.generateDataNotificationMessages(None, data)
    decoded = x.decode_apdu(bytes(frame)[8:])
    assert isinstance(decoded, x.DataNotification)
    alert = decode_alert(
        Normaliser(PROFILES["is15959"]), context(), decoded.body, received=RECEIVED
    )
    assert alert is not None
    assert [(e.kind, e.esw_bit) for e in alert.events] == [("cover_open", 19)]
