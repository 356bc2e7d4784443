"""ClientConnection: association, requests, blocks, notifications, ciphering, timeouts.

The server side is scripted here from our own encoders (the simulator's server comes later); the
client's bytes are compared with gurux-dlms's for the same request.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateResponse,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    decode_acse,
    decode_initiate_request,
)
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.connection import (
    ActionCompleted,
    Associated,
    AssociationParameters,
    AssociationRefused,
    ClientConnection,
    GetCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
    State,
    TimedOut,
)
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext
from protocols.errors import LocalProtocolError, RemoteProtocolError

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
SERVER_TITLE = bytes.fromhex("4953430000000001")
ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
CLOCK = x.AttributeDescriptor(8, ObisCode.parse("0.0.1.0.0.255"), 2)
METER_AARE = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000501f01f40007"
)


def iip(invoke_id: int) -> x.InvokeIdAndPriority:
    return x.InvokeIdAndPriority(invoke_id)


def associated(max_pdu: int = 500, conformance: int = 0x00501F) -> ClientConnection:
    conn = ClientConnection(AssociationParameters())
    conn.associate(now=0.0)
    (aarq,) = conn.data_to_send()
    assert isinstance(decode_acse(aarq), Aarq)
    aare = Aare(
        False,
        AssociationResult.ACCEPTED,
        1,
        0,
        InitiateResponse(Conformance(conformance), max_pdu).encode(),
    )
    events = conn.receive_apdu(aare.encode(), now=0.1)
    assert events == [Associated(Conformance(conformance), max_pdu, None)]
    return conn


def test_associate_with_a_meter_aare() -> None:
    conn = ClientConnection(AssociationParameters())
    conn.associate(now=0.0)
    assert conn.next_deadline() == 10.0
    aarq = decode_acse(conn.data_to_send()[0])
    assert isinstance(aarq, Aarq)
    assert (
        decode_initiate_request(aarq.user_information).conformance == Conformance.client_default()
    )
    [event] = conn.receive_apdu(METER_AARE, now=0.5)
    assert isinstance(event, Associated)
    assert event.server_max_pdu_size == 500
    assert conn.state == State.READY
    assert conn.next_deadline() is None


def test_get_request_is_what_gurux_sends_and_response_is_decoded() -> None:
    conn = associated()
    request_id = conn.get(ENERGY, now=1.0)
    # gurux-dlms 1.0.203 GXDLMSClient.read(GXDLMSRegister("1.0.1.8.0.255"), 2), WRAPPER removed
    assert conn.data_to_send() == [bytes.fromhex("c001c100030100010800ff0200")]
    response = x.GetResponseNormal(iip(1), Typed(Tag.DOUBLE_LONG_UNSIGNED, 123456)).encode()
    assert conn.receive_apdu(response, now=1.1) == [GetCompleted(request_id, (123456,))]
    assert conn.state == State.READY


def test_refused_read_is_a_result_not_an_error() -> None:
    conn = associated()
    request_id = conn.get(ENERGY, now=1.0)
    conn.data_to_send()
    response = x.GetResponseNormal(iip(1), x.DataAccessResult.OBJECT_UNDEFINED).encode()
    [event] = conn.receive_apdu(response, now=1.1)
    assert event == GetCompleted(request_id, (x.DataAccessResult.OBJECT_UNDEFINED,))


def test_one_request_at_a_time() -> None:
    conn = associated()
    conn.get(ENERGY, now=1.0)
    with pytest.raises(LocalProtocolError, match="cannot request in state waiting"):
        conn.get(CLOCK, now=1.0)


def test_wrong_invoke_id_is_refused() -> None:
    conn = associated()
    conn.get(ENERGY, now=1.0)
    with pytest.raises(RemoteProtocolError, match="invoke-id 5, expected 1"):
        conn.receive_apdu(x.GetResponseNormal(iip(5), None).encode(), now=1.1)


def test_response_without_request_is_refused() -> None:
    conn = associated()
    with pytest.raises(RemoteProtocolError, match="no request outstanding"):
        conn.receive_apdu(x.GetResponseNormal(iip(1), None).encode(), now=1.1)


def test_long_get_in_blocks() -> None:
    conn = associated()
    rows = [
        (
            b"\x07\xea\x0b\x17\x01\x00" + bytes([i]) + b"\x00\x00\x80\x00\x00",
            Typed(Tag.DOUBLE_LONG_UNSIGNED, i * 10),
        )
        for i in range(50)
    ]
    raw = axdr.encode(rows)
    blocks = [raw[i : i + 200] for i in range(0, len(raw), 200)]
    request_id = conn.get(x.AttributeDescriptor(7, ObisCode.parse("1.0.99.1.0.255"), 2), now=1.0)
    conn.data_to_send()
    for number, block in enumerate(blocks, start=1):
        last = number == len(blocks)
        events = conn.receive_apdu(
            x.GetResponseWithDatablock(iip(1), last, number, block).encode(), now=1.0 + number
        )
        if last:
            [event] = events
            assert isinstance(event, GetCompleted)
            assert event.result == [(stamp, value.value) for stamp, value in rows]
        else:
            assert events == []
            assert conn.data_to_send() == [x.GetRequestNext(iip(1), number).encode()]
    assert conn.state == State.READY
    assert request_id == 1


def test_block_out_of_order_is_refused() -> None:
    conn = associated()
    conn.get(ENERGY, now=1.0)
    conn.data_to_send()
    conn.receive_apdu(x.GetResponseWithDatablock(iip(1), False, 1, b"\x01\x02").encode(), now=1)
    with pytest.raises(RemoteProtocolError, match="GET block 3 where block 2 was due"):
        conn.receive_apdu(x.GetResponseWithDatablock(iip(1), True, 3, b"\x00").encode(), now=1)


def test_notification_mid_request_is_delivered_and_request_goes_on() -> None:
    conn = associated()
    request_id = conn.get(ENERGY, now=1.0)
    push = x.DataNotification(7, None, (b"MTR-1", Typed(Tag.LONG_UNSIGNED, 230)))
    assert conn.receive_apdu(push.encode(), now=1.1) == [
        NotificationReceived(x.DataNotification(7, None, (b"MTR-1", 230)))
    ]
    assert conn.state == State.WAITING
    response = x.GetResponseNormal(iip(1), Typed(Tag.LONG_UNSIGNED, 5)).encode()
    assert conn.receive_apdu(response, now=1.2) == [GetCompleted(request_id, (5,))]


def test_set_small_and_in_blocks() -> None:
    conn = associated(max_pdu=64, conformance=0x00781F)  # with block transfer for SET
    request_id = conn.set(CLOCK, b"\x07\xea\x0b\x17\x01\x0a\x00\x00\x00\x80\x00\x00", now=1)
    [apdu] = conn.data_to_send()
    assert x.decode_apdu(apdu) == x.SetRequestNormal(
        iip(1), CLOCK, b"\x07\xea\x0b\x17\x01\x0a\x00\x00\x00\x80\x00\x00"
    )
    assert conn.receive_apdu(
        x.SetResponseNormal(iip(1), x.DataAccessResult.SUCCESS).encode(), now=1.1
    ) == [SetCompleted(request_id, x.DataAccessResult.SUCCESS)]

    big = bytes(range(200))
    request_id = conn.set(ENERGY, big, now=2)
    sent = bytearray()
    first = x.decode_apdu(conn.data_to_send()[0])
    assert isinstance(first, x.SetRequestWithFirstDatablock)
    assert not first.last_block
    sent += first.raw_data
    number = 1
    while True:
        events = conn.receive_apdu(x.SetResponseDatablock(iip(2), number).encode(), now=2)
        assert events == []
        block = x.decode_apdu(conn.data_to_send()[0])
        assert isinstance(block, x.SetRequestWithDatablock)
        number += 1
        assert block.block_number == number
        sent += block.raw_data
        if block.last_block:
            break
    assert axdr.decode_all(bytes(sent)) == big
    done = x.SetResponseLastDatablock(iip(2), x.DataAccessResult.SUCCESS, number).encode()
    assert conn.receive_apdu(done, now=3) == [SetCompleted(request_id, x.DataAccessResult.SUCCESS)]


def test_action_and_exception() -> None:
    conn = associated()
    disconnect = x.MethodDescriptor(70, ObisCode.parse("0.0.96.3.10.255"), 1)
    request_id = conn.action(disconnect, now=1, parameters=Typed(Tag.INTEGER, 0))
    assert x.decode_apdu(conn.data_to_send()[0]) == x.ActionRequest(iip(1), disconnect, 0, True)
    response = x.ActionResponse(iip(1), x.ActionResult.SUCCESS).encode()
    assert conn.receive_apdu(response, now=1.1) == [
        ActionCompleted(request_id, x.ActionResult.SUCCESS, None)
    ]
    request_id = conn.get(ENERGY, now=2)
    [event] = conn.receive_apdu(x.ExceptionResponse(1, 2).encode(), now=2.1)
    assert event == RequestFailed(request_id, "service-not-allowed/service-not-supported")
    assert conn.state == State.READY


def test_refused_association() -> None:
    conn = ClientConnection(AssociationParameters(mechanism=Mechanism.LLS, password=b"wrong"))
    conn.associate(now=0)
    aarq = decode_acse(conn.data_to_send()[0])
    assert isinstance(aarq, Aarq)
    assert aarq.authentication_value == b"wrong"
    refusal = Aare(False, AssociationResult.REJECTED_PERMANENT, 1, 13, None)
    assert conn.receive_apdu(refusal.encode(), now=0.1) == [
        AssociationRefused(
            "association rejected_permanent: acse-service-user: authentication-failure"
        )
    ]
    assert conn.state == State.CLOSED


def test_timeout_closes() -> None:
    conn = associated()
    conn.get(ENERGY, now=1.0)
    assert conn.next_deadline() == 11.0
    assert conn.handle_timeout(5.0) == []
    assert conn.handle_timeout(11.0) == [TimedOut("get request 1")]
    assert conn.state == State.CLOSED
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.receive_apdu(b"\xc4", now=12)


def test_release() -> None:
    conn = associated()
    conn.release(now=1)
    assert conn.data_to_send() == [ReleaseRequest(0).encode()]
    assert conn.receive_apdu(ReleaseResponse(0).encode(), now=1.1) == [Released()]
    assert conn.state == State.CLOSED


# -- ciphered, HLS-GMAC -------------------------------------------------------------------------


def server_security() -> SecurityContext:
    """The meter's side: the same suite-0 context with the titles swapped."""
    return SecurityContext(
        system_title=SERVER_TITLE, ek=EK, ak=AK, server_system_title=CLIENT_TITLE
    )


def hls_associated() -> tuple[ClientConnection, SecurityContext]:
    client_sec = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK)
    conn = ClientConnection(
        AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True), client_sec
    )
    conn.grant_invocation_counters(100, 50)
    meter = server_security()
    conn.associate(now=0)
    aarq = decode_acse(conn.data_to_send()[0])
    assert isinstance(aarq, Aarq)
    assert aarq.calling_ap_title == CLIENT_TITLE
    ctos = aarq.authentication_value
    assert ctos is not None
    assert decode_initiate_request(meter.unprotect(aarq.user_information)).max_receive_pdu_size
    stoc = b"S" * 16
    initiate = meter.protect(InitiateResponse(Conformance(0x00501F), 1024).encode(), 1)
    aare = Aare(
        True, AssociationResult.ACCEPTED, 1, 14, initiate, SERVER_TITLE, Mechanism.HLS_GMAC, stoc
    )
    assert conn.receive_apdu(aare.encode(), now=0.1) == []
    assert conn.state == State.AUTHENTICATING
    pass3 = x.decode_apdu(meter.unprotect(conn.data_to_send()[0]))
    assert isinstance(pass3, x.ActionRequest)
    assert pass3.method == x.MethodDescriptor(15, ObisCode.parse("0.0.40.0.0.255"), 1)
    assert isinstance(pass3.parameters, bytes)
    # the meter checks f(StoC) with the client's counter, answers f(CtoS)
    ic = meter.verify_gmac(stoc, pass3.parameters, nested=True)
    assert ic >= 100
    reply = x.ActionResponse(pass3.invoke, x.ActionResult.SUCCESS, meter.gmac(ctos, 2), True)
    events = conn.receive_apdu(meter.protect(reply.encode(), 3), now=0.2)
    assert events == [Associated(Conformance(0x00501F), 1024, SERVER_TITLE)]
    return conn, meter


def test_hls_gmac_ciphered_get() -> None:
    conn, meter = hls_associated()
    request_id = conn.get(ENERGY, now=1)
    request = x.decode_apdu(meter.unprotect(conn.data_to_send()[0]))
    assert isinstance(request, x.GetRequestNormal)
    response = x.GetResponseNormal(request.invoke, Typed(Tag.DOUBLE_LONG_UNSIGNED, 42)).encode()
    assert conn.receive_apdu(meter.protect(response, 4), now=1.1) == [
        GetCompleted(request_id, (42,))
    ]
    assert conn.invocation_counters_left == 50 - 4  # AARQ, f(StoC), pass 3, GET


def test_ciphered_association_refuses_plaintext_and_bad_tags() -> None:
    conn, meter = hls_associated()
    conn.get(ENERGY, now=1)
    request = x.decode_apdu(meter.unprotect(conn.data_to_send()[0]))
    assert isinstance(request, x.GetRequestNormal)
    plain = x.GetResponseNormal(request.invoke, Typed(Tag.LONG_UNSIGNED, 1)).encode()
    with pytest.raises(RemoteProtocolError, match="unciphered APDU"):
        conn.receive_apdu(plain, now=1.1)
    tampered = bytearray(meter.protect(plain, 5))
    tampered[-14] ^= 0x01
    with pytest.raises(RemoteProtocolError):
        conn.receive_apdu(bytes(tampered), now=1.1)
    replayed = meter.protect(plain, 6)
    assert conn.receive_apdu(replayed, now=1.2) == [GetCompleted(1, (1,))]
    conn.get(ENERGY, now=2)
    conn.data_to_send()
    with pytest.raises(RemoteProtocolError, match="not above last accepted"):
        conn.receive_apdu(replayed, now=2.1)


def test_hls_with_wrong_server_proof_is_refused() -> None:
    client_sec = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK)
    conn = ClientConnection(
        AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True), client_sec
    )
    conn.grant_invocation_counters(1, 10)
    meter = server_security()
    conn.associate(now=0)
    conn.data_to_send()
    initiate = meter.protect(InitiateResponse(Conformance(0x00501F), 1024).encode(), 1)
    conn.receive_apdu(
        Aare(
            True,
            AssociationResult.ACCEPTED,
            1,
            14,
            initiate,
            SERVER_TITLE,
            Mechanism.HLS_GMAC,
            b"S" * 16,
        ).encode(),
        now=0.1,
    )
    pass3 = x.decode_apdu(meter.unprotect(conn.data_to_send()[0]))
    assert isinstance(pass3, x.ActionRequest)
    forged = meter.gmac(b"not the client's challenge", 2)
    reply = x.ActionResponse(pass3.invoke, x.ActionResult.SUCCESS, forged, True)
    with pytest.raises(RemoteProtocolError):
        conn.receive_apdu(meter.protect(reply.encode(), 3), now=0.2)


def test_counters_must_be_granted() -> None:
    conn = ClientConnection(
        AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True),
        SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK),
    )
    with pytest.raises(LocalProtocolError, match="no invocation counters left"):
        conn.associate(now=0)


def test_parameters_are_validated() -> None:
    with pytest.raises(LocalProtocolError, match="LLS needs a password"):
        AssociationParameters(mechanism=Mechanism.LLS)
    with pytest.raises(LocalProtocolError, match="need a SecurityContext"):
        ClientConnection(AssociationParameters(mechanism=Mechanism.HLS_GMAC))


# -- (state x input) ------------------------------------------------------------------------------

SERVER_APDUS = [
    METER_AARE,
    Aare(False, AssociationResult.REJECTED_PERMANENT, 1, 13, None).encode(),
    x.GetResponseNormal(iip(1), Typed(Tag.LONG_UNSIGNED, 1)).encode(),
    x.GetResponseNormal(iip(2), x.DataAccessResult.OBJECT_UNDEFINED).encode(),
    x.GetResponseWithDatablock(iip(1), False, 1, b"\x12\x00").encode(),
    x.GetResponseWithDatablock(iip(1), True, 2, b"\x01").encode(),
    x.SetResponseNormal(iip(1), x.DataAccessResult.SUCCESS).encode(),
    x.ActionResponse(iip(1), x.ActionResult.SUCCESS).encode(),
    x.ExceptionResponse(1, 1).encode(),
    x.DataNotification(1, None, b"push").encode(),
    ReleaseResponse(0).encode(),
    b"\xc4\x01",
    b"\x00",
]


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["associate", "get", "set", "action", "release", "timeout"]),
            st.sampled_from(SERVER_APDUS),
            st.binary(max_size=12),
        ),
        max_size=25,
    )
)
def test_any_sequence_ends_in_a_state_or_a_protocol_error(steps: list[object]) -> None:
    conn = ClientConnection(AssociationParameters())
    now = 0.0
    for step in steps:
        now += 1.0
        try:
            if step == "associate":
                conn.associate(now)
            elif step == "get":
                conn.get(ENERGY, now)
            elif step == "set":
                conn.set(CLOCK, b"\x00", now)
            elif step == "action":
                conn.action(x.MethodDescriptor(70, ObisCode.parse("0.0.96.3.10.255"), 1), now)
            elif step == "release":
                conn.release(now)
            elif step == "timeout":
                conn.handle_timeout(now + 100)
            else:
                assert isinstance(step, bytes)
                conn.receive_apdu(step, now)
        except (LocalProtocolError, RemoteProtocolError):
            pass
        assert conn.state in State
        for apdu in conn.data_to_send():
            assert isinstance(apdu, bytes)
            assert apdu
        if conn.state in (State.IDLE, State.READY, State.CLOSED):
            assert conn.next_deadline() is None
        else:
            assert conn.next_deadline() is not None


def test_get_with_list_in_datablocks() -> None:
    conn = associated(conformance=0x00521F)  # with multiple references
    request_id = conn.get_many([(ENERGY, None), (CLOCK, None)], now=1)
    conn.data_to_send()
    raw = b"\x02" + b"\x00" + axdr.encode(Typed(Tag.LONG_UNSIGNED, 7)) + b"\x01\x04"
    conn.receive_apdu(x.GetResponseWithDatablock(iip(1), False, 1, raw[:3]).encode(), now=1)
    assert conn.data_to_send() == [x.GetRequestNext(iip(1), 1).encode()]
    [event] = conn.receive_apdu(
        x.GetResponseWithDatablock(iip(1), True, 2, raw[3:]).encode(), now=1
    )
    assert event == GetCompleted(request_id, (7, x.DataAccessResult.OBJECT_UNDEFINED))


def test_unciphered_exception_on_a_ciphered_association_fails_the_request() -> None:
    conn, _meter = hls_associated()
    request_id = conn.get(ENERGY, now=1)
    conn.data_to_send()
    [event] = conn.receive_apdu(x.ExceptionResponse(1, 6, 500).encode(), now=1.1)
    assert event == RequestFailed(
        request_id,
        "service-not-allowed/invocation-counter-error (server expects invocation counter 500)",
    )
