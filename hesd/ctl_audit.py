"""``hesctl audit``: the API calls hesd recorded (hesd/api/audit.py), oldest of them first.

Registers on ``hesd.ctl.main``; ``hesd.ctl`` imports this module once ``main`` exists.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlencode

import click

from hesd.ctl import _client, _table, main

_AGO: Final = re.compile(r"(\d+)([smhd])")
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _since(text: str) -> str:
    """``30m``, ``2h``, ``7d`` ago, or an ISO 8601 time (UTC if it has no offset)."""
    ago = _AGO.fullmatch(text.strip())
    if ago is not None:
        delta = timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
        return (datetime.now(UTC) - delta).isoformat()
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected a duration (30m, 2h, 7d) or an ISO 8601 time"
        ) from None
    return (stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)).isoformat()


@main.command()
@click.option("--since", help="Only calls since: 30m, 2h, 7d ago, or an ISO 8601 time.")
@click.option("--client", help="Only this API client's calls ('socket': hesctl and the socket).")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="Most calls."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (newest first).")
@click.pass_context
def audit(
    ctx: click.Context, since: str | None, client: str | None, limit: int, as_json: bool
) -> None:
    """API calls: who, from where, what, the answer; the latest LIMIT, oldest first."""
    query: dict[str, str | int] = {"limit": limit}
    if since is not None:
        query["since"] = _since(since)
    if client is not None:
        query["client"] = client
    calls = _client(ctx).json("GET", "/api/v1/audit?" + urlencode(query))["calls"]
    if as_json:
        click.echo(json.dumps(calls, indent=2))
        return
    rows = [
        (
            c["at"],
            c["client"],
            c["peer"] or "-",
            f"{c['method']} {c['path']}",
            str(c["status"]),
            f"{c['duration_ms']:.1f}",
            c["command_id"] or "-",
        )
        for c in reversed(calls)
    ]
    click.echo(_table(("TIME", "CLIENT", "PEER", "CALL", "STATUS", "MS", "COMMAND"), rows))
