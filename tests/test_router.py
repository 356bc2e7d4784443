"""The command router against a real store and a fake session manager."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import pytest

from adapters.model import CommandResult, CommandStatus
from hesd.config import StoreConfig
from hesd.router import (
    INTERRUPTED,
    TRANSITIONS,
    Command,
    CommandKind,
    CommandRejected,
    CommandRouter,
    CommandState,
    Outcome,
)
from hesd.session import MeterSession, SessionError
from hesd.store import Store

_T = TypeVar("_T")


@dataclass
class FakeAccess:
    online: set[str] = field(default_factory=set)
    running: dict[str, int] = field(default_factory=dict)
    most_per_meter: int = 0
    most_at_once: int = 0

    async def reachable(self, meter_id: str) -> bool:
        return meter_id in self.online

    async def request(self, meter_id: str, op: Callable[[MeterSession], Awaitable[_T]]) -> _T:
        if meter_id not in self.online:
            raise SessionError(f"meter {meter_id}: offline")
        self.running[meter_id] = self.running.get(meter_id, 0) + 1
        self.most_per_meter = max(self.most_per_meter, self.running[meter_id])
        self.most_at_once = max(self.most_at_once, sum(self.running.values()))
        try:
            return await op(cast(MeterSession, None))
        finally:
            self.running[meter_id] -= 1


@dataclass
class FakeSink:
    results: list[CommandResult] = field(default_factory=list)
    offered: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, records: Sequence[CommandResult]) -> asyncio.Future[None]:
        self.results.extend(records)
        self.offered.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def reported(self, *command_ids: str) -> list[CommandResult]:
        """The results of these commands once all are offered: the router offers a result
        after committing the final state, so a command can be final before it is reported."""
        async with asyncio.timeout(5):
            while not set(command_ids) <= {r.command_id for r in self.results}:
                self.offered.clear()
                await self.offered.wait()
        return self.results


@dataclass
class Script:
    """Command kinds whose runs the test controls: each run records itself and may wait."""

    ran: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None
    failures: int = 0  # SessionErrors to raise first
    ran_one: asyncio.Event = field(default_factory=asyncio.Event)

    async def started(self, n: int) -> None:
        """Wait until ``n`` runs have begun."""
        async with asyncio.timeout(5):
            while len(self.ran) < n:
                self.ran_one.clear()
                await self.ran_one.wait()

    async def run(self, session: MeterSession, cmd: Command) -> Outcome:
        del session
        self.ran.append(cmd.command_id)
        self.ran_one.set()
        if self.failures:
            self.failures -= 1
            raise SessionError(f"meter {cmd.meter_id}: no answer")
        if self.gate is not None:
            await self.gate.wait()
        return Outcome(True, "done", data={"n": len(self.ran)})

    def kinds(self) -> Mapping[str, CommandKind]:
        return {
            "read": CommandKind("read", self.run, max_attempts=3, backoff=0.0, rerunnable=True),
            "disconnect": CommandKind("disconnect", self.run),
        }


@dataclass
class Hes:
    store: Store
    access: FakeAccess
    sink: FakeSink
    script: Script
    routers: list[tuple[CommandRouter, asyncio.Task[None]]] = field(default_factory=list)

    def start(self, workers: int = 8) -> CommandRouter:
        router = CommandRouter(
            self.store, self.access, self.script.kinds(), self.sink, workers=workers
        )
        self.routers.append((router, asyncio.create_task(router.run(), name="router")))
        return router

    async def stop(self) -> None:
        for router, task in self.routers:
            router.close()
            await task
        self.routers.clear()


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    h = Hes(store, FakeAccess({"M1", "M2"}), FakeSink(), Script())
    yield h
    await h.stop()
    await store.close()
    await writer


async def final(router: CommandRouter, command_id: str) -> Command:
    async with asyncio.timeout(5):
        while True:
            cmd = await router.get(command_id)
            assert cmd is not None
            if cmd.state not in (CommandState.QUEUED, CommandState.SENT):
                return cmd
            await asyncio.sleep(0.005)


async def test_a_command_runs_is_audited_and_reported(hes: Hes) -> None:
    router = hes.start()
    cmd = await router.submit("M1", "disconnect", {}, "op:alice", 60)
    assert len(cmd.command_id) == 32
    done = await final(router, cmd.command_id)
    assert done.state is CommandState.SUCCEEDED
    assert done.attempts == 1
    assert done.result is not None
    assert done.result["detail"] == "done"
    assert done.result["status"] == "succeeded"
    assert done.result["requested_by"] == "op:alice"
    states = [s for _, s, _ in await router.audit(cmd.command_id)]
    assert states == ["queued", "sent", "succeeded"]
    [result] = await hes.sink.reported(cmd.command_id)
    assert result.status is CommandStatus.SUCCEEDED
    assert result.command_id == cmd.command_id
    assert [c.command_id for c in await router.find(state="succeeded", meter_id="M1")] == [
        cmd.command_id
    ]
    assert await router.find(meter_id="M2") == []


async def test_one_command_at_a_time_per_meter_in_order(hes: Hes) -> None:
    hes.script.gate = asyncio.Event()
    router = hes.start()
    first = [await router.submit("M1", "disconnect", {}, "t", 60) for _ in range(3)]
    other = await router.submit("M2", "disconnect", {}, "t", 60)
    await hes.script.started(2)
    assert set(hes.script.ran) == {first[0].command_id, other.command_id}
    hes.script.gate.set()
    for cmd in [*first, other]:
        assert (await final(router, cmd.command_id)).state is CommandState.SUCCEEDED
    ran_m1 = [c for c in hes.script.ran if c != other.command_id]
    assert ran_m1 == [c.command_id for c in first]
    assert hes.access.most_per_meter == 1


async def test_the_worker_pool_bounds_commands_across_meters(hes: Hes) -> None:
    hes.access.online |= {"M3", "M4"}
    router = hes.start(workers=2)
    cmds = [await router.submit(m, "disconnect", {}, "t", 60) for m in ("M1", "M2", "M3", "M4")]
    for cmd in cmds:
        assert (await final(router, cmd.command_id)).state is CommandState.SUCCEEDED
    assert hes.access.most_at_once <= 2


async def test_an_offline_meter_runs_its_command_when_it_comes_online(hes: Hes) -> None:
    router = hes.start()
    cmd = await router.submit("OFF", "disconnect", {}, "t", 60)
    await asyncio.sleep(0.05)  # let the meter's task see it offline and wait
    got = await router.get(cmd.command_id)
    assert got is not None
    assert got.state is CommandState.QUEUED
    assert hes.script.ran == []
    hes.access.online.add("OFF")
    router.meter_online("OFF")
    assert (await final(router, cmd.command_id)).state is CommandState.SUCCEEDED


async def test_a_command_that_expires_waiting_is_reported_expired(hes: Hes) -> None:
    router = hes.start()
    cmd = await router.submit("OFF", "disconnect", {}, "t", 0.05)
    done = await final(router, cmd.command_id)
    assert done.state is CommandState.EXPIRED
    assert done.attempts == 0
    assert hes.script.ran == []
    [result] = await hes.sink.reported(cmd.command_id)
    assert result.status is CommandStatus.EXPIRED
    assert "expired" in result.detail
    assert [s for _, s, _ in await router.audit(cmd.command_id)] == ["queued", "expired"]


async def test_cancel_a_queued_command_but_not_a_sent_one(hes: Hes) -> None:
    hes.script.gate = asyncio.Event()
    router = hes.start()
    waiting = await router.submit("OFF", "disconnect", {}, "t", 60)
    cancelled = await router.cancel(waiting.command_id)
    assert cancelled.state is CommandState.CANCELLED
    assert (await final(router, waiting.command_id)).state is CommandState.CANCELLED
    running = await router.submit("M1", "disconnect", {}, "t", 60)
    await hes.script.started(1)
    with pytest.raises(CommandRejected, match="is sent; only a queued"):
        await router.cancel(running.command_id)
    with pytest.raises(CommandRejected, match="is cancelled"):
        await router.cancel(waiting.command_id)
    with pytest.raises(KeyError):
        await router.cancel("nope")
    hes.script.gate.set()
    assert (await final(router, running.command_id)).state is CommandState.SUCCEEDED


async def test_a_read_is_tried_again_on_session_errors(hes: Hes) -> None:
    hes.script.failures = 2
    router = hes.start()
    cmd = await router.submit("M1", "read", {}, "t", 60)
    done = await final(router, cmd.command_id)
    assert done.state is CommandState.SUCCEEDED
    assert done.attempts == 3
    details = [d for _, _, d in await router.audit(cmd.command_id)]
    assert sum("failed: meter M1: no answer" in d for d in details) == 2


async def test_an_action_is_not_tried_again(hes: Hes) -> None:
    hes.script.failures = 1
    router = hes.start()
    cmd = await router.submit("M1", "disconnect", {}, "t", 60)
    done = await final(router, cmd.command_id)
    assert done.state is CommandState.FAILED
    assert done.attempts == 1
    assert done.result is not None
    assert done.result["detail"] == "meter M1: no answer"


async def test_restart_fails_an_interrupted_action_and_reruns_an_interrupted_read(
    hes: Hes,
) -> None:
    hes.script.gate = asyncio.Event()
    router = hes.start()
    action = await router.submit("M1", "disconnect", {}, "t", 60)
    read = await router.submit("M2", "read", {}, "t", 60)
    queued = await router.submit("M1", "read", {}, "t", 60)
    await hes.script.started(2)
    await hes.stop()  # like a kill: both in flight stay 'sent'
    for cmd in (action, read):
        got = await router.get(cmd.command_id)
        assert got is not None
        assert got.state is CommandState.SENT
    hes.script.gate.set()
    hes.sink.results.clear()
    again = hes.start()
    failed = await final(again, action.command_id)
    assert failed.state is CommandState.FAILED
    assert failed.result is not None
    assert failed.result["detail"] == INTERRUPTED
    assert (await final(again, read.command_id)).state is CommandState.SUCCEEDED
    assert (await final(again, queued.command_id)).state is CommandState.SUCCEEDED
    assert hes.script.ran.count(action.command_id) == 1
    assert hes.script.ran.count(read.command_id) == 2
    audit = await again.audit(read.command_id)
    assert [s for _, s, _ in audit] == ["queued", "sent", "queued", "sent", "succeeded"]
    reported = await hes.sink.reported(action.command_id, read.command_id, queued.command_id)
    assert sorted(r.command_id for r in reported) == sorted(
        [action.command_id, read.command_id, queued.command_id]
    )


async def test_submit_refuses_what_it_cannot_run(hes: Hes) -> None:
    router = hes.start()
    with pytest.raises(CommandRejected, match="unknown command kind 'fly'"):
        await router.submit("M1", "fly", {}, "t", 60)
    with pytest.raises(CommandRejected, match="expires_in"):
        await router.submit("M1", "read", {}, "t", 0)
    assert await router.find() == []


def test_final_states_have_no_way_out() -> None:
    for state in (CommandState.SUCCEEDED, CommandState.FAILED, CommandState.EXPIRED):
        assert TRANSITIONS[state] == frozenset()
    assert CommandState.SENT not in TRANSITIONS[CommandState.CANCELLED]
    assert CommandState.CANCELLED not in TRANSITIONS[CommandState.SENT]
