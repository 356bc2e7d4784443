# SPDX-License-Identifier: GPL-2.0-or-later
"""docs/hes-api.yaml is a valid OpenAPI 3.0 document and lists exactly the routes hesd serves.

Needs PyYAML and openapi-spec-validator (the `test` extra).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml
from openapi_spec_validator import validate

from hesd.api.app import build_app
from tests.hes_api_contract import strip_patterns

SPEC = Path(__file__).resolve().parent.parent / "docs" / "hes-api.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _load_spec() -> dict:
    with SPEC.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _served_routes() -> set[tuple[str, str]]:
    daemon = SimpleNamespace(config=SimpleNamespace(api=SimpleNamespace(max_request_bytes=1024)))
    app = build_app(daemon)  # type: ignore[arg-type]
    routes = {
        (route.method.lower(), strip_patterns(route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
    }
    # aiohttp answers HEAD for every GET route by itself; the spec lists the GETs only
    return {(m, p) for m, p in routes if not (m == "head" and ("get", p) in routes)}


def test_spec_is_valid_openapi() -> None:
    spec = _load_spec()
    assert spec["openapi"].startswith("3.0.")
    validate(spec)


def test_spec_lists_exactly_the_served_routes() -> None:
    spec = _load_spec()
    documented = {
        (method, path)
        for path, item in spec["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }
    assert documented == _served_routes()


def test_strip_patterns() -> None:
    assert strip_patterns("/a/{meter_id:[A-Z][a-z]{0,63}}") == "/a/{meter_id}"
    assert strip_patterns("/a/{meter_id}/b") == "/a/{meter_id}/b"


def test_every_operation_documents_the_answers_any_call_can_get() -> None:
    """401/403 (the TCP listener's keys and scopes), 500 (a bug, logged), and 413 where a body
    is read (api.max_request_bytes): an MDM integrator's client must expect these anywhere."""
    missing = []
    for path, operations in _load_spec()["paths"].items():
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            needed = {"401", "403", "500"} | ({"413"} if "requestBody" in operation else set())
            missing += [
                f"{method.upper()} {path}: {code}"
                for code in sorted(needed - set(operation["responses"]))
            ]
    assert missing == []
