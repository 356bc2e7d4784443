"""Profile generic objects (Blue Book 4.3.6, IC 7) of a simulated meter, computed on demand.

No row is ever stored. A profile's entries are keys (the meter-clock time a row was captured, or
an event), listed from the load model and the meter's clock; selective access picks keys and
columns first, and only the picked rows are computed.

* instantaneous: one row, captured at the read;
* block load: a row at every multiple of the block interval on the meter's clock, with the
  block's energy and averages;
* daily load: a row at 00:00 IST with the cumulative registers;
* a "status" column (block or daily load) is the AMR profile status of the row's interval:
  power down when a supply failure of the load model overlaps it, clock adjusted when the
  clock was set or shifted during it (``truth.profile_status``);
* billing: a row at 00:00 IST on the 1st of every month with the registers and the month's
  maximum demand;
* event profiles: clock, event code and the vendor's snapshot quantities at the event;
* nameplate and IS 15959 scaler profiles: one row.

Only rows after the meter's start and no more than the profile's depth exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Final

from adapters.cosem_map import CAPTURE_TIME, STATUS
from adapters.is15959 import Measure
from hesd.sim import truth
from hesd.sim.events import Event, category_events
from hesd.sim.objects import Kind, ObjectDef, capture_object
from hesd.sim.timebase import DAY, IST, date_time_octets, instant_of, month_index, month_start
from protocols.dlms.apdu import AccessSelection, DataAccessResult
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit
from protocols.dlms.obis import ObisCode
from protocols.errors import RemoteProtocolError

if TYPE_CHECKING:
    from hesd.sim.model import SimulatedMeter

__all__ = ["attribute", "entries", "push_values"]

_NO_SORT_OBJECT: Final = capture_object(0, ObisCode(0, 0, 0, 0, 0, 0), 0)
_FIFO: Final = Typed(Tag.ENUM, 1)  # Blue Book 4.3.6 sort_method: 1 fifo


@dataclass(frozen=True, slots=True)
class _Profile:
    """What one profile generic object is for one read: its columns and entries."""

    captures: tuple[Typed, ...]
    columns: tuple[str, ...]  # per capture object: "clock", quantity, "...capture_time", ...
    period: int  # capture_period
    depth: int  # profile_entries


def _profile(meter: SimulatedMeter, definition: ObjectDef) -> _Profile:
    tables = meter.tables
    kind, ref = definition.kind, definition.ref
    if kind is Kind.LOAD_PROFILE:
        load = tables.profiles[ref]
        return _Profile(tables.capture[ref], load.columns, load.interval, load.depth)
    if kind is Kind.EVENT_PROFILE:
        columns = ("clock", "event_code", *tables.profile.events.snapshot)
        depth = tables.profile.events.depths[definition.index]
        return _Profile(tables.capture[f"event:{ref}"], columns, 0, depth)
    if kind is Kind.NAMEPLATE:
        columns = tuple(k.value for k, _ in tables.nameplate_columns())
        return _Profile(tables.capture["nameplate"], columns, 0, 1)
    columns = tables.scaler_columns[ref]  # SCALER_PROFILE, EVENT_SCALER_PROFILE
    return _Profile(tables.capture[f"scaler:{ref}"], columns, 0, 1)


def entries(meter: SimulatedMeter, definition: ObjectDef, now: float) -> list[float | Event]:
    """The keys of the profile's rows at ``now``, oldest first: meter-clock capture times, or
    events for event profiles."""
    kind = definition.kind
    if kind is Kind.EVENT_PROFILE:
        return list(
            category_events(
                meter.params,
                meter.tables.profile.events,
                meter.event_log,
                definition.index,
                start=meter.start,
                now=now,
            )
        )
    m = meter.clock.meter_time(now)
    if kind is not Kind.LOAD_PROFILE or definition.ref == "instantaneous":
        return [m]
    load = meter.tables.profiles[definition.ref]
    first = meter.clock.meter_time(meter.start)
    if definition.ref == "billing":
        months = range(
            max(month_index(first) + 1, month_index(m) - load.depth + 1), month_index(m) + 1
        )
        return [float(month_start(i)) for i in months]
    step = load.interval
    offset = IST if step == DAY else 0  # days begin at 00:00 IST
    last = int((m + offset + 1e-6) // step)
    begin = max(int((first + offset) // step) + 1, last - load.depth + 1)
    return [float(k * step - offset) for k in range(begin, last + 1)]


def attribute(
    meter: SimulatedMeter,
    definition: ObjectDef,
    index: int,
    access: AccessSelection | None,
    now: float,
) -> Value | DataAccessResult:
    """Attribute ``index`` of a profile generic object."""
    profile = _profile(meter, definition)
    if index == 2:
        return _buffer(meter, definition, profile, access, now)
    if index == 3:
        return list(profile.captures)
    if index == 4:
        return Typed(Tag.DOUBLE_LONG_UNSIGNED, profile.period)
    if index == 5:
        return _FIFO
    if index == 6:
        return _NO_SORT_OBJECT
    if index == 7:
        return Typed(Tag.DOUBLE_LONG_UNSIGNED, len(entries(meter, definition, now)))
    if index == 8:
        return Typed(Tag.DOUBLE_LONG_UNSIGNED, profile.depth)
    return DataAccessResult.OBJECT_UNAVAILABLE


# -- selective access (Blue Book 4.3.6) ----------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, Typed):
        value = value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _instant(value: object) -> float | None:
    """The instant a from/to value names; None: open (a date-time with unspecified fields)."""
    if isinstance(value, DateTime):
        return instant_of(value)
    if isinstance(value, bytes) and len(value) == 12:
        try:
            return instant_of(DateTime.from_octets(value))
        except RemoteProtocolError:
            return None
    raise _BadParameters


def _capture_key(value: object) -> tuple[int, bytes, int]:
    if not isinstance(value, list) or len(value) != 4:
        raise _BadParameters
    class_id, name, attr, _ = value
    if type(class_id) is not int or not isinstance(name, bytes) or type(attr) is not int:
        raise _BadParameters
    return class_id, name, attr


class _BadParameters(Exception):
    """Selective access parameters that are not what the access selector takes."""


def _range_parameters(params: object) -> tuple[object, object, object, list[object]]:
    if not isinstance(params, list) or len(params) != 4 or not isinstance(params[3], list):
        raise _BadParameters
    restricting, low, high, selected = params
    return restricting, low, high, selected


def _entry_parameters(params: object) -> tuple[int, int, int, int]:
    if not isinstance(params, list) or len(params) != 4:
        raise _BadParameters
    if not all(type(p) is int and p >= 0 for p in params):
        raise _BadParameters
    first, last, first_column, last_column = params
    return first, last, first_column, last_column


def _select(
    meter: SimulatedMeter,
    profile: _Profile,
    keys: list[float | Event],
    access: AccessSelection | None,
) -> tuple[list[float | Event], list[int]] | DataAccessResult:
    everything = list(range(len(profile.captures)))
    if access is None:
        return keys, everything
    params = _plain(access.parameters)
    try:
        if access.selector == 1:  # range_descriptor
            return _by_range(meter, profile, keys, _range_parameters(params))
        if access.selector == 2:  # entry_descriptor: entries and columns 1-based, 0 = last
            first, last, first_col, last_col = _entry_parameters(params)
            last = last or len(keys)
            last_col = last_col or len(everything)
            return keys[max(first, 1) - 1 : last], everything[max(first_col, 1) - 1 : last_col]
    except _BadParameters:
        return DataAccessResult.TYPE_UNMATCHED
    return DataAccessResult.OTHER_REASON  # no other access selector


def _by_range(
    meter: SimulatedMeter,
    profile: _Profile,
    keys: list[float | Event],
    params: tuple[object, object, object, list[object]],
) -> tuple[list[float | Event], list[int]] | DataAccessResult:
    restricting, low, high, selected = params
    clock = (8, meter.tables.profile.objects.clock.to_bytes(), 2)
    if _capture_key(restricting) != clock or profile.columns[0] != "clock":
        return DataAccessResult.OTHER_REASON  # only the clock restricts a range here
    start, end = _instant(low), _instant(high)
    columns = list(range(len(profile.captures)))
    if selected:
        known = [_capture_key(_plain(c)) for c in profile.captures]
        wanted = [_capture_key(c) for c in selected]
        if any(w not in known for w in wanted):
            return DataAccessResult.OTHER_REASON  # a column this profile does not capture
        columns = [known.index(w) for w in wanted]
    picked = [
        key
        for key in keys
        if (start is None or _label(meter, key) >= start)
        and (end is None or _label(meter, key) <= end)
    ]
    return picked, columns


def _label(meter: SimulatedMeter, key: float | Event) -> float:
    return meter.clock.meter_time(key.time) if isinstance(key, Event) else key


# -- rows ---------------------------------------------------------------------------------------


def _buffer(
    meter: SimulatedMeter,
    definition: ObjectDef,
    profile: _Profile,
    access: AccessSelection | None,
    now: float,
) -> Value | DataAccessResult:
    selection = _select(meter, profile, entries(meter, definition, now), access)
    if isinstance(selection, DataAccessResult):
        return selection
    keys, columns = selection
    names = [profile.columns[c] for c in columns]
    kind = definition.kind
    if kind is Kind.NAMEPLATE:
        return [tuple(meter.string_value(Kind(name)) for name in names) for _ in keys]
    if kind in (Kind.SCALER_PROFILE, Kind.EVENT_SCALER_PROFILE):
        return [tuple(_scaler_unit(meter, name) for name in names) for _ in keys]
    if kind is Kind.EVENT_PROFILE:
        return [_event_row(meter, key, names) for key in keys if isinstance(key, Event)]
    mode = definition.ref
    memo: dict[str, dict[int, int]] = {name: {} for name in names}  # block registers, by column
    return [
        _row(meter, names, key, now=now if mode == "instantaneous" else None, mode=mode, memo=memo)
        for key in keys
        if not isinstance(key, Event)
    ]


def _scaler_unit(meter: SimulatedMeter, name: str) -> Value:
    quantity = meter.tables.quantities[name]
    return ScalerUnit(quantity.scaler, quantity.unit).to_value()


def _event_row(meter: SimulatedMeter, event: Event, names: Sequence[str]) -> tuple[Value, ...]:
    cells: list[Value] = []
    for name in names:
        if name == "clock":
            cells.append(date_time_octets(meter.clock.meter_time(event.time)))
        elif name == "event_code":
            cells.append(Typed(Tag.LONG_UNSIGNED, event.code))
        else:
            quantity = meter.tables.quantities[name]
            cells.append(Typed(quantity.type, truth.raw_of(meter, quantity, event.time)))
    return tuple(cells)


def _row(
    meter: SimulatedMeter,
    names: Sequence[str],
    label: float,
    *,
    now: float | None,
    mode: str,
    memo: dict[str, dict[int, int]] | None = None,
) -> tuple[Value, ...]:
    """One load profile row captured at meter time ``label`` (``now``: the instant itself)."""
    t = now if now is not None else meter.clock.true_time(label)
    block = int(label) if mode == "block_load" else truth.block_end(meter, t)
    demand: tuple[Fraction, float] | None = None
    cells: list[Value] = []
    for name in names:
        if name == "clock":
            cells.append(date_time_octets(label))
            continue
        if name == STATUS:  # block_load and daily_load only: the row's interval before it
            begin = label - meter.tables.profiles[mode].interval
            cells.append(Typed(Tag.UNSIGNED, truth.profile_status(meter, begin, label)))
            continue
        base = name.removesuffix(CAPTURE_TIME)
        quantity = meter.tables.quantities[base]
        measure = quantity.measure
        if measure is Measure.DEMAND:
            if demand is None:
                if mode == "billing":
                    demand = truth.billing_demand(meter, int(label))
                else:
                    demand = truth.max_demand(meter, meter.clock.meter_time(t))
            if base != name:
                cells.append(date_time_octets(demand[1]))
                continue
            a, _, c = meter.params.triangle
            watts = demand[0] if base == "demand_active_max" else demand[0] * c / a
            cells.append(Typed(quantity.type, truth.scale(quantity, watts)))
        elif measure is Measure.BLOCK:
            registers = memo.get(name) if memo is not None else None
            cells.append(Typed(quantity.type, truth.block_raw(meter, quantity, block, registers)))
        elif measure is Measure.AVERAGE:
            exact = truth.average(base, meter, block)
            cells.append(Typed(quantity.type, truth.scale(quantity, exact)))
        else:
            cells.append(Typed(quantity.type, truth.raw_of(meter, quantity, t)))
    return tuple(cells)


def push_values(meter: SimulatedMeter, now: float) -> list[Value]:
    """The instantaneous values a push sends: the instantaneous profile's row without clock."""
    load = meter.tables.profiles.get("instantaneous")
    if load is None:
        return []
    return list(
        _row(meter, load.columns[1:], meter.clock.meter_time(now), now=now, mode="instantaneous")
    )
