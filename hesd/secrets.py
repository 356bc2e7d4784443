"""The secrets file: DLMS keysets and API tokens, kept apart from hesd.toml and the inventory.

The meter inventory names a *keyset* per meter; the keys themselves live only here. Like ssh with
a private key, hesd refuses a secrets file that its group or others may read or write. Values are
wrapped in ``Secret``, whose repr and str never show the value, so a key cannot reach a log line,
an exception text or ``hesctl`` output by accident. Format reference: ``docs/configuration.md``.

    [keysets.lot-2024-a]
    lls_password = "..."                               # LLS (mechanism 1), 1..64 characters
    hls_secret = "..."                                 # HLS secret where the vendor uses one
    global_unicast_key = "000102030405060708090A0B0C0D0E0F"   # GUEK, 16 bytes hex
    authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"   # GAK, 16 bytes hex

    [tokens]
    mdm = "..."                                        # bearer token for the MDM uplink

    [api_keys]
    mdm-prod = "..."                # what API client api.clients.* with key = "mdm-prod" presents
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from adapters.schema import NAME_PATTERN, ConfigError, Table, load_toml

__all__ = ["KeySet", "Secret", "SecretStore", "load_secrets"]

_HEX16: Final = r"[0-9A-Fa-f]{32}"
# An API key goes in "Authorization: Bearer <key>": RFC 6750 §2.1 b64token characters; at least
# 32 of them (e.g. `openssl rand -base64 32`, or -hex 32), so that it cannot be guessed.
API_KEY: Final = r"[A-Za-z0-9._~+/-]{32,4096}=*"


class Secret:
    """A secret value; shown as ``Secret(***)`` everywhere except through ``reveal()``."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "Secret(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickled into a log or a file
        raise TypeError("Secret values cannot be pickled")


@dataclass(frozen=True, slots=True)
class KeySet:
    """The secrets of one group of meters (usually a procurement lot)."""

    name: str
    lls_password: Secret | None = None
    hls_secret: Secret | None = None
    global_unicast_key: Secret | None = None  # GUEK, AES-128 (suite 0)
    authentication_key: Secret | None = None  # GAK, AES-128 (suite 0)

    def names(self) -> tuple[str, ...]:
        """Which secrets this keyset holds (names only, never values)."""
        fields = ("lls_password", "hls_secret", "global_unicast_key", "authentication_key")
        return tuple(f for f in fields if getattr(self, f) is not None)


@dataclass(frozen=True, slots=True)
class SecretStore:
    source: str | None
    keysets: dict[str, KeySet] = field(default_factory=dict)
    tokens: dict[str, Secret] = field(default_factory=dict)
    api_keys: dict[str, Secret] = field(default_factory=dict)

    def token(self, name: str, named_by: str) -> Secret:
        """The token ``name``; ``ConfigError`` naming the secrets file and ``named_by`` (the
        config key that asked for it) when the file has none."""
        return self._named(self.tokens, "tokens", "token", name, named_by)

    def api_key(self, name: str, named_by: str) -> Secret:
        """The API key ``name``; ``ConfigError`` as for ``token``."""
        return self._named(self.api_keys, "api_keys", "key", name, named_by)

    def _named(
        self, table: dict[str, Secret], key: str, what: str, name: str, named_by: str
    ) -> Secret:
        found = table.get(name)
        if found is None:
            raise ConfigError(
                self.source or "<no secrets file>", key, f'no {what} "{name}" (named by {named_by})'
            )
        return found


def _check_permissions(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(str(path), "", "secrets file not found") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(str(path), "", "secrets file is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise ConfigError(
            str(path),
            "",
            f"permissions {mode:04o} are too open: group and others must not read or write the "
            f"secrets file (chmod 600 {path})",
        )
    if os.name == "posix" and st.st_uid not in (os.geteuid(), 0):
        raise ConfigError(str(path), "", "secrets file must be owned by the hesd user or root")


def _secret_text(table: Table, key: str) -> Secret | None:
    if key not in table:
        table.string(key, default="")  # mark as consumed
        return None
    value = table.string(key, describe="string of 1..64 characters", max_length=64, secret=True)
    if not value:
        raise table.error(key, "expected string of 1..64 characters, got an empty string")
    return Secret(value.encode("utf-8"))


def _secret_key(table: Table, key: str) -> Secret | None:
    if key not in table:
        table.string(key, default="")
        return None
    value = table.string(
        key, pattern=_HEX16, describe="32 hex digits (a 16-byte AES key)", secret=True
    )
    return Secret(bytes.fromhex(value))


def load_secrets(path: Path | None) -> SecretStore:
    """Load the secrets file; ``None`` (no file configured) gives an empty store."""
    if path is None:
        return SecretStore(source=None)
    _check_permissions(path)
    doc = load_toml(path, source=str(path))
    keysets: dict[str, KeySet] = {}
    for name, table in doc.tables("keysets").items():
        keysets[name] = KeySet(
            name=name,
            lls_password=_secret_text(table, "lls_password"),
            hls_secret=_secret_text(table, "hls_secret"),
            global_unicast_key=_secret_key(table, "global_unicast_key"),
            authentication_key=_secret_key(table, "authentication_key"),
        )
        table.finish()
    tokens_t = doc.table("tokens")
    tokens: dict[str, Secret] = {}
    for name in list(tokens_t.keys()):
        value = tokens_t.string(name, describe="string of 1..4096 characters", secret=True)
        if not value:
            raise tokens_t.error(name, "expected a non-empty token")
        tokens[name] = Secret(value.encode("utf-8"))
    tokens_t.finish()
    api_keys = _api_keys(doc.table("api_keys"))
    doc.finish()
    return SecretStore(source=str(path), keysets=keysets, tokens=tokens, api_keys=api_keys)


def _api_keys(table: Table) -> dict[str, Secret]:
    keys: dict[str, Secret] = {}
    owners: dict[bytes, str] = {}
    for name in list(table.keys()):
        if re.fullmatch(NAME_PATTERN, name) is None:
            raise table.error(name, f"key name must match {NAME_PATTERN}")
        value = table.string(
            name,
            pattern=API_KEY,
            describe="32..4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing = "
            "(e.g. from openssl rand -base64 32)",
            secret=True,
        ).encode("ascii")
        if value in owners:  # the key is who the client is: it must not be shared
            raise table.error(
                name,
                f"is the same key as api_keys.{owners[value]}; every API client needs its own",
            )
        owners[value] = name
        keys[name] = Secret(value)
    table.finish()
    return keys
