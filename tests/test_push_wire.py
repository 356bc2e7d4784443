"""The push's fast path: ``Normaliser.push_wire`` writes exactly the texts ``push`` gives.

``push_wire`` builds no ``Reading``: it fills a ``ReadingForm`` per column. Whatever it returns
must be, character for character, ``[r.json_text() for r in push(...).readings]``; whatever it
cannot write that way it must decline (None), leaving it to ``push``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.hooks import MeterContext, NullAdapter
from adapters.model import (
    Quality,
    Reading,
    ReadingForm,
    Source,
    iso_time,
    meter_json,
    quality_json,
    scaled_text,
)
from adapters.normalise import Normaliser
from adapters.profile import VendorProfile, load_profile
from protocols.dlms.calendar import DateTime

REPO = Path(__file__).resolve().parent.parent
DLMS_VENDORS = ("is15959", "kalpa", "sunrise")
PROFILES = {name: load_profile(REPO / "conf" / "vendors" / f"{name}.toml") for name in DLMS_VENDORS}
NORMALISERS = {name: Normaliser(profile) for name, profile in PROFILES.items()}


def columns(profile: VendorProfile) -> tuple[str, ...]:
    load = profile.profile("instantaneous")
    assert load is not None
    return load.columns[1:]  # after its clock: the push is name, clock, then these


def clock(stamp: dt.datetime, status: int, deviation: int | None) -> bytes:
    local = stamp + dt.timedelta(minutes=-(deviation or 0))
    return DateTime(
        local.year, local.month, local.day, None, local.hour, local.minute, local.second, 0,
        deviation, status,
    ).to_octets()  # fmt: skip


def texts(normaliser: Normaliser, meter: MeterContext, body: tuple[object, ...]) -> list[str]:
    batch = normaliser.push(meter, body)
    assert not batch.errors
    return [reading.json_text() for reading in batch.readings]


STAMPS = st.datetimes(
    min_value=dt.datetime(2000, 1, 2),
    max_value=dt.datetime(2090, 12, 30),
    timezones=st.just(dt.UTC),
).map(lambda t: t.replace(microsecond=0))


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(DLMS_VENDORS),
    stamp=STAMPS,
    status=st.sampled_from([0, 0x01, 0x02, 0x08, 0x80, 0x81]),
    deviation=st.sampled_from([-330, 0, 60, None]),
    data=st.data(),
    meter_id=st.sampled_from(["M1", "SIM-is15959-000001", 'odd "id" \\ é']),
)
def test_push_wire_writes_what_push_gives(
    *,
    name: str,
    stamp: dt.datetime,
    status: int,
    deviation: int | None,
    data: st.DataObject,
    meter_id: str,
) -> None:
    profile, normaliser = PROFILES[name], NORMALISERS[name]
    meter = MeterContext(meter_id, name, "1.0.0", profile.model)
    body: list[object] = [b"HES00000001", clock(stamp, status, deviation)]
    for column in columns(profile):
        if column.endswith(".capture_time"):
            hours = data.draw(st.integers(0, 99))
            body.append(
                data.draw(
                    st.sampled_from(
                        [clock(stamp - dt.timedelta(hours=hours), 0, -330), b"\xff" * 12]
                    )
                )
            )
        else:
            body.append(
                data.draw(
                    st.sampled_from([0, 1, 7, 10, 100, 12345, 999_999_937]) | st.integers(0, 65_534)
                )
            )
    wire = normaliser.push_wire(meter, tuple(body))
    assert wire is not None
    assert wire == texts(normaliser, meter, tuple(body))


def test_what_push_wire_cannot_write_it_leaves_to_push() -> None:
    profile, normaliser = PROFILES["is15959"], NORMALISERS["is15959"]
    meter = MeterContext("M1", "is15959", "1.0.0", profile.model)
    stamp = clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 0, -330)
    cols = columns(profile)
    good = [b"HES00000001", stamp, *(stamp if c.endswith(".capture_time") else 5 for c in cols)]
    assert normaliser.push_wire(meter, tuple(good)) is not None
    first_value = 2 + next(i for i, c in enumerate(cols) if not c.endswith(".capture_time"))
    overflow = list(good)
    overflow[first_value] = 0xFFFF  # voltage_l1 is a long-unsigned: at its limit, flagged
    not_int = list(good)
    not_int[first_value] = "230"
    bad_clock = list(good)
    bad_clock[1] = b"\x00" * 12
    for body in (overflow, not_int, bad_clock, good[:5], ("id", b"SIM\x00\x00\x00\x00\x01", b"x")):
        assert normaliser.push_wire(meter, tuple(body)) is None, body
    # the overflow is push's to flag
    readings = normaliser.push(meter, tuple(overflow)).readings
    assert Quality.OVERFLOW in readings[0].quality
    # an adapter gets Readings: the fast path is not taken
    adapted = Normaliser(profile, NullAdapter())
    assert adapted.push_wire(meter, tuple(good)) is None
    assert texts(adapted, meter, tuple(good)) == normaliser.push_wire(meter, tuple(good))


def test_a_profile_column_without_a_normal_unit_takes_the_reading_path() -> None:
    profile = PROFILES["is15959"]
    load = profile.profile("instantaneous")
    assert load is not None
    unknown = dataclasses.replace(load, columns=(*load.columns, "no_such_quantity"))
    odd = dataclasses.replace(
        profile, profiles=tuple(unknown if p is load else p for p in profile.profiles)
    )
    normaliser = Normaliser(odd)
    meter = MeterContext("M1", "is15959", "1.0.0", profile.model)
    stamp = clock(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 0, -330)
    body = (
        b"x",
        stamp,
        *(stamp if c.endswith(".capture_time") else 5 for c in unknown.columns[1:]),
    )
    assert normaliser.push_wire(meter, body) is None
    [error] = normaliser.push(meter, body).errors
    assert "no_such_quantity" in str(error)


@given(raw=st.integers(-(10**20), 10**20), exponent=st.integers(-12, 6))
def test_scaled_text_is_the_readings_value(raw: int, exponent: int) -> None:
    value = Decimal(raw).scaleb(exponent)
    reading = Reading(
        "M1", "energy_active_import", value, "kWh", dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        Source.PUSH, "1.0.1.8.0.255",
    )  # fmt: skip
    assert f'"value":"{scaled_text(raw, exponent)}"' in reading.json_text()


@given(
    interval=st.none() | st.integers(1, 86_400),
    capture=st.none() | STAMPS,
    quality=st.sampled_from(
        [Quality(0), Quality.CLOCK_INVALID, Quality.OVERFLOW | Quality.ESTIMATED]
    ),
    source=st.sampled_from(list(Source)),
)
def test_a_filled_form_is_the_readings_text(
    interval: int | None, capture: dt.datetime | None, quality: Quality, source: Source
) -> None:
    stamp = dt.datetime(2026, 3, 4, 5, 6, 7, 8000, tzinfo=dt.UTC)
    reading = Reading(
        "M-é", "demand_active_max", Decimal("1.5"), "kW", stamp, source, "1.0.1.6.0.255",
        interval, quality, capture,
    )  # fmt: skip
    form = ReadingForm("demand_active_max", "kW", source, "1.0.1.6.0.255", interval)
    text = form.fill(
        meter_json("M-é"),
        "1.5",
        iso_time(stamp),
        quality_json(quality),
        None if capture is None else iso_time(capture),
    )
    assert text == reading.json_text()


def test_a_form_of_no_canonical_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="not canonical"):
        ReadingForm("nonsense", "kWh", Source.PUSH, "1.0.1.8.0.255", None)
