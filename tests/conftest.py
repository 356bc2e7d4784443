"""Shared fixtures: a guard against leaked tasks, a real Mosquitto broker, a running hesd."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import settings

# CI runs the same examples every time, so that a landing is judged on the change, not on a
# random draw; developers' runs keep exploring new examples (and CI prints the failing blob).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

if TYPE_CHECKING:
    from tests.sim_process import SimProcess

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; fail the test naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running behind it."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [
        t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()
    ]
    if leaked:
        _, pending = await asyncio.wait(leaked, timeout=1.0)
        for task in pending:
            task.cancel()
        if pending:
            names = ", ".join(sorted(t.get_name() for t in pending))
            pytest.fail(f"test leaked running tasks: {names}")


# -- Mosquitto --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        pytest.fail(
            "mosquitto is not installed: `make test` installs it (apt-get install mosquitto)"
        )
    return found


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A real Mosquitto broker on a free loopback port, for the whole test session."""
    binary = _mosquitto_binary()
    port = free_port()
    workdir = tmp_path_factory.mktemp("mosquitto")
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    log = workdir / "mosquitto.log"
    with log.open("w") as out:
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)

    def accepting() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(accepting, 10, "mosquitto to accept connections")
        yield Broker("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- a hesd process ---------------------------------------------------------------------------


class NotifyListener:
    """A fake ``$NOTIFY_SOCKET``: collects what hesd sends with sd_notify."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = 15.0) -> None:
        """Block until a datagram containing the line ``line`` has arrived."""
        self.wait_count(line, 1, timeout)

    def wait_count(self, line: str, count: int, timeout: float = 15.0) -> None:
        """Block until ``line`` has arrived at least ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.count(line) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"{line!r} arrived {self.count(line)} times within {timeout}s, expected {count}"
                )
            self.sock.settimeout(remaining)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def count(self, line: str) -> int:
        return sum(line in m.split("\n") for m in self.messages)

    def close(self) -> None:
        self.sock.close()


@dataclass
class HesdProcess:
    proc: subprocess.Popen[str]
    config: Path
    state_dir: Path
    notify: NotifyListener
    log: Path

    @property
    def socket(self) -> Path:
        return self.state_dir / "hesd.sock"

    def hesctl(
        self, *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(BIN / "hesctl"), "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=60,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            pytest.fail(f"hesctl {' '.join(args)} exited {result.returncode}: {result.stderr}")
        return result

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = 15, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


def write_config(tmp_path: Path, **sections: str) -> Path:
    """A hesd.toml in ``tmp_path`` using the repo's vendor profiles and a private state dir."""
    vendors = tmp_path / "vendors"
    if not vendors.exists():
        shutil.copytree(REPO / "conf" / "vendors", vendors)
    text = {
        "daemon": 'state_dir = "state"\ndrain_timeout = 5.0',
        "vendors": 'dir = "vendors"',
        **sections,
    }
    config = tmp_path / "hesd.toml"
    config.write_text("".join(f"[{name}]\n{body}\n\n" for name, body in text.items()))
    return config


def launch_hesd(
    directory: Path, config: Path, name: str = "hesd", watchdog_usec: int | None = None
) -> HesdProcess:
    """Start ``hesd run --config config`` in ``directory`` with a fake NOTIFY_SOCKET and its log
    in ``directory/{name}.log``; return once it said READY=1. The caller stops it."""
    notify = NotifyListener(directory / f"{name}.notify")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "PYTHONUNBUFFERED": "1"}
    env.pop("HESD_CONFIG", None)
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    log = directory / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "hesd"), "run", "--config", str(config), "--log-format", "json"],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=directory,
        )
    hesd = HesdProcess(proc, config, directory / "state", notify, log)
    try:
        notify.wait_for("READY=1")
    except BaseException:
        print(log.read_text())
        kill_hesd(hesd)
        raise
    return hesd


def kill_hesd(hesd: HesdProcess) -> None:
    """Kill ``hesd`` if it still runs (a test that stops it cleanly has asserted that)."""
    if hesd.proc.poll() is None:
        hesd.proc.kill()
        hesd.proc.wait()
    hesd.notify.close()


@pytest.fixture
def start_hesd(tmp_path: Path) -> Iterator[Callable[..., HesdProcess]]:
    """Start ``hesd run`` with a config in tmp_path and a fake NOTIFY_SOCKET; wait for READY=1."""
    started: list[HesdProcess] = []

    def start(config: Path | None = None, watchdog_usec: int | None = None) -> HesdProcess:
        name = f"hesd-{len(started)}"
        hesd = launch_hesd(tmp_path, config or write_config(tmp_path), name, watchdog_usec)
        started.append(hesd)
        return hesd

    yield start
    for hesd in started:
        kill_hesd(hesd)


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start ``hesd-sim`` processes (tests/sim_process.py) in tmp_path; killed at the end."""
    from tests.sim_process import SimProcess

    started: list[SimProcess] = []

    def start(*args: str) -> SimProcess:
        sim = SimProcess(tmp_path, *args)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.kill()
