"""Command kinds that change a meter's settings: ``limit`` (the load limiter, IC 71) and
``push_setup`` (IC 40); and ``acting``, which runs a kind under the command association.

Both follow the rules of the kinds that act (``hesd.commands``): they run under the profile's
``[session] command_association``, read the attributes first, SET only those that differ from
what was asked (so a repeated attempt does not write twice), read them all back and succeed only
when the read-back matches; ``data`` holds the values ``before`` and ``after``, and ``changed``.
Parameters are checked when the command is submitted (``CommandRejected``, the API's 400); what
only the meter can tell (the scaler of the limiter's monitored value, a threshold it cannot
hold) fails the command with the same kind of message.

``limit`` (Blue Book 4.5.9): ``threshold_normal`` and ``threshold_emergency`` are active power in
W. The limiter's ``monitored_value`` (attribute 2) names the register it compares them with; the
thresholds have that register's A-XDR type (from the vendor profile's ``[quantities]``) and its
scaler, as the meter declares it in the register's scaler_unit (attribute 3), as reads use it:
7500 W with scaler 1 is written as 750. A monitored value the profile does not declare, a unit
other than W, or a threshold that is not a multiple of the register's resolution is refused:
hesd does not guess. ``min_over_threshold_duration`` and ``min_under_threshold_duration`` are
seconds (double-long-unsigned).

``push_setup`` (Blue Book 4.4.8): ``destination`` ``"HOST:PORT"`` and ``transport`` (``"tcp"``
or ``"udp"``) in ``send_destination_and_method`` (attribute 3, whose ``message`` is kept),
``communication_window`` (attribute 4) as daily windows ``"HH:MM-HH:MM"`` in the meter's local
time (``[]``: any time), ``randomisation_start_interval`` (5, s), ``number_of_retries`` (6) and
``repetition_delay`` (7, s).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from hesd.router import Command, CommandKind, CommandRejected, Outcome
from hesd.session import MeterSession, SessionError
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import ScalerUnit, Unit
from protocols.dlms.obis import ObisCode
from protocols.errors import HesdError

__all__ = ["acting", "integer_of", "limit_kinds", "push_setup_kinds"]

RunKind = Callable[[MeterSession, Command], Awaitable[Outcome]]


def acting(run: RunKind) -> RunKind:
    """``run`` under the meter's command association (``[session] command_association``)."""

    async def act(session: MeterSession, cmd: Command) -> Outcome:
        with session.using(session.settings.profile.command_association):
            return await run(session, cmd)

    return act


def integer_of(value: Value | x.DataAccessResult | None) -> int | None:
    """An integer the meter sent (plain or typed), None if it sent something else: a boolean
    is not an integer here, and a refusal (a ``DataAccessResult``, an ``IntEnum`` whose
    read-write-denied is 3, the number of image transfer's "verification successful") is not
    a value at all."""
    if isinstance(value, Typed):
        value = value.value  # type: ignore[assignment]
    if isinstance(value, bool | x.DataAccessResult) or not isinstance(value, int):
        return None
    return value


def _check_names(kind: str, p: Mapping[str, Any], names: Iterable[str]) -> None:
    """``p`` names at least one of ``names`` and nothing else."""
    known = ", ".join(names)
    unknown = sorted(set(p) - set(names))
    if unknown:
        raise CommandRejected(f"{kind}: unknown parameter {unknown[0]!r} (known: {known})")
    if not p:
        raise CommandRejected(f"{kind}: give at least one of {known}")


def _confirmed(
    wanted: Mapping[str, Any],
    after: Mapping[str, Any],
    shown: Mapping[str, Any],
    order: Iterable[str],
    *,
    changed: list[str],
    data: dict[str, Any],
) -> Outcome:
    """The outcome of the read-back: succeeded only if every ``wanted`` value is ``after``
    (``shown`` is ``after`` as the result gives it; ``order``, the parameters' order)."""
    data["after"] = shown
    data["changed"] = changed
    wrong = {name: shown[name] for name in wanted if after[name] != wanted[name]}
    if wrong:
        return Outcome(False, f"read-back does not confirm: {wrong}", data=data)
    detail = ", ".join(f"{name} {shown[name]}" for name in order if name in wanted)
    return Outcome(
        True,
        f"set, confirmed by read-back: {detail}" if changed else f"already {detail}",
        data=data,
    )


# -- load limit (IC 71) --------------------------------------------------------------------------

LIMITER_CLASS: Final = 71  # Blue Book 4.5.9
LIMIT_ATTRIBUTES: Final = {  # parameter -> limiter attribute
    "threshold_normal": 4,
    "threshold_emergency": 5,
    "min_over_threshold_duration": 6,
    "min_under_threshold_duration": 7,
}
THRESHOLDS: Final = ("threshold_normal", "threshold_emergency")
MAX_THRESHOLD_W: Final = 1_000_000_000  # 1 GW: anything above is a typo, not a load limit
MAX_DURATION_S: Final = 0xFFFF_FFFF  # double-long-unsigned


def limit_kinds() -> dict[str, CommandKind]:
    """``limit``: set the load limiter's thresholds and durations, confirmed by read-back."""

    async def limit(session: MeterSession, cmd: Command) -> Outcome:
        return await _limit(session, cmd.params)

    return {"limit": CommandKind("limit", acting(limit), _check_limit, max_attempts=2)}


def _check_limit(p: Mapping[str, Any]) -> None:
    _check_names("limit", p, LIMIT_ATTRIBUTES)
    for name, value in p.items():
        if name in THRESHOLDS:
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or not 0 <= value <= MAX_THRESHOLD_W:
                raise CommandRejected(
                    f"limit: {name} must be active power in W, 0..{MAX_THRESHOLD_W}, got {value!r}"
                )
        elif (
            isinstance(value, bool)
            or not isinstance(value, int)
            or not 0 <= value <= MAX_DURATION_S
        ):
            raise CommandRejected(
                f"limit: {name} must be whole seconds 0..{MAX_DURATION_S}, got {value!r}"
            )


@dataclass(frozen=True, slots=True)
class _Monitored:
    """What the limiter watches, and how its thresholds are written (the monitored value's
    A-XDR type, and the scaler the meter declares for it)."""

    text: str  # class/OBIS:attribute
    quantity: str  # the profile's name for it
    type: Tag
    scaler: int


async def _monitored(session: MeterSession, limiter: ObisCode) -> _Monitored:
    """The limiter's monitored_value (attribute 2), the profile quantity it names (its A-XDR
    type) and the scaler_unit the meter declares for it; CommandRejected if the thresholds
    cannot be given in W: hesd does not guess a scaler or a type."""
    meter, profile = session.meter_id, session.settings.profile
    value = await session.get(x.AttributeDescriptor(LIMITER_CLASS, limiter, 2))
    where = f"meter {meter}: limiter {limiter}"
    # Blue Book 4.5.9 value_definition: structure { class_id, logical_name, attribute_index }
    fields = value if isinstance(value, tuple) and len(value) == 3 else (None, None, None)
    class_id, attribute = integer_of(fields[0]), integer_of(fields[2])
    if class_id is None or attribute is None or not isinstance(fields[1], bytes):
        raise SessionError(f"{where}: monitored_value {value!r} is not a value definition")
    try:
        obis = ObisCode.from_bytes(fields[1])
    except HesdError as exc:
        raise SessionError(f"{where}: monitored_value: {exc}") from None
    text = f"{class_id}/{obis}:{attribute}"
    quantity = next(
        (
            q
            for q in profile.quantities
            if (q.class_id, q.obis, q.attribute) == (class_id, obis, attribute)
        ),
        None,
    )
    if quantity is None:
        raise CommandRejected(
            f"limit: {where} monitors {text}, which vendor profile {profile.name} does not "
            "declare in [quantities]: its type and scaler are not known"
        )
    scaler = 0  # a Data object (class 1) has no scaler_unit
    declared_unit: Unit | int = quantity.unit
    if quantity.class_id in (3, 4):  # the meter's own scaler_unit, as reads use it
        declared = await session.get(x.AttributeDescriptor(quantity.class_id, obis, 3))
        if isinstance(declared, x.DataAccessResult):
            raise SessionError(f"{where}: scaler_unit of {text}: refused ({declared.name})")
        try:
            scaler_unit = ScalerUnit.from_value(declared)
        except HesdError as exc:
            raise SessionError(f"{where}: scaler_unit of {text}: {exc}") from None
        scaler, declared_unit = scaler_unit.scaler, scaler_unit.unit
    if declared_unit is not Unit.WATT:
        unit_text = declared_unit.symbol if isinstance(declared_unit, Unit) else declared_unit
        said = f"unit {unit_text!r}"
        raise CommandRejected(
            f"limit: {where} monitors {quantity.name} ({text}) in {said}, not active power in W"
        )
    return _Monitored(text, quantity.name, quantity.type, scaler)


def _watts(raw: int, scaler: int) -> int | float:
    value = Decimal(raw).scaleb(scaler)
    return int(value) if value == value.to_integral_value() else float(value)


def _raw_threshold(name: str, watts: float, monitored: _Monitored, meter: str) -> int:
    raw = Decimal(str(watts)).scaleb(-monitored.scaler)
    step = Decimal(1).scaleb(monitored.scaler)
    if raw != raw.to_integral_value():
        raise CommandRejected(
            f"limit: {name} {watts:g} W is not a multiple of {step:f} W, the resolution of "
            f"{monitored.quantity} on meter {meter}"
        )
    try:
        axdr.encode(Typed(monitored.type, int(raw)))
    except HesdError:
        raise CommandRejected(
            f"limit: {name} {watts:g} W does not fit the {monitored.type.name.lower()} of "
            f"{monitored.quantity} on meter {meter}"
        ) from None
    return int(raw)


async def _limits(session: MeterSession, limiter: ObisCode) -> dict[str, int]:
    """Raw threshold_active and the four settings (attributes 3..7)."""
    names = {"threshold_active": 3, **LIMIT_ATTRIBUTES}
    out: dict[str, int] = {}
    for name, attribute in names.items():
        value = await session.get(x.AttributeDescriptor(LIMITER_CLASS, limiter, attribute))
        number = integer_of(value)
        if number is None:
            raise SessionError(
                f"meter {session.meter_id}: limiter {limiter}: {name} (attribute {attribute}): "
                f"{value.name.lower() if isinstance(value, x.DataAccessResult) else repr(value)}"
            )
        out[name] = number
    return out


def _limit_data(raw: dict[str, int], monitored: _Monitored) -> dict[str, int | float]:
    return {
        name: _watts(value, monitored.scaler) if name.startswith("threshold") else value
        for name, value in raw.items()
    }


async def _limit(session: MeterSession, params: Mapping[str, Any]) -> Outcome:
    limiter = session.settings.profile.objects.limiter
    monitored = await _monitored(session, limiter)
    wanted = {
        name: _raw_threshold(name, value, monitored, session.meter_id)
        if name in THRESHOLDS
        else int(value)
        for name, value in params.items()
    }
    before = await _limits(session, limiter)
    data: dict[str, Any] = {
        "monitored_value": monitored.text,
        "scaler": monitored.scaler,
        "before": _limit_data(before, monitored),
    }
    changed = [name for name in LIMIT_ATTRIBUTES if name in wanted and before[name] != wanted[name]]
    for name in changed:
        attribute = x.AttributeDescriptor(LIMITER_CLASS, limiter, LIMIT_ATTRIBUTES[name])
        value = Typed(
            monitored.type if name in THRESHOLDS else Tag.DOUBLE_LONG_UNSIGNED, wanted[name]
        )
        result = await session.set(attribute, value)
        if result is not x.DataAccessResult.SUCCESS:
            data["set_result"] = {name: result.name.lower()}
            return Outcome(False, f"the meter refused {name}: {result.name}", data=data)
    after = await _limits(session, limiter)
    shown = _limit_data(after, monitored)
    return _confirmed(wanted, after, shown, LIMIT_ATTRIBUTES, changed=changed, data=data)


# -- push setup (IC 40) --------------------------------------------------------------------------

PUSH_CLASS: Final = 40  # Blue Book 4.4.8
PUSH_ATTRIBUTES: Final = {  # parameter -> push setup attribute
    "destination": 3,
    "transport": 3,
    "communication_window": 4,
    "randomisation_start_interval": 5,
    "number_of_retries": 6,
    "repetition_delay": 7,
}
PUSH_NUMBERS: Final = {  # attribute -> (parameter, A-XDR type, largest value)
    5: ("randomisation_start_interval", Tag.LONG_UNSIGNED, 0xFFFF),
    6: ("number_of_retries", Tag.UNSIGNED, 0xFF),
    7: ("repetition_delay", Tag.LONG_UNSIGNED, 0xFFFF),
}
TRANSPORTS: Final = {"tcp": 0, "udp": 1}  # Blue Book 4.4.8 transport_service
MAX_WINDOWS: Final = 8
_HOST: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_WINDOW: Final = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")


def push_setup_kinds() -> dict[str, CommandKind]:
    """``push_setup``: where and when the meter pushes, confirmed by read-back."""

    async def push_setup(session: MeterSession, cmd: Command) -> Outcome:
        return await _push_setup(session, cmd.params)

    return {
        "push_setup": CommandKind("push_setup", acting(push_setup), _check_push, max_attempts=2)
    }


def _destination(text: object) -> str:
    """``HOST:PORT`` (an IPv6 address in brackets), as the meter's octet-string will hold it."""
    if not isinstance(text, str) or len(text) > 255 or ":" not in text:
        raise CommandRejected(f"push_setup: destination must be HOST:PORT, got {text!r}")
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 1 <= int(port) <= 65535 or port != str(int(port)):
        raise CommandRejected(f"push_setup: destination {text!r}: port must be 1..65535")
    if not _host(host):
        raise CommandRejected(
            f"push_setup: destination {text!r}: {host!r} is not a host name or IP address "
            "(an IPv6 address goes in brackets)"
        )
    return text


def _host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _HOST.fullmatch(host) is not None


def _windows(value: object) -> list[tuple[int, int, int, int]]:
    """Daily windows "HH:MM-HH:MM" (the meter's local time) as (h, m, h, m); [] for any time."""
    if not isinstance(value, list) or len(value) > MAX_WINDOWS:
        raise CommandRejected(
            f"push_setup: communication_window must be a list of at most {MAX_WINDOWS} "
            '"HH:MM-HH:MM" (the meter\'s local time), [] for any time'
        )
    out = []
    for item in value:
        found = _WINDOW.fullmatch(item) if isinstance(item, str) else None
        if found is None:
            raise CommandRejected(
                f'push_setup: communication_window: {item!r} is not "HH:MM-HH:MM" (00:00..23:59)'
            )
        out.append((int(found[1]), int(found[2]), int(found[3]), int(found[4])))
    return out


def _check_push(p: Mapping[str, Any]) -> None:
    _check_names("push_setup", p, PUSH_ATTRIBUTES)
    if "destination" in p:
        _destination(p["destination"])
    if "transport" in p and p["transport"] not in TRANSPORTS:
        raise CommandRejected(
            f"push_setup: transport must be one of {', '.join(TRANSPORTS)}, got {p['transport']!r}"
        )
    if "communication_window" in p:
        _windows(p["communication_window"])
    for name, _, largest in PUSH_NUMBERS.values():
        value = p.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= largest:
            raise CommandRejected(
                f"push_setup: {name} must be an integer 0..{largest}, got {value!r}"
            )


def _edge(octets: bytes) -> str:
    """A window edge as text: "HH:MM" for a time of every day, else its date-time fields."""
    try:
        value = DateTime.from_octets(octets)
    except HesdError:
        return octets.hex()
    daily = value.year is value.month is value.day is None
    if daily and value.hour is not None and value.minute is not None and not value.second:
        return f"{value.hour:02d}:{value.minute:02d}"
    try:
        return value.to_datetime().isoformat()
    except ValueError:
        return octets.hex()  # a recurring date with wildcards: shown as the meter holds it


def _window_edges(value: Value) -> list[tuple[bytes, bytes]] | None:
    """communication_window: array of structure { start date-time, end date-time }."""
    if not isinstance(value, list):
        return None
    edges = []
    for entry in value:
        if not isinstance(entry, tuple) or len(entry) != 2:
            return None
        start, end = entry
        if not isinstance(start, bytes) or not isinstance(end, bytes):
            return None
        edges.append((start, end))
    return edges


def _daily(hour: int, minute: int) -> bytes:
    return DateTime(None, None, None, None, hour, minute, 0, 0, None, None).to_octets()


async def _push_state(session: MeterSession, obis: ObisCode) -> tuple[dict[str, Any], bytes]:
    """Attributes 3..7 as JSON-friendly values (what the result shows and what is compared),
    and the destination's octets as the meter holds them."""
    out: dict[str, Any] = {}
    destination = b""
    for attribute in range(3, 8):
        value = await session.get(x.AttributeDescriptor(PUSH_CLASS, obis, attribute))
        where = f"meter {session.meter_id}: push setup {obis} attribute {attribute}"
        if isinstance(value, x.DataAccessResult):
            raise SessionError(f"{where}: refused ({value.name.lower()})")
        if attribute == 3:
            fields = value if isinstance(value, tuple) and len(value) == 3 else (None,) * 3
            transport, message = integer_of(fields[0]), integer_of(fields[2])
            if transport is None or message is None or not isinstance(fields[1], bytes):
                raise SessionError(f"{where}: {value!r} is not a send_destination_and_method")
            names = {number: name for name, number in TRANSPORTS.items()}
            out["transport"] = names.get(transport, transport)
            destination = fields[1]
            out["destination"] = destination.decode("ascii", "backslashreplace")
            out["message"] = message
        elif attribute == 4:
            edges = _window_edges(value)
            if edges is None:
                raise SessionError(f"{where}: {value!r} is not a communication_window")
            out["communication_window"] = [f"{_edge(a)}-{_edge(b)}" for a, b in edges]
        else:
            name = PUSH_NUMBERS[attribute][0]
            number = integer_of(value)
            if number is None:
                raise SessionError(f"{where}: {value!r} is not an integer")
            out[name] = number
    return out, destination


async def _push_setup(session: MeterSession, params: Mapping[str, Any]) -> Outcome:
    obis = session.settings.profile.objects.push_setup
    before, destination_before = await _push_state(session, obis)
    wanted: dict[str, Any] = {k: v for k, v in params.items() if k != "communication_window"}
    if "communication_window" in params:
        wanted["communication_window"] = [
            f"{a:02d}:{b:02d}-{c:02d}:{d:02d}"
            for a, b, c, d in _windows(params["communication_window"])
        ]
    data: dict[str, Any] = {"before": before}
    changed = [n for n in PUSH_ATTRIBUTES if n in wanted and before[n] != wanted[n]]
    for attribute in sorted({PUSH_ATTRIBUTES[n] for n in changed}):
        value: Value
        if attribute == 3:  # the message (encoding) the meter has stays
            transport = wanted.get("transport", before["transport"])
            destination = destination_before
            if "destination" in wanted:
                destination = wanted["destination"].encode("ascii")
            value = (
                Typed(Tag.ENUM, TRANSPORTS.get(transport, transport)),
                destination,
                Typed(Tag.ENUM, before["message"]),
            )
        elif attribute == 4:
            value = [
                (_daily(a, b), _daily(c, d))
                for a, b, c, d in _windows(params["communication_window"])
            ]
        else:
            name, tag, _ = PUSH_NUMBERS[attribute]
            value = Typed(tag, wanted[name])
        result = await session.set(x.AttributeDescriptor(PUSH_CLASS, obis, attribute), value)
        if result is not x.DataAccessResult.SUCCESS:
            names = [n for n in changed if PUSH_ATTRIBUTES[n] == attribute]
            data["set_result"] = {n: result.name.lower() for n in names}
            return Outcome(
                False, f"the meter refused {' and '.join(names)}: {result.name}", data=data
            )
    after, _ = await _push_state(session, obis)
    return _confirmed(wanted, after, after, PUSH_ATTRIBUTES, changed=changed, data=data)
