"""The meter registry: what hesd knows of every meter it serves.

Two halves with different writers. The *inventory* half (vendor, transport, address, serial
number, system title, keyset, tags) comes from ``hesctl meters import`` and changes rarely. The
*state* half (status, last seen, signal quality, firmware) is written by sessions all the time;
those updates are coalesced in memory per meter and flushed once per group commit, so a meter that
talks every second costs one row write per commit, not one per frame.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from hesd.store.db import Statement, Store
from protocols.errors import HesdError

__all__ = [
    "METER_ID",
    "STATUSES",
    "TRANSPORTS",
    "ImportSummary",
    "MeterEntry",
    "MeterRecord",
    "Registry",
    "RegistryConflict",
]

METER_ID: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
TRANSPORTS: Final = ("tcp-in", "tcp-out", "serial", "mqtt")
STATUSES: Final = ("unknown", "online", "offline")
_METER_ID_RE: Final = re.compile(METER_ID)


@dataclass(frozen=True, slots=True)
class MeterEntry:
    """The inventory half of a meter, as a CSV row states it (see ``docs/inventory.md``)."""

    meter_id: str
    vendor: str
    transport: str
    address: str = ""
    serial_number: str = ""
    system_title: str = ""
    keyset: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if _METER_ID_RE.fullmatch(self.meter_id) is None:
            raise ValueError(f"meter id {self.meter_id!r} does not match {METER_ID}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport {self.transport!r} not one of {TRANSPORTS}")

    @property
    def tags_text(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.tags)


@dataclass(frozen=True, slots=True)
class MeterRecord:
    """A registry row: inventory plus the state sessions maintain."""

    entry: MeterEntry
    status: str
    last_seen: float | None
    signal_quality: int | None
    firmware: str | None

    @property
    def meter_id(self) -> str:
        return self.entry.meter_id

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "meter_id": e.meter_id,
            "vendor": e.vendor,
            "transport": e.transport,
            "address": e.address,
            "serial_number": e.serial_number,
            "system_title": e.system_title,
            "keyset": e.keyset,
            "tags": dict(e.tags),
            "status": self.status,
            "last_seen": self.last_seen,
            "signal_quality": self.signal_quality,
            "firmware": self.firmware,
        }


class RegistryConflict(HesdError):
    """An import would give a system title to a second meter (the title identifies a meter)."""

    def __init__(self, conflicts: list[str]) -> None:
        self.conflicts = conflicts
        super().__init__("\n".join(conflicts))


@dataclass(frozen=True, slots=True)
class ImportSummary:
    created: int
    updated: int
    unchanged: int


def parse_tags(text: str) -> tuple[tuple[str, str], ...]:
    """``"feeder=F12;dt=DT7"`` → ``(("dt", "DT7"), ("feeder", "F12"))``, sorted by key."""
    tags: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or re.fullmatch(r"[a-z][a-z0-9_]{0,31}", key) is None:
            raise ValueError(f'tag "{part}" is not key=value with a lower-case key')
        if re.fullmatch(r"[A-Za-z0-9._:/-]{0,64}", value) is None:
            raise ValueError(f'tag value "{value}" may hold only letters, digits and ._:/-')
        if key in tags:
            raise ValueError(f'tag "{key}" given twice')
        tags[key] = value
    return tuple(sorted(tags.items()))


_COLUMNS: Final = (
    "meter_id, vendor, transport, address, serial_number, system_title, keyset, tags, "
    "status, last_seen, signal_quality, firmware"
)


def _record(row: sqlite3.Row) -> MeterRecord:
    entry = MeterEntry(
        meter_id=row["meter_id"],
        vendor=row["vendor"],
        transport=row["transport"],
        address=row["address"],
        serial_number=row["serial_number"],
        system_title=row["system_title"],
        keyset=row["keyset"],
        tags=parse_tags(row["tags"]),
    )
    return MeterRecord(
        entry, row["status"], row["last_seen"], row["signal_quality"], row["firmware"]
    )


@dataclass(slots=True)
class _StateUpdate:
    fields: dict[str, Any] = field(default_factory=dict)


# A meter dialling in is looked up by what its first push names, once per connection: these
# must use the partial indexes meters_by_system_title and meters_by_serial (a scan of 10,000 rows
# takes 0.4 ms, so a fleet dialling in after a restart would cost O(meters²)). SQLite uses a
# partial index only when the query's WHERE implies the index's, and "x = ?" with a parameter
# does not imply "x != ''": the query repeats the index's term (sqlite.org/partialindex.html §2.2).
IDENTIFY_BY_SYSTEM_TITLE: Final = (
    "SELECT meter_id FROM meters WHERE system_title = ? AND system_title != ''"
)
IDENTIFY_BY_SERIAL: Final = (
    "SELECT meter_id FROM meters WHERE serial_number = ? AND serial_number != ''"
)

_STATE_FIELDS: Final = ("status", "last_seen", "signal_quality", "firmware")


class Registry:
    """Reads and writes the ``meters`` table through the store."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._dirty: dict[str, _StateUpdate] = {}
        store.add_flusher(self._flush_state)

    # -- inventory ---------------------------------------------------------------------------

    async def upsert(
        self, entries: Sequence[MeterEntry], now: float | None = None
    ) -> ImportSummary:
        """Create or update meters from the inventory; state fields are left as they are.

        All rows commit in one transaction: an import is applied whole or not at all.
        """
        now = time.time() if now is None else now
        existing: dict[str, MeterEntry] = {}
        ids = [e.meter_id for e in entries]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in await self._store.fetchall(
                f"SELECT {_COLUMNS} FROM meters WHERE meter_id IN ({marks})",
                chunk,
            ):
                existing[row["meter_id"]] = _record(row).entry
        await self._check_system_titles(entries)
        created = updated = unchanged = 0
        statements: list[Statement] = []
        for entry in entries:
            old = existing.get(entry.meter_id)
            if old == entry:
                unchanged += 1
                continue
            if old is None:
                created += 1
            else:
                updated += 1
            statements.append(
                (
                    "INSERT INTO meters (meter_id, vendor, transport, address, serial_number,"
                    " system_title, keyset, tags, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (meter_id) DO UPDATE SET vendor = excluded.vendor,"
                    " transport = excluded.transport, address = excluded.address,"
                    " serial_number = excluded.serial_number, system_title = excluded.system_title,"
                    " keyset = excluded.keyset, tags = excluded.tags,"
                    " updated_at = excluded.updated_at",
                    (
                        entry.meter_id,
                        entry.vendor,
                        entry.transport,
                        entry.address,
                        entry.serial_number,
                        entry.system_title,
                        entry.keyset,
                        entry.tags_text,
                        now,
                        now,
                    ),
                )
            )
        if statements:
            await self._store.submit(statements)
        return ImportSummary(created, updated, unchanged)

    async def _check_system_titles(self, entries: Sequence[MeterEntry]) -> None:
        """Refuse titles already held by another meter that this import does not re-title."""
        wanted = {e.system_title: e.meter_id for e in entries if e.system_title}
        importing = {e.meter_id: e.system_title for e in entries}
        titles = list(wanted)
        conflicts: list[str] = []
        for start in range(0, len(titles), 500):
            chunk = titles[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in await self._store.fetchall(
                f"SELECT meter_id, system_title FROM meters WHERE system_title IN ({marks})"
                " AND system_title != ''",  # the partial index: see IDENTIFY_BY_SYSTEM_TITLE
                chunk,
            ):
                owner, title = row[0], row[1]
                if owner != wanted[title] and importing.get(owner, title) == title:
                    conflicts.append(
                        f"meter {wanted[title]}: system_title {title}"
                        f" already belongs to meter {owner}"
                    )
        if conflicts:
            raise RegistryConflict(conflicts)

    # -- queries -----------------------------------------------------------------------------

    async def get(self, meter_id: str) -> MeterRecord | None:
        row = await self._store.fetchone(
            f"SELECT {_COLUMNS} FROM meters WHERE meter_id = ?",
            (meter_id,),
        )
        return None if row is None else _record(row)

    async def select(
        self,
        *,
        status: str | None = None,
        vendor: str | None = None,
        after: str = "",
        limit: int = 1000,
    ) -> list[MeterRecord]:
        """Meters ordered by id, after ``after`` (keyset pagination), filtered."""
        where = ["meter_id > ?"]
        params: list[Any] = [after]
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if vendor is not None:
            where.append("vendor = ?")
            params.append(vendor)
        params.append(limit)
        rows = await self._store.fetchall(
            f"SELECT {_COLUMNS} FROM meters WHERE {' AND '.join(where)} ORDER BY meter_id LIMIT ?",
            params,
        )
        return [_record(r) for r in rows]

    async def each(
        self, *, status: str | None = None, vendor: str | None = None, page: int = 1000
    ) -> AsyncIterator[MeterRecord]:
        """Every meter, ordered by id and filtered as ``select`` does, read ``page`` rows at a
        time (a fleet of millions is never one list)."""
        after = ""
        while True:
            found = await self.select(status=status, vendor=vendor, after=after, limit=page)
            for record in found:
                yield record
            if len(found) < page:
                return
            after = found[-1].meter_id

    async def identify(self, *, serial_number: str = "", system_title: str = "") -> str | None:
        """The meter with this serial number or system title (hex), if the registry has it."""
        if system_title:
            row = await self._store.fetchone(IDENTIFY_BY_SYSTEM_TITLE, (system_title.upper(),))
            if row is not None:
                return str(row[0])
        if serial_number:
            row = await self._store.fetchone(IDENTIFY_BY_SERIAL, (serial_number,))
            if row is not None:
                return str(row[0])
        return None

    async def counts(self) -> dict[str, int]:
        """Number of meters by status, with every status present."""
        result = dict.fromkeys(STATUSES, 0)
        for row in await self._store.fetchall(
            "SELECT status, count(*) FROM meters GROUP BY status"
        ):
            result[row[0]] = row[1]
        return result

    # -- state (coalesced) -------------------------------------------------------------------

    def note_state(self, meter_id: str, **fields: Any) -> None:
        """Record state changes for ``meter_id``; written with the next group commit.

        Accepted fields: status, last_seen, signal_quality, firmware. Later values win.
        """
        unknown = set(fields) - set(_STATE_FIELDS)
        if unknown:
            raise TypeError(f"not registry state fields: {sorted(unknown)}")
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"status {fields['status']!r} not one of {STATUSES}")
        self._dirty.setdefault(meter_id, _StateUpdate()).fields.update(fields)
        self._store.poke()

    def _flush_state(self) -> list[Statement]:
        if not self._dirty:
            return []
        dirty, self._dirty = self._dirty, {}
        now = time.time()
        statements: list[Statement] = []
        for meter_id, update in dirty.items():
            names = sorted(update.fields)
            assignments = ", ".join(f"{n} = ?" for n in names)
            statements.append(
                (
                    f"UPDATE meters SET {assignments}, updated_at = ? WHERE meter_id = ?",
                    (*(update.fields[n] for n in names), now, meter_id),
                )
            )
        return statements
