"""The alert push of a vendor's meters: ``[alerts]`` and ``[alerts.bits]`` of a vendor profile.

IS 15959 / IS 16444 smart meters push an *alert* when an event the utility selected happens (a
magnet, the cover opened, a supply failure): a Data-Notification from a push setup of its own
(commonly 0.4.25.9.0.255), apart from the periodic instantaneous push, whose push object list
carries the meter's identity, its clock and the Event Status Word (ESW, commonly
0.0.94.91.18.255: a bit-string of 128 bits, one per event), or on some meters the code of the
event itself. ``AlertPush`` says which objects the push holds, in order, and which event code of
the profile's ``[event_codes]`` each ESW bit stands for. The same table says which events raise
an alert at all (what the meter's ESW filter selects): the simulator pushes alerts for those.

Bit numbers count from 0 at the first bit of the bit-string (the most significant bit of its
first octet, as A-XDR orders a bit-string). The default mapping is hesd's, for the IS 15959 code
table (a profile that leaves ``[alerts.bits]`` out gets the part of it whose codes its
``[event_codes]`` has); a DISCOM's meter specification or the vendor's documentation gives the
one its meters use, and the vendor profile states it (docs/vendors.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from adapters.cosem_map import EventLog, ObisRegistry, read_obis
from adapters.schema import ConfigError, Table
from protocols.dlms.obis import ObisCode

__all__ = [
    "ALERT_OBJECTS",
    "DEFAULT_ALERT_OBJECTS",
    "DEFAULT_BITS",
    "ESW_BITS",
    "AlertPush",
    "read_alerts",
]

ESW_BITS: Final = 128  # IS 15959: the Event Status Word is a bit-string of 128 bits
ALERT_OBJECTS: Final = MappingProxyType(
    {
        "push_setup": "the alert push setup's logical name (octet-string of 6), as IDIS puts "
        "first in a push object list",
        "logical_device_name": "the logical device name (octet-string)",
        "serial_number": "the serial number (octet-string or visible-string)",
        "clock": "the meter's clock when it pushed (date-time)",
        "esw": "the Event Status Word (bit-string)",
        "event_code": "the code of the event that raised the alert (long-unsigned)",
        "event_time": "when that event happened (date-time)",
    }
)
DEFAULT_PUSH_SETUP: Final = "0.4.25.9.0.255"
DEFAULT_ESW: Final = "0.0.94.91.18.255"
DEFAULT_ALERT_OBJECTS: Final = ("logical_device_name", "clock", "esw")
# hesd's default ESW mapping for the IS 15959 code table: the occurrences an operator wants at
# once (voltage and current tampers, supply failure, magnet, neutral, cover, the relay opening)
DEFAULT_BITS: Final = MappingProxyType(
    {
        **{bit: code for bit, code in enumerate((1, 3, 5, 7, 9, 11))},  # voltage
        **{6 + i: code for i, code in enumerate((51, 53, 55, 57, 59, 61, 63, 65, 67))},  # current
        15: 101,  # power failure
        16: 201,  # magnet
        17: 203,  # neutral disturbance
        18: 205,  # very low power factor
        19: 251,  # cover opened
        20: 301,  # load switch disconnected
    }
)
_BIT_KEY: Final = re.compile(r"0|[1-9][0-9]{0,2}")


@dataclass(frozen=True, slots=True)
class AlertPush:
    """How a vendor's meters push alerts, validated from ``[alerts]``."""

    push_setup: ObisCode  # the alert push setup (IC 40)
    esw: ObisCode  # the Event Status Word (IC 1, bit-string of ESW_BITS)
    objects: tuple[str, ...]  # the push object list, in order (ALERT_OBJECTS)
    bits: tuple[tuple[int, int], ...]  # (ESW bit, event code), by bit
    _by_bit: Mapping[int, int] = field(init=False, repr=False, compare=False)
    _by_code: Mapping[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = [o for o in self.objects if o not in ALERT_OBJECTS]
        if unknown:
            raise ValueError(f"alert push objects {unknown} are not {list(ALERT_OBJECTS)}")
        if ("esw" in self.objects) == ("event_code" in self.objects):
            raise ValueError("an alert push carries the ESW or an event code, exactly one")
        if "clock" not in self.objects and "event_time" not in self.objects:
            raise ValueError("an alert push carries a time: clock or event_time")
        by_bit = dict(self.bits)
        by_code = {code: bit for bit, code in self.bits}
        if len(by_bit) != len(self.bits) or len(by_code) != len(self.bits):
            raise ValueError("each ESW bit stands for one event code, each code for one bit")
        if any(not 0 <= bit < ESW_BITS for bit in by_bit):
            raise ValueError(f"ESW bits are 0..{ESW_BITS - 1}")
        object.__setattr__(self, "_by_bit", MappingProxyType(by_bit))
        object.__setattr__(self, "_by_code", MappingProxyType(by_code))

    @property
    def carries_esw(self) -> bool:
        return "esw" in self.objects

    def code_of(self, bit: int) -> int | None:
        """The event code ESW bit ``bit`` stands for; None if the profile does not map it."""
        return self._by_bit.get(bit)

    def bit_of(self, code: int) -> int | None:
        """The ESW bit of event ``code``; None if it raises no alert."""
        return self._by_code.get(code)


def read_alerts(doc: Table, events: EventLog, registry: ObisRegistry, push_width: int) -> AlertPush:
    """``[alerts]`` of a vendor profile; ``push_width`` is how many values the instantaneous
    push carries (an alert push must be told from it)."""
    table = doc.table("alerts")
    push_setup = read_obis(table, "push_setup", DEFAULT_PUSH_SETUP, registry)
    esw = read_obis(table, "esw", DEFAULT_ESW, registry)
    names = ", ".join(f'"{name}"' for name in ALERT_OBJECTS)
    objects = table.string_list(
        "objects",
        default=DEFAULT_ALERT_OBJECTS,
        describe="alert push objects",
        describe_item=f"one of {names}",
    )
    where = table.key_path("objects")
    for index, name in enumerate(objects):
        if name not in ALERT_OBJECTS:
            raise ConfigError(
                table.source, f"{where}[{index}]", f'expected one of {names}, got "{name}"'
            )
        if name in objects[:index]:
            raise ConfigError(table.source, f"{where}[{index}]", f'"{name}" is listed twice')
    if ("esw" in objects) == ("event_code" in objects):
        raise table.error(
            "objects",
            'expected exactly one of "esw" (the Event Status Word) and "event_code" (the code '
            "of the event)",
        )
    if "clock" not in objects and "event_time" not in objects:
        raise table.error("objects", 'expected a time: "clock", or "event_time" with the code')
    if "event_time" in objects and "event_code" not in objects:
        raise table.error("objects", '"event_time" is the time of "event_code": list both')
    if len(objects) == push_width and "push_setup" not in objects:
        raise table.error(
            "objects",
            f"{len(objects)} values, as many as the instantaneous push: hesd cannot tell the two "
            'apart; add "push_setup"',
        )
    bits = _read_bits(table, events)
    table.finish()
    return AlertPush(push_setup, esw, objects, bits)


def _read_bits(table: Table, events: EventLog) -> tuple[tuple[int, int], ...]:
    known = {entry.code for entry in events.codes}
    if "bits" not in table:
        table.table("bits")  # consumed: absent means hesd's default mapping, for the codes the
        # vendor's table has (a profile written before [alerts] existed still loads)
        return tuple(sorted((bit, code) for bit, code in DEFAULT_BITS.items() if code in known))
    outer = table.table("bits")
    found: dict[int, int] = {}
    for key in list(outer.keys()):
        if _BIT_KEY.fullmatch(key) is None or int(key) >= ESW_BITS:
            raise outer.error(key, f"the key must be an ESW bit 0..{ESW_BITS - 1} in decimal")
        code = outer.integer(key, lo=0, hi=0xFFFF)
        if code not in known:
            raise outer.error(key, f"event code {code} is not in [event_codes]")
        other = next((bit for bit, c in found.items() if c == code), None)
        if other is not None:
            raise outer.error(key, f"event code {code} is already bit {other}")
        found[int(key)] = code
    outer.finish()
    return tuple(sorted(found.items()))
