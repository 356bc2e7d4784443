"""Group commit of the hesd store: durable writes per second and acknowledgement latency.

N concurrent writers (think: meter sessions) each submit outbox records one at a time and wait
for the durable acknowledgement, for a fixed number of records. Compared: commit_interval 0 (commit
as soon as something is queued; batching only what piles up during a commit) and larger windows.
A baseline commits every record in its own transaction (what a naive store would do).

    .venv/bin/python bench/store_commit.py [--writers 200] [--records 20000] [--repeat 3]

Prints a table and writes bench/results/store_commit.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import structlog
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import median_of, write_report
from hesd.config import StoreConfig
from hesd.store import Store

INSERT = "INSERT INTO outbox (kind, meter_id, created_at, payload) VALUES ('reading', ?, ?, ?)"
PAYLOAD = msgpack.packb(
    {
        "quantity": "energy.import.active",
        "value": 12345.678,
        "unit": "kWh",
        "ts": "2026-11-23T10:15:00Z",
        "obis": "1.0.1.8.0.255",
        "quality": [],
    }
)


async def run_case(
    directory: Path, writers: int, records: int, interval: float
) -> dict[str, float]:
    config = StoreConfig(
        path=directory / "bench.db", commit_interval=interval, commit_max_batch=5000, slow_commit=60
    )
    store = await Store.open(config)
    task = asyncio.create_task(store.run_writer(), name="store:writer")
    latencies: list[float] = []
    per_writer = records // writers

    async def writer(index: int) -> None:
        for n in range(per_writer):
            started = time.perf_counter()
            await store.execute(INSERT, (f"M{index:06d}", float(n), PAYLOAD))
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(writers)))
    elapsed = time.perf_counter() - started
    commits = store.commits
    await store.close()
    await task
    latencies.sort()
    return {
        "writes_per_s": len(latencies) / elapsed,
        "commits": commits,
        "writes_per_commit": len(latencies) / max(commits, 1),
        "ack_p50_ms": latencies[len(latencies) // 2] * 1000,
        "ack_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def run_baseline(directory: Path, records: int) -> dict[str, float]:
    """One transaction per record, one writer: the cost group commit avoids."""
    config = StoreConfig(
        path=directory / "base.db", commit_interval=0, commit_max_batch=1, slow_commit=60
    )
    store = await Store.open(config)
    task = asyncio.create_task(store.run_writer(), name="store:writer")
    latencies = []
    started = time.perf_counter()
    for n in range(records):
        t0 = time.perf_counter()
        await store.execute(INSERT, ("M000000", float(n), PAYLOAD))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    await store.close()
    await task
    latencies.sort()
    return {
        "writes_per_s": records / elapsed,
        "commits": records,
        "writes_per_commit": 1.0,
        "ack_p50_ms": latencies[len(latencies) // 2] * 1000,
        "ack_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def main_async(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hesd-bench-", dir=args.dir) as tmp:
        runs = []
        for i in range(args.repeat):
            case_dir = Path(tmp) / f"baseline-{i}"
            case_dir.mkdir()
            runs.append(await run_baseline(case_dir, min(args.records, 2000)))
        results["1 txn per write (1 writer)"] = median_of(runs)
        for interval in (0.0, 0.002, 0.005, 0.02):
            runs = []
            for i in range(args.repeat):
                case_dir = Path(tmp) / f"group-{interval}-{i}"
                case_dir.mkdir()
                runs.append(await run_case(case_dir, args.writers, args.records, interval))
            results[f"group commit, interval {interval * 1000:g} ms"] = median_of(runs)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=200)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the databases go (default: $TMPDIR)")
    parser.add_argument("--out", default="bench/results/store_commit.json")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    results = uvloop.run(main_async(args))
    header = (
        f"{'case':34} {'writes/s':>10} {'per commit':>11} {'ack p50 ms':>11} {'ack p99 ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:34} {r['writes_per_s']:10.0f} {r['writes_per_commit']:11.1f} "
            f"{r['ack_p50_ms']:11.2f} {r['ack_p99_ms']:11.2f}"
        )
    write_report(
        args.out,
        "store_commit",
        params={"writers": args.writers, "records": args.records, "repeat": args.repeat},
        median=results,
    )


if __name__ == "__main__":
    main()
