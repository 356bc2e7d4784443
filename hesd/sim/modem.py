"""The cellular modem of a simulated meter, as its GSM diagnostic object (IC 47) reports it.

Only meters whose vendor profile names ``[objects] gsm_diagnostic`` have one. Like the load,
everything follows from the meter's seed: the operator, the serving cell and two neighbours, and
the signal quality, a 3GPP TS 27.007 §8.5 ``<rssi>`` between 8 (-97 dBm) and 28 (-57 dBm). The
control API may set the signal quality of one meter at run time (``SimulatedMeter.
set_signal_quality``); the neighbours follow it. The modem is registered on its home network,
attached for packet data over LTE, and makes no calls.
"""

from __future__ import annotations

from typing import Final

from hesd.sim.load import hashed
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.cosem import SIGNAL_UNKNOWN, CellInfo

__all__ = [
    "CS_INACTIVE",
    "PS_LTE",
    "REGISTERED_HOME",
    "adjacent_cells",
    "cell_info",
    "operator",
    "seed_signal_quality",
    "valid_signal_quality",
]

# GSM diagnostic attribute values (Blue Book 4.7, IC 47 version 1)
REGISTERED_HOME: Final = 1  # status: registered, home network
CS_INACTIVE: Final = 0  # cs_attachment: no circuit-switched call
PS_LTE: Final = 5  # ps_status: packet switched over LTE

# Fictional operators: (name, MCC, MNC, EARFCN of the serving carrier). MCC 404/405 are India's.
_OPERATORS: Final = (
    ("Kiran Mobile", 404, 11, 1850),  # band 3
    ("Sagar Telecom", 404, 45, 39150),  # band 40
    ("Vayu Net", 405, 52, 1275),  # band 3
)
# "what" tags of hashed(), apart from hesd.sim.load's
_H_SIGNAL, _H_OPERATOR, _H_CELL, _H_AREA = 201, 202, 203, 204
_QUALITY_LOW, _QUALITY_SPAN = 8, 21  # <rssi> 8..28: -97..-57 dBm
_NEIGHBOURS: Final = 2


def seed_signal_quality(seed: int) -> int:
    """The meter's signal quality (``<rssi>``) unless the control API set another."""
    return _QUALITY_LOW + hashed(seed, _H_SIGNAL, 0, _QUALITY_SPAN)


def valid_signal_quality(quality: object) -> bool:
    """0..31, or 99 (not known): what a GSM diagnostic may report (3GPP TS 27.007 §8.5)."""
    return type(quality) is int and (0 <= quality <= 31 or quality == SIGNAL_UNKNOWN)


def operator(seed: int) -> str:
    return _OPERATORS[hashed(seed, _H_OPERATOR, 0, len(_OPERATORS))][0]


def _cell_id(seed: int, index: int) -> int:
    """An LTE E-UTRAN cell identity (28 bits): eNB id and cell; index 0 serves, 1.. neighbour."""
    return 1 + hashed(seed, _H_CELL, index, (1 << 28) - 1)


def cell_info(seed: int, quality: int) -> CellInfo:
    """The serving cell (attribute 6). LTE has no RXQUAL: ber is 99, not known."""
    _name, mcc, mnc, earfcn = _OPERATORS[hashed(seed, _H_OPERATOR, 0, len(_OPERATORS))]
    area = 1 + hashed(seed, _H_AREA, 0, 0xFFFE)  # tracking area code, not 0 or 0xFFFF
    return CellInfo(_cell_id(seed, 0), area, quality, SIGNAL_UNKNOWN, mcc, mnc, earfcn)


def adjacent_cells(seed: int, quality: int) -> Typed:
    """Attribute 7: array of structure {cell_ID double-long-unsigned, signal_quality unsigned},
    neighbours a little weaker than the serving cell."""
    cells = tuple(
        Typed(
            Tag.STRUCTURE,
            (
                Typed(Tag.DOUBLE_LONG_UNSIGNED, _cell_id(seed, n)),
                Typed(
                    Tag.UNSIGNED, quality if quality == SIGNAL_UNKNOWN else max(0, quality - 3 * n)
                ),
            ),
        )
        for n in range(1, _NEIGHBOURS + 1)
    )
    return Typed(Tag.ARRAY, cells)
