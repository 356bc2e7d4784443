"""MQTT mode through the Mosquitto fixture: a GET published to meters/X/down is answered on
meters/X/up; pushes arrive there too; a JSON vendor's pushes follow its profile's mapping."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiomqtt
import pytest

from hesd.sim import truth
from hesd.sim.mqtt import MqttTransport
from hesd.sim.runner import Simulator
from hesd.sim.transports import Transport
from tests.conftest import Broker
from tests.test_sim_client import CLOCK, SERIAL, DlmsClient, association, make_sim, running

pytestmark = pytest.mark.integration


class MqttPipe:
    """hesd's side of one meter's topic pair."""

    def __init__(self, client: aiomqtt.Client, meter_id: str, messages: AsyncIterator[Any]) -> None:
        self.client = client
        self.down = f"meters/{meter_id}/down"
        self.up = f"meters/{meter_id}/up"
        self.messages = messages

    async def send(self, data: bytes) -> None:
        await self.client.publish(self.down, data, qos=1)

    async def recv(self) -> bytes:
        while True:
            message = await anext(self.messages)
            if message.topic.value == self.up:
                payload = message.payload
                assert isinstance(payload, bytes)
                return payload


async def _messages(client: aiomqtt.Client) -> AsyncIterator[Any]:
    async for message in client.messages:
        yield message


def mqtt(broker: Broker, name: str) -> Any:
    def make(sim: Simulator) -> Transport:
        return MqttTransport(sim.env, sim.endpoints, (broker.host, broker.port), client_id=name)

    return make


async def test_get_over_mqtt_and_a_push(mosquitto: Broker) -> None:
    sim = make_sim([("is15959", 3)])
    async with (
        running(sim, mqtt(mosquitto, "sim-dlms")),
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="hes-dlms") as hes,
    ):
        await hes.subscribe("meters/+/up", qos=1)
        endpoint = sim.endpoints[2]
        pipe = MqttPipe(hes, endpoint.meter_id, _messages(hes))
        client = DlmsClient(pipe, **association(sim, "utility"))
        await client.associate()
        assert await client.get(SERIAL) == endpoint.meter.spec.serial_number
        assert await client.get(CLOCK) == endpoint.meter_clock(sim.clock.now())
        assert sim.push(endpoint, sim.clock.now())
        pushed = await client.next_notification()
        assert pushed.body[0] == endpoint.meter.logical_device_name()  # type: ignore[index]
        await client.release()
    assert sim.stats.per_mode["mqtt_received"] >= 4


async def test_json_vendor_pushes_records(mosquitto: Broker) -> None:
    sim = make_sim([("meghdoot", 2)])
    profile = sim.fleet.sites["meghdoot"].profile
    assert profile.mqtt is not None
    assert profile.mqtt.json is not None
    layout = profile.mqtt.json
    async with (
        running(sim, mqtt(mosquitto, "sim-json")),
        aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="hes-json") as hes,
    ):
        endpoint = sim.endpoints[1]
        topic = profile.mqtt.uplink_topic.replace("{meter_id}", endpoint.meter_id)
        await hes.subscribe(topic, qos=1)
        now = sim.clock.now()
        assert sim.push(endpoint, now)
        async with asyncio.timeout(5):
            message = await anext(_messages(hes))
    assert isinstance(message.payload, bytes)
    record = json.loads(message.payload)
    assert record[layout.meter_id] == endpoint.meter_id
    for field in layout.values:
        expected = truth.value(endpoint.meter, field.quantity, now).scaleb(-field.scaler)
        assert Decimal(str(record[field.field])) == round(expected, 6)


async def test_an_alarm_over_a_json_uplink_is_the_json_record_not_an_alert(
    mosquitto: Broker,
) -> None:
    """JSON records carry no alert: a tamper of a JSON vendor's meter is followed by its JSON
    record; a DLMS meter over MQTT pushes its alert."""
    sim = make_sim([("meghdoot", 1), ("is15959", 1)])
    async with running(sim, mqtt(mosquitto, "sim-alarm")):
        json_meter, dlms_meter = sim.endpoints
        now = sim.clock.now()
        json_alarm = sim.inject(json_meter, "magnet_tamper", now)
        dlms_alarm = sim.inject(dlms_meter, "magnet_tamper", now)
    assert (json_alarm["pushed"], json_alarm["alert"], json_alarm["esw_bit"]) == (True, False, None)
    assert (dlms_alarm["pushed"], dlms_alarm["alert"], dlms_alarm["esw_bit"]) == (True, True, 16)
    assert sim.stats.alerts == 1
