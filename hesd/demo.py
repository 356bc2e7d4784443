"""``make demo``: hesd with a simulated fleet on every transport, driven by hesctl.

Run from the repository root. It starts, in ``var/demo``:

* hesd, listening for meters on a free loopback port;
* ``hesd-sim`` fleets, time running 60x (a push every 15 simulated minutes is one every 15 s):
  800 IS 15959 meters that dial in to hesd (``tcp-in``) and identify themselves with their first
  push; 200 ``meghdoot`` meters that hesd dials out to (``tcp-out``: their concentrator relays
  DLMS over TCP); 8 ``sunrise`` meters on an RS-485 bus, a pty that hesd opens as a serial port
  (``serial``, HDLC); and, when the ``mosquitto`` broker is installed, 50 ``kalpa`` meters
  talking through a private Mosquitto on a free loopback port (``mqtt``);

and the reference MDM receiver (``bench/mdm_receiver.py``, in this process on a free loopback
port, asking for a bearer token that hesd finds in the secrets file's ``[tokens]``), which hesd's
``[uplink]`` forwards normalised readings and events to.

It imports the fleets' inventories and keys, waits for the dialling meters to come online, shows
``hesctl status`` and part of ``hesctl meters``, reads one meter of each transport on demand,
prints how many meters of each transport are online, runs the block-load schedule of a DISCOM
(every 30 minutes IST; here started at once with ``hesctl schedule run --wait``, its reads
spread over 20 s, showing its progress) over the whole fleet and shows ``hesctl schedule``, logs
a magnet tamper on one meter through the simulator's control API (the meter pushes its alert at
once), shows what reached the MDM (its counts per kind, one reading as the MDM received it, and
the tamper as an event: the alert's, then the one hesd read from the meter's log, and how many
seconds each took) and ``hesctl outbox``, then stops everything cleanly. Each step prints the
command it runs and what it answered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import structlog

if TYPE_CHECKING:
    from bench.mdm_receiver import MdmReceiver

BIN: Final = Path(sys.executable).parent
WORK: Final = Path("var") / "demo"
ENV: Final = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
DIALLING: Final = 800
DIALLED: Final = 200
SERIAL: Final = 8
MQTT: Final = 50
TAMPERED: Final = "SIM-is15959-000042"


class Mdm:
    """The reference MDM receiver on its own thread and event loop (the demo blocks on hesctl)."""

    def __init__(self, token: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mdm", daemon=True)
        self.thread.start()
        # bench/ is not installed with hesd: the demo runs from the repository
        from bench.mdm_receiver import MdmReceiver  # noqa: PLC0415

        self.receiver: MdmReceiver = MdmReceiver(token=token)  # checks bodies: docs/mdm-api.yaml
        self.url: str = self._call(self.receiver.start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stats(self) -> dict[str, Any]:
        """What its control API answers (``GET /control/stats``)."""
        with urllib.request.urlopen(f"{self.url}/control/stats", timeout=10) as answer:  # noqa: S310 - loopback http
            stats: dict[str, Any] = json.loads(answer.read())
        return stats

    def readings(self, meter_id: str, quantity: str) -> list[dict[str, Any]]:
        """The readings of ``quantity`` of ``meter_id`` the MDM received, in arrival order."""

        async def find() -> list[dict[str, Any]]:
            return [
                r
                for r in self.receiver.records("readings")
                if r["meter_id"] == meter_id and r["quantity"] == quantity
            ]

        found: list[dict[str, Any]] = self._call(find())
        return found

    def events(self, meter_id: str) -> list[dict[str, Any]]:
        """The events of ``meter_id`` the MDM received, in arrival order."""

        async def find() -> list[dict[str, Any]]:
            return [e for e in self.receiver.records("events") if e["meter_id"] == meter_id]

        found: list[dict[str, Any]] = self._call(find())
        return found

    def close(self) -> None:
        self._call(self.receiver.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hesctl(*args: str, show: bool = True, ok: tuple[int, ...] = (0,)) -> str:
    command = [str(BIN / "hesctl"), "--config", str(WORK / "hesd.toml"), *args]
    if show:
        print(f"\n$ hesctl {' '.join(shlex.quote(a) for a in args)}", flush=True)
    result = subprocess.run(command, check=False, text=True, capture_output=True, env=ENV)
    if show:  # standard error first: progress lines come before the result
        sys.stdout.write(result.stderr + result.stdout)
    if result.returncode not in ok:
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


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")


def start_mosquitto(binary: str, port: int) -> subprocess.Popen[bytes]:
    """A private broker for the MQTT meters, on a free loopback port, as the tests run it."""
    conf = WORK / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    print(f"$ mosquitto -c {conf} &    # MQTT broker on 127.0.0.1:{port}", flush=True)
    with (WORK / "mosquitto.log").open("w") as out:
        broker = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while broker.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return broker
        time.sleep(0.05)
    broker.kill()
    broker.wait()
    raise SystemExit(f"demo: mosquitto did not start; see {WORK / 'mosquitto.log'}")


def serial_port(inventory: Path) -> str:
    """The pty the serial fleet's bus is on: its inventory addresses are ``PATH:HDLC_ADDRESS``."""
    row = inventory.read_text().splitlines()[1].split(",")
    return row[3].rpartition(":")[0]


def show_online_by_transport(transports: list[str]) -> None:
    print("\n$ hesctl meters --json    # online meters by transport", flush=True)
    meters = json.loads(hesctl("meters", "--json", show=False))
    total = Counter(m["transport"] for m in meters)
    online = Counter(m["transport"] for m in meters if m["status"] == "online")
    print("TRANSPORT  ONLINE  METERS")
    for transport in transports:
        print(f"{transport:<9}  {online[transport]:>6}  {total[transport]:>6}")


def scheduled_read() -> None:
    """The block-load schedule, run now over every meter: its progress (a line every 5 s, as
    without a terminal), how it ended, then ``hesctl schedule``."""
    # exit status 3: some reachable meter was not read; the demo shows it and goes on
    hesctl("schedule", "run", "block_load", "--wait", "90", "--every", "5", ok=(0, 3))
    hesctl("schedule")


def tamper(control: str) -> tuple[dt.datetime, float]:
    """Log a magnet tamper on one meter through the simulator's control API: it pushes its
    alert at once. Returns the event's time (the meter's clock, as the alert carries it) and
    when (time.monotonic) it was logged."""
    path = f"/api/v1/meters/{TAMPERED}/events"
    body = json.dumps({"kind": "magnet_tamper"})
    print(f"\n$ curl -s -X POST {control}{path} -d '{body}'", flush=True)
    request = urllib.request.Request(f"http://{control}{path}", body.encode())
    logged = time.monotonic()
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback http
        text = answer.read().decode().strip()
    print(text, flush=True)
    return _instant(json.loads(text)["time"]), logged


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def show_mdm(mdm: Mdm, tampered_at: dt.datetime, logged: float) -> None:
    """What reached the MDM: counts per kind, one reading, and the tamper as an event: the
    alert's (source alert, at once), then the same event read from the meter's log (source
    pull, with its snapshot; alert_id names the alert)."""
    deadline = logged + 10  # the alert at once; the log read after alerts.coalesce (1 s)
    arrived: dict[str, float] = {}
    found: dict[str, dict[str, Any]] = {}
    while len(found) < 2 and time.monotonic() < deadline:
        for event in mdm.events(TAMPERED):
            source = event["source"]
            near = abs((_instant(event["timestamp"]) - tampered_at).total_seconds()) < 0.01
            if near and event["kind"] == "magnet_tamper" and source not in found:
                found[source] = event
                arrived[source] = time.monotonic() - logged
        time.sleep(0.05)
    stats = mdm.stats()
    print(f"\n$ curl -s {mdm.url}/control/stats    # the MDM: records per kind", flush=True)
    print(json.dumps({k: stats[k] for k in ("records", "batches", "duplicates", "refused")}))
    energy = mdm.readings(TAMPERED, "energy_active_import")
    if energy:
        print(f"\none reading as the MDM received it (POST {mdm.url}/api/v1/meters/readings):")
        print(json.dumps(energy[-1], indent=2))
    alert, logged_event = found.get("alert"), found.get("pull")
    if alert is None:
        print(f"\nthe tamper of {TAMPERED} had not reached the MDM as an event within 10 s")
        return
    print(
        f"\nthe tamper reached the MDM as an event {arrived['alert']:.2f} s after it happened "
        f"(POST {mdm.url}/api/v1/meters/events), from the meter's alert push:"
    )
    print(json.dumps(alert, indent=2))
    if logged_event is None:
        print("its event-log read had not reached the MDM within 10 s")
        return
    print(
        f"\nand {arrived['pull']:.2f} s after it, as hesd read it from the meter's event log "
        f"(the same event_id; alert_id names the alert; the snapshot the meter took):"
    )
    print(json.dumps({k: logged_event[k] for k in ("event_id", "alert_id", "source", "kind")}))
    print(json.dumps(logged_event["snapshot"][:3]), "...")


def main() -> None:
    if not Path("conf/vendors").is_dir():
        raise SystemExit("demo: run it from the repository root (make demo)")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    port = free_port()
    logs = (WORK / "sim.log").open("w")
    running: dict[str, subprocess.Popen[bytes]] = {}
    transports = ["tcp-in", "tcp-out", "serial"]
    broker = mosquitto_binary()
    dialling = ("--meters", str(DIALLING), "--mode", "dial", "--hes", f"127.0.0.1:{port}")
    mqtt: tuple[str, ...] = ()
    token = secrets.token_urlsafe(16)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # the receiver's
    mdm = Mdm(token)
    print(
        f"reference MDM receiver (bench/mdm_receiver.py) listening on {mdm.url}, in this process;"
        "\nit wants the bearer token hesd finds under [tokens] mdm in the secrets file",
        flush=True,
    )
    try:
        # the fleets first: they write the inventories and keys hesd needs
        running["dialled"] = sim(
            "dialled",
            *("--meters", str(DIALLED), "--vendor", "meghdoot", "--mode", "serve"),
            *("--port", "0", "--seed", "2"),
            log=logs,
        )
        running["serial"] = sim(
            "serial",
            *("--meters", str(SERIAL), "--vendor", "sunrise", "--mode", "serial", "--seed", "3"),
            log=logs,
        )
        # the fleets that reach hesd themselves write their files in a first, short run
        probes = [sim("dialling", *dialling, "--duration", "1", "--seed", "1", log=logs)]
        if broker is None:
            print(
                "MQTT is skipped in this demo: the mosquitto broker is not installed "
                "(apt-get install mosquitto)",
                flush=True,
            )
        else:
            mqtt_port = free_port()
            running["mosquitto"] = start_mosquitto(broker, mqtt_port)
            mqtt = ("--meters", str(MQTT), "--vendor", "kalpa", "--mode", "mqtt")
            mqtt += ("--broker", f"127.0.0.1:{mqtt_port}", "--seed", "4")
            probes.append(sim("mqtt", *mqtt, "--duration", "1", log=logs))
            transports.append("mqtt")
        for probe in probes:
            probe.wait(timeout=60)
        files = [WORK / f"{name}.csv" for name in ("dialling", "dialled", "serial")]
        if mqtt:
            files.append(WORK / "mqtt.csv")
        wait_for_files(*files)
        secrets_file = WORK / "secrets.toml"
        keys = "\n".join((WORK / f"{f.stem}-secrets.toml").read_text() for f in files)
        secrets_file.write_text(f'{keys}\n[tokens]\nmdm = "{token}"\n')
        secrets_file.chmod(0o600)
        config = (
            '[daemon]\nstate_dir = "state"\nsecrets_file = "secrets.toml"\ndrain_timeout = 5.0\n'
            f'[vendors]\ndir = "{Path("conf/vendors").resolve()}"\n'
            f'[tcp]\nlisten = ["127.0.0.1:{port}"]\n'
            f'[[serial.ports]]\npath = "{serial_port(WORK / "serial.csv")}"\n'
            f'[uplink]\nurl = "{mdm.url}"\nhes_id = "demo"\ntoken = "mdm"\nbatch_delay = 0.5\n'
            '[scheduler]\ntime_zone = "Asia/Kolkata"\n'
            '[schedules.block_load]\ncron = "*/30 * * * *"\nread = { profile = "block_load" }\n'
            "window = 20.0\nmax_backfill = 3600.0\n"
        )
        if mqtt:
            config += f'[mqtt]\nbroker = "127.0.0.1:{mqtt_port}"\n'
        (WORK / "hesd.toml").write_text(config)
        print(f"$ hesd run --config {WORK / 'hesd.toml'} &    # log in {WORK / 'hesd.log'}")
        with (WORK / "hesd.log").open("w") as out:
            running["hesd"] = subprocess.Popen(
                [str(BIN / "hesd"), "run", "--config", str(WORK / "hesd.toml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=ENV,
            )
        hesctl("status", "--wait", "20", show=False)
        for inventory in files:
            hesctl("meters", "import", str(inventory))
        pushing = ("--push-interval", "900")
        control = f"127.0.0.1:{free_port()}"
        running["dialling"] = sim(
            "dialling",
            *dialling,
            *("--ramp", "5", *pushing, "--seed", "1", "--control", control),
            log=logs,
        )
        if mqtt:
            running["mqtt"] = sim("mqtt", *mqtt, *pushing, log=logs)
        deadline = time.monotonic() + 90
        online = 0
        while time.monotonic() < deadline:
            online = json.loads(hesctl("status", "--json", show=False))["meters"]["online"]
            if online >= DIALLING:
                break
            time.sleep(1)
        print(f"\n{online} meters online, the {DIALLING} dialling ones among them")
        hesctl("status")
        table = hesctl("meters", "--status", "online", show=False).splitlines()
        print("\n$ hesctl meters --status online | head")
        print("\n".join([*table[:8], "...", table[-1]]))
        hesctl("read", "SIM-is15959-000042")  # tcp-in: a meter that dialled in
        hesctl("read", "SIM-meghdoot-000007", "1.0.1.8.0.255", "1.0.32.7.0.255")  # tcp-out
        hesctl("read", "SIM-sunrise-000003", "1.0.1.8.0.255")  # serial: over the RS-485 bus
        if mqtt:
            hesctl("read", "SIM-kalpa-000005", "1.0.1.8.0.255")  # mqtt: through the broker
        show_online_by_transport(transports)
        print(
            "\ntcp-in meters are online while connected; hesd dials tcp-out meters for a request;"
            "\nthe serial bus's meters are attached by the first request on it"
            + (
                "; MQTT meters come\nonline with their first push (one every 15 s here) or request."
                if mqtt
                else "."
            )
        )
        scheduled_read()
        tampered_at, logged = tamper(control)
        show_mdm(mdm, tampered_at, logged)
        hesctl("outbox")
        hesctl("status")
    finally:
        # the meters that reach hesd, and the dialled ones, before hesd; the serial bus after it
        # (its port would be lost mid-drain), the broker last
        order = ("dialling", "mqtt", "dialled", "hesd", "serial", "mosquitto")
        stopping = [(name, running[name]) for name in order if name in running]
        print(f"\n$ kill -TERM {' '.join(f'<{name}>' for name, _ in stopping)}", flush=True)
        codes = []
        for _, process in stopping:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            codes.append(process.wait(timeout=60))
        logs.close()
        mdm.close()
        print(f"exit statuses: {codes}; logs in {WORK}")
    if any(codes):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
