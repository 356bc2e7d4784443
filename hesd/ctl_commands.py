"""``hesctl`` verbs that queue and follow commands (``hesd/router.py``): ``read``, ``disconnect``,
``reconnect``, ``sync-time``, ``limit``, ``push-setup``, ``events``, ``commands``, ``cancel``.

They register on ``hesd.ctl.main``; ``hesd.ctl`` imports this module once ``main`` exists.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import quote, urlencode

import click

from adapters.is15959 import EVENT_CATEGORIES
from hesd.ctl import _client, _post_json, _table, main


@main.command()
@click.argument("meter_id")
@click.argument("objects", nargs=-1)
@click.option(
    "-q", "--quantity", "quantities", multiple=True, help="A canonical quantity (repeatable)."
)
@click.option("--profile", help="A load profile: instantaneous, block_load, daily_load, billing.")
@click.option("--events", "category", help="An event category: voltage, current, power, ...")
@click.option("--from", "start", help="Profile/events: from this ISO 8601 time [24 h ago].")
@click.option("--to", "end", help="Profile/events: to this ISO 8601 time [now].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def read(  # noqa: PLR0917 - one option per kind of read
    ctx: click.Context,
    meter_id: str,
    objects: tuple[str, ...],
    quantities: tuple[str, ...],
    profile: str | None,
    category: str | None,
    start: str | None,
    end: str | None,
    as_json: bool,
) -> None:
    """Read a meter now: COSEM objects, or normalised quantities, a profile or events.

    OBJECTS are [CLASS/]OBIS[:ATTRIBUTE], e.g. 1.0.1.8.0.255 (active energy import),
    8/0.0.1.0.0.255:2 (the clock); without a class, the usual class of that OBIS code; without
    an attribute, 2. Default: the clock and active energy import.

    -q NAME reads canonical quantities (e.g. -q energy_active_import -q voltage_l1), --profile
    a load profile and --events an event log over --from/--to, all normalised as the MDM gets
    them (kWh, V, A, UTC).
    """
    url = f"/api/v1/meters/{quote(meter_id, safe='')}/read"
    chosen = [bool(objects), bool(quantities), profile is not None, category is not None]
    if sum(chosen) > 1:
        raise click.UsageError("give OBJECTS, -q, --profile or --events, not several")
    if not any(chosen[1:]):
        wanted = list(objects) or ["8/0.0.1.0.0.255:2", "3/1.0.1.8.0.255:2"]
        result = _post_json(_client(ctx), url, {"objects": wanted})
        if as_json:
            click.echo(json.dumps(result, indent=2))
            return
        rows = [(r["object"], r["text"]) for r in result["results"]]
        click.echo(_table(("OBJECT", "VALUE"), rows))
        return
    body: dict[str, Any]
    if quantities:
        body = {"quantities": list(quantities)}
    else:
        now = datetime.now(UTC)
        body = {
            "from": start or (now - timedelta(days=1)).isoformat(),
            "to": end or now.isoformat(),
        }
        body |= {"profile": profile} if profile is not None else {"events": category}
    result = _post_json(_client(ctx), url, body)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_records(result)


def _print_records(result: dict[str, Any]) -> None:
    readings = result["readings"]
    if readings:
        rows = [
            (
                r["timestamp"],
                r["quantity"],
                r["value"],
                r["unit"],
                ",".join(r["quality"]) or "-",
            )
            for r in readings
        ]
        click.echo(_table(("TIME", "QUANTITY", "VALUE", "UNIT", "QUALITY"), rows))
    events = result["events"]
    if events:
        rows = [
            (e["timestamp"], e["kind"], e["severity"], str(e["code"]), e["name"]) for e in events
        ]
        click.echo(_table(("TIME", "EVENT", "SEVERITY", "CODE", "NAME"), rows))
    if not readings and not events:
        click.echo("(nothing in that range)" if not result["errors"] else "(no values)")
    for error in result["errors"]:
        click.echo(f"error: {error}", err=True)


# -- commands (hesd/router.py) ------------------------------------------------------------------

FINAL_STATES: Final = ("succeeded", "failed", "expired", "cancelled")
EXIT_COMMAND_FAILED: Final = 3


def _submit(
    ctx: click.Context, meter_id: str, kind: str, params: dict[str, Any], options: dict[str, Any]
) -> dict[str, Any]:
    """Queue a command; with --wait, follow it until it ends or the wait is over."""
    client = _client(ctx)
    body = {"meter_id": meter_id, "kind": kind, "params": params, "expires_in": options["expires"]}
    command: dict[str, Any] = _post_json(client, "/api/v1/commands", body)
    if options["wait"] is not None:
        deadline = time.monotonic() + options["wait"]
        url = f"/api/v1/commands/{command['command_id']}"
        while command["state"] not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(0.2)  # polling the daemon: it owns the command's progress
            command = client.json("GET", url)
    return command


def _command(
    ctx: click.Context, meter_id: str, kind: str, params: dict[str, Any], options: dict[str, Any]
) -> None:
    """Queue a command; with --wait, follow it to its end (exit 3 unless it succeeded)."""
    command = _submit(ctx, meter_id, kind, params, options)
    _report(command, as_json=options["as_json"], followed=options["wait"] is not None)


def _report(command: dict[str, Any], *, as_json: bool, followed: bool) -> None:
    """Print the command (JSON, or one line); exit 3 if it was followed and did not succeed."""
    if as_json:
        click.echo(json.dumps(command, indent=2))
    else:
        click.echo(_command_text(command))
    if followed and command["state"] != "succeeded":
        sys.exit(EXIT_COMMAND_FAILED)


def _command_text(command: dict[str, Any]) -> str:
    result = command.get("result") or {}
    detail = result.get("detail") if isinstance(result, dict) else None
    line = f"{command['command_id']}  {command['kind']} {command['meter_id']}: {command['state']}"
    return line + (f" ({detail})" if detail else "")


def _command_options(fn: Any, wait: float | None = None) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the command as JSON.")(fn)
    fn = click.option(
        "--expires",
        type=click.FloatRange(1, 30 * 86400),
        default=3600,
        show_default=True,
        help="Seconds the command may wait for its meter.",
    )(fn)
    return click.option(
        "--wait",
        type=click.FloatRange(0, 86400),
        default=wait,
        show_default=wait is not None,
        help="Wait up to this many seconds for the command to end; exit 3 unless it succeeded.",
    )(fn)


@main.command()
@click.argument("meter_id")
@_command_options
@click.pass_context
def disconnect(ctx: click.Context, /, meter_id: str, **options: Any) -> None:
    """Open the meter's relay (disconnect control), confirmed by reading it back."""
    _command(ctx, meter_id, "disconnect", {}, options)


@main.command()
@click.argument("meter_id")
@_command_options
@click.pass_context
def reconnect(ctx: click.Context, /, meter_id: str, **options: Any) -> None:
    """Close the meter's relay again, confirmed by reading it back."""
    _command(ctx, meter_id, "reconnect", {}, options)


@main.command("sync-time")
@click.argument("meter_id")
@_command_options
@click.pass_context
def sync_time(ctx: click.Context, /, meter_id: str, **options: Any) -> None:
    """Set the meter's clock to hesd's time, in the meter's time zone; reports the offset."""
    _command(ctx, meter_id, "sync_time", {}, options)


@main.command()
@click.argument("meter_id")
@click.option("--normal", type=float, help="threshold_normal: active power in W.")
@click.option("--emergency", type=float, help="threshold_emergency: active power in W.")
@click.option("--over", type=click.IntRange(0), help="min_over_threshold_duration, seconds.")
@click.option("--under", type=click.IntRange(0), help="min_under_threshold_duration, seconds.")
@_command_options
@click.pass_context
def limit(
    ctx: click.Context,
    /,
    meter_id: str,
    *,
    normal: float | None,
    emergency: float | None,
    over: int | None,
    under: int | None,
    **options: Any,
) -> None:
    """Set the meter's load limit (limiter), confirmed by reading it back.

    hesctl limit METER --normal 7500 [--emergency 5000] [--over 60] [--under 60]: thresholds in
    W of active power, durations in seconds the load must stay over (under) the threshold before
    the meter disconnects (reconnects). Only what differs from the meter's settings is written.
    """
    given = {
        "threshold_normal": normal,
        "threshold_emergency": emergency,
        "min_over_threshold_duration": over,
        "min_under_threshold_duration": under,
    }
    params = {name: _number(value) for name, value in given.items() if value is not None}
    if not params:
        raise click.UsageError("give at least one of --normal, --emergency, --over, --under")
    _command(ctx, meter_id, "limit", params, options)


def _number(value: float) -> int | float:
    return int(value) if isinstance(value, float) and value.is_integer() else value


@main.command("push-setup")
@click.argument("meter_id")
@click.option("--destination", help="Where the meter pushes: HOST:PORT (IPv6 in brackets).")
@click.option("--transport", type=click.Choice(("tcp", "udp")), help="How it pushes there.")
@click.option(
    "--window",
    "windows",
    multiple=True,
    help="A daily push window HH:MM-HH:MM in the meter's local time (repeatable).",
)
@click.option("--any-time", is_flag=True, help="Clear the windows: push at any time.")
@click.option("--randomisation", type=click.IntRange(0, 0xFFFF), help="Random delay, seconds.")
@click.option("--retries", type=click.IntRange(0, 0xFF), help="Number of retries.")
@click.option("--repetition-delay", type=click.IntRange(0, 0xFFFF), help="Between retries, s.")
@_command_options
@click.pass_context
def push_setup(
    ctx: click.Context,
    /,
    meter_id: str,
    *,
    destination: str | None,
    transport: str | None,
    windows: tuple[str, ...],
    any_time: bool,
    randomisation: int | None,
    retries: int | None,
    repetition_delay: int | None,
    **options: Any,
) -> None:
    """Set where and when the meter pushes (push setup), confirmed by reading it back.

    The classic case re-points meters at a new HES address: hesctl push-setup METER
    --destination 10.0.0.5:4059. Only what differs from the meter's settings is written.
    """
    if windows and any_time:
        raise click.UsageError("give --window or --any-time, not both")
    given: dict[str, Any] = {
        "destination": destination,
        "transport": transport,
        "communication_window": list(windows) if windows or any_time else None,
        "randomisation_start_interval": randomisation,
        "number_of_retries": retries,
        "repetition_delay": repetition_delay,
    }
    params = {name: value for name, value in given.items() if value is not None}
    if not params:
        raise click.UsageError(
            "give at least one of --destination, --transport, --window, --any-time, "
            "--randomisation, --retries, --repetition-delay"
        )
    _command(ctx, meter_id, "push_setup", params, options)


@main.command()
@click.argument("meter_id")
@click.option(
    "--category",
    "categories",
    multiple=True,
    type=click.Choice(EVENT_CATEGORIES),
    help="An event category (repeatable) [all].",
)
@click.option("--from", "start", help="From this ISO 8601 time [24 h ago].")
@click.option("--to", "end", help="To this ISO 8601 time [now].")
@functools.partial(_command_options, wait=120.0)
@click.pass_context
def events(
    ctx: click.Context,
    /,
    meter_id: str,
    *,
    categories: tuple[str, ...],
    start: str | None,
    end: str | None,
    **options: Any,
) -> None:
    """The meter's event logs over --from/--to, read by a queued command, as a table.

    Queues a read command (kind read, params events) that waits for the meter as any command
    does, follows it (--wait), and prints its events: time, category, kind, severity, the
    vendor's code and name, as the MDM gets them. Exit 3 unless the read succeeded in time.
    """
    now = datetime.now(UTC)
    params = {
        "events": list(categories or EVENT_CATEGORIES),
        "from": start or (now - timedelta(days=1)).isoformat(),
        "to": end or now.isoformat(),
    }
    command = _submit(ctx, meter_id, "read", params, options)
    if options["as_json"]:
        click.echo(json.dumps(command, indent=2))
    elif command["state"] != "succeeded":
        click.echo(_command_text(command))
    else:
        found = (command.get("result") or {}).get("data", {})
        rows = [
            (e["timestamp"], e["category"], e["kind"], e["severity"], str(e["code"]), e["name"])
            for e in found.get("events", [])
        ]
        if rows:
            click.echo(_table(("TIME", "CATEGORY", "EVENT", "SEVERITY", "CODE", "NAME"), rows))
        else:
            click.echo("(no events in that range)")
        for error in found.get("errors", []):
            click.echo(f"error: {error}", err=True)
    if command["state"] != "succeeded":
        sys.exit(EXIT_COMMAND_FAILED)


@main.command()
@click.option(
    "--state", type=click.Choice(("queued", "sent", *FINAL_STATES)), help="Only in this state."
)
@click.option("--meter", "meter_id", help="Only this meter's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def commands(ctx: click.Context, state: str | None, meter_id: str | None, as_json: bool) -> None:
    """Commands, newest first: who asked what of which meter, and how it ended."""
    query = {k: v for k, v in (("state", state), ("meter", meter_id)) if v}
    found = _client(ctx).json("GET", "/api/v1/commands" + (f"?{urlencode(query)}" if query else ""))
    if as_json:
        click.echo(json.dumps(found["commands"], indent=2))
        return
    rows = [
        (
            c["command_id"],
            c["meter_id"],
            c["kind"],
            c["state"],
            c["updated_at"] or "-",
            str(c["attempts"]),
        )
        for c in found["commands"]
    ]
    click.echo(_table(("COMMAND", "METER", "KIND", "STATE", "UPDATED", "ATTEMPTS"), rows))


@main.command()
@click.argument("command_id")
@click.pass_context
def cancel(ctx: click.Context, command_id: str) -> None:
    """Cancel a queued command (one already sent to its meter cannot be)."""
    command = _client(ctx).json("DELETE", f"/api/v1/commands/{quote(command_id, safe='')}")
    click.echo(_command_text(command))
