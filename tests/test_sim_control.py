"""The control API: meters, ground truth, events (with the alert push), faults, stats, and
problem+json errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hesd.sim import truth
from hesd.sim.runner import Simulator
from hesd.sim.tcp import ServeTransport
from hesd.sim.transports import Transport
from protocols.dlms.axdr import BitString
from tests.test_sim_client import (
    START,
    DlmsClient,
    TcpPipe,
    association,
    make_sim,
    running,
)

pytestmark = pytest.mark.integration


def serve(sim: Simulator) -> Transport:
    return ServeTransport(sim.env, sim.endpoints, port=0)


@pytest.fixture
async def api() -> AsyncIterator[tuple[Simulator, str, aiohttp.ClientSession]]:
    sim = make_sim([("is15959", 3)], control=("127.0.0.1", 0))
    async with running(sim, serve), aiohttp.ClientSession() as session:
        assert sim.control_address is not None
        yield sim, "http://{}:{}/api/v1".format(*sim.control_address), session


async def call(
    session: aiohttp.ClientSession, method: str, url: str, status: int, body: Any = None
) -> Any:
    async with session.request(method, url, json=body) as response:
        text = await response.text()
        assert response.status == status, text
        if status >= 400:
            assert response.content_type == "application/problem+json"
        return await response.json(content_type=None)


async def test_meters_and_one_meter(api: tuple[Simulator, str, aiohttp.ClientSession]) -> None:
    sim, url, http = api
    listing = await call(http, "GET", f"{url}/meters", 200)
    first = listing["meters"][0]
    endpoint = sim.endpoints[0]
    assert first == {
        "id": endpoint.meter_id,
        "vendor": "is15959",
        "serial_number": endpoint.meter.spec.serial_number,
        "system_title": endpoint.meter.spec.system_title.hex().upper(),
        "keyset": "sim-is15959",
        "mode": "serve",
        "address": sim.transport.address(endpoint) if sim.transport else None,
        "connected": False,
        "association": None,
        "associations_served": 0,
        "faults": "",
    }
    meter = await call(http, "GET", f"{url}/meters/{endpoint.meter_id}", 200)
    assert meter["truth"]["relay"] == "connected"
    assert meter["truth"]["firmware_version"] == endpoint.meter.firmware_version
    assert meter["truth"]["clock"].startswith("2026-01-01T00:00:00")
    assert meter["truth"]["relay_operations"] == 0
    assert meter["truth"]["limiter"] == {
        "monitored": "1.0.1.7.0.255",
        "scaler": 0,
        "threshold_active": 10_000,
        "threshold_normal": 10_000,
        "threshold_emergency": 5_000,
        "min_over_threshold_duration": 60,
        "min_under_threshold_duration": 60,
    }
    assert meter["truth"]["push"] == {
        "transport": 0,
        "destination": "",
        "message": 0,
        "communication_window": [],
        "randomisation_start_interval": 0,
        "number_of_retries": 3,
        "repetition_delay": 60,
    }
    problem = await call(http, "GET", f"{url}/meters/NOPE", 404)
    assert problem["detail"] == "no meter 'NOPE' in this fleet"


async def test_truth(api: tuple[Simulator, str, aiohttp.ClientSession]) -> None:
    sim, url, http = api
    endpoint = sim.endpoints[2]
    base = f"{url}/meters/{endpoint.meter_id}/truth"
    now = await call(http, "GET", f"{base}?quantity=energy_active_import", 200)
    assert now["raw"] == truth.raw(endpoint.meter, "energy_active_import", START)
    assert now["value"] == str(truth.value(endpoint.meter, "energy_active_import", START))
    assert (now["unit"], now["register_unit"], now["obis"]) == ("Wh", "Wh", "1.0.1.8.0.255")
    later = await call(http, "GET", f"{base}?quantity=energy_active_import&t={START + 3600}", 200)
    iso = await call(
        http, "GET", f"{base}?quantity=energy_active_import&t=2026-01-01T01:00:00%2B00:00", 200
    )
    assert later["raw"] == iso["raw"] >= now["raw"]
    await call(http, "GET", base, 400)
    await call(http, "GET", f"{base}?quantity=beer", 422)
    await call(http, "GET", f"{base}?quantity=voltage_l1&t=yesterday", 400)
    await call(http, "GET", f"{base}?quantity=voltage_l1&t=2026-01-01T00:00:00", 400)


async def test_an_event_is_logged_and_pushed_to_the_connected_client(
    api: tuple[Simulator, str, aiohttp.ClientSession],
) -> None:
    sim, url, http = api
    endpoint = sim.endpoints[0]
    first = await call(
        http, "POST", f"{url}/meters/{endpoint.meter_id}/events", 201, {"kind": "magnet_tamper"}
    )
    assert (first["kind"], first["pushed"]) == ("magnet_tamper", False)
    assert sim.transport is not None
    pipe = await TcpPipe.connect(sim.transport.address(endpoint))
    client = DlmsClient(pipe, **association(sim, "reader"))
    await client.associate()
    second = await call(
        http, "POST", f"{url}/meters/{endpoint.meter_id}/events", 201, {"code": first["code"]}
    )
    assert (second["pushed"], second["alert"], second["esw_bit"]) == (True, True, 16)
    pushed = await client.next_notification()
    # the alert push (conf/vendors/is15959.toml [alerts]): identity, clock, the ESW's bit 16
    name, clock, esw = pushed.body  # type: ignore[misc]
    assert name == endpoint.meter.logical_device_name()
    assert clock == endpoint.meter_clock(sim.clock.now())
    assert isinstance(esw, BitString)
    assert esw.bits == "0" * 16 + "1" + "0" * 111
    assert (await call(http, "GET", f"{url}/stats", 200))["alerts"] == 1
    await pipe.close()
    meter = await call(http, "GET", f"{url}/meters/{endpoint.meter_id}", 200)
    assert meter["truth"]["tamper_count"] == 2
    assert [e["kind"] for e in meter["truth"]["last_events"]][-2:] == ["magnet_tamper"] * 2
    events = f"{url}/meters/{endpoint.meter_id}/events"
    assert "no event 'beer'" in (await call(http, "POST", events, 422, {"kind": "beer"}))["detail"]
    await call(http, "POST", events, 400, {"kind": True})
    await call(http, "POST", events, 400, [1])
    async with http.post(events, data=b"{not json") as response:
        assert response.status == 400


async def test_faults_are_set_per_meter(api: tuple[Simulator, str, aiohttp.ClientSession]) -> None:
    sim, url, http = api
    endpoint = sim.endpoints[1]
    faults = f"{url}/meters/{endpoint.meter_id}/faults"
    body = await call(http, "POST", faults, 200, {"spec": "silent, drift=100ppm"})
    assert body["faults"] == "silent,drift=100ppm"
    assert endpoint.faults is not None
    assert endpoint.faults.silent
    meter = await call(http, "GET", f"{url}/meters/{endpoint.meter_id}", 200)
    assert meter["faults"] == "silent,drift=100ppm"
    assert meter["truth"]["clock_drift_ppm"] == 100
    problem = await call(http, "POST", faults, 422, {"spec": "drop@0.5"})
    assert "a fraction makes no sense for one meter" in problem["detail"]
    await call(http, "POST", faults, 422, {"spec": "lag"})
    await call(http, "POST", faults, 400, {})
    assert (await call(http, "POST", faults, 200, {"spec": ""}))["faults"] == ""
    assert endpoint.faults is None


async def test_stats(api: tuple[Simulator, str, aiohttp.ClientSession]) -> None:
    sim, url, http = api
    assert sim.transport is not None
    pipe = await TcpPipe.connect(sim.transport.address(sim.endpoints[0]))
    client = DlmsClient(pipe, **association(sim, "public"))
    await client.associate()
    stats = await call(http, "GET", f"{url}/stats", 200)
    assert (stats["mode"], stats["meters"], stats["connected"]) == ("serve", 3, 1)
    assert (stats["associations"], stats["connections"]) == (1, 1)
    assert stats["bytes_in"] > 0
    await pipe.close()
    await call(http, "GET", f"{url}/nothing", 404)
    await call(http, "DELETE", f"{url}/stats", 405)


async def test_the_signal_quality_is_set_per_meter() -> None:
    sim = make_sim([("kalpa", 1), ("sunrise", 1)], control=("127.0.0.1", 0))
    async with running(sim, serve), aiohttp.ClientSession() as http:
        assert sim.control_address is not None
        url = "http://{}:{}/api/v1".format(*sim.control_address)
        kalpa, sunrise = sim.endpoints
        meter = await call(http, "GET", f"{url}/meters/{kalpa.meter_id}", 200)
        assert meter["truth"]["signal_quality"] == kalpa.meter.signal_quality
        assert 8 <= meter["truth"]["signal_quality"] <= 28  # from the seed
        signal = f"{url}/meters/{kalpa.meter_id}/signal"
        body = await call(http, "POST", signal, 200, {"quality": 3})
        assert body == {"meter": kalpa.meter_id, "signal_quality": 3}
        meter = await call(http, "GET", f"{url}/meters/{kalpa.meter_id}", 200)
        assert meter["truth"]["signal_quality"] == 3
        assert (await call(http, "POST", signal, 200, {"quality": 99}))["signal_quality"] == 99
        problem = await call(http, "POST", signal, 422, {"quality": 32})
        assert problem["detail"] == "signal quality 32 is not 0..31 or 99 (not known)"
        for bad in ({"quality": True}, {"quality": "12"}, {"quality": 12.5}, {}, [12]):
            await call(http, "POST", signal, 400, bad)
        assert kalpa.meter.signal_quality == 99
        other = await call(http, "GET", f"{url}/meters/{sunrise.meter_id}", 200)
        assert other["truth"]["signal_quality"] is None  # no modem on an RS-485 meter
        problem = await call(
            http, "POST", f"{url}/meters/{sunrise.meter_id}/signal", 422, {"quality": 12}
        )
        assert problem["detail"] == "sunrise meters have no GSM diagnostic object"
        await call(http, "POST", f"{url}/meters/NOPE/signal", 404, {"quality": 12})
