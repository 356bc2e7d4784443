"""Command kinds against a fake meter: IC 70 read-first-then-act, read-back, clock sync."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from adapters.profile import VendorProfile, load_profiles
from hesd.commands import command_kinds
from hesd.daemon import build_normalisers
from hesd.router import Command, CommandRejected, CommandState
from hesd.session import MeterSession
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.calendar import DateTime

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
