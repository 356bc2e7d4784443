# SPDX-License-Identifier: GPL-2.0-or-later
"""docs/mdm-api.yaml, the uplink contract: a valid OpenAPI 3.0 document whose request schemas
are exactly what ``adapters.model``'s ``to_json()`` produce (plus ``seq``).

jsonschema is the reference reading of the schemas here; bench/mdm_receiver.py checks bodies with
fastjsonschema (faster), so both are held to the same verdicts on good and broken payloads.
Needs PyYAML, openapi-spec-validator, jsonschema and fastjsonschema (the `test` extra).
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from openapi_spec_validator import validate

from adapters import is15959
from adapters.model import CommandStatus, Quality, Reading, Source
from bench.mdm_receiver import KINDS, MAX_RECORDS, MdmReceiver, request_checks
from tests import mdm_payloads as mp

SPEC = Path(__file__).resolve().parent.parent / "docs" / "mdm-api.yaml"
BATCH_SCHEMA = {
    "readings": "ReadingBatch",
    "events": "EventBatch",
    "command-results": "CommandResultBatch",
}


@cache
def spec() -> dict[str, Any]:
    with SPEC.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def schemas() -> dict[str, Any]:
    return spec()["components"]["schemas"]  # type: ignore[no-any-return]


@cache
def validator(name: str) -> Draft4Validator:
    """jsonschema's validator for one component (references resolve inside the document)."""
    return Draft4Validator(
        {"$ref": f"#/components/schemas/{name}", "components": spec()["components"]}
    )


def first_error(name: str, instance: object) -> str | None:
    error = best_match(validator(name).iter_errors(instance))
    return None if error is None else f"{error.json_path}: {error.message}"


def enum_of(name: str) -> list[Any]:
    return schemas()[name]["enum"]  # type: ignore[no-any-return]


# -- the document -------------------------------------------------------------------------------


def test_spec_is_valid_openapi() -> None:
    assert spec()["openapi"].startswith("3.0.")
    validate(spec())


@pytest.mark.parametrize("name", sorted(yaml.safe_load(SPEC.read_text())["components"]["schemas"]))
def test_each_schema_is_json_schema_draft_4(name: str) -> None:
    Draft4Validator.check_schema(schemas()[name])


def test_the_three_paths_and_what_they_answer() -> None:
    paths = spec()["paths"]
    assert sorted(paths) == sorted(f"/api/v1/meters/{kind}" for kind in KINDS)
    for kind in KINDS:
        operations = paths[f"/api/v1/meters/{kind}"]
        assert list(operations) == ["post"], kind
        post = operations["post"]
        body = post["requestBody"]
        assert body["required"] is True
        assert list(body["content"]) == ["application/json"]
        ref = body["content"]["application/json"]["schema"]["$ref"]
        assert ref == f"#/components/schemas/{BATCH_SCHEMA[kind]}"
        parameters = {p["$ref"].rsplit("/", 1)[1] for p in post["parameters"]}
        assert parameters == {"IdempotencyKey", "ContentEncoding", "UserAgent"}
        assert set(post["responses"]) == {
            "200", "202", "400", "401", "403", "413", "415", "422", "429", "500", "503",
        }  # fmt: skip
    responses = spec()["components"]["responses"]
    for name in ("TooManyRequests", "Unavailable"):
        assert "Retry-After" in responses[name]["headers"], name


def test_headers_and_security() -> None:
    parameters = spec()["components"]["parameters"]
    key = parameters["IdempotencyKey"]
    assert (key["name"], key["in"], key["required"]) == ("Idempotency-Key", "header", True)
    assert schemas()["BatchId"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"
    assert parameters["ContentEncoding"]["schema"]["enum"] == ["gzip", "identity"]
    schemes = spec()["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert (schemes["apiKeyAuth"]["in"], schemes["apiKeyAuth"]["name"]) == ("header", "X-API-Key")
    # either one: two alternatives, not one requirement holding both
    assert spec()["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]


def test_the_retry_after_header_takes_seconds_or_an_http_date() -> None:
    pattern = re.compile(spec()["components"]["headers"]["RetryAfter"]["schema"]["pattern"])
    for good in ("0", "30", "Wed, 21 Oct 2026 07:28:00 GMT"):
        assert pattern.fullmatch(good), good
    for bad in ("", "1.5", "-1", "2026-10-21T07:28:00Z"):
        assert not pattern.fullmatch(bad), bad


# -- the schemas are the model ----------------------------------------------------------------


def test_vocabularies_are_the_models() -> None:
    assert enum_of("Quantity") == list(is15959.QUANTITIES)
    assert enum_of("EventKind") == list(is15959.EVENT_KINDS)
    assert sorted(enum_of("Unit")) == mp.NORMAL_UNITS
    assert enum_of("Source") == [s.value for s in Source]
    assert schemas()["Quality"]["items"]["enum"] == [f.name.lower() for f in Quality if f.name]
    event = schemas()["Event"]["properties"]
    assert event["category"]["enum"] == list(is15959.EVENT_CATEGORIES)
    assert sorted(event["severity"]["enum"]) == sorted(is15959.SEVERITIES)
    assert schemas()["CommandResult"]["properties"]["status"]["enum"] == [
        s.value for s in CommandStatus
    ]


def full_reading() -> Reading:
    """A reading with every optional field set."""
    return Reading(
        meter_id="M",
        quantity="demand_active_max",
        value=Decimal("1.5"),
        unit="kW",
        timestamp=mp.T0,
        source=Source.SCHEDULE,
        obis="1.0.1.6.0.255",
        interval=900,
        quality=Quality.ESTIMATED,
        capture_time=mp.T0 - dt.timedelta(minutes=5),
    )


@pytest.mark.parametrize(
    ("name", "fullest", "barest"),
    [
        ("Reading", full_reading().to_json(), mp.reading().to_json()),
        ("Event", mp.confirmed_event().to_json(), mp.event().to_json()),
        ("CommandResult", mp.command_result().to_json(), mp.command_result().to_json()),
    ],
)
def test_properties_are_the_to_json_fields(
    name: str, fullest: dict[str, Any], barest: dict[str, Any]
) -> None:
    """Every field ``to_json()`` can write is documented; those it always writes are required."""
    schema = schemas()[name]
    assert set(schema["properties"]) == set(fullest)
    assert set(schema["required"]) == set(barest)
    record = schemas()[f"{name}Record"]["allOf"]
    assert record[0] == {"$ref": f"#/components/schemas/{name}"}
    assert schemas()["RecordSeq"]["required"] == ["seq"]


# -- real payloads ------------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(KINDS))
    records = draw(st.lists(mp.RECORDS[kind], min_size=1, max_size=4))
    first = draw(st.integers(0, 2**62))
    key = draw(st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True))
    return kind, mp.batch(records, key=key, first_seq=first)


@settings(max_examples=150, deadline=None)
@given(batches())
def test_what_hesd_sends_is_valid(sent: tuple[str, dict[str, Any]]) -> None:
    kind, body = sent
    assert first_error(BATCH_SCHEMA[kind], body) is None
    assert request_checks()[kind](body) is None


# (where, the change, the field the error names)
BREAKAGES: list[tuple[str, Any, str]] = [
    ("seq", None, "seq"),
    ("seq", -1, "seq"),
    ("seq", "7", "seq"),
    ("meter_id", "", "meter_id"),
    ("timestamp", "2026-11-23T08:45:00", "timestamp"),
    ("timestamp", "2026-11-23T08:45:00+05:30", "timestamp"),
    ("source", "guess", "source"),
    ("quality", ["shiny"], "quality"),
    ("obis", "1-0:1.8.0*255", "obis"),
]
READING_BREAKAGES = [
    ("value", "1E+3", "value"),
    ("value", "12.50", "value"),
    ("value", 12.5, "value"),
    ("quantity", "mood", "quantity"),
    ("unit", "Wh", "unit"),
    ("interval", 0, "interval"),
]


def broken(body: dict[str, Any], field: str, change: Any) -> dict[str, Any]:
    out = copy.deepcopy(body)
    record = out["records"][-1]
    if change is None:
        del record[field]
    else:
        record[field] = change
    return out


@pytest.mark.parametrize(("field", "change", "named"), BREAKAGES + READING_BREAKAGES)
def test_a_broken_reading_is_refused_naming_the_field(field: str, change: Any, named: str) -> None:
    body = broken(mp.batch([mp.reading(), mp.reading(minutes=15)]), field, change)
    error = first_error("ReadingBatch", body)
    assert error is not None
    assert error.startswith("$.records[1]"), error
    assert named in error, error
    fast = request_checks()["readings"](body)
    assert fast is not None
    assert fast.startswith("$.records[1]"), fast


@pytest.mark.parametrize(("field", "change", "named"), BREAKAGES)
def test_a_broken_event_or_command_result_is_refused(field: str, change: Any, named: str) -> None:
    if field in ("timestamp", "source", "quality", "obis"):  # not fields of command results
        kinds = ["events"]
    else:
        kinds = ["events", "command-results"]
    for kind in kinds:
        record = mp.event() if kind == "events" else mp.command_result()
        body = broken(mp.batch([record]), field, change)
        error = first_error(BATCH_SCHEMA[kind], body)
        assert error is not None, kind
        assert named in error, error
        assert request_checks()[kind](body) is not None, kind


@settings(max_examples=100, deadline=None)
@given(batches(), st.data())
def test_both_validators_refuse_the_same_broken_records(
    sent: tuple[str, dict[str, Any]], data: st.DataObject
) -> None:
    """A required field dropped, or replaced by a value of the wrong type: both say no."""
    kind, body = sent
    record = body["records"][0]
    field = data.draw(st.sampled_from(sorted(record)))
    required = set(schemas()[BATCH_SCHEMA[kind].removesuffix("Batch")]["required"]) | {"seq"}
    if field in required and data.draw(st.booleans()):
        del record[field]
    else:
        record[field] = {"not": "this"} if not isinstance(record[field], dict) else []
    assert first_error(BATCH_SCHEMA[kind], body) is not None
    assert request_checks()[kind](body) is not None


def test_envelope_limits() -> None:
    body = mp.batch([mp.reading()])
    assert first_error("ReadingBatch", {**body, "records": []}) is not None
    assert first_error("ReadingBatch", {**body, "batch_id": "no spaces"}) is not None
    assert first_error("ReadingBatch", {**body, "hes_id": ""}) is not None
    without = {k: v for k, v in body.items() if k != "sent_at"}
    assert first_error("ReadingBatch", without) == "$: 'sent_at' is a required property"
    full = {**body, "records": body["records"] * MAX_RECORDS}
    assert first_error("ReadingBatch", full) is None
    over = {**body, "records": body["records"] * (MAX_RECORDS + 1)}
    assert first_error("ReadingBatch", over) is not None


def test_the_receiver_serves_exactly_the_documented_paths() -> None:
    app = MdmReceiver(validate=False).app
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/")
    }
    assert served == {("post", path) for path in spec()["paths"]}
