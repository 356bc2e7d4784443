"""The broker side of MQTT: building the aiomqtt client, connecting it, TLS and the password.

``connected`` is ``async with aiomqtt.Client(...)`` made safe to cancel: aiomqtt 2.x
leaves paho-mqtt's socket open when the attempt fails or is cancelled half-way (after the TCP
connect or the TLS handshake, before the CONNACK), and the garbage collector closes it later
with a ResourceWarning. hesd stops (SIGTERM) and reconnects (back-off) at any moment, so an
attempt that is cancelled is let to settle for a bounded time and its socket is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Final

import aiomqtt
from paho.mqtt import client as mqtt

from hesd.config import MqttConfig
from hesd.secrets import SecretStore
from hesd.tls import client_context

__all__ = ["connected", "default_client_id", "password", "reason", "tls_context"]

SETTLE: Final = 2.0  # seconds a cancelled connect attempt may take to finish before it is cut


@contextlib.asynccontextmanager
async def connected(client: aiomqtt.Client) -> AsyncIterator[aiomqtt.Client]:
    """``async with client`` that leaves no socket behind when connecting fails or is cancelled."""
    attempt = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.shield(attempt)
    except asyncio.CancelledError:
        await _settle(attempt, client)
        raise
    except BaseException:
        _close_socket(client)
        raise
    try:
        yield client
    finally:
        await client.__aexit__(None, None, None)
        _close_socket(client)


async def _settle(attempt: asyncio.Future[aiomqtt.Client], client: aiomqtt.Client) -> None:
    """Let a cancelled attempt end (paho connects in an executor thread), then undo it."""
    if not attempt.done() and _paho(client).socket() is None:  # still in the executor
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(attempt), SETTLE)
    if not attempt.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
    if not attempt.cancelled() and attempt.exception() is None:
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)
    _close_socket(client)


def _paho(client: aiomqtt.Client) -> mqtt.Client:
    return client._client  # private to aiomqtt 2.x: see _close_socket


def _close_socket(client: aiomqtt.Client) -> None:
    # aiomqtt keeps the paho client in ``_client``; paho's ``_sock_close`` unregisters the
    # socket from the event loop (its socket callbacks) and closes it. Both are private, so
    # look them up defensively: a later version that cleans up by itself needs nothing here.
    close = getattr(_paho(client), "_sock_close", None)
    if callable(close):
        with contextlib.suppress(Exception):
            close()


def reason(exc: BaseException) -> str:
    """What aiomqtt says, with the cause it chains (the broker's or the socket's words)."""
    said = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return said if cause is None or not str(cause) else f"{said}: {cause}"


def default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:100]
    return f"hesd-{host}"


def password(config: MqttConfig, secrets: SecretStore) -> bytes | None:
    name = config.password_token
    return secrets.token(name, "mqtt.password_token").reveal() if name else None


def tls_context(config: MqttConfig, source: str) -> ssl.SSLContext:
    """The client side of TLS to the broker; a file that does not load is a config error."""
    return client_context(
        source, "mqtt", config.ca_file, config.cert_file, config.key_file, verify=config.tls_verify
    )
