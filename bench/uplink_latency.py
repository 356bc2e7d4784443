"""The latency half of bench/uplink.py: meters push to a real ``hesd run``, which forwards to an
MDM receiver on loopback; each push is followed from the moment it was written on the meter's
connection to the moment the MDM stored the last of its readings.

Who pushes (``--load``):

* ``frames``: bench/pushgen.py, one cheap asyncio process: ``--push-meters`` IS 15959 meters of
  hesd-sim's fleet dial in and send real, pre-encoded Data-Notifications at ``--rates`` pushes
  per second in all (each meter every ``meters / rate`` s). It lists every push it wrote, by
  ``(meter, timestamp)``, with the time it wrote it: the *send time* is measured, per push.
* ``sim``: hesd-sim ``--mode dial`` (the realistic one: a meter model per meter), ``rate *
  --push-every`` meters each pushing every ``--push-every`` real seconds (``--push-interval
  900`` at ``--time-scale 900 * rate / meters``). The send time is derived: a push carries the
  meter's clock (the simulated time, no clock faults here) and the simulator's ``sim.ready``
  line gives the simulated and the wall-clock time at one moment, so ``sent = ready_wall +
  (clock - ready_sim) / time_scale``. Its total of pushes sent is its ``sim.stopping`` line's.

The MDM (``--receiver``), in the benchmark's process on its own thread and event loop:

* ``reference``: bench/mdm_receiver.py (bearer token, Idempotency-Key with a digest of the
  records, gunzip, JSON, the records' envelope; the schema check off, records not kept);
* ``cheap``: counts and de-duplicates only (token, key, gunzip, JSON): for when the reference
  receiver is what limits the rate.

Its *store time* is ``time.time()`` when it has accepted a batch. Per round, after ``--warmup``
seconds with every meter online, ``--seconds`` are measured (the *window*); then the load stops,
hesd's sessions close and its outbox drains, and every push is accounted for:

* *sent*: pushes of readings written by the load (frames: listed one by one; sim: its own
  count of pushes, less its connections: a dialling meter's first push is its identification);
* *hesd*: Data-Notifications hesd received (``records.pushes`` of its status: identifications
  included);
* *arrived*: pushes of which the MDM stored readings; *incomplete*: of those, with fewer
  readings than a push holds; *lost*: sent and never arrived (frames: listed; sim: counted);
  *unmatched*: arrived, but no push was sent with that meter and time (frames only);
* latency p50/p99/max over the pushes sent in the window (that arrived whole): store time of the
  push's last reading minus its send time;
* rates over the window: *offered* (asked), *sent*, *hesd* (received), *MDM* (pushes whose last
  reading was stored in the window); CPU of hesd (all threads), of the load and of the
  receiver's thread, as shares of one core; the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import pushgen
from bench.mdm_receiver import Batch, MdmReceiver
from bench.report import loadavg, median_of
from bench.sessions import (
    BIN,
    ENV,
    REPO,
    cpu_seconds,
    free_port,
    hesd_command,
    raise_nofile,
    sim_command,
    status,
    stop,
    wait_ready,
    write_fleet_files,
)
from hesd.ctl import Client

__all__ = ["TARGET_P99_S", "Load", "latency", "tally"]

TARGET_P99_S: Final = 2.0
TOKEN: Final = "bench-mdm-token"  # noqa: S105 - the benchmark's own receiver
Push = tuple[str, str]  # (meter id, timestamp) as the MDM sees them


class CheapReceiver:
    """An MDM that only counts and de-duplicates: the bearer token, the ``Idempotency-Key``
    (a key seen before is answered as a duplicate), gunzip and JSON; no schema, no digest of
    the records, no per-record checks."""

    def __init__(self, token: str, on_batch: Callable[[Batch, list[dict[str, Any]]], None]):
        self._auth = f"Bearer {token}"
        self._on_batch = on_batch
        self._keys: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/api/v1/meters/{kind}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != self._auth:
            return web.json_response({"detail": "wrong credentials"}, status=403)
        key = request.headers.get("Idempotency-Key", "")
        if key in self._keys:
            return web.json_response({"duplicate": True})
        doc = json.loads(await request.read())  # aiohttp inflated the gzip
        records = doc["records"]
        self._keys.add(key)
        kind = request.match_info["kind"]
        batch = Batch(key, kind, doc["hes_id"], len(records), time.time(), doc["sent_at"], "", "")  # type: ignore[arg-type]
        self._on_batch(batch, records)
        return web.json_response({"accepted": len(records), "duplicate": False})


class Arrivals:
    """The receiver on its own thread and event loop (the benchmark's thread blocks on
    processes and hesctl), noting when each push's readings were stored."""

    def __init__(self, cheap: bool = False) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mdm", daemon=True)
        self.thread.start()
        # per push: [readings stored, store time of the last]
        self.pushes: dict[Push, list[float]] = {}
        self.mdm: MdmReceiver | CheapReceiver = (
            CheapReceiver(TOKEN, self._on_batch)
            if cheap
            else MdmReceiver(
                token=TOKEN, validate=False, keep_records=False, on_batch=self._on_batch
            )
        )
        self.url: str = self.call(self.mdm.start())

    def _on_batch(self, batch: Batch, records: list[dict[str, Any]]) -> None:
        if batch.kind != "readings":
            return
        pushes = self.pushes
        at = batch.received_at
        for record in records:
            key = (record["meter_id"], record["timestamp"])
            seen = pushes.get(key)
            if seen is None:
                pushes[key] = [1, at]
            else:
                seen[0] += 1
                seen[1] = at

    def cpu(self) -> float:
        """CPU seconds of the receiver's thread so far."""

        async def thread_time() -> float:
            return time.thread_time()

        return float(self.call(thread_time()))

    def snapshot(self) -> dict[Push, tuple[int, float]]:
        async def copy() -> dict[Push, tuple[int, float]]:
            return {key: (int(n), at) for key, (n, at) in self.pushes.items()}

        result: dict[Push, tuple[int, float]] = self.call(copy())
        return result

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def close(self) -> None:
        self.call(self.mdm.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of ``values`` (sorted)."""
    return values[max(0, math.ceil(q * len(values)) - 1)]


def tally(
    arrived: dict[Push, tuple[int, float]],
    sent: dict[Push, float] | Callable[[Push], float],
    window: tuple[float, float],
) -> dict[str, Any]:
    """Every push accounted for: ``sent`` is either every push the load wrote, with its time
    (frames), or how to tell a push's send time from its timestamp (sim)."""
    start, end = window
    per_push = max((n for n, _ in arrived.values()), default=0)
    listed = isinstance(sent, dict)
    latencies: list[float] = []
    unmatched = incomplete = lost_in_window = sent_in_window = completed = 0
    for key, (readings, stored) in arrived.items():
        at = sent.get(key) if isinstance(sent, dict) else sent(key)
        if readings < per_push:
            incomplete += 1
        if start <= stored < end:
            completed += 1
        if at is None:
            unmatched += 1
        elif start <= at < end and not listed:
            sent_in_window += 1
            if readings == per_push:
                latencies.append(stored - at)
    if isinstance(sent, dict):
        for key, at in sent.items():
            if not start <= at < end:
                continue
            sent_in_window += 1
            got = arrived.get(key)
            if got is None or got[0] < per_push:
                lost_in_window += 1
            else:
                latencies.append(got[1] - at)
    latencies.sort()
    return {
        "readings_per_push": per_push,
        "arrived": len(arrived),
        "incomplete": incomplete,
        "unmatched": unmatched if listed else None,
        "lost": sum(key not in arrived for key in sent) if isinstance(sent, dict) else None,
        "window_sent": sent_in_window,
        "window_lost": lost_in_window if listed else None,
        "window_completed": completed,
        "latencies": latencies,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class Load:
    """What pushes for a round: ``sim`` (hesd-sim, realistic) or ``frames`` (bench/pushgen.py)."""

    mode: str
    rate: float  # pushes per second asked
    meters: int


def start_load(
    args: argparse.Namespace, load: Load, here: Path, port: int, control: int
) -> subprocess.Popen[bytes]:
    if load.mode == "frames":
        with (here / "pushgen.log").open("w") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    str(REPO / "bench" / "pushgen.py"),
                    *("--hes", f"127.0.0.1:{port}", "--meters", str(load.meters)),
                    *("--rate", f"{load.rate:g}", "--out", str(here / "sent.json")),
                ],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
    with (here / "sim.log").open("w") as out:
        return subprocess.Popen(
            sim_command(
                load.meters,
                port,
                here,
                *("--push-interval", "900", "--time-scale", f"{sim_scale(load):g}"),
                *("--start", "2026-01-01T00:00:00Z", "--ramp", str(args.ramp)),
                *("--control", f"127.0.0.1:{control}"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=ENV,
        )


def sim_scale(load: Load) -> float:
    return 900 * load.rate / load.meters  # each meter every meters/rate real seconds


def sim_line(log: Path, event: str) -> dict[str, Any]:
    for line in log.read_text().splitlines():
        if f'"{event}"' in line:
            found: dict[str, Any] = json.loads(line)
            return found
    raise SystemExit(f"bench: no {event} in {log}")


def _epoch(text: str) -> float:
    return float(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def _tell(process: subprocess.Popen[bytes], line: bytes) -> None:
    assert process.stdin is not None
    process.stdin.write(line)
    process.stdin.flush()


def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            print(f"bench: {what}: not within {timeout} s", file=sys.stderr)
            return False
        time.sleep(0.1)
    return True


def latency_round(args: argparse.Namespace, work: Path, index: int, load: Load) -> dict[str, Any]:
    here = work / f"{load.mode[0]}{load.rate:g}-{index}"  # short: hesd's socket path is in it
    here.mkdir()
    port = free_port()
    control = free_port()
    arrivals = Arrivals(cheap=args.receiver == "cheap")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        config = here / "hesd.toml"
        config.write_text(
            f'[daemon]\nstate_dir = "state"\nsecrets_file = "{work / "secrets.toml"}"\n'
            "drain_timeout = 10.0\n"
            '[log]\nformat = "json"\nlevel = "info"\n'
            f'[vendors]\ndir = "{REPO / "conf" / "vendors"}"\n'
            f'[tcp]\nlisten = ["127.0.0.1:{port}"]\n'
            f'[uplink]\nurl = "{arrivals.url}"\nhes_id = "bench"\ntoken = "mdm"\n'
            f"batch_delay = {args.batch_delay}\ntimeout = 10.0\n"
            "backoff_initial = 0.1\nbackoff_max = 1.0\n"
        )
        client = Client(here / "state" / "hesd.sock", timeout=60)
        hesd_log = here / "hesd.log"
        with hesd_log.open("w") as out:
            daemon = subprocess.Popen(
                [*hesd_command(args.profile, index), "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        processes.append(daemon)
        wait_ready(client, daemon, hesd_log)
        hesctl = [str(BIN / "hesctl"), "--socket", str(client.path)]
        inventory = work / "sim.csv"  # the largest fleet's: the others are its first meters
        subprocess.run(
            [*hesctl, "meters", "import", str(inventory)], check=True, capture_output=True, env=ENV
        )
        pusher = start_load(args, load, here, port, control)
        processes.append(pusher)
        deadline = time.monotonic() + args.online_timeout
        while status(client)["meters"]["online"] < load.meters:
            if pusher.poll() is not None or daemon.poll() is not None:
                raise SystemExit(f"bench: a process exited early; logs in {here}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: the fleet was not online in {args.online_timeout} s")
            time.sleep(0.2)
        if load.mode == "frames":
            _tell(pusher, b"go\n")
        time.sleep(args.warmup)  # the warm-up itself

        def sim_stats() -> dict[str, Any]:
            url = f"http://127.0.0.1:{control}/api/v1/stats"
            with urllib.request.urlopen(url) as answer:
                stats: dict[str, Any] = json.loads(answer.read())
            return stats

        def sim_pushes() -> int:
            """Pushes of readings the simulator sent: a meter's first push on each connection
            is its identification, which hesd takes as such (no readings)."""
            stats = sim_stats()
            return int(stats["pushes"]) - int(stats["connections"])

        info = status(client)
        start = time.time()
        before = {
            "sim": sim_pushes() if load.mode == "sim" else 0,
            "hesd": info["records"]["pushes"],
            "commits": info["store"]["commits"],
            "hesd_cpu": cpu_seconds(daemon.pid),
            "load_cpu": cpu_seconds(pusher.pid),
            "receiver_cpu": arrivals.cpu(),
        }
        load_before = loadavg()
        time.sleep(args.seconds)  # the measured window itself
        info = status(client)
        end = time.time()
        after = {
            "sim": sim_pushes() if load.mode == "sim" else 0,
            "hesd": info["records"]["pushes"],
            "commits": info["store"]["commits"],
            "hesd_cpu": cpu_seconds(daemon.pid),
            "load_cpu": cpu_seconds(pusher.pid),
            "receiver_cpu": arrivals.cpu(),
        }
        load_after = loadavg()
        elapsed = end - start
        if load.mode == "frames":
            _tell(pusher, b"stop\n")
            pusher.wait(60)
            report = json.loads((here / "sent.json").read_text())
            sent, ambiguous = pushgen.sent_pushes(report)
            sent_total: int = report["sent"]
        else:
            connections = int(sim_stats()["connections"])  # identifications
            stop([pusher])
            ready = sim_line(here / "sim.log", "sim.ready")
            ready_wall, ready_sim = _epoch(ready["timestamp"]), _epoch(ready["sim_time"])
            scale = sim_scale(load)
            sent_total = int(sim_line(here / "sim.log", "sim.stopping")["pushes"]) - connections
            ambiguous = 0

            def sent_at(key: Push) -> float:
                return ready_wall + (_epoch(key[1]) - ready_sim) / scale

        closed = wait_until(
            "hesd's sessions closed",
            lambda: status(client)["meters"]["online"] == 0,
            args.drain_timeout,
        )
        drained = closed and wait_until(
            "hesd's outbox drained",
            lambda: (
                (s := status(client))["outbox"]["depth"] == 0 and s["store"]["pending_writes"] == 0
            ),
            args.drain_timeout,
        )
        final = status(client)
        arrived = arrivals.snapshot()
        counted = tally(arrived, sent if load.mode == "frames" else sent_at, (start, end))
        latencies = counted.pop("latencies")
        if not latencies:
            raise SystemExit(f"bench: no push sent in the window arrived; logs in {here}")
        return {
            "seconds": elapsed,
            "offered_per_s": load.rate,
            "sent_per_s": (
                counted["window_sent"] if load.mode == "frames" else after["sim"] - before["sim"]
            )
            / elapsed,
            "hesd_per_s": (after["hesd"] - before["hesd"]) / elapsed,
            "mdm_per_s": counted["window_completed"] / elapsed,
            "p50_s": percentile(latencies, 0.50),
            "p99_s": percentile(latencies, 0.99),
            "max_s": latencies[-1],
            "hesd_cpu_share": (after["hesd_cpu"] - before["hesd_cpu"]) / elapsed,  # of a core
            "load_cpu_share": (after["load_cpu"] - before["load_cpu"]) / elapsed,
            "receiver_cpu_share": (after["receiver_cpu"] - before["receiver_cpu"]) / elapsed,
            "hesd_commits_per_s": (after["commits"] - before["commits"]) / elapsed,
            "loadavg_1min": [float(load_before[0]), float(load_after[0])] if load_before else [],
            "pushes": {
                "sent": sent_total,
                "hesd": final["records"]["pushes"],
                "ambiguous": ambiguous,  # frames: a meter twice in a hundredth of a second
                **counted,
                "lost": sent_total - counted["arrived"]
                if counted["lost"] is None
                else counted["lost"],
            },
            "normalise_errors": final["records"]["normalise_errors"],
            "outbox_refused": final["outbox"]["refused"],
            "drained": drained,
        }
    finally:
        for process in processes:
            if process.stdin is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # the generator's end of input: it stops
        codes = stop(processes)
        arrivals.close()
        if any(codes):
            print(f"bench: exit statuses {codes}; logs in {here}", file=sys.stderr)


MEDIAN_KEYS: Final = (
    "offered_per_s",
    "sent_per_s",
    "hesd_per_s",
    "mdm_per_s",
    "p50_s",
    "p99_s",
    "max_s",
    "hesd_cpu_share",
    "load_cpu_share",
    "receiver_cpu_share",
    "hesd_commits_per_s",
)


def latency(args: argparse.Namespace) -> dict[str, Any]:
    loads = []
    for mode in ("frames", "sim") if args.load == "both" else (args.load,):
        for rate in args.rates:
            meters = args.push_meters if mode == "frames" else round(rate * args.push_every)
            loads.append(Load(mode, rate, meters))
    raise_nofile(max(load.meters for load in loads) + 1000)
    work = Path(tempfile.mkdtemp(prefix="hbu-", dir=args.dir))
    cases: dict[str, Any] = {}
    try:
        write_fleet_files(max(load.meters for load in loads), work)
        (work / "secrets.toml").write_text(
            (work / "sim.toml").read_text() + f'\n[tokens]\nmdm = "{TOKEN}"\n'
        )
        (work / "secrets.toml").chmod(0o600)
        for load in loads:
            rounds = []
            for index in range(1, args.repeat + 1):
                r = latency_round(args, work, index, load)
                rounds.append(r)
                p = r["pushes"]
                print(
                    f"{load.mode} {load.rate:,.0f}/s ({load.meters} meters) round {index}: "
                    f"sent {r['sent_per_s']:,.0f}/s, at the MDM {r['mdm_per_s']:,.0f}/s, "
                    f"p50 {r['p50_s'] * 1000:,.0f} ms, p99 {r['p99_s'] * 1000:,.0f} ms; "
                    f"CPU hesd {r['hesd_cpu_share']:.0%}, {load.mode} {r['load_cpu_share']:.0%}, "
                    f"receiver {r['receiver_cpu_share']:.0%}; pushes sent {p['sent']}, "
                    f"arrived {p['arrived']}, lost {p['lost']}, incomplete {p['incomplete']}, "
                    f"unmatched {p['unmatched']}; load average {r['loadavg_1min']}",
                    flush=True,
                )
            cases[f"{load.mode} {load.rate:g}/s"] = {
                "mode": load.mode,
                "rate": load.rate,
                "meters": load.meters,
                "receiver": args.receiver,
                "median": median_of([{k: r[k] for k in MEDIAN_KEYS} for r in rounds]),
                "lost": sum(r["pushes"]["lost"] for r in rounds),
                "meets_target": None,
                "rounds": rounds,
            }
            case = cases[f"{load.mode} {load.rate:g}/s"]
            case["meets_target"] = case["median"]["p99_s"] <= TARGET_P99_S and not case["lost"]
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return cases
