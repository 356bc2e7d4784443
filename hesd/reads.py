"""Reads that give normalised records: quantities, a profile over a time range, event logs.

Each function takes an associated meter's session (``SessionManager.request`` supplies it) and the
vendor's ``Normaliser`` and returns an ``adapters.normalise.Batch``. They are what the read API
serves now and what commands and schedules run later:

* ``read_quantities``: the meter's clock, then each quantity's value (attribute 2) and, for
  registers, its scaler_unit (attribute 3), so a meter whose scaler differs from its profile is
  still read right; readings carry the meter's clock time;
* ``read_profile``: a profile's buffer by range on the clock (selective access 1), with the
  profile's scaler profile when the vendor has one (IS 15959);
* ``read_events``: one event category's profile, by range.

A value the meter refuses (a data-access-result) or one the profile cannot explain is an error
in the batch; the other values are kept.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from adapters.cosem_map import register_columns
from adapters.hooks import MeterContext
from adapters.is15959 import EVENT_CATEGORIES
from adapters.model import Source
from adapters.normalise import Batch, NormaliseError, Normaliser
from hesd.session import MeterSession, SessionError
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit
from protocols.dlms.obis import ObisCode
from protocols.errors import RemoteProtocolError

__all__ = ["read_events", "read_profile", "read_quantities", "reading_with"]


def reading_with(
    session: MeterSession, normalisers: Mapping[str, Normaliser]
) -> tuple[Normaliser, MeterContext]:
    """What reads of ``session``'s meter normalise with: its vendor's normaliser and the meter as
    adapters see it. A vendor no longer loaded (dropped by a SIGHUP) is a SessionError."""
    profile = session.settings.profile
    normaliser = normalisers.get(profile.name)
    if normaliser is None:
        raise SessionError(f"meter {session.meter_id}: no normaliser for vendor {profile.name}")
    return normaliser, MeterContext(session.meter_id, profile.name, session.firmware, profile.model)


async def read_quantities(
    session: MeterSession,
    normaliser: Normaliser,
    meter: MeterContext,
    names: Sequence[str],
    *,
    source: Source = Source.PULL,
) -> Batch:
    """The current values of ``names`` (canonical quantities of the meter's vendor)."""
    profile = normaliser.profile
    out = Batch()
    clock = await session.get(x.AttributeDescriptor(8, profile.objects.clock, 2))
    if isinstance(clock, x.DataAccessResult):
        out.errors.append(NormaliseError(f"meter {meter.meter_id}: clock: {_refused(clock)}"))
        return out
    try:
        at, quality = normaliser.timestamp(clock)
    except NormaliseError as exc:
        out.errors.append(NormaliseError(f"meter {meter.meter_id}: {exc}"))
        return out
    for name in names:
        spec = profile.quantity(name)
        if spec is None:
            out.errors.append(
                NormaliseError(f"meter {meter.meter_id}: vendor {profile.name} has no {name!r}")
            )
            continue
        where = f"meter {meter.meter_id}: {name} ({spec.obis})"
        value = await session.get(x.AttributeDescriptor(spec.class_id, spec.obis, 2))
        if isinstance(value, x.DataAccessResult):
            out.errors.append(NormaliseError(f"{where}: {_refused(value)}"))
            continue
        scaler_unit = None
        capture = None
        if spec.class_id in (3, 4):  # Blue Book 4.3.2/4.3.3: attribute 3 is scaler_unit
            said = await session.get(x.AttributeDescriptor(spec.class_id, spec.obis, 3))
            scaler_unit = _scaler_unit(said)
        if spec.class_id == 4:  # extended register: attribute 5 is capture_time
            stamp = await session.get(x.AttributeDescriptor(4, spec.obis, 5))
            capture = _optional_time(normaliser, stamp)
        try:
            out.readings.append(
                normaliser.reading(
                    meter,
                    name,
                    value,
                    at=at,
                    source=source,
                    scaler_unit=scaler_unit,
                    quality=quality,
                    capture_time=capture,
                )
            )
        except NormaliseError as exc:
            out.errors.append(exc)
    return out


async def read_profile(
    session: MeterSession,
    normaliser: Normaliser,
    meter: MeterContext,
    profile_name: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    source: Source = Source.PULL,
) -> Batch:
    """The rows of a load profile captured between ``start`` and ``end`` (UTC, inclusive)."""
    load = normaliser.profile.profile(profile_name)
    if load is None:
        raise NormaliseError(
            f"meter {meter.meter_id}: vendor {normaliser.profile.name} has no {profile_name} "
            f"profile (it has {', '.join(p.name for p in normaliser.profile.profiles)})"
        )
    scalers: dict[str, ScalerUnit] = {}
    out = Batch()
    if load.scaler_obis is not None:
        said = await session.get(x.AttributeDescriptor(7, load.scaler_obis, 2))
        quantities = {q.name: q for q in normaliser.profile.quantities}
        scalers = _scaler_row(said, register_columns(quantities, load.columns))
    rows = await _buffer(session, normaliser, load.obis, start, end)
    if isinstance(rows, x.DataAccessResult):
        out.errors.append(
            NormaliseError(f"meter {meter.meter_id}: {load.name} ({load.obis}): {_refused(rows)}")
        )
        return out
    return normaliser.profile_rows(
        meter, profile_name, rows, source=source, scalers=scalers, batch=out
    )


async def read_events(
    session: MeterSession,
    normaliser: Normaliser,
    meter: MeterContext,
    category: str,
    *,
    start: dt.datetime,
    end: dt.datetime,
    source: Source = Source.PULL,
) -> Batch:
    """The events of one category (``adapters.is15959.EVENT_CATEGORIES``) in [start, end]."""
    if category not in EVENT_CATEGORIES:
        raise NormaliseError(
            f"meter {meter.meter_id}: no event category {category!r} "
            f"(one of {', '.join(EVENT_CATEGORIES)})"
        )
    obis = normaliser.profile.events.profiles[EVENT_CATEGORIES.index(category)]
    rows = await _buffer(session, normaliser, obis, start, end)
    if isinstance(rows, x.DataAccessResult):
        out = Batch()
        out.errors.append(
            NormaliseError(f"meter {meter.meter_id}: {category} events ({obis}): {_refused(rows)}")
        )
        return out
    return normaliser.event_rows(meter, category, rows, source=source)


async def _buffer(
    session: MeterSession,
    normaliser: Normaliser,
    obis: ObisCode,
    start: dt.datetime,
    end: dt.datetime,
) -> list[object] | x.DataAccessResult:
    profile = normaliser.profile
    zone = dt.timezone(dt.timedelta(minutes=profile.utc_offset))
    edges = [DateTime.from_datetime(t.astimezone(zone)).to_octets() for t in (start, end)]
    access = x.by_range((8, profile.objects.clock, 2), edges[0], edges[1])
    value = await session.get(x.AttributeDescriptor(7, obis, 2), access)
    if isinstance(value, x.DataAccessResult):
        return value
    if not isinstance(value, list):
        return []  # not a buffer: nothing the normaliser could use
    return list(value)


def _scaler_unit(value: Value | x.DataAccessResult) -> ScalerUnit | None:
    if isinstance(value, x.DataAccessResult):
        return None  # the profile's scaler stands
    try:
        return ScalerUnit.from_value(value)
    except RemoteProtocolError:
        return None


def _scaler_row(value: Value | x.DataAccessResult, columns: Sequence[str]) -> dict[str, ScalerUnit]:
    """The scaler profile's single row: one scaler_unit per register column."""
    if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], list | tuple):
        return {}
    row = value[0]
    if len(row) != len(columns):
        return {}
    found = {}
    for name, cell in zip(columns, row, strict=True):
        scaler_unit = _scaler_unit(cell)
        if scaler_unit is not None:
            found[name] = scaler_unit
    return found


def _optional_time(normaliser: Normaliser, value: Value | x.DataAccessResult) -> dt.datetime | None:
    if isinstance(value, x.DataAccessResult):
        return None
    try:
        return normaliser.timestamp(value)[0]
    except NormaliseError:
        return None


def _refused(result: x.DataAccessResult) -> str:
    return f"the meter refused: {result.name.lower().replace('_', '-')}"
