"""Every API call, on the unix socket and on TCP, recorded: in the log and in the store.

Each call becomes one ``ApiCall``: when, on which listener, which client (an API client's name,
``socket``, or ``anonymous`` for a call on TCP without a valid key), from which peer (the IP
address on TCP, ``uid:N`` on the socket), method, path (never the query string or the body),
status, duration, and the command it created. It is logged as ``api.call`` and goes to the
``api_audit`` table with the store's next group commit (a flusher: the answer does not wait for
the disk, so a crash can lose the last few milliseconds of rows, never a command, which is
durable before it is accepted).

Retention: rows older than ``api.audit_retention_days`` and the oldest beyond
``api.audit_max_rows`` are deleted at start and every ``PRUNE_INTERVAL`` seconds.
``GET /api/v1/audit`` (admin) and ``hesctl audit`` read it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from hesd.api.calls import (
    ANONYMOUS,
    SOCKET,
    close_call,
    open_call,
    socket_peer,
    transport_address,
)
from hesd.api.problem import ApiError, query_int
from hesd.store.db import Statement, Store
from hesd.timefmt import iso

__all__ = ["AUDIT", "LISTENERS", "ApiAudit", "ApiCall", "audit_middleware"]

log = structlog.get_logger("hesd.api")

LISTENERS: Final = ("socket", "tcp")
PRUNE_INTERVAL: Final = 600.0
MAX_PENDING: Final = 100_000  # rows waiting for a commit; beyond, the store is stuck anyway
MAX_PATH: Final = 512
CLIENT_CLOSED: Final = 499  # the client went away before the answer (nginx's convention)
_COLUMNS: Final = "at, listener, client, peer, method, path, status, duration_ms, command_id"
_INSERT: Final = f"INSERT INTO api_audit ({_COLUMNS}) VALUES ({', '.join('?' * 9)})"


@dataclass(frozen=True, slots=True)
class ApiCall:
    """One API call as the audit keeps it."""

    at: float  # UNIX time it arrived
    listener: str  # "socket" or "tcp"
    client: str
    peer: str
    method: str
    path: str
    status: int
    duration_ms: float
    command_id: str | None = None

    def __post_init__(self) -> None:
        if self.listener not in LISTENERS:
            raise ValueError(f"listener {self.listener!r} is not one of {LISTENERS}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status")
        if self.duration_ms < 0:
            raise ValueError(f"negative duration {self.duration_ms}")

    def row(self) -> tuple[float | int | str | None, ...]:
        """The values of ``_COLUMNS``, in their order (the fields of this class)."""
        return (
            self.at,
            self.listener,
            self.client,
            self.peer,
            self.method,
            self.path,
            self.status,
            self.duration_ms,
            self.command_id,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at, "milliseconds"),
            "listener": self.listener,
            "client": self.client,
            "peer": self.peer,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "command_id": self.command_id,
        }


class ApiAudit:
    """The ``api_audit`` table: rows written with the group commit, pruned, queried."""

    def __init__(self, store: Store, retention_days: int, max_rows: int) -> None:
        self._store = store
        self.retention_days = retention_days
        self.max_rows = max_rows
        self._pending: deque[ApiCall] = deque()
        self.dropped = 0
        store.add_flusher(self._flush)

    def record(self, call: ApiCall) -> None:
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.error(
                    "api.audit_dropped", calls=self.dropped, reason="the store is not writing"
                )
            return
        self._pending.append(call)
        self._store.poke()

    def _flush(self) -> list[Statement]:
        rows: list[Statement] = [(_INSERT, call.row()) for call in self._pending]
        self._pending.clear()
        return rows

    async def prune(self, now: float | None = None) -> None:
        """Delete rows past the retention time, then the oldest beyond ``max_rows``."""
        now = time.time() if now is None else now
        await self._store.sync()  # rows the flusher holds go in first (a commit runs them last)
        await self._store.submit(
            [
                ("DELETE FROM api_audit WHERE at < ?", (now - self.retention_days * 86400.0,)),
                (
                    "DELETE FROM api_audit WHERE id <= (SELECT max(id) FROM api_audit) - ?",
                    (self.max_rows,),
                ),
            ]
        )

    async def run_retention(self) -> None:
        """Prune now and every ``PRUNE_INTERVAL`` seconds (the task ``api:audit:retention``)."""
        while True:
            await self.prune()
            await asyncio.sleep(PRUNE_INTERVAL)

    async def query(
        self, *, since: float | None = None, client: str | None = None, limit: int = 100
    ) -> list[ApiCall]:
        """The latest ``limit`` calls, newest first; every call answered so far is included."""
        await self._store.sync()  # what the flusher holds is committed first
        where: list[str] = ["1"]
        params: list[float | str] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if client is not None:
            where.append("client = ?")
            params.append(client)
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM api_audit WHERE {' AND '.join(where)}"
            " ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [ApiCall(*row) for row in rows]


AUDIT: Final[web.AppKey[Callable[[], ApiAudit | None]]] = web.AppKey("audit")


def audit_middleware(listener: str) -> Middleware:
    """Records every call through the application it is installed in (outermost middleware,
    so that it sees the final status of refusals and errors alike)."""
    if listener not in LISTENERS:
        raise ValueError(f"listener {listener!r} is not one of {LISTENERS}")

    @web.middleware
    async def audit_calls(request: web.Request, handler: Handler) -> web.StreamResponse:
        at, started = time.time(), time.monotonic()
        notes, token = open_call(SOCKET if listener == "socket" else ANONYMOUS)
        status = 500
        try:
            response = await handler(request)
            status = response.status
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            close_call(token)
            if listener == "socket":
                peer = socket_peer(request.transport)
            else:
                address = transport_address(request.transport)
                peer = "" if address is None else str(address)
            call = ApiCall(
                at=at,
                listener=listener,
                client=notes.client,
                peer=peer,
                method=request.method[:16],
                path=request.path[:MAX_PATH],
                status=status,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
                command_id=notes.command_id,
            )
            log.info(
                "api.call",
                listener=listener,
                client=call.client,
                peer=call.peer,
                method=call.method,
                path=call.path,
                status=call.status,
                ms=call.duration_ms,
                command=call.command_id,
            )
            audit = request.app[AUDIT]()
            if audit is not None:
                audit.record(call)
        return response

    return audit_calls


def _refuse(detail: str) -> ApiError:
    return ApiError(400, "Bad Request", f"query parameter {detail}")


async def list_calls(request: web.Request) -> web.Response:
    """``GET /api/v1/audit?since=&client=&limit=``: the latest calls, newest first."""
    audit = request.app[AUDIT]()
    if audit is None:
        raise ApiError(503, "Service Unavailable", "the audit is not open")
    since_text = request.query.get("since")
    since = None
    if since_text is not None:
        try:
            stamp = datetime.fromisoformat(since_text)
        except ValueError:
            raise _refuse(f"since: {since_text!r} is not an ISO 8601 time") from None
        if stamp.tzinfo is None:
            raise _refuse(f"since: {since_text!r} has no UTC offset")
        since = stamp.timestamp()
    limit = query_int(request, "limit", 100, 10_000)
    calls = await audit.query(since=since, client=request.query.get("client"), limit=limit)
    return web.json_response({"calls": [c.to_json() for c in calls]})
