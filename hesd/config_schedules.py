"""The ``[scheduler]`` section and the ``[schedules.NAME]`` tables of hesd.toml (``hesd/config.py``
reads the rest); what they mean is in docs/configuration.md, what runs them in hesd/scheduler.py.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from typing import Any, Final

from adapters.is15959 import EVENT_CATEGORIES
from adapters.profile import VENDOR_NAME, VendorProfile
from adapters.schema import ConfigError, Table
from hesd.cron import CronError, CronSpec

__all__ = [
    "DEFAULT_SCHEDULES",
    "SCHEDULE_NAME",
    "ScheduleConfig",
    "ScheduledRead",
    "SchedulerConfig",
    "check_schedules",
    "parse_scheduler",
    "parse_schedules",
]

SCHEDULE_NAME: Final = r"[a-z][a-z0-9_-]{0,63}"
JITTERS: Final = ("hash", "none")
# hesd.store.registry.TRANSPORTS (importing the store here would be circular; a test compares)
TRANSPORTS: Final = ("tcp-in", "tcp-out", "serial", "mqtt")
# Without any [schedules.NAME] table, hesd has these: a DISCOM's usual set, disabled until an
# operator enables them (hesd.toml at the repository root states them, docs/configuration.md).
DEFAULT_SCHEDULES: Final = """
[billing_daily]
enabled = false
cron = "30 0 * * *"
read = { profile = "billing" }
window = 7200.0
priority = 7
max_backfill = 3024000.0

[block_load]
enabled = false
cron = "*/30 * * * *"
read = { profile = "block_load" }
window = 900.0
max_backfill = 172800.0

[event_logs]
enabled = false
cron = "15 * * * *"
read = { events = "all" }
window = 1800.0
max_backfill = 86400.0
"""


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    time_zone: str  # IANA name of the zone the schedules' cron times are in
    reserved_requests: int  # of limits.max_requests, left to commands and API reads
    max_in_flight: int  # meters schedules read at once, at most (within the budget left)
    hole_retries: int  # runs that try a profile's missing intervals again before giving up
    keep_runs: int  # run records kept per schedule

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)


@dataclass(frozen=True, slots=True)
class ScheduledRead:
    """What a schedule reads: quantities now, a profile, or event logs (one category or all)."""

    quantities: tuple[str, ...] = ()
    profile: str = ""
    events: str = ""  # adapters.is15959.EVENT_CATEGORIES, or "all"

    def __post_init__(self) -> None:
        if sum(map(bool, (self.quantities, self.profile, self.events))) != 1:
            raise ValueError("a scheduled read is exactly one of quantities, profile, events")
        if self.events and self.events != "all" and self.events not in EVENT_CATEGORIES:
            raise ValueError(f"no event category {self.events!r}")

    @property
    def categories(self) -> tuple[str, ...]:
        """The event categories an events read reads (every one for "all"); () for the others."""
        if not self.events:
            return ()
        return EVENT_CATEGORIES if self.events == "all" else (self.events,)

    @property
    def kind(self) -> str:
        return "quantities" if self.quantities else "profile" if self.profile else "events"

    def to_json(self) -> dict[str, Any]:
        return {self.kind: list(self.quantities) or self.profile or self.events}


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    name: str
    cron: CronSpec
    read: ScheduledRead
    window: float  # seconds a run may take: reads are spread over its first 90 %
    jitter: str  # "hash": each meter at a stable slot of the window; "none": at once
    vendors: tuple[str, ...]  # any of these; empty: every vendor
    transports: tuple[str, ...]  # any of these; empty: every transport
    tags: tuple[tuple[str, str], ...]  # all of these
    enabled: bool
    priority: int  # 0..9: higher first when runs compete for the budget
    max_backfill: float  # profile and events: the furthest back a read goes, in seconds
    # one of DEFAULT_SCHEDULES, which the file did not replace: not checked against the vendors
    # (a fleet without a billing profile still starts); a run fails its meters and says why
    embedded: bool = field(default=False, compare=False)


def parse_scheduler(table: Table) -> SchedulerConfig:
    zone = table.string("time_zone", default="UTC", describe='an IANA time zone such as "UTC"')
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise table.error(
            "time_zone",
            f'expected an IANA time zone name such as "UTC" or "Asia/Kolkata", got "{zone}"',
        ) from None
    config = SchedulerConfig(
        time_zone=zone,
        reserved_requests=table.integer("reserved_requests", lo=0, hi=1_000_000, default=64),
        max_in_flight=table.integer("max_in_flight", lo=1, hi=1_000_000, default=256),
        hole_retries=table.integer("hole_retries", lo=0, hi=100, default=3),
        keep_runs=table.integer("keep_runs", lo=1, hi=100_000, default=100),
    )
    table.finish()
    return config


def parse_schedules(doc: Table) -> tuple[ScheduleConfig, ...]:
    """``[schedules.NAME]`` tables of ``doc``; without any, ``DEFAULT_SCHEDULES``."""
    embedded = "schedules" not in doc
    if embedded:
        doc = Table(doc.source, {"schedules": tomllib.loads(DEFAULT_SCHEDULES)})
    found = doc.tables(
        "schedules",
        name_pattern=SCHEDULE_NAME,
        describe="a schedule name (a-z first, then up to 63 of a-z 0-9 _ -)",
    )
    return tuple(_schedule(name, table, embedded=embedded) for name, table in found.items())


def _schedule(name: str, table: Table, *, embedded: bool) -> ScheduleConfig:
    try:
        cron = CronSpec.parse(table.string("cron", describe='a cron expression ("*/30 * * * *")'))
    except CronError as exc:
        raise table.error("cron", str(exc)) from None
    read_t = table.table("read", required=True)
    chosen = [k for k in ("quantities", "profile", "events") if k in read_t]
    if len(chosen) != 1:
        raise read_t.error(
            chosen[1] if len(chosen) > 1 else "profile",
            "give exactly one of quantities, profile, events"
            + (f" (got {', '.join(chosen)})" if chosen else ""),
        )
    if chosen == ["quantities"]:
        read = ScheduledRead(
            quantities=read_t.string_list("quantities", pattern=r"[a-z][a-z0-9_]{0,63}")
        )
        if not read.quantities:
            raise read_t.error("quantities", "expected at least one quantity name")
    elif chosen == ["profile"]:
        read = ScheduledRead(profile=read_t.string("profile", pattern=r"[a-z][a-z0-9_]{0,63}"))
    else:
        events = read_t.choice("events", ("all", *EVENT_CATEGORIES))
        read = ScheduledRead(events=events)
    read_t.finish()
    if read.quantities and "max_backfill" in table:
        raise table.error("max_backfill", "only for profile and events reads")
    tags_t = table.table("tags")
    tags = tuple(
        sorted(
            (key, tags_t.string(key, pattern=r"[A-Za-z0-9._:/-]{0,64}", describe="a tag value"))
            for key in list(tags_t.keys())
        )
    )
    for key, _ in tags:
        if re.fullmatch(r"[a-z][a-z0-9_]{0,31}", key) is None:
            raise tags_t.error(key, "expected a lower-case tag name (a-z, 0-9, _)")
    tags_t.finish()
    schedule = ScheduleConfig(
        name=name,
        cron=cron,
        read=read,
        window=table.number("window", lo=1, hi=7 * 86400, default=600.0),
        jitter=table.choice("jitter", JITTERS, default="hash"),
        vendors=table.string_list(
            "vendors", default=(), pattern=VENDOR_NAME, describe="vendor names"
        ),
        transports=table.string_list(
            "transports",
            default=(),
            pattern="|".join(TRANSPORTS),
            describe="transports (" + ", ".join(TRANSPORTS) + ")",
        ),
        tags=tags,
        enabled=table.boolean("enabled", default=True),
        priority=table.integer("priority", lo=0, hi=9, default=5),
        max_backfill=table.number("max_backfill", lo=60, hi=400 * 86400, default=172800.0),
        embedded=embedded,
    )
    table.finish()
    return schedule


def check_schedules(
    source: str, schedules: tuple[ScheduleConfig, ...], profiles: dict[str, VendorProfile]
) -> None:
    """Each schedule's vendors are loaded and some selected vendor has what it reads (the
    schedules of the file: the embedded set is not checked)."""
    for schedule in schedules:
        if schedule.embedded:
            continue
        where = f"schedules.{schedule.name}"
        for index, vendor in enumerate(schedule.vendors):
            if vendor not in profiles:
                raise ConfigError(
                    source,
                    f"{where}.vendors[{index}]",
                    f'vendor "{vendor}" is not loaded (loaded: {", ".join(sorted(profiles))})',
                )
        selected = [profiles[v] for v in schedule.vendors or sorted(profiles)]
        read = schedule.read
        if read.profile and not any(p.profile(read.profile) for p in selected):
            known = sorted({lp.name for p in selected for lp in p.profiles})
            raise ConfigError(
                source,
                f"{where}.read.profile",
                f'no selected vendor has a profile "{read.profile}" (they have '
                f"{', '.join(known) or 'none'})",
            )
        for index, name in enumerate(read.quantities):
            if not any(p.quantity(name) for p in selected):
                raise ConfigError(
                    source,
                    f"{where}.read.quantities[{index}]",
                    f'no selected vendor has a quantity "{name}"',
                )
