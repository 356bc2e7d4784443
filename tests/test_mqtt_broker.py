"""The Mosquitto fixture is a real broker: a QoS 1 round trip through it with aiomqtt."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

from tests.conftest import Broker

pytestmark = pytest.mark.integration


async def test_round_trip_through_real_broker(mosquitto: Broker) -> None:
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="hesd-test") as client:
        await client.subscribe("meters/+/up", qos=1)
        await client.publish("meters/MTR-1/up", payload=b"\x00\x01\x00\x01", qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiomqtt_messages(client))
    assert str(message.topic) == "meters/MTR-1/up"
    assert message.payload == b"\x00\x01\x00\x01"


async def aiomqtt_messages(client: aiomqtt.Client):  # type: ignore[no-untyped-def]
    async for message in client.messages:
        yield message
