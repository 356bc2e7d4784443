"""bench/sim.py keeps working (a small run; no timing or memory assertions: those are bench's)."""

from __future__ import annotations

from pathlib import Path

from tests.bench_run import run_bench


def test_sim_bench_runs(tmp_path: Path) -> None:
    report = run_bench(
        "sim.py",
        *("--meters", "200", "--sessions", "50", "--repeat", "1"),
        out=tmp_path / "sim.json",
    )
    results = report["results"]
    assert results["meters"] == 200
    for key in ("rss_bytes_per_idle_meter", "sessions_per_s_median", "requests_per_s_median"):
        assert isinstance(results[key], int)
