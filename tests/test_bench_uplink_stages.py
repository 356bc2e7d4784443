"""bench/uplink_stages.py keeps working: every stage timed on a few pushes (no timing asserted).

It reaches into the forwarder's private names (``_fetch``, ``_cut``, ``_lanes``, ``_document``,
``_seqs``); this run is what notices when they change."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.bench_run import run_bench

STAGES = (
    "framing_us",
    "apdu_axdr_decode_us",
    "normalise_us",
    "normalise_readings_us",
    "reading_construction_us",
    "outbox_encode_us",
    "outbox_encode_readings_us",
    "offer_commit_us",
    "forwarder_body_us",
    "gzip_us",
    "seal_delete_us",
    "total_us",
)


@pytest.mark.timeout(180)
def test_uplink_stages_bench_runs(tmp_path: Path) -> None:
    report = run_bench(
        "uplink_stages.py",
        *("--pushes", "50", "--repeat", "1", "--dir", str(tmp_path)),
        out=tmp_path / "uplink_stages.json",
    )
    assert report["benchmark"] == "uplink_stages"
    assert report["machine"]["python"]
    result = report["result"]
    for key in STAGES:
        assert math.isfinite(result[key]), key
        assert result[key] >= 0, key
    assert result["rows_per_push"] == 1  # a push's 26 readings are one outbox row
    assert result["json_bytes_per_push"] > 0
