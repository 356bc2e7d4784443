"""Ground truth: what a simulated meter measures, exactly, and what it reports.

``value(meter, quantity, t)`` is the exact value of a canonical quantity at simulated time ``t``
in the quantity's canonical unit (Wh, VAh, varh, V, A, Hz, W, VA, var, minutes, counts; power
factor unitless), before the vendor's scaler. ``raw(meter, quantity, t)`` is the integer the meter
puts in its register for it, given the vendor's scaler, unit and type:

* cumulative energies, maximum demand, durations and counts are floored (meters never show energy
  they have not measured);
* block energies are the difference of the floored register at the block's two ends, so the
  blocks of a day add up to the register's advance exactly;
* instantaneous values and block averages are rounded to the nearest, halves away from zero;
* unsigned registers roll over at their type's width, signed ones saturate.

Block-based quantities (block energy, averages, maximum demand) follow the meter's own clock:
a block ends when the meter's clock shows a multiple of the block interval.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from decimal import Context, Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Final

from adapters.cosem_map import ProfileStatus, Quantity
from adapters.is15959 import TIME_UNITS, Measure
from hesd.sim import load
from hesd.sim.timebase import DAY, IST, ClockMap, month_index, month_start
from protocols.dlms.axdr import Tag

if TYPE_CHECKING:
    from hesd.sim.model import SimulatedMeter

__all__ = [
    "average",
    "billing_demand",
    "block_end",
    "block_raw",
    "capture_time",
    "max_demand",
    "profile_status",
    "raw",
    "raw_of",
    "scale",
    "value",
]

_CONTEXT: Final = Context(prec=40)
_ENERGY_SHARE: Final = {"lag": Fraction(3, 4), "lead": Fraction(1, 4)}  # of the initial reading
_BITS: Final = {
    Tag.INTEGER: (8, True),
    Tag.LONG: (16, True),
    Tag.DOUBLE_LONG: (32, True),
    Tag.LONG64: (64, True),
    Tag.UNSIGNED: (8, False),
    Tag.LONG_UNSIGNED: (16, False),
    Tag.DOUBLE_LONG_UNSIGNED: (32, False),
    Tag.LONG64_UNSIGNED: (64, False),
}


def value(meter: SimulatedMeter, quantity: str, t: float) -> Decimal:
    """The exact value of ``quantity`` at ``t`` in its canonical unit (``KeyError``: unknown)."""
    exact = _exact(meter, quantity, t)
    return _CONTEXT.divide(Decimal(exact.numerator), Decimal(exact.denominator))


def raw(meter: SimulatedMeter, quantity: str, t: float) -> int:
    """The integer the meter reports for ``quantity`` at ``t`` (``KeyError``: the meter's vendor
    has no such quantity)."""
    return raw_of(meter, meter.tables.quantities[quantity], t)


def raw_of(meter: SimulatedMeter, quantity: Quantity, t: float) -> int:
    if quantity.measure is Measure.BLOCK:
        return block_raw(meter, quantity, block_end(meter, t))
    return scale(quantity, _exact(meter, quantity.name, t))


def scale(quantity: Quantity, exact: Fraction) -> int:
    """The register value of an exact value of ``quantity``, rounded as the module says."""
    scaled = _scaled(quantity, exact)
    if quantity.measure in (Measure.INSTANT, Measure.AVERAGE):
        rounded = math.floor(abs(scaled) + Fraction(1, 2))
        return _wrap(rounded if scaled >= 0 else -rounded, quantity.type)
    return _wrap(math.floor(scaled), quantity.type)


def block_raw(
    meter: SimulatedMeter, quantity: Quantity, end: int, memo: dict[int, int] | None = None
) -> int:
    """Register value of block energy ``quantity`` for the block ending at meter time ``end``.

    ``memo`` keeps the floored register at block ends between calls for one quantity, so that a
    run of consecutive blocks computes each end once.
    """
    memo = {} if memo is None else memo

    def floored(label: int) -> int:
        found = memo.get(label)
        if found is None:
            found = memo[label] = math.floor(
                _scaled(quantity, _block_register(meter, quantity.name, label))
            )
        return found

    return _wrap(floored(end) - floored(end - meter.tables.block_interval), quantity.type)


def capture_time(meter: SimulatedMeter, quantity: str, t: float) -> float:
    """Meter-clock time at which the maximum demand ``quantity`` was captured."""
    if quantity not in ("demand_active_max", "demand_apparent_max"):
        raise KeyError(f"{quantity} has no capture time")
    return max_demand(meter, meter.clock.meter_time(t))[1]


def _scaled(quantity: Quantity, exact: Fraction) -> Fraction:
    if quantity.unit.symbol in TIME_UNITS:
        exact = exact * 60 / TIME_UNITS[quantity.unit.symbol]  # canonical unit: minutes
    return exact / Fraction(10) ** quantity.scaler


def _wrap(number: int, type_: Tag) -> int:
    bits, signed = _BITS[type_]
    if signed:
        limit = 1 << (bits - 1)
        return max(-limit, min(limit - 1, number))
    return number % (1 << bits)


# -- the quantities ---------------------------------------------------------------------------


def _exact(meter: SimulatedMeter, name: str, t: float) -> Fraction:
    return _FUNCTIONS[name](meter, t)


@functools.lru_cache(maxsize=16384)
def _at_start(p: load.LoadParams, start: float) -> tuple[int, int, int]:
    """(active, night, export) energy integrals at the meter's start, J."""
    return load.active_energy(p, start), load.night_energy(p, start), load.export_energy(p, start)


def _active_j(meter: SimulatedMeter, t: float) -> int:
    p, start = meter.params, meter.start
    return p.initial_wh * 3600 + load.active_energy(p, max(t, start)) - _at_start(p, start)[0]


def _night_j(meter: SimulatedMeter, t: float) -> int:
    p, start = meter.params, meter.start
    return load.night_energy(p, max(t, start)) - _at_start(p, start)[1]


def _export_j(meter: SimulatedMeter, t: float) -> int:
    p, start = meter.params, meter.start
    return load.export_energy(p, max(t, start)) - _at_start(p, start)[2]


def _wh(joules: Fraction | int) -> Fraction:
    return Fraction(joules, 3600)


def _triangle(meter: SimulatedMeter) -> tuple[int, int, int]:
    return meter.params.triangle


def energy_active_import(meter: SimulatedMeter, t: float) -> Fraction:
    return _wh(_active_j(meter, t))


def energy_apparent_import(meter: SimulatedMeter, t: float) -> Fraction:
    a, _, c = _triangle(meter)
    return _wh(Fraction(_active_j(meter, t) * c, a))


def energy_reactive_lag(meter: SimulatedMeter, t: float) -> Fraction:
    a, b, _ = _triangle(meter)
    initial = meter.params.initial_wh * 3600 * _ENERGY_SHARE["lag"]
    day = _active_j(meter, t) - meter.params.initial_wh * 3600 - _night_j(meter, t)
    return _wh((initial + day) * b / a)


def energy_reactive_lead(meter: SimulatedMeter, t: float) -> Fraction:
    a, b, _ = _triangle(meter)
    initial = meter.params.initial_wh * 3600 * _ENERGY_SHARE["lead"]
    return _wh((initial + _night_j(meter, t)) * b / a)


def energy_active_export(meter: SimulatedMeter, t: float) -> Fraction:
    return _wh(_export_j(meter, t))


def _night(t: float) -> bool:
    return load._split(t)[1] < load.NIGHT_SLOTS


def active_power(meter: SimulatedMeter, t: float) -> Fraction:
    return load.power(meter.params, t)


def apparent_power(meter: SimulatedMeter, t: float) -> Fraction:
    a, _, c = _triangle(meter)
    return load.power(meter.params, t) * c / a


def reactive_power(meter: SimulatedMeter, t: float) -> Fraction:
    a, b, _ = _triangle(meter)
    q = load.power(meter.params, t) * b / a
    return -q if _night(t) else q  # leading (capacitive) at night: negative


def power_factor(meter: SimulatedMeter, t: float) -> Fraction:
    a, _, c = _triangle(meter)
    return Fraction(-a if _night(t) else a, c)  # signed: negative when leading


def _voltage(phase: int) -> Callable[[SimulatedMeter, float], Fraction]:
    def voltage(meter: SimulatedMeter, t: float) -> Fraction:
        return Fraction(load.voltage_mv(meter.params, phase, t), 1000)

    return voltage


def _phase_current(meter: SimulatedMeter, phase: int, power: Fraction, volts_mv: int) -> int:
    """Phase current in µA (to the nearest): the phase's share of the power at the voltage and
    power factor."""
    if not volts_mv:
        return 0
    a, _, c = _triangle(meter)
    numerator = power.numerator * meter.params.shares[phase] * c * 1_000_000
    denominator = power.denominator * a * volts_mv
    return (2 * numerator + denominator) // (2 * denominator)


def _current(phase: int) -> Callable[[SimulatedMeter, float], Fraction]:
    def current(meter: SimulatedMeter, t: float) -> Fraction:
        volts = load.voltage_mv(meter.params, phase, t)
        return Fraction(_phase_current(meter, phase, load.power(meter.params, t), volts), 10**6)

    return current


def current_neutral(meter: SimulatedMeter, t: float) -> Fraction:
    # phasor sum of three currents 120° apart, in phase with their voltages' power factor
    i1, i2, i3 = (_current(p)(meter, t) for p in range(3))
    square = i1 * i1 + i2 * i2 + i3 * i3 - i1 * i2 - i2 * i3 - i3 * i1
    root = _CONTEXT.sqrt(_CONTEXT.divide(Decimal(square.numerator), Decimal(square.denominator)))
    return Fraction(root.quantize(Decimal("0.000001"), context=_CONTEXT))


def frequency(meter: SimulatedMeter, t: float) -> Fraction:
    return Fraction(load.frequency_mhz(meter.params, t), 1000)


def power_on_duration(meter: SimulatedMeter, t: float) -> Fraction:
    start = meter.start
    t = max(t, start)
    seconds = int(t - start) - load.outage_seconds(meter.params, start, t)
    return Fraction(max(0, seconds), 60)


def tamper_count(meter: SimulatedMeter, t: float) -> Fraction:
    return Fraction(meter.tamper_count_at(t))


def billing_count(meter: SimulatedMeter, t: float) -> Fraction:
    clock = meter.clock
    return Fraction(
        month_index(clock.meter_time(max(t, meter.start)))
        - month_index(clock.meter_time(meter.start))
    )


# -- block-based quantities: on the meter's clock ----------------------------------------------


def block_end(meter: SimulatedMeter, t: float) -> int:
    """Meter-clock time at which the last block completed by ``t`` ended."""
    interval = meter.tables.block_interval
    return int((meter.clock.meter_time(t) + 1e-6) // interval) * interval


def _block_register(meter: SimulatedMeter, name: str, end: float) -> Fraction:
    register = (
        "energy_active_import" if name == "block_energy_active_import" else "energy_apparent_import"
    )
    return _FUNCTIONS[register](meter, meter.clock.true_time(end))


def block_energy(name: str) -> Callable[[SimulatedMeter, float], Fraction]:
    def energy(meter: SimulatedMeter, t: float) -> Fraction:
        end = block_end(meter, t)
        before = _block_register(meter, name, end - meter.tables.block_interval)
        return _block_register(meter, name, end) - before

    return energy


def _block_slots(meter: SimulatedMeter, end: int) -> list[int]:
    """Slot indices (since 1970 IST) of the block ending at meter time ``end``."""
    interval = meter.tables.block_interval
    first = meter.clock.true_time(end - interval)
    return [(int(first // 1) + IST) // load.SLOT + j for j in range(interval // load.SLOT)]


def voltage_avg(meter: SimulatedMeter, t: float) -> Fraction:
    return average("voltage_avg", meter, block_end(meter, t))


def current_avg(meter: SimulatedMeter, t: float) -> Fraction:
    return average("current_avg", meter, block_end(meter, t))


def average(name: str, meter: SimulatedMeter, end: int) -> Fraction:
    """Block average ``name`` over the block ending at meter time ``end``."""
    slots = _block_slots(meter, end)
    if name == "current_avg":
        return _current_avg(meter, slots)
    total = sum(load.slot_voltage_mv(meter.params, p, s) for s in slots for p in range(3))
    return Fraction(total, 1000 * 3 * len(slots))


def _current_avg(meter: SimulatedMeter, slots: list[int]) -> Fraction:
    p = meter.params
    total = 0
    for s in slots:
        watts = Fraction(load.slot_power(p, s * load.SLOT - IST))
        total += sum(
            _phase_current(meter, ph, watts, load.slot_voltage_mv(p, ph, s)) for ph in range(3)
        )
    return Fraction(total, 3 * len(slots) * 10**6)


def profile_status(meter: SimulatedMeter, begin: float, end: float) -> int:
    """The AMR profile status of the interval from meter time ``begin`` to ``end``: power down
    when a supply failure overlaps it, clock adjusted when the clock was set or shifted during
    it (into it: the row that flags a setting is the one whose interval holds the new time)."""
    p, clock = meter.params, meter.clock
    first, last = max(clock.true_time(begin), meter.start), clock.true_time(end)
    status = ProfileStatus(0)
    # load.outages lists failures by their start; each lasts outage_s seconds
    if any(stop > first for _, stop in load.outages(p, first - p.outage_s, last)):
        status |= ProfileStatus.POWER_DOWN
    if any(first <= t < last for t in meter.clock_sets):
        status |= ProfileStatus.CLOCK_ADJUSTED
    return int(status)


def max_demand(meter: SimulatedMeter, m: float) -> tuple[Fraction, float]:
    """(maximum active demand in W, meter time of its period's end) of the billing month holding
    meter time ``m``, over the demand periods completed by ``m``."""
    month = month_index(m)
    first = month_start(month)
    last = int((m + 1e-6) // meter.tables.block_interval) * meter.tables.block_interval
    return _demand_between(meter, first, last)


def _demand_between(meter: SimulatedMeter, first: int, last: int) -> tuple[Fraction, float]:
    """Maximum demand over the periods ending in (first, last], meter times on period ends."""
    p, start, clock, interval = meter.params, meter.start, meter.clock, meter.tables.block_interval
    if not clock.identity:  # periods follow the meter's clock: scan them one by one
        joules, at = _scan(p, start, clock, interval=interval, first=first, last=last)
        return Fraction(joules, interval), at
    # on true time, whole days after the start's day come from load.day_peak (cached)
    best, at = 0, float(first)
    cursor = first
    after_start = (int(start + IST) // DAY + 1) * DAY - IST  # the midnight after the start
    if cursor < after_start:  # the start's day, where registers begin: period by period
        best, at = _scan(
            p, start, clock, interval=interval, first=cursor, last=min(last, after_start)
        )
        cursor = max(cursor, min(last, after_start))
    while cursor < last:  # midnight to midnight, or to the last period of the last day
        blocks = min(DAY, last - cursor) // interval
        joules, end = load.block_peak(p, (cursor + IST) // DAY, interval, blocks)
        if joules > best:
            best, at = joules, float(cursor + end)
        cursor += DAY
    return Fraction(best, interval), at


def _scan(
    p: load.LoadParams, start: float, clock: ClockMap, *, interval: int, first: int, last: int
) -> tuple[int, float]:
    """(joules, meter time of its end) of the biggest period ending in (first, last]."""
    best, at = 0, float(first)
    previous = load.active_energy(p, max(start, clock.true_time(first)))
    for end in range(first + interval, last + 1, interval):
        energy = load.active_energy(p, max(start, clock.true_time(end)))
        if energy - previous > best:
            best, at = energy - previous, float(end)
        previous = energy
    return best, at


def demand_active_max(meter: SimulatedMeter, t: float) -> Fraction:
    return max_demand(meter, meter.clock.meter_time(t))[0]


def demand_apparent_max(meter: SimulatedMeter, t: float) -> Fraction:
    a, _, c = _triangle(meter)
    return demand_active_max(meter, t) * c / a


def billing_demand(meter: SimulatedMeter, billing_end: int) -> tuple[Fraction, float]:
    """Maximum active demand of the billing month that ended at meter time ``billing_end``."""
    first = month_start(month_index(billing_end - 1))
    return _demand_between(meter, first, billing_end)


_FUNCTIONS: Final[dict[str, Callable[[SimulatedMeter, float], Fraction]]] = {
    "voltage_l1": _voltage(0),
    "voltage_l2": _voltage(1),
    "voltage_l3": _voltage(2),
    "current_l1": _current(0),
    "current_l2": _current(1),
    "current_l3": _current(2),
    "current_neutral": current_neutral,
    "power_factor_l1": power_factor,
    "power_factor_l2": power_factor,
    "power_factor_l3": power_factor,
    "power_factor": power_factor,
    "frequency": frequency,
    "active_power": active_power,
    "apparent_power": apparent_power,
    "reactive_power": reactive_power,
    "energy_active_import": energy_active_import,
    "energy_active_export": energy_active_export,
    "energy_apparent_import": energy_apparent_import,
    "energy_apparent_export": energy_active_export,  # solar exports at unity power factor
    "energy_reactive_lag": energy_reactive_lag,
    "energy_reactive_lead": energy_reactive_lead,
    "demand_active_max": demand_active_max,
    "demand_apparent_max": demand_apparent_max,
    "block_energy_active_import": block_energy("block_energy_active_import"),
    "block_energy_apparent_import": block_energy("block_energy_apparent_import"),
    "voltage_avg": voltage_avg,
    "current_avg": current_avg,
    "power_on_duration": power_on_duration,
    "tamper_count": tamper_count,
    "billing_count": billing_count,
}
