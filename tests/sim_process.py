"""A real ``hesd-sim`` process for integration tests, driven through its control API."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import BIN, REPO, free_port, wait_for

VENDORS = REPO / "conf" / "vendors"
START = "2026-01-01T00:00:00Z"
ENERGY = "energy_active_import"


class SimProcess:
    """``hesd-sim`` with its inventory, secrets and log in ``directory`` and its control API on a
    free port; simulated time all but stands still, so what hesd reads is the truth "now".
    ``realtime``: simulated time runs with the wall clock from the sim's start instead (hesd
    sets and compares clocks by its own), and ``name`` tells the files of two sims apart."""

    def __init__(
        self,
        directory: Path,
        *args: str,
        vendors: Path = VENDORS,
        seed: int = 11,
        realtime: bool = False,
        name: str = "sim",
    ) -> None:
        self.inventory = directory / f"{name}-meters.csv"
        self.secrets = directory / f"{name}-secrets.toml"
        self.log = directory / f"{name}.log"
        timing = ("--time-scale", "1") if realtime else ("--time-scale", "1e-9", "--start", START)
        self.control = free_port()
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [
                    *(str(BIN / "hesd-sim"), "--vendors-dir", str(vendors), "--seed", str(seed)),
                    *(*timing, "--log-format", "json"),
                    *("--inventory-out", str(self.inventory), "--secrets-out", str(self.secrets)),
                    *("--control", f"127.0.0.1:{self.control}", "--push-interval", "0"),
                    *args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=out,
            )
        # ready: the fleet is served and the control API listens (it may come up second)
        wait_for(lambda: self._up() or self.proc.poll() is not None, 20, "sim")
        assert self.proc.poll() is None, self.log.read_text()

    def _up(self) -> bool:
        return self.logged("sim.ready") and self.logged("sim.control.listening")

    def events(self, event: str) -> list[dict[str, Any]]:
        """The sim's log lines with this event name, in order."""
        lines = (json.loads(line) for line in self.log.read_text().splitlines())
        return [line for line in lines if line["event"] == event]

    def logged(self, event: str) -> bool:
        return bool(self.events(event))

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET ``/api/v1{path}``, or POST ``body`` as JSON."""
        url = f"http://127.0.0.1:{self.control}/api/v1{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data)
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http
            return json.loads(response.read())

    def truth(self, meter_id: str, quantity: str = ENERGY) -> Any:
        """The raw register value the meter holds for ``quantity`` now."""
        return self.api(f"/meters/{meter_id}/truth?quantity={quantity}")["raw"]

    def set_faults(self, meter_id: str, spec: str) -> None:
        """Replace the meter's faults (``""`` clears them)."""
        self.api(f"/meters/{meter_id}/faults", {"spec": spec})

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(timeout=20) == 0, self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
