"""``SimClock``: the simulated time of a fleet, a UTC epoch that may run faster than real time.

``now() = start + (monotonic() - t0) * time_scale``. Meters, pushes and protocol timers all take
this ``now``; the asyncio layer turns a simulated deadline back into real seconds with
``real_delay``. ``monotonic`` is injectable so tests can step time by hand.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["SimClock"]


class SimClock:
    """Simulated UTC seconds, ``time_scale`` simulated seconds per real second."""

    __slots__ = ("_monotonic", "_t0", "start", "time_scale")

    def __init__(
        self,
        start: float,
        time_scale: float = 1.0,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start {start} is not a finite UTC epoch")
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time scale {time_scale} must be a positive number")
        self.start = start
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now(self) -> float:
        """The simulated time: a UTC epoch in seconds."""
        return self.start + (self._monotonic() - self._t0) * self.time_scale

    def real_delay(self, when: float) -> float:
        """Real seconds from now until the simulated time ``when`` (0 when it has passed)."""
        return max(0.0, (when - self.now()) / self.time_scale)

    def simulated(self, real_seconds: float) -> float:
        """How many simulated seconds ``real_seconds`` of real time are."""
        return real_seconds * self.time_scale
