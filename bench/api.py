"""The API's cost per call on the unix socket and on TCP with TLS (keys, allowlist, audit).

Runs a real ``hesd run`` with ``api.listen`` on a loopback port (TLS with a CA made for the run by
tests/pki.py, one client with a key) and, in each of ``--repeat`` rounds (a fresh hesd each),
calls ``GET /api/v1/vendors`` (no database read: what is measured is the HTTP path, the guard and
the audit) for ``--seconds`` with ``--concurrency`` calls in flight, in three cases:

* ``socket``: the unix socket, keep-alive connections (hesctl's path, audited as ``socket``);
* ``tls keep-alive``: TCP with TLS, keep-alive connections, ``Authorization: Bearer``: the key
  lookup, allowlist and scope check and the audit row on every call;
* ``tls new connection``: TCP with TLS, one connection (and handshake) per call.

For each: calls per second, latency p50/p99, and hesd's CPU time per call (``/proc/PID/stat``).
Every call is audited (the ``api.call`` log line, at level warning here so that the log is not
what is measured, and the ``api_audit`` row); at the end of each round the audit row count is
checked against the calls made. The client runs on the same machine.

    .venv/bin/python bench/api.py [--seconds 5] [--concurrency 16] [--repeat 3]

Prints a table of the medians and writes bench/results/api.json (every round as well).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BIN, ENV, REPO, cpu_seconds, percentile, status, wait_ready
from bench.report import write_report
from hesd.ctl import Client
from tests.pki import make_pki

KEY: Final = "bench-" + "5a17" * 10
PATH: Final = "/api/v1/vendors"
CASES: Final = ("socket", "tls keep-alive", "tls new connection")


def start_hesd(work: Path) -> tuple[subprocess.Popen[bytes], Path, str]:
    pki = make_pki(work / "pki")
    shutil.copytree(REPO / "conf" / "vendors", work / "vendors")
    secrets = work / "secrets.toml"
    secrets.write_text(f'[api_keys]\nbench = "{KEY}"\n')
    secrets.chmod(0o600)
    config = work / "hesd.toml"
    config.write_text(
        f'[daemon]\nstate_dir = "state"\nsecrets_file = "secrets.toml"\n'
        f'[log]\nformat = "json"\nlevel = "warning"\n[vendors]\ndir = "vendors"\n'
        f'[api]\nlisten = "127.0.0.1:0"\ntls_cert_file = "{pki.server_cert}"\n'
        f'tls_key_file = "{pki.server_key}"\n'
        '[api.clients.bench]\nscopes = ["read"]\nallow = ["127.0.0.1"]\n'
    )
    log = work / "hesd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "hesd"), "run", "--config", str(config)], stderr=out, env=ENV, cwd=work
        )
    client = Client(work / "state" / "hesd.sock")
    wait_ready(client, proc, log)
    return proc, client.path, status(client)["api"]["listen"]


@dataclass(frozen=True)
class Target:
    sock: Path  # the unix socket
    url: str  # the TCP listener
    ca: Path
    pid: int  # hesd's


async def run_case(case: str, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    sock, url, ca, pid = target.sock, target.url, target.ca, target.pid
    seconds, concurrency = args.seconds, args.concurrency
    context = ssl.create_default_context(cafile=str(ca))
    connector: aiohttp.BaseConnector
    if case == "socket":
        connector = aiohttp.UnixConnector(path=str(sock), limit=concurrency)
        base, headers = "http://hesd", {}
    else:
        connector = aiohttp.TCPConnector(
            ssl=context, limit=concurrency, force_close=case == "tls new connection"
        )
        base, headers = url, {"Authorization": f"Bearer {KEY}"}
    latencies: list[float] = []
    failures = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(deadline: float) -> None:
            nonlocal failures
            while time.monotonic() < deadline:
                started = time.perf_counter()
                async with session.get(base + PATH, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append(time.perf_counter() - started)

        await worker(time.monotonic() + 0.5)  # warm-up: connections, caches
        latencies.clear()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.gather(*(worker(t0 + seconds) for _ in range(concurrency)))
        elapsed, cpu = time.monotonic() - t0, cpu_seconds(pid) - cpu0
    calls = len(latencies)
    return {
        "calls": calls,
        "failures": failures,
        "calls_per_s": calls / elapsed,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "hesd_cpu_us_per_call": 1e6 * cpu / calls,
    }


def run_round(args: argparse.Namespace, index: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hesd-bench-api-") as tmp:
        work = Path(tmp)
        proc, sock, url = start_hesd(work)
        try:
            target = Target(sock, url, work / "pki" / "ca.pem", proc.pid)
            results = {case: asyncio.run(run_case(case, target, args)) for case in CASES}
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        with sqlite3.connect(work / "state" / "hesd.db") as db:
            rows = db.execute("SELECT count(*) FROM api_audit").fetchone()[0]
        made = sum(r["calls"] for r in results.values())
        # every measured call is audited (plus warm-up calls and the status probes)
        assert rows >= made, f"round {index}: {rows} audit rows for {made} calls"
        print(f"round {index}: {made} calls measured, {rows} audit rows, hesd exit {code}")
        return {"cases": results, "audit_rows": rows, "hesd_exit": code}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "api.json")
    args = parser.parse_args()
    rounds = [run_round(args, i) for i in range(args.repeat)]
    medians = {
        case: {
            key: statistics.median(r["cases"][case][key] for r in rounds)
            for key in ("calls_per_s", "p50_ms", "p99_ms", "hesd_cpu_us_per_call")
        }
        for case in CASES
    }
    print()
    print(f"GET {PATH}, {args.concurrency} in flight, {args.seconds:g} s, median of {args.repeat}")
    print(f"{'case':<22} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'hesd CPU µs/call':>17}")
    for case, m in medians.items():
        print(
            f"{case:<22} {m['calls_per_s']:>9,.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} "
            f"{m['hesd_cpu_us_per_call']:>17,.0f}"
        )
    write_report(
        args.out,
        "api",
        args={k: str(v) for k, v in vars(args).items()},
        medians=medians,
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
