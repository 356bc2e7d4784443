"""``hesctl``: the operator's command line, a client of the hesd API on its unix socket.

Which socket: ``--socket``, else ``$HESD_SOCKET``, else ``api.socket`` of the configuration
(``--config``, ``$HESD_CONFIG``, or the embedded defaults). Exit codes: 0 success, 1 the daemon
refused the request (its message is printed), 2 the daemon cannot be reached or the usage is wrong.
``hesctl vendors check`` works offline: it needs no daemon (exit 1: a file is not valid).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn
from urllib.parse import quote, urlencode

import click

from adapters.hooks import load_adapter
from adapters.profile import load_profile
from adapters.schema import ConfigError
from hesd import __version__
from hesd.config import load_config, resolve_config_path
from protocols.errors import HesdError

__all__ = ["main"]

EXIT_REFUSED: Final = 1
EXIT_UNREACHABLE: Final = 2
PAGE: Final = 10_000


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("hesd", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self._path))
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Unreachable(Exception):
    pass


class Client:
    """A blocking HTTP client of the hesd API (hesctl is a short-lived, one-request program)."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = _UnixConnection(self.path, self.timeout)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except (FileNotFoundError, ConnectionRefusedError):
            raise Unreachable(
                f"hesd is not running (nothing answers on {self.path}); "
                "start it with 'hesd run' or 'systemctl start hesd'"
            ) from None
        except PermissionError:
            raise Unreachable(
                f"cannot reach hesd at {self.path}: permission denied "
                "(operators need to be in the hesd group)"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"cannot reach hesd at {self.path}: {exc}") from None
        finally:
            conn.close()

    def call(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[dict[str, str], bytes]:
        try:
            status, response_headers, data = self.request(method, url, body, headers)
        except Unreachable as exc:
            _fail(str(exc), EXIT_UNREACHABLE)
        if status >= 400:
            try:
                detail = json.loads(data)["detail"]
            except (ValueError, KeyError, TypeError):
                detail = data.decode("utf-8", "replace") or f"HTTP {status}"
            _fail(str(detail), EXIT_REFUSED)
        return response_headers, data

    def json(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        return json.loads(self.call(method, url, body, headers)[1])


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"hesctl: {message}", err=True)
    sys.exit(code)


class _Daemon:
    """Where the daemon is, found on first use: offline commands need no configuration."""

    def __init__(self, config_path: Path | None, socket_path: Path | None) -> None:
        self.config_path = config_path
        self.socket_path = socket_path
        self.client: Client | None = None

    def connect(self) -> Client:
        if self.client is None:
            socket_path = self.socket_path
            if socket_path is None:
                try:
                    socket_path = load_config(resolve_config_path(self.config_path)).api.socket
                except HesdError as exc:
                    _fail(str(exc), EXIT_UNREACHABLE)
            self.client = Client(socket_path)
        return self.client


def _client(ctx: click.Context) -> Client:
    daemon = ctx.obj
    assert isinstance(daemon, _Daemon)
    return daemon.connect()


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return "\n".join(lines)


def _age_units(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s"


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hesctl")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="hesd.toml of the daemon (default: $HESD_CONFIG, else the embedded defaults).",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path),
    envvar="HESD_SOCKET",
    help="API socket of the daemon (default: api.socket of the configuration).",
)
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, socket_path: Path | None) -> None:
    """hesctl, the command line of the hesd Head End System."""
    ctx.obj = _Daemon(config_path, socket_path)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the daemon's answer as JSON.")
@click.option(
    "--wait",
    type=click.FloatRange(0, 3600),
    default=0,
    help="Wait up to this many seconds for the daemon to answer.",
)
@click.pass_context
def status(ctx: click.Context, as_json: bool, wait: float) -> None:
    """Daemon version, uptime, sessions, meters and outbox."""
    client = _client(ctx)
    deadline = time.monotonic() + wait
    while True:
        try:
            status_code, _, data = client.request("GET", "/api/v1/status")
            break
        except Unreachable as exc:
            if time.monotonic() >= deadline:
                _fail(str(exc), EXIT_UNREACHABLE)
            time.sleep(0.1)
    if status_code >= 400:
        _fail(f"status failed: HTTP {status_code}", EXIT_REFUSED)
    info = json.loads(data)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    meters, outbox = info["meters"], info["outbox"]
    rows = [
        ("hesd", f"{info['version']} ({info['state']})"),
        ("uptime", _age_units(int(info["uptime_seconds"]))),
        ("config", info["config"]),
        ("vendors", ", ".join(info["vendors"]) or "none"),
        ("sessions", str(info["sessions"]["active"])),
        (
            "meters",
            f"{meters['total']} ({meters['online']} online, {meters['offline']} offline, "
            f"{meters['unknown']} never seen)",
        ),
        (
            "outbox",
            f"{outbox['depth']} records waiting"
            + (
                f", oldest {_age_units(int(outbox['oldest_age_seconds']))}"
                if outbox["oldest_age_seconds"] is not None
                else ""
            )
            + f", {outbox['dead_letters']} in dead letters",
        ),
        ("api", _api_text(info.get("api"))),
    ]
    alerts = info.get("alerts")
    if alerts is not None:
        rows.append(
            (
                "alerts",
                f"{alerts['received']} received, {alerts['reads']} event-log reads "
                f"({alerts['read_failures']} failed), {alerts['unconfirmed']} unconfirmed",
            )
        )
    intake = info.get("intake")
    if intake is not None:
        rows.append(("intake", _intake_text(intake)))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


def _intake_text(intake: dict[str, Any]) -> str:
    """Whether hesd reads meters' TCP sockets now, and how often it stopped (hesd/intake.py)."""
    if not intake["enabled"]:
        now = "off"
    elif intake["paused"]:
        now = "PAUSED: the event loop is overloaded"
    else:
        now = "reading"
    return (
        f"{now} (loop lag {intake['lag_ms']:g} ms), {intake['pauses']} pauses, "
        f"{intake['paused_seconds']:g} s paused since start"
    )


def _api_text(api: dict[str, Any] | None) -> str:
    if api is None:
        return "-"
    if api["listen"] is None:
        return "unix socket only"
    tls = "mutual TLS" if api["mutual_tls"] else ("TLS" if api["tls"] else "PLAINTEXT")
    refused = api["connections_refused"]
    return (
        f"{api['listen']} ({tls}, {api['clients']} clients"
        + (f", {refused} connections refused" if refused else "")
        + (f", {api['tls_failures']} failed handshakes" if api["tls_failures"] else "")
        + ")"
    )


def _fetch_meters(client: Client, status: str | None, vendor: str | None) -> list[dict[str, Any]]:
    meters: list[dict[str, Any]] = []
    after = ""
    while True:
        query: dict[str, str | int] = {"limit": PAGE, "after": after}
        if status:
            query["status"] = status
        if vendor:
            query["vendor"] = vendor
        page = client.json("GET", "/api/v1/meters?" + urlencode(query))
        meters.extend(page["meters"])
        if not page["next_after"]:
            return meters
        after = page["next_after"]


def _signal(dbm: int | None) -> str:
    return "-" if dbm is None else f"{dbm} dBm"


def _meter_row(m: dict[str, Any]) -> list[str]:
    return [
        m["meter_id"],
        m["vendor"],
        m["transport"],
        m["status"],
        _when(m["last_seen"]),
        _signal(m["signal_quality"]),
        m["firmware"] or "-",
    ]


@main.group(invoke_without_command=True)
@click.option(
    "--status",
    type=click.Choice(["online", "offline", "unknown"]),
    help="Only meters in this state.",
)
@click.option("--vendor", help="Only meters of this vendor profile.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def meters(ctx: click.Context, status: str | None, vendor: str | None, as_json: bool) -> None:
    """List meters (subcommands: show, import, export)."""
    if ctx.invoked_subcommand is not None:
        return
    found = _fetch_meters(_client(ctx), status, vendor)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    headers = ("METER", "VENDOR", "TRANSPORT", "STATUS", "LAST SEEN", "SIGNAL", "FIRMWARE")
    click.echo(_table(headers, [_meter_row(m) for m in found]))
    click.echo(f"{len(found)} meters")


@meters.command("show")
@click.argument("meter_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def meters_show(ctx: click.Context, meter_id: str, as_json: bool) -> None:
    """Everything the registry holds about one meter."""
    meter = _client(ctx).json("GET", f"/api/v1/meters/{quote(meter_id, safe='')}")
    if as_json:
        click.echo(json.dumps(meter, indent=2))
        return
    meter["last_seen"] = _when(meter["last_seen"])
    meter["signal_quality"] = _signal(meter["signal_quality"])
    meter["tags"] = ";".join(f"{k}={v}" for k, v in meter["tags"].items())
    width = max(len(k) for k in meter)
    for key, value in meter.items():
        click.echo(f"{key.ljust(width)}  {'-' if value in (None, '') else value}")


@meters.command("import")
@click.argument("file", type=click.File("rb"))
@click.option("--dry-run", is_flag=True, help="Validate the file only; change nothing.")
@click.pass_context
def meters_import(ctx: click.Context, file: Any, dry_run: bool) -> None:
    """Create or update meters from an inventory CSV (format: docs/inventory.md).

    The whole file is validated first; a file with any error changes nothing.
    """
    name = os.path.basename(file.name) if file.name != "<stdin>" else "stdin"
    body = file.read()
    query = "?dry_run=1" if dry_run else ""
    result = _client(ctx).json(
        "POST",
        f"/api/v1/meters/import{query}",
        body,
        {"Content-Type": "text/csv; charset=utf-8", "X-Hesd-Source": name},
    )
    if dry_run:
        click.echo(f"{name}: {result['meters']} meters, no errors (dry run: nothing changed)")
    else:
        click.echo(
            f"{name}: {result['created']} created, {result['updated']} updated, "
            f"{result['unchanged']} unchanged"
        )


@meters.command("export")
@click.argument("file", type=click.File("w"), default="-")
@click.pass_context
def meters_export(ctx: click.Context, file: Any) -> None:
    """Write the inventory as CSV (to FILE, or standard output), in the import format."""
    client = _client(ctx)
    after = ""
    first = True
    while True:
        headers, data = client.call(
            "GET", "/api/v1/meters?" + urlencode({"format": "csv", "limit": PAGE, "after": after})
        )
        text = data.decode("utf-8")
        if not first:
            text = text.split("\n", 1)[1]  # one header row for the whole export
        file.write(text)
        first = False
        after = headers.get("X-Next-After", "")
        if not after:
            return


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def outbox(ctx: click.Context, as_json: bool) -> None:
    """Records waiting for the MDM: depth, age, bytes, in flight, dead letters.

    Every count is of records (a reading, an event, a command result), however the outbox
    stores them (a push's readings share a row); the disk use is in bytes."""
    if ctx.invoked_subcommand is not None:
        return
    info = _client(ctx).json("GET", "/api/v1/outbox")
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    age = info["oldest_age_seconds"]
    rows = [
        (
            "waiting",
            f"{info['depth']} records" + (f", oldest {_age_units(int(age))}" if age else ""),
        ),
        (
            "disk",
            f"{info['bytes']} of {info['limit_bytes']} bytes"
            + (" (PRESSURE: scheduled reads slowed)" if info["pressure"] else ""),
        ),
        ("in flight", f"{info['in_flight']} records"),
        ("dead letters", f"{info['dead_letters']} records"),
        ("refused", f"{info['refused']} records"),
    ]
    forwarding = info["forwarding"]
    if forwarding is None:
        rows.append(("forwarding", "off (uplink.url is empty)"))
    else:
        delivered = ", ".join(f"{n} {k}s" for k, n in forwarding["delivered"].items())
        rows += [
            ("MDM", forwarding["url"]),
            ("delivered", delivered),
            ("retries", str(forwarding["retries"])),
            ("last error", forwarding["last_error"] or "-"),
        ]
    click.echo(_table(("OUTBOX", ""), rows))
    if info["dead_batches"]:
        click.echo()
        click.echo(
            _table(
                ("DEAD BATCH", "KIND", "RECORDS", "SINCE", "MDM ANSWER"),
                [
                    (
                        b["batch_id"],
                        b["kind"],
                        str(b["records"]),
                        b["oldest"],
                        (b["error"] or "")[:60],
                    )
                    for b in info["dead_batches"]
                ],
            )
        )


@outbox.command("replay")
@click.pass_context
def outbox_replay(ctx: click.Context) -> None:
    """Send the dead letters again (after the MDM side was fixed)."""
    result = _client(ctx).json("POST", "/api/v1/outbox/replay")
    click.echo(f"{result['replayed']} records queued again")


@outbox.command("purge")
@click.option("--dead-letters", "dead", is_flag=True, required=True, help="Delete dead letters.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def outbox_purge(ctx: click.Context, dead: bool, yes: bool) -> None:
    """Delete the dead letters for good (asks first)."""
    client = _client(ctx)
    count = client.json("GET", "/api/v1/outbox")["dead_letters"]
    if not count:
        click.echo("no dead letters")
        return
    if not yes:
        click.confirm(f"Delete {count} dead-letter records for good?", abort=True)
    result = client.json("DELETE", "/api/v1/outbox/dead-letters?confirm=yes")
    click.echo(f"{result['purged']} records deleted")


@main.group()
def vendors() -> None:
    """Vendor profiles: those the daemon has loaded, and checking new files."""


@vendors.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def vendors_list(ctx: click.Context, as_json: bool) -> None:
    """List loaded vendor profiles."""
    found = _client(ctx).json("GET", "/api/v1/vendors")["vendors"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    click.echo(
        _table(
            ("VENDOR", "VERSION", "DESCRIPTION"),
            [(v["name"], v["version"], v["description"]) for v in found],
        )
    )


@vendors.command("check")
@click.argument(
    "files", nargs=-1, required=True, metavar="FILE...", type=click.Path(path_type=Path)
)
def vendors_check(files: tuple[Path, ...]) -> None:
    """Validate vendor profile files without a daemon, e.g. before SIGHUP.

    Loads each FILE as hesd would (conf/vendors/<vendor>.toml, format in docs/vendors.md) and
    finds the vendor adapter its [adapter] name asks for among the installed ones. Prints one
    line per file: "FILE: ok (...)", or the error with the key and what was expected.

    Exit codes: 0 every file is valid, 1 at least one is not, 2 wrong usage.
    """
    failed = False
    for path in files:
        try:
            profile = load_profile(path)
            load_adapter(profile.adapter, profile.source)
        except ConfigError as exc:
            click.echo(str(exc))
            failed = True
            continue
        adapter = f", adapter {profile.adapter}" if profile.adapter else ""
        click.echo(
            f"{profile.source}: ok (vendor {profile.name} version {profile.version}, "
            f"{len(profile.quantities)} quantities, {len(profile.events.codes)} event codes"
            f"{adapter})"
        )
    if failed:
        sys.exit(EXIT_REFUSED)


def _post_json(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.json("POST", url, json.dumps(body).encode(), {"Content-Type": "application/json"})


@main.command()
@click.argument("hex_text", nargs=-1, required=True)
@click.option("--meter", help="Decrypt with this meter's keys (they stay in the daemon).")
@click.option("--json", "as_json", is_flag=True, help="Print the layers as JSON.")
@click.pass_context
def decode(ctx: click.Context, hex_text: tuple[str, ...], meter: str | None, as_json: bool) -> None:
    """Explain a captured WRAPPER or HDLC frame, or a bare APDU, given as hex.

    Spaces, colons and 0x prefixes are allowed. Ciphered APDUs are decrypted with --meter's keys.
    """
    body: dict[str, Any] = {"hex": " ".join(hex_text)}
    if meter:
        body["meter"] = meter
    result = _post_json(_client(ctx), "/api/v1/decode", body)
    if as_json:
        click.echo(json.dumps({"layers": result["layers"]}, indent=2))
    else:
        click.echo(result["text"])


# register their verbs on main
from hesd import ctl_audit, ctl_commands, ctl_firmware, ctl_schedule  # noqa: E402, F401
