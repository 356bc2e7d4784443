"""Alerts: tamper → MDM latency through a real hesd, for the alert and for the logged event.

A real ``hesd run`` (generated hesd.toml: ``[tcp]`` on a free loopback port, ``[uplink]`` to the
reference MDM receiver with hesd.toml's ``batch_delay`` unless ``--batch-delay``, ``[alerts]``
as hesd.toml says unless ``--coalesce``) and a real ``hesd-sim --mode dial`` fleet of
``--meters`` IS 15959 meters (no periodic pushes, time at its real pace) with its control API.
Once every meter is online, ``--alarms`` tampers are logged through the control API at
``--rate`` per second, meter after meter (so with 200 alarms and 100 meters, each meter has two,
``meters / rate`` seconds apart), each of a random tamper kind; each meter pushes its alert at
once. The receiver runs in this process, on its own thread, and notes when each batch arrived.

hesd's log gives how long each event-log read took (``alerts.read``: from the start of the read,
after ``alerts.coalesce``, to its records committed), *read*.

*Alert latency* = when the receiver stored the batch holding the alarm's event with source
``alert``, minus when the benchmark sent the alarm's ``POST .../events`` (the simulator logs
the event and pushes while it answers). *Log latency*: the same for the event read from the
meter's log (source ``pull``) whose ``alert_id`` is that alert's ``event_id``: it adds
``alerts.coalesce``, the event-log read (one request: association, the log's buffer by range)
and another trip through the outbox. A meter's k-th alarm of a kind is its k-th alert record of
that kind (the uplink keeps a meter's records in order). Both cover the alert's encoding and
TCP, hesd decoding it, committing it to the outbox (fsync), the batch filling or
``batch_delay``, sealing (a commit), the POST and the receiver parsing the body.

    .venv/bin/python bench/alerts.py [--meters 100] [--alarms 200] [--rate 10] [--repeat 3]

Prints a table of each round and the medians, and writes bench/results/alerts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Final

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    MDM_TOKEN,
    LoopThread,
    Round,
    cpu_seconds,
    free_port,
    hesd_toml,
    import_inventory,
    log_lines,
    mdm_secrets,
    percentile,
    sim_api,
    sim_command,
    status,
    uplink_toml,
    work_directory,
    write_fleet_files,
)
from bench.mdm_receiver import Batch, MdmReceiver
from bench.report import loadavg, machine, median_of, write_report
from hesd.config import load_config
from hesd.sim.events import TAMPER_KINDS

TARGET_P99_S: Final = 5.0  # the mission: tamper alerts reach the MDM within seconds
KINDS: Final = sorted(TAMPER_KINDS)


class Arrivals:
    """The reference receiver on its own thread and event loop, noting when events arrived."""

    def __init__(self) -> None:
        self.thread = LoopThread(asyncio.new_event_loop(), timeout=30)
        self.lock = threading.Lock()
        self.events: list[tuple[float, dict[str, Any]]] = []  # (received_at, record)
        self.mdm = MdmReceiver(
            token=MDM_TOKEN, validate=False, keep_records=False, on_batch=self._on_batch
        )
        self.url: str = self.thread.call(self.mdm.start())

    def _on_batch(self, batch: Batch, records: list[dict[str, Any]]) -> None:
        if batch.kind == "events":
            with self.lock:
                self.events.extend((batch.received_at, r) for r in records)

    def snapshot(self) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return list(self.events)

    def close(self) -> None:
        self.thread.call(self.mdm.stop())
        self.thread.close()


def match(
    alarms: list[tuple[float, str, str]], arrived: list[tuple[float, dict[str, Any]]]
) -> tuple[list[float], list[float], int]:
    """(alert latencies, log latencies, records of one event_id beyond one alert and one log)."""
    alerts: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = defaultdict(list)
    logged: dict[str, float] = {}
    ids: Counter[tuple[str, str]] = Counter()
    for received_at, record in arrived:
        ids[record["event_id"], record["source"]] += 1
        if record["source"] == "alert":
            alerts[record["meter_id"], record["kind"]].append((received_at, record))
        elif record.get("alert_id"):
            logged.setdefault(record["alert_id"], received_at)
    seen: Counter[tuple[str, str]] = Counter()
    alert_s, log_s = [], []
    for sent, meter_id, kind in alarms:
        k = seen[meter_id, kind]
        seen[meter_id, kind] += 1
        found = alerts.get((meter_id, kind), [])
        if k < len(found):
            received_at, record = found[k]
            alert_s.append(received_at - sent)
            if record["event_id"] in logged:
                log_s.append(logged[record["event_id"]] - sent)
    extra = sum(n - 1 for n in ids.values() if n > 1)
    return alert_s, log_s, extra


def round_(args: argparse.Namespace, work: Path, index: int) -> dict[str, Any]:
    here = work / f"round-{index}"
    here.mkdir()
    port, control = free_port(), free_port()
    with contextlib.closing(Arrivals()) as arrivals, Round(here) as fleet:
        config = hesd_toml(
            work / "secrets.toml",
            port,
            uplink_toml(arrivals.url, args.batch_delay),
            f"[alerts]\ncoalesce = {args.coalesce}\n",
        )
        daemon, client = fleet.hesd(config)
        import_inventory(client, work / "sim.csv")
        fleet.sim(
            sim_command(
                args.meters, port, here,
                *("--push-interval", "0", "--control", f"127.0.0.1:{control}"),
            )
        )  # fmt: skip
        fleet.wait_online(client, args.meters, 60)
        meters = [f"SIM-is15959-{i + 1:06d}" for i in range(args.meters)]
        rng = random.Random(index)
        alarms: list[tuple[float, str, str]] = []
        cpu = cpu_seconds(daemon.pid)
        started = time.monotonic()
        for i in range(args.alarms):
            delay = started + i / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            meter_id, kind = meters[i % len(meters)], rng.choice(KINDS)
            sent = time.time()
            answer = sim_api(control, f"/meters/{meter_id}/events", {"kind": kind}, timeout=10)
            if not (answer["pushed"] and answer["alert"]):
                raise SystemExit(f"bench: {meter_id} did not push its alert: {answer}")
            alarms.append((sent, meter_id, kind))
        firing_s = time.monotonic() - started
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            alert_s, log_s, _ = match(alarms, arrivals.snapshot())
            if len(log_s) >= len(alarms):
                break
            time.sleep(0.1)
        hesd_cpu = cpu_seconds(daemon.pid) - cpu
        counts = status(client)["alerts"]
        read_s = [line["seconds"] for line in log_lines(here / "hesd.log", "alerts.read")]
        alert_s, log_s, extra = match(alarms, arrivals.snapshot())
        if not alert_s or not log_s:
            raise SystemExit(f"bench: no alert or no logged event arrived; logs in {here}")
        return {
            "alarms": len(alarms),
            "firing_s": firing_s,
            "alerts_arrived": len(alert_s),
            "logged_arrived": len(log_s),
            "alert_p50_s": statistics.median(alert_s),
            "alert_p99_s": percentile(alert_s, 0.99),
            "alert_max_s": max(alert_s),
            "log_p50_s": statistics.median(log_s),
            "log_p99_s": percentile(log_s, 0.99),
            "log_max_s": max(log_s),
            "event_log_reads": counts["reads"],
            "read_p50_s": statistics.median(read_s) if read_s else 0.0,
            "read_p99_s": percentile(read_s, 0.99) if read_s else 0.0,
            "read_failures": counts["read_failures"],
            "unconfirmed": counts["unconfirmed"],
            "records_beyond_one_per_source": extra,
            "hesd_cpu_s": hesd_cpu,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=100)
    parser.add_argument("--alarms", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="alarms per second")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-delay", type=float, help="hesd's uplink.batch_delay")
    parser.add_argument("--coalesce", type=float, help="hesd's alerts.coalesce")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--dir", default=None, help="where the work goes (default: $TMPDIR)")
    parser.add_argument("--out", default="bench/results/alerts.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    defaults = load_config(None)  # what the options leave out: hesd.toml's
    if args.batch_delay is None:
        args.batch_delay = defaults.uplink.batch_delay
    if args.coalesce is None:
        args.coalesce = defaults.alerts.coalesce
    machine_before = machine()
    params = vars(args)
    rounds = []
    with work_directory("hesd-bench-alerts-", keep=args.keep, parent=args.dir) as work:
        write_fleet_files(args.meters, work)
        mdm_secrets(work)
        print(
            f"{'round':>5} {'alarms':>6} {'arrived':>7} {'alert p50':>9} {'p99':>6} "
            f"{'log p50':>8} {'p99':>6} {'reads':>5} {'read p50':>8} {'cpu s':>5}"
        )
        for index in range(1, args.repeat + 1):
            r = round_(args, work, index)
            rounds.append(r)
            print(
                f"{index:>5} {r['alarms']:>6} {r['logged_arrived']:>7} "
                f"{r['alert_p50_s'] * 1000:>7.0f}ms {r['alert_p99_s'] * 1000:>4.0f}ms "
                f"{r['log_p50_s'] * 1000:>6.0f}ms {r['log_p99_s'] * 1000:>4.0f}ms "
                f"{r['event_log_reads']:>5} {r['read_p50_s'] * 1000:>6.0f}ms "
                f"{r['hesd_cpu_s']:>5.1f}",
                flush=True,
            )
    median = median_of(rounds)
    print(
        f"medians of {args.repeat}: alert → MDM p50 {median['alert_p50_s'] * 1000:,.0f} ms, "
        f"p99 {median['alert_p99_s'] * 1000:,.0f} ms (target {TARGET_P99_S:g} s); logged event "
        f"p50 {median['log_p50_s'] * 1000:,.0f} ms, p99 {median['log_p99_s'] * 1000:,.0f} ms; "
        f"{median['event_log_reads']:.0f} event-log reads for {args.alarms} alarms",
        flush=True,
    )
    write_report(
        args.out,
        "alerts",
        machine={**machine_before, "loadavg_after": loadavg()},
        params=params,
        targets={"alert_p99_s": TARGET_P99_S},
        median=median,
        meets_target=median["alert_p99_s"] <= TARGET_P99_S,
        rounds=rounds,
    )


if __name__ == "__main__":
    main()
