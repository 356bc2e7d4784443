"""The hesd HTTP API (aiohttp): served to ``hesctl`` on a unix socket, and to the MDM on TCP.

``build_app(daemon)`` is the socket's application: whoever can open the socket may call every
route. ``build_app(daemon, guard)`` is the TCP listener's: the same routes behind API keys,
address allowlists and scopes (``SCOPES``, beside the routes; hesd/api/security.py). Both audit
every call (hesd/api/audit.py). Errors are ``application/problem+json`` (RFC 9457;
hesd/api/problem.py) with a ``detail`` that names what was wrong. The reference of every route
is ``docs/hes-api.yaml``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from adapters.hooks import MeterContext
from adapters.is15959 import EVENT_CATEGORIES
from adapters.normalise import Batch, NormaliseError
from hesd import __version__
from hesd.api.audit import AUDIT, audit_middleware, list_calls
from hesd.api.calls import current_client, note_command
from hesd.api.listener import api_status
from hesd.api.problem import ApiError, problem_middleware, query_int
from hesd.api.security import (
    ADMIN,
    COMMAND,
    READ,
    ApiGuard,
    guard_expect_handler,
    guard_middleware,
)
from hesd.api.values import value_json, value_text
from hesd.inventory import InventoryError, format_inventory, parse_inventory
from hesd.reads import read_events, read_profile, read_quantities
from hesd.router import CommandRejected, CommandRouter, CommandState
from hesd.session import MeterSession, SessionError
from hesd.store.registry import METER_ID, STATUSES, RegistryConflict
from hesd.timefmt import iso
from hesd.uplink.outbox import Outbox, OutboxState
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Value
from protocols.dlms.cosem import likely_class
from protocols.dlms.obis import ObisCode
from protocols.dlms.translator import TranslatorKeys, parse_hex, translate
from protocols.errors import HesdError

if TYPE_CHECKING:
    from hesd.daemon import Daemon

__all__ = ["SCOPES", "ApiError", "Handler", "build_app"]

log = structlog.get_logger("hesd.api")

DAEMON: Final[web.AppKey[Daemon]] = web.AppKey("daemon")
MAX_PAGE: Final = 100_000


def _choice(request: web.Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in choices:
        raise ApiError(
            400,
            "Bad Request",
            f"query parameter {name}: expected one of {', '.join(choices)}, got {value!r}",
        )
    return value


async def get_status(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    now = time.time()
    counts = await daemon.registry.counts()
    outbox = await daemon.outbox_state()
    store = daemon.store
    return web.json_response(
        {
            "version": __version__,
            "state": daemon.state,
            "started_at": iso(daemon.started_at),
            "uptime_seconds": round(now - daemon.started_at, 3),
            "config": daemon.config.source,
            "vendors": sorted(daemon.vendors),
            "sessions": {"active": daemon.active_sessions},
            "records": {
                "pushes": daemon.pushes_received,
                "json_records": daemon.json_records,
                "readings": daemon.readings_normalised,
                "normalise_errors": daemon.normalise_errors,
            },
            "alerts": _alerts(daemon),
            "meters": {"total": sum(counts.values()), **counts},
            "outbox": _outbox_json(outbox),
            "store": {
                "pending_writes": store.pending,
                "commits": store.commits,
                "last_commit_ms": round(store.last_commit_seconds * 1000, 3),
            },
            "api": api_status(daemon.config.api, daemon.api_guard, daemon.api_site),
            "intake": _intake(daemon),
        }
    )


def _intake(daemon: Daemon) -> dict[str, Any]:
    """The intake gate (hesd/intake.py): whether meters' TCP sockets are being read."""
    gate = daemon.intake
    return {
        "enabled": gate.enabled,
        "paused": gate.paused,
        "pauses": gate.pauses,
        "paused_seconds": round(gate.paused_seconds, 3),
        "lag_ms": round(gate.lag * 1000, 1),
        "links": gate.links,
    }


def _outbox_json(state: OutboxState) -> dict[str, Any]:
    """The outbox's counts, in ``GET /api/v1/status`` and ``GET /api/v1/outbox`` alike."""
    return {
        "depth": state.depth,
        "dead_letters": state.dead_letters,
        "bytes": state.bytes,
        "limit_bytes": state.limit,
        "pressure": state.pressure,
        "in_flight": state.in_flight,
        "refused": state.refused,
        "oldest_age_seconds": None if state.oldest_age is None else round(state.oldest_age, 3),
    }


def _alerts(daemon: Daemon) -> dict[str, int]:
    """Alert pushes and the event-log reads that follow them (hesd/alerts.py)."""
    alerts = daemon.alerts
    names = ("received", "events", "reads", "read_failures", "unconfirmed")
    return {name: 0 if alerts is None else getattr(alerts, name) for name in names}


async def list_meters(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    status = _choice(request, "status", STATUSES)
    fmt = _choice(request, "format", ("json", "csv")) or "json"
    vendor = request.query.get("vendor")
    after = request.query.get("after", "")
    limit = query_int(request, "limit", 1000, MAX_PAGE)
    records = await daemon.registry.select(status=status, vendor=vendor, after=after, limit=limit)
    next_after = records[-1].meter_id if len(records) == limit else None
    if fmt == "csv":
        headers = {"X-Next-After": next_after} if next_after else {}
        return web.Response(
            text=format_inventory(r.entry for r in records),
            content_type="text/csv",
            headers=headers,
        )
    return web.json_response({"meters": [r.to_json() for r in records], "next_after": next_after})


async def get_meter(request: web.Request) -> web.Response:
    meter_id = request.match_info["meter_id"]
    record = await request.app[DAEMON].registry.get(meter_id)
    if record is None:
        raise ApiError(404, "Not Found", f"meter {meter_id!r} is not in the registry")
    return web.json_response(record.to_json())


async def import_meters(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    if request.content_type != "text/csv":
        raise ApiError(
            415,
            "Unsupported Media Type",
            f"meter import takes text/csv, got {request.content_type}",
        )
    source = request.headers.get("X-Hesd-Source", "inventory.csv")[:256]
    dry_run = request.query.get("dry_run", "") in ("1", "true")
    try:
        text = (await request.read()).decode("utf-8")  # the inventory format is UTF-8, always
    except UnicodeDecodeError as exc:
        raise ApiError(400, "Bad Request", f"{source}: not UTF-8 text (byte {exc.start})") from None
    vendors, keysets = set(daemon.vendors), set(daemon.secrets.keysets)
    try:
        # parsing a large inventory is CPU work: keep it off the event loop's thread
        entries = await asyncio.to_thread(
            parse_inventory, text, source, vendors=vendors, keysets=keysets
        )
    except InventoryError as exc:
        raise ApiError(
            422,
            "Invalid Inventory",
            str(exc),
            errors=[{"line": e.line, "column": e.column, "message": e.message} for e in exc.errors],
            more_errors=exc.more,
        ) from None
    async with daemon.import_lock:
        if dry_run:
            return web.json_response({"dry_run": True, "meters": len(entries)})
        try:
            summary = await daemon.registry.upsert(entries)
        except RegistryConflict as exc:
            raise ApiError(409, "Conflict", f"{source}: {exc}", conflicts=exc.conflicts) from None
    log.info(
        "inventory.imported",
        source=source,
        created=summary.created,
        updated=summary.updated,
        unchanged=summary.unchanged,
    )
    return web.json_response(
        {"created": summary.created, "updated": summary.updated, "unchanged": summary.unchanged}
    )


def parse_object(spec: str) -> x.AttributeDescriptor:
    """``[CLASS/]OBIS[:ATTRIBUTE]``: ``3/1.0.1.8.0.255:2``, ``1.0.1.8.0.255``, ``1-0:1.8.0*255``.

    Without a class, the class the logical name most likely has; without an attribute, 2 (the
    value, or the buffer of a profile).
    """
    text = spec.strip()
    class_text, slash, rest = text.partition("/")
    if not slash:
        class_text, rest = "", text
    if class_text and not class_text.isdigit():
        raise ValueError(f"{spec!r}: class {class_text!r} is not a number")
    attribute = 2
    head, colon, tail = rest.rpartition(":")
    if colon and tail.lstrip("-").isdigit():  # "1-0:1.8.0*255:2"; but "1-0:1.8.0" has no attribute
        try:
            obis = ObisCode.parse(head)
            attribute = int(tail)
        except ValueError:
            obis = _parse_obis(spec, rest)
    else:
        obis = _parse_obis(spec, rest)
    try:
        return x.AttributeDescriptor(
            int(class_text) if class_text else likely_class(obis), obis, attribute
        )
    except HesdError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


def _parse_obis(spec: str, text: str) -> ObisCode:
    try:
        return ObisCode.parse(text)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


async def read_meter(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    meter_id = request.match_info["meter_id"]
    body = await _json_body(request)
    kinds = [k for k in ("objects", "quantities", "profile", "events") if k in body]
    if len(kinds) != 1:
        raise ApiError(
            400,
            "Bad Request",
            "expected exactly one of objects, quantities, profile, events; got "
            + (", ".join(kinds) or "none"),
        )
    if kinds[0] != "objects":
        return await _read_normalised(daemon, meter_id, body)
    objects = body.get("objects")
    if (
        not isinstance(objects, list)
        or not objects
        or len(objects) > 64
        or not all(isinstance(o, str) for o in objects)
    ):
        raise ApiError(
            400, "Bad Request", 'objects: expected a list of 1..64 strings like "3/1.0.1.8.0.255:2"'
        )
    descriptors = []
    for index, spec in enumerate(objects):
        try:
            descriptors.append(parse_object(spec))
        except ValueError as exc:
            raise ApiError(400, "Bad Request", f"objects[{index}]: {exc}") from None
    if await daemon.registry.get(meter_id) is None:
        raise ApiError(404, "Not Found", f"meter {meter_id!r} is not in the registry")

    async def read_all(session: MeterSession) -> list[Value | x.DataAccessResult]:
        return [await session.get(d) for d in descriptors]

    try:
        values = await daemon.sessions.request(meter_id, read_all)
    except SessionError as exc:
        raise ApiError(503, "Meter Unavailable", str(exc)) from None
    return web.json_response(
        {
            "meter_id": meter_id,
            "results": [
                {
                    "object": f"{d.class_id}/{d.instance}:{d.attribute}",
                    "value": value_json(v),
                    "text": value_text(v),
                }
                for d, v in zip(descriptors, values, strict=True)
            ],
        }
    )


async def _read_normalised(daemon: Daemon, meter_id: str, body: dict[str, Any]) -> web.Response:
    """Quantities now, a profile or an event log over a time range: normalised records."""
    record = await daemon.registry.get(meter_id)
    if record is None:
        raise ApiError(404, "Not Found", f"meter {meter_id!r} is not in the registry")
    normaliser = daemon.normalisers.get(record.entry.vendor)
    if normaliser is None:
        raise ApiError(
            503,
            "Vendor Not Loaded",
            f"meter {meter_id}: vendor {record.entry.vendor!r} is not loaded",
        )
    profile = normaliser.profile
    read: Callable[[MeterSession, MeterContext], Awaitable[Batch]]
    if "quantities" in body:
        names = body["quantities"]
        if (
            not isinstance(names, list)
            or not 1 <= len(names) <= 64
            or not all(isinstance(n, str) for n in names)
        ):
            raise ApiError(400, "Bad Request", "quantities: expected a list of 1..64 names")
        unknown = [n for n in names if profile.quantity(n) is None]
        if unknown:
            raise ApiError(
                400,
                "Bad Request",
                f"quantities: vendor {profile.name} has no {', '.join(map(repr, unknown))} "
                "(hesctl vendors list; docs/vendors.md)",
            )

        def read(session: MeterSession, meter: MeterContext) -> Awaitable[Batch]:
            return read_quantities(session, normaliser, meter, names)

    else:
        start, end = _time_range(body)
        if "profile" in body:
            name = body["profile"]
            known = [p.name for p in profile.profiles]
            if name not in known:
                raise ApiError(
                    400, "Bad Request", f"profile: {name!r} is not one of {', '.join(known)}"
                )

            def read(session: MeterSession, meter: MeterContext) -> Awaitable[Batch]:
                return read_profile(session, normaliser, meter, name, start=start, end=end)

        else:
            category = body["events"]
            if category not in EVENT_CATEGORIES:
                raise ApiError(
                    400,
                    "Bad Request",
                    f"events: {category!r} is not one of {', '.join(EVENT_CATEGORIES)}",
                )

            def read(session: MeterSession, meter: MeterContext) -> Awaitable[Batch]:
                return read_events(session, normaliser, meter, category, start=start, end=end)

    async def run(session: MeterSession) -> Batch:
        meter = MeterContext(meter_id, profile.name, session.firmware, profile.model)
        return await read(session, meter)

    try:
        batch = await daemon.sessions.request(meter_id, run)
    except (SessionError, NormaliseError) as exc:
        raise ApiError(503, "Meter Unavailable", str(exc)) from None
    return web.json_response(
        {
            "meter_id": meter_id,
            "readings": [r.to_json() for r in batch.readings],
            "events": [e.to_json() for e in batch.events],
            "errors": [str(e) for e in batch.errors],
        }
    )


def _time_range(body: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    found = []
    for key in ("from", "to"):
        text = body.get(key)
        if not isinstance(text, str):
            raise ApiError(400, "Bad Request", f"{key}: expected an ISO 8601 time with offset")
        try:
            stamp = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ApiError(400, "Bad Request", f"{key}: {text!r} is not an ISO 8601 time") from None
        if stamp.tzinfo is None:
            raise ApiError(400, "Bad Request", f"{key}: {text!r} has no UTC offset")
        found.append(stamp.astimezone(dt.UTC))
    start, end = found
    if end < start:
        raise ApiError(400, "Bad Request", "to: before from")
    if end - start > dt.timedelta(days=400):
        raise ApiError(400, "Bad Request", "to: more than 400 days after from")
    return start, end


async def decode_frame(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    body = await _json_body(request)
    text = body.get("hex")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "Bad Request", "hex: expected the captured bytes as hex text")
    try:
        data = parse_hex(text)
    except ValueError as exc:
        raise ApiError(400, "Bad Request", f"hex: {exc}") from None
    keys = None
    meter_id = body.get("meter")
    if meter_id is not None:
        record = await daemon.registry.get(str(meter_id))
        if record is None:
            raise ApiError(404, "Not Found", f"meter {meter_id!r} is not in the registry")
        keyset = daemon.secrets.keysets.get(record.entry.keyset)
        if (
            keyset is None
            or keyset.global_unicast_key is None
            or (keyset.authentication_key is None)
        ):
            raise ApiError(
                422,
                "No Keys",
                f"meter {meter_id!r} has no keyset with the global unicast and authentication keys",
            )
        keys = TranslatorKeys(
            ek=keyset.global_unicast_key.reveal(),
            ak=keyset.authentication_key.reveal(),
            client_system_title=daemon.config.dlms.system_title,
            server_system_title=bytes.fromhex(record.entry.system_title)
            if record.entry.system_title
            else None,
        )
    translation = translate(data, keys=keys)
    return web.json_response({"text": translation.to_text(), **translation.to_json()})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "Bad Request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request", "the body is not a JSON object")
    return body


async def list_vendors(request: web.Request) -> web.Response:
    vendors = request.app[DAEMON].vendors
    return web.json_response(
        {
            "vendors": [
                {
                    "name": p.name,
                    "version": p.version,
                    "description": p.description,
                    "source": p.source,
                }
                for p in sorted(vendors.values(), key=lambda p: p.name)
            ]
        }
    )


async def get_outbox(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    state = await daemon.outbox_state()
    forwarder = daemon.forwarder
    dead = await _outbox(daemon).dead_batches()
    return web.json_response(
        {
            **_outbox_json(state),
            "forwarding": None
            if forwarder is None
            else {
                "url": forwarder.config.url,
                "delivered": forwarder.stats.delivered,
                "batches": forwarder.stats.batches,
                "retries": forwarder.stats.retries,
                "dead_batches": forwarder.stats.dead_letters,
                "last_error": forwarder.stats.last_error,
                "last_delivery": iso(forwarder.stats.last_delivery),
            },
            "dead_batches": [
                {
                    "batch_id": b.batch_id,
                    "kind": b.kind,
                    "records": b.records,
                    "oldest": iso(b.oldest),
                    "error": b.error,
                }
                for b in dead
            ],
        }
    )


async def replay_outbox(request: web.Request) -> web.Response:
    """Dead letters back to pending: sent again, in new batches."""
    daemon = request.app[DAEMON]
    count = await _outbox(daemon).replay()
    if daemon.forwarder is not None:
        daemon.forwarder.rescan()
    return web.json_response({"replayed": count})


async def purge_dead_letters(request: web.Request) -> web.Response:
    if request.query.get("confirm") != "yes":
        raise ApiError(
            400, "Bad Request", "purging dead letters loses them for good: add ?confirm=yes"
        )
    return web.json_response({"purged": await _outbox(request.app[DAEMON]).purge_dead()})


def _outbox(daemon: Daemon) -> Outbox:
    if daemon.outbox is None:
        raise ApiError(503, "Service Unavailable", "the outbox is not open")
    return daemon.outbox


# -- commands (hesd/router.py) ---------------------------------------------------------------


def _router(request: web.Request) -> CommandRouter:
    router = request.app[DAEMON].router
    if router is None:
        raise ApiError(503, "Service Unavailable", "the command router is not running")
    return router


async def submit_command(request: web.Request) -> web.Response:
    router = _router(request)
    body = await _json_body(request)
    meter_id, kind = body.get("meter_id"), body.get("kind")
    params, expires_in = body.get("params", {}), body.get("expires_in", 3600)
    if not isinstance(meter_id, str) or not isinstance(kind, str):
        raise ApiError(400, "Bad Request", "meter_id and kind: expected strings")
    if not isinstance(params, dict):
        raise ApiError(400, "Bad Request", "params: expected an object")
    if not isinstance(expires_in, int | float) or isinstance(expires_in, bool):
        raise ApiError(400, "Bad Request", "expires_in: expected seconds")
    if await request.app[DAEMON].registry.get(meter_id) is None:
        raise ApiError(404, "Not Found", f"meter {meter_id!r} is not in the registry")
    try:
        cmd = await router.submit(
            meter_id, kind, params, f"api:{current_client()}", float(expires_in)
        )
    except CommandRejected as exc:
        raise ApiError(400, "Bad Request", str(exc)) from None
    note_command(cmd.command_id)
    return web.json_response(cmd.to_json(), status=202)


async def get_command(request: web.Request) -> web.Response:
    command_id = request.match_info["command_id"]
    cmd = await _router(request).get(command_id)
    if cmd is None:
        raise ApiError(404, "Not Found", f"command {command_id!r} does not exist")
    body = cmd.to_json()
    body["audit"] = [
        {"at": at, "state": state, "detail": detail}
        for at, state, detail in await _router(request).audit(command_id)
    ]
    return web.json_response(body)


async def list_commands(request: web.Request) -> web.Response:
    state = request.query.get("state")
    if state is not None and state not in {s.value for s in CommandState}:
        raise ApiError(400, "Bad Request", f"state: {state!r} is not a command state")
    found = await _router(request).find(state, request.query.get("meter"))
    return web.json_response({"commands": [c.to_json() for c in found]})


async def cancel_command(request: web.Request) -> web.Response:
    command_id = request.match_info["command_id"]
    try:
        cmd = await _router(request).cancel(command_id)
    except KeyError:
        raise ApiError(404, "Not Found", f"command {command_id!r} does not exist") from None
    except CommandRejected as exc:
        raise ApiError(409, "Conflict", str(exc)) from None
    return web.json_response(cmd.to_json())


# The scope each route needs on TCP (hesd/api/security.py; the unix socket has every scope). A
# route without one here needs admin, and tests/test_api_security.py fails until it has one.
SCOPES: Final[dict[Handler, str]] = {
    get_status: READ,
    list_meters: READ,
    get_meter: READ,
    list_vendors: READ,
    get_outbox: READ,
    list_commands: READ,
    get_command: READ,
    read_meter: COMMAND,  # talks to the meter now
    submit_command: COMMAND,
    cancel_command: COMMAND,
    import_meters: ADMIN,
    decode_frame: ADMIN,  # decrypts with the meters' keys
    replay_outbox: ADMIN,
    purge_dead_letters: ADMIN,
    list_calls: ADMIN,
}


def build_app(daemon: Daemon, guard: ApiGuard | None = None) -> web.Application:
    """The socket's application, or with ``guard`` the TCP listener's."""
    if guard is None:
        middlewares = [audit_middleware("socket"), problem_middleware]
        max_size = daemon.config.api.max_request_bytes
    else:
        middlewares = [audit_middleware("tcp"), problem_middleware, guard_middleware(guard, SCOPES)]
        max_size = guard.max_request_bytes
    app = web.Application(middlewares=middlewares, client_max_size=max_size)
    app[DAEMON] = daemon
    app[AUDIT] = lambda: daemon.audit
    expect = None if guard is None else guard_expect_handler(guard, SCOPES)

    def add(method: str, path: str, handler: Handler) -> None:
        if method == "GET":  # with HEAD, as aiohttp serves it
            app.router.add_get(path, handler, expect_handler=expect)
        else:
            app.router.add_route(method, path, handler, expect_handler=expect)

    add("GET", "/api/v1/status", get_status)
    add("GET", "/api/v1/meters", list_meters)
    add("POST", "/api/v1/meters/import", import_meters)
    add("GET", "/api/v1/meters/{meter_id:" + METER_ID + "}", get_meter)
    add("GET", "/api/v1/vendors", list_vendors)
    add("POST", "/api/v1/meters/{meter_id:" + METER_ID + "}/read", read_meter)
    add("POST", "/api/v1/decode", decode_frame)
    add("GET", "/api/v1/outbox", get_outbox)
    add("POST", "/api/v1/outbox/replay", replay_outbox)
    add("DELETE", "/api/v1/outbox/dead-letters", purge_dead_letters)
    add("POST", "/api/v1/commands", submit_command)
    add("GET", "/api/v1/commands", list_commands)
    add("GET", "/api/v1/commands/{command_id:[0-9a-f]{32}}", get_command)
    add("DELETE", "/api/v1/commands/{command_id:[0-9a-f]{32}}", cancel_command)
    add("GET", "/api/v1/audit", list_calls)
    firmware.add_routes(add)
    schedules.add_routes(add)
    return app


# routes kept in their own modules: they use DAEMON and ApiError from above
from hesd.api import firmware, schedules  # noqa: E402

SCOPES.update(firmware.SCOPES)
SCOPES.update(schedules.SCOPES)
