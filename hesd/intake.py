"""The intake gate: stop reading meters' TCP sockets while the event loop cannot keep up.

One event loop takes pushes in (sessions decode and normalise them) and also commits the store
and forwards the outbox to the MDM. Offered more pushes than it can take in, the loop is busy
with sessions all the time, every iteration reads every readable socket and so grows long, and
the store writer and the forwarder, which need a few iterations per step, starve: measured at
5,000 pushes/s offered, the MDM got 22 a second (nothing was lost, all of it drained later).

The gate measures the loop's lag with a timer, every ``INTERVAL`` seconds: how late the timer
fired. Above ``limits.intake_lag_pause`` it pauses reading on every registered meter TCP
transport (``pause_reading()``): what meters send waits in the kernel's socket buffers, and TCP's
flow control slows the meters down, backpressure instead of ever longer loop iterations. The loop
meanwhile runs what is already queued (sessions' decoding, the store writer, the forwarder, the
API) in short iterations. Below ``limits.intake_lag_resume`` it resumes them all. A pause never
lasts longer than ``limits.intake_max_pause`` in one go, so meters are never starved: after the
cap the gate stays open for at least one tick, whatever the lag. ``intake_lag_pause = 0`` turns
the gate off (it still measures the lag).

The gate resumes only what it paused: a transport that was not reading when the gate shut (paused
by someone else) is left alone, and a link that closes while paused is simply forgotten. A link
that connects while the gate is shut is held at the next tick (uvloop starts reading a new
connection only after ``connection_made``, so it cannot be held there).

Only TCP links (``hesd.transports.tcp.TcpLink``, dial-in and dial-out) are gated. An MQTT broker
connection is one socket for many meters that also carries the broker's keepalive answers and
acknowledgements: pausing it would stall every MQTT meter and risk the broker dropping hesd (its
backpressure is ``mqtt.max_queue``). A serial bus only carries answers to what hesd asked, one
exchange at a time, so hesd already paces it; pausing it would only make requests time out.

Logging stays quiet during oscillation: ``intake.paused`` (a warning) for the first pause, then at
most one summary line every ``LOG_EVERY`` seconds while pauses keep happening, and
``intake.resumed`` once no pause happened for ``QUIET`` seconds, with the episode's totals.

Time is a parameter: ``tick(now)`` does one step on the loop's clock and ``deadline`` says when the
next is due; only ``run()`` arms the timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, Protocol

import structlog

__all__ = ["INTERVAL", "IntakeGate", "Pausable"]

log = structlog.get_logger("hesd.intake")

INTERVAL: Final = 0.02  # seconds between ticks of the lag timer
LOG_EVERY: Final = 10.0  # seconds between summary lines while pauses keep happening
QUIET: Final = 5.0  # seconds without a pause that end an overload episode (intake.resumed)


class Pausable(Protocol):
    """What the gate needs of a transport (``asyncio.ReadTransport``'s flow control)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_reading(self) -> bool: ...

    def is_closing(self) -> bool: ...


class IntakeGate:
    """Pauses reading on registered transports while the loop lags; ``run()`` is its timer."""

    __slots__ = (
        "_accounted_at",
        "_deadline",
        "_episode_from",
        "_episode_start",
        "_hold_open",
        "_interval",
        "_joining",
        "_last_log",
        "_last_open",
        "_links",
        "_max_pause",
        "_now",
        "_pause_lag",
        "_paused",
        "_paused_at",
        "_paused_total",
        "_resume_lag",
        "_window_from",
        "_window_lag",
        "lag",
        "on_change",
        "pauses",
    )

    def __init__(
        self,
        pause_lag: float,
        resume_lag: float,
        max_pause: float,
        *,
        interval: float = INTERVAL,
    ) -> None:
        self._pause_lag = pause_lag
        self._resume_lag = resume_lag
        self._max_pause = max_pause
        self._interval = interval
        self._links: set[Pausable] = set()
        self._paused: set[Pausable] = set()  # what the gate paused, and only that
        self._joining: set[Pausable] = set()  # registered while shut: held at the next tick
        self._deadline: float | None = None
        self._now = 0.0
        self._paused_at: float | None = None  # when the current pause began; None: open
        self._accounted_at = 0.0  # paused time before this is in the counters
        self._hold_open = False  # the cap just opened the gate: one tick without pausing
        self._paused_total = 0.0
        self._last_open = 0.0
        # an overload episode's log: when it began, and the counters (pauses, paused_total) as
        # they stood then and at its last summary line; its figures are the differences
        self._episode_start: float | None = None
        self._episode_from = (0, 0.0)
        self._last_log = 0.0
        self._window_from = (0, 0.0)
        self._window_lag = 0.0
        self.lag = 0.0  # the last lag measured, in seconds
        self.pauses = 0  # since start
        self.on_change: Callable[[bool], None] | None = None  # called after it shuts or opens

    # -- configuration and state -------------------------------------------------------------

    def configure(self, pause_lag: float, resume_lag: float, max_pause: float) -> None:
        """New marks (a SIGHUP reload); turning the gate off opens it at once."""
        marks = (pause_lag, resume_lag, max_pause)
        if marks == (self._pause_lag, self._resume_lag, self._max_pause):
            return
        self._pause_lag, self._resume_lag, self._max_pause = marks
        log.info(
            "intake.configured",
            lag_pause=pause_lag,
            lag_resume=resume_lag,
            max_pause=max_pause,
        )
        if not self.enabled and self.paused:
            self._open(self._now)

    @property
    def enabled(self) -> bool:
        return self._pause_lag > 0

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    @property
    def paused_seconds(self) -> float:
        """Seconds paused since start, the current pause included (up to the last tick)."""
        ongoing = self._now - self._accounted_at if self.paused else 0.0
        return self._paused_total + ongoing

    @property
    def links(self) -> int:
        """Transports registered (TCP connections open)."""
        return len(self._links)

    @property
    def deadline(self) -> float | None:
        """When the next tick is due, on the loop's clock; None before the first."""
        return self._deadline

    # -- links -------------------------------------------------------------------------------

    def register(self, transport: Pausable) -> None:
        """A meter connection opened (``connection_made``)."""
        self._links.add(transport)
        if self.paused:
            self._joining.add(transport)

    def unregister(self, transport: Pausable) -> None:
        """A meter connection ended (``connection_lost``): forget it, paused or not."""
        self._links.discard(transport)
        self._paused.discard(transport)
        self._joining.discard(transport)

    # -- the timer ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """One tick at ``now`` (the loop's clock): measure the lag, shut or open the gate."""
        lag = 0.0 if self._deadline is None else max(0.0, now - self._deadline)
        self._deadline = now + self._interval
        self._now = now
        self.lag = lag
        self._window_lag = max(self._window_lag, lag)
        paused_at = self._paused_at
        if paused_at is not None:
            for transport in self._joining:
                self._hold(transport)
            self._joining.clear()
            if not self.enabled or lag < self._resume_lag:
                self._open(now)
            elif now - paused_at >= self._max_pause:
                self._open(now)
                self._hold_open = True  # the meters get at least one tick of reading
        else:
            self._joining.clear()
            if self._hold_open:
                self._hold_open = False
            elif self.enabled and lag > self._pause_lag:
                self._shut(now, lag)
        self._report(now)

    async def run(self) -> None:
        """Tick every ``INTERVAL`` seconds until cancelled; then open the gate (nothing may stay
        paused once nobody would resume it)."""
        loop = asyncio.get_running_loop()
        try:
            self.tick(loop.time())
            while True:
                assert self._deadline is not None
                await asyncio.sleep(max(0.0, self._deadline - loop.time()))
                self.tick(loop.time())
        finally:
            if self.paused:
                self._open(loop.time())

    # -- shutting and opening ----------------------------------------------------------------

    def _hold(self, transport: Pausable) -> None:
        if transport in self._paused or transport.is_closing() or not transport.is_reading():
            return  # already held, going away, or paused by its owner: not the gate's to touch
        transport.pause_reading()
        self._paused.add(transport)

    def _shut(self, now: float, lag: float) -> None:
        for transport in self._links:
            self._hold(transport)
        self._paused_at = self._accounted_at = now
        if self._episode_start is None:
            self._episode_start = self._last_log = now
            self._episode_from = self._window_from = (self.pauses, self._paused_total)
            log.warning(
                "intake.paused",
                lag_ms=round(lag * 1000, 1),
                links=len(self._links),
                held=len(self._paused),
                detail="the event loop is overloaded: meters' sockets are not read for now",
            )
        self.pauses += 1
        if self.on_change is not None:
            self.on_change(True)

    def _open(self, now: float) -> None:
        for transport in self._paused:
            if not transport.is_closing():
                transport.resume_reading()
        self._paused.clear()
        self._joining.clear()
        self._account(now)
        self._paused_at = None
        self._last_open = now
        if self.on_change is not None:
            self.on_change(False)

    def _account(self, now: float) -> None:
        """Move the paused time up to ``now`` into the counters."""
        if self._paused_at is None:
            return
        seconds = max(0.0, now - self._accounted_at)
        self._accounted_at = now
        self._paused_total += seconds

    def _report(self, now: float) -> None:
        """The summary lines of an overload episode, and its end."""
        if self._episode_start is None:
            self._window_lag = 0.0
            return
        if now - self._last_log >= LOG_EVERY:
            self._account(now)
            pauses, paused = self._since(self._window_from)
            if pauses or self.paused:
                log.warning(
                    "intake.paused",
                    pauses=pauses,
                    paused_seconds=round(paused, 3),
                    over_seconds=round(now - self._last_log, 3),
                    max_lag_ms=round(self._window_lag * 1000, 1),
                    links=len(self._links),
                )
            self._last_log = now
            self._window_from = (self.pauses, self._paused_total)
            self._window_lag = 0.0
        if not self.paused and now - self._last_open >= QUIET:
            pauses, paused = self._since(self._episode_from)
            log.info(
                "intake.resumed",
                pauses=pauses,
                paused_seconds=round(paused, 3),
                over_seconds=round(self._last_open - self._episode_start, 3),
                links=len(self._links),
            )
            self._episode_start = None
            self._window_lag = 0.0

    def _since(self, counters: tuple[int, float]) -> tuple[int, float]:
        """Pauses and paused seconds since ``counters`` (``pauses``, ``_paused_total``) were
        taken, up to the last accounting."""
        pauses, paused_total = counters
        return self.pauses - pauses, self._paused_total - paused_total
