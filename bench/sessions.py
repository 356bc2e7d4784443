"""hesd holding a fleet that dials in: time to online, RSS per session, register reads per second.

Runs a real ``hesd run`` and a real ``hesd-sim --meters N --mode dial`` on the same machine. In
each of ``--repeat`` rounds (a fresh hesd, store and simulator each) it:

* starts hesd with a generated hesd.toml (state in a temporary directory, ``[tcp]`` listening on
  a free loopback port, the simulator's keys as ``secrets_file``, JSON logs at level info) and
  waits for its API on the unix socket;
* takes hesd's VmRSS with an empty registry, then imports the inventory (``hesctl meters
  import``);
* starts the simulator, every meter dialling at once (no ``--ramp``), and polls
  ``GET /api/v1/status`` (what ``hesctl status --json`` reads) until it counts all N meters
  online: the *time to online*, from starting the simulator;
* takes hesd's VmRSS again: (online - empty) / N is the *RSS per session*, the registry row and
  its share of SQLite's cache included; the simulator's RSS is noted for information;
* reads the active energy register (3/1.0.1.8.0.255:2) of every meter once, in a shuffled order,
  with ``POST /api/v1/meters/{id}/read`` on the unix socket (the MDM's on-demand read, the same
  call as ``hesctl read``) and at most ``--concurrency`` requests in flight: reads per second and
  latency. The first pass associates every meter (AARQ, GET, the association kept), a second
  pass reads on open associations; RSS is taken once more after them.

    .venv/bin/python bench/sessions.py [--meters 10000] [--concurrency 100] [--repeat 3]

Prints a table of the medians and writes bench/results/sessions.json (every round as well).
Each process needs a file descriptor per meter: the soft RLIMIT_NOFILE is raised to the hard
limit here, and both children inherit it (under systemd, hesd gets it from LimitNOFILE=).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Round,
    cpu_seconds,
    free_port,
    hesd_command,
    hesd_toml,
    import_inventory,
    percentile,
    raise_nofile,
    sim_command,
    status,
    work_directory,
    write_fleet_files,
)
from bench.report import loadavg, machine, print_results, write_report

ENERGY: Final = "3/1.0.1.8.0.255:2"
TARGET_ONLINE_S: Final = 60.0
TARGET_BYTES_PER_SESSION: Final = 20_000


# -- processes --------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"process {pid} has no VmRSS")


def settled_rss_kib(pid: int, seconds: float) -> int:
    """The median of five samples over ``seconds`` (RSS moves while the allocator settles)."""
    samples = []
    for _ in range(5):
        samples.append(rss_kib(pid))
        time.sleep(seconds / 5)
    return int(statistics.median(samples))


# -- hesd's API ---------------------------------------------------------------------------------


async def read_pass(
    socket_path: Path, meter_ids: list[str], concurrency: int
) -> tuple[float, list[float], int]:
    """Read the energy register of each meter once: (seconds, latencies, failures)."""
    latencies: list[float] = []
    failures = 0
    todo = iter(meter_ids)
    body = json.dumps({"objects": [ENERGY]}).encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.UnixConnector(path=str(socket_path), limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=300)
    ) as http:

        async def reader() -> None:
            nonlocal failures
            for meter_id in todo:
                started = time.perf_counter()
                url = f"http://hesd/api/v1/meters/{meter_id}/read"
                async with http.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                latencies.append(time.perf_counter() - started)
                if response.status != 200 or b'"value"' not in answer:
                    failures += 1
                    if failures <= 3:
                        print(f"read {meter_id}: HTTP {response.status} {answer[:300]!r}")

        started = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for i in range(concurrency):
                tg.create_task(reader(), name=f"bench:reader:{i}")
        return time.perf_counter() - started, latencies, failures


# -- one round ----------------------------------------------------------------------------------


def run_round(args: argparse.Namespace, work: Path, index: int) -> dict[str, Any]:
    here = work / f"round-{index}"
    here.mkdir()
    port = free_port()
    config = hesd_toml(
        work / "sim.toml", port, f"[limits]\nmax_requests = {max(2000, args.concurrency)}\n"
    )
    with Round(here) as round_:
        daemon, client = round_.hesd(config, hesd_command(args.profile, index))
        time.sleep(args.settle)
        empty_kib = settled_rss_kib(daemon.pid, args.settle)
        started = time.perf_counter()
        import_inventory(client, work / "sim.csv")
        import_s = time.perf_counter() - started

        hesd_cpu = cpu_seconds(daemon.pid)
        started = time.monotonic()
        sim = round_.sim(sim_command(args.meters, port, here))
        online_s, half_s = round_.wait_online(
            client, args.meters, args.online_timeout, since=started
        )
        hesd_cpu = cpu_seconds(daemon.pid) - hesd_cpu
        sim_cpu = cpu_seconds(sim.pid)
        active = status(client)["sessions"]["active"]
        time.sleep(2 * args.settle)
        online_kib = settled_rss_kib(daemon.pid, args.settle)
        sim_kib = settled_rss_kib(sim.pid, args.settle)

        ids = [line.split(",", 1)[0] for line in (work / "sim.csv").read_text().splitlines()[1:]]
        random.Random(index).shuffle(ids)
        passes = []
        for _ in range(2):
            cpu_before = cpu_seconds(daemon.pid)
            seconds, latencies, failures = asyncio.run(
                read_pass(client.path, ids, args.concurrency)
            )
            cpu = cpu_seconds(daemon.pid) - cpu_before
            passes.append(
                {
                    "reads": len(latencies),
                    "failures": failures,
                    "reads_per_s": len(latencies) / seconds,
                    "p50_ms": percentile(latencies, 0.50) * 1000,
                    "p99_ms": percentile(latencies, 0.99) * 1000,
                    "hesd_cpu_us_per_read": cpu / len(latencies) * 1e6,
                    "hesd_cpu_share": cpu / seconds,  # of one core
                }
            )
        time.sleep(args.settle)
        read_kib = settled_rss_kib(daemon.pid, args.settle)
        return {
            "import_s": import_s,
            "half_online_s": half_s,
            "online_s": online_s,
            "sessions_active": active,
            "hesd_cpu_to_online_s": hesd_cpu,
            "sim_cpu_to_online_s": sim_cpu,
            "hesd_rss_empty_kib": empty_kib,
            "hesd_rss_online_kib": online_kib,
            "hesd_rss_after_reads_kib": read_kib,
            "bytes_per_session": (online_kib - empty_kib) * 1024 / args.meters,
            "bytes_per_session_after_reads": (read_kib - empty_kib) * 1024 / args.meters,
            "sim_rss_kib": sim_kib,
            "first_reads": passes[0],
            "associated_reads": passes[1],
        }


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100, help="reads in flight")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--online-timeout", type=float, default=300.0)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before taking RSS")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--profile", type=Path, help="run hesd under cProfile: DIR/*.prof")
    parser.add_argument("--out", default="bench/results/sessions.json")
    args = parser.parse_args()
    nofile = raise_nofile(args.meters + 1000)
    load_before = loadavg()
    rounds = []
    with work_directory("hesd-bench-", keep=args.keep) as work:
        write_fleet_files(args.meters, work)
        for index in range(1, args.repeat + 1):
            r = run_round(args, work, index)
            rounds.append(r)
            print(
                f"round {index}: {r['online_s']:.1f} s to online, "
                f"{r['bytes_per_session']:,.0f} bytes per session, "
                f"{r['first_reads']['reads_per_s']:,.0f} + "
                f"{r['associated_reads']['reads_per_s']:,.0f} reads/s",
                flush=True,
            )

    def median(*path: str) -> float:
        values = []
        for r in rounds:
            value: Any = r
            for key in path:
                value = value[key]
            values.append(value)
        return float(statistics.median(values))

    results = {
        "meters": args.meters,
        "online_s_median": round(median("online_s"), 2),
        "half_online_s_median": round(median("half_online_s"), 2),
        "hesd_cpu_s_to_online_median": round(median("hesd_cpu_to_online_s"), 2),
        "sim_cpu_s_to_online_median": round(median("sim_cpu_to_online_s"), 2),
        "import_s_median": round(median("import_s"), 2),
        "hesd_rss_empty_mib": round(median("hesd_rss_empty_kib") / 1024, 1),
        "hesd_rss_online_mib": round(median("hesd_rss_online_kib") / 1024, 1),
        "rss_bytes_per_session_median": round(median("bytes_per_session")),
        "rss_bytes_per_session_after_reads_median": round(median("bytes_per_session_after_reads")),
        "sim_rss_mib": round(median("sim_rss_kib") / 1024, 1),
        "reads_per_s_median": round(median("first_reads", "reads_per_s")),
        "read_p50_ms_median": round(median("first_reads", "p50_ms"), 1),
        "read_p99_ms_median": round(median("first_reads", "p99_ms"), 1),
        "hesd_cpu_us_per_read_median": round(median("first_reads", "hesd_cpu_us_per_read")),
        "associated_reads_per_s_median": round(median("associated_reads", "reads_per_s")),
        "associated_read_p50_ms_median": round(median("associated_reads", "p50_ms"), 1),
        "associated_read_p99_ms_median": round(median("associated_reads", "p99_ms"), 1),
        "hesd_cpu_us_per_associated_read_median": round(
            median("associated_reads", "hesd_cpu_us_per_read")
        ),
        "hesd_cpu_share_reading_median": round(median("associated_reads", "hesd_cpu_share"), 2),
        "read_failures": sum(
            r[p]["failures"] for r in rounds for p in ("first_reads", "associated_reads")
        ),
        "online_meets_target": median("online_s") <= TARGET_ONLINE_S,
        "rss_meets_target": median("bytes_per_session") <= TARGET_BYTES_PER_SESSION,
    }
    print_results(results)
    write_report(
        args.out,
        "sessions",
        machine=machine(
            nofile_soft_limit=nofile, loadavg_before=load_before, loadavg_after=loadavg()
        ),
        params={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        targets={"online_s": TARGET_ONLINE_S, "rss_bytes_per_session": TARGET_BYTES_PER_SESSION},
        results=results,
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
