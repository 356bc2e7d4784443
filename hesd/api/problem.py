"""API errors as ``application/problem+json`` (RFC 9457), for every route and the TCP guard.

``ApiError`` is what a handler raises; ``problem_middleware`` turns it, aiohttp's own HTTP errors
(unknown path or method, a body too large) and anything unexpected into a ``problem`` answer with
a ``detail`` that names what was wrong. The guard (hesd/api/security.py) answers its refusals
with ``problem`` too, before any handler runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from protocols.errors import HesdError

__all__ = ["PROBLEM", "ApiError", "problem", "problem_middleware", "query_int"]

log = structlog.get_logger("hesd.api")

PROBLEM: Final = "application/problem+json"


class ApiError(HesdError):
    """An API call that cannot be served; becomes a problem+json response."""

    def __init__(self, status: int, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = extra


def query_int(request: web.Request, name: str, default: int, most: int) -> int:
    """Query parameter ``name``, an integer 1..``most`` (``default`` when absent); a 400
    ``ApiError`` that says so otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdecimal() or not 1 <= int(text) <= most:  # isdigit() would pass '²' to int()
        raise ApiError(
            400, "Bad Request", f"query parameter {name}: expected integer 1..{most}, got {text!r}"
        )
    return int(text)


def problem(status: int, title: str, detail: str, **extra: Any) -> web.Response:
    """The answer: ``extra`` adds members to the problem object (RFC 9457 §3.2)."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return problem(exc.status, exc.title, exc.detail, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return problem(exc.status, exc.reason, f"{request.method} {request.path}: {detail}")
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("api.internal_error", method=request.method, path=request.path)
        return problem(
            500, "Internal Server Error", "hesd failed to serve this request; see its log"
        )
