"""hesd as a process: READY/WATCHDOG to NOTIFY_SOCKET, hesctl, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hesd import daemon as daemon_module
from tests.conftest import REPO, HesdProcess, wait_for, write_config

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
StartHesd = Callable[..., HesdProcess]


def log_events(hesd: HesdProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in hesd.log_text().splitlines() if line.startswith("{")]


def has_event(hesd: HesdProcess, name: str) -> bool:
    return any(e.get("event") == name for e in log_events(hesd))


def test_ready_status_and_clean_stop(start_hesd: StartHesd) -> None:
    hesd = start_hesd()
    assert hesd.socket.exists()
    assert oct(hesd.socket.stat().st_mode & 0o777) == oct(0o660)

    status = hesd.hesctl("status")
    assert "hesd      0.1.0 (running)" in status.stdout
    assert "vendors   is15959" in status.stdout
    assert "intake    reading (loop lag " in status.stdout
    info = json.loads(hesd.hesctl("status", "--json").stdout)
    assert info["state"] == "running"
    assert info["meters"] == {"total": 0, "unknown": 0, "online": 0, "offline": 0}
    assert info["outbox"]["depth"] == 0
    assert info["intake"]["enabled"]

    assert hesd.stop(signal.SIGTERM) == 0
    hesd.notify.wait_for("STOPPING=1")
    assert has_event(hesd, "daemon.drained")
    assert has_event(hesd, "daemon.stopped")
    assert not hesd.socket.exists()


def test_sigint_also_drains(start_hesd: StartHesd) -> None:
    hesd = start_hesd()
    assert hesd.stop(signal.SIGINT) == 0
    assert has_event(hesd, "daemon.drained")


def test_watchdog_reaches_notify_socket(start_hesd: StartHesd) -> None:
    hesd = start_hesd(watchdog_usec=200_000)  # pings every 0.1 s
    hesd.notify.wait_count("WATCHDOG=1", 4, timeout=10)
    assert hesd.stop() == 0


def test_import_list_show_export(start_hesd: StartHesd, tmp_path: Path) -> None:
    hesd = start_hesd()
    example = REPO / "conf" / "meters.example.csv"
    assert hesd.hesctl("meters", "import", str(example)).stdout.strip() == (
        "meters.example.csv: 5 created, 0 updated, 0 unchanged"
    )
    assert (
        "0 created, 0 updated, 5 unchanged" in hesd.hesctl("meters", "import", str(example)).stdout
    )

    table = hesd.hesctl("meters").stdout.splitlines()
    assert table[0].split() == [
        "METER",
        "VENDOR",
        "TRANSPORT",
        "STATUS",
        "LAST",
        "SEEN",
        "SIGNAL",
        "FIRMWARE",
    ]
    assert table[-1] == "5 meters"
    assert hesd.hesctl("meters", "--status", "online").stdout.splitlines()[-1] == "0 meters"
    listed = json.loads(hesd.hesctl("meters", "--vendor", "is15959", "--json").stdout)
    assert [m["meter_id"] for m in listed] == [f"MTR-000000{i}" for i in range(1, 6)]

    shown = json.loads(hesd.hesctl("meters", "show", "MTR-0000002", "--json").stdout)
    assert shown["address"] == "10.20.0.12:4059"
    missing = hesd.hesctl("meters", "show", "NOPE", check=False)
    assert missing.returncode == 1
    assert "meter 'NOPE' is not in the registry" in missing.stderr

    out = tmp_path / "export.csv"
    hesd.hesctl("meters", "export", str(out))
    exported = out.read_text()
    assert exported.splitlines()[0] == example.read_text().splitlines()[0]
    assert len(exported.splitlines()) == 6
    assert "dt=DT7;feeder=F12" in exported  # tags come back sorted by key

    status = json.loads(hesd.hesctl("status", "--json").stdout)
    assert status["meters"]["total"] == 5
    assert hesd.stop() == 0


def test_bad_import_changes_nothing(start_hesd: StartHesd, tmp_path: Path) -> None:
    hesd = start_hesd()
    bad = tmp_path / "lot7.csv"
    bad.write_text("meter_id,vendor,transport\nM1,is15959,tcp-in\nM2,acme,tcp-in\n")
    result = hesd.hesctl("meters", "import", str(bad), check=False)
    assert result.returncode == 1
    assert (
        'lot7.csv:3: vendor: unknown vendor "acme" (known: is15959, kalpa, meghdoot, sunrise)'
        in result.stderr
    )
    assert hesd.hesctl("meters").stdout.splitlines()[-1] == "0 meters"
    dry = hesd.hesctl("meters", "import", "--dry-run", str(REPO / "conf" / "meters.example.csv"))
    assert "5 meters, no errors (dry run" in dry.stdout
    assert hesd.hesctl("meters").stdout.splitlines()[-1] == "0 meters"
    assert hesd.stop() == 0


def test_sighup_reloads_vendor_profiles(start_hesd: StartHesd, tmp_path: Path) -> None:
    hesd = start_hesd()
    acme = (
        (tmp_path / "vendors" / "is15959.toml")
        .read_text()
        .replace('name = "is15959"', 'name = "acme"')
    )
    (tmp_path / "vendors" / "acme.toml").write_text(acme)
    hesd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: has_event(hesd, "config.reloaded"), 15, "config.reloaded in the log")
    hesd.notify.wait_for("RELOADING=1")
    assert [v["name"] for v in json.loads(hesd.hesctl("vendors", "list", "--json").stdout)] == [
        "acme",
        "is15959",
        "kalpa",
        "meghdoot",
        "sunrise",
    ]

    # a broken profile is refused; the running profiles stay, and so does the daemon
    (tmp_path / "vendors" / "acme.toml").write_text(
        acme.replace("client_address = 32", "client_address = 999")
    )
    hesd.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: has_event(hesd, "config.reload_failed"), 15, "config.reload_failed")
    failed = next(e for e in log_events(hesd) if e["event"] == "config.reload_failed")
    assert "acme.toml: associations.reader.client_address: expected integer 1..127, got 999" in str(
        failed["error"]
    )
    assert "acme" in hesd.hesctl("vendors", "list").stdout
    assert hesd.proc.poll() is None
    assert hesd.stop() == 0


def test_second_daemon_on_same_state_dir_refused(start_hesd: StartHesd, tmp_path: Path) -> None:
    hesd = start_hesd()
    second = subprocess.run(
        [str(BIN / "hesd"), "run", "--config", str(hesd.config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 78
    assert "another hesd is running with this state directory" in second.stderr
    assert hesd.hesctl("status").returncode == 0
    assert hesd.stop() == 0


def test_invalid_config_exits_78(tmp_path: Path) -> None:
    config = write_config(tmp_path, uplink='batch_size = "big"')
    result = subprocess.run(
        [str(BIN / "hesd"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 78
    assert (
        f'hesd: {config}: uplink.batch_size: expected integer 1..10000, got "big"' in result.stderr
    )


def test_hesctl_without_daemon(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
    result = subprocess.run(
        [str(BIN / "hesctl"), "--socket", str(tmp_path / "none.sock"), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"hesctl: hesd is not running (nothing answers on {tmp_path}")
    result = subprocess.run(
        [str(BIN / "hesctl"), "meters"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "var/hesd.sock" in result.stderr


def test_hesd_run_tunes_its_own_collector_only() -> None:
    """``hesd run`` (``Daemon(tune_gc=True)``) freezes what start-up built and collects the
    young generation less often, keeping the older generations' thresholds."""
    code = (
        "import gc; from hesd import daemon; before = gc.get_threshold(); daemon._tune_gc(); "
        "print(before[0], gc.get_threshold()[0], gc.get_threshold()[1:] == before[1:], "
        "gc.get_freeze_count() > 0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["700", str(daemon_module.GC_YOUNG), "True", "True"]
