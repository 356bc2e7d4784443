"""bench/uplink.py keeps working: 2,000 readings from the outbox to the receiver, and 20 meters
pushing through a real hesd for 2 s (no speed assertions: those are the benchmark's, in
docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def test_uplink_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "uplink.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/uplink.py",
            *("--repeat", "1", "--dir", str(tmp_path), "--out", str(out)),
            *("--records", "2000", "--meters", "50", "--batch-sizes", "100", "--lanes", "2"),
            *("--push-meters", "20", "--push-every", "0.5", "--seconds", "2", "--warmup", "0.5"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    throughput = report["throughput"]
    assert set(throughput["cases"]) == {"batch_size 100, lanes 2", "batch_size 500, lanes 4"}
    assert throughput["default"] == "batch_size 500, lanes 4"  # hesd.toml's
    for case in throughput["cases"].values():
        median = case["median"]
        assert median["fill_readings_per_s"] > 0
        assert median["forward_readings_per_s"] > 0
        assert median["mdm_duplicates"] == 0
    assert isinstance(throughput["meets_target"], bool)
    [latency] = report["latency"]["rounds"]
    assert latency["drained"]
    assert latency["readings"] > 0
    assert latency["sim_pushes_per_s"] > 0
    assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["max_s"]
    assert isinstance(report["latency"]["meets_target"], bool)
