"""The bulk scheduler: reads groups of meters at cron times, within the session budgets.

Each ``[schedules.NAME]`` of hesd.toml (``hesd/config_schedules.py``) names a cron time (in
``scheduler.time_zone``), a group of meters (vendors, transports, tags: all must match) and what
to read of them (quantities, a profile, event logs). At each due time a *run* selects the group
from the registry and gives each meter a slot in the run's window: with ``jitter = "hash"`` a
stable place in the first 90 % of the window (a hash of the schedule's name and the meter id, so
a meter keeps its slot from run to run and the last 10 % is slack), with ``"none"`` at once. At
its slot, a meter that cannot be reached is *skipped*; one whose read cannot start before the
window ends is *missed*; the others are read (``hesd/schedule_reads.py``: their steps) and
*succeed* or *fail*. The records go to the outbox as ``Source.SCHEDULE``.

Budgets (``hesd/schedule_budget.py``). Every request goes through ``SessionManager.request``
(the fleet budget ``limits.max_requests``, the request time cap). A meter at its slot is
*ready*; it starts only when fewer than ``scheduler.max_in_flight`` and fewer than
``max_requests - scheduler.reserved_requests`` meters (at least 1) are being read by schedules,
and its link carries fewer than it allows (one per serial
bus, ``tcp.per_destination`` per dial-out host, one per meter otherwise). So commands and API
reads take the fleet budget first and the reserve stays theirs; a meter waiting for a busy bus
holds nothing; and among runs that compete, the higher ``priority`` starts its meters first.

Commands first. Before each request to a meter the scheduler waits while the command router
has work for that meter (``CommandRouter.has_work``): a command submitted during a run runs
before that meter's remaining scheduled requests (waiting at most until the window ends).

Outbox pressure. While ``Outbox.pressure`` is on (90 % of its disk budget), no new scheduled
read starts: the scheduler logs ``scheduler.paused`` once, shows ``paused`` in its status, and
``scheduler.resumed`` when the pressure is gone. Reads in flight finish. Paused time is not
added to the window: what could not start in it is missed, and a profile's back-fill reads it
at the next run.

A run's states, counts and waiting meters are ``hesd/schedule_run.py``'s ``Run``. Run records
(``hesd/store/schedules.py``) are written at the start and the end of each run, so
``hesctl schedule`` shows the last run after a restart. When hesd stops, a run in progress
ends ``cancelled`` ("hesd is stopping"; its reads in flight are cancelled, what they had
delivered stays); one that a crash cut short is still ``running`` on disk and becomes
``interrupted`` at the next start. A run due while the previous run of the same schedule is
still going is skipped (``scheduler.overrun``). Runs missed while hesd was down are not made
up: the next run's back-fill reads what they would have.

SIGHUP (``reload``): a run in progress finishes under the definition it started with; a run of
a schedule the new file removes or disables is cancelled (no new reads start; reads in flight
finish; its record says ``cancelled``). New cron times apply from the next due time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Final, Protocol

import structlog

from adapters.normalise import Batch, Normaliser
from hesd.config import ScheduleConfig, SchedulerConfig
from hesd.schedule_budget import Budget, link_of
from hesd.schedule_reads import (
    Plan,
    Reader,
    Step,
    hole_statements,
    plan,
    slot_fraction,
)
from hesd.schedule_run import Run
from hesd.store import MeterRecord, Registry, Statement, Store
from hesd.store.schedules import (
    RunRecord,
    ScheduleStore,
    read_mark,
    set_mark,
)
from hesd.timefmt import iso
from hesd.uplink.outbox import Record
from protocols.errors import HesdError

__all__ = ["Clock", "Commands", "Scheduler", "SchedulerError", "Sink", "WallClock"]

log = structlog.get_logger("hesd.scheduler")

SPREAD: Final = 0.9  # of the window: where slots go; the rest is slack
PRESSURE_POLL: Final = 1.0  # seconds between looks at the outbox while paused
SELECT_PAGE: Final = 5000  # meters per registry query while a run selects its group


class SchedulerError(HesdError):
    """A request of the scheduler that cannot be served (unknown schedule, already running)."""


class Clock(Protocol):
    """Wall-clock time for the scheduler; tests give one they move by hand."""

    def now(self) -> float: ...

    async def sleep_until(self, when: float) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        # in steps, so a step of the system clock (NTP) moves the wake-up with it
        while (left := when - time.time()) > 0:  # noqa: ASYNC110 - it waits for a time, not an event
            await asyncio.sleep(min(left, 30.0))


class Commands(Protocol):
    """What the scheduler needs of the command router."""

    def has_work(self, meter_id: str) -> bool: ...

    async def wait_idle(self, meter_id: str) -> None: ...


class Sink(Protocol):
    """Where records go (the outbox)."""

    @property
    def pressure(self) -> bool: ...

    def offer(self, records: Sequence[Record]) -> asyncio.Future[None]: ...


class Scheduler:
    """See the module docstring. ``run()`` is the scheduler's task; ``close()`` ends it."""

    def __init__(
        self,
        config: SchedulerConfig,
        schedules: Sequence[ScheduleConfig],
        *,
        store: Store,
        registry: Registry,
        reader: Reader,
        sink: Sink,
        normalisers: Callable[[], Mapping[str, Normaliser]],
        commands: Commands | None,
        max_requests: int,
        per_destination: int,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.schedules = tuple(schedules)
        self._db = ScheduleStore(store)
        self._registry = registry
        self._reader = reader
        self._sink = sink
        self._normalisers = normalisers
        self._commands = commands
        self._max_requests = max_requests
        self._per_destination = per_destination
        self._clock = clock or WallClock()
        self._budget = Budget(self.capacity)
        self._link_load: dict[str, int] = {}
        self.in_flight = 0  # scheduled requests in flight now
        self.runs: dict[str, Run] = {}  # in progress, by schedule
        self._last: dict[str, RunRecord] = {}
        self._next: dict[str, float] = {}
        self._changed = asyncio.Event()
        self._stop = asyncio.Event()
        self._paused_at: float | None = None
        self.ready = asyncio.Event()  # set once the last runs are loaded and times planned

    @property
    def capacity(self) -> int:
        """Meters read at once: ``max_in_flight``, within what the budget leaves after the
        reserve."""
        left = max(1, self._max_requests - self.config.reserved_requests)
        return min(self.config.max_in_flight, left)

    # -- the task ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start each enabled schedule's runs at their due times until ``close()``."""
        now = self._clock.now()
        interrupted = await self._db.interrupt(now)
        if interrupted:
            log.warning("scheduler.runs_interrupted", runs=interrupted)
        self._last = await self._db.last_runs()
        self._plan_next(now, ())
        log.info("scheduler.started", schedules=self._enabled(), time_zone=self.config.time_zone)
        self.ready.set()
        try:
            while not self._stop.is_set():
                self._changed.clear()
                now = self._clock.now()
                for schedule in self.schedules:
                    due = self._next.get(schedule.name)
                    if schedule.enabled and due is not None and due <= now:
                        self._next[schedule.name] = self._next_time(schedule, now)
                        self._start(schedule, "cron", due)
                wake = min(self._next.values(), default=None)
                await self._race([self._changed.wait()], wake, "scheduler:sleep")
        finally:
            runs = list(self.runs.values())
            for run in runs:
                run.stop("hesd is stopping")
                for job in run.jobs:
                    job.cancel()
            await asyncio.gather(*(r.task for r in runs if r.task), return_exceptions=True)

    def close(self) -> None:
        """Stop: runs in progress end as ``cancelled`` (hesd is stopping)."""
        self._stop.set()
        self._changed.set()

    def reload(self, config: SchedulerConfig, schedules: Sequence[ScheduleConfig]) -> None:
        """New definitions (SIGHUP): see the module docstring."""
        old = {s.name: s for s in self.schedules}
        zone_changed = config.time_zone != self.config.time_zone
        self.config, self.schedules = config, tuple(schedules)
        self._budget.capacity = self.capacity
        self._pump()
        fresh = {s.name: s for s in self.schedules}
        for name, run in self.runs.items():
            now_is = fresh.get(name)
            if now_is is None or not now_is.enabled:
                word = "removed" if now_is is None else "disabled"
                run.stop(f"the schedule was {word} by a reload")
        changed = [s.name for s in self.schedules if zone_changed or old.get(s.name) != s]
        self._plan_next(self._clock.now(), set(old) - set(changed))
        self._changed.set()
        log.info("scheduler.reloaded", schedules=self._enabled(), changed=changed)

    def trigger(self, name: str) -> Run:
        """Run the schedule ``name`` now (``hesctl schedule run``), enabled or not."""
        schedule = self.schedule(name)
        if name in self.runs:
            raise SchedulerError(
                f"schedule {name} is running (since {iso(self.runs[name].started_at)})"
            )
        run = self._start(schedule, "manual", self._clock.now())
        assert run is not None
        return run

    def schedule(self, name: str) -> ScheduleConfig:
        for schedule in self.schedules:
            if schedule.name == name:
                return schedule
        raise KeyError(name)

    def _enabled(self) -> list[str]:
        return [s.name for s in self.schedules if s.enabled]

    def _next_time(self, schedule: ScheduleConfig, now: float) -> float:
        after = dt.datetime.fromtimestamp(now, dt.UTC)
        found = schedule.cron.next_after(after, self.config.zone)
        assert found is not None  # CronSpec.parse refuses specs that never match
        return found.timestamp()

    def _plan_next(self, now: float, keep: Collection[str]) -> None:
        for schedule in self.schedules:
            if not schedule.enabled:
                self._next.pop(schedule.name, None)
            elif schedule.name not in keep or schedule.name not in self._next:
                self._next[schedule.name] = self._next_time(schedule, now)
        for name in set(self._next) - {s.name for s in self.schedules}:
            del self._next[name]

    async def _race(self, awaitables: list[Awaitable[Any]], until: float | None, name: str) -> None:
        """Wait for the first of ``awaitables`` or the clock reaching ``until``."""
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(_wrap(a), name=name) for a in awaitables]
        if until is not None:
            tasks.append(loop.create_task(self._clock.sleep_until(until), name=name))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- runs --------------------------------------------------------------------------------

    def _start(self, schedule: ScheduleConfig, trigger: str, started_at: float) -> Run | None:
        if schedule.name in self.runs:
            log.warning(
                "scheduler.overrun",
                schedule=schedule.name,
                running_since=iso(self.runs[schedule.name].started_at),
                detail="the previous run is still going; this one is skipped",
            )
            return None
        run = Run(schedule, trigger, started_at)
        self.runs[schedule.name] = run
        run.task = asyncio.get_running_loop().create_task(
            self._execute(run), name=f"schedule:{schedule.name}:run"
        )
        return run

    async def _execute(self, run: Run) -> None:
        name = run.schedule.name
        try:
            await self._db.save(run.record(), self.config.keep_runs)
            meters = await self._select(run.schedule)
            run.counts["selected"] = len(meters)
            log.info(
                "scheduler.run_started", schedule=name, trigger=run.trigger, meters=len(meters)
            )
            run.known = await self._known(run.schedule)
            await self._dispatch(run, meters)
        except Exception as exc:  # a bug must end this run, not the scheduler
            log.exception("scheduler.run_crashed", schedule=name)
            run.stop(f"internal error: {exc!r}")
        finally:
            if run.jobs:  # reads in flight finish (hesd stopping has cancelled them)
                await asyncio.gather(*list(run.jobs), return_exceptions=True)
            now = self._clock.now()
            run.end(now)
            record = run.record()
            ratio = record.success_ratio
            log.info(
                "scheduler.run_finished",
                schedule=name,
                state=record.state,
                seconds=round(now - run.started_at, 3),
                success_ratio=None if ratio is None else round(ratio, 4),
                **run.counts,
            )
            try:
                await self._db.save(record, self.config.keep_runs)
            except HesdError as exc:
                log.error("scheduler.run_not_saved", schedule=name, error=str(exc))
            finally:  # the API shows it as the last run once it is on disk
                self._last[name] = record
                del self.runs[name]
                if not self.runs:
                    self._resumed(now)

    async def _select(self, schedule: ScheduleConfig) -> list[MeterRecord]:
        vendor = schedule.vendors[0] if len(schedule.vendors) == 1 else None
        return [
            record
            async for record in self._registry.each(vendor=vendor, page=SELECT_PAGE)
            if _selects(schedule, record)
        ]

    async def _known(self, schedule: ScheduleConfig) -> Plan:
        read, known = schedule.read, Plan()
        if read.profile:
            key = read_mark("profile", read.profile)
            known.marks[key] = await self._db.marks(key)
            known.holes = await self._db.holes(read.profile)
        elif read.events:
            for category in read.categories:
                key = read_mark("events", category)
                known.marks[key] = await self._db.marks(key)
        return known

    async def _dispatch(self, run: Run, meters: list[MeterRecord]) -> None:
        """Make each meter ready at its slot (``_pump`` starts it when there is room), then
        wait for the reads to end; what cannot start within the window is missed."""
        spread = run.schedule.window * SPREAD if run.schedule.jitter == "hash" else 0.0
        order = sorted(
            ((slot_fraction(run.schedule.name, m.meter_id) * spread, m) for m in meters),
            key=lambda item: (item[0], item[1].meter_id),
        )
        for index, (offset, record) in enumerate(order):
            slot = run.started_at + offset
            if slot > self._clock.now() and not run.stopping:
                await self._race([run.wake.wait()], slot, f"schedule:{run.schedule.name}:slot")
            await self._room(run)
            if run.stopping:
                break
            if self._clock.now() >= run.deadline:
                run.missed(len(order) - index)
                break
            link, _ = link_of(record.entry, self._per_destination)
            run.ready.setdefault(link, deque()).append(record)
            self._pump()
        while run.ready or run.jobs:
            run.progress.clear()
            now = self._clock.now()
            if run.stopping:
                run.ready.clear()  # a cancelled run leaves them uncounted
            elif run.ready and now >= run.deadline:
                run.missed(sum(map(len, run.ready.values())))
                run.ready.clear()
            if not run.ready and not run.jobs:
                break
            wake = run.deadline if run.ready else None
            if run.ready and self._sink.pressure:  # the outbox filled up mid-run: look again
                self._pausing()
                wake = min(run.deadline, now + PRESSURE_POLL)
            await self._race([run.progress.wait(), run.wake.wait()], wake, "schedule:wait")
            if run.ready and not self._sink.pressure:
                self._resumed(self._clock.now())
                self._pump()

    def _pump(self) -> None:
        """Start ready meters while the budget and their links have room: runs of higher
        priority first, and within a run the links in turn."""
        if self._sink.pressure:
            return
        now = self._clock.now()
        for run in sorted(self.runs.values(), key=lambda r: -r.schedule.priority):
            if run.stopping or now >= run.deadline:  # what is left is missed (_dispatch)
                continue
            ready = run.ready
            for link in list(ready):
                if self._budget.full:
                    return
                _, allowed = link_of(ready[link][0].entry, self._per_destination)
                while ready.get(link) and self._budget.room(link, allowed):
                    record = ready[link].popleft()
                    if not ready[link]:
                        del ready[link]
                    self._budget.take(link, allowed)
                    job = asyncio.get_running_loop().create_task(
                        self._meter(run, record), name=f"meter:{record.meter_id}:scheduled"
                    )
                    run.jobs.add(job)
                    job.add_done_callback(self._job_done(run, link))

    def _job_done(self, run: Run, link: str) -> Callable[[asyncio.Task[None]], None]:
        def done(job: asyncio.Task[None]) -> None:
            run.jobs.discard(job)
            self._budget.give_back(link)
            run.progress.set()
            self._pump()

        return done

    async def _room(self, run: Run) -> None:
        """Wait while the outbox is under pressure (until the window ends)."""
        while self._sink.pressure and not run.stopping and self._clock.now() < run.deadline:
            self._pausing()
            await self._race(
                [run.wake.wait()], self._clock.now() + PRESSURE_POLL, "scheduler:paused"
            )
        if not self._sink.pressure:
            self._resumed(self._clock.now())

    def _pausing(self) -> None:
        """Outbox pressure keeps reads from starting: said once, until ``_resumed``."""
        if self._paused_at is None:
            self._paused_at = self._clock.now()
            log.warning(
                "scheduler.paused",
                reason="outbox pressure",
                detail="the outbox is at 90 % of uplink.max_backlog_bytes; "
                "no scheduled read starts until it drains",
                runs=sorted(self.runs),
            )

    def _resumed(self, now: float) -> None:
        if self._paused_at is not None and not self._sink.pressure:
            log.info("scheduler.resumed", paused_seconds=round(now - self._paused_at, 3))
            self._paused_at = None

    # -- one meter ---------------------------------------------------------------------------

    async def _meter(self, run: Run, record: MeterRecord) -> None:
        meter_id = record.meter_id
        counts = run.counts
        try:
            if not await self._reader.reachable(meter_id):
                counts["skipped"] += 1
                return
            steps = plan(
                run.schedule, record.entry, self._normalisers(), run.known, self._clock.now()
            )
            failure = ""
            for step in steps:
                await self._commands_first(run, meter_id)
                batch = await self._request(run, record, step)
                failure = failure or await self._deliver(run, record, step, batch)
            if failure:
                run.failed(meter_id, failure)
            else:
                counts["succeeded"] += 1
        except asyncio.CancelledError:
            raise
        except HesdError as exc:
            run.failed(meter_id, str(exc))
        except Exception as exc:  # a bug: logged, this meter counted failed
            counts["failed"] += 1
            run.note(f"internal error: {exc!r}")
            log.exception("scheduler.read_crashed", schedule=run.schedule.name, meter=meter_id)
        finally:
            run.done += 1

    async def _commands_first(self, run: Run, meter_id: str) -> None:
        """Let the router's commands for this meter run first (until the window ends)."""
        commands = self._commands
        while commands is not None and commands.has_work(meter_id) and not run.stopping:
            if self._clock.now() >= run.deadline:
                return
            await self._race(
                [commands.wait_idle(meter_id), run.wake.wait()],
                run.deadline,
                f"meter:{meter_id}:yield",
            )
        await self._room(run)

    async def _request(self, run: Run, record: MeterRecord, step: Step) -> Batch:
        """One request, counted where it happens: the run's most requests in flight, in all and
        on one link, and any moment a link carried more than it allows (``link_overruns``,
        which the budget is there to keep at 0)."""
        key, allowed = link_of(record.entry, self._per_destination)
        counts = run.counts
        load = self._link_load[key] = self._link_load.get(key, 0) + 1
        self.in_flight += 1
        counts["max_in_flight"] = max(counts["max_in_flight"], self.in_flight)
        counts["max_link_in_flight"] = max(counts["max_link_in_flight"], load)
        if load > allowed:
            counts["link_overruns"] += 1
        try:
            return await self._reader.read(record.meter_id, step)
        finally:
            self.in_flight -= 1
            self._link_load[key] -= 1
            if not self._link_load[key]:
                del self._link_load[key]

    async def _deliver(self, run: Run, record: MeterRecord, step: Step, batch: Batch) -> str:
        """Records to the outbox (durably), then marks and holes; returns a failure, or ""."""
        meter_id = record.meter_id
        now = self._clock.now()
        marks = run.known.marks.setdefault(step.mark_key, {})
        mark = marks.get(meter_id)
        readings = batch.readings
        events = batch.events
        stamps = [r.timestamp.timestamp() for r in readings] + [
            e.timestamp.timestamp() for e in events
        ]
        if step.hole is None and mark is not None:  # rows at or before the mark: hesd has them
            readings = [r for r in readings if r.timestamp.timestamp() > mark]
            events = [e for e in events if e.timestamp.timestamp() > mark]
        records: list[Record] = [*readings, *events]
        counts = run.counts
        counts["readings"] += len(readings)
        counts["events"] += len(events)
        counts["errors"] += len(batch.errors)
        if records:
            await self._sink.offer(records)
        statements: list[Statement] = []
        if step.kind == "profile":
            normaliser = self._normalisers().get(record.entry.vendor)
            load = None if normaliser is None else normaliser.profile.profile(step.what)
            if normaliser is not None and load is not None and load.interval:
                found, statements = hole_statements(
                    step,
                    meter_id=meter_id,
                    stamps=stamps,
                    mark=mark,
                    grid_of=(load.interval, normaliser.profile.utc_offset),
                    retries=self.config.hole_retries,
                    now=now,
                )
                counts["holes"] += found
        if step.kind != "quantities" and step.hole is None and stamps:
            newest = max(stamps)
            if mark is None or newest > mark:
                marks[meter_id] = newest
                statements.append(set_mark(step.mark_key, meter_id, newest, now))
        await self._db.write(statements)
        if batch.errors and not records:
            return str(batch.errors[0])
        return ""

    # -- what the API shows ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "time_zone": self.config.time_zone,
            "paused": self._sink.pressure,
            "budget": {
                "max_requests": self._max_requests,
                "reserved_requests": self.config.reserved_requests,
                "max_in_flight": self.config.max_in_flight,
                "scheduled_max": self.capacity,
                "scheduled_in_flight": self.in_flight,
            },
            "schedules": [self.schedule_json(s) for s in self.schedules],
        }

    def schedule_json(self, schedule: ScheduleConfig) -> dict[str, Any]:
        run = self.runs.get(schedule.name)
        last = self._last.get(schedule.name)
        if run is not None:
            state = "paused" if self._sink.pressure else "running"
        else:
            state = "idle" if schedule.enabled else "disabled"
        current = None
        if run is not None:
            current = run.record().to_json() | {
                "done": run.done,
                "elapsed_seconds": round(max(0.0, self._clock.now() - run.started_at), 3),
                "stopping": run.stopping or None,
            }
        return {
            "name": schedule.name,
            "enabled": schedule.enabled,
            "cron": schedule.cron.text,
            "window_seconds": schedule.window,
            "jitter": schedule.jitter,
            "priority": schedule.priority,
            "read": schedule.read.to_json(),
            "max_backfill_seconds": None if schedule.read.quantities else schedule.max_backfill,
            "meters": {
                "vendors": list(schedule.vendors),
                "transports": list(schedule.transports),
                "tags": dict(schedule.tags),
            },
            "state": state,
            "next_run": iso(self._next.get(schedule.name)),
            "current_run": current,
            "last_run": None if last is None else last.to_json(),
        }

    async def history(self, name: str, limit: int = 20) -> list[RunRecord]:
        return await self._db.runs(name, limit)


def _selects(schedule: ScheduleConfig, record: MeterRecord) -> bool:
    entry = record.entry
    if schedule.vendors and entry.vendor not in schedule.vendors:
        return False
    if schedule.transports and entry.transport not in schedule.transports:
        return False
    tags = dict(entry.tags)
    return all(tags.get(key) == value for key, value in schedule.tags)


async def _wrap(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
