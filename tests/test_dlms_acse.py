"""ACSE: AARQ/AARE/RLRQ/RLRE and xDLMS Initiate, against gurux-dlms bytes and meter captures."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateRequest,
    InitiateResponse,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    decode_acse,
    decode_initiate_request,
    decode_initiate_response,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

# AARQs produced by gurux-dlms 1.0.203 GXDLMSClient.aarqRequest() (WRAPPER header removed):
# client 16 no security; client 32 LLS "12345678"; client 48 HLS-GMAC with suite 0 ciphering,
# system title 4D4D4D0000BC614E and the Green Book test keys.
GURUX_AARQ_NONE = bytes.fromhex("601da109060760857405080101be10040e01000000065f1f0400401e5dffff")
GURUX_AARQ_LLS = bytes.fromhex(
    "6036a1090607608574050801018a0207808b0760857405080201ac0a80083132333435363738"
    "be10040e01000000065f1f0400401e5dffff"
)
GURUX_AARQ_HLS = bytes.fromhex(
    "605da109060760857405080103a60a04084d4d4d0000bc614e8a0207808b0760857405080205"
    "ac128010a26ef2615548f5f6ee64cc56486af1f9be230421211f3000000001d061000a04ec61"
    "5571c4ca5676a23cb02e0f3b43a1ee9c3b5c56"
)
# An AARE as IS 15959 meters answer the public client (conformance 00501F, max PDU 500).
METER_AARE = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000501f01f40007"
)


def test_gurux_aarq_without_security() -> None:
    aarq = decode_acse(GURUX_AARQ_NONE)
    assert isinstance(aarq, Aarq)
    assert (aarq.ciphered_context, aarq.mechanism, aarq.calling_ap_title) == (
        False,
        Mechanism.NONE,
        None,
    )
    initiate = decode_initiate_request(aarq.user_information)
    assert initiate == InitiateRequest(Conformance(0x401E5D), 0xFFFF)
    # and ours, built from the same parameters, is byte for byte what gurux sends
    assert Aarq(False, Mechanism.NONE, initiate.encode()).encode() == GURUX_AARQ_NONE


def test_gurux_aarq_lls() -> None:
    aarq = decode_acse(GURUX_AARQ_LLS)
    assert isinstance(aarq, Aarq)
    assert aarq.mechanism == Mechanism.LLS
    assert aarq.authentication_value == b"12345678"
    assert "12345678" not in repr(aarq)
    rebuilt = Aarq(False, Mechanism.LLS, aarq.user_information, None, b"12345678")
    assert rebuilt.encode() == GURUX_AARQ_LLS


def test_gurux_aarq_hls_gmac_ciphered() -> None:
    aarq = decode_acse(GURUX_AARQ_HLS)
    assert isinstance(aarq, Aarq)
    assert aarq.ciphered_context
    assert aarq.mechanism == Mechanism.HLS_GMAC
    assert aarq.calling_ap_title == bytes.fromhex("4d4d4d0000bc614e")
    assert aarq.authentication_value is not None
    assert len(aarq.authentication_value) == 16
    assert aarq.user_information[0] == 0x21  # glo-initiate-request
    assert (
        Aarq(
            True,
            Mechanism.HLS_GMAC,
            aarq.user_information,
            aarq.calling_ap_title,
            aarq.authentication_value,
        ).encode()
        == GURUX_AARQ_HLS
    )


def test_meter_aare() -> None:
    aare = decode_acse(METER_AARE)
    assert isinstance(aare, Aare)
    assert aare.result == AssociationResult.ACCEPTED
    assert aare.describe_diagnostic() == "acse-service-user: null"
    assert aare.user_information is not None
    initiate = decode_initiate_response(aare.user_information)
    assert initiate == InitiateResponse(Conformance(0x00501F), 500)
    assert Conformance.GET in initiate.conformance
    assert Conformance.SELECTIVE_ACCESS in initiate.conformance
    assert aare.encode() == METER_AARE


def test_rejected_aare_names_the_reason() -> None:
    aare = Aare(False, AssociationResult.REJECTED_PERMANENT, 1, 13, None)
    decoded = decode_acse(aare.encode())
    assert decoded == aare
    assert isinstance(decoded, Aare)
    assert decoded.describe_diagnostic() == "acse-service-user: authentication-failure"


def test_release_round_trip() -> None:
    assert decode_acse(bytes.fromhex("6203800100")) == ReleaseRequest(0)
    assert ReleaseResponse(0).encode() == bytes.fromhex("6303800100")
    assert decode_acse(ReleaseRequest(None).encode()) == ReleaseRequest(None)


def test_hls_aare_round_trip() -> None:
    aare = Aare(
        True,
        AssociationResult.ACCEPTED,
        1,
        14,
        b"\x28" + b"x" * 30,
        bytes.fromhex("4d4d4d0000000001"),
        Mechanism.HLS_GMAC,
        b"S" * 16,
    )
    assert decode_acse(aare.encode()) == aare


def test_local_misuse() -> None:
    with pytest.raises(LocalProtocolError, match="authentication value goes with a mechanism"):
        Aarq(False, Mechanism.LLS, b"\x01")
    with pytest.raises(LocalProtocolError, match="needs the client system title"):
        Aarq(True, Mechanism.NONE, b"\x01")


@pytest.mark.parametrize("capture", [GURUX_AARQ_NONE, GURUX_AARQ_LLS, GURUX_AARQ_HLS, METER_AARE])
def test_every_truncation_and_trailing_byte_is_refused(capture: bytes) -> None:
    for end in range(len(capture)):
        with pytest.raises(RemoteProtocolError):
            decode_acse(capture[:end])
    with pytest.raises(RemoteProtocolError, match="1 bytes after the APDU"):
        decode_acse(capture + b"\x00")


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("6103a10100"),  # AARE without the mandatory parts
        bytes.fromhex(
            "601da109060760857405080102be10040e01000000065f1f0400401e5dffff"
        ),  # SN context
        METER_AARE.replace(bytes.fromhex("a203020100"), bytes.fromhex("a203020107")),  # result 7
    ],
)
def test_malformed_acse(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_acse(data)


@given(st.binary(max_size=80))
def test_garbage_yields_only_remote_errors(data: bytes) -> None:
    for candidate in (data, b"\x60" + data, b"\x61" + data):
        with contextlib.suppress(RemoteProtocolError):
            decode_acse(candidate)
    for decoder in (decode_initiate_request, decode_initiate_response):
        with contextlib.suppress(RemoteProtocolError):
            decoder(data)


@given(
    st.integers(0, 0xFFFFFF), st.integers(0, 0xFFFF), st.binary(min_size=1, max_size=32) | st.none()
)
def test_initiate_round_trips(conformance: int, pdu: int, key: bytes | None) -> None:
    request = InitiateRequest(Conformance(conformance), pdu, dedicated_key=key)
    assert decode_initiate_request(request.encode()) == request
    response = InitiateResponse(Conformance(conformance), pdu)
    assert decode_initiate_response(response.encode()) == response
