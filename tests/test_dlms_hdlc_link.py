"""The HDLC link state machine (IEC 62056-46 §6.4.4): client and server roles.

Oracles: gurux-dlms as the client, in lockstep with our client (same bytes at every step) and
against our server; our client against our server in memory, over a lossless and a lossy wire;
hypothesis over (state x input) sequences checked against the transition table.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.objects import GXDLMSData
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    FrameType,
    HdlcAddress,
    HdlcFrame,
    HdlcFramer,
    HdlcParameters,
    control_i,
    control_s,
    control_u,
    decode_frame,
)
from protocols.dlms.hdlc_link import (
    TRANSITIONS,
    Action,
    ApduReceived,
    Connected,
    Disconnected,
    Event,
    FrameDropped,
    HdlcLink,
    LinkState,
    Role,
    UnnumberedInformation,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

CLIENT = HdlcAddress.client(16)
SERVER = HdlcAddress.server(1, 17)
AARQ = bytes.fromhex("601da109060760857405080101be10040e01000000065f1f0400401e5dffff")
AARE = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000301d19000007"
)
BIG = bytes(i * 7 % 251 for i in range(3000))
# GET.response-normal carrying an octet-string of 3000 bytes.
GET_RESPONSE = bytes.fromhex("c401c1000982") + len(BIG).to_bytes(2, "big") + BIG


def client_link(**kwargs: object) -> HdlcLink:
    return HdlcLink(role="client", local=CLIENT, remote=SERVER, **kwargs)  # type: ignore[arg-type]


def server_link(**kwargs: object) -> HdlcLink:
    return HdlcLink(role="server", local=SERVER, remote=None, **kwargs)  # type: ignore[arg-type]


def frames_in(data: bytes) -> list[HdlcFrame]:
    framer = HdlcFramer()
    framer.receive_data(data)
    out = []
    while (frame := framer.next_frame()) is not None:
        out.append(frame)
    assert framer.discarded_bytes == 0
    return out


def split(data: bytes) -> list[bytes]:
    """The frames of a burst, each with its own flags (as the link writes them)."""
    out, pos = [], 0
    while pos < len(data):
        end = pos + ((data[pos + 1] & 0x07) << 8 | data[pos + 2]) + 2
        out.append(data[pos:end])
        pos = end
    return out


def from_server(control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    return HdlcFrame(CLIENT, SERVER, control, info, segmented).encode()


def from_client(control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    return HdlcFrame(SERVER, CLIENT, control, info, segmented).encode()


def connected_client(**kwargs: object) -> HdlcLink:
    client = client_link(**kwargs)
    client.connect(0.0)
    client.receive_data(from_server(0x73), 0.0)
    assert client.state is LinkState.CONNECTED
    return client


def connected_server(**kwargs: object) -> HdlcLink:
    server = server_link(**kwargs)
    server.receive_data(from_client(0x93), 0.0)
    server.data_to_send()
    assert server.state is LinkState.CONNECTED
    return server


# -- gurux in lockstep -----------------------------------------------------------------------


def gurux_client(tx: int = 128, rx: int = 128, size: int = 2) -> GXDLMSClient:
    address = GXDLMSClient.getServerAddress(1, 17, size)
    gurux = GXDLMSClient(True, 16, address, Authentication.NONE, None, InterfaceType.HDLC)
    gurux.serverAddressSize = size
    gurux.hdlcSettings.maxInfoTX, gurux.hdlcSettings.maxInfoRX = tx, rx
    return gurux


def gurux_reads(gurux: GXDLMSClient, data: bytes, reply: GXReplyData | None = None) -> GXReplyData:
    reply = reply or GXReplyData()
    assert gurux.getData(GXByteBuffer(data), reply)
    return reply


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize(("tx", "rx"), [(128, 128), (512, 256), (128, 2030), (32, 64)])
def test_lockstep_with_gurux(size: int, tx: int, rx: int) -> None:
    """gurux and our client, given the same server frames, send the same bytes at every step:
    SNRM, AARQ in an I frame, a GET, RR for every segment of a 3000-byte answer, DISC."""
    server_address = HdlcAddress(1, 17, size)
    gurux = gurux_client(tx, rx, size)
    ours = HdlcLink(
        role="client", local=CLIENT, remote=server_address, parameters=HdlcParameters(tx, rx)
    )
    meter = HdlcLink(
        role="server", local=server_address, remote=None, parameters=HdlcParameters(256, 1024)
    )
    snrm = ours.connect(0.0)
    assert snrm == bytes(gurux.snrmRequest())
    (connected,) = meter.receive_data(snrm, 0.0)
    assert isinstance(connected, Connected)
    ua = meter.data_to_send()
    assert ours.receive_data(ua, 0.0) == [Connected(meter.parameters.mirrored())]  # type: ignore[union-attr]
    gurux.parseUAResponse(gurux_reads(gurux, ua).data)
    assert (gurux.hdlcSettings.maxInfoTX, gurux.hdlcSettings.maxInfoRX) == (
        ours.parameters.max_info_transmit,  # type: ignore[union-attr]
        ours.parameters.max_info_receive,  # type: ignore[union-attr]
    )

    # An AARQ longer than the information field goes in two segments. gurux fills the first one
    # 3 bytes short of the maximum, we fill it: both are valid, so there only the control fields
    # (N(S), N(R), P, S) have to agree.
    gurux_aarq = [bytes(f) for f in gurux.aarqRequest()]
    ours_out = ours.send_apdu(AARQ, 0.0)
    if len(gurux_aarq) == 1:
        assert ours_out == gurux_aarq[0]
    for frame, following in itertools.pairwise(gurux_aarq):
        assert decode_frame(ours_out).control == decode_frame(frame).control
        assert meter.receive_data(frame, 0.0) == []
        rr = meter.data_to_send()
        assert ours.receive_data(rr, 0.0) == []  # RR: send the next one
        gurux.getData(GXByteBuffer(rr), GXReplyData())  # keeps gurux's sequence numbers in step
        ours_out = ours.data_to_send()
        assert decode_frame(ours_out).control == decode_frame(following).control
    assert meter.receive_data(gurux_aarq[-1], 0.0) == [ApduReceived(AARQ)]
    aare = meter.send_apdu(AARE, 0.0)
    assert ours.receive_data(aare, 0.0) == [ApduReceived(AARE)]
    gurux.parseAareResponse(gurux_reads(gurux, aare).data)

    (get_frame,) = gurux.read(GXDLMSData("0.0.42.0.0.255"), 2)
    get_apdu = decode_frame(bytes(get_frame)).info[3:]
    assert ours.send_apdu(get_apdu, 0.0) == bytes(get_frame)
    assert meter.receive_data(bytes(get_frame), 0.0) == [ApduReceived(get_apdu)]
    segment = meter.send_apdu(GET_RESPONSE, 0.0)
    reply = GXReplyData()
    segments = 1
    while True:
        events = ours.receive_data(segment, 0.0)
        rr = ours.data_to_send()
        gurux_reads(gurux, segment, reply)
        if not reply.isMoreData():
            break
        assert rr == bytes(gurux.receiverReady(reply))
        assert not events
        assert meter.receive_data(rr, 0.0) == []
        segment = meter.data_to_send()
        segments += 1
    assert events == [ApduReceived(GET_RESPONSE)]
    assert bytes(reply.value) == BIG
    assert segments == -(-(len(GET_RESPONSE) + 3) // ours.parameters.max_info_receive)  # type: ignore[union-attr]

    disc = ours.disconnect(0.0)
    assert disc == bytes(gurux.disconnectRequest())
    assert meter.receive_data(disc, 0.0) == [Disconnected("released by the client (DISC)")]
    assert ours.receive_data(meter.data_to_send(), 0.0) == [Disconnected("released (UA)")]


def test_our_server_reassembles_a_request_gurux_segments() -> None:
    gurux = gurux_client(tx=32)
    meter = server_link()
    meter.receive_data(bytes(gurux.snrmRequest()), 0.0)
    gurux.parseUAResponse(gurux_reads(gurux, meter.data_to_send()).data)
    *first, last = gurux.aarqRequest()
    assert first, "the AARQ should need two frames at 32 bytes"
    for frame in first:
        assert meter.receive_data(bytes(frame), 0.0) == []
        rr = decode_frame(meter.data_to_send())
        assert (rr.kind, rr.poll_final) == (FrameType.RR, True)
    assert meter.receive_data(bytes(last), 0.0) == [ApduReceived(AARQ)]


# -- our client and server in memory ---------------------------------------------------------


class Wire:
    """Our client and server joined by a wire; ``lose(n)`` decides whether frame n is lost."""

    def __init__(
        self,
        client_limits: HdlcParameters | None = None,
        server_limits: HdlcParameters | None = None,
        lose: Callable[[int], bool] = lambda n: False,
        answer: Callable[[bytes], bytes] = lambda apdu: apdu[::-1],
    ) -> None:
        self.client = client_link(parameters=client_limits, response_timeout=1.0, max_retries=4)
        self.server = server_link(parameters=server_limits)
        self.lose, self.answer = lose, answer
        self.now = 0.0
        self.count = 0
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []

    def run(self, from_client: bytes) -> None:
        to_server, to_client = from_client, b""
        for _ in range(10_000):
            if to_server:
                for frame in self._carry(to_server):
                    events = self.server.receive_data(frame, self.now)
                    self.server_events += events
                    to_client += self.server.data_to_send()
                    for event in events:
                        if isinstance(event, ApduReceived):
                            to_client += self.server.send_apdu(self.answer(event.apdu), self.now)
                to_server = b""
            elif to_client:
                for frame in self._carry(to_client):
                    self.client_events += self.client.receive_data(frame, self.now)
                    to_server += self.client.data_to_send()
                to_client = b""
            else:
                deadline = self.client.next_deadline()
                if deadline is None:
                    return
                self.now = max(self.now, deadline)
                self.client_events += self.client.handle_timeout(self.now)
                to_server += self.client.data_to_send()
        pytest.fail("the link never settled")

    def _carry(self, data: bytes) -> list[bytes]:
        kept = []
        for frame in split(data):
            self.count += 1
            if not self.lose(self.count):
                kept.append(frame)
        return kept

    def of(self, kind: type, events: list[Event]) -> list[Event]:
        return [e for e in events if isinstance(e, kind)]


@pytest.mark.parametrize(
    ("client_limits", "server_limits"),
    [
        (HdlcParameters(), HdlcParameters()),
        (HdlcParameters(2030, 2030, 1, 1), HdlcParameters(2030, 2030, 1, 1)),
        (HdlcParameters(128, 128, 7, 7), HdlcParameters(128, 128, 7, 7)),
        (HdlcParameters(32, 32, 3, 7), HdlcParameters(64, 2030, 7, 2)),
        (HdlcParameters(1024, 256, 7, 1), HdlcParameters(128, 512, 1, 7)),
    ],
)
def test_full_exchange(client_limits: HdlcParameters, server_limits: HdlcParameters) -> None:
    wire = Wire(client_limits, server_limits)
    wire.run(wire.client.connect(0.0))
    (client_up,) = wire.client_events
    (server_up,) = wire.server_events
    assert isinstance(client_up, Connected)
    assert isinstance(server_up, Connected)
    assert client_up.parameters == server_up.parameters.mirrored()
    assert client_up.parameters == client_limits.answer(server_limits.answer(client_limits))
    wire.client_events.clear()
    wire.server_events.clear()

    for apdu in (BIG, AARQ, BIG[:1], BIG[:125], BIG[:126]):  # one segment, or several
        wire.run(wire.client.send_apdu(apdu, wire.now))
        assert wire.server_events == [ApduReceived(apdu)]
        assert wire.client_events == [ApduReceived(apdu[::-1])]
        assert wire.client.idle
        wire.client_events.clear()
        wire.server_events.clear()

    wire.run(wire.client.disconnect(wire.now))
    assert wire.client.state is wire.server.state is LinkState.DISCONNECTED
    assert wire.client_events == [Disconnected("released (UA)")]


@settings(max_examples=150, deadline=None)
@given(
    st.sets(st.integers(1, 120), max_size=12),
    st.sampled_from([HdlcParameters(), HdlcParameters(64, 64, 3, 3)]),
)
def test_lossy_wire_delivers_each_apdu_once_or_gives_up(
    lost: set[int], limits: HdlcParameters
) -> None:
    """Lose any frames: each APDU arrives once and whole, or the client gives up cleanly."""
    wire = Wire(limits, limits, lose=lambda n: n in lost)
    wire.run(wire.client.connect(0.0))
    if wire.client.state is not LinkState.CONNECTED:
        assert wire.client.state is LinkState.DISCONNECTED
        assert wire.of(Disconnected, wire.client_events)
        return
    for apdu in (BIG[:700], BIG[:40]):
        wire.run(wire.client.send_apdu(apdu, wire.now))
        if wire.client.state is not LinkState.CONNECTED:  # gave up after max_retries
            assert wire.of(Disconnected, wire.client_events)
            assert len(wire.of(ApduReceived, wire.client_events)) <= 1
            return
        assert wire.of(ApduReceived, wire.server_events) == [ApduReceived(apdu)]
        assert wire.of(ApduReceived, wire.client_events) == [ApduReceived(apdu[::-1])]
        wire.client_events.clear()
        wire.server_events.clear()
    wire.run(wire.client.disconnect(wire.now))
    assert wire.client.state is LinkState.DISCONNECTED


def test_dead_wire_mid_transfer_ends_in_disconnected() -> None:
    wire = Wire(lose=lambda n: n > 10)
    wire.run(wire.client.connect(0.0))
    wire.run(wire.client.send_apdu(BIG, wire.now))
    assert wire.client.state is LinkState.DISCONNECTED
    (gave_up,) = wire.of(Disconnected, wire.client_events)
    assert "after 4 retransmissions" in gave_up.reason  # type: ignore[attr-defined]
    assert wire.of(ApduReceived, wire.server_events) == []


# -- timeouts --------------------------------------------------------------------------------


def test_snrm_is_sent_again_then_the_client_gives_up() -> None:
    client = client_link(response_timeout=2.0, max_retries=2)
    snrm = client.connect(10.0)
    assert client.next_deadline() == 12.0
    assert client.handle_timeout(11.9) == []
    assert client.data_to_send() == b""
    assert client.handle_timeout(12.0) == []
    assert client.data_to_send() == snrm
    assert client.next_deadline() == 14.0
    client.handle_timeout(14.0)
    assert client.data_to_send() == snrm
    (gave_up,) = client.handle_timeout(16.0)
    assert isinstance(gave_up, Disconnected)
    assert "after 2 retransmissions" in gave_up.reason
    assert client.state is LinkState.DISCONNECTED
    assert client.next_deadline() is None


def test_lost_answer_makes_the_client_send_its_i_frame_again() -> None:
    client = connected_client()
    request = client.send_apdu(AARQ, 0.0)
    client.handle_timeout(5.0)
    assert client.data_to_send() == request  # same N(S), N(R), P


def test_lost_segment_makes_the_client_poll_again() -> None:
    client = connected_client()
    client.send_apdu(AARQ, 0.0)
    first = from_server(control_i(0, 1, True), LLC_RESPONSE + BIG[:125], segmented=True)
    assert client.receive_data(first, 1.0) == []
    rr = client.data_to_send()
    assert decode_frame(rr).control == control_s(FrameType.RR, 1, True)
    client.handle_timeout(6.0)
    assert client.data_to_send() == rr


def test_rnr_makes_the_client_wait_then_poll() -> None:
    client = connected_client(parameters=HdlcParameters(32, 128))
    client.send_apdu(BIG[:100], 0.0)
    assert client.receive_data(from_server(control_s(FrameType.RNR, 1, True)), 1.0) == []
    assert client.data_to_send() == b""
    assert not client.idle
    assert client.next_deadline() == 6.0
    client.handle_timeout(6.0)
    poll = decode_frame(client.data_to_send())
    assert (poll.kind, poll.receive_sequence, poll.poll_final) == (FrameType.RR, 0, True)
    client.receive_data(from_server(control_s(FrameType.RR, 1, True)), 7.0)
    nxt = decode_frame(client.data_to_send())
    assert (nxt.kind, nxt.send_sequence, nxt.segmented) == (FrameType.I, 1, True)


def test_server_inactivity_timeout() -> None:
    server = connected_server(inactivity_timeout=30.0)
    assert server.next_deadline() == 30.0
    server.receive_data(from_client(control_s(FrameType.RR, 0, True)), 20.0)
    assert server.next_deadline() == 50.0
    (event,) = server.handle_timeout(50.0)
    assert isinstance(event, Disconnected)
    assert server.state is LinkState.DISCONNECTED
    assert server.next_deadline() is None


def test_inter_frame_timeout_drops_a_partial_frame() -> None:
    client = connected_client(inter_frame_timeout=0.5)
    client.send_apdu(AARQ, 0.0)
    answer = from_server(control_i(0, 1, True), LLC_RESPONSE + AARE)
    assert client.receive_data(answer[:10], 1.0) == []
    assert client.next_deadline() == 1.5
    (dropped,) = client.handle_timeout(1.5)
    assert isinstance(dropped, FrameDropped)
    assert "inter-frame" in dropped.reason
    assert client.receive_data(answer, 2.0) == [ApduReceived(AARE)]


# -- refusals, rejects and violations --------------------------------------------------------


def test_dm_to_snrm_is_a_refusal() -> None:
    client = client_link()
    client.connect(0.0)
    (event,) = client.receive_data(from_server(0x1F), 0.0)
    assert isinstance(event, Disconnected)
    assert "DM" in event.reason
    assert client.state is LinkState.DISCONNECTED


def test_frmr_disconnects_the_client() -> None:
    client = connected_client()
    client.send_apdu(AARQ, 0.0)
    (event,) = client.receive_data(from_server(0x97, bytes((0x10, 0x00, 0x08))), 0.0)
    assert event == Disconnected("the server rejected a frame (FRMR 100008)")
    assert client.next_deadline() is None
    client.disconnect(1.0)  # the clean way out
    assert client.receive_data(from_server(0x1F), 1.0) == [Disconnected("released (DM)")]


def test_server_in_ndm_answers_dm_and_disc_with_dm() -> None:
    server = server_link()
    assert server.receive_data(from_client(control_i(0, 0, True), LLC_COMMAND + AARQ), 0.0) == []
    assert decode_frame(server.data_to_send()).kind is FrameType.DM
    server.receive_data(from_client(0x53), 0.0)
    assert decode_frame(server.data_to_send()).kind is FrameType.DM
    assert server.state is LinkState.DISCONNECTED


@pytest.mark.parametrize(
    ("frame", "counters", "flags", "error"),
    [
        (from_client(control_i(0, 3, True), LLC_COMMAND + AARQ), 0x00, 0x08, "N\\(R\\)=3"),
        (from_client(control_i(0, 0, True), b"x" * 129), 0x00, 0x04, "more than the negotiated"),
        # The frame was in sequence (V(R) moved to 1); its content was wrong.
        (from_client(control_i(0, 0, True), LLC_RESPONSE + AARQ), 0x20, 0x00, "LLC header"),
        (from_client(0x73), 0x00, 0x01, "UA frame not allowed"),
    ],
    ids=["bad-nr", "too-long", "bad-llc", "ua-to-server"],
)
def test_server_answers_a_violation_with_frmr(
    frame: bytes, counters: int, flags: int, error: str
) -> None:
    server = connected_server()
    with pytest.raises(RemoteProtocolError, match=error):
        server.receive_data(frame, 0.0)
    assert server.state is LinkState.FAILED
    frmr = decode_frame(server.data_to_send())
    if decode_frame(frame).poll_final:
        assert frmr.kind is FrameType.FRMR
        # ISO/IEC 13239 §5.5.3.4.2: rejected control, V(S) and V(R), W X Y Z
        assert frmr.info == bytes((decode_frame(frame).control, counters, flags))
    # In the FRMR condition, polls get the FRMR again; SNRM starts afresh.
    server.receive_data(from_client(control_s(FrameType.RR, 0, True)), 0.0)
    assert decode_frame(server.data_to_send()).kind is FrameType.FRMR
    (event,) = server.receive_data(from_client(0x93), 0.0)
    assert isinstance(event, Connected)
    assert server.state is LinkState.CONNECTED


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        (from_server(0x93), "SNRM frame not allowed to a client"),
        (from_server(control_i(0, 5, True), LLC_RESPONSE + AARE), "N\\(R\\)=5"),
        (from_server(control_i(0, 1, True), LLC_COMMAND + AARE), "LLC header"),
    ],
)
def test_client_fails_on_a_violation_and_may_reconnect(frame: bytes, error: str) -> None:
    client = connected_client()
    client.send_apdu(AARQ, 0.0)
    with pytest.raises(RemoteProtocolError, match=error):
        client.receive_data(frame, 0.0)
    assert client.state is LinkState.FAILED
    assert client.next_deadline() is None
    assert client.receive_data(from_server(0x73), 1.0) == [
        FrameDropped("late UA frame in state failed")
    ]
    with pytest.raises(LocalProtocolError):
        client.send_apdu(AARQ, 1.0)
    assert decode_frame(client.connect(1.0)).kind is FrameType.SNRM


def test_bad_ua_parameters_fail_the_client() -> None:
    client = client_link()
    client.connect(0.0)
    with pytest.raises(RemoteProtocolError, match="HDLC parameters"):
        client.receive_data(from_server(0x73, b"\x81\x80\x03\x05\x01\x10"), 0.0)
    assert client.state is LinkState.FAILED


def test_damaged_and_foreign_frames_are_dropped_with_a_reason() -> None:
    client = connected_client()
    client.send_apdu(AARQ, 0.0)
    good = from_server(control_i(0, 1, True), LLC_RESPONSE + AARE)
    damaged = good[:-3] + bytes((good[-3] ^ 1,)) + good[-2:]
    other_meter = HdlcFrame(CLIENT, HdlcAddress.server(1, 18), control_i(0, 1, True), b"x").encode()
    other_client = HdlcFrame(HdlcAddress.client(1), SERVER, control_i(0, 1, True), b"x").encode()
    events = client.receive_data(damaged + other_meter + other_client + good, 0.0)
    assert [type(e) for e in events] == [FrameDropped] * 3 + [ApduReceived]
    assert "FCS" in events[0].reason  # type: ignore[union-attr]


def test_duplicate_i_frame_is_dropped_and_answered() -> None:
    server = connected_server()
    request = from_client(control_i(0, 0, True), LLC_COMMAND + AARQ)
    assert server.receive_data(request, 0.0) == [ApduReceived(AARQ)]
    answer = server.send_apdu(AARE, 0.0)
    (dropped,) = server.receive_data(request, 1.0)  # our answer was lost: the client repeats
    assert isinstance(dropped, FrameDropped)
    assert server.data_to_send() == answer


def test_reassembled_apdu_is_capped() -> None:
    client = connected_client(max_apdu_size=200)
    client.send_apdu(AARQ, 0.0)
    first = from_server(control_i(0, 1, True), LLC_RESPONSE + BIG[:125], segmented=True)
    client.receive_data(first, 0.0)
    client.data_to_send()
    with pytest.raises(RemoteProtocolError, match="APDU longer than 200"):
        client.receive_data(from_server(control_i(1, 1, True), BIG[:128], segmented=True), 0.0)


def test_link_buffer_overflow_is_reported() -> None:
    client = connected_client(max_buffer=3000)
    long_frame = from_server(control_i(0, 0, True), bytes(2000))
    assert client.receive_data(long_frame[:100], 0.0) == []  # its header is valid: it waits
    (event,) = client.receive_data(bytes(2950), 0.0)
    assert isinstance(event, FrameDropped)
    assert "buffered at most" in event.reason


def test_server_with_a_fixed_client_ignores_others() -> None:
    server = HdlcLink(role="server", local=SERVER, remote=CLIENT)
    intruder = HdlcFrame(SERVER, HdlcAddress.client(1), 0x93).encode()
    (event,) = server.receive_data(intruder, 0.0)
    assert isinstance(event, FrameDropped)
    assert server.data_to_send() == b""


def test_server_answers_the_client_that_connected() -> None:
    server = server_link()
    management = HdlcAddress.client(1)
    server.receive_data(HdlcFrame(SERVER, management, 0x93).encode(), 0.0)
    assert decode_frame(server.data_to_send()).destination == management
    (event,) = server.receive_data(from_client(control_s(FrameType.RR, 0, True)), 0.0)
    assert isinstance(event, FrameDropped)  # the public client is not the one connected


def test_ui_frames_are_passed_up() -> None:
    client = client_link()
    notification = LLC_RESPONSE + b"\x0f\x00\x00\x00\x01\x00\x09\x02\x12\x34"
    assert client.receive_data(from_server(0x13, notification), 0.0) == [
        UnnumberedInformation(notification)
    ]


# -- local errors ----------------------------------------------------------------------------


def test_local_misuse() -> None:
    client = client_link()
    with pytest.raises(LocalProtocolError, match="cannot send_apdu"):
        client.send_apdu(AARQ, 0.0)
    client.connect(0.0)
    with pytest.raises(LocalProtocolError, match="cannot connect"):
        client.connect(0.0)
    client.receive_data(from_server(0x73), 0.0)
    with pytest.raises(LocalProtocolError, match="at least one byte"):
        client.send_apdu(b"", 0.0)
    client.send_apdu(AARQ, 0.0)
    with pytest.raises(LocalProtocolError, match="busy"):
        client.send_apdu(AARQ, 0.0)
    server = server_link()
    for call in (server.connect, server.disconnect):
        with pytest.raises(LocalProtocolError):
            call(0.0)
    with pytest.raises(LocalProtocolError):
        HdlcLink(role="client", local=CLIENT, remote=None)
    with pytest.raises(LocalProtocolError):
        HdlcLink(role="client", local=SERVER, remote=CLIENT)


def test_server_answer_waits_for_a_poll() -> None:
    server = connected_server()
    events = server.receive_data(from_client(control_i(0, 0, False), LLC_COMMAND + AARQ), 0.0)
    assert events == [ApduReceived(AARQ)]
    assert server.send_apdu(AARE, 0.0) == b""  # not polled yet
    with pytest.raises(LocalProtocolError, match="not delivered"):
        server.send_apdu(AARE, 0.0)
    server.receive_data(from_client(control_s(FrameType.RR, 0, True)), 0.0)
    answer = decode_frame(server.data_to_send())
    assert (answer.kind, answer.poll_final, answer.info) == (FrameType.I, True, LLC_RESPONSE + AARE)


# -- (state x input) -------------------------------------------------------------------------


@st.composite
def peer_frames(draw: st.DrawFn, role: Role) -> bytes:
    kind = draw(st.sampled_from(list(FrameType)))
    pf = draw(st.booleans())
    if kind is FrameType.I:
        control = control_i(draw(st.integers(0, 7)), draw(st.integers(0, 7)), pf)
    elif kind in (FrameType.RR, FrameType.RNR):
        control = control_s(kind, draw(st.integers(0, 7)), pf)
    else:
        control = control_u(kind, pf)
    info = b""
    if kind is FrameType.I:
        llc = LLC_RESPONSE if role is Role.CLIENT else LLC_COMMAND
        info = draw(st.one_of(st.binary(max_size=140), st.binary(max_size=60).map(llc.__add__)))
    elif kind in (FrameType.SNRM, FrameType.UA):
        info = draw(st.one_of(st.just(b""), st.binary(max_size=12)))
    elif kind in (FrameType.UI, FrameType.FRMR):
        info = draw(st.binary(max_size=5))
    segmented = kind is FrameType.I and draw(st.booleans())
    ends = (CLIENT, SERVER) if role is Role.CLIENT else (SERVER, CLIENT)
    if draw(st.integers(0, 9)) == 0:  # now and then, a frame for someone else
        ends = (HdlcAddress.server(2, 17), ends[1]) if role is Role.SERVER else (ends[0], SERVER)
        if role is Role.CLIENT:
            ends = (HdlcAddress.client(1), SERVER)
    return HdlcFrame(*ends, control, info, segmented).encode()


def steps(role: Role) -> st.SearchStrategy[tuple[str, object]]:
    return st.one_of(
        st.sampled_from([("connect", None), ("disconnect", None)]),
        st.tuples(st.just("send"), st.binary(max_size=300)),
        st.tuples(st.just("wait"), st.floats(0.0, 200.0)),
        st.tuples(st.just("frame"), peer_frames(role)),
        st.tuples(st.just("bytes"), st.binary(max_size=30)),
    )


@pytest.mark.parametrize("role", list(Role))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_state_x_input(role: Role, data: st.DataObject) -> None:
    link = (client_link if role is Role.CLIENT else server_link)(max_retries=2)
    now = 0.0
    for _ in range(data.draw(st.integers(1, 25))):
        step, arg = data.draw(steps(role))
        before = link.state
        action: Action | FrameType | None = None
        try:
            if step == "connect":
                action = Action.CONNECT
                link.connect(now)
            elif step == "disconnect":
                action = Action.DISCONNECT
                link.disconnect(now)
            elif step == "send":
                action = Action.SEND_APDU
                assert isinstance(arg, bytes)
                link.send_apdu(arg, now)
            elif step == "wait":
                assert isinstance(arg, float)
                now += arg
                action = Action.TIMEOUT
                link.handle_timeout(now)
            else:
                assert isinstance(arg, bytes)
                if step == "frame":
                    frame = decode_frame(arg)
                    if frame.destination == link.local:
                        action = frame.kind
                link.receive_data(arg, now)
        except LocalProtocolError:
            assert step in ("connect", "disconnect", "send")
            assert link.state is before
        except RemoteProtocolError:
            assert step in ("frame", "bytes")
            assert link.state is LinkState.FAILED
        else:
            if link.state is not before:
                assert action is not None
                assert link.state in TRANSITIONS[role, before, action]
            elif action in (Action.CONNECT, Action.DISCONNECT, Action.SEND_APDU):
                assert (role, before, action) in TRANSITIONS
        # Whatever happened, what the link sends is well-formed and next_deadline answers.
        for frame in frames_in(link.data_to_send()):
            assert frame.source == link.local
        deadline = link.next_deadline()
        assert deadline is None or deadline >= 0


def test_table_covers_every_timeout_and_state() -> None:
    for role in Role:
        for state in LinkState:
            if role is Role.SERVER and state in (LinkState.CONNECTING, LinkState.DISCONNECTING):
                continue  # a server never initiates
            assert (role, state, Action.TIMEOUT) in TRANSITIONS
