"""Firmware upgrades over the air through a real hesd: transfer speed, and what a cut costs.

A real ``hesd-sim --mode serve`` fleet of ``--meters`` IS 15959 meters and a real ``hesd run``
(generated hesd.toml; the meters' profile is a copy of is15959 whose sessions associate as the
utility client, HLS-GMAC and ciphered, as an upgrade needs). Each round uploads a fresh image of
``--kib`` KiB (hesd-sim format, version ``2.0.<round>``) and upgrades every meter at once with
``firmware_upgrade`` commands; it ends when every command has ended.

* *clean*: no faults (beyond ``--latency``). Reported: the wall time of the round, per-meter
  upgrade time (queued to succeeded, from the command), image blocks per second and KiB per
  second over the fleet.
* *cut*: each meter has the simulator's ``cut_block`` fault at the middle block (the answer is
  lost and the link closes once), so every upgrade has one resumed attempt. Reported the same,
  and the blocks the meters received per block of the image (1.0: nothing sent twice).

    .venv/bin/python bench/firmware.py [--meters 10] [--kib 64] [--repeat 3] [--latency 0ms]

``--latency`` adds the simulator's latency fault to every answer (a radio link's round trip).
hesd retries at once (``[firmware] retry_backoff = 0``), so the figures are the transfer's and
the reconnection's, not a back-off's; every upgrade has one retry anyway: the meter restarts
after activation, and hesd reads its new version on the next connection.
Prints a table of the medians and writes bench/results/firmware.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import BIN, ENV, REPO, epoch, free_port, sim_api, stop, wait_ready
from bench.report import median_of, write_report
from hesd.ctl import Client
from hesd.sim.image import BLOCK_SIZE, build_image


def _vendors(work: Path) -> Path:
    text = (REPO / "conf" / "vendors" / "is15959.toml").read_text()
    changed = text.replace('\nassociation = "reader"', '\nassociation = "utility"')
    if changed == text:
        raise SystemExit("conf/vendors/is15959.toml changed: update bench/firmware.py")
    vendors = work / "vendors"
    vendors.mkdir()
    (vendors / "is15959.toml").write_text(changed)
    return vendors


def _wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _seconds(command: dict[str, Any]) -> float:
    return epoch(command["updated_at"]) - epoch(command["created_at"])


def run_round(
    client: Client,
    control: int,
    meters: list[str],
    *,
    kib: int,
    version: str,
    cut: bool,
    latency: str,
) -> dict[str, Any]:
    image = build_image(version, os.urandom(kib * 1024 - 64))
    blocks = -(-len(image) // BLOCK_SIZE)
    client.json(
        "POST", "/api/v1/firmware/images", image, {"Content-Type": "application/octet-stream"}
    )
    sha = hashlib.sha256(image).hexdigest()
    before = {
        m: sim_api(control, f"/meters/{m}")["truth"]["image"]["blocks_received"] for m in meters
    }
    for m in meters:
        faults = [f"latency={latency}"] if latency != "0ms" else []
        faults += [f"cut_block={blocks // 2}"] if cut else []
        sim_api(control, f"/meters/{m}/faults", {"spec": ",".join(faults)})
    started = time.monotonic()
    ids = []
    for m in meters:
        body = {
            "meter_id": m,
            "kind": "firmware_upgrade",
            "params": {"image": sha},
            "expires_in": 3600,
        }
        ids.append(
            client.json(
                "POST",
                "/api/v1/commands",
                json.dumps(body).encode(),
                {"Content-Type": "application/json"},
            )["command_id"]
        )
    finals: dict[str, dict[str, Any]] = {}

    def ended() -> bool:
        for command_id in ids:
            if command_id not in finals:
                command = client.json("GET", f"/api/v1/commands/{command_id}")
                if command["state"] not in ("queued", "sent"):
                    finals[command_id] = command
        return len(finals) == len(ids)

    _wait_for(ended, 1800, "the upgrades to end")
    wall = time.monotonic() - started
    failed = [c["result"]["detail"] for c in finals.values() if c["state"] != "succeeded"]
    if failed:
        raise RuntimeError(f"{len(failed)} upgrades failed: {failed[:3]}")
    received = sum(
        sim_api(control, f"/meters/{m}")["truth"]["image"]["blocks_received"] - before[m]
        for m in meters
    )
    per_meter = [_seconds(c) for c in finals.values()]
    return {
        "image_bytes": len(image),
        "blocks": blocks,
        "wall_s": round(wall, 3),
        "upgrade_s_median": round(statistics.median(per_meter), 3),
        "upgrade_s_max": round(max(per_meter), 3),
        "blocks_per_s": round(blocks * len(meters) / wall, 1),
        "kib_per_s": round(len(image) * len(meters) / 1024 / wall, 1),
        "received_per_block": round(received / (blocks * len(meters)), 3),
        "attempts_median": statistics.median(c["attempts"] for c in finals.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meters", type=int, default=10)
    parser.add_argument("--kib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", default="0ms", help="the simulator's latency fault")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: temp)")
    parser.add_argument("--out", default="bench/results/firmware.json")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-firmware-", dir=args.dir))
    vendors = _vendors(work)
    control = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    cases: dict[str, list[dict[str, Any]]] = {"clean": [], "cut": []}
    try:
        with (work / "sim.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "hesd-sim"),
                        *("--meters", str(args.meters), "--mode", "serve", "--port", "0"),
                        *("--vendors-dir", str(vendors), "--seed", "1", "--log-format", "json"),
                        *("--time-scale", "1e-9", "--push-interval", "0", "--stats-interval", "0"),
                        *("--inventory-out", str(work / "sim.csv")),
                        *("--secrets-out", str(work / "sim.toml")),
                        *("--control", f"127.0.0.1:{control}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    env=ENV,
                )
            )
        _wait_for(lambda: '"sim.ready"' in (work / "sim.log").read_text(), 60, "the simulator")
        (work / "hesd.toml").write_text(
            '[daemon]\nstate_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "sim.toml"\n'
            '[log]\nformat = "json"\n[vendors]\ndir = "vendors"\n'
            "[firmware]\nmax_image_bytes = 67108864\nretry_backoff = 0.0\n"
        )
        with (work / "hesd.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    [str(BIN / "hesd"), "run", "--config", str(work / "hesd.toml")],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=ENV,
                    cwd=work,
                )
            )
        client = Client(work / "state" / "hesd.sock")
        wait_ready(client, processes[-1], work / "hesd.log")
        client.call(
            "POST",
            "/api/v1/meters/import",
            (work / "sim.csv").read_bytes(),
            {"Content-Type": "text/csv"},
        )
        meters = [f"SIM-is15959-{n:06d}" for n in range(1, args.meters + 1)]
        version = 0
        for _ in range(args.repeat):
            for name, rounds in cases.items():
                version += 1
                result = run_round(
                    client,
                    control,
                    meters,
                    kib=args.kib,
                    version=f"2.0.{version}",
                    cut=name == "cut",
                    latency=args.latency,
                )
                rounds.append(result)
                print(f"{name:5}  {json.dumps(result)}", flush=True)
    except BaseException:
        print(f"kept the work directory and its logs: {work}", file=sys.stderr)
        raise
    finally:
        stop(processes)
    if not args.keep:  # once hesd and the simulator have stopped writing there
        shutil.rmtree(work, ignore_errors=True)
    keys = (
        "wall_s",
        "upgrade_s_median",
        "upgrade_s_max",
        "blocks_per_s",
        "kib_per_s",
        "received_per_block",
    )
    medians = {
        name: median_of([{k: r[k] for k in keys} for r in rounds]) for name, rounds in cases.items()
    }
    print()
    blocks = cases["clean"][0]["blocks"]
    print(
        f"{args.meters} meters, image {args.kib} KiB ({blocks} blocks of {BLOCK_SIZE}), "
        f"latency {args.latency}, medians of {args.repeat}"
    )
    print(f"{'case':6}" + "".join(f"{k:>20}" for k in keys))
    for name, m in medians.items():
        print(f"{name:6}" + "".join(f"{m[k]:>20}" for k in keys))
    ratio = medians["cut"]["wall_s"] / medians["clean"]["wall_s"]
    print(f"cut / clean wall time: {ratio:.2f}")
    write_report(
        args.out,
        "firmware",
        when=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        args={
            "meters": args.meters,
            "kib": args.kib,
            "repeat": args.repeat,
            "latency": args.latency,
        },
        rounds=cases,
        median=medians,
        cut_over_clean_wall=round(ratio, 3),
    )


if __name__ == "__main__":
    main()
