"""JSON uplink records: the vendor profile's mapping applied; anything else RemoteProtocolError."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.profile import JsonField, JsonPayload
from hesd.transports.mqtt_json import JsonRecord, parse_json_record
from protocols.errors import RemoteProtocolError

MAPPING = JsonPayload(
    meter_id="meterSerial",
    timestamp="readingTime",
    timestamp_format="iso8601",
    values=(JsonField("energy_active_import", "kwhImport", 3), JsonField("voltage_l1", "vR", 0)),
)
NAMES = frozenset({"SN1", "M1"})


def parse(doc: object, mapping: JsonPayload = MAPPING) -> JsonRecord:
    return parse_json_record(json.dumps(doc).encode(), mapping, "M1", NAMES)


def test_mapped_record() -> None:
    record = parse({"meterSerial": "SN1", "readingTime": "2025-03-01T10:00:00+05:30", "vR": 231})
    assert record == JsonRecord(
        "M1", dt.datetime(2025, 3, 1, 4, 30, tzinfo=dt.UTC), (("voltage_l1", Decimal(231)),)
    )
    record = parse({"meterSerial": "M1", "readingTime": "2025-03-01T00:00:00Z", "kwhImport": 1.5})
    assert record.as_dict() == {"energy_active_import": Decimal(1500)}  # exact: 1.5 kWh
    assert record.timestamp.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("unix", 1_700_000_000, dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        ("unix-ms", 1_700_000_000_500, dt.datetime(2023, 11, 14, 22, 13, 20, 500_000, dt.UTC)),
    ],
)
def test_unix_times(kind: str, raw: int, expected: dt.datetime) -> None:
    mapping = JsonPayload("id", "t", kind, MAPPING.values)
    assert parse({"id": "SN1", "t": raw, "vR": 1}, mapping).timestamp == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([1, 2], "expected a JSON object, got list"),
        ({"readingTime": "2025-01-01T00:00:00Z", "vR": 1}, "field meterSerial: expected"),
        ({"meterSerial": True, "readingTime": "2025-01-01T00:00:00Z", "vR": 1}, "expected"),
        ({"meterSerial": "X", "readingTime": "2025-01-01T00:00:00Z", "vR": 1}, "names meter 'X'"),
        ({"meterSerial": "SN1", "vR": 1}, "field readingTime: expected an ISO 8601 time"),
        ({"meterSerial": "SN1", "readingTime": "yesterday", "vR": 1}, "is not an ISO 8601"),
        ({"meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00", "vR": 1}, "no UTC offset"),
        ({"meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z"}, "no value"),
        ({"meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z", "vR": "1"}, "vR: expected"),
        ({"meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z", "vR": None}, "vR: expected"),
        ({"meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z", "vR": False}, "expected"),
    ],
)
def test_refused(doc: object, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        parse(doc)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xfe\x00",
        b"{",
        b'{"vR": NaN, "meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z"}',
        b'{"vR": 1e400, "meterSerial": "SN1", "readingTime": "2025-01-01T00:00:00Z"}',
        b'{"vR": 1' + b"0" * 5000 + b"}",  # more digits than int() converts
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the JSON decoder recurses
        b'{"meterSerial": "SN1", "readingTime": 1e300, "vR": 1}',
    ],
)
def test_garbage_is_a_remote_protocol_error(payload: bytes) -> None:
    mapping = MAPPING
    if b"1e300" in payload:
        mapping = JsonPayload("meterSerial", "readingTime", "unix", MAPPING.values)
    with pytest.raises(RemoteProtocolError):
        parse_json_record(payload, mapping, "M1", NAMES)


def test_scaled_value_out_of_float_range() -> None:
    big = JsonPayload("id", "t", "unix", (JsonField("energy_active_import", "e", 6),))
    with pytest.raises(RemoteProtocolError, match="field e: "):
        parse({"id": "SN1", "t": 0, "e": 10**305}, big)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
DOCS = st.fixed_dictionaries(
    {},
    optional={
        "meterSerial": st.sampled_from(["SN1", "M1", "X"]) | JSON_VALUES,
        "readingTime": st.sampled_from(["2025-01-01T00:00:00Z", "2025-01-01T00:00:00"])
        | JSON_VALUES,
        "kwhImport": JSON_VALUES,
        "vR": JSON_VALUES,
    },
)


@given(doc=DOCS | JSON_VALUES)
def test_any_json_maps_or_is_refused(doc: object) -> None:
    try:
        record = parse(doc)
    except RemoteProtocolError:
        return
    assert record.meter_id == "M1"
    assert record.values


@given(payload=st.binary(max_size=200))
def test_any_bytes_map_or_are_refused(payload: bytes) -> None:
    for mapping in (MAPPING, JsonPayload("meterSerial", "readingTime", "unix", MAPPING.values)):
        with contextlib.suppress(RemoteProtocolError):  # the only way it may fail
            parse_json_record(payload, mapping, "M1", NAMES)
