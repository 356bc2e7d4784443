"""IEC 62056-21 protocol mode E handshake: messages, client, meter, timing, garbage.

Fixtures are bytes seen on real links (see each one's note). gurux-dlms has no IEC 62056-21
code (its example readers do the handshake by hand), so Gurux's readers are the oracle for what
a client sends: ``/?!<CR><LF>`` and ``ACK 2 Z 2 <CR><LF>``.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.iec62056_21 import (
    BAUD_RATES,
    HANDSHAKE_LINE,
    TA_MAX,
    TR_MAX,
    TT_MAX,
    ClientState,
    Event,
    HandshakeComplete,
    IdentificationMessage,
    Ignored,
    LineSettings,
    MeterState,
    OpticalClientHandshake,
    OpticalMeterHandshake,
    OptionSelectMessage,
    RequestMessage,
    SwitchLine,
    TimedOut,
    Transmit,
    _MessageReader,
    hdlc_line,
)

# The sign-on Gurux's example readers send (GXDLMSReader.initializeOpticalHead: "/?!\r\n").
SIGN_ON = bytes.fromhex("2f3f210d0a")
# Their option select for mode E at 9600 Bd: [0x06, '2', '5', '2', 13, 10].
ACK_252 = bytes.fromhex("063235320d0a")
# The identification line of an Iskra MT382 as printed in the DSMR P1 companion standard's
# example telegram: "/ISk5\2MT382-1000" (lower-case k: tr >= 20 ms; \2: HDLC offered).
ISKRA = bytes.fromhex("2f49536b355c324d543338322d313030300d0a")
# A meter firmware's trace of a Gurux client session (public source, in its comments): in
# "2F3F210D0A2F3F210D0A", out "3F3F2F564D51355C320D0A..." (the firmware puts "??" before its
# identification "/VMQ5\2"), in "063235320D0A", then SNRM ~500 ms later at 9600 Bd.
TRACE_SIGN_ONS = bytes.fromhex("2f3f210d0a2f3f210d0a")
TRACE_IDENTIFICATION = bytes.fromhex("3f3f2f564d51355c320d0a")
# The same firmware's note of ACK 2 5 2 as read on an 8N1 port: even parity in bit 7.
ACK_252_PARITY_IN_BIT7 = bytes.fromhex("06b235b28d0a")

CHAR = 10 / 300  # one character at 300 Bd 7E1
ACK_AIRTIME = LineSettings(300, 7, "E", 1).airtime(6)  # 200 ms
ISKRA_ID = IdentificationMessage("ISk", "5", "\\2MT382-1000")
MASK = bytes(b & 0x7F for b in range(256))
ADD_PARITY = bytes((b & 0x7F) | ((bin(b & 0x7F).count("1") & 1) << 7) for b in range(256))


def meaningful(events: list[Event]) -> list[Event]:
    return [e for e in events if not isinstance(e, Ignored)]


def signed_on(address: str = "", max_baud: int | None = None) -> OpticalClientHandshake:
    client = OpticalClientHandshake(address, max_baud=max_baud)
    client.sign_on(0.0)
    return client


def answered(identification: IdentificationMessage = ISKRA_ID) -> OpticalMeterHandshake:
    meter = OpticalMeterHandshake(identification)
    meter.receive_data(SIGN_ON, 0.0)
    return meter


# -- messages --------------------------------------------------------------------------------


def test_messages_encode_as_gurux_and_the_iskra_meter_do() -> None:
    assert RequestMessage().encode() == SIGN_ON
    assert OptionSelectMessage.mode_e("5").encode() == ACK_252
    assert ISKRA_ID.encode() == ISKRA
    assert RequestMessage("12345678").encode() == b"/?12345678!\r\n"


def test_the_iskra_identification_decodes() -> None:
    ident = IdentificationMessage.decode(ISKRA)
    assert ident == ISKRA_ID
    assert str(ident) == "/ISk5\\2MT382-1000"
    assert ident.enhanced_ids == "2"
    assert ident.supports_hdlc
    assert ident.baud_rate == 9600
    assert ident.reaction_time == pytest.approx(0.020)  # lower-case third letter


def test_option_select_decodes() -> None:
    option = OptionSelectMessage.decode(ACK_252)
    assert option == OptionSelectMessage("2", "5", "2")
    assert option.is_mode_e
    assert not OptionSelectMessage("0", "5", "0").is_mode_e  # mode C data readout


def test_identification_with_several_escapes_and_no_hdlc() -> None:
    ident = IdentificationMessage.decode(b"/LGZ4\\T\\2ZMD\r\n")
    assert ident.enhanced_ids == "T2"
    assert ident.supports_hdlc
    assert ident.reaction_time == pytest.approx(0.200)
    plain = IdentificationMessage.decode(b"/LGZ5ZMD3104107\r\n")
    assert not plain.supports_hdlc
    assert IdentificationMessage.decode(b"/ABCAxyz\r\n").baud_rate is None  # mode B


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: RequestMessage("x" * 33), "33 characters"),
        (lambda: RequestMessage("12-3"), "'-' at offset 4"),
        (lambda: RequestMessage("é"), "device address"),
        (lambda: IdentificationMessage("AB", "5"), "not 3 letters"),
        (lambda: IdentificationMessage("A1C", "5"), "'1' at offset 2"),
        (lambda: IdentificationMessage("ABC", "/"), "baud rate character"),
        (lambda: IdentificationMessage("ABC", "55"), "not 1 character"),
        (lambda: IdentificationMessage("ABC", "5", "x" * 17), "17 characters"),
        (lambda: IdentificationMessage("ABC", "5", "a!b"), "'!' at offset 6"),
        (lambda: IdentificationMessage("ABC", "5", "ab\\"), "after '\\'"),
        (lambda: IdentificationMessage("ABC", "5", "\\\\x"), "after '\\'"),
        (lambda: IdentificationMessage("ABC", "5", "\u00e9"), "identification character"),
        (lambda: OptionSelectMessage("A", "5", "2"), "protocol control character"),
        (lambda: OptionSelectMessage("2", "A", "2"), "baud rate character"),
        (lambda: OptionSelectMessage("2", "5", "a"), "mode control character"),
        (lambda: OptionSelectMessage("2", "", "2"), "not one character"),
        (lambda: LineSettings(110, 7, "E", 1), "baud rate 110"),
        (lambda: LineSettings(300, 7, "N", 1), "7N"),
        (lambda: LineSettings(300, 8, "N", 2), "stop bits"),
        (lambda: SwitchLine(HANDSHAKE_LINE, after=-1.0), "negative"),
        (lambda: Transmit(b""), "nothing"),
        (lambda: OpticalClientHandshake(max_baud=115200), "max_baud"),
        (lambda: OpticalClientHandshake(switch_guard=-1), "switch_guard"),
        (lambda: OpticalMeterHandshake(IdentificationMessage("ABC", "E")), "modes C and E"),
        (lambda: OpticalMeterHandshake(ISKRA_ID, "bad-address"), "device address"),
    ],
)
def test_what_we_build_wrong_is_a_local_error(make: Callable[[], object], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words.replace("\\", "\\\\")):
        make()


@pytest.mark.parametrize(
    ("decode", "line"),
    [
        (RequestMessage.decode, b"/?!\n"),
        (RequestMessage.decode, b"/X!\r\n"),
        (RequestMessage.decode, b"/?12\r\n"),
        (RequestMessage.decode, b"/?1\x002!\r\n"),
        (RequestMessage.decode, b"/?" + b"1" * 33 + b"!\r\n"),
        (RequestMessage.decode, b""),
        (IdentificationMessage.decode, b"/IS\r\n"),
        (IdentificationMessage.decode, b"XISk5\r\n"),
        (IdentificationMessage.decode, b"/I5k5\\2\r\n"),
        (IdentificationMessage.decode, b"/ISk5\\\r\n"),
        (IdentificationMessage.decode, b"/ISk5\\2\x85\r\n"),
        (IdentificationMessage.decode, b"/ISk5" + b"x" * 17 + b"\r\n"),
        (IdentificationMessage.decode, b"/ISk5abc\n\n"),
        (IdentificationMessage.decode, b""),
        (OptionSelectMessage.decode, b"\x0625\r\n"),
        (OptionSelectMessage.decode, b"\x15252\r\n"),
        (OptionSelectMessage.decode, b"\x062\x002\r\n"),
        (OptionSelectMessage.decode, b"\x062X2\r\n"),
        (OptionSelectMessage.decode, b"\x06252\r\r"),
        (OptionSelectMessage.decode, b""),
    ],
)
def test_malformed_messages_are_remote_errors(
    decode: Callable[[bytes], object], line: bytes
) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(line)


ADDRESSES = st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz ", max_size=32)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
IDENT_CHAR = st.sampled_from([chr(c) for c in range(0x20, 0x7F) if chr(c) not in "/!\\"])
IDENTIFICATIONS = (
    st.lists(st.one_of(IDENT_CHAR, IDENT_CHAR.map(lambda w: "\\" + w)), max_size=16)
    .map("".join)
    .filter(lambda text: len(text) <= 16)
)
IDENTIFICATION_MESSAGES = st.builds(
    IdentificationMessage,
    st.text(LETTERS, min_size=3, max_size=3),
    st.sampled_from("0123456"),
    IDENTIFICATIONS,
)
OPTION_SELECTS = st.builds(
    OptionSelectMessage,
    st.sampled_from("0123456789"),
    st.sampled_from("0123456789"),
    st.sampled_from("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
)


@given(ADDRESSES, IDENTIFICATION_MESSAGES, OPTION_SELECTS)
def test_messages_round_trip(
    address: str, ident: IdentificationMessage, option: OptionSelectMessage
) -> None:
    assert RequestMessage.decode(RequestMessage(address).encode()) == RequestMessage(address)
    assert IdentificationMessage.decode(ident.encode()) == ident
    assert OptionSelectMessage.decode(option.encode()) == option


@given(st.binary(max_size=48))
def test_garbage_into_the_decoders_gives_only_remote_errors(data: bytes) -> None:
    for decode in (RequestMessage.decode, IdentificationMessage.decode, OptionSelectMessage.decode):
        with contextlib.suppress(RemoteProtocolError):
            decode(data)


# -- the message reader, four ways ------------------------------------------------------------


def read_all(reader: _MessageReader, chunks: list[bytes], starts: bytes) -> list[bytes]:
    lines = []
    for chunk in chunks:
        reader.feed(chunk)
        while (line := reader.next_message(starts, 40)[1]) is not None:
            lines.append(line)
    return lines


def splits(data: bytes) -> list[list[bytes]]:
    """Whole; in two at every position; byte by byte."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


@pytest.mark.parametrize("message", [SIGN_ON, ISKRA, ACK_252, b"/?00012345!\r\n"])
def test_the_reader_cuts_messages_four_ways(message: bytes) -> None:
    starts = b"/\x06"
    for chunks in splits(message):
        assert read_all(_MessageReader(False), chunks, starts) == [message]
    reader = _MessageReader(False)
    assert read_all(reader, [message + b"/?12"], starts) == [message]
    assert reader.pending == 4  # trailing bytes wait for the rest of their message
    assert read_all(reader, [b"!\r\n"], starts) == [b"/?12!\r\n"]


def test_the_reader_masks_bit_7_or_checks_even_parity() -> None:
    assert read_all(_MessageReader(False), [ACK_252_PARITY_IN_BIT7], b"\x06") == [ACK_252]
    assert read_all(_MessageReader(True), [ACK_252_PARITY_IN_BIT7], b"\x06") == [ACK_252]
    with pytest.raises(RemoteProtocolError, match="parity error: byte 0x32 at offset 3"):
        read_all(_MessageReader(True), [b"\x06", b"\xb2\x35\x32"], b"\x06")


def test_the_reader_is_bounded() -> None:
    reader = _MessageReader(False)
    reader.feed(b"/" + b"x" * 38)
    assert reader.next_message(b"/", 40) == (b"", None)
    reader.feed(b"x")
    with pytest.raises(RemoteProtocolError, match="no <CR><LF> within 40 bytes"):
        reader.next_message(b"/", 40)
    reader = _MessageReader(False)
    reader.feed(b"/" + b"x" * 45 + b"\r\n")
    with pytest.raises(RemoteProtocolError):
        reader.next_message(b"/", 40)


# -- the client --------------------------------------------------------------------------------


def test_sign_on_sets_the_line_and_sends_the_request() -> None:
    client = OpticalClientHandshake("00012345")
    assert client.sign_on(10.0) == [
        SwitchLine(LineSettings(300, 7, "E", 1), 0.0),
        Transmit(b"/?00012345!\r\n", 0.0),
    ]
    assert client.state is ClientState.AWAITING_IDENTIFICATION
    # 13 characters at 300 Bd 7E1 take 433 ms; then tr <= 1.5 s and one character to arrive
    assert client.next_deadline() == pytest.approx(10.0 + 14 * 10 / 300 + TR_MAX)


def expected_completion(ack_delay: float) -> list[Event]:
    return [
        Transmit(ACK_252, ack_delay),
        SwitchLine(hdlc_line(9600), ACK_AIRTIME + 0.3),
    ]


@pytest.mark.parametrize("chunks", splits(ISKRA))
def test_the_client_reads_the_identification_whole_split_and_byte_by_byte(
    chunks: list[bytes],
) -> None:
    client = signed_on()
    events: list[Event] = []
    for i, chunk in enumerate(chunks):
        assert client.state is ClientState.AWAITING_IDENTIFICATION
        events += client.receive_data(chunk, 1.0 + i * 0.033)
    assert events == [
        *expected_completion(0.020),
        HandshakeComplete(hdlc_line(9600), ISKRA_ID),
    ]
    assert client.state is ClientState.COMPLETE
    assert client.line == LineSettings(9600, 8, "N", 1)
    assert client.identification == ISKRA_ID
    assert client.next_deadline() is None


def test_the_client_refuses_trailing_bytes_after_the_identification() -> None:
    client = signed_on()
    with pytest.raises(RemoteProtocolError, match="3 bytes after the identification"):
        client.receive_data(ISKRA + b"\x7ea0", 1.0)
    assert client.state is ClientState.FAILED
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"", 1.1)


def test_the_real_trace_noise_before_the_identification_is_reported_and_skipped() -> None:
    client = signed_on()
    events = client.receive_data(TRACE_IDENTIFICATION, 1.0)
    assert events[0] == Ignored("noise before the identification", b"??")
    assert events[1] == Transmit(ACK_252, 0.2)  # upper-case VMQ: tr >= 200 ms
    assert isinstance(events[-1], HandshakeComplete)
    assert str(events[-1].identification) == "/VMQ5\\2"


def test_the_client_gives_up_on_endless_noise() -> None:
    client = signed_on()
    client.receive_data(b"\x00" * 64, 0.5)
    with pytest.raises(RemoteProtocolError, match="65 bytes of noise"):
        client.receive_data(b"\xff", 0.6)


def test_the_echo_of_our_request_is_skipped() -> None:
    client = signed_on("42")
    events = client.receive_data(b"/?42!\r\n" + ISKRA, 1.0)
    assert events[0] == Ignored("echo of our request", b"/?42!\r\n")
    assert isinstance(events[-1], HandshakeComplete)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (b"/LGZ5ZMD3104107\r\n", "'/LGZ5ZMD3104107' does not offer protocol mode E: no '\\\\2'"),
        (b"/ABCEmodeB\\2\r\n", "'/ABCEmodeB\\\\2' does not offer .* mode B"),
        (b"/ABC8\\2\r\n", "protocol mode A or D, or reserved"),
        (b"/?99!\r\n", "not 3 letters|letter"),
        (b"/ISk5\\2\x01\r\n", "unprintable byte at offset 7"),
    ],
)
def test_a_meter_without_mode_e_or_with_garbage_fails_the_handshake(
    answer: bytes, words: str
) -> None:
    client = signed_on()
    with pytest.raises(RemoteProtocolError, match=words):
        client.receive_data(answer, 1.0)
    assert client.state is ClientState.FAILED
    assert client.next_deadline() is None
    assert client.sign_on(5.0)[1] == Transmit(SIGN_ON)  # try again
    assert client.state is ClientState.AWAITING_IDENTIFICATION


def test_max_baud_selects_a_lower_rate() -> None:
    client = signed_on(max_baud=4800)
    events = client.receive_data(b"/ABC6\\2\r\n", 1.0)
    assert events[0] == Transmit(b"\x06242\r\n", 0.2)
    assert events[1] == SwitchLine(hdlc_line(4800), ACK_AIRTIME + 0.3)
    events = signed_on(max_baud=19200).receive_data(b"/ABC3\\2\r\n", 1.0)
    assert events[0] == Transmit(b"\x06232\r\n", 0.2)  # never above what the meter offers


def test_software_parity_sends_and_checks_bit_7() -> None:
    client = OpticalClientHandshake(software_parity=True)
    assert client.sign_on(0.0) == [
        SwitchLine(LineSettings(300, 8, "N", 1)),
        Transmit(SIGN_ON.translate(ADD_PARITY)),
    ]
    events = client.receive_data(b"/VMQ5\\2\r\n".translate(ADD_PARITY), 1.0)
    assert events[0] == Transmit(ACK_252_PARITY_IN_BIT7, 0.2)
    client = OpticalClientHandshake(software_parity=True)
    client.sign_on(0.0)
    with pytest.raises(RemoteProtocolError, match="parity error"):
        client.receive_data(b"/VMQ5\\2\r\n", 1.0)  # '/' (five 1 bits) arrives without parity


def test_the_client_times_out_without_an_answer_and_may_retry() -> None:
    client = signed_on()
    deadline = client.next_deadline()
    assert deadline == pytest.approx(6 * 10 / 300 + TR_MAX)
    assert client.handle_timeout(deadline - 0.001) == []
    assert client.handle_timeout(deadline) == [
        TimedOut("no identification within 1.5s of the request (tr)")
    ]
    assert client.state is ClientState.FAILED
    assert client.next_deadline() is None
    assert client.handle_timeout(deadline + 10) == []
    client.sign_on(10.0)
    assert meaningful(client.receive_data(ISKRA, 10.5))[-1] == HandshakeComplete(
        hdlc_line(9600), ISKRA_ID
    )


def test_the_client_times_out_between_characters() -> None:
    client = signed_on()
    client.receive_data(ISKRA[:5], 1.0)
    assert client.next_deadline() == pytest.approx(1.0 + TA_MAX + CHAR)  # ta, once it started
    client.receive_data(ISKRA[5:9], 2.0)
    assert client.next_deadline() == pytest.approx(2.0 + TA_MAX + CHAR)
    assert client.handle_timeout(3.5) == []
    assert client.handle_timeout(3.5 + CHAR) == [
        TimedOut("identification incomplete after 1.5s without a character (ta)")
    ]
    assert client.state is ClientState.FAILED


def test_noise_does_not_extend_the_response_deadline() -> None:
    client = signed_on()
    first = client.next_deadline()
    client.receive_data(b"\x00\x00", 1.0)
    assert client.next_deadline() == first


def test_client_actions_outside_the_table_are_local_errors() -> None:
    client = OpticalClientHandshake()
    with pytest.raises(LocalProtocolError, match="cannot receive in state idle"):
        client.receive_data(ISKRA, 0.0)
    client.sign_on(0.0)
    with pytest.raises(LocalProtocolError, match="cannot sign_on"):
        client.sign_on(0.1)
    client.receive_data(ISKRA, 1.0)
    with pytest.raises(LocalProtocolError, match="cannot receive in state complete"):
        client.receive_data(b"\x7e", 2.0)
    client.sign_on(60.0)  # a new handshake after the HDLC session
    assert client.state is ClientState.AWAITING_IDENTIFICATION
    assert client.line == HANDSHAKE_LINE


# -- the meter ---------------------------------------------------------------------------------


@pytest.mark.parametrize("request_line", [SIGN_ON, b"/?12345678!\r\n", b"/?0012345678!\r\n"])
def test_the_meter_answers_a_sign_on_for_it_or_for_anyone(request_line: bytes) -> None:
    meter = OpticalMeterHandshake(ISKRA_ID, "12345678")
    assert meter.receive_data(request_line, 3.0) == [Transmit(ISKRA, 0.020)]
    assert meter.state is MeterState.AWAITING_OPTION_SELECT
    # 20 ms reaction, 19 characters at 300 Bd, then tt <= 2.2 s for the option select
    assert meter.next_deadline() == pytest.approx(3.0 + 0.020 + 19 * 10 / 300 + TT_MAX)


def test_the_meter_ignores_a_sign_on_for_another_meter() -> None:
    meter = OpticalMeterHandshake(ISKRA_ID, "12345678")
    assert meter.receive_data(b"/?87654321!\r\n", 0.0) == [
        Ignored("sign-on for another meter", b"/?87654321!\r\n")
    ]
    assert meter.state is MeterState.LISTENING
    meter.receive_data(SIGN_ON, 1.0)
    meter.receive_data(b"/?1!\r\n", 1.5)  # another meter on the bus is addressed now
    assert meter.state is MeterState.LISTENING
    assert meter.next_deadline() is None


def test_the_meter_answers_every_sign_on_of_the_real_trace() -> None:
    meter = OpticalMeterHandshake(IdentificationMessage("VMQ", "5", "\\2"))
    events = meter.receive_data(TRACE_SIGN_ONS, 0.0)
    assert events == [Transmit(b"/VMQ5\\2\r\n", 0.2)] * 2


@pytest.mark.parametrize("chunks", splits(ACK_252))
def test_the_meter_reads_the_option_select_whole_split_and_byte_by_byte(
    chunks: list[bytes],
) -> None:
    meter = answered()
    events: list[Event] = []
    for i, chunk in enumerate(chunks):
        events += meter.receive_data(chunk, 1.0 + i * 0.033)
    assert events == [SwitchLine(hdlc_line(9600)), HandshakeComplete(hdlc_line(9600), ISKRA_ID)]
    assert meter.state is MeterState.COMPLETE
    assert meter.line == hdlc_line(9600)
    assert meter.next_deadline() is None


def test_the_meter_accepts_a_lower_rate_and_refuses_a_higher_one() -> None:
    meter = answered()
    assert meter.receive_data(b"\x06222\r\n", 1.0)[0] == SwitchLine(hdlc_line(1200))
    meter = answered()
    with pytest.raises(RemoteProtocolError, match="baud rate character '6'; we offered '5'"):
        meter.receive_data(b"\x06262\r\n", 1.0)
    assert meter.state is MeterState.LISTENING


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x06050\r\n", "V='0' Y='0' is not mode E"),  # mode C data readout
        (b"\x06252\r\n\x7e", "1 bytes after the option select"),
        (b"\x06252\n", "without <CR>"),
        (b"/?1-2!\r\n", "device address character"),
    ],
)
def test_a_bad_option_select_sends_the_meter_back_to_listening(data: bytes, words: str) -> None:
    meter = answered()
    with pytest.raises(RemoteProtocolError, match=words):
        meter.receive_data(data, 1.0)
    assert meter.state is MeterState.LISTENING
    assert meter.next_deadline() is None
    assert meter.receive_data(SIGN_ON, 2.0) == [Transmit(ISKRA, 0.020)]  # usable again


def test_a_meter_that_did_not_offer_hdlc_refuses_mode_e() -> None:
    meter = answered(IdentificationMessage("LGZ", "5", "ZMD"))
    with pytest.raises(RemoteProtocolError, match="which we did not offer"):
        meter.receive_data(ACK_252, 1.0)


def test_the_meter_times_out_without_an_option_select() -> None:
    meter = answered()
    deadline = meter.next_deadline()
    assert deadline is not None
    assert meter.handle_timeout(deadline - 0.01) == []
    assert meter.handle_timeout(deadline) == [
        TimedOut("no option select within 2.2s of the identification (tt)")
    ]
    assert meter.state is MeterState.LISTENING


def test_the_meter_drops_a_half_message_after_ta() -> None:
    meter = OpticalMeterHandshake(ISKRA_ID)
    meter.receive_data(b"/?12", 1.0)
    assert meter.next_deadline() == pytest.approx(1.0 + TA_MAX + CHAR)
    assert meter.handle_timeout(2.5 + CHAR) == [
        TimedOut("message incomplete after 1.5s without a character (ta); dropped")
    ]
    assert meter.receive_data(b"!\r\n", 3.0) == [Ignored("noise before a message", b"!\r\n")]


def test_the_meter_skips_noise_and_reports_it() -> None:
    meter = OpticalMeterHandshake(ISKRA_ID)
    events = meter.receive_data(b"\x00\x00\x7e\xa0" + SIGN_ON, 0.0)
    assert events == [Ignored("noise before a message", b"\x00\x00\x7e\x20"), Transmit(ISKRA, 0.02)]


def test_the_meter_is_reset_after_the_hdlc_session() -> None:
    meter = answered()
    meter.receive_data(ACK_252, 1.0)
    with pytest.raises(LocalProtocolError, match="HDLC owns the line"):
        meter.receive_data(b"\x7e", 2.0)
    assert meter.reset() == [SwitchLine(HANDSHAKE_LINE)]
    assert meter.state is MeterState.LISTENING
    assert meter.receive_data(SIGN_ON, 9.0) == [Transmit(ISKRA, 0.02)]


# -- client <-> meter, in memory ----------------------------------------------------------------


@dataclass
class End:
    """One side and its serial port: lines[i] = (from time, settings)."""

    name: str
    handshake: OpticalClientHandshake | OpticalMeterHandshake
    lines: list[tuple[float, LineSettings]] = field(default_factory=list)
    complete: HandshakeComplete | None = None

    def line_at(self, t: float) -> LineSettings:
        return [line for start, line in self.lines if start <= t][-1]


@dataclass
class Link:
    """Carries out the events of both ends on a simulated wire with a virtual clock.

    A 7E1 port adds even parity in bit 7 when it sends and strips it when it receives; an 8N1
    port passes bytes as they are. A character sent at one rate and read at another is garbled:
    the run fails. ``chunking`` cuts each transmission into reads.
    """

    client: End
    meter: End
    sign_on: Callable[[float], list[Event]]
    chunking: Callable[[bytes], list[bytes]] = lambda data: [data]
    transcript: list[tuple[float, str, bytes]] = field(default_factory=list)
    queue: list[tuple[float, int, str, bytes, LineSettings]] = field(default_factory=list)
    seq: itertools.count[int] = field(default_factory=itertools.count)

    def other(self, end: End) -> End:
        return self.meter if end is self.client else self.client

    def carry_out(self, end: End, events: list[Event], now: float) -> None:
        cursor = now
        for event in events:
            if isinstance(event, SwitchLine):
                cursor += event.after
                end.lines.append((cursor, event.settings))
            elif isinstance(event, Transmit):
                cursor += event.after
                line = end.line_at(cursor)
                wire = event.data.translate(ADD_PARITY) if line.bytesize == 7 else event.data
                self.transcript.append((cursor, end.name, event.data))
                sent = cursor
                for chunk in self.chunking(wire):
                    sent += line.airtime(len(chunk))
                    item = (sent, next(self.seq), self.other(end).name, chunk, line)
                    heapq.heappush(self.queue, item)
            elif isinstance(event, HandshakeComplete):
                end.complete = event

    def run(self, until: float = 30.0) -> None:
        self.carry_out(self.client, self.sign_on(0.0), 0.0)
        while True:
            timers = [
                (deadline, end)
                for end in (self.client, self.meter)
                if (deadline := end.handshake.next_deadline()) is not None
            ]
            arrival = self.queue[0][0] if self.queue else None
            if timers and (arrival is None or min(timers, key=lambda x: x[0])[0] < arrival):
                deadline, end = min(timers, key=lambda x: x[0])
                self.carry_out(end, end.handshake.handle_timeout(deadline), deadline)
                continue
            if arrival is None or arrival > until:
                return
            t, _, name, chunk, line = heapq.heappop(self.queue)
            end = self.client if name == "client" else self.meter
            if end.complete is not None:
                continue  # bytes after the handshake belong to HDLC
            here = end.line_at(t)
            assert here.baud == line.baud, f"{name} reads {line.baud} Bd at {here.baud} Bd"
            data = chunk.translate(MASK) if here.bytesize == 7 else chunk
            self.carry_out(end, end.handshake.receive_data(data, t), t)


def link(
    client: OpticalClientHandshake,
    meter: OpticalMeterHandshake,
    chunking: Callable[[bytes], list[bytes]] = lambda data: [data],
) -> Link:
    meter_end = End("meter", meter, [(0.0, meter.line)])
    return Link(End("client", client), meter_end, client.sign_on, chunking)


def test_a_full_exchange_with_the_standard_timing() -> None:
    run = link(OpticalClientHandshake(), OpticalMeterHandshake(ISKRA_ID))
    run.run()
    assert [(who, data) for _, who, data in run.transcript] == [
        ("client", SIGN_ON),
        ("meter", ISKRA),
        ("client", ACK_252),
    ]
    request_at, ident_at, ack_at = (t for t, _, _ in run.transcript)
    assert request_at == 0.0
    request_end = 5 * 10 / 300
    assert ident_at == pytest.approx(request_end + 0.020)  # tr >= 20 ms ("ISk")
    ident_end = ident_at + 19 * 10 / 300
    assert ident_at - request_end <= TR_MAX
    assert ack_at == pytest.approx(ident_end + 0.020)
    assert run.client.complete == run.meter.complete == HandshakeComplete(hdlc_line(9600), ISKRA_ID)
    meter_switch, client_switch = run.meter.lines[-1][0], run.client.lines[-1][0]
    assert meter_switch == pytest.approx(ack_at + 0.2)  # the meter switches once the ACK is in
    assert client_switch == pytest.approx(ack_at + 0.5)  # the client after it left, + guard
    assert client_switch >= meter_switch + 0.2  # the first HDLC frame finds the meter switched
    assert run.client.line_at(99) == run.meter.line_at(99) == LineSettings(9600, 8, "N", 1)


@pytest.mark.parametrize("client_parity", [False, True])
@pytest.mark.parametrize("meter_parity", [False, True])
@pytest.mark.parametrize("bytewise", [False, True])
def test_exchanges_with_ports_or_software_doing_the_parity(
    client_parity: bool, meter_parity: bool, bytewise: bool
) -> None:
    run = link(
        OpticalClientHandshake("0042", software_parity=client_parity, max_baud=19200),
        OpticalMeterHandshake(
            IdentificationMessage("ABC", "6", "\\2SIM"), "42", software_parity=meter_parity
        ),
        chunking=(lambda data: [data[i : i + 1] for i in range(len(data))])
        if bytewise
        else (lambda data: [data]),
    )
    run.run()
    assert run.client.complete is not None
    assert run.meter.complete is not None
    assert run.client.line_at(99) == run.meter.line_at(99) == hdlc_line(19200)


def test_an_exchange_with_a_meter_for_another_address_times_out() -> None:
    run = link(OpticalClientHandshake("1"), OpticalMeterHandshake(ISKRA_ID, "2"))
    run.run()
    assert [who for _, who, _ in run.transcript] == ["client"]
    assert run.client.handshake.state is ClientState.FAILED
    assert run.meter.handshake.state is MeterState.LISTENING


@settings(max_examples=60, deadline=None)
@given(IDENTIFICATION_MESSAGES, st.data())
def test_exchanges_succeed_for_any_identification_and_chunking(
    ident: IdentificationMessage, data: st.DataObject
) -> None:
    def chunking(wire: bytes) -> list[bytes]:
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(wire) - 1)), max_size=4)))
        return [wire[a:b] for a, b in itertools.pairwise([0, *cuts, len(wire)]) if a < b]

    if not ident.supports_hdlc:
        ident = IdentificationMessage(ident.manufacturer, ident.baud_char, "\\2")
    run = link(OpticalClientHandshake(), OpticalMeterHandshake(ident), chunking=chunking)
    run.run()
    assert run.client.complete == run.meter.complete
    assert run.client.complete is not None
    assert run.client.complete.line == hdlc_line(BAUD_RATES[ident.baud_char])


# -- garbage and state x input ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=24), max_size=12))
def test_garbage_into_the_client_gives_only_remote_errors(chunks: list[bytes]) -> None:
    client = signed_on()
    for i, chunk in enumerate(chunks):
        try:
            client.receive_data(chunk, 0.1 * i)
        except RemoteProtocolError:
            assert client.state is ClientState.FAILED
            return
        if client.state is not ClientState.AWAITING_IDENTIFICATION:
            return
        deadline = client.next_deadline()
        assert deadline is not None
        assert deadline >= 0.1 * i


FRAGMENTS = st.sampled_from(
    [SIGN_ON, b"/?42!\r\n", ACK_252, b"\x06050\r\n", b"\x06292\r\n", b"/?", b"!\r\n", b"\x00"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=16), FRAGMENTS, st.just(b"timeout")), max_size=16))
def test_the_meter_survives_any_input_in_any_state(inputs: list[bytes]) -> None:
    meter = OpticalMeterHandshake(ISKRA_ID, "7")
    now = 0.0
    for data in inputs:
        now += 0.5
        if data == b"timeout":
            deadline = meter.next_deadline()
            if deadline is not None:
                now = max(now, deadline)
                assert len(meter.handle_timeout(now)) == 1
                assert meter.state is MeterState.LISTENING
            continue
        due = meter.next_deadline()
        if due is not None and due <= now:  # a caller acts on a passed deadline before new data
            meter.handle_timeout(now)
        before = meter.state
        try:
            meter.receive_data(data, now)
        except RemoteProtocolError:
            assert meter.state is MeterState.LISTENING
            assert meter.next_deadline() is None
        except LocalProtocolError:
            assert before is MeterState.COMPLETE
            meter.reset()
        deadline = meter.next_deadline()
        assert deadline is None or deadline >= now
        if meter.state is not MeterState.COMPLETE:
            idle = meter.state is MeterState.LISTENING and not _pending(meter)
            assert (deadline is None) == idle


def _pending(meter: OpticalMeterHandshake) -> bool:
    return meter._reader.pending > 0
