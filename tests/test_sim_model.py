"""The simulated meter (hesd.sim): its objects through the DLMS server's ObjectModel protocol,
the consistency of what it measures, access rights, events, relay, limiter, image transfer."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
from decimal import ROUND_HALF_UP
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.profile import VendorProfile, load_profile
from hesd.sim import (
    ControlState,
    MeterSpec,
    SimulatedMeter,
    build_image,
    load,
    parse_image,
    truth,
)
from hesd.sim.image import BLOCK_SIZE, TransferStatus
from hesd.sim.objects import Kind
from hesd.sim.timebase import IST, month_index, month_start
from protocols.dlms import axdr
from protocols.dlms.acse import Mechanism
from protocols.dlms.apdu import (
    AccessSelection,
    ActionResult,
    AttributeDescriptor,
    DataAccessResult,
    MethodDescriptor,
    by_entry,
    by_range,
)
from protocols.dlms.axdr import BitString, Tag, Typed, Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.connection import (
    ActionCompleted,
    Associated,
    AssociationParameters,
    ClientConnection,
    GetCompleted,
    SetCompleted,
)
from protocols.dlms.connection import Event as ClientEvent
from protocols.dlms.cosem import INTERFACE_CLASSES, ScalerUnit, Unit
from protocols.dlms.obis import ObisCode
from protocols.dlms.security import SecurityContext
from protocols.dlms.server import ServerAssociation, ServerConnection

REPO = Path(__file__).resolve().parent.parent
NOW = 1_710_000_000.0  # 2024-03-09 21:30 IST, 68 days after the meters' default start
VENDOR_NAMES = ("is15959", "kalpa", "sunrise", "meghdoot")


class ObjectModel(Protocol):
    """A copy of the DLMS server's protocol (protocols/dlms/server.py) that meters implement."""

    def get(
        self,
        association: str,
        attribute: AttributeDescriptor,
        access: AccessSelection | None,
        now: float,
    ) -> Value | DataAccessResult: ...

    def set(
        self, association: str, attribute: AttributeDescriptor, value: Value, now: float
    ) -> DataAccessResult: ...

    def action(
        self, association: str, method: MethodDescriptor, parameters: Value | None, now: float
    ) -> tuple[ActionResult, Value | None]: ...


@functools.cache
def vendor(name: str) -> VendorProfile:
    return load_profile(REPO / "conf" / "vendors" / f"{name}.toml")


def meter(name: str = "is15959", seed: int = 7, **kw: object) -> SimulatedMeter:
    spec = MeterSpec(
        f"M{seed}", f"{seed:08d}", b"SIM" + seed.to_bytes(5, "big"), seed, vendor(name), **kw
    )  # type: ignore[arg-type]
    return SimulatedMeter(spec)


def obis(text: str) -> ObisCode:
    return ObisCode.parse(text)


def attr(class_id: int, name: str, index: int) -> AttributeDescriptor:
    return AttributeDescriptor(class_id, obis(name), index)


def get(
    model: ObjectModel,
    class_id: int,
    name: str,
    index: int,
    now: float = NOW,
    *,
    access: AccessSelection | None = None,
    association: str = "utility",
) -> Value | DataAccessResult:
    return model.get(association, attr(class_id, name, index), access, now)


def plain(value: Value | DataAccessResult) -> object:
    """What a client decodes from the meter's answer."""
    assert not isinstance(value, DataAccessResult), value
    return axdr.decode_all(axdr.encode(value))


def act(
    model: ObjectModel,
    class_id: int,
    name: str,
    method: int,
    parameters: Value | None = None,
    *,
    now: float = NOW,
    association: str = "utility",
) -> ActionResult:
    result, _ = model.action(association, attr(class_id, name, method), parameters, now)
    return result


def instant(octets: object) -> float:
    assert isinstance(octets, bytes)
    return DateTime.from_octets(octets).to_datetime().timestamp()


def date_time(t: float) -> bytes:
    zone = dt.timezone(dt.timedelta(seconds=IST))
    return DateTime.from_datetime(dt.datetime.fromtimestamp(t, zone)).to_octets()


CLOCK = (8, obis("0.0.1.0.0.255"), 2)
BLOCK_LOAD, DAILY_LOAD, BILLING = "1.0.99.1.0.255", "1.0.99.2.0.255", "1.0.98.1.0.255"


def rows(
    model: ObjectModel, name: str, access: AccessSelection | None = None, now: float = NOW
) -> list[list[object]]:
    buffer = plain(get(model, 7, name, 2, now, access=access))
    assert isinstance(buffer, list)
    return [list(row) for row in buffer]


def in_range(model: ObjectModel, name: str, low: float, high: float) -> list[list[object]]:
    return rows(model, name, by_range(CLOCK, date_time(low), date_time(high)))


# -- every vendor, every object, every attribute --------------------------------------------------


def test_a_meter_is_an_object_model() -> None:
    model: ObjectModel = meter()
    assert plain(get(model, 1, "0.0.96.1.0.255", 2)) == "00000007"


@pytest.mark.parametrize("name", VENDOR_NAMES)
def test_every_attribute_of_every_object_encodes(name: str) -> None:
    model = meter(name)
    for definition in model.tables.objects.values():
        cls = INTERFACE_CLASSES[definition.class_id]
        for attribute in cls.attributes:
            descriptor = AttributeDescriptor(definition.class_id, definition.obis, attribute.index)
            result = model.get("utility", descriptor, None, NOW)
            if definition.kind is Kind.ASSOCIATION and attribute.index == 7:
                assert result is DataAccessResult.READ_WRITE_DENIED  # the secret
                continue
            assert not isinstance(result, DataAccessResult), (definition, attribute)
            axdr.decode_all(axdr.encode(result))
        assert get(model, definition.class_id, str(definition.obis), len(cls.attributes) + 1) is (
            DataAccessResult.OBJECT_UNAVAILABLE
        )


def test_the_same_seed_is_the_same_meter() -> None:
    a, b, c = meter(seed=11), meter(seed=11), meter(seed=12)
    for name in ("1.0.1.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255"):
        assert plain(get(a, 3, name, 2)) == plain(get(b, 3, name, 2))
    assert plain(get(a, 3, "1.0.1.8.0.255", 2)) != plain(get(c, 3, "1.0.1.8.0.255", 2))
    assert rows(a, BLOCK_LOAD, by_entry(1, 10)) == rows(b, BLOCK_LOAD, by_entry(1, 10))


# -- access rights and result codes ----------------------------------------------------------------

ENERGY = (3, "1.0.1.8.0.255", 2)


@pytest.mark.parametrize(
    ("association", "target", "allowed"),
    [
        ("public", (8, "0.0.1.0.0.255", 2), True),
        ("public", (1, "0.0.42.0.0.255", 2), True),
        ("public", (1, "0.0.96.1.0.255", 2), True),
        ("public", (1, "1.0.0.2.0.255", 2), True),
        ("public", (15, "0.0.40.0.0.255", 2), True),
        ("public", ENERGY, False),
        ("public", (7, BLOCK_LOAD, 2), False),
        ("public", (70, "0.0.96.3.10.255", 2), False),
        ("reader", ENERGY, True),
        ("reader", (7, BLOCK_LOAD, 3), True),
        ("reader", (70, "0.0.96.3.10.255", 2), True),
        ("reader", (18, "0.0.44.0.0.255", 6), True),
        ("utility", ENERGY, True),
    ],
)
def test_who_reads_what(association: str, target: tuple[int, str, int], allowed: bool) -> None:
    result = get(meter(), *target, association=association)
    assert (result is not DataAccessResult.READ_WRITE_DENIED) is allowed


def test_only_the_utility_writes_and_acts() -> None:
    model = meter()
    clock = attr(8, "0.0.1.0.0.255", 2)
    value = date_time(NOW + 60)
    for association in ("public", "reader"):
        assert model.set(association, clock, value, NOW) is DataAccessResult.READ_WRITE_DENIED
        assert act(model, 70, "0.0.96.3.10.255", 1, association=association) is (
            ActionResult.READ_WRITE_DENIED
        )
    assert model.relay_state is ControlState.CONNECTED
    assert model.set("utility", clock, value, NOW) is DataAccessResult.SUCCESS
    assert act(model, 70, "0.0.96.3.10.255", 1) is ActionResult.SUCCESS


def test_result_codes() -> None:
    model = meter()
    assert get(model, 3, "1.0.99.99.0.255", 2) is DataAccessResult.OBJECT_UNDEFINED
    assert get(model, 4, "1.0.1.8.0.255", 2) is DataAccessResult.OBJECT_CLASS_INCONSISTENT
    assert get(model, 3, "1.0.1.8.0.255", 4) is DataAccessResult.OBJECT_UNAVAILABLE
    assert get(model, 3, "1.0.1.8.0.255", 2, association="intruder") is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert get(model, 3, "1.0.1.8.0.255", 2, access=by_entry(1, 1)) is (
        DataAccessResult.OTHER_REASON  # selective access is for profile buffers
    )
    assert model.set(
        "utility", attr(3, "1.0.1.8.0.255", 2), Typed(Tag.DOUBLE_LONG_UNSIGNED, 0), NOW
    ) is (
        DataAccessResult.READ_WRITE_DENIED  # nobody rewinds an energy register
    )
    assert (
        act(model, 3, "1.0.1.8.0.255", 1, Typed(Tag.INTEGER, 0)) is ActionResult.READ_WRITE_DENIED
    )
    assert act(model, 3, "1.0.1.8.0.255", 2) is ActionResult.OBJECT_UNAVAILABLE
    assert act(model, 3, "1.0.99.99.0.255", 1) is ActionResult.OBJECT_UNDEFINED
    assert model.set("utility", attr(8, "0.0.1.0.0.255", 2), Typed(Tag.LONG, 5), NOW) is (
        DataAccessResult.TYPE_UNMATCHED
    )
    assert model.set("utility", attr(8, "0.0.1.0.0.255", 12), b"", NOW) is (
        DataAccessResult.OBJECT_UNAVAILABLE
    )


# -- clock -----------------------------------------------------------------------------------------


def test_clock_reads_ist() -> None:
    model = meter()
    octets = plain(get(model, 8, "0.0.1.0.0.255", 2))
    assert isinstance(octets, bytes)
    reading = DateTime.from_octets(octets)
    assert (reading.deviation, reading.hour, reading.minute) == (-330, 21, 30)  # 16:00 UTC
    assert instant(octets) == NOW
    assert plain(get(model, 8, "0.0.1.0.0.255", 3)) == -330
    assert plain(get(model, 8, "0.0.1.0.0.255", 4)) == 0
    assert plain(get(model, 8, "0.0.1.0.0.255", 8)) is False


def test_clock_set_shift_and_drift() -> None:
    model = meter()
    clock = attr(8, "0.0.1.0.0.255", 2)
    assert model.set("utility", clock, date_time(NOW - 125), NOW) is DataAccessResult.SUCCESS
    assert instant(plain(get(model, 8, "0.0.1.0.0.255", 2, NOW + 10))) == NOW - 115
    assert act(model, 8, "0.0.1.0.0.255", 6, Typed(Tag.LONG, 120)) is ActionResult.SUCCESS
    assert model.meter_time(NOW) == NOW - 5
    assert act(model, 8, "0.0.1.0.0.255", 6, Typed(Tag.LONG, 1000)) is ActionResult.OTHER_REASON
    assert act(model, 8, "0.0.1.0.0.255", 6, b"x") is ActionResult.TYPE_UNMATCHED
    assert act(model, 8, "0.0.1.0.0.255", 3, Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert model.meter_time(NOW) == NOW  # adjusted to the minute
    model.set_clock_drift_ppm(100.0, NOW)
    assert model.meter_time(NOW + 100_000) == pytest.approx(NOW + 100_010)
    assert model.snapshot(NOW + 100_000).clock_offset == pytest.approx(10)
    transaction = rows(model, "0.0.99.98.3.255", now=NOW + 1)
    assert [row[1] for row in transaction] == [151, 151, 151]  # clock set three times


def test_a_drifting_meter_from_its_spec() -> None:
    model = meter(clock_drift_ppm=-50.0)
    day = 86400
    assert model.meter_time(model.start + 10 * day) == pytest.approx(model.start + 10 * day - 43.2)
    labels = [instant(row[0]) for row in rows(model, BLOCK_LOAD, by_entry(1, 0))]
    assert all(label % 1800 == 0 for label in labels)  # blocks end on the meter's own clock


def test_a_date_time_that_names_no_instant_is_refused() -> None:
    model = meter()
    unspecified = DateTime(*([None] * 10)).to_octets()
    assert model.set("utility", attr(8, "0.0.1.0.0.255", 2), unspecified, NOW) is (
        DataAccessResult.OTHER_REASON
    )


# -- registers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VENDOR_NAMES)
def test_registers_report_ground_truth(name: str) -> None:
    model = meter(name)
    for quantity in model.tables.profile.quantities:
        value = plain(get(model, quantity.class_id, str(quantity.obis), 2))
        assert value == truth.raw(model, quantity.name, NOW), quantity.name
        if quantity.class_id != 1:
            scaler_unit = ScalerUnit.from_value(
                plain(get(model, quantity.class_id, str(quantity.obis), 3))
            )
            assert (scaler_unit.scaler, scaler_unit.unit) == (quantity.scaler, quantity.unit)


def test_vendor_scalers_change_the_raw_not_the_value() -> None:
    standard, kalpa, sunrise = meter(), meter("kalpa"), meter("sunrise")
    energy = truth.value(standard, "energy_active_import", NOW)
    assert truth.value(kalpa, "energy_active_import", NOW) == energy  # the same seed, same load
    assert truth.raw(kalpa, "energy_active_import", NOW) == math.floor(energy / 10)
    volts = truth.value(standard, "voltage_l1", NOW)
    assert truth.raw(sunrise, "voltage_l1", NOW) == int((volts * 10).quantize(1, ROUND_HALF_UP))
    assert truth.raw(standard, "voltage_l1", NOW) == int((volts * 100).quantize(1, ROUND_HALF_UP))
    minutes = truth.value(standard, "power_on_duration", NOW)
    assert truth.raw(sunrise, "power_on_duration", NOW) == math.floor(minutes * 60)  # seconds
    active = plain(get(kalpa, 3, "1.0.16.7.0.255", 2))
    assert active == truth.raw(kalpa, "active_power", NOW)
    assert get(kalpa, 3, "1.0.1.7.0.255", 2) is DataAccessResult.OBJECT_UNDEFINED


def test_maximum_demand_has_its_capture_time() -> None:
    model = meter()
    demand = plain(get(model, 4, "1.0.1.6.0.255", 2))
    captured = instant(plain(get(model, 4, "1.0.1.6.0.255", 5)))
    assert captured % 1800 == 0
    assert month_start(month_index(NOW)) < captured <= NOW
    assert plain(get(model, 4, "1.0.1.6.0.255", 4)) == 0
    energy = Fraction(truth.value(model, "energy_active_import", captured)) - Fraction(
        truth.value(model, "energy_active_import", captured - 1800)
    )
    assert demand == math.floor(energy * 2)  # Wh in half an hour: twice that in W


CUMULATIVE = (
    "energy_active_import",
    "energy_active_export",
    "energy_apparent_import",
    "energy_reactive_lag",
    "energy_reactive_lead",
    "power_on_duration",
)
INSTANT = (
    "voltage_l1",
    "current_l2",
    "current_neutral",
    "active_power",
    "frequency",
    "power_factor",
)
TIMES = st.floats(min_value=NOW - 40 * 86400, max_value=NOW + 400 * 86400)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), t=TIMES, name=st.sampled_from(VENDOR_NAMES))
def test_raw_is_the_value_scaled_and_rounded_as_meters_do(seed: int, t: float, name: str) -> None:
    model = meter(name, seed=seed % 10_000)
    for quantity in CUMULATIVE:
        spec = model.tables.quantities.get(quantity)
        if spec is None:
            continue
        value = truth.value(model, quantity, t)
        if spec.unit is Unit.SECOND:
            value *= 60
        assert truth.raw(model, quantity, t) == math.floor(value.scaleb(-spec.scaler))
    for quantity in INSTANT:
        spec = model.tables.quantities[quantity]
        value = truth.value(model, quantity, t).scaleb(-spec.scaler)
        assert truth.raw(model, quantity, t) == int(value.quantize(1, ROUND_HALF_UP))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), t=TIMES, step=st.floats(0, 5 * 86400))
def test_cumulative_registers_never_go_back(seed: int, t: float, step: float) -> None:
    model = meter(seed=seed % 100_000)
    for quantity in CUMULATIVE:
        assert truth.value(model, quantity, t) <= truth.value(model, quantity, t + step)


# -- the load model --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), day=st.integers(19_000, 21_000))
def test_whole_days_are_closed_form(seed: int, day: int) -> None:
    """The O(1) integral agrees with summing the day's slots, and the load stays positive."""
    params = load.params(seed)
    midnight = day * 86400 - IST
    table = load.day_table(params, day)  # the day slot by slot
    assert min(table.power) > 0
    slots = [midnight + k * load.SLOT for k in range(load.SLOTS_PER_DAY + 1)]
    running = [load.active_energy(params, t) for t in slots]
    assert [b - a for a, b in itertools.pairwise(running)] == list(table.energy)
    night = load.night_energy(params, midnight + 86400) - load.night_energy(params, midnight)
    assert night == sum(table.energy[: load.NIGHT_SLOTS])
    special = set() if table.outage is None else {table.outage[0], table.outage[0] + 1}
    for k in set(range(0, load.SLOTS_PER_DAY, 7)) - special:  # energy flows at the slot's power
        assert load.active_energy(params, slots[k] + 300) - running[k] == 300 * table.power[k]
    if table.outage is not None:  # the pair of slots keeps its energy across a supply failure
        slot, _ = table.outage
        assert table.energy[slot] + table.energy[slot + 1] == load.SLOT * (
            table.power[slot] + table.power[slot + 1]
        )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**64 - 1),
    t=st.floats(NOW - 90 * 86400, NOW + 90 * 86400),
    started=st.floats(0, 60 * 86400),
)
def test_maximum_demand_is_the_biggest_period_of_the_month(
    seed: int, t: float, started: float
) -> None:
    """The day-by-day shortcut agrees with scanning every demand period of the month."""
    model = meter(seed=seed % 100_000, start=t - started)
    params, interval = model.params, 1800
    first = month_start(month_index(t))
    best, at = 0, float(first)
    previous = load.active_energy(params, max(model.start, first))
    for end in range(first + interval, int(t // interval) * interval + 1, interval):
        energy = load.active_energy(params, max(model.start, end))
        if energy - previous > best:
            best, at = energy - previous, float(end)
        previous = energy
    assert truth.max_demand(model, t) == (Fraction(best, interval), at)


def test_a_supply_failure_stops_the_energy() -> None:
    params = load.params(7)
    start, end = load.outages(params, NOW - 8 * 86400, NOW)[0]
    assert load.active_energy(params, start) == load.active_energy(params, end)
    assert load.power(params, start + 1) == 0
    assert load.voltage_mv(params, 0, start + 1) == 0
    assert load.voltage_mv(params, 0, end + 1) > 200_000


# -- profiles --------------------------------------------------------------------------------------


def test_profile_generic_attributes() -> None:
    model = meter()
    captures = plain(get(model, 7, BLOCK_LOAD, 3))
    assert isinstance(captures, list)
    assert captures[0] == (8, obis("0.0.1.0.0.255").to_bytes(), 2, 0)
    assert captures[3] == (3, obis("1.0.1.29.0.255").to_bytes(), 2, 0)
    assert plain(get(model, 7, BLOCK_LOAD, 4)) == 1800
    assert plain(get(model, 7, BLOCK_LOAD, 5)) == 1
    assert plain(get(model, 7, BLOCK_LOAD, 6)) == (0, bytes(6), 0, 0)
    assert plain(get(model, 7, BLOCK_LOAD, 7)) == 1680  # 68 days of history, 35 kept
    assert plain(get(model, 7, BLOCK_LOAD, 8)) == 1680
    full = rows(model, BLOCK_LOAD)
    assert len(full) == 1680
    last = int(NOW // 1800) * 1800
    assert [instant(full[0][0]), instant(full[-1][0])] == [last - 1679 * 1800, last]
    assert get(model, 7, BLOCK_LOAD, 3, access=by_entry(1, 1)) is DataAccessResult.OTHER_REASON


def test_no_rows_before_the_meter_started() -> None:
    model = meter(start=NOW - 3 * 86400 - 600)
    assert plain(get(model, 7, BLOCK_LOAD, 7)) == 145  # the first block is partial
    assert plain(get(model, 7, DAILY_LOAD, 7)) == 3
    assert plain(get(model, 7, BILLING, 7)) == 0
    assert rows(model, BILLING) == []


def test_scaler_profiles() -> None:
    model = meter("sunrise")
    captures = plain(get(model, 7, "1.0.94.91.4.255", 3))
    (row,) = rows(model, "1.0.94.91.4.255")
    assert len(row) == len(captures) == 4  # the block profile's columns but the clock
    assert captures[1] == (3, obis("1.0.12.27.0.255").to_bytes(), 3, 0)
    assert ScalerUnit.from_value(row[1]) == ScalerUnit(-1, Unit.VOLT)
    (events,) = rows(model, "1.0.94.91.7.255")
    assert ScalerUnit.from_value(events[3]) == ScalerUnit(-3, Unit.AMPERE)


def test_nameplate() -> None:
    model = meter("kalpa")
    assert rows(model, "0.0.94.91.10.255") == [["00000007", "Kalpa Meters", "1.0.0", "KX-3"]]
    assert plain(get(model, 1, "0.0.42.0.0.255", 2)) == b"KLP00000007"
    assert plain(get(meter(), 1, "0.0.42.0.0.255", 2)) == b"HES00000007"


def test_instantaneous_profile_is_captured_at_the_read() -> None:
    model = meter()
    (row,) = rows(model, "1.0.94.91.0.255")
    assert instant(row[0]) == NOW
    columns = model.tables.profile.profile("instantaneous").columns  # type: ignore[union-attr]
    for column, cell in zip(columns[1:], row[1:], strict=True):
        if column.endswith(".capture_time"):
            name = column.removesuffix(".capture_time")
            assert instant(cell) == truth.capture_time(model, name, NOW)
        else:
            assert cell == truth.raw(model, column, NOW), column


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6), day=st.integers(1, 33), name=st.sampled_from(["is15959", "kalpa"])
)
def test_blocks_of_a_day_add_up_to_the_register(seed: int, day: int, name: str) -> None:
    model = meter(name, seed=seed)
    midnight = (int(NOW + IST) // 86400 - day) * 86400 - IST
    blocks = in_range(model, BLOCK_LOAD, midnight + 1, midnight + 86400)
    assert len(blocks) == 86400 // model.tables.block_interval
    assert instant(blocks[-1][0]) == midnight + 86400
    start, end = (
        truth.value(model, "energy_active_import", t) for t in (midnight, midnight + 86400)
    )
    # the block column is in Wh (scaler 0) for both vendors, the register in Wh or 10 Wh
    assert sum(row[3] for row in blocks) == math.floor(end) - math.floor(start)  # type: ignore[misc]
    apparent = [
        truth.value(model, "energy_apparent_import", t) for t in (midnight, midnight + 86400)
    ]
    assert sum(row[4] for row in blocks) == math.floor(apparent[1]) - math.floor(apparent[0])  # type: ignore[misc]


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10**6), name=st.sampled_from(VENDOR_NAMES))
def test_daily_rows_are_the_registers_at_midnight(seed: int, name: str) -> None:
    model = meter(name, seed=seed)
    columns = model.tables.profile.profile("daily_load").columns  # type: ignore[union-attr]
    daily = rows(model, DAILY_LOAD)
    assert len(daily) == 35
    for row in daily[-3:]:
        midnight = instant(row[0])
        assert (midnight + IST) % 86400 == 0
        for column, cell in zip(columns[1:], row[1:], strict=True):
            assert cell == truth.raw(model, column, midnight)


def test_billing_rows_close_each_month() -> None:
    model = meter(start=NOW - 200 * 86400)
    billing = rows(model, BILLING)
    assert len(billing) == 7  # September 2023 .. March 2024
    columns = model.tables.profile.profile("billing").columns  # type: ignore[union-attr]
    for row in billing:
        closing = instant(row[0])
        assert month_start(month_index(closing)) == closing  # 00:00 IST on the 1st
        cells = dict(zip(columns, row, strict=True))
        assert cells["energy_active_import"] == truth.raw(model, "energy_active_import", closing)
        # the month's maximum demand is its biggest block (within the block's rounding)
        opened = month_start(month_index(closing - 1))
        block = model.tables.quantities["block_energy_active_import"]
        biggest = max(
            truth.block_raw(model, block, end)
            for end in range(opened + 1800, int(closing) + 1, 1800)
        )
        # block registers are telescoped floors: a block may show one Wh more or less
        assert abs(cells["demand_active_max"] - biggest * 2) <= 2  # type: ignore[operator]
        captured = instant(cells["demand_active_max.capture_time"])
        assert month_start(month_index(closing - 1)) < captured <= closing


@functools.cache
def whole_block_load() -> list[list[object]]:
    return rows(meter(), BLOCK_LOAD)


LAST_BLOCK = int(NOW // 1800) * 1800
BLOCK_LABELS = [float(LAST_BLOCK - k * 1800) for k in range(1679, -1, -1)]  # 35 days kept


@settings(max_examples=40, deadline=None)
@given(
    low=st.floats(NOW - 40 * 86400, NOW + 3600),
    span=st.floats(0, 86400),
    seed=st.integers(0, 99),
)
def test_selective_access_by_range(low: float, span: float, seed: int) -> None:
    model = meter(seed=seed)
    picked = in_range(model, BLOCK_LOAD, low, low + span)
    # the range is what the date-times sent carry (to the hundredth), both ends included
    first, last = instant(date_time(low)), instant(date_time(low + span))
    assert [instant(row[0]) for row in picked] == [t for t in BLOCK_LABELS if first <= t <= last]
    if picked:
        (entry,) = [k for k, t in enumerate(BLOCK_LABELS, 1) if t == instant(picked[0][0])]
        assert picked == rows(model, BLOCK_LOAD, by_entry(entry, entry + len(picked) - 1))


@settings(max_examples=40, deadline=None)
@given(
    first=st.integers(0, 1700),
    count=st.integers(0, 40),
    columns=st.tuples(st.integers(0, 6), st.integers(0, 6)),
)
def test_selective_access_by_entry(first: int, count: int, columns: tuple[int, int]) -> None:
    model = meter()
    whole = whole_block_load()
    last = first + count
    picked = rows(model, BLOCK_LOAD, by_entry(first, last, *columns))
    low, high = columns
    expected = [r[max(low, 1) - 1 : high or None] for r in whole[max(first, 1) - 1 : last or None]]
    assert picked == expected


def test_selective_access_picks_columns_and_refuses_nonsense() -> None:
    model = meter()
    energy = (3, obis("1.0.1.29.0.255"), 2)
    picked = rows(
        model, BLOCK_LOAD, by_range(CLOCK, date_time(NOW - 3600), date_time(NOW), (energy, CLOCK))
    )
    assert len(picked) == 3  # both ends of the range are in it
    assert [len(r) for r in picked] == [2, 2, 2]
    assert instant(picked[-1][1]) == int(NOW // 1800) * 1800
    other = (3, obis("1.0.1.8.0.255"), 2)
    assert get(model, 7, BLOCK_LOAD, 2, access=by_range(other, date_time(NOW), date_time(NOW))) is (
        DataAccessResult.OTHER_REASON
    )
    assert get(
        model, 7, BLOCK_LOAD, 2, access=by_range(CLOCK, date_time(NOW), date_time(NOW), (other,))
    ) is (DataAccessResult.OTHER_REASON)
    assert get(model, 7, BLOCK_LOAD, 2, access=AccessSelection(2, (1, 2))) is (
        DataAccessResult.TYPE_UNMATCHED
    )
    assert get(model, 7, BLOCK_LOAD, 2, access=AccessSelection(9, None)) is (
        DataAccessResult.OTHER_REASON
    )
    open_range = by_range(CLOCK, DateTime(*([None] * 10)).to_octets(), date_time(NOW))
    assert len(rows(model, BLOCK_LOAD, open_range)) == 1680


# -- events ----------------------------------------------------------------------------------------


def test_supply_failures_and_over_voltages_are_logged() -> None:
    model = meter()
    power = rows(model, "0.0.99.98.2.255")
    assert [r[1] for r in power[:2]] == [101, 102]
    outages = load.outages(model.params, model.start, NOW)
    assert [instant(r[0]) for r in power] == [t for o in outages for t in o]
    voltage = rows(model, "0.0.99.98.0.255")
    assert {r[1] for r in voltage} == {7, 8}
    occurred = instant(voltage[0][0])
    assert voltage[0][5] == truth.raw(model, "voltage_l1", occurred) > 23000 * 1.1  # snapshot
    assert plain(get(model, 1, "0.0.96.11.2.255", 2)) == power[-1][1]


@pytest.mark.parametrize(
    ("name", "kind", "profile", "code"),
    [
        ("is15959", "magnet_tamper", "0.0.99.98.4.255", 201),
        ("is15959", "cover_open", "0.0.99.98.5.255", 251),
        ("sunrise", "magnet_tamper", "0.0.99.98.4.255", 211),
        ("sunrise", "earth_loading", "0.0.99.98.1.255", 69),
    ],
)
def test_injected_events(name: str, kind: str, profile: str, code: int) -> None:
    model = meter(name)
    assert plain(get(model, 1, "0.0.94.91.0.255", 2)) == 0
    entry = model.inject_event(kind, NOW - 100)
    assert entry.code == code
    (row,) = rows(model, profile)
    assert (instant(row[0]), row[1]) == (NOW - 100, code)
    tampers = 1 if kind in ("magnet_tamper", "cover_open") else 0
    assert plain(get(model, 1, "0.0.94.91.0.255", 2)) == tampers
    assert truth.raw(model, "tamper_count", NOW - 200) == 0
    assert model.snapshot(NOW).last_events[-1] == (NOW - 100, code, kind)


def test_inject_by_code_and_unknown_events() -> None:
    model = meter("sunrise")
    assert model.inject_event(207, NOW).kind == "neutral_missing"
    with pytest.raises(ValueError, match="sunrise meters have no event 'voltage_unbalance'"):
        model.inject_event("voltage_unbalance", NOW)
    with pytest.raises(ValueError, match="no event 999"):
        model.inject_event(999, NOW)


def test_event_profiles_are_bounded() -> None:
    model = meter()
    for k in range(40):
        model.inject_event("cover_open", NOW - 1000 + k)
    assert len(rows(model, "0.0.99.98.5.255")) == 1  # non-rollover: depth 1
    for k in range(40):
        model.inject_event("magnet_tamper" if k % 2 else "magnet_tamper_restored", NOW - 500 + k)
    assert len(rows(model, "0.0.99.98.4.255")) <= 32
    assert model.snapshot(NOW).tamper_count == 60


# -- disconnect control, limiter -------------------------------------------------------------------

RELAY = "0.0.96.3.10.255"


def test_remote_disconnect_and_reconnect() -> None:
    model = meter()
    assert plain(get(model, 70, RELAY, 2)) is True
    assert plain(get(model, 70, RELAY, 4)) == 1
    assert act(model, 70, RELAY, 1, Typed(Tag.INTEGER, 0), now=NOW) is ActionResult.SUCCESS
    assert (plain(get(model, 70, RELAY, 2)), plain(get(model, 70, RELAY, 3))) == (False, 0)
    assert act(model, 70, RELAY, 2, None, now=NOW + 60) is ActionResult.SUCCESS
    assert model.relay_state is ControlState.CONNECTED
    assert act(model, 70, RELAY, 2, None, now=NOW + 70) is ActionResult.SUCCESS  # already
    assert model.snapshot(NOW + 70).relay_operations == 2
    control = rows(model, "0.0.99.98.6.255", now=NOW + 61)
    assert [(instant(r[0]), r[1]) for r in control] == [(NOW, 301), (NOW + 60, 302)]
    assert act(model, 70, RELAY, 1, b"now") is ActionResult.TYPE_UNMATCHED


def test_reconnection_by_the_consumer_in_mode_4() -> None:
    model = meter()
    mode = attr(70, RELAY, 4)
    assert model.set("utility", mode, Typed(Tag.ENUM, 4), NOW) is DataAccessResult.SUCCESS
    assert model.set("utility", mode, Typed(Tag.ENUM, 9), NOW) is DataAccessResult.OTHER_REASON
    assert model.set("utility", mode, b"4", NOW) is DataAccessResult.TYPE_UNMATCHED
    act(model, 70, RELAY, 1)
    act(model, 70, RELAY, 2)
    assert model.relay_state is ControlState.READY_FOR_RECONNECTION
    assert plain(get(model, 70, RELAY, 2)) is False
    model.press_button(NOW + 5)
    assert model.relay_state is ControlState.CONNECTED
    model.set("utility", mode, Typed(Tag.ENUM, 0), NOW)
    assert act(model, 70, RELAY, 1) is ActionResult.OTHER_REASON  # mode 0: always connected


def test_limiter_thresholds() -> None:
    model = meter()
    limiter = "0.0.17.0.0.255"
    assert plain(get(model, 71, limiter, 2)) == (3, obis("1.0.1.7.0.255").to_bytes(), 2)
    assert plain(get(model, 71, limiter, 4)) == 10_000
    assert plain(get(model, 71, limiter, 6)) == 60
    threshold = Typed(Tag.DOUBLE_LONG, 7_500)
    assert model.set("utility", attr(71, limiter, 4), threshold, NOW) is DataAccessResult.SUCCESS
    assert (plain(get(model, 71, limiter, 4)), plain(get(model, 71, limiter, 3))) == (7500, 7500)
    assert model.set("utility", attr(71, limiter, 6), 120, NOW) is DataAccessResult.SUCCESS
    assert plain(get(model, 71, limiter, 6)) == 120
    assert model.set("utility", attr(71, limiter, 5), b"x", NOW) is DataAccessResult.TYPE_UNMATCHED
    assert model.set("utility", attr(71, limiter, 4), Typed(Tag.LONG, 5), NOW) is (
        DataAccessResult.TYPE_UNMATCHED
    )
    assert model.set("utility", attr(71, limiter, 2), (3, b"", 2), NOW) is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert model.set("reader", attr(71, limiter, 4), threshold, NOW) is (
        DataAccessResult.READ_WRITE_DENIED
    )
    assert [r[1] for r in rows(model, "0.0.99.98.3.255", now=NOW + 1)] == [158]


# -- image transfer --------------------------------------------------------------------------------

IMAGE = "0.0.44.0.0.255"


def send_blocks(model: SimulatedMeter, image: bytes, numbers: list[int]) -> None:
    for number in numbers:
        block = image[number * BLOCK_SIZE : (number + 1) * BLOCK_SIZE]
        parameters = (Typed(Tag.DOUBLE_LONG_UNSIGNED, number), block)
        assert act(model, 18, IMAGE, 2, parameters) is ActionResult.SUCCESS


def initiate(model: SimulatedMeter, identifier: bytes, size: int) -> ActionResult:
    return act(model, 18, IMAGE, 1, (identifier, Typed(Tag.DOUBLE_LONG_UNSIGNED, size)))


def test_firmware_upgrade_with_a_resumed_transfer() -> None:
    model = meter()
    image = build_image("2.0.0", bytes(range(256)) * 4)
    blocks = -(-len(image) // BLOCK_SIZE)
    assert plain(get(model, 18, IMAGE, 2)) == BLOCK_SIZE
    assert plain(get(model, 18, IMAGE, 6)) == TransferStatus.NOT_INITIATED
    assert initiate(model, b"fw-2.0.0", len(image)) is ActionResult.SUCCESS
    send_blocks(model, image, [3, 0, 5, 1])  # out of order, blocks 2 and 4 missing
    bitmap = plain(get(model, 18, IMAGE, 3))
    assert isinstance(bitmap, BitString)
    assert bitmap.bits == "110101"[:blocks]
    assert plain(get(model, 18, IMAGE, 4)) == 2
    assert act(model, 18, IMAGE, 3, Typed(Tag.INTEGER, 0)) is ActionResult.OTHER_REASON
    assert plain(get(model, 18, IMAGE, 6)) == TransferStatus.VERIFICATION_FAILED
    assert initiate(model, b"fw-2.0.0", len(image)) is ActionResult.SUCCESS  # resume
    assert plain(get(model, 18, IMAGE, 4)) == 2
    send_blocks(model, image, [2, 4])
    assert act(model, 18, IMAGE, 3, Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert plain(get(model, 18, IMAGE, 6)) == TransferStatus.VERIFICATION_SUCCESSFUL
    ((size, identifier, signature),) = plain(get(model, 18, IMAGE, 7))  # type: ignore[misc]
    assert (size, identifier, signature) == (len(image), b"fw-2.0.0", image[-32:])
    assert plain(get(model, 1, "1.0.0.2.0.255", 2)) == "1.0.0"
    assert act(model, 18, IMAGE, 4, Typed(Tag.INTEGER, 0), now=NOW + 10) is ActionResult.SUCCESS
    assert plain(get(model, 1, "1.0.0.2.0.255", 2)) == "2.0.0"
    assert model.firmware_version == "2.0.0"
    assert plain(get(model, 18, IMAGE, 6)) == TransferStatus.ACTIVATION_SUCCESSFUL
    assert [r[1] for r in rows(model, "0.0.99.98.3.255", now=NOW + 11)] == [157]
    assert rows(model, "0.0.94.91.10.255")[0][2] == "2.0.0"


def test_a_corrupt_image_fails_verification_and_activation() -> None:
    model = meter()
    image = bytearray(build_image("6.6.6", b"payload" * 50))
    image[40] ^= 1
    initiate(model, b"bad", len(image))
    send_blocks(model, bytes(image), list(range(-(-len(image) // BLOCK_SIZE))))
    assert act(model, 18, IMAGE, 3) is ActionResult.OTHER_REASON
    assert act(model, 18, IMAGE, 4) is ActionResult.OTHER_REASON
    assert model.firmware_version == "1.0.0"


def test_image_transfer_refusals() -> None:
    model = meter()
    assert act(model, 18, IMAGE, 2, (Typed(Tag.DOUBLE_LONG_UNSIGNED, 0), b"x")) is (
        ActionResult.OTHER_REASON  # nothing initiated
    )
    assert act(model, 18, IMAGE, 1, b"not a structure") is ActionResult.TYPE_UNMATCHED
    assert initiate(model, b"huge", 1 << 30) is ActionResult.OTHER_REASON
    assert initiate(model, b"one", 500) is ActionResult.SUCCESS
    assert act(model, 18, IMAGE, 2, (Typed(Tag.DOUBLE_LONG_UNSIGNED, 0), b"short")) is (
        ActionResult.OTHER_REASON
    )
    assert act(model, 18, IMAGE, 2, (Typed(Tag.DOUBLE_LONG_UNSIGNED, 3), bytes(192))) is (
        ActionResult.OTHER_REASON  # only blocks 0..2
    )
    send_blocks(model, bytes(500), [0])
    assert initiate(model, b"other", 500) is ActionResult.SUCCESS  # another image starts over
    assert plain(get(model, 18, IMAGE, 4)) == 0
    enabled = attr(18, IMAGE, 5)
    assert model.set("utility", enabled, False, NOW) is DataAccessResult.SUCCESS
    assert initiate(model, b"one", 500) is ActionResult.OTHER_REASON
    assert model.set("utility", enabled, 1, NOW) is DataAccessResult.TYPE_UNMATCHED


@given(st.binary(max_size=200))
def test_parse_image_takes_any_octets(data: bytes) -> None:
    assert parse_image(data) is None or isinstance(parse_image(data), str)


@given(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=64),
    st.binary(max_size=300),
)
def test_image_round_trip(version: str, payload: bytes) -> None:
    assert parse_image(build_image(version, payload)) == version


# -- push setup, security setup, association -------------------------------------------------------


def test_push() -> None:
    model = meter()
    objects = plain(get(model, 40, "0.0.25.9.0.255", 2))
    assert isinstance(objects, list)
    assert objects[0] == (1, obis("0.0.42.0.0.255").to_bytes(), 2, 0)
    assert objects[1] == (8, obis("0.0.1.0.0.255").to_bytes(), 2, 0)
    assert model.take_push_request() is False
    assert act(model, 40, "0.0.25.9.0.255", 1, Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert model.snapshot(NOW).push_pending
    assert model.take_push_request() is True
    assert model.take_push_request() is False
    body = plain(model.push_body(NOW))
    assert isinstance(body, tuple)
    assert len(body) == len(objects)
    assert body[0] == b"HES00000007"
    assert instant(body[1]) == NOW
    assert list(body[2:]) == rows(model, "1.0.94.91.0.255")[0][1:]
    destination = (Typed(Tag.ENUM, 0), b"10.0.0.1:4059", Typed(Tag.ENUM, 0))
    assert model.set("utility", attr(40, "0.0.25.9.0.255", 3), destination, NOW) is (
        DataAccessResult.SUCCESS
    )
    assert plain(get(model, 40, "0.0.25.9.0.255", 3)) == (0, b"10.0.0.1:4059", 0)


def test_push_setup_schedule() -> None:
    model = meter()
    push = "0.0.25.9.0.255"
    assert [plain(get(model, 40, push, i)) for i in (4, 5, 6, 7)] == [[], 0, 3, 60]
    six = DateTime(None, None, None, None, 6, 0, 0, 0, None, None).to_octets()
    seven = DateTime(None, None, None, None, 7, 30, 0, 0, None, None).to_octets()
    assert model.set("utility", attr(40, push, 4), [(six, seven)], NOW) is DataAccessResult.SUCCESS
    assert model.set("utility", attr(40, push, 5), Typed(Tag.LONG_UNSIGNED, 300), NOW) is (
        DataAccessResult.SUCCESS
    )
    assert model.set("utility", attr(40, push, 6), Typed(Tag.UNSIGNED, 5), NOW) is (
        DataAccessResult.SUCCESS
    )
    assert model.set("utility", attr(40, push, 7), Typed(Tag.LONG_UNSIGNED, 120), NOW) is (
        DataAccessResult.SUCCESS
    )
    assert [plain(get(model, 40, push, i)) for i in (4, 5, 6, 7)] == [[(six, seven)], 300, 5, 120]
    assert model.snapshot(NOW).push.window == ((six, seven),)
    refused = {
        4: [(six,)],  # not a pair
        5: Typed(Tag.UNSIGNED, 3),  # not long-unsigned
        6: Typed(Tag.LONG_UNSIGNED, 3),
    }
    for index, value in refused.items():
        assert model.set("utility", attr(40, push, index), value, NOW) is (
            DataAccessResult.TYPE_UNMATCHED
        ), index
    assert model.set("utility", attr(40, push, 4), [(six, seven)] * 9, NOW) is (
        DataAccessResult.OTHER_REASON
    )
    assert model.set("reader", attr(40, push, 5), Typed(Tag.LONG_UNSIGNED, 1), NOW) is (
        DataAccessResult.READ_WRITE_DENIED
    )


def test_security_setup_and_association() -> None:
    model = meter()
    model.note_client_system_title(b"HESCLIENT"[:8])
    security = "0.0.43.0.3.255"
    assert plain(get(model, 64, security, 2)) == 3  # authenticated and encrypted
    assert plain(get(model, 64, security, 3)) == 0
    assert plain(get(model, 64, security, 4)) == b"HESCLIEN"
    assert plain(get(model, 64, security, 5)) == model.spec.system_title
    assert act(model, 64, security, 2, []) is ActionResult.OBJECT_UNAVAILABLE
    association = "0.0.40.0.0.255"
    public = plain(get(model, 15, association, 2, association="public"))
    utility = plain(get(model, 15, association, 2))
    assert isinstance(public, list)
    assert isinstance(utility, list)
    assert len(public) == len(model.tables.objects)

    def modes(entries: list[object], name: str) -> tuple[list[int], list[int]]:
        (entry,) = [e for e in entries if isinstance(e, tuple) and e[2] == obis(name).to_bytes()]
        attributes, methods = entry[3]
        return [a[1] for a in attributes], [m[1] for m in methods]

    assert modes(public, "0.0.1.0.0.255")[0] == [1] * 9
    assert modes(public, "1.0.1.8.0.255")[0] == [0, 0, 0]
    assert modes(utility, "0.0.1.0.0.255")[0][1] == 3  # time: read and write
    assert modes(utility, RELAY)[1] == [1, 1]
    assert plain(get(model, 15, association, 3, association="reader")) == (32, 1)
    assert plain(get(model, 15, association, 6, association="reader"))[-1] == 1  # type: ignore[index]
    assert get(model, 15, association, 7) is DataAccessResult.READ_WRITE_DENIED
    assert plain(get(model, 15, association, 9)) == obis(security).to_bytes()


def test_snapshot_is_the_ground_truth() -> None:
    model = meter("kalpa", seed=3)
    act(model, 70, RELAY, 1)
    snapshot = model.snapshot(NOW)
    assert (snapshot.meter_id, snapshot.serial_number) == ("M3", "00000003")
    assert snapshot.relay is ControlState.DISCONNECTED
    assert snapshot.firmware_version == "1.0.0"
    assert snapshot.clock_offset == 0
    assert snapshot.last_events[-1] == (NOW, 301, "load_switch_disconnected")


def test_meter_spec_is_validated() -> None:
    with pytest.raises(ValueError, match="system title must be 8 octets"):
        MeterSpec("M", "1", b"short", 1, vendor("is15959"))
    with pytest.raises(ValueError, match="FLAG id"):
        MeterSpec("M", "1", bytes(8), 1, vendor("is15959"), flag_id="toolong")
    with pytest.raises(ValueError, match="seed"):
        MeterSpec("M", "1", bytes(8), -1, vendor("is15959"))


# -- gurux-dlms decodes what the meter answers -----------------------------------------------------


def test_gurux_decodes_the_instantaneous_profile() -> None:
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo

    model = meter()
    encoded = axdr.encode(get(model, 7, "1.0.94.91.0.255", 2))  # type: ignore[arg-type]
    info = _GXDataInfo()
    decoded = _GXCommon.getData(GXDLMSSettings(False, None), GXByteBuffer(encoded), info)
    assert info.complete
    ((clock, *values),) = decoded
    ours = rows(model, "1.0.94.91.0.255")[0]
    assert bytes(clock) == ours[0]
    numbers = [v for v in ours[1:] if isinstance(v, int)]
    assert [int(v) for v in values if isinstance(v, int)] == numbers


# -- end to end: our ClientConnection, the ServerConnection, a simulated meter ---------------------

EK = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
AK = bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF")
CLIENT_TITLE = bytes.fromhex("4D4D4D0000BC614E")
PASSWORD = b"12345678"


def server_for(model: SimulatedMeter) -> ServerConnection:
    """A ServerConnection offering the vendor profile's associations over ``model``."""
    mechanisms = {"none": Mechanism.NONE, "lls": Mechanism.LLS, "hls-gmac": Mechanism.HLS_GMAC}
    associations = {
        a.client_address: ServerAssociation(
            a.name,
            a.client_address,
            mechanisms[a.security],
            password=PASSWORD if a.security == "lls" else None,
            ciphered=a.ciphered,
        )
        for a in model.tables.profile.associations
    }
    return ServerConnection(
        associations, model, system_title=model.spec.system_title, keys=(EK, AK)
    )


class Wire:
    """One client SAP and the meter's server connection, APDUs carried until both are quiet."""

    def __init__(self, model: SimulatedMeter, association: str) -> None:
        chosen = model.tables.profile.association(association)
        mechanism = {"none": Mechanism.NONE, "lls": Mechanism.LLS}.get(
            chosen.security, Mechanism.HLS_GMAC
        )
        params = AssociationParameters(
            mechanism=mechanism,
            password=PASSWORD if mechanism is Mechanism.LLS else None,
            ciphered=chosen.ciphered,
        )
        security = None
        if mechanism is Mechanism.HLS_GMAC or chosen.ciphered:
            security = SecurityContext(system_title=CLIENT_TITLE, ek=EK, ak=AK)
        self.client = ClientConnection(params, security)
        if security is not None:
            self.client.grant_invocation_counters(1, 1000)
        self.server = server_for(model)
        self.sap = chosen.client_address
        self.now = NOW
        self.client.associate(self.now)
        (associated,) = self.run()
        assert isinstance(associated, Associated)

    def run(self) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        while True:
            self.now += 0.01
            out = self.client.data_to_send()
            for apdu in out:
                self.server.receive_apdu(self.sap, apdu, self.now)
            back = self.server.data_to_send()
            for apdu in back:
                events += self.client.receive_apdu(apdu, self.now)
            if not out and not back:
                return events

    def get(self, descriptor: AttributeDescriptor, access: AccessSelection | None = None) -> object:
        self.client.get(descriptor, self.now, access)
        (done,) = self.run()
        assert isinstance(done, GetCompleted)
        return done.result

    def act(self, method: MethodDescriptor, parameters: Value | None = None) -> ActionResult:
        self.client.action(method, self.now, parameters)
        (done,) = self.run()
        assert isinstance(done, ActionCompleted)
        return done.result

    def set(self, descriptor: AttributeDescriptor, value: Value) -> DataAccessResult:
        self.client.set(descriptor, value, self.now)
        (done,) = self.run()
        assert isinstance(done, SetCompleted)
        return done.result


@pytest.mark.parametrize("name", ["is15959", "sunrise"])
def test_a_reader_reads_the_meter_through_the_server(name: str) -> None:
    model = meter(name)
    wire = Wire(model, "reader")
    energy = wire.get(attr(3, "1.0.1.8.0.255", 2))
    assert energy == truth.raw(model, "energy_active_import", wire.now)
    day = by_range(CLOCK, date_time(NOW - 86400), date_time(NOW))
    blocks = wire.get(attr(7, BLOCK_LOAD, 2), day)  # a long GET, in datablocks
    assert isinstance(blocks, list)
    assert len(blocks) == 49
    assert [list(row) for row in blocks] == rows(model, BLOCK_LOAD, day)
    assert wire.act(attr(70, RELAY, 1), Typed(Tag.INTEGER, 0)) is ActionResult.READ_WRITE_DENIED


def test_the_utility_upgrades_firmware_and_disconnects_through_the_server() -> None:
    model = meter()
    wire = Wire(model, "utility")  # HLS-GMAC, ciphered
    image = build_image("3.1.4", b"\x5a" * 700)
    initiate_parameters = (b"fw-3.1.4", Typed(Tag.DOUBLE_LONG_UNSIGNED, len(image)))
    assert wire.act(attr(18, IMAGE, 1), initiate_parameters) is ActionResult.SUCCESS
    for number in range(-(-len(image) // BLOCK_SIZE)):
        block = image[number * BLOCK_SIZE : (number + 1) * BLOCK_SIZE]
        parameters = (Typed(Tag.DOUBLE_LONG_UNSIGNED, number), block)
        assert wire.act(attr(18, IMAGE, 2), parameters) is ActionResult.SUCCESS
    assert wire.act(attr(18, IMAGE, 3), Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert wire.act(attr(18, IMAGE, 4), Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert wire.get(attr(1, "1.0.0.2.0.255", 2)) == "3.1.4"
    assert wire.act(attr(70, RELAY, 1), Typed(Tag.INTEGER, 0)) is ActionResult.SUCCESS
    assert model.relay_state is ControlState.DISCONNECTED
    assert wire.set(attr(8, "0.0.1.0.0.255", 2), date_time(NOW + 3600)) is DataAccessResult.SUCCESS
    assert model.meter_time(wire.now) == pytest.approx(NOW + 3600, abs=1)
    limit = Typed(Tag.DOUBLE_LONG, 6_000)
    assert wire.set(attr(71, "0.0.17.0.0.255", 4), limit) is DataAccessResult.SUCCESS
    assert wire.get(attr(71, "0.0.17.0.0.255", 4)) == 6_000


def test_the_public_client_reads_only_the_public_objects() -> None:
    model = meter()
    wire = Wire(model, "public")
    assert wire.get(attr(1, "0.0.96.1.0.255", 2)) == "00000007"
    assert wire.get(attr(3, "1.0.1.8.0.255", 2)) is DataAccessResult.READ_WRITE_DENIED


# -- the profile status (sunrise's block load) -----------------------------------------------------

STATUS_OBJECT = "0.0.96.10.1.255"
POWER_DOWN, CLOCK_ADJUSTED = 0x80, 0x20  # AMR profile status bits 7 and 5 (IDIS, DSMR P3)


def block_of(m: float, interval: int = 1800) -> float:
    """The label (end, meter time) of the block whose interval [end - interval, end) holds m."""
    return float(math.floor(m / interval) * interval + interval)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32), drift=st.sampled_from([0.0, 150.0, -150.0]))
def test_the_profile_status_says_power_down_exactly_where_the_supply_failed(
    seed: int, drift: float
) -> None:
    model = meter("sunrise", seed=seed, clock_drift_ppm=drift, start=NOW - 40 * 86400)
    captures = plain(get(model, 7, BLOCK_LOAD, 3))
    assert isinstance(captures, list)
    assert captures[1] == (1, obis(STATUS_OBJECT).to_bytes(), 2, 0)  # after the clock
    whole = rows(model, BLOCK_LOAD)
    assert len(whole) == 1680
    assert {row[1] for row in whole} <= {0, POWER_DOWN}  # the clock was never set
    flagged = {instant(row[0]) for row in whole if row[1] == POWER_DOWN}
    # the load model's supply failures, on the meter's clock: a block is flagged when one
    # overlaps it, even by a second, and only then
    clock, p = model.clock, model.params
    labels = [instant(row[0]) for row in whole]
    failures = load.outages(p, clock.true_time(labels[0] - 1800) - 3600, NOW)
    expected = {
        label
        for label in labels
        if any(
            start < clock.true_time(label) and end > clock.true_time(label - 1800)
            for start, end in failures
        )
    }
    assert flagged == expected
    assert 3 <= len(flagged) <= 2 * 5  # a failure every 8 days; with drift one may straddle two
    for label in flagged:  # there is no supply at some second of each flagged block
        begin, end = clock.true_time(label - 1800), clock.true_time(label)
        assert any(not load.supplied(p, t) for t in range(math.ceil(begin), math.ceil(end)))
    assert [truth.profile_status(model, t - 1800, t) for t in labels] == [row[1] for row in whole]


def test_power_down_blocks_hold_the_power_events() -> None:
    model = meter("sunrise", seed=11)
    flagged = {instant(row[0]) for row in rows(model, BLOCK_LOAD) if row[1] & POWER_DOWN}
    first = min(instant(row[0]) for row in rows(model, BLOCK_LOAD)) - 1800
    events = [row for row in rows(model, "0.0.99.98.2.255") if instant(row[0]) >= first]
    failures = {block_of(instant(r[0])) for r in events if r[1] == 101}
    restorations = {block_of(instant(r[0])) for r in events if r[1] == 102}
    assert len(failures) >= 4
    assert flagged == failures == restorations  # a failure lasts 1..10 minutes within a slot


def test_the_profile_status_says_clock_adjusted_where_the_clock_was_set() -> None:
    model = meter("sunrise")
    first_set, second_set = NOW - 5000, NOW - 3000
    clock = attr(8, "0.0.1.0.0.255", 2)
    assert model.set("utility", clock, date_time(first_set + 700), first_set) is (
        DataAccessResult.SUCCESS
    )
    shifted = act(model, 8, "0.0.1.0.0.255", 6, Typed(Tag.LONG, -300), now=second_set)
    assert shifted is ActionResult.SUCCESS
    assert model.clock_sets == (first_set, second_set)
    whole = rows(model, BLOCK_LOAD)
    adjusted = {instant(row[0]) for row in whole if row[1] & CLOCK_ADJUSTED}
    # history follows the meter's clock as it is now: 400 s ahead
    assert adjusted == {block_of(model.meter_time(t)) for t in (first_set, second_set)}
    assert adjusted == {NOW - 3600, NOW - 1800}
    assert {row[1] & ~POWER_DOWN for row in whole} == {0, CLOCK_ADJUSTED}
    drifting = meter("sunrise")
    drifting.set_clock_drift_ppm(100.0, NOW - 5000)  # a new drift is no setting
    assert drifting.clock_sets == ()
    assert not any(row[1] & CLOCK_ADJUSTED for row in rows(drifting, BLOCK_LOAD))


def test_the_status_object_holds_the_block_in_progress() -> None:
    model = meter("sunrise")
    start, end = load.outages(model.params, NOW - 8 * 86400, NOW)[0]
    block = block_of(start)
    assert plain(get(model, 1, STATUS_OBJECT, 2, block - 1800)) == 0
    assert plain(get(model, 1, STATUS_OBJECT, 2, end)) == POWER_DOWN
    assert plain(get(model, 1, STATUS_OBJECT, 2, block + 1)) == 0  # the next block's
    [row] = in_range(model, BLOCK_LOAD, block, block)
    assert row[1] == POWER_DOWN
    assert get(model, 1, STATUS_OBJECT, 3) is DataAccessResult.OBJECT_UNAVAILABLE
    assert get(model, 1, STATUS_OBJECT, 2, association="public") is (
        DataAccessResult.READ_WRITE_DENIED
    )
    # a vendor whose profiles capture no status has no such object
    assert get(meter(), 1, STATUS_OBJECT, 2) is DataAccessResult.OBJECT_UNDEFINED
    assert (1, obis(STATUS_OBJECT).to_bytes(), 2, 0) not in plain(get(meter(), 7, BLOCK_LOAD, 3))  # type: ignore[operator]
