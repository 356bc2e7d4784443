"""TCP transports of ``hesd-sim``: ``serve`` (each meter listens, hesd connects) and ``dial``
(each meter connects to hesd and keeps the connection).

Serve: meter ``i`` listens on its own loopback address ``127.0.x.y:4059`` (all of 127.0.0.0/8
is loopback on Linux; ``x = 1 + i // 254``, ``y = 1 + i % 254``, so host parts 0 and 255 are
never used and 127.0.0.1 stays free; 64,770 meters at most), or with ``port_base`` on
``host:port_base+i``. Port 0 takes ephemeral ports (tests). A meter takes one connection at a
time, like a meter's modem: a second one is closed at once. A vendor whose profile frames with
HDLC speaks HDLC over the connection (a meter behind a transparent serial-to-TCP modem; any
lower address, as hesd then uses the one-byte server address) and does not push.

Dial: every meter connects to the HES, sends its identification push first (see
``MeterEndpoint.identification``), answers requests on the same connection, and reconnects
with capped, jittered back-off when the connection drops or cannot be made; the first
connections are spread evenly over ``ramp`` seconds.
"""

from __future__ import annotations

import asyncio
import socket
import time
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, cast

from hesd.sim.endpoint import HdlcBus, MeterEndpoint, Reply
from hesd.sim.serial import FIRST_PHYSICAL
from hesd.sim.transports import Backoff, SimEnv, raise_nofile_limit
from protocols.dlms.axdr import Value

__all__ = ["DEFAULT_PORT", "DialTransport", "MeterStream", "ServeTransport", "loopback_address"]

DEFAULT_PORT: Final = 4059  # IANA "DLMS/COSEM" port (IEC 62056-47 §5)
_MAX_LOOPBACK: Final = 255 * 254


def loopback_address(index: int) -> str:
    """Meter ``index``'s own loopback address, 127.0.x.y with x in 1..255 and y in 1..254."""
    if not 0 <= index < _MAX_LOOPBACK:
        raise ValueError(f"meter {index}: serve mode gives at most {_MAX_LOOPBACK} addresses")
    return f"127.0.{1 + index // 254}.{1 + index % 254}"


class MeterStream(asyncio.Protocol):
    """One TCP connection of one meter. Replies with a latency are written in order."""

    def __init__(self, env: SimEnv, endpoint: MeterEndpoint, *, identify: bool = False) -> None:
        self.env = env
        self.endpoint = endpoint
        self.identify = identify
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()
        self._pending: deque[asyncio.TimerHandle] = deque()
        self._not_before = 0.0
        self._closing = False
        self._owner = False  # the endpoint's link (a second connection is refused)
        self._bus: HdlcBus | None = None  # an HDLC vendor's meter speaks HDLC over TCP
        if endpoint.site.profile.framing.kind == "hdlc":
            self._bus = HdlcBus([endpoint], [FIRST_PHYSICAL], env.ctx)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods
        self.transport = transport = cast(asyncio.Transport, transport)
        endpoint, env = self.endpoint, self.env
        if endpoint.sink is not None:
            env.report(endpoint, _note("sim.meter.busy", "already connected: refused"))
            self._closing = True
            transport.abort()
            return
        self._owner = True
        now = env.clock.now()
        env.report(endpoint, endpoint.open(now))
        endpoint.sink = self
        if self.identify:
            self.send(endpoint.identification(now))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        now = self.env.clock.now()
        if self._bus is None:
            self.send(self.endpoint.receive(data, now))
            return
        for _, reply in self._bus.receive(data, now):
            self.send(reply)

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def send(self, reply: Reply) -> None:
        """Write a reply as it says: after its delay, then close if asked."""
        self.env.report(self.endpoint, reply)
        if self._closing or not (reply.data or reply.close):
            return
        loop = self._loop
        now = loop.time()
        at = max(now + reply.delay, self._not_before)
        if at <= now and not self._pending:
            self._write(reply.data, reply.close)
            return
        self._not_before = at
        self._pending.append(loop.call_at(at, self._write_later, reply.data, reply.close))

    def push(self, now: float, body: Value | None = None) -> None:
        if self._bus is None:  # HDLC in normal response mode only answers polls
            self.send(self.endpoint.push(now, body))

    def _write_later(self, data: bytes, close: bool) -> None:
        self._pending.popleft()
        self._write(data, close)

    def _write(self, data: bytes, close: bool) -> None:
        transport = self.transport
        if transport is None or self._closing or transport.is_closing():
            return
        if data:
            transport.write(data)
        if close:
            self._closing = True
            transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closing = True
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        while self._pending:
            self._pending.popleft().cancel()
        if self._owner:
            reason = "closed by the peer" if exc is None else f"connection lost: {exc}"
            if self._closing:
                reason = "closed by the meter"
            self.env.report(self.endpoint, self.endpoint.close(self.env.clock.now(), reason))
        if not self.closed.done():
            self.closed.set_result(None)


def _note(event: str, reason: str) -> Reply:
    reply = Reply()
    reply.note(event, reason=reason)
    return reply


class ServeTransport:
    """Every meter listens; hesd connects (inventory transport ``tcp-out``)."""

    mode = "serve"

    def __init__(
        self,
        env: SimEnv,
        endpoints: Sequence[MeterEndpoint],
        *,
        host: str | None = None,
        port_base: int | None = None,
        port: int = DEFAULT_PORT,
    ) -> None:
        if port_base is not None and not 0 <= port_base <= 65535 - (
            len(endpoints) - 1 if port_base else 0
        ):
            raise ValueError(f"ports {port_base}..{port_base + len(endpoints) - 1} do not fit")
        if host is None and port_base is None and len(endpoints) > _MAX_LOOPBACK:
            raise ValueError(f"{len(endpoints)} meters: serve mode gives at most {_MAX_LOOPBACK}")
        self.env = env
        self.endpoints = list(endpoints)
        self.host = host
        self.port_base = port_base
        self.port = port
        self._ports = array("H", bytes(2 * len(self.endpoints)))  # bound ports, by index
        self._streams: set[MeterStream] = set()

    def _bind_to(self, index: int) -> tuple[str, int]:
        if self.port_base is not None:
            port = self.port_base + index if self.port_base else 0
            return self.host or "127.0.0.1", port
        return self.host or loopback_address(index), self.port

    def address(self, endpoint: MeterEndpoint) -> str:
        host, _ = self._bind_to(endpoint.index)
        return f"{host}:{self._ports[endpoint.index]}"

    def _stream(self, endpoint: MeterEndpoint) -> MeterStream:
        stream = MeterStream(self.env, endpoint)
        self._streams.add(stream)
        stream.closed.add_done_callback(lambda _: self._streams.discard(stream))
        return stream

    async def run(self, ready: Callable[[], None]) -> None:
        soft, _ = raise_nofile_limit()
        loop = asyncio.get_running_loop()
        servers: list[asyncio.AbstractServer] = []
        started = time.perf_counter()
        try:
            for endpoint in self.endpoints:
                host, port = self._bind_to(endpoint.index)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((host, port))
                    sock.listen(4)
                    sock.setblocking(False)
                except OSError as exc:
                    sock.close()
                    raise OSError(
                        exc.errno,
                        f"meter {endpoint.meter_id}: cannot listen on {host}:{port} "
                        f"({exc.strerror}; open files limit {soft})",
                    ) from None
                self._ports[endpoint.index] = sock.getsockname()[1]
                servers.append(await loop.create_server(partial(self._stream, endpoint), sock=sock))
            self.env.log.info(
                "sim.serve.listening",
                meters=len(servers),
                first=self.address(self.endpoints[0]) if self.endpoints else None,
                last=self.address(self.endpoints[-1]) if self.endpoints else None,
                seconds=round(time.perf_counter() - started, 3),
            )
            ready()
            await asyncio.Event().wait()
        finally:
            for server in servers:
                server.close()
            for stream in list(self._streams):
                stream.abort()


class DialTransport:
    """Every meter connects to the HES and keeps the connection (inventory ``tcp-in``)."""

    mode = "dial"

    def __init__(
        self,
        env: SimEnv,
        endpoints: Sequence[MeterEndpoint],
        hes: tuple[str, int],
        *,
        ramp: float = 0.0,
        backoff: Backoff | None = None,
    ) -> None:
        if ramp < 0:
            raise ValueError(f"ramp {ramp} s is negative")
        for endpoint in endpoints:
            if endpoint.site.profile.framing.kind != "wrapper":
                raise ValueError(
                    f"dial mode needs WRAPPER framing, and {endpoint.site.name} meters speak "
                    "HDLC: hesd knows a dialling meter by its first push, a WRAPPER frame"
                )
        self.env = env
        self.endpoints = list(endpoints)
        self.hes = hes
        self.ramp = ramp
        self.backoff = backoff or Backoff()

    def address(self, endpoint: MeterEndpoint) -> str:
        return ""  # hesd knows a dialling meter by its identification push, not its address

    async def run(self, ready: Callable[[], None]) -> None:
        raise_nofile_limit()
        ready()
        count = len(self.endpoints) or 1
        async with asyncio.TaskGroup() as tg:
            for i, endpoint in enumerate(self.endpoints):
                tg.create_task(
                    self._dial(endpoint, self.ramp * i / count),
                    name=f"sim:meter:{endpoint.meter_id}:conn",
                )

    async def _dial(self, endpoint: MeterEndpoint, delay: float) -> None:
        loop = asyncio.get_running_loop()
        env, (host, port) = self.env, self.hes
        stats = env.ctx.stats
        if delay:
            await asyncio.sleep(delay)
        attempt, connected_before = 0, False
        while True:
            try:
                _, stream = await loop.create_connection(
                    lambda: MeterStream(env, endpoint, identify=True), host, port
                )
            except OSError as exc:
                stats.connect_failures += 1
                env.report(endpoint, _note("sim.meter.connect_failed", str(exc)))
                attempt += 1
            else:
                if connected_before:
                    stats.per_mode["reconnects"] += 1
                connected_before = True
                try:
                    await stream.closed
                finally:
                    stream.abort()
                attempt = 1
            await asyncio.sleep(self.backoff.delay(attempt))
