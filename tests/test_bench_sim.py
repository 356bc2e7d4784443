"""bench/sim.py keeps working (a small run; no timing or memory assertions: those are bench's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_sim_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "sim.json"
    subprocess.run(
        [
            sys.executable,
            "bench/sim.py",
            "--meters",
            "200",
            "--sessions",
            "50",
            "--repeat",
            "1",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    results = json.loads(out.read_text())["results"]
    assert results["meters"] == 200
    for key in ("rss_bytes_per_idle_meter", "sessions_per_s_median", "requests_per_s_median"):
        assert isinstance(results[key], int)
