"""MQTT: meters and concentrators that talk through a broker, over ONE client connection.

``MqttTransport`` holds the process's single broker connection (task ``mqtt:client``),
subscribed at QoS 1 to the uplink topic of every vendor that talks MQTT (its profile's
``[mqtt]``, else hesd.toml's), as ``$share/{group}/...`` with ``mqtt.shared_group`` so that
several hesd processes split the fleet. An uplink message goes by its topic key (the meter's
inventory address, or its id) to the meter's ``MqttLink``, or attaches the session of the
registry's ``mqtt`` meter with that key, or is dropped and logged (``mqtt.unknown_meter``):
nothing an unknown meter sends reaches a session. A request for a meter without a link attaches
one (``SessionManager.providers["mqtt"]``): the link is up whenever the broker connection is.
Vendors with ``payload = "json"`` publish JSON records: mapped (``mqtt_json``) and handed to
``on_json``, never to a session.

While the broker is unreachable every link is closed (meters offline, requests fail at once);
reconnection backs off, doubling, with jitter. The MQTT session is persistent unless shared;
each link queues at most ``mqtt.max_queue`` messages, dropping the oldest. Why, and the rest:
docs/transports.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Final, TypeGuard

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from adapters.profile import JsonPayload, VendorProfile
from hesd.backoff import backoff
from hesd.config import MqttConfig
from hesd.link import LinkClosed
from hesd.secrets import SecretStore
from hesd.session import SessionError
from hesd.sessions import SessionManager
from hesd.store import MeterRecord, Registry
from hesd.transports import mqtt_client
from hesd.transports.mqtt_json import JsonRecord, parse_json_record
from protocols.errors import HesdError, RemoteProtocolError

__all__ = ["JsonHandler", "MqttLink", "MqttTransport", "TopicTemplate"]

log = structlog.get_logger("hesd.mqtt")

QOS: Final = 1  # at least once, both ways
MAX_PAYLOAD: Final = 1 << 20  # bytes in one uplink message; larger ones are dropped
MAX_INCOMING: Final = 65536  # messages aiomqtt may hold before hesd routes them
STABLE_AFTER: Final = 10.0  # seconds a connection must last to reset the back-off
INDEX_REFRESH: Final = 60.0  # at most one registry scan for topic keys this often
NEGATIVE_TTL: Final = 60.0  # seconds a key found unknown is not looked up again
LOG_EVERY: Final = 60.0  # repeated warnings (unknown meter, queue overflow) once a minute per key
MAX_PENDING: Final = 1024  # links waiting for their meter to be looked up
MAX_UNKNOWN: Final = 100_000  # unknown keys remembered before that memory is reset
PAGE: Final = 1000  # registry rows per query when scanning for topic keys
TOPIC_KEY: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")  # docs/inventory.md, mqtt addresses

# on_json(meter id, the mapped record, now): ``now`` is the monotonic clock, as for pushes
JsonHandler = Callable[[str, JsonRecord, float], None]


class TopicTemplate:
    """A topic holding ``{meter_id}`` once: the filter to subscribe to, and the key of a topic.

    ``{meter_id}`` may be part of a level (``dcu/m-{meter_id}/data``): the filter then has ``+``
    for that whole level, and ``key`` checks the rest of the level.
    """

    __slots__ = ("_after", "_before", "filter", "template")

    def __init__(self, template: str) -> None:
        before, found, after = template.partition("{meter_id}")
        if not found or "{meter_id}" in after:
            raise ValueError(f"topic template {template!r} needs {{meter_id}} once")
        self.template = template
        self._before, self._after = before, after
        head, _, _ = before.rpartition("/")
        _, _, tail = after.partition("/")
        levels = [*([head] if "/" in before else []), "+", *([tail] if "/" in after else [])]
        self.filter = "/".join(levels)

    def key(self, topic: str) -> str | None:
        """The topic key in ``topic``, or None if it is not an instance of this template."""
        before, after = self._before, self._after
        if len(topic) <= len(before) + len(after):
            return None
        if not topic.startswith(before) or not topic.endswith(after):
            return None
        key = topic[len(before) : len(topic) - len(after)]
        return key if TOPIC_KEY.fullmatch(key) else None

    def topic(self, key: str) -> str:
        return f"{self._before}{key}{self._after}"


class MqttLink:
    """A ``Link`` to one meter through the broker; made and attached by ``MqttTransport``."""

    __slots__ = (
        "_closed",
        "_logged_at",
        "_max_queue",
        "_queue",
        "_reason",
        "_transport",
        "_waiter",
        "downlink",
        "dropped",
        "key",
        "meter_id",
        "ready",
        "uplink",
    )

    def __init__(
        self, transport: MqttTransport, key: str, uplink: TopicTemplate | None, max_queue: int
    ) -> None:
        self._transport = transport
        self.key = key
        self.uplink = uplink  # the uplink topic template its messages come on
        self.meter_id = ""  # known once the registry has named the meter
        self.downlink = ""  # known with the meter's vendor
        self._max_queue = max_queue
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._reason = ""
        self._logged_at = -math.inf
        self.dropped = 0
        # resolves with the meter id once attached, or fails with SessionError
        self.ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def peer(self) -> str:
        return f"mqtt:{self.meter_id or self.key}"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued(self) -> int:
        """Messages waiting for the session."""
        return len(self._queue)

    def take(self) -> list[bytes]:
        """The queued messages, one by one (for a meter that turned out to speak JSON)."""
        messages = list(self._queue)
        self._queue.clear()
        return messages

    def deliver(self, payload: bytes) -> None:
        """Queue one uplink message; drops the oldest past ``max_queue``."""
        if self._closed:
            return
        if len(self._queue) >= self._max_queue:
            self._queue.popleft()
            self.dropped += 1
            self._transport.dropped += 1
            now = time.monotonic()
            if now - self._logged_at >= LOG_EVERY:
                self._logged_at = now
                log.warning(
                    "mqtt.queue_overflow",
                    meter=self.meter_id or self.key,
                    dropped=self.dropped,
                    kept=len(self._queue),
                )
        self._queue.append(payload)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def shut(self, reason: str) -> None:
        """Close without waiting: what is queued can still be read, then ``LinkClosed``."""
        if self._closed:
            return
        self._closed, self._reason = True, reason
        self._wake()
        self._transport.forget(self)
        if not self.ready.done():
            self.ready.set_exception(SessionError(f"{self.peer}: {reason}"))
            self.ready.exception()  # retrieved: nobody may be waiting

    # -- Link -------------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        if self._closed or not self.downlink:
            raise LinkClosed(f"{self.peer}: {self._reason or 'not attached'}")
        await self._transport.publish(self.downlink, data)

    async def receive(self) -> bytes:
        while not self._queue:
            if self._closed:
                raise LinkClosed(f"{self.peer}: {self._reason}")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = b"".join(self._queue)
        self._queue.clear()
        return data

    async def close(self) -> None:
        self.shut("closed by hesd")


class _JsonRoute:
    """Where a JSON meter's messages go, for as long as the registry's word is fresh."""

    __slots__ = ("expires_at", "mapping", "meter_id", "names", "uplink")

    def __init__(
        self, record: MeterRecord, key: str, mapping: JsonPayload, uplink: TopicTemplate | None
    ) -> None:
        self.meter_id = record.meter_id
        self.uplink = uplink
        self.names = frozenset(n for n in (key, record.meter_id, record.entry.serial_number) if n)
        self.mapping = mapping
        self.expires_at = time.monotonic() + INDEX_REFRESH


class _Unknown:
    __slots__ = ("decided_at", "logged_at", "suppressed")

    def __init__(self, now: float) -> None:
        self.decided_at = now
        self.logged_at = -math.inf
        self.suppressed = 0


class MqttTransport:
    """The broker connection and the MQTT meters' links; see the module docstring.

    ``run()`` holds the connection until cancelled (run it as ``mqtt:client``, or ``start()``);
    ``close()`` stops it. It is the session manager's ``LinkProvider`` for ``mqtt`` meters.
    """

    def __init__(
        self,
        config: MqttConfig,
        manager: SessionManager,
        registry: Registry,
        *,
        secrets: SecretStore,
        source: str,
        on_json: JsonHandler | None = None,
    ) -> None:
        if config.broker is None:
            raise ValueError("MqttTransport without mqtt.broker")
        self._config = config
        self._host, self._port = config.broker
        self._manager = manager
        self._registry = registry
        self._password = mqtt_client.password(config, secrets)
        self._tls = mqtt_client.tls_context(config, source) if config.tls else None
        self.client_id = config.client_id or mqtt_client.default_client_id()
        self.on_json = on_json
        # Alone, a persistent session keeps QoS 1 messages at the broker while hesd restarts. In
        # a shared group it would strand this member's share there while it is down (Mosquitto 2
        # still deals messages to offline members); a clean session lets the others take them.
        self.clean_session = bool(config.shared_group)
        self._uplinks: dict[str, TopicTemplate] = {}
        self.subscriptions: tuple[str, ...] = ()
        self._follow_vendors()
        self._routes: dict[str, MqttLink | _JsonRoute] = {}
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._index: dict[str, str] = {}  # topic key -> meter id, from the last registry scan
        self._index_at = -math.inf
        self._index_task: asyncio.Task[None] | None = None
        self._unknown: dict[str, _Unknown] = {}
        self.received = 0  # uplink messages
        self.unknown = 0  # dropped: no MQTT meter in the registry has that topic key
        self.dropped = 0  # dropped: queue overflow, oversized, overload
        self.json_records = 0  # JSON messages mapped and handed to on_json
        self.json_refused = 0  # JSON messages that did not map
        self.connections = 0  # successful broker connections

    # -- state ---------------------------------------------------------------------------------

    @property
    def broker(self) -> str:
        return f"{self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def links(self) -> int:
        return sum(isinstance(route, MqttLink) for route in self._routes.values())

    async def wait_connected(self) -> None:
        """Return once connected and subscribed."""
        await self._connected.wait()

    # -- topics --------------------------------------------------------------------------------

    def _uplink_of(self, profile: VendorProfile) -> str:
        return self._config.uplink_topic if profile.mqtt is None else profile.mqtt.uplink_topic

    def _downlink_of(self, profile: VendorProfile) -> str:
        return self._config.downlink_topic if profile.mqtt is None else profile.mqtt.downlink_topic

    def _follow_vendors(self) -> None:
        """Subscribe to the [mqtt] default uplink and every vendor profile's own."""
        templates = [self._config.uplink_topic]
        templates += sorted(self._uplink_of(p) for p in self._manager.vendors.values())
        self._uplinks = {t: self._uplinks.get(t) or TopicTemplate(t) for t in templates}
        group = self._config.shared_group
        filters = dict.fromkeys(t.filter for t in self._uplinks.values())
        self.subscriptions = tuple(f"$share/{group}/{f}" if group else f for f in filters)

    def reload(self) -> None:
        """Vendor profiles were reloaded (SIGHUP): follow their uplink topics from now on."""
        before = set(self.subscriptions)
        self._follow_vendors()
        for key in [k for k, r in self._routes.items() if isinstance(r, _JsonRoute)]:
            del self._routes[key]  # a JSON mapping may have changed
        client, after = self._client, set(self.subscriptions)
        if client is not None and before != after:
            self._spawn(self._resubscribe(client, before - after, after - before), "resubscribe")

    async def _resubscribe(self, client: aiomqtt.Client, old: set[str], new: set[str]) -> None:
        try:
            for topic in sorted(old):
                await client.unsubscribe(topic)
            if new:
                await self._subscribe(client, sorted(new))
        except aiomqtt.MqttError as exc:  # the connection is going down: run() resubscribes
            log.warning("mqtt.resubscribe_failed", error=str(exc))
            return
        log.info("mqtt.subscribed", subscriptions=sorted(new), unsubscribed=sorted(old))

    # -- the connection ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        """``run()`` as a task named ``mqtt:client`` (the daemon runs it in its TaskGroup)."""
        return asyncio.get_running_loop().create_task(self.run(), name="mqtt:client")

    async def run(self) -> None:
        """Hold the broker connection until cancelled, reconnecting with back-off."""
        self._run_task = asyncio.current_task()
        failures = 0
        while True:
            up_since: float | None = None
            reason = "hesd is stopping"
            try:
                async with mqtt_client.connected(self._new_client()) as client:
                    up_since = time.monotonic()
                    await self._subscribe(client, self.subscriptions)
                    self._client = client
                    self.connections += 1
                    self._connected.set()
                    log.info(
                        "mqtt.connected",
                        broker=self.broker,
                        client_id=self.client_id,
                        subscriptions=list(self.subscriptions),
                    )
                    async for message in client.messages:
                        self._on_message(message)
            except aiomqtt.MqttError as exc:
                reason = mqtt_client.reason(exc)
            finally:
                self._down(reason)
            if up_since is not None and time.monotonic() - up_since >= STABLE_AFTER:
                failures = 0
            failures += 1
            delay = backoff(failures, self._config.backoff_initial, self._config.backoff_max)
            log.warning(
                "mqtt.disconnected" if up_since is not None else "mqtt.connect_failed",
                broker=self.broker,
                reason=reason,
                failures=failures,
                retry_in=round(delay, 3),
            )
            await asyncio.sleep(delay)  # the back-off itself

    def _new_client(self) -> aiomqtt.Client:
        password = None if self._password is None else self._password.decode()
        return aiomqtt.Client(
            self._host,
            self._port,
            identifier=self.client_id,
            username=self._config.username or None,
            password=password,
            clean_session=self.clean_session,
            keepalive=self._config.keepalive,
            tls_context=self._tls,
            max_queued_incoming_messages=MAX_INCOMING,
        )

    async def _subscribe(self, client: aiomqtt.Client, topics: Sequence[str]) -> None:
        granted = await client.subscribe([(topic, QOS) for topic in topics])
        codes: list[int | ReasonCode] = list(granted)
        for topic, code in zip(topics, codes, strict=False):
            if (
                code.is_failure if isinstance(code, ReasonCode) else code >= 0x80
            ):  # MQTT 3.1.1 §3.9.3: 0x80 is a refused subscription
                raise aiomqtt.MqttError(f"the broker refused the subscription {topic}")

    def _down(self, reason: str) -> None:
        was_up = self._client is not None
        self._client = None
        self._connected.clear()
        for route in list(self._routes.values()):
            if isinstance(route, MqttLink):
                route.shut(f"broker connection lost: {reason}" if was_up else reason)
        self._routes.clear()

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK; ``LinkClosed`` if that fails."""
        client = self._client
        if client is None:
            raise LinkClosed(f"MQTT broker {self.broker} not connected")
        try:
            await client.publish(topic, data, qos=QOS)
        except aiomqtt.MqttError as exc:
            raise LinkClosed(f"publish to {topic} failed: {exc}") from None

    async def close(self) -> None:
        """Disconnect, stop every task and close every link."""
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pending in list(self._tasks):
            pending.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._down("hesd is stopping")

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"mqtt:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- routing -------------------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        self.received += 1
        topic = message.topic.value
        payload = message.payload
        matches = [(t, k) for t in self._uplinks.values() if (k := t.key(topic)) is not None]
        if not matches:
            self._drop_unknown(topic, "not an uplink topic")
            return
        template, key = matches[0]
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_PAYLOAD:
            self.dropped += 1
            size = len(payload) if isinstance(payload, bytes | bytearray) else 0
            log.warning("mqtt.payload_refused", key=key, bytes=size, max_bytes=MAX_PAYLOAD)
            return
        for template, key in matches:  # the key's route, if the topic is its vendor's
            route = self._routes.get(key)
            if route is None or route.uplink is not template:
                continue
            if isinstance(route, MqttLink):
                route.deliver(bytes(payload))
                return
            if time.monotonic() < route.expires_at:
                self._on_json(route, bytes(payload))
                return
            del self._routes[key]  # stale: ask the registry again
        template, key = matches[0]
        route = self._routes.get(key)
        if route is not None and route.uplink is not None:
            self._drop_unknown(topic, f"meter {key} publishes on {route.uplink.template}")
            return
        known = self._unknown.get(key)
        if known is not None and time.monotonic() - known.decided_at < NEGATIVE_TTL:
            self._drop_unknown(key, "not an mqtt meter in the registry")
            return
        if self._pending >= MAX_PENDING:
            self.dropped += 1
            log.warning("mqtt.overloaded", key=key, pending=self._pending)
            return
        link = self._open(key, template, None)
        link.deliver(bytes(payload))

    def _on_json(self, route: _JsonRoute, payload: bytes) -> None:
        try:
            record = parse_json_record(payload, route.mapping, route.meter_id, route.names)
        except RemoteProtocolError as exc:
            self.json_refused += 1
            log.warning("mqtt.json_refused", meter=route.meter_id, reason=str(exc))
            return
        self.json_records += 1
        if self.on_json is not None:
            self.on_json(route.meter_id, record, time.monotonic())

    def _open(self, key: str, uplink: TopicTemplate | None, record: MeterRecord | None) -> MqttLink:
        """A new link for ``key``, attached by a task once its meter is known."""
        link = MqttLink(self, key, uplink, self._config.max_queue)
        self._routes[key] = link
        self._pending += 1
        self._spawn(self._attach(link, record), f"attach:{key}")
        return link

    async def _attach(self, link: MqttLink, record: MeterRecord | None) -> None:
        meter_id = None if record is None else record.meter_id
        try:
            if record is None:
                record = await self._lookup(link.key)
                if record is None or self._uplink_template(record) is not link.uplink:
                    self._unknown_key(link.key, link.queued)
                    link.shut("not an mqtt meter in the registry")
                    return
            meter_id = link.meter_id = record.meter_id
            link.uplink = self._uplink_template(record)
            profile = self._manager.vendors.get(record.entry.vendor)
            if profile is None:
                raise SessionError(f"vendor profile {record.entry.vendor!r} is not loaded")
            if profile.mqtt is not None and profile.mqtt.json is not None:
                self._become_json(link, record, profile.mqtt.json)
                return
            link.downlink = TopicTemplate(self._downlink_of(profile)).topic(link.key)
            if link.closed:
                return
            await self._manager.attach(meter_id, link)
        except HesdError as exc:  # SessionError, or the store failing
            log.warning("mqtt.attach_failed", meter=meter_id, key=link.key, error=str(exc))
            link.shut(str(exc))
        else:
            if not link.ready.done():
                link.ready.set_result(meter_id)
        finally:
            self._pending -= 1

    def _uplink_template(self, record: MeterRecord) -> TopicTemplate | None:
        """The uplink topic ``record``'s vendor publishes on (None: its profile is not loaded)."""
        profile = self._manager.vendors.get(record.entry.vendor)
        return None if profile is None else self._uplinks.get(self._uplink_of(profile))

    def _become_json(self, link: MqttLink, record: MeterRecord, mapping: JsonPayload) -> None:
        route = _JsonRoute(record, link.key, mapping, link.uplink)
        if self._routes.get(link.key) is link:
            self._routes[link.key] = route
        for payload in link.take():
            self._on_json(route, payload)
        link.shut(f"meter {record.meter_id} reports JSON records; it takes no DLMS requests")

    def forget(self, link: MqttLink) -> None:
        """A link closed: route its key afresh."""
        if self._routes.get(link.key) is link:
            del self._routes[link.key]

    async def _lookup(self, key: str) -> MeterRecord | None:
        """The MQTT meter whose topic key is ``key``: its address, or its id when that is empty."""
        candidate = self._index.get(key, key)
        record = await self._registry.get(candidate)
        if _has_key(record, key):
            return record
        if time.monotonic() - self._index_at >= INDEX_REFRESH:
            await self._refresh_index()
            fresh = self._index.get(key)
            if fresh is not None and fresh != candidate:
                record = await self._registry.get(fresh)
                if _has_key(record, key):
                    return record
        return None

    async def _refresh_index(self) -> None:
        """Scan the registry for MQTT topic keys (one scan at a time, at most once a minute)."""
        task = self._index_task
        if task is None or task.done():
            self._index_at = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._scan(), name="mqtt:index")
            self._index_task = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.shield(task)

    async def _scan(self) -> None:
        index: dict[str, str] = {}
        async for record in self._registry.each(page=PAGE):
            if record.entry.transport == "mqtt":
                index[record.entry.address or record.meter_id] = record.meter_id
        self._index = index
        log.debug("mqtt.index", keys=len(index))

    def _unknown_key(self, key: str, messages: int) -> None:
        """The registry has no MQTT meter ``key``: drop what came, remember it for a while."""
        if len(self._unknown) >= MAX_UNKNOWN:
            self._unknown.clear()
        entry = self._unknown.get(key)
        if entry is None:
            self._unknown[key] = _Unknown(time.monotonic())
        else:
            entry.decided_at = time.monotonic()
        self._drop_unknown(key, "not an mqtt meter in the registry", messages)

    def _drop_unknown(self, key: str, reason: str, messages: int = 1) -> None:
        """Count and log (once a minute per key) messages nobody may receive."""
        self.unknown += messages
        entry = self._unknown.get(key)
        if entry is None:
            if len(self._unknown) >= MAX_UNKNOWN:
                self._unknown.clear()
            entry = self._unknown[key] = _Unknown(-math.inf)  # for the log, not a lookup result
        now = time.monotonic()
        if now - entry.logged_at >= LOG_EVERY:
            dropped = entry.suppressed + messages
            log.warning("mqtt.unknown_meter", key=key, reason=reason, dropped=dropped)
            entry.logged_at, entry.suppressed = now, 0
        else:
            entry.suppressed += messages

    # -- LinkProvider ------------------------------------------------------------------------------

    async def connect(self, record: MeterRecord) -> None:
        """Attach ``record``'s link for a request (``SessionManager.providers["mqtt"]``)."""
        if self._client is None:
            raise SessionError(f"meter {record.meter_id}: MQTT broker {self.broker} not connected")
        profile = self._manager.vendors.get(record.entry.vendor)
        if profile is not None and profile.mqtt is not None and profile.mqtt.json is not None:
            raise SessionError(
                f"meter {record.meter_id}: reports JSON records over MQTT; "
                "it takes no DLMS requests"
            )
        key = record.entry.address or record.meter_id
        route = self._routes.get(key)
        if not isinstance(route, MqttLink):
            route = self._open(key, self._uplink_template(record), record)
        link = route
        await asyncio.shield(link.ready)


def _has_key(record: MeterRecord | None, key: str) -> TypeGuard[MeterRecord]:
    if record is None or record.entry.transport != "mqtt":
        return False
    return (record.entry.address or record.meter_id) == key
