"""Vendor adapters: finding them by entry point (adapters/hooks.py), third-party packages that
provide one without touching hesd, the errors of broken ones, and the built-in
``kalpa-legacy-energy`` (adapters/kalpa_legacy.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import sys
import textwrap
from collections.abc import Callable, Iterator
from decimal import Decimal
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from adapters import is15959
from adapters.hooks import (
    ENTRY_POINT_GROUP,
    NULL_ADAPTER,
    MeterContext,
    NullAdapter,
    VendorAdapter,
    load_adapter,
)
from adapters.kalpa_legacy import CUMULATIVE_ENERGIES, KalpaLegacyEnergy, firmware_release
from adapters.model import Event, Quality, Reading, Source
from adapters.profile import load_profile
from adapters.schema import ConfigError
from hesd import cli, ctl

REPO = Path(__file__).resolve().parent.parent
SOURCE = "conf/vendors/acme.toml"
BUILT_IN = "kalpa-legacy-energy"
T0 = dt.datetime(2024, 1, 1, 0, 30, tzinfo=dt.UTC)
_unique = itertools.count()


def reading(
    quantity: str = "energy_active_import", value: str = "1234.56", **kw: object
) -> Reading:
    unit = kw.pop("unit", None) or _unit(quantity)
    return Reading(
        meter_id="KLP-0001",
        quantity=quantity,
        value=Decimal(value),
        unit=str(unit),
        timestamp=T0,
        source=Source.PULL,
        obis=is15959.QUANTITIES[quantity].obis,
        **kw,  # type: ignore[arg-type]
    )


def _unit(quantity: str) -> str:
    return {
        "Wh": "kWh",
        "VAh": "kVAh",
        "varh": "kvarh",
        "W": "kW",
        "VA": "kVA",
        "var": "kvar",
        "min": "s",
        "": "",
    }.get(is15959.QUANTITIES[quantity].unit, is15959.QUANTITIES[quantity].unit)


def meter(firmware: str | None) -> MeterContext:
    return MeterContext(
        meter_id="KLP-0001", vendor="kalpa", firmware_version=firmware, model="KX-3"
    )


def event(*snapshot: Reading) -> Event:
    return Event(
        meter_id="KLP-0001",
        kind="power_failure",
        category="power",
        severity="major",
        occurrence=True,
        code=101,
        name="Power failure - occurrence",
        timestamp=T0,
        source=Source.PULL,
        obis="0.0.99.98.2.255",
        snapshot=snapshot,
    )


# -- third-party packages, built in tmp_path ------------------------------------------------------

Install = Callable[..., str]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Install a throwaway distribution the way pip would: ``<dist>-1.0.dist-info/`` with METADATA
    and entry_points.txt beside its module, in a directory on sys.path. Returns the module name
    (unique per call, so that nothing is cached in sys.modules between tests)."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def install_(dist: str, entry_points: dict[str, str], code: str = "") -> str:
        module = f"{dist.replace('-', '_')}_{next(_unique)}"
        info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = [f"{name} = {value.format(module=module)}" for name, value in entry_points.items()]
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines) + "\n")
        (site / f"{module}.py").write_text(textwrap.dedent(code))
        modules.append(module)
        return module

    yield install_
    for module in modules:
        sys.modules.pop(module, None)


ACME = """\
    import dataclasses

    class LegacyFirmware:
        '''Acme meters report voltage ten times too high.'''

        def adjust_reading(self, reading, meter):
            if reading.quantity != "voltage_l1":
                return reading
            return dataclasses.replace(reading, value=reading.value / 10)

        def adjust_event(self, event, meter):
            return event

    def make():
        return LegacyFirmware()

    class NoEvents:
        def adjust_reading(self, reading, meter):
            return reading

    class Refuses:
        def __init__(self):
            raise RuntimeError("licence file /etc/acme.lic missing\\nsecond line")

    class NotCallable:
        adjust_reading = 5
        adjust_event = 5

    INSTANCE = LegacyFirmware()
"""


# -- load_adapter ---------------------------------------------------------------------------------


def test_no_name_is_the_null_adapter() -> None:
    adapter = load_adapter("", SOURCE)
    assert adapter is NULL_ADAPTER
    assert isinstance(adapter, NullAdapter)
    r, e = reading(), event(reading())
    assert adapter.adjust_reading(r, meter("1.0")) is r
    assert adapter.adjust_event(e, meter("1.0")) is e


def test_the_built_in_adapter_is_an_installed_entry_point() -> None:
    declared = {ep.name: ep.value for ep in metadata.distribution("hesd").entry_points}
    assert declared[BUILT_IN] == "adapters.kalpa_legacy:KalpaLegacyEnergy"
    adapter = load_adapter(BUILT_IN, SOURCE)
    assert isinstance(adapter, KalpaLegacyEnergy)
    assert isinstance(adapter, VendorAdapter)


def test_an_unknown_name_lists_the_installed_adapters() -> None:
    with pytest.raises(ConfigError) as info:
        load_adapter("acme-legacy", SOURCE)
    assert (info.value.source, info.value.key) == (SOURCE, "adapter.name")
    assert str(info.value) == (
        f'{SOURCE}: adapter.name: no adapter "acme-legacy" is installed (entry points '
        f"hesd.adapters: {BUILT_IN})"
    )


def test_a_third_party_package_provides_an_adapter(install: Install, tmp_path: Path) -> None:
    module = install("acme-hesd", {"acme-legacy": "{module}:LegacyFirmware"}, ACME)
    adapter = load_adapter("acme-legacy", SOURCE)
    assert type(adapter).__module__ == module
    fixed = adapter.adjust_reading(reading("voltage_l1", "2301.5"), meter("0.9"))
    assert fixed.value == Decimal("230.15")
    # a profile names it, exactly as it names a built-in one
    profile = tmp_path / "acme.toml"
    profile.write_text(
        '[profile]\nschema = 1\nname = "acme"\nversion = "1"\n'
        '[associations.public]\nclient_address = 16\nsecurity = "none"\n'
        '[adapter]\nname = "acme-legacy"\n'
    )
    loaded = load_profile(profile)
    assert loaded.adapter == "acme-legacy"
    assert type(load_adapter(loaded.adapter, loaded.source)).__name__ == "LegacyFirmware"
    # and the list of installed ones, for the error of a typo, has it
    with pytest.raises(ConfigError, match=rf"hesd.adapters: acme-legacy, {BUILT_IN}\)$"):
        load_adapter("acme-legcy", SOURCE)


def test_the_entry_point_may_be_a_function(install: Install) -> None:
    install("acme-hesd", {"acme-legacy": "{module}:make"}, ACME)
    assert type(load_adapter("acme-legacy", SOURCE)).__name__ == "LegacyFirmware"


@pytest.mark.parametrize(
    ("value", "code", "message"),
    [
        (
            "acme_missing_module:LegacyFirmware",
            "",
            'adapter "acme-legacy" (acme_missing_module:LegacyFirmware, package acme-hesd): '
            "cannot import: ModuleNotFoundError: No module named 'acme_missing_module'",
        ),
        (
            "{module}:LegacyFirmware",
            "import acme_sdk_that_is_not_installed\n",
            'adapter "acme-legacy" ({module}:LegacyFirmware, package acme-hesd): cannot import: '
            "ModuleNotFoundError: No module named 'acme_sdk_that_is_not_installed'",
        ),
        (
            "{module}:LegacyFirmware",
            "class LegacyFirmware(:\n",
            'adapter "acme-legacy" ({module}:LegacyFirmware, package acme-hesd): cannot import: '
            "SyntaxError: invalid syntax ({module}.py, line 1)",
        ),
        (
            "{module}:Legacy",
            ACME,
            'adapter "acme-legacy" ({module}:Legacy, package acme-hesd): cannot import: '
            "AttributeError: module '{module}' has no attribute 'Legacy'",
        ),
        (
            "{module}:Refuses",
            ACME,
            'adapter "acme-legacy" ({module}:Refuses, package acme-hesd): creating the adapter '
            "failed: RuntimeError: licence file /etc/acme.lic missing",
        ),
        (
            "{module}:INSTANCE",
            ACME,
            'adapter "acme-legacy" ({module}:INSTANCE, package acme-hesd): expected a class or a '
            "function, got an instance of {module}.LegacyFirmware",
        ),
        (
            "{module}:NoEvents",
            ACME,
            'adapter "acme-legacy" ({module}:NoEvents, package acme-hesd): expected an object '
            "with methods adjust_reading and adjust_event, got an instance of "
            "{module}.NoEvents without adjust_event",
        ),
        (
            "{module}:NotCallable",
            ACME,
            'adapter "acme-legacy" ({module}:NotCallable, package acme-hesd): expected an object '
            "with methods adjust_reading and adjust_event, got an instance of "
            "{module}.NotCallable without adjust_reading or adjust_event",
        ),
    ],
)
def test_a_broken_adapter_is_a_config_error(
    install: Install, value: str, code: str, message: str
) -> None:
    module = install("acme-hesd", {"acme-legacy": value}, code)
    with pytest.raises(ConfigError) as info:
        load_adapter("acme-legacy", SOURCE)
    assert str(info.value) == f"{SOURCE}: adapter.name: " + message.format(module=module)


def test_a_name_provided_by_two_packages_is_refused(install: Install) -> None:
    one = install("acme-hesd", {"acme-legacy": "{module}:LegacyFirmware"}, ACME)
    two = install("other-hesd", {"acme-legacy": "{module}:Adapter"}, "")
    with pytest.raises(ConfigError) as info:
        load_adapter("acme-legacy", SOURCE)
    assert str(info.value) == (
        f'{SOURCE}: adapter.name: adapter "acme-legacy" is provided by more than one package: '
        f"acme-hesd ({one}:LegacyFirmware), other-hesd ({two}:Adapter); uninstall all but one"
    )


def test_a_third_party_cannot_shadow_the_built_in_silently(install: Install) -> None:
    install("acme-hesd", {BUILT_IN: "{module}:LegacyFirmware"}, ACME)
    with pytest.raises(ConfigError, match="is provided by more than one package: acme-hesd"):
        load_adapter(BUILT_IN, SOURCE)


# -- kalpa-legacy-energy --------------------------------------------------------------------------

ADAPTER = KalpaLegacyEnergy()


@pytest.mark.parametrize(
    ("version", "release"),
    [
        ("1.9.4", (1, 9)),
        ("V1.9", (1, 9)),
        ("v01.05-rc2", (1, 5)),
        ("2", (2, 0)),
        ("2.0", (2, 0)),
        (" 10.1 ", (10, 1)),
        ("2023.05", (2023, 5)),
        ("KX3-1.9", None),
        ("", None),
        ("beta", None),
        ("1234567.1", None),
        (None, None),
    ],
)
def test_firmware_release(version: str | None, release: tuple[int, int] | None) -> None:
    assert firmware_release(version) == release


def test_the_cumulative_energies_are_the_ones_it_corrects() -> None:
    assert sorted(CUMULATIVE_ENERGIES) == [
        "energy_active_export",
        "energy_active_import",
        "energy_apparent_export",
        "energy_apparent_import",
        "energy_reactive_lag",
        "energy_reactive_lead",
    ]


def test_a_legacy_register_read_as_the_profile_says() -> None:
    # The register holds 123456 (Wh, on firmware 1.x); the profile's scaler 1 made it 1234.56 kWh.
    fixed = ADAPTER.adjust_reading(reading(value="1234.56"), meter("1.7.2"))
    assert fixed.value == Decimal("123.456")
    assert fixed.unit == "kWh"
    assert fixed.quality == Quality.VENDOR
    assert fixed.to_json()["quality"] == ["vendor"]


_LEGACY = st.builds(
    lambda major, minor, rest, v: f"{v}{major}.{minor}{rest}",
    st.integers(0, 1),
    st.integers(0, 99),
    st.sampled_from(["", ".0", ".12", "-rc1", " build 7"]),
    st.sampled_from(["", "v", "V"]),
)
_CURRENT = st.builds(
    lambda major, minor: f"{major}.{minor}", st.integers(2, 999), st.integers(0, 99)
)
_VALUES = st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False)
_FLAGS = st.sampled_from([Quality(0), Quality.OVERFLOW, Quality.CLOCK_DOUBTFUL | Quality.ESTIMATED])


@given(st.sampled_from(sorted(CUMULATIVE_ENERGIES)), _VALUES, _LEGACY, _FLAGS)
def test_legacy_firmware_energies_are_divided_by_ten(
    quantity: str, value: Decimal, firmware: str, flags: Quality
) -> None:
    before = reading(quantity, str(value), quality=flags)
    after = ADAPTER.adjust_reading(before, meter(firmware))
    assert after.value * 10 == before.value
    assert after.quality == flags | Quality.VENDOR
    assert after.to_json() | {"value": "", "quality": []} == before.to_json() | {
        "value": "",
        "quality": [],
    }
    # once corrected, never again: normalise may pass a snapshot reading through twice
    assert ADAPTER.adjust_reading(after, meter(firmware)) is after


@given(
    st.sampled_from(sorted(CUMULATIVE_ENERGIES)),
    _VALUES,
    st.one_of(_CURRENT, st.none(), st.sampled_from(["", "KX3-1.2", "unknown", "x1.0"])),
)
def test_current_or_unknown_firmware_changes_nothing(
    quantity: str, value: Decimal, firmware: str | None
) -> None:
    before = reading(quantity, str(value))
    assert ADAPTER.adjust_reading(before, meter(firmware)) is before


@given(
    st.sampled_from(sorted(set(is15959.QUANTITIES) - CUMULATIVE_ENERGIES)),
    _VALUES,
    _LEGACY,
)
def test_other_quantities_are_left_alone(quantity: str, value: Decimal, firmware: str) -> None:
    # block energies (always in Wh), demand, power, voltages, durations, counters
    before = reading(quantity, str(value))
    assert ADAPTER.adjust_reading(before, meter(firmware)) is before


def test_the_event_snapshot_is_corrected_once() -> None:
    volts = reading("voltage_l1", "231.5")
    energy = reading("energy_active_import", "1234.56")
    before = event(volts, energy)
    after = ADAPTER.adjust_event(before, meter("1.2"))
    assert after.snapshot[0] is volts
    assert after.snapshot[1].value == Decimal("123.456")
    assert after.snapshot[1].quality == Quality.VENDOR
    assert after.quality == Quality.VENDOR
    assert (after.kind, after.code, after.timestamp) == (before.kind, before.code, before.timestamp)
    assert ADAPTER.adjust_event(after, meter("1.2")) is after
    # snapshot readings corrected one by one first are not corrected again
    corrected = ADAPTER.adjust_reading(energy, meter("1.2"))
    assert ADAPTER.adjust_event(event(volts, corrected), meter("1.2")).snapshot[1] is corrected


@pytest.mark.parametrize("firmware", ["2.0", None])
def test_events_of_current_or_unknown_firmware_pass_unchanged(firmware: str | None) -> None:
    before = event(reading("energy_active_import", "1234.56"))
    assert ADAPTER.adjust_event(before, meter(firmware)) is before


def test_an_event_without_energies_passes_unchanged() -> None:
    before = event(reading("voltage_l1", "231.5"))
    assert ADAPTER.adjust_event(before, meter("1.0")) is before
    assert ADAPTER.adjust_event(event(), meter("1.0")).quality == Quality(0)


def test_kalpa_toml_shows_how_to_enable_it(tmp_path: Path) -> None:
    shipped = REPO / "conf" / "vendors" / "kalpa.toml"
    assert load_profile(shipped).adapter == ""  # off: hesd-sim cannot model the old firmware
    enabled = shipped.read_text().replace(
        '# [adapter]\n# name = "kalpa-legacy-energy"', '[adapter]\nname = "kalpa-legacy-energy"'
    )
    (tmp_path / "kalpa.toml").write_text(enabled)
    profile = load_profile(tmp_path / "kalpa.toml")
    assert profile.adapter == BUILT_IN
    assert isinstance(load_adapter(profile.adapter, profile.source), KalpaLegacyEnergy)


# -- hesd check-config and hesctl vendors check resolve the adapters ------------------------------

ACME_PROFILE = """\
[profile]
schema = 1
name = "acme"
version = "3.1"
[associations.public]
client_address = 16
security = "none"
[quantities]
voltage_l1 = {}
energy_active_import = {}
[profiles.instantaneous]
columns = ["clock", "voltage_l1", "energy_active_import"]
[events]
snapshot = ["voltage_l1"]
[event_codes]
101 = { name = "Power off", category = "power", kind = "power_failure", severity = "major" }
102 = { name = "Power on", category = "power", kind = "power_restored", severity = "info" }
[adapter]
name = "%s"
"""


def acme_config(tmp_path: Path, adapter: str) -> Path:
    (tmp_path / "vendors").mkdir()
    (tmp_path / "vendors" / "acme.toml").write_text(ACME_PROFILE % adapter)
    config = tmp_path / "hesd.toml"
    config.write_text('[vendors]\ndir = "vendors"\n')
    return config


def test_check_config_resolves_the_adapters(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["check-config", str(acme_config(tmp_path, BUILT_IN))])
    assert result.exit_code == 0, result.output
    assert f"  vendor adapters: {BUILT_IN} (acme)\n" in result.output


def test_check_config_refuses_an_adapter_that_is_not_installed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli.main, ["check-config", str(acme_config(tmp_path, "acme-x"))])
    assert result.exit_code == cli.EX_CONFIG
    assert result.stderr == (
        f'hesd: {tmp_path}/vendors/acme.toml: adapter.name: no adapter "acme-x" is installed '
        f"(entry points hesd.adapters: {BUILT_IN})\n"
    )


def test_check_config_finds_a_third_party_adapter(tmp_path: Path, install: Install) -> None:
    install("acme-hesd", {"acme-legacy": "{module}:LegacyFirmware"}, ACME)
    result = CliRunner().invoke(
        cli.main, ["check-config", str(acme_config(tmp_path, "acme-legacy"))]
    )
    assert result.exit_code == 0, result.output
    assert "  vendor adapters: acme-legacy (acme)\n" in result.output


def test_hesctl_vendors_check_needs_no_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme_config(tmp_path, BUILT_IN)
    monkeypatch.chdir(REPO)
    # no daemon, and a configuration that does not even load: the check reads only its files
    monkeypatch.setenv("HESD_CONFIG", str(tmp_path / "missing.toml"))
    shipped = sorted(str(p.relative_to(REPO)) for p in (REPO / "conf" / "vendors").glob("*.toml"))
    result = CliRunner().invoke(
        ctl.main, ["vendors", "check", *shipped, f"{tmp_path}/vendors/acme.toml"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "conf/vendors/is15959.toml: ok (vendor is15959 version 1.0, 30 quantities, 56 event codes)",
        "conf/vendors/kalpa.toml: ok (vendor kalpa version 2.3, 28 quantities, 56 event codes)",
        "conf/vendors/meghdoot.toml: ok (vendor meghdoot version 1.0, 30 quantities, 56 event "
        "codes)",
        "conf/vendors/sunrise.toml: ok (vendor sunrise version 1.5, 30 quantities, 46 event codes)",
        f"{tmp_path}/vendors/acme.toml: ok (vendor acme version 3.1, 2 quantities, 2 event codes, "
        f"adapter {BUILT_IN})",
    ]
    # other commands still find the daemon through the configuration, and say when they cannot
    result = CliRunner().invoke(ctl.main, ["vendors", "list"])
    assert result.exit_code == ctl.EXIT_UNREACHABLE
    assert result.stderr == f"hesctl: {tmp_path}/missing.toml: file not found\n"


def test_hesctl_vendors_check_usage() -> None:
    result = CliRunner().invoke(ctl.main, ["vendors", "check"])
    assert result.exit_code == 2
    assert "Missing argument 'FILE...'" in result.stderr
    help_text = CliRunner().invoke(ctl.main, ["vendors", "check", "--help"]).output
    assert "Exit codes: 0 every file is valid, 1 at least one is not, 2 wrong usage." in help_text
