"""What the scheduler keeps in the store: its runs, and per meter what hesd has of its profiles.

* ``schedule_runs``: one row per run of a schedule, written when it starts and when it ends (a
  row still ``running`` at start-up was cut short by a stop: ``interrupted``); the newest
  ``scheduler.keep_runs`` per schedule are kept;
* ``read_marks``: per meter, the newest row hesd has of each profile (``profile:block_load``) and
  event log (``events:power``), so the next scheduled read starts after it;
* ``profile_holes``: intervals missing inside a profile read, read again by the next runs.

Times are UNIX seconds (UTC) as REAL, as everywhere in the store.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

from hesd.store.db import Statement, Store
from hesd.timefmt import iso

__all__ = [
    "RUN_FIELDS",
    "Hole",
    "RunRecord",
    "ScheduleStore",
    "add_hole",
    "drop_hole",
    "set_mark",
]

RUN_FIELDS: Final = (
    "selected",
    "succeeded",
    "failed",
    "skipped",
    "missed",
    "readings",
    "events",
    "errors",
    "holes",
    "max_in_flight",
    "max_link_in_flight",
    "link_overruns",
)
_COLUMNS: Final = "schedule, started_at, trigger, state, finished_at, " + ", ".join(RUN_FIELDS)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a schedule as the store keeps it (and the API shows it)."""

    schedule: str
    started_at: float
    trigger: str  # "cron" | "manual"
    state: str  # "running" | "finished" | "cancelled" | "interrupted"
    finished_at: float | None
    counts: tuple[int, ...]  # RUN_FIELDS, in order
    detail: str = ""

    def __post_init__(self) -> None:
        if len(self.counts) != len(RUN_FIELDS) or min(self.counts) < 0:
            raise ValueError(
                f"run of {self.schedule}: counts {self.counts} do not fit {RUN_FIELDS}"
            )

    def count(self, name: str) -> int:
        return self.counts[RUN_FIELDS.index(name)]

    @property
    def success_ratio(self) -> float | None:
        """Succeeded of the meters that were reachable at their slot (selected - skipped);
        ``None`` when there were none."""
        reachable = self.count("selected") - self.count("skipped")
        return None if reachable <= 0 else self.count("succeeded") / reachable

    def to_json(self) -> dict[str, Any]:
        ratio = self.success_ratio
        return {
            "trigger": self.trigger,
            "state": self.state,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": None
            if self.finished_at is None
            else round(self.finished_at - self.started_at, 3),
            **dict(zip(RUN_FIELDS, self.counts, strict=True)),
            "success_ratio": None if ratio is None else round(ratio, 4),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Hole:
    """Missing intervals of one meter's profile: interval ends from ``start_at`` to ``end_at``."""

    meter_id: str
    profile: str
    start_at: float
    end_at: float
    attempts: int  # reads that found it missing

    def __post_init__(self) -> None:
        if self.end_at < self.start_at or self.attempts < 1:
            raise ValueError(f"hole {self}: end before start, or no attempt")


def _run(row: Any) -> RunRecord:
    return RunRecord(
        schedule=row["schedule"],
        started_at=row["started_at"],
        trigger=row["trigger"],
        state=row["state"],
        finished_at=row["finished_at"],
        counts=tuple(int(row[name]) for name in RUN_FIELDS),
        detail=row["detail"],
    )


class ScheduleStore:
    """Reads and writes the scheduler's tables through the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- runs --------------------------------------------------------------------------------

    async def interrupt(self, now: float) -> int:
        """Runs a previous hesd left ``running``: ``interrupted``; how many."""
        count = int(
            await self._store.scalar("SELECT count(*) FROM schedule_runs WHERE state = 'running'")
            or 0
        )
        if count:
            await self._store.execute(
                "UPDATE schedule_runs SET state = 'interrupted', finished_at = ?,"
                " detail = 'hesd stopped during the run' WHERE state = 'running'",
                (now,),
            )
        return count

    async def last_runs(self) -> dict[str, RunRecord]:
        """The newest run of each schedule."""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS}, detail FROM schedule_runs AS r WHERE started_at ="
            " (SELECT max(started_at) FROM schedule_runs WHERE schedule = r.schedule)"
        )
        return {row["schedule"]: _run(row) for row in rows}

    async def runs(self, schedule: str, limit: int = 20) -> list[RunRecord]:
        """A schedule's runs, newest first."""
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS}, detail FROM schedule_runs WHERE schedule = ?"
            " ORDER BY started_at DESC LIMIT ?",
            (schedule, limit),
        )
        return [_run(row) for row in rows]

    async def save(self, run: RunRecord, keep: int) -> None:
        """Insert or update ``run``; keep the newest ``keep`` runs of its schedule."""
        marks = ", ".join("?" * (6 + len(RUN_FIELDS)))
        await self._store.submit(
            [
                (
                    f"INSERT OR REPLACE INTO schedule_runs ({_COLUMNS}, detail) VALUES ({marks})",
                    (
                        run.schedule,
                        run.started_at,
                        run.trigger,
                        run.state,
                        run.finished_at,
                        *run.counts,
                        run.detail,
                    ),
                ),
                (
                    "DELETE FROM schedule_runs WHERE schedule = ? AND started_at NOT IN"
                    " (SELECT started_at FROM schedule_runs WHERE schedule = ?"
                    " ORDER BY started_at DESC LIMIT ?)",
                    (run.schedule, run.schedule, keep),
                ),
            ]
        )

    # -- marks and holes ---------------------------------------------------------------------

    async def mark(self, what: str, meter_id: str) -> float | None:
        """The newest row hesd has of ``what`` for one meter, or None."""
        row = await self._store.fetchone(
            "SELECT last_at FROM read_marks WHERE what = ? AND meter_id = ?", (what, meter_id)
        )
        return None if row is None else float(row[0])

    async def marks(self, what: str) -> dict[str, float]:
        """Per meter, the newest row hesd has of ``what`` (``profile:NAME``, ``events:CAT``)."""
        rows = await self._store.fetchall(
            "SELECT meter_id, last_at FROM read_marks WHERE what = ?", (what,)
        )
        return {row[0]: float(row[1]) for row in rows}

    async def holes(self, profile: str) -> dict[str, list[Hole]]:
        """Per meter, the holes found in ``profile``, oldest first."""
        rows = await self._store.fetchall(
            "SELECT meter_id, start_at, end_at, attempts FROM profile_holes WHERE profile = ?"
            " ORDER BY meter_id, start_at",
            (profile,),
        )
        found: defaultdict[str, list[Hole]] = defaultdict(list)
        for row in rows:
            found[row[0]].append(Hole(row[0], profile, row[1], row[2], row[3]))
        return dict(found)

    async def write(self, statements: list[Statement]) -> None:
        if statements:
            await self._store.submit(statements)


def read_mark(kind: str, name: str) -> str:
    """``read_marks.what`` of a load profile (``profile:block_load``) or an event log
    (``events:power``; shared by schedules and alert reads)."""
    return f"{kind}:{name}"


def set_mark(what: str, meter_id: str, at: float, now: float) -> Statement:
    return (
        "INSERT INTO read_marks (what, meter_id, last_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (what, meter_id) DO UPDATE SET last_at = max(last_at, excluded.last_at),"
        " updated_at = excluded.updated_at",
        (what, meter_id, at, now),
    )


def add_hole(hole: Hole, now: float) -> Statement:
    return (
        "INSERT OR REPLACE INTO profile_holes"
        " (profile, meter_id, start_at, end_at, attempts, found_at) VALUES (?, ?, ?, ?, ?, ?)",
        (hole.profile, hole.meter_id, hole.start_at, hole.end_at, hole.attempts, now),
    )


def drop_hole(hole: Hole) -> Statement:
    return (
        "DELETE FROM profile_holes WHERE profile = ? AND meter_id = ? AND start_at = ?",
        (hole.profile, hole.meter_id, hole.start_at),
    )
