"""The malformed vendor profiles in tests/vendors_bad/: each gets an error naming the file, the
dotted key and what was expected (issue 6 acceptance).

Every file there is one small mistake; its first line is the exact error line it must produce,
``# expect: <file>: <key>: <message>``, its second line says what is wrong. A file is checked as
``hesctl vendors check`` checks it: loaded as a profile, then its ``[adapter] name`` resolved.
To add a case, add a file (named like the vendor it declares) with its expected line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from adapters.hooks import load_adapter
from adapters.profile import load_profile
from adapters.schema import ConfigError
from tests.conftest import BIN

BAD = Path(__file__).resolve().parent / "vendors_bad"
FILES = sorted(BAD.glob("*.toml"))
TABLES = (
    *("profile", "identity", "framing", "timeouts", "associations", "session", "objects"),
    *("quantities", "profiles", "events", "event_codes", "mqtt", "clock", "adapter"),
)
# what a message must not carry: Python's reprs and exception names, or a bare "invalid"
LEAKS = re.compile(r"Error\b|Exception|Traceback|\('|<[a-z_.]+ |\bNone\b|^invalid$|\[\^")


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    assert first.startswith("# expect: "), f"{path.name}: the first line is not # expect: ..."
    return first.removeprefix("# expect: ")


def check(path: Path) -> None:
    profile = load_profile(path)
    load_adapter(profile.adapter, profile.source)


def test_the_corpus_covers_every_table() -> None:
    assert len(FILES) >= 25
    keys = {expectation(p).split(": ")[1] for p in FILES}
    tables = {key.split(".")[0].split("[")[0] for key in keys}
    assert set(TABLES) <= tables, f"no malformed file for {set(TABLES) - tables}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_a_malformed_profile_names_file_key_and_expectation(path: Path) -> None:
    expected = expectation(path)
    assert expected.startswith(f"{path.name}: ")
    with pytest.raises(ConfigError) as info:
        check(path)
    error = info.value
    assert str(error) == f"{BAD}/{expected}"
    assert error.source == str(path)
    if error.key:
        assert str(error).startswith(f"{path}: {error.key}: ")
    else:  # the file itself is not TOML (or not text): the line says where
        assert re.match(
            r"not (valid TOML|UTF-8 text)\b.*\b(line \d+|the end of the file)", error.message
        )
    assert LEAKS.search(error.message) is None, error.message


def test_hesctl_vendors_check_reports_every_file() -> None:
    result = subprocess.run(
        [str(BIN / "hesctl"), "vendors", "check", *(p.name for p in FILES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=BAD,
    )
    assert result.returncode == 1
    assert result.stdout.splitlines() == [expectation(p) for p in FILES]
    assert result.stderr == ""


def test_hesctl_vendors_check_fails_on_one_bad_file_among_good_ones() -> None:
    good = sorted((BAD.parent.parent / "conf" / "vendors").glob("*.toml"))
    result = subprocess.run(
        [str(BIN / "hesctl"), "vendors", "check", str(good[0]), str(FILES[0]), str(good[1])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{good[0]}: ok (vendor ")
    assert lines[1] == f"{BAD}/{expectation(FILES[0])}"
    assert lines[2].startswith(f"{good[1]}: ok (vendor ")
