"""bench/firmware.py keeps working: two meters upgraded through a real hesd, once clean and once
with a cut (no speed assertions: those are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_firmware_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "firmware.json"
    report = run_bench(
        "firmware.py",
        *("--meters", "2", "--kib", "4", "--repeat", "1"),
        *("--dir", str(tmp_path)),
        out=out,
    )
    for case in ("clean", "cut"):
        [result] = report["rounds"][case]
        assert result["blocks"] == 22
        assert result["blocks_per_s"] > 0
        assert result["received_per_block"] == 1.0  # the cut block is not sent twice
    assert report["rounds"]["cut"][0]["attempts_median"] == 3  # cut, restart, read-back
