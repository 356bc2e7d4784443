"""What is known about the API call being served: who made it, from where, what it created.

The audit middleware (hesd/api/audit.py) opens a ``CallNotes`` for each request in a context
variable; the guard (hesd/api/security.py) notes the client it authenticated, and handlers note
the command they created (``note_command``), without either knowing about the audit.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ANONYMOUS",
    "SOCKET",
    "CallNotes",
    "IPAddress",
    "close_call",
    "current_client",
    "note_client",
    "note_command",
    "open_call",
    "peer_address",
    "socket_peer",
    "transport_address",
]

SOCKET: Final = "socket"  # the client of every call on the unix socket
ANONYMOUS: Final = "anonymous"  # a call on TCP without a valid key

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(slots=True)
class CallNotes:
    client: str
    command_id: str | None = None


_CALL: ContextVar[CallNotes | None] = ContextVar("hesd_api_call", default=None)


def open_call(client: str) -> tuple[CallNotes, Token[CallNotes | None]]:
    """Start the notes of a call; returns them and the token for ``close_call``."""
    notes = CallNotes(client)
    return notes, _CALL.set(notes)


def close_call(token: Token[CallNotes | None]) -> None:
    _CALL.reset(token)


def note_client(name: str) -> None:
    """The call was authenticated as API client ``name``."""
    notes = _CALL.get()
    if notes is not None:
        notes.client = name


def note_command(command_id: str) -> None:
    """The call created command ``command_id`` (the audit records it with the call)."""
    notes = _CALL.get()
    if notes is not None:
        notes.command_id = command_id


def current_client() -> str:
    """Who makes the call being served: a client name, ``socket``, or ``anonymous``."""
    notes = _CALL.get()
    return SOCKET if notes is None else notes.client


def peer_address(peername: object) -> IPAddress | None:
    """The IP address of a TCP peer (``transport.get_extra_info("peername")``); an IPv4 peer of a
    dual-stack listener (``::ffff:192.0.2.7``) as IPv4, so that IPv4 allowlists apply."""
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    try:
        address = ipaddress.ip_address(peername[0].partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def transport_address(transport: asyncio.BaseTransport | None) -> IPAddress | None:
    """The IP address of the TCP peer on ``transport`` (``peer_address``), or None."""
    return peer_address(None if transport is None else transport.get_extra_info("peername"))


_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid (socket(7), SO_PEERCRED)


def socket_peer(transport: asyncio.BaseTransport | None) -> str:
    """``uid:N`` of the process on the other end of a unix socket, or "" when unknown."""
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return ""
    try:
        _, uid, _ = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except (OSError, struct.error):
        return ""
    return f"uid:{uid}"
