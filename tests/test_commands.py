"""Command kinds against a fake meter (IC 70 read-first-then-act, read-back, clock sync) and
against the simulator's object model (load limit, push setup: access rights, scalers, types)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.profile import VendorProfile, load_profiles
from hesd.command_settings import integer_of
from hesd.commands import command_kinds
from hesd.daemon import build_normalisers
from hesd.router import Command, CommandRejected, CommandState
from hesd.session import MeterSession
from hesd.sim.model import MeterSpec, SimulatedMeter
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.obis import ObisCode

VENDORS = Path(__file__).resolve().parent.parent / "conf" / "vendors"
NOW = 1_800_000_000.0
IST = dt.timezone(dt.timedelta(minutes=330))


@dataclass
class Settings:
    profile: VendorProfile


@dataclass
class FakeMeter:
    """Disconnect control (Blue Book 4.5.8) and a clock, as a session would see them."""

    settings: Settings
    meter_id: str = "M1"
    firmware: str | None = None
    control: int = 1  # connected
    refuse: bool = False  # ACTION answers other-reason, changes nothing
    clock_offset: float = 0.0  # meter time - true time
    actions: list[int] = field(default_factory=list)
    sets: list[Value] = field(default_factory=list)
    associations: list[str] = field(default_factory=list)  # what using() was asked for

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        self.associations.append(name)
        yield

    async def get(self, attr: x.AttributeDescriptor, access: object = None) -> Value:
        if attr.class_id == 70:
            return self.control == 1 if attr.attribute == 2 else Typed(Tag.ENUM, self.control)
        assert attr.class_id == 8
        when = dt.datetime.fromtimestamp(NOW + self.clock_offset, IST).replace(microsecond=0)
        return DateTime.from_datetime(when).to_octets()

    async def set(self, attr: x.AttributeDescriptor, value: Value) -> x.DataAccessResult:
        self.sets.append(value)
        stamp = DateTime.from_octets(cast(bytes, value)).to_datetime()
        self.clock_offset = stamp.timestamp() - NOW
        return x.DataAccessResult.SUCCESS

    async def action(
        self, method: x.MethodDescriptor, parameters: Value | None = None
    ) -> tuple[x.ActionResult, None]:
        assert method.class_id == 70
        assert parameters == Typed(Tag.INTEGER, 0)
        self.actions.append(method.attribute)
        if self.refuse:
            return x.ActionResult.OTHER_REASON, None
        self.control = 0 if method.attribute == 1 else 1
        return x.ActionResult.SUCCESS, None


@pytest.fixture
def meter() -> FakeMeter:
    profiles = load_profiles(VENDORS, ("is15959",), source="tests")
    return FakeMeter(Settings(profiles["is15959"]))


def command(kind: str, **params: Any) -> Command:
    return Command("c1", "M1", kind, params, CommandState.SENT, "t", NOW, NOW, NOW + 60)


def kinds(meter: FakeMeter) -> Any:
    normalisers = build_normalisers({"is15959": meter.settings.profile})
    return command_kinds(lambda: normalisers, lambda: NOW)


async def run(meter: FakeMeter, kind: str, **params: Any) -> Any:
    spec = kinds(meter)[kind]
    spec.check(params)
    return await spec.run(cast(MeterSession, meter), command(kind, **params))


async def test_disconnect_acts_then_confirms_by_read_back(meter: FakeMeter) -> None:
    outcome = await run(meter, "disconnect")
    assert outcome.succeeded
    assert meter.actions == [1]
    assert outcome.data["after"] == {"output_state": False, "control_state": "disconnected"}
    assert outcome.detail == "disconnected, confirmed by read-back"
    outcome = await run(meter, "reconnect")
    assert outcome.succeeded
    assert meter.actions == [1, 2]
    assert outcome.data["after"]["control_state"] == "connected"
    assert meter.associations == ["utility", "utility"]  # the profile's command association


async def test_a_repeated_disconnect_does_not_act_again(meter: FakeMeter) -> None:
    meter.control = 0
    outcome = await run(meter, "disconnect")
    assert outcome.succeeded
    assert meter.actions == []
    assert outcome.detail == "already disconnected"


async def test_a_refused_action_fails(meter: FakeMeter) -> None:
    meter.refuse = True
    outcome = await run(meter, "disconnect")
    assert not outcome.succeeded
    assert "OTHER_REASON" in outcome.detail
    assert meter.control == 1


async def test_sync_time_corrects_a_drifted_clock(meter: FakeMeter) -> None:
    meter.clock_offset = -300.0
    outcome = await run(meter, "sync_time")
    assert outcome.succeeded
    assert outcome.data["offset_before"] == -300.0
    assert outcome.data["offset_after"] == 0.0
    assert outcome.data["deviation"] == -330
    [sent] = meter.sets
    assert DateTime.from_octets(cast(bytes, sent)).deviation == -330
    assert meter.associations == ["utility"]


def test_parameters_are_checked(meter: FakeMeter) -> None:
    k = kinds(meter)
    with pytest.raises(CommandRejected, match="no parameters"):
        k["disconnect"].check({"x": 1})
    with pytest.raises(CommandRejected, match="exactly one"):
        k["read"].check({})
    with pytest.raises(CommandRejected, match="no UTC offset"):
        k["read"].check({"profile": "block", "from": "2026-01-01T00:00", "to": "2026-01-02T00:00"})
    k["read"].check({"quantities": ["voltage_l1"]})
    k["read"].check(
        {"events": "power", "from": "2026-01-01T00:00Z", "to": "2026-01-02T00:00+05:30"}
    )
    assert k["read"].rerunnable
    assert not k["disconnect"].rerunnable


def test_event_categories_are_checked() -> None:
    read = kinds(FakeMeter(Settings(load_profiles(VENDORS, ("is15959",), source="t")["is15959"])))
    span = {"from": "2026-01-01T00:00Z", "to": "2026-01-02T00:00Z"}
    read["read"].check({"events": ["power", "other"], **span})
    for events, message in (
        ("tamper", "'tamper' is not an event category"),
        ([], "must be a category or a list"),
        (["power", "power"], "names a category twice"),
        ([3], "must be a category or a list"),
    ):
        with pytest.raises(CommandRejected, match=message):
            read["read"].check({"events": events, **span})


# -- load limit and push setup, against the simulator's object model ---------------------------


@dataclass
class ModelMeter:
    """A session onto ``hesd.sim``'s meter model: values cross A-XDR as on the wire, requests
    run under the association ``using`` names (the read association otherwise), with its
    access rights."""

    settings: Settings
    model: SimulatedMeter
    meter_id: str = "M1"
    firmware: str | None = None
    association: str = "reader"
    sets: list[tuple[str, int, int]] = field(default_factory=list)  # (association, class, attr)

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        self.association = name
        try:
            yield
        finally:
            self.association = "reader"

    async def get(self, attr: x.AttributeDescriptor, access: object = None) -> object:
        value = self.model.get(self.association, attr, None, NOW)
        if isinstance(value, x.DataAccessResult):
            return value
        return axdr.decode_all(axdr.encode(value))

    async def set(self, attr: x.AttributeDescriptor, value: Value) -> x.DataAccessResult:
        self.sets.append((self.association, attr.class_id, attr.attribute))
        sent = axdr.decode_all(axdr.encode(value), typed=True)
        return self.model.set(self.association, attr, sent, NOW)


def model_meter(profile: VendorProfile | None = None) -> ModelMeter:
    profile = profile or load_profiles(VENDORS, ("is15959",), source="t")["is15959"]
    spec = MeterSpec("M1", "00000001", b"SIM00001", 7, profile)
    return ModelMeter(Settings(profile), SimulatedMeter(spec))


async def run_on(meter: ModelMeter, kind: str, **params: Any) -> Any:
    normalisers = build_normalisers({meter.settings.profile.name: meter.settings.profile})
    spec = command_kinds(lambda: normalisers, lambda: NOW)[kind]
    spec.check(params)
    return await spec.run(cast(MeterSession, meter), command(kind, **params))


async def test_limit_sets_what_differs_as_the_utility_client_and_reads_it_back() -> None:
    meter = model_meter()
    outcome = await run_on(
        meter,
        "limit",
        threshold_normal=7500,
        threshold_emergency=5000,
        min_over_threshold_duration=120,
    )
    assert outcome.succeeded, outcome.detail
    assert meter.model.limiter == (7500, 7500, 5000, 120, 60)  # active follows normal
    assert meter.sets == [("utility", 71, 4), ("utility", 71, 6)]  # emergency was 5000 already
    assert outcome.data["before"]["threshold_normal"] == 10_000
    assert outcome.data["after"] == {
        "threshold_active": 7500,
        "threshold_normal": 7500,
        "threshold_emergency": 5000,
        "min_over_threshold_duration": 120,
        "min_under_threshold_duration": 60,
    }
    assert outcome.data["monitored_value"] == "3/1.0.1.7.0.255:2"
    assert outcome.data["changed"] == ["threshold_normal", "min_over_threshold_duration"]
    again = await run_on(meter, "limit", threshold_normal=7500)
    assert again.succeeded
    assert again.detail == "already threshold_normal 7500"
    assert len(meter.sets) == 2


async def test_limit_applies_the_scaler_the_meter_declares() -> None:
    standard = load_profiles(VENDORS, ("is15959",), source="t")["is15959"]
    tens = tuple(
        dataclasses.replace(q, scaler=1) if q.name == "active_power" else q
        for q in standard.quantities
    )
    meter = model_meter(dataclasses.replace(standard, quantities=tens))  # 10 W per unit
    outcome = await run_on(meter, "limit", threshold_normal=7500)
    assert outcome.succeeded, outcome.detail
    assert meter.model.limiter[1] == 750
    assert outcome.data["after"]["threshold_normal"] == 7500
    assert outcome.data["scaler"] == 1
    with pytest.raises(CommandRejected, match=r"7505 W is not a multiple of 10 W"):
        await run_on(meter, "limit", threshold_normal=7505)


async def test_limit_refuses_a_monitored_value_it_cannot_scale() -> None:
    meter = model_meter()
    standard = meter.settings.profile
    elsewhere = tuple(
        dataclasses.replace(q, obis=ObisCode.parse("1.0.16.7.0.255"))
        if q.name == "active_power"
        else q
        for q in standard.quantities
    )  # hesd's profile says active power is elsewhere than what the limiter monitors
    meter.settings = Settings(dataclasses.replace(standard, quantities=elsewhere))
    with pytest.raises(CommandRejected) as info:
        await run_on(meter, "limit", threshold_normal=7500)
    assert str(info.value) == (
        "limit: meter M1: limiter 0.0.17.0.0.255 monitors 3/1.0.1.7.0.255:2, which vendor "
        "profile is15959 does not declare in [quantities]: its type and scaler are not known"
    )
    assert meter.sets == []


async def test_limit_on_the_read_association_is_refused_by_the_meter() -> None:
    standard = load_profiles(VENDORS, ("is15959",), source="t")["is15959"]
    meter = model_meter(dataclasses.replace(standard, command_association="reader"))
    outcome = await run_on(meter, "limit", threshold_normal=7500)
    assert not outcome.succeeded
    assert outcome.detail == "the meter refused threshold_normal: READ_WRITE_DENIED"
    assert meter.model.limiter[1] == 10_000


class DeafMeter(ModelMeter):
    """Answers every SET with success and keeps what it had."""

    async def set(self, attr: x.AttributeDescriptor, value: Value) -> x.DataAccessResult:
        self.sets.append((self.association, attr.class_id, attr.attribute))
        return x.DataAccessResult.SUCCESS


async def test_a_setting_the_meter_does_not_keep_fails_the_read_back() -> None:
    profile = load_profiles(VENDORS, ("is15959",), source="t")["is15959"]
    spec = MeterSpec("M1", "00000001", b"SIM00001", 7, profile)
    meter = DeafMeter(Settings(profile), SimulatedMeter(spec))
    limit = await run_on(meter, "limit", threshold_normal=7500)
    assert (limit.succeeded, limit.detail) == (
        False,
        "read-back does not confirm: {'threshold_normal': 10000}",
    )
    assert limit.data["changed"] == ["threshold_normal"]
    assert limit.data["after"]["threshold_normal"] == 10_000
    push = await run_on(meter, "push_setup", destination="10.9.8.7:4059", number_of_retries=5)
    before = push.data["before"]
    assert (push.succeeded, push.detail) == (
        False,
        "read-back does not confirm: "
        f"{{'destination': {before['destination']!r}, "
        f"'number_of_retries': {before['number_of_retries']!r}}}",
    )
    assert push.data["after"] == before
    assert push.data["changed"] == ["destination", "number_of_retries"]


def test_limit_parameters_are_checked() -> None:
    check = command_kinds(dict)["limit"].check
    for params, message in (
        ({}, "give at least one of threshold_normal"),
        ({"threshold": 1}, "unknown parameter 'threshold'"),
        ({"threshold_normal": "7.5kW"}, "threshold_normal must be active power in W"),
        ({"threshold_normal": -1}, "threshold_normal must be active power in W"),
        ({"threshold_emergency": float("nan")}, "must be active power in W"),
        ({"threshold_normal": True}, "must be active power in W"),
        ({"min_over_threshold_duration": 1.5}, "must be whole seconds"),
        ({"min_under_threshold_duration": 2**32}, "must be whole seconds"),
    ):
        with pytest.raises(CommandRejected, match=message):
            check(params)
    check({"threshold_normal": 7500.5, "min_under_threshold_duration": 0})


async def test_push_setup_repoints_the_meter_and_reads_it_back() -> None:
    meter = model_meter()
    outcome = await run_on(
        meter,
        "push_setup",
        destination="10.20.30.40:4059",
        communication_window=["00:00-06:00", "22:30-23:59"],
        randomisation_start_interval=300,
        number_of_retries=5,
    )
    assert outcome.succeeded, outcome.detail
    push = meter.model.push
    assert (push.transport, push.destination, push.message) == (0, b"10.20.30.40:4059", 0)
    assert (push.randomisation, push.retries, push.repetition_delay) == (300, 5, 60)
    assert outcome.data["after"] == {
        "transport": "tcp",
        "destination": "10.20.30.40:4059",
        "message": 0,
        "communication_window": ["00:00-06:00", "22:30-23:59"],
        "randomisation_start_interval": 300,
        "number_of_retries": 5,
        "repetition_delay": 60,
    }
    assert {a for a, _, _ in meter.sets} == {"utility"}
    assert sorted(attribute for _, _, attribute in meter.sets) == [3, 4, 5, 6]
    again = await run_on(meter, "push_setup", destination="10.20.30.40:4059", transport="udp")
    assert again.succeeded, again.detail
    assert meter.model.push.transport == 1
    cleared = await run_on(meter, "push_setup", communication_window=[])
    assert cleared.succeeded
    assert meter.model.push.window == ()


def test_push_setup_parameters_are_checked() -> None:
    check = command_kinds(dict)["push_setup"].check
    for params, message in (
        ({}, "give at least one of destination"),
        ({"host": "x"}, "unknown parameter 'host'"),
        ({"destination": "10.0.0.1"}, "destination must be HOST:PORT"),
        ({"destination": "10.0.0.1:0"}, "port must be 1..65535"),
        ({"destination": "10.0.0.1:070"}, "port must be 1..65535"),
        ({"destination": "bad host:4059"}, "'bad host' is not a host name"),
        ({"destination": "[::1:4059"}, "is not a host name"),
        ({"transport": "sms"}, "transport must be one of tcp, udp"),
        ({"communication_window": "00:00-06:00"}, "must be a list of at most 8"),
        ({"communication_window": ["24:00-06:00"]}, 'is not "HH:MM-HH:MM"'),
        ({"number_of_retries": 256}, "number_of_retries must be an integer 0..255"),
        ({"repetition_delay": -1}, "repetition_delay must be an integer 0..65535"),
    ):
        with pytest.raises(CommandRejected, match=message):
            check(params)
    check({"destination": "[2001:db8::1]:4059"})
    check({"destination": "hes.example.net:4059", "communication_window": []})


def test_integer_of_takes_plain_and_typed_integers_only() -> None:
    """What the kinds (and hesd.firmware) accept as an integer the meter sent."""
    assert integer_of(7) == 7
    assert integer_of(Typed(Tag.DOUBLE_LONG_UNSIGNED, 4138)) == 4138
    assert integer_of(Typed(Tag.ENUM, 2)) == 2
    for other in (True, Typed(Tag.BOOLEAN, True), b"\x07", "7", 7.0, None, (1, 2)):
        assert integer_of(other) is None, other
    for refusal in x.DataAccessResult:  # a refusal is no number, though an IntEnum
        assert integer_of(refusal) is None, refusal
