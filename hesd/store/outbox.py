"""Outbox statistics (the outbox table itself is written by the MDM uplink)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hesd.store.db import Store

__all__ = ["OutboxStats", "outbox_stats"]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # records waiting for the MDM (pending or in flight)
    dead_letters: int  # records the MDM refused, parked for replay
    oldest_age: float | None  # seconds since the oldest waiting record was accepted


async def outbox_stats(store: Store, now: float | None = None) -> OutboxStats:
    now = time.time() if now is None else now
    row = await store.fetchone(
        "SELECT coalesce(sum(state != 'dead'), 0), coalesce(sum(state = 'dead'), 0),"
        " min(CASE WHEN state != 'dead' THEN created_at END) FROM outbox"
    )
    assert row is not None
    oldest = None if row[2] is None else max(0.0, now - row[2])
    return OutboxStats(depth=int(row[0]), dead_letters=int(row[1]), oldest_age=oldest)
