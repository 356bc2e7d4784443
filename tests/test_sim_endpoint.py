"""MeterEndpoint and HdlcBus in memory: HDLC multidrop routing, pushes, link ends, protocol
errors, inactivity; with our ClientConnection (and HdlcLink) as the client."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hesd.sim.endpoint import PUSH_WPORT, HdlcBus, identification_body
from protocols.dlms import apdu as x
from protocols.dlms.hdlc import HdlcAddress, HdlcFrame, control_u
from protocols.dlms.hdlc_link import FrameType
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper
from protocols.errors import RemoteProtocolError
from tests.test_sim_client import (
    CLOCK,
    SERIAL,
    START,
    DlmsClient,
    EndpointPipe,
    association,
    make_sim,
)


class BusPipe:
    """The pipe to an HdlcBus in memory: every answer comes back at once."""

    def __init__(self, bus: HdlcBus, now: float = START) -> None:
        self.bus, self.now = bus, now
        self.inbox: list[bytes] = []

    async def send(self, data: bytes) -> None:
        for _, reply in self.bus.receive(data, self.now):
            if reply.data:
                self.inbox.append(reply.data)

    async def recv(self) -> bytes:
        if not self.inbox:
            raise TimeoutError("no meter answered")
        return self.inbox.pop(0)


async def test_each_meter_on_the_bus_answers_its_own_address() -> None:
    sim = make_sim([("sunrise", 3)])
    bus = HdlcBus(sim.endpoints, [16, 17, 18], sim.ctx)
    pipe = BusPipe(bus)
    for endpoint, physical in ((sim.endpoints[0], 16), (sim.endpoints[2], 18)):
        client = DlmsClient(
            pipe, **association(sim, "public", "sunrise"), hdlc=HdlcAddress.server(1, physical)
        )
        await client.connect_link()
        await client.associate()
        assert await client.get(SERIAL) == endpoint.meter.spec.serial_number
        assert await client.get(CLOCK) == endpoint.meter_clock(START)
        assert endpoint.connected
    assert not sim.endpoints[1].connected  # never addressed: no link made at all
    assert sim.endpoints[1]._link is None


async def test_a_frame_for_no_meter_of_the_bus_is_dropped() -> None:
    sim = make_sim([("sunrise", 2)])
    bus = HdlcBus(sim.endpoints, [16, 17], sim.ctx)
    snrm = HdlcFrame(
        HdlcAddress.server(1, 40), HdlcAddress.client(16), control_u(FrameType.SNRM, True)
    )
    assert bus.receive(snrm.encode(), START) == []
    assert sim.stats.frames_dropped == 1


async def test_the_ciphered_utility_association_over_hdlc() -> None:
    sim = make_sim([("sunrise", 2)])
    bus = HdlcBus(sim.endpoints, [16, 17], sim.ctx)
    client = DlmsClient(
        BusPipe(bus), **association(sim, "utility", "sunrise"), hdlc=HdlcAddress.server(1, 17)
    )
    await client.connect_link()
    await client.associate()
    assert await client.get(SERIAL) == sim.endpoints[1].meter.spec.serial_number


def test_bus_addresses_are_checked() -> None:
    sim = make_sim([("sunrise", 1)])
    with pytest.raises(ValueError, match=r"outside 16\.\.16381"):
        HdlcBus(sim.endpoints, [3], sim.ctx)


async def test_push_goes_to_the_open_association() -> None:
    sim = make_sim()
    endpoint = sim.endpoints[0]
    pipe = EndpointPipe(endpoint)
    client = DlmsClient(pipe, **association(sim, "reader"))
    await client.associate()
    pipe.inbox.append(endpoint.push(START).data)
    pushed = await client.next_notification()
    body = pushed.body
    assert isinstance(body, tuple)
    assert body[0] == endpoint.meter.logical_device_name()
    assert body[1] == endpoint.meter_clock(START)
    assert sim.stats.pushes == 1


def test_push_without_association_is_ciphered_as_the_default_association() -> None:
    sim = make_sim()  # is15959: the default association, reader, is not ciphered
    framer = WrapperFramer(PUSH_WPORT, 1)
    framer.receive_data(sim.endpoints[0].push(START).data)
    frame = framer.next_frame()
    assert frame is not None
    assert frame.apdu[0] == x.ApduTag.DATA_NOTIFICATION
    site = sim.fleet.sites["is15959"]
    object.__setattr__(site, "profile", replace(site.profile, default_association="utility"))
    reply = sim.endpoints[0].push(START)
    framer = WrapperFramer(PUSH_WPORT, 1)
    framer.receive_data(reply.data)
    frame = framer.next_frame()
    assert frame is not None
    assert frame.apdu[0] == 0xDB  # general-glo-ciphering, with the meter's system title
    assert frame.apdu[2:10] == sim.endpoints[0].meter.spec.system_title


def test_identification_push_is_plain() -> None:
    sim = make_sim()
    endpoint = sim.endpoints[1]
    framer = WrapperFramer(PUSH_WPORT, 1)
    framer.receive_data(endpoint.identification(START).data)
    frame = framer.next_frame()
    assert frame is not None
    notification = x.decode_apdu(frame.apdu)
    assert isinstance(notification, x.DataNotification)
    spec = endpoint.meter.spec
    assert notification.body == (
        spec.serial_number,
        spec.system_title,
        endpoint.meter.logical_device_name(),
    )
    assert identification_body(endpoint.meter) == notification.body


def test_a_frame_for_another_wport_closes_the_link() -> None:
    sim = make_sim()
    endpoint = sim.endpoints[0]
    endpoint.open(START)
    reply = endpoint.receive(encode_wrapper(16, 2, b"\x60\x00"), START)
    assert reply.close
    assert reply.notes[0][0] == "sim.meter.protocol_error"
    assert sim.stats.protocol_errors == 1


async def test_closing_the_link_ends_the_association() -> None:
    sim = make_sim()
    endpoint = sim.endpoints[0]
    client = DlmsClient(EndpointPipe(endpoint), **association(sim, "utility"))
    await client.associate()
    assert endpoint.association == "utility"
    reply = endpoint.close(START)
    assert [n for n, _ in reply.notes] == ["sim.meter.disconnected", "sim.meter.association_lost"]
    assert endpoint.association is None
    replayed = DlmsClient(EndpointPipe(endpoint), **association(sim, "utility"))
    replayed.conn.associate(0.0)  # the client's counters start over: a replay to the meter
    assert "initiate" in str(await replayed.exchange())
    again = DlmsClient(EndpointPipe(endpoint), **association(sim, "utility"), first_counter=500)
    await again.associate()
    assert await again.get(CLOCK) == endpoint.meter_clock(START)


async def test_inactivity_drops_the_association_when_the_next_request_comes() -> None:
    sim = make_sim()
    endpoint = sim.endpoints[0]
    pipe = EndpointPipe(endpoint)
    client = DlmsClient(pipe, **association(sim, "public"))
    await client.associate()
    pipe.now += endpoint.site.profile.inactivity_timeout + 1
    endpoint.on_timeout(pipe.now)
    assert endpoint.association is None
    with pytest.raises(AssertionError, match="RequestFailed"):
        await client.get(CLOCK)  # an Exception-Response: not associated


async def test_garbage_from_the_meter_reaches_the_client_as_a_protocol_error() -> None:
    sim = make_sim(faults="garbage")
    client = DlmsClient(EndpointPipe(sim.endpoints[0]), **association(sim, "public"))
    client.conn.associate(0.0)
    with pytest.raises(RemoteProtocolError, match="wrapper"):
        await client.exchange()
