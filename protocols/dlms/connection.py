"""``ClientConnection``: one DLMS/COSEM association seen from the client, sans-IO.

It works on whole APDUs: the framing below (``wrapper`` or ``hdlc``) delivers received APDUs to
``receive_apdu(apdu, now)`` and sends what ``data_to_send()`` returns. Time is a parameter:
``next_deadline()`` says when ``handle_timeout(now)`` must be called; nothing here arms a timer.

What it does: associate (no security, LLS, HLS-GMAC with its pass 3/4), suite-0 ciphering of every
APDU on a ciphered context (tags verified, counters checked by ``SecurityContext``), one request at
a time with invoke-ids matched, long GET reassembled from blocks (block numbers checked), long SET
sent in blocks, unsolicited Data-/Event-Notifications delivered as events whatever else is going
on, release. Every transition is in ``_TRANSITIONS``; anything else is a protocol error.

Our invocation counters come from outside (hesd persists them, reserved ahead): the session grants
a range with ``grant_invocation_counters`` and tops it up when ``invocation_counters_left`` is
low.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateRequest,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    decode_acse,
    decode_initiate_response,
)
from protocols.dlms.axdr import Value
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext, make_challenge
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "ActionCompleted",
    "Associated",
    "AssociationParameters",
    "AssociationRefused",
    "ClientConnection",
    "Event",
    "GetCompleted",
    "NotificationReceived",
    "Released",
    "RequestFailed",
    "SetCompleted",
    "State",
    "TimedOut",
]

ASSOCIATION_LN: Final = ObisCode.parse("0.0.40.0.0.255")  # current association (IC 15)
_REPLY_TO_HLS: Final = 1  # Association LN method 1, reply_to_HLS_authentication
_BLOCK_OVERHEAD: Final = 16  # SET-Request-With-Datablock header, A-XDR length, margin
_CIPHER_OVERHEAD: Final = 24  # glo tag, length, SC, IC (4), tag (12), margin


class State(enum.Enum):
    IDLE = "idle"
    ASSOCIATING = "associating"  # AARQ sent
    AUTHENTICATING = "authenticating"  # HLS pass 3 sent
    READY = "ready"  # associated, no request outstanding
    WAITING = "waiting"  # associated, one request outstanding
    RELEASING = "releasing"  # RLRQ sent
    CLOSED = "closed"  # released, refused, timed out or aborted: make a new connection


# (state, input) -> next state. Inputs: what the user asked or what the server sent.
_TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.IDLE, "associate"): State.ASSOCIATING,
    (State.ASSOCIATING, "aare_accepted"): State.READY,
    (State.ASSOCIATING, "aare_accepted_hls"): State.AUTHENTICATING,
    (State.ASSOCIATING, "aare_refused"): State.CLOSED,
    (State.AUTHENTICATING, "hls_verified"): State.READY,
    (State.READY, "request"): State.WAITING,
    (State.WAITING, "block"): State.WAITING,
    (State.WAITING, "response"): State.READY,
    (State.READY, "release"): State.RELEASING,
    (State.RELEASING, "rlre"): State.CLOSED,
    (State.ASSOCIATING, "timeout"): State.CLOSED,
    (State.AUTHENTICATING, "timeout"): State.CLOSED,
    (State.WAITING, "timeout"): State.CLOSED,
    (State.RELEASING, "timeout"): State.CLOSED,
}


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Associated:
    conformance: Conformance  # negotiated
    server_max_pdu_size: int  # the largest APDU the server takes
    server_system_title: bytes | None


@dataclass(frozen=True, slots=True)
class AssociationRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class GetCompleted:
    request_id: int
    # one result per attribute asked for: the value, or why it could not be read
    results: tuple[Value | x.DataAccessResult, ...]

    @property
    def result(self) -> Value | x.DataAccessResult:
        return self.results[0]


@dataclass(frozen=True, slots=True)
class SetCompleted:
    request_id: int
    result: x.DataAccessResult


@dataclass(frozen=True, slots=True)
class ActionCompleted:
    request_id: int
    result: x.ActionResult
    return_value: Value | x.DataAccessResult | None


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The server answered with an exception or a confirmed-service-error."""

    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class NotificationReceived:
    notification: x.DataNotification | x.EventNotification


@dataclass(frozen=True, slots=True)
class Released:
    pass


@dataclass(frozen=True, slots=True)
class TimedOut:
    what: str  # which exchange got no answer in time


Event: TypeAlias = (
    Associated
    | AssociationRefused
    | GetCompleted
    | SetCompleted
    | ActionCompleted
    | RequestFailed
    | NotificationReceived
    | Released
    | TimedOut
)


# -- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationParameters:
    """What the client proposes. ``security`` is needed for HLS-GMAC and for ciphering."""

    mechanism: Mechanism = Mechanism.NONE
    password: bytes | None = field(default=None, repr=False)  # LLS secret
    ciphered: bool = False  # ciphered application context: every xDLMS APDU protected
    conformance: Conformance = field(default_factory=Conformance.client_default)
    max_receive_pdu_size: int = 0xFFFF
    response_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.mechanism not in (Mechanism.NONE, Mechanism.LLS, Mechanism.HLS_GMAC):
            raise LocalProtocolError(f"mechanism {self.mechanism.name} is not supported")
        if (self.mechanism == Mechanism.LLS) != (self.password is not None):
            raise LocalProtocolError("LLS needs a password, and only LLS takes one")
        if self.ciphered and self.mechanism == Mechanism.NONE:
            raise LocalProtocolError("a ciphered association needs authentication (LLS or HLS)")


@dataclass(slots=True)
class _Pending:
    request_id: int
    kind: str  # "get", "get-list", "set", "action", "hls"
    invoke_id: int
    deadline: float
    blocks: bytearray = field(default_factory=bytearray)
    next_block: int = 1
    set_blocks: deque[bytes] = field(default_factory=deque)
    set_block_number: int = 0


class ClientConnection:
    """One association. Call ``associate``, feed ``receive_apdu``, send ``data_to_send``."""

    def __init__(
        self, parameters: AssociationParameters, security: SecurityContext | None = None
    ) -> None:
        needs_security = parameters.ciphered or parameters.mechanism == Mechanism.HLS_GMAC
        if needs_security and security is None:
            raise LocalProtocolError("ciphering and HLS-GMAC need a SecurityContext")
        self.parameters = parameters
        self.security = security
        self.state = State.IDLE
        self.conformance = Conformance(0)
        self.server_max_pdu_size = 0
        self._outgoing: list[bytes] = []
        self._pending: _Pending | None = None
        self._next_request_id = 1
        self._invoke_id = 0
        self._counters: deque[range] = deque()
        self._challenge: bytes | None = None
        self._deadline: float | None = None

    # -- state machine ----------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"cannot {event} in state {self.state.value}")
        self.state = nxt

    def _remote_transition(self, event: str, what: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise RemoteProtocolError(f"unexpected {what} in state {self.state.value}")
        self.state = nxt

    # -- invocation counters ----------------------------------------------------------------

    def grant_invocation_counters(self, start: int, count: int) -> None:
        """Hand over ``count`` counters from ``start`` (the caller has reserved them durably)."""
        if count <= 0 or start < 0 or start + count > 1 << 32:
            raise LocalProtocolError("invocation counter range outside 0..2^32-1")
        self._counters.append(range(start, start + count))

    @property
    def invocation_counters_left(self) -> int:
        return sum(len(r) for r in self._counters)

    def _take_counter(self) -> int:
        while self._counters and not self._counters[0]:
            self._counters.popleft()
        if not self._counters:
            raise LocalProtocolError("no invocation counters left: grant more before sending")
        block = self._counters[0]
        self._counters[0] = block[1:]
        return block[0]

    # -- sending ----------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """APDUs to send, in order (already ciphered where the association is)."""
        out, self._outgoing = self._outgoing, []
        return out

    def _send_xdlms(self, plain: bytes) -> None:
        if self.parameters.ciphered:
            assert self.security is not None
            plain = self.security.protect(plain, self._take_counter())
        self._outgoing.append(plain)

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called if nothing arrives (None: nothing awaited)."""
        return self._deadline

    def associate(self, now: float) -> None:
        """Queue the AARQ."""
        self._transition("associate")
        params = self.parameters
        initiate = InitiateRequest(params.conformance, params.max_receive_pdu_size).encode()
        user_information = initiate
        title = None
        if self.security is not None:
            title = self.security.system_title
        if params.ciphered:
            assert self.security is not None
            user_information = self.security.protect(initiate, self._take_counter())
        if params.mechanism == Mechanism.LLS:
            auth: bytes | None = params.password
        elif params.mechanism == Mechanism.HLS_GMAC:
            self._challenge = make_challenge(16)
            auth = self._challenge
        else:
            auth = None
        aarq = Aarq(
            params.ciphered,
            params.mechanism,
            user_information,
            title if (params.ciphered or params.mechanism == Mechanism.HLS_GMAC) else None,
            auth,
        )
        self._outgoing.append(aarq.encode())
        self._deadline = now + params.response_timeout

    def release(self, now: float) -> None:
        """Queue the RLRQ (only with no request outstanding)."""
        self._transition("release")
        self._outgoing.append(ReleaseRequest(0).encode())
        self._deadline = now + self.parameters.response_timeout

    def _start_request(self, kind: str, now: float) -> _Pending:
        self._transition("request")
        request_id = self._next_request_id
        self._next_request_id += 1
        self._invoke_id = (self._invoke_id + 1) % 16
        self._pending = _Pending(
            request_id, kind, self._invoke_id, now + self.parameters.response_timeout
        )
        self._deadline = self._pending.deadline
        return self._pending

    def _iip(self, pending: _Pending) -> x.InvokeIdAndPriority:
        return x.InvokeIdAndPriority(pending.invoke_id)

    def get(
        self, attribute: x.AttributeDescriptor, now: float, access: x.AccessSelection | None = None
    ) -> int:
        """Read one attribute; returns the request id its ``GetCompleted`` will carry."""
        pending = self._start_request("get", now)
        self._send_xdlms(x.GetRequestNormal(self._iip(pending), attribute, access).encode())
        return pending.request_id

    def get_many(
        self,
        attributes: Sequence[tuple[x.AttributeDescriptor, x.AccessSelection | None]],
        now: float,
    ) -> int:
        """Read several attributes in one GET-Request-With-List."""
        if Conformance.MULTIPLE_REFERENCES not in self.conformance:
            raise LocalProtocolError("the server did not agree to multiple references")
        pending = self._start_request("get-list", now)
        self._send_xdlms(x.GetRequestWithList(self._iip(pending), tuple(attributes)).encode())
        return pending.request_id

    def set(
        self,
        attribute: x.AttributeDescriptor,
        value: Value,
        now: float,
        access: x.AccessSelection | None = None,
    ) -> int:
        """Write one attribute; sent in blocks when it exceeds the server's PDU size."""
        pending = self._start_request("set", now)
        iip = self._iip(pending)
        apdu = x.SetRequestNormal(iip, attribute, value, access).encode()
        if len(apdu) + self._overhead() <= self.server_max_pdu_size:
            self._send_xdlms(apdu)
            return pending.request_id
        if Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE not in self.conformance:
            raise LocalProtocolError(
                f"value of {len(apdu)} bytes exceeds the server's PDU size "
                f"{self.server_max_pdu_size} and it refuses block transfer with SET"
            )
        raw = axdr.encode(value)
        size = max(1, self.server_max_pdu_size - self._overhead() - _BLOCK_OVERHEAD - 10)
        blocks = deque(raw[i : i + size] for i in range(0, len(raw), size))
        first = blocks.popleft()
        pending.set_blocks = blocks
        pending.set_block_number = 1
        self._send_xdlms(
            x.SetRequestWithFirstDatablock(iip, attribute, not blocks, 1, first, access).encode()
        )
        return pending.request_id

    def action(
        self,
        method: x.MethodDescriptor,
        now: float,
        parameters: Value | None = None,
        *,
        has_parameters: bool | None = None,
    ) -> int:
        """Invoke a method; ``parameters`` None sends none unless ``has_parameters`` says so."""
        with_params = parameters is not None if has_parameters is None else has_parameters
        pending = self._start_request("action", now)
        self._send_xdlms(
            x.ActionRequest(self._iip(pending), method, parameters, with_params).encode()
        )
        return pending.request_id

    def _overhead(self) -> int:
        return _CIPHER_OVERHEAD if self.parameters.ciphered else 0

    # -- receiving --------------------------------------------------------------------------

    def receive_apdu(self, data: bytes, now: float) -> list[Event]:
        """Process one APDU from the server; returns what happened."""
        if self.state == State.CLOSED:
            raise LocalProtocolError("the connection is closed")
        if not data:
            raise RemoteProtocolError("empty APDU")
        if data[0] in (0x61, 0x63):
            return self._receive_acse(data, now)
        if self.parameters.ciphered and data[0] != x.ApduTag.EXCEPTION_RESPONSE:
            assert self.security is not None
            data = self.security.unprotect(data)  # refuses plaintext, bad tags, replays
        # A meter that cannot decipher a request (or refuses its counter) says so unciphered:
        # an Exception-Response carries no data, so accepting it plain only lets a forger fail
        # a request, which silence would do as well.
        apdu = x.decode_apdu(data)
        if isinstance(apdu, x.DataNotification | x.EventNotification):
            return [NotificationReceived(apdu)]
        return self._receive_response(apdu, now)

    def _receive_acse(self, data: bytes, now: float) -> list[Event]:
        acse = decode_acse(data)
        if isinstance(acse, ReleaseResponse):
            self._remote_transition("rlre", "RLRE")
            self._deadline = None
            return [Released()]
        if not isinstance(acse, Aare):
            raise RemoteProtocolError(f"{type(acse).__name__} from a server")
        return self._receive_aare(acse, now)

    def _receive_aare(self, aare: Aare, now: float) -> list[Event]:
        if self.state != State.ASSOCIATING:
            raise RemoteProtocolError(f"unexpected AARE in state {self.state.value}")
        if aare.result != AssociationResult.ACCEPTED:
            self._remote_transition("aare_refused", "AARE")
            self._deadline = None
            detail = aare.describe_diagnostic()
            if (
                aare.user_information
                and aare.user_information[0] == x.ApduTag.CONFIRMED_SERVICE_ERROR
            ):
                csr = x.decode_apdu(aare.user_information)
                assert isinstance(csr, x.ConfirmedServiceError)
                detail += f"; xDLMS {csr.describe()}"
            return [AssociationRefused(f"association {aare.result.name.lower()}: {detail}")]
        if aare.ciphered_context != self.parameters.ciphered:
            raise RemoteProtocolError("AARE application context does not match the AARQ's")
        if self.security is not None and aare.responding_ap_title is not None:
            if (
                len(aare.responding_ap_title) != 8
            ):  # Green Book 9.2.7.3.1: system titles are 8 bytes
                raise RemoteProtocolError(
                    f"AARE responding-AP-title of {len(aare.responding_ap_title)} bytes, not 8"
                )
            self.security.server_system_title = aare.responding_ap_title
        user = aare.user_information
        if user is None:
            raise RemoteProtocolError("AARE without xDLMS InitiateResponse")
        if self.parameters.ciphered:
            assert self.security is not None
            user = self.security.unprotect(user)
        initiate = decode_initiate_response(user)
        self.conformance = initiate.conformance
        self.server_max_pdu_size = initiate.max_pdu_size
        if self.parameters.mechanism == Mechanism.HLS_GMAC:
            if aare.mechanism != Mechanism.HLS_GMAC or aare.authentication_value is None:
                raise RemoteProtocolError("HLS-GMAC AARE without the server's challenge")
            self._remote_transition("aare_accepted_hls", "AARE")
            assert self.security is not None
            reply = self.security.gmac(aare.authentication_value, self._take_counter())
            pending = _Pending(
                0, "hls", (self._invoke_id + 1) % 16, now + self.parameters.response_timeout
            )
            self._invoke_id = pending.invoke_id
            self._pending = pending
            self._deadline = pending.deadline
            method = x.MethodDescriptor(15, ASSOCIATION_LN, _REPLY_TO_HLS)
            self._send_xdlms(x.ActionRequest(self._iip(pending), method, reply, True).encode())
            return []
        self._remote_transition("aare_accepted", "AARE")
        self._deadline = None
        return [self._associated()]

    def _associated(self) -> Associated:
        title = None if self.security is None else self.security.server_system_title
        return Associated(self.conformance, self.server_max_pdu_size, title)

    def _receive_response(self, apdu: x.Apdu, now: float) -> list[Event]:
        pending = self._pending
        if pending is None or self.state not in (State.WAITING, State.AUTHENTICATING):
            raise RemoteProtocolError(f"{type(apdu).__name__} with no request outstanding")
        if isinstance(apdu, x.ExceptionResponse | x.ConfirmedServiceError):
            if pending.kind == "hls":
                self.state = State.CLOSED
                self._pending = None
                self._deadline = None
                return [AssociationRefused(f"HLS authentication refused: {apdu.describe()}")]
            return self._finish([RequestFailed(pending.request_id, apdu.describe())], "response")
        invoke = getattr(apdu, "invoke", None)
        if invoke is None or invoke.invoke_id != pending.invoke_id:
            raise RemoteProtocolError(
                f"{type(apdu).__name__} for invoke-id "
                f"{None if invoke is None else invoke.invoke_id}, expected {pending.invoke_id}"
            )
        if pending.kind == "hls":
            return self._receive_hls_reply(apdu)
        if pending.kind == "get" and isinstance(apdu, x.GetResponseNormal):
            return self._finish([GetCompleted(pending.request_id, (apdu.result,))], "response")
        if pending.kind in ("get", "get-list") and isinstance(apdu, x.GetResponseWithDatablock):
            return self._receive_block(pending, apdu, now)
        if pending.kind == "get-list" and isinstance(apdu, x.GetResponseWithList):
            return self._finish([GetCompleted(pending.request_id, apdu.results)], "response")
        if pending.kind == "set":
            return self._receive_set(pending, apdu, now)
        if pending.kind == "action" and isinstance(apdu, x.ActionResponse):
            value = apdu.return_parameters if apdu.has_return_parameters else None
            return self._finish(
                [ActionCompleted(pending.request_id, apdu.result, value)], "response"
            )
        raise RemoteProtocolError(f"{type(apdu).__name__} does not answer a {pending.kind} request")

    def _finish(self, events: list[Event], transition: str) -> list[Event]:
        self._remote_transition(transition, "response")
        self._pending = None
        self._deadline = None
        return events

    def _receive_block(
        self, pending: _Pending, apdu: x.GetResponseWithDatablock, now: float
    ) -> list[Event]:
        if apdu.block_number != pending.next_block:
            raise RemoteProtocolError(
                f"GET block {apdu.block_number} where block {pending.next_block} was due"
            )
        if isinstance(apdu.raw_data, x.DataAccessResult):
            return self._finish([GetCompleted(pending.request_id, (apdu.raw_data,))], "response")
        pending.blocks += apdu.raw_data
        if len(pending.blocks) > 64 << 20:
            raise RemoteProtocolError("long GET exceeds 64 MiB")
        if apdu.last_block:
            raw = bytes(pending.blocks)
            if pending.kind == "get-list":  # the blocks carry the whole SEQUENCE OF results
                results = x.decode_result_list(raw)
            else:
                results = (axdr.decode_all(raw),)
            return self._finish([GetCompleted(pending.request_id, results)], "response")
        self._remote_transition("block", "GET block")
        pending.next_block += 1
        pending.deadline = now + self.parameters.response_timeout
        self._deadline = pending.deadline
        self._send_xdlms(x.GetRequestNext(self._iip(pending), apdu.block_number).encode())
        return []

    def _receive_set(self, pending: _Pending, apdu: x.Apdu, now: float) -> list[Event]:
        if isinstance(apdu, x.SetResponseNormal | x.SetResponseLastDatablock):
            if pending.set_blocks:
                raise RemoteProtocolError("SET finished before all blocks were sent")
            return self._finish([SetCompleted(pending.request_id, apdu.result)], "response")
        if isinstance(apdu, x.SetResponseDatablock):
            if apdu.block_number != pending.set_block_number or not pending.set_blocks:
                raise RemoteProtocolError(
                    f"SET block {apdu.block_number} acknowledged, {pending.set_block_number} sent"
                )
            self._remote_transition("block", "SET block acknowledgement")
            pending.set_block_number += 1
            block = pending.set_blocks.popleft()
            pending.deadline = now + self.parameters.response_timeout
            self._deadline = pending.deadline
            self._send_xdlms(
                x.SetRequestWithDatablock(
                    self._iip(pending), not pending.set_blocks, pending.set_block_number, block
                ).encode()
            )
            return []
        raise RemoteProtocolError(f"{type(apdu).__name__} does not answer a SET request")

    def _receive_hls_reply(self, apdu: x.Apdu) -> list[Event]:
        if not isinstance(apdu, x.ActionResponse):
            raise RemoteProtocolError(f"{type(apdu).__name__} answers the HLS pass 3")
        if apdu.result != x.ActionResult.SUCCESS:
            self.state = State.CLOSED
            self._pending = None
            self._deadline = None
            return [AssociationRefused(f"HLS authentication refused: {apdu.result.name.lower()}")]
        response = apdu.return_parameters
        if not isinstance(response, bytes) or self._challenge is None:
            raise RemoteProtocolError("HLS pass 4 without f(CtoS)")
        assert self.security is not None
        # raises when f(CtoS) does not match; inside a ciphered response its counter is older
        self.security.verify_gmac(self._challenge, response, nested=self.parameters.ciphered)
        return [*self._finish([], "hls_verified"), self._associated()]

    # -- time -------------------------------------------------------------------------------

    def handle_timeout(self, now: float) -> list[Event]:
        """Call at ``next_deadline()``: an unanswered exchange closes the connection."""
        if self._deadline is None or now < self._deadline:
            return []
        what = {
            State.ASSOCIATING: "association",
            State.AUTHENTICATING: "HLS authentication",
            State.RELEASING: "release",
        }.get(self.state)
        if what is None and self._pending is not None:
            what = f"{self._pending.kind} request {self._pending.request_id}"
        self._transition("timeout")
        self._pending = None
        self._deadline = None
        return [TimedOut(what or "response")]
