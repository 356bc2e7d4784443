"""hesctl's command verbs against a real hesd: queue, follow with --wait, list, cancel. The
meter never connects, so commands wait for it and expire (the relay itself is exercised
against hesd-sim by the router's tests)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import HesdProcess

pytestmark = pytest.mark.integration

INVENTORY = "meter_id,vendor,transport\nLONELY,is15959,tcp-in\n"


def test_hesctl_commands_expire_list_and_cancel(
    start_hesd: Callable[..., HesdProcess], tmp_path: Path
) -> None:
    hesd = start_hesd()
    (tmp_path / "meters.csv").write_text(INVENTORY)
    hesd.hesctl("meters", "import", str(tmp_path / "meters.csv"))

    expired = hesd.hesctl(
        "disconnect", "LONELY", "--expires", "1", "--wait", "20", "--json", check=False
    )
    assert expired.returncode == 3, expired.stdout + expired.stderr  # it did not succeed
    command = json.loads(expired.stdout)
    assert (command["kind"], command["state"]) == ("disconnect", "expired")

    queued = hesd.hesctl("sync-time", "LONELY", "--expires", "600")
    assert ": queued" in queued.stdout
    command_id = queued.stdout.split()[0]
    listed = hesd.hesctl("commands", "--meter", "LONELY").stdout.splitlines()
    assert listed[0].split()[:4] == ["COMMAND", "METER", "KIND", "STATE"]
    states = {line.split()[0]: line.split()[3] for line in listed[1:]}
    assert states == {command["command_id"]: "expired", command_id: "queued"}
    cancelled = hesd.hesctl("cancel", command_id)
    assert "sync_time LONELY: cancelled (cancelled on request)" in cancelled.stdout
    again = hesd.hesctl("cancel", command_id, check=False)
    assert again.returncode == 1
    assert "hesctl: " in again.stderr
    found = json.loads(hesd.hesctl("commands", "--state", "cancelled", "--json").stdout)
    assert [c["command_id"] for c in found] == [command_id]

    # events waits for its read: a meter that never comes is a queued read and exit 3
    waited = hesd.hesctl("events", "LONELY", "--category", "power", "--wait", "0.5", check=False)
    assert waited.returncode == 3, waited.stdout + waited.stderr
    assert " read LONELY: queued" in waited.stdout
    queued = hesd.hesctl("limit", "LONELY", "--normal", "7500.25", "--over", "5", "--json")
    command = json.loads(queued.stdout)
    assert command["params"] == {"threshold_normal": 7500.25, "min_over_threshold_duration": 5}
    bad = hesd.hesctl("push-setup", "LONELY", "--window", "6-7", check=False)
    assert bad.returncode == 1
    assert "push_setup: communication_window: '6-7' is not \"HH:MM-HH:MM\"" in bad.stderr
    hesd.stop()
