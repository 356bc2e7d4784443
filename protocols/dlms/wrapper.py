"""The DLMS/COSEM WRAPPER: the framing of the TCP-UDP based communication profile, sans-IO.

IEC 62056-47 §5 (Green Book, "TCP-UDP based communication profile", the wrapper sub-layer).
Every APDU travels behind an 8-byte header, all fields big-endian unsigned 16-bit::

    version (0x0001) | source wPort | destination wPort | length of the APDU | APDU ...

The wPorts name the application processes at both ends (the client SAP on our side, the logical
device on the meter's side). TCP gives no frame delimiter, so a header that is wrong cannot be
skipped by itself. :class:`WrapperFramer` raises :class:`RemoteProtocolError` for it and, on the
following calls, drops bytes up to the next plausible header: version 1 followed by the wPorts it
expects. A session normally aborts on the first error; the resync is there so that a caller who
wants to log and go on can.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "WRAPPER_HEADER_LENGTH",
    "WRAPPER_VERSION",
    "WrapperFrame",
    "WrapperFramer",
    "encode_wrapper",
]

WRAPPER_VERSION = 0x0001  # IEC 62056-47 §5.2: the only version defined
WRAPPER_HEADER_LENGTH = 8
_MAX_U16 = 0xFFFF
_HEADER = struct.Struct(">HHHH")


def _check_u16(name: str, value: int) -> None:
    if not 0 <= value <= _MAX_U16:
        raise LocalProtocolError(f"{name} {value} does not fit the 16-bit wrapper field")


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    """One WRAPPER frame: the two wPorts and the APDU it carries."""

    source_wport: int
    destination_wport: int
    apdu: bytes

    def __post_init__(self) -> None:
        # IEC 62056-47 §5.2: wPorts and length are Unsigned16.
        _check_u16("source wPort", self.source_wport)
        _check_u16("destination wPort", self.destination_wport)
        _check_u16("APDU length", len(self.apdu))

    def encode(self) -> bytes:
        return encode_wrapper(self.source_wport, self.destination_wport, self.apdu)


def encode_wrapper(source_wport: int, destination_wport: int, apdu: bytes) -> bytes:
    """Header plus APDU, without building a :class:`WrapperFrame` (the hot path)."""
    try:
        header = _HEADER.pack(WRAPPER_VERSION, source_wport, destination_wport, len(apdu))
    except struct.error:
        # IEC 62056-47 §5.2: wPorts and length are Unsigned16.
        raise LocalProtocolError(
            f"wrapper: wPorts {source_wport}, {destination_wport} or APDU length {len(apdu)} "
            "do not fit 16 bits"
        ) from None
    return header + apdu


class WrapperFramer:
    """Cuts a byte stream from ``remote_wport`` to ``local_wport`` into :class:`WrapperFrame`.

    Feed bytes with :meth:`receive_data`, then call :meth:`next_frame` until it returns ``None``
    ("need more"). A header with another version, other wPorts or a length above ``max_apdu``
    raises :class:`RemoteProtocolError` from :meth:`next_frame`; the framer then resynchronises
    (see the module docstring). At most ``max_buffer`` bytes are held: :meth:`receive_data`
    raises :class:`RemoteProtocolError` and empties the buffer rather than hold more.
    """

    __slots__ = (
        "_buffer",
        "_expected",
        "_resync",
        "discarded_bytes",
        "local_wport",
        "max_apdu",
        "max_buffer",
        "remote_wport",
    )

    def __init__(
        self,
        local_wport: int | None,
        remote_wport: int | None,
        max_apdu: int = _MAX_U16,
        max_buffer: int | None = None,
    ) -> None:
        if local_wport is not None:  # None: any of our wPorts (pushes go to the push client SAP)
            _check_u16("local wPort", local_wport)
        if remote_wport is not None:  # None: any peer wPort (a meter serving several clients)
            _check_u16("remote wPort", remote_wport)
        if not 1 <= max_apdu <= _MAX_U16:
            raise LocalProtocolError(f"max_apdu {max_apdu} is outside 1..65535")
        if max_buffer is None:
            max_buffer = 2 * (WRAPPER_HEADER_LENGTH + max_apdu)
        if max_buffer < WRAPPER_HEADER_LENGTH + max_apdu:
            raise LocalProtocolError(
                f"max_buffer {max_buffer} cannot hold one frame of {max_apdu} bytes plus header"
            )
        self.local_wport = local_wport
        self.remote_wport = remote_wport
        self.max_apdu = max_apdu
        self.max_buffer = max_buffer
        self.discarded_bytes = 0
        self._buffer = bytearray()
        self._resync = False
        # What a frame for us starts with: version, source = the peer, destination = us.
        self._expected = (
            None
            if remote_wport is None or local_wport is None
            else struct.pack(">HHH", WRAPPER_VERSION, remote_wport, local_wport)
        )

    def receive_data(self, data: bytes) -> None:
        if len(self._buffer) + len(data) > self.max_buffer:
            held = len(self._buffer)
            self.discarded_bytes += held + len(data)
            self._buffer.clear()
            self._resync = True
            raise RemoteProtocolError(
                f"wrapper: {held + len(data)} bytes without a complete frame, "
                f"more than the {self.max_buffer} bytes buffered at most"
            )
        self._buffer += data

    def next_frame(self) -> WrapperFrame | None:
        """The next frame, or ``None`` until more bytes arrive."""
        buf = self._buffer
        if self._resync and not self._skip_to_header():
            return None
        if len(buf) < WRAPPER_HEADER_LENGTH:
            return None
        version, source, destination, length = _HEADER.unpack_from(buf)
        if version != WRAPPER_VERSION:
            self._fail()
            # IEC 62056-47 §5.2: version is 0x0001
            raise RemoteProtocolError(
                f"wrapper: version {version:#06x} at offset 0, expected {WRAPPER_VERSION:#06x}"
            )
        if (self.local_wport is not None and destination != self.local_wport) or (
            self.remote_wport is not None and source != self.remote_wport
        ):
            self._fail()
            # IEC 62056-47 §5.2: the wPorts identify the two application processes
            raise RemoteProtocolError(
                f"wrapper: frame from wPort {source} to wPort {destination}, expected "
                f"from {'any wPort' if self.remote_wport is None else self.remote_wport} "
                f"to {'any wPort' if self.local_wport is None else self.local_wport}"
            )
        if length > self.max_apdu:
            self._fail()
            raise RemoteProtocolError(
                f"wrapper: length field {length} at offset 6 exceeds the maximum APDU "
                f"size {self.max_apdu}"
            )
        end = WRAPPER_HEADER_LENGTH + length
        if len(buf) < end:
            return None
        apdu = bytes(buf[WRAPPER_HEADER_LENGTH:end])
        del buf[:end]
        return WrapperFrame(source, destination, apdu)

    def frames(self) -> list[WrapperFrame]:
        """Every complete frame buffered now (stops at, and raises, the first bad header)."""
        out: list[WrapperFrame] = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def _fail(self) -> None:
        """The header at offset 0 is bad: drop its first byte and resync on the next calls."""
        del self._buffer[:1]
        self.discarded_bytes += 1
        self._resync = True

    def _skip_to_header(self) -> bool:
        """Drop bytes up to the next plausible header; true once the buffer starts with one."""
        buf = self._buffer
        found = self._find_header()
        if found < 0:
            # Keep a tail that may be the start of the pattern split across reads.
            keep = min(len(buf), 5)
            drop = len(buf) - keep
            self.discarded_bytes += drop
            del buf[:drop]
            return False
        self.discarded_bytes += found
        del buf[:found]
        self._resync = False
        return True

    def _find_header(self) -> int:
        buf = self._buffer
        if self._expected is not None:
            return buf.find(self._expected)
        version = struct.pack(">H", WRAPPER_VERSION)
        source = None if self.remote_wport is None else struct.pack(">H", self.remote_wport)
        destination = None if self.local_wport is None else struct.pack(">H", self.local_wport)
        start = buf.find(version)
        while start >= 0 and start + 6 <= len(buf):
            if (source is None or buf[start + 2 : start + 4] == source) and (
                destination is None or buf[start + 4 : start + 6] == destination
            ):
                return start
            start = buf.find(version, start + 1)
        return -1
