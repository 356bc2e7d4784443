"""End to end: a real hesd upgrades the firmware of real ``hesd-sim`` meters over TCP (hesd
dials out), driven by ``hesctl firmware upgrade``; the simulator's control API is the ground
truth (the firmware it runs, the image blocks it received).

Sessions read as the shipped profile says (``reader``, LLS) and upgrade under its
``command_association`` (``utility``, HLS-GMAC, ciphered); hesd and the simulator load a copy of
is15959 that only adds an image activation scheduler, which the shipped profile does not name.
One hesd and one simulator serve the module; each test upgrades a meter of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hesd.sim.image import BLOCK_SIZE, build_image
from tests.conftest import REPO, HesdProcess, kill_hesd, launch_hesd, wait_for, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

IMAGE = build_image("2.0.0", bytes(range(256)) * 16)  # 4,138 octets
BLOCKS = -(-len(IMAGE) // BLOCK_SIZE)  # 22
MAX_IMAGE = 16384


def meter(n: int) -> str:
    return f"SIM-is15959-{n:06d}"


@dataclass
class Rig:
    directory: Path
    sim: SimProcess
    hesd: HesdProcess
    config: Path

    def api(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        """(status, JSON) of a request to hesd's API on its unix socket."""

        class Unix(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(os.fspath(rig_socket))

        rig_socket = self.hesd.socket
        conn = Unix("hesd", timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            kind = (response.getheader("Content-Type") or "").split(";")[0]
            return response.status, kind, json.loads(response.read())
        finally:
            conn.close()

    def command(self, command_id: str) -> dict[str, Any]:
        status, _, body = self.api("GET", f"/api/v1/commands/{command_id}")
        assert status == 200, body
        return dict(body)

    def upgrade(self, meter_id: str, image: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return self.hesd.hesctl("firmware", "upgrade", meter_id, str(image), *args, check=False)


def _vendors(directory: Path) -> Path:
    text = (REPO / "conf" / "vendors" / "is15959.toml").read_text()
    changed = text.replace('\nimage_activation    = ""', '\nimage_activation    = "0.0.15.0.2.255"')
    for line in ('\ncommand_association = "utility"', '\nimage_activation    = "0.0.15.0.2.255"'):
        assert line in changed, "is15959.toml changed: update this test"
    vendors = directory / "vendors"
    vendors.mkdir()
    (vendors / "is15959.toml").write_text(changed)
    return vendors


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    directory = tmp_path_factory.mktemp("firmware")
    vendors = _vendors(directory)
    sim = SimProcess(directory, "--meters", "6", "--mode", "serve", "--port", "0", vendors=vendors)
    hesd: HesdProcess | None = None
    try:
        config = write_config(
            directory,
            daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"',
            firmware=f"max_image_bytes = {MAX_IMAGE}\nretry_backoff = 0.2",
        )
        hesd = launch_hesd(directory, config)
        assert "6 created" in hesd.hesctl("meters", "import", str(sim.inventory)).stdout
        (directory / "image.bin").write_bytes(IMAGE)
        rig = Rig(directory, sim, hesd, config)
        yield rig
        hesd = rig.hesd  # a test may have restarted it
    finally:
        if hesd is not None:
            kill_hesd(hesd)
        sim.kill()


def test_an_upgrade_activates_the_new_firmware(rig: Rig) -> None:
    done = rig.upgrade(meter(1), rig.directory / "image.bin", "--wait", "60", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    command = json.loads(done.stdout)
    assert (command["kind"], command["state"]) == ("firmware_upgrade", "succeeded")
    data = command["result"]["data"]
    assert (data["version_before"], data["version_after"]) == ("1.0.0", "2.0.0")
    assert (data["blocks_total"], data["blocks_sent"], data["resumed_from"]) == (BLOCKS, BLOCKS, [])
    assert command["progress"]["blocks_done"] == BLOCKS
    assert f"{meter(1)} 2.0.0" in done.stderr  # the progress bar's label (stderr is no tty)
    truth = rig.sim.api(f"/meters/{meter(1)}")["truth"]
    assert truth["firmware_version"] == "2.0.0"
    assert truth["image"] == {
        "status": "activation_successful",
        "blocks_received": BLOCKS,
        "activation_at": None,
    }
    shown = json.loads(rig.hesd.hesctl("meters", "show", meter(1), "--json").stdout)
    assert shown["firmware"] == "2.0.0"  # read after the meter restarted and re-associated
    listed = rig.hesd.hesctl("firmware", "images").stdout.splitlines()
    assert listed[0].split() == ["SHA256", "SIZE", "RECEIVED", "VERSION", "IN", "USE"]
    assert listed[1].split()[1::2] == [str(len(IMAGE)), "2.0.0"]  # size and version


def test_a_cut_connection_is_resumed_not_restarted(rig: Rig) -> None:
    rig.sim.set_faults(meter(2), "cut_block=7")
    done = rig.upgrade(meter(2), rig.directory / "image.bin", "--wait", "60", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    command = json.loads(done.stdout)
    data = command["result"]["data"]
    assert data["resumed_from"] == [8]  # block 7 reached the meter; its answer was lost
    assert data["blocks_sent"] == BLOCKS
    assert command["attempts"] >= 2
    truth = rig.sim.api(f"/meters/{meter(2)}")["truth"]
    assert truth["firmware_version"] == "2.0.0"
    assert truth["image"]["blocks_received"] < 2 * BLOCKS
    assert rig.sim.api(f"/meters/{meter(2)}")["faults"] == ""  # the cut happened, once
    details = [a["detail"] for a in rig.command(command["command_id"])["audit"]]
    assert any("attempt 1 failed" in d for d in details), details


def test_a_corrupt_image_fails_verification(rig: Rig) -> None:
    corrupt = bytearray(IMAGE)
    corrupt[500] ^= 0x20
    path = rig.directory / "corrupt.bin"
    path.write_bytes(bytes(corrupt))
    args = ("--version", "2.0.0", "--identifier", "2.0.0", "--wait", "60", "--json")
    done = rig.upgrade(meter(3), path, *args)
    assert done.returncode == 3, done.stdout + done.stderr
    command = json.loads(done.stdout)
    assert command["state"] == "failed"
    assert command["result"]["detail"] == (
        "the meter's verification of the image failed (image_verify: other_reason; "
        "image_transfer_status: verification_failed): the image is damaged or not for this meter"
    )
    truth = rig.sim.api(f"/meters/{meter(3)}")["truth"]
    assert (truth["firmware_version"], truth["image"]["status"]) == ("1.0.0", "verification_failed")


def test_oversized_and_unknown_images_are_refused(rig: Rig) -> None:
    big = bytes(MAX_IMAGE + 1)
    status, kind, problem = rig.api(
        "POST", "/api/v1/firmware/images", big, **{"Content-Type": "application/octet-stream"}
    )
    assert (status, kind) == (413, "application/problem+json")
    assert (
        problem["detail"]
        == f"the image is {MAX_IMAGE + 1} bytes; firmware.max_image_bytes is {MAX_IMAGE}"
    )
    (rig.directory / "big.bin").write_bytes(big)
    refused = rig.upgrade(meter(4), rig.directory / "big.bin")
    assert refused.returncode == 1
    assert f"hesd takes images of at most {MAX_IMAGE} bytes" in refused.stderr
    body = {"meter_id": meter(4), "kind": "firmware_upgrade", "params": {"image": "e" * 64}}
    status, kind, problem = rig.api(
        "POST",
        "/api/v1/commands",
        json.dumps(body).encode(),
        **{"Content-Type": "application/json"},
    )
    assert (status, kind) == (400, "application/problem+json")
    assert problem["detail"].startswith(f"firmware_upgrade: image {'e' * 64} is not stored")
    assert rig.sim.api(f"/meters/{meter(4)}")["truth"]["image"]["status"] == "not_initiated"


def test_activate_at_is_left_to_the_meters_scheduler(rig: Rig) -> None:
    args = ("--activate-at", "2030-01-01T00:00:00Z", "--wait", "60", "--json")
    done = rig.upgrade(meter(5), rig.directory / "image.bin", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["result"]["data"]["activation"] == "scheduled"
    truth = rig.sim.api(f"/meters/{meter(5)}")["truth"]
    assert truth["firmware_version"] == "1.0.0"  # simulated time stands still in 2026
    assert truth["image"]["status"] == "verification_successful"
    assert truth["image"]["activation_at"] == "2030-01-01T00:00:00.000+00:00"


def test_a_restart_of_hesd_resumes_the_transfer(rig: Rig) -> None:
    """hesd stops mid-transfer (SIGTERM); the command stays sent, and the next hesd queues it
    again and resumes from the block the meter reports."""
    rig.sim.set_faults(meter(6), "latency=50ms")  # a transfer of more than a second
    queued = rig.upgrade(meter(6), rig.directory / "image.bin", "--json")
    command_id = json.loads(queued.stdout)["command_id"]

    def halfway() -> bool:
        progress = rig.command(command_id)["progress"] or {}
        return (progress.get("blocks_done") or 0) >= 5

    wait_for(halfway, 30, "the transfer to get past block 5")
    assert rig.hesd.stop() == 0
    kill_hesd(rig.hesd)  # it has exited: this closes its notify socket
    rig.hesd = launch_hesd(rig.directory, rig.config, "hesd-again")
    rig.sim.set_faults(meter(6), "")
    ended = ("succeeded", "failed", "expired", "cancelled")  # after "queued again", "sent" again
    wait_for(lambda: rig.command(command_id)["state"] in ended, 60, "the upgrade to end")
    command = rig.command(command_id)
    assert command["state"] == "succeeded", command["result"]
    data = command["result"]["data"]
    [resumed] = data["resumed_from"]
    assert resumed >= 5, data
    assert rig.sim.api(f"/meters/{meter(6)}")["truth"]["image"]["blocks_received"] < 2 * BLOCKS
    details = [a["detail"] for a in command["audit"]]
    assert "queued again after a restart (safe to rerun)" in details
