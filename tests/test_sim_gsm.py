"""The simulated meter's cellular modem: the GSM diagnostic object (IC 47) of the vendors whose
profile names one, its signal quality from the seed and from the control API, and what a client
reads of it (through the DLMS server, and decoded by gurux-dlms)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hesd.sim import modem
from hesd.sim.objects import Kind
from protocols.dlms.apdu import DataAccessResult
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.calendar import DateTime
from protocols.dlms.cosem import INTERFACE_CLASSES, CellInfo
from tests.test_sim_model import NOW, Wire, attr, get, instant, meter, obis, plain

GSM = "0.0.25.6.0.255"
CELLULAR = ("kalpa",)
WITHOUT = ("is15959", "sunrise", "meghdoot")


def cell(model: object, association: str = "reader") -> CellInfo:
    return CellInfo.from_value(plain(get(model, 47, GSM, 6, association=association)))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", CELLULAR)
def test_a_cellular_meter_has_the_gsm_diagnostic(name: str) -> None:
    model = meter(name, seed=5)
    definition = model.tables.objects[obis(GSM)]
    assert (definition.kind, definition.class_id) == (Kind.GSM_DIAGNOSTIC, 47)
    assert plain(get(model, 47, GSM, 1)) == obis(GSM).to_bytes()
    assert plain(get(model, 47, GSM, 2)) in ("Kiran Mobile", "Sagar Telecom", "Vayu Net")
    assert [plain(get(model, 47, GSM, i)) for i in (3, 4, 5)] == [1, 0, 5]  # home, no call, LTE
    serving = cell(model)
    assert serving.signal_quality == model.signal_quality == modem.seed_signal_quality(5)
    assert serving.mcc in (404, 405)
    assert serving.ber == 99  # LTE has no RXQUAL
    neighbours = plain(get(model, 47, GSM, 7))
    assert isinstance(neighbours, list)
    assert len(neighbours) == 2
    assert all(q <= serving.signal_quality for _, q in neighbours)
    assert instant(plain(get(model, 47, GSM, 8))) == NOW  # captured at the read
    assert get(model, 47, GSM, 9) is DataAccessResult.OBJECT_UNAVAILABLE


@pytest.mark.parametrize("name", WITHOUT)
def test_other_meters_have_no_modem(name: str) -> None:
    model = meter(name)
    assert get(model, 47, GSM, 6) is DataAccessResult.OBJECT_UNDEFINED
    assert not any(d.class_id == 47 for d in model.tables.objects.values())
    assert model.signal_quality is None
    assert model.snapshot(NOW).signal_quality is None
    with pytest.raises(ValueError, match=f"{name} meters have no GSM diagnostic object"):
        model.set_signal_quality(12)


def test_the_reader_reads_it_the_public_client_does_not() -> None:
    model = meter("kalpa")
    assert get(model, 47, GSM, 6, association="public") is DataAccessResult.READ_WRITE_DENIED
    assert cell(model, "reader") == cell(model, "utility")
    entries = plain(get(model, 15, "0.0.40.0.0.255", 2, association="reader"))
    assert isinstance(entries, list)
    (entry,) = [e for e in entries if e[2] == obis(GSM).to_bytes()]
    assert entry[:2] == (47, 1)  # class 47, version 1
    assert [a[1] for a in entry[3][0]] == [1] * len(INTERFACE_CLASSES[47].attributes)  # read
    assert model.set("utility", attr(47, GSM, 6), Typed(Tag.STRUCTURE, ()), NOW) is (
        DataAccessResult.READ_WRITE_DENIED
    )


@given(st.integers(0, 2**64 - 1))
def test_the_signal_quality_follows_from_the_seed(seed: int) -> None:
    quality = modem.seed_signal_quality(seed)
    assert 8 <= quality <= 28  # -97 .. -57 dBm: a usable link
    assert modem.seed_signal_quality(seed) == quality
    assert meter("kalpa", seed=seed % 2**40).signal_quality == modem.seed_signal_quality(
        seed % 2**40
    )


def test_seeds_give_different_signals_and_cells() -> None:
    models = [meter("kalpa", seed=s) for s in range(1, 41)]
    assert len({m.signal_quality for m in models}) > 10
    assert len({cell(m).cell_id for m in models}) == 40
    assert cell(meter("kalpa", seed=3)) == cell(meter("kalpa", seed=3))


def test_the_control_api_sets_the_signal_quality() -> None:
    model = meter("kalpa", seed=9)
    before = cell(model)
    for quality in (0, 31, 99, 12):
        model.set_signal_quality(quality)
        assert model.signal_quality == quality
        assert model.snapshot(NOW).signal_quality == quality
        now = cell(model)
        assert now.signal_quality == quality
        assert (now.cell_id, now.location_id) == (before.cell_id, before.location_id)
    model.set_signal_quality(99)
    assert [q for _, q in plain(get(model, 47, GSM, 7))] == [99, 99]  # type: ignore[union-attr]
    for bad in (32, 98, -1, 100, True, 12.0, "12"):
        with pytest.raises(ValueError, match=r"is not 0\.\.31 or 99"):
            model.set_signal_quality(bad)  # type: ignore[arg-type]
    assert model.signal_quality == 99


def test_a_reader_reads_the_cell_info_through_the_server() -> None:
    model = meter("kalpa", seed=4)
    model.set_signal_quality(17)
    wire = Wire(model, "reader")
    value = wire.get(attr(47, GSM, 6))
    assert CellInfo.from_value(value).signal_quality == 17
    assert CellInfo.from_value(value).rssi_dbm == -79
    stamp = wire.get(attr(47, GSM, 8))
    assert isinstance(stamp, bytes)
    assert NOW < DateTime.from_octets(stamp).to_datetime().timestamp() <= wire.now


def test_gurux_decodes_the_gsm_diagnostic() -> None:
    from gurux_dlms import GXByteBuffer, GXDLMSSettings
    from gurux_dlms.internal._GXCommon import _GXCommon
    from gurux_dlms.internal._GXDataInfo import _GXDataInfo
    from gurux_dlms.objects import GXDLMSGSMDiagnostic
    from gurux_dlms.ValueEventArgs import ValueEventArgs

    from protocols.dlms import axdr

    model = meter("kalpa", seed=8)
    settings = GXDLMSSettings(True, None)
    theirs = GXDLMSGSMDiagnostic(GSM)
    for index in (2, 3, 4, 5, 6, 7):
        encoded = axdr.encode(get(model, 47, GSM, index))  # type: ignore[arg-type]
        info = _GXDataInfo()
        event = ValueEventArgs(settings, theirs, index)
        event.value = _GXCommon.getData(settings, GXByteBuffer(encoded), info)
        assert info.complete
        theirs.setValue(settings, event)
    ours = cell(model)
    got = theirs.cellInfo
    assert (got.cellId, got.locationId, got.signalQuality, got.ber) == (
        ours.cell_id,
        ours.location_id,
        ours.signal_quality,
        ours.ber,
    )
    assert (got.mobileCountryCode, got.mobileNetworkCode, got.channelNumber) == (
        ours.mcc,
        ours.mnc,
        ours.channel_number,
    )
    assert (int(theirs.status), int(theirs.packetSwitchStatus)) == (1, 5)
    assert [c.signalQuality for c in theirs.adjacentCells] == [
        q
        for _, q in plain(get(model, 47, GSM, 7))  # type: ignore[union-attr]
    ]
