"""Attributes and methods of a simulated meter's objects, one small function per class.

``GETTERS``, ``SETTERS`` and ``ACTIONS`` map an object ``Kind`` to what GET, SET and ACTION do
on it; ``SimulatedMeter`` (``hesd.sim.model``) has already resolved the object and checked the
association's rights. These functions are the meter's own code: they read and change its state
directly. Values written by a client arrive decoded (plain ints, bytes, tuples/lists) or typed
(``Typed``); a value of the wrong type is TYPE_UNMATCHED, a well-typed value the meter cannot
take is OTHER_REASON.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from hesd.sim import modem, truth
from hesd.sim.events import category_events
from hesd.sim.image import BLOCK_SIZE, MAX_IMAGE_SIZE, ImageTransfer, TransferStatus
from hesd.sim.objects import DISCONNECT_SCRIPT, Kind, ObjectDef
from hesd.sim.timebase import DEVIATION, IST, date_time_octets, instant_of
from protocols.dlms.apdu import ActionResult, DataAccessResult
from protocols.dlms.axdr import BitString, Tag, Typed, Value
from protocols.dlms.calendar import Date, DateTime, Time
from protocols.dlms.cosem import ScalerUnit
from protocols.errors import RemoteProtocolError

if TYPE_CHECKING:
    from hesd.sim.model import SimulatedMeter

__all__ = ["ACTIONS", "GETTERS", "SETTERS", "ControlState"]

Getter = Callable[["SimulatedMeter", ObjectDef, int, str, float], "Value | DataAccessResult"]
Setter = Callable[["SimulatedMeter", int, Value, float], DataAccessResult]
Action = Callable[
    ["SimulatedMeter", int, "Value | None", float], tuple[ActionResult, "Value | None"]
]

_UNAVAILABLE: Final = DataAccessResult.OBJECT_UNAVAILABLE
NOT_SPECIFIED: Final = DateTime(*([None] * 10)).to_octets()
_RANGES: Final = {
    Tag.INTEGER: (-128, 127),
    Tag.LONG: (-(1 << 15), (1 << 15) - 1),
    Tag.DOUBLE_LONG: (-(1 << 31), (1 << 31) - 1),
    Tag.LONG64: (-(1 << 63), (1 << 63) - 1),
    Tag.UNSIGNED: (0, 255),
    Tag.ENUM: (0, 255),
    Tag.LONG_UNSIGNED: (0, 0xFFFF),
    Tag.DOUBLE_LONG_UNSIGNED: (0, 0xFFFF_FFFF),
    Tag.LONG64_UNSIGNED: (0, (1 << 64) - 1),
}
# Green Book 9.4.2.2.2-3: application context and mechanism names, BER-encoded object identifiers
_CONTEXT_NAME: Final = bytes.fromhex("60857405080101")  # logical names, no ciphering
_CONTEXT_NAME_CIPHERED: Final = bytes.fromhex("60857405080103")
_MECHANISMS: Final = {"none": 0, "lls": 1, "hls-gmac": 5}
# Green Book 9.4.6.1 conformance (bits 11, 12, 14, 16, 19..23): block transfer with get and with
# set, multiple references, data-notification, get, set, selective access, event-notification,
# action
_CONFORMANCE: Final = BitString.from_bits("000000000001101010011111")


class ControlState(enum.IntEnum):
    """Disconnect control control_state (Blue Book 4.5.8)."""

    DISCONNECTED = 0
    CONNECTED = 1
    READY_FOR_RECONNECTION = 2


def _integer(value: Value | None, tag: Tag) -> int | None:
    """``value`` as an integer of type ``tag``; None if it is not one."""
    inner: object = value
    if isinstance(value, Typed):
        if value.tag != tag:
            return None
        inner = value.value
    if type(inner) is not int:
        return None
    low, high = _RANGES[tag]
    return inner if low <= inner <= high else None


def _octets(value: Value | None) -> bytes | None:
    inner: object = value
    if isinstance(value, Typed):
        inner = value.value if value.tag == Tag.OCTET_STRING else None
    if isinstance(inner, DateTime):
        return inner.to_octets()
    return inner if isinstance(inner, bytes) else None


def _elements(value: Value | None, count: int) -> list[Value] | None:
    inner: object = value
    if isinstance(value, Typed):
        inner = value.value if value.tag == Tag.STRUCTURE else None
    if isinstance(inner, list | tuple) and len(inner) == count:
        return list(inner)
    return None


def _array(value: Value | None) -> list[Value] | None:
    """An array's elements: a ``list``, or typed (its elements in a tuple); an untyped tuple is
    a structure (protocols/dlms/axdr.py), not an array."""
    if isinstance(value, Typed):
        inner = value.value if value.tag == Tag.ARRAY else None
        return list(inner) if isinstance(inner, list | tuple) else None
    return value if isinstance(value, list) else None


def _no_parameter(parameters: Value | None) -> bool:
    """Methods whose parameter is integer(0) (Blue Book) also take none."""
    return parameters is None or _integer(parameters, Tag.INTEGER) is not None


# -- clock (IC 8) --------------------------------------------------------------------------------


def _clock(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, now: float
) -> Value | DataAccessResult:
    if index == 2:
        return date_time_octets(meter.meter_time(now))
    values: dict[int, Value] = {
        3: Typed(Tag.LONG, DEVIATION),  # time_zone, with the sign of the date-time deviation
        4: Typed(Tag.UNSIGNED, 0),  # status: no bit set
        5: NOT_SPECIFIED,  # no daylight saving in India
        6: NOT_SPECIFIED,
        7: Typed(Tag.INTEGER, 0),
        8: False,
        9: Typed(Tag.ENUM, 1),  # clock_base: internal crystal
    }
    return values.get(index, _UNAVAILABLE)


def _set_clock(meter: SimulatedMeter, index: int, value: Value, now: float) -> DataAccessResult:
    octets = _octets(value)
    if index != 2 or octets is None or len(octets) != 12:
        return DataAccessResult.TYPE_UNMATCHED
    try:
        instant = instant_of(DateTime.from_octets(octets))
    except RemoteProtocolError:
        return DataAccessResult.OTHER_REASON
    if instant is None:
        return DataAccessResult.OTHER_REASON
    meter.set_clock_to(instant, now)
    return DataAccessResult.SUCCESS


def _clock_action(
    meter: SimulatedMeter, method: int, parameters: Value | None, now: float
) -> tuple[ActionResult, Value | None]:
    m = meter.meter_time(now)
    if method in (1, 2, 3):  # adjust to quarter / measuring period / minute: data integer(0)
        if not _no_parameter(parameters):
            return ActionResult.TYPE_UNMATCHED, None
        step = {1: 900, 2: meter.tables.block_interval, 3: 60}[method]
        meter.set_clock_to(round(m / step) * step, now)
        return ActionResult.SUCCESS, None
    if method == 6:  # shift_time: data long -900..900 seconds
        seconds = _integer(parameters, Tag.LONG)
        if seconds is None:
            return ActionResult.TYPE_UNMATCHED, None
        if not -900 <= seconds <= 900:
            return ActionResult.OTHER_REASON, None
        meter.set_clock_to(m + seconds, now)
        return ActionResult.SUCCESS, None
    return ActionResult.OBJECT_UNAVAILABLE, None  # preset adjusting time is not simulated


# -- data, registers, extended registers (IC 1, 3, 4) ---------------------------------------------


def _string(
    meter: SimulatedMeter, definition: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    if index != 2:
        return _UNAVAILABLE
    if definition.kind is Kind.LOGICAL_DEVICE_NAME:
        return meter.logical_device_name()
    return meter.string_value(definition.kind)


def _quantity(
    meter: SimulatedMeter, definition: ObjectDef, index: int, _a: str, now: float
) -> Value | DataAccessResult:
    quantity = meter.tables.quantities[definition.ref]
    if index == 2:
        return Typed(quantity.type, truth.raw_of(meter, quantity, now))
    if quantity.class_id == 1:
        return _UNAVAILABLE
    if index == 3:
        return ScalerUnit(quantity.scaler, quantity.unit).to_value()
    if quantity.class_id == 4 and index == 4:
        return Typed(Tag.UNSIGNED, 0)  # status: nothing to report
    if quantity.class_id == 4 and index == 5:
        return date_time_octets(truth.capture_time(meter, quantity.name, now))
    return _UNAVAILABLE


def _profile_status(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, now: float
) -> Value | DataAccessResult:
    """The AMR profile status of the block in progress (what its row will capture)."""
    if index != 2:
        return _UNAVAILABLE
    m = meter.meter_time(now)
    begin = truth.block_end(meter, now)
    return Typed(Tag.UNSIGNED, truth.profile_status(meter, begin, m))


def _event_code(
    meter: SimulatedMeter, definition: ObjectDef, index: int, _a: str, now: float
) -> Value | DataAccessResult:
    if index != 2:
        return _UNAVAILABLE
    events = category_events(
        meter.params,
        meter.tables.profile.events,
        meter.event_log,
        definition.index,
        start=meter.start,
        now=now,
    )
    return Typed(Tag.LONG_UNSIGNED, events[-1].code if events else 0)


# -- disconnect control (IC 70) and limiter (IC 71) -----------------------------------------------


def _disconnect(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    state = meter.relay_state
    values: dict[int, Value] = {
        2: state is ControlState.CONNECTED,
        3: Typed(Tag.ENUM, int(state)),
        4: Typed(Tag.ENUM, meter.control_mode),
    }
    return values.get(index, _UNAVAILABLE)


def _set_disconnect(
    meter: SimulatedMeter, index: int, value: Value, now: float
) -> DataAccessResult:
    del now
    mode = _integer(value, Tag.ENUM)
    if index != 4 or mode is None:
        return DataAccessResult.TYPE_UNMATCHED
    if mode > 6:  # Blue Book 4.5.8: control_mode 0..6
        return DataAccessResult.OTHER_REASON
    meter.control_mode = mode
    return DataAccessResult.SUCCESS


def _disconnect_action(
    meter: SimulatedMeter, method: int, parameters: Value | None, now: float
) -> tuple[ActionResult, Value | None]:
    if not _no_parameter(parameters):
        return ActionResult.TYPE_UNMATCHED, None
    mode, state = meter.control_mode, meter.relay_state
    if mode == 0:  # always connected
        return ActionResult.OTHER_REASON, None
    if method == 1:  # remote_disconnect: transitions b and c
        meter.switch(ControlState.DISCONNECTED, now)
    elif state is not ControlState.CONNECTED:  # remote_reconnect
        if mode in (2, 4):  # transition a: the consumer must then press the button
            meter.switch(ControlState.READY_FOR_RECONNECTION, now)
        else:  # transition d
            meter.switch(ControlState.CONNECTED, now)
    return ActionResult.SUCCESS, None


def _limiter(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    monitored = meter.tables.limiter_monitored
    kind = monitored.type if monitored else Tag.DOUBLE_LONG_UNSIGNED
    active, normal, emergency, over, under = meter.limiter
    script = DISCONNECT_SCRIPT.to_bytes()
    values: dict[int, Value] = {
        2: (
            Typed(Tag.LONG_UNSIGNED, monitored.class_id if monitored else 0),
            monitored.obis.to_bytes() if monitored else bytes(6),
            Typed(Tag.INTEGER, 2 if monitored else 0),
        ),
        3: Typed(kind, active),
        4: Typed(kind, normal),
        5: Typed(kind, emergency),
        6: Typed(Tag.DOUBLE_LONG_UNSIGNED, over),
        7: Typed(Tag.DOUBLE_LONG_UNSIGNED, under),
        8: (Typed(Tag.LONG_UNSIGNED, 0), NOT_SPECIFIED, Typed(Tag.DOUBLE_LONG_UNSIGNED, 0)),
        9: [],
        10: False,
        11: (
            (script, Typed(Tag.LONG_UNSIGNED, 1)),  # over threshold: disconnect
            (script, Typed(Tag.LONG_UNSIGNED, 2)),  # under threshold: reconnect
        ),
    }
    return values.get(index, _UNAVAILABLE)


def _set_limiter(meter: SimulatedMeter, index: int, value: Value, now: float) -> DataAccessResult:
    monitored = meter.tables.limiter_monitored
    kind = monitored.type if monitored else Tag.DOUBLE_LONG_UNSIGNED
    number = _integer(value, kind if index in (3, 4, 5) else Tag.DOUBLE_LONG_UNSIGNED)
    if number is None:
        return DataAccessResult.TYPE_UNMATCHED
    settings = list(meter.limiter)
    settings[index - 3] = number
    if index == 4 and settings[0] == meter.limiter[1]:  # the active threshold follows normal
        settings[0] = number
    meter.limiter = (settings[0], settings[1], settings[2], settings[3], settings[4])
    if index in (3, 4, 5):
        meter.log("load_limit_set", now)
    return DataAccessResult.SUCCESS


# -- image transfer (IC 18) ------------------------------------------------------------------------


def _image(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    transfer = meter.image
    if index == 2:
        return Typed(Tag.DOUBLE_LONG_UNSIGNED, BLOCK_SIZE)
    if index == 3:
        return transfer.bitmap() if isinstance(transfer, ImageTransfer) else BitString(b"", 0)
    if index == 4:
        first = transfer.first_missing() if isinstance(transfer, ImageTransfer) else 0
        return Typed(Tag.DOUBLE_LONG_UNSIGNED, first)
    if index == 5:
        return meter.transfer_enabled
    if index == 6:
        status = transfer.status if isinstance(transfer, ImageTransfer) else transfer
        return Typed(Tag.ENUM, int(status))
    if index == 7:  # image_to_activate_info: once verified
        if isinstance(transfer, ImageTransfer) and transfer.version is not None:
            return [
                (
                    Typed(Tag.DOUBLE_LONG_UNSIGNED, transfer.size),
                    transfer.identifier,
                    transfer.digest(),
                )
            ]
        return []
    return _UNAVAILABLE


def _set_image(meter: SimulatedMeter, index: int, value: Value, now: float) -> DataAccessResult:
    del now
    if index != 5 or (
        type(value) is not bool and not (isinstance(value, Typed) and value.tag == Tag.BOOLEAN)
    ):
        return DataAccessResult.TYPE_UNMATCHED
    meter.transfer_enabled = bool(value.value if isinstance(value, Typed) else value)
    return DataAccessResult.SUCCESS


def _image_action(
    meter: SimulatedMeter, method: int, parameters: Value | None, now: float
) -> tuple[ActionResult, Value | None]:
    transfer = meter.image
    if method == 1:  # image_transfer_initiate: structure { identifier, size }
        fields = _elements(parameters, 2)
        identifier = _octets(fields[0]) if fields else None
        size = _integer(fields[1], Tag.DOUBLE_LONG_UNSIGNED) if fields else None
        if identifier is None or size is None:
            return ActionResult.TYPE_UNMATCHED, None
        if not meter.transfer_enabled or not 0 < size <= MAX_IMAGE_SIZE:
            return ActionResult.OTHER_REASON, None
        if isinstance(transfer, ImageTransfer) and (transfer.identifier, transfer.size) == (
            identifier,
            size,
        ):
            transfer.status = TransferStatus.INITIATED  # resume: keep the blocks received
        else:
            meter.image = ImageTransfer(identifier, size)
        return ActionResult.SUCCESS, None
    if not isinstance(transfer, ImageTransfer):
        return ActionResult.OTHER_REASON, None  # nothing initiated
    if method == 2:  # image_block_transfer: structure { block_number, block_value }
        fields = _elements(parameters, 2)
        number = _integer(fields[0], Tag.DOUBLE_LONG_UNSIGNED) if fields else None
        octets = _octets(fields[1]) if fields else None
        if number is None or octets is None:
            return ActionResult.TYPE_UNMATCHED, None
        result = transfer.block(number, octets)
        if result is ActionResult.SUCCESS:
            meter.image_blocks += 1
            meter.image_last_block = number
        return result, None
    if not _no_parameter(parameters):
        return ActionResult.TYPE_UNMATCHED, None
    if method == 3:
        return transfer.verify(), None
    # method 4, image_activate: verify first if that has not been done
    if transfer.status != TransferStatus.VERIFICATION_SUCCESSFUL and transfer.verify() != 0:
        return ActionResult.OTHER_REASON, None
    assert transfer.version is not None
    meter.activate_firmware(transfer.version, now)
    return ActionResult.SUCCESS, None


# -- image activation scheduler (IC 22 single action schedule) -----------------------------------

# Blue Book 4.5.7: executed_script names the image activation script table (0.0.10.0.107.255,
# Blue Book 7.4.x) and its script 1; type 1: one execution_time, wildcards in the date allowed
IMAGE_ACTIVATION_SCRIPT: Final = bytes((0, 0, 10, 0, 107, 255))
_UNSCHEDULED: Final = (Time(None, None, None, None).to_octets(), Date(None, None, None).to_octets())


def _activation(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    if index == 2:
        return (IMAGE_ACTIVATION_SCRIPT, Typed(Tag.LONG_UNSIGNED, 1))
    if index == 3:
        return Typed(Tag.ENUM, 1)
    if index == 4:  # execution_time: array of structure { time octet-string(4), date (5) }
        due = meter.activation_at
        if due is None:
            return [_UNSCHEDULED]
        local = datetime.datetime.fromtimestamp(due + IST, datetime.UTC)
        return [
            (Time.from_time(local.time()).to_octets(), Date.from_date(local.date()).to_octets())
        ]
    return _UNAVAILABLE


def _set_activation(
    meter: SimulatedMeter, index: int, value: Value, now: float
) -> DataAccessResult:
    """execution_time: one time and date in the meter's local time (IST), or all of them not
    specified to cancel; this meter takes single instants only (no wildcards)."""
    del now
    inner = _array(value)
    if index != 4 or inner is None or len(inner) != 1:
        return DataAccessResult.TYPE_UNMATCHED
    fields = _elements(inner[0], 2)
    octets = [_octets(f) for f in fields] if fields else []
    if len(octets) != 2 or octets[0] is None or octets[1] is None:
        return DataAccessResult.TYPE_UNMATCHED
    if (octets[0], octets[1]) == _UNSCHEDULED:
        meter.activation_at = None
        return DataAccessResult.SUCCESS
    try:
        moment = datetime.datetime.combine(
            Date.from_octets(octets[1]).to_date(), Time.from_octets(octets[0]).to_time()
        )
    except (RemoteProtocolError, ValueError):
        return DataAccessResult.OTHER_REASON  # wrong sizes, wildcards, no such date
    meter.activation_at = moment.replace(tzinfo=datetime.UTC).timestamp() - IST
    return DataAccessResult.SUCCESS


# -- push setup (IC 40), security setup (IC 64), association LN (IC 15) --------------------------


MAX_PUSH_WINDOWS: Final = 8  # communication_window entries a meter keeps


def _push(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    push = meter.push
    values: dict[int, Value] = {
        2: list(meter.tables.push_objects),
        3: (Typed(Tag.ENUM, push.transport), push.destination, Typed(Tag.ENUM, push.message)),
        4: [(start, end) for start, end in push.window],
        5: Typed(Tag.LONG_UNSIGNED, push.randomisation),
        6: Typed(Tag.UNSIGNED, push.retries),
        7: Typed(Tag.LONG_UNSIGNED, push.repetition_delay),
    }
    return values.get(index, _UNAVAILABLE)


def _set_push(meter: SimulatedMeter, index: int, value: Value, now: float) -> DataAccessResult:
    """Blue Book 4.4.8 attributes 3 (send_destination_and_method), 4 (communication_window),
    5 (randomisation_start_interval), 6 (number_of_retries), 7 (repetition_delay)."""
    del now
    push = meter.push
    if index == 3:
        fields = _elements(value, 3)
        transport = _integer(fields[0], Tag.ENUM) if fields else None
        destination = _octets(fields[1]) if fields else None
        message = _integer(fields[2], Tag.ENUM) if fields else None
        if transport is None or destination is None or message is None:
            return DataAccessResult.TYPE_UNMATCHED
        push = dataclasses.replace(
            push, transport=transport, destination=destination, message=message
        )
    elif index == 4:
        entries = _array(value)
        if entries is None:
            return DataAccessResult.TYPE_UNMATCHED
        window: list[tuple[bytes, bytes]] = []
        for entry in entries:
            edges = [_octets(v) for v in _elements(entry, 2) or ()]
            if len(edges) != 2 or any(e is None or len(e) != 12 for e in edges):
                return DataAccessResult.TYPE_UNMATCHED
            window.append((edges[0], edges[1]))  # type: ignore[arg-type]
        if len(window) > MAX_PUSH_WINDOWS:
            return DataAccessResult.OTHER_REASON
        push = dataclasses.replace(push, window=tuple(window))
    else:
        tag = Tag.UNSIGNED if index == 6 else Tag.LONG_UNSIGNED
        number = _integer(value, tag)
        if number is None:
            return DataAccessResult.TYPE_UNMATCHED
        if index == 5:
            push = dataclasses.replace(push, randomisation=number)
        elif index == 6:
            push = dataclasses.replace(push, retries=number)
        else:
            push = dataclasses.replace(push, repetition_delay=number)
    meter.push = push
    return DataAccessResult.SUCCESS


def _push_action(
    meter: SimulatedMeter, method: int, parameters: Value | None, now: float
) -> tuple[ActionResult, Value | None]:
    del method, now
    if not _no_parameter(parameters):
        return ActionResult.TYPE_UNMATCHED, None
    meter.request_push()
    return ActionResult.SUCCESS, None


def _security(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, _n: float
) -> Value | DataAccessResult:
    ciphered = any(a.ciphered for a in meter.tables.profile.associations)
    values: dict[int, Value] = {
        2: Typed(Tag.ENUM, 3 if ciphered else 0),  # v0: 3 authenticated and encrypted
        3: Typed(Tag.ENUM, 0),  # security suite 0: AES-GCM-128
        4: meter.client_system_title,
        5: meter.spec.system_title,
    }
    return values.get(index, _UNAVAILABLE)


def _association(
    meter: SimulatedMeter, _d: ObjectDef, index: int, association: str, _n: float
) -> Value | DataAccessResult:
    tables = meter.tables
    assoc = tables.profile.association(association)
    values: dict[int, Value] = {
        2: tables.object_lists[tables.levels[association]],
        3: (Typed(Tag.INTEGER, assoc.client_address), Typed(Tag.LONG_UNSIGNED, 1)),
        4: _CONTEXT_NAME_CIPHERED if assoc.ciphered else _CONTEXT_NAME,
        5: (
            _CONFORMANCE,
            Typed(Tag.LONG_UNSIGNED, tables.profile.framing.max_pdu_size),
            Typed(Tag.LONG_UNSIGNED, tables.profile.framing.max_pdu_size),
            Typed(Tag.UNSIGNED, 6),  # DLMS version 6
            Typed(Tag.INTEGER, 0),
            b"",
        ),
        6: bytes.fromhex("60857405080200") + bytes((_MECHANISMS[assoc.security],)),
        8: Typed(Tag.ENUM, 2),  # associated
        9: tables.profile.objects.security_setup.to_bytes(),
    }
    if index == 7:
        return DataAccessResult.READ_WRITE_DENIED  # the secret is never readable
    return values.get(index, _UNAVAILABLE)


# -- GSM diagnostic (IC 47) ------------------------------------------------------------------------


def _gsm_diagnostic(
    meter: SimulatedMeter, _d: ObjectDef, index: int, _a: str, now: float
) -> Value | DataAccessResult:
    seed, quality = meter.spec.seed, meter.signal_quality
    assert quality is not None  # the meter has the object, so it has a modem
    if index == 6:
        return modem.cell_info(seed, quality).to_value()
    if index == 7:
        return modem.adjacent_cells(seed, quality)
    values: dict[int, Value] = {
        2: modem.operator(seed),  # visible-string
        3: Typed(Tag.ENUM, modem.REGISTERED_HOME),
        4: Typed(Tag.ENUM, modem.CS_INACTIVE),
        5: Typed(Tag.ENUM, modem.PS_LTE),
        8: date_time_octets(meter.meter_time(now)),  # capture_time: captured at the read
    }
    return values.get(index, _UNAVAILABLE)


def _nothing(
    meter: SimulatedMeter, method: int, parameters: Value | None, now: float
) -> tuple[ActionResult, Value | None]:
    """Methods the simulator does not offer (key transfer, HLS pass 3 is the connection's)."""
    del meter, method, parameters, now
    return ActionResult.OBJECT_UNAVAILABLE, None


GETTERS: Final[dict[Kind, Getter]] = {
    Kind.CLOCK: _clock,
    Kind.LOGICAL_DEVICE_NAME: _string,
    Kind.SERIAL_NUMBER: _string,
    Kind.MANUFACTURER_NAME: _string,
    Kind.METER_MODEL: _string,
    Kind.FIRMWARE_VERSION: _string,
    Kind.QUANTITY: _quantity,
    Kind.EVENT_CODE: _event_code,
    Kind.PROFILE_STATUS: _profile_status,
    Kind.DISCONNECT_CONTROL: _disconnect,
    Kind.LIMITER: _limiter,
    Kind.IMAGE_TRANSFER: _image,
    Kind.PUSH_SETUP: _push,
    Kind.SECURITY_SETUP: _security,
    Kind.ASSOCIATION: _association,
    Kind.GSM_DIAGNOSTIC: _gsm_diagnostic,
    Kind.IMAGE_ACTIVATION: _activation,
}
SETTERS: Final[dict[Kind, Setter]] = {
    Kind.CLOCK: _set_clock,
    Kind.DISCONNECT_CONTROL: _set_disconnect,
    Kind.LIMITER: _set_limiter,
    Kind.IMAGE_TRANSFER: _set_image,
    Kind.PUSH_SETUP: _set_push,
    Kind.IMAGE_ACTIVATION: _set_activation,
}
ACTIONS: Final[dict[Kind, Action]] = {
    Kind.CLOCK: _clock_action,
    Kind.DISCONNECT_CONTROL: _disconnect_action,
    Kind.IMAGE_TRANSFER: _image_action,
    Kind.PUSH_SETUP: _push_action,
    Kind.SECURITY_SETUP: _nothing,
    Kind.ASSOCIATION: _nothing,
}
