# SPDX-License-Identifier: GPL-2.0-or-later
"""Checks for systemd/hesd.service.

`systemd-analyze verify` parses the unit the way systemd does. It needs no
running systemd, but it refuses an ExecStart= binary that does not exist, so
the unit is copied into tmp_path with ExecStart=/ExecReload= pointed at a
binary that does. It also exits 0 on unknown keys and unparsable values, so
the test reads its output as well: any line naming the copied unit fails it.
Warnings about other units installed on the machine are ignored.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "hesd.service"
UNIT_NAME = "hesd.service"


def _systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.fail("systemd-analyze not found; install it with `apt-get install systemd`")
    return exe


def _directives(text: str) -> dict[str, dict[str, list[str]]]:
    """Map section -> key -> values, skipping comments, like systemd does."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {raw!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _existing_binary() -> str:
    return shutil.which("true") or sys.executable


def _copy_for_verify(dest_dir: Path, text: str | None = None) -> Path:
    """Copy the unit with ExecStart=/ExecReload= pointed at an existing binary."""
    if text is None:
        text = UNIT.read_text(encoding="utf-8")
    binary = _existing_binary()
    rewritten, count = re.subn(
        r"^(ExecStart|ExecReload)=(\S+)",
        lambda m: f"{m.group(1)}={binary}",
        text,
        flags=re.MULTILINE,
    )
    # One ExecStart= and one ExecReload= line; if that changes, this test
    # must be looked at rather than silently verifying a unit without them.
    assert count == 2, f"expected 2 Exec lines to rewrite, rewrote {count}"
    path = dest_dir / UNIT_NAME
    path.write_text(rewritten, encoding="utf-8")
    return path


def _verify(path: Path) -> tuple[int, list[str]]:
    """Run systemd-analyze verify; return its exit code and the output lines
    that concern the given unit file."""
    proc = subprocess.run(
        [_systemd_analyze(), "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (proc.stdout + proc.stderr).splitlines()
    ours = [ln for ln in lines if str(path) in ln or UNIT_NAME in ln]
    return proc.returncode, ours


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    path = _copy_for_verify(tmp_path)
    returncode, ours = _verify(path)
    assert ours == [], "systemd-analyze verify complained:\n" + "\n".join(ours)
    assert returncode == 0


def test_verify_check_catches_mistakes(tmp_path: Path) -> None:
    """The filter above must not hide real problems: a misspelt key and a bad
    value in the copied unit have to show up as lines naming it."""
    text = UNIT.read_text(encoding="utf-8").replace(
        "DevicePolicy=closed", "DevicePolicy=closd\nProtectSystm=strict", 1
    )
    path = _copy_for_verify(tmp_path, text)
    _, ours = _verify(path)
    joined = "\n".join(ours)
    assert "ProtectSystm" in joined, joined
    assert "closd" in joined, joined


def test_unit_settings() -> None:
    units = _directives(UNIT.read_text(encoding="utf-8"))
    service = units["Service"]

    def one(key: str) -> str:
        values = service.get(key, [])
        assert len(values) == 1, f"{key}= set {len(values)} times: {values}"
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30s"
    assert one("Restart") == "on-failure"
    assert one("LimitNOFILE") == "1048576"
    assert one("SupplementaryGroups") == "dialout"
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("User") == "hesd"
    assert one("Group") == "hesd"
    assert one("KillMode") == "mixed"
    assert one("ExecStart").startswith("/usr/bin/hesd run --config /etc/hesd/hesd.toml")
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("PrivateDevices") == "no"
    assert one("DevicePolicy") == "closed"
    assert {"char-ttyUSB rw", "char-ttyS rw"} <= set(service["DeviceAllow"])
    assert one("CapabilityBoundingSet") == ""
    assert one("AmbientCapabilities") == ""
    assert units["Install"]["WantedBy"] == ["multi-user.target"]
