"""A DLMS test client for the simulator (our ``ClientConnection`` over WRAPPER or HDLC, on a TCP
stream, a pty or an MQTT topic pair) and a harness that runs a ``Simulator`` in-process; other
``test_sim_*`` modules import them. The tests here check the client against endpoints in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest

from adapters.profile import VendorProfile, load_profiles
from hesd.sim.clock import SimClock
from hesd.sim.endpoint import MeterEndpoint
from hesd.sim.faults import parse_faults
from hesd.sim.fleet import Fleet
from hesd.sim.runner import SimOptions, Simulator
from hesd.sim.transports import Transport
from protocols.dlms import apdu as x
from protocols.dlms.acse import Mechanism
from protocols.dlms.axdr import Value
from protocols.dlms.connection import (
    Associated,
    AssociationParameters,
    AssociationRefused,
    ClientConnection,
    Event,
    GetCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
)
from protocols.dlms.hdlc import HdlcAddress
from protocols.dlms.hdlc_link import ApduReceived, Connected, HdlcLink
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper

REPO = Path(__file__).resolve().parent.parent
VENDORS = REPO / "conf" / "vendors"
START = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CLIENT_TITLE = b"HESD\x00\x00\x00\x01"
CLOCK = x.AttributeDescriptor(8, ObisCode.parse("0.0.1.0.0.255"), 2)
ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
SERIAL = x.AttributeDescriptor(1, ObisCode.parse("0.0.96.1.0.255"), 2)
TIMEOUT = 5.0


def profiles(*names: str) -> dict[str, VendorProfile]:
    return load_profiles(VENDORS, names, source="tests")


def frozen_clock(start: float = START) -> SimClock:
    """Simulated time that does not move: ground truth and reads agree exactly."""
    return SimClock(start, 1.0, monotonic=lambda: 0.0)


def make_sim(
    mix: list[tuple[str, int]] | None = None,
    *,
    seed: int = 7,
    faults: str = "",
    clock: SimClock | None = None,
    keys: str = "derived",
    **options: Any,
) -> Simulator:
    mix = mix or [("is15959", 2)]
    plan = parse_faults(faults)
    fleet = Fleet.build(profiles(*(v for v, _ in mix)), mix, seed=seed, keys=keys, faults=plan)
    options.setdefault("push_interval", 0)
    options.setdefault("stats_interval", 0)
    return Simulator(fleet, clock or frozen_clock(), SimOptions(**options), plan)


@contextlib.asynccontextmanager
async def running(
    sim: Simulator, make_transport: Callable[[Simulator], Transport]
) -> AsyncIterator[Transport]:
    """Run ``sim`` over a transport until the block ends; fails if it does not get ready."""
    transport = make_transport(sim)
    stop = asyncio.Event()
    task = asyncio.create_task(sim.run(transport, stop), name="test:sim")
    try:
        async with asyncio.timeout(TIMEOUT):
            ready = asyncio.create_task(sim.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                await task  # raises what stopped it
        yield transport
    finally:
        stop.set()
        async with asyncio.timeout(TIMEOUT):
            await task


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    """Poll a condition of the simulator until it holds, failing after TIMEOUT (the state
    lives in plain attributes: there is no event to wait on)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():  # noqa: ASYNC110 - polls plain state, bounded by the timeout
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {TIMEOUT}s waiting for {what}")


# -- byte pipes -------------------------------------------------------------------------------


class Pipe(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def recv(self) -> bytes: ...  # b"": the peer closed


class TcpPipe:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, address: str) -> TcpPipe:
        host, _, port = address.rpartition(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self) -> bytes:
        return await self.reader.read(4096)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


class FdPipe:
    """A tty opened non-blocking (the pty's peer)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    async def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    async def recv(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.fd, 4096)
            except BlockingIOError:
                pass
            ready: asyncio.Future[None] = loop.create_future()
            loop.add_reader(self.fd, _set, ready)
            try:
                await ready
            finally:
                loop.remove_reader(self.fd)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- DLMS over a pipe -------------------------------------------------------------------------

_DONE = (Associated, AssociationRefused, GetCompleted, RequestFailed, Released)


class DlmsClient:
    """One association with one meter: WRAPPER (``wport``) or HDLC (``hdlc`` = the meter's
    server address) over a pipe."""

    def __init__(
        self,
        pipe: Pipe,
        params: AssociationParameters,
        security: SecurityContext | None = None,
        *,
        client: int = 16,
        server_wport: int = 1,
        hdlc: HdlcAddress | None = None,
        first_counter: int = 1,
    ) -> None:
        self.pipe = pipe
        self.client = client
        self.server_wport = server_wport
        self.conn = ClientConnection(params, security)
        self.conn.grant_invocation_counters(first_counter, 10_000)
        self.notifications: list[x.DataNotification | x.EventNotification] = []
        self.framer = WrapperFramer(client, None)
        self.link = None
        if hdlc is not None:
            self.link = HdlcLink(role="client", local=HdlcAddress.client(client), remote=hdlc)

    async def _send_apdus(self) -> None:
        for apdu in self.conn.data_to_send():
            if self.link is None:
                await self.pipe.send(encode_wrapper(self.client, self.server_wport, apdu))
            else:
                await self.pipe.send(self.link.send_apdu(apdu, time.monotonic()))

    async def _incoming(self) -> list[bytes]:
        data = await self.pipe.recv()
        if not data:
            raise EOFError("the meter closed the connection")
        if self.link is None:
            self.framer.receive_data(data)
            return [f.apdu for f in self.framer.frames()]
        apdus = []
        for event in self.link.receive_data(data, time.monotonic()):
            if isinstance(event, ApduReceived):
                apdus.append(event.apdu)
        if (more := self.link.data_to_send()) != b"":
            await self.pipe.send(more)  # RR: the next segment
        return apdus

    async def connect_link(self) -> None:
        """HDLC: SNRM / UA."""
        assert self.link is not None
        await self.pipe.send(self.link.connect(time.monotonic()))
        async with asyncio.timeout(TIMEOUT):
            while True:
                data = await self.pipe.recv()
                if any(isinstance(e, Connected) for e in self.link.receive_data(data, 0.0)):
                    return

    async def exchange(self, within: float = TIMEOUT) -> Event:
        """Send what the connection queued; return the event that completes it."""
        await self._send_apdus()
        async with asyncio.timeout(within):
            while True:
                for apdu in await self._incoming():
                    for event in self.conn.receive_apdu(apdu, time.monotonic()):
                        if isinstance(event, NotificationReceived):
                            self.notifications.append(event.notification)
                        elif isinstance(event, _DONE):
                            return event
                    await self._send_apdus()  # HLS pass 3, GET next block

    async def next_notification(self) -> x.DataNotification:
        async with asyncio.timeout(TIMEOUT):
            while not self.notifications:
                for apdu in await self._incoming():
                    for event in self.conn.receive_apdu(apdu, time.monotonic()):
                        assert isinstance(event, NotificationReceived), event
                        self.notifications.append(event.notification)
        found = self.notifications.pop(0)
        assert isinstance(found, x.DataNotification)
        return found

    async def associate(self) -> Associated:
        self.conn.associate(time.monotonic())
        event = await self.exchange()
        assert isinstance(event, Associated), event
        return event

    async def get(self, attribute: x.AttributeDescriptor) -> Value | x.DataAccessResult:
        self.conn.get(attribute, time.monotonic())
        event = await self.exchange()
        assert isinstance(event, GetCompleted), event
        return event.result

    async def get_until_refused(self, attribute: x.AttributeDescriptor, tries: int) -> None:
        """GET again and again: for faults that strike some answers only."""
        for _ in range(tries):
            await self.get(attribute)

    async def release(self) -> None:
        self.conn.release(time.monotonic())
        assert isinstance(await self.exchange(), Released)


def association(sim: Simulator, name: str, vendor: str = "is15959") -> dict[str, Any]:
    """ClientConnection arguments for the vendor's association ``name`` with the fleet keys."""
    site = sim.fleet.sites[vendor]
    keys = site.keys
    found = next(a for a in site.associations.values() if a.name == name)
    security = None
    if found.ciphered or found.mechanism == Mechanism.HLS_GMAC:
        security = SecurityContext(
            system_title=CLIENT_TITLE, ek=keys.global_unicast_key, ak=keys.authentication_key
        )
    params = AssociationParameters(
        found.mechanism,
        keys.lls_password if found.mechanism == Mechanism.LLS else None,
        found.ciphered,
        response_timeout=TIMEOUT,
    )
    return {"params": params, "security": security, "client": found.client_address}


# -- in memory: the client against an endpoint --------------------------------------------------


class EndpointPipe:
    """The pipe to one endpoint in memory (WRAPPER): what it answers comes back at once."""

    def __init__(self, endpoint: MeterEndpoint, now: float = START) -> None:
        self.endpoint, self.now = endpoint, now
        self.inbox: list[bytes] = []
        endpoint.open(now)

    async def send(self, data: bytes) -> None:
        reply = self.endpoint.receive(data, self.now)
        if reply.data:
            self.inbox.append(reply.data)

    async def recv(self) -> bytes:
        if not self.inbox:
            raise TimeoutError("the meter did not answer")
        return self.inbox.pop(0)


@pytest.mark.parametrize("name", ["public", "reader", "utility"])
async def test_every_association_of_a_meter_in_memory(name: str) -> None:
    sim = make_sim()
    endpoint = sim.endpoints[0]
    client = DlmsClient(EndpointPipe(endpoint), **association(sim, name))
    await client.associate()
    clock = await client.get(CLOCK)
    assert clock == endpoint.meter_clock(START)
    await client.release()
    assert endpoint.association is None


async def test_a_wrong_lls_password_is_refused() -> None:
    sim = make_sim()
    args = association(sim, "reader")
    args["params"] = AssociationParameters(Mechanism.LLS, b"12345678")
    client = DlmsClient(EndpointPipe(sim.endpoints[0]), **args)
    client.conn.associate(0.0)
    assert isinstance(await client.exchange(), AssociationRefused)
    assert sim.stats.refused == 1


async def test_green_book_keys_are_the_test_keys() -> None:
    sim = make_sim(keys="green-book")
    keys = sim.fleet.sites["is15959"].keys
    assert keys.global_unicast_key == bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    client = DlmsClient(EndpointPipe(sim.endpoints[1]), **association(sim, "utility"))
    await client.associate()
    assert await client.get(SERIAL) == sim.endpoints[1].meter.spec.serial_number
