"""``SimulatedMeter``: the COSEM object model of one simulated meter, for ``hesd-sim``.

A meter answers GET, SET and ACTION through the ``ObjectModel`` protocol of the DLMS server
connection (``get``/``set``/``action`` with the association's name and the simulated time ``now``)
and offers the transport and the tests a small API: ``set_clock_drift_ppm``, ``inject_event``,
``relay_state``, ``firmware_version``, ``signal_quality``, ``set_signal_quality``,
``take_push_request``, ``push_body``, ``alert_body`` and ``snapshot``.

Everything a meter measures is computed from its seed and ``now`` (``hesd.sim.load``,
``hesd.sim.truth``); tables shared by every meter of a vendor are built once per vendor profile
(``hesd.sim.objects``). A meter keeps only what the HES can change: the relay, the clock offset
and drift, load-limit and push settings once written, an image while it is being transferred
(and when its activation is scheduled), a bounded log of events, how often the relay switched;
and a signal quality once the control API set one. An idle meter takes well under 2 KB.

Activating an image restarts the meter, as a real meter's new firmware boots: the transport
closes the link once the answer to ``image_activate`` is out (``take_restart``). A scheduled
activation (the image activation scheduler, IC 22, when the profile names one) happens at the
first request or snapshot at or after its time, the meter's model being computed from ``now``
rather than driven by timers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from adapters.alert_map import ESW_BITS
from adapters.profile import EventCode, VendorProfile
from hesd.sim import modem, profiles
from hesd.sim.events import LOG_SIZE, TAMPER_KINDS, Event, EventLog, category_events
from hesd.sim.handlers import ACTIONS, GETTERS, SETTERS, ControlState
from hesd.sim.image import ImageTransfer, TransferStatus
from hesd.sim.load import LoadParams, params
from hesd.sim.objects import (
    Kind,
    ObjectDef,
    VendorTables,
    can_act,
    can_read,
    can_write,
    vendor_tables,
)
from hesd.sim.timebase import ClockMap, date_time_octets
from protocols.dlms.apdu import (
    AccessSelection,
    ActionResult,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
)
from protocols.dlms.axdr import BitString, Tag, Typed, Value
from protocols.dlms.cosem import INTERFACE_CLASSES

__all__ = [
    "DEFAULT_START",
    "ControlState",
    "MeterSnapshot",
    "MeterSpec",
    "PushSettings",
    "SimulatedMeter",
]

DEFAULT_START: Final = 1_704_047_400.0  # 2024-01-01 00:00 IST
_IDENTITY: Final = ClockMap()
_LOAD_LIMIT_W: Final = (10_000, 5_000)  # normal and emergency thresholds before any SET
_LOAD_LIMIT_S: Final = (60, 60)  # min over and under threshold durations


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """Who a simulated meter is. ``seed`` decides its load; ``start`` is when its history begins
    (no profile row or event before it)."""

    meter_id: str
    serial_number: str
    system_title: bytes
    seed: int
    profile: VendorProfile
    clock_drift_ppm: float = 0.0
    start: float = DEFAULT_START
    firmware_version: str = "1.0.0"
    flag_id: str = ""  # FLAG id of the logical device name; "" takes the profile's first, or HES

    def __post_init__(self) -> None:
        if not 1 <= len(self.meter_id) <= 64:
            raise ValueError(f"meter id {self.meter_id!r} is not 1..64 characters")
        if re.fullmatch(r"[ -~]{1,32}", self.serial_number) is None:
            raise ValueError(f"serial {self.serial_number!r} is not 1..32 printable ASCII")
        if len(self.system_title) != 8:  # IEC 62056-5-3 §5.3.3.2: system title is 8 octets
            raise ValueError(f"system title must be 8 octets, got {len(self.system_title)}")
        if not 0 <= self.seed < 1 << 64:
            raise ValueError(f"seed {self.seed} is not 0..2**64-1")
        if re.fullmatch(r"(?:[A-Z@]{3})?", self.flag_id) is None:
            raise ValueError(f"FLAG id {self.flag_id!r} is not three letters")
        if re.fullmatch(r"[ -~]{1,32}", self.firmware_version) is None:
            raise ValueError(f"firmware version {self.firmware_version!r} is not printable")
        ClockMap(ppm=self.clock_drift_ppm)  # range check


@dataclass(frozen=True, slots=True)
class PushSettings:
    """Push setup (IC 40, Blue Book 4.4.8) attributes 3..7 as the HES wrote them: where and how
    to push, and when (window of (start, end) date-time octets, randomisation, retries)."""

    transport: int = 0  # transport_service: 0 TCP
    destination: bytes = b""
    message: int = 0  # 0 A-XDR encoded xDLMS APDU
    window: tuple[tuple[bytes, bytes], ...] = ()  # empty: push at any time
    randomisation: int = 0  # randomisation_start_interval, seconds
    retries: int = 3  # number_of_retries
    repetition_delay: int = 60  # seconds


_PUSH_DEFAULTS: Final = PushSettings()


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """The ground truth of a meter's state at one instant, for tests to compare hesd against."""

    meter_id: str
    serial_number: str
    firmware_version: str
    relay: ControlState
    relay_operations: int  # how often the relay switched (remotely, or by the consumer)
    limiter: tuple[int, int, int, int, int]  # SimulatedMeter.limiter: raw register values
    push: PushSettings
    clock_offset: float  # meter clock minus simulated time, seconds
    clock_drift_ppm: float
    tamper_count: int
    push_pending: bool
    last_events: tuple[tuple[float, int, str], ...]  # (time, code, kind), newest last
    signal_quality: int | None  # the modem's <rssi> 0..31 or 99; None: no GSM diagnostic object
    image_status: TransferStatus = TransferStatus.NOT_INITIATED  # image_transfer_status
    image_blocks: int = 0  # image blocks the meter accepted (each resent block counts again)
    activation_at: float | None = None  # a scheduled activation, meter time (UNIX seconds)


class SimulatedMeter:
    """One meter's COSEM objects (implements the DLMS server's ``ObjectModel``).

    The attributes below ``spec`` and ``tables`` are the meter's state, changed by the object
    handlers (``hesd.sim.handlers``) and read by the transport.
    """

    __slots__ = (
        "_clock",
        "_clock_sets",
        "_firmware",
        "_limiter",
        "_log",
        "_params",
        "_push_pending",
        "_relay",
        "_relay_operations",
        "_restart",
        "_signal",
        "activation_at",
        "client_system_title",
        "control_mode",
        "image",
        "image_blocks",
        "image_last_block",
        "push",
        "spec",
        "tables",
        "transfer_enabled",
    )

    def __init__(self, spec: MeterSpec) -> None:
        self.spec = spec
        self.tables: VendorTables = vendor_tables(spec.profile)
        self._params: LoadParams | None = None
        self._clock: ClockMap | None = (
            ClockMap(0.0, spec.clock_drift_ppm, spec.start) if spec.clock_drift_ppm else None
        )
        self._clock_sets: tuple[float, ...] = ()  # when the clock was set, the newest LOG_SIZE
        self._relay = ControlState.CONNECTED
        self._relay_operations = 0
        self._limiter: tuple[int, int, int, int, int] | None = None  # None: never written
        self._firmware: str | None = None  # None: the spec's, until an image is activated
        self._log: EventLog | None = None  # created by the first event logged or injected
        self._push_pending = False
        self._signal: int | None = None  # None: the seed's, until the control API sets one
        self.control_mode = 1  # remote disconnect (b, c) and remote reconnect (d)
        self.image: ImageTransfer | TransferStatus = TransferStatus.NOT_INITIATED
        self.transfer_enabled = True
        self.image_blocks = 0  # image blocks accepted since the meter started, for the tests
        self.image_last_block: int | None = None  # the number of the last one
        self.activation_at: float | None = None  # meter time of a scheduled activation
        self._restart = False  # an image was activated: the transport closes the link
        self.push: PushSettings = _PUSH_DEFAULTS  # replaced by a SET of attributes 3..7
        self.client_system_title = b""  # the transport may tell (note_client_system_title)

    # -- what the load model, the profiles and the handlers read -------------------------------

    @property
    def params(self) -> LoadParams:
        if self._params is None:
            self._params = params(self.spec.seed)
        return self._params

    @property
    def start(self) -> float:
        return self.spec.start

    @property
    def clock(self) -> ClockMap:
        return self._clock or _IDENTITY

    @property
    def event_log(self) -> EventLog | None:
        return self._log

    @property
    def clock_sets(self) -> tuple[float, ...]:
        """The simulated times at which the clock was set or shifted (the newest ``LOG_SIZE``),
        oldest first: what the profile status reports as "clock adjusted"."""
        return self._clock_sets

    @property
    def limiter(self) -> tuple[int, int, int, int, int]:
        """(threshold active, normal, emergency, min over s, min under s) as registers hold them."""
        if self._limiter is not None:
            return self._limiter
        monitored = self.tables.limiter_monitored
        scaler = monitored.scaler if monitored else 0
        normal, emergency = (
            w * 10**-scaler if scaler <= 0 else w // 10**scaler for w in _LOAD_LIMIT_W
        )
        return (int(normal), int(normal), int(emergency), *_LOAD_LIMIT_S)

    @limiter.setter
    def limiter(self, settings: tuple[int, int, int, int, int]) -> None:
        self._limiter = settings

    def tamper_count_at(self, t: float) -> int:
        if self._log is None:
            return 0
        return self._log.tampers - self._log.tampers_after(t, self.tables.tamper_codes)

    def logical_device_name(self) -> bytes:
        """IS 15959: the FLAG manufacturer id, then the serial number."""
        flag = self.spec.flag_id or (self.spec.profile.flag_ids or ("HES",))[0]
        return (flag + self.spec.serial_number).encode("ascii")

    def string_value(self, kind: Kind) -> Value:
        """Serial number, manufacturer, model or firmware version as the meter reports them."""
        if kind is Kind.SERIAL_NUMBER:
            return self.spec.serial_number
        if kind is Kind.MANUFACTURER_NAME:
            return self.spec.profile.manufacturer
        if kind is Kind.METER_MODEL:
            return self.spec.profile.model
        return self.firmware_version

    # -- the API for the transport and the tests -------------------------------------------------

    @property
    def firmware_version(self) -> str:
        return self._firmware or self.spec.firmware_version

    @property
    def signal_quality(self) -> int | None:
        """The modem's signal quality as its GSM diagnostic reports it (3GPP TS 27.007 §8.5
        ``<rssi>``: 0..31, 99 not known); None if the meter has no GSM diagnostic object."""
        if self.spec.profile.objects.gsm_diagnostic is None:
            return None
        return modem.seed_signal_quality(self.spec.seed) if self._signal is None else self._signal

    def set_signal_quality(self, quality: int) -> None:
        """From now on the modem reports ``quality``; ``ValueError`` if the meter has no GSM
        diagnostic object or ``quality`` is not 0..31 or 99."""
        if self.spec.profile.objects.gsm_diagnostic is None:
            raise ValueError(f"{self.spec.profile.name} meters have no GSM diagnostic object")
        if not modem.valid_signal_quality(quality):
            raise ValueError(f"signal quality {quality!r} is not 0..31 or 99 (not known)")
        self._signal = quality

    @property
    def relay_state(self) -> ControlState:
        return self._relay

    def meter_time(self, now: float) -> float:
        """What the meter's clock shows at simulated time ``now``."""
        return self.clock.meter_time(now)

    def set_clock_drift_ppm(self, ppm: float, now: float) -> None:
        """From ``now`` on the clock drifts by ``ppm`` (what it shows at ``now`` is kept)."""
        self._set_clock(self.clock.with_drift(now, ppm))

    def set_clock_to(self, meter_time: float, now: float) -> None:
        """Set the clock to show ``meter_time`` at ``now`` (logs a clock-set event)."""
        self._set_clock(self.clock.reset(now, meter_time))
        self._clock_sets = (*self._clock_sets[1 - LOG_SIZE :], now)
        self.log("clock_set", now)

    def inject_event(self, what: str | int, t: float) -> EventCode:
        """Log an event of kind ``what`` (e.g. "magnet_tamper") or with that vendor code at
        ``t``; ``ValueError`` if the vendor's code table has no such event."""
        codes = self.tables.profile.events
        entry = codes.code(what) if isinstance(what, int) else codes.by_kind(what)
        if entry is None:
            raise ValueError(f"{self.tables.profile.name} meters have no event {what!r}")
        self._add_event(entry, t)
        return entry

    def log(self, kind: str, t: float) -> None:
        """Log an event of ``kind`` if this vendor's meters have one."""
        entry = self.tables.profile.events.by_kind(kind)
        if entry is not None:
            self._add_event(entry, t)

    def switch(self, state: ControlState, now: float) -> None:
        """Move the relay to ``state``, logging the control event of the new state."""
        if state is self._relay:
            return
        self._relay = state
        self._relay_operations += 1
        if state is ControlState.DISCONNECTED:
            self.log("load_switch_disconnected", now)
        elif state is ControlState.CONNECTED:
            self.log("load_switch_connected", now)

    def press_button(self, now: float) -> None:
        """The consumer reconnects a meter that is ready for reconnection (transition e)."""
        if self._relay is ControlState.READY_FOR_RECONNECTION:
            self.switch(ControlState.CONNECTED, now)

    def activate_firmware(self, version: str, now: float) -> None:
        """The verified image becomes the firmware (and the transfer state is dropped); the
        meter restarts (``take_restart``)."""
        self._firmware = version
        self.image = TransferStatus.ACTIVATION_SUCCESSFUL
        self.activation_at = None
        self._restart = True
        self.log("firmware_activated", now)

    def take_restart(self) -> bool:
        """True once after an activation: the meter restarts, its link closes."""
        restart, self._restart = self._restart, False
        return restart

    def run_due(self, now: float) -> None:
        """A scheduled activation whose time the meter's clock has reached happens now: the
        image is verified if it was not, and activated if it is valid (else
        image_transfer_status says activation failed)."""
        due = self.activation_at
        if due is None or self.meter_time(now) < due:
            return
        self.activation_at = None
        transfer = self.image
        if not isinstance(transfer, ImageTransfer):
            return  # nothing to activate: the schedule fires on nothing
        if transfer.status != TransferStatus.VERIFICATION_SUCCESSFUL and transfer.verify() != 0:
            transfer.status = TransferStatus.ACTIVATION_FAILED
            return
        assert transfer.version is not None
        self.activate_firmware(transfer.version, now)

    def request_push(self) -> None:
        self._push_pending = True

    def take_push_request(self) -> bool:
        """True once after the push method was invoked (the transport then pushes)."""
        pending, self._push_pending = self._push_pending, False
        return pending

    def push_body(self, now: float) -> Value:
        """The Data-Notification body: the values of the push object list (Blue Book 4.4.8)."""
        return (
            self.logical_device_name(),
            date_time_octets(self.meter_time(now)),
            *profiles.push_values(self, now),
        )

    def alert_body(self, entry: EventCode, now: float) -> Value | None:
        """The Data-Notification body of the alert push event ``entry`` raises at ``now``, laid
        out as the profile's ``[alerts] objects``; None if it raises no alert (its code has no
        ESW bit). The ESW holds the bit of this event alone: the meter pushes at once, and
        clears the bits it has pushed."""
        alerts = self.spec.profile.alerts
        bit = alerts.bit_of(entry.code)
        if bit is None:
            return None
        clock = date_time_octets(self.meter_time(now))
        values: dict[str, Value] = {
            "push_setup": alerts.push_setup.to_bytes(),
            "logical_device_name": self.logical_device_name(),
            "serial_number": self.spec.serial_number,
            "clock": clock,
            "esw": BitString.from_bits("0" * bit + "1" + "0" * (ESW_BITS - bit - 1)),
            "event_code": Typed(Tag.LONG_UNSIGNED, entry.code),
            "event_time": clock,
        }
        return tuple(values[name] for name in alerts.objects)

    def note_client_system_title(self, title: bytes) -> None:
        """The transport tells the meter its HLS client's system title (security setup)."""
        self.client_system_title = bytes(title)

    def snapshot(self, now: float) -> MeterSnapshot:
        """The ground truth of this meter's state at ``now``."""
        self.run_due(now)
        last: list[tuple[float, int, str]] = []
        codes = self.tables.profile.events
        for category in range(len(codes.profiles)):
            found = category_events(
                self.params, codes, self._log, category, start=self.start, now=now
            )
            for event in found[-10:]:
                entry = codes.code(event.code)
                last.append((event.time, event.code, entry.kind if entry else ""))
        return MeterSnapshot(
            meter_id=self.spec.meter_id,
            serial_number=self.spec.serial_number,
            firmware_version=self.firmware_version,
            relay=self._relay,
            relay_operations=self._relay_operations,
            limiter=self.limiter,
            push=self.push,
            clock_offset=self.meter_time(now) - now,
            clock_drift_ppm=self.clock.ppm,
            tamper_count=self.tamper_count_at(now),
            push_pending=self._push_pending,
            last_events=tuple(sorted(last)[-10:]),
            signal_quality=self.signal_quality,
            image_status=TransferStatus(
                self.image.status if isinstance(self.image, ImageTransfer) else self.image
            ),
            image_blocks=self.image_blocks,
            activation_at=self.activation_at,
        )

    # -- ObjectModel -----------------------------------------------------------------------------

    def get(
        self,
        association: str,
        attribute: AttributeDescriptor,
        access: AccessSelection | None,
        now: float,
    ) -> Value | DataAccessResult:
        self.run_due(now)
        found = self._object(association, attribute)
        if isinstance(found, DataAccessResult):
            return found
        definition, level = found
        index = attribute.attribute
        if not 1 <= index <= len(INTERFACE_CLASSES[definition.class_id].attributes):
            return DataAccessResult.OBJECT_UNAVAILABLE
        if not can_read(definition.kind, level):
            return DataAccessResult.READ_WRITE_DENIED
        if access is not None and (definition.class_id != 7 or index != 2):
            return DataAccessResult.OTHER_REASON  # selective access is for profile buffers
        if index == 1:
            return definition.obis.to_bytes()
        if definition.class_id == 7:
            return profiles.attribute(self, definition, index, access, now)
        return GETTERS[definition.kind](self, definition, index, association, now)

    def set(
        self, association: str, attribute: AttributeDescriptor, value: Value, now: float
    ) -> DataAccessResult:
        self.run_due(now)
        found = self._object(association, attribute)
        if isinstance(found, DataAccessResult):
            return found
        definition, level = found
        index = attribute.attribute
        if not 1 <= index <= len(INTERFACE_CLASSES[definition.class_id].attributes):
            return DataAccessResult.OBJECT_UNAVAILABLE
        if not can_write(definition.kind, index, level):
            return DataAccessResult.READ_WRITE_DENIED
        return SETTERS[definition.kind](self, index, value, now)

    def action(
        self, association: str, method: MethodDescriptor, parameters: Value | None, now: float
    ) -> tuple[ActionResult, Value | None]:
        self.run_due(now)
        found = self._object(association, method)
        if isinstance(found, DataAccessResult):
            return ActionResult(int(found)), None
        definition, level = found
        if not 1 <= method.attribute <= len(INTERFACE_CLASSES[definition.class_id].methods):
            return ActionResult.OBJECT_UNAVAILABLE, None
        if not can_act(level):
            return ActionResult.READ_WRITE_DENIED, None
        handler = ACTIONS.get(definition.kind)
        if handler is None:
            return ActionResult.READ_WRITE_DENIED, None  # resetting registers and profiles
        return handler(self, method.attribute, parameters, now)

    def _object(
        self, association: str, descriptor: AttributeDescriptor
    ) -> tuple[ObjectDef, int] | DataAccessResult:
        level = self.tables.levels.get(association)
        if level is None:
            return DataAccessResult.READ_WRITE_DENIED  # not an association of this vendor
        definition = self.tables.objects.get(descriptor.instance)
        if definition is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if definition.class_id != descriptor.class_id:
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        return definition, level

    # -- state ----------------------------------------------------------------------------------

    def _set_clock(self, clock: ClockMap) -> None:
        self._clock = None if clock.identity else clock

    def _add_event(self, entry: EventCode, t: float) -> None:
        if self._log is None:
            self._log = EventLog()
        category = self.tables.category_index[entry.category]
        tamper = entry.occurrence and entry.kind in TAMPER_KINDS
        self._log.add(Event(t, entry.code, category), tamper)
