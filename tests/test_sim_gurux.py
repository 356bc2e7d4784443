"""gurux-dlms's own client (independent of ours) against a simulated meter.

The meter is what ``hesd-sim`` runs: the vendor profile's association table with the fleet's
keys, our ServerConnection, and the IS 15959 object model; gurux associates with no security,
LLS and HLS-GMAC (ciphered), reads the clock, a register and a load-profile range, and operates
the disconnect control. Values are checked against the simulator's ground truth.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from gurux_dlms import GXByteBuffer, GXDLMSClient, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, Security
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSDisconnectControl,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient

from adapters.profile import load_profile
from hesd.sim import DEFAULT_START, ControlState, MeterSpec, SimulatedMeter, truth
from hesd.sim.fleet import association_table, fleet_keys
from protocols.dlms.server import ServerConnection
from protocols.dlms.wrapper import encode_wrapper
from tests.conftest import REPO

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")
KEYS = fleet_keys("is15959", 7, "derived")  # not the Green Book keys: gurux must use ours
METER_TITLE = bytes.fromhex("4953430000000007")
CLIENT_TITLE = bytes.fromhex("4845534400000001")
NOW = DEFAULT_START + 40 * 86400 + 11 * 3600  # day 40 of the simulation, 11:00 IST


def simulated() -> tuple[SimulatedMeter, ServerConnection]:
    meter = SimulatedMeter(MeterSpec("SIM-7", "SN0007", METER_TITLE, 7, PROFILE))
    server = ServerConnection(
        association_table(PROFILE, KEYS),
        meter,
        system_title=METER_TITLE,
        keys=(KEYS.global_unicast_key, KEYS.authentication_key),
    )
    return meter, server


def exchange(server: ServerConnection, client: Any, sap: int, frames: Any) -> Any:
    """gurux's frames to the meter, the meter's answers to gurux, blocks included."""
    reply = GXReplyData()
    while True:
        for request in frames if isinstance(frames, list) else [frames]:
            server.receive_apdu(sap, bytes(request)[8:], NOW)
            for apdu in server.data_to_send():
                assert client.getData(GXByteBuffer(bytearray(encode_wrapper(1, sap, apdu))), reply)
        if not reply.isMoreData():
            return reply
        frames = client.receiverReady(reply)


def associate(server: ServerConnection, sap: int) -> Any:
    client: Any
    if sap == 48:
        client = GXDLMSSecureClient(
            True, 48, 1, Authentication.HIGH_GMAC, None, InterfaceType.WRAPPER
        )
        client.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        client.ciphering.systemTitle = bytearray(CLIENT_TITLE)
        client.ciphering.blockCipherKey = bytearray(KEYS.global_unicast_key)
        client.ciphering.authenticationKey = bytearray(KEYS.authentication_key)
    elif sap == 32:
        client = GXDLMSClient(
            True, 32, 1, Authentication.LOW, KEYS.lls_password.decode(), InterfaceType.WRAPPER
        )
    else:
        client = GXDLMSClient(True, 16, 1, Authentication.NONE, None, InterfaceType.WRAPPER)
    client.parseAareResponse(exchange(server, client, sap, client.aarqRequest()).data)
    if sap == 48:
        reply = exchange(server, client, sap, client.getApplicationAssociationRequest())
        client.parseApplicationAssociationResponse(reply.data)  # raises if f(CtoS) is wrong
    return client


@pytest.mark.parametrize("sap", [16, 32, 48])
def test_gurux_associates_and_reads_the_clock(sap: int) -> None:
    _meter, server = simulated()
    client = associate(server, sap)
    clock = GXDLMSClock("0.0.1.0.0.255")
    client.updateValue(clock, 2, exchange(server, client, sap, client.read(clock, 2)).value)
    expected = dt.datetime.fromtimestamp(NOW, dt.UTC)
    assert abs(clock.time.value.astimezone(dt.UTC) - expected) < dt.timedelta(seconds=2)
    exchange(server, client, sap, client.releaseRequest())


@pytest.mark.parametrize("sap", [32, 48])
def test_gurux_reads_a_register_and_a_profile_range(sap: int) -> None:
    meter, server = simulated()
    client = associate(server, sap)
    register = GXDLMSRegister("1.0.1.8.0.255")
    client.updateValue(register, 2, exchange(server, client, sap, client.read(register, 2)).value)
    assert register.value == truth.raw(meter, "energy_active_import", NOW)

    profile = GXDLMSProfileGeneric("1.0.99.1.0.255")
    profile.addCaptureObject(GXDLMSClock("0.0.1.0.0.255"), 2, 0)
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))
    start = dt.datetime.fromtimestamp(NOW - 3 * 3600, ist).replace(minute=0, second=0)
    end = start + dt.timedelta(hours=2)
    reply = exchange(server, client, sap, client.readRowsByRange(profile, start, end))
    rows = reply.value
    assert len(rows) == 5  # 30-minute blocks from start to end, both included
    stamps = [bytes(row[0]) for row in rows]
    assert len(set(stamps)) == 5


def test_gurux_operates_the_disconnect_control() -> None:
    meter, server = simulated()
    client = associate(server, 48)
    relay = GXDLMSDisconnectControl("0.0.96.3.10.255")
    exchange(server, client, 48, relay.remoteDisconnect(client))
    assert meter.relay_state == ControlState.DISCONNECTED
    exchange(server, client, 48, relay.remoteReconnect(client))
    assert meter.relay_state == ControlState.CONNECTED


def test_gurux_public_client_cannot_disconnect() -> None:
    meter, server = simulated()
    client = associate(server, 16)
    relay = GXDLMSDisconnectControl("0.0.96.3.10.255")
    with pytest.raises(Exception):  # noqa: B017, PT011 - gurux raises its own error type
        exchange(server, client, 16, relay.remoteDisconnect(client))
    assert meter.relay_state == ControlState.CONNECTED
