"""Normalisation (adapters/normalise.py, adapters/model.py): units, clocks, profile rows, events,
and the issue 6 property: meters of every vendor measuring the same thing give the same
normalised readings, checked against the simulator's ground truth."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters import is15959
from adapters.hooks import MeterContext
from adapters.is15959 import TIME_UNITS, Measure
from adapters.model import UNITS, Event, Quality, Reading, Source, canonical
from adapters.normalise import NormaliseError, Normaliser, to_si
from adapters.profile import VendorProfile, load_profile
from hesd.sim import MeterSpec, SimulatedMeter, load, truth
from hesd.sim.timebase import IST
from protocols.dlms import axdr
from protocols.dlms.apdu import AttributeDescriptor, DataAccessResult, by_range
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit, Unit
from protocols.dlms.obis import ObisCode

REPO = Path(__file__).resolve().parent.parent
DLMS_VENDORS = ("is15959", "kalpa", "sunrise")  # meghdoot speaks JSON: see test_json_values
START = 1_704_047_400.0  # 2024-01-01 00:00 IST, the simulated meters' default start
CLOCK = (8, ObisCode.parse("0.0.1.0.0.255"), 2)
UTC = dt.UTC


def vendor(name: str) -> VendorProfile:
    return load_profile(REPO / "conf" / "vendors" / f"{name}.toml")


PROFILES = {name: vendor(name) for name in (*DLMS_VENDORS, "meghdoot")}
NORMALISERS = {name: Normaliser(profile) for name, profile in PROFILES.items()}


def context(vendor_name: str, meter_id: str = "M1") -> MeterContext:
    return MeterContext(meter_id, vendor_name, "1.0.0", PROFILES[vendor_name].model)


def ist(*args: int, status: int = 0, deviation: int | None = -330) -> bytes:
    stamp = DateTime(*args[:3], None, *args[3:6], 0, deviation, status)
    return stamp.to_octets()


# -- units ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "scaler", "unit", "value", "normal"),
    [
        (123456, 0, Unit.WATT_HOUR, "123.456", "kWh"),
        (123456, 1, Unit.WATT_HOUR, "1234.56", "kWh"),
        (5, 3, Unit.WATT_HOUR, "5", "kWh"),
        (7, 0, Unit.VAR_HOUR, "0.007", "kvarh"),
        (-1500, 0, Unit.WATT, "-1.5", "kW"),
        (23012, -2, Unit.VOLT, "230.12", "V"),
        (4999, -2, Unit.HERTZ, "49.99", "Hz"),
        (-999, -3, Unit.COUNT, "-0.999", ""),
        (90, 0, Unit.MINUTE, "5400", "s"),
        (2, 0, Unit.HOUR, "7200", "s"),
        (0, -2, Unit.AMPERE, "0", "A"),
    ],
)
def test_to_si(raw: int, scaler: int, unit: Unit, value: str, normal: str) -> None:
    got, got_unit = to_si(raw, scaler, unit)
    assert (format(canonical(got), "f"), got_unit) == (value, normal)


def test_a_counter_is_a_count_and_an_unknown_unit_has_no_normal_form() -> None:
    assert to_si(12, 0, Unit.COUNT, count=True) == (Decimal(12), "count")
    with pytest.raises(ValueError, match="no normalised form"):
        to_si(1, 0, Unit.CUBIC_METRE)


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6))
def test_canonical_is_plain_and_equal(value: Decimal) -> None:
    out = canonical(value)
    assert out == value
    assert "E" not in format(out, "f")
    assert "e" not in str(out)
    assert not format(out, "f").endswith(".")
    assert "." not in format(out, "f") or not format(out, "f").endswith("0")


# -- clocks ----------------------------------------------------------------------------------


def test_timestamps_in_utc_with_the_deviation_or_the_vendors_offset() -> None:
    norm = NORMALISERS["is15959"]
    assert norm.timestamp(ist(2026, 1, 1, 5, 30, 0)) == (
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        Quality(0),
    )
    # no deviation (0x8000): IS 15959 meters' wall clock is IST ([clock] utc_offset)
    no_deviation = ist(2026, 1, 1, 5, 30, 0, deviation=None)
    assert norm.timestamp(no_deviation)[0] == dt.datetime(2026, 1, 1, tzinfo=UTC)
    other = Normaliser(dataclasses.replace(PROFILES["is15959"], utc_offset=-180))
    assert other.timestamp(no_deviation)[0] == dt.datetime(2026, 1, 1, 8, 30, tzinfo=UTC)
    typed = DateTime.from_octets(ist(2026, 1, 1, 5, 30, 0))
    assert norm.timestamp(typed)[0] == dt.datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (0x00, Quality(0)),
        (0x80, Quality(0)),  # daylight saving active: nothing wrong
        (0x01, Quality.CLOCK_INVALID),
        (0x02, Quality.CLOCK_DOUBTFUL),
        (0x04, Quality.CLOCK_DOUBTFUL),  # different clock base
        (0x08, Quality.CLOCK_DOUBTFUL),  # invalid clock status
        (0x03, Quality.CLOCK_INVALID | Quality.CLOCK_DOUBTFUL),
    ],
)
def test_clock_status_becomes_quality(status: int, flags: Quality) -> None:
    _, quality = NORMALISERS["is15959"].timestamp(ist(2026, 1, 1, 0, 0, 0, status=status))
    assert quality == flags


@pytest.mark.parametrize(
    "value",
    [
        b"\x07\xea",
        12,
        None,
        DateTime(None, 1, 1, None, 0, 0, 0, 0, None, None).to_octets(),
        b"\xff" * 12,
    ],
)
def test_a_clock_that_is_no_instant_is_an_error_that_says_so(value: object) -> None:
    with pytest.raises(NormaliseError, match=r"^clock: "):
        NORMALISERS["is15959"].timestamp(value)


# -- registers -------------------------------------------------------------------------------


def test_a_register_with_the_profiles_or_the_meters_scaler() -> None:
    norm, meter = NORMALISERS["kalpa"], context("kalpa")
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    reading = norm.reading(meter, "energy_active_import", 12345, at=at, source=Source.PULL)
    assert (reading.value, reading.unit, reading.obis) == (
        Decimal("123.45"),
        "kWh",
        "1.0.1.8.0.255",
    )
    read_back = ScalerUnit(0, Unit.WATT_HOUR)  # what the meter's attribute 3 says wins
    reading = norm.reading(
        meter, "energy_active_import", 12345, at=at, source=Source.PULL, scaler_unit=read_back
    )
    assert reading.value == Decimal("12.345")
    with pytest.raises(NormaliseError, match=r"says its unit is V, the profile Wh"):
        norm.reading(
            meter,
            "energy_active_import",
            1,
            at=at,
            source=Source.PULL,
            scaler_unit=ScalerUnit(0, Unit.VOLT),
        )


def test_a_register_at_its_types_limit_is_flagged_overflow() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959")
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    full = norm.reading(meter, "energy_active_import", 2**32 - 1, at=at, source=Source.PULL)
    assert full.quality == Quality.OVERFLOW
    low = norm.reading(meter, "active_power", -(2**31), at=at, source=Source.PULL)
    assert low.quality == Quality.OVERFLOW
    zero = norm.reading(meter, "energy_active_import", 0, at=at, source=Source.PULL)
    assert zero.quality == Quality(0)


@pytest.mark.parametrize(
    ("quantity", "raw", "message"),
    [
        (
            "energy_active_import",
            b"12",
            r"expected an integer \(double-long-unsigned\), got octets 3132",
        ),
        ("energy_active_import", 1.5, r"expected an integer .*got float 1.5"),
        ("energy_active_import", True, r"got bool True"),
        ("no_such_thing", 1, r"vendor is15959 has no quantity 'no_such_thing'"),
    ],
)
def test_a_value_the_profile_cannot_explain_names_meter_and_object(
    quantity: str, raw: object, message: str
) -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959", "MTR-9")
    with pytest.raises(NormaliseError, match=rf"^meter MTR-9: .*{message}"):
        norm.reading(meter, quantity, raw, at=dt.datetime.now(UTC), source=Source.PULL)


# -- profile rows ----------------------------------------------------------------------------


def test_rows_are_aligned_to_interval_boundaries_of_local_time() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959")
    load = PROFILES["is15959"].profile("block_load")
    assert load is not None
    assert load.interval == 1800
    late = ist(2026, 1, 1, 0, 30, 2)  # captured two seconds after the boundary
    early = ist(2026, 1, 1, 0, 59, 59)
    width = len(load.columns) - 1
    batch = norm.profile_rows(
        meter,
        "block_load",
        [[late, *[100] * width], [early, *[100] * width]],
        source=Source.SCHEDULE,
    )
    assert not batch.errors
    stamps = sorted({r.timestamp for r in batch.readings})
    assert stamps == [
        dt.datetime(2025, 12, 31, 19, 0, tzinfo=UTC),
        dt.datetime(2025, 12, 31, 19, 30, tzinfo=UTC),
    ]
    assert {r.interval for r in batch.readings} == {1800}
    daily = norm.profile_rows(
        meter, "daily_load", [[ist(2026, 1, 2, 0, 0, 7), 1, 2, 3, 4]], source=Source.SCHEDULE
    )
    # daily energies are register snapshots at local midnight (18:30 UTC), not interval values
    assert {(r.timestamp, r.interval) for r in daily.readings} == {
        (dt.datetime(2026, 1, 1, 18, 30, tzinfo=UTC), None)
    }


def test_a_bad_row_is_reported_and_the_others_are_kept() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959", "M7")
    good = [ist(2026, 1, 2, 0, 0, 0), 1, 2, 3, 4]
    rows = [good, good[:3], [*good[:2], "x", *good[3:]], [b"\x00" * 12, *good[1:]]]
    batch = norm.profile_rows(meter, "daily_load", rows, source=Source.PULL)
    assert len(batch.readings) == 4  # the first row, whole
    messages = [str(e) for e in batch.errors]
    assert messages[0] == "meter M7: daily_load (1.0.99.2.0.255) row 1: expected 5 values, got 3"
    assert messages[1].startswith(
        "meter M7: daily_load (1.0.99.2.0.255) row 2: column energy_active_export: "
    )
    assert "row 3: clock:" in messages[2]


def test_capture_times_of_maximum_demand() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959")
    load = PROFILES["is15959"].profile("billing")
    assert load is not None
    cells: list[object] = []
    for column in load.columns:
        if column == "clock":
            cells.append(ist(2026, 2, 1, 0, 0, 0))
        elif column.endswith(".capture_time"):
            cells.append(ist(2026, 1, 14, 19, 15, 0))
        else:
            cells.append(42)
    [*_] = batch = norm.profile_rows(meter, "billing", [cells], source=Source.PULL).readings
    demand = next(r for r in batch if r.quantity == "demand_active_max")
    assert demand.capture_time == dt.datetime(2026, 1, 14, 13, 45, tzinfo=UTC)
    assert all(
        r.capture_time is None for r in batch if r is not demand and "demand" not in r.quantity
    )


# -- events ----------------------------------------------------------------------------------


def test_event_rows_use_the_vendors_code_table() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959", "M3")
    log = PROFILES["is15959"].events
    magnet = log.by_kind("magnet_tamper")
    assert magnet is not None
    snapshot = [100] * len(log.snapshot)
    rows = [
        [ist(2026, 3, 1, 10, 0, 0), magnet.code, *snapshot],
        [ist(2026, 3, 1, 10, 0, 0), 9999, *snapshot],
    ]
    batch = norm.event_rows(meter, "other", rows, source=Source.PULL)
    [event] = batch.events
    assert (event.kind, event.category, event.severity, event.occurrence) == (
        "magnet_tamper",
        magnet.category,
        magnet.severity,
        True,
    )
    assert event.timestamp == dt.datetime(2026, 3, 1, 4, 30, tzinfo=UTC)
    assert [r.quantity for r in event.snapshot] == list(log.snapshot)
    [error] = batch.errors
    assert "event code int 9999 is not in the is15959 code table" in str(error)
    assert json.loads(json.dumps(event.to_json()))["kind"] == "magnet_tamper"


# -- JSON uplinks ----------------------------------------------------------------------------


def test_json_values() -> None:
    norm, meter = NORMALISERS["meghdoot"], context("meghdoot")
    at = dt.datetime(2026, 1, 1, tzinfo=UTC)
    batch = norm.json_values(
        meter, at, [("energy_active_import", Decimal(1500)), ("voltage_l1", Decimal("230.1"))]
    )
    assert [(r.quantity, r.value, r.unit, r.obis) for r in batch.readings] == [
        ("energy_active_import", Decimal("1.5"), "kWh", ""),
        ("voltage_l1", Decimal("230.1"), "V", ""),
    ]


# -- the model -------------------------------------------------------------------------------

READINGS = st.builds(
    Reading,
    meter_id=st.text(min_size=1, max_size=20),
    quantity=st.sampled_from(sorted(is15959.QUANTITIES)),
    value=st.decimals(
        allow_nan=False, allow_infinity=False, places=4, min_value=-1e12, max_value=1e12
    ),
    unit=st.sampled_from(sorted({u for u, _ in UNITS.values()} | {"count"})),
    timestamp=st.datetimes(timezones=st.just(UTC)),
    source=st.sampled_from(Source),
    obis=st.just("1.0.1.8.0.255"),
    interval=st.none() | st.integers(1, 86400),
    quality=st.sampled_from(list(Quality)) | st.just(Quality(0)),
    capture_time=st.none() | st.datetimes(timezones=st.just(UTC)),
)


@given(READINGS)
def test_a_reading_survives_json(reading: Reading) -> None:
    assert Reading.from_json(json.loads(json.dumps(reading.to_json()))) == reading


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": 1.5}, "value: expected a decimal string, got 1.5"),
        ({"value": "lots"}, "value: 'lots' is not a decimal number"),
        ({"timestamp": "2026-01-01T00:00:00"}, "timestamp: .* has no UTC offset"),
        ({"source": "guess"}, "source: 'guess' is not push, pull, schedule or alert"),
        ({"quality": ["shiny"]}, "quality: unknown flag 'shiny'"),
        ({"interval": "15m"}, "interval: expected seconds as an integer"),
        ({"quantity": "mood"}, "'mood' is not a canonical quantity"),
        ({"unit": "Wh"}, "'Wh' is not a normalised unit"),
    ],
)
def test_a_bad_reading_names_the_field(change: dict[str, object], message: str) -> None:
    good = Reading(
        "M1",
        "energy_active_import",
        Decimal(1),
        "kWh",
        dt.datetime(2026, 1, 1, tzinfo=UTC),
        Source.PUSH,
        "",
    ).to_json()
    with pytest.raises(ValueError, match=message):
        Reading.from_json(good | change)


def test_timestamps_must_be_utc() -> None:
    with pytest.raises(ValueError, match="is not in UTC"):
        Reading("M1", "frequency", Decimal(50), "Hz", dt.datetime(2026, 1, 1), Source.PUSH, "")
    with pytest.raises(ValueError, match="not a normalised event kind"):
        Event(
            "M1",
            "mood",
            "other",
            "info",
            True,
            1,
            "x",
            dt.datetime(2026, 1, 1, tzinfo=UTC),
            Source.PUSH,
            "",
        )


# -- every vendor measures the same: the simulator's ground truth ----------------------------


def sim_meter(vendor_name: str, seed: int) -> SimulatedMeter:
    spec = MeterSpec(
        "M1",
        f"{seed % 10**8:08d}",
        b"SIM" + (seed % 2**40).to_bytes(5, "big"),
        seed,
        PROFILES[vendor_name],
    )
    return SimulatedMeter(spec)


def buffer(
    meter: SimulatedMeter, profile: str, now: float, low: float | None = None
) -> list[object]:
    load = meter.spec.profile.profile(profile)
    assert load is not None
    access = None
    if low is not None:
        zone = dt.timezone(dt.timedelta(seconds=IST))
        edges = [
            DateTime.from_datetime(dt.datetime.fromtimestamp(t, zone)).to_octets()
            for t in (low, now)
        ]
        access = by_range(CLOCK, *edges)
    value = meter.get("utility", AttributeDescriptor(7, load.obis, 2), access, now)
    assert not isinstance(value, DataAccessResult), value
    rows = axdr.decode_all(axdr.encode(value))
    assert isinstance(rows, list)
    return rows


def si_truth(meter: SimulatedMeter, quantity: str, t: float) -> Decimal:
    """The exact value in hesd's normalised unit (truth.value is in the canonical DLMS unit)."""
    symbol = is15959.QUANTITIES[quantity].unit
    exponent = UNITS[symbol][1]
    return truth.value(meter, quantity, t).scaleb(exponent) * TIME_UNITS.get(symbol, 1)


def resolution(profile: VendorProfile, quantity: str) -> Decimal:
    spec = profile.quantity(quantity)
    assert spec is not None
    return to_si(1, spec.scaler, spec.unit)[0]


INTERVAL_BOUND = frozenset({Measure.DEMAND, Measure.BLOCK, Measure.AVERAGE})


def block_interval(vendor_name: str) -> int:
    load = PROFILES[vendor_name].profile("block_load")
    assert load is not None
    return load.interval


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), offset=st.integers(3 * 86400, 60 * 86400))
def test_every_vendor_normalises_the_same_instant_to_the_same_readings(
    seed: int, offset: int
) -> None:
    t = START + offset
    per_vendor: dict[str, dict[str, Reading]] = {}
    for name in DLMS_VENDORS:
        meter = sim_meter(name, seed)
        [row] = buffer(meter, "instantaneous", t)
        batch = NORMALISERS[name].profile_rows(
            context(name), "instantaneous", [row], source=Source.PULL
        )
        assert not batch.errors
        per_vendor[name] = {r.quantity: r for r in batch.readings}
        for reading in batch.readings:
            exact = si_truth(meter, reading.quantity, t)
            step = resolution(PROFILES[name], reading.quantity)
            assert abs(reading.value - exact) < step, (name, reading, exact)
            assert reading.unit == (
                "count"
                if PROFILES[name].quantity(reading.quantity).measure is Measure.COUNT
                else UNITS[is15959.QUANTITIES[reading.quantity].unit][0]
            )  # type: ignore[union-attr]
    common = set.intersection(*(set(r) for r in per_vendor.values()))
    assert {
        "energy_active_import",
        "voltage_l1",
        "current_l1",
        "frequency",
        "active_power",
    } <= common
    for quantity in common:
        # maximum demand is over the vendor's demand integration period (its block interval):
        # the same only between vendors that integrate alike
        vendors = [n for n in DLMS_VENDORS if block_interval(n) == block_interval("is15959")]
        if PROFILES["is15959"].quantity(quantity).measure not in INTERVAL_BOUND:  # type: ignore[union-attr]
            vendors = list(DLMS_VENDORS)
        readings = [per_vendor[name][quantity] for name in vendors]
        first = readings[0]
        for other in readings[1:]:
            # identical but for the OBIS code the vendor keeps it under and, where the vendors'
            # resolutions differ, the last digit: each is the truth at its own resolution
            assert dataclasses.replace(other, value=first.value, obis=first.obis) == first
        steps = {resolution(PROFILES[name], quantity) for name in vendors}
        if len(steps) == 1:
            assert len({r.value for r in readings}) == 1, readings
    assert len({r.timestamp for v in per_vendor.values() for r in v.values()}) == 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), day=st.integers(3, 60))
def test_every_vendor_gives_the_same_daily_energies(seed: int, day: int) -> None:
    now = START + day * 86400 + 3600  # 01:00 IST
    found: dict[str, dict[tuple[str, dt.datetime], Reading]] = {}
    for name in DLMS_VENDORS:
        meter = sim_meter(name, seed)
        rows = buffer(meter, "daily_load", now, low=now - 2 * 86400)
        batch = NORMALISERS[name].profile_rows(
            context(name), "daily_load", rows, source=Source.SCHEDULE
        )
        assert not batch.errors
        assert batch.readings
        found[name] = {(r.quantity, r.timestamp): r for r in batch.readings}
        for reading in batch.readings:
            local = reading.timestamp + dt.timedelta(seconds=IST)
            assert (local.hour, local.minute, local.second) == (0, 0, 0)  # local midnight
            exact = si_truth(meter, reading.quantity, reading.timestamp.timestamp())
            assert (
                Decimal(0) <= exact - reading.value < resolution(PROFILES[name], reading.quantity)
            )
    keys = set.intersection(*(set(f) for f in found.values()))
    assert any(q == "energy_active_import" for q, _ in keys)


def test_a_push_gives_the_instantaneous_readings_and_an_identification_push_none() -> None:
    norm, meter = NORMALISERS["is15959"], context("is15959")
    load = PROFILES["is15959"].profile("instantaneous")
    assert load is not None
    values = [
        ist(2026, 1, 1, 5, 30, 0) if c.endswith(".capture_time") else 7 for c in load.columns[1:]
    ]
    batch = norm.push(meter, (b"HES00000001", ist(2026, 1, 1, 5, 30, 0), *values))
    assert not batch.errors
    assert {r.source for r in batch.readings} == {Source.PUSH}
    assert {r.timestamp for r in batch.readings} == {dt.datetime(2026, 1, 1, tzinfo=UTC)}
    assert len(batch.readings) == len([c for c in load.columns[1:] if "." not in c])
    identification = norm.push(meter, ("00000001", b"SIM\x00\x00\x00\x00\x01", b"HES00000001"))
    assert (identification.readings, identification.errors) == ([], [])
    [error] = norm.push(meter, (b"HES00000001", 12)).errors
    assert str(error) == f"meter M1: push: expected {len(load.columns) + 1} values, got 2"


# -- the profile status column (AMR profile status) --------------------------------------------


def with_status(vendor_name: str, profile: str, columns: tuple[str, ...]) -> Normaliser:
    """The vendor's normaliser with ``profile`` capturing ``columns``."""
    base = PROFILES[vendor_name]
    loads = tuple(
        dataclasses.replace(p, columns=columns) if p.name == profile else p for p in base.profiles
    )
    return Normaliser(dataclasses.replace(base, profiles=loads))


BLOCK_WITH_STATUS = ("clock", "status", "current_avg", "voltage_avg", "block_energy_active_import")


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (0x00, Quality(0)),
        (0x80, Quality.POWER_DOWN),  # b7 PDN
        (0x20, Quality.CLOCK_ADJUSTED),  # b5 CAD
        (0x04, Quality.DATA_INVALID),  # b2 DNV
        (0x02, Quality.CLOCK_INVALID),  # b1 CIV
        (0x01, Quality.DATA_INVALID),  # b0 ERR: not valid either
        (0x05, Quality.DATA_INVALID),  # ERR comes with DNV
        (0x08, Quality(0)),  # b3 DST: daylight saving says nothing about the value
        (0x50, Quality(0)),  # b4 and b6 are reserved
        (0xA0, Quality.POWER_DOWN | Quality.CLOCK_ADJUSTED),
        (
            0xFF,
            Quality.POWER_DOWN
            | Quality.CLOCK_ADJUSTED
            | Quality.DATA_INVALID
            | Quality.CLOCK_INVALID,
        ),
    ],
)
def test_the_profile_status_becomes_the_quality_of_its_row(status: int, flags: Quality) -> None:
    norm, meter = with_status("is15959", "block_load", BLOCK_WITH_STATUS), context("is15959")
    rows = [
        [ist(2026, 1, 1, 0, 30, 0), status, 100, 23000, 5],
        [ist(2026, 1, 1, 1, 0, 0), 0, 100, 23000, 5],
    ]
    batch = norm.profile_rows(meter, "block_load", rows, source=Source.SCHEDULE)
    assert not batch.errors
    assert [r.quantity for r in batch.readings] == [*BLOCK_WITH_STATUS[2:]] * 2  # no "status"
    first, second = batch.readings[:3], batch.readings[3:]
    assert {r.quality for r in first} == {flags}
    assert {r.quality for r in second} == {Quality(0)}
    assert {r.value for r in first} == {r.value for r in second}  # the values stay as they are


def test_the_profile_status_adds_to_the_clocks_flags_and_may_be_last() -> None:
    columns = ("clock", "energy_active_import", "energy_active_export", "status")
    norm, meter = with_status("is15959", "daily_load", columns), context("is15959")
    row = [ist(2026, 1, 2, 0, 0, 0, status=0x01), 10, 20, 0x80]  # clock invalid, power down
    batch = norm.profile_rows(meter, "daily_load", [row], source=Source.PULL)
    assert not batch.errors
    assert [r.quantity for r in batch.readings] == ["energy_active_import", "energy_active_export"]
    assert {r.quality for r in batch.readings} == {Quality.CLOCK_INVALID | Quality.POWER_DOWN}
    assert {r.timestamp for r in batch.readings} == {dt.datetime(2026, 1, 1, 18, 30, tzinfo=UTC)}


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (256, "int 256"),
        (-1, "int -1"),
        (True, "bool True"),
        ("80", "str '80'"),
        (b"\x80", "octets 80"),
        (None, "NoneType None"),
        (1.0, "float 1.0"),
    ],
)
def test_a_status_that_is_no_unsigned_is_an_error_naming_the_column(
    status: object, shown: str
) -> None:
    norm, meter = with_status("is15959", "block_load", BLOCK_WITH_STATUS), context("is15959", "M5")
    rows = [
        [ist(2026, 1, 1, 0, 30, 0), status, 100, 23000, 5],
        [ist(2026, 1, 1, 1, 0, 0), 0x80, 100, 23000, 5],
    ]
    batch = norm.profile_rows(meter, "block_load", rows, source=Source.PULL)
    [error] = batch.errors
    assert str(error) == (
        "meter M5: block_load (1.0.99.1.0.255) row 0: column status (0.0.96.10.1.255): expected "
        f"the profile status, an integer 0..255 (unsigned), got {shown}"
    )
    assert len(batch.readings) == 3  # the other row is kept
    assert {r.quality for r in batch.readings} == {Quality.POWER_DOWN}


def failure_day(seed: int) -> tuple[float, list[tuple[int, int]]]:
    """The end (midnight IST) of a day holding one of the load model's supply failures, after
    the meters' first three days, and the failures (start, end) in the blocks of that day (the
    rows from midnight to midnight: 49, the first being the previous day's last block)."""
    params = load.params(seed)
    start, _ = load.outages(params, START + 3 * 86400, START + 20 * 86400)[0]
    end = (int(start + IST) // 86400 + 1) * 86400 - IST
    failures = load.outages(params, end - 86400 - 1800 - 3600, end)
    return float(end), [(s, e) for s, e in failures if e > end - 86400 - 1800]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_a_block_load_read_flags_power_down_on_the_blocks_of_a_supply_failure(seed: int) -> None:
    now, failures = failure_day(seed)
    assert failures  # the load model has one every 8 days: this day has it
    meter = sim_meter("sunrise", seed)
    rows = buffer(meter, "block_load", now, low=now - 86400)
    assert len(rows) == 49  # a day of 30-minute blocks, both ends of the range included
    batch = NORMALISERS["sunrise"].profile_rows(
        context("sunrise"), "block_load", rows, source=Source.SCHEDULE
    )
    assert not batch.errors
    assert len(batch.readings) == 49 * 4  # the status column is no reading
    for reading in batch.readings:
        end = reading.timestamp.timestamp()
        hit = any(s < end and e > end - 1800 for s, e in failures)
        assert reading.quality == (Quality.POWER_DOWN if hit else Quality(0)), reading
    down = {r.timestamp for r in batch.readings if Quality.POWER_DOWN in r.quality}
    assert len(down) == len(failures)  # a failure lies within one 15-minute slot: one block
    # and the energy of such a block is what flowed: the failure's loss is made up by the next
    # slot (cold-load pickup), within the same 30-minute block
    for stamp in down:
        energy = next(
            r
            for r in batch.readings
            if r.timestamp == stamp and r.quantity == "block_energy_active_import"
        )
        end = stamp.timestamp()
        exact = si_truth(meter, "block_energy_active_import", end)
        assert abs(energy.value - exact) < resolution(PROFILES["sunrise"], energy.quantity)


def test_a_block_load_read_over_a_known_supply_failure() -> None:
    """One worked example: seed 7's meter loses supply for 247 s at 09:31:02 IST on 2024-01-13."""
    now, [(start, end)] = failure_day(7)
    local = dt.datetime.fromtimestamp(start, dt.timezone(dt.timedelta(seconds=IST)))
    meter = sim_meter("sunrise", 7)
    batch = NORMALISERS["sunrise"].profile_rows(
        context("sunrise"),
        "block_load",
        buffer(meter, "block_load", now, low=now - 86400),
        source=Source.PULL,
    )
    down = sorted({r.timestamp for r in batch.readings if r.quality == Quality.POWER_DOWN})
    block_end = (int(start) // 1800 + 1) * 1800
    assert down == [dt.datetime.fromtimestamp(block_end, UTC)]
    assert (local.replace(tzinfo=None), end - start) == (dt.datetime(2024, 1, 13, 9, 31, 2), 247)


def test_quality_names_of_every_combination_are_the_flags_in_order() -> None:
    for value in range(1 << len(Quality)):
        quality = Quality(value)
        names = quality.names  # computed once per value, then looked up
        assert names == tuple(f.name.lower() for f in Quality if f in quality and f.name)
        assert quality.names is names
        assert Quality.parse(list(names)) == quality
