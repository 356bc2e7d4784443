"""Serial ports: RS-485 multidrop buses and IEC 62056-21 optical probes, HDLC on both.

A ``SerialBus`` owns one port (an asyncio protocol over pyserial-asyncio-fast) and gives each
meter on it a ``BusLink``, a ``SharedLink`` whose session runs through ``SessionManager.attach``
like any other. The meters of a port are the registry's ``serial`` meters whose address is
``PATH:HDLC_ADDRESS``; their HDLC framing tells them apart on the wire.

**One exchange at a time.** The wire is half-duplex: the bus grants it to one meter at a time.
A session holds ``link.exclusive()`` for one request (link-layer set-up and association
included); the holder's bytes go out, and what arrives belongs to the meter that last had the
wire. The exchange is over when the hold ends; the next meter's turn comes once the line has
been silent for ``inter_request_gap``, or for ``settle_time`` if the last bytes on the line were
ours (the meter's answer never came, or we said goodbye without waiting for one). A send outside
any hold (a retransmission after a request gave up) waits its turn like a request and is its own
exchange.

**Fairness.** Turns are granted first come, first served, one exchange per turn. A session asks
for the wire again only after its exchange is over, so it queues behind every meter that was
already waiting: under load the meters take turns round robin, and no meter waits for more than
one exchange of each other meter.

**Optical ports** (``kind = "optical"``, one meter): before each HDLC connection (a SNRM) and
before the first bytes after ``inactivity`` seconds of silence (the meter has fallen back to 300
Bd), the bus runs the IEC 62056-21 mode E sign-on (``protocols.iec62056_21``) at 300 Bd 7E1 and
switches the line to the agreed rate, 8N1, by setting the pyserial object's baudrate, bytesize,
parity and stopbits on the live transport.

**Lost ports.** A read or write error (an unplugged USB adapter) is logged as
``serial.port_lost``; the bus closes its meters' links (their sessions go offline) and reopens
the port with a capped, jittered back-off, attaching its meters again. Meters imported while
the port is open are attached by their first request (``SerialPorts`` is the session manager's
link provider for ``serial``), or by ``attach_new()``, and at the next reopen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import serial_asyncio_fast
import structlog

from hesd.backoff import backoff
from hesd.config import SerialConfig, SerialPortConfig
from hesd.link import Inbox, LinkClosed
from hesd.session import SessionError
from hesd.sessions import SessionManager
from hesd.store import MeterRecord, Registry
from protocols.dlms.hdlc import FrameType, HdlcFramer
from protocols.errors import RemoteProtocolError
from protocols.iec62056_21 import Event as SignOnEvent
from protocols.iec62056_21 import (
    HandshakeComplete,
    Ignored,
    LineSettings,
    OpticalClientHandshake,
    SwitchLine,
    TimedOut,
    Transmit,
)

__all__ = ["BusLink", "Opener", "SerialBus", "SerialPorts", "SignOnFailed", "open_port"]

log = structlog.get_logger("hesd.serial")

PAGE: Final = 1000  # registry rows read at a time when looking for a port's meters

Opener = Callable[[SerialPortConfig, Callable[[], asyncio.Protocol]], Awaitable[asyncio.Transport]]
Trace = Callable[[str, str], None]


class SignOnFailed(SessionError):
    """The IEC 62056-21 sign-on on an optical port did not reach mode E."""


async def open_port(
    port: SerialPortConfig, protocol_factory: Callable[[], asyncio.Protocol]
) -> asyncio.Transport:
    """Open ``port.path`` with pyserial-asyncio-fast (locked against other processes)."""
    baud, bytesize, parity, stopbits = _opening_line(port)
    transport, _ = await serial_asyncio_fast.create_serial_connection(
        asyncio.get_running_loop(),
        protocol_factory,
        port.path,
        baudrate=baud,
        bytesize=bytesize,
        parity=parity,
        stopbits=stopbits,
        exclusive=True,
    )
    assert isinstance(transport, asyncio.Transport)
    return transport


def _opening_line(port: SerialPortConfig) -> tuple[int, int, str, int]:
    """(baud, bytesize, parity, stopbits) a port opens at: optical ports at the sign-on's 300
    Bd, 7E1 (8N1 when the parity bit is made in software, IEC 62056-21 §5.4)."""
    if port.kind == "optical":
        return (300, 8, "N", 1) if port.software_parity else (300, 7, "E", 1)
    return port.baud, port.bytesize, port.parity, port.stopbits


def _has_snrm(data: bytes) -> bool:
    """Whether ``data`` (whole HDLC frames from a session) holds a SNRM."""
    framer = HdlcFramer()
    try:
        framer.receive_data(data)
        while (frame := framer.next_frame()) is not None:
            if frame.kind is FrameType.SNRM:
                return True
    except RemoteProtocolError:
        return False
    return False


class BusLink:
    """One meter's ``SharedLink`` on a ``SerialBus``."""

    def __init__(self, bus: SerialBus, meter_id: str) -> None:
        self._bus = bus
        self.meter_id = meter_id
        self._inbox = Inbox()
        self._closed = False
        self._reason = "closed by hesd"

    @property
    def peer(self) -> str:
        return self._bus.path

    @property
    def closed(self) -> bool:
        return self._closed

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the wire for one exchange (see the module docstring)."""
        await self._bus.acquire(self)
        try:
            yield
        finally:
            self._bus.release(self)

    async def send(self, data: bytes) -> None:
        if self._closed:
            raise LinkClosed(f"{self.peer}: {self._reason}")
        if self._bus.holder is self:
            await self._bus.write(self, data)
            return
        log.debug("serial.unscheduled_send", port=self.peer, meter=self.meter_id)
        async with self.exclusive():  # its own exchange, in turn
            await self._bus.write(self, data)

    async def receive(self) -> bytes:
        return await self._inbox.get(
            lambda: f"{self.peer}: {self._reason}" if self._closed else None
        )

    async def close(self) -> None:
        self.end("closed by hesd")

    # -- from the bus ----------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if not self._closed:
            self._inbox.put(data)

    def end(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._reason = reason
        self._inbox.wake()
        self._bus.forget(self)


class SerialBus(asyncio.Protocol):
    """One serial port and the meters on it; see the module docstring."""

    def __init__(
        self,
        config: SerialPortConfig,
        manager: SessionManager,
        registry: Registry,
        *,
        reopen_initial: float = 1.0,
        reopen_max: float = 60.0,
        opener: Opener = open_port,
    ) -> None:
        self.config = config
        self.path = config.path
        self._manager = manager
        self._registry = registry
        self._reopen = (reopen_initial, reopen_max)
        self._opener = opener
        self._transport: asyncio.Transport | None = None
        self._connected: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._open = asyncio.Event()
        self._changed = asyncio.Event()  # a link ended, or the port was lost
        self._task: asyncio.Task[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.links: dict[str, BusLink] = {}
        # the wire
        self.holder: BusLink | None = None
        self._owner: BusLink | None = None  # who the bytes that arrive belong to
        self._queue: deque[tuple[BusLink, asyncio.Future[None]]] = deque()
        self._busy_until = 0.0  # loop time the line was last busy (our bytes' airtime included)
        self._ours_last = False  # the last bytes on the line were ours: no answer yet
        self._quiet_needed = 0.0
        self._grant_timer: asyncio.TimerHandle | None = None
        self._char_time = self._airtime(*_opening_line(config))
        # optical
        self._signon_rx: list[bytes] | None = None  # bytes for the sign-on while it runs
        self._signon_wake: asyncio.Future[None] | None = None
        self._signed_on = False
        # for tests: ("wait" | "grant" | "release" | "write" | "read" | "stray" | "line" |
        # "open" | "open_failed" | "lost", meter id or detail)
        self.trace: Trace | None = None

    # -- life ------------------------------------------------------------------------------

    def start(self, group: asyncio.TaskGroup | None = None) -> asyncio.Task[None]:
        """Run the bus (open, attach, reopen) as ``serial:{path}:bus``, in ``group`` if given."""
        name = f"serial:{self.path}:bus"
        if group is not None:
            self._task = group.create_task(self._run(), name=name)
        else:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=name)
        return self._task

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    async def wait_open(self) -> None:
        await self._open.wait()

    async def close(self) -> None:
        """Stop reopening, end every meter's link and close the port."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # a failure is the group's to report
        await self._close_port()

    async def _close_port(self) -> None:
        transport, lost = self._transport, self._lost
        if transport is not None and not transport.is_closing():
            transport.abort()  # no tcdrain: output nobody reads must not hold up a stop
        if transport is not None and lost is not None:
            await asyncio.shield(lost)  # connection_lost: the port is really closed

    def _delay(self, failures: int) -> float:
        initial, cap = self._reopen
        return backoff(failures, initial, cap)

    async def _run(self) -> None:
        failures = 0
        delay = 0.0
        while True:
            if delay:
                await asyncio.sleep(delay)  # the back-off itself
            try:
                await self._open_port()
            except Exception as exc:  # OSError, termios.error, ValueError...: all retried
                failures += 1
                delay = self._delay(failures)
                log.warning(
                    "serial.open_failed",
                    port=self.path,
                    error=getattr(exc, "strerror", None) or str(exc) or type(exc).__name__,
                    attempt=failures,
                    retry_in=round(delay, 3),
                )
                self._note("open_failed", str(exc))
                continue
            failures = 0
            lost = self._lost
            assert lost is not None
            try:
                await self.attach_new()
                while True:  # until the port is lost: give meters whose link ended a new one
                    await self._changed.wait()
                    self._changed.clear()
                    if lost.done():
                        break
                    await self.attach_new()
                reason = lost.result()
            except BaseException:
                await self._close_port()
                raise
            failures = 1
            delay = self._delay(failures)
            log.warning("serial.port_lost", port=self.path, reason=reason, retry_in=round(delay, 3))

    async def _open_port(self) -> None:
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self._lost = loop.create_future()
        self._signed_on = False
        self._changed.clear()
        transport = await self._opener(self.config, lambda: self)
        await self._connected
        self._transport = transport
        self._char_time = self._airtime(*_opening_line(self.config))
        self._open.set()
        self._note("open", self.path)
        log.info("serial.port_opened", port=self.path, kind=self.config.kind, baud=self.config.baud)

    # -- meters ------------------------------------------------------------------------------

    async def meter_ids(self) -> list[str]:
        """The registry's serial meters on this port, by id."""
        return [
            record.meter_id
            async for record in self._registry.each(page=PAGE)
            if record.entry.transport == "serial"
            and record.entry.address.rpartition(":")[0] == self.path
        ]

    async def attach_new(self) -> int:
        """Attach every meter of this port that has no link yet; returns how many."""
        if not self.is_open or self._manager.closing:
            return 0
        meter_ids = await self.meter_ids()
        if self.config.kind == "optical" and len(meter_ids) > 1:
            log.warning(
                "serial.optical_extra_meters",
                port=self.path,
                served=meter_ids[0],
                ignored=meter_ids[1:],
            )
            meter_ids = meter_ids[:1]
        attached = 0
        for meter_id in meter_ids:
            if meter_id in self.links or not self.is_open:
                continue
            link = BusLink(self, meter_id)
            self.links[meter_id] = link
            try:
                await self._manager.attach(meter_id, link)
            except SessionError as exc:
                link.end(str(exc))
                log.warning("serial.attach_failed", port=self.path, meter=meter_id, error=str(exc))
                continue
            attached += 1
        if attached:
            log.info("serial.meters_attached", port=self.path, attached=attached)
        return attached

    def forget(self, link: BusLink) -> None:
        """A link ended: out of the queue; while the port is open, its meter gets a new one."""
        if self.links.get(link.meter_id) is link:
            del self.links[link.meter_id]
            if self.is_open and not self._manager.closing:
                self._changed.set()  # e.g. the session ended on a protocol error
        for item in [item for item in self._queue if item[0] is link]:
            self._queue.remove(item)
            if not item[1].done():
                item[1].set_exception(LinkClosed(f"{self.path}: link closed"))
                item[1].exception()

    # -- the wire ----------------------------------------------------------------------------

    async def acquire(self, link: BusLink) -> None:
        """Wait for ``link``'s turn on the wire."""
        if link.closed or self._transport is None:
            raise LinkClosed(f"{self.path}: {'link closed' if link.closed else 'port not open'}")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((link, turn))
        self._note("wait", link.meter_id)
        self._pump()
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.release(link)  # granted, but the waiter was cancelled meanwhile
            elif (link, turn) in self._queue:
                self._queue.remove((link, turn))
            raise

    def release(self, link: BusLink) -> None:
        if self.holder is not link:
            return
        self.holder = None
        gap, settle = self.config.inter_request_gap, self.config.settle_time
        self._quiet_needed = settle if self._ours_last else gap
        self._note("release", link.meter_id)
        self._pump()

    def _pump(self) -> None:
        """Grant the wire to the first in line once the line has been quiet long enough."""
        if self._grant_timer is not None:
            self._grant_timer.cancel()
            self._grant_timer = None
        if self.holder is not None or not self._queue:
            return
        loop = asyncio.get_running_loop()
        wait = self._busy_until + self._quiet_needed - loop.time()
        if wait > 0:
            self._grant_timer = loop.call_later(wait, self._pump)
            return
        link, turn = self._queue.popleft()
        self.holder = self._owner = link
        self._ours_last = False
        self._note("grant", link.meter_id)
        turn.set_result(None)

    async def write(self, link: BusLink, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise LinkClosed(f"{self.path}: port not open")
        if self.config.kind == "optical" and self._needs_sign_on(data):
            await self._sign_on(link)
        self._put(data)
        self._note("write", link.meter_id)
        if self._drained is not None and not self._drained.done():
            await self._drained

    def _put(self, data: bytes) -> None:
        assert self._transport is not None
        now = asyncio.get_running_loop().time()
        self._busy_until = max(self._busy_until, now) + len(data) * self._char_time
        self._ours_last = True
        self._transport.write(data)

    @staticmethod
    def _airtime(baud: int, bytesize: int, parity: str, stopbits: int) -> float:
        """Seconds one character takes on the line (start, data, parity and stop bits)."""
        return (1 + bytesize + (parity != "N") + stopbits) / baud

    # -- optical sign-on ---------------------------------------------------------------------

    def _needs_sign_on(self, data: bytes) -> bool:
        idle = asyncio.get_running_loop().time() - self._busy_until
        return not self._signed_on or idle >= self.config.inactivity or _has_snrm(data)

    async def _sign_on(self, link: BusLink) -> None:
        """IEC 62056-21 mode E: sign on at 300 Bd 7E1, switch to the agreed rate, 8N1."""
        loop = asyncio.get_running_loop()
        handshake = OpticalClientHandshake(
            max_baud=self.config.baud, software_parity=self.config.software_parity
        )
        self._signed_on = False
        self._signon_rx = []
        try:
            events = handshake.sign_on(loop.time())
            while True:
                if await self._carry_out(events, link):
                    self._signed_on = True
                    return
                events = await self._signon_events(handshake)
        except RemoteProtocolError as exc:
            error = SignOnFailed(f"meter {link.meter_id}: optical sign-on: {exc}")
        except SignOnFailed as exc:
            error = exc
        finally:
            self._signon_rx = None
        # The session's HDLC state assumes a SNRM went out: end the link, the bus attaches a
        # fresh one (and the next sign-on starts at 300 Bd again).
        log.warning("serial.sign_on_failed", port=self.path, meter=link.meter_id, error=str(error))
        link.end(str(error))
        raise error

    async def _signon_events(self, handshake: OpticalClientHandshake) -> list[SignOnEvent]:
        loop = asyncio.get_running_loop()
        deadline = handshake.next_deadline()
        if self._signon_rx:
            data = b"".join(self._signon_rx)
            self._signon_rx = []
            return handshake.receive_data(data, loop.time())
        self._signon_wake = loop.create_future()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await self._signon_wake
        finally:
            self._signon_wake = None
        if self._transport is None:
            raise LinkClosed(f"{self.path}: port lost during the sign-on")
        if self._signon_rx:
            return await self._signon_events(handshake)
        return handshake.handle_timeout(loop.time())

    async def _carry_out(self, events: list[SignOnEvent], link: BusLink) -> bool:
        """Carry out the handshake's steps in order; true once HDLC owns the line."""
        done = False
        for event in events:
            if isinstance(event, SwitchLine):
                if event.after > 0:
                    await asyncio.sleep(event.after)  # IEC 62056-21 timing, not synchronisation
                self._switch_line(event.settings)
            elif isinstance(event, Transmit):
                if event.after > 0:
                    await asyncio.sleep(event.after)  # IEC 62056-21 reaction time
                self._put(event.data)
                self._note("write", link.meter_id)
            elif isinstance(event, HandshakeComplete):
                log.info(
                    "serial.signed_on",
                    port=self.path,
                    meter=link.meter_id,
                    identification=str(event.identification),
                    baud=event.line.baud,
                )
                done = True
            elif isinstance(event, Ignored):
                log.debug("serial.sign_on_ignored", port=self.path, what=event.what)
            elif isinstance(event, TimedOut):
                raise SignOnFailed(f"meter {link.meter_id}: optical sign-on: {event.reason}")
        return done

    def _switch_line(self, settings: LineSettings) -> None:
        transport = self._transport
        if transport is None:
            raise LinkClosed(f"{self.path}: port lost during the sign-on")
        port = transport.get_extra_info("serial")
        if port is not None:  # the pyserial object: each setting reconfigures the live port
            port.baudrate = settings.baud
            port.bytesize = settings.bytesize
            port.parity = settings.parity
            port.stopbits = settings.stopbits
        self._char_time = self._airtime(
            settings.baud, settings.bytesize, settings.parity, settings.stopbits
        )
        self._note(
            "line", f"{settings.baud} {settings.bytesize}{settings.parity}{settings.stopbits}"
        )
        log.debug("serial.line", port=self.path, baud=settings.baud)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connected is not None and not self._connected.done():
            self._connected.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._busy_until = max(self._busy_until, asyncio.get_running_loop().time())
        self._ours_last = False
        if self._signon_rx is not None:
            self._signon_rx.append(data)
            if self._signon_wake is not None and not self._signon_wake.done():
                self._signon_wake.set_result(None)
            return
        owner = self._owner
        if owner is None or owner.closed:
            log.warning("serial.stray_bytes", port=self.path, size=len(data), head=data[:16].hex())
            self._note("stray", str(len(data)))
            return
        self._note("read", owner.meter_id)
        owner.deliver(data)
        if self._grant_timer is not None:
            self._pump()  # the quiet period starts again

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._open.clear()
        reason = "closed by hesd" if exc is None else str(exc) or type(exc).__name__
        self._note("lost", reason)
        if self._signon_wake is not None and not self._signon_wake.done():
            self._signon_wake.set_result(None)
        for link in list(self.links.values()):
            link.end(f"port {self.path} lost: {reason}")  # their sessions go offline
        self.links.clear()
        while self._queue:
            _, turn = self._queue.popleft()
            if not turn.done():
                turn.set_exception(LinkClosed(f"{self.path}: port lost: {reason}"))
                turn.exception()
        self.holder = self._owner = None
        if self._grant_timer is not None:
            self._grant_timer.cancel()
            self._grant_timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        self._changed.set()

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _note(self, what: str, detail: str) -> None:
        if self.trace is not None:
            self.trace(what, detail)


class SerialPorts:
    """The configured serial ports, for the daemon: start, attach new meters, close.

    It is the session manager's ``LinkProvider`` for ``serial`` meters: a request to a meter
    imported after its port was opened attaches it (``connect``).
    """

    def __init__(
        self,
        config: SerialConfig,
        manager: SessionManager,
        registry: Registry,
        *,
        opener: Opener = open_port,
    ) -> None:
        self.buses = {
            port.path: SerialBus(
                port,
                manager,
                registry,
                reopen_initial=config.reopen_initial,
                reopen_max=config.reopen_max,
                opener=opener,
            )
            for port in config.ports
        }

    def start(self, group: asyncio.TaskGroup | None = None) -> None:
        """Open every port in the background (a missing one is retried with back-off)."""
        for bus in self.buses.values():
            bus.start(group)

    async def attach_new(self) -> int:
        """Attach meters imported since their port was opened; returns how many."""
        return sum([await bus.attach_new() for bus in self.buses.values()])

    async def connect(self, record: MeterRecord) -> None:
        """``LinkProvider``: give a serial meter that has no link one on its bus, or say why."""
        path = record.entry.address.rpartition(":")[0]
        bus = self.buses.get(path)
        if bus is None:
            raise SessionError(
                f"meter {record.meter_id}: {path or 'no port'} is not one of the serial.ports"
            )
        if not bus.is_open:
            raise SessionError(f"meter {record.meter_id}: serial port {path} is not open")
        await bus.attach_new()
        if record.meter_id not in bus.links:
            raise SessionError(f"meter {record.meter_id}: no link on serial port {path}")

    async def close(self) -> None:
        await asyncio.gather(*(bus.close() for bus in self.buses.values()))
