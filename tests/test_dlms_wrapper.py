"""The WRAPPER framing (IEC 62056-47 §5): codec, framer, and gurux as the oracle."""

from __future__ import annotations

import contextlib
import time

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlms.wrapper import WrapperFrame, WrapperFramer, encode_wrapper
from protocols.errors import LocalProtocolError, RemoteProtocolError

# gurux GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER).aarqRequest()
AARQ_FROM_GURUX = bytes.fromhex(
    "000100100001001f601da109060760857405080101be10040e01000000065f1f0400401e5dffff"
)
# An AARE (LN, no security, conformance 00 06 5F 1F... as meters answer it), from wPort 1 to 16.
AARE = bytes.fromhex(
    "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000301d19000007"
)
AARE_FRAME = bytes.fromhex("000100010010002b") + AARE  # hand-written: version 1, 1 -> 16, 43


def framer() -> WrapperFramer:
    """The client side: frames come from the meter's wPort 1 to our wPort 16."""
    return WrapperFramer(local_wport=16, remote_wport=1)


def feed(f: WrapperFramer, *chunks: bytes) -> list[WrapperFrame]:
    out: list[WrapperFrame] = []
    for chunk in chunks:
        f.receive_data(chunk)
        out.extend(f.frames())
    return out


# -- codec -----------------------------------------------------------------------------------


def test_encode_matches_gurux() -> None:
    apdu = AARQ_FROM_GURUX[8:]
    assert encode_wrapper(16, 1, apdu) == AARQ_FROM_GURUX
    assert WrapperFrame(16, 1, apdu).encode() == AARQ_FROM_GURUX


def test_gurux_decodes_our_frame() -> None:
    gurux = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    reply = GXReplyData()
    assert gurux.getData(GXByteBuffer(encode_wrapper(1, 16, AARE)), reply)
    assert reply.complete
    assert bytes(reply.data.array()) == AARE
    gurux.parseAareResponse(reply.data)  # raises if the AARE did not come through intact


def test_we_decode_gurux_frame() -> None:
    server_side = WrapperFramer(local_wport=1, remote_wport=16)
    assert feed(server_side, AARQ_FROM_GURUX) == [WrapperFrame(16, 1, AARQ_FROM_GURUX[8:])]


def test_empty_apdu_round_trips() -> None:
    assert feed(framer(), encode_wrapper(1, 16, b"")) == [WrapperFrame(1, 16, b"")]


@pytest.mark.parametrize(
    ("source", "destination", "apdu"),
    [(-1, 1, b""), (0x10000, 1, b""), (1, -1, b""), (1, 0x10000, b""), (1, 1, bytes(0x10000))],
)
def test_values_that_do_not_fit_are_local_errors(
    source: int, destination: int, apdu: bytes
) -> None:
    with pytest.raises(LocalProtocolError):
        WrapperFrame(source, destination, apdu)
    with pytest.raises(LocalProtocolError):
        encode_wrapper(source, destination, apdu)


def test_framer_rejects_impossible_settings() -> None:
    with pytest.raises(LocalProtocolError):
        WrapperFramer(16, 1, max_apdu=0)
    with pytest.raises(LocalProtocolError):
        WrapperFramer(16, 1, max_apdu=100, max_buffer=50)
    with pytest.raises(LocalProtocolError):
        WrapperFramer(0x10000, 1)


# -- four ways -------------------------------------------------------------------------------

TWO_FRAMES = AARE_FRAME + encode_wrapper(1, 16, b"\xc4\x01\xc1\x00\x09\x02\x12\x34")
EXPECTED = [WrapperFrame(1, 16, AARE), WrapperFrame(1, 16, b"\xc4\x01\xc1\x00\x09\x02\x12\x34")]


def test_whole_input() -> None:
    assert feed(framer(), TWO_FRAMES) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(TWO_FRAMES)))
def test_split_in_two(cut: int) -> None:
    assert feed(framer(), TWO_FRAMES[:cut], TWO_FRAMES[cut:]) == EXPECTED


def test_byte_by_byte() -> None:
    f = framer()
    assert feed(f, *(bytes((b,)) for b in TWO_FRAMES)) == EXPECTED
    assert f.discarded_bytes == 0


def test_trailing_bytes_wait_for_the_rest() -> None:
    f = framer()
    tail = TWO_FRAMES[: len(AARE_FRAME) + 5]
    assert feed(f, tail) == EXPECTED[:1]
    assert f.next_frame() is None
    assert feed(f, TWO_FRAMES[len(tail) :]) == EXPECTED[1:]


# -- errors ----------------------------------------------------------------------------------


def test_wrong_version_is_a_remote_error_then_resync() -> None:
    f = framer()
    bad = b"\x00\x02" + AARE_FRAME[2:]
    f.receive_data(bad + AARE_FRAME)
    with pytest.raises(RemoteProtocolError, match="version 0x0002"):
        f.next_frame()
    assert f.frames() == [WrapperFrame(1, 16, AARE)]
    assert f.discarded_bytes == len(bad)


@pytest.mark.parametrize(("source", "destination"), [(2, 16), (1, 17), (16, 1)])
def test_frame_for_other_wports_is_a_remote_error(source: int, destination: int) -> None:
    # The issue asks for an error here, not a silent wait: a meter answering from another
    # logical device, or to another client, is misconfigured.
    f = framer()
    f.receive_data(encode_wrapper(source, destination, AARE) + AARE_FRAME)
    with pytest.raises(RemoteProtocolError, match=f"from wPort {source} to wPort {destination}"):
        f.next_frame()
    assert f.frames() == [WrapperFrame(1, 16, AARE)]


def test_length_beyond_max_apdu_is_a_remote_error() -> None:
    f = WrapperFramer(16, 1, max_apdu=42)
    f.receive_data(AARE_FRAME[:8])  # the header alone is enough to know
    with pytest.raises(RemoteProtocolError, match="length field 43"):
        f.next_frame()


def test_buffer_is_capped() -> None:
    f = WrapperFramer(16, 1, max_apdu=100, max_buffer=200)
    f.receive_data(bytes(150))
    with pytest.raises(RemoteProtocolError, match="more than the 200 bytes"):
        f.receive_data(bytes(51))
    # The framer is usable again once the peer sends a proper frame.
    assert feed(f, AARE_FRAME) == [WrapperFrame(1, 16, AARE)]


def test_resync_finds_a_header_split_across_reads() -> None:
    f = framer()
    f.receive_data(b"\x00\x09" + bytes(10) + AARE_FRAME[:3])
    with pytest.raises(RemoteProtocolError):
        f.next_frame()
    assert f.frames() == []
    assert feed(f, AARE_FRAME[3:]) == [WrapperFrame(1, 16, AARE)]


# -- properties ------------------------------------------------------------------------------

wports = st.integers(0, 0xFFFF)
apdus = st.binary(max_size=300)


@given(st.lists(apdus, min_size=1, max_size=5), st.data())
def test_round_trip_with_random_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_wrapper(1, 16, p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert feed(framer(), *chunks) == [WrapperFrame(1, 16, p) for p in payloads]


@given(wports, wports, apdus)
def test_frame_round_trip(source: int, destination: int, apdu: bytes) -> None:
    f = WrapperFramer(local_wport=destination, remote_wport=source)
    assert feed(f, WrapperFrame(source, destination, apdu).encode()) == [
        WrapperFrame(source, destination, apdu)
    ]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=120), max_size=12))
def test_garbage_yields_only_remote_errors(chunks: list[bytes]) -> None:
    f = WrapperFramer(16, 1, max_apdu=64, max_buffer=200)
    started = time.perf_counter()
    for chunk in chunks:
        with contextlib.suppress(RemoteProtocolError):
            f.receive_data(chunk)
        for _ in range(len(f._buffer) + 2):  # a call consumes a byte or more, or waits
            try:
                if f.next_frame() is None:
                    break
            except RemoteProtocolError:
                continue
        else:
            pytest.fail("the framer neither consumed nor waited")
        assert len(f._buffer) <= f.max_buffer
    assert time.perf_counter() - started < 1.0


def test_any_peer_wport_when_remote_is_none() -> None:
    framer = WrapperFramer(local_wport=1, remote_wport=None)
    framer.receive_data(encode_wrapper(16, 1, b"\xc0") + encode_wrapper(48, 1, b"\xc1"))
    assert [(f.source_wport, f.apdu) for f in framer.frames()] == [(16, b"\xc0"), (48, b"\xc1")]
    framer.receive_data(encode_wrapper(16, 2, b"\xc0"))
    with pytest.raises(RemoteProtocolError, match="expected from any wPort to 1"):
        framer.next_frame()
    fresh = WrapperFramer(local_wport=1, remote_wport=None)
    fresh.receive_data(bytes.fromhex("0002001000010001c0"))  # version 2
    with pytest.raises(RemoteProtocolError, match="version"):
        fresh.next_frame()
    fresh.receive_data(encode_wrapper(32, 1, b"\xc2"))
    assert fresh.next_frame() == WrapperFrame(32, 1, b"\xc2")


def test_any_local_wport_when_local_is_none() -> None:
    framer = WrapperFramer(local_wport=None, remote_wport=1)
    framer.receive_data(encode_wrapper(1, 16, b"\xc4") + encode_wrapper(1, 102, b"\x0f"))
    assert [(f.destination_wport, f.apdu) for f in framer.frames()] == [
        (16, b"\xc4"),
        (102, b"\x0f"),
    ]
    framer.receive_data(encode_wrapper(2, 16, b"\xc4"))
    with pytest.raises(RemoteProtocolError, match="expected from 1 to any wPort"):
        framer.next_frame()
