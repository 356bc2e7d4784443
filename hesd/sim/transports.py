"""What every ``hesd-sim`` transport shares: the ``Transport`` protocol, the environment the
endpoints run in (clock, counters, log), and the reconnect back-off.

A transport moves bytes between the outside (TCP listeners, dialled TCP connections, a pty, an
MQTT broker) and ``MeterEndpoint``/``HdlcBus``; it never looks inside them. Modes:
``hesd.sim.tcp`` (serve, dial), ``hesd.sim.serial``, ``hesd.sim.mqtt``.
"""

from __future__ import annotations

import random
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from hesd.sim.clock import SimClock
from hesd.sim.endpoint import FleetContext, MeterEndpoint, Reply

__all__ = ["Backoff", "SimEnv", "Transport", "raise_nofile_limit"]

VERBOSE_UP_TO: Final = 999  # fleets of 1000 meters and more log per-meter events at debug


class Transport(Protocol):
    """One way of reaching the fleet. ``run`` sets up (listeners, ptys, broker connection),
    calls ``ready()`` once every meter has its address, serves until cancelled and cleans up."""

    mode: str

    def address(self, endpoint: MeterEndpoint) -> str:
        """The meter's address in the inventory (``docs/inventory.md``) for this mode."""
        ...

    async def run(self, ready: Callable[[], None]) -> None: ...


@dataclass(slots=True)
class SimEnv:
    """The clock, the shared counters and the log of a running fleet."""

    clock: SimClock
    ctx: FleetContext
    log: Any  # a structlog BoundLogger
    verbose: bool = True  # per-meter events at info (else debug)

    @classmethod
    def create(cls, clock: SimClock, ctx: FleetContext, meters: int) -> SimEnv:
        log = structlog.get_logger("hesd.sim")
        return cls(clock, ctx, log, meters <= VERBOSE_UP_TO)

    def report(self, endpoint: MeterEndpoint, reply: Reply) -> None:
        """Log the notes of a reply, with the meter's id."""
        if not reply.notes:
            return
        meter = endpoint.meter_id
        for event, fields in reply.notes:
            if self.verbose:
                self.log.info(event, meter=meter, **fields)
            else:
                self.log.debug(event, meter=meter, **fields)


class Backoff:
    """Reconnect delays: ``initial * 2**(attempt-1)`` capped at ``cap``, each drawn uniformly
    from its upper half ("equal jitter"), so a fleet that lost its HES does not come back in
    one wave."""

    __slots__ = ("_random", "cap", "initial")

    def __init__(self, initial: float = 1.0, cap: float = 60.0, seed: int = 0) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"back-off {initial} s .. {cap} s is not a range")
        self.initial = initial
        self.cap = cap
        self._random = random.Random(seed)  # noqa: S311 - jitter, not cryptography

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap, self.initial * 2.0 ** min(max(attempt - 1, 0), 30))
        return ceiling / 2 + self._random.random() * ceiling / 2


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit (10,000 listeners need it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)
