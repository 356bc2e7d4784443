"""``ServerConnection``: the meter's side of DLMS/COSEM application associations, sans-IO.

APDU level, like ``ClientConnection``: the caller's framing says which client SAP an APDU came
from, ``receive_apdu(client_address, apdu, now)`` serves it, ``data_to_send()`` has the answers.
``hesd-sim`` runs one per simulated meter, so a connection is slots and small ints; associations,
``ObjectModel`` and keys are shared between meters, and a ``SecurityContext`` (titles swapped:
the meter's, then the client's) is made on the first ciphered or HLS association only.

Choices where the standard leaves room (IEC 62056-5-3 §6-7, Green Book 9.3-9.4, Blue Book 4.4.2),
after IS 15959 meters and gurux's server:

* AARQ refusals: rejected-permanent, acse-service-user diagnostic (Green Book 9.4.2) 1 unknown
  SAP, 2 context (ciphered or not) unlike the SAP's, 12 mechanism missing, 11 another mechanism,
  3 no 8-octet calling-AP-title where ciphering or HLS needs it, 13 wrong LLS password (constant
  time) or CtoS outside 8..64 octets. xDLMS Initiate problems: diagnostic 1 and a plain
  Confirmed-Service-Error initiate: other (does not decipher/decode), dlms-version-too-low (< 6),
  incompatible-conformance (offered & proposed empty), pdu-size-too-short (client PDU under 12,
  31 ciphered: a datablock header and a few octets; gurux's server wants 64). HLS-GMAC: accepted,
  authentication-required (14), the meter's title, a fresh StoC. A dedicated key is ignored.
* A new AARQ replaces the association (``AssociationLost`` first). RLRQ -> RLRE normal; on a
  ciphered association a protected RLRQ (ciphered InitiateRequest) that does not verify gets
  RLRE not-finished and the association stays.
* HLS pending: only reply_to_HLS_authentication (IC 15 method 1) is served; GET/SET/ACTION get
  read-write-denied (no access rights yet), other services an Exception-Response. A wrong
  f(StoC): ACTION read-write-denied, ``AssociationRefused``, still pending, StoC spent.
* Exception-Response (state/service error): not associated 1/1 operation-not-possible; above the
  SAP's max PDU 1/4 pdu-too-long; outside the negotiated conformance (SET from the GET-only
  public client, selective access, block transfer) 1/2 service-not-supported; no server service
  2/2; malformed 1/3 other-reason; ciphered association: plaintext, bad tag 1/5 deciphering-
  error, replayed counter 1/6 with the lowest accepted (both unciphered, the client may lack the
  keys; others general-glo-ciphered). The association goes on. Only an empty APDU, an AARE/RLRE
  sent to a server and a malformed RLRQ raise ``RemoteProtocolError``.
* Long GET: GET-Response-With-Datablock from block 1 when the response exceeds the client's PDU
  (less cipher overhead); GET-Request-Next must name the last block sent (else data-block-
  number-invalid, ending it; none: no-long-get-in-progress); any other request ends it; no block
  transfer negotiated: other-reason. SET with datablocks is reassembled (64 KiB, else long-set-
  aborted). A return value too long (no ACTION blocks) and SET with selective access get
  other-reason. Unconfirmed SET/ACTION get no answer.
* ``ObjectModel.set``/``action`` get values decoded ``typed=True``, so they can be given back.
* The meter's invocation counter advances with each ciphered APDU and f(CtoS); the client's last
  counter is kept across associations, per client system title (replays refused).
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TypeAlias

from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.acse import (
    Aare,
    Aarq,
    AssociationResult,
    Conformance,
    InitiateResponse,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    decode_acse,
    decode_initiate_request,
)
from protocols.dlms.axdr import Value
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import GLO_TAG_FOR, PLAIN_TAG_FOR, SecurityContext, make_challenge
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AssociationAccepted",
    "AssociationLost",
    "AssociationRefused",
    "Authenticated",
    "Event",
    "ObjectModel",
    "Released",
    "RequestRejected",
    "RequestServed",
    "ServerAssociation",
    "ServerConnection",
    "State",
]

_MAX_IC: Final = 0xFFFF_FFFF
_MAX_LONG_SET: Final = 64 << 10  # octets a SET with datablocks may reassemble
_MIN_ROOM: Final = 12  # the smallest client PDU taken: a datablock header and a few octets
_HLS_METHOD: Final = x.MethodDescriptor(15, ObisCode.parse("0.0.40.0.0.255"), 1)
_DAR, _AR = x.DataAccessResult, x.ActionResult
# Exception-Response (Green Book 9.3.5): state-errors, then service-errors
_NOT_ALLOWED, _UNKNOWN = 1, 2
_NOT_POSSIBLE, _NOT_SUPPORTED, _OTHER, _TOO_LONG, _DECIPHERING, _COUNTER = 1, 2, 3, 4, 5, 6
_REQUEST_TAGS: Final = frozenset((0xC0, 0xC1, 0xC3))  # GET, SET, ACTION requests


class State(enum.Enum):
    IDLE = "idle"  # no association: an AARQ is awaited
    AUTHENTICATING = "authenticating"  # HLS AARE sent: the association is pending until pass 3
    ASSOCIATED = "associated"


# (state, input) -> next state
_TRANSITIONS: Final[dict[tuple[State, str], State]] = {
    (State.IDLE, "aarq_accepted"): State.ASSOCIATED,
    (State.IDLE, "aarq_accepted_hls"): State.AUTHENTICATING,
    (State.IDLE, "aarq_refused"): State.IDLE,
    (State.AUTHENTICATING, "aarq"): State.IDLE,  # replaced: the new AARQ is then served from idle
    (State.ASSOCIATED, "aarq"): State.IDLE,
    (State.AUTHENTICATING, "request"): State.AUTHENTICATING,
    (State.AUTHENTICATING, "hls_passed"): State.ASSOCIATED,
    (State.AUTHENTICATING, "hls_failed"): State.AUTHENTICATING,
    (State.ASSOCIATED, "request"): State.ASSOCIATED,
    (State.AUTHENTICATING, "rlrq"): State.IDLE,
    (State.ASSOCIATED, "rlrq"): State.IDLE,
    (State.AUTHENTICATING, "timeout"): State.IDLE,
    (State.ASSOCIATED, "timeout"): State.IDLE,
}


# -- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    name: str  # the ServerAssociation's
    client_address: int


@dataclass(frozen=True, slots=True)
class AssociationRefused:
    client_address: int
    reason: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """HLS pass 3 verified and pass 4 sent: the association is ready."""

    name: str


@dataclass(frozen=True, slots=True)
class Released:
    name: str


_KINDS: Final = frozenset(("get", "set", "action"))


@dataclass(frozen=True, slots=True)
class RequestServed:
    """One attribute read or written (each entry of a GET-with-list), or one method invoked."""

    kind: Literal["get", "set", "action"]
    descriptor: x.AttributeDescriptor
    result: x.DataAccessResult | x.ActionResult

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise LocalProtocolError(f"request kind {self.kind!r} is not get, set or action")


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """An APDU answered with an Exception-Response or a refused block (why, for the log)."""

    reason: str


@dataclass(frozen=True, slots=True)
class AssociationLost:
    """The association ended without a release (inactivity, replaced by a new AARQ)."""

    reason: str


Event: TypeAlias = (
    AssociationAccepted
    | AssociationRefused
    | Authenticated
    | Released
    | RequestServed
    | RequestRejected
    | AssociationLost
)


# -- configuration ----------------------------------------------------------------------------

_C = Conformance
_DEFAULT_OFFER: Final = (
    _C.GET
    | _C.SET
    | _C.ACTION
    | _C.SELECTIVE_ACCESS
    | _C.MULTIPLE_REFERENCES
    | _C.BLOCK_TRANSFER_WITH_GET_OR_READ
    | _C.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | _C.DATA_NOTIFICATION
)
# what this server implements: an association may offer less, never more
_IMPLEMENTED: Final = (
    _DEFAULT_OFFER
    | _C.PRIORITY_MGMT_SUPPORTED
    | _C.ATTRIBUTE0_SUPPORTED_WITH_GET
    | _C.ATTRIBUTE0_SUPPORTED_WITH_SET
)


@dataclass(frozen=True, slots=True)
class ServerAssociation:
    """One client SAP the meter offers, e.g. IS 15959: public 16 without security, reader 32 with
    LLS, utility 48 with HLS-GMAC and ciphering. Immutable, so meters share them."""

    name: str
    client_address: int
    mechanism: Mechanism
    password: bytes | None = field(default=None, repr=False)  # LLS secret
    ciphered: bool = False  # application context LN with ciphering
    conformance: Conformance = _DEFAULT_OFFER  # offered; negotiated = offered & proposed
    max_pdu_size: int = 1024  # the largest request APDU the meter takes

    def __post_init__(self) -> None:
        if not self.name:
            raise LocalProtocolError("an association needs a name")
        if not 0 <= self.client_address <= 0xFFFF:  # IEC 62056-47 §5.2: a wPort is Unsigned16
            raise LocalProtocolError(f"client address {self.client_address} outside 0..65535")
        if self.mechanism not in (Mechanism.NONE, Mechanism.LLS, Mechanism.HLS_GMAC):
            raise LocalProtocolError(f"mechanism {self.mechanism.name} is not implemented")
        if (self.mechanism == Mechanism.LLS) != (self.password is not None):
            raise LocalProtocolError("LLS needs a password, and only LLS takes one")
        if self.ciphered and self.mechanism == Mechanism.NONE:
            raise LocalProtocolError("a ciphered association needs authentication (LLS or HLS)")
        if self.conformance & ~_IMPLEMENTED:
            extra = Conformance(self.conformance & ~_IMPLEMENTED)
            raise LocalProtocolError(f"conformance offers what is not implemented: {extra!r}")
        if not 64 <= self.max_pdu_size <= 0xFFFF:  # below 64 not even an HLS pass 3 fits
            raise LocalProtocolError(f"max PDU size {self.max_pdu_size} outside 64..65535")


class ObjectModel(Protocol):
    """The meter's COSEM objects, implemented by the simulator and shared between meters.

    ``association`` is the ServerAssociation's name (for access rights). Returned values must be
    encodable by ``axdr.encode`` (``Typed`` for numbers); ``set`` and ``action`` get values
    decoded with ``typed=True``.
    """

    def get(
        self,
        association: str,
        attribute: x.AttributeDescriptor,
        access: x.AccessSelection | None,
        now: float,
    ) -> Value | x.DataAccessResult: ...

    def set(
        self, association: str, attribute: x.AttributeDescriptor, value: Value, now: float
    ) -> x.DataAccessResult: ...

    def action(
        self, association: str, method: x.MethodDescriptor, parameters: Value | None, now: float
    ) -> tuple[x.ActionResult, Value | None]: ...


class _LongGet:
    """A GET answered in blocks: the raw A-XDR, how far it went and the last block sent."""

    __slots__ = ("block", "pos", "raw", "size")

    def __init__(self, raw: bytes, size: int) -> None:
        self.raw, self.size, self.pos, self.block = raw, size, size, 1


class _LongSet:
    """A SET arriving in blocks: the attribute, the raw A-XDR so far and the last block."""

    __slots__ = ("block", "descriptor", "raw")

    def __init__(self, descriptor: x.AttributeDescriptor) -> None:
        self.descriptor, self.raw, self.block = descriptor, bytearray(), 0


def _cipher_overhead(size: int) -> int:
    # glo tag, A-XDR length (of at most ``size``), SC, IC (4), GCM tag (12): Green Book 9.2.7.2.4
    return 18 + len(axdr.encode_length(size))


def _block_size(room: int) -> int:
    # GET-Response-With-Datablock: tag, choice, invoke, last, block (4), choice, length, raw
    return room - 9 - len(axdr.encode_length(room))


def _peek_counter(data: bytes) -> int | None:
    """The invocation counter of a ciphered APDU, before anything is verified (None: malformed
    or not a glo/general-glo APDU, which ``unprotect`` then refuses)."""
    if data[0] not in PLAIN_TAG_FOR and data[0] != 0xDB:
        return None
    pos = 1
    if data[0] == 0xDB:  # general-glo-ciphering: an 8-octet system title comes first
        if len(data) < 2 or data[1] != 8:
            return None
        pos = 10
    try:
        _, pos = axdr.decode_length(data, pos)
    except RemoteProtocolError:
        return None
    return int.from_bytes(data[pos + 1 : pos + 5], "big") if pos + 5 <= len(data) else None


class ServerConnection:
    """The meter's end of one link (a TCP connection, an HDLC link): one association at a time.
    Feed ``receive_apdu``, send ``data_to_send``; ``notify`` queues a push."""

    __slots__ = (
        "_association",
        "_associations",
        "_challenges",
        "_client_counters",
        "_conformance",
        "_deadline",
        "_ic",
        "_inactivity",
        "_keys",
        "_long",
        "_model",
        "_outgoing",
        "_push_id",
        "_room",
        "_security",
        "_system_title",
        "state",
    )

    def __init__(
        self,
        associations: Mapping[int, ServerAssociation],
        model: ObjectModel,
        *,
        system_title: bytes | None = None,
        keys: tuple[bytes, bytes] | None = None,
        invocation_counter: int = 0,
        inactivity_timeout: float | None = None,
    ) -> None:
        """``keys`` (ek, ak); ``invocation_counter`` the meter's next (read it back from the
        property to carry it over); ``inactivity_timeout`` drops a silent association."""
        for address, association in associations.items():
            if address != association.client_address:
                raise LocalProtocolError(
                    f"association {association.name!r} filed under client address {address}"
                )
        if system_title is not None and len(system_title) != 8:  # Green Book 9.2.7.2.4
            raise LocalProtocolError(f"system title of {len(system_title)} bytes, not 8")
        if keys is not None and (len(keys) != 2 or any(len(k) != 16 for k in keys)):
            raise LocalProtocolError("keys must be (ek, ak), 16 bytes each")  # suite 0: AES-128
        if (system_title is None or keys is None) and any(
            a.ciphered or a.mechanism == Mechanism.HLS_GMAC for a in associations.values()
        ):
            raise LocalProtocolError("ciphered and HLS-GMAC associations need system_title, keys")
        if not 0 <= invocation_counter <= _MAX_IC:
            raise LocalProtocolError(f"invocation counter {invocation_counter} outside Unsigned32")
        if inactivity_timeout is not None and inactivity_timeout <= 0:
            raise LocalProtocolError("inactivity timeout must be positive")
        self._associations = associations
        self._model = model
        self._system_title = system_title
        self._keys = keys
        self._ic = invocation_counter
        self._inactivity = inactivity_timeout
        self._security: SecurityContext | None = None
        self._client_counters: dict[bytes, int] | None = None  # each client title's last IC
        self._outgoing: list[bytes] | None = None  # made when something is queued
        self._push_id = 0
        self._deadline: float | None = None
        self.state = State.IDLE
        self._association: ServerAssociation | None = None
        self._conformance = 0  # negotiated, a plain int (IntFlag arithmetic is slow)
        self._room = 0  # the client's max receive PDU less the cipher overhead
        self._challenges: tuple[bytes, bytes] | None = None  # HLS (StoC, CtoS) while pending
        self._long: _LongGet | _LongSet | None = None

    def __repr__(self) -> str:
        return f"<ServerConnection {self.state.value} association={self.association!r}>"

    @property
    def association(self) -> str | None:
        """The name of the current (maybe pending) association."""
        return None if self._association is None else self._association.name

    @property
    def invocation_counter(self) -> int:
        """The meter's next invocation counter: keep it for the next connection."""
        return self._ic

    def data_to_send(self) -> list[bytes]:
        """APDUs to send, in order (ciphered where the association is)."""
        out, self._outgoing = self._outgoing, None
        return out or []

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` must be called (None: no association or no timeout)."""
        return self._deadline

    def handle_timeout(self, now: float) -> list[Event]:
        """An association that received nothing for ``inactivity_timeout`` is dropped."""
        if self._deadline is None or now < self._deadline or self._association is None:
            return []
        name = self._association.name
        self._transition("timeout")
        self._drop()
        return [AssociationLost(f"association {name}: nothing received for {self._inactivity} s")]

    def notify(
        self,
        body: Value,
        now: float,
        *,
        ciphered: bool | None = None,
        date_time: bytes | None = None,
        long_invoke_id: int | None = None,
    ) -> None:
        """Queue a Data-Notification (Green Book 9.3.9), general-glo-ciphered when ``ciphered``
        (None: as the current association is). ``long_invoke_id`` defaults to a counter."""
        if ciphered is None:
            ciphered = self._association is not None and self._association.ciphered
        if long_invoke_id is None:
            long_invoke_id = self._push_id
            self._push_id = (self._push_id + 1) & 0xFF_FFFF  # bits 0-23 are the invoke-id
        apdu = x.DataNotification(long_invoke_id, date_time, body).encode()
        if self._association is not None and len(apdu) > self._room:
            raise LocalProtocolError(f"Data-Notification of {len(apdu)} bytes > {self._room}")
        if ciphered:
            title = None if self._security is None else self._security.server_system_title
            apdu = self._context(title).protect(apdu, self._take_ic(), general=True)
            if self._association is None:
                self._close_context()
        self._queue(apdu)

    # -- internals --------------------------------------------------------------------------

    def _transition(self, event: str) -> None:
        nxt = _TRANSITIONS.get((self.state, event))
        if nxt is None:
            raise LocalProtocolError(f"no transition for {event} in state {self.state.value}")
        self.state = nxt

    def _drop(self) -> None:
        self._association = self._challenges = self._long = self._deadline = None
        self._conformance = self._room = 0
        self._close_context()

    def _take_ic(self) -> int:
        ic = self._ic
        if ic > _MAX_IC:
            raise LocalProtocolError("the meter's invocation counter is used up: renew the keys")
        self._ic = ic + 1
        return ic

    def _context(self, client_title: bytes | None) -> SecurityContext:
        """The SecurityContext, made when needed: its AESGCM holds ~2.4 KB of OpenSSL state,
        so it lives only while an association (or a push) needs it."""
        if self._security is not None and client_title != self._security.server_system_title:
            self._close_context()
        security = self._security
        if security is None:
            if self._system_title is None or self._keys is None:
                raise LocalProtocolError("ciphering needs the meter's system_title and keys")
            ek, ak = self._keys
            security = SecurityContext(
                system_title=self._system_title, ek=ek, ak=ak, server_system_title=client_title
            )
            if client_title is not None and self._client_counters:
                last = self._client_counters.pop(client_title, None)
                security.last_server_invocation_counter = last
            self._security = security
        return security

    def _close_context(self) -> None:
        """Drop the SecurityContext, keeping the client's last counter (replays stay refused;
        only verified APDUs record one, so only key holders are remembered)."""
        security, self._security = self._security, None
        if security is None:
            return
        title, last = security.server_system_title, security.last_server_invocation_counter
        if title is not None and last is not None:
            if self._client_counters is None:
                self._client_counters = {}
            self._client_counters[title] = last

    def _queue(self, apdu: bytes) -> None:
        if self._outgoing is None:
            self._outgoing = [apdu]
        else:
            self._outgoing.append(apdu)

    def _send(self, plain: bytes, ciphered: bool | None = None) -> None:
        """Queue an xDLMS APDU, ciphered as the association is unless ``ciphered`` says."""
        if ciphered is None:
            ciphered = self._association is not None and self._association.ciphered
        if ciphered:
            security = self._security
            assert security is not None
            general = plain[0] not in GLO_TAG_FOR  # e.g. Exception-Response has no glo tag
            plain = security.protect(plain, self._take_ic(), general=general)
        self._queue(plain)

    def _reject(
        self, state_error: int, service_error: int, reason: str, plain: bool = False
    ) -> list[Event]:
        """Exception-Response; ``plain`` when the request did not decipher."""
        counter = None
        if service_error == _COUNTER:
            assert self._security is not None
            counter = min((self._security.last_server_invocation_counter or 0) + 1, _MAX_IC)
        apdu = x.ExceptionResponse(state_error, service_error, counter).encode()
        self._send(apdu, False if plain else None)
        return [RequestRejected(reason)]

    # -- ACSE -------------------------------------------------------------------------------

    def receive_apdu(self, client_address: int, apdu: bytes, now: float) -> list[Event]:
        """Serve one APDU from ``client_address``; the answers wait in ``data_to_send``."""
        if not apdu:
            raise RemoteProtocolError("empty APDU")
        tag = apdu[0]
        if tag == 0x60:
            events = self._receive_aarq(client_address, apdu)
        elif tag == 0x62:
            events = self._receive_rlrq(client_address, apdu)
        elif tag in (0x61, 0x63):
            raise RemoteProtocolError(f"{'AARE' if tag == 0x61 else 'RLRE'} sent to a server")
        else:
            events = self._receive_xdlms(client_address, apdu, now)
        if self._inactivity is not None:
            self._deadline = None if self.state is State.IDLE else now + self._inactivity
        return events

    def _receive_aarq(self, client_address: int, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self._association is not None:
            events.append(AssociationLost(f"association {self._association.name} replaced"))
            self._transition("aarq")
            self._drop()
        try:
            aarq = decode_acse(data)
        except RemoteProtocolError as exc:
            return [*events, *self._refuse(client_address, False, 1, f"malformed AARQ: {exc}")]
        assert isinstance(aarq, Aarq)  # tag 0x60
        return events + self._associate(client_address, aarq)

    def _associate(self, client_address: int, aarq: Aarq) -> list[Event]:
        association = self._associations.get(client_address)
        ctx = aarq.ciphered_context
        # Green Book 9.4.2: AARE result-source-diagnostic (acse-service-user)
        if association is None:
            return self._refuse(
                client_address, ctx, 1, f"no association for client {client_address}"
            )
        mechanism = association.mechanism
        if ctx != association.ciphered:
            wanted = "ciphered" if association.ciphered else "unciphered"
            return self._refuse(client_address, association.ciphered, 2, f"{wanted} context wanted")
        if aarq.mechanism != mechanism:
            diagnostic = 12 if aarq.mechanism == Mechanism.NONE else 11
            reason = f"mechanism {aarq.mechanism.name} proposed, {mechanism.name} required"
            return self._refuse(client_address, ctx, diagnostic, reason)
        security = None
        if ctx or mechanism == Mechanism.HLS_GMAC:
            title = aarq.calling_ap_title
            if title is None or len(title) != 8:  # Green Book 9.2.7.2.4: the client system title
                return self._refuse(client_address, ctx, 3, "no 8-octet calling-AP-title")
            security = self._context(title)
        secret = aarq.authentication_value or b""
        if mechanism == Mechanism.LLS:
            assert association.password is not None
            if not hmac.compare_digest(secret, association.password):
                return self._refuse(client_address, ctx, 13, "LLS password wrong")
        elif mechanism == Mechanism.HLS_GMAC and not 8 <= len(secret) <= 64:
            # Green Book 9.2.7.4: challenges are 8 to 64 octets
            return self._refuse(client_address, ctx, 13, f"CtoS of {len(secret)} octets")
        try:
            user = aarq.user_information
            if security is not None and ctx:
                user = security.unprotect(user)  # glo-initiate-request: verified, counter checked
            initiate = decode_initiate_request(user)
        except RemoteProtocolError as exc:
            return self._refuse(client_address, ctx, 1, f"InitiateRequest: {exc}", 0)
        # IEC 62056-5-3 §7.3: Confirmed-Service-Error initiate
        if initiate.dlms_version < 6:
            return self._refuse(client_address, ctx, 1, "DLMS version below 6", 1)
        conformance = association.conformance & initiate.conformance
        if not conformance:
            return self._refuse(client_address, ctx, 1, "no conformance in common", 2)
        size = initiate.max_receive_pdu_size
        room = size - _cipher_overhead(size) if ctx else size
        if room < _MIN_ROOM:
            return self._refuse(client_address, ctx, 1, f"client max PDU {size} too short", 3)
        self._association, self._conformance, self._room = association, int(conformance), room
        response = InitiateResponse(Conformance(conformance), association.max_pdu_size).encode()
        if ctx:
            assert security is not None
            response = security.protect(response, self._take_ic())  # glo-initiate-response
        title = self._system_title if security is not None else None
        if mechanism == Mechanism.HLS_GMAC:
            stoc = make_challenge(16)
            self._challenges = (stoc, secret)
            self._transition("aarq_accepted_hls")
            # accepted with authentication-required (14), the mechanism name and the StoC
            aare = Aare(ctx, AssociationResult.ACCEPTED, 1, 14, response, title, mechanism, stoc)
        else:
            self._transition("aarq_accepted")
            aare = Aare(ctx, AssociationResult.ACCEPTED, 1, 0, response, title)
        self._queue(aare.encode())
        return [AssociationAccepted(association.name, client_address)]

    def _refuse(
        self, client_address: int, ctx: bool, diagnostic: int, reason: str, error: int | None = None
    ) -> list[Event]:
        self._transition("aarq_refused")
        self._close_context()
        user = None
        if error is not None:  # initiateError [1], ServiceError initiate [6]
            user = x.ConfirmedServiceError(1, 6, error).encode()
        self._queue(Aare(ctx, AssociationResult.REJECTED_PERMANENT, 1, diagnostic, user).encode())
        return [AssociationRefused(client_address, reason)]

    def _receive_rlrq(self, client_address: int, data: bytes) -> list[Event]:
        request = decode_acse(data)  # a malformed RLRQ raises: nothing sensible to answer
        assert isinstance(request, ReleaseRequest)  # tag 0x62
        association = self._association
        if association is None or association.client_address != client_address:
            self._queue(ReleaseResponse(0).encode())
            return []
        user = None
        if association.ciphered and request.user_information is not None:
            security = self._security
            assert security is not None
            try:  # protected release: the ciphered InitiateRequest must verify
                decode_initiate_request(security.unprotect(request.user_information))
            except RemoteProtocolError as exc:
                self._queue(ReleaseResponse(1).encode())  # not-finished
                return [RequestRejected(f"release refused: {exc}")]
            initiate = InitiateResponse(Conformance(self._conformance), association.max_pdu_size)
            user = security.protect(initiate.encode(), self._take_ic())
        self._transition("rlrq")
        self._drop()
        self._queue(ReleaseResponse(0, user).encode())
        return [Released(association.name)]

    # -- xDLMS ------------------------------------------------------------------------------

    def _receive_xdlms(self, client_address: int, data: bytes, now: float) -> list[Event]:
        association = self._association
        if association is None or association.client_address != client_address:
            reason = f"APDU 0x{data[0]:02X} from client {client_address}, not associated"
            return self._reject(_NOT_ALLOWED, _NOT_POSSIBLE, reason, plain=True)
        if len(data) > association.max_pdu_size:
            reason = f"APDU of {len(data)} bytes, max {association.max_pdu_size}"
            return self._reject(_NOT_ALLOWED, _TOO_LONG, reason, plain=True)
        plain = data
        if association.ciphered:
            security = self._security
            assert security is not None
            last = security.last_server_invocation_counter
            counter = _peek_counter(data)
            if last is not None and counter is not None and counter <= last:
                reason = f"invocation counter {counter} not above {last}"
                return self._reject(_NOT_ALLOWED, _COUNTER, reason, plain=True)
            try:
                plain = security.unprotect(data)
            except RemoteProtocolError as exc:
                return self._reject(_NOT_ALLOWED, _DECIPHERING, str(exc), plain=True)
        try:
            request = x.decode_apdu(plain)
        except RemoteProtocolError as exc:
            if plain[0] in _REQUEST_TAGS:
                return self._reject(_NOT_ALLOWED, _OTHER, str(exc))
            return self._reject(_UNKNOWN, _NOT_SUPPORTED, str(exc))
        needs = _NEEDS.get(type(request))
        if needs is None:
            return self._reject(_UNKNOWN, _NOT_SUPPORTED, f"{type(request).__name__} to a server")
        hls = isinstance(request, x.ActionRequest) and request.method == _HLS_METHOD
        if isinstance(request, x.GetRequestWithList):
            selective = any(access is not None for _, access in request.attributes)
        else:
            selective = getattr(request, "access", None) is not None
        if (needs & ~self._conformance and not hls) or (
            selective and not self._conformance & _SELECTIVE
        ):
            reason = f"{type(request).__name__} outside the negotiated conformance"
            return self._reject(_NOT_ALLOWED, _NOT_SUPPORTED, reason)
        self._transition("request")
        long, self._long = self._long, None  # any request but the next block ends a transfer
        denied = self.state is State.AUTHENTICATING  # only pass 3 until it verifies
        if hls and denied:
            assert isinstance(request, x.ActionRequest)
            return self._hls_reply(request, association)
        name, model = association.name, self._model
        if isinstance(request, x.GetRequestNormal):
            descriptor, access = request.attribute, request.access
            result = _DAR.READ_WRITE_DENIED if denied else model.get(name, descriptor, access, now)
            if isinstance(result, x.DataAccessResult):
                self._send(x.GetResponseNormal(request.invoke, result).encode())
                return [RequestServed("get", descriptor, result)]
            out = bytearray((0xC4, 1, plain[2], 0))  # GET-Response-Normal, invoke echoed, data
            axdr.encode_into(out, result)
            if len(out) > self._room:
                return self._long_get(request.invoke, bytes(out), 4, [descriptor])
            self._send(bytes(out))
            return [RequestServed("get", descriptor, _DAR.SUCCESS)]
        if isinstance(request, x.GetRequestWithList):
            results = tuple(
                _DAR.READ_WRITE_DENIED if denied else model.get(name, d, a, now)
                for d, a in request.attributes
            )
            descriptors = [d for d, _ in request.attributes]
            apdu = x.GetResponseWithList(request.invoke, results).encode()
            if len(apdu) > self._room:
                return self._long_get(request.invoke, apdu, 3, descriptors)
            self._send(apdu)
            return [
                RequestServed("get", d, r if isinstance(r, x.DataAccessResult) else _DAR.SUCCESS)
                for d, r in zip(descriptors, results, strict=True)
            ]
        if isinstance(request, x.SetRequestNormal):
            if denied or request.access is not None:  # ObjectModel.set takes no access selection
                result = _DAR.READ_WRITE_DENIED if denied else _DAR.OTHER_REASON
            else:  # the value follows tag, choice, invoke, descriptor (9) and the access flag
                value = axdr.decode(plain, 13, typed=True)[0]
                result = model.set(name, request.attribute, value, now)
            if request.invoke.confirmed:
                self._send(x.SetResponseNormal(request.invoke, result).encode())
            return [RequestServed("set", request.attribute, result)]
        if isinstance(request, x.ActionRequest):
            return self._action(request, plain, hls or denied, now)
        if denied:
            reason = f"{type(request).__name__} before HLS authentication"
            return self._reject(_NOT_ALLOWED, _NOT_POSSIBLE, reason)
        if isinstance(request, x.GetRequestNext):
            return self._get_next(request, long)
        assert isinstance(request, x.SetRequestWithFirstDatablock | x.SetRequestWithDatablock)
        return self._set_block(request, long, now)

    def _hls_reply(self, request: x.ActionRequest, association: ServerAssociation) -> list[Event]:
        """HLS-GMAC pass 3 (the client's f(StoC)) and pass 4 (f(CtoS) back)."""
        security = self._security
        assert security is not None
        challenges, self._challenges = self._challenges, None  # one attempt per StoC
        proof = request.parameters
        try:
            if challenges is None or not isinstance(proof, bytes):
                what = "no StoC left (spent by a failed attempt)" if challenges is None else ""
                raise RemoteProtocolError(what or "f(StoC) is not an octet-string")  # noqa: TRY301
            # inside a ciphered ACTION the client computed f(StoC) with an older counter
            security.verify_gmac(challenges[0], proof, nested=association.ciphered)
        except RemoteProtocolError as exc:
            self._transition("hls_failed")
            self._send(x.ActionResponse(request.invoke, _AR.READ_WRITE_DENIED).encode())
            reason = f"HLS-GMAC pass 3 refused: {exc}"
            return [AssociationRefused(association.client_address, reason)]
        self._transition("hls_passed")
        reply = security.gmac(challenges[1], self._take_ic())  # f(CtoS) = SC | IC | T
        self._send(x.ActionResponse(request.invoke, _AR.SUCCESS, reply, True).encode())
        return [Authenticated(association.name)]

    def _long_get(
        self,
        invoke: x.InvokeIdAndPriority,
        apdu: bytes,
        raw_start: int,
        descriptors: list[x.AttributeDescriptor],
    ) -> list[Event]:
        """A response too long for the client: the first block of its raw data (after the
        header: the Data, or the list of Get-Data-Results; Green Book 9.3.6), or refused."""
        if self._conformance & _BLOCK_GET:
            raw = apdu[raw_start:]
            size = _block_size(self._room)
            self._long = _LongGet(raw, size)
            self._send(x.GetResponseWithDatablock(invoke, False, 1, raw[:size]).encode())
            return [RequestServed("get", d, _DAR.SUCCESS) for d in descriptors]
        if raw_start == 3:
            refused = x.GetResponseWithList(invoke, (_DAR.OTHER_REASON,) * len(descriptors))
            self._send(refused.encode())
        else:
            self._send(x.GetResponseNormal(invoke, _DAR.OTHER_REASON).encode())
        return [RequestServed("get", d, _DAR.OTHER_REASON) for d in descriptors]

    def _get_next(self, request: x.GetRequestNext, long: _LongGet | _LongSet | None) -> list[Event]:
        block = (request.block_number + 1) & _MAX_IC  # the block asked for
        if not isinstance(long, _LongGet):
            result = _DAR.NO_LONG_GET_IN_PROGRESS
        elif request.block_number != long.block:
            result = _DAR.DATA_BLOCK_NUMBER_INVALID  # and the transfer ends
        else:
            chunk = long.raw[long.pos : long.pos + long.size]
            long.pos += long.size
            long.block = block
            last = long.pos >= len(long.raw)
            if not last:
                self._long = long
            self._send(x.GetResponseWithDatablock(request.invoke, last, block, chunk).encode())
            return []
        self._send(x.GetResponseWithDatablock(request.invoke, True, block, result).encode())
        return [RequestRejected(f"GET-Request-Next after {request.block_number}: {result.name}")]

    def _set_block(
        self,
        request: x.SetRequestWithFirstDatablock | x.SetRequestWithDatablock,
        long: _LongGet | _LongSet | None,
        now: float,
    ) -> list[Event]:
        number = request.block_number
        if isinstance(request, x.SetRequestWithFirstDatablock):
            long = None if request.access is not None else _LongSet(request.attribute)
            result = _DAR.OTHER_REASON  # ObjectModel.set takes no access selection
        else:
            result = _DAR.NO_LONG_SET_IN_PROGRESS
        if isinstance(long, _LongSet) and number != long.block + 1:
            long, result = None, _DAR.DATA_BLOCK_NUMBER_INVALID
        if isinstance(long, _LongSet):
            long.raw += request.raw_data
            long.block = number
            if len(long.raw) > _MAX_LONG_SET:
                long, result = None, _DAR.LONG_SET_ABORTED
        if not isinstance(long, _LongSet):
            self._send(x.SetResponseLastDatablock(request.invoke, result, number).encode())
            return [RequestRejected(f"SET block {number}: {result.name}")]
        if not request.last_block:
            self._long = long
            self._send(x.SetResponseDatablock(request.invoke, number).encode())
            return []
        try:
            value = axdr.decode_all(bytes(long.raw), typed=True)
        except RemoteProtocolError:
            result = _DAR.OTHER_REASON  # the blocks do not make one A-XDR value
        else:
            assert self._association is not None
            result = self._model.set(self._association.name, long.descriptor, value, now)
        self._send(x.SetResponseLastDatablock(request.invoke, result, number).encode())
        return [RequestServed("set", long.descriptor, result)]

    def _action(
        self, request: x.ActionRequest, plain: bytes, denied: bool, now: float
    ) -> list[Event]:
        # denied: a pending association, or reply_to_HLS_authentication once associated
        value: Value | None = None
        if denied:
            result = _AR.READ_WRITE_DENIED
        else:  # the parameters follow tag, choice, invoke, descriptor (9) and their flag
            assert self._association is not None
            parameters = axdr.decode(plain, 13, typed=True)[0] if request.has_parameters else None
            result, value = self._model.action(
                self._association.name, request.method, parameters, now
            )
        apdu = x.ActionResponse(request.invoke, result, value, value is not None).encode()
        if len(apdu) > self._room:  # ACTION-Response-With-Pblock is not implemented
            result = _AR.OTHER_REASON
            apdu = x.ActionResponse(request.invoke, result).encode()
        if request.invoke.confirmed:
            self._send(apdu)
        return [RequestServed("action", request.method, result)]


# The conformance bits each request needs (Green Book 9.4.6.1), as plain ints
_SELECTIVE: Final = int(_C.SELECTIVE_ACCESS)
_BLOCK_GET: Final = int(_C.BLOCK_TRANSFER_WITH_GET_OR_READ)
_BLOCK_SET: Final = int(_C.SET | _C.BLOCK_TRANSFER_WITH_SET_OR_WRITE)
_NEEDS: Final[dict[type, int]] = {
    x.GetRequestNormal: int(_C.GET),
    x.GetRequestNext: int(_C.GET) | _BLOCK_GET,
    x.GetRequestWithList: int(_C.GET | _C.MULTIPLE_REFERENCES),
    x.SetRequestNormal: int(_C.SET),
    x.SetRequestWithFirstDatablock: _BLOCK_SET,
    x.SetRequestWithDatablock: _BLOCK_SET,
    x.ActionRequest: int(_C.ACTION),
}
