"""xDLMS APDUs: byte-for-byte against gurux-dlms, gurux parses ours, round trips, garbage."""

from __future__ import annotations

import contextlib

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms import apdu as x
from protocols.dlms.axdr import DateTime, Tag, Typed
from protocols.dlms.obis import ObisCode
from protocols.errors import LocalProtocolError, RemoteProtocolError

PROFILE = ObisCode.parse("1.0.99.1.0.255")
CLOCK = ObisCode.parse("0.0.1.0.0.255")
IIP = x.InvokeIdAndPriority(1)

# gurux-dlms 1.0.203 GXDLMSClient requests (WRAPPER header removed):
GURUX_GET_REGISTER = bytes.fromhex("c001c100030100010800ff0200")  # read(register 1.0.1.8.0.255, 2)
# readRowsByRange(block load profile, 2026-11-01 00:00 IST .. 2026-11-02 00:00 IST), clock column
GURUX_GET_RANGE = bytes.fromhex(
    "c001c100070100630100ff0201010204020412000809060000010000ff0f02120000090c07ea0b01ff00000000"
    "feb600090c07ea0b02ff00000000feb6000100"
)
GURUX_GET_ENTRY = bytes.fromhex(  # readRowsByEntry(profile, 1, 10)
    "c001c100070100630100ff02010202040600000001060000000a120001120000"
)
GURUX_NOTIFICATION = bytes.fromhex(  # GXDLMSNotify.generateDataNotificationMessages
    "0fc000000100020209034142431200e6"
)


def ist_midnight(day: int) -> DateTime:
    return DateTime(2026, 11, day, None, 0, 0, 0, 0, -330, 0)


def test_get_request_matches_gurux() -> None:
    request = x.GetRequestNormal(IIP, x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2))
    assert request.encode() == GURUX_GET_REGISTER
    assert x.decode_apdu(GURUX_GET_REGISTER) == request


def test_range_access_matches_gurux() -> None:
    access = x.by_range((8, CLOCK, 2), ist_midnight(1), ist_midnight(2))
    request = x.GetRequestNormal(IIP, x.AttributeDescriptor(7, PROFILE, 2), access)
    assert request.encode() == GURUX_GET_RANGE
    decoded = x.decode_apdu(GURUX_GET_RANGE)
    assert isinstance(decoded, x.GetRequestNormal)
    assert decoded.access is not None
    assert decoded.access.selector == 1


def test_entry_access_matches_gurux() -> None:
    request = x.GetRequestNormal(IIP, x.AttributeDescriptor(7, PROFILE, 2), x.by_entry(1, 10))
    assert request.encode() == GURUX_GET_ENTRY


def test_data_notification_matches_gurux() -> None:
    notification = x.DataNotification(0xC0000001, None, (b"ABC", Typed(Tag.LONG_UNSIGNED, 230)))
    assert notification.encode() == GURUX_NOTIFICATION
    assert x.decode_apdu(GURUX_NOTIFICATION) == x.DataNotification(0xC0000001, None, (b"ABC", 230))


def gurux_parse(apdu: bytes) -> object:
    """Let gurux's client parse a response APDU (wrapped for its WRAPPER interface)."""
    client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    frame = bytes.fromhex("00010001001000") + bytes((0,)) + apdu  # placeholder, length fixed below
    frame = frame[:6] + len(apdu).to_bytes(2, "big") + apdu
    reply = GXReplyData()
    client.getData(GXByteBuffer(bytearray(frame)), reply)
    return reply.value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Typed(Tag.DOUBLE_LONG_UNSIGNED, 123456), 123456),
        (Typed(Tag.LONG, -5), -5),
        (b"\x01\x02", bytearray(b"\x01\x02")),
    ],
)
def test_gurux_parses_our_get_response(value: object, expected: object) -> None:
    apdu = x.GetResponseNormal(IIP, value).encode()  # type: ignore[arg-type]
    assert gurux_parse(apdu) == expected


def test_all_apdus_round_trip() -> None:
    descriptor = x.AttributeDescriptor(70, ObisCode.parse("0.0.96.3.10.255"), 2)
    stamp = DateTime(2026, 11, 23, 1, 10, 0, 0, 0, -330, 0).to_octets()
    apdus: list[x.Apdu] = [
        x.GetRequestNext(IIP, 7),
        x.GetResponseWithDatablock(IIP, False, 3, b"\x01\x02\x03"),
        x.GetResponseWithDatablock(IIP, True, 4, x.DataAccessResult.DATA_BLOCK_UNAVAILABLE),
        x.GetResponseWithList(IIP, (True, x.DataAccessResult.READ_WRITE_DENIED, None)),
        x.SetRequestNormal(IIP, descriptor, True),
        x.SetRequestWithFirstDatablock(IIP, descriptor, False, 1, b"\x00" * 40),
        x.SetRequestWithDatablock(IIP, True, 2, b"\x01"),
        x.SetResponseNormal(IIP, x.DataAccessResult.TYPE_UNMATCHED),
        x.SetResponseDatablock(IIP, 1),
        x.SetResponseLastDatablock(IIP, x.DataAccessResult.SUCCESS, 2),
        x.ActionRequest(IIP, descriptor),
        x.ActionRequest(IIP, descriptor, None, True),
        x.ActionResponse(IIP, x.ActionResult.SUCCESS, b"\x10\x00\x00\x00\x01", True),
        x.ActionResponse(IIP, x.ActionResult.OTHER_REASON),
        x.ExceptionResponse(1, 6, 1234),
        x.ExceptionResponse(2, 2),
        x.ConfirmedServiceError(1, 6, 3),
        x.DataNotification(1, stamp, [True, False]),
        x.EventNotification(descriptor, b"\x01", stamp),
        x.EventNotification(descriptor, None),
    ]
    for apdu in apdus:
        assert x.decode_apdu(apdu.encode()) == apdu, apdu
    # decoding gives plain values where the sender held Typed ones
    with_list = x.GetRequestWithList(IIP, ((descriptor, None), (descriptor, x.by_entry(1))))
    assert x.decode_apdu(with_list.encode()) == x.GetRequestWithList(
        IIP, ((descriptor, None), (descriptor, x.AccessSelection(2, (1, 0, 1, 0))))
    )


def test_exception_and_service_error_descriptions() -> None:
    assert x.ExceptionResponse(1, 6, 99).describe() == (
        "service-not-allowed/invocation-counter-error (server expects invocation counter 99)"
    )
    assert x.ConfirmedServiceError(1, 6, 3).describe() == "service 1: initiate/pdu-size-too-short"


@pytest.mark.parametrize(
    "capture", [GURUX_GET_REGISTER, GURUX_GET_RANGE, GURUX_GET_ENTRY, GURUX_NOTIFICATION]
)
def test_truncation_and_trailing_bytes(capture: bytes) -> None:
    for end in range(len(capture)):
        with pytest.raises(RemoteProtocolError):
            x.decode_apdu(capture[:end])
    with pytest.raises(RemoteProtocolError, match="1 bytes after the end of the APDU"):
        x.decode_apdu(capture + b"\x00")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty APDU"),
        (b"\x99\x01", "APDU tag 0x99 is not an xDLMS service"),
        (bytes.fromhex("c004c1"), "GET-Request choice 4"),
        (bytes.fromhex("c401c102"), "Get-Data-Result choice 2"),
        (bytes.fromhex("c401c10163"), "data-access-result 99 is not a known value"),
        (bytes.fromhex("0f0000000105010203040500"), "date-time of 5 octets"),
    ],
)
def test_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        x.decode_apdu(data)


def test_local_validation() -> None:
    with pytest.raises(LocalProtocolError, match="invoke-id 16"):
        x.InvokeIdAndPriority(16)
    with pytest.raises(LocalProtocolError, match="attribute-id 200"):
        x.AttributeDescriptor(3, CLOCK, 200)


@given(st.binary(max_size=64))
def test_garbage_yields_only_remote_errors(data: bytes) -> None:
    for prefix in (
        b"",
        b"\xc0",
        b"\xc4",
        b"\xc1",
        b"\xc5",
        b"\xc3",
        b"\xc7",
        b"\x0f",
        b"\xc2",
        b"\xd8",
        b"\x0e",
    ):
        with contextlib.suppress(RemoteProtocolError):
            x.decode_apdu(prefix + data)


@given(
    st.builds(x.InvokeIdAndPriority, st.integers(0, 15), st.booleans(), st.booleans()),
    st.builds(
        x.AttributeDescriptor,
        st.integers(0, 0xFFFF),
        st.builds(ObisCode, *[st.integers(0, 255)] * 6),
        st.integers(-128, 127),
    ),
)
def test_get_request_round_trips(
    invoke: x.InvokeIdAndPriority, descriptor: x.AttributeDescriptor
) -> None:
    request = x.GetRequestNormal(invoke, descriptor)
    assert x.decode_apdu(request.encode()) == request
