"""The bulk scheduler against a real store and registry, a fake clock and fake meters."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import pytest
from structlog.testing import capture_logs

from adapters.model import Source
from adapters.profile import load_profiles
from adapters.schema import Table
from hesd.config import ScheduleConfig, SchedulerConfig, StoreConfig
from hesd.config_schedules import parse_schedules
from hesd.daemon import build_normalisers
from hesd.router import CommandKind, CommandRouter, Outcome
from hesd.schedule_budget import Budget, link_of
from hesd.schedule_reads import READ_AHEAD, Step
from hesd.schedule_run import RUN_TRANSITIONS, Run
from hesd.scheduler import Scheduler, SchedulerError
from hesd.session import MeterSession
from hesd.store import MeterEntry, Registry, Store
from hesd.store.schedules import RUN_FIELDS, RunRecord, ScheduleStore
from hesd.uplink.outbox import PRESSURE, Outbox, payload
from tests.scheduler_fakes import FakeClock, FakeReader, FakeSink, until

REPO = Path(__file__).resolve().parent.parent
NORMALISERS = build_normalisers(load_profiles(REPO / "conf" / "vendors", (), "test"))
IST = ZoneInfo("Asia/Kolkata")
MIDNIGHT_IST = dt.datetime(2026, 1, 1, tzinfo=IST).timestamp()  # 2025-12-31T18:30:00Z
HALF_HOUR = 1800
_T = TypeVar("_T")


def schedules(**tables: dict[str, Any]) -> tuple[ScheduleConfig, ...]:
    """Schedules as hesd.toml's [schedules.NAME] tables would give them."""
    return parse_schedules(Table("test.toml", {"schedules": tables}))


def entry(
    meter_id: str, vendor: str = "is15959", transport: str = "tcp-in", **kw: Any
) -> MeterEntry:
    return MeterEntry(meter_id, vendor, transport, **kw)


@dataclass
class Hes:
    store: Store
    registry: Registry
    clock: FakeClock
    sink: FakeSink
    entries: dict[str, MeterEntry] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reader: FakeReader | None = None

    async def meters(self, *entries: MeterEntry) -> None:
        await self.registry.upsert(entries)
        self.entries.update({e.meter_id: e for e in entries})

    def scheduler(
        self,
        defined: Sequence[ScheduleConfig],
        *,
        max_requests: int = 100,
        reserved: int = 10,
        per_destination: int = 4,
        commands: Any = None,
        retries: int = 3,
        in_flight: int = 1000,
    ) -> Scheduler:
        if self.reader is None:
            self.reader = FakeReader(self.clock, self.entries, per_destination)
        return Scheduler(
            SchedulerConfig("Asia/Kolkata", reserved, in_flight, retries, 100),
            defined,
            store=self.store,
            registry=self.registry,
            reader=self.reader,
            sink=self.sink,
            normalisers=lambda: NORMALISERS,
            commands=commands,
            max_requests=max_requests,
            per_destination=per_destination,
            clock=self.clock,
        )

    async def start(self, scheduler: Scheduler) -> None:
        self.tasks.append(asyncio.create_task(scheduler.run(), name="scheduler:runs"))
        await until(lambda: self.clock.sleepers >= 1, "the scheduler to wait for a due time")


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 2000, 0.5))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    found = Hes(store, Registry(store), FakeClock(MIDNIGHT_IST - 60), FakeSink())
    yield found
    for task in found.tasks:
        task.cancel()
    await asyncio.gather(*found.tasks, return_exceptions=True)
    await store.close()
    await writer


async def finish(run: Run) -> None:
    assert run.task is not None
    await asyncio.wait_for(asyncio.shield(run.task), 10)


def status_of(scheduler: Scheduler, name: str) -> dict[str, Any]:
    [found] = [s for s in scheduler.status()["schedules"] if s["name"] == name]
    return found


async def step_through(hes: Hes, run: Run) -> None:
    """Move the clock a second at a time, each time once the run waits for it, to its end."""
    task = run.task
    assert task is not None
    while not task.done():
        await until(
            lambda: task.done() or (hes.clock.sleepers >= 2 and not run.jobs),
            "the run to wait for the clock",
        )
        hes.clock.advance(1)


async def tick(hes: Hes, scheduler: Scheduler, name: str, seconds: float) -> dict[str, Any]:
    """Move the clock to the schedule's next due time ``seconds`` on; its last run once done."""
    hes.clock.advance(seconds)
    due = dt.datetime.fromtimestamp(hes.clock.now(), dt.UTC).isoformat().replace("+00:00", "Z")

    def ran() -> bool:
        last = status_of(scheduler, name)["last_run"]
        return last is not None and last["started_at"] == due and name not in scheduler.runs

    await until(ran, f"the run of {name} due at {due}")
    last: dict[str, Any] = status_of(scheduler, name)["last_run"]
    return last


# -- a run from its cron time to its record -------------------------------------------------------


async def test_a_cron_run_reads_its_group_and_is_recorded(hes: Hes) -> None:
    await hes.meters(
        *(entry(f"A-{n}", tags=(("feeder", "F1"),)) for n in range(1, 5)),
        entry("B-1", vendor="kalpa", tags=(("feeder", "F1"),)),  # another vendor
        entry("C-1", tags=(("feeder", "F2"),)),  # another feeder
    )
    defined = schedules(
        daily={
            "cron": "0 0 * * *",
            "read": {"quantities": ["energy_active_import"]},
            "vendors": ["is15959"],
            "tags": {"feeder": "F1"},
            "jitter": "none",
        }
    )
    scheduler = hes.scheduler(defined)
    assert hes.reader is not None
    hes.reader.offline.add("A-4")
    hes.reader.failing.add("A-3")
    await hes.start(scheduler)
    assert status_of(scheduler, "daily")["next_run"] == "2025-12-31T18:30:00Z"  # 00:00 IST
    assert status_of(scheduler, "daily")["state"] == "idle"

    await tick(hes, scheduler, "daily", 60)  # to 00:00 IST

    assert sorted(m for m, *_ in hes.reader.log) == ["A-1", "A-2", "A-3"]
    assert sorted((r.meter_id, r.source.value) for r in hes.sink.records) == [
        ("A-1", "schedule"),
        ("A-2", "schedule"),
    ]
    shown = status_of(scheduler, "daily")
    assert shown["next_run"] == "2026-01-01T18:30:00Z"
    last = shown["last_run"]
    assert (last["state"], last["trigger"], last["started_at"]) == (
        "finished",
        "cron",
        "2025-12-31T18:30:00Z",
    )
    assert {k: last[k] for k in ("selected", "succeeded", "failed", "skipped", "missed")} == {
        "selected": 4,
        "succeeded": 2,
        "failed": 1,
        "skipped": 1,
        "missed": 0,
    }
    assert last["success_ratio"] == pytest.approx(2 / 3, abs=1e-4)  # of those reachable
    assert last["detail"] == "meter A-3: no answer"
    stored = (await ScheduleStore(hes.store).last_runs())["daily"]
    assert stored.to_json() == last


async def test_a_run_selects_its_group_across_registry_pages(
    hes: Hes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("hesd.scheduler.SELECT_PAGE", 2)
    await hes.meters(
        *(entry(f"A-{n}", tags=(("feeder", "F1"),)) for n in range(1, 6)),
        entry("A-3b", transport="serial", address="/dev/ttyA:17", tags=(("feeder", "F1"),)),
        entry("B-1", tags=(("feeder", "F2"),)),
    )
    defined = schedules(
        q={
            "cron": "@daily",
            "read": {"quantities": ["energy_active_import"]},
            "transports": ["tcp-in"],
            "tags": {"feeder": "F1"},
            "jitter": "none",
        }
    )
    scheduler = hes.scheduler(defined)
    await hes.start(scheduler)
    run = scheduler.trigger("q")
    await finish(run)
    assert hes.reader is not None
    assert sorted(m for m, *_ in hes.reader.log) == ["A-1", "A-2", "A-3", "A-4", "A-5"]
    assert status_of(scheduler, "q")["last_run"]["selected"] == 5


async def test_the_last_run_survives_a_restart_and_a_cut_run_is_interrupted(hes: Hes) -> None:
    await hes.meters(entry("A-1"))
    defined = schedules(
        q={"cron": "@hourly", "read": {"quantities": ["energy_active_import"]}, "jitter": "none"}
    )
    first = hes.scheduler(defined)
    await hes.start(first)
    await finish(first.trigger("q"))
    first.close()
    await hes.tasks.pop()
    # a run a previous hesd left running (it stopped mid-run)
    cut = RunRecord("q", MIDNIGHT_IST + 5, "cron", "running", None, (3,) + (0,) * 11)
    await ScheduleStore(hes.store).save(cut, keep=100)

    second = hes.scheduler(defined)
    with capture_logs() as logs:
        await hes.start(second)
    last = status_of(second, "q")["last_run"]
    assert (last["state"], last["selected"], last["detail"]) == (
        "interrupted",
        3,
        "hesd stopped during the run",
    )
    assert {"event": "scheduler.runs_interrupted", "runs": 1, "log_level": "warning"} in logs
    [newest, older] = await second.history("q")
    assert (newest.state, older.state, older.count("succeeded")) == ("interrupted", "finished", 1)


async def test_a_run_still_going_makes_the_next_due_one_skip(hes: Hes) -> None:
    await hes.meters(entry("A-1"))
    defined = schedules(
        q={
            "cron": "* * * * *",
            "read": {"quantities": ["energy_active_import"]},
            "window": 300,
            "jitter": "none",
        }
    )
    hes.reader = FakeReader(hes.clock, hes.entries, hold=asyncio.Event())
    scheduler = hes.scheduler(defined)
    await hes.start(scheduler)
    hes.clock.advance(60)
    await until(lambda: hes.reader is not None and hes.reader.in_flight == 1, "the read")
    run = scheduler.runs["q"]
    with capture_logs() as logs:
        hes.clock.advance(60)
        await until(lambda: any(e["event"] == "scheduler.overrun" for e in logs), "an overrun")
    assert scheduler.runs["q"] is run
    with pytest.raises(SchedulerError, match="schedule q is running"):
        scheduler.trigger("q")
    hes.reader.hold.set()  # type: ignore[union-attr]
    await finish(run)


# -- slots in the window --------------------------------------------------------------------------


async def test_hash_jitter_spreads_reads_over_the_window_and_keeps_each_slot(hes: Hes) -> None:
    ids = [f"M-{n:03d}" for n in range(40)]
    await hes.meters(*(entry(m) for m in ids))
    window = 100.0
    defined = schedules(
        q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}, "window": window}
    )
    scheduler = hes.scheduler(defined)
    await hes.start(scheduler)
    offsets = []
    reader = hes.reader
    assert reader is not None
    for _ in range(2):
        reader.log.clear()
        run = scheduler.trigger("q")
        await step_through(hes, run)
        reads = {m: at - run.started_at for m, _, _, _, at in reader.log}
        assert sorted(reads) == ids
        offsets.append(reads)
        assert max(reads.values()) <= 0.9 * window + 1  # the last tenth is slack
        assert len({int(v) for v in reads.values()}) > 20  # spread, not bunched
    assert offsets[0] == offsets[1]  # each meter keeps its slot from run to run


# -- budgets --------------------------------------------------------------------------------------


async def test_no_link_and_not_the_share_carry_more_than_they_allow(hes: Hes) -> None:
    serial = [
        entry(f"S-{n:02d}", transport="serial", address=f"/dev/ttyA:{n + 16}") for n in range(12)
    ]
    dialled = [entry(f"T-{n:02d}", transport="tcp-out", address="10.1.1.1:4059") for n in range(12)]
    dialling = [entry(f"U-{n:02d}") for n in range(16)]
    await hes.meters(*serial, *dialled, *dialling)
    defined = schedules(
        q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}, "jitter": "none"}
    )
    scheduler = hes.scheduler(defined, max_requests=10, reserved=4, per_destination=3)
    assert scheduler.capacity == 6
    reader = hes.reader
    assert reader is not None
    reader.hold = asyncio.Event()
    await hes.start(scheduler)
    run = scheduler.trigger("q")
    # the share fills up: one on the bus, three to the host, two meters of their own
    await until(lambda: reader.in_flight == 6, "six reads in flight")
    assert reader.most_by_link == {
        "serial:/dev/ttyA": 1,
        "tcp-out:10.1.1.1": 3,
        "tcp-in:U-00": 1,
        "tcp-in:U-01": 1,
    }
    reader.hold.set()
    await finish(run)
    assert len(reader.log) == 40
    assert reader.most == 6
    assert max(reader.most_by_link.values()) == 3
    assert reader.most_by_link["serial:/dev/ttyA"] == 1
    last = status_of(scheduler, "q")["last_run"]
    assert (last["succeeded"], last["max_in_flight"], last["link_overruns"]) == (40, 6, 0)
    assert last["max_link_in_flight"] == 3


async def test_the_share_is_max_in_flight_within_what_the_reserve_leaves(hes: Hes) -> None:
    defined = schedules(q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}})
    assert hes.scheduler(defined, max_requests=100, reserved=4, in_flight=30).capacity == 30
    assert hes.scheduler(defined, max_requests=20, reserved=4, in_flight=30).capacity == 16
    assert hes.scheduler(defined, max_requests=4, reserved=64, in_flight=30).capacity == 1


def test_a_meter_waiting_for_its_link_holds_nothing() -> None:
    budget = Budget(2)
    bus = link_of(entry("S-1", transport="serial", address="/dev/ttyB:17"), 4)
    assert bus == ("serial:/dev/ttyB", 1)
    budget.take(*bus)
    assert not budget.room(*bus)  # the bus is busy
    assert budget.room("tcp-in:U-1", 1)  # the share is not
    budget.take("tcp-in:U-1", 1)
    assert budget.full
    budget.give_back(bus[0])
    assert budget.room(*bus)
    assert budget.held == 1
    with pytest.raises(ValueError, match="no room"):
        budget.take("tcp-in:U-1", 1)


async def test_runs_of_higher_priority_take_the_share_first(hes: Hes) -> None:
    await hes.meters(*(entry(f"M-{n}") for n in range(4)))
    read = {"quantities": ["energy_active_import"]}
    defined = schedules(
        low={"cron": "@daily", "read": read, "jitter": "none", "priority": 1},
        high={"cron": "@daily", "read": read, "jitter": "none", "priority": 9},
    )
    scheduler = hes.scheduler(defined, max_requests=2, reserved=1)
    assert scheduler.capacity == 1
    reader = hes.reader
    assert reader is not None
    reader.hold = asyncio.Event()
    await hes.start(scheduler)
    low = scheduler.trigger("low")
    await until(lambda: reader.in_flight == 1, "low's first read")
    high = scheduler.trigger("high")
    await until(lambda: sum(map(len, high.ready.values())) == 4, "high's meters ready")
    reader.hold.set()
    await finish(high)
    await finish(low)
    order = [meter for meter, *_ in reader.log]
    # low's first meter was in flight; then all of high's before the rest of low's
    assert order == ["M-0", "M-0", "M-1", "M-2", "M-3", "M-1", "M-2", "M-3"]


# -- commands first -------------------------------------------------------------------------------


@dataclass
class SessionOrder:
    """The router's side of the fake meters: a command takes the meter's session lock too."""

    reader: FakeReader

    async def reachable(self, meter_id: str) -> bool:
        return True

    async def request(self, meter_id: str, op: Callable[[MeterSession], Awaitable[_T]]) -> _T:
        async with self.reader.lock(meter_id):
            self.reader.log.append((meter_id, "command", 0.0, 0.0, self.reader.clock.now()))
            return await op(cast(MeterSession, None))


async def test_a_command_runs_before_the_meters_remaining_scheduled_reads(hes: Hes) -> None:
    await hes.meters(entry("M-1"))

    async def noop(session: MeterSession, cmd: Any) -> Outcome:
        return Outcome(True, "done")

    hes.reader = FakeReader(hes.clock, hes.entries, hold=asyncio.Event())
    router = CommandRouter(
        hes.store, SessionOrder(hes.reader), {"noop": CommandKind("noop", noop)}, None, workers=4
    )
    hes.tasks.append(asyncio.create_task(router.run(), name="router:commands"))
    defined = schedules(ev={"cron": "@daily", "read": {"events": "all"}, "jitter": "none"})
    scheduler = hes.scheduler(defined, commands=router)
    await hes.start(scheduler)
    run = scheduler.trigger("ev")
    await until(lambda: hes.reader is not None and hes.reader.in_flight == 1, "the first read")
    await router.submit("M-1", "noop", {}, "test", 60)  # during the run
    assert router.has_work("M-1")
    hes.reader.hold.set()
    await finish(run)
    kinds = [what for _, what, *_ in hes.reader.log]
    assert kinds == [
        "events:voltage",
        "command",
        "events:current",
        "events:power",
        "events:transaction",
        "events:other",
        "events:non_rollover",
        "events:control",
    ]
    assert not router.has_work("M-1")
    router.close()


# -- outbox pressure ------------------------------------------------------------------------------


async def test_outbox_pressure_pauses_new_reads_until_it_clears(hes: Hes) -> None:
    await hes.meters(*(entry(f"M-{n}") for n in range(5)))
    defined = schedules(
        q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}, "jitter": "none"}
    )
    scheduler = hes.scheduler(defined)
    await hes.start(scheduler)
    hes.sink.pressure = True
    with capture_logs() as logs:
        run = scheduler.trigger("q")
        for _ in range(3):  # it looks again each second, and says so once
            await until(lambda: hes.clock.sleepers >= 2, "the paused run to look again later")
            hes.clock.advance(1)
        assert hes.reader is not None
        assert hes.reader.log == []
        assert status_of(scheduler, "q")["state"] == "paused"
        assert scheduler.status()["paused"] is True
        hes.sink.pressure = False
        hes.clock.advance(1)
        await finish(run)
    events = [e["event"] for e in logs]
    assert events.count("scheduler.paused") == 1
    assert events.count("scheduler.resumed") == 1
    assert events.index("scheduler.paused") < events.index("scheduler.resumed")
    assert len(hes.reader.log) == 5
    assert status_of(scheduler, "q")["last_run"]["succeeded"] == 5


async def test_its_own_reads_filling_the_real_outbox_pause_the_rest_until_it_drains(
    hes: Hes,
) -> None:
    """The real Outbox: one meter's records take it past 90 % of its budget mid-run; the other
    meters do not start (paused, said once) until the forwarder has released rows."""
    await hes.meters(*(entry(f"M-{n}") for n in range(4)))
    defined = schedules(
        q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}, "jitter": "none"}
    )
    assert hes.reader is None
    hes.reader = FakeReader(hes.clock, hes.entries)
    step = Step("quantities", quantities=("energy_active_import",))
    [scheduled] = hes.reader._answer("M-0", step).readings
    [push] = hes.reader._answer("P-1", step).readings
    push = dataclasses.replace(push, source=Source.PUSH)

    # ten pushes (one outbox row) are below 90 % of the budget, with one scheduled reading not
    outbox = Outbox(
        hes.store, int((len(payload([push] * 10)) + len(payload([scheduled]))) / PRESSURE)
    )
    scheduler = Scheduler(
        SchedulerConfig("Asia/Kolkata", 0, 1, 3, 100),  # one meter at a time
        defined,
        store=hes.store,
        registry=hes.registry,
        reader=hes.reader,
        sink=outbox,
        normalisers=lambda: NORMALISERS,
        commands=None,
        max_requests=100,
        per_destination=4,
        clock=hes.clock,
    )
    await hes.start(scheduler)
    await outbox.offer([push] * 10)
    assert not outbox.pressure
    with capture_logs() as logs:
        run = scheduler.trigger("q")
        await until(lambda: outbox.pressure, "the first meter's reading to reach the outbox")
        for _ in range(3):  # looks again each second while paused, and says so once
            await until(
                lambda: not run.jobs and hes.clock.sleepers >= 2,
                "the first meter's read to end and the paused run to look again later",
            )
            hes.clock.advance(1)
        assert [m for m, *_ in hes.reader.log] == ["M-0"]
        assert status_of(scheduler, "q")["state"] == "paused"
        assert scheduler.status()["paused"] is True
        outbox.released(outbox.bytes)  # the forwarder: the MDM took everything
        hes.clock.advance(1)
        await finish(run)
    events = [e["event"] for e in logs]
    assert events.count("scheduler.paused") == 1
    assert events.count("scheduler.resumed") == 1
    assert events.index("scheduler.paused") < events.index("scheduler.resumed")
    assert [m for m, *_ in hes.reader.log] == ["M-0", "M-1", "M-2", "M-3"]
    last = status_of(scheduler, "q")["last_run"]
    assert (last["succeeded"], last["failed"], last["readings"]) == (4, 0, 4)
    assert outbox.refused == 0


async def test_what_could_not_start_within_the_window_is_missed(hes: Hes) -> None:
    await hes.meters(*(entry(f"M-{n}") for n in range(5)))
    defined = schedules(
        q={"cron": "@daily", "read": {"quantities": ["energy_active_import"]}, "window": 10}
    )
    scheduler = hes.scheduler(defined)
    await hes.start(scheduler)
    hes.sink.pressure = True
    await step_through(hes, scheduler.trigger("q"))
    last = status_of(scheduler, "q")["last_run"]
    assert (last["missed"], last["succeeded"], last["success_ratio"]) == (5, 0, 0.0)
    assert last["detail"] == "5 meters could not start within the window"


# -- profiles: back-fill and holes ----------------------------------------------------------------


async def test_back_fill_reads_only_what_hesd_does_not_have(hes: Hes) -> None:
    await hes.meters(entry("M-1"))
    defined = schedules(
        bl={
            "cron": "*/30 * * * *",
            "read": {"profile": "block_load"},
            "jitter": "none",
            "max_backfill": 4 * HALF_HOUR,
        }
    )
    scheduler = hes.scheduler(defined)
    reader = hes.reader
    assert reader is not None
    await hes.start(scheduler)
    await tick(hes, scheduler, "bl", 60)  # to 00:00 IST
    first = [r.timestamp.timestamp() for r in hes.sink.records]
    assert first == [MIDNIGHT_IST - HALF_HOUR * n for n in (4, 3, 2, 1, 0)]  # max_backfill

    # the meter is away for a day; back, it is read from its last row on, no further back
    # than max_backfill, and nothing hesd already has is read again
    reader.offline.add("M-1")
    for _ in range(48):
        assert (await tick(hes, scheduler, "bl", HALF_HOUR))["skipped"] == 1
    reader.offline.clear()
    reader.log.clear()
    hes.sink.records.clear()
    await tick(hes, scheduler, "bl", HALF_HOUR)
    now = hes.clock.now()
    [(_, _, start, end, _)] = reader.log
    assert (start, end) == (now - 4 * HALF_HOUR, now + READ_AHEAD)
    got = [r.timestamp.timestamp() for r in hes.sink.records]
    assert got == [now - HALF_HOUR * n for n in (4, 3, 2, 1, 0)]

    # the next run reads from just after the newest row: one new row, nothing twice
    reader.log.clear()
    hes.sink.records.clear()
    await tick(hes, scheduler, "bl", HALF_HOUR)
    [(_, _, start, end, _)] = reader.log
    assert (start, end) == (now + 1, now + HALF_HOUR + READ_AHEAD)
    assert [r.timestamp.timestamp() for r in hes.sink.records] == [now + HALF_HOUR]


async def test_holes_are_recorded_read_again_and_given_up(hes: Hes) -> None:
    await hes.meters(entry("M-1"), entry("M-2"))
    defined = schedules(
        bl={
            "cron": "0 * * * *",
            "read": {"profile": "block_load"},
            "jitter": "none",
            "max_backfill": 8 * HALF_HOUR,
        }
    )
    scheduler = hes.scheduler(defined, retries=2)
    reader = hes.reader
    assert reader is not None
    lost = {MIDNIGHT_IST - 5 * HALF_HOUR, MIDNIGHT_IST - 4 * HALF_HOUR}
    gone = MIDNIGHT_IST - 2 * HALF_HOUR
    reader.gaps = {"M-1": set(lost), "M-2": {gone}}
    await hes.start(scheduler)
    assert (await tick(hes, scheduler, "bl", 60))["holes"] == 3
    holes = await ScheduleStore(hes.store).holes("block_load")
    assert [(h.start_at, h.end_at, h.attempts) for h in holes["M-1"]] == [(min(lost), max(lost), 1)]

    # M-1's meter has found its rows; M-2's never will
    reader.gaps["M-1"].clear()
    reader.log.clear()
    hes.sink.records.clear()
    await tick(hes, scheduler, "bl", 2 * HALF_HOUR)
    hole_reads = [(m, s, e) for m, _, s, e, _ in reader.log if e < MIDNIGHT_IST]
    assert hole_reads == [("M-1", min(lost), max(lost)), ("M-2", gone, gone)]
    refilled = sorted(r.timestamp.timestamp() for r in hes.sink.records if r.meter_id == "M-1")
    assert refilled[:2] == sorted(lost)
    holes = await ScheduleStore(hes.store).holes("block_load")
    assert "M-1" not in holes
    assert [(h.start_at, h.attempts) for h in holes["M-2"]] == [(gone, 2)]

    with capture_logs() as logs:
        await tick(hes, scheduler, "bl", 2 * HALF_HOUR)
    assert await ScheduleStore(hes.store).holes("block_load") == {}
    [abandoned] = [e for e in logs if e["event"] == "scheduler.hole_abandoned"]
    assert (abandoned["meter"], abandoned["intervals"], abandoned["attempts"]) == ("M-2", 1, 2)


# -- reload ---------------------------------------------------------------------------------------


async def test_reload_cancels_a_removed_schedules_run_and_keeps_the_others(hes: Hes) -> None:
    await hes.meters(*(entry(f"M-{n}") for n in range(3)))
    read = {"quantities": ["energy_active_import"]}
    defined = schedules(
        a={"cron": "@daily", "read": read, "jitter": "none"},
        b={"cron": "@hourly", "read": read, "jitter": "none"},
    )
    scheduler = hes.scheduler(defined, max_requests=2, reserved=1)
    reader = hes.reader
    assert reader is not None
    reader.hold = asyncio.Event()
    await hes.start(scheduler)
    run = scheduler.trigger("a")
    await until(lambda: reader.in_flight == 1, "a read in flight")
    next_b = status_of(scheduler, "b")["next_run"]
    with capture_logs() as logs:
        scheduler.reload(scheduler.config, schedules(b={"cron": "@hourly", "read": read}))
    reader.hold.set()
    await finish(run)
    assert [s["name"] for s in scheduler.status()["schedules"]] == ["b"]
    assert status_of(scheduler, "b")["next_run"] == next_b  # unchanged: same due time
    [stored] = await scheduler.history("a")
    assert (stored.state, stored.count("succeeded")) == ("cancelled", 1)  # in flight: finished
    assert stored.detail == "the schedule was removed by a reload"
    assert any(e["event"] == "scheduler.reloaded" for e in logs)


def test_run_states_only_move_forward() -> None:
    assert RUN_TRANSITIONS
    ends = [state for state, nexts in RUN_TRANSITIONS.items() if not nexts]
    assert sorted(ends) == ["cancelled", "finished"]
    assert len(RUN_FIELDS) == 12
