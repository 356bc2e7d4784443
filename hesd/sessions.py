"""The session manager: which meters have a session, on which link, within which budgets.

Transports hand it links: ``attach(meter_id, link, framing)`` starts that meter's session on the
link as a task named ``meter:{id}:link`` (replacing an older link of the same meter). Callers ask
it for work: ``request(meter_id, op)`` runs one request on the meter's session within the
global budget (``limits.max_requests``) and the request time cap (``limits.request_timeout``),
dialling out first for a ``tcp-out`` meter that has no link (``dialer``), or asking the meter's
transport to bring its link up (``providers``: MQTT, whose links are up whenever the broker
connection is). Sessions are built from the registry
row, the vendor profile and the keyset the inventory names; SIGHUP's new profiles and secrets
apply to sessions made afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog

from adapters.profile import VendorProfile
from hesd.link import Link
from hesd.secrets import SecretStore
from hesd.session import MeterSession, NotificationHandler, SessionError, SessionSettings
from hesd.store import InvocationCounters, MeterRecord, Registry
from protocols.dlms.framing import ApduFraming, HdlcFraming, WrapperFraming

__all__ = ["Dialer", "LinkProvider", "SessionManager"]

log = structlog.get_logger("hesd.sessions")

_T = TypeVar("_T")


class Dialer(Protocol):
    """Opens a link to a meter that hesd reaches by dialling out (``tcp-out``)."""

    async def dial(self, record: MeterRecord) -> Link: ...


class LinkProvider(Protocol):
    """A transport that attaches a meter's link itself when a request needs it (``mqtt``).

    ``connect`` returns once the transport has called ``attach`` for the meter, or raises
    ``SessionError`` saying why it cannot (e.g. the broker is not connected).
    """

    async def connect(self, record: MeterRecord) -> None: ...


class SessionManager:
    def __init__(
        self,
        *,
        registry: Registry,
        counters: InvocationCounters,
        vendors: dict[str, VendorProfile],
        secrets: SecretStore,
        client_system_title: bytes,
        max_requests: int,
        request_timeout: float,
        session_max_bytes: int = 16 << 20,
        on_notification: NotificationHandler | None = None,
    ) -> None:
        self._registry = registry
        self._counters = counters
        self.vendors = vendors
        self.secrets = secrets
        self._title = client_system_title
        self._on_notification = on_notification
        self._sessions: dict[str, MeterSession] = {}
        self._links: dict[str, asyncio.Task[str]] = {}
        self._budget = asyncio.Semaphore(max_requests)
        self._request_timeout = request_timeout
        self._session_max_bytes = session_max_bytes
        self._tasks: set[asyncio.Task[str]] = set()
        self.dialer: Dialer | None = None
        self.providers: dict[str, LinkProvider] = {}  # by transport name
        self._closing = False
        self.on_online: list[Callable[[str], None]] = []  # told when a meter's link attaches

    # -- what is there -----------------------------------------------------------------------

    @property
    def active(self) -> int:
        """Meters with a link now."""
        return len(self._links)

    @property
    def closing(self) -> bool:
        """``close`` has begun: no new links are attached."""
        return self._closing

    def online(self, meter_id: str) -> bool:
        return meter_id in self._links

    async def reachable(self, meter_id: str) -> bool:
        """The meter has a link, or its transport can bring one up on request (dial, MQTT)."""
        if meter_id in self._links:
            return True
        record = await self._registry.get(meter_id)
        if record is None:
            return False
        transport = record.entry.transport
        if transport == "tcp-out":
            return self.dialer is not None
        return transport in self.providers

    def attached(self, meter_id: str) -> MeterSession | None:
        """The meter's session if it has one now (its vendor and firmware are known then)."""
        return self._sessions.get(meter_id)

    def reload(self, vendors: dict[str, VendorProfile], secrets: SecretStore) -> None:
        """New profiles and secrets; sessions with a link keep theirs until it closes."""
        self.vendors, self.secrets = vendors, secrets
        for meter_id in [m for m in self._sessions if m not in self._links]:
            del self._sessions[meter_id]

    # -- sessions ----------------------------------------------------------------------------

    async def session(self, meter_id: str) -> tuple[MeterSession, MeterRecord]:
        record = await self._registry.get(meter_id)
        if record is None:
            raise SessionError(f"meter {meter_id!r} is not in the registry")
        session = self._sessions.get(meter_id)
        if session is None:
            session = MeterSession(
                self._settings(record),
                counters=self._counters,
                registry=self._registry,
                on_notification=self._on_notification,
                max_bytes_per_request=self._session_max_bytes,
            )
            self._sessions[meter_id] = session
        return session, record

    def _settings(self, record: MeterRecord) -> SessionSettings:
        entry = record.entry
        profile = self.vendors.get(entry.vendor)
        if profile is None:
            raise SessionError(
                f"meter {entry.meter_id}: vendor profile {entry.vendor!r} is not loaded"
            )
        keyset = None
        if entry.keyset:
            keyset = self.secrets.keysets.get(entry.keyset)
            if keyset is None:
                raise SessionError(
                    f"meter {entry.meter_id}: keyset {entry.keyset!r} is not in the secrets file"
                )
        association = profile.association(profile.default_association)
        return SessionSettings(entry.meter_id, profile, association, keyset, self._title)

    def framing(self, record: MeterRecord, profile: VendorProfile) -> ApduFraming:
        """The framing a meter speaks on its link (HDLC on serial lines, else its profile's)."""
        settings = self._settings(record)
        client = settings.association.client_address
        if record.entry.transport == "serial" or profile.framing.kind == "hdlc":
            physical = None
            if record.entry.transport == "serial":
                physical = int(record.entry.address.rsplit(":", 1)[1])
            return HdlcFraming(
                client,
                profile.framing.hdlc_logical_address,
                physical,
                response_timeout=profile.response_timeout,
            )
        return WrapperFraming(client, profile.framing.server_wport)

    async def attach(
        self, meter_id: str, link: Link, framing: ApduFraming | None = None
    ) -> asyncio.Task[str]:
        """Run the meter's session on ``link``; an older link of the same meter is closed."""
        if self._closing:
            await link.close()
            raise SessionError("hesd is stopping")
        session, record = await self.session(meter_id)
        old = self._links.get(meter_id)
        if old is not None:
            log.info("sessions.link_replaced", meter=meter_id, peer=link.peer)
            await session.close()
            with contextlib.suppress(asyncio.CancelledError):
                await old
        if framing is None:
            framing = self.framing(record, session.settings.profile)
        task = asyncio.get_running_loop().create_task(
            session.serve(link, framing), name=f"meter:{meter_id}:link"
        )
        self._links[meter_id] = task
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._link_done, meter_id))
        for listener in self.on_online:
            listener(meter_id)
        return task

    def _link_done(self, meter_id: str, task: asyncio.Task[str]) -> None:
        self._tasks.discard(task)
        if self._links.get(meter_id) is task:
            del self._links[meter_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("sessions.link_failed", meter=meter_id, error=repr(task.exception()))

    # -- requests ----------------------------------------------------------------------------

    async def request(
        self,
        meter_id: str,
        op: Callable[[MeterSession], Awaitable[_T]],
        time_cap: float | None = None,
    ) -> _T:
        """Run ``op`` on the meter's session within the fleet budget and the time cap
        (``time_cap`` seconds, else ``limits.request_timeout``: a firmware transfer's own)."""
        cap = self._request_timeout if time_cap is None else time_cap
        async with self._budget:
            try:
                async with asyncio.timeout(cap):
                    session, record = await self.session(meter_id)
                    provider = self.providers.get(record.entry.transport)
                    if not session.online and record.entry.transport == "tcp-out":
                        await self._dial(record)
                        await session.wait_online()
                    elif not session.online and provider is not None:
                        await provider.connect(record)
                        await session.wait_online()
                    return await op(session)
            except TimeoutError:
                raise SessionError(
                    f"meter {meter_id}: request took longer than {cap:g} s"
                ) from None

    async def _dial(self, record: MeterRecord) -> None:
        if self.dialer is None:
            raise SessionError(f"meter {record.meter_id}: no dialer for tcp-out meters")
        link = await self.dialer.dial(record)
        await self.attach(record.meter_id, link)

    # -- stopping ----------------------------------------------------------------------------

    async def close(self, grace: float) -> None:
        """Release every association and close every link, within ``grace`` seconds."""
        self._closing = True
        sessions = [self._sessions[m] for m in list(self._links) if m in self._sessions]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
