"""Typed reading of TOML documents with errors that name the file, the key and what was expected.

Both ``hesd.toml`` and the vendor profiles under ``conf/vendors/`` are read through ``Table``: each
accessor takes a key, checks the value's type and range, and remembers that the key was used;
``Table.finish()`` then rejects every key nobody asked for. An error reads

    hesd.toml: uplink.batch_size: expected integer 1..10000, got "big"

Values that are secrets are read with ``secret=True`` so that a bad value is never echoed.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from protocols.errors import HesdError

__all__ = ["NAME_PATTERN", "ConfigError", "Table", "format_value", "load_toml"]

_T = TypeVar("_T")


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Final = _Missing()

# a name the files give a thing: a named sub-table ([keysets.x], [api.clients.x]), a token, an
# API key, a keyset
NAME_PATTERN: Final = r"[A-Za-z0-9_.-]{1,64}"


class ConfigError(HesdError):
    """A configuration file (hesd.toml, a vendor profile, the secrets file) is not valid."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


def format_value(value: object) -> str:
    """Render a TOML value the way the user wrote it, shortened for error messages."""
    if isinstance(value, str):
        text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_toml(path: Path, source: str | None = None) -> Table:
    """Read ``path`` as TOML; a missing, unreadable or malformed file is a ``ConfigError``."""
    name = source or str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(name, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(name, "", f"cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(name, "", f"not UTF-8 text (line {line}, byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"not valid TOML: {_toml_problem(exc)}") from None
    return Table(name, data)


_TOML_AT: Final = re.compile(r"(.*) \(at (line \d+, column \d+|end of document)\)", re.DOTALL)
_TOML_TABLE_TWICE: Final = re.compile(r"Cannot declare \((.*)\) twice", re.DOTALL)


def _toml_problem(exc: tomllib.TOMLDecodeError) -> str:
    """tomllib's message as "line L, column C: what", without Python reprs in it."""
    found = _TOML_AT.fullmatch(str(exc))
    what, where = found.groups() if found else (str(exc), "")
    twice = _TOML_TABLE_TWICE.fullmatch(what)
    if what == "Cannot overwrite a value":  # tomllib's words for a key given twice
        what = "a key is given a value twice"
    elif twice is not None:  # "Cannot declare ('a', 'b') twice": a tuple's repr
        names = re.findall(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"", twice.group(1))
        what = f"table [{'.'.join(a or b for a, b in names)}] is declared twice"
    what = what[:1].lower() + what[1:]
    if where == "end of document":
        where = "at the end of the file"
    return f"{where}: {what}" if where else what


class Table:
    """One TOML table being read; tracks which keys were consumed."""

    __slots__ = ("_data", "_prefix", "_used", "source")

    def __init__(self, source: str, data: dict[str, Any], prefix: str = "") -> None:
        self.source = source
        self._data = data
        self._prefix = prefix
        self._used: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------------

    def key_path(self, key: str) -> str:
        return f"{self._prefix}.{key}" if self._prefix else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(self.source, self.key_path(key), message)

    def keys(self) -> Iterator[str]:
        return iter(self._data)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def _get(self, key: str, default: object, expected: str) -> object:
        self._used.add(key)
        if key in self._data:
            return self._data[key]
        if default is REQUIRED:
            raise self.error(key, f"missing; expected {expected}")
        return default

    def _wrong(self, key: str, expected: str, value: object, secret: bool) -> ConfigError:
        got = "a value that is not shown (secret)" if secret else format_value(value)
        return self.error(key, f"expected {expected}, got {got}")

    # -- scalars ----------------------------------------------------------------------------

    def integer(self, key: str, *, lo: int, hi: int, default: int | _Missing = REQUIRED) -> int:
        expected = f"integer {lo}..{hi}"
        value = self._get(key, default, expected)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self._wrong(key, expected, value, False)
        return value

    def number(
        self, key: str, *, lo: float, hi: float, default: float | _Missing = REQUIRED
    ) -> float:
        """A float or integer within [lo, hi]; used for durations in seconds."""
        expected = f"number {lo:g}..{hi:g}"
        value = self._get(key, default, expected)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not lo <= value <= hi
        ):
            raise self._wrong(key, expected, value, False)
        return float(value)

    def boolean(self, key: str, *, default: bool | _Missing = REQUIRED) -> bool:
        value = self._get(key, default, "true or false")
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value, False)
        return value

    def string(
        self,
        key: str,
        *,
        default: str | _Missing = REQUIRED,
        pattern: str | None = None,
        describe: str | None = None,
        max_length: int = 4096,
        secret: bool = False,
    ) -> str:
        """A string, optionally matching ``pattern`` (described to the user as ``describe``)."""
        expected = describe or ("string" if pattern is None else f"string matching {pattern}")
        value = self._get(key, default, expected)
        if not isinstance(value, str) or len(value) > max_length:
            raise self._wrong(key, expected, value, secret)
        if pattern is not None and re.fullmatch(pattern, value) is None:
            raise self._wrong(key, expected, value, secret)
        return value

    def choice(
        self, key: str, choices: Sequence[str], *, default: str | _Missing = REQUIRED
    ) -> str:
        expected = "one of " + ", ".join(f'"{c}"' for c in choices)
        value = self._get(key, default, expected)
        if not isinstance(value, str) or value not in choices:
            raise self._wrong(key, expected, value, False)
        return value

    def path(self, key: str, *, base: Path, default: str | _Missing = REQUIRED) -> Path:
        """A filesystem path; a relative one is taken relative to ``base``."""
        text = self.string(key, default=default, describe="a path")
        if not text:
            raise self.error(key, "expected a path, got an empty string")
        path = Path(text)
        return path if path.is_absolute() else base / path

    # -- collections -------------------------------------------------------------------------

    def string_list(
        self,
        key: str,
        *,
        default: Sequence[str] | _Missing = REQUIRED,
        pattern: str | None = None,
        describe: str | None = None,
        describe_item: str | None = None,
    ) -> tuple[str, ...]:
        """An array of strings; ``describe`` says what they are, ``describe_item`` what one is."""
        expected = "array of strings" if describe is None else f"array of {describe}"
        value = self._get(key, default, expected)
        if not isinstance(value, list | tuple):
            raise self._wrong(key, expected, value, False)
        items: list[str] = []
        for index, item in enumerate(value):
            ok = isinstance(item, str) and (
                pattern is None or re.fullmatch(pattern, item) is not None
            )
            if not ok:
                item_expected = (
                    describe_item
                    or describe
                    or ("string" if pattern is None else f"string matching {pattern}")
                )
                raise ConfigError(
                    self.source,
                    f"{self.key_path(key)}[{index}]",
                    f"expected {item_expected}, got {format_value(item)}",
                )
            items.append(str(item))
        return tuple(items)

    def table(self, key: str, *, required: bool = False) -> Table:
        """A sub-table; a missing optional one reads as empty (all defaults)."""
        value = self._get(key, REQUIRED if required else {}, f"a table ([{self.key_path(key)}])")
        if not isinstance(value, dict):
            raise self._wrong(key, "a table", value, False)
        return Table(self.source, value, self.key_path(key))

    def table_list(self, key: str) -> list[Table]:
        """An array of tables, such as ``[[serial.ports]]``; a missing one reads as empty."""
        expected = f"an array of tables ([[{self.key_path(key)}]])"
        value = self._get(key, [], expected)
        if not isinstance(value, list):
            raise self._wrong(key, expected, value, False)
        result: list[Table] = []
        for index, item in enumerate(value):
            where = f"{self.key_path(key)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(self.source, where, f"expected a table, got {format_value(item)}")
            result.append(Table(self.source, item, where))
        return result

    def tables(
        self,
        key: str,
        *,
        name_pattern: str = NAME_PATTERN,
        describe: str | None = None,
    ) -> dict[str, Table]:
        """A table of named sub-tables, such as ``[associations.public]``; ``describe`` says in
        words which names ``name_pattern`` accepts."""
        outer = self.table(key)
        result: dict[str, Table] = {}
        for name in list(outer.keys()):
            if re.fullmatch(name_pattern, name) is None:
                if describe is None:
                    raise outer.error(name, f"name must match {name_pattern}")
                raise outer.error(name, f"expected {describe}, got {format_value(name)}")
            result[name] = outer.table(name)
        return result

    def finish(self) -> None:
        """Reject keys that no accessor consumed (typos must not pass silently)."""
        unknown = [k for k in self._data if k not in self._used]
        if unknown:
            known = ", ".join(sorted(self._used)) or "none"
            raise self.error(unknown[0], f"unknown key (expected one of: {known})")
