"""What the benchmarks that run a real ``hesd run`` and ``hesd-sim`` share.

* processes: ``free_port``, ``raise_nofile``, ``cpu_seconds``, ``stop``;
* the simulator: ``sim_command`` (a fleet dialling in), ``write_fleet_files`` (its inventory and
  keys, from a short run), ``sim_api`` (its control API);
* hesd: ``hesd_toml`` (the generated hesd.toml every such benchmark starts from), ``uplink_toml``
  (to an MDM receiver in the benchmark's process), ``mdm_secrets``, ``hesd_command`` (optionally
  under cProfile), ``status``, ``wait_ready``, ``import_inventory``;
* ``Round``: one round's processes and their logs: hesd started and ready, the fleet started and
  online, everything stopped at the end;
* ``work_directory``: a run's temporary directory, kept with ``--keep``;
* ``LoopThread``: an event loop on a thread of its own, for an MDM receiver in the benchmark's
  process (the benchmark's own thread blocks on processes and hesctl);
* ``percentile``, ``log_lines``, ``epoch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from hesd.ctl import Client, Unreachable

__all__ = [
    "BIN",
    "ENV",
    "MDM_TOKEN",
    "REPO",
    "LoopThread",
    "Round",
    "cpu_seconds",
    "epoch",
    "free_port",
    "hesd_command",
    "hesd_toml",
    "import_inventory",
    "log_lines",
    "mdm_secrets",
    "percentile",
    "raise_nofile",
    "sim_api",
    "sim_command",
    "status",
    "stop",
    "uplink_toml",
    "wait_ready",
    "work_directory",
    "write_fleet_files",
]

REPO: Final = Path(__file__).resolve().parent.parent
BIN: Final = Path(sys.executable).parent
ENV: Final = {k: v for k, v in os.environ.items() if k not in ("HESD_CONFIG", "HESD_SOCKET")}
MDM_TOKEN: Final = "bench-mdm-token"  # noqa: S105 - the benchmark's own receiver


# -- processes --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, all its threads (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_nofile(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"bench: the hard limit of open files is {hard} and hesd needs {needed}: raise it "
            "(ulimit -Hn as root, or LimitNOFILE= under systemd)"
        )
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(processes: list[subprocess.Popen[bytes]]) -> list[int]:
    codes = []
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            codes.append(process.wait(timeout=60))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


# -- the simulator ------------------------------------------------------------------------------


def sim_command(meters: int, port: int, work: Path, *extra: str) -> list[str]:
    return [
        str(BIN / "hesd-sim"),
        *("--meters", str(meters), "--mode", "dial", "--hes", f"127.0.0.1:{port}"),
        *("--seed", "1", "--stats-interval", "0", "--log-format", "json"),
        *("--inventory-out", str(work / "sim.csv"), "--secrets-out", str(work / "sim.toml")),
        *extra,
    ]


def write_fleet_files(meters: int, work: Path) -> None:
    """The inventory and keys hesd needs, from a short simulator run that reaches no hesd."""
    with (work / "sim-files.log").open("w") as log:
        subprocess.run(
            sim_command(meters, free_port(), work, "--duration", "0.2", "--ramp", "60"),
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=ENV,
            check=True,
            timeout=120,
        )


def sim_api(port: int, path: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    """The simulator's control API on ``port``: GET ``/api/v1{path}``, or POST ``body``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1{path}", data)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


# -- hesd -------------------------------------------------------------------------------------


def hesd_toml(secrets: Path, port: int, *sections: str) -> str:
    """A hesd.toml for a round: state in the round's directory, ``secrets`` as the secrets file,
    JSON logs at level info, the shipped vendor profiles, ``[tcp]`` on ``port``; then
    ``sections``."""
    return (
        f'[daemon]\nstate_dir = "state"\nsecrets_file = "{secrets}"\n'
        "drain_timeout = 10.0\n"
        '[log]\nformat = "json"\nlevel = "info"\n'
        f'[vendors]\ndir = "{REPO / "conf" / "vendors"}"\n'
        f'[tcp]\nlisten = ["127.0.0.1:{port}"]\n' + "".join(sections)
    )


def uplink_toml(url: str, batch_delay: float, **more: int | None) -> str:
    """``[uplink]`` to an MDM receiver at ``url`` (its token: ``mdm_secrets``), retrying fast;
    ``more``: other keys of ``[uplink]`` (None: hesd's default)."""
    return (
        f'[uplink]\nurl = "{url}"\nhes_id = "bench"\ntoken = "mdm"\n'
        f"batch_delay = {batch_delay}\ntimeout = 10.0\nbackoff_initial = 0.1\nbackoff_max = 1.0\n"
        + "".join(f"{key} = {value}\n" for key, value in more.items() if value is not None)
    )


def mdm_secrets(work: Path) -> Path:
    """work/secrets.toml: the simulator's keys (work/sim.toml) and the receiver's token."""
    secrets = work / "secrets.toml"
    secrets.write_text((work / "sim.toml").read_text() + f'\n[tokens]\nmdm = "{MDM_TOKEN}"\n')
    secrets.chmod(0o600)
    return secrets


def hesd_command(profile: Path | None, index: int) -> list[str]:
    if profile is None:
        return [str(BIN / "hesd")]
    profile.mkdir(parents=True, exist_ok=True)
    out = profile / f"hesd-round-{index}.prof"
    return [sys.executable, "-m", "cProfile", "-o", str(out), str(BIN / "hesd")]


def status(client: Client) -> dict[str, Any]:
    code, _, body = client.request("GET", "/api/v1/status")
    if code != 200:
        raise RuntimeError(f"GET /api/v1/status answered {code}: {body[:200]!r}")
    result: dict[str, Any] = json.loads(body)
    return result


def wait_ready(client: Client, daemon: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise SystemExit(f"bench: hesd exited {daemon.returncode}:\n{log.read_text()}")
        try:
            if status(client)["state"] == "running":
                return
        except Unreachable:
            pass
        time.sleep(0.05)
    raise SystemExit(f"bench: hesd did not start within 30 s:\n{log.read_text()}")


def import_inventory(client: Client, inventory: Path) -> None:
    """``hesctl meters import``, on hesd's socket."""
    subprocess.run(
        [str(BIN / "hesctl"), "--socket", str(client.path), "meters", "import", str(inventory)],
        check=True,
        capture_output=True,
        env=ENV,
    )


# -- a round ------------------------------------------------------------------------------------


class Round:
    """One round's processes, their logs in ``here``; leaving the ``with`` block stops them
    (last started first), saying so if one exited with an error."""

    def __init__(self, here: Path) -> None:
        self.here = here
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Round:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self.processes:
            if process.stdin is not None and process.poll() is None:
                with contextlib.suppress(OSError):
                    process.stdin.close()  # bench/pushgen.py's end of input: it stops
        codes = stop(self.processes)
        if any(codes):
            print(f"bench: exit statuses {codes}; logs in {self.here}", file=sys.stderr)

    def add(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """``process`` is the round's: it is stopped with the others."""
        self.processes.append(process)
        return process

    def hesd(
        self, config: str, command: Sequence[str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Client]:
        """hesd (``command``, default ``hesd``) running on ``config`` (here/hesd.toml, its log
        here/hesd.log), ready; and a client of its socket."""
        path = self.here / "hesd.toml"
        path.write_text(config)
        log = self.here / "hesd.log"
        with log.open("w") as out:
            daemon = self.add(
                subprocess.Popen(
                    [*(command or hesd_command(None, 0)), "run", "--config", str(path)],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=ENV,
                )
            )
        client = Client(self.here / "state" / "hesd.sock", timeout=60)
        wait_ready(client, daemon, log)
        return daemon, client

    def sim(self, command: Sequence[str]) -> subprocess.Popen[bytes]:
        """hesd-sim, its log here/sim.log."""
        with (self.here / "sim.log").open("w") as out:
            return self.add(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out, env=ENV)
            )

    def wait_online(
        self,
        client: Client,
        meters: int,
        timeout: float,
        *,
        every: float = 0.1,
        since: float | None = None,
    ) -> tuple[float, float]:
        """Until hesd counts ``meters`` online: seconds until all and until half of them were,
        from ``since`` (``time.monotonic()``; default now). ``SystemExit`` after ``timeout``
        seconds, or if a process of the round exits."""
        started = time.monotonic() if since is None else since
        half = None
        while True:
            elapsed = time.monotonic() - started
            if any(process.poll() is not None for process in self.processes):
                raise SystemExit(f"bench: a process exited early; logs in {self.here}")
            online = status(client)["meters"]["online"]
            if half is None and online >= meters / 2:
                half = elapsed
            if online >= meters:
                return elapsed, elapsed if half is None else half
            if elapsed > timeout:
                raise SystemExit(
                    f"bench: {online} of {meters} online after {elapsed:.0f} s; logs in {self.here}"
                )
            time.sleep(every)


@contextlib.contextmanager
def work_directory(prefix: str, *, keep: bool, parent: str | Path | None = None) -> Iterator[Path]:
    """A new temporary directory (in ``parent``, default $TMPDIR), removed at the end unless
    ``keep`` (then where it is is printed)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield work
    finally:
        if keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


# -- an event loop on a thread ------------------------------------------------------------------


class LoopThread:
    """``loop`` running on a thread of its own; ``call`` runs a coroutine there and waits for
    it (at most ``timeout`` seconds)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.thread = threading.Thread(target=loop.run_forever, name="mdm", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=self.timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# -- results ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def log_lines(log: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log lines (hesd's, hesd-sim's) with this event name, in order."""
    lines = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [line for line in lines if line.get("event") == event]


def epoch(text: str) -> float:
    """UNIX seconds of an ISO 8601 time (``Z`` or an offset)."""
    return float(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
