"""``hesctl schedule``: the bulk scheduler's schedules, their next and last runs, and runs now.

    hesctl schedule [--json] [--watch]     # table: name, cron, next run, last run, ratio, state
    hesctl schedule show NAME [--json]     # one schedule and its recent runs
    hesctl schedule run NAME [--wait [S]]  # start a run now; with --wait follow its progress
                                           # (exit 3 unless every reachable meter was read)

Progress of a run (``--wait``, and the lines under the table of ``--watch``): meters done of
those selected, read (ok), failed, offline, missed, the rate since the run started and an ETA
(the rest at that rate, never past the end of the window, when what has not started is missed).
``run --wait`` draws it on standard error: a bar redrawn in place on a terminal, else a line
every ``--every`` seconds (a log, a pipe), then the final count; the result goes to standard
output.

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
POLL: Final = 0.5  # seconds between looks at a run being followed
FOREVER: Final = 7 * 86400.0  # --wait without a number: until the run ends


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


def _done(run: dict[str, Any]) -> int:
    """Meters whose read has ended: the run in progress says so; a finished run's counts add up."""
    if "done" in run:
        return int(run["done"])
    return int(run["succeeded"] + run["failed"] + run["skipped"] + run["missed"])


def _selecting(run: dict[str, Any]) -> bool:
    """A run in progress that has not selected its meters yet (a run of none ends at once)."""
    return run.get("finished_at") is None and run["selected"] == 0


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _pace(run: dict[str, Any], window: float) -> str:
    """The rate since the run started, and when it should end: the meters left at that rate,
    but no later than the window's end (what has not started by then is missed)."""
    if run.get("finished_at") is not None:
        seconds = run["duration_seconds"] or 0.0
        rate = _done(run) / seconds if seconds > 0 else 0.0
        return f"{rate:,.1f} meters/s, took {_duration(seconds)}"
    elapsed, done = run["elapsed_seconds"], _done(run)
    if elapsed <= 0 or done == 0:
        return "- meters/s, ETA -"
    rate = done / elapsed
    eta = min((run["selected"] - done) / rate, max(0.0, window - elapsed))
    return f"{rate:,.1f} meters/s, ETA {_duration(eta)}"


def _counts(run: dict[str, Any]) -> str:
    return (
        f"ok {run['succeeded']:,}  failed {run['failed']:,}  offline {run['skipped']:,}  "
        f"missed {run['missed']:,}"
    )


def _bar(run: dict[str, Any], window: float) -> str:
    """A run's progress as a bar (a terminal, and the lines under ``hesctl schedule``)."""
    selected, done = run["selected"], _done(run)
    if _selecting(run):
        return f"[{'.' * BAR}] selecting the meters"
    share = done / selected if selected else 1.0
    filled = round(share * BAR)
    return (
        f"[{'#' * filled}{'.' * (BAR - filled)}] {done:,}/{selected:,}  {_counts(run)}  "
        f"{_pace(run, window)}"
    )


def _line(name: str, run: dict[str, Any], window: float, state: str) -> str:
    """A run's progress as one plain line (standard error that is not a terminal)."""
    selected, done = run["selected"], _done(run)
    if _selecting(run):
        return f"{name}: selecting the meters"
    share = done / selected if selected else 1.0
    text = (
        f"{name}: {done:,}/{selected:,} meters ({share * 100:.0f} %), ok {run['succeeded']:,}, "
        f"failed {run['failed']:,}, offline {run['skipped']:,}, missed {run['missed']:,}, "
        f"{_pace(run, window)}"
    )
    return text if state in ("running", "finished") else f"{text} ({state})"


def _show(info: dict[str, Any]) -> None:
    headers = ("SCHEDULE", "CRON", "NEXT RUN", "LAST RUN", "RATIO", "STATE")
    click.echo(_table(headers, _rows(info)))
    for schedule in info["schedules"]:
        run = schedule["current_run"]
        if run is not None:
            click.echo(f"{schedule['name']}: {_bar(run, schedule['window_seconds'])}")
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
        click.echo(
            f"{'progress'.ljust(width)}  {_bar(info['current_run'], info['window_seconds'])}"
        )
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


def _run_state(info: dict[str, Any]) -> str:
    run = info["current_run"]
    if run is not None and run["stopping"]:
        return f"cancelling: {run['stopping']}"
    return str(info["state"])


class _Progress:
    """Draws a followed run's progress on standard error: a bar redrawn in place on a
    terminal, else a line every ``every`` seconds."""

    def __init__(self, name: str, window: float, every: float) -> None:
        self.name, self.window, self.every = name, window, every
        self.tty = sys.stderr.isatty()
        self._last_line: float | None = None
        self._drawn = False

    def show(self, run: dict[str, Any], state: str) -> None:
        if self.tty:
            suffix = "" if state == "running" else f"  ({state})"
            text = f"{self.name} {_bar(run, self.window)}{suffix}"
            click.echo(f"\r{text}\x1b[K", nl=False, err=True)
            self._drawn = True
            return
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.every:
            click.echo(_line(self.name, run, self.window, state), err=True)
            self._last_line = now

    def end(self, run: dict[str, Any] | None) -> None:
        """The final count (a finished run's record), and the terminal's line ended."""
        if run is not None:
            if self.tty:
                click.echo(f"\r{self.name} {_bar(run, self.window)}\x1b[K", nl=False, err=True)
            else:
                click.echo(_line(self.name, run, self.window, run["state"]), err=True)
            self._drawn = self.tty
        if self._drawn:
            click.echo(err=True)


def _follow(
    client: Client, name: str, started: dict[str, Any], wait: float, every: float
) -> dict[str, Any] | None:
    """Poll the schedule until the run that began at ``started_at`` ends (its record) or
    ``wait`` seconds pass (None), showing its progress."""
    deadline = time.monotonic() + wait
    url = f"/api/v1/schedules/{quote(name, safe='')}?runs=1"
    started_at = started["current_run"]["started_at"]
    progress = _Progress(name, started["window_seconds"], every)
    while True:
        info = client.json("GET", url)
        last, run = info["last_run"], info["current_run"]
        if run is None and last is not None and last["started_at"] == started_at:
            progress.end(last)
            found: dict[str, Any] = last
            return found
        if run is not None and run["started_at"] == started_at:
            progress.show(run, _run_state(info))
        if time.monotonic() >= deadline:
            progress.end(None)
            return None
        time.sleep(POLL)  # polling the daemon: it owns the run's progress


@schedule.command("run")
@click.argument("name")
@click.option(
    "--wait",
    type=click.FloatRange(0, FOREVER),
    is_flag=False,
    flag_value=FOREVER,
    default=None,
    help="Follow the run's progress until it ends (or this many seconds); exit 3 unless every "
    "meter reachable was read.",
)
@click.option(
    "--every",
    type=click.FloatRange(0.2, 3600),
    default=10.0,
    show_default=True,
    help="Seconds between progress lines with --wait when standard error is not a terminal.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_context
def schedule_run(
    ctx: click.Context, name: str, wait: float | None, every: float, as_json: bool
) -> None:
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
    ended = _follow(client, name, info, wait, every)
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
