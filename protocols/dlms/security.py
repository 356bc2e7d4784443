"""DLMS/COSEM security suite 0: AES-GCM-128 ciphering of xDLMS APDUs, and HLS-GMAC.

IEC 62056-5-3 §5.3.4 and the Green Book (DLMS UA 1000-2 Ed. 8) 9.2.7. Two wire shapes:

    service-specific glo-ciphering   tag | length | SC | IC | content
    general-glo-ciphering            0xDB | 0x08 | system title | length | SC | IC | content

``length`` is an A-XDR length and counts SC, IC and the content; ``SC`` is the security
control byte, ``IC`` the sender's invocation counter (4 bytes, big-endian). The nonce is the
sender's system title (8 bytes) followed by IC. The (ciphered) content depends on SC:

    SC 0x10 authentication only      APDU | T    T = GMAC(SC | AK | APDU), 12 bytes
    SC 0x20 encryption only          C           no tag at all (so nothing is verified)
    SC 0x30 both                     C | T       AAD = SC | AK

``SecurityContext`` is the per-association object the connection uses: ``protect`` before
sending, ``unprotect`` on receipt, which always verifies the tag, the sender's system title, the
invocation counter (strictly increasing) and the association's security policy. The module
functions ``encrypt_apdu``, ``encrypt_general_glo`` and ``decrypt_apdu`` are the same operations
without association state, for tools and tests.

Speed: ``cryptography``'s ``AESGCM`` keeps its key schedule between calls, so one ``AESGCM``
per key is built once and reused. ``AESGCM`` only checks 16-byte tags, and DLMS sends 12, so
decryption does not call ``AESGCM.decrypt``: GCM encryption is CTR mode, so encrypting the
ciphertext under the same nonce gives the plaintext back, and encrypting that plaintext with the
AAD recomputes the full tag, whose first 12 bytes are compared in constant time. Two ``AESGCM``
calls measured about 1.3 µs against 3.7 µs for a fresh ``Cipher(AES, GCM(iv, tag, 12))``
decryptor per message. No plaintext leaves this module before its tag has been verified.

Keys are 16 raw bytes. They appear in no repr, str or error message.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AUTHENTICATED",
    "AUTHENTICATED_ENCRYPTED",
    "ENCRYPTED",
    "GENERAL_GLO_CIPHERING",
    "GLO_TAG_FOR",
    "PLAIN_TAG_FOR",
    "AuthenticationFailed",
    "CipheredHeader",
    "DecryptedApdu",
    "SecurityContext",
    "SecurityControl",
    "decrypt_apdu",
    "encrypt_apdu",
    "encrypt_general_glo",
    "gmac",
    "is_ciphered",
    "make_challenge",
    "parse_ciphered",
    "verify_gmac",
]

KEY_LENGTH = 16  # suite 0 is AES-GCM-128: IEC 62056-5-3 §5.3.4
SYSTEM_TITLE_LENGTH = 8  # Green Book 9.2.7.2.4: nonce = system title (8 octets) | IC
TAG_LENGTH = 12  # Green Book 9.2.7.2.4: suite 0 truncates the GCM tag to 96 bits
MAX_INVOCATION_COUNTER = 0xFFFF_FFFF  # IC is a 4-byte unsigned integer

_AUTHENTICATION = 0x10  # Green Book 9.2.7.2.4.2, security control byte: bit 4
_ENCRYPTION = 0x20  # bit 5
_BROADCAST_KEY = 0x40  # bit 6: key set, 0 unicast, 1 broadcast
_COMPRESSION = 0x80  # bit 7
_SUITE_MASK = 0x0F  # bits 0-3: security suite id


class AuthenticationFailed(RemoteProtocolError):
    """A GCM tag or HLS-GMAC proof did not verify: wrong keys or system title, or altered bytes."""


@dataclass(frozen=True, slots=True)
class SecurityControl:
    """The security control byte SC of the security header (Green Book 9.2.7.2.4.2).

    Only suite 0 without compression exists here, so neither is a field: ``from_byte``
    refuses the others.
    """

    authenticated: bool
    encrypted: bool
    broadcast_key: bool = False

    def __post_init__(self) -> None:
        # Green Book 9.2.7.2.4.2: a ciphered APDU is authenticated, encrypted or both
        if not (self.authenticated or self.encrypted):
            raise LocalProtocolError(
                "security control needs authentication, encryption or both; "
                "an unprotected APDU is not ciphered at all"
            )

    @property
    def byte(self) -> int:
        """The wire value: suite 0 in bits 0-3, flags in bits 4-6."""
        return (
            (_AUTHENTICATION if self.authenticated else 0)
            | (_ENCRYPTION if self.encrypted else 0)
            | (_BROADCAST_KEY if self.broadcast_key else 0)
        )

    @classmethod
    def from_byte(cls, value: int) -> SecurityControl:
        """Decode a received SC; anything but suite 0 without compression is refused."""
        known = _SC_BY_BYTE.get(value)
        if known is not None:
            return known
        if value & _COMPRESSION:
            # Green Book 9.2.7.2.4.2 bit 7; compression (ITU-T V.44) is not implemented
            raise RemoteProtocolError(f"security control 0x{value:02X}: compression refused")
        if value & _SUITE_MASK:
            # IEC 62056-5-3 §5.3.4: suites 1 and 2 are ECC-based; only suite 0 is implemented
            raise RemoteProtocolError(
                f"security control 0x{value:02X}: security suite {value & _SUITE_MASK} "
                "not supported, only suite 0"
            )
        raise RemoteProtocolError(
            f"security control 0x{value:02X}: neither authentication nor encryption"
        )

    def satisfies(self, policy: SecurityControl) -> bool:
        """True when this protection is at least what ``policy`` requires."""
        return (self.authenticated or not policy.authenticated) and (
            self.encrypted or not policy.encrypted
        )


AUTHENTICATED = SecurityControl(authenticated=True, encrypted=False)
ENCRYPTED = SecurityControl(authenticated=False, encrypted=True)
AUTHENTICATED_ENCRYPTED = SecurityControl(authenticated=True, encrypted=True)

_SC_BY_BYTE: dict[int, SecurityControl] = {
    sc.byte: sc
    for sc in (
        SecurityControl(authenticated=a, encrypted=e, broadcast_key=b)
        for a in (False, True)
        for e in (False, True)
        for b in (False, True)
        if a or e
    )
}

# -- APDU tags ------------------------------------------------------------------------------------
# xDLMS-APDU ASN.1 (IEC 62056-5-3 clause 8): each service that may be ciphered with the global key
# has a glo-* tag of its own; the ciphered content holds the unciphered APDU with the plain tag.
_GLO_SERVICES = (
    # plain tag, glo tag, name
    (0x01, 0x21, "initiate-request"),  # [1] -> [33]
    (0x05, 0x25, "read-request"),  # [5] -> [37]
    (0x06, 0x26, "write-request"),  # [6] -> [38]
    (0x08, 0x28, "initiate-response"),  # [8] -> [40]
    (0x0C, 0x2C, "read-response"),  # [12] -> [44]
    (0x0D, 0x2D, "write-response"),  # [13] -> [45]
    (0x0E, 0x2E, "confirmed-service-error"),  # [14] -> [46]
    (0x16, 0x36, "unconfirmed-write-request"),  # [22] -> [54]
    (0x18, 0x38, "information-report-request"),  # [24] -> [56]
    (0xC0, 0xC8, "get-request"),  # [192] -> [200]
    (0xC1, 0xC9, "set-request"),  # [193] -> [201]
    (0xC2, 0xCA, "event-notification-request"),  # [194] -> [202]
    (0xC3, 0xCB, "action-request"),  # [195] -> [203]
    (0xC4, 0xCC, "get-response"),  # [196] -> [204]
    (0xC5, 0xCD, "set-response"),  # [197] -> [205]
    (0xC7, 0xCF, "action-response"),  # [199] -> [207]
)
GLO_TAG_FOR: dict[int, int] = {plain: glo for plain, glo, _ in _GLO_SERVICES}
PLAIN_TAG_FOR: dict[int, int] = {glo: plain for plain, glo, _ in _GLO_SERVICES}
GENERAL_GLO_CIPHERING = 0xDB  # general-glo-ciphering [219]: carries the sender's system title
_TAG_NAMES: dict[int, str] = {glo: f"glo-{name}" for _, glo, name in _GLO_SERVICES}
_TAG_NAMES[GENERAL_GLO_CIPHERING] = "general-glo-ciphering"
# Ciphered with keys this module does not hold (dedicated key, key agreement, signatures).
_DED_TAGS = (0x41, 0x45, 0x46, 0x48, 0x4C, 0x4D, 0x4E, 0x56, 0x58, *range(0xD0, 0xD6), 0xD7)
_UNSUPPORTED_CIPHERED: dict[int, str] = {
    **dict.fromkeys(_DED_TAGS, "ded-ciphering (dedicated key)"),
    0xDC: "general-ded-ciphering (dedicated key)",
    0xDD: "general-ciphering (key agreement)",
    0xDF: "general-signing",
}


def is_ciphered(tag: int) -> bool:
    """True when an APDU starting with ``tag`` is a ciphered xDLMS APDU of any kind."""
    return tag in _TAG_NAMES or tag in _UNSUPPORTED_CIPHERED


# -- keys and low-level GCM -----------------------------------------------------------------------
def _check_size(name: str, value: bytes, size: int) -> bytes:
    """``value`` as bytes of ``size``; the message names only types and lengths, never values."""
    if not isinstance(value, bytes | bytearray):
        raise LocalProtocolError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) != size:
        raise LocalProtocolError(f"{name} must be {size} bytes, got {len(value)}")
    return bytes(value)


def _check_key(name: str, key: bytes) -> bytes:
    return _check_size(name, key, KEY_LENGTH)  # IEC 62056-5-3 §5.3.4: 128-bit keys


def _check_system_title(name: str, system_title: bytes) -> bytes:
    return _check_size(name, system_title, SYSTEM_TITLE_LENGTH)


def _check_counter(invocation_counter: int) -> None:
    if not 0 <= invocation_counter <= MAX_INVOCATION_COUNTER:
        raise LocalProtocolError(
            f"invocation counter {invocation_counter} outside 0..{MAX_INVOCATION_COUNTER}"
        )


class _Suite0:
    """AES-GCM-128 with one key pair; keeps one AESGCM object so its key schedule is reused."""

    __slots__ = ("_ak", "_broadcast", "_gcm")

    def __init__(self, ek: bytes, ak: bytes, *, broadcast: bool) -> None:
        # broadcast: whether SC may ask for the broadcast key, which is then ``ek`` too; a
        # context refuses it (a server answers a client with the unicast key)
        self._gcm = AESGCM(_check_key("ek", ek))
        self._ak = _check_key("ak", ak)
        self._broadcast = broadcast

    def __repr__(self) -> str:
        return "<suite 0 keys>"

    def _key(self, sc: int) -> AESGCM:
        if sc & _BROADCAST_KEY and not self._broadcast:
            # Green Book 9.2.7.2.4.2 bit 6: broadcast goes from a client to many servers
            raise RemoteProtocolError(f"security control 0x{sc:02X}: broadcast key refused here")
        return self._gcm

    def seal(self, sc: int, iv: bytes, apdu: bytes) -> bytes:
        """The ciphered content after SC and IC (Green Book 9.2.7.2.4)."""
        gcm = self._key(sc)
        if sc & _ENCRYPTION:
            if sc & _AUTHENTICATION:
                return gcm.encrypt(iv, apdu, bytes((sc,)) + self._ak)[:-4]  # C | T[:12]
            return gcm.encrypt(iv, apdu, None)[:-16]  # C, the tag is not sent
        return apdu + gcm.encrypt(iv, b"", bytes((sc,)) + self._ak + apdu)[:TAG_LENGTH]

    def frame(self, tag: int, sc: int, system_title: bytes, ic: bytes, apdu: bytes) -> bytes:
        """The whole ciphered APDU: glo or general-glo header, SC, IC and sealed content."""
        content = self.seal(sc, system_title + ic, apdu)
        n = 5 + len(content)
        length = bytes((n,)) if n < 0x80 else _encode_length(n)
        if tag == GENERAL_GLO_CIPHERING:
            head = bytes((tag, SYSTEM_TITLE_LENGTH)) + system_title + length
        else:
            head = bytes((tag,)) + length
        return head + bytes((sc,)) + ic + content

    def open(self, sc: int, iv: bytes, content: bytes, where: str) -> bytes:
        """The plaintext APDU of ``content``, after verifying its tag when SC has one."""
        gcm = self._key(sc)
        if sc & _AUTHENTICATION:
            n = len(content) - TAG_LENGTH
            if n < 1:
                raise RemoteProtocolError(
                    f"{where}: ciphered content of {len(content)} bytes is too short for an APDU "
                    f"and a {TAG_LENGTH}-byte tag"
                )
            body, tag = content[:n], content[n:]
            if sc & _ENCRYPTION:
                # CTR mode: encrypting C under the same nonce yields P; encrypting P with the
                # AAD recomputes C | T, of which T[:12] is compared below.
                plain = gcm.encrypt(iv, body, None)[:n]
                expected = gcm.encrypt(iv, plain, bytes((sc,)) + self._ak)[n : n + TAG_LENGTH]
            else:
                plain = bytes(body)
                expected = gcm.encrypt(iv, b"", bytes((sc,)) + self._ak + plain)[:TAG_LENGTH]
            if not hmac.compare_digest(expected, tag):
                raise AuthenticationFailed(f"{where}: authentication tag mismatch")
            return plain
        if not content:
            raise RemoteProtocolError(f"{where}: empty ciphered content")
        return gcm.encrypt(iv, content, None)[: len(content)]

    def gmac(self, sc: int, iv: bytes, challenge: bytes) -> bytes:
        # Green Book 9.2.7.4 (Table 43): T = GMAC over SC | AK | challenge, empty plaintext
        return self._gcm.encrypt(iv, b"", bytes((sc,)) + self._ak + challenge)[:TAG_LENGTH]


# -- A-XDR length ---------------------------------------------------------------------------------
def _encode_length(n: int) -> bytes:
    # A-XDR length (IEC 61334-6 / BER short and long form): < 128 in one byte, else 0x8k + k bytes
    if n < 0x80:
        return bytes((n,))
    size = (n.bit_length() + 7) // 8
    return bytes((0x80 | size,)) + n.to_bytes(size, "big")


def _decode_length(data: bytes, offset: int, where: str) -> tuple[int, int]:
    """(length, offset after it); the long form takes at most 4 length bytes."""
    if offset >= len(data):
        raise RemoteProtocolError(f"{where}: truncated before the length at offset {offset}")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    size = first & 0x7F
    if not 1 <= size <= 4:
        raise RemoteProtocolError(
            f"{where}: length form 0x{first:02X} at offset {offset} not allowed (1 to 4 bytes)"
        )
    end = offset + 1 + size
    if end > len(data):
        raise RemoteProtocolError(f"{where}: truncated inside the length at offset {offset}")
    return int.from_bytes(data[offset + 1 : end], "big"), end


# -- framing of ciphered APDUs --------------------------------------------------------------------
class CipheredHeader(NamedTuple):
    """A ciphered APDU split into its fields, not yet verified (a cheap tuple: it is hot)."""

    tag: int
    system_title: bytes | None  # carried by general-glo-ciphering only
    security_control: SecurityControl
    sc: int
    invocation_counter: int
    content: bytes
    where: str


def parse_ciphered(data: bytes) -> CipheredHeader:
    """Split a ciphered APDU into its fields; every length is checked, nothing is decrypted."""
    if not data:
        raise RemoteProtocolError("ciphered APDU: empty input")
    tag = data[0]
    where = _TAG_NAMES.get(tag)
    if where is None:
        unsupported = _UNSUPPORTED_CIPHERED.get(tag)
        if unsupported is not None:
            raise RemoteProtocolError(f"APDU tag 0x{tag:02X}: {unsupported} not supported")
        raise RemoteProtocolError(f"APDU tag 0x{tag:02X} at offset 0 is not a glo-ciphered APDU")
    where = f"{where} (0x{tag:02X})"
    offset = 1
    system_title = None
    if tag == GENERAL_GLO_CIPHERING:
        # general-glo-ciphering ::= SEQUENCE { system-title OCTET STRING, ciphered-content ... }
        size, offset = _decode_length(data, offset, where)
        if size != SYSTEM_TITLE_LENGTH:
            # Green Book 9.2.7.2.4: 8 octets, the first half of the nonce
            raise RemoteProtocolError(
                f"{where}: system title of {size} bytes at offset 1, expected {SYSTEM_TITLE_LENGTH}"
            )
        end = offset + size
        if end > len(data):
            raise RemoteProtocolError(f"{where}: truncated inside the system title")
        system_title = bytes(data[offset:end])
        offset = end
    length, offset = _decode_length(data, offset, where)
    if offset + length != len(data):
        state = "truncated" if offset + length > len(data) else "trailing bytes"
        raise RemoteProtocolError(
            f"{where}: {state}: length field says {length} bytes from offset {offset}, "
            f"{len(data) - offset} present"
        )
    if length < 5:
        # Green Book 9.2.7.2.4.2: the security header SH = SC | IC is 5 bytes
        raise RemoteProtocolError(f"{where}: {length} bytes cannot hold the 5-byte security header")
    sc = data[offset]
    security_control = SecurityControl.from_byte(sc)  # refuses compression, other suites...
    invocation_counter = int.from_bytes(data[offset + 1 : offset + 5], "big")
    return CipheredHeader(
        tag, system_title, security_control, sc, invocation_counter, data[offset + 5 :], where
    )


def _check_inner_tag(parsed: CipheredHeader, plain: bytes) -> None:
    # The glo tag is outside the AAD, so it is bound to the authenticated plaintext here: a
    # glo-get-response must carry a get-response (xDLMS-APDU ASN.1, IEC 62056-5-3 clause 8).
    expected = PLAIN_TAG_FOR.get(parsed.tag)
    if expected is not None and plain[0] != expected:
        raise RemoteProtocolError(
            f"{parsed.where} carries APDU tag 0x{plain[0]:02X}, expected 0x{expected:02X}"
        )


def _plain_tag_of(apdu: bytes) -> int:
    if not isinstance(apdu, bytes | bytearray) or not apdu:
        raise LocalProtocolError("the APDU to cipher must be non-empty bytes")
    return apdu[0]


@dataclass(frozen=True, slots=True)
class DecryptedApdu:
    """A verified, deciphered APDU and the security header it came with."""

    plain_apdu: bytes
    security_control: SecurityControl
    invocation_counter: int
    system_title: bytes

    def __post_init__(self) -> None:
        if not self.plain_apdu:
            raise LocalProtocolError("a deciphered APDU is never empty")
        _check_counter(self.invocation_counter)  # IC is 4 bytes, Green Book 9.2.7.2.4.2
        _check_system_title("system_title", self.system_title)


def encrypt_apdu(
    plain_apdu: bytes,
    *,
    tag: int,
    security_control: SecurityControl,
    system_title: bytes,
    invocation_counter: int,
    ek: bytes,
    ak: bytes,
) -> bytes:
    """Cipher ``plain_apdu`` into the service-specific glo APDU ``tag`` (e.g. 0xC8).

    ``tag`` must be the glo tag of the APDU's own tag (``GLO_TAG_FOR``); ``system_title`` and
    ``invocation_counter`` are the sender's. With the broadcast key bit set, ``ek`` is the
    broadcast key.
    """
    if GLO_TAG_FOR.get(_plain_tag_of(plain_apdu)) != tag:
        raise LocalProtocolError(
            f"glo tag 0x{tag:02X} does not cipher an APDU with tag 0x{plain_apdu[0]:02X}"
        )
    system_title = _check_system_title("system_title", system_title)
    _check_counter(invocation_counter)
    return _Suite0(ek, ak, broadcast=True).frame(  # with the key set bit, ek is the broadcast key
        tag,
        security_control.byte,
        system_title,
        invocation_counter.to_bytes(4, "big"),
        bytes(plain_apdu),
    )


def encrypt_general_glo(
    plain_apdu: bytes,
    *,
    security_control: SecurityControl,
    system_title: bytes,
    invocation_counter: int,
    ek: bytes,
    ak: bytes,
) -> bytes:
    """Cipher any xDLMS APDU into general-glo-ciphering (0xDB), which names the sender."""
    _plain_tag_of(plain_apdu)
    system_title = _check_system_title("system_title", system_title)
    _check_counter(invocation_counter)
    return _Suite0(ek, ak, broadcast=True).frame(
        GENERAL_GLO_CIPHERING,
        security_control.byte,
        system_title,
        invocation_counter.to_bytes(4, "big"),
        bytes(plain_apdu),
    )


def decrypt_apdu(
    data: bytes,
    *,
    ek: bytes,
    ak: bytes,
    expected_system_title: bytes,
    policy: SecurityControl | None = None,
) -> DecryptedApdu:
    """Verify and decipher one glo-ciphered APDU (service-specific or general-glo).

    ``expected_system_title`` is the sender's: it builds the nonce of a service-specific APDU and
    must equal the one a general-glo-ciphering APDU carries. With the broadcast key bit set,
    ``ek`` is taken as the broadcast key. ``policy``, when given, is the least protection
    accepted; without it an attacker may turn SC 0x30 into 0x20 (SC is only authenticated when
    the message keeps a tag), so check ``security_control`` of the result. Raises
    ``RemoteProtocolError`` for anything malformed or unauthentic; no invocation counter history
    is kept (``SecurityContext`` keeps one).
    """
    expected_system_title = _check_system_title("expected_system_title", expected_system_title)
    suite = _Suite0(ek, ak, broadcast=True)
    parsed = parse_ciphered(data)
    if policy is not None:
        _check_policy(parsed, policy)
    plain = _open(suite, parsed, expected_system_title)
    return DecryptedApdu(
        plain_apdu=plain,
        security_control=parsed.security_control,
        invocation_counter=parsed.invocation_counter,
        system_title=expected_system_title,
    )


def _check_policy(parsed: CipheredHeader, policy: SecurityControl) -> None:
    if not parsed.security_control.satisfies(policy):
        # security_policy of the Security setup object (IC 64, attribute 2): no less than agreed
        raise RemoteProtocolError(
            f"{parsed.where}: security control 0x{parsed.sc:02X} below the required "
            f"0x{policy.byte:02X}"
        )


def _open(suite: _Suite0, parsed: CipheredHeader, system_title: bytes) -> bytes:
    if parsed.system_title is not None and parsed.system_title != system_title:
        # system titles are public identifiers, so both are named
        raise RemoteProtocolError(
            f"{parsed.where}: system title {parsed.system_title.hex().upper()} is not the "
            f"expected {system_title.hex().upper()}"
        )
    iv = system_title + parsed.invocation_counter.to_bytes(4, "big")
    plain = suite.open(parsed.sc, iv, parsed.content, parsed.where)
    _check_inner_tag(parsed, plain)
    return plain


# -- association state ----------------------------------------------------------------------------
class SecurityContext:
    """Suite 0 ciphering for one association, seen from the client.

    ``policy`` is the protection the association requires both ways; a message with less is
    refused, as is any unciphered APDU. Our invocation counter comes from outside (hesd persists
    it) with each ``protect`` or ``gmac`` call; the context refuses to reuse or lower it within
    the association, since a repeated GCM nonce under one key gives the hash key H away.
    ``server_system_title`` is learned from the AARE and must be set before ``unprotect``.
    ``last_server_invocation_counter`` may be seeded from a persisted value.
    """

    __slots__ = (
        "_server_system_title",
        "_suite",
        "last_invocation_counter",
        "last_server_invocation_counter",
        "policy",
        "system_title",
    )

    def __init__(
        self,
        *,
        system_title: bytes,
        ek: bytes,
        ak: bytes,
        policy: SecurityControl = AUTHENTICATED_ENCRYPTED,
        server_system_title: bytes | None = None,
        last_server_invocation_counter: int | None = None,
    ) -> None:
        if policy.broadcast_key:
            raise LocalProtocolError("the association policy uses the unicast key")
        if last_server_invocation_counter is not None:
            _check_counter(last_server_invocation_counter)
        self.system_title = _check_system_title("system_title", system_title)
        self.policy = policy
        self._suite = _Suite0(ek, ak, broadcast=False)
        self._server_system_title: bytes | None = None
        if server_system_title is not None:
            self.server_system_title = server_system_title
        self.last_invocation_counter: int | None = None
        self.last_server_invocation_counter = last_server_invocation_counter

    def __repr__(self) -> str:
        server = self._server_system_title
        return (
            f"SecurityContext(system_title={self.system_title.hex().upper()}, "
            f"server_system_title={server.hex().upper() if server else None}, "
            f"policy=0x{self.policy.byte:02X}, "
            f"last_invocation_counter={self.last_invocation_counter}, "
            f"last_server_invocation_counter={self.last_server_invocation_counter})"
        )

    @property
    def server_system_title(self) -> bytes | None:
        """The server's system title (the AARE's responding-AP-title)."""
        return self._server_system_title

    @server_system_title.setter
    def server_system_title(self, value: bytes) -> None:
        self._server_system_title = _check_system_title("server_system_title", value)

    def protect(self, apdu: bytes, invocation_counter: int, *, general: bool = False) -> bytes:
        """Cipher ``apdu`` with the policy's protection and our ``invocation_counter``.

        Service-specific glo ciphering by default; ``general=True`` for general-glo-ciphering,
        the only way to cipher APDUs without a glo tag (data-notification, access...).
        """
        first = _plain_tag_of(apdu)
        if general:
            tag = GENERAL_GLO_CIPHERING
        else:
            glo = GLO_TAG_FOR.get(first)
            if glo is None:
                raise LocalProtocolError(
                    f"APDU tag 0x{first:02X} has no service-specific glo tag; use general=True"
                )
            tag = glo
        ic = self._take_counter(invocation_counter)
        return self._suite.frame(tag, self.policy.byte, self.system_title, ic, bytes(apdu))

    def unprotect(self, data: bytes) -> bytes:
        """The plaintext APDU of a ciphered APDU from the server, verified.

        Refuses (``RemoteProtocolError``) an unciphered APDU, a protection below the policy, a
        wrong system title, a bad tag and an invocation counter not above the last accepted;
        the counter is recorded only once the whole message has been verified.
        """
        server = self._server()
        if data:
            self.require_ciphered(data[0])
        parsed = parse_ciphered(data)
        _check_policy(parsed, self.policy)
        last = self.last_server_invocation_counter
        if last is not None and parsed.invocation_counter <= last:
            raise RemoteProtocolError(
                f"{parsed.where}: invocation counter {parsed.invocation_counter} not above last "
                f"accepted {last}"
            )
        plain = _open(self._suite, parsed, server)
        self.last_server_invocation_counter = parsed.invocation_counter
        return plain

    def require_ciphered(self, apdu_tag: int) -> None:
        """Refuse an APDU tag that is not ciphered; for callers routing APDUs before unprotect."""
        if not is_ciphered(apdu_tag):
            raise RemoteProtocolError(
                f"unciphered APDU (tag 0x{apdu_tag:02X}) refused: the association requires "
                "ciphering"
            )

    def gmac(self, challenge: bytes, invocation_counter: int) -> bytes:
        """f(StoC) = SC | IC | T for HLS-GMAC pass 3, with our system title and counter.

        ``challenge`` is the server's StoC from the AARE, so a bad length is the server's fault.
        """
        if not isinstance(challenge, bytes | bytearray):
            raise LocalProtocolError(f"challenge must be bytes, not {type(challenge).__name__}")
        if not 8 <= len(challenge) <= 64:
            # Green Book 9.2.7.4: challenges are 8 to 64 octets
            raise RemoteProtocolError(
                f"server challenge StoC of {len(challenge)} bytes, the standard allows 8 to 64"
            )
        ic = self._take_counter(invocation_counter)
        tag = self._suite.gmac(_AUTHENTICATION, self.system_title + ic, bytes(challenge))
        return bytes((_AUTHENTICATION,)) + ic + tag

    def verify_gmac(self, challenge: bytes, response: bytes, *, nested: bool = False) -> int:
        """Check the server's f(CtoS) of HLS-GMAC pass 4; returns its IC.

        ``nested``: f(CtoS) arrived inside a ciphered ACTION-Response that ``unprotect`` has just
        verified. The server computed f(CtoS) before ciphering that response, so its counter is
        below the one just accepted; replay protection came from the enclosing APDU, and the
        counter recorded stays that APDU's. Otherwise (HLS-GMAC on a plain context) the counter
        must be above the last accepted, and is recorded.
        """
        server = self._server()
        _check_challenge(challenge)
        invocation_counter = _parse_gmac_response(response)
        last = self.last_server_invocation_counter
        if not nested and last is not None and invocation_counter <= last:
            raise RemoteProtocolError(
                f"HLS-GMAC: invocation counter {invocation_counter} not above last accepted {last}"
            )
        iv = server + bytes(response[1:5])
        _compare_gmac(self._suite.gmac(_AUTHENTICATION, iv, bytes(challenge)), bytes(response[5:]))
        if not nested:
            self.last_server_invocation_counter = invocation_counter
        return invocation_counter

    def _server(self) -> bytes:
        if self._server_system_title is None:
            raise LocalProtocolError("server system title unknown: set it from the AARE first")
        return self._server_system_title

    def _take_counter(self, invocation_counter: int) -> bytes:
        """Our IC as 4 bytes, once: a nonce used twice under one key breaks GCM."""
        _check_counter(invocation_counter)
        last = self.last_invocation_counter
        if last is not None and invocation_counter <= last:
            raise LocalProtocolError(
                f"invocation counter {invocation_counter} not above {last}, already used"
            )
        self.last_invocation_counter = invocation_counter
        return invocation_counter.to_bytes(4, "big")


# -- HLS-GMAC (authentication mechanism 5) --------------------------------------------------------
def _check_challenge(challenge: bytes) -> None:
    if not isinstance(challenge, bytes | bytearray) or not 8 <= len(challenge) <= 64:
        # Green Book 9.2.7.4: challenges are 8 to 64 octets
        raise LocalProtocolError("a HLS challenge is 8 to 64 bytes")


def make_challenge(length: int = 16) -> bytes:
    """A random HLS challenge CtoS (Green Book 9.2.7.4: 8 to 64 octets)."""
    if not 8 <= length <= 64:
        raise LocalProtocolError(f"challenge length {length} outside 8..64")
    return secrets.token_bytes(length)


def gmac(
    *,
    ek: bytes,
    ak: bytes,
    system_title: bytes,
    invocation_counter: int,
    challenge: bytes,
    sc: int = _AUTHENTICATION,
) -> bytes:
    """HLS-GMAC f(challenge) = SC | IC | T (Green Book 9.2.7.4, Table 43).

    T = GMAC(SC | AK | challenge) under EK with nonce ``system_title`` | IC, 12 bytes.
    ``system_title`` and ``invocation_counter`` are those of the party computing it.
    Keyword-only, so EK and AK cannot be swapped silently.
    """
    if sc != _AUTHENTICATION:
        # Green Book 9.2.7.4: SC is authentication only, suite 0
        raise LocalProtocolError(f"HLS-GMAC security control must be 0x10 for suite 0, not {sc}")
    system_title = _check_system_title("system_title", system_title)
    _check_counter(invocation_counter)
    _check_challenge(challenge)
    ic = invocation_counter.to_bytes(4, "big")
    tag = _Suite0(ek, ak, broadcast=False).gmac(sc, system_title + ic, bytes(challenge))
    return bytes((sc,)) + ic + tag


def _parse_gmac_response(response: bytes) -> int:
    if len(response) != 5 + TAG_LENGTH:
        raise RemoteProtocolError(
            f"HLS-GMAC response of {len(response)} bytes, expected SC | IC | T = {5 + TAG_LENGTH}"
        )
    if response[0] != _AUTHENTICATION:
        raise RemoteProtocolError(
            f"HLS-GMAC response security control 0x{response[0]:02X}, expected 0x10"
        )
    return int.from_bytes(response[1:5], "big")


def _compare_gmac(expected: bytes, received: bytes) -> None:
    if not hmac.compare_digest(expected, received):
        raise AuthenticationFailed("HLS-GMAC: authentication tag mismatch")


def verify_gmac(
    *, ek: bytes, ak: bytes, system_title: bytes, challenge: bytes, response: bytes
) -> int:
    """Check a peer's f(challenge) = SC | IC | T, in constant time; returns the peer's IC.

    ``system_title`` is the peer's (for pass 4, the server's); ``challenge`` is the one we sent.
    """
    system_title = _check_system_title("system_title", system_title)
    _check_challenge(challenge)
    suite = _Suite0(ek, ak, broadcast=False)
    invocation_counter = _parse_gmac_response(response)
    iv = system_title + bytes(response[1:5])
    _compare_gmac(suite.gmac(_AUTHENTICATION, iv, bytes(challenge)), bytes(response[5:]))
    return invocation_counter
