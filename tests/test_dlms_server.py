"""ServerConnection: our ClientConnection and gurux-dlms's client against it, in memory.

Every association kind of an IS 15959 meter (public without security, reader with LLS, utility
with HLS-GMAC and ciphering, and HLS-GMAC on a plain context), the exact AARE of each refusal,
GET small, long and with list, SET small and long, ACTION, notifications, ciphering errors,
release, timeouts; then gurux's client (WRAPPER) against the same server; then hypothesis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateRequest,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    decode_acse,
    decode_initiate_response,
)
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.connection import (
    ActionCompleted,
    Associated,
    AssociationParameters,
    ClientConnection,
    GetCompleted,
    NotificationReceived,
    Released,
    RequestFailed,
    SetCompleted,
)
from protocols.dlms.connection import AssociationRefused as ClientRefused
from protocols.dlms.connection import Event as ClientEvent
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext
from protocols.dlms.server import (
    AssociationAccepted,
    AssociationLost,
    AssociationRefused,
    Authenticated,
    Event,
    RequestRejected,
    RequestServed,
    ServerAssociation,
    ServerConnection,
    State,
)
from protocols.dlms.server import Released as ServerReleased
from protocols.dlms.wrapper import encode_wrapper
from protocols.errors import LocalProtocolError, RemoteProtocolError

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
METER_TITLE = bytes.fromhex("4953430000000001")
C = Conformance

ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
SCALER = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 3)
CLOCK = x.AttributeDescriptor(8, ObisCode.parse("0.0.1.0.0.255"), 2)
PROFILE = x.AttributeDescriptor(7, ObisCode.parse("1.0.99.1.0.255"), 2)
DISCONNECT = x.MethodDescriptor(70, ObisCode.parse("0.0.96.3.10.255"), 1)
ECHO = x.MethodDescriptor(1, ObisCode.parse("0.0.96.1.0.255"), 1)  # gives its parameters back
HLS_METHOD = x.MethodDescriptor(15, ObisCode.parse("0.0.40.0.0.255"), 1)


def stamp(i: int) -> bytes:
    """Quarter-hour ``i`` of 1 Jan 2026, IST (deviation -330)."""
    return DateTime(2026, 1, 1, None, i // 4, i % 4 * 15, 0, 0, -330, 0).to_octets()


ROWS = [(stamp(i), Typed(Tag.DOUBLE_LONG_UNSIGNED, 1000 + i)) for i in range(96)]


def _when(octets: bytes) -> bytes:
    return octets[0:4] + octets[5:7]  # year, month, day, hour, minute (not weekday, deviation)


class DictModel:
    """The meter's objects: a dict of values, a 96-row load profile and two methods."""

    def __init__(self) -> None:
        self.values: dict[x.AttributeDescriptor, Value] = {
            ENERGY: Typed(Tag.DOUBLE_LONG_UNSIGNED, 123456),
            SCALER: (Typed(Tag.INTEGER, 0), Typed(Tag.ENUM, 30)),
            CLOCK: stamp(0),
        }
        self.calls: list[tuple[str, x.MethodDescriptor, Value | None]] = []

    def get(
        self,
        association: str,
        attribute: x.AttributeDescriptor,
        access: x.AccessSelection | None,
        now: float,
    ) -> Value | x.DataAccessResult:
        if attribute == PROFILE:
            rows = ROWS
            if access is not None and access.selector == 1:  # by range of the clock column
                params = access.parameters
                assert isinstance(params, tuple)
                start, end = params[1], params[2]
                assert isinstance(start, bytes)
                assert isinstance(end, bytes)
                rows = [r for r in ROWS if _when(start) <= _when(r[0]) <= _when(end)]
            elif access is not None:
                return x.DataAccessResult.OBJECT_UNAVAILABLE
            return list(rows)
        return self.values.get(attribute, x.DataAccessResult.OBJECT_UNDEFINED)

    def set(
        self, association: str, attribute: x.AttributeDescriptor, value: Value, now: float
    ) -> x.DataAccessResult:
        if association == "public":
            return x.DataAccessResult.READ_WRITE_DENIED
        self.values[attribute] = value
        return x.DataAccessResult.SUCCESS

    def action(
        self, association: str, method: x.MethodDescriptor, parameters: Value | None, now: float
    ) -> tuple[x.ActionResult, Value | None]:
        self.calls.append((association, method, parameters))
        if method == ECHO:
            return x.ActionResult.SUCCESS, parameters
        if method == DISCONNECT:
            return x.ActionResult.SUCCESS, None
        return x.ActionResult.OBJECT_UNDEFINED, None


PUBLIC_OFFER = C.GET | C.SELECTIVE_ACCESS | C.BLOCK_TRANSFER_WITH_GET_OR_READ
ASSOCIATIONS = {
    16: ServerAssociation("public", 16, Mechanism.NONE, conformance=PUBLIC_OFFER),
    32: ServerAssociation("reader", 32, Mechanism.LLS, password=b"12345678"),
    48: ServerAssociation("utility", 48, Mechanism.HLS_GMAC, ciphered=True, max_pdu_size=512),
    64: ServerAssociation("hls-plain", 64, Mechanism.HLS_GMAC, max_pdu_size=64),
}


def make_meter(model: DictModel | None = None, **kwargs: Any) -> ServerConnection:
    return ServerConnection(
        ASSOCIATIONS,
        model or DictModel(),
        system_title=METER_TITLE,
        keys=(EK, AK),
        invocation_counter=kwargs.pop("invocation_counter", 1000),
        **kwargs,
    )


class Link:
    """A client SAP talking to the meter: APDUs carried both ways until both are quiet."""

    def __init__(self, meter: ServerConnection, client: ClientConnection, sap: int) -> None:
        self.meter, self.client, self.sap = meter, client, sap
        self.meter_events: list[Event] = []
        self.sent: list[bytes] = []  # what the meter sent
        self.now = 0.0

    def run(self) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        while True:
            self.now += 0.01
            out = self.client.data_to_send()
            for apdu in out:
                self.meter_events += self.meter.receive_apdu(self.sap, apdu, self.now)
            back = self.meter.data_to_send()
            self.sent += back
            for apdu in back:
                events += self.client.receive_apdu(apdu, self.now)
            if not out and not back:
                return events

    def taken(self) -> list[Event]:
        events, self.meter_events = self.meter_events, []
        return events


def client_for(
    sap: int, *, key: bytes = AK, first_counter: int = 1, **parameters: Any
) -> ClientConnection:
    defaults: dict[int, dict[str, Any]] = {
        16: {},
        32: {"mechanism": Mechanism.LLS, "password": b"12345678"},
        48: {"mechanism": Mechanism.HLS_GMAC, "ciphered": True},
        64: {"mechanism": Mechanism.HLS_GMAC},
    }
    params = AssociationParameters(**{**defaults.get(sap, {}), **parameters})
    security = None
    if params.ciphered or params.mechanism == Mechanism.HLS_GMAC:
        security = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=key)
    client = ClientConnection(params, security)
    if security is not None:
        client.grant_invocation_counters(first_counter, 1000)
    return client


def associate(
    sap: int, meter: ServerConnection | None = None, **client_args: Any
) -> tuple[Link, list[ClientEvent]]:
    link = Link(meter or make_meter(), client_for(sap, **client_args), sap)
    link.client.associate(now=0.0)
    return link, link.run()


# -- associations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sap", "name", "title"),
    [(16, "public", None), (32, "reader", None), (48, "utility", METER_TITLE)],
)
def test_each_association_kind_serves_a_get(sap: int, name: str, title: bytes | None) -> None:
    link, events = associate(sap)
    [associated] = events
    assert isinstance(associated, Associated)
    assert associated.server_system_title == title
    expected: list[Event] = [AssociationAccepted(name, sap)]
    if sap == 48:
        expected.append(Authenticated(name))
    assert link.taken() == expected
    assert link.meter.state == State.ASSOCIATED
    assert link.meter.association == name
    request = link.client.get(ENERGY, now=1)
    assert link.run() == [GetCompleted(request, (123456,))]
    assert link.taken() == [RequestServed("get", ENERGY, x.DataAccessResult.SUCCESS)]


def test_negotiated_conformance_and_pdu_sizes() -> None:
    _, [event] = associate(16)
    assert isinstance(event, Associated)
    assert event.conformance == PUBLIC_OFFER & Conformance.client_default()
    assert event.server_max_pdu_size == 1024


def test_hls_gmac_on_a_plain_context() -> None:
    link, events = associate(64)
    assert [type(e) for e in events] == [Associated]
    assert link.taken() == [AssociationAccepted("hls-plain", 64), Authenticated("hls-plain")]
    assert link.meter.invocation_counter == 1001  # f(CtoS) used one, nothing is ciphered


def test_ciphered_association_uses_the_meters_counters() -> None:
    meter = make_meter(invocation_counter=7)
    link, _ = associate(48, meter)
    # InitiateResponse, f(CtoS), the ciphered pass 4
    assert meter.invocation_counter == 10
    link.client.get(ENERGY, now=1)
    link.run()
    assert meter.invocation_counter == 11
    assert link.client.security is not None
    assert link.client.security.last_server_invocation_counter == 10


def test_hls_with_the_wrong_key_fails_pass_3_and_stays_pending() -> None:
    link, events = associate(64, key=bytes(16))  # plain context: the AARQ passes, f(StoC) not
    assert events == [ClientRefused("HLS authentication refused: read_write_denied")]
    [accepted, refused] = link.taken()
    assert accepted == AssociationAccepted("hls-plain", 64)
    assert isinstance(refused, AssociationRefused)
    assert "authentication tag mismatch" in refused.reason
    assert link.meter.state == State.AUTHENTICATING
    # still pending: reads are denied, and the spent StoC refuses the right answer too
    denied = link.meter.receive_apdu(64, x.GetRequestNormal(iip(2), ENERGY).encode(), 1)
    assert denied == [RequestServed("get", ENERGY, x.DataAccessResult.READ_WRITE_DENIED)]
    [response] = link.meter.data_to_send()
    assert x.decode_apdu(response) == x.GetResponseNormal(iip(2), x.DataAccessResult(3))
    next_block = x.GetRequestNext(iip(3), 1).encode()
    [rejected] = link.meter.receive_apdu(64, next_block, 1)
    assert isinstance(rejected, RequestRejected)
    assert x.decode_apdu(link.meter.data_to_send()[0]) == x.ExceptionResponse(1, 1)


def test_ciphered_hls_with_a_wrong_f_stoc() -> None:
    meter = make_meter()
    security = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK)
    client = ClientConnection(
        AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True), security
    )
    client.grant_invocation_counters(1, 100)
    client.associate(now=0)
    meter.receive_apdu(48, client.data_to_send()[0], 0)
    assert client.receive_apdu(meter.data_to_send()[0], 0) == []
    client.data_to_send()  # the right pass 3, not sent
    wrong = security.gmac(b"not the meter's StoC", 50)
    pass3 = x.ActionRequest(iip(5), HLS_METHOD, wrong, True).encode()
    [event] = meter.receive_apdu(48, security.protect(pass3, 51), 0)
    assert isinstance(event, AssociationRefused)
    assert event.client_address == 48
    [response] = meter.data_to_send()
    assert response[0] == 0xCF  # glo-action-response
    assert x.decode_apdu(security.unprotect(response)) == x.ActionResponse(
        iip(5), x.ActionResult.READ_WRITE_DENIED
    )
    assert meter.state == State.AUTHENTICATING


def aare_of(meter: ServerConnection, sap: int, aarq: bytes) -> tuple[Aare, list[Event]]:
    events = meter.receive_apdu(sap, aarq, 0)
    [apdu] = meter.data_to_send()
    aare = decode_acse(apdu)
    assert isinstance(aare, Aare)
    return aare, events


INITIATE = InitiateRequest(Conformance.client_default(), 0xFFFF).encode()


@pytest.mark.parametrize(
    ("sap", "aarq", "diagnostic", "initiate_error"),
    [
        (17, Aarq(False, Mechanism.NONE, INITIATE), 1, None),  # unknown client SAP
        (16, Aarq(True, Mechanism.LLS, INITIATE, CLIENT_TITLE, b"x"), 2, None),  # context
        (32, Aarq(False, Mechanism.NONE, INITIATE), 12, None),  # mechanism missing
        (32, Aarq(False, Mechanism.HLS_GMAC, INITIATE, CLIENT_TITLE, b"c" * 16), 11, None),
        (32, Aarq(False, Mechanism.LLS, INITIATE, None, b"1234567"), 13, None),  # password
        (64, Aarq(False, Mechanism.HLS_GMAC, INITIATE, None, b"c" * 16), 3, None),  # no title
        (64, Aarq(False, Mechanism.HLS_GMAC, INITIATE, CLIENT_TITLE, b"c" * 7), 13, None),
        (16, Aarq(False, Mechanism.NONE, b"\x01\x00"), 1, 0),  # InitiateRequest malformed
        (
            16,
            Aarq(False, Mechanism.NONE, InitiateRequest(C.GET, 1024, dlms_version=5).encode()),
            1,
            1,  # dlms-version-too-low
        ),
        (16, Aarq(False, Mechanism.NONE, InitiateRequest(C.SET, 1024).encode()), 1, 2),
        (16, Aarq(False, Mechanism.NONE, InitiateRequest(C.GET, 11).encode()), 1, 3),
        # ciphered context: a plaintext InitiateRequest, or one under another key, is refused
        (48, Aarq(True, Mechanism.HLS_GMAC, INITIATE, CLIENT_TITLE, b"c" * 16), 1, 0),
        (
            48,
            Aarq(
                True,
                Mechanism.HLS_GMAC,
                SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=bytes(16)).protect(
                    INITIATE, 1
                ),
                CLIENT_TITLE,
                b"c" * 16,
            ),
            1,
            0,
        ),
    ],
)
def test_refusals_carry_the_green_book_diagnostics(
    sap: int, aarq: Aarq, diagnostic: int, initiate_error: int | None
) -> None:
    meter = make_meter()
    aare, [event] = aare_of(meter, sap, aarq.encode())
    assert (aare.result, aare.diagnostic_source, aare.diagnostic) == (
        AssociationResult.REJECTED_PERMANENT,
        1,
        diagnostic,
    )
    if initiate_error is None:
        assert aare.user_information is None
    else:
        assert aare.user_information == x.ConfirmedServiceError(1, 6, initiate_error).encode()
    assert isinstance(event, AssociationRefused)
    assert event.client_address == sap
    assert "1234567" not in event.reason
    assert meter.state == State.IDLE
    assert meter.association is None


def test_ciphered_pdu_size_floor_counts_the_cipher_overhead() -> None:
    for size, refused in ((30, True), (31, False)):
        _, [event] = associate(48, max_receive_pdu_size=size)
        assert isinstance(event, ClientRefused) == refused


def test_client_sees_the_refusal_reason() -> None:
    _, events = associate(32, password=b"wrong")
    assert events == [
        ClientRefused("association rejected_permanent: acse-service-user: authentication-failure")
    ]
    _, events = associate(16, max_receive_pdu_size=8)
    assert events == [
        ClientRefused(
            "association rejected_permanent: acse-service-user: no-reason-given; "
            "xDLMS service 1: initiate/pdu-size-too-short"
        )
    ]


def test_a_new_aarq_replaces_the_association() -> None:
    link, _ = associate(16)
    link.taken()
    link2 = Link(link.meter, client_for(32), 32)
    link2.client.associate(now=1)
    assert [type(e) for e in link2.run()] == [Associated]
    assert link2.taken() == [
        AssociationLost("association public replaced"),
        AssociationAccepted("reader", 32),
    ]
    assert link.meter.association == "reader"
    # the first client's SAP is no longer associated
    [event] = link.meter.receive_apdu(16, x.GetRequestNormal(iip(1), ENERGY).encode(), 2)
    assert isinstance(event, RequestRejected)


# -- GET, SET, ACTION -----------------------------------------------------------------------------


def iip(invoke_id: int) -> x.InvokeIdAndPriority:
    return x.InvokeIdAndPriority(invoke_id)


@pytest.mark.parametrize("sap", [16, 48])
def test_long_get_in_blocks(sap: int) -> None:
    link, _ = associate(sap, max_receive_pdu_size=100)
    link.taken()
    request = link.client.get(PROFILE, now=1)
    link.sent.clear()
    [event] = link.run()
    sent = link.sent
    assert event == GetCompleted(request, ([(s, v.value) for s, v in ROWS],))
    assert len(sent) > 20
    assert all(len(apdu) <= 100 for apdu in sent)
    assert link.meter.state == State.ASSOCIATED
    assert link.taken() == [RequestServed("get", PROFILE, x.DataAccessResult.SUCCESS)]


def test_long_get_block_numbers_are_checked() -> None:
    link, _ = associate(16, max_receive_pdu_size=100)
    meter = link.meter
    meter.receive_apdu(16, x.GetRequestNormal(iip(1), PROFILE).encode(), 1)
    first = x.decode_apdu(meter.data_to_send()[0])
    assert isinstance(first, x.GetResponseWithDatablock)
    assert (first.block_number, first.last_block) == (1, False)
    [event] = meter.receive_apdu(16, x.GetRequestNext(iip(1), 5).encode(), 1)
    assert isinstance(event, RequestRejected)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.GetResponseWithDatablock(
        iip(1), True, 6, x.DataAccessResult.DATA_BLOCK_NUMBER_INVALID
    )
    # the transfer ended with that
    meter.receive_apdu(16, x.GetRequestNext(iip(1), 1).encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.GetResponseWithDatablock(
        iip(1), True, 2, x.DataAccessResult.NO_LONG_GET_IN_PROGRESS
    )
    # a block number at the top of Unsigned32 does not overflow the answer
    meter.receive_apdu(16, x.GetRequestNext(iip(1), 0xFFFFFFFF).encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.GetResponseWithDatablock(
        iip(1), True, 0, x.DataAccessResult.NO_LONG_GET_IN_PROGRESS
    )


def test_long_value_without_block_transfer_is_other_reason() -> None:
    link, _ = associate(16, max_receive_pdu_size=100, conformance=C.GET)
    request = link.client.get(PROFILE, now=1)
    assert link.run() == [GetCompleted(request, (x.DataAccessResult.OTHER_REASON,))]


def test_get_with_list() -> None:
    link, _ = associate(32)
    missing = x.AttributeDescriptor(1, ObisCode.parse("0.0.96.1.9.255"), 2)
    request = link.client.get_many([(ENERGY, None), (missing, None), (SCALER, None)], now=1)
    assert link.run() == [
        GetCompleted(request, (123456, x.DataAccessResult.OBJECT_UNDEFINED, (0, 30)))
    ]
    assert [e.result for e in link.taken() if isinstance(e, RequestServed)] == [
        x.DataAccessResult.SUCCESS,
        x.DataAccessResult.OBJECT_UNDEFINED,
        x.DataAccessResult.SUCCESS,
    ]


def test_long_get_with_list_goes_in_blocks() -> None:
    link, _ = associate(32, max_receive_pdu_size=64)
    meter = link.meter
    meter.receive_apdu(32, x.GetRequestWithList(iip(2), ((PROFILE, None),) * 2).encode(), 1)
    raw = bytearray()
    block = 0
    while True:
        response = x.decode_apdu(meter.data_to_send()[0])
        assert isinstance(response, x.GetResponseWithDatablock)
        assert isinstance(response.raw_data, bytes)
        block += 1
        assert response.block_number == block
        raw += response.raw_data
        if response.last_block:
            break
        meter.receive_apdu(32, x.GetRequestNext(iip(2), block).encode(), 1)
    # the raw data is the list of Get-Data-Results: count, then choice 0 and the data each
    rows = axdr.encode(list(ROWS))
    assert bytes(raw) == b"\x02" + (b"\x00" + rows) * 2


@pytest.mark.parametrize("sap", [32, 48])
def test_set_small_and_in_blocks(sap: int) -> None:
    model = DictModel()
    meter = ServerConnection(
        {sap: ServerAssociation("writer", sap, **_kind(sap), max_pdu_size=64)},
        model,
        system_title=METER_TITLE,
        keys=(EK, AK),
    )
    link, _ = associate(sap, meter)
    link.taken()
    clock = Typed(Tag.OCTET_STRING, stamp(5))
    request = link.client.set(CLOCK, clock, now=1)
    assert link.run() == [SetCompleted(request, x.DataAccessResult.SUCCESS)]
    assert model.values[CLOCK] == clock  # typed, so GET gives it back unchanged
    big = Typed(Tag.OCTET_STRING, bytes(range(256)) * 2)
    request = link.client.set(SCALER, big, now=2)
    assert link.run() == [SetCompleted(request, x.DataAccessResult.SUCCESS)]
    assert model.values[SCALER] == big
    assert link.taken() == [
        RequestServed("set", CLOCK, x.DataAccessResult.SUCCESS),
        RequestServed("set", SCALER, x.DataAccessResult.SUCCESS),
    ]


def _kind(sap: int) -> dict[str, Any]:
    if sap == 32:
        return {"mechanism": Mechanism.LLS, "password": b"12345678"}
    return {"mechanism": Mechanism.HLS_GMAC, "ciphered": True}


def test_set_blocks_out_of_order_and_without_transfer() -> None:
    link, _ = associate(32)
    meter = link.meter
    raw = axdr.encode(bytes(100))
    first = x.SetRequestWithFirstDatablock(iip(1), SCALER, False, 1, raw[:50])
    meter.receive_apdu(32, first.encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.SetResponseDatablock(iip(1), 1)
    meter.receive_apdu(32, x.SetRequestWithDatablock(iip(1), True, 3, raw[50:]).encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.SetResponseLastDatablock(
        iip(1), x.DataAccessResult.DATA_BLOCK_NUMBER_INVALID, 3
    )
    meter.receive_apdu(32, x.SetRequestWithDatablock(iip(1), True, 2, raw[50:]).encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.SetResponseLastDatablock(
        iip(1), x.DataAccessResult.NO_LONG_SET_IN_PROGRESS, 2
    )
    # blocks that do not make one A-XDR value
    bad = x.SetRequestWithFirstDatablock(iip(2), SCALER, True, 1, b"\x09\x05ab")
    meter.receive_apdu(32, bad.encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.SetResponseLastDatablock(
        iip(2), x.DataAccessResult.OTHER_REASON, 1
    )


def test_action_with_and_without_return_value() -> None:
    model = DictModel()
    link, _ = associate(32, make_meter(model))
    request = link.client.action(DISCONNECT, now=1, parameters=Typed(Tag.INTEGER, 0))
    assert link.run() == [ActionCompleted(request, x.ActionResult.SUCCESS, None)]
    request = link.client.action(ECHO, now=1, parameters=(b"abc", Typed(Tag.UNSIGNED, 7)))
    assert link.run() == [ActionCompleted(request, x.ActionResult.SUCCESS, (b"abc", 7))]
    assert model.calls[0] == ("reader", DISCONNECT, Typed(Tag.INTEGER, 0))
    assert model.calls[1][2] == Typed(
        Tag.STRUCTURE, (Typed(Tag.OCTET_STRING, b"abc"), Typed(Tag.UNSIGNED, 7))
    )
    # reply_to_HLS_authentication once associated is denied, not passed to the model
    request = link.client.action(HLS_METHOD, now=1, parameters=b"x" * 17)
    assert link.run() == [ActionCompleted(request, x.ActionResult.READ_WRITE_DENIED, None)]
    assert len(model.calls) == 2


def test_other_reason_and_aborted_transfers() -> None:
    link, _ = associate(32, max_receive_pdu_size=100)
    meter = link.meter
    # a return value too long for the client (ACTION-Response-With-Pblock is not implemented)
    request = link.client.action(ECHO, now=1, parameters=bytes(200))
    assert link.run() == [ActionCompleted(request, x.ActionResult.OTHER_REASON, None)]
    # SET with selective access: ObjectModel.set takes none
    with_access = x.SetRequestNormal(iip(1), PROFILE, [], x.by_entry(1, 1))
    meter.receive_apdu(32, with_access.encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.SetResponseNormal(
        iip(1), x.DataAccessResult.OTHER_REASON
    )
    # a long GET ends when another request comes
    meter.receive_apdu(32, x.GetRequestNormal(iip(2), PROFILE).encode(), 1)
    meter.receive_apdu(32, x.GetRequestNormal(iip(3), ENERGY).encode(), 1)
    meter.receive_apdu(32, x.GetRequestNext(iip(2), 1).encode(), 1)
    assert x.decode_apdu(meter.data_to_send()[-1]) == x.GetResponseWithDatablock(
        iip(2), True, 2, x.DataAccessResult.NO_LONG_GET_IN_PROGRESS
    )
    # a long SET is capped at 64 KiB
    chunk = bytes(900)
    meter.receive_apdu(
        32, x.SetRequestWithFirstDatablock(iip(4), SCALER, False, 1, chunk).encode(), 1
    )
    for number in range(2, 80):
        events = meter.receive_apdu(
            32, x.SetRequestWithDatablock(iip(4), False, number, chunk).encode(), 1
        )
        if events:
            break
    assert events == [RequestRejected(f"SET block {number}: LONG_SET_ABORTED")]
    assert number * 900 > 64 << 10 >= (number - 1) * 900
    assert x.decode_apdu(meter.data_to_send()[-1]) == x.SetResponseLastDatablock(
        iip(4), x.DataAccessResult.LONG_SET_ABORTED, number
    )


def test_unconfirmed_set_and_action_get_no_answer() -> None:
    link, _ = associate(32)
    quiet = x.InvokeIdAndPriority(1, confirmed=False)
    events = link.meter.receive_apdu(32, x.SetRequestNormal(quiet, CLOCK, stamp(1)).encode(), 1)
    assert events == [RequestServed("set", CLOCK, x.DataAccessResult.SUCCESS)]
    link.meter.receive_apdu(32, x.ActionRequest(quiet, DISCONNECT).encode(), 1)
    assert link.meter.data_to_send() == []


def test_service_outside_the_conformance_is_an_exception() -> None:
    link, _ = associate(16)  # the public client offers GET only
    request = link.client.set(CLOCK, stamp(1), now=1)
    assert link.run() == [RequestFailed(request, "service-not-allowed/service-not-supported")]
    request = link.client.get(ENERGY, now=2)  # and the association goes on
    assert link.run() == [GetCompleted(request, (123456,))]


@pytest.mark.parametrize(
    ("apdu", "expected"),
    [
        (x.GetResponseNormal(iip(1), None).encode(), x.ExceptionResponse(2, 2)),
        (b"\x55\x01", x.ExceptionResponse(2, 2)),
        (b"\xc0\x01\xc1\x00", x.ExceptionResponse(1, 3)),  # truncated GET
        (b"\xc0" + bytes(2000), x.ExceptionResponse(1, 4)),  # longer than the max PDU
        (  # selective access without the conformance bit
            x.GetRequestNormal(iip(1), PROFILE, x.by_entry(1, 2)).encode(),
            x.ExceptionResponse(1, 2),
        ),
    ],
)
def test_garbage_requests_are_answered(apdu: bytes, expected: x.ExceptionResponse) -> None:
    link, _ = associate(32, conformance=C.GET | C.SET)
    [event] = link.meter.receive_apdu(32, apdu, 1)
    assert isinstance(event, RequestRejected)
    assert x.decode_apdu(link.meter.data_to_send()[0]) == expected
    assert link.meter.state == State.ASSOCIATED


def test_no_association_is_an_exception() -> None:
    meter = make_meter()
    [event] = meter.receive_apdu(16, x.GetRequestNormal(iip(1), ENERGY).encode(), 0)
    assert isinstance(event, RequestRejected)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.ExceptionResponse(1, 1)


def test_what_raises() -> None:
    meter = make_meter()
    for apdu in (b"", Aare(False, AssociationResult.ACCEPTED, 1, 0, None).encode(), b"\x62\x05"):
        with pytest.raises(RemoteProtocolError):
            meter.receive_apdu(16, apdu, 0)
    assert meter.receive_apdu(16, ReleaseRequest(0).encode(), 0) == []  # no association: RLRE
    assert meter.data_to_send() == [ReleaseResponse(0).encode()]


# -- ciphering -----------------------------------------------------------------------------------


def test_ciphered_association_refuses_plaintext_tampering_and_replay() -> None:
    link, _ = associate(48)
    meter, client = link.meter, link.client
    security = client.security
    assert security is not None
    get = x.GetRequestNormal(iip(3), ENERGY).encode()
    [event] = meter.receive_apdu(48, get, 1)
    assert isinstance(event, RequestRejected)
    # deciphering errors go back unciphered: the client may not hold the keys
    assert x.decode_apdu(meter.data_to_send()[0]) == x.ExceptionResponse(1, 5)
    tampered = bytearray(security.protect(get, 500))
    tampered[-1] ^= 1
    meter.receive_apdu(48, bytes(tampered), 1)
    assert x.decode_apdu(meter.data_to_send()[0]) == x.ExceptionResponse(1, 5)
    good = security.protect(get, 501)
    meter.receive_apdu(48, good, 1)
    [response] = meter.data_to_send()
    assert x.decode_apdu(security.unprotect(response)) == x.GetResponseNormal(iip(3), 123456)
    meter.receive_apdu(48, good, 1)  # replayed
    assert x.decode_apdu(meter.data_to_send()[0]) == x.ExceptionResponse(1, 6, 502)
    assert meter.state == State.ASSOCIATED
    # an exception after deciphering is ciphered (general-glo, no glo tag exists for it)
    meter.receive_apdu(48, security.protect(b"\xc0\x01\xc1", 502), 1)
    [exception] = meter.data_to_send()
    assert exception[0] == 0xDB
    assert x.decode_apdu(security.unprotect(exception)) == x.ExceptionResponse(1, 3)


def test_plaintext_is_a_deciphering_error_whatever_its_bytes() -> None:
    # bytes 3..6 of this plain GET read as a counter (196864) below the last accepted one; it
    # is still a plaintext APDU, not a replay
    link, _ = associate(48, first_counter=1_000_000)
    link.meter.receive_apdu(48, x.GetRequestNormal(iip(3), ENERGY).encode(), 1)
    assert x.decode_apdu(link.meter.data_to_send()[0]) == x.ExceptionResponse(1, 5)


def test_client_counters_survive_a_reassociation() -> None:
    meter = make_meter()
    link, _ = associate(48, meter, first_counter=1)
    link.client.release(now=1)
    assert link.run() == [Released()]
    _, events = associate(48, meter, first_counter=1)  # the same counters again: a replay
    [refused] = events
    assert isinstance(refused, ClientRefused)
    assert "initiate/other" in refused.reason
    _, events = associate(48, meter, first_counter=100)
    assert [type(e) for e in events] == [Associated]
    # another client (system title) has counters of its own; the first one's are remembered
    other = ClientConnection(
        AssociationParameters(mechanism=Mechanism.HLS_GMAC, ciphered=True),
        SecurityContext(system_title=bytes.fromhex("4D4D4D0000000002"), ek=EK, ak=AK),
    )
    other.grant_invocation_counters(1, 100)
    other.associate(now=0)
    assert [type(e) for e in Link(meter, other, 48).run()] == [Associated]
    _, events = associate(48, meter, first_counter=100)
    assert [type(e) for e in events] == [ClientRefused]
    _, events = associate(48, meter, first_counter=200)
    assert [type(e) for e in events] == [Associated]


def test_protected_release() -> None:
    link, _ = associate(48)
    security = link.client.security
    assert security is not None
    initiate = security.protect(INITIATE, 600)
    [event] = link.meter.receive_apdu(48, ReleaseRequest(0, initiate).encode(), 1)
    assert event == ServerReleased("utility")
    rlre = decode_acse(link.meter.data_to_send()[0])
    assert isinstance(rlre, ReleaseResponse)
    assert rlre.user_information is not None
    assert decode_initiate_response(security.unprotect(rlre.user_information)).max_pdu_size == 512
    link, _ = associate(48, first_counter=700)
    forged = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=bytes(16)).protect(INITIATE, 900)
    [event] = link.meter.receive_apdu(48, ReleaseRequest(0, forged).encode(), 1)
    assert isinstance(event, RequestRejected)
    assert link.meter.data_to_send() == [ReleaseResponse(1).encode()]  # not-finished
    assert link.meter.state == State.ASSOCIATED


# -- notifications, release, time --------------------------------------------------------------


@pytest.mark.parametrize("sap", [16, 48])
def test_notifications_reach_the_client(sap: int) -> None:
    link, _ = associate(sap)
    body = (b"MTR-1", Typed(Tag.LONG_UNSIGNED, 230))
    link.meter.notify(body, now=1, date_time=stamp(3))
    link.meter.notify(body, now=2, long_invoke_id=0xC0000001)
    pushed = link.meter.data_to_send()
    assert [apdu[0] for apdu in pushed] == ([0xDB] * 2 if sap == 48 else [0x0F] * 2)
    events = [e for apdu in pushed for e in link.client.receive_apdu(apdu, 3)]
    assert events == [
        NotificationReceived(x.DataNotification(0, stamp(3), (b"MTR-1", 230))),
        NotificationReceived(x.DataNotification(0xC0000001, None, (b"MTR-1", 230))),
    ]


def test_notifications_ciphered_or_not_without_association() -> None:
    meter = make_meter()
    meter.notify(b"push", now=0)
    meter.notify(b"push", now=0, ciphered=True)
    plain, ciphered = meter.data_to_send()
    assert x.decode_apdu(plain) == x.DataNotification(0, None, b"push")
    reader = SecurityContext(
        system_title=CLIENT_TITLE, ek=EK, ak=AK, server_system_title=METER_TITLE
    )
    assert x.decode_apdu(reader.unprotect(ciphered)) == x.DataNotification(1, None, b"push")
    with pytest.raises(LocalProtocolError, match="system_title and keys"):
        ServerConnection({}, DictModel()).notify(b"push", now=0, ciphered=True)


def test_release_and_associate_again_on_the_same_connection() -> None:
    meter = make_meter()
    for round_, sap in enumerate((16, 48, 32, 48, 64)):
        link, [event] = associate(sap, meter, first_counter=1 + 100 * round_)
        assert isinstance(event, Associated), event
        link.taken()
        link.client.release(now=1)
        assert link.run() == [Released()]
        assert link.taken() == [ServerReleased(ASSOCIATIONS[sap].name)]
        assert meter.state == State.IDLE
        assert meter.association is None


def test_inactivity_drops_the_association() -> None:
    meter = make_meter(inactivity_timeout=120.0)
    assert meter.next_deadline() is None
    associate(16, meter)
    deadline = meter.next_deadline()
    assert deadline is not None
    assert meter.handle_timeout(deadline - 1) == []
    assert meter.handle_timeout(deadline) == [
        AssociationLost("association public: nothing received for 120.0 s")
    ]
    assert meter.state == State.IDLE
    assert meter.next_deadline() is None
    assert meter.handle_timeout(deadline + 500) == []


# -- configuration and secrets -------------------------------------------------------------------


def test_an_idle_meter_is_small() -> None:
    """1000 associated meters sharing the associations, model and keys: a few hundred bytes
    each (measured 235 B without ciphering; a ciphered one adds its SecurityContext, ~550 B in
    Python and ~1.8 KB of OpenSSL state that tracemalloc does not see)."""
    import gc
    import tracemalloc

    model, keys = DictModel(), (EK, AK)
    meters = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(1000):
        meter = ServerConnection(ASSOCIATIONS, model, system_title=METER_TITLE, keys=keys)
        meter.receive_apdu(16, Aarq(False, Mechanism.NONE, INITIATE).encode(), 0)
        meter.data_to_send()
        meters.append(meter)
    gc.collect()
    per_meter = (tracemalloc.get_traced_memory()[0] - before) / 1000
    tracemalloc.stop()
    assert all(m.state == State.ASSOCIATED for m in meters)
    assert per_meter < 400


def test_secrets_stay_out_of_repr() -> None:
    link, _ = associate(48)
    text = repr(link.meter) + repr(ASSOCIATIONS)
    for secret in (EK, AK, b"12345678"):
        assert secret.hex() not in text.lower()
        assert repr(secret) not in text
    assert "12345678" not in text
    assert repr(link.meter) == "<ServerConnection associated association='utility'>"


@pytest.mark.parametrize(
    "build",
    [
        lambda: ServerAssociation("", 16, Mechanism.NONE),
        lambda: ServerAssociation("a", 70000, Mechanism.NONE),
        lambda: ServerAssociation("a", 16, Mechanism.HLS_MD5),
        lambda: ServerAssociation("a", 16, Mechanism.LLS),
        lambda: ServerAssociation("a", 16, Mechanism.NONE, password=b"x"),
        lambda: ServerAssociation("a", 16, Mechanism.NONE, ciphered=True),
        lambda: ServerAssociation("a", 16, Mechanism.NONE, conformance=C.GENERAL_BLOCK_TRANSFER),
        lambda: ServerAssociation("a", 16, Mechanism.NONE, max_pdu_size=63),
        lambda: ServerConnection({17: ASSOCIATIONS[16]}, DictModel()),
        lambda: ServerConnection(ASSOCIATIONS, DictModel()),  # no keys for HLS
        lambda: ServerConnection({}, DictModel(), system_title=b"short"),
        lambda: ServerConnection({}, DictModel(), keys=(EK, b"short")),
        lambda: ServerConnection({}, DictModel(), invocation_counter=1 << 32),
        lambda: ServerConnection({}, DictModel(), inactivity_timeout=0),
    ],
)
def test_configuration_is_checked(build: Callable[[], object]) -> None:
    with pytest.raises(LocalProtocolError) as info:
        build()
    assert EK.hex() not in str(info.value).lower()


def test_exhausted_invocation_counter_is_a_local_error() -> None:
    meter = make_meter(invocation_counter=0xFFFFFFFF)
    meter.notify(b"last", now=0, ciphered=True)
    with pytest.raises(LocalProtocolError, match="used up"):
        meter.notify(b"one too many", now=0, ciphered=True)


# -- gurux-dlms's client against the meter -------------------------------------------------------
# gurux-dlms 1.0.203 drives its own association through the WRAPPER framing (client wPort = SAP,
# meter wPort 1): what it sends, the meter serves, and what the meter answers, gurux parses.

from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData  # noqa: E402
from gurux_dlms.enums import Authentication, InterfaceType, Security  # noqa: E402
from gurux_dlms.objects import (  # noqa: E402
    GXDLMSClock,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient  # noqa: E402


class GuruxLink:
    def __init__(self, meter: ServerConnection, client: Any, sap: int) -> None:
        self.meter, self.client, self.sap = meter, client, sap
        self.meter_events: list[Event] = []
        self.frames = 0  # request frames sent

    def exchange(self, frames: Any) -> Any:
        """Send gurux's request frames, and its GET-Request-Next frames while blocks come."""
        reply = GXReplyData()
        while True:
            for request in frames if isinstance(frames, list) else [frames]:
                frame = bytes(request)
                self.frames += 1
                # IEC 62056-47 §5.2: version 1, source wPort = the client SAP, destination 1
                assert frame[:6] == bytes((0, 1, 0, self.sap, 0, 1))
                self.meter_events += self.meter.receive_apdu(self.sap, frame[8:], 0.0)
                for apdu in self.meter.data_to_send():
                    wrapped = encode_wrapper(1, self.sap, apdu)
                    assert self.client.getData(GXByteBuffer(bytearray(wrapped)), reply)
            if not reply.isMoreData():
                return reply
            frames = self.client.receiverReady(reply)


def gurux_client(sap: int) -> Any:
    client: Any
    if sap == 48:
        client = GXDLMSSecureClient(
            True, 48, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER
        )
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.systemTitle = bytearray(CLIENT_TITLE)
        client.ciphering.blockCipherKey = bytearray(EK)
        client.ciphering.authenticationKey = bytearray(AK)
    elif sap == 32:
        client = GXDLMSClient(True, 32, 1, Authentication.LOW, "12345678", InterfaceType.WRAPPER)
    else:
        client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.maxReceivePDUSize = 256  # so that the whole profile comes in blocks
    return client


@pytest.mark.parametrize("sap", [16, 32, 48])
def test_gurux_client_associates_and_reads(sap: int) -> None:
    import datetime as dt

    meter = make_meter()
    client = gurux_client(sap)
    link = GuruxLink(meter, client, sap)
    client.parseAareResponse(link.exchange(client.aarqRequest()).data)
    if sap == 48:
        assert client.getIsAuthenticationRequired()
        reply = link.exchange(client.getApplicationAssociationRequest())
        client.parseApplicationAssociationResponse(reply.data)  # raises if f(CtoS) is wrong
    name = ASSOCIATIONS[sap].name
    expected: list[Event] = [AssociationAccepted(name, sap)]
    assert link.meter_events == [*expected, *([Authenticated(name)] if sap == 48 else [])]
    assert meter.state == State.ASSOCIATED

    register = GXDLMSRegister("1.0.1.8.0.255")
    client.updateValue(register, 2, link.exchange(client.read(register, 2)).value)
    assert register.value == 123456

    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    profile.addCaptureObject(GXDLMSClock(), 2, 0)
    profile.addCaptureObject(register, 2, 0)
    start, end = dt.datetime(2026, 1, 1, 2, 0), dt.datetime(2026, 1, 1, 3, 0)
    reply = link.exchange(client.readRowsByRange(profile, start, end))
    client.updateValue(profile, 2, reply.value)
    assert [row[1] for row in profile.buffer] == [1008, 1009, 1010, 1011, 1012]
    assert [row[0].value.hour for row in profile.buffer] == [2, 2, 2, 2, 3]

    profile.buffer = []
    link.frames = 0
    reply = link.exchange(client.read(profile, 2))  # all 96 rows, in blocks of < 256 octets
    assert link.frames > 8  # GET-Request-Normal, then GET-Request-Next for each block
    client.updateValue(profile, 2, reply.value)
    assert [row[1] for row in profile.buffer] == [1000 + i for i in range(96)]

    link.meter_events.clear()
    link.exchange(client.releaseRequest())
    assert link.meter_events == [ServerReleased(name)]
    assert meter.state == State.IDLE


def test_gurux_client_with_a_wrong_password_is_refused() -> None:
    meter = make_meter()
    client = GXDLMSClient(True, 32, 1, Authentication.LOW, "wrong", InterfaceType.WRAPPER)
    link = GuruxLink(meter, client, 32)
    reply = link.exchange(client.aarqRequest())
    with pytest.raises(Exception, match=r"(?i)authentication"):
        client.parseAareResponse(reply.data)
    assert [type(e) for e in link.meter_events] == [AssociationRefused]


# -- hypothesis: garbage and (state x input) sequences -------------------------------------------
# What may raise: only RemoteProtocolError, and only for an empty APDU, an AARE or RLRE sent to a
# server, or a malformed RLRQ. Everything else is answered (an Exception-Response, a refused
# AARE, a data-access-result) and the association goes on.

RAISES_ON = (0x61, 0x62, 0x63)


def check_invariants(meter: ServerConnection) -> None:
    assert (meter.state == State.IDLE) == (meter.association is None)
    for apdu in meter.data_to_send():
        assert isinstance(apdu, bytes)
        assert apdu


def feed(meter: ServerConnection, sap: int, apdu: bytes) -> bool:
    """True when the meter answered, False when it raised (and then only where allowed)."""
    try:
        events = meter.receive_apdu(sap, apdu, 1.0)
    except RemoteProtocolError:
        assert not apdu or apdu[0] in RAISES_ON
        return False
    assert isinstance(events, list)
    return True


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80), st.sampled_from([None, 16, 32, 48]))
def test_garbage_is_answered_or_a_remote_error(data: bytes, sap: int | None) -> None:
    meter = make_meter()
    if sap is not None:
        link, _ = associate(sap, meter)
    feed(meter, sap or 16, data)
    check_invariants(meter)
    if sap is not None and (not data or data[0] != 0x60):
        # the association survived the garbage and still serves
        assert meter.association == ASSOCIATIONS[sap].name
        request = link.client.get(ENERGY, now=2)
        assert link.run() == [GetCompleted(request, (123456,))]


@settings(max_examples=200)
@given(st.binary(min_size=1, max_size=60).map(lambda b: b"\xc0" + b))
def test_garbage_after_a_valid_tag_on_a_ciphered_association(data: bytes) -> None:
    link, _ = associate(48)
    security = link.client.security
    assert security is not None
    assert security.last_invocation_counter is not None
    ic = security.last_invocation_counter + 1
    assert feed(link.meter, 48, security.protect(data, ic))
    check_invariants(link.meter)
    assert link.meter.state == State.ASSOCIATED


CLIENT_APDUS = [
    Aarq(False, Mechanism.NONE, INITIATE).encode(),
    Aarq(False, Mechanism.LLS, INITIATE, None, b"12345678").encode(),
    Aarq(False, Mechanism.LLS, INITIATE, None, b"wrong").encode(),
    Aarq(False, Mechanism.HLS_GMAC, INITIATE, CLIENT_TITLE, b"c" * 16).encode(),
    x.GetRequestNormal(iip(1), ENERGY).encode(),
    x.GetRequestNormal(iip(2), PROFILE).encode(),
    x.GetRequestNext(iip(2), 1).encode(),
    x.GetRequestNext(iip(2), 2).encode(),
    x.GetRequestWithList(iip(3), ((ENERGY, None), (PROFILE, None))).encode(),
    x.SetRequestNormal(iip(4), CLOCK, stamp(2)).encode(),
    x.SetRequestWithFirstDatablock(iip(5), SCALER, False, 1, b"\x09\x10abcd").encode(),
    x.SetRequestWithDatablock(iip(5), True, 2, b"efghijklmnop").encode(),
    x.ActionRequest(iip(6), DISCONNECT).encode(),
    x.ActionRequest(iip(7), HLS_METHOD, b"f" * 17, True).encode(),
    ReleaseRequest(0).encode(),
    x.DataNotification(1, None, None).encode(),
    b"\x00",
]


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([16, 32, 64, 99]), st.sampled_from(CLIENT_APDUS)),
            st.tuples(st.just(16), st.binary(max_size=20)),
            st.just("timeout"),
        ),
        max_size=30,
    )
)
def test_any_sequence_ends_in_a_state_or_a_remote_error(steps: list[Any]) -> None:
    meter = make_meter(inactivity_timeout=5.0)
    now = 0.0
    for step in steps:
        now += 1.0
        if step == "timeout":
            deadline = meter.next_deadline()
            events: list[Event] = meter.handle_timeout(now if deadline is None else deadline)
            assert all(isinstance(e, AssociationLost) for e in events)
        else:
            sap, apdu = step
            try:
                meter.receive_apdu(sap, apdu, now)
            except RemoteProtocolError:
                assert not apdu or apdu[0] in RAISES_ON
        check_invariants(meter)
        assert (meter.next_deadline() is None) == (meter.state == State.IDLE)
