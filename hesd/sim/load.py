"""The deterministic load of a simulated meter: a pure function of (seed, simulated time).

Nothing here keeps state or draws random numbers: every value comes from ``LoadParams`` (derived
from the meter's seed) and a hash of (seed, what, index). Time is cut into 15-minute slots of IST;
in slot ``i`` of day ``d`` the active power is constant::

    P(d, i) = shape(i) + swing(d) + weekend(d) + noise(d, i)          [W, an integer]

* ``shape``: base load with a morning and an evening peak (the same every day);
* ``swing``: a day-to-day offset, +s on day 2m and -s on day 2m+1 (s hashed from m);
* ``weekend``: extra load on Saturdays and Sundays;
* ``noise``: +n on slot 2j and -n on slot 2j+1 (n hashed from d and j).

Because swing and noise cancel in pairs, the energy of a whole day is closed-form and a register
at any instant costs O(1) plus one day's table (cached): registers, load-profile blocks, daily
and billing rows are then the same integral, consistent to the joule.

Once every 8 days the supply fails for ``outage_s`` seconds inside one even slot: no energy flows
then, and the following slot makes up exactly what was lost (cold-load pickup), so whole-day sums
stay closed-form. Once every 16 days phase L1 sees an over-voltage for a few minutes.

Energies are integers in joules (W·s); apparent and reactive energy are rational multiples of
active energy (the meter's power triangle is a Pythagorean triple a:b:c, pf = a/c). Reactive
energy is leading (capacitive) from 00:00 to 06:00 and lagging otherwise. 10 % of meters have
rooftop solar that exports at unity power factor from 06:00 to 18:00.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

from hesd.sim.timebase import DAY, IST

__all__ = [
    "NIGHT_SLOTS",
    "SLOT",
    "SLOTS_PER_DAY",
    "LoadParams",
    "active_energy",
    "export_energy",
    "night_energy",
    "outages",
    "over_voltages",
    "params",
    "power",
    "slot_power",
    "supplied",
    "voltage_mv",
]

SLOT: Final = 900  # seconds
SLOTS_PER_DAY: Final = DAY // SLOT
NIGHT_SLOTS: Final = 24  # 00:00-06:00: reactive energy leads
OUTAGE_BLOCK: Final = 8  # days: one supply failure in each
OVER_VOLTAGE_BLOCK: Final = 16  # days: one over-voltage on L1 in each
_M64: Final = (1 << 64) - 1
_EPSILON: Final = 1e-6
# power triangles a:b:c with a² + b² = c² (pf = a/c, between 0.88 and 0.99)
TRIPLES: Final = ((15, 8, 17), (12, 5, 13), (77, 36, 85), (24, 7, 25), (35, 12, 37), (40, 9, 41))
SUN: Final = tuple(  # solar output per slot, per mille of peak: a parabola from 06:00 to 18:00
    max(0, 4000 * (i - 24) * (72 - i) // (48 * 48)) for i in range(SLOTS_PER_DAY)
)
SUN_PREFIX: Final = tuple(sum(SUN[:i]) for i in range(SLOTS_PER_DAY + 1))


def _mix(x: int) -> int:
    """splitmix64's finaliser: a bijective scramble of 64 bits."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def hashed(seed: int, what: int, index: int = 0, modulus: int = 1 << 64) -> int:
    """A deterministic number 0..modulus-1 from (seed, what, index)."""
    return _mix(_mix((seed ^ (what << 48)) & _M64) ^ (index & _M64)) % modulus


# "what" tags of hashed()
_H_NOISE, _H_SWING, _H_OUT_DAY, _H_OUT_SLOT, _H_OUT_AT = 101, 102, 103, 104, 105
_H_OV_DAY, _H_OV_AT, _H_OV_LEN, _H_VOLT, _H_FREQ = 106, 107, 108, 110, 120


@dataclass(frozen=True, slots=True)
class LoadParams:
    """One meter's load, derived from its seed by ``params``."""

    seed: int
    base: int  # W
    morning: tuple[int, int, int]  # W per step, centre slot, half-width in slots
    evening: tuple[int, int, int]
    noise: int  # W, bound of the per-slot noise
    swing: int  # W, bound of the day-to-day offset
    weekend: int  # W, extra on Saturdays and Sundays
    triangle: tuple[int, int, int]  # a:b:c, pf = a/c
    shares: tuple[int, int, int]  # per mille of the load on L1, L2, L3
    nominal_mv: tuple[int, int, int]  # phase voltages, mV
    solar: int  # W peak of rooftop solar, 0 for none
    outage_s: int  # seconds each supply failure lasts
    initial_wh: int  # active import register at the meter's start


@functools.lru_cache(maxsize=4096)
def params(seed: int) -> LoadParams:
    def pick(what: int, n: int) -> int:
        return hashed(seed, what, 0, n)

    base = 300 + pick(1, 1200)
    l1, l2 = 280 + pick(10, 120), 280 + pick(11, 120)
    nominal = 226_000 + pick(12, 10_000)
    morning_width, evening_width = 4 + pick(4, 5), 6 + pick(7, 7)
    return LoadParams(
        seed=seed,
        base=base,
        # peaks: (W per step, centre slot, half-width): at the centre, step * width above base
        morning=(
            base * (20 + pick(2, 100)) // 100 // morning_width,
            26 + pick(3, 9),
            morning_width,
        ),
        evening=(
            base * (60 + pick(5, 160)) // 100 // evening_width,
            74 + pick(6, 11),
            evening_width,
        ),
        noise=base * 15 // 100,
        swing=base * 15 // 100,
        weekend=base * pick(8, 25) // 100,
        triangle=TRIPLES[pick(9, len(TRIPLES))],
        shares=(l1, l2, 1000 - l1 - l2),
        nominal_mv=(
            nominal + pick(13, 4001) - 2000,
            nominal + pick(14, 4001) - 2000,
            nominal + pick(15, 4001) - 2000,
        ),
        solar=1000 + pick(16, 3000) if pick(17, 10) == 0 else 0,
        outage_s=60 + pick(18, 541),
        initial_wh=pick(19, 5_000_000),
    )


def _shape(p: LoadParams, slot: int) -> int:
    """The daily shape: base load plus the triangular morning and evening peaks, W."""
    watts = p.base
    for step, centre, width in (p.morning, p.evening):
        dist = abs(slot - centre)
        watts += step * max(0, width - min(dist, SLOTS_PER_DAY - dist))
    return watts


def _shape_before(p: LoadParams, slot: int) -> int:
    """Σ shape(j) for 0 <= j < slot, looping over the peaks' slots only."""
    total = p.base * slot
    for step, centre, width in (p.morning, p.evening):
        for offset in range(1 - width, width):
            if (centre + offset) % SLOTS_PER_DAY < slot:
                total += step * (width - abs(offset))
    return total


def _shape_total(p: LoadParams) -> int:
    return p.base * SLOTS_PER_DAY + sum(
        step * width * width for step, _, width in (p.morning, p.evening)
    )


def _swing(p: LoadParams, day: int) -> int:
    s = hashed(p.seed, _H_SWING, day // 2, 2 * p.swing + 1) - p.swing
    return s if day % 2 == 0 else -s


def _level(p: LoadParams, day: int) -> int:
    """What day ``day`` adds to every slot: its swing, and the weekend's extra."""
    weekend = p.weekend if day % 7 in (2, 3) else 0  # day 0, 1970-01-01, was a Thursday
    return _swing(p, day) + weekend


def _level_sum(p: LoadParams, days: int) -> int:
    """Σ level(d) for 0 <= d < days: swings cancel in pairs (an odd count leaves its last day),
    and days // 7 weeks have two weekend days each."""
    swings = _swing(p, days - 1) if days % 2 else 0
    weekends = days // 7 * 2 + max(0, min(days % 7, 4) - 2)
    return swings + p.weekend * weekends


def _noise(p: LoadParams, day: int, pair: int) -> int:
    """+n on the first slot of a pair, -n on the second."""
    return hashed(p.seed, _H_NOISE, day * 48 + pair, 2 * p.noise + 1) - p.noise


def outage_of_block(p: LoadParams, block: int) -> tuple[int, int, int]:
    """(day, slot, offset in the slot) of the supply failure of 8-day block ``block``."""
    day = block * OUTAGE_BLOCK + hashed(p.seed, _H_OUT_DAY, block, OUTAGE_BLOCK)
    slot = 2 * hashed(p.seed, _H_OUT_SLOT, block, SLOTS_PER_DAY // 2)
    return day, slot, hashed(p.seed, _H_OUT_AT, block, SLOT - p.outage_s)


def _outage(p: LoadParams, day: int) -> tuple[int, int] | None:
    """(slot, offset) of the supply failure on ``day``, if there is one that day."""
    out_day, slot, offset = outage_of_block(p, day // OUTAGE_BLOCK)
    return (slot, offset) if out_day == day else None


def _watts(p: LoadParams, day: int, slot: int, level: int) -> int:
    noise = _noise(p, day, slot // 2)
    return _shape(p, slot) + level + (noise if slot % 2 == 0 else -noise)


def _energy_before(p: LoadParams, day: int, slot: int, level: int) -> int:
    """Joules in slots 0..slot-1 of ``day``: noise cancels in pairs, and a supply failure's loss
    is made up by the slot after it."""
    watts = _shape_before(p, slot) + slot * level
    if slot % 2:
        watts += _noise(p, day, slot // 2)
    joules = SLOT * watts
    outage = _outage(p, day)
    if outage is not None and outage[0] == slot - 1:  # the loss counted, the pickup not yet
        joules -= _watts(p, day, slot - 1, level) * p.outage_s
    return joules


def _in_slot(p: LoadParams, day: int, slot: int, elapsed: int, level: int) -> int:
    """Joules flowed in ``slot`` of ``day`` during its first ``elapsed`` seconds."""
    watts = _watts(p, day, slot, level)
    outage = _outage(p, day)
    if outage is not None:
        out_slot, offset = outage
        if slot == out_slot:
            return watts * (min(elapsed, offset) + max(0, elapsed - offset - p.outage_s))
        if slot == out_slot + 1:
            lost = _watts(p, day, out_slot, level) * p.outage_s
            return (SLOT * watts + lost) * elapsed // SLOT
    return watts * elapsed


@dataclass(frozen=True, slots=True)
class Day:
    """One day of one meter slot by slot (for checking the closed forms, and demand)."""

    power: tuple[int, ...]  # W per slot, before the outage
    energy: tuple[int, ...]  # J per slot, after it
    outage: tuple[int, int] | None  # (slot, offset) of the day's supply failure


@functools.lru_cache(maxsize=256)
def day_table(p: LoadParams, day: int) -> Day:
    level = _level(p, day)
    power = [_watts(p, day, slot, level) for slot in range(SLOTS_PER_DAY)]
    energy = [SLOT * w for w in power]
    outage = _outage(p, day)
    if outage is not None:
        lost = power[outage[0]] * p.outage_s
        energy[outage[0]] -= lost
        energy[outage[0] + 1] += lost  # cold-load pickup: the pair keeps its energy
    return Day(tuple(power), tuple(energy), outage)


def block_peak(p: LoadParams, day: int, interval: int, blocks: int) -> tuple[int, int]:
    """(energy J, end in seconds after midnight) of the biggest of the first ``blocks`` blocks
    of ``interval`` seconds of ``day``, the earliest if several are; (0, 0) for no block."""
    if blocks == SLOTS_PER_DAY * SLOT // interval:
        return _day_peak(p, day, interval)
    return _peak(day_table(p, day).energy, interval // SLOT, blocks)


@functools.lru_cache(maxsize=16384)
def _day_peak(p: LoadParams, day: int, interval: int) -> tuple[int, int]:
    return _peak(day_table(p, day).energy, interval // SLOT, SLOTS_PER_DAY * SLOT // interval)


def _peak(energy: tuple[int, ...], per_block: int, blocks: int) -> tuple[int, int]:
    best, end = 0, 0
    for block in range(blocks):
        joules = sum(energy[block * per_block : (block + 1) * per_block])
        if joules > best:
            best, end = joules, (block + 1) * per_block * SLOT
    return best, end


def _split(t: float) -> tuple[int, int, int]:
    """(day, slot, seconds into the slot) of UNIX time ``t`` in IST, whole seconds."""
    local = int((t + _EPSILON) // 1) + IST  # an instant computed as 9.9999999 is 10
    day, rest = divmod(local, DAY)
    slot, elapsed = divmod(rest, SLOT)
    return day, slot, elapsed


def active_energy(p: LoadParams, t: float) -> int:
    """Active import energy from 1970-01-01 IST to ``t``, in J (only differences matter)."""
    day, slot, elapsed = _split(t)
    whole = SLOT * (day * _shape_total(p) + SLOTS_PER_DAY * _level_sum(p, day))
    level = _level(p, day)
    return whole + _energy_before(p, day, slot, level) + _in_slot(p, day, slot, elapsed, level)


def night_energy(p: LoadParams, t: float) -> int:
    """The part of ``active_energy`` that flowed between 00:00 and 06:00 IST, in J."""
    day, slot, elapsed = _split(t)
    night = _shape_before(p, NIGHT_SLOTS)
    whole = SLOT * (day * night + NIGHT_SLOTS * _level_sum(p, day))
    level = _level(p, day)
    if slot >= NIGHT_SLOTS:
        return whole + _energy_before(p, day, NIGHT_SLOTS, level)
    return whole + _energy_before(p, day, slot, level) + _in_slot(p, day, slot, elapsed, level)


def export_energy(p: LoadParams, t: float) -> int:
    """Active export energy (rooftop solar) from 1970-01-01 IST to ``t``, in J."""
    if not p.solar:
        return 0
    day, slot, elapsed = _split(t)
    return SLOT * p.solar * (day * SUN_PREFIX[-1] + SUN_PREFIX[slot]) // 1000 + (
        p.solar * SUN[slot] * elapsed // 1000
    )


def slot_power(p: LoadParams, t: float) -> int:
    """The active power of the slot holding ``t``, W (the slot's nominal level)."""
    day, slot, _ = _split(t)
    return _watts(p, day, slot, _level(p, day))


def supplied(p: LoadParams, t: float) -> bool:
    """False during a supply failure."""
    day, slot, elapsed = _split(t)
    outage = _outage(p, day)
    if outage is None or slot != outage[0]:
        return True
    return not outage[1] <= elapsed < outage[1] + p.outage_s


def power(p: LoadParams, t: float) -> Fraction:
    """Active import power at ``t``, W: 0 during a supply failure, more in the slot after it."""
    if not supplied(p, t):
        return Fraction(0)
    day, slot, _ = _split(t)
    level = _level(p, day)
    watts = _watts(p, day, slot, level)
    outage = _outage(p, day)
    if outage is not None and slot == outage[0] + 1:
        lost = _watts(p, day, outage[0], level) * p.outage_s
        return Fraction(SLOT * watts + lost, SLOT)
    return Fraction(watts)


def outages(p: LoadParams, t0: float, t1: float) -> list[tuple[int, int]]:
    """Supply failures (start, end) that start in [t0, t1), UNIX times."""
    found = []
    first = (int(t0 // 1) + IST) // DAY // OUTAGE_BLOCK
    last = (int(t1 // 1) + IST) // DAY // OUTAGE_BLOCK
    for block in range(first, last + 1):
        day, slot, offset = outage_of_block(p, block)
        start = day * DAY + slot * SLOT + offset - IST
        if t0 <= start < t1:
            found.append((start, start + p.outage_s))
    return found


def outage_seconds(p: LoadParams, t0: float, t1: float) -> int:
    """Seconds without supply in [t0, t1): closed form except for the two end blocks."""
    if t1 <= t0:
        return 0
    first = (int(t0 // 1) + IST) // DAY // OUTAGE_BLOCK
    last = (int(t1 // 1) + IST) // DAY // OUTAGE_BLOCK
    ends = {first, last}
    total: float = max(0, last - first - 1) * p.outage_s
    for block in ends:
        day, slot, offset = outage_of_block(p, block)
        start = day * DAY + slot * SLOT + offset - IST
        total += max(0, min(t1, start + p.outage_s) - max(t0, start))
    return int(total)


def over_voltages(p: LoadParams, t0: float, t1: float) -> list[tuple[int, int]]:
    """Over-voltage episodes on L1 (start, end) that start in [t0, t1), UNIX times."""
    found = []
    first = (int(t0 // 1) + IST) // DAY // OVER_VOLTAGE_BLOCK
    last = (int(t1 // 1) + IST) // DAY // OVER_VOLTAGE_BLOCK
    for block in range(first, last + 1):
        start = _over_voltage_start(p, block)
        if t0 <= start < t1:
            found.append((start, start + _over_voltage_length(p, block)))
    return found


def _over_voltage_start(p: LoadParams, block: int) -> int:
    day = block * OVER_VOLTAGE_BLOCK + hashed(p.seed, _H_OV_DAY, block, OVER_VOLTAGE_BLOCK)
    return day * DAY + hashed(p.seed, _H_OV_AT, block, DAY - 3600) - IST


def _over_voltage_length(p: LoadParams, block: int) -> int:
    return 300 + hashed(p.seed, _H_OV_LEN, block, 1500)


def voltage_mv(p: LoadParams, phase: int, t: float) -> int:
    """Phase voltage at ``t``, mV: nominal ±2 V per slot, 0 without supply, +15 % on L1 during
    an over-voltage."""
    if not supplied(p, t):
        return 0
    local = int(t // 1) + IST
    slot_index = local // SLOT
    volts = p.nominal_mv[phase] + hashed(p.seed, _H_VOLT + phase, slot_index, 4001) - 2000
    if phase == 0:
        block = local // DAY // OVER_VOLTAGE_BLOCK
        start = _over_voltage_start(p, block)
        if start <= t < start + _over_voltage_length(p, block):
            volts = volts * 115 // 100
    return volts


def slot_voltage_mv(p: LoadParams, phase: int, slot_index: int) -> int:
    """The nominal voltage of a slot (slot index since 1970 IST), for block averages."""
    return p.nominal_mv[phase] + hashed(p.seed, _H_VOLT + phase, slot_index, 4001) - 2000


def frequency_mhz(p: LoadParams, t: float) -> int:
    slot_index = (int(t // 1) + IST) // SLOT
    return 49_950 + hashed(p.seed, _H_FREQ, slot_index, 101)
