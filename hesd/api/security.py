"""Who may call the API on TCP: one API key per client, its scopes and its address allowlist.

The unix socket needs none of this: whoever can open it (filesystem permissions, group ``hesd``)
has every scope. On TCP (``api.listen``) every request must carry its client's key, as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, and then:

* no key, or a key that is no client's: 401 with ``WWW-Authenticate``, and nothing says whether
  a client of some name exists (keys are looked up by their SHA-256, compared with every client's
  in constant time, without stopping at a match);
* a peer address outside the client's ``allow``: 403; an address that *no* client allows does not
  get this far: hesd/api/listener.py closes the connection at accept, before TLS;
* a route outside the client's scopes: 403; every route has one scope (``SCOPES`` in app.py);
* a body larger than ``api.listen_max_request_bytes``: 413.

Keys never leave the ``SecretStore``: the gatekeeper keeps digests only, and no log line, error
or audit row holds a key or a request body.
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hesd.api.calls import IPAddress, note_client, transport_address
from hesd.api.problem import problem
from hesd.config_api import API_SCOPES, ApiConfig, IPNetwork
from hesd.secrets import SecretStore
from hesd.tls import server_context

__all__ = [
    "ADMIN",
    "COMMAND",
    "READ",
    "ApiClient",
    "ApiGuard",
    "Gatekeeper",
    "guard_expect_handler",
    "guard_middleware",
]

log = structlog.get_logger("hesd.api")

READ: Final = "read"
COMMAND: Final = "command"
ADMIN: Final = "admin"
REALM: Final = 'Bearer realm="hesd"'


@dataclass(frozen=True, slots=True)
class ApiClient:
    """A client of the API on TCP, as the gatekeeper knows it: a digest, never the key."""

    name: str
    scopes: frozenset[str]
    allow: tuple[IPNetwork, ...]
    digest: bytes  # SHA-256 of its key

    def __post_init__(self) -> None:
        if not self.scopes or not self.scopes <= set(API_SCOPES):
            raise ValueError(f"client {self.name}: scopes must be some of {API_SCOPES}")
        if not self.allow:
            raise ValueError(f"client {self.name}: allows no address")
        if len(self.digest) != hashlib.sha256().digest_size:
            raise ValueError(f"client {self.name}: not a SHA-256 digest")

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allow)


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class Gatekeeper:
    """The clients of the TCP listener; a new one replaces it whole on SIGHUP."""

    def __init__(self, clients: Sequence[ApiClient]) -> None:
        self.clients = tuple(clients)

    @classmethod
    def from_config(cls, api: ApiConfig, secrets: SecretStore, source: str) -> Gatekeeper:
        """``ConfigError`` when a client's key is not in the secrets file."""
        return cls(
            [
                ApiClient(
                    name=client.name,
                    scopes=frozenset(client.scopes),
                    allow=client.allow,
                    digest=_digest(
                        secrets.api_key(
                            client.key, f"{source} api.clients.{client.name}.key"
                        ).reveal()
                    ),
                )
                for client in api.clients
            ]
        )

    def identify(self, presented: bytes) -> ApiClient | None:
        """The client whose key this is. Every client's digest is compared, in constant time,
        so how long this takes says nothing about which client (if any) came close."""
        digest = _digest(presented)
        found = None
        for client in self.clients:
            if hmac.compare_digest(digest, client.digest):
                found = client
        return found

    def admits(self, address: IPAddress) -> bool:
        """Some client may call from ``address``."""
        return any(client.allows(address) for client in self.clients)


class ApiGuard:
    """What protects the TCP listener: its clients and its TLS context (both replaced on
    SIGHUP, for new connections and requests), the body limit, and what it refused."""

    def __init__(
        self, gatekeeper: Gatekeeper, ssl_context: ssl.SSLContext | None, max_request_bytes: int
    ) -> None:
        self.gatekeeper = gatekeeper
        self.ssl_context = ssl_context
        self.max_request_bytes = max_request_bytes
        self.connections_refused = 0  # at accept: no client allows the address
        self.tls_failures = 0  # handshakes that failed or timed out

    @classmethod
    def from_config(cls, api: ApiConfig, secrets: SecretStore, source: str) -> ApiGuard:
        """``ConfigError`` when a key is missing from the secrets file or a TLS file is bad."""
        return cls(
            Gatekeeper.from_config(api, secrets, source),
            server_context(api, source),
            api.listen_max_request_bytes,
        )

    def replace(self, fresh: ApiGuard) -> None:
        """Take ``fresh``'s clients and TLS context (SIGHUP); counters carry on."""
        self.gatekeeper = fresh.gatekeeper
        self.ssl_context = fresh.ssl_context


def _unauthorized(detail: str, challenge: str) -> web.Response:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = challenge
    return response


def _presented_key(request: web.Request) -> bytes | str | None:
    """The key the request carries; None when it carries none; a ``str`` says what is wrong."""
    authorization = request.headers.get("Authorization")
    api_key = request.headers.get("X-API-Key")
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return "Authorization: expected the Bearer scheme with the API key"
        bearer = credentials.strip()
        if api_key is not None and api_key.strip() != bearer:
            return "Authorization and X-API-Key hold different keys: send one"
        return bearer.encode("utf-8", "surrogateescape")
    if api_key is not None:
        return api_key.strip().encode("utf-8", "surrogateescape")
    return None


def refusal(
    guard: ApiGuard, scopes: Mapping[Handler, str], request: web.Request
) -> web.Response | None:
    """The TCP listener's checks, in order: key (401), address (403), scope (403), size (413);
    the problem answer of the first that fails, or None when the call may go on.

    ``scopes`` maps each route's handler to its scope; a routed handler missing from it needs
    ``admin`` (fail closed). Requests that match no route only need a valid key (then 404/405).
    """
    presented = _presented_key(request)
    if presented is None:
        return _unauthorized(
            "no API key: send Authorization: Bearer <key> (or X-API-Key: <key>)", REALM
        )
    client = None if isinstance(presented, str) else guard.gatekeeper.identify(presented)
    if client is None:
        detail = presented if isinstance(presented, str) else "the API key is not valid"
        return _unauthorized(detail, f'{REALM}, error="invalid_token"')
    note_client(client.name)
    address = transport_address(request.transport)
    if address is None or not client.allows(address):
        return problem(
            403,
            "Forbidden",
            f"client {client.name} may not call from {address}: the address is not in "
            f"api.clients.{client.name}.allow",
        )
    if request.match_info.http_exception is None:  # a route matched
        needed = scopes.get(request.match_info.handler, ADMIN)
        if needed not in client.scopes:
            has = [s for s in API_SCOPES if s in client.scopes]
            return problem(
                403,
                "Forbidden",
                f"client {client.name} has scope{'s' if len(has) > 1 else ''} "
                f"{', '.join(has)}; {request.method} {request.path} needs scope {needed}",
            )
    length = request.content_length
    if length is not None and length > guard.max_request_bytes:
        return problem(
            413,
            "Payload Too Large",
            f"the body is {length} bytes; this listener takes at most "
            f"{guard.max_request_bytes} (api.listen_max_request_bytes)",
        )
    return None


def guard_middleware(guard: ApiGuard, scopes: Mapping[Handler, str]) -> Middleware:
    """Answer with ``refusal``'s problem, or serve the call.

    A refused call's body is never read: its connection is not kept alive. A client that asked
    ``Expect: 100-continue`` was sent no "100 Continue" (``guard_expect_handler``), so its body
    is not coming: the connection closes as soon as the answer is out, rather than holding a
    handler while aiohttp lingers for a body (10 s) on behalf of a client without a key.
    """

    @web.middleware
    async def guard_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(guard, scopes, request)
        if refused is None:
            return await handler(request)
        if not request.body_exists:
            return refused
        refused.force_close()
        if request.headers.get("Expect", "").lower() == "100-continue":
            await refused.prepare(request)
            await refused.write_eof()
            request.protocol.force_close()
        return refused

    return guard_calls


def guard_expect_handler(
    guard: ApiGuard, scopes: Mapping[Handler, str]
) -> Callable[[web.Request], Awaitable[None]]:
    """``Expect: 100-continue`` on the TCP listener: "100 Continue" only to a call the guard
    lets through, so a client without a key, scope or allowed address is told so before it
    sends its body (the middleware then answers, and the audit records, the refusal)."""

    async def expect(request: web.Request) -> None:
        value = request.headers.get("Expect", "")
        if value.lower() != "100-continue":
            raise web.HTTPExpectationFailed(text=f"Unknown Expect: {value}")
        if refusal(guard, scopes, request) is not None:
            return
        if request.version == (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer's own size starts after the interim

    return expect
