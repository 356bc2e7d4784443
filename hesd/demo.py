"""``make demo``: hesd with a simulated fleet of 1,000 meters, driven by hesctl.

Run from the repository root. It starts, in ``var/demo``:

* hesd, listening for meters on a free loopback port;
* ``hesd-sim`` with 800 IS 15959 meters that dial in to hesd, identify themselves with their
  first push and push every 15 simulated minutes (time runs 60x), and 200 ``kalpa`` meters that
  hesd dials out to;

imports the fleet's inventory and keys, waits for the dialling meters to come online, shows
``hesctl status``, part of ``hesctl meters``, and an on-demand read of one meter of each kind,
then stops everything cleanly. Each step prints the command it runs and what it answered.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Final

BIN: Final = Path(sys.executable).parent
WORK: Final = Path("var") / "demo"
ENV: Final = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
DIALLING: Final = 800
DIALLED: Final = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hesctl(*args: str, show: bool = True) -> str:
    command = [str(BIN / "hesctl"), "--config", str(WORK / "hesd.toml"), *args]
    if show:
        print(f"\n$ hesctl {' '.join(shlex.quote(a) for a in args)}", flush=True)
    result = subprocess.run(command, check=False, text=True, capture_output=True, env=ENV)
    if show:
        sys.stdout.write(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"demo: hesctl {' '.join(args)} exited {result.returncode}")
    return result.stdout


def sim(name: str, *args: str, log: IO[str]) -> subprocess.Popen[bytes]:
    command = [
        str(BIN / "hesd-sim"),
        "--log-format",
        "json",
        "--time-scale",
        "60",
        "--stats-interval",
        "0",
        *args,
        "--inventory-out",
        str(WORK / f"{name}.csv"),
        "--secrets-out",
        str(WORK / f"{name}-secrets.toml"),
    ]
    print(f"$ hesd-sim {' '.join(shlex.quote(a) for a in args)} &", flush=True)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=ENV)


def wait_for_files(*paths: Path, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not all(p.exists() and p.stat().st_size for p in paths):
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: the simulator wrote no {', '.join(map(str, paths))}")
        time.sleep(0.1)


def main() -> None:
    if not Path("conf/vendors").is_dir():
        raise SystemExit("demo: run it from the repository root (make demo)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    port = free_port()
    logs = (WORK / "sim.log").open("w")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        # the fleets first: they write the inventory and keys hesd needs
        processes.append(
            sim(
                "dialled",
                "--meters",
                str(DIALLED),
                "--vendor",
                "kalpa",
                "--mode",
                "serve",
                "--port",
                "0",
                "--seed",
                "2",
                log=logs,
            )
        )
        # the dialling fleet's files, written by a first run that cannot reach hesd yet
        probe = sim(
            "dialling",
            "--meters",
            str(DIALLING),
            "--mode",
            "dial",
            "--hes",
            f"127.0.0.1:{port}",
            "--duration",
            "1",
            "--seed",
            "1",
            log=logs,
        )
        probe.wait(timeout=60)
        wait_for_files(WORK / "dialled.csv", WORK / "dialling.csv")
        secrets = WORK / "secrets.toml"
        secrets.write_text(
            (WORK / "dialling-secrets.toml").read_text()
            + "\n"
            + (WORK / "dialled-secrets.toml").read_text()
        )
        secrets.chmod(0o600)
        (WORK / "hesd.toml").write_text(
            '[daemon]\nstate_dir = "state"\nsecrets_file = "secrets.toml"\ndrain_timeout = 5.0\n'
            f'[vendors]\ndir = "{Path("conf/vendors").resolve()}"\n'
            f'[tcp]\nlisten = ["127.0.0.1:{port}"]\n'
        )
        print(f"$ hesd run --config {WORK / 'hesd.toml'} &    # log in {WORK / 'hesd.log'}")
        with (WORK / "hesd.log").open("w") as out:
            daemon = subprocess.Popen(
                [str(BIN / "hesd"), "run", "--config", str(WORK / "hesd.toml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        processes.append(daemon)
        hesctl("status", "--wait", "20", show=False)
        hesctl("meters", "import", str(WORK / "dialling.csv"))
        hesctl("meters", "import", str(WORK / "dialled.csv"))
        processes.append(
            sim(
                "dialling",
                "--meters",
                str(DIALLING),
                "--mode",
                "dial",
                "--hes",
                f"127.0.0.1:{port}",
                "--ramp",
                "5",
                "--push-interval",
                "900",
                "--seed",
                "1",
                log=logs,
            )
        )
        deadline = time.monotonic() + 90
        online = 0
        while time.monotonic() < deadline:
            online = json.loads(hesctl("status", "--json", show=False))["meters"]["online"]
            if online >= DIALLING:
                break
            time.sleep(1)
        print(f"\n{online} of {DIALLING} dialling meters online")
        hesctl("status")
        table = hesctl("meters", "--status", "online", show=False).splitlines()
        print("\n$ hesctl meters --status online | head")
        print("\n".join([*table[:8], "...", table[-1]]))
        hesctl("read", "SIM-is15959-000042")  # a meter that dialled in
        hesctl("read", "SIM-kalpa-000007", "1.0.1.8.0.255", "1.0.32.7.0.255")  # hesd dials out
        hesctl("status")
    finally:
        print("\n$ kill -TERM <hesd> <hesd-sim>", flush=True)
        codes = []
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            codes.append(process.wait(timeout=60))
        logs.close()
        print(f"exit statuses: {codes}; logs in {WORK}")
    if any(codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
