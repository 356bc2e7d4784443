"""``hesctl schedule``: the bulk scheduler's schedules, their next and last runs, and runs now.

    hesctl schedule [--json] [--watch]     # table: name, cron, next run, last run, ratio, state
    hesctl schedule show NAME [--json]     # one schedule and its recent runs
    hesctl schedule run NAME [--wait S]    # start a run now (exit 3 unless every reachable
                                           # meter was read)

It registers on ``hesd.ctl.main``; ``hesd.ctl`` imports this module once ``main`` exists.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Final
from urllib.parse import quote

import click

from hesd.ctl import Client, _client, _table, main

EXIT_RUN_INCOMPLETE: Final = 3
BAR: Final = 30


def _time(text: str | None) -> str:
    return "-" if text is None else text.replace("T", " ")


def _ratio(run: dict[str, Any] | None) -> str:
    if run is None or run["success_ratio"] is None:
        return "-"
    return f"{run['success_ratio'] * 100:.1f} %"


def _progress(run: dict[str, Any]) -> str:
    selected = run["selected"]
    share = run["done"] / selected if selected else 0.0
    return f"{share * 100:.0f} %"


def _state(schedule: dict[str, Any]) -> str:
    run = schedule["current_run"]
    if run is None:
        return str(schedule["state"])
    state = "cancelling" if run["stopping"] else schedule["state"]
    return f"{state} {_progress(run)}"


def _last(schedule: dict[str, Any]) -> str:
    run = schedule["last_run"]
    if run is None:
        return "never"
    shown = _time(run["started_at"])
    return shown if run["state"] == "finished" else f"{shown} ({run['state']})"


def _rows(info: dict[str, Any]) -> list[tuple[str, ...]]:
    return [
        (
            s["name"],
            s["cron"],
            _time(s["next_run"]),
            _last(s),
            _ratio(s["last_run"]),
            _state(s),
        )
        for s in info["schedules"]
    ]


def _bar(run: dict[str, Any]) -> str:
    selected = run["selected"]
    share = run["done"] / selected if selected else 0.0
    filled = round(share * BAR)
    return (
        f"[{'#' * filled}{'.' * (BAR - filled)}] {run['done']:,}/{selected:,}  "
        f"ok {run['succeeded']:,}  failed {run['failed']:,}  offline {run['skipped']:,}  "
        f"missed {run['missed']:,}"
    )


def _show(info: dict[str, Any]) -> None:
    headers = ("SCHEDULE", "CRON", "NEXT RUN", "LAST RUN", "RATIO", "STATE")
    click.echo(_table(headers, _rows(info)))
    for schedule in info["schedules"]:
        run = schedule["current_run"]
        if run is not None:
            click.echo(f"{schedule['name']}: {_bar(run)}")
    if info["paused"]:
        click.echo(
            "paused: the outbox is at 90 % of uplink.max_backlog_bytes; no scheduled read "
            "starts until it drains (hesctl outbox)"
        )
    click.echo(f"(cron times in {info['time_zone']}; times shown in UTC)")


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--watch", is_flag=True, help="Redraw until no run is in progress.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@click.pass_context
def schedule(ctx: click.Context, as_json: bool, watch: bool, interval: float) -> None:
    """Schedules of bulk reads: cron, next run, last run and its success ratio, state
    (subcommands: show, run).

    The ratio is the meters read of those reachable at their slot. Times are UTC; the cron
    fields are in the scheduler's time zone (scheduler.time_zone).
    """
    if ctx.invoked_subcommand is not None:
        return
    client = _client(ctx)
    info = client.json("GET", "/api/v1/schedules")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    while True:
        if watch and sys.stdout.isatty():
            click.clear()
        _show(info)
        if not watch or not any(s["current_run"] for s in info["schedules"]):
            return
        time.sleep(interval)  # polling the daemon: it owns the runs' progress
        info = client.json("GET", "/api/v1/schedules")
        if not sys.stdout.isatty():
            click.echo()


@schedule.command("show")
@click.argument("name")
@click.option("--runs", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedule_show(ctx: click.Context, name: str, runs: int, as_json: bool) -> None:
    """One schedule: what it reads of which meters, and its recent runs."""
    info = _client(ctx).json("GET", f"/api/v1/schedules/{quote(name, safe='')}?runs={runs}")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    meters = info["meters"]
    group = [
        f"vendors {', '.join(meters['vendors']) or 'any'}",
        f"transports {', '.join(meters['transports']) or 'any'}",
        "tags " + (";".join(f"{k}={v}" for k, v in meters["tags"].items()) or "any"),
    ]
    ((what, value),) = info["read"].items()
    rows = [
        ("schedule", f"{info['name']} ({'enabled' if info['enabled'] else 'disabled'})"),
        ("cron", info["cron"]),
        ("reads", f"{what} {', '.join(value) if isinstance(value, list) else value}"),
        ("meters", ", ".join(group)),
        ("window", f"{info['window_seconds']:g} s, jitter {info['jitter']}"),
        ("priority", str(info["priority"])),
        ("next run", _time(info["next_run"])),
        ("state", _state(info)),
    ]
    if info["max_backfill_seconds"] is not None:
        rows.append(("max back-fill", f"{info['max_backfill_seconds']:g} s"))
    width = max(len(k) for k, _ in rows)
    for key, text in rows:
        click.echo(f"{key.ljust(width)}  {text}")
    if info["current_run"] is not None:
        click.echo(f"{'progress'.ljust(width)}  {_bar(info['current_run'])}")
    if info["runs"]:
        click.echo()
        click.echo(
            _table(
                ("STARTED", "TRIGGER", "STATE", "METERS", "OK", "FAILED", "OFFLINE", "MISSED",
                 "RATIO", "DETAIL"),
                [
                    (
                        _time(r["started_at"]), r["trigger"], r["state"], f"{r['selected']:,}",
                        f"{r['succeeded']:,}", f"{r['failed']:,}", f"{r['skipped']:,}",
                        f"{r['missed']:,}", _ratio(r), r["detail"][:60],
                    )
                    for r in info["runs"]
                ],
            )
        )  # fmt: skip


def _finished(client: Client, name: str, started_at: str, wait: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait
    url = f"/api/v1/schedules/{quote(name, safe='')}?runs=1"
    while True:
        info = client.json("GET", url)
        last = info["last_run"]
        if info["current_run"] is None and last is not None and last["started_at"] == started_at:
            found: dict[str, Any] = last
            return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)  # polling the daemon: it owns the run's progress


@schedule.command("run")
@click.argument("name")
@click.option(
    "--wait",
    type=click.FloatRange(0, 7 * 86400),
    default=None,
    help="Wait up to this many seconds for the run to end; exit 3 unless every meter "
    "reachable was read.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def schedule_run(ctx: click.Context, name: str, wait: float | None, as_json: bool) -> None:
    """Start a run of the schedule NAME now (enabled or not), within its window."""
    client = _client(ctx)
    info = client.json("POST", f"/api/v1/schedules/{quote(name, safe='')}/run")
    run = info["current_run"]
    if wait is None:
        if as_json:
            click.echo(json.dumps(run, indent=2))
        else:
            click.echo(
                f"{name}: run started at {_time(run['started_at'])} (hesctl schedule --watch)"
            )
        return
    ended = _finished(client, name, run["started_at"], wait)
    if ended is None:
        click.echo(
            f"{name}: the run started at {_time(run['started_at'])} is still going", err=True
        )
        sys.exit(EXIT_RUN_INCOMPLETE)
    if as_json:
        click.echo(json.dumps(ended, indent=2))
    else:
        click.echo(
            f"{name}: {ended['state']}, {ended['succeeded']:,} of {ended['selected']:,} meters read"
            f" ({ended['failed']:,} failed, {ended['skipped']:,} offline, {ended['missed']:,}"
            f" missed), ratio {_ratio(ended)}"
        )
    complete = ended["state"] == "finished" and ended["succeeded"] == (
        ended["selected"] - ended["skipped"]
    )
    if not complete:
        sys.exit(EXIT_RUN_INCOMPLETE)
