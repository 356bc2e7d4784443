"""The hesd store (SQLite in WAL mode, group commit): registry, outbox, commands, counters."""

from hesd.store.counters import CounterExhausted, InvocationCounters
from hesd.store.db import Statement, Store, StoreError
from hesd.store.registry import (
    ImportSummary,
    MeterEntry,
    MeterRecord,
    Registry,
    RegistryConflict,
)

__all__ = [
    "CounterExhausted",
    "ImportSummary",
    "InvocationCounters",
    "MeterEntry",
    "MeterRecord",
    "Registry",
    "RegistryConflict",
    "Statement",
    "Store",
    "StoreError",
]
