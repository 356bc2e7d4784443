"""The API on TCP for the MDM (``api.listen``): refuse unknown addresses at accept, then TLS.

A connection from an address that no API client allows is reset as soon as it is accepted,
before any TLS handshake (no CPU spent, no certificate shown), and logged as
``api.connection_refused``. Others get TLS with the guard's current context
(``connect_accepted_socket``; ``HANDSHAKE_TIMEOUT``, at most ``MAX_HANDSHAKES`` at once) and then
aiohttp, whose middlewares check the key, the address against that client's allowlist, the scope
and the size (hesd/api/security.py). With ``api.insecure_plaintext`` (loopback only) there is no
TLS step.

``ApiSite`` is an aiohttp site, so ``AppRunner.cleanup()`` stops it with the unix socket's
(stop accepting, let requests in flight finish within the drain time).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from typing import Any, Final

import structlog
from aiohttp import web

from hesd.api.calls import peer_address
from hesd.api.security import ApiGuard
from hesd.config_api import ApiConfig
from protocols.errors import HesdError

__all__ = ["HANDSHAKE_TIMEOUT", "MAX_HANDSHAKES", "ApiListenError", "ApiSite", "api_status"]

log = structlog.get_logger("hesd.api")

HANDSHAKE_TIMEOUT: Final = 10.0
MAX_HANDSHAKES: Final = 256  # connections in their TLS handshake at once; more are refused
ACCEPT_BACKOFF: Final = 0.1  # after accept() failed (out of file descriptors)


class ApiListenError(HesdError):
    """The TCP listener cannot be bound."""


class ApiSite(web.BaseSite):
    """``api.listen`` as an aiohttp site, with an accept loop of its own (the task
    ``api:accept``) so that a peer is judged before anything is read from it."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ApiGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self.guard = guard
        self.address: tuple[str, int] = (host, port)  # the bound one, once started
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._connecting: set[asyncio.Task[None]] = set()  # TLS handshakes, hand-overs

    @property
    def name(self) -> str:
        scheme = "http" if self.guard.ssl_context is None else "https"
        host = f"[{self.address[0]}]" if ":" in self.address[0] else self.address[0]
        return f"{scheme}://{host}:{self.address[1]}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        where = f"api.listen {self._host}:{self._port}"
        try:
            found = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise ApiListenError(f"{where}: cannot resolve: {exc.strerror or exc}") from None
        family, kind, proto, _, address = found[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ApiListenError(f"{where}: cannot listen: {exc.strerror or exc}") from None
        sock.setblocking(False)
        self._sock = sock
        self.address = sock.getsockname()[:2]
        await super().start()  # registers with the runner, which stops the site at cleanup
        self._acceptor = loop.create_task(self._accept(sock), name="api:accept")

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
        for task in list(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)
        if self._sock is not None:
            self._sock.close()
        await super().stop()

    # -- connections ---------------------------------------------------------------------------

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peername = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and the like: the listener lives on
                log.error("api.accept_failed", error=exc.strerror or str(exc))
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            self.accepted(conn, peername)

    def accepted(self, conn: socket.socket, peername: object) -> None:
        address = peer_address(peername)
        if address is None or not self.guard.gatekeeper.admits(address):
            self._refuse(conn, address, "no API client allows this address")
            return
        context = self.guard.ssl_context
        if context is not None and len(self._connecting) >= MAX_HANDSHAKES:
            self._refuse(conn, address, "too many TLS handshakes in progress")
            return
        port = peername[1] if isinstance(peername, tuple) and len(peername) > 1 else 0
        task = asyncio.get_running_loop().create_task(
            self._connect(conn, context, str(address)), name=f"api:connection:{address}:{port}"
        )
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _refuse(self, conn: socket.socket, address: object, reason: str) -> None:
        self.guard.connections_refused += 1
        log.warning("api.connection_refused", peer=str(address), reason=reason)
        with contextlib.suppress(OSError):  # RST, not FIN: nothing was served
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()

    async def _connect(
        self, conn: socket.socket, context: ssl.SSLContext | None, peer: str
    ) -> None:
        """TLS (if any), then aiohttp's handler for this connection."""
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        # from here the loop owns ``conn``: it closes it when the handshake fails or is cancelled
        try:
            if context is None:
                await loop.connect_accepted_socket(server, conn)
            else:
                await loop.connect_accepted_socket(
                    server, conn, ssl=context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
                )
        except Exception as exc:  # a failed handshake ends this connection, and only this one
            self.guard.tls_failures += 1
            log.info("api.tls_failed", peer=peer, error=str(exc) or type(exc).__name__)


def api_status(api: ApiConfig, guard: ApiGuard | None, site: ApiSite | None) -> dict[str, Any]:
    """The ``api`` part of ``GET /api/v1/status``."""
    return {
        "socket": str(api.socket),
        "listen": None if site is None else site.name,
        "tls": site is not None and guard is not None and guard.ssl_context is not None,
        "mutual_tls": site is not None and api.tls_client_ca_file is not None,
        "clients": 0 if guard is None else len(guard.gatekeeper.clients),
        "connections_refused": 0 if guard is None else guard.connections_refused,
        "tls_failures": 0 if guard is None else guard.tls_failures,
    }
