"""[scheduler] and [schedules.NAME] of hesd.toml: defaults, and errors naming file and key."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from adapters.is15959 import EVENT_CATEGORIES
from adapters.schema import ConfigError
from hesd import config_schedules
from hesd.config import load_config
from hesd.store.registry import TRANSPORTS

REPO = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str) -> str | None:
    """Load hesd.toml with ``text`` and its vendor profiles; the error, or None."""
    shutil.copytree(REPO / "conf" / "vendors", tmp_path / "vendors", dirs_exist_ok=True)
    path = tmp_path / "hesd.toml"
    path.write_text('[vendors]\ndir = "vendors"\n' + text)
    try:
        load_config(path).load_vendor_profiles()
    except ConfigError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


def test_without_schedules_a_discoms_set_is_there_disabled() -> None:
    config = load_config(None)
    assert config.scheduler.time_zone == "UTC"
    assert config.scheduler.reserved_requests == 64
    found = {s.name: (s.cron.text, s.read.to_json(), s.enabled) for s in config.schedules}
    assert found == {
        "billing_daily": ("30 0 * * *", {"profile": "billing"}, False),
        "block_load": ("*/30 * * * *", {"profile": "block_load"}, False),
        "event_logs": ("15 * * * *", {"events": "all"}, False),
    }


def test_the_embedded_set_is_not_checked_against_the_vendors(tmp_path: Path) -> None:
    """A fleet whose vendors have no billing profile still starts on the embedded (disabled)
    set; the same schedule written in the file is refused, naming the key."""
    from tests.test_vendor_adapters import ACME_PROFILE, BUILT_IN

    (tmp_path / "vendors").mkdir()
    (tmp_path / "vendors" / "acme.toml").write_text(ACME_PROFILE % BUILT_IN)
    path = tmp_path / "hesd.toml"
    path.write_text('[vendors]\ndir = "vendors"\n')
    config = load_config(path)
    assert list(config.load_vendor_profiles()) == ["acme"]
    assert [s.name for s in config.schedules] == ["billing_daily", "block_load", "event_logs"]
    path.write_text(
        '[vendors]\ndir = "vendors"\n[schedules.billing_daily]\ncron = "30 0 * * *"\n'
        'read = { profile = "billing" }\n'
    )
    with pytest.raises(ConfigError, match=r"schedules\.billing_daily\.read\.profile: no selected"):
        load_config(path).load_vendor_profiles()


def test_a_schedule_in_the_file_replaces_the_default_set(tmp_path: Path) -> None:
    text = """
[scheduler]
time_zone = "Asia/Kolkata"
[schedules.feeder_f12]
cron = "*/15 * * * *"
read = { quantities = ["energy_active_import", "voltage_l1"] }
vendors = ["is15959"]
transports = ["tcp-in", "tcp-out"]
tags = { feeder = "F12" }
window = 300
jitter = "none"
priority = 8
"""
    assert load(tmp_path, text) is None
    config = load_config(tmp_path / "hesd.toml")
    [schedule] = config.schedules
    assert config.scheduler.zone.key == "Asia/Kolkata"
    assert (schedule.name, schedule.enabled, schedule.window, schedule.jitter) == (
        "feeder_f12",
        True,
        300.0,
        "none",
    )
    assert schedule.read.quantities == ("energy_active_import", "voltage_l1")
    assert schedule.tags == (("feeder", "F12"),)
    assert schedule.transports == ("tcp-in", "tcp-out")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[scheduler]\ntime_zone = "IST"\n',
            'scheduler.time_zone: expected an IANA time zone name such as "UTC" or '
            '"Asia/Kolkata", got "IST"',
        ),
        (
            '[schedules.a]\ncron = "*/30 * * *"\nread = { profile = "block_load" }\n',
            "schedules.a.cron: '*/30 * * *': expected 5 fields (minute hour day-of-month "
            "month day-of-week), got 4",
        ),
        (
            '[schedules.a]\nread = { profile = "block_load" }\n',
            'schedules.a.cron: missing; expected a cron expression ("*/30 * * * *")',
        ),
        (
            '[schedules.a]\ncron = "@daily"\n',
            "schedules.a.read: missing; expected a table ([schedules.a.read])",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing", events = "all" }\n',
            "schedules.a.read.events: give exactly one of quantities, profile, events "
            "(got profile, events)",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { events = "tamper" }\n',
            'schedules.a.read.events: expected one of "all", "voltage", "current", "power", '
            '"transaction", "other", "non_rollover", "control", got "tamper"',
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { quantities = ["voltage_l1"] }\n'
            "max_backfill = 3600\n",
            "schedules.a.max_backfill: only for profile and events reads",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing" }\nwindow = 0\n',
            "schedules.a.window: expected number 1..604800, got 0",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing" }\ncrontab = "x"\n',
            "schedules.a.crontab: unknown key (expected one of: ",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing" }\n'
            'transports = ["gprs"]\n',
            "schedules.a.transports[0]: expected transports (tcp-in, tcp-out, serial, mqtt), "
            'got "gprs"',
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing" }\n'
            'tags = { Feeder = "F1" }\n',
            "schedules.a.tags.Feeder: expected a lower-case tag name (a-z, 0-9, _)",
        ),
        (
            '[schedules.Daily]\ncron = "@daily"\nread = { profile = "billing" }\n',
            "schedules.Daily: expected a schedule name (a-z first, then up to 63 of a-z 0-9 _ -), "
            'got "Daily"',
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "billing" }\nvendors = ["acme"]\n',
            'schedules.a.vendors[0]: vendor "acme" is not loaded (loaded: is15959, kalpa, '
            "meghdoot, sunrise)",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { profile = "hourly_load" }\n',
            'schedules.a.read.profile: no selected vendor has a profile "hourly_load" (they '
            "have billing, block_load, daily_load, instantaneous)",
        ),
        (
            '[schedules.a]\ncron = "@daily"\nread = { quantities = ["voltage_l9"] }\n',
            'schedules.a.read.quantities[0]: no selected vendor has a quantity "voltage_l9"',
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, error: str) -> None:
    found = load(tmp_path, text)
    assert found is not None
    assert found.startswith(error), found


def test_transports_agree_with_the_registry() -> None:
    assert config_schedules.TRANSPORTS == TRANSPORTS


def test_an_events_read_names_its_categories() -> None:
    read = config_schedules.ScheduledRead
    assert read(events="all").categories == EVENT_CATEGORIES
    assert read(events="power").categories == ("power",)
    assert read(profile="block_load").categories == ()
    assert read(quantities=("energy_active_import",)).categories == ()
