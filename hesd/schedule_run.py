"""A run of a schedule in progress: its state machine, its counts and what it has waiting.

A run is ``running`` from its due time until it ends: ``finished`` when every meter of its group
has an outcome, ``cancelled`` when it was stopped (``Run.stop``: a reload removed or disabled its
schedule, hesd is stopping) and its reads in flight have ended. ``RUN_TRANSITIONS`` is the table;
any other move is a ``LocalProtocolError``. A run a crash cut short is still ``running`` on disk
and becomes ``interrupted`` at the next start (``ScheduleStore.interrupt``), never in memory.

The scheduler (``hesd/scheduler.py``) owns the runs and drives them; ``Run.record`` is what the
store keeps and the API shows (``hesd/store/schedules.py``).
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import structlog

from hesd.config import ScheduleConfig
from hesd.schedule_reads import Plan
from hesd.store import MeterRecord
from hesd.store.schedules import RUN_FIELDS, RunRecord
from protocols.errors import LocalProtocolError

__all__ = ["LOGGED_FAILURES", "RUN_TRANSITIONS", "Run", "RunState"]

log = structlog.get_logger("hesd.scheduler")

LOGGED_FAILURES: Final = 20  # per run; the rest are counted


class RunState(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    CANCELLED = "cancelled"


RUN_TRANSITIONS: Final[Mapping[RunState, frozenset[RunState]]] = {
    RunState.RUNNING: frozenset({RunState.FINISHED, RunState.CANCELLED}),
    RunState.FINISHED: frozenset(),
    RunState.CANCELLED: frozenset(),
}


@dataclass(slots=True, eq=False)
class Run:
    """A run in progress."""

    schedule: ScheduleConfig
    trigger: str
    started_at: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_FIELDS, 0))
    state: RunState = RunState.RUNNING
    done: int = 0  # meters whose read has ended (any outcome)
    stopping: str = ""  # why no new reads start (a reload, hesd stopping)
    detail: str = ""
    finished_at: float | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # stop() was called
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # a meter's read ended
    ready: dict[str, deque[MeterRecord]] = field(default_factory=dict)  # at their slot, by link
    known: Plan = field(default_factory=Plan)  # marks and holes, loaded at the start
    jobs: set[asyncio.Task[None]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None

    @property
    def deadline(self) -> float:
        return self.started_at + self.schedule.window

    def move(self, to: RunState, now: float) -> None:
        if to not in RUN_TRANSITIONS[self.state]:
            raise LocalProtocolError(f"run of {self.schedule.name}: {self.state} → {to}")
        self.state, self.finished_at = to, now

    def end(self, now: float) -> None:
        """``cancelled`` if it was stopped (the reason first in its detail), else ``finished``."""
        self.move(RunState.CANCELLED if self.stopping else RunState.FINISHED, now)
        if self.stopping:
            self.detail = self.stopping + (f"; {self.detail}" if self.detail else "")

    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = reason
        self.wake.set()

    def note(self, error: str) -> None:
        if not self.detail:
            self.detail = error

    def missed(self, count: int) -> None:
        """``count`` meters could not start within the window."""
        self.counts["missed"] += count
        self.done += count
        self.note(f"{count} meters could not start within the window")

    def failed(self, meter_id: str, error: str) -> None:
        """A meter's read failed: counted, and logged for the first ``LOGGED_FAILURES``."""
        self.counts["failed"] += 1
        self.note(error)
        if self.counts["failed"] <= LOGGED_FAILURES:
            log.warning(
                "scheduler.read_failed", schedule=self.schedule.name, meter=meter_id, error=error
            )

    def record(self) -> RunRecord:
        counts = tuple(self.counts[name] for name in RUN_FIELDS)
        return RunRecord(
            self.schedule.name,
            self.started_at,
            self.trigger,
            self.state.value,
            self.finished_at,
            counts,
            self.detail,
        )
