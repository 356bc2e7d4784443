"""What a meter session reads of its meter right after association, and the registry keeps:
the firmware version (it changes with an upgrade over the air) and, from the GSM diagnostic
(IC 47) of a meter whose profile has one, its modem's signal in dBm. A meter that does not say
is not an error: the registry's value stays, and what the meter answered is logged.

``hesd.session`` decides when (once per connection, and again after ``forget_identity``) and
runs ``MeterIdentity.read`` inside the request under way (associated, holding the wire).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from adapters.cosem_map import StandardObjects
from hesd.session_settings import failure_text
from hesd.store import Registry
from protocols.dlms import apdu as x
from protocols.dlms.connection import Event, GetCompleted
from protocols.dlms.cosem import CellInfo
from protocols.errors import RemoteProtocolError

__all__ = ["MeterIdentity"]

log = structlog.get_logger("hesd.session")

Get = Callable[[x.AttributeDescriptor], Awaitable[Event]]


class MeterIdentity:
    """One meter's firmware version and signal, as it last reported them."""

    __slots__ = ("_registry", "firmware", "firmware_read", "meter_id", "signal_quality")

    def __init__(self, meter_id: str, registry: Registry) -> None:
        self.meter_id = meter_id
        self._registry = registry
        self.firmware: str | None = None  # as the meter reported it after association
        self.firmware_read = False  # the last read got it (else ``firmware`` is an older one)
        self.signal_quality: int | None = None  # dBm, from the modem's GSM diagnostic, ditto

    async def read(self, objects: StandardObjects, get: Get) -> None:
        """Read both with ``get`` (a GET within the request under way); the registry keeps
        what the meter says."""
        event = await get(x.AttributeDescriptor(1, objects.firmware_version, 2))
        value = event.result if isinstance(event, GetCompleted) else None
        if isinstance(value, bytes) and value.isascii():  # octet-string, or visible-string
            value = value.decode()
        self.firmware_read = isinstance(value, str) and value.isascii() and value.isprintable()
        if isinstance(value, str) and self.firmware_read:
            self.firmware = value.strip()
            self._registry.note_state(self.meter_id, firmware=self.firmware)
        else:
            said = failure_text(event) if not isinstance(event, GetCompleted) else repr(value)[:60]
            log.info("session.firmware_unknown", meter=self.meter_id, answer=said)
        if objects.gsm_diagnostic is not None:
            cell_info = x.AttributeDescriptor(47, objects.gsm_diagnostic, 6)
            dbm, said = _signal_dbm(await get(cell_info))
            if dbm is None:
                log.info("session.signal_unknown", meter=self.meter_id, answer=said)
            else:
                self.signal_quality = dbm
                self._registry.note_state(self.meter_id, signal_quality=dbm)


def _signal_dbm(event: Event) -> tuple[int | None, str]:
    """The signal in dBm from the answer to a GET of cell_info, or None and what the meter said
    instead (a malformed cell_info is the meter's: logged, and the session goes on)."""
    if not isinstance(event, GetCompleted):
        return None, failure_text(event)
    if isinstance(event.result, x.DataAccessResult):
        return None, event.result.name.lower()
    try:
        cell = CellInfo.from_value(event.result)
    except RemoteProtocolError as exc:
        return None, str(exc)
    # 3GPP TS 27.007 §8.5: -113 + 2 * <rssi> dBm; 99 is not known (None)
    return cell.rssi_dbm, f"signal_quality {cell.signal_quality}"
