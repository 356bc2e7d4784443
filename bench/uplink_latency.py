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
import contextlib
import dataclasses
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import uvloop
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import pushgen
from bench.harness import (
    ENV,
    MDM_TOKEN,
    REPO,
    LoopThread,
    Round,
    cpu_seconds,
    epoch,
    free_port,
    hesd_command,
    hesd_toml,
    import_inventory,
    log_lines,
    mdm_secrets,
    raise_nofile,
    sim_api,
    sim_command,
    status,
    stop,
    uplink_toml,
    work_directory,
    write_fleet_files,
)
from bench.mdm_receiver import Batch, MdmReceiver
from bench.report import loadavg, median_of

__all__ = ["TARGET_P99_S", "Load", "latency", "tally"]

TARGET_P99_S: Final = 2.0
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
        self.thread = LoopThread(uvloop.new_event_loop(), timeout=60)
        self.call = self.thread.call
        # per push: [readings stored, store time of the last]
        self.pushes: dict[Push, list[float]] = {}
        self.mdm: MdmReceiver | CheapReceiver = (
            CheapReceiver(MDM_TOKEN, self._on_batch)
            if cheap
            else MdmReceiver(
                token=MDM_TOKEN, validate=False, keep_records=False, on_batch=self._on_batch
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

    def close(self) -> None:
        self.call(self.mdm.stop())
        self.thread.close()


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
    args: argparse.Namespace, load: Load, fleet: Round, port: int, control: int
) -> subprocess.Popen[bytes]:
    here = fleet.here
    if load.mode == "frames":
        with (here / "pushgen.log").open("w") as log:
            return fleet.add(
                subprocess.Popen(
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
            )
    return fleet.sim(
        sim_command(
            load.meters,
            port,
            here,
            *("--push-interval", "900", "--time-scale", f"{sim_scale(load):g}"),
            *("--start", "2026-01-01T00:00:00Z", "--ramp", str(args.ramp)),
            *("--control", f"127.0.0.1:{control}"),
        )
    )


def sim_scale(load: Load) -> float:
    return 900 * load.rate / load.meters  # each meter every meters/rate real seconds


def sim_line(log: Path, event: str) -> dict[str, Any]:
    """The simulator's first log line ``event``."""
    for line in log_lines(log, event):
        return line
    raise SystemExit(f"bench: no {event} in {log}")


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
    with (
        contextlib.closing(Arrivals(cheap=args.receiver == "cheap")) as arrivals,
        Round(here) as fleet,
    ):
        config = hesd_toml(
            work / "secrets.toml",
            port,
            uplink_toml(
                arrivals.url,
                args.batch_delay,
                batch_size=args.uplink_batch_size,
                lanes=args.uplink_lanes,
            ),
        )
        daemon, client = fleet.hesd(config, hesd_command(args.profile, index))
        # the largest fleet's inventory: the others are its first meters
        import_inventory(client, work / "sim.csv")
        pusher = start_load(args, load, fleet, port, control)
        fleet.wait_online(client, load.meters, args.online_timeout, every=0.2)
        if load.mode == "frames":
            _tell(pusher, b"go\n")
        time.sleep(args.warmup)  # the warm-up itself

        def sim_pushes() -> int:
            """Pushes of readings the simulator sent: a meter's first push on each connection
            is its identification, which hesd takes as such (no readings)."""
            stats = sim_api(control, "/stats")
            return int(stats["pushes"]) - int(stats["connections"])

        def sample() -> dict[str, Any]:
            """The counters the window is measured by, now."""
            info = status(client)
            return {
                "time": time.time(),
                "sim": sim_pushes() if load.mode == "sim" else 0,
                "hesd": info["records"]["pushes"],
                "commits": info["store"]["commits"],
                "hesd_cpu": cpu_seconds(daemon.pid),
                "load_cpu": cpu_seconds(pusher.pid),
                "receiver_cpu": arrivals.cpu(),
                "loadavg": loadavg(),
            }

        before = sample()
        time.sleep(args.seconds)  # the measured window itself
        after = sample()
        start, end = before["time"], after["time"]
        elapsed = end - start
        if load.mode == "frames":
            _tell(pusher, b"stop\n")
            pusher.wait(60)
            report = json.loads((here / "sent.json").read_text())
            sent, ambiguous = pushgen.sent_pushes(report)
            sent_total: int = report["sent"]
        else:
            connections = int(sim_api(control, "/stats")["connections"])  # identifications
            stop([pusher])
            ready = sim_line(here / "sim.log", "sim.ready")
            ready_wall, ready_sim = epoch(ready["timestamp"]), epoch(ready["sim_time"])
            scale = sim_scale(load)
            sent_total = int(sim_line(here / "sim.log", "sim.stopping")["pushes"]) - connections
            ambiguous = 0

            def sent_at(key: Push) -> float:
                return ready_wall + (epoch(key[1]) - ready_sim) / scale

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
            "loadavg_1min": (
                [float(before["loadavg"][0]), float(after["loadavg"][0])]
                if before["loadavg"]
                else []
            ),
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
    cases: dict[str, Any] = {}
    with work_directory("hbu-", keep=args.keep, parent=args.dir) as work:
        write_fleet_files(max(load.meters for load in loads), work)
        mdm_secrets(work)
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
    return cases
