"""hesd.toml: typed, frozen configuration with embedded defaults.

Every key has a default, so ``hesd run`` works without a file (the *embedded defaults*); the
example ``hesd.toml`` at the repository root documents every key and ``docs/configuration.md`` is
the reference. Relative paths in a file are taken relative to the file's directory; with the
embedded defaults, relative to the working directory. Unknown keys are errors.

Which file: ``--config PATH``, else ``$HESD_CONFIG``, else the embedded defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.profile import VENDOR_NAME, VendorProfile, load_profiles
from adapters.schema import ConfigError, Table, load_toml

__all__ = [
    "EMBEDDED",
    "ApiConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "LogConfig",
    "StoreConfig",
    "UplinkConfig",
    "VendorsConfig",
    "load_config",
    "parse_config",
    "resolve_config_path",
]

EMBEDDED: Final = "<embedded defaults>"
LOG_FORMATS: Final = ("console", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    state_dir: Path
    secrets_file: Path | None
    drain_timeout: float


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str
    level: str


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: Path
    socket_mode: int
    max_request_bytes: int


@dataclass(frozen=True, slots=True)
class StoreConfig:
    path: Path
    commit_interval: float
    commit_max_batch: int
    slow_commit: float


@dataclass(frozen=True, slots=True)
class VendorsConfig:
    dir: Path
    enabled: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    url: str
    batch_size: int
    batch_delay: float
    max_backlog_bytes: int


@dataclass(frozen=True, slots=True)
class Config:
    source: str  # the file it came from, or EMBEDDED
    daemon: DaemonConfig
    log: LogConfig
    api: ApiConfig
    store: StoreConfig
    vendors: VendorsConfig
    uplink: UplinkConfig

    def load_vendor_profiles(self) -> dict[str, VendorProfile]:
        return load_profiles(self.vendors.dir, self.vendors.enabled, self.source)


def parse_config(doc: Table, base: Path) -> Config:
    """Validate a parsed hesd.toml; ``base`` anchors its relative paths."""
    daemon_t = doc.table("daemon")
    state_dir = daemon_t.path("state_dir", base=base, default="var")
    secrets_text = daemon_t.string("secrets_file", default="", describe="a path, or empty for none")
    daemon = DaemonConfig(
        state_dir=state_dir,
        secrets_file=(
            None
            if not secrets_text
            else (Path(secrets_text) if Path(secrets_text).is_absolute() else base / secrets_text)
        ),
        drain_timeout=daemon_t.number("drain_timeout", lo=0, hi=3600, default=15.0),
    )
    daemon_t.finish()

    log_t = doc.table("log")
    log = LogConfig(
        format=log_t.choice("format", LOG_FORMATS, default="console"),
        level=log_t.choice("level", LOG_LEVELS, default="info"),
    )
    log_t.finish()

    api_t = doc.table("api")
    api = ApiConfig(
        socket=api_t.path("socket", base=state_dir, default="hesd.sock"),
        socket_mode=api_t.integer("socket_mode", lo=0, hi=0o777, default=0o660),
        max_request_bytes=api_t.integer(
            "max_request_bytes", lo=1024, hi=1 << 31, default=256 << 20
        ),
    )
    if len(os.fsencode(api.socket)) > 107:  # sockaddr_un.sun_path is 108 bytes with the NUL
        raise api_t.error("socket", f"unix socket path longer than 107 bytes: {api.socket}")
    api_t.finish()

    store_t = doc.table("store")
    store = StoreConfig(
        path=store_t.path("path", base=state_dir, default="hesd.db"),
        commit_interval=store_t.number("commit_interval", lo=0, hi=1, default=0.0),
        commit_max_batch=store_t.integer("commit_max_batch", lo=1, hi=100_000, default=2000),
        slow_commit=store_t.number("slow_commit", lo=0.001, hi=60, default=0.5),
    )
    store_t.finish()

    vendors_t = doc.table("vendors")
    vendors = VendorsConfig(
        dir=vendors_t.path("dir", base=base, default="conf/vendors"),
        enabled=vendors_t.string_list(
            "enabled", default=(), pattern=VENDOR_NAME, describe="vendor names (a-z, 0-9, _ and -)"
        ),
    )
    vendors_t.finish()

    uplink_t = doc.table("uplink")
    uplink = UplinkConfig(
        url=uplink_t.string(
            "url", default="", pattern=r"(https?://\S+)?", describe="an http(s) URL, or empty"
        ),
        batch_size=uplink_t.integer("batch_size", lo=1, hi=10_000, default=500),
        batch_delay=uplink_t.number("batch_delay", lo=0, hi=60, default=1.0),
        max_backlog_bytes=uplink_t.integer(
            "max_backlog_bytes", lo=1 << 20, hi=1 << 42, default=4 << 30
        ),
    )
    uplink_t.finish()

    doc.finish()
    return Config(doc.source, daemon, log, api, store, vendors, uplink)


def resolve_config_path(explicit: Path | None) -> Path | None:
    """``--config`` wins, then ``$HESD_CONFIG``; ``None`` means the embedded defaults."""
    if explicit is not None:
        return explicit
    env = os.environ.get("HESD_CONFIG", "")
    return Path(env) if env else None


def load_config(path: Path | None) -> Config:
    """Load hesd.toml from ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return parse_config(Table(EMBEDDED, {}), Path.cwd())
    return parse_config(load_toml(path, source=str(path)), path.resolve().parent)
