"""``hesctl firmware``: upload images and upgrade meters over the air (``hesd/firmware.py``).

* ``hesctl firmware upgrade METER IMAGE_FILE``: uploads the image unless hesd has one with the
  same SHA-256, queues a ``firmware_upgrade`` command, and with ``--wait`` follows it with a
  progress bar on stderr (blocks done of the total) to its end; exit 3 unless it succeeded;
* ``hesctl firmware images``: the stored images.

They register on ``hesd.ctl.main``; ``hesd.ctl`` imports this module once ``main`` exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import click

from hesd.ctl import (
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    Client,
    Unreachable,
    _client,
    _fail,
    _post_json,
    _table,
    main,
)
from hesd.ctl_commands import FINAL_STATES, _report

__all__ = ["firmware", "images", "upgrade"]

POLL: Final = 0.5  # seconds between looks at a command being followed


@main.group()
def firmware() -> None:
    """Firmware images and upgrades over the air."""


def _upload(client: Client, data: bytes, sha: str, name: str) -> dict[str, Any]:
    """The stored image ``sha``: found, or uploaded now."""
    try:
        status, _, body = client.request("GET", f"/api/v1/firmware/images/{sha}")
    except Unreachable as exc:
        _fail(str(exc), EXIT_UNREACHABLE)
    if status == 200:
        found: dict[str, Any] = json.loads(body)
        return found
    if status != 404:
        client.call("GET", f"/api/v1/firmware/images/{sha}")  # prints hesd's problem, exits
    limit = client.json("GET", "/api/v1/firmware/images")["max_image_bytes"]
    if len(data) > limit:
        _fail(
            f"{name}: {len(data)} bytes; hesd takes images of at most {limit} bytes "
            "(firmware.max_image_bytes)",
            EXIT_REFUSED,
        )
    stored: dict[str, Any] = client.json(
        "POST",
        "/api/v1/firmware/images",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    return stored


@firmware.command()
@click.argument("meter_id")
@click.argument(
    "image_file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
)
@click.option(
    "--identifier",
    help="image_identifier the meter expects: text, or 0x and hex digits "
    "[a hesd-sim image: its version].",
)
@click.option(
    "--version",
    "version",
    help="Firmware version the meter reports once the image is active [read from a hesd-sim "
    "image].",
)
@click.option(
    "--activate-at",
    help="ISO 8601 time with offset: the meter activates the image then (its image activation "
    "scheduler) [at once].",
)
@click.option(
    "--expires",
    type=click.FloatRange(60, 30 * 86400),
    default=86400,
    show_default=True,
    help="Seconds the upgrade may take, waiting for the meter and retries included.",
)
@click.option(
    "--wait",
    type=click.FloatRange(0, 30 * 86400),
    is_flag=False,
    flag_value=30 * 86400,
    default=None,
    help="Follow the upgrade with a progress bar until it ends (or this many seconds); "
    "exit 3 unless it succeeded.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the command as JSON.")
@click.pass_context
def upgrade(  # noqa: PLR0917 - one option per parameter of the upgrade
    ctx: click.Context,
    meter_id: str,
    image_file: Path,
    identifier: str | None,
    version: str | None,
    activate_at: str | None,
    expires: float,
    wait: float | None,
    as_json: bool,
) -> None:
    """Upgrade METER's firmware with IMAGE_FILE over the air (IC 18 image transfer).

    The image is uploaded unless hesd has it already. A broken connection does not restart the
    transfer: the next attempt resumes where the meter says it stopped.
    """
    client = _client(ctx)
    data = image_file.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    image = _upload(client, data, sha, str(image_file))
    params: dict[str, Any] = {"image": sha}
    for key, value in (
        ("image_identifier", identifier),
        ("version", version),
        ("activate_at", activate_at),
    ):
        if value is not None:
            params[key] = value
    body = {
        "meter_id": meter_id,
        "kind": "firmware_upgrade",
        "params": params,
        "expires_in": expires,
    }
    command = _post_json(client, "/api/v1/commands", body)
    if wait is not None:
        command = _follow(client, command, wait, f"{meter_id} {image['version'] or sha[:12]}")
    _report(command, as_json=as_json, followed=wait is not None)


def _follow(client: Client, command: dict[str, Any], wait: float, label: str) -> dict[str, Any]:
    """Poll the command until it ends or ``wait`` seconds pass, drawing blocks done of the
    total on stderr (the bar appears once the meter has said how many blocks there are)."""
    deadline = time.monotonic() + wait
    url = f"/api/v1/commands/{command['command_id']}"
    with contextlib.ExitStack() as stack:
        bar = None
        shown = 0
        while command["state"] not in FINAL_STATES and time.monotonic() < deadline:
            time.sleep(POLL)  # polling the daemon: it owns the command's progress
            command = client.json("GET", url)
            progress = command.get("progress") or {}
            total, done = progress.get("blocks_total"), progress.get("blocks_done") or 0
            if bar is None and isinstance(total, int) and total > 0:
                bar = stack.enter_context(
                    click.progressbar(
                        length=total, label=label, file=sys.stderr, show_pos=True, width=30
                    )
                )
            if bar is not None and isinstance(done, int) and done > shown:
                bar.update(done - shown)
                shown = done
    return command


@firmware.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def images(ctx: click.Context, as_json: bool) -> None:
    """Stored firmware images, oldest first."""
    found = _client(ctx).json("GET", "/api/v1/firmware/images")
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [
        (
            i["sha256"],
            str(i["size"]),
            i["received_at"],
            i["version"] or "-",
            "yes" if i["in_use"] else "no",
        )
        for i in found["images"]
    ]
    click.echo(_table(("SHA256", "SIZE", "RECEIVED", "VERSION", "IN USE"), rows))
