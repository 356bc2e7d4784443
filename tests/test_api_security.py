"""The API on TCP for the MDM (issue 8): TLS, API keys, scopes, allowlists, size limits, audit.

In-process tests serve ``build_app(daemon, guard)`` through the real ``ApiSite`` on 127.0.0.1
(TLS with a CA made here); clients bind 127.0.0.1, 127.0.0.2 or 127.0.0.9 to test the
allowlists. One test runs the whole path in a real hesd process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import signal
import socket
import sqlite3
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import yaml
from click.testing import CliRunner
from structlog.testing import capture_logs

from adapters.schema import ConfigError
from hesd.api.app import SCOPES, build_app
from hesd.api.audit import ApiAudit, ApiCall
from hesd.api.listener import ApiSite
from hesd.api.security import ApiGuard
from hesd.cli import EX_CONFIG
from hesd.cli import main as hesd_main
from hesd.commands import command_kinds
from hesd.config import Config, load_config
from hesd.daemon import Daemon, build_normalisers
from hesd.router import CommandRouter
from hesd.secrets import load_secrets
from hesd.store import MeterEntry, Registry, Store
from hesd.uplink.outbox import Outbox
from tests.conftest import REPO, HesdProcess, wait_for, write_config
from tests.hes_api_contract import contract_middleware, strip_patterns
from tests.pki import Pki, make_pki

MDM_KEY = "mdm-" + "3f9a" * 10  # 44 characters
READER_KEY = "reader-" + "b7c1" * 10
ADMIN_KEY = "admin-" + "e52d" * 10
ALL_KEYS = (MDM_KEY, READER_KEY, ADMIN_KEY)
SECRETS = f"""
[api_keys]
mdm = "{MDM_KEY}"
reader = "{READER_KEY}"
ops = "{ADMIN_KEY}"
"""
CLIENTS = """
[api.clients.mdm]
scopes = ["read", "command"]
allow = ["127.0.0.1"]

[api.clients.reader]
scopes = ["read"]
allow = ["127.0.0.0/30"]

[api.clients.admin]
scopes = ["read", "command", "admin"]
allow = ["127.0.0.2"]
key = "ops"
"""


def write_files(tmp_path: Path, api: str, secrets: str = SECRETS) -> Path:
    """hesd.toml (with ``api`` as its [api] section) and secrets.toml in ``tmp_path``."""
    path = tmp_path / "secrets.toml"
    path.write_text(secrets)
    path.chmod(0o600)
    return write_config(
        tmp_path,
        daemon='state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "secrets.toml"',
        api=api,
    )


def tls_api(pki: Pki, *extra: str) -> str:
    return "\n".join(
        [
            'listen = "127.0.0.1:0"',
            f'tls_cert_file = "{pki.server_cert}"',
            f'tls_key_file = "{pki.server_key}"',
            "listen_max_request_bytes = 4096",
            *extra,
            CLIENTS,
        ]
    )


# -- configuration ----------------------------------------------------------------------------


def _load_guard(path: Path) -> ApiGuard:
    config = load_config(path)
    return ApiGuard.from_config(config.api, load_secrets(config.daemon.secrets_file), config.source)


def config_error(tmp_path: Path, api: str, secrets: str = SECRETS) -> str:
    path = write_files(tmp_path, api, secrets)
    with pytest.raises(ConfigError) as info:
        _load_guard(path)
    return str(info.value).removeprefix(f"{tmp_path / 'hesd.toml'}: ")


def test_a_plaintext_listener_off_loopback_is_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, 'listen = "0.0.0.0:8080"\ninsecure_plaintext = true\n' + CLIENTS
    )
    assert message == (
        "api.insecure_plaintext: only for a loopback api.listen (127.0.0.0/8 or ::1), got "
        '"0.0.0.0:8080": API keys must not cross a network in plaintext; serve TLS with '
        "api.tls_cert_file"
    )


def test_a_listener_needs_tls(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'listen = "[::]:8443"\n' + CLIENTS)
    assert message.startswith("api.tls_cert_file: missing: api.listen serves the API on TCP")


def test_a_listener_needs_clients(tmp_path: Path) -> None:
    message = config_error(tmp_path, 'listen = "127.0.0.1:0"\ninsecure_plaintext = true\n')
    assert message == (
        "api.listen: no [api.clients.<name>] is configured, so nobody could call this listener"
    )


def test_an_unknown_scope_is_refused(tmp_path: Path) -> None:
    message = config_error(
        tmp_path, '[api.clients.mdm]\nscopes = ["read", "write"]\nallow = ["10.0.0.0/8"]\n'
    )
    assert message == (
        'api.clients.mdm.scopes[1]: expected one of "read", "command", "admin", got "write"'
    )


@pytest.mark.parametrize(
    ("allow", "why"),
    [
        ("10.0.0.0/33", "'10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
        ("10.0.0.1/8", "10.0.0.1/8 has host bits set"),
        ("mdm.example.net", "'mdm.example.net' does not appear to be an IPv4 or IPv6 network"),
    ],
)
def test_a_bad_allowlist_entry_is_refused(tmp_path: Path, allow: str, why: str) -> None:
    message = config_error(
        tmp_path, f'[api.clients.mdm]\nscopes = ["read"]\nallow = ["192.0.2.7", "{allow}"]\n'
    )
    assert message == (
        'api.clients.mdm.allow[1]: expected an IP address or network such as "192.0.2.7", '
        f'"10.0.0.0/8" or "2001:db8::/32", got "{allow}" ({why})'
    )


def test_an_empty_allowlist_is_refused(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[api.clients.mdm]\nscopes = ["read"]\nallow = []\n')
    assert message.startswith("api.clients.mdm.allow: expected at least one IP address")


def test_reserved_client_names_and_shared_keys(tmp_path: Path) -> None:
    message = config_error(tmp_path, '[api.clients.socket]\nscopes = ["read"]\nallow = ["::1"]\n')
    assert message.startswith('api.clients.socket: the name "socket" is reserved')
    two = '[api.clients.{}]\nscopes = ["read"]\nallow = ["::1"]\nkey = "mdm"\n'
    message = config_error(tmp_path, two.format("a") + two.format("b"))
    assert message == (
        'api.clients.b.key: "mdm" is already the key of api.clients.a; '
        "every client needs a key of its own"
    )


def test_a_key_missing_from_the_secrets_file_stops_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, CLIENTS.replace('key = "ops"', 'key = "ops-2026"'))
    result = CliRunner().invoke(hesd_main, ["check-config", "hesd.toml"])
    assert result.exit_code == EX_CONFIG
    assert result.output == (
        f'hesd: {tmp_path}/secrets.toml: api_keys: no key "ops-2026" (named by hesd.toml '
        "api.clients.admin.key)\n"
    )


def test_check_config_shows_the_listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pki = make_pki(tmp_path / "pki")
    write_files(tmp_path, tls_api(pki, f'tls_client_ca_file = "{pki.ca}"'))
    result = CliRunner().invoke(hesd_main, ["check-config", "hesd.toml"])
    assert result.exit_code == 0, result.output
    assert (
        "  API on TCP:      https://127.0.0.1:0 (clients: mdm, reader, admin, mutual TLS)\n"
        in result.output
    )
    assert "0 keysets, 0 tokens, 3 API keys" in result.output


def test_a_certificate_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.server_key.write_text("not a key\n")
    message = config_error(tmp_path, tls_api(pki))
    assert message.startswith("api.tls_cert_file: cannot load the server certificate and key: ")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("short-key", "expected 32..4096 characters of A-Z a-z 0-9"),
        ("has a space in it, so it is no bearer token", "expected 32..4096 characters"),
        (MDM_KEY, "is the same key as api_keys.mdm; every API client needs its own"),
    ],
)
def test_bad_api_keys_in_the_secrets_file(tmp_path: Path, value: str, error: str) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text(f'[api_keys]\nmdm = "{MDM_KEY}"\nother = "{value}"\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        load_secrets(path)
    assert str(info.value).startswith(f"{path}: api_keys.other: ")
    assert error in str(info.value)
    assert value not in str(info.value)
    assert MDM_KEY not in str(info.value)


# -- scopes -----------------------------------------------------------------------------------


def _app_routes() -> list[Any]:
    daemon = SimpleNamespace(config=SimpleNamespace(api=SimpleNamespace(max_request_bytes=1024)))
    return list(build_app(daemon).router.routes())  # type: ignore[arg-type]


def test_every_route_has_a_scope() -> None:
    """A route added without an entry in app.SCOPES fails here (and needs admin meanwhile)."""
    handlers = {route.handler for route in _app_routes()}
    missing = sorted(
        f"{r.method} {r.resource.canonical}" for r in _app_routes() if r.handler not in SCOPES
    )
    assert missing == []
    assert set(SCOPES) == handlers  # and no scope for a route that is gone
    assert set(SCOPES.values()) == {"read", "command", "admin"}


def test_the_spec_states_each_operations_scope() -> None:
    """docs/hes-api.yaml gives every operation an ``x-hesd-scope``: the one app.SCOPES has."""
    spec = yaml.safe_load((REPO / "docs" / "hes-api.yaml").read_text())
    documented = {
        (method.upper(), path): operation.get("x-hesd-scope")
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in {"get", "post", "delete", "put", "patch"}
    }
    served = {
        (route.method, strip_patterns(route.resource.canonical)): SCOPES[route.handler]
        for route in _app_routes()
        if route.method != "HEAD"
    }
    assert documented == served


# -- in process: the real ApiSite ---------------------------------------------------------------


@dataclasses.dataclass
class Hes:
    daemon: Daemon
    guard: ApiGuard
    site: ApiSite
    pki: Pki
    config: Config

    @property
    def url(self) -> str:
        return self.site.name

    async def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        *,
        source: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
        context: ssl.SSLContext | None = None,
        **kwargs: Any,
    ) -> tuple[int, dict[str, str], Any]:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        tls = context or self.pki.client_context()
        connector = aiohttp.TCPConnector(local_addr=(source, 0), ssl=tls)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, self.url + path, headers=sent, **kwargs) as response,
        ):
            body = await response.read()
            parsed = json.loads(body) if body and "json" in response.content_type else body
            return response.status, dict(response.headers), parsed


async def serve(
    tmp_path: Path, *, plaintext: bool = False, mutual: bool = False
) -> AsyncIterator[Hes]:
    pki = make_pki(tmp_path / "pki")
    extra = [f'tls_client_ca_file = "{pki.ca}"'] if mutual else []
    api = (
        'listen = "127.0.0.1:0"\ninsecure_plaintext = true\nlisten_max_request_bytes = 4096\n'
        + CLIENTS
        if plaintext
        else tls_api(pki, *extra)
    )
    config = load_config(write_files(tmp_path, api))
    config = dataclasses.replace(
        config, store=dataclasses.replace(config.store, path=tmp_path / "hesd.db")
    )
    secrets = load_secrets(config.daemon.secrets_file)
    guard = ApiGuard.from_config(config.api, secrets, config.source)
    daemon = Daemon(config, None)
    daemon.vendors = config.load_vendor_profiles()
    daemon.normalisers = build_normalisers(daemon.vendors)
    store = await Store.open(config.store)
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    daemon._store, daemon._registry = store, Registry(store)
    daemon.outbox = Outbox(store, config.uplink.max_backlog_bytes)
    daemon.audit = ApiAudit(store, config.api.audit_retention_days, config.api.audit_max_rows)
    daemon.api_guard = guard
    app = build_app(daemon, guard)
    violations: list[str] = []
    app.middlewares.insert(0, contract_middleware(violations))
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = ApiSite(runner, "127.0.0.1", 0, guard)
    await site.start()
    daemon.api_site = site
    try:
        yield Hes(daemon, guard, site, pki, config)
    finally:
        await runner.cleanup()
        await store.close()
        await writer
    assert violations == [], "answers that docs/hes-api.yaml does not describe"


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    async for served in serve(tmp_path):
        yield served


def no_key_in(text: str) -> bool:
    return not any(key in text for key in ALL_KEYS)


async def test_keys_addresses_scopes_and_sizes(hes: Hes) -> None:
    with capture_logs() as logs:
        status, headers, body = await hes.call("GET", "/api/v1/status")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="hesd"')
        assert headers["Content-Type"].startswith("application/problem+json")
        assert body["detail"] == (
            "no API key: send Authorization: Bearer <key> (or X-API-Key: <key>)"
        )

        status, headers, body = await hes.call("GET", "/api/v1/status", MDM_KEY[:-1] + "0")
        assert status == 401
        assert headers["WWW-Authenticate"] == 'Bearer realm="hesd", error="invalid_token"'
        assert body["detail"] == "the API key is not valid"

        status, _, body = await hes.call("GET", "/api/v1/status", headers={"Authorization": "x"})
        assert (status, body["detail"]) == (
            401,
            "Authorization: expected the Bearer scheme with the API key",
        )

        status, _, body = await hes.call(
            "POST", "/api/v1/commands", READER_KEY, json={"meter_id": "M1", "kind": "disconnect"}
        )
        assert (status, body["detail"]) == (
            403,
            "client reader has scope read; POST /api/v1/commands needs scope command",
        )

        status, _, body = await hes.call("GET", "/api/v1/status", ADMIN_KEY)
        assert (status, body["detail"]) == (
            403,
            "client admin may not call from 127.0.0.1: the address is not in "
            "api.clients.admin.allow",
        )

        status, _, body = await hes.call("GET", "/api/v1/status", MDM_KEY)
        assert status == 200
        assert body["api"]["listen"] == hes.url
        assert body["api"]["tls"] is True
        assert body["api"]["clients"] == 3

        status, _, body = await hes.call(
            "GET", "/api/v1/vendors", headers={"X-API-Key": READER_KEY}, source="127.0.0.2"
        )
        assert (status, len(body["vendors"])) == (200, 4)

        status, _, body = await hes.call(
            "POST",
            "/api/v1/decode",
            MDM_KEY,
            data=b"{" + b" " * 5000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert (status, body["detail"]) == (  # the scope is checked before the size
            403,
            "client mdm has scopes read, command; POST /api/v1/decode needs scope admin",
        )
        status, _, body = await hes.call(
            "POST",
            "/api/v1/commands",
            MDM_KEY,
            data=b"{" + b" " * 5000 + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert (status, body["detail"]) == (
            413,
            "the body is 5002 bytes; this listener takes at most 4096 "
            "(api.listen_max_request_bytes)",
        )

        status, _, body = await hes.call("GET", "/api/v1/nothing", MDM_KEY)
        assert (status, body["detail"]) == (404, "GET /api/v1/nothing: Not Found")
        assert (await hes.call("GET", "/api/v1/nothing"))[0] == 401  # no route map for strangers

        status, _, body = await hes.call("GET", "/api/v1/audit", ADMIN_KEY, source="127.0.0.2")
        assert status == 200
    calls = [e for e in logs if e["event"] == "api.call"]
    expected = [
        ("anonymous", "127.0.0.1", "GET", "/api/v1/status", 401),
        ("anonymous", "127.0.0.1", "GET", "/api/v1/status", 401),
        ("anonymous", "127.0.0.1", "GET", "/api/v1/status", 401),
        ("reader", "127.0.0.1", "POST", "/api/v1/commands", 403),
        ("admin", "127.0.0.1", "GET", "/api/v1/status", 403),
        ("mdm", "127.0.0.1", "GET", "/api/v1/status", 200),
        ("reader", "127.0.0.2", "GET", "/api/v1/vendors", 200),
        ("mdm", "127.0.0.1", "POST", "/api/v1/decode", 403),
        ("mdm", "127.0.0.1", "POST", "/api/v1/commands", 413),
        ("mdm", "127.0.0.1", "GET", "/api/v1/nothing", 404),
        ("anonymous", "127.0.0.1", "GET", "/api/v1/nothing", 401),
        ("admin", "127.0.0.2", "GET", "/api/v1/audit", 200),
    ]
    assert [(e["client"], e["peer"], e["method"], e["path"], e["status"]) for e in calls] == (
        expected
    )
    assert all(e["listener"] == "tcp" and e["ms"] >= 0 for e in calls)
    # the audit table holds the same calls, newest first, and the audit route served them
    rows = await hes.daemon.audit.query(limit=100)  # type: ignore[union-attr]
    assert [(r.client, r.peer, r.method, r.path, r.status) for r in reversed(rows)] == expected
    assert [(c["client"], c["status"]) for c in body["calls"]] == [
        (e[0], e[4]) for e in reversed(expected[:-1])
    ]
    assert no_key_in(repr(logs))
    assert no_key_in(repr(rows))
    assert no_key_in(json.dumps(body))


async def test_a_bad_audit_query_is_a_problem_that_names_the_parameter(hes: Hes) -> None:
    for query, detail in (
        ("since=yesterday", "query parameter since: 'yesterday' is not an ISO 8601 time"),
        (
            "since=2026-01-01T00:00:00",
            "query parameter since: '2026-01-01T00:00:00' has no UTC offset",
        ),
        ("limit=0", "query parameter limit: expected integer 1..10000, got '0'"),
    ):
        status, headers, body = await hes.call(
            "GET", f"/api/v1/audit?{query}", ADMIN_KEY, source="127.0.0.2"
        )
        assert (status, body["detail"], body["title"]) == (400, detail, "Bad Request")
        assert headers["Content-Type"].startswith("application/problem+json")


async def test_an_address_no_client_allows_is_reset_before_tls(hes: Hes) -> None:
    host, port = hes.site.address
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.0.9", 0))
        try:
            received = await asyncio.wait_for(reader.read(100), 5)
        except ConnectionResetError:
            received = b""
        writer.close()
        with pytest.raises((aiohttp.ClientConnectionError, ssl.SSLError)):
            await hes.call("GET", "/api/v1/status", MDM_KEY, source="127.0.0.9")
    assert received == b""  # not one byte: no ServerHello, no certificate
    refused = [e for e in logs if e["event"] == "api.connection_refused"]
    assert [(e["peer"], e["reason"]) for e in refused] == [
        ("127.0.0.9", "no API client allows this address")
    ] * 2
    assert not [e for e in logs if e["event"] == "api.call"]
    assert hes.guard.connections_refused == 2


async def test_a_client_that_does_not_speak_tls_is_dropped(hes: Hes) -> None:
    host, port = hes.site.address
    with capture_logs() as logs:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /api/v1/status HTTP/1.1\r\nHost: hesd\r\n\r\n")
        received = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    assert b"HTTP/1.1" not in received
    assert [e["peer"] for e in logs if e["event"] == "api.tls_failed"] == ["127.0.0.1"]
    assert hes.guard.tls_failures == 1


async def _expect_continue(hes: Hes, key: str | None) -> list[bytes]:
    """POST a command with ``Expect: 100-continue``, sending the body only after a "100
    Continue": the status lines hesd answers."""
    body = b'{"kind": "read", "meter_id": "M1"}'.ljust(2048)
    host, port = hes.site.address
    reader, writer = await asyncio.open_connection(
        host, port, ssl=hes.pki.client_context(), server_hostname="localhost"
    )
    try:
        auth = f"Authorization: Bearer {key}\r\n" if key is not None else ""
        writer.write(
            (
                "POST /api/v1/commands HTTP/1.1\r\nHost: hesd\r\n"
                f"{auth}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        lines = [await asyncio.wait_for(reader.readline(), 5)]
        if lines[0].startswith(b"HTTP/1.1 100 "):
            assert await reader.readline() == b"\r\n"
            writer.write(body)
            lines.append(await asyncio.wait_for(reader.readline(), 5))
        else:  # refused before the body: the answer, then hesd closes the connection
            assert await asyncio.wait_for(reader.read(), 5)
        return lines
    finally:
        writer.close()


async def test_expect_continue_only_for_a_call_the_guard_lets_through(hes: Hes) -> None:
    """A client that waits for "100 Continue" before sending a large body learns of a missing
    key or scope at once, never sends the body, and is not held open; a client that may call
    gets its 100, sends the body and gets the call's answer (here: no router is running)."""
    assert await _expect_continue(hes, None) == [b"HTTP/1.1 401 Unauthorized\r\n"]
    assert await _expect_continue(hes, READER_KEY) == [b"HTTP/1.1 403 Forbidden\r\n"]
    assert await _expect_continue(hes, MDM_KEY) == [
        b"HTTP/1.1 100 Continue\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\n",
    ]


async def test_mutual_tls(tmp_path: Path) -> None:
    async for hes in serve(tmp_path, mutual=True):
        with capture_logs() as logs, pytest.raises(aiohttp.ClientError):
            await hes.call("GET", "/api/v1/status", MDM_KEY)
        # refused in the handshake: no call reached the API (aiohttp's client may try twice)
        assert {e["event"] for e in logs if e["event"].startswith("api.")} == {"api.tls_failed"}
        status, _, body = await hes.call(
            "GET",
            "/api/v1/status",
            MDM_KEY,
            context=hes.pki.client_context(with_certificate=True),
        )
        assert status == 200
        assert body["api"]["mutual_tls"] is True


async def test_a_plaintext_loopback_listener(tmp_path: Path) -> None:
    async for hes in serve(tmp_path, plaintext=True):
        assert hes.url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            async with session.get(hes.url + "/api/v1/status") as response:
                assert response.status == 401
            headers = {"X-API-Key": MDM_KEY}
            async with session.get(hes.url + "/api/v1/status", headers=headers) as response:
                assert response.status == 200
                assert (await response.json())["api"]["tls"] is False


async def test_a_command_is_audited_with_its_id_and_its_requester(hes: Hes) -> None:
    daemon = hes.daemon
    await daemon.registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    daemon.router = CommandRouter(
        daemon.store,
        _Unreachable(),
        command_kinds(lambda: daemon.normalisers),
        daemon.outbox,  # type: ignore[arg-type]
        workers=1,
    )
    status, _, command = await hes.call(
        "POST", "/api/v1/commands", MDM_KEY, json={"meter_id": "M1", "kind": "disconnect"}
    )
    assert status == 202
    assert command["requested_by"] == "api:mdm"
    rows = await daemon.audit.query(client="mdm")  # type: ignore[union-attr]
    assert [(r.path, r.status, r.command_id) for r in rows] == [
        ("/api/v1/commands", 202, command["command_id"])
    ]


class _Unreachable:
    async def reachable(self, meter_id: str) -> bool:
        return False

    async def request(self, meter_id: str, op: object) -> object:
        raise AssertionError("no meter is reachable")


async def test_a_new_guard_applies_to_the_next_request(hes: Hes, tmp_path: Path) -> None:
    """SIGHUP's effect: keys from the new secrets file, the old key refused at once."""
    new_key = "mdm-" + "77aa" * 10
    path = tmp_path / "secrets.toml"
    path.write_text(SECRETS.replace(MDM_KEY, new_key))
    fresh = ApiGuard.from_config(hes.config.api, load_secrets(path), hes.config.source)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=hes.pki.client_context())
    ) as session:  # one keep-alive connection across the change

        async def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            async with session.get(hes.url + "/api/v1/status", headers=headers) as response:
                return response.status

        assert await status(MDM_KEY) == 200
        hes.guard.replace(fresh)
        assert (await status(MDM_KEY), await status(new_key)) == (401, 200)


async def test_audit_retention_prunes_by_age_and_count(hes: Hes) -> None:
    audit = hes.daemon.audit
    assert audit is not None
    for _ in range(3):
        assert (await hes.call("GET", "/api/v1/status", MDM_KEY))[0] == 200
    rows = await audit.query()
    await audit.prune(now=rows[0].at + 91 * 86400)  # 91 days later: all three are too old
    assert await audit.query() == []
    for _ in range(3):
        await hes.call("GET", "/api/v1/status", MDM_KEY)
    audit.max_rows = 2
    await audit.prune()
    assert len(await audit.query()) == 2


async def test_an_audit_row_reads_back_as_the_call_it_records(hes: Hes) -> None:
    """``ApiCall.row()`` and ``ApiAudit.query()`` agree on the order of the columns."""
    audit = hes.daemon.audit
    assert audit is not None
    call = ApiCall(
        at=1_700_000_000.25,
        listener="tcp",
        client="mdm",
        peer="192.0.2.7",
        method="POST",
        path="/api/v1/commands",
        status=202,
        duration_ms=3.25,
        command_id="ab" * 16,
    )
    audit.record(call)
    assert await audit.query(limit=1) == [call]


# -- a real hesd ------------------------------------------------------------------------------


@pytest.fixture
def hesd_with_listener(
    tmp_path: Path, start_hesd: Callable[..., HesdProcess]
) -> tuple[HesdProcess, Pki, int]:
    pki = make_pki(tmp_path / "pki")
    hesd = start_hesd(write_files(tmp_path, tls_api(pki)))
    info = json.loads(hesd.hesctl("status", "--json").stdout)
    return hesd, pki, int(info["api"]["listen"].rsplit(":", 1)[1])


def https(port: int, pki: Pki, method: str, path: str, key: str | None, **kw: Any) -> int:
    connection = http.client.HTTPSConnection(
        "127.0.0.1", port, context=pki.client_context(), timeout=10, **kw
    )
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        connection.request(method, path, body=b"{}" if method == "POST" else None, headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.integration
def test_a_real_hesd_serves_the_mdm(
    hesd_with_listener: tuple[HesdProcess, Pki, int], tmp_path: Path
) -> None:
    hesd, pki, port = hesd_with_listener
    assert https(port, pki, "GET", "/api/v1/status", None) == 401
    assert https(port, pki, "GET", "/api/v1/status", "x" * 40) == 401
    assert https(port, pki, "POST", "/api/v1/commands", READER_KEY) == 403
    assert https(port, pki, "GET", "/api/v1/status", ADMIN_KEY) == 403
    assert https(port, pki, "GET", "/api/v1/status", MDM_KEY) == 200
    assert (
        https(port, pki, "GET", "/api/v1/audit", ADMIN_KEY, source_address=("127.0.0.2", 0)) == 200
    )
    with (
        socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.9", 0)) as s,
        contextlib.suppress(ConnectionResetError),  # reset: not even a FIN
    ):
        assert s.recv(100) == b""
    status = hesd.hesctl("status").stdout
    assert f"api       https://127.0.0.1:{port} (TLS, 3 clients, 1 connections refused)" in status

    # rotate the mdm key: edit the secrets file, SIGHUP
    new_key = "mdm-" + "0c0c" * 10
    (tmp_path / "secrets.toml").write_text(SECRETS.replace(MDM_KEY, new_key))
    hesd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: '"config.reloaded"' in hesd.log_text(), 15, "config.reloaded")
    assert https(port, pki, "GET", "/api/v1/status", MDM_KEY) == 401
    assert https(port, pki, "GET", "/api/v1/status", new_key) == 200
    # a secrets file without the admin client's key is refused whole: the keys in force stay
    (tmp_path / "secrets.toml").write_text(f'[api_keys]\nmdm = "{MDM_KEY}"\n')
    hesd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: '"config.reload_failed"' in hesd.log_text(), 15, "config.reload_failed")
    failed = [json.loads(line) for line in hesd.log_text().splitlines() if "reload_failed" in line]
    assert failed[0]["error"].endswith(
        'secrets.toml: api_keys: no key "reader" (named by '
        f"{tmp_path / 'hesd.toml'} api.clients.reader.key)"
    )
    assert https(port, pki, "GET", "/api/v1/status", MDM_KEY) == 401
    assert https(port, pki, "GET", "/api/v1/status", new_key) == 200

    audit = json.loads(hesd.hesctl("audit", "--json", "--since", "1h").stdout)
    tcp = [(c["client"], c["status"]) for c in reversed(audit) if c["listener"] == "tcp"]
    assert tcp == [
        ("anonymous", 401),
        ("anonymous", 401),
        ("reader", 403),
        ("admin", 403),
        ("mdm", 200),
        ("admin", 200),
        ("anonymous", 401),
        ("mdm", 200),
        ("anonymous", 401),
        ("mdm", 200),
    ]
    socket_calls = [c for c in audit if c["listener"] == "socket"]
    assert {(c["client"], c["path"]) for c in socket_calls} == {
        ("socket", "/api/v1/status"),
    }
    assert all(c["peer"].startswith("uid:") for c in socket_calls)
    table = hesd.hesctl("audit", "--client", "reader").stdout.splitlines()
    assert table[0].split() == ["TIME", "CLIENT", "PEER", "CALL", "STATUS", "MS", "COMMAND"]
    assert table[1].split()[1:6] == ["reader", "127.0.0.1", "POST", "/api/v1/commands", "403"]

    # a file without the listener and its clients: the listener runs until the restart, and
    # from the reload on no address is anybody's, so it drops every connection at accept (it
    # kept the old clients before)
    write_files(tmp_path, "", SECRETS.replace(MDM_KEY, new_key))
    hesd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: hesd.log_text().count('"config.reloaded"') == 2, 15, "second reload")
    with pytest.raises((ConnectionResetError, ssl.SSLError)):
        https(port, pki, "GET", "/api/v1/status", new_key)
    restart = [json.loads(x) for x in hesd.log_text().splitlines() if "restart_required" in x]
    assert "api" in restart[-1]["sections"]

    assert hesd.stop() == 0
    stored = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("hesd.db*"))
    assert b"/api/v1/audit" in stored  # the audit is in the database file...
    for key in (*ALL_KEYS, new_key):
        assert key not in hesd.log_text()  # ...and no key is in it, nor in the log
        assert key.encode() not in stored
    with sqlite3.connect(tmp_path / "state" / "hesd.db") as db:
        assert db.execute("SELECT count(*) FROM api_audit").fetchone()[0] >= 11
