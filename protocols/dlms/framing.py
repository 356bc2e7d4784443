"""One client-side face for the two DLMS framings, so a session drives either the same way.

``WrapperFraming`` (IEC 62056-47, TCP/UDP) needs no link set-up; ``HdlcFraming`` (IEC 62056-46,
serial and optical ports) opens a link with SNRM/UA before APDUs can travel and closes it with
DISC. Both take bytes and ``now`` and give events, like everything under ``protocols``:

    opening = framing.open(now)            # bytes to send (empty for WRAPPER)
    events = framing.receive_data(data, now)
    ApduArrived(apdu) | FramingOpened() | FramingClosed(reason) | FramingDropped(reason)
    wire = framing.wrap(apdu, now)         # bytes to send; only while ``ready``
    framing.use_client(client_address)     # another client SAP (association) from now on
    framing.data_to_send()                 # what the framing owes by itself (HDLC RR polls...)
    framing.next_deadline() / framing.handle_timeout(now)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias

from protocols.dlms import hdlc_link
from protocols.dlms.hdlc import HdlcAddress, HdlcParameters
from protocols.dlms.hdlc_link import HdlcLink, LinkState
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ApduArrived",
    "ApduFraming",
    "FramingClosed",
    "FramingDropped",
    "FramingEvent",
    "FramingOpened",
    "HdlcFraming",
    "WrapperFraming",
]


@dataclass(frozen=True, slots=True)
class ApduArrived:
    apdu: bytes


@dataclass(frozen=True, slots=True)
class FramingOpened:
    pass


@dataclass(frozen=True, slots=True)
class FramingClosed:
    reason: str


@dataclass(frozen=True, slots=True)
class FramingDropped:
    """Bytes the framing discarded (garbage, a frame for another station), for the log."""

    reason: str


FramingEvent: TypeAlias = ApduArrived | FramingOpened | FramingClosed | FramingDropped


class ApduFraming(Protocol):
    @property
    def ready(self) -> bool: ...

    def open(self, now: float) -> bytes: ...

    def wrap(self, apdu: bytes, now: float) -> bytes: ...

    def receive_data(self, data: bytes, now: float) -> list[FramingEvent]: ...

    def data_to_send(self) -> bytes: ...

    def close(self, now: float) -> bytes: ...

    def use_client(self, client_address: int) -> None:
        """Send from client SAP ``client_address`` from now on: another association. On HDLC
        the client address is part of the link's address, so only while it is disconnected
        (``LocalProtocolError`` otherwise): the next ``open`` connects from the new address."""
        ...

    def next_deadline(self) -> float | None: ...

    def handle_timeout(self, now: float) -> list[FramingEvent]: ...


class WrapperFraming:
    """WRAPPER from client SAP ``client_wport`` to the meter's logical device ``server_wport``."""

    __slots__ = ("_framer", "client_wport", "server_wport")

    def __init__(self, client_wport: int, server_wport: int = 1, max_apdu: int = 0xFFFF) -> None:
        self.client_wport = client_wport
        self.server_wport = server_wport
        # frames from the meter may be for any of our client SAPs: answers to this association,
        # pushes to the push SAP its push setup names
        self._framer = WrapperFramer(None, server_wport, max_apdu)

    @property
    def ready(self) -> bool:
        return True

    def open(self, now: float) -> bytes:
        return b""

    def wrap(self, apdu: bytes, now: float) -> bytes:
        return encode_wrapper(self.client_wport, self.server_wport, apdu)

    def receive_data(self, data: bytes, now: float) -> list[FramingEvent]:
        # A WRAPPER error is fatal for the stream: TCP offers no reliable resync point, so the
        # RemoteProtocolError goes up and the session ends the connection.
        self._framer.receive_data(data)
        return [ApduArrived(frame.apdu) for frame in self._framer.frames()]

    def data_to_send(self) -> bytes:
        return b""

    def close(self, now: float) -> bytes:
        return b""

    def use_client(self, client_address: int) -> None:
        self.client_wport = client_address  # frames already received stay: they name their SAP

    def next_deadline(self) -> float | None:
        return None

    def handle_timeout(self, now: float) -> list[FramingEvent]:
        return []


class HdlcFraming:
    """An HDLC client link to one meter (on a multidrop bus: the meter's physical address)."""

    __slots__ = ("_link",)

    def __init__(
        self,
        client_address: int,
        logical: int,
        physical: int | None = None,
        *,
        parameters: HdlcParameters | None = None,
        response_timeout: float = 5.0,
        max_retries: int = 3,
    ) -> None:
        self._link = HdlcLink(
            role="client",
            local=HdlcAddress.client(client_address),
            remote=HdlcAddress.server(logical, physical),
            parameters=parameters,
            response_timeout=response_timeout,
            max_retries=max_retries,
            inactivity_timeout=None,
        )

    @property
    def ready(self) -> bool:
        return self._link.idle

    def open(self, now: float) -> bytes:
        return self._link.connect(now)

    def wrap(self, apdu: bytes, now: float) -> bytes:
        if self._link.state is not LinkState.CONNECTED:
            raise LocalProtocolError("the HDLC link is not connected")
        return self._link.send_apdu(apdu, now)

    def receive_data(self, data: bytes, now: float) -> list[FramingEvent]:
        try:
            return self._translate(self._link.receive_data(data, now))
        except RemoteProtocolError as exc:
            return [FramingClosed(f"HDLC procedure error: {exc}")]

    def _translate(self, events: list[hdlc_link.Event]) -> list[FramingEvent]:
        out: list[FramingEvent] = []
        for event in events:
            if isinstance(event, hdlc_link.ApduReceived):
                out.append(ApduArrived(event.apdu))
            elif isinstance(event, hdlc_link.Connected):
                out.append(FramingOpened())
            elif isinstance(event, hdlc_link.Disconnected):
                out.append(FramingClosed(event.reason))
            elif isinstance(event, hdlc_link.FrameDropped):
                out.append(FramingDropped(event.reason))
        return out

    def data_to_send(self) -> bytes:
        return self._link.data_to_send()

    def close(self, now: float) -> bytes:
        if self._link.state in (LinkState.DISCONNECTED, LinkState.DISCONNECTING):
            return b""
        return self._link.disconnect(now)

    def use_client(self, client_address: int) -> None:
        old = self._link
        if old.state not in (LinkState.DISCONNECTED, LinkState.FAILED):
            raise LocalProtocolError(
                f"the HDLC link is {old.state.value}: disconnect before changing the client address"
            )
        self._link = HdlcLink(
            role="client",
            local=HdlcAddress.client(client_address),
            remote=old.remote,
            parameters=old.limits,
            response_timeout=old.response_timeout,
            max_retries=old.max_retries,
            inactivity_timeout=None,
        )

    def next_deadline(self) -> float | None:
        return self._link.next_deadline()

    def handle_timeout(self, now: float) -> list[FramingEvent]:
        return self._translate(self._link.handle_timeout(now))
