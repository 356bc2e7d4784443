"""The control API of ``hesd-sim`` (aiohttp), off unless ``--control HOST:PORT``.

Routes (JSON; errors are ``application/problem+json``, RFC 9457):

* ``GET /api/v1/meters``: every meter: id, vendor, mode, address, connected, association,
  associations served, faults.
* ``GET /api/v1/meters/{id}``: the same plus the ground truth (``MeterSnapshot``): relay and how
  often it switched, clock and its offset, load limiter and push setup as the HES set them, ...
* ``GET /api/v1/meters/{id}/truth?quantity=Q&t=T``: what the meter measures for ``Q`` at
  ``T`` (UTC epoch seconds or ISO 8601; default now): exact value and register value.
* ``POST /api/v1/meters/{id}/events`` ``{"kind": "magnet_tamper"}`` (or ``{"code": 201}``):
  log the event now and push at once if the meter is connected.
* ``POST /api/v1/meters/{id}/faults`` ``{"spec": "silent"}``: replace the meter's faults
  (``""`` clears them).
* ``POST /api/v1/meters/{id}/signal`` ``{"quality": 12}``: the signal quality its GSM
  diagnostic reports from now on (0..31, 99 not known).
* ``GET /api/v1/stats``: the fleet's counters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from adapters.is15959 import QUANTITIES
from hesd.sim import truth
from hesd.sim.endpoint import MeterEndpoint
from hesd.sim.faults import FaultSpecError
from hesd.sim.model import PushSettings, SimulatedMeter
from protocols.dlms.calendar import DateTime
from protocols.errors import HesdError

if TYPE_CHECKING:
    from hesd.sim.runner import Simulator

__all__ = ["build_control_app", "serve_control"]

SIM: Final[web.AppKey[Simulator]] = web.AppKey("simulator")
PROBLEM: Final = "application/problem+json"
_MAX_BODY: Final = 64 << 10

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ControlError(HesdError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _problem(status: int, detail: str) -> web.Response:
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return web.Response(status=status, text=json.dumps(body), content_type=PROBLEM)


_TITLES: Final = {
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
}


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as exc:
        return _problem(exc.status, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _problem(exc.status, f"{request.method} {request.path}: {exc.reason}")
    except asyncio.CancelledError:
        raise
    except Exception:
        request.app[SIM].env.log.exception(
            "sim.control.error", method=request.method, path=request.path
        )
        return _problem(500, "the simulator failed to serve this request; see its log")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _endpoint(request: web.Request) -> MeterEndpoint:
    meter_id = request.match_info["meter_id"]
    found = request.app[SIM].by_id.get(meter_id)
    if found is None:
        raise ControlError(404, f"no meter {meter_id!r} in this fleet")
    return found


def _summary(sim: Simulator, e: MeterEndpoint) -> dict[str, object]:
    transport = sim.transport
    spec = e.meter.spec
    return {
        "id": e.meter_id,
        "vendor": e.site.name,
        "serial_number": spec.serial_number,
        "system_title": spec.system_title.hex().upper(),
        "keyset": e.site.keys.name,
        "mode": None if transport is None else transport.mode,
        "address": None if transport is None or not sim.ready.is_set() else transport.address(e),
        "connected": e.connected,
        "association": e.association,
        "associations_served": e.associations_served,
        "faults": "" if e.faults is None else str(e.faults),
    }


async def list_meters(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    return web.json_response({"meters": [_summary(sim, e) for e in sim.endpoints]})


async def get_meter(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    e = _endpoint(request)
    now = sim.clock.now()
    snap = e.meter.snapshot(now)
    return web.json_response(
        {
            **_summary(sim, e),
            "time": _iso(now),
            "truth": {
                "relay": snap.relay.name.lower(),
                "relay_operations": snap.relay_operations,
                "limiter": _limiter(e.meter, snap.limiter),
                "push": _push(snap.push),
                "firmware_version": snap.firmware_version,
                "clock": _iso(e.meter.meter_time(now)),
                "clock_offset": snap.clock_offset,
                "clock_drift_ppm": snap.clock_drift_ppm,
                "tamper_count": snap.tamper_count,
                "push_pending": snap.push_pending,
                "signal_quality": snap.signal_quality,
                "image": {
                    "status": snap.image_status.name.lower(),
                    "blocks_received": snap.image_blocks,
                    "activation_at": None
                    if snap.activation_at is None
                    else _iso(e.meter.clock.true_time(snap.activation_at)),
                },
                "last_events": [
                    {"time": _iso(t), "code": code, "kind": kind}
                    for t, code, kind in snap.last_events
                ],
            },
        }
    )


def _limiter(meter: SimulatedMeter, raw: tuple[int, int, int, int, int]) -> dict[str, object]:
    """The limiter's registers as the meter holds them, and the scaler of what it monitors."""
    monitored = meter.tables.limiter_monitored
    active, normal, emergency, over, under = raw
    return {
        "monitored": None if monitored is None else str(monitored.obis),
        "scaler": 0 if monitored is None else monitored.scaler,
        "threshold_active": active,
        "threshold_normal": normal,
        "threshold_emergency": emergency,
        "min_over_threshold_duration": over,
        "min_under_threshold_duration": under,
    }


def _time_of(octets: bytes) -> str:
    """A window edge: "HH:MM:SS" for a time of every day, else the date-time's fields."""
    try:
        value = DateTime.from_octets(octets)
    except HesdError:
        return octets.hex()
    if value.year is value.month is value.day is None and None not in (value.hour, value.minute):
        return f"{value.hour:02d}:{value.minute:02d}:{value.second or 0:02d}"
    return str(value)


def _push(push: PushSettings) -> dict[str, object]:
    return {
        "transport": push.transport,
        "destination": push.destination.decode("ascii", "backslashreplace"),
        "message": push.message,
        "communication_window": [[_time_of(a), _time_of(b)] for a, b in push.window],
        "randomisation_start_interval": push.randomisation,
        "number_of_retries": push.retries,
        "repetition_delay": push.repetition_delay,
    }


def _instant(text: str | None, now: float) -> float:
    if text is None:
        return now
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ControlError(400, f"t={text!r} is neither epoch seconds nor ISO 8601") from None
    if parsed.tzinfo is None:
        raise ControlError(400, f"t={text!r} has no UTC offset")
    return parsed.timestamp()


async def get_truth(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    e = _endpoint(request)
    quantity = request.query.get("quantity")
    if quantity is None:
        raise ControlError(400, "query parameter quantity is required")
    if quantity not in QUANTITIES:
        raise ControlError(422, f"quantity {quantity!r} is not a canonical quantity name")
    t = _instant(request.query.get("t"), sim.clock.now())
    meter = e.meter
    body: dict[str, object] = {
        "meter": e.meter_id,
        "quantity": quantity,
        "t": t,
        "time": _iso(t),
        "value": str(truth.value(meter, quantity, t)),
        "unit": QUANTITIES[quantity].unit,
    }
    register = meter.tables.quantities.get(quantity)
    if register is not None:
        raw = truth.raw(meter, quantity, t)
        body |= {
            "raw": raw,
            "scaler": register.scaler,
            "register_unit": register.unit.symbol,
            "obis": str(register.obis),
        }
    return web.json_response(body)


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > _MAX_BODY:
        raise ControlError(413, f"request body above {_MAX_BODY} bytes")
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ControlError(400, f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ControlError(400, "request body must be a JSON object")
    return body


async def post_event(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    e = _endpoint(request)
    body = await _body(request)
    what = body.get("kind", body.get("code"))
    if isinstance(what, bool) or not isinstance(what, str | int):
        raise ControlError(400, 'expected {"kind": "magnet_tamper"} or {"code": 201}')
    try:
        result = sim.inject(e, what, sim.clock.now())
    except ValueError as exc:
        raise ControlError(422, str(exc)) from None
    return web.json_response({"meter": e.meter_id, **result}, status=201)


async def post_faults(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    e = _endpoint(request)
    body = await _body(request)
    spec = body.get("spec")
    if not isinstance(spec, str):
        raise ControlError(400, 'expected {"spec": "FAULTS"} ("" clears them)')
    try:
        text = sim.set_faults(e, spec)
    except FaultSpecError as exc:
        raise ControlError(422, str(exc)) from None
    return web.json_response({"meter": e.meter_id, "faults": text})


async def post_signal(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    e = _endpoint(request)
    body = await _body(request)
    quality = body.get("quality")
    if isinstance(quality, bool) or not isinstance(quality, int):
        raise ControlError(400, 'expected {"quality": 12}: 0..31, or 99 for not known')
    try:
        sim.set_signal(e, quality)
    except ValueError as exc:
        raise ControlError(422, str(exc)) from None
    return web.json_response({"meter": e.meter_id, "signal_quality": quality})


async def get_stats(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    transport = sim.transport
    return web.json_response(
        {
            "time": _iso(sim.clock.now()),
            "mode": None if transport is None else transport.mode,
            "meters": len(sim.endpoints),
            "connected": sum(e.connected for e in sim.endpoints),
            **sim.stats.as_dict(),
        }
    )


def build_control_app(sim: Simulator) -> web.Application:
    app = web.Application(middlewares=[_problems], client_max_size=_MAX_BODY)
    app[SIM] = sim
    app.router.add_get("/api/v1/meters", list_meters)
    app.router.add_get("/api/v1/meters/{meter_id}", get_meter)
    app.router.add_get("/api/v1/meters/{meter_id}/truth", get_truth)
    app.router.add_post("/api/v1/meters/{meter_id}/events", post_event)
    app.router.add_post("/api/v1/meters/{meter_id}/faults", post_faults)
    app.router.add_post("/api/v1/meters/{meter_id}/signal", post_signal)
    app.router.add_get("/api/v1/stats", get_stats)
    return app


async def serve_control(sim: Simulator, host: str, port: int) -> None:
    """Serve the control API until cancelled (port 0: any free port, see the log line)."""
    runner = web.AppRunner(build_control_app(sim), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1]) if runner.addresses else port  # port 0: the one bound
        sim.control_address = (host, bound)
        sim.env.log.info("sim.control.listening", url=f"http://{host}:{bound}/api/v1")
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
