"""MQTT: meters and concentrators that speak DLMS through a broker, over ONE client connection.

hesd keeps a single broker connection per process (task ``mqtt:client``), subscribed to the
uplink topic of every MQTT meter (``meters/+/up`` by default, ``$share/{group}/meters/+/up``
when ``mqtt.shared_group`` is set, so that several hesd processes or hosts split the fleet: the
broker hands each message to one member of the group). Each meter gets an ``MqttLink``: its
uplink messages in, QoS 1 publications to its downlink topic out. A message carries one or more
DLMS WRAPPER frames; the session's framing reassembles them.

Routing an uplink message for topic key K (the meter's inventory address, or its meter id when
that is empty): to K's link if it has one; else, if the registry knows K as an ``mqtt`` meter,
a link is made and attached (``SessionManager.attach``) with the message queued on it; else the
message is dropped and ``mqtt.unknown_meter`` logged (once a minute per key). Nothing from an
unknown meter reaches a session. A request for an MQTT meter without a link asks the transport
(``SessionManager.providers["mqtt"]``) to attach one: the link is up whenever the broker
connection is.

While the broker connection is down every MQTT link is closed, so the meters show offline and
requests fail at once ("broker not connected") instead of waiting for their time cap. hesd
reconnects with a doubling, jittered back-off, and links come back on demand. Without a shared
group the MQTT session is persistent (``clean_session = false``): QoS 1 uplink messages
published while hesd is away wait at the broker and arrive when it reconnects. In a shared group
it is clean, so that the group's other members take over the share of one that is down.

Each link queues at most ``mqtt.max_queue`` messages for its session; past that the oldest is
dropped, counted and logged (``mqtt.queue_overflow``). Backpressure is not an option: every
meter shares the one connection, so a slow meter would stall the whole fleet.

JSON payloads (``payload = "json"`` in a vendor profile's ``[mqtt]``) are not handled yet: the
vendor profile schema that declares them has not landed. Every payload is DLMS.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
import socket
import ssl
import time
from collections import deque
from typing import Final

import aiomqtt
import structlog
from paho.mqtt.reasoncodes import ReasonCode

from adapters.schema import ConfigError
from hesd.config import MqttConfig
from hesd.link import LinkClosed
from hesd.secrets import SecretStore
from hesd.session import SessionError
from hesd.sessions import SessionManager
from hesd.store import MeterRecord, Registry
from protocols.errors import HesdError

__all__ = ["MqttLink", "MqttTransport", "TopicTemplate"]

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


class TopicTemplate:
    """A topic with one ``{meter_id}`` level: the filter to subscribe to, and the key of a topic."""

    __slots__ = ("_after", "_before", "filter", "template")

    def __init__(self, template: str) -> None:
        before, found, after = template.partition("{meter_id}")
        if not found:
            raise ValueError(f"topic template {template!r} has no {{meter_id}}")
        self.template = template
        self._before, self._after = before, after
        self.filter = f"{before}+{after}"

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
    )

    def __init__(self, transport: MqttTransport, key: str, downlink: str, max_queue: int) -> None:
        self._transport = transport
        self.key = key
        self.meter_id = ""  # known once the registry has named the meter
        self.downlink = downlink
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
        if self._closed:
            raise LinkClosed(f"{self.peer}: {self._reason}")
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
    ) -> None:
        if config.broker is None:
            raise ValueError("MqttTransport without mqtt.broker")
        self._config = config
        self._host, self._port = config.broker
        self._manager = manager
        self._registry = registry
        self._password = _password(config, secrets)
        self._tls = _tls_context(config, source) if config.tls else None
        self.client_id = config.client_id or _default_client_id()
        self._uplink = TopicTemplate(config.uplink_topic)
        self._downlink = TopicTemplate(config.downlink_topic)
        group = config.shared_group
        self.subscription = (
            f"$share/{group}/{self._uplink.filter}" if group else self._uplink.filter
        )
        # Alone, a persistent session keeps QoS 1 messages at the broker while hesd restarts. In
        # a shared group it would strand this member's share there while it is down (Mosquitto 2
        # still deals messages to offline members); a clean session lets the others take them.
        self.clean_session = bool(group)
        self._links: dict[str, MqttLink] = {}
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
        return len(self._links)

    async def wait_connected(self) -> None:
        """Return once connected and subscribed."""
        await self._connected.wait()

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
                async with self._new_client() as client:
                    up_since = time.monotonic()
                    await self._subscribe(client)
                    self._client = client
                    self.connections += 1
                    self._connected.set()
                    log.info(
                        "mqtt.connected",
                        broker=self.broker,
                        client_id=self.client_id,
                        subscription=self.subscription,
                    )
                    async for message in client.messages:
                        self._on_message(message)
            except aiomqtt.MqttError as exc:
                reason = str(exc) or type(exc).__name__
            finally:
                self._down(reason)
            if up_since is not None and time.monotonic() - up_since >= STABLE_AFTER:
                failures = 0
            failures += 1
            delay = min(
                self._config.backoff_max, self._config.backoff_initial * 2 ** min(failures - 1, 30)
            )
            delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not cryptography
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

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe(self.subscription, qos=QOS)
        for code in granted:
            failed = code.is_failure if isinstance(code, ReasonCode) else code >= 0x80
            if failed:  # MQTT 3.1.1 §3.9.3: 0x80 is a refused subscription
                raise aiomqtt.MqttError(f"the broker refused the subscription {self.subscription}")

    def _down(self, reason: str) -> None:
        was_up = self._client is not None
        self._client = None
        self._connected.clear()
        for link in list(self._links.values()):
            link.shut(f"broker connection lost: {reason}" if was_up else reason)

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

    # -- routing -------------------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        self.received += 1
        topic = message.topic.value
        payload = message.payload
        key = self._uplink.key(topic)
        if key is None:
            self._drop_unknown(topic, "not an uplink topic")
            return
        if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_PAYLOAD:
            self.dropped += 1
            size = len(payload) if isinstance(payload, bytes | bytearray) else 0
            log.warning("mqtt.payload_refused", key=key, bytes=size, max_bytes=MAX_PAYLOAD)
            return
        link = self._links.get(key)
        if link is not None:
            link.deliver(bytes(payload))
            return
        known = self._unknown.get(key)
        if known is not None and time.monotonic() - known.decided_at < NEGATIVE_TTL:
            self._drop_unknown(key, "not an mqtt meter in the registry")
            return
        if self._pending >= MAX_PENDING:
            self.dropped += 1
            log.warning("mqtt.overloaded", key=key, pending=self._pending)
            return
        link = self._open(key, None)
        link.deliver(bytes(payload))

    def _open(self, key: str, meter_id: str | None) -> MqttLink:
        """A new link for ``key``, attached by a task once its meter is known."""
        link = MqttLink(self, key, self._downlink.topic(key), self._config.max_queue)
        self._links[key] = link
        self._pending += 1
        task = asyncio.get_running_loop().create_task(
            self._attach(link, meter_id), name=f"mqtt:attach:{key}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return link

    async def _attach(self, link: MqttLink, meter_id: str | None) -> None:
        try:
            if meter_id is None:
                meter_id = await self._lookup(link.key)
                if meter_id is None:
                    self._unknown_key(link.key, link.queued)
                    link.shut("not an mqtt meter in the registry")
                    return
            link.meter_id = meter_id
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

    def forget(self, link: MqttLink) -> None:
        """A link closed: route its key afresh."""
        if self._links.get(link.key) is link:
            del self._links[link.key]

    async def _lookup(self, key: str) -> str | None:
        """The MQTT meter whose topic key is ``key``: its address, or its id when that is empty."""
        candidate = self._index.get(key, key)
        record = await self._registry.get(candidate)
        if _has_key(record, key):
            assert record is not None
            return record.meter_id
        if time.monotonic() - self._index_at >= INDEX_REFRESH:
            await self._refresh_index()
            fresh = self._index.get(key)
            if fresh is not None and fresh != candidate:
                record = await self._registry.get(fresh)
                if _has_key(record, key):
                    assert record is not None
                    return record.meter_id
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
        after = ""
        while True:
            page = await self._registry.select(after=after, limit=PAGE)
            for record in page:
                if record.entry.transport == "mqtt":
                    index[record.entry.address or record.meter_id] = record.meter_id
            if len(page) < PAGE:
                break
            after = page[-1].meter_id
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
            entry = self._unknown[key] = _Unknown(
                -math.inf
            )  # for the log only, not a lookup result
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
        key = record.entry.address or record.meter_id
        link = self._links.get(key)
        if link is None:
            link = self._open(key, record.meter_id)
        await asyncio.shield(link.ready)


def _has_key(record: MeterRecord | None, key: str) -> bool:
    if record is None or record.entry.transport != "mqtt":
        return False
    return (record.entry.address or record.meter_id) == key


def _default_client_id() -> str:
    host = re.sub(r"[^A-Za-z0-9_.:-]", "-", socket.gethostname())[:100]
    return f"hesd-{host}"


def _password(config: MqttConfig, secrets: SecretStore) -> bytes | None:
    name = config.password_token
    if not name:
        return None
    token = secrets.tokens.get(name)
    if token is None:
        raise ConfigError(
            secrets.source or "<no secrets file>",
            "tokens",
            f'no token "{name}" (named by mqtt.password_token)',
        )
    return token.reveal()


def _tls_context(config: MqttConfig, source: str) -> ssl.SSLContext:
    """The client side of TLS to the broker; a file that does not load is a config error."""
    try:
        context = ssl.create_default_context(
            cafile=None if config.ca_file is None else str(config.ca_file)
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(source, "mqtt.ca_file", f"cannot load CA certificates: {exc}") from None
    if config.cert_file is not None:
        try:
            context.load_cert_chain(
                str(config.cert_file), None if config.key_file is None else str(config.key_file)
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                source, "mqtt.cert_file", f"cannot load the client certificate and key: {exc}"
            ) from None
    if not config.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
