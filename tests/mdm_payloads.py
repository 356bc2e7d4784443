# SPDX-License-Identifier: GPL-2.0-or-later
"""Uplink payloads as hesd sends them (docs/mdm-api.yaml), for the contract's and the receiver's
tests: hypothesis strategies for the normalised records, and batches built from them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import gzip
import itertools
import json
import operator
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from adapters import is15959
from adapters.model import UNITS, CommandResult, CommandStatus, Event, Quality, Reading, Source

UTC = dt.UTC
NORMAL_UNITS = sorted({unit for unit, _ in UNITS.values()} | {"count"})
T0 = dt.datetime(2026, 11, 23, 8, 45, tzinfo=UTC)

times = st.datetimes(timezones=st.just(UTC))
qualities = st.sets(st.sampled_from(list(Quality))).map(
    lambda flags: functools.reduce(operator.or_, flags, Quality(0))
)
obis_codes = st.just("") | st.tuples(*[st.integers(0, 255)] * 6).map(
    lambda groups: ".".join(map(str, groups))
)
readings = st.builds(
    Reading,
    meter_id=st.text(min_size=1, max_size=20),
    quantity=st.sampled_from(sorted(is15959.QUANTITIES)),
    value=st.decimals(places=6, min_value=-(10**15), max_value=10**15) | st.integers().map(Decimal),
    unit=st.sampled_from(NORMAL_UNITS),
    timestamp=times,
    source=st.sampled_from(Source),
    obis=obis_codes,
    interval=st.none() | st.integers(1, 86400 * 31),
    quality=qualities,
    capture_time=st.none() | times,
)
events = st.builds(
    Event,
    meter_id=st.text(min_size=1, max_size=20),
    kind=st.sampled_from(sorted(is15959.EVENT_KINDS)),
    category=st.sampled_from(is15959.EVENT_CATEGORIES),
    severity=st.sampled_from(sorted(is15959.SEVERITIES)),
    occurrence=st.booleans(),
    code=st.integers(-(2**31), 2**31),
    name=st.text(max_size=30),
    timestamp=times,
    source=st.sampled_from(Source),
    obis=obis_codes,
    quality=qualities,
    snapshot=st.lists(readings, max_size=3).map(tuple),
    esw_bit=st.none() | st.integers(0, 127),
    alert_id=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
command_results = st.builds(
    CommandResult,
    command_id=st.text(min_size=1, max_size=36),
    meter_id=st.text(min_size=1, max_size=20),
    command=st.sampled_from(["read", "disconnect", "reconnect", "limit", "sync_time"])
    | st.text(min_size=1, max_size=20),
    status=st.sampled_from(CommandStatus),
    requested_by=st.text(max_size=20),
    requested_at=times,
    finished_at=times,
    attempts=st.integers(0, 100),
    detail=st.text(max_size=60),
    readings=st.lists(readings, max_size=3).map(tuple),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
RECORDS: dict[str, st.SearchStrategy[Reading | Event | CommandResult]] = {
    "readings": readings,
    "events": events,
    "command-results": command_results,
}


def reading(meter_id: str = "MTR-1", minutes: int = 0, value: str = "1234.5") -> Reading:
    return Reading(
        meter_id=meter_id,
        quantity="energy_active_import",
        value=Decimal(value),
        unit="kWh",
        timestamp=T0 + dt.timedelta(minutes=minutes),
        source=Source.PUSH,
        obis="1.0.1.8.0.255",
    )


def alert_event(meter_id: str = "MTR-1") -> Event:
    """The event an alert push announces: ESW bit, no snapshot."""
    return dataclasses.replace(event(meter_id), source=Source.ALERT, esw_bit=16)


def confirmed_event(meter_id: str = "MTR-1") -> Event:
    """An event read from the log that confirms the alert of ``alert_event``: every field set."""
    found = event(meter_id)
    return dataclasses.replace(
        found, source=Source.PULL, snapshot=(reading(meter_id),), esw_bit=16,
        alert_id=alert_event(meter_id).event_id,
    )  # fmt: skip


def event(meter_id: str = "MTR-1") -> Event:
    return Event(
        meter_id=meter_id,
        kind="magnet_tamper",
        category="other",
        severity="major",
        occurrence=True,
        code=201,
        name="Influence of permanent magnet or AC/DC electromagnet - Occurrence",
        timestamp=T0,
        source=Source.PUSH,
        obis="0.0.99.98.4.255",
    )


def command_result(meter_id: str = "MTR-1") -> CommandResult:
    return CommandResult(
        command_id="cmd-1",
        meter_id=meter_id,
        command="read",
        status=CommandStatus.SUCCEEDED,
        requested_by="mdm",
        requested_at=T0,
        finished_at=T0 + dt.timedelta(seconds=3),
        attempts=1,
        detail="read 1 value",
        readings=(reading(meter_id),),
    )


def batch(
    records: Iterable[Reading | Event | CommandResult],
    key: str = "hes-01:000001",
    hes_id: str = "hes-01",
    first_seq: int = 1,
    seqs: Iterable[int] | None = None,
) -> dict[str, Any]:
    """The body hesd sends: the records' ``to_json()`` with ``seq`` added, as JSON would carry."""
    wire = [record.to_json() for record in records]
    for record, seq in zip(
        wire, seqs if seqs is not None else itertools.count(first_seq), strict=False
    ):
        record["seq"] = seq
    body = {
        "hes_id": hes_id,
        "batch_id": key,
        "sent_at": "2026-11-23T08:45:01.250Z",
        "records": wire,
    }
    wired: dict[str, Any] = json.loads(json.dumps(body))
    return wired


def headers(
    key: str, *, gzipped: bool = True, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "User-Agent": "hesd/0.1.0",
    }
    if gzipped:
        out["Content-Encoding"] = "gzip"
    out.update(extra or {})
    return out


def encode(body: Any, *, gzipped: bool = True) -> bytes:
    data = json.dumps(body).encode()
    return gzip.compress(data) if gzipped else data
