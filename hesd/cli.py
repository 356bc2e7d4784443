"""``hesd``: run the daemon, or check a configuration without starting it.

Exit codes: 0 success; 1 runtime failure (a crashed task, the store unusable); 78 (EX_CONFIG) the
configuration is invalid or the state directory/socket is taken. ``systemd/hesd.service`` does not
restart on 78, since retrying cannot fix a bad file.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Final

import click
import structlog
import uvloop

from adapters.hooks import load_adapter
from adapters.schema import ConfigError
from hesd import __version__
from hesd.api.security import ApiGuard
from hesd.config import Config, load_config, resolve_config_path
from hesd.daemon import Daemon, DaemonError
from hesd.logs import configure_logging
from hesd.secrets import load_secrets
from protocols.errors import HesdError

__all__ = ["main"]

EX_CONFIG: Final = 78

log = structlog.get_logger("hesd")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="hesd.toml to use (default: $HESD_CONFIG, else the embedded defaults).",
)


def _load(config_path: Path | None) -> tuple[Config, Path | None]:
    path = resolve_config_path(config_path)
    try:
        return load_config(path), path
    except HesdError as exc:
        click.echo(f"hesd: {exc}", err=True)
        sys.exit(EX_CONFIG)


def _flatten(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _flatten(inner)]
    return [exc]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hesd")
def main() -> None:
    """hesd, the Head End System daemon for smart-meter fleets."""


@main.command()
@config_option
@click.option(
    "--log-format",
    type=click.Choice(["json", "console"]),
    help="Override log.format from the configuration.",
)
def run(config_path: Path | None, log_format: str | None) -> None:
    """Run the daemon in the foreground (systemd: Type=notify)."""
    config, path = _load(config_path)
    configure_logging(log_format or config.log.format, config.log.level)
    daemon = Daemon(config, path, tune_gc=True)
    try:
        uvloop.run(daemon.run())
    except Exception as exc:  # startup failure, or a task that brought the TaskGroup down
        errors = _flatten(exc)
        for error in errors:
            if isinstance(error, HesdError | OSError):
                log.error("daemon.failed", error=str(error))
            else:
                log.error("daemon.crashed", error=repr(error), exc_info=error)
        fatal_config = all(isinstance(e, ConfigError | DaemonError) for e in errors)
        sys.exit(EX_CONFIG if fatal_config else 1)
    log.info("daemon.stopped")


@main.command("check-config")
@click.argument("path", required=False, type=click.Path(path_type=Path, dir_okay=False))
def check_config(path: Path | None) -> None:
    """Validate hesd.toml (PATH, else $HESD_CONFIG, else the embedded defaults), its vendor
    profiles with the vendor adapters they name, and its secrets file, without starting
    anything."""
    resolved = resolve_config_path(path)
    try:
        config = load_config(resolved)
        vendors = config.load_vendor_profiles()
        for profile in vendors.values():
            load_adapter(profile.adapter, profile.source)
        secrets = load_secrets(config.daemon.secrets_file)
        if config.api.clients:  # their keys in the secrets file, the TLS files
            ApiGuard.from_config(config.api, secrets, config.source)
    except HesdError as exc:
        click.echo(f"hesd: {exc}", err=True)
        sys.exit(EX_CONFIG)
    click.echo(f"{config.source}: ok")
    click.echo(f"  state directory: {config.daemon.state_dir}")
    click.echo(f"  API socket:      {config.api.socket}")
    api = config.api
    if api.listen is not None:
        host = f"[{api.listen[0]}]" if ":" in api.listen[0] else api.listen[0]
        scheme = "http" if api.insecure_plaintext else "https"
        mutual = ", mutual TLS" if api.tls_client_ca_file is not None else ""
        click.echo(
            f"  API on TCP:      {scheme}://{host}:{api.listen[1]} "
            f"(clients: {', '.join(c.name for c in api.clients)}{mutual})"
        )
    click.echo(f"  vendor profiles: {', '.join(sorted(vendors))} (from {config.vendors.dir})")
    adapters = [f"{p.adapter} ({p.name})" for _, p in sorted(vendors.items()) if p.adapter]
    click.echo(f"  vendor adapters: {', '.join(adapters) or 'none'}")
    if secrets.source is None:
        click.echo("  secrets:         none configured")
    else:
        click.echo(
            f"  secrets:         {len(secrets.keysets)} keysets, {len(secrets.tokens)} tokens, "
            f"{len(secrets.api_keys)} API keys (from {secrets.source})"
        )
