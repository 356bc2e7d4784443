"""The one link abstraction every transport implements, and a null-modem pair for tests.

A ``Link`` moves bytes between hesd and a meter (or a bus of meters): TCP in either direction, a
serial port, an MQTT topic pair. Sessions only ever see this small protocol, so the same session
code serves every transport, and tests join a session to a simulated meter with ``null_modem``,
whose hooks split, delay or corrupt what crosses it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from protocols.errors import HesdError

__all__ = [
    "Chunk",
    "Inbox",
    "Link",
    "LinkClosed",
    "NullModemEnd",
    "SharedLink",
    "Tamper",
    "flip_bit",
    "null_modem",
    "split_every",
]


class LinkClosed(HesdError):
    """The link is closed (by either side); nothing more will arrive on it."""


@runtime_checkable
class Link(Protocol):
    """Bytes to and from one peer."""

    @property
    def peer(self) -> str:
        """Who is at the other end, for logs: "10.1.2.3:4059", "/dev/ttyUSB0", "mqtt:MTR-1"."""
        ...

    async def send(self, data: bytes) -> None:
        """Queue ``data`` for the peer; raises ``LinkClosed`` once the link is closed."""
        ...

    async def receive(self) -> bytes:
        """The next bytes from the peer (any amount); raises ``LinkClosed`` at the end."""
        ...

    async def close(self) -> None:
        """Close; pending ``receive`` calls on both ends raise ``LinkClosed``."""
        ...


@runtime_checkable
class SharedLink(Link, Protocol):
    """A link on a wire that other meters share (an RS-485 bus, an optical port): one exchange
    at a time. A session holds ``exclusive()`` for each request (its association and link-layer
    set-up included); while it holds it, its bytes go out and the bytes that arrive are its."""

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Wait for the wire, hold it for the ``async with`` block; raises ``LinkClosed``."""
        ...


class Inbox:
    """Bytes received for a link until its ``receive()`` takes them all, and the waiter to wake.

    The link says when it is closed: ``get(closed)`` raises ``LinkClosed(closed())`` once nothing
    is buffered and ``closed()`` returns a reason instead of ``None``.
    """

    __slots__ = ("_chunks", "_waiter")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    def put(self, data: bytes) -> None:
        self._chunks.append(data)
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, closed: Callable[[], str | None]) -> bytes:
        while not self._chunks:
            reason = closed()
            if reason is not None:
                raise LinkClosed(reason)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


# A tamper hook turns what one side sent into what the other side gets: a list of
# (delay in seconds, bytes) chunks, delivered in order. Returning [] drops the data.
Chunk = tuple[float, bytes]
Tamper = Callable[[bytes], Iterable[Chunk]]


class NullModemEnd:
    """One end of an in-process link; made in pairs by ``null_modem``."""

    __slots__ = ("_closed", "_inbox", "_name", "_other", "_tamper", "_tasks")

    def __init__(self, name: str, tamper: Tamper | None) -> None:
        self._name = name
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._other: NullModemEnd | None = None
        self._tamper = tamper
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def peer(self) -> str:
        assert self._other is not None
        return f"null-modem:{self._other._name}"

    async def send(self, data: bytes) -> None:
        other = self._other
        if self._closed or other is None or other._closed:
            raise LinkClosed(f"{self._name}: link closed")
        if self._tamper is None:
            other._inbox.put_nowait(bytes(data))
            return
        chunks = list(self._tamper(bytes(data)))
        if all(delay <= 0 for delay, _ in chunks):
            for _, chunk in chunks:
                other._inbox.put_nowait(chunk)
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver_later(other, chunks), name=f"null-modem:{self._name}:deliver"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver_later(self, other: NullModemEnd, chunks: list[Chunk]) -> None:
        for delay, chunk in chunks:
            if delay > 0:
                await asyncio.sleep(delay)  # the simulated line delay itself, not synchronisation
            if other._closed:
                return
            other._inbox.put_nowait(chunk)

    async def receive(self) -> bytes:
        if self._closed and self._inbox.empty():
            raise LinkClosed(f"{self._name}: link closed")
        data = await self._inbox.get()
        if data is None:
            self._closed = True
            raise LinkClosed(f"{self._name}: peer closed the link")
        return data

    async def close(self) -> None:
        for end in (self, self._other):
            if end is not None and not end._closed:
                end._closed = True
                end._inbox.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def null_modem(
    a_to_b: Tamper | None = None, b_to_a: Tamper | None = None, names: tuple[str, str] = ("a", "b")
) -> tuple[NullModemEnd, NullModemEnd]:
    """Two joined link ends; the hooks tamper with what crosses in each direction."""
    a, b = NullModemEnd(names[0], a_to_b), NullModemEnd(names[1], b_to_a)
    a._other, b._other = b, a
    return a, b


def split_every(size: int) -> Tamper:
    """A tamper hook delivering data in ``size``-byte pieces (framers must reassemble)."""

    def hook(data: bytes) -> list[Chunk]:
        return [(0.0, data[i : i + size]) for i in range(0, len(data), size)]

    return hook


def flip_bit(offset: int, bit: int = 0) -> Tamper:
    """A tamper hook flipping one bit at ``offset`` (negative: from the end) of every message."""

    def hook(data: bytes) -> list[Chunk]:
        if not data:
            return [(0.0, data)]
        changed = bytearray(data)
        changed[offset] ^= 1 << bit
        return [(0.0, bytes(changed))]

    return hook
