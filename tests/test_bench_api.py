"""bench/api.py keeps working: one short round through a real hesd (no speed assertions: those
are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_api_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    report = run_bench("api.py", "--seconds", "0.3", "--repeat", "1", out=out)
    assert set(report["medians"]) == {"socket", "tls keep-alive", "tls new connection"}
    (round_,) = report["rounds"]
    assert round_["hesd_exit"] == 0
    for case in round_["cases"].values():
        assert case["calls"] > 0
        assert case["failures"] == 0
    assert round_["audit_rows"] >= sum(c["calls"] for c in round_["cases"].values())
