"""bench/uplink.py keeps working: 2,000 readings from the outbox to the receiver, and pushes
through a real hesd from both loads (bench/pushgen.py's frames and hesd-sim) for 2 s each, every
push accounted for (no speed assertions: those are the benchmark's, in docs/benchmarks.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.pushgen import build_frames, sent_pushes
from bench.uplink_latency import tally
from tests.bench_run import run_bench

pytestmark = pytest.mark.integration


def test_uplink_bench_runs(tmp_path: Path) -> None:
    out = tmp_path / "uplink.json"
    report = run_bench(
        "uplink.py",
        *("--repeat", "1", "--dir", str(tmp_path)),
        *("--records", "2000", "--meters", "50", "--batch-sizes", "100", "--lanes", "2"),
        *("--load", "both", "--rates", "40", "--push-meters", "20", "--push-every", "0.5"),
        *("--seconds", "2", "--warmup", "0.5"),
        out=out,
    )
    throughput = report["throughput"]
    assert set(throughput["cases"]) == {"batch_size 100, lanes 2", "batch_size 1000, lanes 4"}
    assert throughput["default"] == "batch_size 1000, lanes 4"  # hesd.toml's
    for case in throughput["cases"].values():
        median = case["median"]
        assert median["fill_readings_per_s"] > 0
        assert median["forward_readings_per_s"] > 0
        assert median["mdm_duplicates"] == 0
    assert isinstance(throughput["meets_target"], bool)
    latency = report["latency"]
    assert set(latency) == {"frames 40/s", "sim 40/s"}
    for name, case in latency.items():
        [round_] = case["rounds"]
        pushes = round_["pushes"]
        assert round_["drained"], name
        assert pushes["sent"] > 0, name
        assert pushes["readings_per_push"] == 26, name  # an IS 15959 instantaneous push
        assert (pushes["arrived"], pushes["lost"], pushes["incomplete"]) == (pushes["sent"], 0, 0)
        assert 0 < round_["p50_s"] <= round_["p99_s"] <= round_["max_s"] < 10, name
        assert min(round_["sent_per_s"], round_["mdm_per_s"]) > 0, name
        assert isinstance(case["meets_target"], bool)
    frames = latency["frames 40/s"]["rounds"][0]["pushes"]
    assert (frames["unmatched"], frames["ambiguous"]) == (0, 0)
    # hesd counts each meter's identification too
    assert frames["hesd"] == frames["sent"] + 20


def test_the_generator_lists_each_push_it_wrote() -> None:
    frames = build_frames(3, seed=1)
    assert [f.meter_id for f in frames] == [f"SIM-is15959-{n:06d}" for n in (1, 2, 3)]
    report = {
        "meter_ids": [f.meter_id for f in frames],
        "ticks": [(10.0, "T1", 0, 2), (10.005, "T1", 2, 2), (10.01, "T2", 1, 1)],
        "unsent": [(1, "T2")],
    }
    sent, ambiguous = sent_pushes(report)
    ids = report["meter_ids"]
    assert sent == {(ids[0], "T1"): 10.0, (ids[1], "T1"): 10.0, (ids[2], "T1"): 10.005}
    assert ambiguous == 1  # meter 0 again at T1: the first time is kept


def test_every_push_is_arrived_lost_or_unmatched() -> None:
    sent = {("A", "t1"): 1.0, ("A", "t2"): 2.0, ("B", "t1"): 1.0, ("B", "t2"): 2.5}
    arrived = {
        ("A", "t1"): (26, 1.5),
        ("A", "t2"): (26, 2.25),
        ("B", "t1"): (20, 1.75),  # six readings short
        ("C", "t9"): (26, 2.0),  # nobody sent it
    }
    counted = tally(arrived, sent, (0.0, 2.1))
    assert counted["latencies"] == [0.25, 0.5]  # B's incomplete push is not a latency
    assert counted["readings_per_push"] == 26
    assert (counted["arrived"], counted["incomplete"], counted["unmatched"]) == (4, 1, 1)
    assert counted["lost"] == 1  # B t2
    assert (counted["window_sent"], counted["window_lost"]) == (3, 1)
    assert counted["window_completed"] == 3  # stored before 2.1 s
