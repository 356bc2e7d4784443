# SPDX-License-Identifier: GPL-2.0-or-later
"""Hold hesd's HTTP answers to docs/hes-api.yaml: every JSON answer a test provokes must be a
status the operation documents, with a body its schema accepts.

``contract_middleware`` goes in front of an app under test (``app.middlewares.insert(0, …)``);
it records what it found wrong in ``violations`` rather than raising, so the test's own
assertions still run and the fixture reports every mismatch at the end.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match

SPEC = Path(__file__).resolve().parent.parent / "docs" / "hes-api.yaml"
JSON_TYPES = ("application/json", "application/problem+json")


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's ``nullable: true`` as JSON Schema draft 4 says it (``null`` allowed)."""
    if isinstance(node, list):
        return [_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _nullable(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:  # a $ref or a combination: null, or what it says
            out = {"anyOf": [{"type": "null"}, out]}
    return out


@cache
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = _nullable(yaml.safe_load(SPEC.read_text(encoding="utf-8")))
    return loaded


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def strip_patterns(path: str) -> str:
    """``/meters/{meter_id:[A-Z]{0,63}}`` -> ``/meters/{meter_id}`` (a regex may hold braces)."""
    out: list[str] = []
    depth = 0
    in_regex = False
    for char in path:
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                in_regex = False
        elif char == ":" and depth == 1:
            in_regex = True
        if not in_regex:
            out.append(char)
    return "".join(out)


def check(method: str, path: str, status: int, content_type: str, body: object) -> str | None:
    """What is wrong with this answer by the spec, or None."""
    operation = spec()["paths"].get(path, {}).get(method.lower())
    if operation is None:
        return f"{method} {path}: not in docs/hes-api.yaml"
    documented = operation["responses"].get(str(status)) or operation["responses"].get("default")
    if documented is None:
        return f"{method} {path}: status {status} is not documented"
    content = _resolve(documented).get("content", {})
    media = content.get(content_type)
    if media is None:
        return f"{method} {path} {status}: {content_type} is not documented"
    schema = media.get("schema")
    if schema is None:
        return None
    validator = Draft4Validator({**schema, "components": spec()["components"]})
    error = best_match(validator.iter_errors(body))
    if error is None:
        return None
    return f"{method} {path} {status}: {error.json_path}: {error.message}"


def contract_middleware(
    violations: list[str],
) -> Callable[[web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Any]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        route = request.match_info.route
        if route.resource is None or not isinstance(response, web.Response):
            return response
        content_type = response.content_type
        if content_type in JSON_TYPES and response.body is not None:
            body = json.loads(bytes(response.body))  # type: ignore[arg-type]
            path = strip_patterns(route.resource.canonical)
            wrong = check(request.method, path, response.status, content_type, body)
            if wrong is not None:
                violations.append(wrong)
        return response

    return middleware
