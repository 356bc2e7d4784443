"""Serial mode on real pty pairs: the test opens the tty the simulator names, in raw mode with
plain os.open and termios, and talks HDLC to meters of the multidrop bus by their addresses."""

from __future__ import annotations

import contextlib
import os
import tty
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from hesd.sim.runner import Simulator
from hesd.sim.serial import SerialTransport
from hesd.sim.transports import Transport
from protocols.dlms.hdlc import HdlcAddress
from tests.test_sim_client import CLOCK, SERIAL, DlmsClient, FdPipe, association, make_sim, running

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def tty_of(path: str) -> Iterator[FdPipe]:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        tty.setraw(fd)
        yield FdPipe(fd)
    finally:
        os.close(fd)


async def test_two_meters_on_one_bus_by_address() -> None:
    sim = make_sim([("sunrise", 3)])
    with capture_logs() as logs:
        async with running(sim, lambda s: SerialTransport(s.env, s.endpoints)) as transport:
            assert isinstance(transport, SerialTransport)
            ready = [e for e in logs if e["event"] == "sim.serial.ready"]
            assert [e["path"] for e in ready] == transport.paths
            assert transport.paths[0].startswith("/dev/pts/")
            assert transport.address(sim.endpoints[2]) == f"{transport.paths[0]}:18"
            with tty_of(transport.paths[0]) as pipe:
                for index, name in ((2, "reader"), (0, "utility")):
                    endpoint = sim.endpoints[index]
                    client = DlmsClient(
                        pipe,
                        **association(sim, name, "sunrise"),
                        hdlc=HdlcAddress.server(1, 16 + index),
                    )
                    await client.connect_link()
                    await client.associate()
                    assert await client.get(SERIAL) == endpoint.meter.spec.serial_number
                    assert await client.get(CLOCK) == endpoint.meter_clock(sim.clock.now())
                    await client.release()
            assert not sim.endpoints[1].connected


async def test_the_fleet_split_over_two_buses() -> None:
    sim = make_sim([("is15959", 4)])

    def two(s: Simulator) -> Transport:
        return SerialTransport(s.env, s.endpoints, buses=2)

    async with running(sim, two) as transport:
        assert isinstance(transport, SerialTransport)
        first, second = transport.paths
        assert transport.address(sim.endpoints[1]) == f"{first}:17"
        assert transport.address(sim.endpoints[2]) == f"{second}:16"
        with tty_of(second) as pipe:
            client = DlmsClient(pipe, **association(sim, "public"), hdlc=HdlcAddress.server(1, 17))
            await client.connect_link()
            await client.associate()
            assert await client.get(SERIAL) == sim.endpoints[3].meter.spec.serial_number


def test_bus_count_is_checked() -> None:
    sim = make_sim([("is15959", 2)])
    with pytest.raises(ValueError, match="3 serial buses for 2 meters"):
        SerialTransport(sim.env, sim.endpoints, buses=3)
