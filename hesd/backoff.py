"""The back-off every retry loop of hesd uses (TCP dial-out, MQTT reconnect, serial reopen, the
MDM uplink): doubling from an initial delay, capped, with jitter so that meters or batches that
failed together do not retry together.
"""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (1, 2, ...): ``initial * 2 **
    (attempt - 1)``, at most ``cap``, times a random factor in [0.5, 1). Any number of failures
    is fine (the exponent is bounded: a float cannot hold 2 ** 1024)."""
    delay = min(cap, initial * 2.0 ** min(max(attempt, 1) - 1, 60))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
