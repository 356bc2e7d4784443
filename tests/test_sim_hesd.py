"""End to end: a real hesd imports what ``hesd-sim`` writes (inventory, secrets) and reads the
simulated meters, dialling out to them (serve mode) and taking them as they dial in; the values
match the simulator's ground truth. Both run as processes, as in a demo or a benchmark."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, HesdProcess, free_port, wait_for, write_config
from tests.test_sim_client import VENDORS

pytestmark = pytest.mark.integration

StartHesd = Callable[..., HesdProcess]
START = "2026-01-01T00:00:00Z"


class SimProcess:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.inventory = tmp_path / "sim-meters.csv"
        self.secrets = tmp_path / "sim-secrets.toml"
        self.log = tmp_path / "sim.log"
        self.control = free_port()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN / "hesd-sim"), "--vendors-dir", str(VENDORS), "--seed", "11"),
                    # simulated time all but stands still: what hesd reads is the truth "now"
                    *("--time-scale", "1e-9", "--start", START, "--log-format", "json"),
                    *("--inventory-out", str(self.inventory), "--secrets-out", str(self.secrets)),
                    *("--control", f"127.0.0.1:{self.control}", "--push-interval", "0"),
                    *args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        wait_for(lambda: self.logged("sim.ready") or self.proc.poll() is not None, 20, "sim")
        assert self.proc.poll() is None, self.log.read_text()

    def logged(self, event: str) -> bool:
        return any(json.loads(line)["event"] == event for line in self.log.read_text().splitlines())

    def api(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.control}/api/v1{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(tmp_path, *args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


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
