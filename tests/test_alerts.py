"""hesd/alerts.py with a real store and simulated meters behind a fake session manager: an alert
reaches the outbox at once, a burst of alerts makes one event-log read, the read starts at the
mark it shares with the scheduler and moves it, logged events confirm the alerts (also when the
push's clock is later than the log's time), failed reads are tried again and then given up
without moving the marks, and the scheduler's meters wait for alert reads; and ``confirm``, which
links logged events to the alerts they confirm."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from structlog.testing import capture_logs

from adapters.hooks import MeterContext
from adapters.model import Event, Source
from adapters.normalise import Normaliser
from adapters.profile import VendorProfile, load_profile
from hesd import alerts as alerts_module
from hesd.alerts import Alerts, Yielding, confirm
from hesd.config import AlertsConfig, StoreConfig
from hesd.session import SessionError
from hesd.sim import MeterSpec, SimulatedMeter
from hesd.sim.timebase import date_time_octets
from hesd.store import Store
from hesd.store.schedules import ScheduleStore, set_mark
from hesd.uplink.outbox import OutboxFull, Record
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.axdr import BitString
from tests.scheduler_fakes import until

REPO = Path(__file__).resolve().parent.parent
PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")
NORMALISERS = {"is15959": Normaliser(PROFILE)}
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
FAST = AlertsConfig(coalesce=0.05, lookback=3600.0, match_window=60.0)
T = TypeVar("T")


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Settings:
    profile: VendorProfile


class Session:
    """A meter's session as hesd.reads uses it: GETs answered by a simulated meter, through
    the encoder and decoder (the request as the meter gets it, the answer as hesd gets it)."""

    def __init__(self, sim: SimulatedMeter, clock: Clock) -> None:
        self.sim = sim
        self.clock = clock
        self.meter_id = sim.spec.meter_id
        self.firmware = "1.0.0"
        self.settings = Settings(sim.spec.profile)
        self.gets = 0

    async def get(
        self, attribute: x.AttributeDescriptor, access: x.AccessSelection | None = None
    ) -> object:
        self.gets += 1
        request = x.decode_apdu(
            x.GetRequestNormal(x.InvokeIdAndPriority(1), attribute, access).encode()
        )
        assert isinstance(request, x.GetRequestNormal)
        value = self.sim.get("reader", request.attribute, request.access, self.clock())
        if isinstance(value, x.DataAccessResult):
            return value
        return axdr.decode_all(axdr.encode(value))


@dataclass
class Access:
    """The session manager: each meter's requests one at a time; ``failures`` makes the next
    requests of a meter fail."""

    sessions: dict[str, Session]
    failures: dict[str, int] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None

    async def reachable(self, meter_id: str) -> bool:
        return True

    async def request(self, meter_id: str, op: Callable[[Any], Awaitable[T]]) -> T:
        self.requests.append(meter_id)
        if self.hold is not None:
            await self.hold.wait()
        if self.failures.get(meter_id, 0) > 0:
            self.failures[meter_id] -= 1
            raise SessionError(f"meter {meter_id}: no answer")
        return await op(self.sessions[meter_id])


@dataclass
class Sink:
    records: list[Record] = field(default_factory=list)
    full: bool = False

    def offer(self, records: Any) -> asyncio.Future[None]:
        if self.full:
            raise OutboxFull("outbox full (1 of 1 bytes): records refused")
        self.records.extend(records)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    def events(self, source: Source) -> list[Event]:
        return [r for r in self.records if isinstance(r, Event) and r.source is source]


@dataclass
class Hes:
    store: Store
    clock: Clock
    sink: Sink
    access: Access
    alerts: Alerts
    sims: dict[str, SimulatedMeter]

    def meter(self, meter_id: str) -> SimulatedMeter:
        if meter_id not in self.sims:
            spec = MeterSpec(
                meter_id, f"SN{len(self.sims):04d}", bytes(8), 7, PROFILE, start=T0 - 86400
            )
            self.sims[meter_id] = SimulatedMeter(spec)
            self.access.sessions[meter_id] = Session(self.sims[meter_id], self.clock)
        return self.sims[meter_id]

    def alarm(self, meter_id: str, kind: str, *, pushed_after: float = 0.0) -> bool:
        """The meter logs ``kind`` now and pushes its alert ``pushed_after`` seconds later (the
        push's clock says so; the ESW says which event)."""
        sim = self.meter(meter_id)
        entry = sim.inject_event(kind, self.clock.now)
        body = sim.alert_body(entry, self.clock.now)
        assert isinstance(body, tuple)
        if pushed_after:
            body = (body[0], date_time_octets(self.clock.now + pushed_after), body[2])
        context = MeterContext(meter_id, "is15959", "1.0.0", PROFILE.model)
        return self.alerts.on_push(context, NORMALISERS["is15959"], body)

    def reads(self, captured: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [line for line in captured if line["event"] == "alerts.read"]


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 2000, 0.5))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    clock, sink, access = Clock(), Sink(), Access({})
    alerts = Alerts(
        FAST, store=store, access=access, normalisers=lambda: NORMALISERS, sink=sink, clock=clock
    )
    task = asyncio.create_task(alerts.run(), name="alerts:reads")
    yield Hes(store, clock, sink, access, alerts, {})
    alerts.close()
    await task
    await store.close()
    await writer


async def test_an_alert_goes_out_at_once_and_its_log_follows_confirming_it(hes: Hes) -> None:
    with capture_logs() as captured:
        assert hes.alarm("M1", "magnet_tamper")
        [alert] = hes.sink.events(Source.ALERT)  # at once: before any read
        assert hes.access.requests == []
        hes.clock.now += 2
        await until(lambda: hes.alerts.reads == 1, "the event-log read")
    assert (alert.kind, alert.code, alert.esw_bit, alert.snapshot) == ("magnet_tamper", 201, 16, ())
    [logged] = hes.sink.events(Source.PULL)
    assert (logged.kind, logged.code, logged.timestamp) == ("magnet_tamper", 201, alert.timestamp)
    assert logged.snapshot
    assert logged.event_id == alert.event_id == logged.alert_id
    [received] = [c for c in captured if c["event"] == "alerts.received"]
    assert (received["meter"], received["kinds"], received["esw_bits"], received["logs"]) == (
        "M1",
        ["magnet_tamper"],
        [16],
        ["other"],
    )
    [read] = hes.reads(captured)
    assert (read["logs"], read["events"], read["confirmed"], read["errors"]) == (["other"], 1, 1, 0)
    marks = await ScheduleStore(hes.store).marks("events:other")
    assert marks == {"M1": logged.timestamp.timestamp()}
    assert (hes.alerts.received, hes.alerts.events, hes.alerts.unconfirmed) == (1, 1, 0)


async def test_a_burst_of_alerts_makes_one_read_of_their_logs(hes: Hes) -> None:
    with capture_logs() as captured:
        for kind in ("magnet_tamper", "cover_open", "current_bypass"):
            hes.alarm("M1", kind)
            hes.clock.now += 0.01
        hes.alarm("M2", "magnet_tamper")
        await until(lambda: hes.alerts.reads == 2, "a read of each meter")
    assert sorted(hes.access.requests) == ["M1", "M2"]  # one request per meter
    [one] = [r for r in hes.reads(captured) if r["meter"] == "M1"]
    assert one["logs"] == ["current", "other", "non_rollover"]  # IS 15959 category order
    assert one["confirmed"] == 3
    alerts = {e.event_id for e in hes.sink.events(Source.ALERT)}
    logged = hes.sink.events(Source.PULL)
    assert len(alerts) == 4
    assert {e.alert_id for e in logged} == alerts
    assert all(e.alert_id == e.event_id for e in logged)
    assert not hes.alerts.has_work("M1")


async def test_alerts_during_a_read_make_one_more_read(hes: Hes) -> None:
    hes.access.hold = asyncio.Event()
    hes.alarm("M1", "magnet_tamper")
    await until(lambda: hes.access.requests == ["M1"], "the first read to start")
    hes.clock.now += 5
    hes.alarm("M1", "cover_open")
    hes.clock.now += 5
    hes.alarm("M1", "neutral_disturbance")
    hes.access.hold.set()
    await until(lambda: hes.alerts.reads == 2, "the second read")
    assert hes.access.requests == ["M1", "M1"]
    kinds = [e.kind for e in hes.sink.events(Source.PULL)]
    assert sorted(kinds) == ["cover_open", "magnet_tamper", "neutral_disturbance"]  # once each


async def test_the_read_starts_at_the_mark_it_shares_with_the_scheduler(hes: Hes) -> None:
    sim = hes.meter("M1")
    sim.inject_event("magnet_tamper", T0 - 600)  # an event a scheduled read already sent
    await hes.store.submit([set_mark("events:other", "M1", T0 - 600, T0)])
    hes.clock.now += 60
    hes.alarm("M1", "neutral_disturbance")
    await until(lambda: hes.alerts.reads == 1, "the read")
    [logged] = hes.sink.events(Source.PULL)
    assert (logged.kind, logged.timestamp.timestamp()) == ("neutral_disturbance", T0 + 60)
    marks = await ScheduleStore(hes.store).marks("events:other")
    assert marks == {"M1": T0 + 60}


async def test_a_first_read_looks_back_lookback_seconds(hes: Hes) -> None:
    sim = hes.meter("M1")
    sim.inject_event("magnet_tamper", T0 - 7200)  # before the lookback (3600 s here)
    sim.inject_event("magnet_tamper", T0 - 1800)
    hes.alarm("M1", "cover_open")  # the non-rollover log: its own mark
    hes.alarm("M1", "neutral_disturbance")
    await until(lambda: hes.alerts.reads == 1, "the read")
    stamps = sorted(e.timestamp.timestamp() - T0 for e in hes.sink.events(Source.PULL))
    assert stamps == [-1800, 0, 0]


async def test_a_push_whose_clock_is_later_than_the_log_still_confirms_by_alert_id(
    hes: Hes,
) -> None:
    assert hes.alarm("M1", "magnet_tamper", pushed_after=20)
    [alert] = hes.sink.events(Source.ALERT)
    await until(lambda: hes.alerts.reads == 1, "the read")
    [logged] = hes.sink.events(Source.PULL)
    assert logged.timestamp.timestamp() == T0
    assert alert.timestamp.timestamp() == T0 + 20
    assert logged.event_id != alert.event_id  # two times: two identities...
    assert logged.alert_id == alert.event_id  # ...linked


async def test_an_alert_the_log_does_not_hold_is_unconfirmed(hes: Hes) -> None:
    with capture_logs() as captured:
        assert hes.alarm("M1", "magnet_tamper", pushed_after=3600)  # beyond match_window
        await until(lambda: hes.alerts.reads == 1, "the read")
    [logged] = hes.sink.events(Source.PULL)
    assert logged.alert_id is None
    [line] = [c for c in captured if c["event"] == "alerts.unconfirmed"]
    assert (line["meter"], line["kind"], line["log_level"]) == ("M1", "magnet_tamper", "warning")
    assert hes.alerts.unconfirmed == 1


async def test_a_failed_read_is_tried_again(hes: Hes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_module, "BACKOFF", 0.01)
    hes.access.failures["M1"] = 2
    hes.alarm("M1", "magnet_tamper")
    await until(lambda: hes.alerts.reads == 1, "the third attempt")
    assert hes.access.requests == ["M1"] * 3
    assert len(hes.sink.events(Source.PULL)) == 1


async def test_a_read_given_up_leaves_the_marks(hes: Hes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_module, "BACKOFF", 0.01)
    hes.access.failures["M1"] = 3
    with capture_logs() as captured:
        hes.alarm("M1", "magnet_tamper")
        await until(lambda: hes.alerts.read_failures == 1, "the read to be given up")
        await until(lambda: not hes.alerts.has_work("M1"), "the meter's task to end")
    [failed] = [c for c in captured if c["event"] == "alerts.read_failed"]
    assert (failed["meter"], failed["attempts"], failed["logs"]) == ("M1", 3, ["other"])
    assert failed["error"] == "meter M1: no answer"
    assert [c["detail"] for c in captured if c["event"] == "alerts.unconfirmed"] == [
        "the event logs were not read"
    ]
    assert await ScheduleStore(hes.store).marks("events:other") == {}
    assert len(hes.sink.events(Source.ALERT)) == 1  # the alert itself went out


async def test_unknown_bits_are_forwarded_and_every_log_is_read(hes: Hes) -> None:
    sim = hes.meter("M1")
    bits = "0" * 100 + "1" + "0" * 27
    body = (sim.logical_device_name(), date_time_octets(T0), BitString.from_bits(bits))
    context = MeterContext("M1", "is15959", "1.0.0", PROFILE.model)
    with capture_logs() as captured:
        assert hes.alerts.on_push(context, NORMALISERS["is15959"], body)
        await until(lambda: hes.alerts.reads == 1, "the read")
    [unknown] = hes.sink.events(Source.ALERT)
    assert (unknown.kind, unknown.esw_bit, unknown.code) == ("unknown", 100, -1)
    [line] = [c for c in captured if c["event"] == "alerts.unknown"]
    assert (line["esw_bit"], line["log_level"]) == (100, "warning")
    [read] = hes.reads(captured)
    assert len(read["logs"]) == 7
    assert hes.access.sessions["M1"].gets >= 7


async def test_an_instantaneous_push_is_not_an_alert(hes: Hes) -> None:
    sim = hes.meter("M1")
    context = MeterContext("M1", "is15959", "1.0.0", PROFILE.model)
    assert not hes.alerts.on_push(context, NORMALISERS["is15959"], sim.push_body(T0))
    assert hes.sink.records == []
    assert not hes.alerts.has_work("M1")


async def test_read_logs_false_forwards_the_alert_only(hes: Hes) -> None:
    hes.alerts.config = dataclasses.replace(FAST, read_logs=False)
    assert hes.alarm("M1", "magnet_tamper")
    assert len(hes.sink.events(Source.ALERT)) == 1
    assert not hes.alerts.has_work("M1")
    assert hes.access.requests == []


async def test_a_full_outbox_refuses_the_alert_and_says_so(hes: Hes) -> None:
    hes.sink.full = True
    hes.alerts.config = dataclasses.replace(FAST, read_logs=False)
    with capture_logs() as captured:
        assert hes.alarm("M1", "magnet_tamper")
    [line] = [c for c in captured if c["event"] == "alerts.refused"]
    assert (line["meter"], line["events"], line["log_level"]) == ("M1", 1, "error")
    assert "outbox full" in line["error"]


async def test_scheduled_reads_wait_for_a_meters_alert_read(hes: Hes) -> None:
    class NoCommands:
        def has_work(self, meter_id: str) -> bool:
            return False

        async def wait_idle(self, meter_id: str) -> None:
            return None

    waiting = Yielding(NoCommands(), hes.alerts)
    hes.access.hold = asyncio.Event()
    hes.alarm("M1", "magnet_tamper")
    assert waiting.has_work("M1")
    assert not waiting.has_work("M2")
    idle = asyncio.create_task(waiting.wait_idle("M1"), name="test:idle")
    await until(lambda: hes.access.requests == ["M1"], "the read to start")
    assert not idle.done()
    hes.access.hold.set()
    await asyncio.wait_for(idle, 5)
    assert hes.alerts.reads == 1
    await waiting.wait_idle("M2")  # nothing to wait for


# -- logged events confirm alerts --------------------------------------------------------------


def _event(
    code: int, seconds: float, source: Source = Source.PULL, bit: int | None = None
) -> Event:
    entry = PROFILE.events.code(code)
    assert entry is not None
    return Event(
        "SIM-7", entry.kind, entry.category, entry.severity, entry.occurrence, code, entry.name,
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds), source,
        "0.0.99.98.4.255", esw_bit=bit,
    )  # fmt: skip


def test_a_logged_event_confirms_the_nearest_alert_of_its_code_once() -> None:
    early, late = _event(201, 0, Source.ALERT, 16), _event(201, 100, Source.ALERT, 16)
    cover = _event(251, 0, Source.ALERT, 19)
    logged = [_event(201, 103), _event(201, 2), _event(203, 1), _event(201, 50)]
    found, left = confirm(logged, [early, late, cover], window=60)
    assert [e.alert_id for e in found] == [late.event_id, early.event_id, None, None]
    assert left == [cover]
    assert [dataclasses.replace(e, alert_id=None) for e in found] == logged
    same, none_left = confirm([_event(201, 0)], [_event(201, 0, Source.ALERT, 16)], window=0)
    assert none_left == []
    assert same[0].alert_id == same[0].event_id  # the push carried the event's own time
    far, still = confirm([_event(201, 61)], [early], window=60)
    assert (far[0].alert_id, still) == (None, [early])
