"""HDLC framing for DLMS/COSEM (IEC 62056-46, ISO/IEC 13239 frame format type 3), sans-IO.

A frame on the wire::

    7E | format (2) | destination (1, 2 or 4) | source (1, 2 or 4) | control (1)
       | HCS (2, only with an information field) | information | FCS (2) | 7E

The format field is ``1010 S LLL LLLLLLLL``: frame format type 3, the segmentation bit S and the
11-bit length of everything between the flags. HCS and FCS are the 16-bit FCS of ISO/IEC 13239
(CRC-16/X.25), sent least significant byte first. DLMS HDLC does not stuff bytes: the length field
delimits the frame, and 0x7E may appear inside it.

This module holds the codec (:class:`HdlcAddress`, :class:`HdlcFrame`, :class:`HdlcParameters`,
the LLC helpers, :func:`fcs16`) and :class:`HdlcFramer`; the link state machine is in
``hdlc_link``.

Error policy of :class:`HdlcFramer` (the caller logs and goes on):

* bytes that do not start a frame (no flag, not format type 3, a length or address extension no
  frame can have) are noise: they are skipped one at a time and counted in ``discarded_bytes``;
* a candidate frame that fails a check (HCS, FCS, the closing flag missing where the length puts
  it, a control field the profile does not use...) makes :meth:`HdlcFramer.next_frame` raise
  :class:`RemoteProtocolError`. Before raising, the framer consumes what it can: the whole frame
  when both flags delimit it, otherwise only its opening flag. The next call goes on with the next
  bytes, so the framer stays usable.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass, field
from functools import lru_cache

from protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_INFO_LENGTH",
    "DEFAULT_WINDOW_SIZE",
    "FLAG",
    "LLC_COMMAND",
    "LLC_RESPONSE",
    "MAX_FRAME_LENGTH",
    "FrameType",
    "HdlcAddress",
    "HdlcFrame",
    "HdlcFramer",
    "HdlcParameters",
    "add_llc",
    "control_i",
    "control_s",
    "control_u",
    "decode_frame",
    "fcs16",
    "strip_llc",
]

FLAG = 0x7E  # ISO/IEC 13239 §4.3.1: opening and closing flag
MAX_FRAME_LENGTH = 0x7FF  # IEC 62056-46 §6.4.4.2: 11-bit frame length sub-field
_FORMAT_TYPE_3 = 0xA0  # IEC 62056-46 §6.4.4.2: format type 1010 in the high nibble
_SEGMENTED = 0x08  # ... the S bit, in the first format byte
_MIN_FRAME_LENGTH = 7  # format 2 + destination 1 + source 1 + control 1 + FCS 2

# -- FCS -------------------------------------------------------------------------------------
#
# The FCS is CRC-16/X.25: polynomial 0x1021 reflected (0x8408), initial value 0xFFFF, final XOR
# 0xFFFF (ISO/IEC 13239 §4.2.5.1, IEC 62056-46 §6.4.4.7 and its Annex with the table-driven
# algorithm). A table loop in Python costs ~70 ns a byte; binascii.crc_hqx is the same
# polynomial unreflected, in C. A reflected CRC equals the unreflected one run over bit-reversed
# bytes and bit-reversed at the end, and 0xFFFF reverses to itself, so one precomputed 256-entry
# bit-reversal table (used by bytes.translate, in C) gives the X.25 value at C speed.
# tests/test_dlms_hdlc.py checks it against the table algorithm of the standard and gurux.

_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def fcs16(data: bytes | bytearray) -> int:
    """The ISO/IEC 13239 16-bit FCS of ``data`` (sent least significant byte first)."""
    crc = binascii.crc_hqx(data.translate(_REVERSED), 0xFFFF)
    return ((_REVERSED[crc & 0xFF] << 8) | _REVERSED[crc >> 8]) ^ 0xFFFF


# -- control field ---------------------------------------------------------------------------


class FrameType(enum.IntEnum):
    """Frame types of IEC 62056-46 §6.4.4.5, valued as their control byte with P/F, N(R), N(S) 0."""

    I = 0x00  # noqa: E741 - the standard's own name for the information frame
    RR = 0x01
    RNR = 0x05
    SNRM = 0x83
    DISC = 0x43
    UA = 0x63
    DM = 0x0F
    FRMR = 0x87
    UI = 0x03


_POLL_FINAL = 0x10


def _frame_type_of(control: int) -> FrameType | None:
    if control & 0x01 == 0:
        return FrameType.I
    if control & 0x03 == 0x01:
        kind = control & 0x0F  # S frame: N(R) and P/F masked off
    else:
        kind = control & ~_POLL_FINAL & 0xFF  # U frame: P/F masked off
    try:
        return FrameType(kind)
    except ValueError:
        return None  # REJ, SREJ and the U frames the profile does not use


_TYPE_OF_CONTROL: tuple[FrameType | None, ...] = tuple(_frame_type_of(c) for c in range(256))
_S_FRAMES = frozenset({FrameType.RR, FrameType.RNR})


def control_i(send_sequence: int, receive_sequence: int, poll_final: bool) -> int:
    """Control byte of an I frame: ``N(R) P/F N(S) 0`` (IEC 62056-46 §6.4.4.5, modulo 8)."""
    if not (0 <= send_sequence <= 7 and 0 <= receive_sequence <= 7):
        raise LocalProtocolError("N(S) and N(R) count modulo 8")
    return receive_sequence << 5 | poll_final << 4 | send_sequence << 1


def control_s(kind: FrameType, receive_sequence: int, poll_final: bool) -> int:
    """Control byte of an RR or RNR frame: ``N(R) P/F x x 0 1``."""
    if kind not in _S_FRAMES:
        raise LocalProtocolError(f"{kind.name} is not a supervisory frame")
    if not 0 <= receive_sequence <= 7:
        raise LocalProtocolError("N(R) counts modulo 8")
    return receive_sequence << 5 | poll_final << 4 | kind


def control_u(kind: FrameType, poll_final: bool) -> int:
    """Control byte of an unnumbered frame (SNRM, DISC, UA, DM, FRMR, UI)."""
    if kind is FrameType.I or kind in _S_FRAMES:
        raise LocalProtocolError(f"{kind.name} is not an unnumbered frame")
    return kind | poll_final << 4


# -- addresses -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """An HDLC address (IEC 62056-46 §6.4.2).

    A client address is one byte (``HdlcAddress(16)``, the public client). A server address is
    1 byte (logical device only), 2 bytes (upper/logical 7 bits, lower/physical 7 bits) or 4
    bytes (14 + 14 bits). On the wire every byte carries 7 address bits shifted left, and the low
    bit is 1 only in the last byte (extended addressing).
    """

    logical: int
    physical: int | None = None
    size: int = 1
    raw: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        logical, physical, size = self.logical, self.physical, self.size
        if size == 1:
            # IEC 62056-46 §6.4.2.2: a one-byte address has no lower (physical) part
            if physical is not None:
                raise LocalProtocolError("a one-byte HDLC address has no physical part")
            if not 0 <= logical <= 0x7F:
                raise LocalProtocolError(f"one-byte HDLC address {logical} is outside 0..127")
            raw = bytes((logical << 1 | 1,))
        elif size in (2, 4):
            bits = 7 if size == 2 else 14  # IEC 62056-46 §6.4.2.2: upper and lower halves
            limit = (1 << bits) - 1
            if physical is None:
                raise LocalProtocolError(f"a {size}-byte HDLC address needs a physical part")
            if not (0 <= logical <= limit and 0 <= physical <= limit):
                raise LocalProtocolError(
                    f"{size}-byte HDLC address parts {logical}/{physical} are outside 0..{limit}"
                )
            if size == 2:
                raw = bytes((logical << 1, physical << 1 | 1))
            else:
                raw = bytes(
                    (
                        (logical >> 7) << 1,
                        (logical & 0x7F) << 1,
                        (physical >> 7) << 1,
                        (physical & 0x7F) << 1 | 1,
                    )
                )
        else:
            # IEC 62056-46 §6.4.2.2: 1, 2 or 4 bytes
            raise LocalProtocolError(f"HDLC address size {size} is not 1, 2 or 4")
        object.__setattr__(self, "raw", raw)

    @classmethod
    def client(cls, address: int) -> HdlcAddress:
        """A client address, always one byte (IEC 62056-46 §6.4.2.1)."""
        return cls(address)

    @classmethod
    def server(
        cls, logical: int, physical: int | None = None, size: int | None = None
    ) -> HdlcAddress:
        """A server address; without ``size``, the smallest that holds both parts."""
        if size is None:
            if physical is None:
                size = 1
            elif logical <= 0x7F and physical <= 0x7F:
                size = 2
            else:
                size = 4
        return cls(logical, physical, size)

    def encode(self) -> bytes:
        return self.raw


@lru_cache(maxsize=1024)
def _address_from_raw(raw: bytes) -> HdlcAddress:
    # The caller has checked the extension bits (only the last byte ends in 1) and the size.
    if len(raw) == 1:
        return HdlcAddress(raw[0] >> 1)
    if len(raw) == 2:
        return HdlcAddress(raw[0] >> 1, raw[1] >> 1, 2)
    return HdlcAddress((raw[0] >> 1) << 7 | raw[1] >> 1, (raw[2] >> 1) << 7 | raw[3] >> 1, 4)


# -- frames ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    """One HDLC frame. ``control`` is the raw control byte; see :func:`control_i` and friends."""

    destination: HdlcAddress
    source: HdlcAddress
    control: int
    info: bytes = b""
    segmented: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.control <= 0xFF:
            raise LocalProtocolError(f"control field {self.control} is not a byte")
        kind = _TYPE_OF_CONTROL[self.control]
        if kind is None:
            # IEC 62056-46 §6.4.4.5: only I, RR, RNR, SNRM, DISC, UA, DM, FRMR and UI are used
            raise LocalProtocolError(f"control field {self.control:#04x} is not used by DLMS")
        if self.info and kind in _S_FRAMES:
            # ISO/IEC 13239 §5.3.2: supervisory frames have no information field
            raise LocalProtocolError(f"{kind.name} frame with an information field")
        if self.segmented and kind not in (FrameType.I, FrameType.UI):
            # IEC 62056-46 §6.4.4.2: only I and UI frames carry segmented information
            raise LocalProtocolError(f"{kind.name} frame with the segmentation bit set")
        if self.length > MAX_FRAME_LENGTH:
            # IEC 62056-46 §6.4.4.2: the length sub-field has 11 bits
            raise LocalProtocolError(
                f"HDLC frame of {self.length} bytes exceeds the {MAX_FRAME_LENGTH} the "
                "format field can express"
            )

    @property
    def length(self) -> int:
        """Value of the frame length sub-field: the bytes between the flags."""
        header = 3 + len(self.destination.raw) + len(self.source.raw)
        return header + 2 + (len(self.info) + 2 if self.info else 0)

    @property
    def kind(self) -> FrameType:
        kind = _TYPE_OF_CONTROL[self.control]
        assert kind is not None  # checked in __post_init__
        return kind

    @property
    def poll_final(self) -> bool:
        return bool(self.control & _POLL_FINAL)

    @property
    def send_sequence(self) -> int:
        """N(S) of an I frame."""
        return (self.control >> 1) & 0x07

    @property
    def receive_sequence(self) -> int:
        """N(R) of an I, RR or RNR frame."""
        return self.control >> 5

    def encode(self) -> bytes:
        info = self.info
        length = self.length
        if self.segmented:
            length |= _SEGMENTED << 8
        header = (
            (0xA000 | length).to_bytes(2, "big")
            + self.destination.raw
            + self.source.raw
            + bytes((self.control,))
        )
        if info:
            header += fcs16(header).to_bytes(2, "little") + info
        return b"\x7e" + header + fcs16(header).to_bytes(2, "little") + b"\x7e"


def decode_frame(data: bytes) -> HdlcFrame:
    """Decode exactly one frame, flags included; anything else raises RemoteProtocolError."""
    framer = HdlcFramer()
    framer.receive_data(data)
    frame = framer.next_frame()
    if frame is None or framer.discarded_bytes or len(framer._buffer) != 1:
        raise RemoteProtocolError(f"HDLC: {len(data)} bytes are not exactly one frame")
    return frame


# -- framer ----------------------------------------------------------------------------------

_NEED_MORE = -1
_NOISE = -2


def _address_end(buf: bytearray, start: int) -> int:
    """Index after the address starting at ``start``, or _NEED_MORE / _NOISE."""
    for i in range(start, min(start + 4, len(buf))):
        if buf[i] & 1:
            # IEC 62056-46 §6.4.2.2: the low bit of the last byte is 1; 1, 2 or 4 bytes
            return i + 1 if i - start != 2 else _NOISE
    return _NEED_MORE if len(buf) < start + 4 else _NOISE


class HdlcFramer:
    """Cuts a byte stream into :class:`HdlcFrame`; see the module docstring for errors.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_frame` until it returns ``None``.
    The framer holds at most ``max_buffer`` bytes (default: a window of 7 frames of the longest
    kind); :meth:`receive_data` raises RemoteProtocolError and empties its buffer rather than hold
    more. Consecutive frames may share a flag (``7E frame 7E frame 7E``).
    """

    __slots__ = ("_buffer", "_kept_flag", "discarded_bytes", "max_buffer")

    #: Bytes that did not end up in a frame: noise, damaged frames, a partial frame dropped by
    #: :meth:`reset` or an overflow. A flag that closed a good frame does not count.
    discarded_bytes: int

    def __init__(self, max_buffer: int = 7 * (MAX_FRAME_LENGTH + 2)) -> None:
        if max_buffer < MAX_FRAME_LENGTH + 2:
            raise LocalProtocolError(f"max_buffer {max_buffer} cannot hold the longest frame")
        self.max_buffer = max_buffer
        self.discarded_bytes = 0
        self._buffer = bytearray()
        self._kept_flag = False  # the buffer starts with the closing flag of the last frame

    @property
    def pending(self) -> bool:
        """True when bytes of a frame not yet complete are held (a lone flag does not count)."""
        buf = self._buffer
        return len(buf) > 1 or (len(buf) == 1 and buf[0] != FLAG)

    def receive_data(self, data: bytes) -> None:
        if len(self._buffer) + len(data) > self.max_buffer:
            dropped = len(self._buffer) + len(data)
            self.discarded_bytes += dropped - self._kept_flag
            self._buffer.clear()
            self._kept_flag = False
            raise RemoteProtocolError(
                f"HDLC: {dropped} bytes received without being consumed, more than the "
                f"{self.max_buffer} bytes buffered at most"
            )
        self._buffer += data

    def reset(self) -> int:
        """Drop what is buffered (e.g. a partial frame after the inter-frame timeout)."""
        dropped = len(self._buffer) - self._kept_flag
        self.discarded_bytes += dropped
        self._buffer.clear()
        self._kept_flag = False
        return dropped

    def next_frame(self) -> HdlcFrame | None:
        """The next frame, or ``None`` until more bytes arrive; raises for a damaged frame."""
        buf = self._buffer
        while True:
            start = buf.find(FLAG)
            if start != 0:
                dropped = len(buf) if start < 0 else start
                self.discarded_bytes += dropped
                del buf[:dropped]
                self._kept_flag = False
                if start < 0:
                    return None
            if len(buf) > 1 and buf[1] == FLAG:
                # Two flags in a row: the first closed a frame or is fill, not noise.
                del buf[:1]
                self._kept_flag = False
                continue
            result = self._parse(buf)
            if result is None:
                return None
            if isinstance(result, _Noise):
                self._drop_opening_flag()
                continue
            return result

    def _parse(self, buf: bytearray) -> HdlcFrame | _Noise | None:
        available = len(buf)
        if available < 2:
            return None
        b1 = buf[1]
        if b1 & 0xF0 != _FORMAT_TYPE_3:
            return _NOISE_FRAME
        if available < 3:
            return None
        length = (b1 & 0x07) << 8 | buf[2]
        if length < _MIN_FRAME_LENGTH:
            return _NOISE_FRAME
        # One-byte addresses (every client's, many servers') are the common case: inline.
        if available > 3 and buf[3] & 1:
            source_start = 4
        else:
            source_start = _address_end(buf, 3)
            if source_start < 0:
                return None if source_start == _NEED_MORE else _NOISE_FRAME
        if available > source_start and buf[source_start] & 1:
            control_at = source_start + 1
        else:
            control_at = _address_end(buf, source_start)
            if control_at < 0:
                return None if control_at == _NEED_MORE else _NOISE_FRAME
        header_end = control_at + 1  # index after the control byte
        end = length + 1  # index of the closing flag
        has_info = end > header_end + 2
        if has_info and end < header_end + 5:
            return _NOISE_FRAME  # IEC 62056-46 §6.4.4.6: HCS + >= 1 info byte + FCS
        if end < header_end + 2:
            return _NOISE_FRAME
        if has_info:
            if available < header_end + 2:
                return None
            if fcs16(buf[1:header_end]) != buf[header_end] | buf[header_end + 1] << 8:
                self._drop_opening_flag()
                # IEC 62056-46 §6.4.4.6: HCS over format, addresses and control
                raise RemoteProtocolError("HDLC: header check sequence (HCS) mismatch")
        if available <= end:
            return None
        if buf[end] != FLAG:
            self._drop_opening_flag()
            # IEC 62056-46 §6.4.4.2: the length covers everything between the flags
            raise RemoteProtocolError(
                f"HDLC: no closing flag at offset {end}, where the length field {length} puts it"
            )
        if fcs16(buf[1 : end - 2]) != buf[end - 2] | buf[end - 1] << 8:
            self._consume(end, delivered=False)
            # IEC 62056-46 §6.4.4.7: FCS over the whole frame between the flags
            raise RemoteProtocolError("HDLC: frame check sequence (FCS) mismatch")
        try:
            frame = HdlcFrame(
                _address_from_raw(bytes(buf[3:source_start])),
                _address_from_raw(bytes(buf[source_start:control_at])),
                buf[control_at],
                bytes(buf[header_end + 2 : end - 2]) if has_info else b"",
                bool(b1 & _SEGMENTED),
            )
        except ProtocolError as error:
            self._consume(end, delivered=False)
            raise RemoteProtocolError(f"HDLC: {error}") from None
        self._consume(end, delivered=True)
        return frame

    def _consume(self, end: int, *, delivered: bool) -> None:
        # The closing flag stays: it may open the next frame.
        if not delivered:
            self.discarded_bytes += end - self._kept_flag
        del self._buffer[:end]
        self._kept_flag = True

    def _drop_opening_flag(self) -> None:
        """The flag at offset 0 opens no frame; it counts as discarded unless it closed one."""
        del self._buffer[:1]
        self.discarded_bytes += not self._kept_flag
        self._kept_flag = False


class _Noise:
    __slots__ = ()


_NOISE_FRAME = _Noise()


# -- parameter negotiation -------------------------------------------------------------------

DEFAULT_MAX_INFO_LENGTH = 128  # IEC 62056-46 §6.4.4.4.3.2: defaults when a parameter is absent
DEFAULT_WINDOW_SIZE = 1
MIN_MAX_INFO_LENGTH = 32  # ... and the ranges
MAX_MAX_INFO_LENGTH = 2030
MAX_WINDOW_SIZE = 7
_FORMAT_IDENTIFIER = 0x81  # ISO/IEC 13239 §5.5.3.2: format identifier
_GROUP_IDENTIFIER = 0x80  # ... HDLC parameter negotiation group
_MAX_INFO_TRANSMIT = 0x05
_MAX_INFO_RECEIVE = 0x06
_WINDOW_TRANSMIT = 0x07
_WINDOW_RECEIVE = 0x08


@dataclass(frozen=True, slots=True)
class HdlcParameters:
    """Link parameters as the sender of an SNRM or UA states them: its transmit and receive."""

    max_info_transmit: int = DEFAULT_MAX_INFO_LENGTH
    max_info_receive: int = DEFAULT_MAX_INFO_LENGTH
    window_transmit: int = DEFAULT_WINDOW_SIZE
    window_receive: int = DEFAULT_WINDOW_SIZE

    def __post_init__(self) -> None:
        for name in ("max_info_transmit", "max_info_receive"):
            value = getattr(self, name)
            # IEC 62056-46 §6.4.4.4.3.2: maximum information field length 32..2030
            if not MIN_MAX_INFO_LENGTH <= value <= MAX_MAX_INFO_LENGTH:
                raise LocalProtocolError(f"{name} {value} is outside 32..2030")
        for name in ("window_transmit", "window_receive"):
            value = getattr(self, name)
            # IEC 62056-46 §6.4.4.4.3.2: window size 1..7
            if not 1 <= value <= MAX_WINDOW_SIZE:
                raise LocalProtocolError(f"{name} {value} is outside 1..7")

    def answer(self, proposal: HdlcParameters) -> HdlcParameters:
        """The UA parameters of a station with ``self`` as its limits, to an SNRM ``proposal``.

        Each direction gets the smaller of what the sender can send and the receiver take.
        """
        return HdlcParameters(
            min(self.max_info_transmit, proposal.max_info_receive),
            min(self.max_info_receive, proposal.max_info_transmit),
            min(self.window_transmit, proposal.window_receive),
            min(self.window_receive, proposal.window_transmit),
        )

    def mirrored(self) -> HdlcParameters:
        """The same link seen from the other end (its transmit is our receive)."""
        return HdlcParameters(
            self.max_info_receive, self.max_info_transmit, self.window_receive, self.window_transmit
        )

    def encode(self, *, omit_defaults: bool = True) -> bytes:
        """The information field of an SNRM or UA; empty when every value is the default.

        Lengths go on 1 byte below 256 and 2 above, window sizes on 4 bytes: what gurux and the
        Green Book examples send.
        """
        params = bytearray()
        for pid, value, default in (
            (_MAX_INFO_TRANSMIT, self.max_info_transmit, DEFAULT_MAX_INFO_LENGTH),
            (_MAX_INFO_RECEIVE, self.max_info_receive, DEFAULT_MAX_INFO_LENGTH),
        ):
            if value != default or not omit_defaults:
                size = 1 if value < 0x100 else 2
                params += bytes((pid, size)) + value.to_bytes(size, "big")
        for pid, value in (
            (_WINDOW_TRANSMIT, self.window_transmit),
            (_WINDOW_RECEIVE, self.window_receive),
        ):
            if value != DEFAULT_WINDOW_SIZE or not omit_defaults:
                params += bytes((pid, 4)) + value.to_bytes(4, "big")
        if not params:
            return b""
        return bytes((_FORMAT_IDENTIFIER, _GROUP_IDENTIFIER, len(params))) + params

    @classmethod
    def decode(cls, info: bytes) -> HdlcParameters:
        """Parse an SNRM/UA information field; empty means all defaults.

        Values above the standard's maximum are clamped to it (the negotiation takes the minimum
        anyway); values below its minimum raise RemoteProtocolError. Unknown parameters are
        skipped.
        """
        if not info:
            return cls()
        if len(info) < 3 or info[0] != _FORMAT_IDENTIFIER or info[1] != _GROUP_IDENTIFIER:
            # IEC 62056-46 §6.4.4.4.3.2: format identifier 0x81, group identifier 0x80
            raise RemoteProtocolError(
                f"HDLC parameters: expected 81 80 <length>, got {info[:3].hex(' ')}"
            )
        if info[2] != len(info) - 3:
            raise RemoteProtocolError(
                f"HDLC parameters: group length {info[2]} but {len(info) - 3} bytes follow"
            )
        values = {
            _MAX_INFO_TRANSMIT: DEFAULT_MAX_INFO_LENGTH,
            _MAX_INFO_RECEIVE: DEFAULT_MAX_INFO_LENGTH,
            _WINDOW_TRANSMIT: DEFAULT_WINDOW_SIZE,
            _WINDOW_RECEIVE: DEFAULT_WINDOW_SIZE,
        }
        offset = 3
        while offset < len(info):
            if offset + 2 > len(info):
                raise RemoteProtocolError(
                    f"HDLC parameters: truncated parameter at offset {offset}"
                )
            pid, size = info[offset], info[offset + 1]
            offset += 2
            if not 1 <= size <= 4 or offset + size > len(info):
                raise RemoteProtocolError(
                    f"HDLC parameters: parameter {pid:#04x} of length {size} at offset "
                    f"{offset - 2} does not fit"
                )
            if pid in values:
                values[pid] = int.from_bytes(info[offset : offset + size], "big")
            offset += size
        lengths = (values[_MAX_INFO_TRANSMIT], values[_MAX_INFO_RECEIVE])
        windows = (values[_WINDOW_TRANSMIT], values[_WINDOW_RECEIVE])
        if min(lengths) < MIN_MAX_INFO_LENGTH or min(windows) < 1:
            # IEC 62056-46 §6.4.4.4.3.2: length 32..2030, window 1..7
            raise RemoteProtocolError(
                f"HDLC parameters: information field lengths {lengths} or window sizes "
                f"{windows} below the minimum (32, 1)"
            )
        return cls(
            min(lengths[0], MAX_MAX_INFO_LENGTH),
            min(lengths[1], MAX_MAX_INFO_LENGTH),
            min(windows[0], MAX_WINDOW_SIZE),
            min(windows[1], MAX_WINDOW_SIZE),
        )


# -- LLC -------------------------------------------------------------------------------------

LLC_COMMAND = b"\xe6\xe6\x00"  # IEC 62056-46 §6.2.1: destination LSAP, source LSAP, quality
LLC_RESPONSE = b"\xe6\xe7\x00"  # ... source LSAP E7 marks a response (server to client)


def add_llc(apdu: bytes, *, response: bool) -> bytes:
    """Prefix the LLC header of a command (client to server) or a response."""
    return (LLC_RESPONSE if response else LLC_COMMAND) + apdu


def strip_llc(info: bytes, *, response: bool) -> bytes:
    """Remove the LLC header a command or response must start with."""
    expected = LLC_RESPONSE if response else LLC_COMMAND
    if info[:3] != expected:
        # IEC 62056-46 §6.2.1: E6 E6 00 for commands, E6 E7 00 for responses
        raise RemoteProtocolError(
            f"LLC header {info[:3].hex(' ')} at offset 0, expected {expected.hex(' ')}"
        )
    return info[3:]
