"""bench/codec.py still runs: every operation measured on both sides (no timing asserted)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.bench_run import run_bench

OPERATIONS = [
    "register GET (WRAPPER)",
    "register GET, suite 0 auth+enc (WRAPPER)",
    "Data-Notification 10 values, plain",
    "Data-Notification 10 values, 0xDB SC 0x30",
    "Data-Notification encode (server side)",
    "96-row profile, 1 GET-Response-Normal",
    "96-row profile, 4 datablocks",
    "96-row profile to rows with datetimes",
    "AARQ + AARE + HLS-GMAC pass 3/4, ciphered",
]


@pytest.mark.timeout(180)
def test_codec_bench_quick_run_writes_every_operation(tmp_path: Path) -> None:
    result = run_bench("codec.py", "--quick", out=tmp_path / "codec.json")
    assert result["benchmark"] == "codec"
    assert result["params"]["quick"] is True
    assert [op["operation"] for op in result["operations"]] == OPERATIONS
    for op in result["operations"]:
        for field in ("ours_us", "gurux_us", "ratio"):
            assert isinstance(op[field], float), (op["operation"], field)
            assert math.isfinite(op[field])
            assert op[field] > 0
        if op["target_us"] is None:
            assert op["meets_target"] is None
        else:
            assert isinstance(op["meets_target"], bool)
    assert result["machine"]["python"]
