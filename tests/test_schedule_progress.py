"""The progress of a bulk run in hesctl, against a real hesd reading a real hesd-sim fleet:
``hesctl schedule run NAME --wait`` (a bar redrawn on a terminal, periodic lines otherwise) and
``hesctl schedule --watch`` (the table redrawn until the run ends)."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BIN, HesdProcess, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

METERS = 24
WINDOW = 4.0  # the meters' slots spread over 3.6 s: several looks see the run part done
LINE = re.compile(
    r"spread: (\d+)/24 meters \((\d+) %\), ok (\d+), failed (\d+), offline (\d+), missed (\d+), "
    r"(.*)"
)


@pytest.fixture
def hesd(
    start_hesd: Callable[..., HesdProcess], sim_process: Callable[..., SimProcess], tmp_path: Path
) -> HesdProcess:
    """hesd with the sim's meters imported and a schedule that spreads them over WINDOW."""
    sim = sim_process("--meters", str(METERS), "--mode", "serve", "--port", "0")
    config = write_config(
        tmp_path,
        daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"',
        **{
            "schedules.spread": (
                'cron = "@yearly"\nenabled = false\n'
                'read = { quantities = ["energy_active_import"] }\n'
                f'jitter = "hash"\nwindow = {WINDOW}'
            )
        },
    )
    started = start_hesd(config)
    started.hesctl("meters", "import", str(sim.inventory))
    return started


def test_without_a_terminal_wait_prints_progress_lines_then_the_result(hesd: HesdProcess) -> None:
    ran = hesd.hesctl("schedule", "run", "spread", "--wait", "60", "--every", "0.2")
    assert ran.stdout == (
        "spread: finished, 24 of 24 meters read (0 failed, 0 offline, 0 missed), ratio 100.0 %\n"
    )
    lines = ran.stderr.splitlines()
    while lines and lines[0] == "spread: selecting the meters":  # the first look may be early
        del lines[0]
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines
    done = [int(m[1]) for m in parsed if m]
    assert done == sorted(done), "done only grows"
    assert len(lines) >= 3, lines  # one per look (0.5 s apart) over the 3.6 s of slots
    partway = [m for m in parsed if m and 0 < int(m[1]) < METERS]
    assert partway, f"no look saw the run part done: {lines}"
    assert all(re.fullmatch(r"[\d.]+ meters/s, ETA \dm\d\ds", m[7]) for m in partway), lines
    last = parsed[-1]
    assert last is not None
    assert last.groups()[:6] == ("24", "100", "24", "0", "0", "0")
    assert re.fullmatch(r"[\d.]+ meters/s, took 0m0\ds", last[7]), lines[-1]

    # --watch redraws the table (a new one after a blank line, without a terminal) until the
    # run ends; the last one shows its ratio
    hesd.hesctl("schedule", "run", "spread")
    watched = hesd.hesctl("schedule", "--watch", "--interval", "0.3").stdout
    tables = watched.split("\n\n")
    assert len(tables) >= 2, watched
    assert re.search(r"^spread: \[#*\.*\] \d+/24  ok \d+", tables[0], re.MULTILINE), tables[0]
    assert "running" in tables[0]
    final = tables[-1].splitlines()
    assert final[1].split()[0] == "spread"
    assert "100.0 %" in final[1]
    assert final[1].split()[-1] == "disabled"  # no run in progress: the schedule's own state


def test_on_a_terminal_wait_redraws_one_bar_in_place(hesd: HesdProcess) -> None:
    """hesctl's standard error is a pseudo-terminal: the bar is redrawn with a carriage return
    and ends with the final count and a newline."""
    primary, secondary = os.openpty()
    command = ("schedule", "run", "spread", "--wait", "60")
    try:
        proc = subprocess.Popen(
            [str(BIN / "hesctl"), "--socket", str(hesd.socket), *command],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
        )
        os.close(secondary)
        chunks: list[bytes] = []

        def drain() -> None:
            while True:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # EIO: hesctl has closed its end
                    return
                if not chunk:
                    return
                chunks.append(chunk)

        reader = threading.Thread(target=drain, name="pty-reader")
        reader.start()
        stdout, _ = proc.communicate(timeout=60)
        reader.join(10)
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert stdout.startswith("spread: finished, 24 of 24 meters read")
    screen = b"".join(chunks).decode().replace("\r\n", "\n")  # the terminal's own newline
    draws = [d for d in screen.split("\r") if d and "selecting the meters" not in d]
    assert len(draws) >= 3, screen  # redrawn in place, not one line each
    assert all(d.startswith("spread [") for d in draws), draws
    assert all("\n" not in d for d in draws[:-1]), draws
    final = draws[-1]
    assert final.startswith(f"spread [{'#' * 30}] 24/24  ok 24  failed 0  offline 0  missed 0  ")
    assert re.search(r"meters/s, took 0m0\ds\x1b\[K\n$", final), repr(final)
    assert any("ETA" in d for d in draws[:-1]), draws


def test_the_eta_is_the_rest_at_the_rate_so_far_but_never_past_the_window() -> None:
    from hesd.ctl_schedule import _line

    run = {
        "selected": 1000, "done": 100, "succeeded": 90, "failed": 4, "skipped": 6, "missed": 0,
        "elapsed_seconds": 20.0, "finished_at": None,
    }  # fmt: skip
    assert _line("bl", run, 900.0, "running") == (
        "bl: 100/1,000 meters (10 %), ok 90, failed 4, offline 6, missed 0, 5.0 meters/s, ETA 3m00s"
    )
    assert _line("bl", run, 60.0, "paused").endswith("5.0 meters/s, ETA 0m40s (paused)")
    assert _line("bl", run | {"selected": 0, "done": 0}, 60.0, "running") == (
        "bl: selecting the meters"
    )
