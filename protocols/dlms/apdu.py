"""xDLMS APDUs with logical-name referencing (IEC 62056-5-3 §6; DLMS UA Green Book 9.3).

Every APDU is a frozen dataclass that validates itself and has ``encode()``; ``decode_apdu``
turns bytes into the right one (both directions are here: the client encodes requests and decodes
responses, the simulator does the opposite). COSEM data inside APDUs is A-XDR (``axdr``).

Covered: GET-Request normal/next/with-list and GET-Response normal/with-datablock/with-list;
SET-Request normal/with-first-datablock/with-datablock and SET-Response normal/datablock/
last-datablock; ACTION-Request normal and ACTION-Response normal; Exception-Response;
Confirmed-Service-Error; Data-Notification; Event-Notification-Request; selective access by
range and by entry. Short-name referencing is out of scope.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, TypeAlias, TypeVar

from protocols.dlms import axdr
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.obis import ObisCode
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "AccessSelection",
    "ActionRequest",
    "ActionResponse",
    "ActionResult",
    "Apdu",
    "AttributeDescriptor",
    "ConfirmedServiceError",
    "DataAccessResult",
    "DataNotification",
    "EventNotification",
    "ExceptionResponse",
    "GetRequestNext",
    "GetRequestNormal",
    "GetRequestWithList",
    "GetResponseNormal",
    "GetResponseWithDatablock",
    "GetResponseWithList",
    "InvokeIdAndPriority",
    "MethodDescriptor",
    "SetRequestNormal",
    "SetRequestWithDatablock",
    "SetRequestWithFirstDatablock",
    "SetResponseDatablock",
    "SetResponseLastDatablock",
    "SetResponseNormal",
    "by_entry",
    "by_range",
    "decode_apdu",
    "decode_apdu_prefix",
    "decode_result_list",
    "is_xdlms_tag",
]


class ApduTag(enum.IntEnum):
    """First octet of an xDLMS APDU (Green Book 9.3, table of APDU tags)."""

    CONFIRMED_SERVICE_ERROR = 0x0E
    DATA_NOTIFICATION = 0x0F
    GET_REQUEST = 0xC0
    SET_REQUEST = 0xC1
    EVENT_NOTIFICATION_REQUEST = 0xC2
    ACTION_REQUEST = 0xC3
    GET_RESPONSE = 0xC4
    SET_RESPONSE = 0xC5
    ACTION_RESPONSE = 0xC7
    EXCEPTION_RESPONSE = 0xD8


class DataAccessResult(enum.IntEnum):
    """IEC 62056-5-3 §6.4, Data-Access-Result."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


class ActionResult(enum.IntEnum):
    """IEC 62056-5-3 §6.4, Action-Result."""

    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_ACTION_ABORTED = 15
    NO_LONG_ACTION_IN_PROGRESS = 16
    OTHER_REASON = 250


# -- common parts -----------------------------------------------------------------------------

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_DESCRIPTOR: Final = struct.Struct(">H6sb")  # class-id, instance-id, attribute/method-id (Integer8)


@dataclass(frozen=True, slots=True)
class InvokeIdAndPriority:
    """Green Book 9.3.3: bits 0-3 invoke-id, bit 6 service-class (1 confirmed), bit 7 priority."""

    invoke_id: int
    confirmed: bool = True
    high_priority: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.invoke_id <= 15:
            raise LocalProtocolError(f"invoke-id {self.invoke_id} outside 0..15")

    def encode(self) -> int:
        return (
            self.invoke_id | (0x40 if self.confirmed else 0) | (0x80 if self.high_priority else 0)
        )

    @classmethod
    def decode(cls, octet: int) -> InvokeIdAndPriority:
        return _IIP_CACHE[octet]


_IIP_CACHE: Final = {
    octet: InvokeIdAndPriority(octet & 0x0F, bool(octet & 0x40), bool(octet & 0x80))
    for octet in range(256)
}


@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    """Cosem-Attribute-Descriptor: class-id, instance-id (OBIS), attribute-id."""

    class_id: int
    instance: ObisCode
    attribute: int

    def __post_init__(self) -> None:
        if not 0 <= self.class_id <= 0xFFFF:
            raise LocalProtocolError(f"class-id {self.class_id} outside 0..65535")
        if not -128 <= self.attribute <= 127:  # Integer8; negative ids are vendor specific
            raise LocalProtocolError(f"attribute-id {self.attribute} outside -128..127")

    def encode_into(self, out: bytearray) -> None:
        out += _DESCRIPTOR.pack(self.class_id, self.instance.to_bytes(), self.attribute)


MethodDescriptor = AttributeDescriptor  # Cosem-Method-Descriptor has the same shape (method-id)


@dataclass(frozen=True, slots=True)
class AccessSelection:
    """Selective access: access-selector and its parameters (Blue Book 4.3.6, profile generic)."""

    selector: int
    parameters: Value

    def __post_init__(self) -> None:
        if not 0 <= self.selector <= 255:
            raise LocalProtocolError(f"access-selector {self.selector} outside 0..255")


def _capture_object(class_id: int, obis: ObisCode, attribute: int, data_index: int) -> Value:
    # Blue Book 4.3.6: capture_object_definition ::= structure { class_id long-unsigned,
    # logical_name octet-string, attribute_index integer, data_index long-unsigned }
    return (
        Typed(Tag.LONG_UNSIGNED, class_id),
        obis.to_bytes(),
        Typed(Tag.INTEGER, attribute),
        Typed(Tag.LONG_UNSIGNED, data_index),
    )


def by_range(
    restricting: tuple[int, ObisCode, int],
    from_value: Value,
    to_value: Value,
    selected: tuple[tuple[int, ObisCode, int], ...] = (),
) -> AccessSelection:
    """Range descriptor (selector 1): rows whose restricting object lies in [from, to].

    ``restricting`` is (class_id, OBIS, attribute), usually the clock (8, 0.0.1.0.0.255, 2), and
    ``from_value``/``to_value`` are then DateTime values. ``selected`` restricts the columns
    (empty: all columns).
    """
    return AccessSelection(
        1,
        (
            _capture_object(*restricting, 0),
            from_value,
            to_value,
            [_capture_object(*col, 0) for col in selected],
        ),
    )


def by_entry(
    from_entry: int, to_entry: int = 0, from_column: int = 1, to_column: int = 0
) -> AccessSelection:
    """Entry descriptor (selector 2): rows ``from_entry..to_entry`` (0 = last), columns likewise."""
    return AccessSelection(
        2,
        (
            Typed(Tag.DOUBLE_LONG_UNSIGNED, from_entry),
            Typed(Tag.DOUBLE_LONG_UNSIGNED, to_entry),
            Typed(Tag.LONG_UNSIGNED, from_column),
            Typed(Tag.LONG_UNSIGNED, to_column),
        ),
    )


# -- the APDUs --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke: InvokeIdAndPriority
    attribute: AttributeDescriptor
    access: AccessSelection | None = None

    def encode(self) -> bytes:
        out = bytearray((ApduTag.GET_REQUEST, 1, self.invoke.encode()))
        self.attribute.encode_into(out)
        _encode_access(out, self.access)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    invoke: InvokeIdAndPriority
    block_number: int

    def encode(self) -> bytes:
        return bytes((ApduTag.GET_REQUEST, 2, self.invoke.encode())) + _U32.pack(self.block_number)


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke: InvokeIdAndPriority
    attributes: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]

    def __post_init__(self) -> None:
        if not self.attributes:
            raise LocalProtocolError("GET-Request-With-List needs at least one attribute")

    def encode(self) -> bytes:
        out = bytearray((ApduTag.GET_REQUEST, 3, self.invoke.encode()))
        out += axdr.encode_length(len(self.attributes))
        for descriptor, access in self.attributes:
            descriptor.encode_into(out)
            _encode_access(out, access)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    invoke: InvokeIdAndPriority
    result: Value | DataAccessResult

    def encode(self) -> bytes:
        out = bytearray((ApduTag.GET_RESPONSE, 1, self.invoke.encode()))
        _encode_get_data_result(out, self.result)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetResponseWithDatablock:
    """One block of a long GET: raw A-XDR bytes, to be concatenated before decoding."""

    invoke: InvokeIdAndPriority
    last_block: bool
    block_number: int
    raw_data: bytes | DataAccessResult

    def __post_init__(self) -> None:
        if not 0 <= self.block_number <= 0xFFFFFFFF:
            raise LocalProtocolError(f"block number {self.block_number} outside Unsigned32")

    def encode(self) -> bytes:
        out = bytearray((ApduTag.GET_RESPONSE, 2, self.invoke.encode(), int(self.last_block)))
        out += _U32.pack(self.block_number)
        if isinstance(self.raw_data, DataAccessResult):
            out += bytes((1, self.raw_data))
        else:
            out.append(0)
            out += axdr.encode_length(len(self.raw_data))
            out += self.raw_data
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke: InvokeIdAndPriority
    results: tuple[Value | DataAccessResult, ...]

    def encode(self) -> bytes:
        out = bytearray((ApduTag.GET_RESPONSE, 3, self.invoke.encode()))
        out += axdr.encode_length(len(self.results))
        for result in self.results:
            _encode_get_data_result(out, result)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke: InvokeIdAndPriority
    attribute: AttributeDescriptor
    value: Value
    access: AccessSelection | None = None

    def encode(self) -> bytes:
        out = bytearray((ApduTag.SET_REQUEST, 1, self.invoke.encode()))
        self.attribute.encode_into(out)
        _encode_access(out, self.access)
        axdr.encode_into(out, self.value)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDatablock:
    invoke: InvokeIdAndPriority
    attribute: AttributeDescriptor
    last_block: bool
    block_number: int
    raw_data: bytes
    access: AccessSelection | None = None

    def encode(self) -> bytes:
        out = bytearray((ApduTag.SET_REQUEST, 2, self.invoke.encode()))
        self.attribute.encode_into(out)
        _encode_access(out, self.access)
        _encode_datablock_sa(out, self.last_block, self.block_number, self.raw_data)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SetRequestWithDatablock:
    invoke: InvokeIdAndPriority
    last_block: bool
    block_number: int
    raw_data: bytes

    def encode(self) -> bytes:
        out = bytearray((ApduTag.SET_REQUEST, 3, self.invoke.encode()))
        _encode_datablock_sa(out, self.last_block, self.block_number, self.raw_data)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke: InvokeIdAndPriority
    result: DataAccessResult

    def encode(self) -> bytes:
        return bytes((ApduTag.SET_RESPONSE, 1, self.invoke.encode(), self.result))


@dataclass(frozen=True, slots=True)
class SetResponseDatablock:
    invoke: InvokeIdAndPriority
    block_number: int

    def encode(self) -> bytes:
        return bytes((ApduTag.SET_RESPONSE, 2, self.invoke.encode())) + _U32.pack(self.block_number)


@dataclass(frozen=True, slots=True)
class SetResponseLastDatablock:
    invoke: InvokeIdAndPriority
    result: DataAccessResult
    block_number: int

    def encode(self) -> bytes:
        return bytes((ApduTag.SET_RESPONSE, 3, self.invoke.encode(), self.result)) + _U32.pack(
            self.block_number
        )


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """ACTION-Request-Normal: invoke a method, with optional parameters."""

    invoke: InvokeIdAndPriority
    method: MethodDescriptor
    parameters: Value | None = None
    has_parameters: bool = False  # distinguishes "no parameters" from a null-data parameter

    def encode(self) -> bytes:
        out = bytearray((ApduTag.ACTION_REQUEST, 1, self.invoke.encode()))
        self.method.encode_into(out)
        if self.has_parameters:
            out.append(1)
            axdr.encode_into(out, self.parameters)
        else:
            out.append(0)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ActionResponse:
    """ACTION-Response-Normal: result, and optionally return parameters (a Get-Data-Result)."""

    invoke: InvokeIdAndPriority
    result: ActionResult
    return_parameters: Value | DataAccessResult | None = None
    has_return_parameters: bool = False

    def encode(self) -> bytes:
        out = bytearray((ApduTag.ACTION_RESPONSE, 1, self.invoke.encode(), self.result))
        if self.has_return_parameters:
            out.append(1)
            _encode_get_data_result(out, self.return_parameters)
        else:
            out.append(0)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    """Exception-Response (Green Book 9.3.5): state-error and service-error."""

    state_error: int  # 1 service-not-allowed, 2 service-unknown
    service_error: int  # 1 operation-not-possible, 2 service-not-supported, 3 other-reason,
    # 4 pdu-too-long, 5 deciphering-error, 6 invocation-counter-error
    invocation_counter: int | None = None  # with service-error 6: the counter the server expects

    def encode(self) -> bytes:
        out = bytes((ApduTag.EXCEPTION_RESPONSE, self.state_error, self.service_error))
        if self.invocation_counter is not None:
            out += _U32.pack(self.invocation_counter)
        return out

    def describe(self) -> str:
        states = {1: "service-not-allowed", 2: "service-unknown"}
        services = {
            1: "operation-not-possible",
            2: "service-not-supported",
            3: "other-reason",
            4: "pdu-too-long",
            5: "deciphering-error",
            6: "invocation-counter-error",
        }
        text = (
            f"{states.get(self.state_error, self.state_error)}/"
            f"{services.get(self.service_error, self.service_error)}"
        )
        if self.invocation_counter is not None:
            text += f" (server expects invocation counter {self.invocation_counter})"
        return text


@dataclass(frozen=True, slots=True)
class ConfirmedServiceError:
    """Confirmed-Service-Error (IEC 62056-5-3 §6.5): which service failed, and why."""

    service: int  # 1 initiateError, 2 getStatus, ... 5 read, 6 write (see the standard's CHOICE)
    error_class: int  # ServiceError CHOICE: 0 application-reference, ... 6 initiate, 10 other
    error: int  # the enumerated value within that class

    def encode(self) -> bytes:
        return bytes((ApduTag.CONFIRMED_SERVICE_ERROR, self.service, self.error_class, self.error))

    def describe(self) -> str:
        classes = {
            0: "application-reference",
            1: "hardware-resource",
            2: "vde-state-error",
            3: "service",
            4: "definition",
            5: "access",
            6: "initiate",
            7: "load-data-set",
            9: "task",
            10: "other-error",
        }
        initiate = {
            0: "other",
            1: "dlms-version-too-low",
            2: "incompatible-conformance",
            3: "pdu-size-too-short",
            4: "refused-by-the-VDE-Handler",
        }
        reason = (
            initiate.get(self.error, str(self.error)) if self.error_class == 6 else str(self.error)
        )
        return f"service {self.service}: {classes.get(self.error_class, self.error_class)}/{reason}"


@dataclass(frozen=True, slots=True)
class DataNotification:
    """Data-Notification (Green Book 9.3.9): pushed data, optionally time-stamped."""

    long_invoke_id: int  # Long-Invoke-Id-And-Priority, Unsigned32
    date_time: bytes | None  # the 12-octet COSEM date-time, or None when absent
    body: Value

    def __post_init__(self) -> None:
        if not 0 <= self.long_invoke_id <= 0xFFFFFFFF:
            raise LocalProtocolError(f"long-invoke-id {self.long_invoke_id} outside Unsigned32")
        if self.date_time is not None and len(self.date_time) != 12:
            raise LocalProtocolError("a Data-Notification date-time has 12 octets")

    def encode(self) -> bytes:
        out = bytearray((ApduTag.DATA_NOTIFICATION,))
        out += _U32.pack(self.long_invoke_id)
        if self.date_time is None:
            out.append(0)
        else:
            out.append(12)
            out += self.date_time
        axdr.encode_into(out, self.body)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class EventNotification:
    """Event-Notification-Request (Green Book 9.3.8): an attribute value the server reports."""

    attribute: AttributeDescriptor
    value: Value
    time: bytes | None = None  # OCTET STRING OPTIONAL, usually a 12-octet date-time

    def encode(self) -> bytes:
        out = bytearray((ApduTag.EVENT_NOTIFICATION_REQUEST,))
        if self.time is None:
            out.append(0)
        else:
            out.append(1)
            out += axdr.encode_length(len(self.time))
            out += self.time
        self.attribute.encode_into(out)
        axdr.encode_into(out, self.value)
        return bytes(out)


Apdu: TypeAlias = (
    GetRequestNormal
    | GetRequestNext
    | GetRequestWithList
    | GetResponseNormal
    | GetResponseWithDatablock
    | GetResponseWithList
    | SetRequestNormal
    | SetRequestWithFirstDatablock
    | SetRequestWithDatablock
    | SetResponseNormal
    | SetResponseDatablock
    | SetResponseLastDatablock
    | ActionRequest
    | ActionResponse
    | ExceptionResponse
    | ConfirmedServiceError
    | DataNotification
    | EventNotification
)


# -- encoding helpers -------------------------------------------------------------------------


def _encode_access(out: bytearray, access: AccessSelection | None) -> None:
    if access is None:
        out.append(0)
    else:
        out += bytes((1, access.selector))
        axdr.encode_into(out, access.parameters)


def _encode_get_data_result(out: bytearray, result: Value | DataAccessResult) -> None:
    if isinstance(result, DataAccessResult):
        out += bytes((1, result))
    else:
        out.append(0)
        axdr.encode_into(out, result)


def _encode_datablock_sa(out: bytearray, last: bool, number: int, raw: bytes) -> None:
    out.append(int(last))
    out += _U32.pack(number)
    out += axdr.encode_length(len(raw))
    out += raw


# -- decoding ---------------------------------------------------------------------------------


_E = TypeVar("_E", bound=enum.IntEnum)


class _Reader:
    """A cursor over one APDU; every read checks the bytes are there."""

    __slots__ = ("data", "name", "pos", "typed")

    def __init__(self, data: bytes, name: str, *, typed: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.name = name
        self.typed = typed

    def fail(self, what: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"{self.name}: {what} at offset {self.pos}")

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated {what} (needs {n} bytes, {len(self.data) - self.pos} left)")

    def u8(self, what: str) -> int:
        self.need(1, what)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.data, self.pos)
        self.pos += 4
        return int(value)

    def boolean(self, what: str) -> bool:
        value = self.u8(what)
        if value > 1:
            raise self.fail(f"{what} is {value}, not a boolean")
        return bool(value)

    def octets(self, what: str) -> bytes:
        length, pos = _decode_length(self, what)
        self.pos = pos
        self.need(length, what)
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return bytes(value)

    def data_value(self, what: str) -> Value:
        try:
            value, self.pos = axdr.decode(self.data, self.pos, typed=self.typed)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(f"{self.name}: {what}: {exc}") from None
        return value

    def descriptor(self) -> AttributeDescriptor:
        self.need(9, "attribute descriptor")
        class_id, instance, attribute = _DESCRIPTOR.unpack_from(self.data, self.pos)
        self.pos += 9
        return AttributeDescriptor(class_id, ObisCode.from_bytes(instance), attribute)

    def access(self) -> AccessSelection | None:
        if not self.boolean("access-selection flag"):
            return None
        selector = self.u8("access-selector")
        return AccessSelection(selector, self.data_value("access parameters"))

    def count(self, what: str) -> int:
        count, pos = _decode_length(self, what)
        self.pos = pos
        if count > len(self.data) - self.pos:  # every element takes at least one byte
            raise self.fail(f"{what} claims {count} elements")
        return count

    def enum(self, cls: type[_E], what: str) -> _E:
        value = self.u8(what)
        try:
            return cls(value)
        except ValueError:
            raise self.fail(f"{what} {value} is not a known value") from None

    def get_data_result(self) -> Value | DataAccessResult:
        choice = self.u8("Get-Data-Result choice")
        if choice == 0:
            return self.data_value("data")
        if choice == 1:
            return self.enum(DataAccessResult, "data-access-result")
        raise self.fail(f"Get-Data-Result choice {choice} is neither data (0) nor result (1)")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} bytes after the end of the APDU")


def _decode_length(reader: _Reader, what: str) -> tuple[int, int]:
    try:
        return axdr.decode_length(reader.data, reader.pos)
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{reader.name}: length of {what}: {exc}") from None


def _get_request(r: _Reader) -> Apdu:
    choice = r.u8("GET-Request choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice == 1:
        return GetRequestNormal(invoke, r.descriptor(), r.access())
    if choice == 2:
        return GetRequestNext(invoke, r.u32("block-number"))
    if choice == 3:
        items = tuple((r.descriptor(), r.access()) for _ in range(r.count("attribute list")))
        if not items:
            raise r.fail("GET-Request-With-List with no attributes")
        return GetRequestWithList(invoke, items)
    raise r.fail(f"GET-Request choice {choice} is not normal (1), next (2) or with-list (3)")


def _get_response(r: _Reader) -> Apdu:
    choice = r.u8("GET-Response choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice == 1:
        return GetResponseNormal(invoke, r.get_data_result())
    if choice == 2:
        last = r.boolean("last-block")
        number = r.u32("block-number")
        result = r.u8("DataBlock-G result choice")
        if result == 0:
            return GetResponseWithDatablock(invoke, last, number, r.octets("raw-data"))
        if result == 1:
            return GetResponseWithDatablock(
                invoke, last, number, r.enum(DataAccessResult, "data-access-result")
            )
        raise r.fail(f"DataBlock-G result choice {result} is neither raw-data nor result")
    if choice == 3:
        return GetResponseWithList(
            invoke, tuple(r.get_data_result() for _ in range(r.count("result list")))
        )
    raise r.fail(f"GET-Response choice {choice} is not normal (1), datablock (2) or list (3)")


def _set_request(r: _Reader) -> Apdu:
    choice = r.u8("SET-Request choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice == 1:
        descriptor, access = r.descriptor(), r.access()
        return SetRequestNormal(invoke, descriptor, r.data_value("value"), access)
    if choice == 2:
        descriptor, access = r.descriptor(), r.access()
        last, number = r.boolean("last-block"), r.u32("block-number")
        return SetRequestWithFirstDatablock(
            invoke, descriptor, last, number, r.octets("raw-data"), access
        )
    if choice == 3:
        last, number = r.boolean("last-block"), r.u32("block-number")
        return SetRequestWithDatablock(invoke, last, number, r.octets("raw-data"))
    raise r.fail(f"SET-Request choice {choice} is not supported (normal 1, datablocks 2 and 3)")


def _set_response(r: _Reader) -> Apdu:
    choice = r.u8("SET-Response choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice == 1:
        return SetResponseNormal(invoke, r.enum(DataAccessResult, "data-access-result"))
    if choice == 2:
        return SetResponseDatablock(invoke, r.u32("block-number"))
    if choice == 3:
        result = r.enum(DataAccessResult, "data-access-result")
        return SetResponseLastDatablock(invoke, result, r.u32("block-number"))
    raise r.fail(f"SET-Response choice {choice} is not supported (normal 1, datablocks 2 and 3)")


def _action_request(r: _Reader) -> Apdu:
    choice = r.u8("ACTION-Request choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice != 1:
        raise r.fail(f"ACTION-Request choice {choice} is not supported (normal 1)")
    method = r.descriptor()
    if r.boolean("parameters flag"):
        return ActionRequest(invoke, method, r.data_value("method parameters"), True)
    return ActionRequest(invoke, method)


def _action_response(r: _Reader) -> Apdu:
    choice = r.u8("ACTION-Response choice")
    invoke = InvokeIdAndPriority.decode(r.u8("invoke-id-and-priority"))
    if choice != 1:
        raise r.fail(f"ACTION-Response choice {choice} is not supported (normal 1)")
    result = r.enum(ActionResult, "action-result")
    if r.boolean("return-parameters flag"):
        return ActionResponse(invoke, result, r.get_data_result(), True)
    return ActionResponse(invoke, result)


def _exception_response(r: _Reader) -> Apdu:
    state, service = r.u8("state-error"), r.u8("service-error")
    counter = r.u32("expected invocation counter") if service == 6 else None
    return ExceptionResponse(state, service, counter)


def _confirmed_service_error(r: _Reader) -> Apdu:
    return ConfirmedServiceError(
        r.u8("service"), r.u8("service-error class"), r.u8("service-error value")
    )


def _data_notification(r: _Reader) -> Apdu:
    long_invoke = r.u32("long-invoke-id-and-priority")
    stamp = r.octets("date-time")
    if len(stamp) not in (0, 12):
        raise r.fail(f"date-time of {len(stamp)} octets (0 or 12 expected)")
    return DataNotification(long_invoke, stamp or None, r.data_value("notification-body"))


def _event_notification(r: _Reader) -> Apdu:
    time = r.octets("time") if r.boolean("time flag") else None
    descriptor = r.descriptor()
    return EventNotification(descriptor, r.data_value("attribute-value"), time)


_DECODERS: Final[dict[int, tuple[str, Callable[[_Reader], Apdu]]]] = {
    ApduTag.GET_REQUEST: ("GET-Request", _get_request),
    ApduTag.GET_RESPONSE: ("GET-Response", _get_response),
    ApduTag.SET_REQUEST: ("SET-Request", _set_request),
    ApduTag.SET_RESPONSE: ("SET-Response", _set_response),
    ApduTag.ACTION_REQUEST: ("ACTION-Request", _action_request),
    ApduTag.ACTION_RESPONSE: ("ACTION-Response", _action_response),
    ApduTag.EXCEPTION_RESPONSE: ("Exception-Response", _exception_response),
    ApduTag.CONFIRMED_SERVICE_ERROR: ("Confirmed-Service-Error", _confirmed_service_error),
    ApduTag.DATA_NOTIFICATION: ("Data-Notification", _data_notification),
    ApduTag.EVENT_NOTIFICATION_REQUEST: ("Event-Notification-Request", _event_notification),
}


def decode_result_list(data: bytes) -> tuple[Value | DataAccessResult, ...]:
    """The SEQUENCE OF Get-Data-Result that a GET-Response-With-List sends in datablocks."""
    reader = _Reader(data, "GET-Response-With-List (reassembled)")
    results = tuple(reader.get_data_result() for _ in range(reader.count("result list")))
    reader.end()
    return results


def is_xdlms_tag(tag: int) -> bool:
    """Whether ``tag`` starts a plaintext xDLMS APDU this module decodes."""
    return tag in _DECODERS


def decode_apdu_prefix(data: bytes, *, typed: bool = False) -> tuple[Apdu, int]:
    """Decode the plaintext xDLMS APDU at the start of ``data``; returns it and where it ends.

    ``typed=True`` keeps the A-XDR types of the data (``axdr.Typed``), for display.
    """
    if not data:
        raise RemoteProtocolError("empty APDU")
    entry = _DECODERS.get(data[0])
    if entry is None:
        raise RemoteProtocolError(f"APDU tag 0x{data[0]:02X} is not an xDLMS service hesd knows")
    name, decoder = entry
    reader = _Reader(data, name, typed=typed)
    reader.pos = 1
    return decoder(reader), reader.pos


def decode_apdu(data: bytes, *, typed: bool = False) -> Apdu:
    """Decode one plaintext xDLMS APDU; anything malformed is a ``RemoteProtocolError``."""
    apdu, end = decode_apdu_prefix(data, typed=typed)
    if end != len(data):
        raise RemoteProtocolError(
            f"{_DECODERS[data[0]][0]}: {len(data) - end} bytes after the end of the APDU"
            f" at offset {end}"
        )
    return apdu
