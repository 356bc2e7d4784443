"""Vendor adapters: code for what a vendor profile file cannot express.

Most vendors are a profile file alone. When meters truly behave differently (a firmware that
reports energy in Wh under a scaler that says 10 Wh, an event code whose meaning depends on the
model), a ``VendorAdapter`` corrects the normalised records. Adapters are found by name through
the entry point group ``hesd.adapters``, so a third party ships one as its own package::

    [project.entry-points."hesd.adapters"]
    acme-legacy = "acme_hesd:LegacyFirmware"

and a profile names it (``[adapter] name = "acme-legacy"``). The entry point is a class (or any
callable) taking no argument and returning the adapter. An adapter sees records after the
profile's mapping; a record it changes should carry ``Quality.VENDOR``, so the MDM can tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from typing import Final, Protocol, runtime_checkable

from adapters.model import Event, Reading
from adapters.schema import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "MeterContext", "NullAdapter", "VendorAdapter", "load_adapter"]

ENTRY_POINT_GROUP: Final = "hesd.adapters"


@dataclass(frozen=True, slots=True)
class MeterContext:
    """What an adapter may know about the meter a record comes from."""

    meter_id: str
    vendor: str
    firmware_version: str | None  # as the meter reported it after association; None: not yet
    model: str  # the profile's model name


@runtime_checkable
class VendorAdapter(Protocol):
    """Corrections for one vendor's meters; return the record unchanged when nothing applies."""

    def adjust_reading(self, reading: Reading, meter: MeterContext) -> Reading: ...

    def adjust_event(self, event: Event, meter: MeterContext) -> Event: ...


class NullAdapter:
    """The adapter of a vendor whose profile names none: changes nothing."""

    def adjust_reading(self, reading: Reading, meter: MeterContext) -> Reading:
        return reading

    def adjust_event(self, event: Event, meter: MeterContext) -> Event:
        return event


NULL_ADAPTER: Final = NullAdapter()


def load_adapter(name: str, source: str) -> VendorAdapter:
    """The adapter registered as ``name`` (``NULL_ADAPTER`` for ""), built once.

    ``ConfigError`` (naming ``source``, the profile file, and its ``adapter.name``) when no
    installed package provides it or it does not load.
    """
    if not name:
        return NULL_ADAPTER
    found = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        known = sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})
        raise ConfigError(
            source,
            "adapter.name",
            f'no adapter "{name}" is installed (entry points {ENTRY_POINT_GROUP}: '
            f"{', '.join(known) or 'none'})",
        )
    if len({ep.value for ep in found}) > 1:
        providers = ", ".join(sorted(f"{_package(ep)} ({ep.value})" for ep in found))
        raise ConfigError(
            source,
            "adapter.name",
            f'adapter "{name}" is provided by more than one package: {providers}; '
            "uninstall all but one",
        )
    entry = found[0]
    where = f'adapter "{name}" ({entry.value}, package {_package(entry)})'
    try:
        factory = entry.load()
    except Exception as exc:  # a third party's module failing to import: any error
        raise ConfigError(source, "adapter.name", f"{where}: cannot import: {_why(exc)}") from None
    if not callable(factory):
        raise ConfigError(
            source, "adapter.name", f"{where}: expected a class or a function, got {_kind(factory)}"
        )
    try:
        adapter = factory()
    except Exception as exc:  # a third party's constructor failing: any error
        raise ConfigError(
            source, "adapter.name", f"{where}: creating the adapter failed: {_why(exc)}"
        ) from None
    missing = [m for m in _METHODS if not callable(getattr(adapter, m, None))]
    if missing:
        raise ConfigError(
            source,
            "adapter.name",
            f"{where}: expected an object with methods {' and '.join(_METHODS)}, got "
            f"{_kind(adapter)} without {' or '.join(missing)}",
        )
    assert isinstance(adapter, VendorAdapter)
    return adapter


_METHODS: Final = ("adjust_reading", "adjust_event")


def _package(entry: metadata.EntryPoint) -> str:
    dist = getattr(entry, "dist", None)  # set for entry points found through a distribution
    return "?" if dist is None else str(dist.name)


def _kind(thing: object) -> str:
    return f"an instance of {type(thing).__module__}.{type(thing).__qualname__}"


def _why(exc: Exception) -> str:
    """An exception as one line for an operator: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
