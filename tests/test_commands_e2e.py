"""Issue 8 acceptance: commands that act, end to end. A real hesd commands a real ``hesd-sim``
through the HTTP API (unix socket) and through hesctl; the simulator's control API tells the
truth (relay and how often it switched, limiter, push setup, clock).

One simulator serves IS 15959 meters and one Sunrise meter (HDLC over TCP) in serve mode,
hesd dials them (``tcp-out``); simulated time runs with the wall clock and every meter's clock
drifts 10 ppm since 2024 (about 15 minutes fast). A second fleet of Kalpa meters dials in
(``tcp-in``) only when a test starts it. Each test has meters of its own: a test depends on
no other.

Commands that act run under the profiles' ``command_association`` (the utility client, HLS-GMAC)
while reads stay on the reader: the simulator lets the reader read but not act.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hesd.ctl import Client
from hesd.router import INTERRUPTED
from tests.conftest import HesdProcess, free_port, kill_hesd, launch_hesd, wait_for, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

FINAL = ("succeeded", "failed", "expired", "cancelled")
DRIFT_PPM = 10


def meter(n: int) -> str:
    return f"SIM-is15959-{n:06d}"


SUNRISE, DIALLER = "SIM-sunrise-000001", "SIM-kalpa-000001"


@dataclass
class Rig:
    directory: Path
    config: Path
    hesd: HesdProcess
    sim: SimProcess  # serve mode: hesd dials its meters
    hes_port: int  # where dialling meters reach hesd

    def api(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        """The HTTP API on hesd's unix socket: (status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        status, _, raw = Client(self.hesd.socket).request(method, url, data, headers)
        return status, json.loads(raw)

    def submit(self, meter_id: str, kind: str, expires_in: float = 600, **params: Any) -> str:
        status, body = self.api(
            "POST",
            "/api/v1/commands",
            {"meter_id": meter_id, "kind": kind, "params": params, "expires_in": expires_in},
        )
        assert status == 202, body
        assert body["state"] == "queued"
        return str(body["command_id"])

    def command(self, command_id: str) -> dict[str, Any]:
        status, body = self.api("GET", f"/api/v1/commands/{command_id}")
        assert status == 200, body
        return dict(body)

    def finished(self, command_id: str, timeout: float = 30) -> dict[str, Any]:
        wait_for(
            lambda: self.command(command_id)["state"] in FINAL, timeout, f"command {command_id}"
        )
        return self.command(command_id)

    def truth(self, meter_id: str, sim: SimProcess | None = None) -> dict[str, Any]:
        return dict((sim or self.sim).api(f"/meters/{meter_id}")["truth"])


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory = tmp_path_factory.mktemp("commands")
    hes_port = free_port()
    sim = SimProcess(
        directory,
        *("--vendor", "is15959:5,sunrise:1", "--mode", "serve", "--port", "0"),
        *("--faults", f"drift={DRIFT_PPM}ppm"),
        realtime=True,
    )
    # the dialling fleet's inventory and keys, from a run that reaches nobody: its meters come
    # online only when a test starts that fleet again (same seed: same meters, same keys)
    dead = SimProcess(
        directory,
        *("--vendor", "kalpa:2", "--mode", "dial", "--hes", f"127.0.0.1:{free_port()}"),
        name="dialler",
    )
    dead.kill()
    secrets = directory / "secrets.toml"
    secrets.write_text(sim.secrets.read_text() + "\n" + dead.secrets.read_text())
    secrets.chmod(0o600)
    sections = {
        "daemon": f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{secrets}"',
        "limits": "request_timeout = 20.0",
        "tcp": f'listen = ["127.0.0.1:{hes_port}"]\nidentify_timeout = 5.0',
    }
    config = write_config(directory, **sections)
    hesd = launch_hesd(directory, config)
    rig = Rig(directory, config, hesd, sim, hes_port)
    try:
        assert "6 created" in hesd.hesctl("meters", "import", str(sim.inventory)).stdout
        assert "2 created" in hesd.hesctl("meters", "import", str(dead.inventory)).stdout
        yield rig
        assert rig.hesd.proc.poll() is None, "hesd died"
        assert "Traceback" not in rig.hesd.log_text()
    finally:
        kill_hesd(rig.hesd)
        sim.kill()


# -- through the HTTP API ------------------------------------------------------------------------


@pytest.mark.parametrize("meter_id", [meter(1), SUNRISE], ids=["wrapper", "hdlc"])
def test_disconnect_and_reconnect_through_the_api(rig: Rig, meter_id: str) -> None:
    assert rig.truth(meter_id)["relay"] == "connected"
    done = rig.finished(rig.submit(meter_id, "disconnect"))
    assert done["state"] == "succeeded", done
    result = done["result"]
    assert result["detail"] == "disconnected, confirmed by read-back"
    assert result["data"]["after"] == {"output_state": False, "control_state": "disconnected"}
    truth = rig.truth(meter_id)
    assert (truth["relay"], truth["relay_operations"]) == ("disconnected", 1)
    # the meter served the command as the utility client: the reader may not act
    assert rig.sim.api(f"/meters/{meter_id}")["association"] == "utility"

    done = rig.finished(rig.submit(meter_id, "reconnect"))
    assert done["state"] == "succeeded", done
    assert done["result"]["data"]["after"]["control_state"] == "connected"
    truth = rig.truth(meter_id)
    assert (truth["relay"], truth["relay_operations"]) == ("connected", 2)
    states = [a["state"] for a in done["audit"]]
    assert states == ["queued", "sent", "succeeded"]


def test_load_limit_and_push_setup_through_the_api(rig: Rig) -> None:
    target = meter(1)
    done = rig.finished(
        rig.submit(target, "limit", threshold_normal=6000, min_over_threshold_duration=90)
    )
    assert done["state"] == "succeeded", done
    after = done["result"]["data"]["after"]
    assert (after["threshold_normal"], after["min_over_threshold_duration"]) == (6000, 90)
    limiter = rig.truth(target)["limiter"]
    assert limiter["scaler"] == 0  # is15959 active power: W
    assert (limiter["threshold_normal"], limiter["min_over_threshold_duration"]) == (6000, 90)

    done = rig.finished(
        rig.submit(target, "push_setup", destination="127.0.0.1:4999", number_of_retries=5)
    )
    assert done["state"] == "succeeded", done
    push = rig.truth(target)["push"]
    assert (push["destination"], push["number_of_retries"]) == ("127.0.0.1:4999", 5)

    status, problem = rig.api(
        "POST",
        "/api/v1/commands",
        {"meter_id": target, "kind": "limit", "params": {"threshold_normal": "6 kW"}},
    )
    assert status == 400
    assert problem["detail"] == (
        "limit: threshold_normal must be active power in W, 0..1000000000, got '6 kW'"
    )
    status, problem = rig.api(
        "POST", "/api/v1/commands", {"meter_id": "NOPE", "kind": "limit", "params": {}}
    )
    assert (status, problem["detail"]) == (404, "meter 'NOPE' is not in the registry")


# -- through hesctl ------------------------------------------------------------------------------


def test_hesctl_disconnect_reconnect_limit_push_setup_and_events(rig: Rig) -> None:
    target, hesd = meter(2), rig.hesd
    shown = json.loads(hesd.hesctl("disconnect", target, "--wait", "30", "--json").stdout)
    assert (shown["state"], shown["result"]["detail"]) == (
        "succeeded",
        "disconnected, confirmed by read-back",
    )
    assert rig.truth(target)["relay"] == "disconnected"
    text = hesd.hesctl("reconnect", target, "--wait", "30").stdout
    assert f"reconnect {target}: succeeded (connected, confirmed by read-back)" in text
    assert rig.truth(target)["relay"] == "connected"

    text = hesd.hesctl("limit", target, "--normal", "4500", "--emergency", "3000", "--wait", "30")
    assert ": succeeded (set, confirmed by read-back: threshold_normal 4500, " in text.stdout
    limiter = rig.truth(target)["limiter"]
    assert (limiter["threshold_normal"], limiter["threshold_emergency"]) == (4500, 3000)

    shown = json.loads(
        hesd.hesctl(
            *("push-setup", target, "--destination", "hes2.example.net:4059"),
            *("--window", "01:00-05:00", "--retries", "2", "--wait", "30", "--json"),
        ).stdout
    )
    assert shown["state"] == "succeeded", shown
    push = rig.truth(target)["push"]
    assert push["destination"] == "hes2.example.net:4059"
    assert push["communication_window"] == [["01:00:00", "05:00:00"]]
    assert push["number_of_retries"] == 2

    # the relay's two switches are in the meter's control event log, stamped by its clock
    # (15 minutes fast: the default range, the last 24 h to now, would miss them)
    now = datetime.now(UTC)
    span = (
        "--from",
        (now - timedelta(hours=1)).isoformat(),
        "--to",
        (now + timedelta(hours=1)).isoformat(),
    )
    table = hesd.hesctl("events", target, "--category", "control", *span).stdout.splitlines()
    assert table[0].split() == ["TIME", "CATEGORY", "EVENT", "SEVERITY", "CODE", "NAME"]
    kinds = [line.split()[2] for line in table[1:]]
    assert kinds[-2:] == ["load_switch_disconnected", "load_switch_connected"]
    shown = json.loads(
        hesd.hesctl("events", target, "--category", "control", *span, "--json").stdout
    )
    assert (shown["kind"], shown["params"]["events"]) == ("read", ["control"])
    assert [e["code"] for e in shown["result"]["data"]["events"]][-2:] == [301, 302]

    usage = hesd.hesctl("limit", target, check=False)
    assert usage.returncode == 2
    assert "give at least one of --normal, --emergency, --over, --under" in usage.stderr
    refused = hesd.hesctl("push-setup", target, "--destination", "nowhere", check=False)
    assert refused.returncode == 1
    assert "push_setup: destination must be HOST:PORT, got 'nowhere'" in refused.stderr


def test_sync_time_corrects_a_drifted_clock(rig: Rig) -> None:
    target = meter(3)
    drifted = rig.truth(target)["clock_offset"]
    assert 600 < drifted < 1200  # 10 ppm since 2024-01-01
    shown = json.loads(rig.hesd.hesctl("sync-time", target, "--wait", "30", "--json").stdout)
    assert shown["state"] == "succeeded", shown
    data = shown["result"]["data"]
    assert abs(data["offset_before"] - drifted) < 5
    assert abs(data["offset_after"]) <= 2
    truth = rig.truth(target)
    assert abs(truth["clock_offset"]) < 2
    assert rig.sim.api(f"/meters/{target}")["association"] == "utility"


# -- a meter that is not online ------------------------------------------------------------------


def test_a_command_waits_for_its_meter_to_dial_in_and_one_expires(rig: Rig) -> None:
    expiring = rig.submit(DIALLER, "disconnect", expires_in=1)
    waiting = rig.submit(DIALLER, "disconnect", expires_in=600)
    done = rig.finished(expiring, timeout=15)
    assert done["state"] == "expired", done
    assert done["result"]["detail"].startswith("expired at ")
    assert rig.command(waiting)["state"] == "queued"  # offline: not sent, not failed

    dialler = SimProcess(
        rig.directory,
        *("--vendor", "kalpa:2", "--mode", "dial", "--hes", f"127.0.0.1:{rig.hes_port}"),
        name="dialler",
    )
    try:
        done = rig.finished(waiting, timeout=30)
        assert done["state"] == "succeeded", done
        truth = rig.truth(DIALLER, dialler)
        assert (truth["relay"], truth["relay_operations"]) == ("disconnected", 1)
    finally:
        dialler.kill()


# -- kill -9 with commands queued and in flight --------------------------------------------------


def test_kill_9_loses_no_command_and_acts_at_most_once(rig: Rig) -> None:
    acting, reading = meter(4), meter(5)
    # the session opens the command association (a limit the meter has already: no change)
    warm = rig.finished(rig.submit(acting, "limit", threshold_normal=10_000))
    assert warm["result"]["detail"] == "already threshold_normal 10000", warm
    rig.sim.set_faults(acting, "latency=2s")  # each answer two seconds late
    rig.sim.set_faults(reading, "silent")  # the read stays sent
    disconnect = rig.submit(acting, "disconnect")
    behind = rig.submit(acting, "read", quantities=["energy_active_import"])
    read = rig.submit(reading, "read", quantities=["energy_active_import"])

    # the meter has opened its relay (after the two reads of its state); hesd waits two
    # seconds for the answer: kill it now
    wait_for(lambda: rig.truth(acting)["relay_operations"] == 1, 30, "the meter to act")
    os.kill(rig.hesd.proc.pid, signal.SIGKILL)
    rig.hesd.proc.wait(timeout=10)
    kill_hesd(rig.hesd)
    rig.sim.set_faults(acting, "")
    rig.sim.set_faults(reading, "")

    rig.hesd = launch_hesd(rig.directory, rig.config, name=f"hesd-{uuid.uuid4().hex[:6]}")
    done = {c: rig.finished(c) for c in (disconnect, behind, read)}
    assert done[disconnect]["state"] == "failed"
    assert done[disconnect]["result"]["detail"] == INTERRUPTED
    assert [a["state"] for a in done[disconnect]["audit"]] == ["queued", "sent", "failed"]
    assert done[behind]["state"] == "succeeded", done[behind]
    assert done[read]["state"] == "succeeded", done[read]
    assert "queued again after a restart (safe to rerun)" in [
        a["detail"] for a in done[read]["audit"]
    ]
    truth = rig.truth(acting)
    assert (truth["relay"], truth["relay_operations"]) == ("disconnected", 1)  # not twice
    status, listed = rig.api("GET", f"/api/v1/commands?meter={acting}")
    assert status == 200
    assert {disconnect, behind} <= {c["command_id"] for c in listed["commands"]}
