"""``hesd-sim`` as a subprocess: JSON log lines, --duration, SIGTERM, the files it writes, and
option errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hesd.inventory import parse_inventory
from hesd.secrets import load_secrets
from protocols.dlms.connection import AssociationParameters
from tests.conftest import BIN
from tests.test_sim_client import VENDORS, DlmsClient, TcpPipe

pytestmark = pytest.mark.integration

SIM = str(BIN / "hesd-sim")


@contextlib.asynccontextmanager
async def hesd_sim(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``hesd-sim ARGS`` with JSON logs; killed if the test leaves it running."""
    proc = await asyncio.create_subprocess_exec(
        *(SIM, "--vendors-dir", str(VENDORS), "--log-format", "json", *args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _until(proc: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    """Read JSON log lines until ``event``; every line must be JSON."""
    assert proc.stderr is not None
    async with asyncio.timeout(20):
        while line := await proc.stderr.readline():
            record = json.loads(line)
            if record["event"] == event:
                return record  # type: ignore[no-any-return]
    pytest.fail(f"hesd-sim ended without logging {event}")


async def test_runs_for_its_duration_and_writes_importable_files(tmp_path: Path) -> None:
    inventory, secrets = tmp_path / "meters.csv", tmp_path / "secrets.toml"
    async with hesd_sim(
        *("--meters", "3", "--mode", "serve", "--port", "0", "--duration", "1.5"),
        *("--stats-interval", "0.2", "--seed", "42", "--start", "2026-03-01T00:00:00Z"),
        *("--inventory-out", str(inventory), "--secrets-out", str(secrets)),
        *("--faults", "latency=1ms"),
    ) as proc:
        ready = await _until(proc, "sim.ready")
        assert (ready["mode"], ready["meters"], ready["seed"]) == ("serve", 3, 42)
        assert ready["sim_time"].startswith("2026-03-01T00:00")
        store = load_secrets(secrets)
        entries = parse_inventory(
            inventory.read_text(), "meters.csv", vendors={"is15959"}, keysets=store.keysets
        )
        assert [e.transport for e in entries] == ["tcp-out"] * 3
        pipe = await TcpPipe.connect(entries[0].address)
        client = DlmsClient(pipe, AssociationParameters(), client=16)
        await client.associate()
        await pipe.close()
        stats = await _until(proc, "sim.stats")
        assert {"requests", "bytes_in", "faults", "per_mode", "connected"} <= set(stats)
        stopped = await _until(proc, "sim.stopped")
        assert stopped["associations"] == 1
        async with asyncio.timeout(10):
            assert await proc.wait() == 0


async def test_sigterm_stops_it_cleanly() -> None:
    async with hesd_sim("--meters", "2", "--mode", "serve", "--port", "0") as proc:
        await _until(proc, "sim.ready")
        proc.send_signal(signal.SIGTERM)
        await _until(proc, "sim.stopped")
        async with asyncio.timeout(10):
            assert await proc.wait() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "dial"], "--mode dial needs --hes HOST:PORT"),
        (["--faults", "lag"], "unknown fault 'lag'"),
        (["--vendor", "acme"], "vendor file"),
        (["--vendor", "is15959:2,kalpa:2", "--meters", "3"], "adds up to 4 meters, not 3"),
        (["--hes", "nowhere"], "'nowhere' is not HOST:PORT"),
        (["--start", "2026-01-01"], "needs a UTC offset"),
    ],
)
def test_option_errors_exit_2(args: list[str], message: str) -> None:
    result = subprocess.run(
        [SIM, "--vendors-dir", str(VENDORS), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_a_port_taken_exits_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *(SIM, "--vendors-dir", str(VENDORS), "--meters", "1", "--host", "127.0.0.1"),
                *("--port-base", str(port), "--log-format", "json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    failed = [json.loads(line) for line in result.stderr.splitlines()][-1]
    assert failed["event"] == "sim.failed"
    assert f"cannot listen on 127.0.0.1:{port}" in failed["error"]
