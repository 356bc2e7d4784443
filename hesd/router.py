"""The command router: a durable queue of commands to meters, run once each and reported.

``submit`` stores a command (state ``queued``, with who asked and when it expires) and returns
its id once the row is durable; nothing is accepted that is not on disk. Each meter's commands
run one at a time, oldest first, on a task named ``meter:{id}:commands``; across the fleet at
most ``workers`` commands run at once (and each request still obeys the session manager's
budget). A command waits while its meter cannot be reached; ``meter_online`` (the session
manager calls it when a link attaches) wakes it. A queued command past its expiry is
``expired``; a queued one may be ``cancelled``; one that has been ``sent`` may not. Scheduled
reads (``hesd/scheduler.py``) yield to commands: before each of its requests to a meter, the
scheduler waits while ``has_work(meter)`` (``wait_idle``).

States and their transitions (``TRANSITIONS``; any other raises ``LocalProtocolError``)::

    queued ──► sent ──► succeeded | failed
       │         └────► queued   (only at start: a read interrupted by a restart, run again)
       └──► expired | cancelled

Every transition writes an audit row (``command_audit``: state, time, detail) in the same commit
as the state change. Each attempt counts in ``attempts``; a kind's ``max_attempts`` and
``backoff`` say how often a ``SessionError`` is tried again. Kinds that act on the meter
(disconnect, reconnect, sync_time) are written so that running them again is safe: they read the
meter's state first and act only when it is not already the one asked for.

Restart safety: a command found ``sent`` at start may have run on the meter before hesd stopped.
A kind marked ``rerunnable`` (a read) is queued again, with an audit row saying so. Any other is
``failed`` with the detail ``interrupted by a restart; the meter's state was not confirmed``,
and reported: hesd never runs an action twice without the result saying so.

A kind may also set its own ``max_attempts``, ``backoff`` and ``timeout`` (the cap of one attempt,
instead of the session manager's ``request_timeout``: a firmware transfer takes long), and is
``rerunnable`` when a restart may queue it again because each attempt starts from what the meter
reports (reads; firmware upgrades, which resume their transfer and never activate twice).

Progress: a long command reports it (``Command.note_progress``, e.g. blocks done of a firmware
transfer); it is in the command's JSON while it runs and after, and kept in the ``progress``
column, written at most every ``PROGRESS_INTERVAL`` seconds (a store flusher: the latest value
only, in whatever commit comes next), or at once with ``Command.save_progress`` before a step that
must be known to have begun if hesd stops (an activation), so a restart resumes from it.

A final state makes a ``CommandResult``: kept in the ``result`` column (what the API shows) and
offered to the outbox for the MDM.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

import msgpack
import structlog

from adapters.model import CommandResult, CommandStatus, Reading
from hesd.session import MeterSession, SessionError
from hesd.store import Statement, Store
from hesd.timefmt import iso
from protocols.errors import HesdError, LocalProtocolError

__all__ = [
    "INTERRUPTED",
    "TRANSITIONS",
    "Command",
    "CommandKind",
    "CommandRejected",
    "CommandRouter",
    "CommandState",
    "MeterAccess",
    "Outcome",
    "ProgressSink",
    "ResultSink",
]

log = structlog.get_logger("hesd.router")

_T = TypeVar("_T")

INTERRUPTED: Final = "interrupted by a restart; the meter's state was not confirmed"
MAX_EXPIRES_IN: Final = 366 * 86400.0
PROGRESS_INTERVAL: Final = 1.0  # seconds: progress is stored at most this often (coalesced)


class CommandState(enum.StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


S = CommandState
TRANSITIONS: Final[Mapping[CommandState, frozenset[CommandState]]] = {
    S.QUEUED: frozenset({S.SENT, S.EXPIRED, S.CANCELLED}),
    S.SENT: frozenset({S.SUCCEEDED, S.FAILED, S.QUEUED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}
FINAL: Final = frozenset({S.SUCCEEDED, S.FAILED, S.EXPIRED, S.CANCELLED})


class CommandRejected(HesdError):
    """A command that cannot be accepted: unknown kind, bad parameters, not cancellable."""


class MeterAccess(Protocol):
    """What the router needs of the session manager. ``time_cap`` is passed only for a kind
    that has its own (``CommandKind.timeout``), instead of the manager's request cap."""

    async def reachable(self, meter_id: str) -> bool: ...

    async def request(
        self,
        meter_id: str,
        op: Callable[[MeterSession], Awaitable[_T]],
        time_cap: float | None = None,
    ) -> _T: ...


class ProgressSink(Protocol):
    """Where a running command's progress goes (the router)."""

    def note(self, cmd: Command) -> None: ...

    async def save(self, cmd: Command) -> None: ...


class ResultSink(Protocol):
    """Where results go for the MDM (the outbox)."""

    def offer(self, records: Sequence[CommandResult]) -> asyncio.Future[None]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one run of a command found: it succeeded (confirmed) or not, and why."""

    succeeded: bool
    detail: str
    readings: tuple[Reading, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandKind:
    """How to run one kind of command and how often to try it."""

    name: str
    run: Callable[[MeterSession, Command], Awaitable[Outcome]]
    check: Callable[[Mapping[str, Any]], None] = lambda params: None  # raises CommandRejected
    max_attempts: int = 1  # runs on SessionError, counting the first
    backoff: float = 5.0  # seconds before the second attempt, doubled for each next one
    rerunnable: bool = False  # safe to run again after a restart interrupted it (reads)
    timeout: float | None = None  # cap of one attempt; None: the session manager's

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff < 0:
            raise ValueError(f"command kind {self.name}: max_attempts < 1 or backoff < 0")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"command kind {self.name}: timeout {self.timeout} is not > 0")


@dataclass(slots=True)
class Command:
    """One command as the router holds it (a row of ``commands``)."""

    command_id: str
    meter_id: str
    kind: str
    params: dict[str, Any]
    state: CommandState
    requested_by: str
    created_at: float
    updated_at: float
    expires_at: float
    attempts: int = 0
    result: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None  # a long command's progress (firmware: blocks)
    progress_sink: ProgressSink | None = field(default=None, repr=False, compare=False)

    def note_progress(self, progress: Mapping[str, Any]) -> None:
        """Report progress; stored within ``PROGRESS_INTERVAL`` seconds (coalesced)."""
        self.progress = dict(progress)
        if self.progress_sink is not None:
            self.progress_sink.note(self)

    async def save_progress(self, progress: Mapping[str, Any]) -> None:
        """Report progress and return once it is durable (before a step that must not be
        repeated blindly after a restart)."""
        self.progress = dict(progress)
        if self.progress_sink is not None:
            await self.progress_sink.save(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "meter_id": self.meter_id,
            "kind": self.kind,
            "params": self.params,
            "state": self.state.value,
            "requested_by": self.requested_by,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "expires_at": _iso(self.expires_at),
            "attempts": self.attempts,
            "progress": self.progress,
            "result": self.result,
        }


def _iso(t: float) -> str:
    return iso(t, "auto")  # a command's times to the microsecond


def _from_row(row: Any) -> Command:
    result, progress = row["result"], row["progress"]
    return Command(
        command_id=row["command_id"],
        meter_id=row["meter_id"],
        kind=row["kind"],
        params=msgpack.unpackb(row["params"]),
        state=CommandState(row["state"]),
        requested_by=row["requested_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        expires_at=row["expires_at"],
        attempts=row["attempts"],
        result=None if result is None else msgpack.unpackb(result),
        progress=None if progress is None else msgpack.unpackb(progress),
    )


_COLUMNS: Final = (
    "command_id, meter_id, kind, params, state, requested_by, created_at, updated_at, "
    "expires_at, attempts, result, progress"
)
_PROGRESS_SQL: Final = "UPDATE commands SET progress = ? WHERE command_id = ? AND state = 'sent'"


class CommandRouter:
    """See the module docstring. ``run()`` is the router's task; ``close()`` ends it."""

    def __init__(
        self,
        store: Store,
        access: MeterAccess,
        kinds: Mapping[str, CommandKind],
        sink: ResultSink | None,
        *,
        workers: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._access = access
        self.kinds = dict(kinds)
        self._sink = sink
        self._workers = asyncio.Semaphore(workers)
        self._clock = clock
        self._queues: dict[str, deque[Command]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle: dict[str, asyncio.Event] = {}  # set when a meter's queue empties
        self._running = False
        self._stop = asyncio.Event()
        self._active: dict[str, Command] = {}  # sent, running now: their live progress
        self._progress: dict[str, Command] = {}  # progress not stored yet
        self._progress_timer: asyncio.TimerHandle | None = None
        self._progress_stored = 0.0  # monotonic time of the last store of progress
        store.add_flusher(self._flush_progress)

    # -- asking ------------------------------------------------------------------------------

    async def submit(
        self,
        meter_id: str,
        kind: str,
        params: Mapping[str, Any],
        requested_by: str,
        expires_in: float,
    ) -> Command:
        """Store a new command and queue it; returns it once it is durable."""
        spec = self.kinds.get(kind)
        if spec is None:
            raise CommandRejected(f"unknown command kind {kind!r}; known: {sorted(self.kinds)}")
        if not meter_id:
            raise CommandRejected("meter_id is empty")
        if not 0 < expires_in <= MAX_EXPIRES_IN:
            raise CommandRejected(f"expires_in {expires_in} is not in (0, {MAX_EXPIRES_IN:g}] s")
        spec.check(params)
        now = self._clock()
        cmd = Command(
            uuid.uuid4().hex,
            meter_id,
            kind,
            dict(params),
            S.QUEUED,
            requested_by,
            now,
            now,
            now + expires_in,
        )
        await self._store.submit(
            [
                (
                    f"INSERT INTO commands ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                    (
                        cmd.command_id,
                        meter_id,
                        kind,
                        msgpack.packb(cmd.params),
                        cmd.state.value,
                        requested_by,
                        now,
                        now,
                        cmd.expires_at,
                        0,
                    ),
                ),
                _audit(cmd.command_id, now, S.QUEUED, f"requested by {requested_by}"),
            ]
        )
        log.info("router.queued", command=cmd.command_id, meter=meter_id, kind=kind)
        self._enqueue(cmd)
        return cmd

    async def cancel(self, command_id: str) -> Command:
        """Cancel a queued command; ``CommandRejected`` if it has been sent or has ended."""
        cmd = self._queued(command_id)
        if cmd is None:
            found = await self.get(command_id)
            if found is None:
                raise KeyError(command_id)
            raise CommandRejected(
                f"command {command_id} is {found.state.value}; only a queued command can be "
                "cancelled"
            )
        await self._finish(cmd, S.CANCELLED, "cancelled on request")
        self.meter_online(cmd.meter_id)  # let the meter's task drop it now
        return cmd

    async def get(self, command_id: str) -> Command | None:
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM commands WHERE command_id = ?", (command_id,)
        )
        if row is None:
            return None
        found = _from_row(row)
        live = self._active.get(command_id)
        if live is not None and found.state is S.SENT:  # fresher than the last stored progress
            found.progress = live.progress
        return found

    async def audit(self, command_id: str) -> list[tuple[float, str, str]]:
        rows = await self._store.fetchall(
            "SELECT at, state, detail FROM command_audit WHERE command_id = ? ORDER BY rowid",
            (command_id,),
        )
        return [(r["at"], r["state"], r["detail"]) for r in rows]

    async def find(
        self, state: str | None = None, meter_id: str | None = None, limit: int = 100
    ) -> list[Command]:
        where, params = [], []
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if meter_id is not None:
            where.append("meter_id = ?")
            params.append(meter_id)
        sql = f"SELECT {_COLUMNS} FROM commands"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._store.fetchall(
            sql + " ORDER BY created_at DESC LIMIT ?", (*params, limit)
        )
        return [_from_row(r) for r in rows]

    def meter_online(self, meter_id: str) -> None:
        """The meter has a link now: its waiting commands may run (the session manager calls)."""
        event = self._wake.get(meter_id)
        if event is not None:
            event.set()

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def has_work(self, meter_id: str) -> bool:
        """Commands for the meter are queued or running (scheduled reads wait for them)."""
        return bool(self._queues.get(meter_id))

    async def wait_idle(self, meter_id: str) -> None:
        """Return once the meter has no command queued or running."""
        while self.has_work(meter_id):
            await self._idle.setdefault(meter_id, asyncio.Event()).wait()

    # -- running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Recover what a previous run left, then serve until ``close()``."""
        await self._recover()
        self._running = True
        for meter_id in list(self._queues):
            self._spawn(meter_id)
        try:
            await self._stop.wait()
        finally:
            self._running = False
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._progress_timer is not None:
                self._progress_timer.cancel()
                self._progress_timer = None
            self._store.poke()  # what progress is left goes with the next commit (or close)

    def close(self) -> None:
        """Stop: a command in flight stays ``sent`` and is judged at the next start."""
        self._stop.set()

    async def _recover(self) -> None:
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM commands WHERE state IN ('queued', 'sent') "
            "ORDER BY created_at, command_id"
        )
        known = {c.command_id for q in self._queues.values() for c in q}  # submitted already
        for row in rows:
            if row["command_id"] in known:
                continue
            cmd = _from_row(row)
            spec = self.kinds.get(cmd.kind)
            if cmd.state is S.SENT:
                if spec is not None and spec.rerunnable:
                    await self._move(cmd, S.QUEUED, "queued again after a restart (safe to rerun)")
                else:
                    await self._finish(cmd, S.FAILED, INTERRUPTED)
                    continue
            if spec is None:  # a kind this hesd no longer knows
                await self._move(cmd, S.SENT, "")
                await self._finish(cmd, S.FAILED, f"unknown command kind {cmd.kind!r}")
                continue
            self._enqueue(cmd)
        if rows:
            log.info("router.recovered", commands=len(rows), queued=self.queued)

    def _enqueue(self, cmd: Command) -> None:
        self._queues.setdefault(cmd.meter_id, deque()).append(cmd)
        self._wake.setdefault(cmd.meter_id, asyncio.Event()).set()
        if self._running:
            self._spawn(cmd.meter_id)

    def _spawn(self, meter_id: str) -> None:
        if meter_id in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(
            self._serve_meter(meter_id), name=f"meter:{meter_id}:commands"
        )
        self._tasks[meter_id] = task

    def _queued(self, command_id: str) -> Command | None:
        for queue in self._queues.values():
            for cmd in queue:
                if cmd.command_id == command_id and cmd.state is S.QUEUED:
                    return cmd
        return None

    async def _serve_meter(self, meter_id: str) -> None:
        queue = self._queues[meter_id]
        wake = self._wake[meter_id]
        try:
            while True:
                await self._expire_due(queue)
                if not queue:
                    return
                wake.clear()
                if not await self._reachable(meter_id):
                    deadline = min(c.expires_at for c in queue)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, deadline - self._clock())):
                            await wake.wait()
                    continue
                cmd = queue[0]
                async with self._workers:
                    if cmd.state is S.QUEUED and self._clock() < cmd.expires_at:
                        await self._execute(cmd)
                if queue and queue[0] is cmd:
                    queue.popleft()
        except Exception:  # a bug here must not end other meters' commands
            log.exception("router.meter_failed", meter=meter_id)
        finally:
            del self._tasks[meter_id]
            if not queue:
                self._queues.pop(meter_id, None)
                self._wake.pop(meter_id, None)
                idle = self._idle.pop(meter_id, None)
                if idle is not None:
                    idle.set()
            elif self._running and not self._stop.is_set():
                self._spawn(meter_id)

    async def _reachable(self, meter_id: str) -> bool:
        try:
            return await self._access.reachable(meter_id)
        except HesdError as exc:
            log.warning("router.unreachable", meter=meter_id, error=str(exc))
            return False

    async def _expire_due(self, queue: deque[Command]) -> None:
        now = self._clock()
        for cmd in [c for c in queue if c.state is not S.QUEUED or c.expires_at <= now]:
            queue.remove(cmd)
            if cmd.state is S.QUEUED:
                await self._finish(cmd, S.EXPIRED, f"expired at {_iso(cmd.expires_at)}, not sent")

    async def _execute(self, cmd: Command) -> None:
        self._active[cmd.command_id] = cmd
        cmd.progress_sink = self
        try:
            await self._attempts(cmd)
        finally:
            cmd.progress_sink = None
            self._active.pop(cmd.command_id, None)

    def _request(self, cmd: Command, spec: CommandKind) -> Awaitable[Outcome]:
        def op(session: MeterSession) -> Awaitable[Outcome]:
            return spec.run(session, cmd)

        if spec.timeout is None:
            return self._access.request(cmd.meter_id, op)
        return self._access.request(cmd.meter_id, op, time_cap=spec.timeout)

    async def _attempts(self, cmd: Command) -> None:
        spec = self.kinds[cmd.kind]
        delay = spec.backoff
        while True:
            cmd.attempts += 1
            if cmd.state is S.SENT:  # a retry: still sent, one more attempt
                await self._note(cmd, f"attempt {cmd.attempts}")
            else:
                await self._move(cmd, S.SENT, f"attempt {cmd.attempts}")
            try:
                outcome = await self._request(cmd, spec)
            except SessionError as exc:
                if cmd.attempts >= spec.max_attempts or self._clock() + delay >= cmd.expires_at:
                    await self._finish(cmd, S.FAILED, str(exc))
                    return
                log.info("router.retrying", command=cmd.command_id, error=str(exc), after=delay)
                await self._note(cmd, f"attempt {cmd.attempts} failed: {exc}; again in {delay:g} s")
                await asyncio.sleep(delay)
                delay *= 2
                continue
            except HesdError as exc:
                await self._finish(cmd, S.FAILED, str(exc))
                return
            except Exception as exc:
                log.exception("router.command_crashed", command=cmd.command_id, kind=cmd.kind)
                await self._finish(cmd, S.FAILED, f"internal error: {exc!r}")
                return
            await self._finish(
                cmd,
                S.SUCCEEDED if outcome.succeeded else S.FAILED,
                outcome.detail,
                outcome,
            )
            return

    # -- progress ----------------------------------------------------------------------------

    def note(self, cmd: Command) -> None:
        """``ProgressSink``: store ``cmd.progress`` within ``PROGRESS_INTERVAL`` seconds."""
        self._progress[cmd.command_id] = cmd
        if self._progress_timer is not None:
            return
        wait = max(0.0, self._progress_stored + PROGRESS_INTERVAL - time.monotonic())
        loop = asyncio.get_running_loop()
        self._progress_timer = loop.call_later(wait, self._store_progress)

    async def save(self, cmd: Command) -> None:
        """``ProgressSink``: store ``cmd.progress`` now; returns once it is committed."""
        self._progress.pop(cmd.command_id, None)
        await self._store.submit([(_PROGRESS_SQL, (msgpack.packb(cmd.progress), cmd.command_id))])

    def _store_progress(self) -> None:
        self._progress_timer = None
        self._progress_stored = time.monotonic()
        self._store.poke()

    def _flush_progress(self) -> list[Statement]:
        """Store flusher: the latest progress of each command that reported since."""
        pending, self._progress = self._progress, {}
        return [
            (_PROGRESS_SQL, (msgpack.packb(c.progress), c.command_id)) for c in pending.values()
        ]

    # -- state changes -----------------------------------------------------------------------

    def _check(self, cmd: Command, to: CommandState) -> None:
        if to not in TRANSITIONS[cmd.state]:
            raise LocalProtocolError(
                f"command {cmd.command_id}: {cmd.state.value} → {to.value} is not a transition"
            )

    async def _move(self, cmd: Command, to: CommandState, detail: str) -> None:
        self._check(cmd, to)
        now = self._clock()
        cmd.state, cmd.updated_at = to, now
        await self._store.submit(
            [
                (
                    "UPDATE commands SET state = ?, updated_at = ?, attempts = ? "
                    "WHERE command_id = ?",
                    (to.value, now, cmd.attempts, cmd.command_id),
                ),
                _audit(cmd.command_id, now, to, detail),
            ]
        )

    async def _note(self, cmd: Command, detail: str) -> None:
        now = self._clock()
        await self._store.submit(
            [
                (
                    "UPDATE commands SET updated_at = ?, attempts = ? WHERE command_id = ?",
                    (now, cmd.attempts, cmd.command_id),
                ),
                _audit(cmd.command_id, now, cmd.state, detail),
            ]
        )

    async def _finish(
        self, cmd: Command, to: CommandState, detail: str, outcome: Outcome | None = None
    ) -> None:
        self._check(cmd, to)
        now = self._clock()
        cmd.state, cmd.updated_at = to, now  # synchronously: a concurrent cancel sees it
        self._progress.pop(cmd.command_id, None)  # its last progress goes with the result
        result = CommandResult(
            command_id=cmd.command_id,
            meter_id=cmd.meter_id,
            command=cmd.kind,
            status=CommandStatus(to.value),
            requested_by=cmd.requested_by,
            requested_at=dt.datetime.fromtimestamp(cmd.created_at, dt.UTC),
            finished_at=dt.datetime.fromtimestamp(now, dt.UTC),
            attempts=cmd.attempts,
            detail=detail,
            readings=() if outcome is None else outcome.readings,
            data={} if outcome is None else outcome.data,
        )
        cmd.result = result.to_json()
        await self._store.submit(
            [
                (
                    "UPDATE commands SET state = ?, updated_at = ?, attempts = ?, result = ?, "
                    "progress = ? WHERE command_id = ?",
                    (
                        to.value,
                        now,
                        cmd.attempts,
                        msgpack.packb(cmd.result),
                        None if cmd.progress is None else msgpack.packb(cmd.progress),
                        cmd.command_id,
                    ),
                ),
                _audit(cmd.command_id, now, to, detail),
            ]
        )
        log.info(
            "router.finished", command=cmd.command_id, meter=cmd.meter_id, state=to.value,
            detail=detail,
        )  # fmt: skip
        if self._sink is not None:
            try:
                await self._sink.offer([result])
            except HesdError as exc:  # kept in the table; the MDM can still ask the API
                log.error("router.result_not_offered", command=cmd.command_id, error=str(exc))


def _audit(command_id: str, at: float, state: CommandState, detail: str) -> Statement:
    return (
        "INSERT INTO command_audit (command_id, at, state, detail) VALUES (?, ?, ?, ?)",
        (command_id, at, state.value, detail),
    )
