"""The back-off of every retry loop (hesd/backoff.py)."""

from __future__ import annotations

import time

from hesd.backoff import backoff
from hesd.config import load_config
from hesd.transports.tcp import TcpDialer


def test_backoff_doubles_is_capped_and_jittered() -> None:
    for attempt, full in ((1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (40, 300.0)):
        delays = [backoff(attempt, 1.0, 300.0) for _ in range(200)]
        assert all(full * 0.5 <= d < full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jittered
    assert 0.5 <= backoff(0, 1.0, 300.0) < 1.0  # a first failure however it is counted


def test_any_number_of_failures_has_a_delay() -> None:
    """2 ** 1024 is no float: a meter that failed its dial 1,025 times in a row once made the
    TCP dialler's back-off raise OverflowError."""
    assert 150.0 <= backoff(5_000, 1.0, 300.0) < 300.0
    dialer = TcpDialer(load_config(None).tcp)
    dialer._failures["M1"] = 5_000
    dialer._backoff("M1")
    retry_in = dialer._retry_at["M1"] - time.monotonic()
    assert 0 < retry_in <= load_config(None).tcp.backoff_max
