"""A fleet of simulated meters: who they are, their keys, and the files hesd imports them from.

Everything follows from the vendor mix and ``--seed``:

* meter ``n`` (from 1) of vendor ``v`` is ``SIM-{v}-{n:06d}``; its serial number is a two-digit
  lot (from the seed) and ``n`` in six digits; its system title is the vendor's
  ``system_title_prefix`` (or, without one, its three FLAG letters in ASCII, as IS 15959 meters
  do) followed by the serial number as a big-endian integer, 8 octets in all;
* the FLAG id is the profile's first ``flag_ids`` entry, or three letters of the vendor name;
* each meter's model seed is a hash of (seed, meter id);
* one keyset per vendor, ``sim-{vendor}``: LLS password, HLS secret, GUEK and GAK derived from
  the seed (so tests never pass with default keys by accident), or with ``keys="green-book"``
  the Green Book test keys.

``write_inventory`` and ``write_secrets`` produce the CSV of ``docs/inventory.md`` and the
secrets file of ``hesd/secrets.py`` (mode 0600), so ``hesctl meters import`` takes the fleet.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from adapters.profile import VendorProfile
from hesd.inventory import format_inventory
from hesd.sim.faults import FaultPlan
from hesd.sim.model import DEFAULT_START, MeterSpec
from hesd.store.registry import MeterEntry
from protocols.dlms.acse import Conformance, Mechanism
from protocols.dlms.server import ServerAssociation

__all__ = [
    "GREEN_BOOK",
    "INVENTORY_TRANSPORT",
    "KEY_MODES",
    "Fleet",
    "FleetError",
    "FleetKeys",
    "VendorSite",
    "association_table",
    "parse_vendor_mix",
]

KEY_MODES: Final = ("derived", "green-book")
INVENTORY_TRANSPORT: Final = {
    "serve": "tcp-out",  # hesd connects to the meter
    "dial": "tcp-in",  # the meter connects to hesd
    "serial": "serial",
    "mqtt": "mqtt",
}
_MAX_PER_VENDOR: Final = 999_999
_C = Conformance
# IS 15959 conformance per client: public reads (with selective access and long GETs), the
# meter reader adds GET-with-list, the utility client does everything the server implements.
_PUBLIC: Final = _C.GET | _C.SELECTIVE_ACCESS | _C.BLOCK_TRANSFER_WITH_GET_OR_READ
_READER: Final = _PUBLIC | _C.MULTIPLE_REFERENCES | _C.ACTION
_UTILITY: Final = (
    _READER
    | _C.SET
    | _C.BLOCK_TRANSFER_WITH_SET_OR_WRITE
    | _C.DATA_NOTIFICATION
    | _C.ATTRIBUTE0_SUPPORTED_WITH_GET
)
_MECHANISMS: Final = {"none": Mechanism.NONE, "lls": Mechanism.LLS, "hls-gmac": Mechanism.HLS_GMAC}


class FleetError(ValueError):
    """A fleet that cannot be built as asked (bad mix, unknown vendor, too many meters)."""


@dataclass(frozen=True, slots=True)
class FleetKeys:
    """The keyset of one vendor's simulated meters (``[keysets.NAME]`` of the secrets file)."""

    name: str
    lls_password: bytes = field(repr=False)
    hls_secret: bytes = field(repr=False)
    global_unicast_key: bytes = field(repr=False)  # GUEK (ek)
    authentication_key: bytes = field(repr=False)  # GAK (ak)


GREEN_BOOK: Final = (
    b"12345678",  # LLS password, the usual factory default of IS 15959 meters
    b"1111111111111111",  # HLS secret (HLS-GMAC authenticates with the GUEK and GAK)
    bytes.fromhex("000102030405060708090A0B0C0D0E0F"),  # Green Book test GUEK
    bytes.fromhex("D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"),  # Green Book test GAK
)


def _digest(size: int, *parts: object) -> bytes:
    text = ":".join(str(p) for p in ("hesd-sim", *parts)).encode()
    return hashlib.blake2b(text, digest_size=size).digest()


def _hash64(*parts: object) -> int:
    return int.from_bytes(_digest(8, *parts), "big")


def fleet_keys(vendor: str, seed: int, mode: str) -> FleetKeys:
    name = f"sim-{vendor}"
    if mode == "green-book":
        return FleetKeys(name, *GREEN_BOOK)
    if mode != "derived":
        raise FleetError(f"keys {mode!r}: expected one of {', '.join(KEY_MODES)}")
    return FleetKeys(
        name,
        _digest(8, seed, vendor, "lls").hex().encode(),  # 16 printable characters
        _digest(8, seed, vendor, "hls").hex().encode(),
        _digest(16, seed, vendor, "guek"),
        _digest(16, seed, vendor, "gak"),
    )


def association_table(profile: VendorProfile, keys: FleetKeys) -> dict[int, ServerAssociation]:
    """The ``ServerAssociation`` of each client SAP the profile lists, with the fleet's keys."""
    conformance = {"none": _PUBLIC, "lls": _READER, "hls-gmac": _UTILITY}
    pdu = max(64, profile.framing.max_pdu_size)  # below 64 not even an HLS pass 3 fits
    table = {}
    for a in profile.associations:
        table[a.client_address] = ServerAssociation(
            name=a.name,
            client_address=a.client_address,
            mechanism=_MECHANISMS[a.security],
            password=keys.lls_password if a.security == "lls" else None,
            ciphered=a.ciphered,
            conformance=conformance[a.security],
            max_pdu_size=pdu,
        )
    return table


def flag_of(profile: VendorProfile) -> str:
    """The vendor's FLAG id, or three letters made from its name."""
    if profile.flag_ids:
        return profile.flag_ids[0]
    letters = re.sub(r"[^A-Z]", "", profile.name.upper())
    return (letters + "SIM")[:3]


@dataclass(frozen=True, slots=True)
class VendorSite:
    """What every simulated meter of one vendor shares: profile, keys, associations."""

    profile: VendorProfile
    keys: FleetKeys
    associations: Mapping[int, ServerAssociation]
    flag_id: str
    lot: int  # the first two digits of its serial numbers

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def push_ciphered(self) -> bool:
        """Pushes outside an association are ciphered as the default association is."""
        return self.profile.association(self.profile.default_association).ciphered


def parse_vendor_mix(text: str, meters: int | None) -> list[tuple[str, int]]:
    """``is15959`` (all ``meters``), ``is15959:600,kalpa:400`` (counts adding up to ``meters``
    when it is given) or ``is15959,kalpa`` (``meters`` split evenly, the first ones rounding up).
    """
    items = [part.strip() for part in text.split(",")]
    if not all(items):
        raise FleetError(f"vendor mix {text!r}: an empty item")
    names: list[str] = []
    counts: list[int | None] = []
    for item in items:
        name, sep, count = item.partition(":")
        if sep and not count.isdigit():
            raise FleetError(f"vendor mix item {item!r}: expected VENDOR or VENDOR:COUNT")
        if name in names:
            raise FleetError(f"vendor mix item {item!r}: {name} is given twice")
        names.append(name)
        counts.append(int(count) if sep else None)
    if all(c is not None for c in counts):
        total = sum(c or 0 for c in counts)
        if meters is not None and total != meters:
            raise FleetError(f"vendor mix {text!r} adds up to {total} meters, not {meters}")
        return [(n, c or 0) for n, c in zip(names, counts, strict=True)]
    if any(c is not None for c in counts):
        raise FleetError(f"vendor mix {text!r}: give a count for every vendor or for none")
    if meters is None:
        raise FleetError(f"vendor mix {text!r}: how many meters? (--meters)")
    share, extra = divmod(meters, len(names))
    return [(n, share + (i < extra)) for i, n in enumerate(names)]


class Fleet:
    """The meters to simulate, in order (``specs[i]`` is meter ``i``), and their vendors."""

    def __init__(
        self,
        seed: int,
        sites: dict[str, VendorSite],
        specs: list[MeterSpec],
    ) -> None:
        self.seed = seed
        self.sites = sites
        self.specs = specs

    @classmethod
    def build(
        cls,
        profiles: Mapping[str, VendorProfile],
        mix: Sequence[tuple[str, int]],
        *,
        seed: int = 0,
        keys: str = "derived",
        faults: FaultPlan | None = None,
        history_start: float = DEFAULT_START,
    ) -> Fleet:
        """Meters of each vendor of ``mix`` in order; ``faults`` sets clock drifts."""
        if not 0 <= seed < 1 << 64:
            raise FleetError(f"seed {seed} is not 0..2**64-1")
        sites: dict[str, VendorSite] = {}
        specs: list[MeterSpec] = []
        titles: set[bytes] = set()
        for vendor, count in mix:
            profile = profiles.get(vendor)
            if profile is None:
                known = ", ".join(sorted(profiles)) or "none"
                raise FleetError(f"vendor {vendor!r} has no profile (known: {known})")
            if not 0 < count <= _MAX_PER_VENDOR:
                raise FleetError(f"vendor {vendor}: {count} meters, expected 1..{_MAX_PER_VENDOR}")
            fleet_key = fleet_keys(vendor, seed, keys)
            site = VendorSite(
                profile,
                fleet_key,
                association_table(profile, fleet_key),
                flag_of(profile),
                10 + _hash64(seed, vendor, "lot") % 90,
            )
            sites[vendor] = site
            prefix = profile.system_title_prefix or site.flag_id.encode("ascii")
            for n in range(1, count + 1):
                meter_id = f"SIM-{vendor}-{n:06d}"
                serial = f"{site.lot:02d}{n:06d}"
                room = 8 - len(prefix)
                number = int(serial) if int(serial) < 1 << (8 * room) else n
                if number >= 1 << (8 * room):
                    raise FleetError(
                        f"vendor {vendor}: system title prefix {prefix.hex()} leaves no room "
                        f"for {count} meters"
                    )
                title = prefix + number.to_bytes(room, "big")
                if title in titles:
                    raise FleetError(f"two meters would share system title {title.hex()}")
                titles.add(title)
                drift = 0.0
                if faults:
                    mine = faults.for_meter(seed, meter_id)
                    drift = 0.0 if mine is None else mine.drift_ppm
                specs.append(
                    MeterSpec(
                        meter_id=meter_id,
                        serial_number=serial,
                        system_title=title,
                        seed=_hash64(seed, meter_id),
                        profile=profile,
                        clock_drift_ppm=drift,
                        start=history_start,
                        flag_id=site.flag_id,
                    )
                )
        return cls(seed, sites, specs)

    def __len__(self) -> int:
        return len(self.specs)

    def site_of(self, spec: MeterSpec) -> VendorSite:
        return self.sites[spec.profile.name]

    def inventory(self, mode: str, addresses: Sequence[str]) -> str:
        """The inventory CSV of the fleet served in ``mode`` (one address per meter)."""
        transport = INVENTORY_TRANSPORT.get(mode)
        if transport is None:
            raise FleetError(f"mode {mode!r} is not one of {', '.join(INVENTORY_TRANSPORT)}")
        if len(addresses) != len(self.specs):
            raise FleetError(f"{len(addresses)} addresses for {len(self.specs)} meters")
        tags = (("sim_seed", str(self.seed)),)
        return format_inventory(
            MeterEntry(
                meter_id=spec.meter_id,
                vendor=spec.profile.name,
                transport=transport,
                address=address,
                serial_number=spec.serial_number,
                system_title=spec.system_title.hex().upper(),
                keyset=self.site_of(spec).keys.name,
                tags=tags,
            )
            for spec, address in zip(self.specs, addresses, strict=True)
        )

    def write_inventory(self, path: Path, mode: str, addresses: Sequence[str]) -> None:
        """Write the inventory CSV (``docs/inventory.md``) for ``hesctl meters import``."""
        path.write_text(self.inventory(mode, addresses), encoding="utf-8")

    def secrets(self) -> str:
        """The secrets file (``hesd/secrets.py`` format): one keyset per vendor."""
        lines = ["# hesd-sim fleet keys: import with the inventory written beside this file", ""]
        for site in self.sites.values():
            k = site.keys
            lines += [
                f"[keysets.{k.name}]",
                f'lls_password = "{k.lls_password.decode()}"',
                f'hls_secret = "{k.hls_secret.decode()}"',
                f'global_unicast_key = "{k.global_unicast_key.hex().upper()}"',
                f'authentication_key = "{k.authentication_key.hex().upper()}"',
                "",
            ]
        return "\n".join(lines)

    def write_secrets(self, path: Path) -> None:
        """Write the secrets file with mode 0600 (hesd refuses one others may read)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # an existing file keeps its mode otherwise
            out.write(self.secrets())
