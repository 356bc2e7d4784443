"""MQTT transport of ``hesd-sim``: the whole fleet behind one broker connection.

One aiomqtt client subscribes (QoS 1) to each vendor's downlink topic with ``+`` for the meter
id (``meters/+/down`` unless the profile's ``[mqtt]`` names others), so 10,000 meters cost one
connection and one subscription. A message on ``meters/{meter_id}/down`` carries WRAPPER frames;
the meter's answers, and its pushes, are published (QoS 1) on ``meters/{meter_id}/up``.

A vendor whose profile says ``payload = "json"`` (a concentrator publishing records) gets its
scheduled pushes as JSON objects built from ``[mqtt.json]``: the meter id, the meter's clock, and
each mapped quantity as ``value / 10**scaler`` of the ground truth. Such meters take no DLMS
requests (a downlink message is logged and dropped).

The broker going away ends the client; the transport reconnects with capped, jittered
back-off, and re-subscribes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import aiomqtt

from adapters.profile import VendorProfile
from hesd.sim import truth
from hesd.sim.endpoint import MeterEndpoint, Reply
from hesd.sim.transports import Backoff, SimEnv
from protocols.dlms.axdr import Value

__all__ = ["DEFAULT_DOWNLINK", "DEFAULT_UPLINK", "MqttTransport", "json_record"]

DEFAULT_UPLINK: Final = "meters/{meter_id}/up"
DEFAULT_DOWNLINK: Final = "meters/{meter_id}/down"
_IST: Final = timezone(timedelta(hours=5, minutes=30))
_OUTBOX: Final = 10_000  # messages waiting for the broker before pushes are skipped


def _topics(profile: VendorProfile) -> tuple[str, str, bool]:
    """(uplink, downlink, json) of a vendor."""
    mqtt = getattr(profile, "mqtt", None)
    if mqtt is None:
        return DEFAULT_UPLINK, DEFAULT_DOWNLINK, False
    return mqtt.uplink_topic, mqtt.downlink_topic, mqtt.payload == "json"


def json_record(endpoint: MeterEndpoint, now: float) -> dict[str, object]:
    """The JSON push of a meter of a ``payload = "json"`` vendor at ``now``."""
    meter = endpoint.meter
    spec = meter.spec.profile.mqtt
    assert spec is not None
    assert spec.json is not None
    layout = spec.json
    clock = meter.meter_time(now)
    stamp: object
    if layout.timestamp_format == "unix":
        stamp = int(clock)
    elif layout.timestamp_format == "unix-ms":
        stamp = int(clock * 1000)
    else:
        stamp = datetime.fromtimestamp(int(clock), _IST).isoformat()
    record: dict[str, object] = {layout.meter_id: meter.spec.meter_id, layout.timestamp: stamp}
    for field in layout.values:
        value = truth.value(meter, field.quantity, now).scaleb(-field.scaler)
        record[field.field] = float(round(value, 6))
    return record


@dataclass(slots=True)
class _Sink:
    """Where a meter's pushes go: its uplink topic."""

    transport: MqttTransport
    endpoint: MeterEndpoint

    def send(self, reply: Reply) -> None:
        self.transport.publish(self.endpoint, reply)

    def push(self, now: float, body: Value | None = None) -> None:
        if self.transport.is_json(self.endpoint):
            self.transport.push_json(self.endpoint, now)
        else:
            self.transport.publish(self.endpoint, self.endpoint.push(now, body))


class MqttTransport:
    """The fleet on an MQTT broker (inventory transport ``mqtt``, address = the meter id)."""

    mode = "mqtt"

    def __init__(
        self,
        env: SimEnv,
        endpoints: Sequence[MeterEndpoint],
        broker: tuple[str, int],
        *,
        client_id: str = "hesd-sim",
        backoff: Backoff | None = None,
    ) -> None:
        self.env = env
        self.endpoints = list(endpoints)
        self.broker = broker
        self.client_id = client_id
        self.backoff = backoff or Backoff()
        self._by_id = {e.meter_id: e for e in self.endpoints}
        self._vendors: dict[str, tuple[str, str, bool]] = {}
        for e in self.endpoints:
            profile = e.site.profile
            if profile.name not in self._vendors:
                self._vendors[profile.name] = _topics(profile)
        self._downlinks = sorted({down for _, down, _ in self._vendors.values()})
        self._patterns = [
            re.compile(re.escape(down).replace(re.escape("{meter_id}"), "(?P<id>[^/]+)"))
            for down in self._downlinks
        ]
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(_OUTBOX)
        self._timers: set[asyncio.TimerHandle] = set()
        self.connected = asyncio.Event()

    def address(self, endpoint: MeterEndpoint) -> str:
        return ""  # the topic key is the meter id

    def uplink(self, endpoint: MeterEndpoint) -> str:
        return self._vendors[endpoint.site.profile.name][0].replace("{meter_id}", endpoint.meter_id)

    def is_json(self, endpoint: MeterEndpoint) -> bool:
        return self._vendors[endpoint.site.profile.name][2]

    def publish(self, endpoint: MeterEndpoint, reply: Reply) -> None:
        """Queue a reply on the meter's uplink topic (after its delay)."""
        self.env.report(endpoint, reply)
        if reply.close:  # "disconnect" over MQTT: the half message, then the meter resets
            now = self.env.clock.now()
            self.env.report(endpoint, endpoint.close(now, "reset after a cut message"))
            self._attach(endpoint, now)
        if not reply.data:
            return
        item = (self.uplink(endpoint), reply.data)
        if reply.delay <= 0:
            self._put(item)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def later() -> None:
            assert handle is not None
            self._timers.discard(handle)
            self._put(item)

        handle = loop.call_later(reply.delay, later)
        self._timers.add(handle)

    def push_json(self, endpoint: MeterEndpoint, now: float) -> None:
        record = json.dumps(json_record(endpoint, now)).encode()
        self.env.ctx.stats.pushes += 1
        self.env.report(endpoint, _reply("sim.push.sent", format="json"))
        self._put((self.uplink(endpoint), record))

    def _put(self, item: tuple[str, bytes]) -> None:
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.env.ctx.stats.per_mode["mqtt_outbox_full"] += 1

    def _attach(self, endpoint: MeterEndpoint, now: float) -> None:
        self.env.report(endpoint, endpoint.open(now))
        endpoint.sink = _Sink(self, endpoint)

    async def run(self, ready: Callable[[], None]) -> None:
        announced = False
        attempt = 0
        try:
            while True:
                try:
                    async with aiomqtt.Client(
                        self.broker[0], self.broker[1], identifier=self.client_id
                    ) as client:
                        for topic in self._downlinks:
                            await client.subscribe(topic.replace("{meter_id}", "+"), qos=1)
                        attempt = 0
                        now = self.env.clock.now()
                        for endpoint in self.endpoints:
                            self._attach(endpoint, now)
                        self.connected.set()
                        self.env.log.info(
                            "sim.mqtt.connected",
                            broker=f"{self.broker[0]}:{self.broker[1]}",
                            subscriptions=self._downlinks,
                            meters=len(self.endpoints),
                        )
                        if not announced:
                            announced = True
                            ready()
                        async with asyncio.TaskGroup() as tg:
                            tg.create_task(self._publisher(client), name="sim:mqtt:publish")
                            await self._receive(client)
                except aiomqtt.MqttError as exc:
                    attempt += 1
                    self.connected.clear()
                    self._detach()
                    self.env.ctx.stats.per_mode["mqtt_disconnects"] += 1
                    self.env.log.warning("sim.mqtt.disconnected", reason=str(exc))
                await asyncio.sleep(self.backoff.delay(max(attempt, 1)))
        finally:
            for handle in self._timers:
                handle.cancel()
            self._timers.clear()
            self._detach()

    def _detach(self) -> None:
        now = self.env.clock.now()
        for endpoint in self.endpoints:
            if endpoint.connected:
                self.env.report(endpoint, endpoint.close(now, "broker connection lost"))

    async def _publisher(self, client: Any) -> None:
        while True:
            topic, payload = await self._outbox.get()
            await client.publish(topic, payload, qos=1)
            self.env.ctx.stats.per_mode["mqtt_published"] += 1

    async def _receive(self, client: Any) -> None:
        async for message in client.messages:
            self.env.ctx.stats.per_mode["mqtt_received"] += 1
            topic = str(message.topic.value)
            endpoint = self._endpoint_of(topic)
            payload = message.payload
            if endpoint is None or not isinstance(payload, bytes | bytearray):
                self.env.ctx.stats.frames_dropped += 1
                self.env.log.debug("sim.mqtt.ignored", topic=topic, reason="no such meter")
                continue
            if self.is_json(endpoint):
                self.env.report(endpoint, _reply("sim.mqtt.ignored", reason="a JSON meter"))
                continue
            self.publish(endpoint, endpoint.receive(bytes(payload), self.env.clock.now()))
        raise aiomqtt.MqttError("the message stream ended")

    def _endpoint_of(self, topic: str) -> MeterEndpoint | None:
        for pattern in self._patterns:
            m = pattern.fullmatch(topic)
            if m is not None:
                return self._by_id.get(m["id"])
        return None


def _reply(event: str, **fields: object) -> Reply:
    reply = Reply()
    reply.note(event, **fields)
    return reply
