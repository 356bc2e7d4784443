"""hesd-sim capacity: memory per simulated meter and requests served per second, one process.

Builds a fleet of N meters (default 10,000) with their DLMS server side (what ``hesd-sim`` holds
per meter), measures the RSS it takes, then has our ClientConnection associate (LLS), read the
energy register and release, against meters of that fleet in turn, in the same process, and
reports requests served per second on one core. The client's own cost is inside that figure, so
the simulator alone serves more.

    .venv/bin/python bench/sim.py [--meters 10000] [--sessions 2000] [--repeat 3]

Prints a table and writes bench/results/sim.json.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.profile import load_profiles
from bench.report import print_results, write_report
from hesd.sim import DEFAULT_START, SimulatedMeter
from hesd.sim.fleet import Fleet
from protocols.dlms import apdu as x
from protocols.dlms.acse import Mechanism
from protocols.dlms.connection import AssociationParameters, ClientConnection
from protocols.dlms.obis import ObisCode
from protocols.dlms.server import ServerConnection

ENERGY = x.AttributeDescriptor(3, ObisCode.parse("1.0.1.8.0.255"), 2)
NOW = DEFAULT_START + 30 * 86400


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def build(meters: int) -> tuple[Fleet, list[tuple[SimulatedMeter, ServerConnection]]]:
    profiles = load_profiles(Path("conf/vendors"), ("is15959",), "bench")
    fleet = Fleet.build(profiles, [("is15959", meters)], seed=1)
    site = fleet.sites["is15959"]
    keys = (site.keys.global_unicast_key, site.keys.authentication_key)
    out = []
    for spec in fleet.specs:
        meter = SimulatedMeter(spec)
        out.append(
            (
                meter,
                ServerConnection(
                    site.associations, meter, system_title=spec.system_title, keys=keys
                ),
            )
        )
    return fleet, out


def serve_sessions(
    fleet: Fleet, meters: list[tuple[SimulatedMeter, ServerConnection]], sessions: int
) -> float:
    """Sessions (associate, GET, release) per second, client and server in this process."""
    password = fleet.sites["is15959"].keys.lls_password
    params = AssociationParameters(mechanism=Mechanism.LLS, password=password)
    started = time.perf_counter()
    for i in range(sessions):
        _, server = meters[i % len(meters)]
        conn = ClientConnection(params)
        conn.associate(NOW)
        for step in range(3):
            for apdu in conn.data_to_send():
                server.receive_apdu(32, apdu, NOW)
            for apdu in server.data_to_send():
                conn.receive_apdu(apdu, NOW)
            if step == 0:
                conn.get(ENERGY, NOW)
            elif step == 1:
                conn.release(NOW)
    return sessions / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default="bench/results/sim.json")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    gc.collect()
    before = rss_kib()
    started = time.perf_counter()
    fleet, meters = build(args.meters)
    build_s = time.perf_counter() - started
    gc.collect()
    per_meter = (rss_kib() - before) * 1024 / args.meters
    rates = [serve_sessions(fleet, meters, args.sessions) for _ in range(args.repeat)]
    gc.collect()
    after_use = (rss_kib() - before) * 1024 / args.meters
    results = {
        "meters": args.meters,
        "build_seconds": round(build_s, 3),
        "rss_bytes_per_idle_meter": round(per_meter),
        "rss_bytes_per_meter_after_sessions": round(after_use),
        "sessions_per_s_median": round(statistics.median(rates)),
        "requests_per_s_median": round(3 * statistics.median(rates)),  # AARQ, GET, RLRQ
    }
    print_results(results)
    write_report(args.out, "sim", params=vars(args), results=results)


if __name__ == "__main__":
    main()
