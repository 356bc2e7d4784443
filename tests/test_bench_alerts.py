"""bench/alerts.py keeps working: 20 alarms on 10 meters through a real hesd to the reference MDM
receiver (no speed assertions: those are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_alerts_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "alerts.json"
    report = run_bench(
        "alerts.py",
        *("--repeat", "1", "--dir", str(tmp_path)),
        *("--meters", "10", "--alarms", "20", "--rate", "20"),
        out=out,
    )
    assert report["params"]["coalesce"] == 1.0  # hesd.toml's
    [round_] = report["rounds"]
    assert round_["alarms"] == round_["alerts_arrived"] == round_["logged_arrived"] == 20
    assert 0 < round_["alert_p50_s"] <= round_["alert_p99_s"] <= round_["alert_max_s"]
    assert round_["alert_p50_s"] < round_["log_p50_s"] <= round_["log_p99_s"]
    assert 10 <= round_["event_log_reads"] <= 20  # a meter's two alarms 0.5 s apart: coalesced
    assert (round_["read_failures"], round_["unconfirmed"]) == (0, 0)
    assert round_["records_beyond_one_per_source"] == 0
    assert isinstance(report["meets_target"], bool)
