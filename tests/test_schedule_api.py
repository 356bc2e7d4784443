"""The scheduler's API routes in-process: answers and problem+json errors (docs/hes-api.yaml)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hesd.api.app import build_app
from hesd.config import SchedulerConfig, load_config
from hesd.daemon import Daemon, build_normalisers
from hesd.scheduler import Scheduler
from hesd.store import MeterEntry, Registry, Store
from tests.hes_api_contract import contract_middleware
from tests.scheduler_fakes import FakeClock, FakeReader, FakeSink, until

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Daemon]:
    monkeypatch.chdir(REPO)
    config = load_config(None)  # the default, disabled DISCOM set
    config = replace(config, store=replace(config.store, path=tmp_path / "hesd.db"))
    found = Daemon(config, None)
    found.vendors = config.load_vendor_profiles()
    found.normalisers = build_normalisers(found.vendors)
    store = await Store.open(config.store)
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    found._store, found._registry = store, Registry(store)
    await found.registry.upsert([MeterEntry("M-1", "is15959", "tcp-in")])
    yield found
    await store.close()
    await writer


@pytest.fixture
async def client(daemon: Daemon) -> AsyncIterator[TestClient]:
    clock = FakeClock(1_800_000_000.0)
    scheduler = daemon.scheduler = Scheduler(
        SchedulerConfig("Asia/Kolkata", 64, 256, 3, 100),
        daemon.config.schedules,
        store=daemon.store,
        registry=daemon.registry,
        reader=FakeReader(clock, {}),
        sink=FakeSink(),
        normalisers=lambda: daemon.normalisers,
        commands=None,
        max_requests=2000,
        per_destination=4,
        clock=clock,
    )
    task = asyncio.create_task(scheduler.run(), name="scheduler:runs")
    await until(scheduler.ready.is_set, "the scheduler to start")
    app = build_app(daemon)
    violations: list[str] = []
    app.middlewares.insert(0, contract_middleware(violations))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    scheduler.close()
    await task
    assert violations == [], "answers that docs/hes-api.yaml does not describe"


async def test_the_schedules_their_state_and_the_budget(client: TestClient) -> None:
    response = await client.get("/api/v1/schedules")
    assert response.status == 200
    body = await response.json()
    assert body["time_zone"] == "Asia/Kolkata"
    assert body["paused"] is False
    assert body["budget"] == {
        "max_requests": 2000,
        "reserved_requests": 64,
        "max_in_flight": 256,
        "scheduled_max": 256,
        "scheduled_in_flight": 0,
    }
    names = [(s["name"], s["state"], s["next_run"]) for s in body["schedules"]]
    assert names == [
        ("billing_daily", "disabled", None),
        ("block_load", "disabled", None),
        ("event_logs", "disabled", None),
    ]
    block = body["schedules"][1]
    assert block["read"] == {"profile": "block_load"}
    assert block["meters"] == {"vendors": [], "transports": [], "tags": {}}
    assert (block["current_run"], block["last_run"]) == (None, None)


async def test_run_now_then_409_while_it_runs(client: TestClient) -> None:
    response = await client.post("/api/v1/schedules/block_load/run")
    assert response.status == 202
    body = await response.json()
    assert body["current_run"]["trigger"] == "manual"
    assert body["current_run"]["state"] == "running"
    assert (body["current_run"]["done"], body["current_run"]["elapsed_seconds"]) == (0, 0.0)
    again = await client.post("/api/v1/schedules/block_load/run")
    assert again.status == 409
    assert again.content_type == "application/problem+json"
    assert (await again.json())["detail"].startswith("schedule block_load is running (since ")
    shown: dict[str, Any] = {"runs": []}
    async with asyncio.timeout(10):  # its record is written as it starts
        while not shown["runs"]:
            await asyncio.sleep(0.01)  # polling the API, as a client would
            shown = await (await client.get("/api/v1/schedules/block_load")).json()
    assert shown["state"] == "running"
    assert [r["state"] for r in shown["runs"]] == ["running"]


async def test_unknown_schedule_and_bad_runs_are_problems(client: TestClient) -> None:
    response = await client.get("/api/v1/schedules/daily")
    assert response.status == 404
    assert (await response.json())["detail"] == (
        "no schedule 'daily' in the configuration (schedules: billing_daily, block_load, "
        "event_logs)"
    )
    response = await client.post("/api/v1/schedules/daily/run")
    assert response.status == 404
    response = await client.get("/api/v1/schedules/block_load?runs=0")
    assert response.status == 400
    assert (await response.json())["detail"] == (
        "query parameter runs: expected integer 1..1000, got '0'"
    )


async def test_no_scheduler_is_a_503(daemon: Daemon) -> None:
    app = build_app(daemon)
    violations: list[str] = []
    app.middlewares.insert(0, contract_middleware(violations))
    async with TestClient(TestServer(app)) as test_client:
        for method, path in (
            ("GET", "/api/v1/schedules"),
            ("GET", "/api/v1/schedules/block_load"),
            ("POST", "/api/v1/schedules/block_load/run"),
        ):
            response = await test_client.request(method, path)
            assert response.status == 503
            assert (await response.json())["detail"] == "the scheduler is not running"
    assert violations == [], "answers that docs/hes-api.yaml does not describe"


async def test_a_schedule_removed_by_a_reload_while_its_runs_are_read_is_answered(
    client: TestClient, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler keeps the schedule it found: a SIGHUP that removes it while the runs are
    read from the store does not turn the answer into a 500."""
    scheduler = daemon.scheduler
    assert scheduler is not None
    history = scheduler.history

    async def removed_meanwhile(name: str, limit: int = 20) -> Any:
        kept = [s for s in scheduler.schedules if s.name != name]
        scheduler.reload(scheduler.config, kept)
        return await history(name, limit)

    monkeypatch.setattr(scheduler, "history", removed_meanwhile)
    response = await client.get("/api/v1/schedules/block_load")
    assert response.status == 200
    assert (await response.json())["name"] == "block_load"
    assert "block_load" not in {s.name for s in scheduler.schedules}
