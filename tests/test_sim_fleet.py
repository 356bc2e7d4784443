"""The fleet: identities from the seed, vendor mixes, keys, and files hesd imports as they are."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hesd.inventory import parse_inventory
from hesd.secrets import load_secrets
from hesd.sim.clock import SimClock
from hesd.sim.faults import parse_faults
from hesd.sim.fleet import GREEN_BOOK, Fleet, FleetError, parse_vendor_mix
from protocols.dlms.acse import Conformance, Mechanism
from tests.test_sim_client import profiles

MIX = [("is15959", 3), ("kalpa", 2)]


def build(seed: int = 5, **kw: object) -> Fleet:
    return Fleet.build(profiles("is15959", "kalpa"), MIX, seed=seed, **kw)  # type: ignore[arg-type]


def test_identities_follow_the_seed() -> None:
    fleet = build()
    ids = [s.meter_id for s in fleet.specs]
    assert ids == [
        "SIM-is15959-000001",
        "SIM-is15959-000002",
        "SIM-is15959-000003",
        "SIM-kalpa-000001",
        "SIM-kalpa-000002",
    ]
    again = build()
    assert [(s.serial_number, s.system_title, s.seed) for s in fleet.specs] == [
        (s.serial_number, s.system_title, s.seed) for s in again.specs
    ]
    other = build(seed=6)
    assert [s.seed for s in other.specs] != [s.seed for s in fleet.specs]
    kalpa = fleet.specs[3]
    assert kalpa.system_title[:3] == b"KLP"  # the vendor's system_title_prefix
    assert kalpa.flag_id == "KLP"
    assert kalpa.serial_number.endswith("000001")
    assert int.from_bytes(kalpa.system_title[3:], "big") == int(kalpa.serial_number)
    assert fleet.specs[0].system_title[:3] == b"ISS"  # no prefix, no FLAG: from the name
    assert len({s.system_title for s in fleet.specs}) == 5


def test_keys_are_derived_per_vendor_unless_green_book() -> None:
    fleet = build()
    a, b = fleet.sites["is15959"].keys, fleet.sites["kalpa"].keys
    assert a.name == "sim-is15959"
    assert a.global_unicast_key != b.global_unicast_key
    assert a.global_unicast_key != GREEN_BOOK[2]
    assert len(a.lls_password) == 16
    assert build().sites["is15959"].keys == a
    green = build(keys="green-book").sites["kalpa"].keys
    assert (green.lls_password, green.global_unicast_key) == (GREEN_BOOK[0], GREEN_BOOK[2])
    assert a.lls_password.decode() not in repr(a)  # keys stay out of reprs
    assert a.global_unicast_key.hex() not in repr(a).lower()
    with pytest.raises(FleetError, match="keys 'plain'"):
        build(keys="plain")


def test_association_table_like_is15959() -> None:
    site = build().sites["is15959"]
    public, reader, utility = (site.associations[a] for a in (16, 32, 48))
    assert public.mechanism == Mechanism.NONE
    assert not public.conformance & Conformance.SET
    assert public.conformance & Conformance.SELECTIVE_ACCESS
    assert reader.mechanism == Mechanism.LLS
    assert reader.password == site.keys.lls_password
    assert utility.mechanism == Mechanism.HLS_GMAC
    assert utility.ciphered
    assert utility.conformance & Conformance.SET
    assert utility.conformance & Conformance.ACTION


def test_drift_faults_go_into_the_specs() -> None:
    fleet = build(faults=parse_faults("drift=120ppm@0.5"))
    drifts = {s.clock_drift_ppm for s in fleet.specs}
    assert drifts <= {0.0, 120.0}


@pytest.mark.parametrize(
    ("text", "meters", "mix"),
    [
        ("is15959", 10, [("is15959", 10)]),
        ("is15959:600,kalpa:400", 1000, [("is15959", 600), ("kalpa", 400)]),
        ("is15959:6,kalpa:4", None, [("is15959", 6), ("kalpa", 4)]),
        ("is15959,kalpa", 5, [("is15959", 3), ("kalpa", 2)]),
    ],
)
def test_vendor_mix(text: str, meters: int | None, mix: list[tuple[str, int]]) -> None:
    assert parse_vendor_mix(text, meters) == mix


@pytest.mark.parametrize(
    ("text", "meters", "message"),
    [
        ("is15959:6,kalpa:4", 11, "adds up to 10 meters, not 11"),
        ("is15959:6,kalpa", 10, "a count for every vendor or for none"),
        ("is15959:x", 10, "expected VENDOR or VENDOR:COUNT"),
        ("is15959,is15959", 10, "given twice"),
        ("is15959,", 10, "an empty item"),
        ("is15959", None, "how many meters"),
    ],
)
def test_vendor_mix_errors(text: str, meters: int | None, message: str) -> None:
    with pytest.raises(FleetError, match=message):
        parse_vendor_mix(text, meters)


def test_unknown_vendor_and_zero_meters() -> None:
    with pytest.raises(FleetError, match="vendor 'acme' has no profile"):
        Fleet.build(profiles("is15959"), [("acme", 1)])
    with pytest.raises(FleetError, match="0 meters"):
        Fleet.build(profiles("is15959"), [("is15959", 0)])


@pytest.mark.parametrize(
    ("mode", "address"),
    [("serve", "127.0.1.1:4059"), ("dial", ""), ("serial", "/dev/pts/9:16"), ("mqtt", "")],
)
def test_inventory_and_secrets_import_as_they_are(tmp_path: Path, mode: str, address: str) -> None:
    fleet = build()
    inventory, secrets = tmp_path / "meters.csv", tmp_path / "secrets.toml"
    fleet.write_inventory(inventory, mode, [address] * len(fleet))
    secrets.write_text("stale")
    secrets.chmod(0o644)
    fleet.write_secrets(secrets)
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    store = load_secrets(secrets)
    assert set(store.keysets) == {"sim-is15959", "sim-kalpa"}
    keyset = store.keysets["sim-kalpa"]
    keys = fleet.sites["kalpa"].keys
    assert keyset.global_unicast_key is not None
    assert keyset.global_unicast_key.reveal() == keys.global_unicast_key
    assert keyset.authentication_key is not None
    assert keyset.authentication_key.reveal() == keys.authentication_key
    assert keyset.lls_password is not None
    assert keyset.lls_password.reveal() == keys.lls_password
    entries = parse_inventory(
        inventory.read_text(), "meters.csv", vendors={"is15959", "kalpa"}, keysets=store.keysets
    )
    assert [e.meter_id for e in entries] == [s.meter_id for s in fleet.specs]
    first = entries[3]
    assert first.transport == {"serve": "tcp-out", "dial": "tcp-in"}.get(mode, mode)
    assert first.address == address
    assert first.keyset == "sim-kalpa"
    assert first.system_title == fleet.specs[3].system_title.hex().upper()
    assert first.serial_number == fleet.specs[3].serial_number


def test_clock_scales_and_can_be_stepped() -> None:
    t = [100.0]
    clock = SimClock(1_000.0, 60.0, monotonic=lambda: t[0])
    assert clock.now() == 1_000.0
    t[0] += 2
    assert clock.now() == 1_120.0
    assert clock.real_delay(1_180.0) == 1.0
    assert clock.real_delay(0.0) == 0.0
    with pytest.raises(ValueError, match="time scale"):
        SimClock(0.0, 0.0)
