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
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import loadavg, machine, print_results, write_report
from hesd.ctl import Client, Unreachable

REPO: Final = Path(__file__).resolve().parent.parent
BIN: Final = Path(sys.executable).parent
ENV: Final = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"bench: the hard limit of open files is {hard} and hesd needs {needed}: raise it "
            "(ulimit -Hn as root, or LimitNOFILE= under systemd)"
        )
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sim_command(meters: int, port: int, work: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "hesd-sim"),
        *("--meters", str(meters), "--mode", "dial", "--hes", f"127.0.0.1:{port}"),
        *("--seed", "1", "--stats-interval", "0", "--log-format", "json"),
        *("--inventory-out", str(work / "sim.csv"), "--secrets-out", str(work / "sim.toml")),
        *extra,
    ]


def hesd_command(profile: Path | None, index: int) -> list[str]:
    if profile is None:
        return [str(BIN / "hesd")]
    profile.mkdir(parents=True, exist_ok=True)
    out = profile / f"hesd-round-{index}.prof"
    return [sys.executable, "-m", "cProfile", "-o", str(out), str(BIN / "hesd")]


def write_fleet_files(meters: int, work: Path) -> None:
    """The inventory and keys hesd needs, from a short simulator run that reaches no hesd."""
    with (work / "sim-files.log").open("w") as log:
        subprocess.run(
            sim_command(meters, free_port(), work, "--duration", "0.2", "--ramp", "60"),
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=ENV,
            check=True,
            timeout=120,
        )


def stop(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    codes = []
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            codes.append(process.wait(timeout=60))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


# -- hesd's API ---------------------------------------------------------------------------------


def status(client: Client) -> dict[str, Any]:
    code, _, body = client.request("GET", "/api/v1/status")
    if code != 200:
        raise RuntimeError(f"GET /api/v1/status answered {code}: {body[:200]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


def wait_ready(client: Client, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"bench: hesd exited {daemon.returncode}:\n{log.read_text()}")
        try:
            if status(client)["state"] == "running":
                return
        except Unreachable:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: hesd did not start within 30 s:\n{log.read_text()}")


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- one round ----------------------------------------------------------------------------------


def run_round(args: argparse.Namespace, work: Path, index: int) -> dict[str, Any]:
    here = work / f"round-{index}"
    here.mkdir()
    port = free_port()
    config = here / "hesd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "state"\nsecrets_file = "{work / "sim.toml"}"\n'
        "drain_timeout = 10.0\n"
        '[log]\nformat = "json"\nlevel = "info"\n'
        f'[vendors]\ndir = "{REPO / "conf" / "vendors"}"\n'
        f'[tcp]\nlisten = ["127.0.0.1:{port}"]\n'
        f"[limits]\nmax_requests = {max(2000, args.concurrency)}\n"
    )
    client = Client(here / "state" / "hesd.sock", timeout=60)
    hesd_log = here / "hesd.log"
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with hesd_log.open("w") as out:
            daemon = subprocess.Popen(
                [*hesd_command(args.profile, index), "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        processes.append(daemon)
        wait_ready(client, daemon, hesd_log)
        time.sleep(args.settle)
        empty_kib = settled_rss_kib(daemon.pid, args.settle)
        started = time.perf_counter()
        subprocess.run(
            [
                str(BIN / "hesctl"),
                "--socket",
                str(client.path),
                "meters",
                "import",
                str(work / "sim.csv"),
            ],
            check=True,
            capture_output=True,
            env=ENV,
        )
        import_s = time.perf_counter() - started

        hesd_cpu = cpu_seconds(daemon.pid)
        with (here / "sim.log").open("w") as out:
            started = time.monotonic()
            sim = subprocess.Popen(
                sim_command(args.meters, port, here), stdout=subprocess.DEVNULL, stderr=out, env=ENV
            )
        processes.append(sim)
        half_s = None
        while True:
            elapsed = time.monotonic() - started
            if sim.poll() is not None or daemon.poll() is not None:
                raise SystemExit(f"bench: a process exited early; logs in {here}")
            online = status(client)["meters"]["online"]
            if half_s is None and online >= args.meters / 2:
                half_s = elapsed
            if online >= args.meters:
                break
            if elapsed > args.online_timeout:
                raise SystemExit(f"bench: {online} of {args.meters} online after {elapsed:.0f} s")
            time.sleep(0.1)
        online_s = elapsed
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
    finally:
        codes = stop(processes)
        if any(codes):
            print(f"bench: exit statuses {codes}; logs in {here}", file=sys.stderr)


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
    work = Path(tempfile.mkdtemp(prefix="hesd-bench-"))
    rounds = []
    try:
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
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

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
