"""API routes of the bulk scheduler (``hesd/scheduler.py``); their reference is docs/hes-api.yaml.

* ``GET /api/v1/schedules``: every schedule with its next run, the run in progress (progress
  counts) and the last run (success ratio), and the scheduler's budget and pause state;
* ``GET /api/v1/schedules/{name}``: one schedule and its recent runs, newest first;
* ``POST /api/v1/schedules/{name}/run``: start a run now (202), enabled or not; 409 while one
  is in progress.

``hesd.api.app`` imports this module once its own names exist (like ``hesd.ctl`` its verbs).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from aiohttp import web

from hesd.api.app import DAEMON, ApiError, Handler
from hesd.api.problem import query_int
from hesd.api.security import COMMAND, READ
from hesd.config_schedules import SCHEDULE_NAME, ScheduleConfig
from hesd.scheduler import Scheduler, SchedulerError

__all__ = ["SCOPES", "add_routes"]

MAX_RUNS: Final = 1000


def _scheduler(request: web.Request) -> Scheduler:
    scheduler = request.app[DAEMON].scheduler
    if scheduler is None:
        raise ApiError(503, "Service Unavailable", "the scheduler is not running")
    return scheduler


def _named(request: web.Request) -> tuple[Scheduler, ScheduleConfig]:
    """The scheduler and the schedule the path names, as configured now (a handler keeps this
    object: a SIGHUP while it awaits may remove the schedule from the scheduler)."""
    scheduler = _scheduler(request)
    name = request.match_info["name"]
    try:
        return scheduler, scheduler.schedule(name)
    except KeyError:
        known = ", ".join(s.name for s in scheduler.schedules) or "none"
        raise ApiError(
            404, "Not Found", f"no schedule {name!r} in the configuration (schedules: {known})"
        ) from None


async def list_schedules(request: web.Request) -> web.Response:
    return web.json_response(_scheduler(request).status())


async def get_schedule(request: web.Request) -> web.Response:
    scheduler, schedule = _named(request)
    runs = await scheduler.history(schedule.name, query_int(request, "runs", 20, MAX_RUNS))
    body = scheduler.schedule_json(schedule)
    body["runs"] = [r.to_json() for r in runs]
    return web.json_response(body)


async def run_schedule(request: web.Request) -> web.Response:
    scheduler, schedule = _named(request)
    try:
        scheduler.trigger(schedule.name)
    except SchedulerError as exc:
        raise ApiError(409, "Conflict", str(exc)) from None
    return web.json_response(scheduler.schedule_json(schedule), status=202)


# What each route needs on TCP (hesd/api/security.py); merged into hesd.api.app.SCOPES. A run
# now reads meters, as POST /api/v1/meters/{id}/read does, within the scheduled share of the
# budget: command, not admin (it changes no configuration).
SCOPES: Final[dict[Handler, str]] = {
    list_schedules: READ,
    get_schedule: READ,
    run_schedule: COMMAND,
}


def add_routes(add: Callable[[str, str, Handler], None]) -> None:
    """Register the schedule routes through the app's ``add(method, path, handler)``."""
    named = "/api/v1/schedules/{name:" + SCHEDULE_NAME + "}"
    add("GET", "/api/v1/schedules", list_schedules)
    add("GET", named, get_schedule)
    add("POST", named + "/run", run_schedule)
