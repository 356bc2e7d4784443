"""The HDLC link of DLMS/COSEM (IEC 62056-46 §6.4.4, normal response mode), sans-IO.

One class, :class:`HdlcLink`, plays the client (primary station) or the server (secondary
station) over the codec of ``hdlc``. The API follows h11: bytes and ``now`` in, events out.

* Client: :meth:`~HdlcLink.connect` (SNRM with the parameters to negotiate), then
  :meth:`~HdlcLink.send_apdu` for each request, and :meth:`~HdlcLink.disconnect` (DISC).
* Both: :meth:`~HdlcLink.receive_data` returns events (:class:`Connected`, :class:`ApduReceived`,
  :class:`UnnumberedInformation`, :class:`FrameDropped`, :class:`Disconnected`). The frames the
  link owes in answer (RR to poll the next segment, UA, the next segments, retransmissions) are
  queued: call :meth:`~HdlcLink.data_to_send` after every call, *also after an error*.
  ``connect``, ``send_apdu`` and ``disconnect`` return ``data_to_send()`` themselves.
* Timers: :meth:`~HdlcLink.next_deadline` and :meth:`~HdlcLink.handle_timeout`.

Data transfer: APDUs get the LLC header (E6 E6 00 from the client, E6 E7 00 from the server),
are cut into I frames of at most the negotiated information field length, with the S bit on all
but the last segment, and sent in bursts of at most the negotiated window, P/F on the last frame
of a burst. The receiver answers a P/F frame: with its own I frames, or RR to acknowledge and
poll for more. N(S)/N(R) count modulo 8; an RR or I frame whose N(R) does not cover all frames
sent makes the sender go back to N(R) and send again (go-back-N).

Errors and timeouts, kept simple:

* a frame that fails the framer's checks, or is for another station, is discarded as ISO/IEC
  13239 says, and reported as :class:`FrameDropped`;
* a well-formed frame that breaks the link procedure (a frame type the state does not allow,
  N(R) out of range, an information field above the negotiated length, a bad LLC header or
  negotiation field) raises :class:`RemoteProtocolError` and leaves the link FAILED. A server
  then queues an FRMR (if polled) and accepts only SNRM or DISC; a client may
  :meth:`~HdlcLink.disconnect` or :meth:`~HdlcLink.connect` again. Events decoded earlier in the
  same ``receive_data`` call are lost with the exception;
* client: when a poll stays unanswered for ``response_timeout`` seconds, the last command is sent
  again (SNRM, DISC, the unacknowledged I frames, or RR), at most ``max_retries`` times; then the
  link gives up with :class:`Disconnected`. RNR is answered by polling with RR after
  ``response_timeout``, within the same retry budget;
* server: after ``inactivity_timeout`` seconds without a frame, it returns to disconnected mode;
* both: a partial frame older than ``inter_frame_timeout`` (if set) is dropped.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from protocols.dlms.hdlc import (
    FrameType,
    HdlcAddress,
    HdlcFrame,
    HdlcFramer,
    HdlcParameters,
    add_llc,
    control_i,
    control_s,
    control_u,
    strip_llc,
)
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "TRANSITIONS",
    "Action",
    "ApduReceived",
    "Connected",
    "Disconnected",
    "Event",
    "FrameDropped",
    "HdlcLink",
    "LinkState",
    "Role",
    "UnnumberedInformation",
]


class Role(enum.Enum):
    CLIENT = "client"  # primary station
    SERVER = "server"  # secondary station


class LinkState(enum.Enum):
    DISCONNECTED = "disconnected"  # NDM
    CONNECTING = "connecting"  # client: SNRM sent
    CONNECTED = "connected"  # NRM
    DISCONNECTING = "disconnecting"  # client: DISC sent
    FAILED = "failed"  # the peer broke the procedure; server: FRMR condition


class Action(enum.Enum):
    CONNECT = "connect"
    SEND_APDU = "send_apdu"
    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    """The link is up; ``parameters`` are the negotiated ones, seen from this end."""

    parameters: HdlcParameters


@dataclass(frozen=True, slots=True)
class ApduReceived:
    """A whole APDU, reassembled from its segments, LLC header removed."""

    apdu: bytes


@dataclass(frozen=True, slots=True)
class UnnumberedInformation:
    """The information field of a UI frame, as received (LLC header included, if any)."""

    info: bytes


@dataclass(frozen=True, slots=True)
class FrameDropped:
    """Bytes or a frame were discarded; ``reason`` says which and why, for the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


Event = Connected | ApduReceived | UnnumberedInformation | FrameDropped | Disconnected
Input = FrameType | Action

# -- transition table ------------------------------------------------------------------------
#
# (role, state, input) -> the states the link may be in afterwards. A local action missing from
# the table raises LocalProtocolError; a received frame type missing raises RemoteProtocolError.
# A RemoteProtocolError from any transition leads to FAILED (not listed per entry).

_D, _CG, _C, _DG, _F = (
    LinkState.DISCONNECTED,
    LinkState.CONNECTING,
    LinkState.CONNECTED,
    LinkState.DISCONNECTING,
    LinkState.FAILED,
)
_I, _RR, _RNR, _SNRM, _DISC, _UA, _DM, _FRMR, _UI = (
    FrameType.I,
    FrameType.RR,
    FrameType.RNR,
    FrameType.SNRM,
    FrameType.DISC,
    FrameType.UA,
    FrameType.DM,
    FrameType.FRMR,
    FrameType.UI,
)
_CLIENT_RECEIVES = (_I, _RR, _RNR, _UA, _DM, _FRMR, _UI)  # responses (a client gets no commands)


def _table() -> dict[tuple[Role, LinkState, Input], frozenset[LinkState]]:
    t: dict[tuple[Role, LinkState, Input], frozenset[LinkState]] = {}

    def add(role: Role, state: LinkState, inputs: tuple[Input, ...], *after: LinkState) -> None:
        for item in inputs:
            t[role, state, item] = frozenset(after)

    c, s, a = Role.CLIENT, Role.SERVER, Action
    # Client. Late or stray responses are dropped where the state has no use for them.
    add(c, _D, (a.CONNECT,), _CG)
    add(c, _D, (a.DISCONNECT,), _DG)  # DISC from NDM: make sure the server is in NDM too
    add(c, _D, (a.TIMEOUT, *_CLIENT_RECEIVES), _D)
    add(c, _CG, (_UA,), _C)
    add(c, _CG, (_DM, _FRMR), _D)
    add(c, _CG, (_I, _RR, _RNR, _UI), _CG)
    add(c, _CG, (a.TIMEOUT,), _CG, _D)
    add(c, _CG, (a.DISCONNECT,), _DG)
    add(c, _C, (a.SEND_APDU, _I, _RR, _RNR, _UI, _UA), _C)
    add(c, _C, (_DM, _FRMR), _D)
    add(c, _C, (a.TIMEOUT,), _C, _D)
    add(c, _C, (a.DISCONNECT,), _DG)
    add(c, _DG, (_UA, _DM), _D)
    add(c, _DG, (_I, _RR, _RNR, _FRMR, _UI), _DG)
    add(c, _DG, (a.TIMEOUT,), _DG, _D)
    add(c, _F, (a.CONNECT,), _CG)
    add(c, _F, (a.DISCONNECT,), _DG)
    add(c, _F, (a.TIMEOUT, *_CLIENT_RECEIVES), _F)
    # Server. It never initiates: no CONNECT or DISCONNECT; commands only.
    add(s, _D, (_SNRM,), _C)
    add(s, _D, (_DISC, _I, _RR, _RNR, _UI, a.TIMEOUT), _D)  # DM to a poll in NDM
    add(s, _C, (_SNRM, _I, _RR, _RNR, _UI, a.SEND_APDU), _C)
    add(s, _C, (_DISC,), _D)
    add(s, _C, (a.TIMEOUT,), _C, _D)
    add(s, _F, (_SNRM,), _C)
    add(s, _F, (_DISC,), _D)
    add(s, _F, (_I, _RR, _RNR, _UI), _F)  # FRMR again to a poll
    add(s, _F, (a.TIMEOUT,), _F, _D)
    return t


TRANSITIONS: Mapping[tuple[Role, LinkState, Input], frozenset[LinkState]] = _table()

# FRMR information field, ISO/IEC 13239 §5.5.3.4.2 (modulo 8): the W, X, Y, Z bits
_FRMR_W, _FRMR_X, _FRMR_Y, _FRMR_Z = 0x01, 0x02, 0x04, 0x08


class _Violation(RemoteProtocolError):
    """A well-formed frame that breaks the procedure; ``flags`` are the FRMR W/X/Y/Z bits."""

    def __init__(self, message: str, flags: int = 0) -> None:
        super().__init__(message)
        self.flags = flags


# -- the link --------------------------------------------------------------------------------


class HdlcLink:
    """One end of an HDLC connection; see the module docstring."""

    def __init__(
        self,
        *,
        role: Literal["client", "server"] | Role,
        local: HdlcAddress,
        remote: HdlcAddress | None,
        parameters: HdlcParameters | None = None,
        response_timeout: float = 5.0,
        max_retries: int = 3,
        inactivity_timeout: float | None = 120.0,
        inter_frame_timeout: float | None = None,
        max_apdu_size: int = 0xFFFF,
        max_buffer: int | None = None,
    ) -> None:
        self.role = Role(role)
        if self.role is Role.CLIENT and remote is None:
            raise LocalProtocolError("a client link needs the server address")
        if self.role is Role.CLIENT and local.size != 1:
            # IEC 62056-46 §6.4.2.1: client addresses are one byte
            raise LocalProtocolError("a client address is one byte")
        self.local = local
        self.remote = remote
        self.limits = parameters or HdlcParameters()
        self.response_timeout = response_timeout
        self.max_retries = max_retries
        self.inactivity_timeout = inactivity_timeout
        self.inter_frame_timeout = inter_frame_timeout
        self.max_apdu_size = max_apdu_size
        self._framer = HdlcFramer() if max_buffer is None else HdlcFramer(max_buffer)
        self._state = LinkState.DISCONNECTED
        self._outbox: list[bytes] = []
        self._peer: HdlcAddress | None = remote
        self.parameters: HdlcParameters | None = None  # negotiated, from this end
        self._last_rx: float | None = None
        self._poll_at: float | None = None  # client: when the unanswered poll went out
        self._busy_at: float | None = None  # client: when RNR came
        self._retries = 0
        self._frmr = b""
        self._last_command: tuple[int, bytes] = (0, b"")  # client: what to send on a timeout
        # Data transfer (reset by _reset_transfer): V(S), V(R), the last N(R) received, ...
        self._vs = self._vr = self._va = 0
        self._tx_segments: deque[bytes] = deque()  # segments not sent yet
        self._unacked: deque[tuple[int, bytes, bool]] = deque()  # (N(S), info, S bit)
        self._rx_parts: list[bytes] = []  # segments of the APDU being received
        self._rx_size = 0
        self._polled = False  # server: a poll is waiting for its answer
        self._awaiting_apdu = False  # server: the application owes an answer
        self._peer_busy = False  # server: the client sent RNR

    # -- public API --------------------------------------------------------------------------

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def idle(self) -> bool:
        """Connected and nothing in flight: a client may send the next APDU."""
        return self._state is _C and not (
            self._tx_segments
            or self._unacked
            or self._rx_parts
            or self._poll_at is not None
            or self._busy_at is not None
        )

    def data_to_send(self) -> bytes:
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def connect(self, now: float) -> bytes:
        """Client: send SNRM with the parameters to negotiate (the defaults are left out)."""
        self._allowed(Action.CONNECT)
        self._reset_transfer()
        self.parameters = None
        self._retries = 0
        self._send_command(control_u(_SNRM, True), self.limits.encode(), now)
        self._state = _CG
        return self.data_to_send()

    def disconnect(self, now: float) -> bytes:
        """Client: send DISC, from any state but DISCONNECTING."""
        self._allowed(Action.DISCONNECT)
        self._reset_transfer()
        self._retries = 0
        self._send_command(control_u(_DISC, True), b"", now)
        self._state = _DG
        return self.data_to_send()

    def send_apdu(self, apdu: bytes, now: float) -> bytes:
        """Send an APDU (LLC header added). The client must be :attr:`idle`; the server sends
        it in answer to the poll it owes, or to the next one."""
        self._allowed(Action.SEND_APDU)
        if not apdu:
            raise LocalProtocolError("an APDU is at least one byte")
        if self.role is Role.CLIENT and not self.idle:
            raise LocalProtocolError("the HDLC link is busy with the previous APDU")
        if self.role is Role.SERVER and (self._tx_segments or self._unacked):
            raise LocalProtocolError("the previous APDU is not delivered yet")
        assert self.parameters is not None
        data = add_llc(apdu, response=self.role is Role.SERVER)
        size = self.parameters.max_info_transmit
        self._tx_segments.extend(data[i : i + size] for i in range(0, len(data), size))
        if self.role is Role.CLIENT:
            self._send_burst(now)
        else:
            self._awaiting_apdu = False
            if self._polled:
                self._respond()
        return self.data_to_send()

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        events: list[Event] = []
        if data:
            self._last_rx = now
        try:
            self._framer.receive_data(data)
        except RemoteProtocolError as error:
            events.append(FrameDropped(str(error)))
        while True:
            try:
                frame = self._framer.next_frame()
            except RemoteProtocolError as error:
                events.append(FrameDropped(str(error)))
                continue
            if frame is None:
                return events
            self._on_frame(frame, events, now)

    def next_deadline(self) -> float | None:
        deadlines = [self._protocol_deadline()]
        if self.inter_frame_timeout is not None and self._framer.pending:
            assert self._last_rx is not None
            deadlines.append(self._last_rx + self.inter_frame_timeout)
        return min((d for d in deadlines if d is not None), default=None)

    def handle_timeout(self, now: float) -> list[Event]:
        """Act on the deadlines that have passed; frames to send go to :meth:`data_to_send`."""
        events: list[Event] = []
        if (
            self.inter_frame_timeout is not None
            and self._framer.pending
            and self._last_rx is not None
            and now >= self._last_rx + self.inter_frame_timeout
        ):
            dropped = self._framer.reset()
            events.append(FrameDropped(f"{dropped} bytes of a partial frame: inter-frame timeout"))
        deadline = self._protocol_deadline()
        if deadline is None or now < deadline:
            return events
        self._allowed(Action.TIMEOUT)
        if self.role is Role.SERVER:
            self._reset_transfer()
            self._state = _D
            events.append(Disconnected(f"no frame for {self.inactivity_timeout}s (inactivity)"))
        elif self._retries >= self.max_retries:
            self._reset_transfer()
            self._poll_at = self._busy_at = None
            self._state = _D
            events.append(
                Disconnected(
                    f"no answer in {self.response_timeout}s after {self._retries} retransmissions"
                )
            )
        else:
            self._retries += 1
            self._retransmit(now)
        return events

    # -- frames in ---------------------------------------------------------------------------

    def _on_frame(self, frame: HdlcFrame, events: list[Event], now: float) -> None:
        if frame.destination != self.local:
            events.append(FrameDropped(f"{frame.kind.name} frame for {frame.destination}"))
            return
        if self._peer is not None and frame.source != self._peer and not self._new_peer(frame):
            events.append(FrameDropped(f"{frame.kind.name} frame from {frame.source}"))
            return
        kind = frame.kind
        allowed = TRANSITIONS.get((self.role, self._state, kind))
        try:
            if allowed is None:
                raise _Violation(
                    f"HDLC: {kind.name} frame not allowed to a {self.role.value} in state "
                    f"{self._state.value}",
                    _FRMR_W,
                )
            if self.role is Role.CLIENT:
                self._client_frame(frame, events, now)
            else:
                self._server_frame(frame, events)
        except RemoteProtocolError as error:
            self._fail(frame, error)
            raise
        assert self._state in allowed, (self._state, allowed)

    def _new_peer(self, frame: HdlcFrame) -> bool:
        """Server with no fixed client: in NDM, any client may send SNRM (or get DM)."""
        return self.role is Role.SERVER and self.remote is None and self._state is _D

    def _fail(self, frame: HdlcFrame, error: RemoteProtocolError) -> None:
        flags = error.flags if isinstance(error, _Violation) else 0
        # ISO/IEC 13239 §5.5.3.4.2: rejected control, V(S), V(R), W X Y Z
        self._frmr = bytes((frame.control, self._vs << 1 | self._vr << 5, flags))
        self._reset_transfer()
        self._poll_at = self._busy_at = None
        self._state = _F
        if self.role is Role.SERVER and frame.poll_final:
            self._send_response(frame.source, control_u(_FRMR, True), self._frmr)

    def _client_frame(self, frame: HdlcFrame, events: list[Event], now: float) -> None:
        kind, state = frame.kind, self._state
        if kind is _UI:
            events.append(UnnumberedInformation(frame.info))
        elif state is _CG and kind is _UA:
            self._poll_answered(reset_retries=True)
            offered = HdlcParameters.decode(frame.info)
            # IEC 62056-46 §6.4.4.4.3.2: each value is the smaller of the two proposals
            self.parameters = self.limits.answer(offered)
            self._state = _C
            events.append(Connected(self.parameters))
        elif state is _DG and kind in (_UA, _DM):
            self._poll_answered(reset_retries=True)
            self._state = _D
            events.append(Disconnected(f"released ({kind.name})"))
        elif state in (_CG, _C) and kind in (_DM, _FRMR):
            self._poll_answered(reset_retries=True)
            self._reset_transfer()
            self._state = _D
            if kind is _DM:
                events.append(Disconnected("the server is in disconnected mode (DM)"))
            else:
                events.append(
                    Disconnected(f"the server rejected a frame (FRMR {frame.info.hex()})")
                )
        elif state is _C and kind is not _UA:
            self._client_transfer(frame, events, now)
        else:
            events.append(FrameDropped(f"late {kind.name} frame in state {state.value}"))

    def _client_transfer(self, frame: HdlcFrame, events: list[Event], now: float) -> None:
        kind = frame.kind
        self._acknowledge(frame.receive_sequence)
        in_sequence = kind is not _I or self._accept(frame, events)
        if not frame.poll_final:
            return  # more frames of the server's burst follow
        if kind is _RNR:
            self._poll_answered(reset_retries=False)
            self._busy_at = now
            return
        self._poll_answered(reset_retries=True)
        self._busy_at = None
        if self._unacked:
            self._resend_unacked(now)  # go-back-N: the server missed some
        elif self._rx_parts or not in_sequence:
            self._send_command(control_s(_RR, self._vr, True), b"", now)  # next segment
        elif self._tx_segments:
            self._send_burst(now)

    def _server_frame(self, frame: HdlcFrame, events: list[Event]) -> None:
        kind, state, peer = frame.kind, self._state, frame.source
        if kind is _UI:
            events.append(UnnumberedInformation(frame.info))
        elif kind is _SNRM:
            proposal = HdlcParameters.decode(frame.info)
            self.parameters = self.limits.answer(proposal)
            self._reset_transfer()
            self._peer = peer
            self._state = _C
            # IEC 62056-46 §6.4.4.4.3.2: the UA states the negotiated values
            self._send_response(
                peer, control_u(_UA, True), self.parameters.encode(omit_defaults=False)
            )
            events.append(Connected(self.parameters))
        elif kind is _DISC:
            if state is _D:
                self._send_response(peer, control_u(_DM, True), b"")
            else:
                self._send_response(peer, control_u(_UA, True), b"")
                self._reset_transfer()
                self._state = _D
                events.append(Disconnected("released by the client (DISC)"))
        elif state is _D:
            if frame.poll_final:  # ISO/IEC 13239 §5.5.3.3: a station in NDM answers DM
                self._send_response(peer, control_u(_DM, True), b"")
        elif state is _F:
            if frame.poll_final:
                self._send_response(peer, control_u(_FRMR, True), self._frmr)
        else:
            self._acknowledge(frame.receive_sequence)
            self._peer_busy = kind is _RNR
            if kind is _I:
                self._accept(frame, events)
            if frame.poll_final:
                self._polled = True
                self._respond()

    def _accept(self, frame: HdlcFrame, events: list[Event]) -> bool:
        """Take an I frame in; false when it is out of sequence (dropped)."""
        assert self.parameters is not None
        if len(frame.info) > self.parameters.max_info_receive:
            # IEC 62056-46 §6.4.4.4.3.2: at most the negotiated information field length
            raise _Violation(
                f"HDLC: I frame with {len(frame.info)} information bytes, more than the "
                f"negotiated {self.parameters.max_info_receive}",
                _FRMR_Y,
            )
        if frame.send_sequence != self._vr:
            events.append(
                FrameDropped(f"I frame N(S)={frame.send_sequence} out of sequence, V(R)={self._vr}")
            )
            return False
        self._vr = (self._vr + 1) % 8
        self._rx_parts.append(frame.info)
        self._rx_size += len(frame.info)
        if self._rx_size > self.max_apdu_size + 3:
            raise _Violation(f"HDLC: APDU longer than {self.max_apdu_size} bytes")
        if not frame.segmented:
            data = b"".join(self._rx_parts)
            self._rx_parts.clear()
            self._rx_size = 0
            events.append(ApduReceived(strip_llc(data, response=self.role is Role.CLIENT)))
            self._awaiting_apdu = self.role is Role.SERVER
        return True

    def _acknowledge(self, receive_sequence: int) -> None:
        outstanding = (self._vs - self._va) % 8
        acked = (receive_sequence - self._va) % 8
        if acked > outstanding:
            # ISO/IEC 13239 §5.6.2.3: N(R) must lie between the last N(R) received and V(S)
            raise _Violation(
                f"HDLC: N(R)={receive_sequence} outside {self._va}..{self._vs}", _FRMR_Z
            )
        for _ in range(acked):
            self._unacked.popleft()
        self._va = receive_sequence

    # -- frames out --------------------------------------------------------------------------

    def _respond(self) -> None:
        """Server, polled: answer with retransmissions, the next burst, or RR."""
        if self._unacked:
            self._resend_unacked(None)
        elif self._awaiting_apdu:
            return  # the application owes the answer: send_apdu responds
        elif self._tx_segments and not self._peer_busy:
            self._send_burst(None)
        else:
            assert self._peer is not None
            self._send_response(self._peer, control_s(_RR, self._vr, True), b"")
        self._polled = False

    def _send_burst(self, now: float | None) -> None:
        assert self.parameters is not None
        room = self.parameters.window_transmit - len(self._unacked)
        count = min(room, len(self._tx_segments))
        for k in range(count):
            info = self._tx_segments.popleft()
            self._unacked.append((self._vs, info, bool(self._tx_segments)))
            self._send_i(self._vs, info, bool(self._tx_segments), k == count - 1, now)
            self._vs = (self._vs + 1) % 8

    def _resend_unacked(self, now: float | None) -> None:
        last = len(self._unacked) - 1
        for k, (ns, info, more) in enumerate(self._unacked):
            self._send_i(ns, info, more, k == last, now)

    def _send_i(self, ns: int, info: bytes, more: bool, last: bool, now: float | None) -> None:
        control = control_i(ns, self._vr, last)
        if self.role is Role.CLIENT:
            assert self.remote is not None
            assert now is not None
            self._emit(HdlcFrame(self.remote, self.local, control, info, more))
            if last:
                self._poll_at = now
        else:
            assert self._peer is not None
            self._emit(HdlcFrame(self._peer, self.local, control, info, more))

    def _send_command(self, control: int, info: bytes, now: float) -> None:
        """Client: a frame with P=1; the answer is awaited for ``response_timeout``."""
        assert self.remote is not None
        self._emit(HdlcFrame(self.remote, self.local, control, info))
        self._poll_at = now
        self._last_command = (control, info)

    def _send_response(self, peer: HdlcAddress, control: int, info: bytes) -> None:
        self._emit(HdlcFrame(peer, self.local, control, info))

    def _emit(self, frame: HdlcFrame) -> None:
        self._outbox.append(frame.encode())

    def _retransmit(self, now: float) -> None:
        """Client, response timeout: the last command again (go-back-N for I frames)."""
        if self._state is _C and self._unacked:
            self._resend_unacked(now)
        elif self._state is _C:
            self._busy_at = None
            self._send_command(control_s(_RR, self._vr, True), b"", now)
        else:
            self._send_command(*self._last_command, now)

    # -- bookkeeping -------------------------------------------------------------------------

    def _allowed(self, action: Action) -> frozenset[LinkState]:
        allowed = TRANSITIONS.get((self.role, self._state, action))
        if allowed is None:
            raise LocalProtocolError(
                f"HDLC: cannot {action.value} as {self.role.value} in state {self._state.value}"
            )
        return allowed

    def _poll_answered(self, *, reset_retries: bool) -> None:
        self._poll_at = None
        if reset_retries:
            self._retries = 0

    def _protocol_deadline(self) -> float | None:
        if self.role is Role.SERVER:
            if self._state in (_C, _F) and self.inactivity_timeout is not None:
                assert self._last_rx is not None
                return self._last_rx + self.inactivity_timeout
            return None
        if self._poll_at is not None:
            return self._poll_at + self.response_timeout
        if self._busy_at is not None:
            return self._busy_at + self.response_timeout
        return None

    def _reset_transfer(self) -> None:
        self._vs = self._vr = self._va = 0  # ISO/IEC 13239 §5.4.2: SNRM resets the counters
        self._tx_segments.clear()
        self._unacked.clear()
        self._rx_parts.clear()
        self._rx_size = 0
        self._polled = False
        self._awaiting_apdu = False
        self._peer_busy = False
