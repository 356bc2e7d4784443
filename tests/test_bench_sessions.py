"""bench/sessions.py keeps working: a real hesd and hesd-sim with 50 meters dialling in (no
timing or memory assertions: those are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_sessions_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "sessions.json"
    report = run_bench(
        "sessions.py",
        *("--meters", "50", "--repeat", "1", "--concurrency", "8"),
        *("--settle", "0.05"),
        out=out,
        timeout=100,
    )
    results = report["results"]
    assert results["meters"] == 50
    assert results["read_failures"] == 0
    [round_1] = report["rounds"]
    assert round_1["sessions_active"] == 50
    for reads in (round_1["first_reads"], round_1["associated_reads"]):
        assert reads["reads"] == 50
        assert reads["reads_per_s"] > 0
        assert 0 < reads["p50_ms"] <= reads["p99_ms"]
    for key in ("online_s_median", "rss_bytes_per_session_median", "reads_per_s_median"):
        assert isinstance(results[key], int | float), key
    assert isinstance(results["online_meets_target"], bool)
