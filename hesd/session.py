"""Meter sessions: one per meter, the only place where hesd talks DLMS to that meter.

A ``MeterSession`` owns the meter's ``ClientConnection`` and drives it over whatever ``Link`` the
transport gives it (TCP either way, a serial bus, MQTT) and the vendor's framing (WRAPPER or
HDLC). Requests (``get``, ``set``, ``action``) are serialised: one at a time per meter, as meters
expect. The session associates on the first request with the vendor profile's association (the
read association, ``[session] association``), keeps the association while the meter is active,
and associates again after the meter's inactivity timeout or a closed link. Once per connection,
right after association, it reads what the registry keeps of the meter: the firmware version
and, where the profile has a GSM diagnostic object, the modem's signal (``session_identity``).

Another association: ``with session.using(name):`` runs the calling task's requests (and those
of tasks started inside the block) under association ``name``; commands that act use the
profile's ``command_association`` (IS 15959: the utility client, HLS-GMAC, which may SET and
ACTION; the reader only reads). A switch releases the open association (RLRQ, best effort),
takes the link layer down where the client address is part of it (HDLC: DISC, then SNRM from the
new address; the link stays up) and associates as the new client, with its own invocation
counters. After the block the session *stays* on that association until the inactivity timeout
(reads run on it too), then opens the read association again: going back at once would cost an
RLRQ, an AARQ and the HLS passes (on HDLC a DISC and SNRM too) after every command, on a bus the
other meters wait for, and an idle association exposes nothing the command did not.

``serve(link, framing)`` runs for as long as the link is up: it reads bytes, feeds the framing
and the connection, resolves the waiting request, hands Data-Notifications to ``on_notification``
and drives every protocol deadline (response timeouts, HDLC retransmissions). Bad input from the
meter ends that meter's association and link, logged with the meter id and why; it never reaches
the daemon. So does a response timeout on a link of the meter's own (TCP, MQTT): what the meter
is doing is unknown, and a late answer, or half a frame the framing holds, must not be taken for
the next request's; a fresh link (dialled, dialled in, or attached) starts clean. Suite-0
invocation counters are reserved durably in ranges before use, and the meter's last accepted
counter is persisted, so a restart neither reuses nor re-accepts one.

On a ``SharedLink`` (a serial bus: one exchange at a time on the wire) the session holds the
link's ``exclusive()`` for each request and for ``close``, and the link layer lives inside those
holds: HDLC is opened (SNRM) by the first request rather than when the link comes up, a closed
HDLC connection (DM, FRMR, no answer) leaves the session and its link up for the next request to
reopen, an association past its inactivity timeout is disconnected (DISC) and opened afresh, and
a request that ends with an exchange still in flight (an error, a timeout, a cancellation)
disconnects the link layer before it gives the wire back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextvars import ContextVar
from typing import Final

import structlog

from adapters.profile import Association
from hesd.link import Link, LinkClosed, SharedLink
from hesd.session_identity import MeterIdentity
from hesd.session_settings import SessionError, SessionSettings, failure_text
from hesd.store import InvocationCounters, Registry
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Value
from protocols.dlms.connection import (
    ActionCompleted,
    Associated,
    AssociationRefused,
    ClientConnection,
    Event,
    GetCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
    State,
    TimedOut,
)
from protocols.dlms.framing import (
    ApduArrived,
    ApduFraming,
    FramingClosed,
    FramingDropped,
    FramingOpened,
)
from protocols.dlms.security import GENERAL_GLO_CIPHERING, SecurityContext, parse_ciphered
from protocols.errors import HesdError, LocalProtocolError, RemoteProtocolError

__all__ = ["MeterSession", "SessionError", "SessionSettings"]

log = structlog.get_logger("hesd.session")

COUNTER_BLOCK: Final = 256  # invocation counters reserved at a time
COUNTER_LOW_WATER: Final = 8  # reserve more before a request when fewer are left

NotificationHandler = Callable[[str, "x.DataNotification | x.EventNotification", float], None]
# the association a task's requests to one session must run under (``MeterSession.using``)
_USING: ContextVar[tuple[MeterSession, Association] | None] = ContextVar(
    "hesd_session_using", default=None
)


class MeterSession:
    """One meter; see the module docstring."""

    def __init__(
        self,
        settings: SessionSettings,
        *,
        counters: InvocationCounters,
        registry: Registry,
        on_notification: NotificationHandler | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_bytes_per_request: int = 16 << 20,
    ) -> None:
        self.settings = settings
        self._max_bytes = max_bytes_per_request
        self._bytes_in_request = 0
        self.meter_id = settings.meter_id
        self._counters = counters
        self._registry = registry
        self._on_notification = on_notification
        self._clock = clock
        self._lock = asyncio.Lock()
        self._link: Link | None = None
        self._framing: ApduFraming | None = None
        self._conn: ClientConnection | None = None
        self._framing_open: asyncio.Future[None] | None = None
        self._association: asyncio.Future[None] | None = None
        self._waiters: dict[int, asyncio.Future[Event]] = {}
        self._last_activity = 0.0
        self._closed_reason: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._online_event: asyncio.Event | None = None
        self._push_security: SecurityContext | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._shared = False  # the link is a SharedLink: link layer inside the wire holds
        self._opening_sent = False  # the framing's opening (SNRM) is out for this connection
        self._link_layer_down: asyncio.Future[None] | None = None  # shared: a DISC is out
        self._identity_link: Link | None = None  # the connection the identity was read on
        self._current = settings.association  # the association in use, or the next to open
        self._releasing: asyncio.Future[None] | None = None  # an RLRQ is out (switching)
        self._identity = MeterIdentity(settings.meter_id, registry)

    # -- state -------------------------------------------------------------------------------

    @property
    def firmware(self) -> str | None:
        """The firmware version as the meter reported it after association."""
        return self._identity.firmware

    @property
    def signal_quality(self) -> int | None:
        """dBm, from the modem's GSM diagnostic, as the meter reported it after association."""
        return self._identity.signal_quality

    @property
    def online(self) -> bool:
        return self._link is not None

    async def wait_online(self) -> None:
        """Return once the session has a link."""
        if self._link is not None:
            return
        if self._online_event is None:
            self._online_event = asyncio.Event()
        await self._online_event.wait()

    @property
    def associated(self) -> bool:
        return self._conn is not None and self._conn.state in (State.READY, State.WAITING)

    @property
    def association(self) -> str:
        """The name of the association in use (or the one the next request opens)."""
        return self._current.name

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """Run this task's requests to the meter under association ``name`` for the block
        (``with session.using(profile.command_association):``); see the module docstring.
        Other tasks' requests are not affected. ``SessionError`` if the profile has no such
        association."""
        try:
            association = self.settings.profile.association(name)
        except KeyError:
            raise SessionError(
                f"meter {self.meter_id}: vendor profile {self.settings.profile.name} has no "
                f"association {name!r}"
            ) from None
        token = _USING.set((self, association))
        try:
            yield
        finally:
            _USING.reset(token)

    # -- the link ----------------------------------------------------------------------------

    async def serve(self, link: Link, framing: ApduFraming) -> str:
        """Run ``link`` until it closes; returns why it ended. Run it as a named task."""
        if self._link is not None:
            raise LocalProtocolError(f"meter {self.meter_id}: session already has a link")
        self._link, self._framing = link, framing
        self._conn = None
        self._current = self.settings.association  # the framing comes from its client address
        self._closed_reason = None
        self._shared = isinstance(link, SharedLink)
        self._opening_sent = False
        self._link_layer_down = None
        loop = asyncio.get_running_loop()
        self._framing_open = loop.create_future()
        if self._online_event is not None:
            self._online_event.set()
            self._online_event = None
        self._registry.note_state(self.meter_id, status="online", last_seen=time.time())
        log.info("session.online", meter=self.meter_id, peer=link.peer)
        reason = "link closed"
        try:
            if not self._shared:  # on a shared wire the first request opens it, holding the wire
                await self._open_link_layer()
            reason = await self._read_loop(link, framing)
        except LinkClosed as exc:
            reason = self._closed_reason or f"link closed: {exc}"  # ended by _end: its reason
        except RemoteProtocolError as exc:
            reason = f"protocol error: {exc}"
            log.warning("session.protocol_error", meter=self.meter_id, error=str(exc))
        finally:
            self._teardown(reason)
            with contextlib.suppress(Exception):
                await link.close()
            self._registry.note_state(self.meter_id, status="offline")
            log.info("session.offline", meter=self.meter_id, reason=reason)
        return reason

    def _end(self, reason: str) -> None:
        """End the link from a timer: what waits on it fails with ``reason`` at once, and
        ``serve`` returns ``reason`` once the link has closed."""
        link = self._link
        if link is None:
            return
        self._teardown(reason)
        self._spawn(link.close(), "close")

    def _teardown(self, reason: str) -> None:
        self._closed_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = SessionError(f"meter {self.meter_id}: {reason}")
        futures = (self._framing_open, self._association, self._link_layer_down, self._releasing)
        for future in (*futures, *self._waiters.values()):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be waiting any more
        self._waiters.clear()
        self._link = self._framing = self._conn = None
        self._association = self._framing_open = self._link_layer_down = self._releasing = None
        self._opening_sent = False

    async def _open_link_layer(self) -> None:
        """Send the framing's opening (HDLC: SNRM), once per link-layer connection."""
        link, framing, opened = self._link, self._framing, self._framing_open
        if link is None or framing is None or opened is None or self._opening_sent:
            return
        self._opening_sent = True
        opening = framing.open(self._clock())
        if opening:
            await link.send(opening)
        self._rearm()  # HDLC: the SNRM's response timeout
        if framing.ready and not opened.done():
            opened.set_result(None)

    def _link_layer_closed(self, reason: str) -> None:
        """Shared link, or a DISC of ours (switching associations): the meter's link layer is
        down, the link is not; the next request reopens it. What waited on the old connection
        fails with ``reason``."""
        log.info("session.link_layer_closed", meter=self.meter_id, reason=reason)
        error = SessionError(f"meter {self.meter_id}: link layer closed: {reason}")
        waiting = (self._framing_open, self._association, self._releasing)
        for future in (*waiting, *self._waiters.values()):
            if future is not None and not future.done():
                future.set_exception(error)
                future.exception()
        self._waiters.clear()
        self._conn = self._association = None
        self._opening_sent = False
        self._framing_open = asyncio.get_running_loop().create_future()
        down, self._link_layer_down = self._link_layer_down, None
        if down is not None and not down.done():
            down.set_result(None)

    async def _disconnect_link_layer(self) -> None:
        """Shared link: DISC; ``_link_layer_down`` resolves once the meter answered or the
        retries ran out (``FramingClosed``)."""
        link, framing = self._link, self._framing
        assert link is not None
        assert framing is not None
        if self._link_layer_down is None:
            self._link_layer_down = asyncio.get_running_loop().create_future()
        goodbye = framing.close(self._clock())
        if goodbye:
            await link.send(goodbye)
            self._rearm()
        elif framing.next_deadline() is None:  # nothing open, nothing in flight
            self._link_layer_closed("not connected")

    @contextlib.asynccontextmanager
    async def _wire(self) -> AsyncIterator[None]:
        """On a shared link, hold the wire for the block (one request, or closing)."""
        link = self._link
        if not isinstance(link, SharedLink):
            yield
            return
        try:
            async with link.exclusive():
                try:
                    yield
                except BaseException:
                    await self._abandon(link)
                    raise
        except LinkClosed as exc:
            raise SessionError(f"meter {self.meter_id}: {exc}") from None

    async def _abandon(self, link: Link) -> None:
        """A request ended (error, timeout, cancellation) with a link-layer exchange in flight:
        it must not go on once the wire is another meter's, so disconnect while holding it."""
        framing = self._framing
        if self._link is not link or framing is None or framing.next_deadline() is None:
            return
        log.warning("session.exchange_abandoned", meter=self.meter_id)
        with contextlib.suppress(HesdError, OSError):
            await self._disconnect_link_layer()

    async def _read_loop(self, link: Link, framing: ApduFraming) -> str:
        while True:
            data = await link.receive()
            if self._closed_reason is not None:  # ended by _end: what comes late is not read
                return self._closed_reason
            self._bytes_in_request += len(data)
            if self._waiters and self._bytes_in_request > self._max_bytes:
                raise RemoteProtocolError(
                    f"{self._bytes_in_request} bytes in one request, more than the "
                    f"{self._max_bytes} allowed (limits.session_max_bytes)"
                )
            now = self._clock()
            self._last_activity = now
            self._registry.note_state(self.meter_id, last_seen=time.time())
            for event in framing.receive_data(data, now):
                if isinstance(event, ApduArrived):
                    self._on_apdu(event.apdu, now)
                elif isinstance(event, FramingOpened):
                    if self._framing_open is not None and not self._framing_open.done():
                        self._framing_open.set_result(None)
                elif isinstance(event, FramingClosed):
                    if not self._shared and self._link_layer_down is None:  # not our DISC
                        return f"link layer closed: {event.reason}"
                    self._link_layer_closed(event.reason)
                elif isinstance(event, FramingDropped):
                    log.debug("session.frame_dropped", meter=self.meter_id, reason=event.reason)
            await self._flush()

    def _next_deadline(self) -> float | None:
        deadlines = [
            d
            for d in (
                None if self._framing is None else self._framing.next_deadline(),
                None if self._conn is None else self._conn.next_deadline(),
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def _rearm(self) -> None:
        """Arm one timer for the nearest protocol deadline (nothing runs while nothing is due)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._next_deadline()
        if deadline is not None and self._link is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, deadline - self._clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self._clock()
        link = self._link
        if link is None:
            return
        if self._framing is not None:
            for framing_event in self._framing.handle_timeout(now):
                if isinstance(framing_event, FramingClosed):
                    log.warning(
                        "session.link_gave_up", meter=self.meter_id, reason=framing_event.reason
                    )
                    if self._shared or self._link_layer_down is not None:  # the link stays up
                        self._link_layer_closed(framing_event.reason)
                        self._rearm()
                    else:
                        self._end(f"link layer closed: {framing_event.reason}")
                    return
        if self._conn is not None:
            for event in self._conn.handle_timeout(now):
                self._dispatch(event)
        self._spawn(self._flush(), "flush")

    def _spawn(self, coro: Coroutine[object, object, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"meter:{self.meter_id}:{what}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_apdu(self, data: bytes, now: float) -> None:
        conn = self._conn
        if conn is None or conn.state == State.CLOSED:  # refused, timed out: not associated
            self._on_unassociated_apdu(data, now)
            return
        for event in conn.receive_apdu(data, now):  # RemoteProtocolError ends the link
            self._dispatch(event)
        security = conn.security
        if security is not None and security.last_server_invocation_counter is not None:
            client = self._current.client_address
            self._counters.note_rx(self.meter_id, client, security.last_server_invocation_counter)

    def _on_unassociated_apdu(self, data: bytes, now: float) -> None:
        """Before any association a meter may only push: a Data-Notification, general-glo
        ciphered (0xDB, which names the meter's system title) when its association is."""
        if self.settings.association.ciphered:
            if not data or data[0] != GENERAL_GLO_CIPHERING:
                raise RemoteProtocolError("unciphered push from a meter whose data is ciphered")
            if self._push_security is None:
                client = self.settings.association.client_address
                self._push_security = self.settings.security(
                    self._counters.known_rx(self.meter_id, client)
                )
            assert self._push_security is not None
            title = parse_ciphered(data).system_title
            if title is not None and self._push_security.server_system_title is None:
                self._push_security.server_system_title = title
            data = self._push_security.unprotect(data)
            counter = self._push_security.last_server_invocation_counter
            if counter is not None:
                self._counters.note_rx(
                    self.meter_id, self.settings.association.client_address, counter
                )
        apdu = x.decode_apdu(data)
        if not isinstance(apdu, x.DataNotification | x.EventNotification):
            raise RemoteProtocolError(f"{type(apdu).__name__} without an association")
        self._notify(apdu, now)

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, NotificationReceived):
            self._notify(event.notification, self._clock())
        elif isinstance(event, Associated):
            if self._association is not None and not self._association.done():
                self._association.set_result(None)
            log.debug("session.associated", meter=self.meter_id, association=self._current.name)
        elif isinstance(event, AssociationRefused):
            if self._association is not None and not self._association.done():
                self._association.set_exception(
                    SessionError(f"meter {self.meter_id}: {event.reason}")
                )
            log.warning("session.association_refused", meter=self.meter_id, reason=event.reason)
        elif isinstance(event, TimedOut):
            error = SessionError(f"meter {self.meter_id}: no answer to the {event.what}")
            for future in (self._association, self._releasing, *self._waiters.values()):
                if future is not None and not future.done():
                    future.set_exception(error)
            self._waiters.clear()
            log.warning("session.timeout", meter=self.meter_id, what=event.what)
            if not self._shared:  # a shared link's exchange ends in _wire (DISC), the wire stays
                timeout = self.settings.profile.response_timeout
                self._end(f"no answer to the {event.what} within {timeout:g} s")
        elif isinstance(event, Released):
            log.debug("session.released", meter=self.meter_id)
            if self._releasing is not None and not self._releasing.done():
                self._releasing.set_result(None)
        elif isinstance(event, GetCompleted | SetCompleted | ActionCompleted | RequestFailed):
            future = self._waiters.pop(event.request_id, None)
            if future is not None and not future.done():
                future.set_result(event)

    def _notify(self, notification: x.DataNotification | x.EventNotification, now: float) -> None:
        # no log line here: at thousands of pushes a second, a debug call alone (structlog binds
        # a logger per call, cache_logger_on_first_use being off for capture_logs) cost 8 % of
        # the loop; the daemon counts pushes (status: records.pushes)
        if self._on_notification is not None:
            self._on_notification(self.meter_id, notification, now)

    async def _flush(self) -> None:
        link, framing, conn = self._link, self._framing, self._conn
        if link is None or framing is None:
            return
        out = bytearray(framing.data_to_send())
        if conn is not None:
            now = self._clock()
            for apdu in conn.data_to_send():
                out += framing.wrap(apdu, now)
        if out:
            await link.send(bytes(out))
        self._rearm()

    # -- requests ----------------------------------------------------------------------------

    async def get(
        self, attribute: x.AttributeDescriptor, access: x.AccessSelection | None = None
    ) -> Value | x.DataAccessResult:
        """Read one attribute: its value, or why the meter could not give it."""
        event = await self._request(lambda conn, now: conn.get(attribute, now, access))
        if isinstance(event, GetCompleted):
            return event.result
        raise SessionError(
            f"meter {self.meter_id}: GET {_describe(attribute)}: {failure_text(event)}"
        )

    async def set(self, attribute: x.AttributeDescriptor, value: Value) -> x.DataAccessResult:
        event = await self._request(lambda conn, now: conn.set(attribute, value, now))
        if isinstance(event, SetCompleted):
            return event.result
        raise SessionError(
            f"meter {self.meter_id}: SET {_describe(attribute)}: {failure_text(event)}"
        )

    async def action(
        self,
        method: x.MethodDescriptor,
        parameters: Value | None = None,
    ) -> tuple[x.ActionResult, Value | x.DataAccessResult | None]:
        event = await self._request(lambda conn, now: conn.action(method, now, parameters))
        if isinstance(event, ActionCompleted):
            return event.result, event.return_value
        raise SessionError(
            f"meter {self.meter_id}: ACTION {_describe(method)}: {failure_text(event)}"
        )

    async def _request(self, send: Callable[[ClientConnection, float], int]) -> Event:
        """One request under the session lock; a link that closes under it is a SessionError
        (a request's caller handles one error type, whichever link the meter is on)."""
        async with self._lock:
            await self._disc_retried()
            try:
                async with self._wire():
                    conn = await self._ensure_associated()
                    await self._read_identity(conn)
                    return await self._exchange(conn, send)
            except LinkClosed as exc:
                raise SessionError(f"meter {self.meter_id}: {exc}") from None

    async def _read_identity(self, conn: ClientConnection) -> None:
        if self._identity_link is not self._link:  # once per connection, associated
            self._identity_link = self._link
            objects = self.settings.profile.objects
            await self._identity.read(objects, lambda a: self._get_now(conn, a))

    async def running_firmware(self) -> str | None:
        """The firmware version the meter reports on this connection (None: it did not say):
        read once per connection right after association, so asking costs no second GET;
        associates, and reads it, if need be. ``SessionError`` as any request."""
        async with self._lock:
            await self._disc_retried()
            try:
                async with self._wire():
                    await self._read_identity(await self._ensure_associated())
            except LinkClosed as exc:
                raise SessionError(f"meter {self.meter_id}: {exc}") from None
        return self._identity.firmware if self._identity.firmware_read else None

    async def _exchange(
        self, conn: ClientConnection, send: Callable[[ClientConnection, float], int]
    ) -> Event:
        await self._top_up_counters(conn)
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._bytes_in_request = 0
        request_id = send(conn, self._clock())
        self._waiters[request_id] = future
        await self._flush()
        event = await future
        self._last_activity = self._clock()
        return event

    def forget_identity(self) -> None:
        """What the meter reports of itself may have changed (a firmware image was activated
        without the meter restarting): the next request reads it again, as on a new connection,
        and the registry keeps it."""
        self._identity_link = None

    async def _get_now(self, conn: ClientConnection, attribute: x.AttributeDescriptor) -> Event:
        """GET within the request under way (associated, holding the wire)."""
        return await self._exchange(conn, lambda c, now: c.get(attribute, now))

    async def _disc_retried(self) -> None:
        """Shared link: a DISC that ended an abandoned exchange is retried in turns of its own on
        the wire; wait for it before queueing for the wire. Holding the wire while waiting would
        keep the retries off it, and the bus would stall until the request's time cap."""
        if self._shared and self._link_layer_down is not None:
            await self._link_layer_down

    async def _ensure_associated(self) -> ClientConnection:
        if self._link is None or self._framing is None or self._framing_open is None:
            raise SessionError(f"meter {self.meter_id}: offline")
        target = self._target()
        if self._shared:
            await self._refresh_link_layer()
        if target.name != self._current.name:
            await self._switch(target)
        await self._open_link_layer()
        assert self._framing_open is not None
        await self._framing_open
        conn = self._conn
        if conn is not None and conn.state == State.READY and not self._alive():
            log.debug("session.association_expired", meter=self.meter_id)
            conn = self._conn = None  # the meter has dropped it by now: associate afresh
        if conn is not None and conn.state == State.READY:
            return conn
        settings, association = self.settings, self._current
        last_rx = await self._counters.last_rx(self.meter_id, association.client_address)
        security = settings.security(last_rx, association)
        conn = ClientConnection(settings.parameters(association), security)
        if security is not None:
            await self._grant_counters(conn)
        self._association = asyncio.get_running_loop().create_future()
        self._conn = conn
        conn.associate(self._clock())
        await self._flush()
        await self._association
        self._last_activity = self._clock()
        return conn

    def _expired(self) -> bool:
        """The meter has dropped the association (and an HDLC connection) for inactivity, or
        may have by the time a request reaches it: hesd times silence from the last answer's
        arrival, the meter from its sending, and a request takes its own time to get there, so
        an association is taken as lost a margin before the profile's inactivity timeout
        (a tenth of it, at most 10 s). An association opened afresh costs one AARQ; one the
        meter has dropped costs the request."""
        timeout = self.settings.profile.inactivity_timeout
        return self._clock() - self._last_activity > timeout - min(timeout / 10, 10.0)

    def _alive(self) -> bool:
        """The association is open and the meter has not dropped it for inactivity."""
        conn = self._conn
        return conn is not None and conn.state == State.READY and not self._expired()

    def _target(self) -> Association:
        """The association this request runs under: the one ``using`` names; else the one open
        now (a command's association serves reads until it expires), else the read one."""
        using = _USING.get()
        if using is not None and using[0] is self:
            return using[1]
        return self._current if self._alive() else self.settings.association

    async def _switch(self, target: Association) -> None:
        """Holding the request (and the wire): release the association (RLRQ, best effort: a
        meter that does not answer it loses it with the link layer or the next AARQ), take the
        link layer down where the client address is part of its address (HDLC: DISC, then the
        next request's SNRM comes from the new address), and make ``target`` current."""
        link, framing, conn = self._link, self._framing, self._conn
        assert link is not None
        assert framing is not None
        log.info(
            "session.association_switch",
            meter=self.meter_id,
            association=target.name,
            previous=self._current.name,
        )
        if conn is not None and self._alive():
            self._releasing = asyncio.get_running_loop().create_future()
            conn.release(self._clock())
            await self._flush()
            try:
                await self._releasing
            except SessionError as exc:
                if self._link is not link:  # the link ended with it (no answer on its own link)
                    raise
                log.info("session.release_unanswered", meter=self.meter_id, error=str(exc))
            finally:
                self._releasing = None
        self._conn = self._association = None
        goodbye = framing.close(self._clock())  # HDLC: DISC; WRAPPER: nothing to close
        if goodbye:
            down = self._link_layer_down = asyncio.get_running_loop().create_future()
            await link.send(goodbye)
            self._rearm()
            await down  # _link_layer_closed: answered, or the retries ran out
        framing.use_client(target.client_address)
        self._current = target

    async def _refresh_link_layer(self) -> None:
        """Shared link, holding the wire: past the inactivity timeout the meter has dropped its
        HDLC connection with the association: disconnect (the DISC's retries go out in this
        hold), then open afresh."""
        if self._link_layer_down is None and self._opening_sent and self._expired():
            log.debug("session.association_expired", meter=self.meter_id)
            await self._disconnect_link_layer()
        if self._link_layer_down is not None:
            await self._link_layer_down

    async def _top_up_counters(self, conn: ClientConnection) -> None:
        if conn.security is not None and conn.invocation_counters_left < COUNTER_LOW_WATER:
            await self._grant_counters(conn)

    async def _grant_counters(self, conn: ClientConnection) -> None:
        client = self._current.client_address
        granted = await self._counters.reserve_tx(self.meter_id, client, COUNTER_BLOCK)
        conn.grant_invocation_counters(granted.start, len(granted))

    async def close(self) -> None:
        """Release the association (best effort) and close the link."""
        link = self._link
        if link is None:
            return
        with contextlib.suppress(HesdError, OSError):
            async with self._wire():
                framing, conn = self._framing, self._conn
                if conn is not None and conn.state == State.READY and framing is not None:
                    conn.release(self._clock())
                    await self._flush()
                if framing is not None and self._link is link:
                    goodbye = framing.close(self._clock())
                    if goodbye:
                        await link.send(goodbye)
        await link.close()


def _describe(descriptor: x.AttributeDescriptor) -> str:
    return f"{descriptor.class_id}/{descriptor.instance}/{descriptor.attribute}"
