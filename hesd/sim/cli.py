"""``hesd-sim``: a fleet of simulated DLMS/COSEM meters for tests, demos and benchmarks.

Runs until SIGINT/SIGTERM (or ``--duration``), then stops cleanly and exits 0. Exit 2 for bad
options (click), 1 when the fleet cannot run (a port taken, the broker unreachable at start).
Reference: ``docs/simulator.md``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import structlog
import uvloop

from adapters.profile import load_profiles
from adapters.schema import ConfigError
from hesd.logs import configure_logging
from hesd.sim.clock import SimClock
from hesd.sim.faults import FaultPlan, FaultSpecError, parse_faults
from hesd.sim.fleet import KEY_MODES, Fleet, FleetError, parse_vendor_mix
from hesd.sim.model import DEFAULT_START
from hesd.sim.mqtt import MqttTransport
from hesd.sim.runner import SimOptions, Simulator
from hesd.sim.serial import SerialTransport
from hesd.sim.tcp import DialTransport, ServeTransport
from hesd.sim.transports import Backoff, Transport
from protocols.errors import HesdError

__all__ = ["main"]

log = structlog.get_logger("hesd.sim")
MODES = ("serve", "dial", "serial", "mqtt")
_HISTORY: float = 35 * 86400  # history before a --start earlier than the model's default


def _host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _start(ctx: click.Context, param: click.Parameter, value: str | None) -> float:
    if value is None:
        return time.time()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a UTC offset (e.g. 2025-01-01T00:00:00Z)")
    return parsed.timestamp()


def _faults(ctx: click.Context, param: click.Parameter, value: str | None) -> FaultPlan:
    try:
        return parse_faults(value or "")
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--meters", type=click.IntRange(1, 200_000), help="Fleet size [default: 10].")
@click.option(
    "--vendor",
    "vendor_mix",
    default="is15959",
    show_default=True,
    help="Vendor profile, or a mix: is15959:600,kalpa:400 (counts) or is15959,kalpa (even).",
)
@click.option("--mode", type=click.Choice(MODES), default="serve", show_default=True)
@click.option("--hes", callback=_host_port, help="dial: the HES to connect to, HOST:PORT.")
@click.option(
    "--broker", callback=_host_port, default="127.0.0.1:1883", show_default=True, help="mqtt."
)
@click.option("--host", help="serve: listen on this host with --port-base (else 127.0.x.y).")
@click.option("--port-base", type=click.IntRange(0, 65535), help="serve: meter i on port P+i.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4059,
    show_default=True,
    help="serve: the port on each meter's 127.0.x.y (0: any free one).",
)
@click.option("--ramp", type=click.FloatRange(0), default=0.0, help="dial: spread connects [s].")
@click.option(
    "--serial-buses", type=click.IntRange(1), default=1, show_default=True, help="serial: ptys."
)
@click.option(
    "--seed", type=click.IntRange(0, 2**64 - 1), default=1, show_default=True, help="Fleet seed."
)
@click.option(
    "--keys",
    type=click.Choice(KEY_MODES),
    default="derived",
    show_default=True,
    help="Keys from the seed, or the Green Book test keys.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second.",
)
@click.option("--start", callback=_start, help="Simulated time at start, ISO 8601 [now].")
@click.option("--faults", "fault_plan", callback=_faults, help="Fault spec, see docs.")
@click.option(
    "--push-interval",
    type=click.FloatRange(0),
    default=900.0,
    show_default=True,
    help="Simulated seconds between a meter's pushes (0: none).",
)
@click.option(
    "--alarms-per-day",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Tamper alarms per meter per simulated day.",
)
@click.option("--control", callback=_host_port, help="Control API on HOST:PORT.")
@click.option(
    "--inventory-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the inventory CSV for hesctl meters import.",
)
@click.option(
    "--secrets-out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the fleet's keysets (mode 0600) for hesd's secrets_file.",
)
@click.option(
    "--vendors-dir",
    type=click.Path(path_type=Path),
    default=Path("conf/vendors"),
    show_default=True,
    help="Vendor profiles.",
)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), help="Exit after [s].")
@click.option(
    "--stats-interval",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Real seconds between sim.stats lines (0: none).",
)
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
def main(**kw: Any) -> None:
    """Simulate a fleet of DLMS/COSEM smart meters (see docs/simulator.md)."""
    configure_logging(kw["log_format"], kw["log_level"])
    mode: str = kw["mode"]
    if mode == "dial" and kw["hes"] is None:
        raise click.UsageError("--mode dial needs --hes HOST:PORT")
    try:
        meters = kw["meters"] if kw["meters"] is not None or ":" in kw["vendor_mix"] else 10
        mix = parse_vendor_mix(kw["vendor_mix"], meters)
        profiles = load_profiles(
            kw["vendors_dir"], tuple(name for name, _ in mix), source="--vendors-dir"
        )
        start: float = kw["start"]
        fleet = Fleet.build(
            profiles,
            mix,
            seed=kw["seed"],
            keys=kw["keys"],
            faults=kw["fault_plan"],
            history_start=min(DEFAULT_START, start - _HISTORY),
        )
    except (FleetError, ConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    clock = SimClock(start, kw["time_scale"])
    options = SimOptions(
        push_interval=kw["push_interval"],
        alarms_per_day=kw["alarms_per_day"],
        stats_interval=kw["stats_interval"],
        inventory_out=kw["inventory_out"],
        secrets_out=kw["secrets_out"],
        control=kw["control"],
    )
    sim = Simulator(fleet, clock, options, kw["fault_plan"])
    try:
        transport = _transport(sim, kw)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        uvloop.run(_run(sim, transport, kw["duration"]))
    except Exception as exc:  # a transport that cannot start, or a task that failed
        for error in _flatten(exc):
            if isinstance(error, HesdError | OSError):
                log.error("sim.failed", error=str(error))
            else:
                log.error("sim.crashed", error=repr(error), exc_info=error)
        sys.exit(1)


def _transport(sim: Simulator, kw: dict[str, Any]) -> Transport:
    env, endpoints, mode = sim.env, sim.endpoints, kw["mode"]
    backoff = Backoff(seed=sim.fleet.seed)
    if mode == "serve":
        return ServeTransport(
            env, endpoints, host=kw["host"], port_base=kw["port_base"], port=kw["port"]
        )
    if mode == "dial":
        return DialTransport(env, endpoints, kw["hes"], ramp=kw["ramp"], backoff=backoff)
    if mode == "serial":
        return SerialTransport(env, endpoints, buses=kw["serial_buses"])
    return MqttTransport(
        env, endpoints, kw["broker"], client_id=f"hesd-sim-{sim.fleet.seed}", backoff=backoff
    )


async def _run(sim: Simulator, transport: Transport, duration: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    await sim.run(transport, stop)


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]
