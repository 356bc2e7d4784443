"""``[api]`` of hesd.toml: the unix socket, the TCP listener for the MDM (TLS, mutual TLS, the
loopback-only plaintext escape hatch) and its clients (``[api.clients.NAME]``: scopes, address
allowlist, the name of its key in the secrets file). Parsed with the rest by ``hesd.config``."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from adapters.schema import NAME_PATTERN, ConfigError, Table

__all__ = [
    "API_RESERVED_CLIENTS",
    "API_SCOPES",
    "ApiClientConfig",
    "ApiConfig",
    "IPNetwork",
    "optional_path",
    "parse_api",
]

API_SCOPES: Final = ("read", "command", "admin")
API_RESERVED_CLIENTS: Final = ("socket", "anonymous")  # what the audit calls the socket / no key
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ApiClientConfig:
    """One client of the API on TCP (``[api.clients.NAME]``); its key is in the secrets file."""

    name: str
    scopes: tuple[str, ...]  # of API_SCOPES, in that order
    allow: tuple[IPNetwork, ...]  # peer addresses it may call from
    key: str  # name of its key in the secrets file's [api_keys]


@dataclass(frozen=True, slots=True)
class ApiConfig:
    socket: Path
    socket_mode: int
    max_request_bytes: int  # on the unix socket
    listen: tuple[str, int] | None  # TCP for the MDM; None: no TCP listener
    tls_cert_file: Path | None  # server certificate chain (and key, unless tls_key_file)
    tls_key_file: Path | None
    tls_client_ca_file: Path | None  # mutual TLS: clients need a certificate from these CAs
    insecure_plaintext: bool  # TCP without TLS, loopback addresses only (tests)
    listen_max_request_bytes: int  # on TCP
    clients: tuple[ApiClientConfig, ...]
    audit_retention_days: int  # api_audit rows older than this are deleted
    audit_max_rows: int  # and the oldest beyond this many


def parse_api(table: Table, base: Path, state_dir: Path) -> ApiConfig:
    socket_path = table.path("socket", base=state_dir, default="hesd.sock")
    if len(os.fsencode(socket_path)) > 107:  # sockaddr_un.sun_path is 108 bytes with the NUL
        raise table.error("socket", f"unix socket path longer than 107 bytes: {socket_path}")
    listen_text = table.string(
        "listen", default="", describe='"host:port" (port 0..65535, 0: any free one), or empty'
    )
    listen = _listen_address(table, listen_text) if listen_text else None
    plaintext = table.boolean("insecure_plaintext", default=False)
    files: dict[str, Path | None] = {}
    for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
        path = optional_path(table, key, base)
        if path is not None and listen is None:
            raise table.error(key, "is only used with api.listen")
        if path is not None and plaintext:
            raise table.error(key, "is not used with api.insecure_plaintext = true")
        if path is not None and not path.is_file():
            raise table.error(key, f"file {path} not found")
        files[key] = path
    if listen is not None and not plaintext and files["tls_cert_file"] is None:
        raise table.error(
            "tls_cert_file",
            "missing: api.listen serves the API on TCP, which needs TLS (the server certificate "
            "chain, PEM); only a loopback listener may set insecure_plaintext = true instead",
        )
    if plaintext and listen is None:
        raise table.error("insecure_plaintext", "is only used with api.listen")
    if plaintext and listen is not None and not _is_loopback(listen[0]):
        raise table.error(
            "insecure_plaintext",
            f'only for a loopback api.listen (127.0.0.0/8 or ::1), got "{listen_text}": API keys '
            "must not cross a network in plaintext; serve TLS with api.tls_cert_file",
        )
    if files["tls_key_file"] is not None and files["tls_cert_file"] is None:
        raise table.error("tls_key_file", "needs api.tls_cert_file (the server certificate)")
    clients = _api_clients(table)
    if listen is not None and not clients:
        raise table.error(
            "listen", "no [api.clients.<name>] is configured, so nobody could call this listener"
        )
    config = ApiConfig(
        socket=socket_path,
        socket_mode=table.integer("socket_mode", lo=0, hi=0o777, default=0o660),
        max_request_bytes=table.integer(
            "max_request_bytes", lo=1024, hi=1 << 31, default=256 << 20
        ),
        listen=listen,
        tls_cert_file=files["tls_cert_file"],
        tls_key_file=files["tls_key_file"],
        tls_client_ca_file=files["tls_client_ca_file"],
        insecure_plaintext=plaintext,
        listen_max_request_bytes=table.integer(
            "listen_max_request_bytes", lo=1024, hi=1 << 31, default=16 << 20
        ),
        clients=clients,
        audit_retention_days=table.integer("audit_retention_days", lo=1, hi=3650, default=90),
        audit_max_rows=table.integer("audit_max_rows", lo=1000, hi=100_000_000, default=1_000_000),
    )
    table.finish()
    return config


def _api_clients(api_t: Table) -> tuple[ApiClientConfig, ...]:
    clients: list[ApiClientConfig] = []
    key_owner: dict[str, str] = {}
    named = api_t.tables(
        "clients",
        describe="a client name of 1..64 of A-Z a-z 0-9 _ . -",
    )
    for name, table in named.items():
        if name in API_RESERVED_CLIENTS:
            raise ConfigError(
                table.source,
                f"{api_t.key_path('clients')}.{name}",
                f'the name "{name}" is reserved (the audit uses it for '
                + ("calls on the unix socket)" if name == "socket" else "calls without a key)"),
            )
        scopes = table.string_list(
            "scopes",
            pattern="|".join(API_SCOPES),
            describe="scopes",
            describe_item="one of " + ", ".join(f'"{s}"' for s in API_SCOPES),
        )
        if not scopes:
            raise table.error("scopes", "expected at least one of " + ", ".join(API_SCOPES))
        allow_text = table.string_list("allow", describe="IP addresses or networks")
        if not allow_text:
            raise table.error(
                "allow",
                'expected at least one IP address or network ("0.0.0.0/0" and "::/0" allow any)',
            )
        allow: list[IPNetwork] = []
        for index, text in enumerate(allow_text):
            try:
                allow.append(ipaddress.ip_network(text, strict=True))
            except ValueError as exc:
                raise ConfigError(
                    table.source,
                    f"{table.key_path('allow')}[{index}]",
                    'expected an IP address or network such as "192.0.2.7", "10.0.0.0/8" or '
                    f'"2001:db8::/32", got "{text}" ({exc})',
                ) from None
        key = table.string(
            "key",
            default=name,
            pattern=NAME_PATTERN,
            describe="the name of a key in the secrets file's [api_keys]",
        )
        if key in key_owner:
            raise table.error(
                "key",
                f'"{key}" is already the key of api.clients.{key_owner[key]}; '
                "every client needs a key of its own",
            )
        key_owner[key] = name
        table.finish()
        clients.append(
            ApiClientConfig(
                name=name,
                scopes=tuple(s for s in API_SCOPES if s in scopes),
                allow=tuple(allow),
                key=key,
            )
        )
    return tuple(clients)


def _listen_address(table: Table, text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or any(c.isspace() for c in host) or not port.isdigit():
        raise table.error(
            "listen", f'expected "host:port" (port 0..65535, 0: any free one), got "{text}"'
        )
    if int(port) > 65535:
        raise table.error("listen", f'port {port} is not in 0..65535, in "{text}"')
    return host, int(port)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it could resolve to anything


def optional_path(table: Table, key: str, base: Path) -> Path | None:
    """A path, or None for an empty string; a relative path is relative to ``base``."""
    text = table.string(key, default="", describe="a path, or empty for none")
    return None if not text else (Path(text) if Path(text).is_absolute() else base / text)
