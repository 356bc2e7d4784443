"""TCP both ways: meters that dial in (4G/NB-IoT modems, concentrators) and meters hesd dials.

Dial-in (``TcpListener``): a new connection is an unknown peer until it identifies itself with
its first push, a WRAPPER-framed Data-Notification: a plaintext one whose body holds the meter's
serial number (a string) or system title (8 octets), or a general-glo-ciphered one (0xDB), which
carries the system title in clear. The registry says which meter that is; the connection then
becomes that meter's link and the push its first notification. A peer that does not identify
within ``tcp.identify_timeout`` seconds and ``tcp.identify_max_bytes`` bytes, or names a meter
the registry does not know, is logged (``tcp.unidentified``) and dropped, and nothing it sent is
forwarded.

Dial-out (``TcpDialer``): hesd connects to the meter's ``host:port`` when a request needs it,
with a connect timeout, at most ``tcp.per_destination`` connections per host at once, and a
capped, jittered back-off after failures; an idle connection is closed after ``tcp.idle_close``.

Both register their connections with the intake gate (``hesd/intake.py``), which stops reading
them while the event loop lags, so that meters wait in TCP's flow control rather than in ever
longer loop iterations.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Final, cast

import structlog

from hesd.backoff import backoff
from hesd.config import TcpConfig
from hesd.intake import IntakeGate
from hesd.link import Inbox, LinkClosed
from hesd.session import SessionError
from hesd.sessions import SessionManager
from hesd.store import MeterRecord, Registry
from protocols.dlms import apdu as x
from protocols.dlms.security import GENERAL_GLO_CIPHERING, parse_ciphered
from protocols.dlms.wrapper import WrapperFramer
from protocols.errors import RemoteProtocolError

__all__ = ["TcpDialer", "TcpLink", "TcpListener", "identify_push"]

log = structlog.get_logger("hesd.tcp")

HIGH_WATER: Final = 64 * 1024  # bytes queued in the kernel before send() waits


class TcpLink(asyncio.Protocol):
    """A ``Link`` over one TCP connection (an asyncio protocol: no stream objects per meter)."""

    def __init__(self, idle_close: float | None = None, gate: IntakeGate | None = None) -> None:
        self._transport: asyncio.Transport | None = None
        self._gate = gate
        self._inbox = Inbox()
        self._drained: asyncio.Future[None] | None = None
        self._closed = False
        self._close_reason = "peer closed the connection"
        self._peer = "?"
        self._idle_close = idle_close
        self._idle_timer: asyncio.TimerHandle | None = None
        self.connected = asyncio.get_running_loop().create_future()
        self.on_close: Callable[[], None] | None = None  # called once, when the connection ends

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._transport.set_write_buffer_limits(high=HIGH_WATER)
        if self._gate is not None:
            self._gate.register(self._transport)
        self._touch()
        if not self.connected.done():
            self.connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._touch()
        self._inbox.put(data)

    def eof_received(self) -> bool:
        self._closed = True
        self._inbox.wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._gate is not None and self._transport is not None:
            self._gate.unregister(self._transport)
        if self.on_close is not None:
            self.on_close()
            self.on_close = None
        if exc is not None:
            self._close_reason = f"connection lost: {exc}"
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._inbox.wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _touch(self) -> None:
        if self._idle_close is None:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self._idle_close, self._idle)

    def _idle(self) -> None:
        self._close_reason = f"idle for {self._idle_close:g} s"
        if self._transport is not None:
            self._transport.close()

    # -- Link -------------------------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self._peer

    async def send(self, data: bytes) -> None:
        if self._closed or self._transport is None or self._transport.is_closing():
            raise LinkClosed(f"{self._peer}: {self._close_reason}")
        self._transport.write(data)
        self._touch()
        if self._drained is not None and not self._drained.done():
            await self._drained

    async def receive(self) -> bytes:
        return await self._inbox.get(
            lambda: f"{self._peer}: {self._close_reason}" if self._closed else None
        )

    async def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._close_reason = "closed by hesd"
            self._transport.close()
        self._closed = True
        self._inbox.wake()


class _Prefixed:
    """A link whose first ``receive`` returns bytes already read from it."""

    def __init__(self, link: TcpLink, first: bytes) -> None:
        self._link = link
        self._first = first

    @property
    def peer(self) -> str:
        return self._link.peer

    async def send(self, data: bytes) -> None:
        await self._link.send(data)

    async def receive(self) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return await self._link.receive()

    async def close(self) -> None:
        await self._link.close()


def identify_push(apdu: bytes) -> tuple[str, str]:
    """(serial number, system title hex) a meter's first push names; raises if it names none.

    A general-glo-ciphered push names its system title in clear; a plaintext Data-Notification
    names its serial number (a string) or system title (8 octets) among its body's values.
    """
    if apdu and apdu[0] == GENERAL_GLO_CIPHERING:
        named = parse_ciphered(apdu).system_title
        if named is None:
            raise RemoteProtocolError("ciphered push without a system title")
        return "", named.hex().upper()
    push = x.decode_apdu(apdu)
    if not isinstance(push, x.DataNotification):
        raise RemoteProtocolError(f"first message is a {type(push).__name__}, not a push")
    values = push.body if isinstance(push.body, list | tuple) else [push.body]
    serial, title = "", ""
    for value in values:
        if isinstance(value, str) and not serial:
            serial = value
        elif isinstance(value, bytes) and len(value) == 8 and not title:
            title = value.hex().upper()
        elif isinstance(value, bytes) and not serial and value.isascii() and value.isalnum():
            serial = value.decode()
    if not serial and not title:
        raise RemoteProtocolError("push names neither a serial number nor a system title")
    return serial, title


class TcpListener:
    """Accepts meters dialling in and hands each, once identified, to the session manager."""

    def __init__(
        self,
        config: TcpConfig,
        manager: SessionManager,
        registry: Registry,
        gate: IntakeGate | None = None,
    ) -> None:
        self._config = config
        self._manager = manager
        self._registry = registry
        self._gate = gate
        self._servers: list[asyncio.Server] = []
        self._pending: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host, port in self._config.listen:
            server = await loop.create_server(
                self._new_connection, host, port, backlog=4096, reuse_address=True
            )
            self._servers.append(server)
            log.info("tcp.listening", host=host, port=port)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for server in self._servers:
            for sock in server.sockets:
                name = sock.getsockname()
                out.append((str(name[0]), int(name[1])))
        return out

    def _new_connection(self) -> TcpLink:
        link = TcpLink(gate=self._gate)
        task = asyncio.get_running_loop().create_task(self._identify(link), name="tcp:identify")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return link

    async def _identify(self, link: TcpLink) -> None:
        await link.connected
        try:
            async with asyncio.timeout(self._config.identify_timeout):
                meter_id, first = await self._read_identity(link)
        except (TimeoutError, RemoteProtocolError, LinkClosed) as exc:
            reason = (
                f"no identification within {self._config.identify_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            self.refused += 1
            log.warning("tcp.unidentified", peer=link.peer, reason=reason)
            await link.close()
            return
        self.accepted += 1
        log.info("tcp.identified", peer=link.peer, meter=meter_id)
        try:  # the identifying push is the session's first data: it is a reading too
            await self._manager.attach(meter_id, _Prefixed(link, first))
        except SessionError as exc:
            log.warning("tcp.attach_failed", peer=link.peer, meter=meter_id, error=str(exc))
            await link.close()

    async def _read_identity(self, link: TcpLink) -> tuple[str, bytes]:
        """The meter the first push names, and every byte read so far."""
        budget = self._config.identify_max_bytes
        framer = WrapperFramer(None, None, max_apdu=budget)
        seen = bytearray()
        frame = None
        while frame is None:
            data = await link.receive()
            seen += data
            if len(seen) > budget:
                raise RemoteProtocolError(f"{len(seen)} bytes without identifying")
            framer.receive_data(data)
            frame = framer.next_frame()
        serial, title = identify_push(frame.apdu)
        meter_id = await self._registry.identify(serial_number=serial, system_title=title)
        if meter_id is None:
            raise RemoteProtocolError(
                f"names serial {serial or '-'} / system title "
                f"{title or '-'}, which the registry does not know"
            )
        return meter_id, bytes(seen)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()


class TcpDialer:
    """Dials ``tcp-out`` meters for the session manager."""

    def __init__(self, config: TcpConfig, gate: IntakeGate | None = None) -> None:
        self._config = config
        self._gate = gate
        self._slots: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(config.per_destination)
        )
        self._retry_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}

    async def dial(self, record: MeterRecord) -> TcpLink:
        meter_id = record.meter_id
        host, _, port_text = record.entry.address.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        wait = self._retry_at.get(meter_id, 0.0) - time.monotonic()
        if wait > 0:
            raise SessionError(f"meter {meter_id}: unreachable, next attempt in {wait:.0f} s")
        slot = self._slots[host]
        await slot.acquire()
        loop = asyncio.get_running_loop()
        link = TcpLink(idle_close=self._config.idle_close, gate=self._gate)
        try:
            async with asyncio.timeout(self._config.connect_timeout):
                await loop.create_connection(lambda: link, host, int(port_text))
        except (OSError, TimeoutError) as exc:
            slot.release()
            self._backoff(meter_id)
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            log.warning(
                "tcp.dial_failed", meter=meter_id, address=record.entry.address, reason=reason
            )
            raise SessionError(
                f"meter {meter_id}: cannot connect to {record.entry.address}: {reason}"
            ) from None
        self._failures.pop(meter_id, None)
        self._retry_at.pop(meter_id, None)
        link.on_close = slot.release  # the slot is held for as long as the connection is open
        log.info("tcp.dialled", meter=meter_id, peer=link.peer)
        return link

    def _backoff(self, meter_id: str) -> None:
        failures = self._failures.get(meter_id, 0) + 1
        self._failures[meter_id] = failures
        delay = backoff(failures, self._config.backoff_initial, self._config.backoff_max)
        self._retry_at[meter_id] = time.monotonic() + delay
