"""ACSE for DLMS/COSEM: AARQ/AARE and RLRQ/RLRE, with the xDLMS Initiate inside.

IEC 62056-5-3 §7 and Green Book 9.4 (ISO/IEC 8650 as profiled for DLMS): the ACSE APDUs are BER;
their user-information carries the A-XDR xDLMS InitiateRequest/InitiateResponse (or, on a
ciphered context, its glo-ciphered form, which ``security`` produces and this module only carries).

Authentication values (an LLS password, an HLS challenge) are kept out of ``repr``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "Aare",
    "Aarq",
    "AcseApdu",
    "AssociationResult",
    "Conformance",
    "InitiateRequest",
    "InitiateResponse",
    "Mechanism",
    "ReleaseRequest",
    "ReleaseResponse",
    "acse_length",
    "decode_acse",
    "decode_initiate_request",
    "decode_initiate_response",
]

# Application context names (Green Book 9.4.2.2.2): 2.16.756.5.8.1.{1 LN, 2 SN, 3 LN ciphered, ...}
_CONTEXT_PREFIX: Final = bytes.fromhex("608574050801")
CONTEXT_LN: Final = 1
CONTEXT_LN_CIPHERED: Final = 3
# Mechanism names (Green Book 9.4.2.2.3): 2.16.756.5.8.2.{n}
_MECHANISM_PREFIX: Final = bytes.fromhex("608574050802")
_U16: Final = struct.Struct(">H")


class Mechanism(enum.IntEnum):
    """Authentication mechanism ids (Green Book 9.4.2.2.3)."""

    NONE = 0  # lowest level security
    LLS = 1  # low level security: a password
    HLS = 2  # manufacturer-specific HLS
    HLS_MD5 = 3
    HLS_SHA1 = 4
    HLS_GMAC = 5
    HLS_SHA256 = 6
    HLS_ECDSA = 7


class AssociationResult(enum.IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class Conformance(enum.IntFlag):
    """The xDLMS conformance block (Green Book 9.4.6.1): bit n of the 24 bits is 1 << (23 - n)."""

    GENERAL_PROTECTION = 1 << (23 - 1)
    GENERAL_BLOCK_TRANSFER = 1 << (23 - 2)
    READ = 1 << (23 - 3)
    WRITE = 1 << (23 - 4)
    UNCONFIRMED_WRITE = 1 << (23 - 5)
    DELTA_VALUE_ENCODING = 1 << (23 - 6)
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << (23 - 8)
    PRIORITY_MGMT_SUPPORTED = 1 << (23 - 9)
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << (23 - 10)
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << (23 - 11)
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << (23 - 12)
    BLOCK_TRANSFER_WITH_ACTION = 1 << (23 - 13)
    MULTIPLE_REFERENCES = 1 << (23 - 14)
    INFORMATION_REPORT = 1 << (23 - 15)
    DATA_NOTIFICATION = 1 << (23 - 16)
    ACCESS = 1 << (23 - 17)
    PARAMETERIZED_ACCESS = 1 << (23 - 18)
    GET = 1 << (23 - 19)
    SET = 1 << (23 - 20)
    SELECTIVE_ACCESS = 1 << (23 - 21)
    EVENT_NOTIFICATION = 1 << (23 - 22)
    ACTION = 1 << (23 - 23)

    @classmethod
    def client_default(cls) -> Conformance:
        """What hesd proposes: LN services with block transfer, selective access, notifications."""
        return (
            cls.GET
            | cls.SET
            | cls.ACTION
            | cls.SELECTIVE_ACCESS
            | cls.MULTIPLE_REFERENCES
            | cls.BLOCK_TRANSFER_WITH_GET_OR_READ
            | cls.BLOCK_TRANSFER_WITH_SET_OR_WRITE
            | cls.BLOCK_TRANSFER_WITH_ACTION
            | cls.PRIORITY_MGMT_SUPPORTED
            | cls.ATTRIBUTE0_SUPPORTED_WITH_GET
            | cls.DATA_NOTIFICATION
            | cls.EVENT_NOTIFICATION
        )


# -- xDLMS Initiate (A-XDR) -------------------------------------------------------------------


def _conformance_bytes(conformance: Conformance) -> bytes:
    # [APPLICATION 31] IMPLICIT BIT STRING (SIZE(24)): 5F 1F, length 4, 0 unused bits, 3 octets
    return b"\x5f\x1f\x04\x00" + int(conformance).to_bytes(3, "big")


def _read_conformance(data: bytes, pos: int, what: str) -> tuple[Conformance, int]:
    if data[pos : pos + 4] != b"\x5f\x1f\x04\x00" or len(data) < pos + 7:
        raise RemoteProtocolError(f"{what}: conformance block malformed at offset {pos}")
    return Conformance(int.from_bytes(data[pos + 4 : pos + 7], "big")), pos + 7


@dataclass(frozen=True, slots=True)
class InitiateRequest:
    """xDLMS InitiateRequest (Green Book 9.4.6.2)."""

    conformance: Conformance
    max_receive_pdu_size: int
    dlms_version: int = 6
    dedicated_key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.max_receive_pdu_size <= 0xFFFF:
            raise LocalProtocolError(f"max receive PDU size {self.max_receive_pdu_size} > 65535")

    def encode(self) -> bytes:
        out = bytearray(b"\x01")
        if self.dedicated_key is None:
            out.append(0)
        else:
            out += bytes((1, len(self.dedicated_key))) + self.dedicated_key
        out += b"\x00\x00"  # response-allowed: default (TRUE); proposed-quality-of-service: absent
        out.append(self.dlms_version)
        out += _conformance_bytes(self.conformance)
        out += _U16.pack(self.max_receive_pdu_size)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    """xDLMS InitiateResponse (Green Book 9.4.6.2); vaa-name 0x0007 for LN referencing."""

    conformance: Conformance
    max_pdu_size: int
    dlms_version: int = 6
    vaa_name: int = 0x0007

    def encode(self) -> bytes:
        return (
            b"\x08\x00"
            + bytes((self.dlms_version,))
            + _conformance_bytes(self.conformance)
            + _U16.pack(self.max_pdu_size)
            + _U16.pack(self.vaa_name)
        )


def decode_initiate_request(data: bytes) -> InitiateRequest:
    what = "InitiateRequest"
    try:
        if data[0] != 0x01:
            raise RemoteProtocolError(f"{what}: tag 0x{data[0]:02X} is not 0x01")
        pos = 1
        key: bytes | None = None
        if data[pos]:
            length = data[pos + 1]
            key = bytes(data[pos + 2 : pos + 2 + length])
            if len(key) != length:
                raise RemoteProtocolError(f"{what}: dedicated key truncated")
            pos += 2 + length
        else:
            pos += 1
        if data[pos]:  # response-allowed present: a BOOLEAN follows
            pos += 2
        else:
            pos += 1
        if data[pos]:  # proposed-quality-of-service present: an Integer8 follows
            pos += 2
        else:
            pos += 1
        version = data[pos]
        conformance, pos = _read_conformance(data, pos + 1, what)
        if len(data) != pos + 2:
            raise RemoteProtocolError(f"{what}: {len(data) - pos} bytes where 2 (PDU size) end it")
        return InitiateRequest(conformance, _U16.unpack_from(data, pos)[0], version, key)
    except IndexError:
        raise RemoteProtocolError(f"{what}: truncated ({len(data)} bytes)") from None


def decode_initiate_response(data: bytes) -> InitiateResponse:
    what = "InitiateResponse"
    try:
        if data[0] != 0x08:
            raise RemoteProtocolError(f"{what}: tag 0x{data[0]:02X} is not 0x08")
        pos = 3 if data[1] else 2  # negotiated-quality-of-service: present (flag + Integer8) or not
        version = data[pos]
        conformance, pos = _read_conformance(data, pos + 1, what)
        if len(data) != pos + 4:
            raise RemoteProtocolError(f"{what}: {len(data) - pos} bytes where 4 end it")
        max_pdu, vaa = _U16.unpack_from(data, pos)[0], _U16.unpack_from(data, pos + 2)[0]
        return InitiateResponse(conformance, max_pdu, version, vaa)
    except IndexError:
        raise RemoteProtocolError(f"{what}: truncated ({len(data)} bytes)") from None


# -- BER --------------------------------------------------------------------------------------


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n <= 0xFF:
        return bytes((0x81, n))
    if n <= 0xFFFF:
        return b"\x82" + _U16.pack(n)
    raise LocalProtocolError(f"BER length {n} too large for an ACSE APDU")


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _ber_length(len(value)) + value


def _read_tlv(data: bytes, pos: int, what: str) -> tuple[int, bytes, int]:
    """One BER TLV at ``pos``: (tag, value, next position). Multi-byte tags are not used here."""
    if pos + 2 > len(data):
        raise RemoteProtocolError(f"{what}: truncated TLV at offset {pos}")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first in (0x81, 0x82):
        size = first - 0x80
        if pos + size > len(data):
            raise RemoteProtocolError(f"{what}: truncated length at offset {pos}")
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    else:
        raise RemoteProtocolError(f"{what}: unsupported BER length octet 0x{first:02X}")
    if pos + length > len(data):
        raise RemoteProtocolError(
            f"{what}: tag 0x{tag:02X} claims {length} bytes, {len(data) - pos} left"
        )
    return tag, bytes(data[pos : pos + length]), pos + length


def _fields(body: bytes, what: str) -> dict[int, bytes]:
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        tag, value, pos = _read_tlv(body, pos, what)
        if tag in fields:
            raise RemoteProtocolError(f"{what}: field 0x{tag:02X} appears twice")
        fields[tag] = value
    return fields


def _context_name(ciphered: bool) -> bytes:
    # application-context-name [1]: an OBJECT IDENTIFIER (06 07 ...)
    return _tlv(0xA1, _tlv(0x06, _CONTEXT_PREFIX + bytes((3 if ciphered else 1,))))


def _read_context(value: bytes | None, what: str) -> bool:
    if value is None:
        raise RemoteProtocolError(f"{what}: application-context-name missing")
    tag, oid, _ = _read_tlv(value, 0, what)
    if tag != 0x06 or len(oid) != 7 or oid[:6] != _CONTEXT_PREFIX or oid[6] not in (1, 3):
        raise RemoteProtocolError(f"{what}: application context {oid.hex()} is not LN (1 or 3)")
    return oid[6] == 3


def _read_mechanism(value: bytes | None, what: str) -> Mechanism:
    if value is None:
        return Mechanism.NONE
    if len(value) != 7 or value[:6] != _MECHANISM_PREFIX:
        raise RemoteProtocolError(f"{what}: mechanism name {value.hex()} is not a DLMS mechanism")
    try:
        return Mechanism(value[6])
    except ValueError:
        raise RemoteProtocolError(f"{what}: unknown mechanism id {value[6]}") from None


def _read_ap_title(value: bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    tag, title, _ = _read_tlv(value, 0, what)
    if tag != 0x04:
        raise RemoteProtocolError(f"{what}: AP-title is not an OCTET STRING")
    return title


def _read_auth_value(value: bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    tag, secret, _ = _read_tlv(value, 0, what)
    if tag != 0x80:  # charstring [0] IMPLICIT GraphicString
        raise RemoteProtocolError(f"{what}: authentication value is not charstring [0]")
    return secret


def _read_user_information(value: bytes | None, what: str) -> bytes | None:
    if value is None:
        return None
    tag, inner, _ = _read_tlv(value, 0, what)
    if tag != 0x04:
        raise RemoteProtocolError(f"{what}: user-information is not an OCTET STRING")
    return inner


_ACSE_REQUIREMENTS: Final = b"\x07\x80"  # BIT STRING, 7 unused bits, authentication (bit 0) set


@dataclass(frozen=True, slots=True)
class Aarq:
    """A-ASSOCIATE request. ``user_information`` is the encoded (maybe ciphered) InitiateRequest."""

    ciphered_context: bool
    mechanism: Mechanism
    user_information: bytes
    calling_ap_title: bytes | None = None  # the client system title (needed when ciphering)
    authentication_value: bytes | None = field(default=None, repr=False)  # password/challenge

    def __post_init__(self) -> None:
        if (self.mechanism == Mechanism.NONE) != (self.authentication_value is None):
            raise LocalProtocolError("an authentication value goes with a mechanism, and only then")
        if self.ciphered_context and self.calling_ap_title is None:
            raise LocalProtocolError("a ciphered context needs the client system title")

    def encode(self) -> bytes:
        body = bytearray(_context_name(self.ciphered_context))
        if self.calling_ap_title is not None:
            body += _tlv(0xA6, _tlv(0x04, self.calling_ap_title))
        if self.mechanism != Mechanism.NONE:
            assert self.authentication_value is not None
            body += _tlv(0x8A, _ACSE_REQUIREMENTS)
            body += _tlv(0x8B, _MECHANISM_PREFIX + bytes((self.mechanism,)))
            body += _tlv(0xAC, _tlv(0x80, self.authentication_value))
        body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(0x60, bytes(body))


@dataclass(frozen=True, slots=True)
class Aare:
    """A-ASSOCIATE response. ``user_information`` holds the InitiateResponse (maybe ciphered), or
    a Confirmed-Service-Error when the server refused the xDLMS part."""

    ciphered_context: bool
    result: AssociationResult
    diagnostic_source: int  # 1 acse-service-user, 2 acse-service-provider
    diagnostic: int  # e.g. 0 null, 1 no-reason-given, 13 authentication-failure (user)
    user_information: bytes | None
    responding_ap_title: bytes | None = None  # the server system title
    mechanism: Mechanism = Mechanism.NONE
    authentication_value: bytes | None = field(default=None, repr=False)  # HLS StoC challenge

    def encode(self) -> bytes:
        body = bytearray(_context_name(self.ciphered_context))
        body += _tlv(0xA2, _tlv(0x02, bytes((self.result,))))
        source_tag = 0xA1 if self.diagnostic_source == 1 else 0xA2
        body += _tlv(0xA3, _tlv(source_tag, _tlv(0x02, bytes((self.diagnostic,)))))
        if self.responding_ap_title is not None:
            body += _tlv(0xA4, _tlv(0x04, self.responding_ap_title))
        if self.mechanism != Mechanism.NONE:
            body += _tlv(0x88, _ACSE_REQUIREMENTS)
            body += _tlv(0x89, _MECHANISM_PREFIX + bytes((self.mechanism,)))
            if self.authentication_value is not None:
                body += _tlv(0xAA, _tlv(0x80, self.authentication_value))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(0x61, bytes(body))

    def describe_diagnostic(self) -> str:
        user = {
            0: "null",
            1: "no-reason-given",
            2: "application-context-name-not-supported",
            11: "authentication-mechanism-name-not-recognised",
            12: "authentication-mechanism-name-required",
            13: "authentication-failure",
            14: "authentication-required",
        }
        provider = {0: "null", 1: "no-reason-given", 2: "no-common-acse-version"}
        table = user if self.diagnostic_source == 1 else provider
        source = "acse-service-user" if self.diagnostic_source == 1 else "acse-service-provider"
        return f"{source}: {table.get(self.diagnostic, str(self.diagnostic))}"


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    reason: int | None = 0  # 0 normal, 1 urgent, 30 user-defined
    user_information: bytes | None = None

    def encode(self) -> bytes:
        body = b"" if self.reason is None else _tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(0x62, body)


@dataclass(frozen=True, slots=True)
class ReleaseResponse:
    reason: int | None = 0  # 0 normal, 1 not-finished, 30 user-defined
    user_information: bytes | None = None

    def encode(self) -> bytes:
        body = b"" if self.reason is None else _tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _tlv(0xBE, _tlv(0x04, self.user_information))
        return _tlv(0x63, body)


AcseApdu: TypeAlias = Aarq | Aare | ReleaseRequest | ReleaseResponse

_AARQ_FIELDS: Final = {
    0x80,
    0xA1,
    0xA2,
    0xA3,
    0xA4,
    0xA5,
    0xA6,
    0xA7,
    0xA8,
    0xA9,
    0x8A,
    0x8B,
    0xAC,
    0xBD,
    0xBE,
}
_AARE_FIELDS: Final = {0x80, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0x88, 0x89, 0xAA, 0xBD, 0xBE}


def _integer(value: bytes | None, what: str) -> int:
    if value is None:
        raise RemoteProtocolError(f"{what} missing")
    tag, number, _ = _read_tlv(value, 0, what)
    if tag != 0x02 or len(number) != 1:
        raise RemoteProtocolError(f"{what} is not a one-octet INTEGER")
    return number[0]


def _decode_aarq(body: bytes) -> Aarq:
    what = "AARQ"
    fields = _fields(body, what)
    unknown = set(fields) - _AARQ_FIELDS
    if unknown:
        raise RemoteProtocolError(f"{what}: unexpected field 0x{min(unknown):02X}")
    mechanism = _read_mechanism(fields.get(0x8B), what)
    auth = _read_auth_value(fields.get(0xAC), what)
    if (mechanism == Mechanism.NONE) != (auth is None):
        raise RemoteProtocolError(f"{what}: mechanism and authentication value do not match")
    ciphered = _read_context(fields.get(0xA1), what)
    title = _read_ap_title(fields.get(0xA6), what)
    if ciphered and title is None:
        raise RemoteProtocolError(f"{what}: ciphered context without calling-AP-title")
    user = _read_user_information(fields.get(0xBE), what)
    if user is None:
        raise RemoteProtocolError(f"{what}: user-information (xDLMS InitiateRequest) missing")
    return Aarq(ciphered, mechanism, user, title, auth)


def _decode_aare(body: bytes) -> Aare:
    what = "AARE"
    fields = _fields(body, what)
    unknown = set(fields) - _AARE_FIELDS
    if unknown:
        raise RemoteProtocolError(f"{what}: unexpected field 0x{min(unknown):02X}")
    ciphered = _read_context(fields.get(0xA1), what)
    result_value = _integer(fields.get(0xA2), f"{what} result")
    try:
        result = AssociationResult(result_value)
    except ValueError:
        raise RemoteProtocolError(f"{what}: association result {result_value} unknown") from None
    diag = fields.get(0xA3)
    if diag is None:
        raise RemoteProtocolError(f"{what}: result-source-diagnostic missing")
    source_tag, inner, _ = _read_tlv(diag, 0, what)
    if source_tag not in (0xA1, 0xA2):
        raise RemoteProtocolError(f"{what}: diagnostic source 0x{source_tag:02X} unknown")
    diagnostic = _integer(inner, f"{what} diagnostic")
    return Aare(
        ciphered_context=ciphered,
        result=result,
        diagnostic_source=1 if source_tag == 0xA1 else 2,
        diagnostic=diagnostic,
        user_information=_read_user_information(fields.get(0xBE), what),
        responding_ap_title=_read_ap_title(fields.get(0xA4), what),
        mechanism=_read_mechanism(fields.get(0x89), what),
        authentication_value=_read_auth_value(fields.get(0xAA), what),
    )


def _decode_release(body: bytes, what: str) -> tuple[int | None, bytes | None]:
    fields = _fields(body, what)
    unknown = set(fields) - {0x80, 0xBE}
    if unknown:
        raise RemoteProtocolError(f"{what}: unexpected field 0x{min(unknown):02X}")
    reason = fields.get(0x80)
    if reason is not None and len(reason) != 1:
        raise RemoteProtocolError(f"{what}: reason is not one octet")
    return (None if reason is None else reason[0], _read_user_information(fields.get(0xBE), what))


def acse_length(data: bytes) -> int:
    """How many bytes the ACSE APDU at the start of ``data`` takes (BER tag and length)."""
    if not data or data[0] not in (0x60, 0x61, 0x62, 0x63):
        raise RemoteProtocolError("ACSE APDU expected (0x60..0x63)")
    return _read_tlv(data, 0, "ACSE APDU")[2]


def decode_acse(data: bytes) -> AcseApdu:
    """Decode an AARQ, AARE, RLRQ or RLRE; trailing bytes are an error."""
    names = {0x60: "AARQ", 0x61: "AARE", 0x62: "RLRQ", 0x63: "RLRE"}
    if not data or data[0] not in names:
        first = f"0x{data[0]:02X}" if data else "nothing"
        raise RemoteProtocolError(f"ACSE APDU expected (0x60..0x63), got {first}")
    name = names[data[0]]
    tag, body, end = _read_tlv(data, 0, name)
    if end != len(data):
        raise RemoteProtocolError(f"{name}: {len(data) - end} bytes after the APDU")
    if tag == 0x60:
        return _decode_aarq(body)
    if tag == 0x61:
        return _decode_aare(body)
    reason, user = _decode_release(body, name)
    return ReleaseRequest(reason, user) if tag == 0x62 else ReleaseResponse(reason, user)
