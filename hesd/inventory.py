"""The meter inventory CSV that ``hesctl meters import`` reads and ``export`` writes.

Format (reference: ``docs/inventory.md``): UTF-8, a header row naming the columns in any order,
one meter per row. ``meter_id``, ``vendor`` and ``transport`` are required; ``address``,
``serial_number``, ``system_title``, ``keyset`` and ``tags`` are optional. Every error names the
file, the line and the column, and an import with any error applies nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

from hesd.store.registry import METER_ID, TRANSPORTS, MeterEntry, parse_tags
from protocols.errors import HesdError

__all__ = ["COLUMNS", "InventoryError", "format_inventory", "parse_inventory"]

COLUMNS: Final = (
    "meter_id",
    "vendor",
    "transport",
    "address",
    "serial_number",
    "system_title",
    "keyset",
    "tags",
)
REQUIRED: Final = ("meter_id", "vendor", "transport")
MAX_ERRORS: Final = 20

_HOST_PORT: Final = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253}):(?P<port>\d{1,5})"
)
_SERIAL: Final = re.compile(r"(?P<device>/[^\s:]+):(?P<hdlc>\d{1,5})")
_TOPIC_KEY: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, slots=True)
class LineError:
    line: int
    column: str
    message: str


class InventoryError(HesdError):
    """The inventory file has errors; ``errors`` lists each with line and column."""

    def __init__(self, source: str, errors: list[LineError], more: int = 0) -> None:
        self.source = source
        self.errors = errors
        self.more = more
        lines = [
            f"{source}:{e.line}: {e.column}: {e.message}"
            if e.column
            else f"{source}:{e.line}: {e.message}"
            for e in errors
        ]
        if more:
            lines.append(f"... and {more} more errors")
        super().__init__("\n".join(lines))


def _check_address(transport: str, address: str) -> str | None:
    """Why ``address`` is not valid for ``transport``, or None when it is."""
    if transport == "tcp-out":
        m = _HOST_PORT.fullmatch(address)
        if m is None or not 1 <= int(m["port"]) <= 65535:
            return f'"{address}" is not host:port (port 1..65535) as tcp-out needs'
    elif transport == "serial":
        m = _SERIAL.fullmatch(address)
        # IEC 62056-46 §6.4.2: HDLC lower (physical) server addresses 0x10..0x3FFD
        if m is None or not 0x10 <= int(m["hdlc"]) <= 0x3FFD:
            return f'"{address}" is not DEVICE:HDLC_ADDRESS (/dev/ttyUSB0:17, address 16..16381)'
    elif transport == "mqtt":
        if address and _TOPIC_KEY.fullmatch(address) is None:
            return (
                f'"{address}" is not a topic key (letters, digits, ._-), or empty for the meter id'
            )
    elif transport == "tcp-in" and address and _HOST_PORT.fullmatch(address + ":0") is None:
        return f'"{address}" is not a host (the address a dialling-in meter comes from), or empty'
    return None


def parse_inventory(
    text: str,
    source: str,
    *,
    vendors: Collection[str],
    keysets: Collection[str],
) -> list[MeterEntry]:
    """Parse inventory CSV ``text``; all errors (up to MAX_ERRORS) are raised together."""
    errors: list[LineError] = []
    more = 0

    def fail(line: int, column: str, message: str) -> None:
        nonlocal more
        if len(errors) < MAX_ERRORS:
            errors.append(LineError(line, column, message))
        else:
            more += 1

    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InventoryError(source, [LineError(1, "", f"not valid CSV: {exc}")]) from None
    if header is None:
        raise InventoryError(source, [LineError(1, "", "empty file; expected a header row")])
    header = [h.strip() for h in header]
    for name in header:
        if name not in COLUMNS:
            fail(1, name, f"unknown column (expected some of: {', '.join(COLUMNS)})")
    for name in REQUIRED:
        if name not in header:
            fail(1, name, "required column missing")
    if len(set(header)) != len(header):
        fail(1, "", "a column is named twice")
    if errors:
        raise InventoryError(source, errors, more)

    entries: list[MeterEntry] = []
    seen: dict[str, int] = {}
    titles: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                fail(line, "", f"{len(row)} fields, header has {len(header)}")
                continue
            cells = {name: cell.strip() for name, cell in zip(header, row, strict=True)}
            entry = _parse_row(cells, line, fail, vendors, keysets)
            if entry is None:
                continue
            if entry.meter_id in seen:
                fail(line, "meter_id", f'"{entry.meter_id}" already on line {seen[entry.meter_id]}')
                continue
            seen[entry.meter_id] = line
            if entry.system_title:
                if entry.system_title in titles:
                    fail(line, "system_title", f"already on line {titles[entry.system_title]}")
                    continue
                titles[entry.system_title] = line
            entries.append(entry)
    except csv.Error as exc:
        fail(reader.line_num, "", f"not valid CSV: {exc}")
    if errors:
        raise InventoryError(source, errors, more)
    return entries


def _parse_row(
    cells: dict[str, str],
    line: int,
    fail: Callable[[int, str, str], None],
    vendors: Collection[str],
    keysets: Collection[str],
) -> MeterEntry | None:
    ok = True
    meter_id = cells["meter_id"]
    if re.fullmatch(METER_ID, meter_id) is None:
        fail(
            line,
            "meter_id",
            f'"{meter_id}" is not 1..64 of letters, digits, ._- (starting alphanumeric)',
        )
        ok = False
    vendor = cells["vendor"]
    if vendor not in vendors:
        known = ", ".join(sorted(vendors)) or "none loaded"
        fail(line, "vendor", f'unknown vendor "{vendor}" (known: {known})')
        ok = False
    transport = cells["transport"]
    if transport not in TRANSPORTS:
        fail(line, "transport", f'"{transport}" is not one of {", ".join(TRANSPORTS)}')
        ok = False
    address = cells.get("address", "")
    if transport in TRANSPORTS and (why := _check_address(transport, address)) is not None:
        fail(line, "address", why)
        ok = False
    serial = cells.get("serial_number", "")
    if serial and re.fullmatch(r"[A-Za-z0-9._-]{1,64}", serial) is None:
        fail(line, "serial_number", f'"{serial}" is not 1..64 of letters, digits, ._-')
        ok = False
    title = cells.get("system_title", "").upper()
    if title and re.fullmatch(r"[0-9A-F]{16}", title) is None:
        fail(line, "system_title", f'"{title}" is not 16 hex digits (8 bytes)')
        ok = False
    keyset = cells.get("keyset", "")
    if keyset and keyset not in keysets:
        fail(line, "keyset", f'keyset "{keyset}" is not in the secrets file')
        ok = False
    try:
        tags = parse_tags(cells.get("tags", ""))
    except ValueError as exc:
        fail(line, "tags", str(exc))
        ok = False
    if not ok:
        return None
    return MeterEntry(meter_id, vendor, transport, address, serial, title, keyset, tags)


def format_inventory(entries: Iterable[MeterEntry]) -> str:
    """Write entries as inventory CSV that ``parse_inventory`` reads back unchanged."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for e in entries:
        writer.writerow(
            [
                e.meter_id,
                e.vendor,
                e.transport,
                e.address,
                e.serial_number,
                e.system_title,
                e.keyset,
                e.tags_text,
            ]
        )
    return out.getvalue()
