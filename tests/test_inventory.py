"""The inventory CSV: every error names file, line and column; export reads back unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hesd.inventory import InventoryError, format_inventory, parse_inventory
from hesd.store.registry import TRANSPORTS, MeterEntry

REPO = Path(__file__).resolve().parent.parent
VENDORS = {"is15959", "acme"}
KEYSETS = {"lot-a"}
HEADER = "meter_id,vendor,transport,address,serial_number,system_title,keyset,tags\n"


def parse(text: str) -> list[MeterEntry]:
    return parse_inventory(text, "meters.csv", vendors=VENDORS, keysets=KEYSETS)


def errors(text: str) -> list[str]:
    with pytest.raises(InventoryError) as info:
        parse(text)
    return str(info.value).splitlines()


def test_example_inventory_parses() -> None:
    text = (REPO / "conf" / "meters.example.csv").read_text()
    entries = parse_inventory(text, "meters.example.csv", vendors={"is15959"}, keysets=set())
    assert [e.transport for e in entries] == ["tcp-in", "tcp-out", "serial", "serial", "mqtt"]
    assert entries[0].tags == (("dt", "DT7"), ("feeder", "F12"))


def test_columns_in_any_order_and_optional() -> None:
    entries = parse("transport,meter_id,vendor\ntcp-in,M1,acme\n")
    assert entries == [MeterEntry("M1", "acme", "tcp-in")]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("M 1,acme,tcp-in,,,,,", 'meters.csv:2: meter_id: "M 1" is not 1..64 of letters'),
        (
            "M1,acne,tcp-in,,,,,",
            'meters.csv:2: vendor: unknown vendor "acne" (known: acme, is15959)',
        ),
        ("M1,acme,gprs,,,,,", 'meters.csv:2: transport: "gprs" is not one of tcp-in, tcp-out'),
        ("M1,acme,tcp-out,10.0.0.1,,,,", 'meters.csv:2: address: "10.0.0.1" is not host:port'),
        ("M1,acme,tcp-out,10.0.0.1:70000,,,,", 'meters.csv:2: address: "10.0.0.1:70000" is not'),
        (
            "M1,acme,serial,/dev/ttyUSB0:3,,,,",
            'meters.csv:2: address: "/dev/ttyUSB0:3" is not DEVICE',
        ),
        ("M1,acme,mqtt,a/b,,,,", 'meters.csv:2: address: "a/b" is not a topic key'),
        ("M1,acme,tcp-in,,S N,,,", 'meters.csv:2: serial_number: "S N" is not'),
        ("M1,acme,tcp-in,,,0011,,", 'meters.csv:2: system_title: "0011" is not 16 hex digits'),
        (
            "M1,acme,tcp-in,,,,lot-b,",
            'meters.csv:2: keyset: keyset "lot-b" is not in the secrets file',
        ),
        ("M1,acme,tcp-in,,,,,Feeder=1", 'meters.csv:2: tags: tag "Feeder=1" is not key=value'),
        ("M1,acme,tcp-in,,,,,a=1;a=2", 'meters.csv:2: tags: tag "a" given twice'),
        ("M1,acme,tcp-in", "meters.csv:2: 3 fields, header has 8"),
    ],
)
def test_each_error_names_line_and_column(row: str, expected: str) -> None:
    found = errors(HEADER + row + "\n")
    assert len(found) == 1
    assert found[0].startswith(expected), found[0]


def test_all_errors_reported_and_nothing_returned() -> None:
    text = HEADER + "M1,acme,tcp-in,,,,,\nM2,nope,tcp-in,,,,,\nM1,acme,tcp-in,,,,,\n"
    assert errors(text) == [
        'meters.csv:3: vendor: unknown vendor "nope" (known: acme, is15959)',
        'meters.csv:4: meter_id: "M1" already on line 2',
    ]


def test_duplicate_system_title() -> None:
    text = HEADER + "M1,acme,tcp-in,,,00AA00AA00AA00AA,,\nM2,acme,tcp-in,,,00aa00aa00aa00aa,,\n"
    assert errors(text) == ["meters.csv:3: system_title: already on line 2"]


def test_header_errors() -> None:
    assert errors("meter_id,vendor,transprt\n") == [
        "meters.csv:1: transprt: unknown column (expected some of: meter_id, vendor, transport, "
        "address, serial_number, system_title, keyset, tags)",
        "meters.csv:1: transport: required column missing",
    ]
    assert errors("") == ["meters.csv:1: empty file; expected a header row"]


def test_error_count_is_capped() -> None:
    text = HEADER + "".join(f"M{i},nope,tcp-in,,,,,\n" for i in range(30))
    found = errors(text)
    assert len(found) == 21
    assert found[-1] == "... and 10 more errors"


def test_blank_lines_and_bom_are_tolerated() -> None:
    assert len(parse("\ufeff" + HEADER + "\nM1,acme,tcp-in,,,,,\n\n")) == 1


entries_strategy = st.lists(
    st.builds(
        MeterEntry,
        meter_id=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True),
        vendor=st.sampled_from(sorted(VENDORS)),
        transport=st.just("mqtt"),
        address=st.from_regex(r"[A-Za-z0-9._-]{0,10}", fullmatch=True),
        serial_number=st.from_regex(r"[A-Za-z0-9._-]{0,10}", fullmatch=True),
        system_title=st.just(""),
        keyset=st.sampled_from(["", "lot-a"]),
        tags=st.dictionaries(
            st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True),
            st.from_regex(r"[A-Za-z0-9._:/-]{0,8}", fullmatch=True),
            max_size=3,
        ).map(lambda d: tuple(sorted(d.items()))),
    ),
    max_size=20,
    unique_by=lambda e: e.meter_id,
)


@given(entries_strategy)
def test_export_reads_back_unchanged(entries: list[MeterEntry]) -> None:
    assert parse(format_inventory(entries)) == entries


def test_every_transport_round_trips() -> None:
    addresses = {"tcp-in": "", "tcp-out": "[fe80::1]:4059", "serial": "/dev/ttyS1:16", "mqtt": ""}
    entries = [MeterEntry(f"M{i}", "acme", t, addresses[t]) for i, t in enumerate(TRANSPORTS)]
    assert parse(format_inventory(entries)) == entries
