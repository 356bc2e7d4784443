"""The intake gate: ticks on a fake clock with fake transports, then a real loop and a real TCP
connection through TcpLink, blocked by a long callback."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop
from structlog.testing import capture_logs

from hesd.config import load_config
from hesd.daemon import Daemon
from hesd.intake import INTERVAL, LOG_EVERY, QUIET, IntakeGate
from hesd.link import LinkClosed
from hesd.transports.tcp import TcpLink
from tests.conftest import REPO


class FakeTransport:
    """The flow-control surface of a transport, remembering what was done to it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.reading = True
        self.closing = False
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")
        self.reading = False

    def resume_reading(self) -> None:
        self.calls.append("resume")
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closing

    def is_closing(self) -> bool:
        return self.closing

    def __repr__(self) -> str:
        return f"FakeTransport({self.name})"


def gate(pause: float = 0.1, resume: float = 0.02, max_pause: float = 1.0) -> IntakeGate:
    g = IntakeGate(pause, resume, max_pause)
    g.tick(1000.0)  # the first tick: no lag measured yet
    return g


def late(g: IntakeGate, lag: float) -> float:
    """The next tick, ``lag`` seconds after it was due; returns its time."""
    assert g.deadline is not None
    now = g.deadline + lag
    g.tick(now)
    assert g.lag == pytest.approx(lag)
    return now


def links(g: IntakeGate, *names: str) -> list[FakeTransport]:
    made = [FakeTransport(name) for name in names]
    for transport in made:
        g.register(transport)
    return made


def test_a_late_tick_pauses_every_link_and_a_prompt_one_resumes_them() -> None:
    g = gate()
    a, b = links(g, "a", "b")
    late(g, 0.0)
    late(g, 0.099)  # below the mark
    assert not g.paused
    assert (a.calls, b.calls) == ([], [])
    shut = late(g, 0.3)
    assert g.paused
    assert g.pauses == 1
    assert not a.reading
    assert not b.reading
    opened = late(g, 0.005)
    assert not g.paused
    assert (a.calls, b.calls) == (["pause", "resume"], ["pause", "resume"])
    assert g.paused_seconds == pytest.approx(opened - shut)
    assert g.links == 2


def test_between_the_marks_the_gate_keeps_its_state() -> None:
    g = gate()
    (a,) = links(g, "a")
    late(g, 0.05)
    assert not g.paused
    late(g, 0.2)
    late(g, 0.05)  # below the pause mark, above the resume mark: still paused
    late(g, 0.021)  # just above the resume mark
    assert g.paused
    late(g, 0.019)
    assert not g.paused
    assert a.calls == ["pause", "resume"]


def test_a_pause_lasts_at_most_max_pause_then_the_gate_stays_open_one_tick() -> None:
    g = gate(max_pause=0.5)
    (a,) = links(g, "a")
    shut = late(g, 0.2)
    now = shut
    while g.paused:  # the loop stays slow: the lag never falls below the resume mark
        now = late(g, 0.05)
        assert now - shut < 0.5 + INTERVAL + 0.05, "the pause outlasted intake_max_pause"
    assert now - shut >= 0.5
    assert a.reading
    late(g, 0.3)  # far above the pause mark, but the meters get this tick
    assert not g.paused
    assert a.reading
    late(g, 0.3)
    assert g.paused
    assert g.pauses == 2
    assert a.calls == ["pause", "resume", "pause"]


def test_the_gate_resumes_only_what_it_paused() -> None:
    g = gate()
    mine, theirs = links(g, "mine", "theirs")
    theirs.pause_reading()  # paused by its owner's own flow control
    theirs.calls.clear()
    late(g, 0.3)
    late(g, 0.0)
    assert mine.calls == ["pause", "resume"]
    assert theirs.calls == []
    assert not theirs.reading


def test_a_link_that_closes_while_paused_is_forgotten() -> None:
    g = gate()
    a, b = links(g, "a", "b")
    late(g, 0.3)
    b.closing = True
    g.unregister(b)  # connection_lost
    late(g, 0.0)
    assert a.calls == ["pause", "resume"]
    assert b.calls == ["pause"]
    assert g.links == 1


def test_a_closing_link_is_neither_paused_nor_resumed() -> None:
    g = gate()
    a, b = links(g, "a", "b")
    b.closing = True  # closed by hesd; connection_lost has not come yet
    late(g, 0.3)
    a.closing = True
    late(g, 0.0)
    assert a.calls == ["pause"]
    assert b.calls == []


def test_a_link_that_connects_while_paused_is_held_at_the_next_tick() -> None:
    g = gate()
    (a,) = links(g, "a")
    late(g, 0.3)
    (b,) = links(g, "b")
    assert b.calls == []  # uvloop starts reading after connection_made: not yet
    late(g, 0.05)
    assert b.calls == ["pause"]
    late(g, 0.0)
    assert a.calls == ["pause", "resume"]
    assert b.calls == ["pause", "resume"]


def test_a_link_that_connects_while_open_is_left_alone() -> None:
    g = gate()
    links(g, "a")
    late(g, 0.3)
    late(g, 0.0)
    (b,) = links(g, "b")
    late(g, 0.05)
    assert b.calls == []


def test_pause_mark_zero_turns_the_gate_off_and_a_reload_opens_it() -> None:
    g = gate(pause=0.0)
    assert not g.enabled
    (a,) = links(g, "a")
    late(g, 5.0)
    assert not g.paused
    assert a.calls == []
    g.configure(0.1, 0.02, 1.0)
    assert g.enabled
    late(g, 0.3)
    assert g.paused
    g.configure(0.0, 0.02, 1.0)  # SIGHUP with the gate turned off: meters are read at once
    assert not g.paused
    assert a.calls == ["pause", "resume"]


def test_oscillation_logs_one_line_then_summaries_then_the_end() -> None:
    g = gate()
    links(g, "a")
    with capture_logs() as logs:
        start = late(g, 0.3)
        now = start
        while now - start < 2.5 * LOG_EVERY:  # pause, resume, pause, ... every other tick
            late(g, 0.0)
            now = late(g, 0.3)
        while g.paused:
            now = late(g, 0.0)
        for _ in range(int(QUIET / INTERVAL) + 2):  # quiet: nothing paused
            now = late(g, 0.0)
    events = [e["event"] for e in logs]
    assert events == ["intake.paused", "intake.paused", "intake.paused", "intake.resumed"]
    first, summary = logs[0], logs[1]
    assert first["log_level"] == "warning"
    assert first["lag_ms"] == pytest.approx(300.0)
    assert first["links"] == 1
    assert summary["pauses"] > 20  # a pause every 0.34 s, in one line per LOG_EVERY
    assert 0 < summary["paused_seconds"] < summary["over_seconds"]
    assert summary["max_lag_ms"] == pytest.approx(300.0)
    end = logs[-1]
    assert end["log_level"] == "info"
    assert end["pauses"] == g.pauses
    assert end["paused_seconds"] == pytest.approx(g.paused_seconds, abs=0.001)


def test_the_next_episode_logs_its_first_pause_again() -> None:
    g = gate()
    links(g, "a")
    with capture_logs() as logs:
        late(g, 0.3)
        for _ in range(int(QUIET / INTERVAL) + 2):
            late(g, 0.0)
        late(g, 0.3)
    assert [e["event"] for e in logs] == ["intake.paused", "intake.resumed", "intake.paused"]


def test_an_episode_s_totals_are_its_own() -> None:
    g = gate()
    links(g, "a")
    pause = INTERVAL + 0.08 + INTERVAL  # shut, held one tick 0.08 s late, opened the next
    with capture_logs() as logs:
        for pauses in (1, 2):  # two episodes
            for _ in range(pauses):
                late(g, 0.3)
                late(g, 0.08)  # above the resume mark: still held
                late(g, 0.0)
            for _ in range(int(QUIET / INTERVAL) + 2):
                late(g, 0.0)
    ends = [e for e in logs if e["event"] == "intake.resumed"]
    assert [e["pauses"] for e in ends] == [1, 2]
    assert ends[0]["paused_seconds"] == pytest.approx(pause, abs=0.001)
    assert ends[1]["paused_seconds"] == pytest.approx(2 * pause, abs=0.001)
    assert g.pauses == 3
    assert g.paused_seconds == pytest.approx(3 * pause)


def test_every_log_event_of_the_gate_is_in_the_docs() -> None:
    """Operators grep for these: architecture.md lists them, operations.md explains the first."""
    source = (REPO / "hesd" / "intake.py").read_text()
    named = set(re.findall(r'log\.(?:warning|error|info)\(\s*"(intake\.\w+)"', source))
    assert named == {"intake.paused", "intake.resumed", "intake.configured"}
    architecture = (REPO / "docs" / "architecture.md").read_text()
    assert sorted(e for e in named if f"`{e}`" not in architecture) == []
    assert "`intake.paused`" in (REPO / "docs" / "operations.md").read_text()


# -- configuration --------------------------------------------------------------------------


def test_a_reload_applies_the_intake_marks_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP: the intake keys of [limits] apply at once; the section's other keys still wait
    for a restart (and say so)."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    shutil.copytree(REPO / "conf" / "vendors", tmp_path / "conf" / "vendors")
    path = tmp_path / "hesd.toml"
    path.write_text("[limits]\nintake_lag_pause = 0.1\n")
    daemon = Daemon(load_config(path), path)
    assert daemon.intake.enabled
    path.write_text("[limits]\nintake_lag_pause = 0\n")
    with capture_logs() as logs:
        assert daemon.reload()
    assert not daemon.intake.enabled
    assert daemon.config.limits.intake_lag_pause == 0
    events = [e["event"] for e in logs]
    assert "intake.configured" in events
    assert "config.restart_required" not in events

    path.write_text("[limits]\nintake_lag_pause = 0.2\nintake_max_pause = 2\nmax_requests = 9\n")
    with capture_logs() as logs:
        assert daemon.reload()
    assert daemon.intake.enabled
    limits = daemon.config.limits
    assert (limits.intake_lag_pause, limits.intake_max_pause) == (0.2, 2.0)
    assert limits.max_requests == 2000  # a restart setting
    restart = next(e for e in logs if e["event"] == "config.restart_required")
    assert restart["sections"] == ["limits"]


# -- a real loop, a real connection ---------------------------------------------------------


Runner = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS = pytest.mark.parametrize(
    "run", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"]
)  # the daemon runs on uvloop, whose transports start reading after connection_made


async def connected_pair(g: IntakeGate) -> tuple[TcpLink, socket.socket, asyncio.Server]:
    """A TcpLink (the hesd side, registered with ``g``) and the peer's blocking socket."""
    loop = asyncio.get_running_loop()
    link = TcpLink(gate=g)
    server = await loop.create_server(lambda: link, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    peer = socket.create_connection(("127.0.0.1", port), timeout=5)
    async with asyncio.timeout(5):
        await link.connected
    return link, peer, server


async def receive_exactly(link: TcpLink, size: int) -> bytes:
    got = b""
    async with asyncio.timeout(5):
        while len(got) < size:
            got += await link.receive()
    return got


@pytest.mark.integration
@RUNNERS
def test_a_blocked_loop_pauses_a_real_link_and_no_byte_is_lost(run: Runner) -> None:
    """A callback blocks the loop for 0.3 s (a long iteration): the next tick finds the loop
    late, the gate pauses the link's transport, and what the peer sends meanwhile waits in the
    kernel until the gate resumes reading; the link receives every byte, in order."""
    first, during, after = os.urandom(1000), os.urandom(32 * 1024), os.urandom(1000)

    async def scenario() -> None:
        g = IntakeGate(0.1, 0.02, 1.0)
        changes: list[tuple[bool, bool]] = []  # (paused, the transport is reading)
        link, peer, server = await connected_pair(g)
        transport = link._transport
        assert transport is not None
        resumed = asyncio.Event()

        def changed(paused: bool) -> None:
            changes.append((paused, transport.is_reading()))
            if paused and len(changes) == 1:
                peer.sendall(during)  # sent while the link is not read
            elif not paused:
                resumed.set()

        ticking = asyncio.create_task(g.run(), name="intake:gate")
        try:
            peer.sendall(first)
            assert await receive_exactly(link, len(first)) == first
            assert g.links == 1
            g.on_change = changed
            asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # one long iteration
            async with asyncio.timeout(5):
                await resumed.wait()
            assert changes[:2] == [(True, False), (False, True)]
            assert g.pauses >= 1
            assert g.paused_seconds > 0
            peer.sendall(after)
            peer.shutdown(socket.SHUT_WR)
            received = await receive_exactly(link, len(during) + len(after))
            assert received == during + after
            with pytest.raises(LinkClosed):
                async with asyncio.timeout(5):
                    await link.receive()
        finally:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
            peer.close()
            await link.close()
            server.close()
            await server.wait_closed()
        assert g.links == 0

    run(scenario())


@pytest.mark.integration
@RUNNERS
def test_stopping_the_gate_while_paused_resumes_the_links(run: Runner) -> None:
    """The daemon cancels ``intake:gate`` at the drain: nothing may stay paused after it."""

    async def scenario() -> None:
        g = IntakeGate(0.1, 0.001, 60.0)
        link, peer, server = await connected_pair(g)
        transport = link._transport
        assert transport is not None
        ticking = asyncio.create_task(g.run(), name="intake:gate")
        g.on_change = lambda paused: ticking.cancel() if paused else None
        try:
            asyncio.get_running_loop().call_soon(time.sleep, 0.3)
            async with asyncio.timeout(5):
                await asyncio.gather(ticking, return_exceptions=True)
            assert g.pauses == 1
            assert not g.paused
            assert transport.is_reading()
            peer.sendall(b"still read")
            assert await receive_exactly(link, 10) == b"still read"
        finally:
            peer.close()
            await link.close()
            server.close()
            await server.wait_closed()

    run(scenario())
