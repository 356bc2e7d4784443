"""End to end: a real hesd imports what ``hesd-sim`` writes (inventory, secrets) and reads the
simulated meters, dialling out to them (serve mode) and taking them as they dial in; the values
match the simulator's ground truth. Both run as processes, as in a demo or a benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HesdProcess, free_port, wait_for, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

StartHesd = Callable[..., HesdProcess]


def _hesd(start_hesd: StartHesd, tmp_path: Path, sim: SimProcess, tcp: str = "") -> HesdProcess:
    daemon = f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"'
    sections = {"daemon": daemon}
    if tcp:
        sections["tcp"] = tcp
    hesd = start_hesd(write_config(tmp_path, **sections))
    imported = hesd.hesctl("meters", "import", str(sim.inventory))
    assert "3 created" in imported.stdout
    return hesd


def _read(hesd: HesdProcess, meter_id: str) -> list[Any]:
    result = hesd.hesctl("read", meter_id, "--json")
    return [r["value"] for r in json.loads(result.stdout)["results"]]


def test_hesd_dials_out_to_simulated_meters(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    sim = sim_process("--meters", "3", "--mode", "serve", "--port", "0")
    hesd = _hesd(start_hesd, tmp_path, sim)
    for meter_id in ("SIM-is15959-000001", "SIM-is15959-000003"):
        clock, energy = _read(hesd, meter_id)
        truth = sim.api(f"/meters/{meter_id}/truth?quantity=energy_active_import")
        assert energy == truth["raw"]
        assert clock["date_time"] == "2026-01-01T00:00:00+00:00"  # IST on the wire, UTC here
        assert sim.api(f"/meters/{meter_id}")["associations_served"] == 1
    hesd.stop()
    sim.stop()


def test_simulated_meters_dial_in_to_hesd(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    port = free_port()
    sim = sim_process("--meters", "3", "--mode", "dial", "--hes", f"127.0.0.1:{port}")
    hesd = _hesd(start_hesd, tmp_path, sim, f'listen = ["127.0.0.1:{port}"]')
    wait_for(  # all three: the read below is of one of them, whichever dialled in first
        lambda: hesd.log_text().count("tcp.identified") >= 3 or "Traceback" in hesd.log_text(),
        20,
        "the meters to dial in",
    )
    if "Traceback" in hesd.log_text():
        pytest.fail(f"hesd logged a traceback:\n{hesd.log_text()}")
    [_, energy] = _read(hesd, "SIM-is15959-000002")
    truth = sim.api("/meters/SIM-is15959-000002/truth?quantity=energy_active_import")
    assert energy == truth["raw"]
    hesd.stop()
    sim.stop()
