"""Suite-0 invocation counters, persisted so that a restart never reuses or re-accepts one.

IEC 62056-5-3 §5.3.4.7: the invocation counter in every ciphered APDU is part of the GCM nonce, so
hesd must never send two APDUs with the same counter under one key (nonce reuse breaks GCM), and
must refuse a response whose counter is not higher than the last one accepted (replay).

Sending side: counters are *reserved ahead* in blocks. Before the first counter of a block is
handed out, the end of the block is committed to disk; after a crash hesd resumes from that end,
skipping at most one block of unused counters but never reusing one.

Receiving side: the highest accepted counter is kept in memory and flushed with the next group
commit. A crash can lose at most the last commit interval of it; the session layer re-associates
after a restart, which (HLS) rotates the challenge, so a replayed older response fails there too.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from hesd.store.db import Statement, Store, StoreError

__all__ = ["CounterExhausted", "InvocationCounters"]

MAX_COUNTER: Final = 0xFFFF_FFFF
_UPSERT: Final = (
    "INSERT INTO invocation_counters (meter_id, client_address, direction, value, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (meter_id, client_address, direction)"
    " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)


class CounterExhausted(StoreError):
    """The 32-bit invocation counter of a key is used up: the key must be changed."""


class InvocationCounters:
    """Persisted suite-0 invocation counters: ours reserved in ranges, the meters' last accepted."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._end: dict[tuple[str, int], int] = {}  # first counter not yet reserved
        self._rx: dict[tuple[str, int], int] = {}
        self._rx_dirty: dict[tuple[str, int], int] = {}
        self._tx_lock = asyncio.Lock()
        store.add_flusher(self._flush_rx)

    async def _load(self, meter_id: str, client: int, direction: str) -> int | None:
        value = await self._store.scalar(
            "SELECT value FROM invocation_counters"
            " WHERE meter_id = ? AND client_address = ? AND direction = ?",
            (meter_id, client, direction),
        )
        return None if value is None else int(value)

    async def reserve_tx(self, meter_id: str, client: int, count: int) -> range:
        """Reserve ``count`` counters hesd may send to ``meter_id`` as client ``client``.

        The end of the range is committed before the range is returned, so counters handed out
        are never handed out again, whatever happens to the process afterwards. Unused ones are
        simply skipped. The range is shorter than ``count`` only at the end of the 32-bit space.
        """
        if count < 1:
            raise ValueError("reserve at least one counter")
        key = (meter_id, client)
        async with self._tx_lock:
            start = self._end.get(key)
            if start is None:
                start = await self._load(meter_id, client, "tx") or 0
            if start > MAX_COUNTER:
                raise CounterExhausted(
                    f"meter {meter_id} client {client}: invocation counter exhausted"
                )
            end = min(start + count, MAX_COUNTER + 1)
            await self._store.execute(_UPSERT, (meter_id, client, "tx", end, time.time()))
            self._end[key] = end
            return range(start, end)

    async def last_rx(self, meter_id: str, client: int) -> int | None:
        key = (meter_id, client)
        if key not in self._rx:
            stored = await self._load(meter_id, client, "rx")
            if stored is None:
                return None
            self._rx[key] = stored
        return self._rx[key]

    async def accept_rx(self, meter_id: str, client: int, value: int) -> bool:
        """Record ``value`` from the meter; False (refuse) unless it is above the last one."""
        last = await self.last_rx(meter_id, client)
        if last is not None and value <= last:
            return False
        key = (meter_id, client)
        self._rx[key] = value
        self._rx_dirty[key] = value
        self._store.poke()
        return True

    def known_rx(self, meter_id: str, client: int) -> int | None:
        """The meter's last accepted counter if already loaded or noted (no database read)."""
        return self._rx.get((meter_id, client))

    def note_rx(self, meter_id: str, client: int, value: int) -> None:
        """Record ``value`` as the meter's last accepted counter (the caller already checked it
        is higher, e.g. ``SecurityContext``); written with the next group commit."""
        key = (meter_id, client)
        if value > self._rx.get(key, -1):
            self._rx[key] = value
            self._rx_dirty[key] = value
            self._store.poke()

    def _flush_rx(self) -> list[Statement]:
        if not self._rx_dirty:
            return []
        dirty, self._rx_dirty = self._rx_dirty, {}
        now = time.time()
        return [(_UPSERT, (m, c, "rx", v, now)) for (m, c), v in dirty.items()]
