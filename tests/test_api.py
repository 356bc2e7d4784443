"""The HTTP API in-process: answers and problem+json errors, as docs/hes-api.yaml states them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hesd.api.app import DAEMON, build_app
from hesd.commands import command_kinds
from hesd.config import load_config
from hesd.daemon import Daemon, build_normalisers
from hesd.router import CommandRouter
from hesd.store import MeterEntry, Registry, Store
from hesd.uplink.outbox import Outbox
from tests.hes_api_contract import contract_middleware

REPO = Path(__file__).resolve().parent.parent
CSV = "text/csv; charset=utf-8"


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.chdir(REPO)
    config = load_config(None)
    config = replace(config, store=replace(config.store, path=tmp_path / "hesd.db"))
    daemon = Daemon(config, None)
    daemon.vendors = config.load_vendor_profiles()
    daemon.normalisers = build_normalisers(daemon.vendors)
    store = await Store.open(config.store)
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    daemon._store, daemon._registry = store, Registry(store)
    daemon.outbox = Outbox(store, config.uplink.max_backlog_bytes)
    app = build_app(daemon)
    violations: list[str] = []
    app.middlewares.insert(0, contract_middleware(violations))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    await store.close()
    await writer
    assert violations == [], "answers that docs/hes-api.yaml does not describe"


async def test_status(client: TestClient) -> None:
    response = await client.get("/api/v1/status")
    assert response.status == 200
    body = await response.json()
    assert body["meters"]["total"] == 0
    assert body["vendors"] == ["is15959", "kalpa", "meghdoot", "sunrise"]
    assert body["started_at"].endswith("Z")  # hesd.timefmt: one format in every answer
    assert body["intake"] == {
        "enabled": True,
        "paused": False,
        "pauses": 0,
        "paused_seconds": 0.0,
        "lag_ms": 0.0,
        "links": 0,
    }


async def test_unknown_meter_is_a_problem(client: TestClient) -> None:
    response = await client.get("/api/v1/meters/NOPE")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    body = await response.json()
    assert body["detail"] == "meter 'NOPE' is not in the registry"


async def test_unknown_route_is_a_problem(client: TestClient) -> None:
    response = await client.get("/api/v1/nothing")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert (await response.json())["detail"].startswith("GET /api/v1/nothing")


async def test_bad_query_parameters(client: TestClient) -> None:
    response = await client.get("/api/v1/meters?status=sleeping")
    assert response.status == 400
    assert (await response.json())["detail"] == (
        "query parameter status: expected one of unknown, online, offline, got 'sleeping'"
    )
    response = await client.get("/api/v1/meters?limit=0")
    assert (await response.json())["detail"] == (
        "query parameter limit: expected integer 1..100000, got '0'"
    )
    response = await client.get("/api/v1/meters", params={"limit": "\N{SUPERSCRIPT TWO}"})
    assert response.status == 400  # a digit to str.isdigit(), not to int()
    assert (await response.json())["detail"] == (
        "query parameter limit: expected integer 1..100000, got '\N{SUPERSCRIPT TWO}'"
    )


async def test_import_needs_csv(client: TestClient) -> None:
    response = await client.post(
        "/api/v1/meters/import", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert response.status == 415


async def test_import_is_utf8_whatever_the_charset_says(client: TestClient) -> None:
    body = b"meter_id,vendor,transport\nM1,is15959,tcp-in\n"
    response = await client.post(
        "/api/v1/meters/import", data=body, headers={"Content-Type": "text/csv; charset=foo"}
    )
    assert response.status == 200
    response = await client.post(
        "/api/v1/meters/import",
        data=b"meter_id\xff\n",
        headers={"Content-Type": CSV, "X-Hesd-Source": "lot.csv"},
    )
    assert response.status == 400
    assert (await response.json())["detail"] == "lot.csv: not UTF-8 text (byte 8)"


async def test_invalid_inventory_lists_errors(client: TestClient) -> None:
    body = b"meter_id,vendor,transport\nM1,acme,tcp-in\n"
    response = await client.post(
        "/api/v1/meters/import",
        data=body,
        headers={"Content-Type": CSV, "X-Hesd-Source": "lot.csv"},
    )
    assert response.status == 422
    problem = await response.json()
    assert problem["errors"] == [
        {
            "line": 2,
            "column": "vendor",
            "message": 'unknown vendor "acme" (known: is15959, kalpa, meghdoot, sunrise)',
        }
    ]


async def test_system_title_conflict(client: TestClient) -> None:
    first = b"meter_id,vendor,transport,system_title\nM1,is15959,tcp-in,00AA00AA00AA00AA\n"
    second = b"meter_id,vendor,transport,system_title\nM2,is15959,tcp-in,00AA00AA00AA00AA\n"
    assert (
        await client.post("/api/v1/meters/import", data=first, headers={"Content-Type": CSV})
    ).status == 200
    response = await client.post(
        "/api/v1/meters/import",
        data=second,
        headers={"Content-Type": CSV, "X-Hesd-Source": "lot.csv"},
    )
    assert response.status == 409
    problem = await response.json()
    assert problem["conflicts"] == [
        "meter M2: system_title 00AA00AA00AA00AA already belongs to meter M1"
    ]
    assert (await client.get("/api/v1/meters/M2")).status == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({}, "expected exactly one of objects, quantities, profile, events; got none"),
        (
            {"objects": ["1.0.1.8.0.255"], "quantities": ["frequency"]},
            "expected exactly one of objects, quantities, profile, events; got objects, quantities",
        ),
        ({"quantities": "frequency"}, "quantities: expected a list of 1..64 names"),
        (
            {"quantities": ["frequency", "mood"]},
            "quantities: vendor is15959 has no 'mood' (hesctl vendors list; docs/vendors.md)",
        ),
        (
            {"profile": "hourly", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
            "profile: 'hourly' is not one of instantaneous, block_load, daily_load, billing",
        ),
        ({"profile": "block_load", "to": "2026-01-02T00:00:00Z"}, "from: expected an ISO 8601"),
        (
            {"profile": "block_load", "from": "2026-01-01T00:00:00", "to": "2026-01-02T00:00:00Z"},
            "from: '2026-01-01T00:00:00' has no UTC offset",
        ),
        (
            {"events": "other", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "to: before from",
        ),
        (
            {"events": "other", "from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
            "to: more than 400 days after from",
        ),
        (
            {"events": "tamper", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
            "events: 'tamper' is not one of voltage, current, power, transaction, other, "
            "non_rollover, control",
        ),
    ],
)
async def test_a_bad_read_says_what_is_wrong(
    client: TestClient, body: dict[str, object], detail: str
) -> None:
    daemon = client.app[DAEMON]
    await daemon.registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    response = await client.post("/api/v1/meters/M1/read", json=body)
    assert response.status == 400, await response.text()
    assert response.content_type == "application/problem+json"
    assert (await response.json())["detail"].startswith(detail)


class Unreachable:
    """Every meter offline: commands stay queued, which is what these API tests look at."""

    async def reachable(self, meter_id: str) -> bool:
        return False

    async def request(self, meter_id: str, op: object) -> object:
        raise AssertionError("no meter is reachable")


async def test_commands_submit_get_list_cancel(client: TestClient) -> None:
    daemon = client.app[DAEMON]
    await daemon.registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    daemon.router = CommandRouter(
        daemon.store,
        Unreachable(),
        command_kinds(lambda: daemon.normalisers),
        daemon.outbox,  # type: ignore[arg-type]
        workers=4,
    )
    response = await client.post(
        "/api/v1/commands", json={"meter_id": "M1", "kind": "disconnect", "expires_in": 600}
    )
    assert response.status == 202, await response.text()
    command = await response.json()
    assert (command["state"], command["meter_id"], command["kind"]) == (
        "queued",
        "M1",
        "disconnect",
    )
    url = f"/api/v1/commands/{command['command_id']}"
    shown = await (await client.get(url)).json()
    assert [a["state"] for a in shown["audit"]] == ["queued"]
    listed = await (await client.get("/api/v1/commands?state=queued&meter=M1")).json()
    assert [c["command_id"] for c in listed["commands"]] == [command["command_id"]]
    cancelled = await client.delete(url)
    assert (await cancelled.json())["state"] == "cancelled"
    again = await client.delete(url)
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    missing = await client.get("/api/v1/commands/" + "0" * 32)
    assert missing.status == 404


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"kind": "disconnect"}, 400, "meter_id and kind: expected strings"),
        ({"meter_id": "M1", "kind": "disconnect", "params": []}, 400, "params: expected"),
        ({"meter_id": "M1", "kind": "disconnect", "expires_in": "1h"}, 400, "expires_in"),
        ({"meter_id": "NOPE", "kind": "disconnect"}, 404, "meter 'NOPE' is not in the registry"),
        ({"meter_id": "M1", "kind": "explode"}, 400, "explode"),
    ],
)
async def test_a_bad_command_says_what_is_wrong(
    client: TestClient, body: dict[str, object], status: int, detail: str
) -> None:
    daemon = client.app[DAEMON]
    await daemon.registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    daemon.router = CommandRouter(
        daemon.store,
        Unreachable(),
        command_kinds(lambda: daemon.normalisers),
        daemon.outbox,  # type: ignore[arg-type]
        workers=4,
    )
    response = await client.post("/api/v1/commands", json=body)
    assert response.status == status, await response.text()
    assert detail in (await response.json())["detail"]
