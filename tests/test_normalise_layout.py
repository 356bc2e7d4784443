"""Rows and pushes through resolved layouts (adapters/normalise.py ``_Layout``) give exactly what
the per-value path gives (``Normaliser.reading`` for every cell, as rows were normalised before
layouts): the same readings, or the same error; and a reading's ``json_text`` is its
``to_json()`` as compact JSON, character for character."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.cosem_map import CAPTURE_TIME, STATUS, LoadProfile
from adapters.hooks import MeterContext
from adapters.is15959 import QUANTITIES, Measure
from adapters.model import Event, Quality, Reading, Source, canonical, json_text
from adapters.normalise import _LIMITS, NormaliseError, Normaliser
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit, Unit
from tests.test_normalise import DLMS_VENDORS, PROFILES, context

UTC = dt.UTC
HEAD = ("logical_device_name", "clock")


class VendorMark:
    """An adapter that corrects every register it sees (as a real one might for a firmware)."""

    def adjust_reading(self, reading: Reading, meter: MeterContext) -> Reading:
        return dataclasses.replace(reading, quality=reading.quality | Quality.VENDOR)

    def adjust_event(self, event: Event, meter: MeterContext) -> Event:
        return event


def oracle(
    norm: Normaliser,
    meter: MeterContext,
    load: LoadProfile,
    columns: Sequence[str],
    values: Sequence[object],
    *,
    where: str,
    source: Source,
    scalers: Mapping[str, ScalerUnit],
) -> list[Reading]:
    """One row as ``Normaliser._cells`` normalised it before layouts: cell by cell."""
    cells = dict(zip(columns, values, strict=True))
    stamp, quality = norm._stamp(cells["clock"], where)
    if load.interval:
        stamp = norm._align(stamp, load.interval)
    if STATUS in cells:
        quality |= norm._status_quality(cells[STATUS], where)
    readings = []
    for name in columns:
        if name in HEAD or name.endswith(CAPTURE_TIME) or name == STATUS:
            continue
        spec = norm._quantity(name, meter)
        capture = None
        if f"{name}{CAPTURE_TIME}" in cells:
            capture = norm._optional_stamp(cells[f"{name}{CAPTURE_TIME}"])
        blocks = spec.measure in (Measure.BLOCK, Measure.AVERAGE)
        try:
            reading = norm.reading(
                meter,
                name,
                cells[name],
                at=stamp,
                source=source,
                scaler_unit=scalers.get(name),
                quality=quality,
                capture_time=capture,
                interval=load.interval if blocks and load.interval else None,
            )
        except NormaliseError as exc:
            raise NormaliseError(f"{where}: column {name}: {exc}") from None
        readings.append(reading)
    return readings


def outcome(run: Any) -> tuple[list[Reading], str | None]:
    try:
        return run(), None
    except NormaliseError as exc:
        return [], str(exc)


def date_times(garbage: bool) -> st.SearchStrategy[object]:
    """Date-times (clock status included), unspecified ones, or (``garbage``) no date-time."""
    moments = st.builds(
        lambda y, mo, d, h, mi, s, hs, dev, cs: DateTime(
            y, mo, d, None, h, mi, s, hs, dev, cs
        ).to_octets(),
        st.integers(2000, 2099),
        st.integers(1, 12),
        st.integers(1, 28),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from([0, None, 37]),
        st.sampled_from([-330, 0, 60, None]),
        st.sampled_from([0, 1, 2, 8, 0x80, None]),
    )
    if not garbage:
        return moments
    return st.one_of(
        st.just(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x80\x00\xff"),  # unspecified
        st.binary(min_size=12, max_size=12),
        st.integers(),
        st.none(),
    )


@st.composite
def rows(draw: st.DrawFn, vendor: str, load: LoadProfile, columns: Sequence[str]) -> list[object]:
    """A row of good values (at their types' limits too), and now and then one bad cell."""
    profile = PROFILES[vendor]
    specs = {q.name: q for q in profile.quantities}
    bad = draw(st.one_of(st.none(), st.none(), st.integers(0, len(columns) - 1)))
    out: list[object] = []
    for index, name in enumerate(columns):
        garbage = index == bad
        if name == "logical_device_name":
            out.append(b"HES00000001")
        elif name == "clock" or name.endswith(CAPTURE_TIME):
            out.append(draw(date_times(garbage)))
        elif name == STATUS:
            out.append(300 if garbage else draw(st.integers(0, 255)))
        elif garbage:
            out.append(draw(st.sampled_from([1.5, b"12", "7", None, True])))
        else:
            low, high = _LIMITS[specs[name].type]
            out.append(draw(st.one_of(st.integers(low, high), st.sampled_from([low, high, 0]))))
    return out


LOADS = [
    (vendor, load.name)
    for vendor in DLMS_VENDORS
    for load in PROFILES[vendor].profiles
    if load.name != "instantaneous"
]


@pytest.mark.parametrize("vendor", DLMS_VENDORS)
@pytest.mark.parametrize("adapter", [None, VendorMark()], ids=["no adapter", "adapter"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_push_gives_what_the_per_value_path_gives(
    vendor: str, adapter: VendorMark | None, data: st.DataObject
) -> None:
    profile = PROFILES[vendor]
    norm = Normaliser(profile) if adapter is None else Normaliser(profile, adapter)
    meter = context(vendor, "MTR-7")
    load = profile.profile("instantaneous")
    assert load is not None
    columns = (*HEAD, *load.columns[1:])
    body = data.draw(rows(vendor, load, columns))
    batch = norm.push(meter, body)
    expected, error = outcome(
        lambda: oracle(
            norm,
            meter,
            load,
            columns,
            body,
            where="meter MTR-7: push",
            source=Source.PUSH,
            scalers={},
        )
    )
    assert batch.readings == expected
    assert [str(e) for e in batch.errors] == ([] if error is None else [error])


@pytest.mark.parametrize(("vendor", "name"), LOADS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_profile_rows_give_what_the_per_value_path_gives(
    vendor: str, name: str, data: st.DataObject
) -> None:
    """With and without the meter's own scalers (those columns take the per-value path)."""
    profile = PROFILES[vendor]
    norm = Normaliser(profile)
    meter = context(vendor, "MTR-8")
    load = profile.profile(name)
    assert load is not None
    values = [n for n in load.columns if n not in ("clock", STATUS) and CAPTURE_TIME not in n]
    chosen = data.draw(st.lists(st.sampled_from(values), unique=True)) if values else []
    units = st.sampled_from([Unit.WATT_HOUR, Unit.VOLT, Unit.AMPERE, Unit.WATT, Unit.COUNT, 250])
    scalers = {
        column: ScalerUnit(data.draw(st.integers(-4, 4)), data.draw(units)) for column in chosen
    }
    body = data.draw(st.lists(rows(vendor, load, load.columns), min_size=1, max_size=3))
    batch = norm.profile_rows(meter, name, body, source=Source.SCHEDULE, scalers=scalers)
    readings, errors = [], []
    for index, row in enumerate(body):
        where = f"meter MTR-8: {load.name} ({load.obis}) row {index}"
        got, error = outcome(
            lambda row=row, where=where: oracle(
                norm,
                meter,
                load,
                load.columns,
                row,
                where=where,
                source=Source.SCHEDULE,
                scalers=scalers,
            )
        )
        readings += got
        errors += [] if error is None else [error]
    assert batch.readings == readings
    assert [str(e) for e in batch.errors] == errors


def test_a_push_without_the_profiles_quantity_is_an_error_for_every_push() -> None:
    """A layout resolves once; a quantity the profile lacks is still an error at each push."""
    profile = PROFILES["is15959"]
    load = profile.profile("instantaneous")
    assert load is not None
    lacking = dataclasses.replace(
        profile, quantities=tuple(q for q in profile.quantities if q.name != "voltage_l1")
    )
    norm = Normaliser(lacking)
    body = [b"HES1", DateTime(2026, 1, 1, None, 0, 0, 0, 0, -330, 0).to_octets()]
    body += [7] * (len(load.columns) - 1)
    for _ in range(2):
        [error] = norm.push(context("is15959", "M9"), body).errors
        assert str(error) == "meter M9: vendor is15959 has no quantity 'voltage_l1'"


# -- the wire form --------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
STAMPS = st.datetimes(
    min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC)
)


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    unit = draw(st.sampled_from(["kWh", "kvarh", "V", "A", "Hz", "s", "", "count"]))
    value = Decimal(draw(st.integers(-(10**20), 10**20))).scaleb(draw(st.integers(-9, 6)))
    return Reading(
        meter_id=draw(st.one_of(TEXT, st.just('M"1\\\u2028\x00é'))),
        quantity=draw(st.sampled_from(sorted(QUANTITIES))),
        value=value,
        unit=unit,
        timestamp=draw(STAMPS),
        source=draw(st.sampled_from(list(Source))),
        obis=draw(st.one_of(st.just("1.0.1.8.0.255"), st.just(""), TEXT)),
        interval=draw(st.one_of(st.none(), st.integers(1, 86400))),
        quality=Quality(draw(st.integers(0, 255))),
        capture_time=draw(st.one_of(st.none(), STAMPS)),
    )


@settings(max_examples=500, deadline=None)
@given(reading=readings())
def test_a_readings_json_text_is_its_json(reading: Reading) -> None:
    assert reading.json_text() == json_text(reading.to_json())
    assert json.loads(reading.json_text()) == reading.to_json()


@pytest.mark.parametrize("interval", [True, 1.5, "900", 0, -900])
def test_an_interval_is_whole_seconds_above_zero(interval: object) -> None:
    with pytest.raises(ValueError, match=r"interval .* is not seconds > 0"):
        Reading(
            "M1",
            "block_energy_active_import",
            Decimal(1),
            "kWh",
            dt.datetime(2026, 1, 1, tzinfo=UTC),
            Source.PULL,
            "1.0.1.29.0.255",
            interval=interval,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("value", "text"),
    [("0", "0"), ("-0", "0"), ("-0.00", "0"), ("1E+2", "100"), ("1.50", "1.5"), ("0.05", "0.05")],
)
def test_canonical_returns_a_canonical_value_as_it_is(value: str, text: str) -> None:
    result = canonical(Decimal(value))
    assert format(result, "f") == text
    assert canonical(result) is result
    assert result.as_tuple() == Decimal(text).as_tuple()
