"""IEC 62056-21 (formerly IEC 61107 / IEC 1107) protocol mode E: the opening handshake that
precedes HDLC on an optical probe (and on some RS-232/RS-485 ports), sans-IO.

Both ends: :class:`OpticalClientHandshake` (the HES or hand-held unit) and
:class:`OpticalMeterHandshake` (the meter, for ``hesd-sim``). The exchange, at 300 Bd 7E1::

    client  / ? [device address] ! CR LF                 request message        (§6.3.1)
    meter   / X X X Z [\\W ...] [identification] CR LF    identification message (§6.3.2)
    client  ACK 2 Z 2 CR LF                              option select message  (§6.3.3)
    both    switch to Z's baud rate, 8N1, and speak HDLC (IEC 62056-46)         (Annex E)

``Z`` is the baud rate character (``0``..``6`` = 300..19200 Bd in modes C and E) and ``\\2`` in
the identification (escape ``\\`` followed by the enhanced identification character ``W = 2``)
says the meter offers binary mode HDLC, i.e. protocol mode E. A meter whose identification has
no ``\\2`` does not do mode E, and the client refuses it with :class:`RemoteProtocolError`.

The objects never touch a port. Every call returns events that the caller carries out *in
order*, each after its own delay (``after``, seconds, counted from the previous step):
:class:`SwitchLine` (set the serial line), :class:`Transmit` (write bytes),
:class:`HandshakeComplete` (once the line is switched, HDLC owns it), :class:`Ignored` (noise
before a start character, the echo of our request, a sign-on for another meter: for the log)
and :class:`TimedOut` (from :meth:`handle_timeout`).

Time is a parameter: ``next_deadline()`` says when ``handle_timeout(now)`` is due. Deadlines
assume the caller carries out each step at its ``after``.

**Parity.** The handshake runs 7E1 (§5.4): by default the caller's serial port makes and checks
the parity, and what arrives is 7-bit. Received bytes are then masked to 7 bits, because a port
left at 8N1 (the same ten bits a character) or a driver that keeps the parity bit delivers it in
bit 7; a character whose parity was wrong was the port's to drop. With ``software_parity=True``
the caller keeps the port at 300 8N1 (a pty, a TCP serial bridge) and this module adds even
parity in bit 7 to what it sends and checks it on what it receives: a wrong parity bit is a
:class:`RemoteProtocolError`.

**Timing** (IEC 62056-21 §6.3, the timing notes of the message definitions): the reaction time
between a message and its answer is 200 ms <= tr <= 1500 ms (tr >= 20 ms when the third letter
of the meter's manufacturer id is lower case); two characters of one message are less than
ta = 1500 ms apart; the meter waits tt <= 2200 ms for the option select. After the option
select the client waits until it has left the UART at 300 Bd (6 characters, 200 ms) and a guard
(``switch_guard``, default 300 ms >= tr so the meter has switched before the first HDLC frame;
Gurux's readers wait 500 ms from the write), then switches to Z's rate, 8N1 (IEC 62056-46 §1).

Garbage gives :class:`RemoteProtocolError` only. The client then stays FAILED (call
:meth:`~OpticalClientHandshake.sign_on` to try again); the meter goes back to listening for a
sign-on, as a real meter does.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeVar

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BAUD_RATES",
    "HANDSHAKE_LINE",
    "TA_MAX",
    "TR_MAX",
    "TR_MIN",
    "TR_MIN_FAST",
    "TT_MAX",
    "ClientState",
    "Event",
    "HandshakeComplete",
    "IdentificationMessage",
    "Ignored",
    "LineSettings",
    "MeterState",
    "OpticalClientHandshake",
    "OpticalMeterHandshake",
    "OptionSelectMessage",
    "RequestMessage",
    "SwitchLine",
    "TimedOut",
    "Transmit",
    "hdlc_line",
]

# -- characters (IEC 62056-21 §6.3; ISO/IEC 646 7-bit code, §5.5) ---------------------------

_START: Final = 0x2F  # "/" start character of the request and identification messages
_CR: Final = 0x0D
_LF: Final = 0x0A  # every handshake message ends CR LF (completion character), §6.3
_ACK: Final = 0x06  # acknowledge character opening the option select message, §6.3.3
_ESCAPE: Final = "\\"  # sequence delimiter, §6.3.2 item 23: always followed by one W, item 24
_W_HDLC: Final = "2"  # enhanced identification W = 2: binary mode (HDLC) available, item 24
_V_HDLC: Final = "2"  # protocol control character V = 2: HDLC protocol procedure, §6.3.3
_Y_BINARY: Final = "2"  # mode control character Y = 2: binary mode (HDLC), §6.3.3

# §6.3.2, baud rate identification Z, c) protocol modes C and E; 7, 8, 9 are reserved.
BAUD_RATES: Final = dict(zip("0123456", (300, 600, 1200, 2400, 4800, 9600, 19200), strict=True))
_RATES: Final = sorted(BAUD_RATES.values())
_MODE_B_BAUD_CHARS: Final = "ABCDEFGHI"  # §6.3.2 Z, b) protocol mode B (no option select)

# -- timing (IEC 62056-21 §6.3, seconds) ----------------------------------------------------

TR_MIN: Final = 0.200  # reaction time between a message and its answer: 200 ms <= tr
TR_MIN_FAST: Final = 0.020  # ... >= 20 ms if the manufacturer id's third letter is lower case
TR_MAX: Final = 1.500  # ... tr <= 1500 ms
TA_MAX: Final = 1.500  # between two characters of one message: ta < 1500 ms
TT_MAX: Final = 2.200  # the meter's wait after its identification: 1500 ms < tt <= 2200 ms
DEFAULT_SWITCH_GUARD: Final = 0.300  # after the option select has left the UART, >= TR_MIN

# -- sizes -----------------------------------------------------------------------------------

_MAX_ADDRESS: Final = 32  # §6.3.1: device address, 32 characters at most
_MAX_IDENTIFICATION: Final = 16  # §6.3.2 item 14: 16 printable characters at most, \W included
_MAX_REQUEST_LINE: Final = 2 + _MAX_ADDRESS + 3  # / ? address ! CR LF
_MAX_IDENTIFICATION_LINE: Final = 1 + 3 + 1 + _MAX_IDENTIFICATION + 2  # / XXX Z ident CR LF
_OPTION_SELECT_LINE: Final = 6  # ACK V Z Y CR LF
_CLIENT_NOISE_LIMIT: Final = 64  # bytes before the identification's "/" the client forgives

# -- character sets and tables ---------------------------------------------------------------

_PRINTABLE: Final = bytes(range(0x20, 0x7F))
# §6.3.1: the device address uses 0..9, A..Z, a..z and space.
_ADDRESS_CHARS: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz "
# §6.3.2 item 14: printable characters except "/" and "!" ("\" only as the escape, item 23).
_IDENT_CHARS: Final = _PRINTABLE.translate(None, b"/!")
# §6.3.2 item 24: W is a printable character other than "/", "\" and "!".
_W_CHARS: Final = _PRINTABLE.translate(None, b"/\\!")
_LETTERS: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# §6.3.3: V is 0..9; Y is 0..9 or A..Z.
_V_CHARS: Final = b"0123456789"
_Y_CHARS: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_M = TypeVar("_M")

_MASK_7BIT: Final = bytes(b & 0x7F for b in range(256))
_ADD_EVEN_PARITY: Final = bytes(
    (b & 0x7F) | ((bin(b & 0x7F).count("1") & 1) << 7) for b in range(256)
)
_EVEN_PARITY_BYTES: Final = bytes(b for b in range(256) if bin(b).count("1") % 2 == 0)


def _first_outside(data: bytes, allowed: bytes) -> int:
    """Offset of the first byte of ``data`` not in ``allowed``; -1 if there is none."""
    bad = data.translate(None, allowed)
    return data.index(bad[0]) if bad else -1


def _on_wire(message: bytes, software_parity: bool) -> bytes:
    """What to write: with software parity, even parity in bit 7 (§5.4)."""
    return message.translate(_ADD_EVEN_PARITY) if software_parity else message


def _show(data: bytes | bytearray) -> str:
    """Received bytes for an error message: printable ASCII as text, the rest escaped."""
    return repr(bytes(data[:48]))[1:] + ("..." if len(data) > 48 else "")


# -- line settings ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Serial line settings; ``parity`` uses pyserial's letters (``"E"`` even, ``"N"`` none)."""

    baud: int
    bytesize: int
    parity: str
    stopbits: int

    def __post_init__(self) -> None:
        if self.baud not in BAUD_RATES.values():  # §6.3.2 Z: 300 .. 19200 Bd
            raise LocalProtocolError(f"baud rate {self.baud} is none of {_RATES}")
        if (self.bytesize, self.parity) not in ((7, "E"), (8, "N")):  # §5.4; IEC 62056-46 §1
            raise LocalProtocolError(f"line format {self.bytesize}{self.parity} is not 7E or 8N")
        if self.stopbits != 1:  # §5.4: one stop bit
            raise LocalProtocolError(f"{self.stopbits} stop bits; the line uses 1")

    def airtime(self, characters: int) -> float:
        """Seconds that ``characters`` take on the line (start, data, parity, stop bits)."""
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits  # 10 for 7E1 and 8N1
        return characters * bits / self.baud


HANDSHAKE_LINE: Final = LineSettings(300, 7, "E", 1)  # §5.2 300 Bd to start; §5.4 7E1
_RAW_HANDSHAKE_LINE: Final = LineSettings(300, 8, "N", 1)  # software parity: same 10-bit frame


def hdlc_line(baud: int) -> LineSettings:
    """The line after the switch-over: ``baud``, 8N1 (Annex E; IEC 62056-46 §1)."""
    return LineSettings(baud, 8, "N", 1)


# -- messages ---------------------------------------------------------------------------------


def _check(value: str, allowed: bytes, field: str, offset: int) -> None:
    """LocalProtocolError naming the first character of ``value`` outside ``allowed``."""
    raw = value.encode("ascii", "replace") if value.isascii() else b"\x80"
    bad = _first_outside(raw, allowed)
    if bad >= 0:
        raise LocalProtocolError(f"{field}: {value[bad]!r} at offset {offset + bad}")


def _from_peer(line: bytes, make: Callable[[str], _M], skip: int = 0) -> _M:
    """Build a message from a received ``line``: what it refuses is the peer's error."""
    if line[-2:] != b"\r\n":  # §6.3: CR LF completes every message
        raise RemoteProtocolError(f"message does not end in <CR><LF>: {_show(line)}")
    bad = _first_outside(line[skip:-2], _PRINTABLE)
    if bad >= 0:  # §5.5: ISO/IEC 646 printable characters
        raise RemoteProtocolError(f"unprintable byte at offset {skip + bad}: {_show(line)}")
    try:
        return make(line[skip:-2].decode("ascii"))
    except LocalProtocolError as exc:
        raise RemoteProtocolError(f"{exc}: {_show(line)}") from None


def _same_address(requested: str, own: str) -> bool:
    """An empty request addresses any meter; leading zeros are not significant (§6.3.1)."""
    return not requested or requested.lstrip("0") == own.lstrip("0")


@dataclass(frozen=True, slots=True)
class RequestMessage:
    """The sign-on: ``/ ? device-address ! CR LF`` (§6.3.1); the address is optional."""

    device_address: str = ""

    def __post_init__(self) -> None:
        if len(self.device_address) > _MAX_ADDRESS:  # §6.3.1
            raise LocalProtocolError(f"device address of {len(self.device_address)} characters")
        _check(self.device_address, _ADDRESS_CHARS, "device address character", 2)  # §6.3.1

    def encode(self) -> bytes:
        return b"/?" + self.device_address.encode("ascii") + b"!\r\n"

    @classmethod
    def decode(cls, line: bytes) -> RequestMessage:
        """One whole request message, CR LF included."""

        def make(text: str) -> RequestMessage:
            if text[:2] != "/?" or text[-1:] != "!":  # §6.3.1
                raise LocalProtocolError("not a request message '/?...!'")
            return cls(text[2:-1])

        return _from_peer(line, make)


@dataclass(frozen=True, slots=True)
class IdentificationMessage:
    """The meter's answer: ``/ X X X Z identification CR LF`` (§6.3.2).

    ``identification`` is the field as sent, its ``\\W`` escape pairs included (they count
    towards its 16 characters): the Iskra MT382 sends ``/ISk5\\2MT382-1000``.
    """

    manufacturer: str
    baud_char: str
    identification: str = ""

    def __post_init__(self) -> None:
        # §6.3.2: three letters. The standard asks for upper case (the third in lower case means
        # tr >= 20 ms); real meters send lower case earlier too (Sagemcom "Ene"): accepted.
        if len(self.manufacturer) != 3:
            raise LocalProtocolError(f"manufacturer id {self.manufacturer!r} is not 3 letters")
        _check(self.manufacturer, _LETTERS, "manufacturer id, not a letter", 1)
        if len(self.baud_char) != 1:  # §6.3.2 Z: one printable character except "/", "!"
            raise LocalProtocolError(f"baud rate character {self.baud_char!r} is not 1 character")
        _check(self.baud_char, _IDENT_CHARS, "baud rate character", 4)
        ident = self.identification
        if len(ident) > _MAX_IDENTIFICATION:  # §6.3.2 item 14, the \W pairs included
            raise LocalProtocolError(f"identification of {len(ident)} characters; at most 16")
        _check(ident, _IDENT_CHARS, "identification character", 5)  # §6.3.2 item 14
        escape = ident.find(_ESCAPE)
        while escape >= 0:  # §6.3.2 item 23: "\" is always followed by one W (item 24)
            _check(ident[escape + 1 : escape + 2] or "/", _W_CHARS, "after '\\'", escape + 6)
            escape = ident.find(_ESCAPE, escape + 2)

    def encode(self) -> bytes:
        return f"{self}\r\n".encode("ascii")

    @classmethod
    def decode(cls, line: bytes) -> IdentificationMessage:
        """One whole identification message, CR LF included."""
        if len(line) > _MAX_IDENTIFICATION_LINE or line[:1] != b"/":  # §6.3.2
            raise RemoteProtocolError(f"not an identification message '/XXXZ...': {_show(line)}")
        return _from_peer(line, lambda text: cls(text[1:4], text[4:5], text[5:]))

    @property
    def enhanced_ids(self) -> str:
        """The enhanced identification characters W of the ``\\W`` pairs, in order (item 24)."""
        return "".join(part[:1] for part in self.identification.split(_ESCAPE)[1:])

    @property
    def supports_hdlc(self) -> bool:
        """Whether the meter offers protocol mode E, binary HDLC (``\\2``, item 24)."""
        return _W_HDLC in self.enhanced_ids

    @property
    def baud_rate(self) -> int | None:
        """The rate Z proposes in protocol modes C and E; None for a mode A/B/D character."""
        return BAUD_RATES.get(self.baud_char)

    @property
    def reaction_time(self) -> float:
        """Minimum reaction time on this link: 20 ms if the third letter is lower case."""
        return TR_MIN_FAST if self.manufacturer[2].islower() else TR_MIN

    def __str__(self) -> str:
        return f"/{self.manufacturer}{self.baud_char}{self.identification}"


@dataclass(frozen=True, slots=True)
class OptionSelectMessage:
    """The acknowledgement/option select message ``ACK V Z Y CR LF`` (§6.3.3).

    Mode E is ``ACK 2 Z 2``: V = 2 HDLC protocol procedure, Y = 2 binary mode (HDLC).
    """

    protocol: str  # V
    baud_char: str  # Z
    mode: str  # Y

    def __post_init__(self) -> None:
        for value, allowed, field in (
            (self.protocol, _V_CHARS, "protocol control character"),  # §6.3.3 V: 0..9
            (self.baud_char, _V_CHARS, "baud rate character"),  # §6.3.3 Z: 0..9 in modes C, E
            (self.mode, _Y_CHARS, "mode control character"),  # §6.3.3 Y: 0..9, A..Z
        ):
            if len(value) != 1:
                raise LocalProtocolError(f"{field} {value!r} is not one character")
            _check(value, allowed, field, 0)

    @classmethod
    def mode_e(cls, baud_char: str) -> OptionSelectMessage:
        return cls(_V_HDLC, baud_char, _Y_BINARY)

    @property
    def is_mode_e(self) -> bool:
        return self.protocol == _V_HDLC and self.mode == _Y_BINARY

    def encode(self) -> bytes:
        return f"\x06{self.protocol}{self.baud_char}{self.mode}\r\n".encode("ascii")

    @classmethod
    def decode(cls, line: bytes) -> OptionSelectMessage:
        """One whole option select message, CR LF included."""
        if len(line) != _OPTION_SELECT_LINE or line[0] != _ACK:  # §6.3.3
            raise RemoteProtocolError(f"not an option select message 'ACK V Z Y': {_show(line)}")
        return _from_peer(line, lambda text: cls(text[0], text[1], text[2]), skip=1)


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SwitchLine:
    """Wait ``after`` seconds (from the previous step), then set the line to ``settings``."""

    settings: LineSettings
    after: float = 0.0

    def __post_init__(self) -> None:
        if not self.after >= 0:
            raise LocalProtocolError(f"negative delay {self.after}")


@dataclass(frozen=True, slots=True)
class Transmit:
    """Wait ``after`` seconds (from the previous step), then write ``data``."""

    data: bytes
    after: float = 0.0

    def __post_init__(self) -> None:
        if not self.data:
            raise LocalProtocolError("nothing to transmit")
        if not self.after >= 0:
            raise LocalProtocolError(f"negative delay {self.after}")


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """Mode E is agreed: once the line is at ``line``, HDLC owns it."""

    line: LineSettings
    identification: IdentificationMessage


@dataclass(frozen=True, slots=True)
class Ignored:
    """Bytes that were no message for us; ``what`` says which, for the log."""

    what: str
    data: bytes


@dataclass(frozen=True, slots=True)
class TimedOut:
    reason: str


Event = SwitchLine | Transmit | HandshakeComplete | Ignored | TimedOut


# -- message reader ---------------------------------------------------------------------------


class _MessageReader:
    """Cuts received characters into CR LF terminated messages; bounded, one at a time."""

    __slots__ = ("_buffer", "_received", "_software_parity")

    def __init__(self, software_parity: bool) -> None:
        self._buffer = bytearray()
        self._received = 0  # bytes seen so far, for offsets in error messages
        self._software_parity = software_parity

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()

    def feed(self, data: bytes) -> None:
        if self._software_parity:  # 8N1 port: bit 7 carries the even parity bit, §5.4
            wrong = data.translate(None, _EVEN_PARITY_BYTES)
            if wrong:
                at = data.index(wrong[0])
                raise RemoteProtocolError(
                    f"parity error: byte {data[at]:#04x} at offset {self._received + at}"
                )
        self._received += len(data)
        self._buffer += data.translate(_MASK_7BIT)

    def next_message(self, starts: bytes, limit: int) -> tuple[bytes, bytes | None]:
        """(noise skipped before a start character, one whole message or None)."""
        buffer = self._buffer
        found = [at for at in map(buffer.find, starts) if at >= 0]
        if not found:
            noise = bytes(buffer)
            buffer.clear()
            return noise, None
        first = min(found)
        noise = bytes(buffer[:first])
        del buffer[:first]
        end = buffer.find(_LF)
        if end < 0:
            if len(buffer) >= limit:
                raise RemoteProtocolError(
                    f"no <CR><LF> within {limit} bytes of a message start: {_show(buffer)}"
                )
            return noise, None
        line = bytes(buffer[: end + 1])
        if len(line) > limit:
            raise RemoteProtocolError(f"message of {len(line)} bytes, at most {limit}")
        if len(line) < 2 or line[-2] != _CR:  # §6.3: CR LF completes every message
            raise RemoteProtocolError(f"message ends in <LF> without <CR>: {_show(line)}")
        del buffer[: end + 1]
        return noise, line


# -- client -----------------------------------------------------------------------------------


class ClientState(enum.Enum):
    IDLE = "idle"
    AWAITING_IDENTIFICATION = "awaiting identification"  # request sent
    COMPLETE = "complete"  # option select sent, HDLC owns the line
    FAILED = "failed"  # garbage, a meter without mode E, or a timeout: sign on again


# (state, input) -> next state. A caller action missing here raises LocalProtocolError; a
# RemoteProtocolError from the meter's bytes leads to FAILED from any state (not listed).
_CLIENT_TRANSITIONS: Final[dict[tuple[ClientState, str], ClientState]] = {
    (ClientState.IDLE, "sign_on"): ClientState.AWAITING_IDENTIFICATION,
    (ClientState.COMPLETE, "sign_on"): ClientState.AWAITING_IDENTIFICATION,  # after DISC
    (ClientState.FAILED, "sign_on"): ClientState.AWAITING_IDENTIFICATION,  # retry
    (ClientState.AWAITING_IDENTIFICATION, "receive"): ClientState.AWAITING_IDENTIFICATION,
    (ClientState.AWAITING_IDENTIFICATION, "identification"): ClientState.COMPLETE,
    (ClientState.AWAITING_IDENTIFICATION, "timeout"): ClientState.FAILED,
}


class OpticalClientHandshake:
    """The HES side: sign on, read the identification, select mode E, switch the line.

    ``max_baud`` caps the rate: a meter proposing more is asked for the highest rate of
    ``BAUD_RATES`` not above it. ``response_timeout`` is how long after its request has left the
    UART the identification may take to start (tr <= 1.5 s; raise it for slow USB adapters).
    """

    def __init__(
        self,
        device_address: str = "",
        *,
        max_baud: int | None = None,
        software_parity: bool = False,
        switch_guard: float = DEFAULT_SWITCH_GUARD,
        response_timeout: float = TR_MAX,
    ) -> None:
        if max_baud is not None and max_baud not in BAUD_RATES.values():
            raise LocalProtocolError(f"max_baud {max_baud} is none of {_RATES}")
        if not (switch_guard >= 0 and response_timeout > 0):
            raise LocalProtocolError("switch_guard must be >= 0 and response_timeout > 0")
        self.request = RequestMessage(device_address)
        self.max_baud = max_baud
        self.software_parity = software_parity
        self.switch_guard = switch_guard
        self.response_timeout = response_timeout
        self.state = ClientState.IDLE
        self.identification: IdentificationMessage | None = None
        self.line = _RAW_HANDSHAKE_LINE if software_parity else HANDSHAKE_LINE
        self._request_line = self.request.encode()
        self._reader = _MessageReader(software_parity)
        self._response_deadline: float | None = None
        self._deadline: float | None = None
        self._noise = 0

    def _transition(self, action: str) -> None:
        nxt = _CLIENT_TRANSITIONS.get((self.state, action))
        if nxt is None:
            raise LocalProtocolError(f"cannot {action} in state {self.state.value}")
        self.state = nxt

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called if nothing arrives (None: nothing awaited)."""
        return self._deadline

    def sign_on(self, now: float) -> list[Event]:
        """Start (or restart) the handshake: set the line to 300 Bd 7E1, send the request."""
        self._transition("sign_on")
        self.identification = None
        self._reader.clear()
        self._noise = 0
        self.line = _RAW_HANDSHAKE_LINE if self.software_parity else HANDSHAKE_LINE
        self._response_deadline = (
            # the request leaves the UART, tr passes, the first character arrives whole
            now + self.line.airtime(len(self._request_line) + 1) + self.response_timeout
        )
        self._deadline = self._response_deadline
        return [SwitchLine(self.line), Transmit(_on_wire(self._request_line, self.software_parity))]

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Bytes read from the line (at the settings of the last SwitchLine)."""
        self._transition("receive")
        try:
            return self._receive(data, now)
        except RemoteProtocolError:
            self.state = ClientState.FAILED
            self._deadline = None
            self._reader.clear()
            raise

    def _receive(self, data: bytes, now: float) -> list[Event]:
        events: list[Event] = []
        self._reader.feed(data)
        limit = max(_MAX_IDENTIFICATION_LINE, len(self._request_line))
        while True:
            noise, line = self._reader.next_message(b"/", limit)
            if noise:
                self._noise += len(noise)
                events.append(Ignored("noise before the identification", noise))
                if self._noise > _CLIENT_NOISE_LIMIT:
                    raise RemoteProtocolError(
                        f"{self._noise} bytes of noise and no identification: {_show(noise)}"
                    )
            if line is None:
                break
            if line == self._request_line:  # a half-duplex line or probe echoes what we send
                events.append(Ignored("echo of our request", line))
                continue
            return [*events, *self._identified(IdentificationMessage.decode(line))]
        next_character = now + TA_MAX + self.line.airtime(1)  # ta, then the character itself
        self._deadline = next_character if self._reader.pending else self._response_deadline
        return events

    def _identified(self, ident: IdentificationMessage) -> list[Event]:
        offered = ident.baud_rate
        if offered is None:
            mode = "B" if ident.baud_char in _MODE_B_BAUD_CHARS else "A or D, or reserved"
            raise RemoteProtocolError(
                f"meter '{ident}' does not offer protocol mode E: its baud rate character"
                f" {ident.baud_char!r} is protocol mode {mode}, not 0..6 (§6.3.2)"
            )
        if not ident.supports_hdlc:
            raise RemoteProtocolError(
                f"meter '{ident}' does not offer protocol mode E: no '\\2' in its"
                " identification (§6.3.2 item 24)"
            )
        if self._reader.pending:
            raise RemoteProtocolError(
                f"{self._reader.pending} bytes after the identification message, before our"
                " option select"
            )
        baud_char = ident.baud_char
        if self.max_baud is not None and offered > self.max_baud:
            baud_char = max(z for z, rate in BAUD_RATES.items() if rate <= self.max_baud)
        ack = OptionSelectMessage.mode_e(baud_char).encode()
        self._transition("identification")
        self.identification = ident
        self._deadline = None
        self.line = hdlc_line(BAUD_RATES[baud_char])
        ack_on_wire = _on_wire(ack, self.software_parity)
        return [
            # tr >= 200 ms (20 ms) between the identification and our answer
            Transmit(ack_on_wire, after=ident.reaction_time),
            # the option select leaves the UART at 300 Bd, then the meter needs its time
            SwitchLine(self.line, after=_RAW_HANDSHAKE_LINE.airtime(len(ack)) + self.switch_guard),
            HandshakeComplete(self.line, ident),
        ]

    def handle_timeout(self, now: float) -> list[Event]:
        """Call at ``next_deadline()``: a meter that does not answer in time fails the handshake."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._reader.pending:
            reason = f"identification incomplete after {TA_MAX}s without a character (ta)"
        else:
            reason = f"no identification within {self.response_timeout}s of the request (tr)"
        self._transition("timeout")
        self._deadline = None
        self._reader.clear()
        return [TimedOut(reason)]


# -- meter ------------------------------------------------------------------------------------


class MeterState(enum.Enum):
    LISTENING = "listening"  # 300 Bd 7E1, waiting for a sign-on
    AWAITING_OPTION_SELECT = "awaiting option select"  # identification sent
    COMPLETE = "complete"  # line switched, HDLC owns it until reset()


# (state, input) -> next state. Garbage raises RemoteProtocolError and the meter goes back to
# LISTENING from any state (not listed), as a meter returns to its initial state.
_METER_TRANSITIONS: Final[dict[tuple[MeterState, str], MeterState]] = {
    (MeterState.LISTENING, "receive"): MeterState.LISTENING,
    (MeterState.LISTENING, "request"): MeterState.AWAITING_OPTION_SELECT,
    (MeterState.LISTENING, "other_request"): MeterState.LISTENING,
    (MeterState.LISTENING, "timeout"): MeterState.LISTENING,
    (MeterState.LISTENING, "reset"): MeterState.LISTENING,
    (MeterState.AWAITING_OPTION_SELECT, "receive"): MeterState.AWAITING_OPTION_SELECT,
    (MeterState.AWAITING_OPTION_SELECT, "request"): MeterState.AWAITING_OPTION_SELECT,
    (MeterState.AWAITING_OPTION_SELECT, "other_request"): MeterState.LISTENING,
    (MeterState.AWAITING_OPTION_SELECT, "option_select"): MeterState.COMPLETE,
    (MeterState.AWAITING_OPTION_SELECT, "timeout"): MeterState.LISTENING,
    (MeterState.AWAITING_OPTION_SELECT, "reset"): MeterState.LISTENING,
    (MeterState.COMPLETE, "reset"): MeterState.LISTENING,
}


class OpticalMeterHandshake:
    """The meter side: answer a sign-on for our address (or none) and switch on ``ACK 2 Z 2``.

    A client may select Z or a lower rate. When the HDLC session ends (DISC, inactivity), call
    :meth:`reset`: the line goes back to 300 Bd 7E1 and the meter listens again.
    """

    def __init__(
        self,
        identification: IdentificationMessage,
        device_address: str = "",
        *,
        software_parity: bool = False,
    ) -> None:
        if identification.baud_rate is None:
            raise LocalProtocolError(
                f"baud rate character {identification.baud_char!r} is not one of modes C and E"
            )
        self.identification = identification
        self.device_address = RequestMessage(device_address).device_address
        self.software_parity = software_parity
        self.state = MeterState.LISTENING
        self.line = _RAW_HANDSHAKE_LINE if software_parity else HANDSHAKE_LINE
        self._identification_line = identification.encode()
        self._reader = _MessageReader(software_parity)
        self._answer_deadline: float | None = None
        self._deadline: float | None = None

    def _transition(self, action: str) -> None:
        nxt = _METER_TRANSITIONS.get((self.state, action))
        if nxt is None:
            if action == "receive":
                raise LocalProtocolError("the handshake is complete: HDLC owns the line; reset()")
            raise LocalProtocolError(f"cannot {action} in state {self.state.value}")
        self.state = nxt

    def next_deadline(self) -> float | None:
        return self._deadline

    def reset(self) -> list[Event]:
        """Back to listening for a sign-on at 300 Bd 7E1 (after the HDLC session)."""
        self._transition("reset")
        self._reader.clear()
        self._deadline = self._answer_deadline = None
        self.line = _RAW_HANDSHAKE_LINE if self.software_parity else HANDSHAKE_LINE
        return [SwitchLine(self.line)]

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        self._transition("receive")
        try:
            return self._receive(data, now)
        except RemoteProtocolError:
            self.state = MeterState.LISTENING
            self._reader.clear()
            self._deadline = self._answer_deadline = None
            raise

    def _receive(self, data: bytes, now: float) -> list[Event]:
        events: list[Event] = []
        self._reader.feed(data)
        while True:
            listening = self.state is MeterState.LISTENING
            starts = b"/" if listening else b"/\x06"
            noise, line = self._reader.next_message(starts, _MAX_REQUEST_LINE)
            if noise:
                events.append(Ignored("noise before a message", noise))
            if line is None:
                break
            if line[0] == _START:
                events.extend(self._request(RequestMessage.decode(line), now))
            else:
                return [*events, *self._option_select(OptionSelectMessage.decode(line))]
        next_character = now + TA_MAX + self.line.airtime(1)  # ta, then the character itself
        self._deadline = next_character if self._reader.pending else self._answer_deadline
        return events

    def _request(self, request: RequestMessage, now: float) -> list[Event]:
        if not _same_address(request.device_address, self.device_address):
            self._transition("other_request")
            self._answer_deadline = None
            return [Ignored("sign-on for another meter", request.encode())]
        self._transition("request")
        reaction = self.identification.reaction_time
        airtime = self.line.airtime(len(self._identification_line))
        self._answer_deadline = now + reaction + airtime + TT_MAX
        return [Transmit(_on_wire(self._identification_line, self.software_parity), reaction)]

    def _option_select(self, option: OptionSelectMessage) -> list[Event]:
        offered = self.identification.baud_char
        if not option.is_mode_e:
            raise RemoteProtocolError(
                f"option select V={option.protocol!r} Y={option.mode!r} is not mode E"
                " (V=2 HDLC procedure, Y=2 binary mode, §6.3.3); this meter speaks only mode E"
            )
        if not self.identification.supports_hdlc:
            raise RemoteProtocolError("option select asks for mode E, which we did not offer")
        if option.baud_char not in BAUD_RATES or option.baud_char > offered:
            raise RemoteProtocolError(
                f"option select asks for baud rate character {option.baud_char!r}; we offered"
                f" {offered!r}"
            )
        if self._reader.pending:
            raise RemoteProtocolError(f"{self._reader.pending} bytes after the option select")
        self._transition("option_select")
        self._deadline = self._answer_deadline = None
        self.line = hdlc_line(BAUD_RATES[option.baud_char])
        return [SwitchLine(self.line), HandshakeComplete(self.line, self.identification)]

    def handle_timeout(self, now: float) -> list[Event]:
        """Call at ``next_deadline()``: a half message or a missing option select is dropped."""
        if self._deadline is None or now < self._deadline:
            return []
        if self._reader.pending:
            reason = f"message incomplete after {TA_MAX}s without a character (ta); dropped"
        else:
            reason = f"no option select within {TT_MAX}s of the identification (tt)"
        self._transition("timeout")
        self._reader.clear()
        self._deadline = self._answer_deadline = None
        return [TimedOut(reason)]
