"""End to end, normalised: a real hesd reads quantities, profiles and event logs of simulated
meters of every DLMS vendor as the MDM gets them (kWh, V, UTC) and they match the simulator's
ground truth; and a vendor added as a file alone, with no code, is read the same way."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, REPO, HesdProcess, write_config
from tests.sim_process import SimProcess

pytestmark = pytest.mark.integration

StartHesd = Callable[..., HesdProcess]
NEW_VENDOR = "acme"


def _hesd(start_hesd: StartHesd, tmp_path: Path, sim: SimProcess, meters: int) -> HesdProcess:
    daemon = f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{sim.secrets}"'
    hesd = start_hesd(write_config(tmp_path, daemon=daemon))
    imported = hesd.hesctl("meters", "import", str(sim.inventory))
    assert f"{meters} created" in imported.stdout, imported.stdout
    return hesd


def _read(hesd: HesdProcess, meter_id: str, *args: str) -> dict[str, Any]:
    result = hesd.hesctl("read", meter_id, *args, "--json")
    data: dict[str, Any] = json.loads(result.stdout)
    assert data["errors"] == [], data["errors"]
    return data


def _truth(sim: SimProcess, meter_id: str, quantity: str, t: str | None = None) -> dict[str, Any]:
    query = f"quantity={quantity}" + (f"&t={urllib.request.quote(t)}" if t else "")
    truth: dict[str, Any] = sim.api(f"/meters/{meter_id}/truth?{query}")
    return truth


def _kilo(truth: dict[str, Any]) -> Decimal:
    """The register the simulator reports, in kWh (its unit is Wh, VAh or varh)."""
    assert truth["register_unit"] in ("Wh", "VAh", "varh"), truth
    return Decimal(truth["raw"]).scaleb(int(truth["scaler"]) - 3)


def _check_meter(sim: SimProcess, hesd: HesdProcess, meter_id: str) -> None:
    now = _read(hesd, meter_id, "-q", "energy_active_import", "-q", "voltage_l1")
    energy, voltage = now["readings"]
    truth = _truth(sim, meter_id, "energy_active_import")
    assert (energy["quantity"], energy["unit"]) == ("energy_active_import", "kWh")
    assert Decimal(energy["value"]) == _kilo(truth)
    assert energy["timestamp"] == "2026-01-01T00:00:00Z"  # the meter's clock, in UTC
    assert energy["obis"] == truth["obis"]
    table = hesd.hesctl("read", meter_id, "-q", "energy_active_import").stdout.splitlines()
    assert table[0].split() == ["TIME", "QUANTITY", "VALUE", "UNIT", "QUALITY"]
    assert table[1].split() == [
        "2026-01-01T00:00:00Z",
        "energy_active_import",
        energy["value"],
        "kWh",
        "-",
    ]
    volts = _truth(sim, meter_id, "voltage_l1")
    assert voltage["unit"] == "V"
    assert Decimal(voltage["value"]) == Decimal(volts["raw"]).scaleb(int(volts["scaler"]))

    blocks = _read(
        hesd,
        meter_id,
        "--profile",
        "block_load",
        "--from",
        "2025-12-31T20:00:00Z",
        "--to",
        "2026-01-01T00:00:00Z",
    )
    energies = [r for r in blocks["readings"] if r["quantity"] == "block_energy_active_import"]
    assert energies, blocks
    interval = energies[0]["interval"]
    assert len(energies) == 4 * 3600 // interval + 1  # both ends included
    last = energies[-1]
    assert last["timestamp"] == "2026-01-01T00:00:00Z"
    block = _truth(sim, meter_id, "block_energy_active_import", last["timestamp"])
    assert Decimal(last["value"]) == _kilo(block)


def test_every_dlms_vendor_reads_normalised(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    vendors = "is15959:1,kalpa:1,sunrise:1"
    sim = sim_process("--meters", "3", "--vendor", vendors, "--mode", "serve", "--port", "0")
    hesd = _hesd(start_hesd, tmp_path, sim, 3)
    meters = [m["id"] for m in sim.api("/meters")["meters"]]
    assert {m.split("-")[1] for m in meters} == {"is15959", "kalpa", "sunrise"}
    for meter_id in meters:
        _check_meter(sim, hesd, meter_id)

    # an event log, normalised through the vendor's code table
    meter_id = meters[0]
    request = urllib.request.Request(
        f"http://127.0.0.1:{sim.control}/api/v1/meters/{meter_id}/events",
        data=b'{"kind": "magnet_tamper"}',
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback http
        injected = json.loads(response.read())
    events = _read(
        hesd,
        meter_id,
        "--events",
        "other",
        "--from",
        "2025-12-31T23:00:00Z",
        "--to",
        "2026-01-01T01:00:00Z",
    )["events"]
    assert [(e["kind"], e["code"], e["category"]) for e in events][-1] == (
        "magnet_tamper",
        injected["code"],
        "other",
    )
    hesd.stop()
    sim.stop()


def _new_vendor(directory: Path) -> None:
    """A vendor that exists only as this file: other OBIS codes and scalers than IS 15959."""
    text = (REPO / "conf" / "vendors" / "is15959.toml").read_text()
    changes = {
        'name = "is15959"': f'name = "{NEW_VENDOR}"',
        "flag_ids = []                   # any manufacturer: this is the fall-back profile": (
            'flag_ids = ["ACM"]'
        ),
        'energy_active_import         = { obis = "1.0.1.8.0.255",    class = 3, scaler = 0,': (
            'energy_active_import         = { obis = "1.0.1.8.128.255",  class = 3, scaler = 1,'
        ),
        "interval = 1800 ": "interval = 900  ",
    }
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    (directory / f"{NEW_VENDOR}.toml").write_text(text)


def test_a_vendor_added_as_a_file_alone_is_read_end_to_end(
    start_hesd: StartHesd, sim_process: Callable[..., SimProcess], tmp_path: Path
) -> None:
    vendors = tmp_path / "vendors"
    shutil.copytree(REPO / "conf" / "vendors", vendors)
    _new_vendor(vendors)
    checked = subprocess.run(  # offline: no daemon needed to check a file
        [str(BIN / "hesctl"), "vendors", "check", str(vendors / f"{NEW_VENDOR}.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    sim = sim_process(
        "--meters", "1", "--vendor", NEW_VENDOR, "--vendors-dir", str(vendors),
        "--mode", "serve", "--port", "0",
    )  # fmt: skip
    hesd = _hesd(start_hesd, tmp_path, sim, 1)
    [meter] = sim.api("/meters")["meters"]
    truth = _truth(sim, meter["id"], "energy_active_import")
    assert (truth["obis"], truth["scaler"]) == ("1.0.1.8.128.255", 1)  # the file's, not IS 15959's
    _check_meter(sim, hesd, meter["id"])
    hesd.stop()
    sim.stop()
