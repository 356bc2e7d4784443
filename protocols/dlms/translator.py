"""The frame translator behind ``hesctl decode HEX``: what a captured frame says, in words.

An operator pastes a hex capture from a meter log or a sniffer; :func:`parse_hex` turns the text
into bytes and :func:`translate` peels the layers it finds, outermost first:

* WRAPPER frames (``00 01 ...``, IEC 62056-47 §5), one or several concatenated;
* HDLC frames (``7E ... 7E``, IEC 62056-46), one or several: control field kind, N(S), N(R), P/F,
  addresses with their logical/physical parts, the segmentation bit, SNRM/UA parameters, the LLC
  header of I frames. The segments of an APDU are reassembled when all of them are in the input;
  otherwise each shows as "segment (incomplete APDU)";
* a bare APDU: ACSE (AARQ, AARE, RLRQ, RLRE), xDLMS services, glo/general-glo ciphered APDUs.

Nothing is decoded here: framing, ACSE, APDUs, A-XDR (``typed=True``, so values show their type)
and ciphering are the codec's (``wrapper``, ``hdlc``, ``acse``, ``apdu``, ``axdr``,
``security``). This module detects, peels and renders.

``translate`` never raises for what the bytes say: garbage gives the layers decoded so far and an
``error`` layer with the codec's message. Only misuse raises ``LocalProtocolError`` (e.g. a key
of the wrong length). Secrets are never rendered: EK/AK appear in no repr or output; an
authentication value (LLS password, HLS challenge), the dedicated key of an InitiateRequest and
the values of the attributes and methods that carry secrets (Association LN ``secret`` and
``change_HLS_secret``, Security setup ``global_key_transfer``) show as their length only.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from protocols.dlms import acse, apdu, axdr, cosem, hdlc, security
from protocols.dlms.axdr import Tag
from protocols.dlms.obis import ObisCode
from protocols.dlms.render import (
    children,
    date_time_hint,
    enum_name,
    hex_lines,
    jsonable,
    labelled,
    plain_text,
    value_lines,
)
from protocols.dlms.wrapper import WRAPPER_HEADER_LENGTH, WrapperFramer
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["Layer", "Translation", "TranslatorKeys", "parse_hex", "translate"]

Fields = dict[str, Any]


# -- public types -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TranslatorKeys:
    """Suite 0 keys to decrypt glo/general-glo APDUs; EK and AK appear in no repr."""

    ek: bytes = field(repr=False)
    ak: bytes = field(repr=False)
    client_system_title: bytes | None = None  # the nonce of what the client ciphers (requests)
    server_system_title: bytes | None = None  # the nonce of what the server ciphers (responses)

    def __post_init__(self) -> None:
        # IEC 62056-5-3 §5.3.4: AES-128 keys; Green Book 9.2.7.2.4: system titles are 8 octets
        sizes = {"ek": 16, "ak": 16, "client_system_title": 8, "server_system_title": 8}
        for name, size in sizes.items():
            value = getattr(self, name)
            if value is None and name.endswith("title"):
                continue
            if not isinstance(value, bytes | bytearray) or len(value) != size:
                is_bytes = isinstance(value, bytes | bytearray)
                got = f"{len(value)} bytes" if is_bytes else type(value).__name__
                raise LocalProtocolError(f"{name} must be {size} bytes, got {got}")
            object.__setattr__(self, name, bytes(value))


@dataclass(frozen=True, slots=True)
class Layer:
    """One decoded layer: ``name`` (``WRAPPER``, ``HDLC``, ``glo-get-response``,
    ``GET-Response-Normal``, ``error``...), JSON-able ``fields``, a one-line ``summary``, the
    ``details`` lines of the text form, and the nesting ``depth`` (0 is outermost)."""

    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""
    details: tuple[str, ...] = ()
    depth: int = 0


@dataclass(frozen=True, slots=True)
class Translation:
    """The layers of one input, outermost first."""

    layers: tuple[Layer, ...]

    @property
    def errors(self) -> tuple[str, ...]:
        """The messages of the ``error`` layers: empty when everything decoded."""
        return tuple(layer.summary for layer in self.layers if layer.name == "error")

    def to_text(self) -> str:
        lines: list[str] = []
        for layer in self.layers:
            indent = "  " * layer.depth
            lines.append(f"{indent}{layer.name}  {layer.summary}".rstrip())
            lines.extend(f"{indent}  {line}" for line in layer.details)
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": [
                {"name": x.name, "depth": x.depth, "summary": x.summary, "fields": dict(x.fields)}
                for x in self.layers
            ]
        }


# -- hex input ----------------------------------------------------------------------------------

_PREFIX: Final = re.compile(r"\b0[xX]")  # "0x" opening a token ("0x7E 0xA0", "0x7EA0")
_SEPARATORS: Final = str.maketrans("", "", " \t\r\n:")
_NOT_HEX: Final = re.compile(r"[^0-9A-Fa-f]")
_HEX_TOKENS: Final = re.compile(r"\b0[xX]|[0-9A-Fa-f]+|[ \t\r\n:]+|(.)", re.S)


def parse_hex(text: str) -> bytes:
    """Bytes from pasted hex; whitespace, colons and ``0x`` prefixes are skipped.

    ``ValueError`` names the first character that is none of those, and where it is.
    """
    digits = _PREFIX.sub("", text) if "x" in text or "X" in text else text
    digits = digits.translate(_SEPARATORS)
    if digits and len(digits) % 2 == 0 and not _NOT_HEX.search(digits):
        return bytes.fromhex(digits)
    for match in _HEX_TOKENS.finditer(text):
        if (bad := match.group(1)) is not None:
            i = match.start()
            line, column = text.count("\n", 0, i) + 1, i - text.rfind("\n", 0, i)
            raise ValueError(
                f"not hex: {bad!r} at position {i} (line {line}, column {column}); "
                "expected hex digits, whitespace, ':' or '0x'"
            )
    if not digits:
        raise ValueError("no hex digits in the input")
    raise ValueError(f"odd number of hex digits ({len(digits)}): a byte is two digits")


# -- xDLMS APDUs --------------------------------------------------------------------------------

# (class id, "attribute" or "method", index) whose value is a secret (Blue Book 4.4.3, 4.4.7)
_SECRETS: Final = {(15, "attribute", 7), (15, "method", 2), (64, "method", 2)}


def _decode_typed(data: bytes) -> tuple[apdu.Apdu, int]:
    """``apdu.decode_apdu`` with typed data; also returns where the APDU ends."""
    return apdu.decode_apdu_prefix(data, typed=True)


def _invoke(invoke: apdu.InvokeIdAndPriority) -> str:
    kind = "confirmed" if invoke.confirmed else "unconfirmed"
    priority = "high" if invoke.high_priority else "normal"
    return f"invoke-id {invoke.invoke_id} ({kind}, {priority} priority)"


def _descriptor(d: apdu.AttributeDescriptor, kind: str = "attribute") -> str:
    """``class 3 (Register) 1.0.1.8.0.255 attribute 2 (value)``, with the names cosem knows."""
    cls = cosem.INTERFACE_CLASSES.get(d.class_id)
    members = () if cls is None else cls.methods if kind == "method" else cls.attributes
    member = next((m.name for m in members if m.index == d.attribute), None)
    text = f"class {d.class_id}" + (f" ({cls.name})" if cls else "")
    return text + f" {d.instance} {kind} {d.attribute}" + (f" ({member})" if member else "")


def _capture_object(value: Any) -> str | None:
    """Blue Book 4.3.6 capture_object_definition {class_id, logical_name, attribute, data index}."""
    kids = children(value)
    shape = (Tag.LONG_UNSIGNED, Tag.OCTET_STRING, Tag.INTEGER, Tag.LONG_UNSIGNED)
    if tuple(k.tag for k in kids) != shape or len(kids[1].value) != 6:
        return None
    class_id, name, attribute, index = (k.value for k in kids)
    text = _descriptor(apdu.AttributeDescriptor(class_id, ObisCode.from_bytes(name), attribute))
    return text + (f", data index {index}" if index else "")


def _access(access: apdu.AccessSelection | None) -> list[str]:
    """Selective access (Blue Book 4.3.6) by range (selector 1) or by entry (2), in words."""
    if access is None:
        return []
    kids = children(access.parameters)
    if access.selector == 1 and len(kids) == 4 and (restricting := _capture_object(kids[0])):
        columns = [_capture_object(c) or value_lines(c)[0] for c in children(kids[3], Tag.ARRAY)]
        return [
            "access: by range (selector 1)",
            f"  restricting object: {restricting}",
            f"  from: {value_lines(kids[1])[0]}",
            f"  to: {value_lines(kids[2])[0]}",
            *(f"  column: {column}" for column in columns),
            *(() if columns else ("  columns: all",)),
        ]
    numbers = [k.value for k in kids if type(k.value) is int]
    if access.selector == 2 and len(numbers) == 4 == len(kids):
        first, last, first_column, last_column = numbers
        return [
            f"access: by entry (selector 2): entries {first}..{last or 'last'}, "
            f"columns {first_column}..{last_column or 'last'}"
        ]
    return [f"access: selector {access.selector}", *labelled("  parameters", access.parameters)]


def _result(label: str, result: Any) -> list[str]:
    if isinstance(result, apdu.DataAccessResult | apdu.ActionResult):
        kind = (
            "data-access-result" if isinstance(result, apdu.DataAccessResult) else "action-result"
        )
        return [f"{label}: {kind} {enum_name(result)} ({int(result)})"]
    return labelled(label, result)


def _raw_data(raw: bytes | apdu.DataAccessResult, fields: Fields) -> list[str]:
    """The raw-data of a block: decoded when it is one whole value, else shown as hex."""
    if isinstance(raw, apdu.DataAccessResult):
        return _result("result", raw)
    lines = [f"raw-data: {len(raw)} bytes"]
    try:
        value = axdr.decode_all(raw, typed=True)
    except axdr.Truncated:
        return [
            *lines,
            "  (the start of a value continued in the next blocks)",
            *hex_lines(raw, "  "),
        ]
    except RemoteProtocolError:
        return [*lines, "  (not one whole value: a later block of one)", *hex_lines(raw, "  ")]
    fields["value"] = jsonable(value)
    return lines + ["  " + line for line in labelled("value", value)]


def _render_apdu(pdu: apdu.Apdu) -> tuple[str, Fields, list[str]]:
    """Summary, JSON fields and detail lines of a plaintext xDLMS APDU."""
    fields: Fields = jsonable(pdu)
    lines: list[str] = []
    summary = _invoke(pdu.invoke) if hasattr(pdu, "invoke") else ""
    secret = False
    if isinstance(pdu, apdu.ActionRequest):
        lines.append(f"method: {_descriptor(pdu.method, 'method')}")
        secret = (pdu.method.class_id, "method", pdu.method.attribute) in _SECRETS
    elif isinstance(descriptor := getattr(pdu, "attribute", None), apdu.AttributeDescriptor):
        lines.append(f"attribute: {_descriptor(descriptor)}")
        secret = (descriptor.class_id, "attribute", descriptor.attribute) in _SECRETS
    lines += _access(getattr(pdu, "access", None))
    if isinstance(pdu, apdu.GetRequestNext | apdu.SetResponseDatablock):
        lines.append(f"block-number: {pdu.block_number}")
    elif isinstance(pdu, apdu.GetRequestWithList):
        for i, (descriptor, access) in enumerate(pdu.attributes, 1):
            lines += [f"attribute {i}: {_descriptor(descriptor)}", *_indent(_access(access))]
    elif isinstance(pdu, apdu.GetResponseNormal):
        lines += _result("result", pdu.result)
    elif isinstance(pdu, apdu.GetResponseWithList):
        for i, result in enumerate(pdu.results, 1):
            lines += _result(f"result {i}", result)
    elif isinstance(pdu, apdu.SetRequestNormal):
        lines += labelled("value", pdu.value, secret=secret)
    elif isinstance(pdu, apdu.SetResponseNormal | apdu.SetResponseLastDatablock):
        lines += _result("result", pdu.result)
        if isinstance(pdu, apdu.SetResponseLastDatablock):
            lines.append(f"block-number: {pdu.block_number}")
    elif isinstance(pdu, apdu.ActionRequest):
        parameters = labelled("parameters", pdu.parameters, secret=secret)
        lines += parameters if pdu.has_parameters else ["parameters: none"]
    elif isinstance(pdu, apdu.ActionResponse):
        lines += _result("result", pdu.result)
        if pdu.has_return_parameters:
            lines += _result("return parameters", pdu.return_parameters)
    elif isinstance(pdu, apdu.ExceptionResponse | apdu.ConfirmedServiceError):
        summary = pdu.describe()
    elif isinstance(pdu, apdu.DataNotification):
        n = pdu.long_invoke_id  # Green Book 9.3.9, Long-Invoke-Id-And-Priority: id in bits 0-23
        kind = "confirmed" if n & 1 << 30 else "unconfirmed"
        summary = (
            f"long-invoke-id {n & 0xFFFFFF} ({kind}, {'high' if n >> 31 else 'normal'} priority)"
        )
        stamp = None if pdu.date_time is None else date_time_hint(pdu.date_time)
        lines.append(f"date-time: {stamp or plain_text(pdu.date_time or 'absent')}")
        lines += labelled("body", pdu.body)
    elif isinstance(pdu, apdu.EventNotification):
        if pdu.time is not None:
            lines.append(f"time: {date_time_hint(pdu.time) or plain_text(pdu.time)}")
        lines += labelled("value", pdu.value)
    blocks = apdu.GetResponseWithDatablock, apdu.SetRequestWithFirstDatablock
    if isinstance(pdu, (*blocks, apdu.SetRequestWithDatablock)):
        lines.append(f"block {pdu.block_number}" + (", last block" if pdu.last_block else ""))
        if secret:
            lines += labelled("raw-data", pdu.raw_data, secret=True)
        else:
            lines += _raw_data(pdu.raw_data, fields)
    if secret:  # the value, parameters or raw-data of a secret stays out of the JSON too
        fields.update(
            {k: {"secret": True} for k in ("value", "parameters", "raw_data") if k in fields}
        )
    return summary, fields, lines


def _indent(lines: list[str]) -> list[str]:
    return ["  " + line for line in lines]


_APDU_NAMES: Final = {
    apdu.GetRequestNormal: "GET-Request-Normal",
    apdu.GetRequestNext: "GET-Request-Next",
    apdu.GetRequestWithList: "GET-Request-With-List",
    apdu.GetResponseNormal: "GET-Response-Normal",
    apdu.GetResponseWithDatablock: "GET-Response-With-Datablock",
    apdu.GetResponseWithList: "GET-Response-With-List",
    apdu.SetRequestNormal: "SET-Request-Normal",
    apdu.SetRequestWithFirstDatablock: "SET-Request-With-First-Datablock",
    apdu.SetRequestWithDatablock: "SET-Request-With-Datablock",
    apdu.SetResponseNormal: "SET-Response-Normal",
    apdu.SetResponseDatablock: "SET-Response-Datablock",
    apdu.SetResponseLastDatablock: "SET-Response-Last-Datablock",
    apdu.ActionRequest: "ACTION-Request-Normal",
    apdu.ActionResponse: "ACTION-Response-Normal",
    apdu.ExceptionResponse: "Exception-Response",
    apdu.ConfirmedServiceError: "Confirmed-Service-Error",
    apdu.DataNotification: "Data-Notification",
    apdu.EventNotification: "Event-Notification-Request",
}


# -- peeling APDUs ------------------------------------------------------------------------------

# Service-specific glo APDUs a client sends, ciphered with the client's system title; the other
# glo tags are the server's (IEC 62056-5-3 clause 8, xDLMS-APDU).
_CLIENT_GLO_TAGS: Final = frozenset({0x21, 0x25, 0x26, 0x36, 0xC8, 0xC9, 0xCB})
_INITIATE_REQUEST, _INITIATE_RESPONSE = 0x01, 0x08  # xDLMS-APDU [1] and [8]
_ACSE_NAMES: Final = {0x60: "AARQ", 0x61: "AARE", 0x62: "RLRQ", 0x63: "RLRE"}
_MAX_DEPTH = 8  # ciphered in ciphered in ACSE...: deeper than any real capture


def _system_title(title: bytes) -> str:
    """A system title, with the FLAG manufacturer id of its first 3 octets when they are one."""
    maker = title[:3].decode("ascii", "replace")
    known = len(title) == 8 and maker.isalpha() and maker.isupper()
    return title.hex().upper() + (f" (manufacturer {maker})" if known else "")


class _Peeler:
    """Collects the layers of one input; each step turns the codec's RemoteProtocolError into an
    ``error`` layer and stops peeling that branch."""

    def __init__(self, keys: TranslatorKeys | None) -> None:
        self.keys = keys
        self.layers: list[Layer] = []

    def add(self, depth: int, name: str, summary: str, fields: Fields, lines: list[str]) -> None:
        self.layers.append(Layer(name, fields, summary, tuple(lines), depth))

    def error(self, depth: int, message: str) -> None:
        self.add(depth, "error", message, {"message": message}, [])

    def apdu(self, data: bytes, depth: int, title: bytes | None = None) -> None:
        """Any APDU; ``title`` is the sender's system title where the context names it."""
        if not data or depth > _MAX_DEPTH:
            self.error(depth, "empty APDU" if not data else "APDUs nested too deep")
        elif data[0] in _ACSE_NAMES:
            self.acse(data, depth)
        elif security.is_ciphered(data[0]):
            self.ciphered(data, depth, title)
        elif data[0] in (_INITIATE_REQUEST, _INITIATE_RESPONSE):
            self.initiate(data, depth)
        elif apdu.is_xdlms_tag(data[0]):
            try:
                pdu, end = _decode_typed(data)
            except RemoteProtocolError as exc:
                self.error(depth, str(exc))
                return
            self.add(depth, _APDU_NAMES[type(pdu)], *_render_apdu(pdu))
            self.trailing(data, end, depth)
        else:
            self.error(depth, f"APDU tag 0x{data[0]:02X} is not an ACSE or xDLMS APDU tag")

    def initiate(self, data: bytes, depth: int) -> None:
        try:
            if data[0] == _INITIATE_REQUEST:
                pdu: acse.InitiateRequest | acse.InitiateResponse
                pdu = acse.decode_initiate_request(data)
            else:
                pdu = acse.decode_initiate_response(data)
        except RemoteProtocolError as exc:
            self.error(depth, str(exc))
            return
        fields: Fields = jsonable(pdu)
        lines: list[str] = []
        if isinstance(pdu, acse.InitiateRequest):
            name, size = "xDLMS InitiateRequest", f"max receive PDU size {pdu.max_receive_pdu_size}"
            key = pdu.dedicated_key
            fields["dedicated_key_length"] = None if key is None else len(key)
            if key is not None:
                lines.append(f"dedicated key: {len(key)} bytes (not shown)")
        else:
            name, size = "xDLMS InitiateResponse", f"max PDU size {pdu.max_pdu_size}"
            lines.append(f"vaa-name: 0x{pdu.vaa_name:04X}")
        conformance = int(pdu.conformance)
        flags = [enum_name(flag) for flag in acse.Conformance if flag & conformance]
        unknown = conformance & ~sum(acse.Conformance)
        flags += [f"bit {23 - bit}" for bit in range(24) if unknown >> bit & 1]
        lines += [f"conformance: 0x{conformance:06X}", *(f"  {flag}" for flag in flags)]
        fields["conformance_flags"] = flags
        self.add(depth, name, f"DLMS version {pdu.dlms_version}, {size}", fields, lines)

    def acse(self, data: bytes, depth: int) -> None:
        try:
            end = acse.acse_length(data)
            pdu = acse.decode_acse(data[:end])
        except RemoteProtocolError as exc:
            self.error(depth, str(exc))
            return
        fields: Fields = jsonable(pdu)
        user = pdu.user_information
        fields["user_information"] = None if user is None else f"{len(user)} bytes"
        lines: list[str] = []
        title: bytes | None = None
        if isinstance(pdu, acse.ReleaseRequest | acse.ReleaseResponse):
            reason = pdu.reason  # ISO/IEC 8650: Release-request/response-reason
            names = {0: "normal", 1: "urgent" if data[0] == 0x62 else "not-finished"}
            names[30] = "user-defined"
            summary = "reason " + ("absent" if reason is None else names.get(reason, str(reason)))
        else:
            # Green Book 9.4.2.2.2 and .3: context and mechanism names are 2.16.756.5.8.{1,2}.n
            ciphered = pdu.ciphered_context
            context = "logical name" + (", with ciphering" if ciphered else "")
            lines.append(f"application context: {context} (2.16.756.5.8.1.{3 if ciphered else 1})")
            if isinstance(pdu, acse.Aarq):
                title, what = pdu.calling_ap_title, "calling"
                summary = f"mechanism {enum_name(pdu.mechanism)}"
            else:
                title, what = pdu.responding_ap_title, "responding"
                diagnostic = pdu.describe_diagnostic()
                summary = f"{enum_name(pdu.result)}, {diagnostic}"
                lines += [f"result: {enum_name(pdu.result)} ({int(pdu.result)})"]
                lines += [f"diagnostic: {diagnostic}"]
            if title is not None:
                lines.append(f"{what} AP title: {_system_title(title)}")
            mechanism = pdu.mechanism
            lines.append(f"mechanism: {enum_name(mechanism)} (2.16.756.5.8.2.{int(mechanism)})")
            secret = pdu.authentication_value  # an LLS password: its length only, always
            fields["authentication_value_length"] = None if secret is None else len(secret)
            if secret is not None:
                lines.append(f"authentication value: {len(secret)} bytes (not shown)")
        self.add(depth, _ACSE_NAMES[data[0]], summary, fields, lines)
        if user is not None:
            self.apdu(user, depth + 1, title)
        self.trailing(data, end, depth)

    def trailing(self, data: bytes, end: int, depth: int) -> None:
        if end != len(data):
            self.error(depth, f"{len(data) - end} bytes after the end of the APDU, at {end}")

    def ciphered(self, data: bytes, depth: int, title: bytes | None) -> None:
        try:
            parsed = security.parse_ciphered(data)
        except RemoteProtocolError as exc:
            self.error(depth, str(exc))
            return
        sc, ic, own_title = parsed.security_control, parsed.invocation_counter, parsed.system_title
        flags = [name for name, on in jsonable(sc).items() if on]
        summary = f"SC 0x{parsed.sc:02X} ({', '.join(flags).replace('_', ' ')}), IC {ic}"
        fields: Fields = {"security_control": parsed.sc, **jsonable(sc), "invocation_counter": ic}
        fields.update(system_title=jsonable(own_title), ciphered_length=len(parsed.content))
        lines = [] if own_title is None else [f"system title: {_system_title(own_title)}"]
        sender = "client" if parsed.tag in _CLIENT_GLO_TAGS else "server"
        keys, plain, failure = self.keys, None, None
        nonce = own_title or title
        if keys is None:
            status = f"ciphered, {len(parsed.content)} bytes (give keys to decrypt)"
        elif (nonce := nonce or getattr(keys, f"{sender}_system_title")) is None:
            status = f"system title needed to decrypt (the {sender}'s)"
        else:
            try:
                plain = security.decrypt_apdu(
                    data, ek=keys.ek, ak=keys.ak, expected_system_title=nonce
                )
            except security.AuthenticationFailed:
                failure = "authentication failed (wrong keys or system title, or altered bytes)"
            except RemoteProtocolError as exc:
                failure = str(exc)
            status = f"decrypted with system title {nonce.hex().upper()}"
            if plain is None:
                status = "not decrypted"
            elif not sc.authenticated:
                status += " (encryption only: nothing to verify, wrong keys give garbage)"
        fields["status"] = status
        self.add(depth, parsed.where.rsplit(" (", 1)[0], summary, fields, [*lines, status])
        if failure is not None:
            self.error(depth + 1, failure)
        elif plain is not None:
            self.apdu(plain.plain_apdu, depth + 1, nonce)


# -- framing ------------------------------------------------------------------------------------

_WRAPPER_HEADER: Final = struct.Struct(">HHHH")  # IEC 62056-47 §5.2


def _wrapper(peeler: _Peeler, data: bytes) -> None:
    """WRAPPER frames one after the other."""
    pos = 0
    while pos < len(data):
        rest = data[pos:]
        if len(rest) < WRAPPER_HEADER_LENGTH:
            peeler.error(0, f"WRAPPER header truncated at offset {pos}: {len(rest)} of 8 bytes")
            return
        version, source, destination, length = _WRAPPER_HEADER.unpack_from(rest)
        framer = WrapperFramer(local_wport=destination, remote_wport=source)
        framer.receive_data(rest[: WRAPPER_HEADER_LENGTH + length])
        try:
            frame = framer.next_frame()
        except RemoteProtocolError as exc:
            peeler.error(0, f"at offset {pos}: {exc}")
            return
        summary = f"version {version}, source wPort {source}, destination wPort {destination}"
        fields = {"version": version, "source_wport": source, "destination_wport": destination}
        peeler.add(0, "WRAPPER", f"{summary}, length {length}", {**fields, "length": length}, [])
        if frame is None:
            present = len(rest) - WRAPPER_HEADER_LENGTH
            peeler.error(1, f"WRAPPER length field says {length} bytes, only {present} follow")
            return
        peeler.apdu(frame.apdu, 1)
        pos += WRAPPER_HEADER_LENGTH + length


def _address(address: hdlc.HdlcAddress) -> str:
    raw = address.raw.hex(" ").upper()
    if address.physical is None:
        return f"{address.logical} [{raw}]"
    return f"logical {address.logical}, physical {address.physical} [{raw}]"


def _hdlc_items(data: bytes) -> list[hdlc.HdlcFrame | str]:
    """The frames in ``data``, and between them why bytes were dropped."""
    framer = hdlc.HdlcFramer(max_buffer=max(len(data), hdlc.MAX_FRAME_LENGTH + 2))
    framer.receive_data(data)
    items: list[hdlc.HdlcFrame | str] = []
    while True:
        dropped = framer.discarded_bytes
        try:
            frame = framer.next_frame()
        except RemoteProtocolError as exc:
            items.append(str(exc))
            continue
        if framer.discarded_bytes > dropped:
            items.append(f"HDLC: {framer.discarded_bytes - dropped} bytes between frames skipped")
        if frame is None:
            break
        items.append(frame)
    if framer.pending:
        items.append(f"HDLC: incomplete frame, {framer.reset()} bytes at the end of the input")
    elif not items:
        items.append("HDLC: no frame, only flags")
    return items


def _hdlc(peeler: _Peeler, data: bytes) -> None:
    """HDLC frames one after the other; the segments of an APDU are joined where all are here."""
    items = _hdlc_items(data)
    # IEC 62056-46 §6.4.4.2: an I frame with the S bit is continued by the next I frames between
    # the same two stations, up to one without it. Group the runs before rendering.
    runs: dict[tuple[bytes, bytes], list[int]] = {}
    complete: dict[int, list[int]] = {}  # index of the last segment -> indexes of its run
    for index, item in enumerate(items):
        if isinstance(item, hdlc.HdlcFrame) and item.kind is hdlc.FrameType.I:
            run = runs.setdefault((item.destination.raw, item.source.raw), [])
            run.append(index)
            if not item.segmented:
                if len(run) > 1:
                    complete[index] = list(run)
                run.clear()
    in_run = {i: run for run in complete.values() for i in run}
    frames = [i for i, item in enumerate(items) if isinstance(item, hdlc.HdlcFrame)]
    number = {index: n for n, index in enumerate(frames, 1)}
    for index, item in enumerate(items):
        if isinstance(item, str):
            peeler.error(0, item)
            continue
        run = in_run.get(index, [])
        _frame(peeler, item, number[index], f"{run.index(index) + 1} of {len(run)}" if run else "")
        if index in complete:
            joined = b"".join(items[i].info for i in run)  # type: ignore[union-attr]
            numbers = [number[i] for i in run]
            summary = f"from HDLC frames {', '.join(map(str, numbers))}, {len(joined)} bytes"
            peeler.add(0, "reassembled APDU", summary, {"frames": numbers}, [])
            _llc_and_apdu(peeler, joined, 1)


_LLC_HEADERS: Final = (hdlc.LLC_COMMAND, hdlc.LLC_RESPONSE)


def _frame(peeler: _Peeler, frame: hdlc.HdlcFrame, number: int, segment: str) -> None:
    kind = frame.kind
    fields: Fields = {"frame": number, "type": kind.name, "control": frame.control}
    summary = f"{kind.name} frame"
    if kind is hdlc.FrameType.I:
        summary += f", N(S) {frame.send_sequence}"
        fields["send_sequence"] = frame.send_sequence
    if kind in (hdlc.FrameType.I, hdlc.FrameType.RR, hdlc.FrameType.RNR):
        summary += f", N(R) {frame.receive_sequence}"
        fields["receive_sequence"] = frame.receive_sequence
    summary += f", P/F {int(frame.poll_final)}" + (", segmented" if frame.segmented else "")
    fields.update(poll_final=frame.poll_final, segmented=frame.segmented, length=frame.length)
    fields.update(destination=jsonable(frame.destination), source=jsonable(frame.source))
    lines = [
        f"frame {number}, length {frame.length}, control 0x{frame.control:02X}",
        f"destination: {_address(frame.destination)}",
        f"source: {_address(frame.source)}",
        "segmentation: " + ("more segments follow" if frame.segmented else "no"),
    ]
    error = None
    if kind in (hdlc.FrameType.SNRM, hdlc.FrameType.UA) and not frame.info:
        lines.append("parameters: none (the defaults: information field 128 bytes, window 1)")
    elif kind in (hdlc.FrameType.SNRM, hdlc.FrameType.UA):
        try:
            p = hdlc.HdlcParameters.decode(frame.info)
        except RemoteProtocolError as exc:
            error = str(exc)
        else:
            fields["parameters"] = jsonable(p)
            lines += [
                f"parameters ({'proposed' if kind is hdlc.FrameType.SNRM else 'negotiated'}):",
                f"  information field length: transmit {p.max_info_transmit}, "
                f"receive {p.max_info_receive}",
                f"  window size: transmit {p.window_transmit}, receive {p.window_receive}",
            ]
    elif kind is hdlc.FrameType.FRMR and len(frame.info) == 3:
        control, counters, flags = frame.info  # ISO/IEC 13239 §5.5.3.4.2
        lines.append(
            f"rejected control 0x{control:02X}, V(S) {counters >> 1 & 7}, V(R) {counters >> 5}, "
            f"Z/Y/X/W bits {flags & 0x0F:04b}"
        )
    elif frame.info and kind is not hdlc.FrameType.I and kind is not hdlc.FrameType.UI:
        lines.append(f"information: {frame.info.hex().upper()}")
    peeler.add(0, "HDLC", summary, fields, lines)
    if error is not None:
        peeler.error(1, error)
    elif not frame.info or kind not in (hdlc.FrameType.I, hdlc.FrameType.UI):
        pass
    elif segment:
        text = f"{segment}, {len(frame.info)} bytes (reassembled below)"
        peeler.add(1, "segment", text, {"segment": segment, "length": len(frame.info)}, [])
    elif frame.segmented or (kind is hdlc.FrameType.I and frame.info[:3] not in _LLC_HEADERS):
        # the S bit and no last segment, or no LLC header: the APDU started before the input
        info = frame.info
        peeler.add(1, "segment", "(incomplete APDU)", {"length": len(info)}, hex_lines(info))
    else:
        _llc_and_apdu(peeler, frame.info, 1)


def _llc_and_apdu(peeler: _Peeler, info: bytes, depth: int) -> None:
    response = info[:3] == hdlc.LLC_RESPONSE
    try:
        payload = hdlc.strip_llc(info, response=response)
    except RemoteProtocolError as exc:
        peeler.error(depth, str(exc))
        return
    direction = "response, server to client" if response else "command, client to server"
    summary = f"{info[:3].hex(' ').upper()} ({direction})"
    peeler.add(depth, "LLC", summary, {"response": response}, [])
    peeler.apdu(payload, depth + 1)


# -- entry point --------------------------------------------------------------------------------


def translate(data: bytes, *, keys: TranslatorKeys | None = None) -> Translation:
    """What ``data`` says, layer by layer (see the module docstring); never raises for it."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"translate takes bytes, not {type(data).__name__}")
    if keys is not None and not isinstance(keys, TranslatorKeys):
        raise LocalProtocolError(f"keys must be TranslatorKeys, not {type(keys).__name__}")
    data = bytes(data)
    peeler = _Peeler(keys)
    if not data:
        peeler.error(0, "empty input")
    elif data[0] == hdlc.FLAG:
        _hdlc(peeler, data)
    elif data[:2] == b"\x00\x01":
        _wrapper(peeler, data)
    elif (
        data[0] in _ACSE_NAMES
        or apdu.is_xdlms_tag(data[0])
        or security.is_ciphered(data[0])
        or data[0] in (_INITIATE_REQUEST, _INITIATE_RESPONSE)
    ):
        peeler.apdu(data, 0)
    else:
        peeler.error(
            0,
            f"not a WRAPPER/HDLC frame or APDU: first byte 0x{data[0]:02X} is neither a WRAPPER "
            "version (00 01), an HDLC flag (7E) nor an ACSE or xDLMS APDU tag",
        )
    return Translation(tuple(peeler.layers))
