"""End to end: a real hesd reads a simulated cellular (kalpa) meter and keeps its modem's signal
quality in the registry, as ``hesctl meters`` and ``hesctl meters show`` print it; the simulator
changes it through its control API and hesd sees the change on its next connection to the meter.
A meter without a GSM diagnostic object (is15959) keeps no signal quality."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HesdProcess, wait_for, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

StartHesd = Callable[..., HesdProcess]
CELLULAR, WIRED = "SIM-kalpa-000001", "SIM-is15959-000001"


def _shown(hesd: HesdProcess, meter_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(hesd.hesctl("meters", "show", meter_id, "--json").stdout)
    return shown


def _read(hesd: HesdProcess, meter_id: str) -> None:
    """Read the meter (its clock and energy): a connection, if hesd has none to it yet."""
    result = json.loads(hesd.hesctl("read", meter_id, "--json").stdout)
    assert [r["error"] for r in result["results"] if r.get("error")] == [], result


def _signal_shown(hesd: HesdProcess, meter_id: str, dbm: int | None) -> None:
    """hesd commits registry state in groups: wait until ``meters show`` has ``dbm``."""
    wait_for(lambda: _shown(hesd, meter_id)["signal_quality"] == dbm, 10, f"{meter_id}: {dbm}")


def test_the_modems_signal_quality_reaches_the_registry(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    sim = sim_process(
        "--meters", "2", "--vendor", "is15959:1,kalpa:1", "--mode", "serve", "--port", "0"
    )
    quality = sim.api(f"/meters/{CELLULAR}")["truth"]["signal_quality"]
    assert 8 <= quality <= 28  # the seed's
    assert sim.api(f"/meters/{WIRED}")["truth"]["signal_quality"] is None
    daemon = f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"'
    config = write_config(tmp_path, daemon=daemon)
    hesd = start_hesd(config)
    assert "2 created" in hesd.hesctl("meters", "import", str(sim.inventory)).stdout
    assert _shown(hesd, CELLULAR)["signal_quality"] is None  # never connected

    _read(hesd, CELLULAR)
    _read(hesd, WIRED)
    dbm = -113 + 2 * quality  # 3GPP TS 27.007 §8.5
    _signal_shown(hesd, CELLULAR, dbm)
    assert _shown(hesd, WIRED)["signal_quality"] is None
    table = hesd.hesctl("meters").stdout.splitlines()
    [row] = [line for line in table if line.startswith(CELLULAR)]
    assert f"{dbm} dBm" in row
    [row] = [line for line in table if line.startswith(WIRED)]
    assert " dBm" not in row
    text = hesd.hesctl("meters", "show", CELLULAR).stdout.splitlines()
    assert [line.split(None, 1)[1] for line in text if line.startswith("signal_quality")] == [
        f"{dbm} dBm"
    ]

    # the modem's signal changes; hesd reads it once per connection, so not on this one
    assert sim.api(f"/meters/{CELLULAR}/signal", {"quality": 5}) == {
        "meter": CELLULAR,
        "signal_quality": 5,
    }
    _read(hesd, CELLULAR)
    assert _shown(hesd, CELLULAR)["signal_quality"] == dbm
    assert sim.api(f"/meters/{CELLULAR}")["associations_served"] == 1

    # a restarted hesd keeps what it knew, and learns the new signal on its next connection
    assert hesd.stop() == 0
    hesd = start_hesd(config)
    assert _shown(hesd, CELLULAR)["signal_quality"] == dbm
    _read(hesd, CELLULAR)
    _signal_shown(hesd, CELLULAR, -103)  # <rssi> 5: -113 + 10 dBm
    assert sim.api(f"/meters/{CELLULAR}")["associations_served"] == 2

    # a modem that does not know keeps the last value, and says so in hesd's log
    sim.api(f"/meters/{CELLULAR}/signal", {"quality": 99})
    assert hesd.stop() == 0
    hesd = start_hesd(config)
    _read(hesd, CELLULAR)
    wait_for(lambda: "session.signal_unknown" in hesd.log_text(), 10, "session.signal_unknown")
    [unknown] = [
        line
        for line in map(json.loads, hesd.log_text().splitlines())
        if line.get("event") == "session.signal_unknown"
    ]
    assert (unknown["meter"], unknown["answer"]) == (CELLULAR, "signal_quality 99")
    assert _shown(hesd, CELLULAR)["signal_quality"] == -103
    assert hesd.stop() == 0
    sim.stop()
