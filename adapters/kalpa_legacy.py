"""``kalpa-legacy-energy``: Kalpa KX-3 meters on firmware older than 2.0 overstate energy tenfold.

The KX-3's cumulative energy registers count in units of 10 Wh: their scaler_unit says scaler 1,
unit Wh (``conf/vendors/kalpa.toml``). Firmware before 2.0 kept that scaler_unit but counted in
Wh, so a register that reads 123456 means 123.456 kWh, not the 1234.56 kWh the profile's
mapping makes of it. This adapter divides those readings by ten again and marks them
``Quality.VENDOR``. Meters on firmware 2.0 or later, and meters whose firmware version is not yet
known or cannot be read as a version number, are left alone: a wrong correction is worse than
none, and the MDM sees which values were corrected.

This module is also the example to copy for a third-party adapter (docs/vendors.md, "Vendor
adapters"): a class with ``adjust_reading`` and ``adjust_event`` that returns the record
unchanged when nothing applies, and an entry point in the group ``hesd.adapters``::

    [project.entry-points."hesd.adapters"]
    kalpa-legacy-energy = "adapters.kalpa_legacy:KalpaLegacyEnergy"

A profile enables it with ``[adapter] name = "kalpa-legacy-energy"``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from adapters import is15959
from adapters.hooks import MeterContext
from adapters.is15959 import Measure
from adapters.model import Event, Quality, Reading

__all__ = ["FIXED_IN", "KalpaLegacyEnergy", "firmware_release"]

FIXED_IN: Final = (2, 0)  # the first firmware release that counts in the scaler's unit
ENERGY_UNITS: Final = frozenset({"kWh", "kVAh", "kvarh"})
# The cumulative energy registers: block energies were always counted in Wh (scaler 0).
CUMULATIVE_ENERGIES: Final = frozenset(
    name
    for name, spec in is15959.QUANTITIES.items()
    if spec.measure is Measure.CUMULATIVE and spec.unit in ("Wh", "VAh", "varh")
)
# "2.1", "v1.9.4", "01.05-rc2": an optional v, the major and minor release, then anything.
_RELEASE: Final = re.compile(r"[vV]?(\d{1,6})(?:\.(\d{1,6}))?(?!\d)")


def firmware_release(version: str | None) -> tuple[int, int] | None:
    """(major, minor) of a firmware version as the meter reports it; None if it is not one.

    The version must start with the release number, after an optional ``v``: ``"1.9.4"`` and
    ``"V1.9"`` are (1, 9), ``"2"`` is (2, 0); ``"KX3-1.9"``, ``""`` and None are not versions.
    """
    if version is None:
        return None
    found = _RELEASE.match(version.strip())
    if found is None:
        return None
    major, minor = found.groups()
    return int(major), int(minor or 0)


class KalpaLegacyEnergy:
    """Divides the cumulative energies of KX-3 meters on firmware before 2.0 by ten.

    Idempotent: a reading that already carries ``Quality.VENDOR`` was corrected and passes
    unchanged, so the readings of an event's snapshot are corrected once whether the caller hands
    them to ``adjust_reading`` first or only to ``adjust_event``.
    """

    __slots__ = ()

    def adjust_reading(self, reading: Reading, meter: MeterContext) -> Reading:
        if not self._applies(reading, meter):
            return reading
        return dataclasses.replace(
            reading, value=reading.value.scaleb(-1), quality=reading.quality | Quality.VENDOR
        )

    def adjust_event(self, event: Event, meter: MeterContext) -> Event:
        snapshot = tuple(self.adjust_reading(r, meter) for r in event.snapshot)
        if all(new is old for new, old in zip(snapshot, event.snapshot, strict=True)):
            return event
        return dataclasses.replace(event, snapshot=snapshot, quality=event.quality | Quality.VENDOR)

    @staticmethod
    def _applies(reading: Reading, meter: MeterContext) -> bool:
        if reading.quantity not in CUMULATIVE_ENERGIES or reading.unit not in ENERGY_UNITS:
            return False
        if Quality.VENDOR in reading.quality:
            return False
        release = firmware_release(meter.firmware_version)
        return release is not None and release < FIXED_IN
