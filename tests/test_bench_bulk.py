"""bench/bulk.py keeps working: a real hesd and hesd-sim with 50 meters dialling in, a fast run
and a spread one (no speed assertions: those are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_bulk_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "bulk.json"
    report = run_bench(
        "bulk.py", *("--meters", "50", "--repeat", "1", "--window", "4"), out=out, timeout=100
    )
    results = report["results"]
    assert results["meters"] == 50
    assert results["budget_kept"] is True
    assert results["spread_within_window"] is True
    [round_1] = report["rounds"]
    for run in ("fast", "spread"):
        measured = round_1[run]
        assert (measured["selected"], measured["succeeded"], measured["missed"]) == (50, 50, 0)
        assert measured["success_ratio"] == 1.0
        assert measured["link_overruns"] == 0
        assert measured["max_link_in_flight"] == 1
        assert 1 <= measured["max_in_flight"] <= measured["scheduled_max"] == 256
        assert measured["meters_per_s"] > 0
        assert measured["sim_cpu_s"] > 0
        assert 0 < measured["cpu_busy_share"] <= 1
    assert round_1["fast"]["readings"] == 50 * 26  # the instantaneous profile's row, normalised
    assert round_1["outbox_depth"] >= round_1["fast"]["readings"]
