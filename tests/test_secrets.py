"""The secrets file: refused when group/world accessible; values never shown."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from adapters.schema import ConfigError
from hesd.secrets import Secret, load_secrets

KEY = "000102030405060708090A0B0C0D0E0F"
GOOD = f"""
[keysets.lot-a]
lls_password = "s3cr3t-pass"
global_unicast_key = "{KEY}"
authentication_key = "D0D1D2D3D4D5D6D7D8D9DADBDCDDDEDF"

[tokens]
mdm = "tok-very-secret"
"""


def secrets_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "secrets.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_loads_with_mode_600(tmp_path: Path) -> None:
    store = load_secrets(secrets_file(tmp_path, GOOD))
    keyset = store.keysets["lot-a"]
    assert keyset.global_unicast_key is not None
    assert keyset.global_unicast_key.reveal() == bytes.fromhex(KEY)
    assert keyset.names() == ("lls_password", "global_unicast_key", "authentication_key")
    assert store.tokens["mdm"].reveal() == b"tok-very-secret"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o666])
def test_refused_when_group_or_others_have_access(tmp_path: Path, mode: int) -> None:
    path = secrets_file(tmp_path, GOOD, mode)
    with pytest.raises(ConfigError) as info:
        load_secrets(path)
    assert str(info.value) == (
        f"{path}: permissions {mode:04o} are too open: group and others must not read or write "
        f"the secrets file (chmod 600 {path})"
    )


def test_no_file_configured_is_an_empty_store() -> None:
    assert load_secrets(None).keysets == {}


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="secrets file not found"):
        load_secrets(tmp_path / "absent.toml")


def test_values_never_in_repr_or_errors(tmp_path: Path) -> None:
    store = load_secrets(secrets_file(tmp_path, GOOD))
    text = repr(store) + str(store)
    for value in ("s3cr3t-pass", KEY, KEY.lower(), "tok-very-secret", "D0D1D2"):
        assert value not in text
    bad = GOOD.replace(KEY, "00010203-not-hex-but-a-secret-0000")
    with pytest.raises(ConfigError) as info:
        load_secrets(secrets_file(tmp_path, bad))
    message = str(info.value)
    assert message.endswith(
        "keysets.lot-a.global_unicast_key: expected 32 hex digits (a 16-byte AES key), "
        "got a value that is not shown (secret)"
    )
    assert "not-hex-but-a-secret" not in message


def test_secret_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Secret(b"k"))


def test_unknown_key_in_keyset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keysets\.lot-a\.master_key: unknown key"):
        load_secrets(secrets_file(tmp_path, GOOD + "\n[keysets.lot-a.master_key]\n"))


def test_a_token_or_api_key_that_is_not_there_names_what_asked_for_it() -> None:
    store = load_secrets(None)
    with pytest.raises(ConfigError) as token:
        store.token("mdm", "uplink.token")
    with pytest.raises(ConfigError) as key:
        store.api_key("mdm-prod", "hesd.toml api.clients.mdm.key")
    assert str(token.value) == '<no secrets file>: tokens: no token "mdm" (named by uplink.token)'
    assert str(key.value) == (
        '<no secrets file>: api_keys: no key "mdm-prod" (named by hesd.toml api.clients.mdm.key)'
    )
