"""The bulk scheduler at fleet scale: a scheduled read of 10,000 meters, within its budgets.

Runs a real ``hesd run`` and a real ``hesd-sim --meters N --mode dial`` on the same machine
(bench/harness.py). In each of ``--repeat`` rounds (a fresh hesd, store and simulator):

* hesd runs on a generated hesd.toml: state in a temporary directory, ``[tcp]`` on a free
  loopback port, the simulator's keys as ``secrets_file``, JSON logs at level info,
  ``limits.max_requests`` ``--max-requests`` (2,000, hesd.toml's), ``scheduler.reserved_requests``
  ``--reserved`` (64) and ``scheduler.max_in_flight`` ``--max-in-flight`` (256: hesd.toml's),
  and two schedules, ``enabled = false`` (no cron run: the benchmark starts
  them with ``POST /api/v1/schedules/NAME/run``, what ``hesctl schedule run`` sends), both
  reading the instantaneous profile (IS 15959: its scaler profile and its one row, 26 readings a
  meter) into the outbox:

  - ``fast``: ``jitter = "none"``: every meter as soon as the budgets let it start; *meters/s*
    (succeeded / (finished - started)) is what hesd can do;
  - ``spread``: ``jitter = "hash"`` over a window of ``--window`` seconds (120): slots over its
    first 90 %; it must finish within the window;

* the inventory is imported, the simulator started (every meter dials at once) and the benchmark
  waits until hesd counts all N online;
* ``fast`` runs, then ``spread`` (so ``fast`` includes every meter's association, and ``spread``
  reads on open associations); each is followed with ``GET /api/v1/schedules/NAME`` every
  0.2 s until it ends. From its run record: meters/s, the success ratio, missed meters, the most
  scheduled requests in flight at once against the scheduled share (max_in_flight, within
  max_requests - reserved),
  the most on one link against what a link allows (1: a dialling meter is a link of its own),
  ``link_overruns`` (times a link carried more than it allows: must be 0), and the run's
  duration against its window; and hesd's CPU time during the run.

    .venv/bin/python bench/bulk.py [--meters 10000] [--window 120] [--repeat 3]

Prints a table of the medians and writes bench/results/bulk.json (every round as well).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    Round,
    cpu_seconds,
    free_port,
    hesd_command,
    hesd_toml,
    import_inventory,
    raise_nofile,
    sim_command,
    status,
    work_directory,
    write_fleet_files,
)
from bench.report import loadavg, machine, print_results, write_report
from hesd.ctl import Client

LINK_BUDGET: Final = 1  # a dialling (tcp-in) meter is a link of its own
FAST_WINDOW: Final = 900.0


def schedules(window: float) -> str:
    read = 'read = { profile = "instantaneous" }\nmax_backfill = 3600.0\nenabled = false\n'
    return (
        f'[schedules.fast]\ncron = "@yearly"\n{read}jitter = "none"\nwindow = {FAST_WINDOW}\n'
        f'[schedules.spread]\ncron = "@yearly"\n{read}jitter = "hash"\nwindow = {window}\n'
    )


def run_schedule(
    client: Client, name: str, pids: tuple[int, int], timeout: float
) -> dict[str, Any]:
    """Start a run of ``name`` and follow it to its end: its record, and the CPU seconds hesd
    and the simulator (``pids``) spent meanwhile."""
    cpu = [cpu_seconds(pid) for pid in pids]
    code, _, body = client.request("POST", f"/api/v1/schedules/{name}/run")
    if code != 202:
        raise SystemExit(f"bench: POST .../{name}/run answered {code}: {body[:300]!r}")
    started = json.loads(body)["current_run"]["started_at"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        code, _, body = client.request("GET", f"/api/v1/schedules/{name}?runs=1")
        info = json.loads(body)
        last = info["last_run"]
        if info["current_run"] is None and last is not None and last["started_at"] == started:
            hesd, sim = (cpu_seconds(pid) - before for pid, before in zip(pids, cpu, strict=True))
            return {"run": last, "hesd_cpu_s": hesd, "sim_cpu_s": sim}
    raise SystemExit(f"bench: the run of {name} did not end within {timeout:.0f} s")


def measures(result: dict[str, Any], window: float, scheduled_max: int) -> dict[str, Any]:
    run = result["run"]
    seconds = run["duration_seconds"]
    return {
        "selected": run["selected"],
        "succeeded": run["succeeded"],
        "failed": run["failed"],
        "skipped": run["skipped"],
        "missed": run["missed"],
        "readings": run["readings"],
        "seconds": seconds,
        "window_s": window,
        "within_window": seconds <= window,
        "meters_per_s": run["succeeded"] / seconds if seconds else 0.0,
        "success_ratio": run["success_ratio"],
        "max_in_flight": run["max_in_flight"],
        "scheduled_max": scheduled_max,
        "max_link_in_flight": run["max_link_in_flight"],
        "link_budget": LINK_BUDGET,
        "link_overruns": run["link_overruns"],
        "budget_kept": run["max_in_flight"] <= scheduled_max
        and run["max_link_in_flight"] <= LINK_BUDGET
        and run["link_overruns"] == 0,
        "hesd_cpu_s": result["hesd_cpu_s"],
        "hesd_cpu_us_per_meter": result["hesd_cpu_s"] / max(1, run["succeeded"]) * 1e6,
        "sim_cpu_s": result["sim_cpu_s"],
        # of the machine's cores: hesd and the simulator share them (and whatever else runs)
        "cpu_busy_share": (result["hesd_cpu_s"] + result["sim_cpu_s"])
        / (seconds or 1)
        / (os.cpu_count() or 1),
    }


def run_round(args: argparse.Namespace, work: Path, index: int) -> dict[str, Any]:
    here = work / f"round-{index}"
    here.mkdir()
    port = free_port()
    config = hesd_toml(
        work / "sim.toml",
        port,
        f"[limits]\nmax_requests = {args.max_requests}\n",
        f"[scheduler]\nreserved_requests = {args.reserved}\nmax_in_flight = {args.max_in_flight}\n",
        schedules(args.window),
    )
    with Round(here) as round_:
        daemon, client = round_.hesd(config, hesd_command(args.profile, index))
        import_inventory(client, work / "sim.csv")
        sim = round_.sim(
            sim_command(args.meters, port, here, "--push-interval", str(args.push_interval))
        )
        online_s, _ = round_.wait_online(client, args.meters, args.online_timeout)
        scheduled_max = client.json("GET", "/api/v1/schedules")["budget"]["scheduled_max"]
        pids = (daemon.pid, sim.pid)
        fast = run_schedule(client, "fast", pids, FAST_WINDOW + 120)
        spread = run_schedule(client, "spread", pids, args.window + 120)
        return {
            "online_s": online_s,
            "fast": measures(fast, FAST_WINDOW, scheduled_max),
            "spread": measures(spread, args.window, scheduled_max),
            "outbox_depth": status(client)["outbox"]["depth"],
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=120.0, help="the spread run's, seconds")
    parser.add_argument("--max-requests", type=int, default=2000, help="limits.max_requests")
    parser.add_argument("--reserved", type=int, default=64, help="scheduler.reserved_requests")
    parser.add_argument("--max-in-flight", type=int, default=256, help="scheduler.max_in_flight")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--online-timeout", type=float, default=300.0)
    parser.add_argument(
        "--push-interval",
        type=float,
        default=0.0,
        help="the meters' pushes, seconds apart (0: none; see docs/benchmarks.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    parser.add_argument("--profile", type=Path, help="run hesd under cProfile: DIR/*.prof")
    parser.add_argument("--out", default="bench/results/bulk.json")
    args = parser.parse_args()
    nofile = raise_nofile(args.meters + 1000)
    load_before = loadavg()
    rounds = []
    with work_directory("hesd-bench-bulk-", keep=args.keep) as work:
        write_fleet_files(args.meters, work)
        for index in range(1, args.repeat + 1):
            r = run_round(args, work, index)
            rounds.append(r)
            print(
                f"round {index}: fast {r['fast']['meters_per_s']:,.0f} meters/s "
                f"({r['fast']['seconds']:.1f} s), spread {r['spread']['seconds']:.1f} s of "
                f"{args.window:g}, ratios {r['fast']['success_ratio']} / "
                f"{r['spread']['success_ratio']}, in flight {r['fast']['max_in_flight']} of "
                f"{r['fast']['scheduled_max']}",
                flush=True,
            )

    def median(run: str, key: str) -> float:
        return float(statistics.median(r[run][key] for r in rounds))

    results: dict[str, Any] = {"meters": args.meters, "window_s": args.window}
    for run in ("fast", "spread"):
        results |= {
            f"{run}_meters_per_s_median": round(median(run, "meters_per_s")),
            f"{run}_seconds_median": round(median(run, "seconds"), 2),
            f"{run}_success_ratio_min": min(r[run]["success_ratio"] or 0.0 for r in rounds),
            f"{run}_missed_total": sum(r[run]["missed"] for r in rounds),
            f"{run}_max_in_flight_max": max(r[run]["max_in_flight"] for r in rounds),
            f"{run}_max_link_in_flight_max": max(r[run]["max_link_in_flight"] for r in rounds),
            f"{run}_link_overruns_total": sum(r[run]["link_overruns"] for r in rounds),
            f"{run}_hesd_cpu_us_per_meter_median": round(median(run, "hesd_cpu_us_per_meter")),
            f"{run}_sim_cpu_s_median": round(median(run, "sim_cpu_s"), 1),
            f"{run}_cpu_busy_share_median": round(median(run, "cpu_busy_share"), 2),
        }
    results |= {
        "scheduled_max": rounds[0]["fast"]["scheduled_max"],
        "link_budget": LINK_BUDGET,
        "budget_kept": all(r[run]["budget_kept"] for r in rounds for run in ("fast", "spread")),
        "spread_within_window": all(r["spread"]["within_window"] for r in rounds),
    }
    print_results(results)
    write_report(
        args.out,
        "bulk",
        machine=machine(
            nofile_soft_limit=nofile, loadavg_before=load_before, loadavg_after=loadavg()
        ),
        params={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        results=results,
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
