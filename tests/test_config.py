"""hesd.toml and vendor profiles: each error names the file, the key and what was expected."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from adapters.profile import load_profile
from adapters.schema import ConfigError, Table
from hesd.cli import EX_CONFIG, main
from hesd.config import EMBEDDED, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "hesd.toml") -> Path:
    shutil.copytree(REPO / "conf" / "vendors", tmp_path / "conf" / "vendors", dirs_exist_ok=True)
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(Path("hesd.toml")).load_vendor_profiles()
    return str(info.value)


def test_embedded_defaults_load() -> None:
    config = load_config(None)
    assert config.source == EMBEDDED
    assert config.uplink.batch_size == 1000
    assert config.api.socket == config.daemon.state_dir / "hesd.sock"
    assert config.api.socket_mode == 0o660


def test_example_hesd_toml_states_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented example at the repo root must not drift from the defaults in code."""
    monkeypatch.chdir(REPO)
    example = load_config(REPO / "hesd.toml")
    defaults = load_config(None)
    assert dataclasses.replace(example, source=EMBEDDED) == defaults
    assert sorted(example.load_vendor_profiles()) == ["is15959", "kalpa", "meghdoot", "sunrise"]


def test_wrong_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, '[uplink]\nbatch_size = "big"\n', monkeypatch)
    assert message == 'hesd.toml: uplink.batch_size: expected integer 1..10000, got "big"'


def test_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, "[uplink]\nbatch_size = 0\n", monkeypatch)
    assert message == "hesd.toml: uplink.batch_size: expected integer 1..10000, got 0"
    message = error_of(tmp_path, "[store]\ncommit_interval = 2.5\n", monkeypatch)
    assert message == "hesd.toml: store.commit_interval: expected number 0..1, got 2.5"


def test_boolean_is_not_an_integer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, "[uplink]\nbatch_size = true\n", monkeypatch)
    assert message == "hesd.toml: uplink.batch_size: expected integer 1..10000, got true"


def test_unknown_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, "[uplink]\nbatchsize = 5\n", monkeypatch)
    assert message.startswith("hesd.toml: uplink.batchsize: unknown key (expected one of: ")
    assert "batch_size" in message


def test_unknown_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, "[uplnk]\nurl = ''\n", monkeypatch)
    assert message.startswith("hesd.toml: uplnk: unknown key (expected one of: ")


def test_wrong_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, '[log]\nformat = "xml"\n', monkeypatch)
    assert message == 'hesd.toml: log.format: expected one of "console", "json", got "xml"'


def test_missing_vendor_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, '[vendors]\nenabled = ["is15959", "acme"]\n', monkeypatch)
    assert message == (
        f"hesd.toml: vendors.enabled[1]: vendor file {tmp_path.resolve()}/conf/vendors/acme.toml "
        "not found"
    )


def test_bad_vendor_name_in_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, '[vendors]\nenabled = ["is15959", 7]\n', monkeypatch)
    assert message == (
        "hesd.toml: vendors.enabled[1]: expected vendor names (a-z, 0-9, _ and -), got 7"
    )


def test_toml_syntax_error_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = error_of(tmp_path, "[uplink\n", monkeypatch)
    assert message.startswith("hesd.toml: not valid TOML: ")
    assert "line 1" in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_follow_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nstate_dir = "st"\n[store]\npath = "db/x.db"\n')
    config = load_config(path)
    assert config.daemon.state_dir == tmp_path.resolve() / "st"
    assert config.store.path == tmp_path.resolve() / "st" / "db" / "x.db"


def test_socket_path_too_long(tmp_path: Path) -> None:
    path = write(tmp_path, f'[api]\nsocket = "/{"x" * 120}"\n')
    with pytest.raises(ConfigError, match=r"api\.socket: unix socket path longer than 107 bytes"):
        load_config(path)


def test_intake_marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = load_config(None).limits
    assert (limits.intake_lag_pause, limits.intake_lag_resume, limits.intake_max_pause) == (
        0.1,
        0.02,
        1.0,
    )
    message = error_of(
        tmp_path, "[limits]\nintake_lag_pause = 0.05\nintake_lag_resume = 0.05\n", monkeypatch
    )
    assert message == (
        "hesd.toml: limits.intake_lag_resume: must be below limits.intake_lag_pause (0.05), "
        "got 0.05"
    )
    message = error_of(tmp_path, "[limits]\nintake_lag_pause = 0.01\n", monkeypatch)
    assert message == (
        "hesd.toml: limits.intake_lag_pause: must be above limits.intake_lag_resume (0.02), "
        "or 0 (off), got 0.01"
    )
    message = error_of(tmp_path, "[limits]\nintake_max_pause = 0\n", monkeypatch)
    assert message == "hesd.toml: limits.intake_max_pause: expected number 0.05..60, got 0"
    message = error_of(tmp_path, "[limits]\nintake_lag_pause = -1\n", monkeypatch)
    assert message == "hesd.toml: limits.intake_lag_pause: expected number 0..10, got -1"
    # 0 turns the gate off: the resume mark is not compared with it
    path = write(tmp_path, "[limits]\nintake_lag_pause = 0\nintake_lag_resume = 0.5\n")
    assert load_config(path).limits.intake_lag_pause == 0


@given(
    value=st.one_of(
        st.integers(),
        st.floats(allow_nan=True),
        st.text(max_size=8),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_any_value_is_accepted_or_refused_cleanly(value: object) -> None:
    """Whatever a key holds, validation ends in a valid config or a ConfigError naming the key."""
    for section, key in (
        ("uplink", "batch_size"),
        ("store", "commit_interval"),
        ("log", "level"),
        ("vendors", "enabled"),
        ("daemon", "state_dir"),
        ("limits", "intake_lag_pause"),
        ("limits", "intake_lag_resume"),
    ):
        try:
            parse_config(Table("hesd.toml", {section: {key: value}}), Path("/base"))
        except ConfigError as exc:
            assert exc.source == "hesd.toml"
            assert exc.key.startswith(f"{section}.{key}")


# -- check-config -----------------------------------------------------------------------------


def test_check_config_accepts_the_repo_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    result = CliRunner().invoke(main, ["check-config", "hesd.toml"])
    assert result.exit_code == 0, result.output
    assert "hesd.toml: ok" in result.output
    assert "is15959" in result.output


def test_check_config_reports_and_exits_78(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, '[uplink]\nbatch_size = "big"\n')
    result = CliRunner().invoke(main, ["check-config", "hesd.toml"])
    assert result.exit_code == EX_CONFIG
    assert (
        'hesd: hesd.toml: uplink.batch_size: expected integer 1..10000, got "big"' in result.output
    )


# -- vendor profiles --------------------------------------------------------------------------

GOOD_PROFILE = """\
[profile]
schema = 1
name = "acme"
version = "2.1"
[framing]
kind = "hdlc"
[associations.public]
client_address = 16
security = "none"
[associations.reader]
client_address = 32
security = "lls"
"""


def profile_error(tmp_path: Path, text: str, name: str = "acme") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_profile(path)
    assert str(info.value).startswith(f"{path}: ")
    return str(info.value).removeprefix(f"{path}: ")


def test_profile_loads(tmp_path: Path) -> None:
    path = tmp_path / "acme.toml"
    path.write_text(GOOD_PROFILE)
    profile = load_profile(path)
    assert profile.framing.kind == "hdlc"
    assert profile.association("reader").secret == "lls_password"
    assert profile.default_association == "public"


def test_every_shipped_profile_loads() -> None:
    paths = sorted((REPO / "conf" / "vendors").glob("*.toml"))
    assert paths
    for path in paths:
        assert load_profile(path).name == path.stem


def test_profile_name_must_match_file(tmp_path: Path) -> None:
    message = profile_error(tmp_path, GOOD_PROFILE, name="other")
    assert message == 'profile.name: must equal the file name "other", got "acme"'


def test_profile_client_address_range(tmp_path: Path) -> None:
    message = profile_error(
        tmp_path, GOOD_PROFILE.replace("client_address = 32", "client_address = 300")
    )
    assert message == "associations.reader.client_address: expected integer 1..127, got 300"


def test_profile_unknown_key(tmp_path: Path) -> None:
    message = profile_error(tmp_path, GOOD_PROFILE + "cipherd = true\n")
    assert message.startswith("associations.reader.cipherd: unknown key")


def test_profile_from_the_future(tmp_path: Path) -> None:
    message = profile_error(tmp_path, GOOD_PROFILE.replace("schema = 1", "schema = 9"))
    assert message == "profile.schema: profile written for schema 9, this hesd reads up to 1"


def test_profile_without_association(tmp_path: Path) -> None:
    text = GOOD_PROFILE.split("[associations.public]", maxsplit=1)[0]
    assert profile_error(tmp_path, text) == (
        "associations: missing; expected at least one [associations.<name>]"
    )


def test_profile_ciphered_public_refused(tmp_path: Path) -> None:
    text = GOOD_PROFILE.replace('security = "none"', 'security = "none"\nciphered = true')
    message = profile_error(tmp_path, text)
    assert message.startswith("associations.public.ciphered: ciphering needs")


def test_profile_duplicate_client(tmp_path: Path) -> None:
    message = profile_error(
        tmp_path, GOOD_PROFILE.replace("client_address = 32", "client_address = 16")
    )
    assert message == (
        "associations.reader.client_address: 16 is already used by associations.public; "
        "expected a client address of its own"
    )
