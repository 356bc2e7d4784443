"""HDLC framing (IEC 62056-46): FCS, addresses, control, frames, framer, parameters, LLC.

Oracles: captures of real sessions (hex fixtures below), the table-driven FCS of the standard,
and gurux-dlms. The link state machine is tested in test_dlms_hdlc_link.py.
"""

from __future__ import annotations

import contextlib
import time

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXDLMSTranslator
from gurux_dlms._GXFCS16 import _GXFCS16
from gurux_dlms.enums import Authentication, InterfaceType
from gurux_dlms.GXDLMS import GXDLMS
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlms.hdlc import (
    LLC_COMMAND,
    LLC_RESPONSE,
    MAX_FRAME_LENGTH,
    FrameType,
    HdlcAddress,
    HdlcFrame,
    HdlcFramer,
    HdlcParameters,
    add_llc,
    control_i,
    control_s,
    control_u,
    decode_frame,
    fcs16,
    strip_llc,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

CLIENT = HdlcAddress.client(16)
SERVER = HdlcAddress.server(1, 17, 4)

# -- captures --------------------------------------------------------------------------------
# A session with a meter at server address 1/17 (4 bytes) from the public client (16): SNRM, the
# UA with the meter's parameters, AARQ and AARE in I frames (the AARQ's HCS is 7E CB: a flag
# byte inside a frame). Then GET exchanges between client 58 and server 74 (1-byte addresses)
# with N(S)/N(R) moving on. Frame bytes as logged on the wire (the FCS values are the ones the
# jDLMS FCS test records for these frames).
SNRM = bytes.fromhex("7ea00a00020023219318717e")
UA = bytes.fromhex("7ea023210002002373f6c58180140502008006020080070400000001080400000001ce6a7e")
AARQ_I = bytes.fromhex(
    "7ea02e0002002321107ecbe6e600601da109060760857405080101be10040e01000000065f1f040000301d"
    "ffffd4c57e"
)
AARE_I = bytes.fromhex(
    "7ea03a2100020023309941e6e7006129a109060760857405080101a203020100a305a103020100be10040e"
    "0800065f1f040000301d190000070c527e"
)
SESSION = [
    bytes.fromhex(h)
    for h in (
        "7ea0199575546835e6e600c0018100080000010000ff01000dfd7e",
        "7ea018759574e9e8e6e700c401810009060000010000fffd497e",
        "7ea0199575767837e6e600c0018100080000010000ff020065d77e",
        "7ea01e7595966f67e6e700c4018100090c07d20c04030a060bff007800f3307e",
        "7ea0107595b85101e6e700c501810036cf7e",
        "7ea0127595b82738e6e700c401810016012d077e",
    )
]
# SNRM from an example of IEC 62056-46 parameter negotiation: client 16, server 1/17,
# proposing 128/128 bytes and windows 1/7.
SNRM_NEGOTIATING = bytes.fromhex(
    "7ea0210002002321931964818012050180060180070400000001080400000007655e7e"
)
# The same without negotiation, client 120.
SNRM_120 = bytes.fromhex("7ea00a00020023f193232e7e")
CAPTURES = [SNRM, UA, AARQ_I, AARE_I, *SESSION, SNRM_NEGOTIATING, SNRM_120]


# -- FCS -------------------------------------------------------------------------------------


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


FCS_TABLE = _table()


def fcs_by_table(data: bytes) -> int:
    """The table-driven FCS of IEC 62056-46 (and RFC 1662), the reference for ours."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ FCS_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def test_fcs_check_value() -> None:
    assert fcs16(b"123456789") == 0x906E  # CRC-16/X-25 check value
    assert fcs16(b"") == 0x0000


@pytest.mark.parametrize("frame", CAPTURES, ids=lambda f: f[:8].hex())
def test_fcs_of_captures(frame: bytes) -> None:
    assert fcs16(frame[1:-3]).to_bytes(2, "little") == frame[-3:-1]


@given(st.binary(max_size=2100))
def test_fcs_equals_table_and_gurux(data: bytes) -> None:
    ours = fcs16(data)
    assert ours == fcs_by_table(data)
    # gurux returns the FCS byte-swapped and writes it big-endian: the same bytes on the wire.
    assert ours.to_bytes(2, "little") == _GXFCS16.countFCS16(data, 0, len(data)).to_bytes(2, "big")
    assert fcs16(bytearray(data)) == ours


# -- addresses -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "raw"),
    [
        (HdlcAddress.client(16), "21"),  # public client
        (HdlcAddress.client(1), "03"),  # management client
        (HdlcAddress.server(1), "03"),  # management logical device, no physical part
        (HdlcAddress.server(0x7F), "ff"),  # all-station
        (HdlcAddress.server(1, 17), "0223"),
        (HdlcAddress.server(1, 17, 4), "00020023"),
        (HdlcAddress.server(0x3FFF, 0x3FFF), "fefefeff"),
        (HdlcAddress.server(0x80, 0x2A5), "02000a4b"),
    ],
)
def test_address_encoding(address: HdlcAddress, raw: str) -> None:
    assert address.encode().hex() == raw


@given(st.integers(1, 0x7F), st.integers(0, 0x7F))
def test_two_byte_address_matches_gurux(logical: int, physical: int) -> None:
    value = GXDLMSClient.getServerAddress(logical, physical, 2)
    assert bytes(GXDLMS.getAddressBytes(value, 2)) == HdlcAddress(logical, physical, 2).raw


@given(st.integers(1, 0x3FFF), st.integers(0, 0x3FFF))
def test_four_byte_address_matches_gurux(logical: int, physical: int) -> None:
    # gurux writes a "4-byte" address on fewer bytes when the value is small (logical 0), so
    # the cross-check starts at logical 1.
    value = GXDLMSClient.getServerAddress(logical, physical, 4)
    assert bytes(GXDLMS.getAddressBytes(value, 4)) == HdlcAddress(logical, physical, 4).raw


@pytest.mark.parametrize(
    ("logical", "physical", "size"),
    [
        (0x80, None, 1),
        (1, 1, 1),
        (1, None, 2),
        (0x80, 1, 2),
        (1, 0x80, 2),
        (0x4000, 1, 4),
        (1, 1, 3),
    ],
)
def test_impossible_addresses_are_local_errors(
    logical: int, physical: int | None, size: int
) -> None:
    with pytest.raises(LocalProtocolError):
        HdlcAddress(logical, physical, size)


def test_server_address_size_is_inferred() -> None:
    assert HdlcAddress.server(1).size == 1
    assert HdlcAddress.server(1, 17).size == 2
    assert HdlcAddress.server(1, 0x80).size == 4


# -- control field ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "expected"),
    [
        (control_u(FrameType.SNRM, True), 0x93),
        (control_u(FrameType.UA, True), 0x73),
        (control_u(FrameType.DISC, True), 0x53),
        (control_u(FrameType.DM, True), 0x1F),
        (control_u(FrameType.FRMR, True), 0x97),
        (control_u(FrameType.UI, False), 0x03),
        (control_u(FrameType.UI, True), 0x13),
        (control_i(0, 0, True), 0x10),
        (control_i(2, 2, True), 0x54),  # from the session capture
        (control_i(4, 3, False), 0x68),
        (control_s(FrameType.RR, 2, True), 0x51),
        (control_s(FrameType.RNR, 7, False), 0xE5),
    ],
)
def test_control_values(control: int, expected: int) -> None:
    assert control == expected


def test_control_helpers_refuse_the_wrong_kind() -> None:
    with pytest.raises(LocalProtocolError):
        control_s(FrameType.UA, 0, True)
    with pytest.raises(LocalProtocolError):
        control_s(FrameType.RR, 8, True)
    with pytest.raises(LocalProtocolError):
        HdlcFrame(SERVER, CLIENT, 0x100)
    with pytest.raises(LocalProtocolError):
        control_u(FrameType.RR, True)
    with pytest.raises(LocalProtocolError):
        control_i(8, 0, True)


@pytest.mark.parametrize("control", range(256))
def test_every_control_byte_is_a_known_kind_or_refused(control: int) -> None:
    try:
        frame = HdlcFrame(SERVER, CLIENT, control)
    except LocalProtocolError:
        # REJ, SREJ and the unnumbered frames DLMS does not use
        assert control & 0x03 != 0x00
        return
    kind = frame.kind
    if kind is FrameType.I:
        assert control == control_i(frame.send_sequence, frame.receive_sequence, frame.poll_final)
    elif kind in (FrameType.RR, FrameType.RNR):
        assert control == control_s(kind, frame.receive_sequence, frame.poll_final)
    else:
        assert control == control_u(kind, frame.poll_final)


def test_session_capture_sequence_numbers() -> None:
    frames = [decode_frame(raw) for raw in SESSION]
    assert [(f.send_sequence, f.receive_sequence) for f in frames] == [
        (2, 2),
        (2, 3),
        (3, 3),
        (3, 4),
        (4, 5),
        (4, 5),
    ]
    assert all(f.kind is FrameType.I and f.poll_final for f in frames)


# -- frames ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", CAPTURES, ids=lambda f: f[:8].hex())
def test_captures_decode_and_encode_back(raw: bytes) -> None:
    assert decode_frame(raw).encode() == raw


def test_capture_fields() -> None:
    snrm = decode_frame(SNRM)
    assert (snrm.destination, snrm.source, snrm.kind, snrm.poll_final, snrm.info) == (
        SERVER,
        CLIENT,
        FrameType.SNRM,
        True,
        b"",
    )
    ua = decode_frame(UA)
    assert (ua.destination, ua.source, ua.kind) == (CLIENT, SERVER, FrameType.UA)
    assert HdlcParameters.decode(ua.info) == HdlcParameters()
    aarq = decode_frame(AARQ_I)
    assert (aarq.kind, aarq.send_sequence, aarq.receive_sequence) == (FrameType.I, 0, 0)
    assert strip_llc(aarq.info, response=False)[:2] == b"\x60\x1d"  # AARQ tag and length
    aare = decode_frame(AARE_I)
    assert (aare.send_sequence, aare.receive_sequence) == (0, 1)
    assert strip_llc(aare.info, response=True)[:2] == b"\x61\x29"
    negotiating = decode_frame(SNRM_NEGOTIATING)
    assert negotiating.source == CLIENT
    assert decode_frame(SNRM_120).source == HdlcAddress.client(120)
    assert HdlcParameters.decode(negotiating.info) == HdlcParameters(128, 128, 1, 7)


def test_segmented_frame_round_trip() -> None:
    frame = HdlcFrame(CLIENT, SERVER, control_i(1, 2, True), b"x" * 100, segmented=True)
    raw = frame.encode()
    assert raw[1] == 0xA8  # the S bit
    assert decode_frame(raw) == frame


@pytest.mark.parametrize(
    ("control", "info", "segmented"),
    [
        (control_s(FrameType.RR, 0, True), b"x", False),  # S frames carry no information
        (control_u(FrameType.SNRM, True), b"", True),  # only I and UI are segmented
        (0x09, b"", False),  # REJ
    ],
)
def test_invalid_frames_are_local_errors(control: int, info: bytes, segmented: bool) -> None:
    with pytest.raises(LocalProtocolError):
        HdlcFrame(SERVER, CLIENT, control, info, segmented)


def test_longest_frame() -> None:
    overhead = HdlcFrame(SERVER, CLIENT, 0x10, b"x").length - 1
    longest = HdlcFrame(SERVER, CLIENT, 0x10, b"x" * (MAX_FRAME_LENGTH - overhead))
    assert longest.length == MAX_FRAME_LENGTH
    assert decode_frame(longest.encode()) == longest
    with pytest.raises(LocalProtocolError, match="exceeds"):
        HdlcFrame(SERVER, CLIENT, 0x10, b"x" * (MAX_FRAME_LENGTH - overhead + 1))


def test_decode_frame_wants_exactly_one_frame() -> None:
    for raw in (SNRM + b"\x00", b"\x00" + SNRM, SNRM[:-1], SNRM + SNRM[1:]):
        with pytest.raises(RemoteProtocolError, match="not exactly one frame"):
            decode_frame(raw)


# -- gurux reads our frames, we read gurux's ------------------------------------------------


def gurux_client(logical: int, physical: int, size: int) -> GXDLMSClient:
    address = GXDLMSClient.getServerAddress(logical, physical, size)
    client = GXDLMSClient(True, 16, address, Authentication.NONE, None, InterfaceType.HDLC)
    client.serverAddressSize = size
    return client


@pytest.mark.parametrize("size", [2, 4])
def test_we_decode_gurux_frames(size: int) -> None:
    gurux = gurux_client(1, 17, size)
    snrm = decode_frame(bytes(gurux.snrmRequest()))
    assert (snrm.destination, snrm.source, snrm.kind) == (
        HdlcAddress(1, 17, size),
        CLIENT,
        FrameType.SNRM,
    )
    (aarq_raw,) = gurux.aarqRequest()
    aarq = decode_frame(bytes(aarq_raw))
    assert (aarq.kind, aarq.send_sequence, aarq.receive_sequence, aarq.poll_final) == (
        FrameType.I,
        0,
        0,
        True,
    )
    assert aarq.info[:3] == LLC_COMMAND
    wrapper = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    assert strip_llc(aarq.info, response=False) == bytes(wrapper.aarqRequest()[0])[8:]
    disc = decode_frame(bytes(gurux.disconnectRequest(True)))
    assert (disc.kind, disc.poll_final, disc.info) == (FrameType.DISC, True, b"")


def gurux_value(address: HdlcAddress) -> int:
    """How gurux writes an HDLC address as one number."""
    if address.physical is None:
        return address.logical
    return address.logical << (7 if address.size == 2 else 14) | address.physical


@pytest.mark.parametrize(
    "server",
    [
        HdlcAddress.server(1),
        HdlcAddress.server(1, 17),
        HdlcAddress.server(1, 17, 4),
        HdlcAddress.server(0x3FFF, 0x3FFF, 4),
    ],
    ids=lambda a: a.raw.hex(),
)
@pytest.mark.parametrize(
    ("control", "info", "from_client", "tag"),
    [
        (0x93, b"", True, "<Snrm>"),
        (0x93, HdlcParameters(512, 256, 1, 1).encode(), True, '<MaxInfoTX Value="512" />'),
        (0x53, b"", True, "<DisconnectRequest>"),
        (0x73, HdlcParameters().encode(omit_defaults=False), False, '<WindowSizeRX Value="1" />'),
        (0x10, decode_frame(AARQ_I).info, True, "<AssociationRequest>"),
        (0x30, decode_frame(AARE_I).info, False, "<AssociationResponse>"),
    ],
    ids=["snrm", "snrm-params", "disc", "ua", "aarq", "aare"],
)
def test_gurux_translator_reads_our_frames(
    server: HdlcAddress, control: int, info: bytes, from_client: bool, tag: str
) -> None:
    ends = (server, CLIENT) if from_client else (CLIENT, server)
    xml = GXDLMSTranslator().messageToXml(GXByteBuffer(HdlcFrame(*ends, control, info).encode()))
    target, source = (gurux_value(a) for a in ends)
    assert f'<TargetAddress Value="{target:X}" />' in xml
    assert f'<SourceAddress Value="{source:X}" />' in xml
    assert f'<FrameType Value="{control:02X}" />' in xml
    assert tag in xml


# -- framer: four ways -----------------------------------------------------------------------

# SNRM, UA and AARQ with their own flags, then two session frames sharing one flag, with some
# inter-frame fill: what a line carries.
STREAM = SNRM + UA + b"\x7e" + AARQ_I + SESSION[0] + SESSION[1][1:]
STREAM_FRAMES = [decode_frame(f) for f in (SNRM, UA, AARQ_I, SESSION[0], SESSION[1])]


def drain(framer: HdlcFramer) -> list[HdlcFrame]:
    out = []
    while (frame := framer.next_frame()) is not None:
        out.append(frame)
    return out


def feed(framer: HdlcFramer, *chunks: bytes) -> list[HdlcFrame]:
    out = []
    for chunk in chunks:
        framer.receive_data(chunk)
        out.extend(drain(framer))
    return out


def test_whole_input() -> None:
    framer = HdlcFramer()
    assert feed(framer, STREAM) == STREAM_FRAMES
    assert framer.discarded_bytes == 0
    assert not framer.pending  # the last closing flag alone does not count


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_in_two(cut: int) -> None:
    assert feed(HdlcFramer(), STREAM[:cut], STREAM[cut:]) == STREAM_FRAMES


def test_byte_by_byte() -> None:
    framer = HdlcFramer()
    assert feed(framer, *(bytes((b,)) for b in STREAM)) == STREAM_FRAMES
    assert framer.discarded_bytes == 0


def test_trailing_bytes_wait() -> None:
    framer = HdlcFramer()
    assert feed(framer, SNRM + UA[:10]) == STREAM_FRAMES[:1]
    assert framer.pending
    assert feed(framer, UA[10:]) == STREAM_FRAMES[1:2]


# -- framer: errors and resync ---------------------------------------------------------------


def test_noise_before_and_between_frames_is_skipped_and_counted() -> None:
    framer = HdlcFramer()
    noise = b"\x00\x01\xa0\x7e\x42\x13"  # includes a flag followed by no format field
    assert feed(framer, noise + SNRM + noise[:3] + UA) == STREAM_FRAMES[:2]
    assert framer.discarded_bytes == len(noise) + 3


def test_bad_fcs_raises_then_the_framer_goes_on() -> None:
    framer = HdlcFramer()
    bad = bytearray(AARQ_I)
    bad[-2] ^= 0x01
    framer.receive_data(bytes(bad) + SNRM)
    with pytest.raises(RemoteProtocolError, match="FCS"):
        framer.next_frame()
    assert drain(framer) == [decode_frame(SNRM)]


def test_bad_hcs_raises_then_the_framer_goes_on() -> None:
    framer = HdlcFramer()
    bad = bytearray(AARQ_I)
    bad[8] ^= 0x01  # second HCS byte
    framer.receive_data(bytes(bad) + SNRM)
    with pytest.raises(RemoteProtocolError, match="HCS"):
        framer.next_frame()
    assert drain(framer) == [decode_frame(SNRM)]


def test_missing_closing_flag_raises_then_the_framer_goes_on() -> None:
    framer = HdlcFramer()
    framer.receive_data(SNRM[:-1] + b"\x00" + SNRM)
    with pytest.raises(RemoteProtocolError, match="no closing flag"):
        framer.next_frame()
    assert drain(framer) == [decode_frame(SNRM)]


@pytest.mark.parametrize(
    ("control", "info", "segmented", "error"),
    [
        (0x09, b"", False, "not used by DLMS"),  # REJ
        (0x01, b"x", False, "information field"),  # RR with info
        (0x93, b"", True, "segmentation bit"),  # segmented SNRM
    ],
)
def test_well_delimited_invalid_frame_raises_then_goes_on(
    control: int, info: bytes, segmented: bool, error: str
) -> None:
    header = bytes((0xA8 if segmented else 0xA0, 0)) + SERVER.raw + CLIENT.raw + bytes((control,))
    body = header + (fcs16(header).to_bytes(2, "little") + info if info else b"")
    body = bytes((body[0], len(body) + 2)) + body[2:]
    if info:  # the length changed: recompute the HCS
        head = body[: len(header)]
        body = head + fcs16(head).to_bytes(2, "little") + info
    raw = b"\x7e" + body + fcs16(body).to_bytes(2, "little") + b"\x7e"
    framer = HdlcFramer()
    framer.receive_data(raw + SNRM[1:])  # shared flag
    with pytest.raises(RemoteProtocolError, match=error):
        framer.next_frame()
    assert drain(framer) == [decode_frame(SNRM)]


def test_noise_claiming_a_long_frame_does_not_stall_the_next_one() -> None:
    # 7E A7 FF says "2047 bytes follow"; the real frame behind it must come out without
    # waiting for 2 KiB (its flag is no valid address, or the HCS fails).
    for noise in (b"\x7e\xa7\xff", b"\x7e\xa7\xff\x03\x21\x10\x00\x00"):
        framer = HdlcFramer()
        framer.receive_data(noise + SNRM_120)
        frames = []
        for _ in range(len(noise) + 2):
            try:
                frame = framer.next_frame()
            except RemoteProtocolError:
                continue
            if frame is None:
                break
            frames.append(frame)
        assert frames == [decode_frame(SNRM_120)]


def test_buffer_is_capped() -> None:
    framer = HdlcFramer(max_buffer=MAX_FRAME_LENGTH + 2)
    framer.receive_data(SNRM[:5])
    with pytest.raises(RemoteProtocolError, match="buffered at most"):
        framer.receive_data(bytes(MAX_FRAME_LENGTH))
    assert feed(framer, SNRM) == [decode_frame(SNRM)]
    with pytest.raises(LocalProtocolError):
        HdlcFramer(max_buffer=100)


def test_reset_drops_a_partial_frame() -> None:
    framer = HdlcFramer()
    framer.receive_data(UA[:10])
    assert framer.reset() == 10
    assert feed(framer, SNRM) == [decode_frame(SNRM)]


# -- framer: properties ----------------------------------------------------------------------


def addresses() -> st.SearchStrategy[HdlcAddress]:
    return st.one_of(
        st.builds(HdlcAddress, st.integers(0, 0x7F)),
        st.builds(HdlcAddress, st.integers(0, 0x7F), st.integers(0, 0x7F), st.just(2)),
        st.builds(HdlcAddress, st.integers(0, 0x3FFF), st.integers(0, 0x3FFF), st.just(4)),
    )


@st.composite
def frames(draw: st.DrawFn, max_info: int = 300) -> HdlcFrame:
    destination, source = draw(addresses()), draw(addresses())
    kind = draw(st.sampled_from(list(FrameType)))
    pf = draw(st.booleans())
    if kind is FrameType.I:
        control = control_i(draw(st.integers(0, 7)), draw(st.integers(0, 7)), pf)
    elif kind in (FrameType.RR, FrameType.RNR):
        control = control_s(kind, draw(st.integers(0, 7)), pf)
    else:
        control = control_u(kind, pf)
    info = b"" if kind in (FrameType.RR, FrameType.RNR) else draw(st.binary(max_size=max_info))
    segmented = kind in (FrameType.I, FrameType.UI) and draw(st.booleans())
    return HdlcFrame(destination, source, control, info, segmented)


@given(frames())
def test_frame_round_trip(frame: HdlcFrame) -> None:
    assert decode_frame(frame.encode()) == frame


@settings(max_examples=30)
@given(frames(max_info=2030))
def test_long_frame_round_trip(frame: HdlcFrame) -> None:
    assert decode_frame(frame.encode()) == frame


@given(
    st.lists(frames(), min_size=1, max_size=6),
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\x7e", b"")), max_size=6),
    st.booleans(),
    st.data(),
)
def test_stream_round_trip(
    sent: list[HdlcFrame], noise: list[bytes], share_flags: bool, data: st.DataObject
) -> None:
    """Frames with flag-free noise between them and random chunking all come through.

    Noise right after a closing flag may look like the start of a frame; the framer then raises
    for that candidate and goes on, and the frames still all come out.
    """
    parts = []
    for i, frame in enumerate(sent):
        raw = frame.encode()
        parts.append(noise[i] if i < len(noise) else b"")
        parts.append(raw[1:] if share_flags and i and not parts[-1] else raw)
    stream = b"".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    framer = HdlcFramer()
    received, errors = feed_through_errors(framer, *chunks)
    assert received == sent
    noise_bytes = sum(len(n) for n in noise[: len(sent)])
    assert framer.discarded_bytes == noise_bytes
    assert noise_bytes or not errors


def feed_through_errors(framer: HdlcFramer, *chunks: bytes) -> tuple[list[HdlcFrame], int]:
    """Feed and drain like a caller that logs errors and goes on."""
    out, errors = [], 0
    for chunk in chunks:
        try:
            framer.receive_data(chunk)
        except RemoteProtocolError:
            errors += 1
        for _ in range(len(framer._buffer) + 2):  # a call consumes a byte or more, or waits
            try:
                frame = framer.next_frame()
            except RemoteProtocolError:
                errors += 1
                continue
            if frame is None:
                break
            out.append(frame)
        else:
            pytest.fail("the framer neither consumed nor waited")
    return out, errors


@settings(max_examples=400)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            frames().map(lambda f: f.encode()),
            # damaged frames: one byte changed
            st.tuples(frames(), st.integers(0, 2047), st.integers(1, 255)).map(
                lambda t: _flip(t[0].encode(), t[1], t[2])
            ),
        ),
        max_size=10,
    )
)
def test_garbage_yields_only_remote_errors(chunks: list[bytes]) -> None:
    framer = HdlcFramer(max_buffer=4 * (MAX_FRAME_LENGTH + 2))
    started = time.perf_counter()
    for chunk in chunks:
        with contextlib.suppress(RemoteProtocolError):
            framer.receive_data(chunk)
        for _ in range(len(framer._buffer) + 2):  # a call consumes a byte or more, or waits
            try:
                if framer.next_frame() is None:
                    break
            except RemoteProtocolError:
                continue
        else:
            pytest.fail("the framer neither consumed nor waited")
        assert len(framer._buffer) <= framer.max_buffer
    assert time.perf_counter() - started < 1.0


def _flip(raw: bytes, at: int, mask: int) -> bytes:
    at %= len(raw)
    return raw[:at] + bytes((raw[at] ^ mask,)) + raw[at + 1 :]


# -- parameter negotiation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tx", "rx", "window_tx", "window_rx"),
    [(128, 128, 1, 1), (512, 128, 1, 1), (128, 2030, 1, 7), (32, 64, 7, 3), (1024, 1024, 7, 7)],
)
def test_snrm_parameters_match_gurux(tx: int, rx: int, window_tx: int, window_rx: int) -> None:
    gurux = gurux_client(1, 17, 2)
    hdlc = gurux.hdlcSettings
    hdlc.maxInfoTX, hdlc.maxInfoRX, hdlc.windowSizeTX, hdlc.windowSizeRX = (
        tx,
        rx,
        window_tx,
        window_rx,
    )
    info = decode_frame(bytes(gurux.snrmRequest())).info
    assert HdlcParameters(tx, rx, window_tx, window_rx).encode() == info
    assert HdlcParameters.decode(info) == HdlcParameters(tx, rx, window_tx, window_rx)


def test_parameters_with_every_value() -> None:
    encoded = HdlcParameters().encode(omit_defaults=False)
    assert encoded.hex() == "818012050180060180070400000001080400000001"
    assert HdlcParameters().encode() == b""
    assert HdlcParameters.decode(b"") == HdlcParameters()


def test_answer_takes_the_minimum() -> None:
    meter = HdlcParameters(max_info_transmit=256, max_info_receive=512, window_transmit=1)
    proposal = HdlcParameters(max_info_transmit=1024, max_info_receive=128, window_receive=7)
    assert meter.answer(proposal) == HdlcParameters(128, 512, 1, 1)
    assert meter.answer(proposal).mirrored() == HdlcParameters(512, 128, 1, 1)


@pytest.mark.parametrize(
    ("info", "error"),
    [
        ("8180", "expected 81 80"),
        ("828003050180", "expected 81 80"),
        ("818004050180", "group length"),
        ("81800105", "truncated"),
        ("818003050280", "does not fit"),
        ("8180020500", "does not fit"),
        ("81800305011f", "below the minimum"),  # 31 bytes
        ("818006070400000000", "below the minimum"),  # window 0
    ],
)
def test_bad_parameters_are_remote_errors(info: str, error: str) -> None:
    with pytest.raises(RemoteProtocolError, match=error):
        HdlcParameters.decode(bytes.fromhex(info))


def test_parameters_above_the_maximum_are_clamped_and_unknown_ones_skipped() -> None:
    info = bytes.fromhex("8180100502ffff0304deadbeef080400000009")
    assert HdlcParameters.decode(info) == HdlcParameters(2030, 128, 1, 7)


@pytest.mark.parametrize(
    "values", [(31, 128, 1, 1), (128, 2031, 1, 1), (128, 128, 0, 1), (128, 128, 1, 8)]
)
def test_out_of_range_parameters_are_local_errors(values: tuple[int, int, int, int]) -> None:
    with pytest.raises(LocalProtocolError):
        HdlcParameters(*values)


parameters = st.builds(
    HdlcParameters,
    st.integers(32, 2030),
    st.integers(32, 2030),
    st.integers(1, 7),
    st.integers(1, 7),
)


@given(parameters, st.booleans())
def test_parameters_round_trip(params: HdlcParameters, omit_defaults: bool) -> None:
    assert HdlcParameters.decode(params.encode(omit_defaults=omit_defaults)) == params


@given(st.binary(max_size=40))
def test_parameter_garbage_yields_only_remote_errors(info: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        HdlcParameters.decode(info)


# -- LLC -------------------------------------------------------------------------------------


def test_llc_helpers() -> None:
    assert add_llc(b"\xc0", response=False) == LLC_COMMAND + b"\xc0"
    assert add_llc(b"\xc4", response=True) == LLC_RESPONSE + b"\xc4"
    assert strip_llc(LLC_RESPONSE + b"\xc4", response=True) == b"\xc4"
    with pytest.raises(RemoteProtocolError, match="LLC header e6 e6 00"):
        strip_llc(LLC_COMMAND + b"\xc4", response=True)
    with pytest.raises(RemoteProtocolError):
        strip_llc(b"\xe6", response=False)
