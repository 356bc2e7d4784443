"""The kinds of command the router runs: ``read``, ``disconnect``, ``reconnect``, ``sync_time``,
``limit``, ``push_setup``.

Each kind runs on the meter's session (``SessionManager.request`` supplies it) and returns an
``Outcome`` that says whether the meter confirmed it:

* ``read``: ``{"quantities": [...]}`` (current values), ``{"profile": NAME, "from": ISO, "to":
  ISO}`` or ``{"events": CATEGORY or [CATEGORY, ...], "from": ISO, "to": ISO}`` through
  ``hesd.reads``; safe to run again, so it is tried up to three times on a ``SessionError`` and
  re-run after a restart;
* ``disconnect`` / ``reconnect``: disconnect control (IC 70, Blue Book 4.5.8) method 1
  ``remote_disconnect`` / 2 ``remote_reconnect`` with ``integer(0)``, then a read-back of
  ``output_state`` (attribute 2) and ``control_state`` (attribute 3). The state is read *first*
  and the method is invoked only if the meter is not already there, so an attempt repeated after
  a lost answer does not act twice. Succeeded only when the read-back confirms;
* ``sync_time``: reads the clock (IC 8 attribute 2), computes its offset from hesd's clock, sets
  attribute 2 to now in the meter's deviation (or the profile's ``utc_offset`` when the meter
  sends none), and reads it back; ``data`` holds the offsets before and after, in seconds;
* ``limit``: the load limiter (IC 71): ``threshold_normal`` and ``threshold_emergency`` in W,
  ``min_over_threshold_duration`` and ``min_under_threshold_duration`` in s, at least one;
* ``push_setup``: the push setup (IC 40): ``destination`` ``"HOST:PORT"``, ``transport``,
  ``communication_window``, ``randomisation_start_interval``, ``number_of_retries``,
  ``repetition_delay``, at least one. Both are in ``hesd.command_settings``;
* ``firmware_upgrade`` (with an ``ImageStore``): ``hesd.firmware``, the image transfer of Blue
  Book 4.4.6 with resume, tried ``[firmware] max_attempts`` times.

Kinds that act (all but ``read``) run under the profile's ``[session] command_association``
(``MeterSession.using``): IS 15959 meters, and hesd-sim, let the reader association (client 32,
LLS) read but not act; the shipped profiles name the utility client (48, HLS-GMAC, ciphered),
which may SET and ACTION. Reads keep the read association (``[session] association``). A kind
that acts reads the meter's state first and acts only where it differs from what was asked, so
an attempt repeated after a lost answer does not act twice, and succeeds only when the read-back
confirms.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from adapters.is15959 import EVENT_CATEGORIES
from adapters.normalise import Batch, NormaliseError, Normaliser
from hesd.command_settings import acting, integer_of, limit_kinds, push_setup_kinds
from hesd.config import FirmwareConfig
from hesd.firmware import firmware_kind
from hesd.firmware_images import ImageStore
from hesd.reads import read_events, read_profile, read_quantities, reading_with
from hesd.router import Command, CommandKind, CommandRejected, Outcome
from hesd.session import MeterSession, SessionError
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.calendar import DateTime

__all__ = ["command_kinds"]

DISCONNECT_CLASS: Final = 70  # Blue Book 4.5.8
CLOCK_CLASS: Final = 8  # Blue Book 4.5.1
FIRMWARE_DEFAULTS: Final = FirmwareConfig()
# Blue Book 4.5.8 control_state: 0 disconnected, 1 connected, 2 ready for reconnection
CONTROL_STATES: Final = {0: "disconnected", 1: "connected", 2: "ready_for_reconnection"}


def command_kinds(
    normalisers: Callable[[], Mapping[str, Normaliser]],
    clock: Callable[[], float] = time.time,
    *,
    images: ImageStore | None = None,
    firmware: FirmwareConfig = FIRMWARE_DEFAULTS,
) -> dict[str, CommandKind]:
    """The kinds hesd runs, reading with the vendors' current ``normalisers()`` (SIGHUP);
    ``firmware_upgrade`` too when there is an image store."""

    async def read(session: MeterSession, cmd: Command) -> Outcome:
        p = cmd.params
        norm, meter = reading_with(session, normalisers())
        if "quantities" in p:
            batch = await read_quantities(session, norm, meter, list(p["quantities"]))
        else:
            start, end = _instant(p["from"], "from"), _instant(p["to"], "to")
            if "profile" in p:
                batch = await read_profile(session, norm, meter, p["profile"], start=start, end=end)
            else:
                batch = Batch()
                for category in _categories(p["events"]):
                    found = await read_events(session, norm, meter, category, start=start, end=end)
                    batch.readings += found.readings
                    batch.events += found.events
                    batch.errors += found.errors
        return _read_outcome(batch)

    async def disconnect(session: MeterSession, cmd: Command) -> Outcome:
        return await _switch(session, connect=False)

    async def reconnect(session: MeterSession, cmd: Command) -> Outcome:
        return await _switch(session, connect=True)

    async def sync_time(session: MeterSession, cmd: Command) -> Outcome:
        return await _sync_time(session, reading_with(session, normalisers())[0], clock)

    kinds = {
        "read": CommandKind("read", read, _check_read, max_attempts=3, rerunnable=True),
        "disconnect": CommandKind("disconnect", acting(disconnect), _check_none, max_attempts=2),
        "reconnect": CommandKind("reconnect", acting(reconnect), _check_none, max_attempts=2),
        "sync_time": CommandKind("sync_time", acting(sync_time), _check_none, max_attempts=2),
        **limit_kinds(),
        **push_setup_kinds(),
    }
    if images is not None:
        kinds["firmware_upgrade"] = firmware_kind(
            images,
            max_attempts=firmware.max_attempts,
            backoff=firmware.retry_backoff,
            attempt_timeout=firmware.attempt_timeout,
            verify_timeout=firmware.verify_timeout,
            clock=clock,
        )
    return kinds


# -- parameters ----------------------------------------------------------------------------------


def _instant(text: object, what: str) -> dt.datetime:
    if not isinstance(text, str):
        raise CommandRejected(f"read: {what!r} must be an ISO 8601 date-time string")
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CommandRejected(f"read: {what!r} {text!r} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise CommandRejected(f"read: {what!r} {text!r} has no UTC offset")
    return moment.astimezone(dt.UTC)


def _check_read(p: Mapping[str, Any]) -> None:
    chosen = [k for k in ("quantities", "profile", "events") if k in p]
    if len(chosen) != 1:
        raise CommandRejected("read: give exactly one of 'quantities', 'profile', 'events'")
    if chosen == ["quantities"]:
        q = p["quantities"]
        if not isinstance(q, list) or not q or not all(isinstance(n, str) for n in q):
            raise CommandRejected("read: 'quantities' must be a non-empty list of names")
        return
    if chosen == ["events"]:
        _categories(p["events"])
    elif not isinstance(p[chosen[0]], str):
        raise CommandRejected(f"read: {chosen[0]!r} must be a name")
    if _instant(p.get("from"), "from") >= _instant(p.get("to"), "to"):
        raise CommandRejected("read: 'from' must be before 'to'")


def _categories(events: object) -> list[str]:
    """The event categories of a read: a name, or a non-empty list of names, each once."""
    names = [events] if isinstance(events, str) else events
    known = ", ".join(EVENT_CATEGORIES)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise CommandRejected(f"read: 'events' must be a category or a list of them ({known})")
    for name in names:
        if name not in EVENT_CATEGORIES:
            raise CommandRejected(f"read: 'events': {name!r} is not an event category ({known})")
    if len(set(names)) != len(names):
        raise CommandRejected("read: 'events' names a category twice")
    return list(names)


def _check_none(p: Mapping[str, Any]) -> None:
    if p:
        raise CommandRejected(f"this command takes no parameters, not {sorted(p)}")


def _read_outcome(batch: Batch) -> Outcome:
    errors = [str(e) for e in batch.errors]
    data: dict[str, Any] = {"errors": errors}
    if batch.events:
        data["events"] = [e.to_json() for e in batch.events]
    got = len(batch.readings) + len(batch.events)
    detail = f"{len(batch.readings)} readings, {len(batch.events)} events, {len(errors)} errors"
    return Outcome(got > 0 or not errors, detail, tuple(batch.readings), data)


# -- disconnect control (IC 70) ------------------------------------------------------------------


async def _control(session: MeterSession) -> tuple[bool, int]:
    """``output_state`` and ``control_state`` (Blue Book 4.5.8 attributes 2 and 3)."""
    obis = session.settings.profile.objects.disconnect_control
    output = await session.get(x.AttributeDescriptor(DISCONNECT_CLASS, obis, 2))
    control = await session.get(x.AttributeDescriptor(DISCONNECT_CLASS, obis, 3))
    if isinstance(output, x.DataAccessResult) or isinstance(control, x.DataAccessResult):
        raise SessionError(
            f"meter {session.meter_id}: disconnect control {obis}: the meter refused to read "
            f"its state ({output!r}, {control!r})"
        )
    if not isinstance(output, bool) or integer_of(control) is None:
        raise SessionError(
            f"meter {session.meter_id}: disconnect control {obis}: unexpected state "
            f"{output!r}, {control!r}"
        )
    return output, integer_of(control) or 0


def _state_data(output: bool, control: int) -> dict[str, Any]:
    return {"output_state": output, "control_state": CONTROL_STATES.get(control, str(control))}


async def _switch(session: MeterSession, *, connect: bool) -> Outcome:
    obis = session.settings.profile.objects.disconnect_control
    method = 2 if connect else 1  # remote_reconnect / remote_disconnect
    wanted = (True, 1) if connect else (False, 0)
    before = await _control(session)
    acted = False
    if before != wanted and not (connect and before[1] == 2):
        result, _ = await session.action(
            x.MethodDescriptor(DISCONNECT_CLASS, obis, method), Typed(Tag.INTEGER, 0)
        )
        if result is not x.ActionResult.SUCCESS:
            refused = {"before": _state_data(*before), "action_result": result.name.lower()}
            return Outcome(False, f"the meter refused method {method}: {result.name}", data=refused)
        acted = True
    after = await _control(session)
    data: dict[str, Any] = {
        "before": _state_data(*before),
        "after": _state_data(*after),
        "acted": acted,
    }
    word = "connected" if connect else "disconnected"
    if after == wanted:
        detail = f"{word}, confirmed by read-back" if acted else f"already {word}"
        return Outcome(True, detail, data=data)
    if connect and after[1] == 2:  # Blue Book 4.5.8 transition a: the consumer must press
        return Outcome(True, "ready for reconnection (the consumer reconnects locally)", data=data)
    return Outcome(
        False, f"read-back does not confirm: {_state_data(*after)}", data=data
    )  # fmt: skip


# -- clock (IC 8) ------------------------------------------------------------------------------


async def _meter_clock(
    session: MeterSession, normaliser: Normaliser
) -> tuple[dt.datetime, DateTime]:
    obis = session.settings.profile.objects.clock
    value = await session.get(x.AttributeDescriptor(CLOCK_CLASS, obis, 2))
    if isinstance(value, x.DataAccessResult):
        raise SessionError(f"meter {session.meter_id}: clock {obis}: refused ({value.name})")
    try:
        at, _ = normaliser.timestamp(value)
        stamp = value if isinstance(value, DateTime) else DateTime.from_octets(bytes(value))  # type: ignore[arg-type]
    except (NormaliseError, TypeError, ValueError) as exc:
        raise SessionError(f"meter {session.meter_id}: clock {obis}: {exc}") from None
    return at, stamp


async def _sync_time(
    session: MeterSession, normaliser: Normaliser, clock: Callable[[], float]
) -> Outcome:
    obis = session.settings.profile.objects.clock
    meter_before, stamp = await _meter_clock(session, normaliser)
    offset_before = (meter_before - dt.datetime.fromtimestamp(clock(), dt.UTC)).total_seconds()
    deviation = stamp.deviation
    if deviation is None:  # the meter gives none: the vendor's local time
        deviation = -normaliser.profile.utc_offset
    zone = dt.timezone(dt.timedelta(minutes=-deviation))
    now = dt.datetime.fromtimestamp(clock(), zone).replace(microsecond=0)
    target = DateTime.from_datetime(now)
    result = await session.set(x.AttributeDescriptor(CLOCK_CLASS, obis, 2), target.to_octets())
    if result is not x.DataAccessResult.SUCCESS:
        data = {"offset_before": offset_before, "set_result": result.name.lower()}
        return Outcome(False, f"the meter refused the new time: {result.name}", data=data)
    meter_after, _ = await _meter_clock(session, normaliser)
    offset_after = (meter_after - dt.datetime.fromtimestamp(clock(), dt.UTC)).total_seconds()
    data = {
        "offset_before": round(offset_before, 3),
        "offset_after": round(offset_after, 3),
        "deviation": deviation,
    }
    if abs(offset_after) <= 2.0:
        return Outcome(
            True, f"clock was {offset_before:+.0f} s off, now {offset_after:+.0f} s", data=data
        )
    return Outcome(False, f"read-back still {offset_after:+.0f} s off", data=data)
