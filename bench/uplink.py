"""The uplink: outbox → MDM throughput, and end-to-end push → MDM latency.

**Throughput** (in process, no daemon): a Store in a temporary directory, an Outbox, a Forwarder
and the reference MDM receiver (bench/mdm_receiver.py, schema check off, records not kept) on
loopback. The outbox is filled with ``--records`` normalised readings (``--meters`` meters, 26
readings per meter and push, as an IS 15959 instantaneous push normalises), offered a push at a
time: *fill* is readings per second from the first ``Outbox.offer`` to the last commit. Then the
forwarder starts: *forward* is readings per second from its start until the receiver has stored
them all (the last DELETE of delivered rows may come a commit later). Every (batch_size, lanes)
of ``--batch-sizes`` x ``--lanes`` is tried; the configuration of hesd.toml is one of them.

**Latency** (bench/uplink_latency.py): a real ``hesd run`` fed by a push load (``--load frames``:
bench/pushgen.py, pre-encoded frames, cheap; ``sim``: hesd-sim, realistic; ``both``) at each of
``--rates`` pushes per second, forwarding to an MDM receiver in this process (``--receiver
reference`` or ``cheap``); each push is matched from its send time to the MDM's store time of
its last reading, and every push sent is counted as arrived or lost.

    .venv/bin/python bench/uplink.py [--records 200000] [--repeat 3]
    .venv/bin/python bench/uplink.py --only latency --load frames --rates 1000 2500 5000
    .venv/bin/python bench/uplink.py --only throughput     # or --only latency

Prints tables of the medians and writes bench/results/uplink.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import structlog
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.model import Reading, Source
from bench.mdm_receiver import MdmReceiver
from bench.report import loadavg, machine, median_of, print_results, write_report
from bench.uplink_latency import TARGET_P99_S, latency
from hesd.config import load_config
from hesd.secrets import SecretStore
from hesd.store import Store
from hesd.uplink.forwarder import Forwarder
from hesd.uplink.outbox import Outbox

TARGET_READINGS_PER_S: Final = 50_000
T0: Final = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# what an IS 15959 instantaneous push normalises to (conf/vendors/is15959.toml), 26 readings
PUSH: Final = (
    *(("voltage_l1", "V", "239.81"), ("voltage_l2", "V", "241.2"), ("voltage_l3", "V", "238.07")),
    *(("current_l1", "A", "4.213"), ("current_l2", "A", "3.9"), ("current_l3", "A", "5.002")),
    ("current_neutral", "A", "0.41"),
    *(("power_factor_l1", "", "0.981"), ("power_factor_l2", "", "0.97")),
    *(("power_factor_l3", "", "0.99"), ("power_factor", "", "0.98")),
    ("frequency", "Hz", "49.98"),
    *(("apparent_power", "kVA", "3.104"), ("active_power", "kW", "3.042")),
    ("reactive_power", "kvar", "0.617"),
    *(("energy_active_import", "kWh", "13687.5175"), ("energy_active_export", "kWh", "0")),
    *(("energy_apparent_import", "kVAh", "14012.113"), ("energy_apparent_export", "kVAh", "0")),
    *(("energy_reactive_lag", "kvarh", "2231.9"), ("energy_reactive_lead", "kvarh", "104.25")),
    *(("demand_active_max", "kW", "4.86"), ("demand_apparent_max", "kVA", "5.012")),
    ("power_on_duration", "s", "31536000"),
    *(("tamper_count", "count", "0"), ("billing_count", "count", "12")),
)


def push_readings(meter_id: str, n: int) -> list[Reading]:
    """The readings of push ``n`` of a meter (15 minutes apart)."""
    at = T0 + dt.timedelta(minutes=15 * n)
    peak = at - dt.timedelta(days=3, minutes=7)  # the demand maxima's capture time
    return [
        Reading(
            meter_id,
            quantity,
            Decimal(value),
            unit,
            at,
            Source.PUSH,
            "1.0.94.91.0.255",
            capture_time=peak if quantity.startswith("demand_") else None,
        )
        for quantity, unit, value in PUSH
    ]


def pushes(records: int, meters: int) -> list[list[Reading]]:
    """``records`` readings as pushes, the meters taking turns (as a fleet's pushes interleave)."""
    out: list[list[Reading]] = []
    total = 0
    n = 0
    while total < records:
        for m in range(meters):
            push = push_readings(f"SIM-is15959-{m + 1:06d}", n)[: records - total]
            out.append(push)
            total += len(push)
            if total >= records:
                break
        n += 1
    return out


# -- throughput -------------------------------------------------------------------------------


async def throughput_round(
    directory: Path, batches: list[list[Reading]], records: int, batch_size: int, lanes: int
) -> dict[str, float]:
    defaults = load_config(None)
    store = await Store.open(dataclasses.replace(defaults.store, path=directory / "hesd.db"))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    receiver = MdmReceiver(validate=False, keep_records=False)
    url = await receiver.start()
    forwarding: asyncio.Task[None] | None = None
    try:
        outbox = Outbox(store, defaults.uplink.max_backlog_bytes)
        await outbox.load()
        started = time.perf_counter()
        await asyncio.gather(*(outbox.offer(push) for push in batches))
        fill_s = time.perf_counter() - started
        commits = store.commits
        config = dataclasses.replace(
            defaults.uplink, url=url, hes_id="bench", batch_size=batch_size, lanes=lanes
        )
        forwarder = Forwarder(config, store, outbox, SecretStore(source=None))
        started = time.perf_counter()
        cpu, main_cpu = time.process_time(), time.thread_time()
        forwarding = asyncio.create_task(forwarder.run(), name="uplink:forwarder")
        arrived = asyncio.create_task(
            receiver.wait_for_records("readings", records, timeout=600), name="bench:arrived"
        )
        await asyncio.wait((arrived, forwarding), return_when=asyncio.FIRST_COMPLETED)
        if not arrived.done():
            arrived.cancel()
            forwarding.result()  # its exception, if it has one
            raise RuntimeError("the forwarder stopped")
        arrived.result()
        forward_s = time.perf_counter() - started
        cpu, main_cpu = time.process_time() - cpu, time.thread_time() - main_cpu
        while await store.scalar("SELECT count(*) FROM outbox"):  # noqa: ASYNC110 - deletes
            await asyncio.sleep(0.02)
        drained_s = time.perf_counter() - started
        return {
            "fill_readings_per_s": records / fill_s,
            "fill_commits": commits,
            "forward_readings_per_s": records / forward_s,
            "forward_s": forward_s,
            "drained_s": drained_s,
            "forward_cpu_s": cpu,  # all threads: the event loop, SQLite's, the receiver's
            "forward_loop_cpu_s": main_cpu,  # the event loop's thread (forwarder and receiver)
            "mdm_batches": len(receiver.batches),
            "mdm_duplicates": receiver.duplicates,
            "retries": forwarder.stats.retries,
        }
    finally:
        if forwarding is not None:
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
        await receiver.stop()
        await store.close()
        await writer


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    batches = pushes(args.records, args.meters)
    default = load_config(None).uplink
    cases = [(b, n) for b in args.batch_sizes for n in args.lanes]
    if (default.batch_size, default.lanes) not in cases:
        cases.append((default.batch_size, default.lanes))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hesd-bench-uplink-", dir=args.dir) as tmp:
        for batch_size, lanes in cases:
            runs = []
            for i in range(args.repeat):
                here = Path(tmp) / f"{batch_size}-{lanes}-{i}"
                here.mkdir()
                r = await throughput_round(here, batches, args.records, batch_size, lanes)
                runs.append(r)
            name = f"batch_size {batch_size}, lanes {lanes}"
            results[name] = {
                "batch_size": batch_size,
                "lanes": lanes,
                "default": (batch_size, lanes) == (default.batch_size, default.lanes),
                "median": median_of(runs),
                "rounds": runs,
            }
            m = results[name]["median"]
            print(
                f"{name:28} fill {m['fill_readings_per_s']:9,.0f}/s   "
                f"forward {m['forward_readings_per_s']:9,.0f}/s   "
                f"drained {m['drained_s']:6.2f} s   cpu {m['forward_cpu_s']:5.2f} s "
                f"(loop {m['forward_loop_cpu_s']:5.2f} s)",
                flush=True,
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("throughput", "latency"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the work goes (default: $TMPDIR)")
    parser.add_argument("--out", default="bench/results/uplink.json")
    group = parser.add_argument_group("throughput")
    group.add_argument("--records", type=int, default=200_000, help="readings in the outbox")
    group.add_argument("--meters", type=int, default=10_000)
    group.add_argument("--batch-sizes", type=int, nargs="+", default=[500, 1000, 2000])
    group.add_argument("--lanes", type=int, nargs="+", default=[2, 4])
    group = parser.add_argument_group("latency")
    group.add_argument(
        "--load",
        choices=("frames", "sim", "both"),
        default="both",
        help="who pushes: bench/pushgen.py (pre-encoded frames) or hesd-sim (realistic)",
    )
    group.add_argument("--rates", type=float, nargs="+", default=[1000, 2500, 5000])
    group.add_argument("--push-meters", type=int, default=5000, help="meters of frames mode")
    group.add_argument(
        "--push-every", type=float, default=1.0, help="real seconds per meter (sim mode)"
    )
    group.add_argument(
        "--receiver",
        choices=("reference", "cheap"),
        default="reference",
        help="the reference MDM receiver, or one that only counts and de-duplicates",
    )
    group.add_argument("--seconds", type=float, default=30.0, help="measured, per round")
    group.add_argument("--warmup", type=float, default=5.0, help="seconds after all are online")
    group.add_argument("--ramp", type=float, default=0.0, help="seconds over which meters dial")
    group.add_argument("--batch-delay", type=float, default=0.2, help="hesd's uplink.batch_delay")
    group.add_argument("--uplink-batch-size", type=int, help="hesd's uplink.batch_size")
    group.add_argument("--uplink-lanes", type=int, help="hesd's uplink.lanes")
    group.add_argument("--online-timeout", type=float, default=120.0)
    group.add_argument("--drain-timeout", type=float, default=120.0)
    group.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    group.add_argument("--profile", type=Path, help="run hesd under cProfile: DIR/*.prof")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    report: dict[str, Any] = {
        "machine": machine(),
        "params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "targets": {"readings_per_s": TARGET_READINGS_PER_S, "latency_p99_s": TARGET_P99_S},
    }
    if args.only != "latency":
        cases = uvloop.run(throughput(args))
        best = max(cases, key=lambda name: cases[name]["median"]["forward_readings_per_s"])
        [default] = [name for name, case in cases.items() if case["default"]]
        report["throughput"] = {
            "best": best,
            "default": default,
            "meets_target": cases[default]["median"]["forward_readings_per_s"]
            >= TARGET_READINGS_PER_S,
            "cases": cases,
        }
        print(f"best: {best}; hesd.toml's: {default}", flush=True)
    if args.only != "throughput":
        report["latency"] = latency(args)
        print(f"\nlatency, medians of {args.repeat} rounds (receiver: {args.receiver}):")
        print_results(
            {
                name: (
                    f"offered {m['offered_per_s']:6,.0f}/s  sent {m['sent_per_s']:6,.0f}/s  "
                    f"hesd {m['hesd_per_s']:6,.0f}/s  MDM {m['mdm_per_s']:6,.0f}/s  "
                    f"p50 {m['p50_s'] * 1000:6,.0f} ms  p99 {m['p99_s'] * 1000:6,.0f} ms  "
                    f"CPU hesd {m['hesd_cpu_share']:4.0%} load {m['load_cpu_share']:4.0%} "
                    f"receiver {m['receiver_cpu_share']:4.0%}  lost {case['lost']}"
                )
                for name, case in report["latency"].items()
                for m in (case["median"],)
            }
        )
    report["machine"]["loadavg_after"] = loadavg()
    write_report(args.out, "uplink", **report)


if __name__ == "__main__":
    main()
