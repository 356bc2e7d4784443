"""Serve and dial mode over real loopback sockets, with our ClientConnection as hesd, the keys
read back from the secrets file the simulator writes, and every fault observable from outside."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hesd.secrets import load_secrets
from hesd.sim.clock import SimClock
from hesd.sim.endpoint import PUSH_WPORT
from hesd.sim.runner import Simulator
from hesd.sim.tcp import DialTransport, ServeTransport, loopback_address
from hesd.sim.transports import Backoff, Transport
from protocols.dlms import apdu as x
from protocols.dlms.acse import Mechanism
from protocols.dlms.connection import AssociationParameters
from protocols.dlms.hdlc import HdlcAddress
from protocols.dlms.security import SecurityContext
from protocols.dlms.wrapper import WrapperFramer
from protocols.errors import RemoteProtocolError
from tests.test_sim_client import (
    CLIENT_TITLE,
    CLOCK,
    ENERGY,
    SERIAL,
    START,
    DlmsClient,
    TcpPipe,
    association,
    make_sim,
    running,
    wait_until,
)

pytestmark = pytest.mark.integration


def serve(sim: Simulator) -> Transport:
    return ServeTransport(sim.env, sim.endpoints, port=0)


def test_loopback_addresses_skip_host_parts_0_and_255() -> None:
    assert loopback_address(0) == "127.0.1.1"
    assert loopback_address(253) == "127.0.1.254"
    assert loopback_address(254) == "127.0.2.1"
    assert loopback_address(255 * 254 - 1) == "127.0.255.254"
    with pytest.raises(ValueError, match="at most"):
        loopback_address(255 * 254)


def _keys(secrets: Path, vendor: str = "is15959") -> dict[str, bytes]:
    keyset = load_secrets(secrets).keysets[f"sim-{vendor}"]
    out = {}
    for name in ("lls_password", "global_unicast_key", "authentication_key"):
        secret = getattr(keyset, name)
        assert secret is not None
        out[name] = secret.reveal()
    return out


def _client(pipe: TcpPipe, name: str, keys: dict[str, bytes]) -> DlmsClient:
    """A client for IS 15959 association ``name`` from the keys of the secrets file."""
    security = SecurityContext(
        system_title=CLIENT_TITLE, ek=keys["global_unicast_key"], ak=keys["authentication_key"]
    )
    if name == "public":
        return DlmsClient(pipe, AssociationParameters(), client=16)
    if name == "reader":
        params = AssociationParameters(Mechanism.LLS, keys["lls_password"])
        return DlmsClient(pipe, params, client=32)
    params = AssociationParameters(Mechanism.HLS_GMAC, ciphered=True)
    return DlmsClient(pipe, params, security, client=48)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


@pytest.mark.parametrize("name", ["public", "reader", "utility"])
async def test_serve_reads_match_the_ground_truth(tmp_path: Path, name: str) -> None:
    secrets = tmp_path / "secrets.toml"
    sim = make_sim([("is15959", 3)], secrets_out=secrets, control=("127.0.0.1", 0))
    async with running(sim, serve) as transport, aiohttp.ClientSession() as http:
        endpoint = sim.endpoints[1]
        pipe = await TcpPipe.connect(transport.address(endpoint))
        try:
            client = _client(pipe, name, _keys(secrets))
            await client.associate()
            clock = await client.get(CLOCK)
            energy = await client.get(ENERGY)
            assert await client.get(SERIAL) == endpoint.meter.spec.serial_number
            await client.release()
        finally:
            await pipe.close()
        assert sim.control_address is not None
        api = "http://{}:{}/api/v1".format(*sim.control_address)
        meter = await _get_json(http, f"{api}/meters/{endpoint.meter_id}")
        assert clock == endpoint.meter_clock(sim.clock.now())
        assert meter["truth"]["clock_offset"] == 0
        truth = await _get_json(
            http, f"{api}/meters/{endpoint.meter_id}/truth?quantity=energy_active_import"
        )
        if name == "public":  # the public client may not read energy
            assert energy == x.DataAccessResult.READ_WRITE_DENIED
        else:
            assert energy == truth["raw"]
        assert meter["associations_served"] == 1
        await wait_until(lambda: not endpoint.connected, "the meter to see the connection end")


async def test_a_meter_takes_one_connection_at_a_time() -> None:
    sim = make_sim([("is15959", 1)])
    async with running(sim, serve) as transport:
        address = transport.address(sim.endpoints[0])
        first = await TcpPipe.connect(address)
        await wait_until(lambda: sim.endpoints[0].connected, "the first connection")
        second = await TcpPipe.connect(address)
        assert await second.recv() == b""  # closed at once
        await second.close()
        client = DlmsClient(first, **association(sim, "public"))
        await client.associate()  # the first one is still served
        await first.close()


async def test_a_scheduled_push_reaches_the_connected_client() -> None:
    sim = make_sim([("is15959", 1)])
    async with running(sim, serve) as transport:
        endpoint = sim.endpoints[0]
        assert not sim.push(endpoint, sim.clock.now())  # nobody connected: no push
        pipe = await TcpPipe.connect(transport.address(endpoint))
        client = DlmsClient(pipe, **association(sim, "reader"))
        await client.associate()
        assert sim.push(endpoint, sim.clock.now())
        pushed = await client.next_notification()
        assert isinstance(pushed.body, tuple)
        assert pushed.body[0] == endpoint.meter.logical_device_name()
        await pipe.close()


# -- dial ---------------------------------------------------------------------------------------


class Hes:
    """A TCP listener standing in for hesd: it collects the meters that dial in."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[tuple[x.DataNotification, TcpPipe]] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Hes:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pipe = TcpPipe(reader, writer)
        framer = WrapperFramer(PUSH_WPORT, 1)
        while (frame := framer.next_frame()) is None:
            data = await pipe.recv()
            if not data:
                return
            framer.receive_data(data)
        notification = x.decode_apdu(frame.apdu)
        assert isinstance(notification, x.DataNotification)
        await self.arrived.put((notification, pipe))

    async def next(self) -> tuple[x.DataNotification, TcpPipe]:
        async with asyncio.timeout(5):
            return await self.arrived.get()


async def test_dial_identifies_then_answers_on_the_same_connection() -> None:
    sim = make_sim([("is15959", 3)])
    async with Hes() as hes:

        def dial(sim: Simulator) -> Transport:
            backoff = Backoff(0.05, 0.2)
            return DialTransport(sim.env, sim.endpoints, ("127.0.0.1", hes.port), backoff=backoff)

        async with running(sim, dial):
            seen = {}
            for _ in range(3):
                notification, pipe = await hes.next()
                serial, title, ldn = notification.body  # type: ignore[misc]
                seen[serial] = (ldn, title, pipe)
            for endpoint in sim.endpoints:
                spec = endpoint.meter.spec
                ldn, title, pipe = seen[spec.serial_number]
                assert (ldn, title) == (endpoint.meter.logical_device_name(), spec.system_title)
                client = DlmsClient(pipe, **association(sim, "reader"))
                await client.associate()
                assert await client.get(SERIAL) == spec.serial_number
            await seen[sim.endpoints[0].meter.spec.serial_number][2].close()  # hesd hangs up
            notification, pipe = await hes.next()  # ... and the meter comes back
            serial = notification.body[0]  # type: ignore[index]
            assert serial == sim.endpoints[0].meter.spec.serial_number
            assert sim.stats.per_mode["reconnects"] == 1
            for _, _, other in seen.values():
                await other.close()
            await pipe.close()


async def test_dial_retries_until_the_hes_listens() -> None:
    sim = make_sim([("is15959", 1)])
    hes = Hes()
    async with hes:
        port = hes.port
    backoff = Backoff(0.02, 0.05)
    async with running(
        sim, lambda s: DialTransport(s.env, s.endpoints, ("127.0.0.1", port), backoff=backoff)
    ):
        await wait_until(lambda: sim.stats.connect_failures >= 2, "failed connection attempts")
        hes.server = await asyncio.start_server(hes._accept, "127.0.0.1", port)
        try:
            _, pipe = await hes.next()
            await pipe.close()
        finally:
            await hes.__aexit__()


# -- faults -------------------------------------------------------------------------------------


async def _fault_client(sim: Simulator, transport: Transport, index: int, spec: str) -> DlmsClient:
    endpoint = sim.endpoints[index]
    sim.set_faults(endpoint, spec)
    pipe = await TcpPipe.connect(transport.address(endpoint))
    return DlmsClient(pipe, **association(sim, "utility"))


async def test_every_fault_is_observable_from_the_client() -> None:
    sim = make_sim([("is15959", 7)])
    async with running(sim, serve) as transport:
        silent = await _fault_client(sim, transport, 0, "silent")
        silent.conn.associate(0.0)
        with pytest.raises(TimeoutError):
            await silent.exchange(within=0.3)

        wrong = await _fault_client(sim, transport, 1, "wrong_tag")
        wrong.conn.associate(0.0)
        with pytest.raises(RemoteProtocolError, match="tag"):
            await wrong.exchange()

        garbage = await _fault_client(sim, transport, 2, "garbage")
        garbage.conn.associate(0.0)
        with pytest.raises(RemoteProtocolError, match="wrapper"):
            await garbage.exchange()

        cut = await _fault_client(sim, transport, 3, "disconnect")
        cut.conn.associate(0.0)
        with pytest.raises(EOFError):
            await cut.exchange()
        assert cut.framer.next_frame() is None  # half a frame came, then the end

        hang = await _fault_client(sim, transport, 4, "hang=2")  # AARE, HLS pass 4, then none
        await hang.associate()
        hang.conn.get(CLOCK, 0.0)
        with pytest.raises(TimeoutError):
            await hang.exchange(within=0.3)

        replay = await _fault_client(sim, transport, 5, "replay=0.5")
        await replay.associate()
        with pytest.raises(RemoteProtocolError, match=r"counter|replay"):
            await replay.get_until_refused(CLOCK, 40)

        slow = await _fault_client(sim, transport, 6, "latency=150ms..200ms")
        started = time.monotonic()
        await slow.associate()  # two round trips: AARQ, HLS pass 3
        assert time.monotonic() - started >= 0.3

        for client in (silent, wrong, garbage, cut, hang, replay, slow):
            assert isinstance(client.pipe, TcpPipe)
            await client.pipe.close()
    faults = sim.stats.faults
    assert {"silent", "wrong_tag", "garbage", "disconnect", "hang", "replay"} <= set(faults)


async def test_an_hdlc_vendor_speaks_hdlc_over_tcp() -> None:
    sim = make_sim([("sunrise", 2)])
    async with running(sim, serve) as transport:
        endpoint = sim.endpoints[1]
        pipe = await TcpPipe.connect(transport.address(endpoint))
        client = DlmsClient(pipe, **association(sim, "reader", "sunrise"), hdlc=HdlcAddress(1))
        await client.connect_link()
        await client.associate()
        assert await client.get(SERIAL) == endpoint.meter.spec.serial_number
        await pipe.close()
    with pytest.raises(ValueError, match="dial mode needs WRAPPER framing"):
        DialTransport(sim.env, sim.endpoints, ("127.0.0.1", 1))


async def test_the_push_schedule_and_the_alarms() -> None:
    clock = SimClock(START, 600.0)  # ten simulated minutes a second
    sim = make_sim([("is15959", 2)], clock=clock, push_interval=60.0, alarms_per_day=20_000.0)
    async with running(sim, serve) as transport:
        endpoint = sim.endpoints[0]
        pipe = await TcpPipe.connect(transport.address(endpoint))
        client = DlmsClient(pipe, **association(sim, "reader"))
        await client.associate()
        first = await client.next_notification()  # every 0.1 s of real time
        second = await client.next_notification()
        assert second.long_invoke_id > first.long_invoke_id
        await wait_until(lambda: sim.stats.alarms >= 2, "scheduled tamper alarms")
        await pipe.close()
    assert any(e.meter.snapshot(clock.now()).tamper_count for e in sim.endpoints)
