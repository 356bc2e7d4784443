"""From what a vendor's meter says to the normalised model (``adapters/model.py``).

A ``Normaliser`` holds one vendor profile and its adapter (``adapters/hooks.py``) and turns:

* a register value (``reading``): ``raw * 10**scaler`` in the quantity's DLMS unit, then into
  the SI-normalised unit (Wh → kWh, W → kW, min → s, ...), exactly, as a ``Decimal``; the
  scaler and unit are the meter's ``scaler_unit`` when the caller read it, else the profile's;
* a COSEM date-time (``timestamp``): to UTC with the date-time's deviation, or the profile's
  ``[clock] utc_offset`` when the meter sends none (0x8000), and its clock status into quality
  flags (invalid; doubtful, different clock base or an invalid status byte);
* a profile's rows (``profile_rows``): one reading per quantity column, the row's clock aligned
  to the nearest interval boundary of the meter's local time (a row captured at 00:15:02 is the
  00:15 row); block energies and averages carry the profile's interval, snapshot registers
  (daily energies) none; a ``<quantity>.capture_time`` column becomes its reading's
  ``capture_time``; a ``status`` column (the AMR profile status) is no reading: its bits
  become quality flags of every reading of its row (``_PROFILE_STATUS``);
* a push (``push``): the Data-Notification body of the instantaneous push, laid out as IS 15959
  meters send it (logical device name, clock, then the instantaneous profile's columns);
* event profile rows (``event_rows``): the vendor's code table gives kind, category, severity;
  the snapshot columns become the event's readings;

and hands every record to the adapter. A row layout (a profile's columns, or the push's) is
resolved against the profile once (``_Layout``: each column's quantity, OBIS code, power of ten,
normalised unit, type limits and capture-time column) and reused for every row and push of that
layout, so a value costs an integer check and its ``Reading``; a value the layout cannot take as
it is (not an integer, a scaler the meter gave for its column) goes the way of ``reading``, the
single-value path, which says what is wrong. A value that is not what the profile says (a string for
a register, a short row, an unknown event code) is a ``NormaliseError`` naming the meter, the
object and the column; the rest of the rows are still normalised (``profile_rows`` and
``event_rows`` collect the errors instead of stopping at the first).
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from adapters.cosem_map import (
    CAPTURE_TIME,
    INTEGER_TYPES,
    STATUS,
    LoadProfile,
    ProfileStatus,
    Quantity,
)
from adapters.hooks import NULL_ADAPTER, MeterContext, VendorAdapter
from adapters.is15959 import EVENT_CATEGORIES, TIME_UNITS, Measure
from adapters.model import (
    UNITS,
    Event,
    Quality,
    Reading,
    ReadingForm,
    Source,
    iso_time,
    meter_json,
    quality_json,
    scaled_text,
)
from adapters.profile import VendorProfile
from protocols.dlms.axdr import Tag
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit, Unit
from protocols.errors import HesdError, RemoteProtocolError

__all__ = ["Batch", "NormaliseError", "Normaliser", "to_si"]

_INTERVAL_MEASURES: Final = frozenset({Measure.BLOCK, Measure.AVERAGE})
_LIMITS: Final = {  # A-XDR integer types: (min, max) (IEC 62056-6-2 §4.1.5)
    Tag.INTEGER: (-(1 << 7), (1 << 7) - 1),
    Tag.LONG: (-(1 << 15), (1 << 15) - 1),
    Tag.DOUBLE_LONG: (-(1 << 31), (1 << 31) - 1),
    Tag.LONG64: (-(1 << 63), (1 << 63) - 1),
    Tag.UNSIGNED: (0, (1 << 8) - 1),
    Tag.LONG_UNSIGNED: (0, (1 << 16) - 1),
    Tag.DOUBLE_LONG_UNSIGNED: (0, (1 << 32) - 1),
    Tag.LONG64_UNSIGNED: (0, (1 << 64) - 1),
}
assert set(_LIMITS) == set(INTEGER_TYPES.values())
_OVERFLOW: Final = {  # raw values flagged OVERFLOW: the type's limits, but 0 of an unsigned
    tag: frozenset({high} if low == 0 else {low, high}) for tag, (low, high) in _LIMITS.items()
}
# IEC 62056-6-2 §4.1.6.1 clock status bits
_STATUS_INVALID: Final = 0x01
_STATUS_DOUBTFUL: Final = 0x02 | 0x04 | 0x08  # doubtful, different clock base, invalid status
_PUSH_HEAD: Final = ("logical_device_name", "clock")
_CAPTURES: Final = 4096  # capture times remembered (the most a normaliser holds)
# AMR profile status bits (IDIS, DSMR P3; adapters.cosem_map.ProfileStatus) → quality. A critical
# error is data not valid too: the companion specifications set DNV with ERR, and the MDM has no
# flag of its own for it. Daylight saving says nothing about the value (the row's date-time
# carries its deviation); bits 4 and 6 are reserved.
_STATUS_BITS: Final = (
    (ProfileStatus.POWER_DOWN, Quality.POWER_DOWN),
    (ProfileStatus.CLOCK_ADJUSTED, Quality.CLOCK_ADJUSTED),
    (ProfileStatus.DATA_NOT_VALID, Quality.DATA_INVALID),
    (ProfileStatus.CLOCK_INVALID, Quality.CLOCK_INVALID),
    (ProfileStatus.CRITICAL_ERROR, Quality.DATA_INVALID),
)
_PROFILE_STATUS: Final = tuple(  # the flags of each status 0..255, once
    functools.reduce(operator.or_, (flag for bit, flag in _STATUS_BITS if status & bit), Quality(0))
    for status in range(256)
)


@dataclass(frozen=True, slots=True)
class _Row:
    """Where a row's cells come from, for the readings and the errors."""

    meter: MeterContext
    load: LoadProfile
    where: str
    source: Source
    scalers: Mapping[str, ScalerUnit]


@dataclass(frozen=True, slots=True)
class _Value:
    """One value column of a row layout, resolved against the profile once."""

    index: int  # where its value is in the row
    name: str
    spec: Quantity | None  # None: the profile has no such quantity (an error at every row)
    obis: str
    exponent: int  # the profile's scaler plus the unit's power of ten (adapters.model.UNITS)
    factor: int  # the time unit's seconds (60 for min, 3600 for h), else 1
    unit: str  # the normalised unit; "" with ``normal`` False: the unit has no normalised form
    normal: bool
    overflow: frozenset[int]  # raw values at the type's limits (flagged OVERFLOW)
    interval: int | None
    capture: int | None  # where its "<quantity>.capture_time" is in the row


@dataclass(frozen=True, slots=True)
class _WireColumn:
    """A value column of the push, for ``push_wire``: where its value is, how it scales, the
    form its readings' text takes."""

    index: int
    factor: int
    exponent: int
    overflow: frozenset[int]
    capture: int | None
    form: ReadingForm


@dataclass(frozen=True, slots=True)
class _Wire:
    """The instantaneous push as ``push_wire`` writes it, for one source: resolved once."""

    width: int  # values in the push
    clock: int  # where its clock is
    interval: int  # the instantaneous profile's (0: none), timestamps are aligned to it
    columns: tuple[_WireColumn, ...]


@dataclass(frozen=True, slots=True)
class _Layout:
    """What each column of a row means: a profile's columns, or the push's."""

    clock: int
    status: int | None
    values: tuple[_Value, ...]


class NormaliseError(HesdError, ValueError):
    """A value the vendor profile cannot account for; the message names meter, object, column."""


@dataclass(slots=True)
class Batch:
    """What a multi-row normalisation produced, and what it could not normalise."""

    readings: list[Reading] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    errors: list[NormaliseError] = field(default_factory=list)


def to_si(raw: int, scaler: int, unit: Unit | int, *, count: bool = False) -> tuple[Decimal, str]:
    """``raw * 10**scaler`` in ``unit``, in hesd's normalised unit (``adapters.model.UNITS``).

    ``count`` marks a counter: unit "count" whatever the meter's unit says.
    """
    symbol = unit.symbol if isinstance(unit, Unit) else None
    if symbol is None or symbol not in UNITS:
        raise ValueError(f"unit {unit!r} has no normalised form")
    normal, exponent = UNITS[symbol]
    value = Decimal(raw).scaleb(scaler + exponent)
    if symbol in TIME_UNITS:
        value *= TIME_UNITS[symbol]
    return value, "count" if count else normal


class Normaliser:
    """One vendor's mapping from COSEM values to normalised records."""

    __slots__ = ("_by_name", "_captures", "_layouts", "_wires", "adapter", "profile")

    def __init__(self, profile: VendorProfile, adapter: VendorAdapter = NULL_ADAPTER) -> None:
        self.profile = profile
        self.adapter = adapter
        self._by_name: dict[str, Quantity] = {q.name: q for q in profile.quantities}
        self._layouts: dict[tuple[str, tuple[str, ...]], _Layout] = {}
        # push_wire's push by source; None: its pushes need Readings (``_wire``)
        self._wires: dict[Source, _Wire | None] = {}
        # capture times by their octets: a maximum demand's stays the same push after push
        self._captures: dict[bytes, dt.datetime | None] = {}

    # -- single values -----------------------------------------------------------------------

    def timestamp(self, value: object, what: str = "clock") -> tuple[dt.datetime, Quality]:
        """A COSEM date-time (12 octets or a ``DateTime``) as UTC, with its clock quality."""
        stamp = self._date_time(value, what)
        return self._utc(stamp, what), self._clock_quality(stamp)

    def reading(
        self,
        meter: MeterContext,
        quantity: str,
        raw: object,
        *,
        at: dt.datetime,
        source: Source,
        scaler_unit: ScalerUnit | None = None,
        quality: Quality = Quality(0),  # noqa: B008 - an immutable flag value
        capture_time: dt.datetime | None = None,
        interval: int | None = None,
    ) -> Reading:
        """One register value of ``quantity`` read at ``at`` (UTC)."""
        spec = self._quantity(quantity, meter)
        if type(raw) is not int:
            raise NormaliseError(
                f"meter {meter.meter_id}: {quantity} ({spec.obis}): expected an integer "
                f"({spec.type.name.lower().replace('_', '-')}), got {_describe(raw)}"
            )
        scaler, unit = (
            (spec.scaler, spec.unit)
            if scaler_unit is None
            else (scaler_unit.scaler, scaler_unit.unit)
        )
        if scaler_unit is not None and not _same_dimension(unit, spec.unit):
            raise NormaliseError(
                f"meter {meter.meter_id}: {quantity} ({spec.obis}): the meter says its unit is "
                f"{_unit_text(unit)}, the profile {spec.unit.symbol or 'none'}"
            )
        try:
            value, normal = to_si(raw, scaler, unit, count=spec.measure is Measure.COUNT)
        except ValueError as exc:
            raise NormaliseError(f"meter {meter.meter_id}: {quantity}: {exc}") from None
        if raw in _OVERFLOW[spec.type]:
            quality |= Quality.OVERFLOW
        reading = Reading(
            meter_id=meter.meter_id,
            quantity=quantity,
            value=value,
            unit=normal,
            timestamp=at,
            source=source,
            obis=str(spec.obis),
            interval=interval,
            quality=quality,
            capture_time=capture_time,
        )
        return self.adapter.adjust_reading(reading, meter)

    # -- rows --------------------------------------------------------------------------------

    def profile_rows(
        self,
        meter: MeterContext,
        profile: str,
        rows: Sequence[object],
        *,
        source: Source,
        scalers: Mapping[str, ScalerUnit] | None = None,
        batch: Batch | None = None,
    ) -> Batch:
        """Every row of a profile's buffer, as read (rows of the profile's columns)."""
        load = self._profile(profile, meter)
        layout = self._layout(load, load.columns)
        out = Batch() if batch is None else batch
        for index, row in enumerate(rows):
            where = f"meter {meter.meter_id}: {load.name} ({load.obis}) row {index}"
            try:
                values = _cells(row, len(load.columns), where)
                out.readings.extend(
                    self._cells(_Row(meter, load, where, source, scalers or {}), layout, values)
                )
            except NormaliseError as exc:
                out.errors.append(exc)
        return out

    def push(self, meter: MeterContext, body: object, *, source: Source = Source.PUSH) -> Batch:
        """The values of the instantaneous push (IS 15959: logical device name, clock, then the
        instantaneous profile's columns after its clock). A push of identity strings alone
        (the identification push of a dialling meter) has no readings and is no error."""
        out = Batch()
        where = f"meter {meter.meter_id}: push"
        try:
            load = self._profile("instantaneous", meter)
            columns = _push_columns(load)
            if (
                isinstance(body, list | tuple)
                and len(body) != len(columns)
                and all(isinstance(v, bytes | str) for v in body)
            ):
                return out
            values = _cells(body, len(columns), where)
            layout = self._layout(load, columns)
            out.readings.extend(self._cells(_Row(meter, load, where, source, {}), layout, values))
        except NormaliseError as exc:
            out.errors.append(exc)
        return out

    def push_wire(
        self, meter: MeterContext, body: object, *, source: Source = Source.PUSH
    ) -> list[str] | None:
        """The readings of a push as their wire form (``Reading.json_text()`` of each reading
        ``push`` gives, in order, character for character), without building a ``Reading``:
        the fast path of the push, where a push's 26 ``Reading``s were most of its cost.

        None when that takes more than filling forms: the vendor has an adapter (it gets
        ``Reading``s), a column the profile cannot resolve as it is, a value that is no integer
        or at its type's limit (flagged overflow), a push of another shape, a clock that is not
        a date-time. The caller then asks ``push``, which says what is wrong, if anything.
        """
        if self.adapter is not NULL_ADAPTER or not meter.meter_id:
            return None
        wire = self._wire(source)
        if wire is None or not isinstance(body, list | tuple) or len(body) != wire.width:
            return None
        try:
            stamp, quality = self.timestamp(body[wire.clock])
        except NormaliseError:
            return None
        if stamp.tzinfo is not dt.UTC:
            return None
        if wire.interval:
            stamp = self._align(stamp, wire.interval)
        meter_text, stamp_text, quality_text = (
            meter_json(meter.meter_id),
            iso_time(stamp),
            quality_json(quality),
        )
        texts = []
        for column in wire.columns:
            raw = body[column.index]
            if type(raw) is not int or raw in column.overflow:
                return None
            capture = None
            if column.capture is not None:
                at = self._optional_stamp(body[column.capture])
                capture = None if at is None else iso_time(at)
            value = scaled_text(raw * column.factor, column.exponent)
            texts.append(column.form.fill(meter_text, value, stamp_text, quality_text, capture))
        return texts

    def _wire(self, source: Source) -> _Wire | None:
        """``push_wire``'s push from ``source``, resolved once (``_push_wire``)."""
        if source in self._wires:
            return self._wires[source]
        wire = self._wires[source] = self._push_wire(source)
        return wire

    def _push_wire(self, source: Source) -> _Wire | None:
        """The push's ``_layout`` as forms to fill; None if the vendor has no instantaneous
        profile, a column needs the ``Reading`` path (no such quantity, no normalised unit) or
        the rows carry a status."""
        load = self.profile.profile("instantaneous")
        if load is None:
            return None
        columns = _push_columns(load)
        layout = self._layout(load, columns)
        if layout.status is not None or not all(
            v.spec is not None and v.normal for v in layout.values
        ):
            return None
        forms = tuple(
            _WireColumn(
                v.index,
                v.factor,
                v.exponent,
                v.overflow,
                v.capture,
                ReadingForm(v.name, v.unit, source, v.obis, v.interval),
            )
            for v in layout.values
        )
        return _Wire(len(columns), layout.clock, load.interval, forms)

    def json_values(
        self,
        meter: MeterContext,
        timestamp: dt.datetime,
        values: Sequence[tuple[str, Decimal]],
        *,
        source: Source = Source.PUSH,
    ) -> Batch:
        """Values of a JSON uplink record (``[mqtt.json]``): each in its quantity's DLMS unit."""
        out = Batch()
        for name, value in values:
            try:
                spec = self._quantity(name, meter)
                try:
                    normal, unit = to_si(0, 0, spec.unit, count=spec.measure is Measure.COUNT)
                    exponent = UNITS[spec.unit.symbol][1]
                except (ValueError, KeyError):
                    raise NormaliseError(
                        f"meter {meter.meter_id}: {name}: unit {_unit_text(spec.unit)} "
                        "has no normalised form"
                    ) from None
                scaled = value.scaleb(exponent) * TIME_UNITS.get(spec.unit.symbol, 1)
                reading = Reading(
                    meter_id=meter.meter_id,
                    quantity=name,
                    value=scaled + normal,
                    unit=unit,
                    timestamp=timestamp,
                    source=source,
                    obis="",
                )
            except NormaliseError as exc:
                out.errors.append(exc)
            else:
                out.readings.append(self.adapter.adjust_reading(reading, meter))
        return out

    def event_rows(
        self, meter: MeterContext, category: str, rows: Sequence[object], *, source: Source
    ) -> Batch:
        """Rows of one event profile: clock, event code, then the vendor's snapshot columns."""
        if category not in EVENT_CATEGORIES:
            raise NormaliseError(f"meter {meter.meter_id}: no event category {category!r}")
        log = self.profile.events
        obis = log.profiles[EVENT_CATEGORIES.index(category)]
        width = 2 + len(log.snapshot)
        out = Batch()
        for index, row in enumerate(rows):
            where = f"meter {meter.meter_id}: {category} events ({obis}) row {index}"
            try:
                event = self._event(meter, _cells(row, width, where), str(obis), where, source)
            except NormaliseError as exc:
                out.errors.append(exc)
            else:
                out.events.append(self.adapter.adjust_event(event, meter))
        return out

    def _event(
        self, meter: MeterContext, cells: Sequence[object], obis: str, where: str, source: Source
    ) -> Event:
        log = self.profile.events
        stamp, quality = self._stamp(cells[0], where)
        code = cells[1]
        entry = log.code(code) if type(code) is int else None
        if entry is None:
            raise NormaliseError(
                f"{where}: event code {_describe(code)} is not in the "
                f"{self.profile.name} code table ({self.profile.source})"
            )
        snapshot = tuple(
            self.reading(meter, name, raw, at=stamp, source=source, quality=quality)
            for name, raw in zip(log.snapshot, cells[2:], strict=True)
        )
        return entry.event(meter.meter_id, stamp, source, obis, quality, snapshot=snapshot)

    # -- internals ---------------------------------------------------------------------------

    def _cells(self, row: _Row, layout: _Layout, values: Sequence[object]) -> list[Reading]:
        """The readings of one row: all of them, or a ``NormaliseError`` for the first bad cell."""
        meter, load, where = row.meter, row.load, row.where
        stamp, quality = self._stamp(values[layout.clock], where)
        if load.interval:
            stamp = self._align(stamp, load.interval)
        if layout.status is not None:
            quality |= self._status_quality(values[layout.status], where)
        adjust = None if self.adapter is NULL_ADAPTER else self.adapter.adjust_reading
        meter_id, source, scalers = meter.meter_id, row.source, row.scalers
        readings = []
        for column in layout.values:
            name = column.name
            if column.spec is None:
                self._quantity(name, meter)  # raises: the profile has no such quantity
            capture = None
            if column.capture is not None:
                capture = self._optional_stamp(values[column.capture])
            raw = values[column.index]
            if type(raw) is int and column.normal and name not in scalers:
                reading = Reading(
                    meter_id,
                    name,
                    _scaled(raw * column.factor, column.exponent),
                    column.unit,
                    stamp,
                    source,
                    column.obis,
                    column.interval,
                    quality | Quality.OVERFLOW if raw in column.overflow else quality,
                    capture,
                )
                readings.append(reading if adjust is None else adjust(reading, meter))
                continue
            try:  # the single-value path: a scaler from the meter, or what is wrong
                reading = self.reading(
                    meter,
                    name,
                    raw,
                    at=stamp,
                    source=source,
                    scaler_unit=scalers.get(name),
                    quality=quality,
                    capture_time=capture,
                    interval=column.interval,
                )
            except NormaliseError as exc:
                raise NormaliseError(f"{where}: column {name}: {exc}") from None
            readings.append(reading)
        return readings

    def _layout(self, load: LoadProfile, columns: tuple[str, ...]) -> _Layout:
        """``columns`` of rows of ``load``, resolved once (the profile never changes)."""
        key = (load.name, columns)
        layout = self._layouts.get(key)
        if layout is None:
            layout = self._layouts[key] = self._resolve(load, columns)
        return layout

    def _resolve(self, load: LoadProfile, columns: tuple[str, ...]) -> _Layout:
        where = {name: index for index, name in enumerate(columns)}  # the last, as a dict did
        values = tuple(
            self._value(load, name, where[name], where.get(f"{name}{CAPTURE_TIME}"))
            for name in columns
            if name not in _PUSH_HEAD and not name.endswith(CAPTURE_TIME) and name != STATUS
        )
        return _Layout(where["clock"], where.get(STATUS), values)

    def _value(self, load: LoadProfile, name: str, index: int, capture: int | None) -> _Value:
        """The value column ``name`` of rows of ``load``, at ``index``."""
        spec = self._by_name.get(name)
        if spec is None:  # an error at every row (``_cells``): nothing else is used
            return _Value(index, name, None, "", 0, 1, "", False, frozenset(), None, capture)
        symbol = spec.unit.symbol
        normal, power = UNITS.get(symbol, ("", 0))
        return _Value(
            index=index,
            name=name,
            spec=spec,
            obis=str(spec.obis),
            exponent=spec.scaler + power,
            factor=TIME_UNITS.get(symbol, 1),
            unit="count" if spec.measure is Measure.COUNT else normal,
            normal=symbol in UNITS,
            overflow=_OVERFLOW[spec.type],
            interval=(load.interval or None) if spec.measure in _INTERVAL_MEASURES else None,
            capture=capture,
        )

    def _stamp(self, value: object, where: str) -> tuple[dt.datetime, Quality]:
        try:
            return self.timestamp(value)
        except NormaliseError as exc:
            raise NormaliseError(f"{where}: {exc}") from None

    def _status_quality(self, value: object, where: str) -> Quality:
        """The quality flags of a row's profile status (an unsigned: 0..255)."""
        if type(value) is not int or not 0 <= value <= 0xFF:
            raise NormaliseError(
                f"{where}: column {STATUS} ({self.profile.objects.profile_status}): expected "
                f"the profile status, an integer 0..255 (unsigned), got {_describe(value)}"
            )
        return _PROFILE_STATUS[value]

    def _optional_stamp(self, value: object) -> dt.datetime | None:
        """A capture time: None when the meter has none yet (all fields unspecified)."""
        if type(value) is bytes and value in self._captures:
            return self._captures[value]
        try:
            stamp: dt.datetime | None = self.timestamp(value)[0]
        except NormaliseError:
            stamp = None
        if type(value) is bytes:
            if len(self._captures) >= _CAPTURES:
                self._captures.clear()
            self._captures[value] = stamp
        return stamp

    def _date_time(self, value: object, what: str) -> DateTime:
        if isinstance(value, DateTime):
            return value
        if isinstance(value, bytes | bytearray) and len(value) == 12:
            try:
                return DateTime.from_octets(bytes(value))
            except RemoteProtocolError as exc:
                raise NormaliseError(f"{what}: {exc}") from None
        raise NormaliseError(f"{what}: expected a date-time (12 octets), got {_describe(value)}")

    def _utc(self, stamp: DateTime, what: str) -> dt.datetime:
        try:
            moment = stamp.to_datetime()
        except ValueError as exc:
            raise NormaliseError(f"{what}: {exc}") from None
        if moment.tzinfo is None:  # no deviation: the vendor's local time
            moment = (moment - dt.timedelta(minutes=self.profile.utc_offset)).replace(tzinfo=dt.UTC)
        return moment

    @staticmethod
    def _clock_quality(stamp: DateTime) -> Quality:
        status = stamp.clock_status or 0
        quality = Quality(0)
        if status & _STATUS_INVALID:
            quality |= Quality.CLOCK_INVALID
        if status & _STATUS_DOUBTFUL:
            quality |= Quality.CLOCK_DOUBTFUL
        return quality

    def _align(self, stamp: dt.datetime, interval: int) -> dt.datetime:
        """The nearest interval boundary of the meter's local time (days start at midnight)."""
        offset = self.profile.utc_offset * 60
        local = stamp.timestamp() + offset
        boundary = round(local / interval) * interval
        return dt.datetime.fromtimestamp(boundary - offset, dt.UTC)

    def _quantity(self, name: str, meter: MeterContext) -> Quantity:
        spec = self._by_name.get(name)
        if spec is None:
            raise NormaliseError(
                f"meter {meter.meter_id}: vendor {self.profile.name} has no quantity {name!r}"
            )
        return spec

    def _profile(self, name: str, meter: MeterContext) -> LoadProfile:
        load = self.profile.profile(name)
        if load is None:
            raise NormaliseError(
                f"meter {meter.meter_id}: vendor {self.profile.name} has no {name} profile"
            )
        return load


def _scaled(raw: int, exponent: int) -> Decimal:
    """``raw * 10**exponent``, exactly, without trailing zeros (what ``canonical`` makes of it)."""
    if exponent >= 0 or not raw:
        return Decimal(raw * 10**exponent) if exponent > 0 else Decimal(raw)
    while exponent < 0 and not raw % 10:
        raw //= 10
        exponent += 1
    return Decimal(raw).scaleb(exponent) if exponent else Decimal(raw)


def _push_columns(load: LoadProfile) -> tuple[str, ...]:
    """The columns of a push (IS 15959): logical device name, clock, then ``load``'s after its
    clock."""
    return (*_PUSH_HEAD, *load.columns[1:])


def _cells(row: object, width: int, where: str) -> Sequence[object]:
    if not isinstance(row, list | tuple):
        raise NormaliseError(f"{where}: expected a structure of {width}, got {_describe(row)}")
    if len(row) != width:
        raise NormaliseError(f"{where}: expected {width} values, got {len(row)}")
    return row


def _same_dimension(meter: Unit | int, profile: Unit) -> bool:
    if not isinstance(meter, Unit):
        return False
    normal = UNITS.get(meter.symbol, (None, 0))[0]
    return normal is not None and normal == UNITS.get(profile.symbol, (None, 0))[0]


def _unit_text(unit: Unit | int) -> str:
    return unit.symbol or "none" if isinstance(unit, Unit) else f"code {unit}"


def _describe(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"octets {bytes(value[:16]).hex().upper()}{'…' if len(value) > 16 else ''}"
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'…' if len(text) > 40 else ''}"
