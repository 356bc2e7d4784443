"""MQTT through real Mosquitto brokers: reads, pushes, unknown meters, shared subscriptions,
reconnects with back-off, TLS with a password, and the [mqtt] configuration."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import gc
import ipaddress
import json
import os
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from adapters.profile import load_profile
from adapters.schema import ConfigError
from hesd.config import MqttConfig, StoreConfig, load_config
from hesd.link import LinkClosed
from hesd.secrets import Secret, SecretStore
from hesd.session import MeterSession, SessionError
from hesd.sessions import SessionManager
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from hesd.transports.mqtt import MqttLink, MqttTransport, TopicTemplate
from hesd.transports.mqtt_json import JsonRecord
from protocols.dlms import apdu as x
from protocols.dlms.wrapper import encode_wrapper
from tests.conftest import (
    REPO,
    Broker,
    HesdProcess,
    _mosquitto_binary,
    free_port,
    wait_for,
    write_config,
)
from tests.dlms_meter import ENERGY, HES_TITLE, KEYSET, meter, run_meter

pytestmark = pytest.mark.integration

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")
Notification = tuple[str, x.DataNotification | x.EventNotification]


def push(*values: object) -> bytes:
    return x.DataNotification(1, None, tuple(values)).encode()  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Wait for state owned by the code under test (a broker, a transport) to be reached."""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - the state lives in the code under test
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {within} s waiting for {what}")


def mqtt_config(broker: Broker, prefix: str, **changes: Any) -> MqttConfig:
    """The embedded [mqtt] defaults, on ``broker``, with topics under ``prefix``."""
    settings: dict[str, Any] = {
        "broker": (broker.host, broker.port),
        "client_id": f"{prefix}-hesd",
        "uplink_topic": f"{prefix}/meters/{{meter_id}}/up",
        "downlink_topic": f"{prefix}/meters/{{meter_id}}/down",
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    return dataclasses.replace(load_config(None).mqtt, **(settings | changes))


@dataclasses.dataclass
class Hes:
    broker: Broker
    prefix: str  # topics of this test only: the broker is shared by the whole session
    registry: Registry
    manager: SessionManager
    transport: MqttTransport
    notifications: list[Notification]
    pushed: asyncio.Queue[Notification]

    def transport_for(
        self, config: MqttConfig, secrets: SecretStore | None = None
    ) -> MqttTransport:
        return MqttTransport(
            config,
            self.manager,
            self.registry,
            secrets=secrets or SecretStore(None),
            source="hesd.toml",
        )


@pytest.fixture
async def hes(tmp_path: Path, mosquitto: Broker) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    await registry.upsert(
        [
            MeterEntry("M1", "is15959", "mqtt", keyset="lot-a"),
            MeterEntry("M2", "is15959", "mqtt", address="key-2", keyset="lot-a"),
            MeterEntry("T1", "is15959", "tcp-in", keyset="lot-a"),
        ]
    )
    notifications: list[Notification] = []
    pushed: asyncio.Queue[Notification] = asyncio.Queue()

    def on_notification(
        meter_id: str, notification: x.DataNotification | x.EventNotification, now: float
    ) -> None:
        notifications.append((meter_id, notification))
        pushed.put_nowait((meter_id, notification))

    manager = SessionManager(
        registry=registry,
        counters=InvocationCounters(store),
        vendors={"is15959": PROFILE},
        secrets=SecretStore(None, {"lot-a": KEYSET}),
        client_system_title=HES_TITLE,
        max_requests=10,
        request_timeout=5,
        on_notification=on_notification,
    )
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    transport = MqttTransport(
        mqtt_config(mosquitto, prefix),
        manager,
        registry,
        secrets=SecretStore(None),
        source="hesd.toml",
    )
    manager.providers["mqtt"] = transport
    transport.start()
    async with asyncio.timeout(5):
        await transport.wait_connected()
    yield Hes(mosquitto, prefix, registry, manager, transport, notifications, pushed)
    await manager.close(grace=1)
    await transport.close()
    await store.close()
    await writer


# -- the meter's side: its own client on the broker ------------------------------------------


class MeterOnBroker:
    """A meter's end of MQTT (a ``Link``): requests arrive on its downlink, answers go up."""

    def __init__(self, client: aiomqtt.Client, prefix: str, key: str) -> None:
        self._client = client
        self.up = f"{prefix}/meters/{key}/up"
        self.down = f"{prefix}/meters/{key}/down"

    @property
    def peer(self) -> str:
        return "hesd"

    async def send(self, data: bytes) -> None:
        await self._client.publish(self.up, data, qos=1)

    async def receive(self) -> bytes:
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            return message.payload
        raise LinkClosed("meter client disconnected")

    async def close(self) -> None:
        return None


@contextlib.asynccontextmanager
async def meter_on_broker(broker: Broker, prefix: str, key: str) -> AsyncIterator[MeterOnBroker]:
    """Our scripted DLMS meter (tests/dlms_meter.py) on the broker, answering on ``key``."""
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{prefix}-{key}") as client:
        link = MeterOnBroker(client, prefix, key)
        await client.subscribe(link.down, qos=1)
        task = asyncio.create_task(run_meter(link, meter()), name=f"sim:mqtt:{key}")
        try:
            yield link
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def publisher(broker: Broker, prefix: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(broker.host, broker.port, identifier=f"{prefix}-pub") as client:
        yield client


async def get_energy(session: MeterSession) -> object:
    return await session.get(ENERGY)


# -- topics and links (no broker traffic) ------------------------------------------------------


def test_topic_template() -> None:
    up = TopicTemplate("site/7/meters/{meter_id}/up")
    assert up.filter == "site/7/meters/+/up"
    assert up.key("site/7/meters/MTR-1/up") == "MTR-1"
    assert up.topic("MTR-1") == "site/7/meters/MTR-1/up"
    for topic in ("site/7/meters//up", "site/7/meters/a/b/up", "site/7/meters/a b/up", "x/up"):
        assert up.key(topic) is None, topic
    assert TopicTemplate("{meter_id}").key("M1") == "M1"
    part = TopicTemplate("dcu/m-{meter_id}/data")  # vendor profiles may put it inside a level
    assert part.filter == "dcu/+/data"
    assert part.key("dcu/m-7/data") == "7"
    assert part.key("dcu/x-7/data") is None
    assert part.topic("7") == "dcu/m-7/data"
    assert TopicTemplate("{meter_id}-up").filter == "+"


async def test_link_queue_drops_the_oldest_and_says_so(hes: Hes) -> None:
    link = MqttLink(hes.transport, "Q1", None, max_queue=2)
    with capture_logs() as logs:
        for payload in (b"1", b"2", b"3", b"4", b"5"):
            link.deliver(payload)
    assert (link.queued, link.dropped) == (2, 3)
    [entry] = [e for e in logs if e["event"] == "mqtt.queue_overflow"]  # once a minute, not 3x
    assert entry["meter"] == "Q1"
    assert await link.receive() == b"45"
    link.shut("test over")
    with pytest.raises(LinkClosed, match="mqtt:Q1: test over"):
        await link.receive()
    with pytest.raises(LinkClosed):
        await link.send(b"x")


# -- through the broker ---------------------------------------------------------------------------


async def test_read_a_register(hes: Hes) -> None:
    async with meter_on_broker(hes.broker, hes.prefix, "M1"):
        assert await hes.manager.request("M1", get_energy) == 4242
        assert hes.manager.online("M1")
        assert await hes.manager.request("M1", get_energy) == 4242  # the same association


async def test_topic_key_from_the_inventory_address(hes: Hes) -> None:
    async with meter_on_broker(hes.broker, hes.prefix, "key-2"):
        assert await hes.manager.request("M2", get_energy) == 4242
    assert hes.transport.links == 1


async def test_push_from_a_known_meter_attaches_its_session(hes: Hes) -> None:
    async with publisher(hes.broker, hes.prefix) as pub:
        with capture_logs() as logs:
            await pub.publish(
                f"{hes.prefix}/meters/M1/up", encode_wrapper(1, 102, push("SN0001")), qos=1
            )
            async with asyncio.timeout(5):
                meter_id, notification = await hes.pushed.get()
    assert meter_id == "M1"
    assert isinstance(notification, x.DataNotification)
    assert notification.body == ("SN0001",)
    assert hes.manager.online("M1")
    assert any(e["event"] == "session.online" and e["peer"] == "mqtt:M1" for e in logs)


async def test_unknown_meters_are_dropped_and_logged(hes: Hes) -> None:
    message = encode_wrapper(1, 102, push("SN9999"))
    with capture_logs() as logs:
        async with publisher(hes.broker, hes.prefix) as pub:
            for key in ("NOPE", "NOPE", "T1", "bad key"):  # T1 is a tcp-in meter
                await pub.publish(f"{hes.prefix}/meters/{key}/up", message, qos=1)
            await until(lambda: hes.transport.unknown == 4, "4 messages dropped")
    unknown = [e for e in logs if e["event"] == "mqtt.unknown_meter"]
    assert sorted(e["key"] for e in unknown) == sorted(
        ["NOPE", "T1", f"{hes.prefix}/meters/bad key/up"]
    )  # NOPE's second message is counted, not logged again
    assert sum(e["dropped"] for e in unknown) == 4
    assert hes.notifications == []
    assert hes.manager.active == 0
    assert hes.transport.links == 0


async def test_shared_subscription_splits_the_fleet(hes: Hes) -> None:
    group = f"g{hes.prefix}"
    members = [
        hes.transport_for(mqtt_config(hes.broker, hes.prefix, shared_group=group, client_id=name))
        for name in (f"{hes.prefix}-a", f"{hes.prefix}-b")
    ]
    a, b = members
    assert a.subscriptions == (f"$share/{group}/{hes.prefix}/meters/+/up",)
    assert a.clean_session
    for member in members:
        member.start()
    async with asyncio.timeout(5):
        for member in members:
            await member.wait_connected()
    async with publisher(hes.broker, hes.prefix) as pub:
        for i in range(20):
            await pub.publish(f"{hes.prefix}/meters/U{i}/up", b"\x00\x01", qos=1)
        await until(lambda: a.received + b.received >= 20, "20 messages at the group")
        assert a.received + b.received == 20  # each message reached exactly one member
        assert a.received > 0  # and both got some
        assert b.received > 0
        assert hes.transport.received == 20  # a plain subscription still gets every message

        await a.close()  # a member leaves: the others take its share, nothing waits for it
        # a fence: once the broker has acknowledged this, it has read a's DISCONNECT (sent
        # earlier, on another socket); a message it deals to a before that would be lost
        await pub.publish(f"{hes.prefix}/fence", b"", qos=1)
        before = b.received
        for i in range(10):
            await pub.publish(f"{hes.prefix}/meters/V{i}/up", b"\x00\x01", qos=1)
        await until(lambda: b.received == before + 10, "10 messages at the remaining member")
    await b.close()


async def test_json_concentrator_records(hes: Hes) -> None:
    """A vendor whose profile says payload = "json": records mapped, bad ones refused."""
    meghdoot = load_profile(REPO / "conf" / "vendors" / "meghdoot.toml")
    assert meghdoot.mqtt is not None
    topics = {  # this test's own topics, not the shipped ones: the broker is shared
        "uplink_topic": f"{hes.prefix}/dcu/{{meter_id}}/data",
        "downlink_topic": f"{hes.prefix}/dcu/{{meter_id}}/cmd",
    }
    meghdoot = dataclasses.replace(meghdoot, mqtt=dataclasses.replace(meghdoot.mqtt, **topics))
    await hes.registry.upsert(
        [
            MeterEntry("J1", "meghdoot", "mqtt", serial_number="SNJ1"),
            MeterEntry("J2", "meghdoot", "mqtt", address="dcu-7"),
        ]
    )
    records: asyncio.Queue[tuple[str, JsonRecord]] = asyncio.Queue()
    hes.transport.on_json = lambda meter_id, record, now: records.put_nowait((meter_id, record))
    with capture_logs() as logs:
        hes.manager.reload({"is15959": PROFILE, "meghdoot": meghdoot}, hes.manager.secrets)
        hes.transport.reload()  # what SIGHUP does: follow the new vendor's topic
        await until(lambda: bool(events(logs, "mqtt.subscribed")), "the new subscription")
        assert events(logs, "mqtt.subscribed")[0]["subscriptions"] == [f"{hes.prefix}/dcu/+/data"]
        good = {"meterSerial": "SNJ1", "readingTime": "2025-01-02T03:04:05+05:30"}
        bad = [
            b"not json",
            json.dumps({**good, "meterSerial": "SNJ9", "vR": 230}).encode(),  # another meter
            json.dumps({**good, "readingTime": "2025-01-02T03:04:05", "vR": 230}).encode(),
            json.dumps({**good, "kwhImport": "12.5"}).encode(),
            json.dumps(good).encode(),  # no value at all
        ]
        async with publisher(hes.broker, hes.prefix) as pub:
            uplink = f"{hes.prefix}/dcu/J1/data"
            await pub.publish(uplink, json.dumps({**good, "kwhImport": 12.5, "vR": 230.1}), qos=1)
            for message in bad:
                await pub.publish(uplink, message, qos=1)
            second = {"meterSerial": "dcu-7", "readingTime": "2025-01-02T00:00:00Z", "hz": 50}
            await pub.publish(f"{hes.prefix}/dcu/dcu-7/data", json.dumps(second), qos=1)
            # a DLMS topic for a JSON meter, and a JSON topic for a DLMS meter: not theirs
            await pub.publish(f"{hes.prefix}/meters/J1/up", b"\x00", qos=1)
            await pub.publish(f"{hes.prefix}/dcu/M1/data", json.dumps(good), qos=1)
            async with asyncio.timeout(5):
                first = await records.get()
                other = await records.get()
            await until(lambda: hes.transport.json_refused == 5, "5 refusals")
            await until(lambda: hes.transport.unknown == 2, "2 messages on the wrong topics")
    meter_id, record = first
    assert meter_id == "J1"
    assert record.timestamp == datetime.datetime(2025, 1, 1, 21, 34, 5, tzinfo=datetime.UTC)
    assert record.as_dict() == {
        "energy_active_import": Decimal(12500),
        "voltage_l1": Decimal("230.1"),
    }
    assert other[0] == "J2"
    assert other[1].as_dict() == {"frequency": Decimal(50)}
    reasons = [e["reason"] for e in events(logs, "mqtt.json_refused")]
    assert reasons[0].startswith("not JSON")
    assert "names meter 'SNJ9', not J1" in reasons[1]
    assert "has no UTC offset" in reasons[2]
    assert reasons[3] == "field kwhImport: expected a number"
    assert reasons[4].startswith("no value")
    assert hes.transport.json_records == 2
    assert hes.transport.links == 0  # JSON meters have no DLMS session
    with pytest.raises(SessionError, match="meter J1: reports JSON records over MQTT"):
        await hes.manager.request("J1", get_energy)


# -- reconnecting ----------------------------------------------------------------------------------


@contextlib.contextmanager
def private_broker(
    workdir: Path, port: int, extra: str = "allow_anonymous true\n"
) -> Iterator[subprocess.Popen[bytes]]:
    """A Mosquitto of this test's own (the session's one cannot be stopped)."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    # run as root (CI containers), mosquitto drops to user "mosquitto", which cannot read files
    # under pytest's private tmp_path; "user root" keeps it as it is (no effect for others)
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\npersistence false\n{user}{extra}")
    log = workdir / "mosquitto.log"
    with log.open("a") as out:
        proc = subprocess.Popen(
            [_mosquitto_binary(), "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )

    def accepting() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(accepting, 10, "the private mosquitto to accept connections")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


async def test_broker_outage_closes_links_and_reconnects_with_backoff(
    hes: Hes, tmp_path: Path
) -> None:
    port = free_port()
    broker = Broker("127.0.0.1", port)
    config = mqtt_config(broker, hes.prefix, client_id=f"{hes.prefix}-private")
    transport = hes.transport_for(config)
    hes.manager.providers["mqtt"] = transport
    record = await hes.registry.get("M1")
    assert record is not None
    with capture_logs() as logs:
        with private_broker(tmp_path / "broker", port) as proc:
            transport.start()
            async with asyncio.timeout(5):
                await transport.wait_connected()
            await transport.connect(record)  # what a request does for an offline MQTT meter
            await until(lambda: hes.manager.online("M1"), "M1 online")
            proc.send_signal(signal.SIGTERM)
            await until(lambda: not hes.manager.online("M1"), "M1 offline with the broker gone")
            with pytest.raises(SessionError, match=r"meter M1: MQTT broker .* not connected"):
                await hes.manager.request("M1", get_energy)
            await until(lambda: len(events(logs, "mqtt.connect_failed")) >= 3, "3 retries")
        with private_broker(tmp_path / "broker", port):
            async with asyncio.timeout(5):
                await transport.wait_connected()
            assert transport.connections == 2
            async with meter_on_broker(broker, hes.prefix, "M1"):
                assert await hes.manager.request("M1", get_energy) == 4242
            await transport.close()

    [lost] = events(logs, "mqtt.disconnected")
    assert lost["failures"] == 1  # a connection that lasted under 10 s does not reset it
    assert any(
        e["event"] == "session.offline" and "broker connection lost" in e["reason"] for e in logs
    )
    for entry in [lost, *events(logs, "mqtt.connect_failed")]:
        cap = min(config.backoff_max, config.backoff_initial * 2 ** (entry["failures"] - 1))
        assert cap / 2 - 0.001 <= entry["retry_in"] <= cap + 0.001, entry  # jitter: 50..100 %
    assert [e["failures"] for e in events(logs, "mqtt.connect_failed")][:3] == [2, 3, 4]
    assert len(events(logs, "mqtt.connected")) == 2


# -- TLS and a password --------------------------------------------------------------------------


def _certificates(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1, signed by it: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def build(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hesd test CA")])
    ca = build("hesd test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = build("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    paths = workdir / "ca.pem", workdir / "server.pem", workdir / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _password_file(path: Path, user: str, password: str) -> Path:
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), user, password],
        check=True,
        capture_output=True,
    )
    return path


@dataclasses.dataclass
class TlsBroker:
    broker: Broker
    ca: Path
    extra: str  # mosquitto.conf lines: TLS listener, no anonymous clients, a password file


@pytest.fixture
def tls_broker(tmp_path: Path) -> TlsBroker:
    workdir = tmp_path / "tls"
    workdir.mkdir()
    ca, cert, key = _certificates(workdir)
    passwords = _password_file(workdir / "passwords", "hesd", "s3cret")
    extra = (
        f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
        f"allow_anonymous false\npassword_file {passwords}\n"
    )
    return TlsBroker(Broker("127.0.0.1", free_port()), ca, extra)


TLS_LOGIN = {"tls": True, "username": "hesd", "password_token": "broker"}


async def test_tls_and_password(hes: Hes, tls_broker: TlsBroker, tmp_path: Path) -> None:
    secrets = SecretStore("secrets.toml", tokens={"broker": Secret(b"s3cret")})
    broker, ca = tls_broker.broker, tls_broker.ca
    good = hes.transport_for(
        mqtt_config(broker, hes.prefix, ca_file=ca, client_id=f"{hes.prefix}-good", **TLS_LOGIN),
        secrets,
    )
    wrong_password = hes.transport_for(
        mqtt_config(broker, hes.prefix, ca_file=ca, client_id=f"{hes.prefix}-bad", **TLS_LOGIN),
        SecretStore("secrets.toml", tokens={"broker": Secret(b"guess")}),
    )
    with capture_logs() as logs, private_broker(tmp_path / "tls", broker.port, tls_broker.extra):
        good.start()
        wrong_password.start()
        async with asyncio.timeout(5):
            await good.wait_connected()
        await until(lambda: len(events(logs, "mqtt.connect_failed")) >= 1, "a refusal")
        await good.close()
        await wrong_password.close()
    [refused, *_] = events(logs, "mqtt.connect_failed")
    assert "not authori" in refused["reason"].lower(), refused
    assert good.connections == 1
    assert wrong_password.connections == 0


# paho-mqtt leaves the SSLSocket of a failed TLS handshake unclosed (Client._ssl_wrap_socket);
# the garbage collector closes it with a ResourceWarning (also seen in HABApp issue #88)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_tls_refuses_an_unknown_broker_certificate(
    hes: Hes, tls_broker: TlsBroker, tmp_path: Path
) -> None:
    secrets = SecretStore("secrets.toml", tokens={"broker": Secret(b"s3cret")})
    broker = tls_broker.broker
    unknown_ca = hes.transport_for(  # the system's CAs do not know our test CA
        mqtt_config(broker, hes.prefix, client_id=f"{hes.prefix}-ca", **TLS_LOGIN), secrets
    )
    with capture_logs() as logs, private_broker(tmp_path / "tls", broker.port, tls_broker.extra):
        unknown_ca.start()
        await until(lambda: len(events(logs, "mqtt.connect_failed")) >= 1, "a refusal")
        await unknown_ca.close()
    gc.collect()  # the leaked socket's warning, here rather than in some later test
    [refused, *_] = events(logs, "mqtt.connect_failed")
    assert "CERTIFICATE_VERIFY_FAILED" in refused["reason"], refused
    assert unknown_ca.connections == 0


async def test_stopping_mid_connect_closes_the_socket(hes: Hes) -> None:
    """A broker that accepts TCP but never answers CONNECT; hesd stops meanwhile (SIGTERM
    during a reconnect): the half-open connection is closed then, not left to the GC."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    mute = Broker("127.0.0.1", port)
    transport = hes.transport_for(mqtt_config(mute, hes.prefix, client_id=f"{hes.prefix}-mute"))
    transport.start()
    async with server:
        async with asyncio.timeout(5):
            reader, writer = await accepted.get()
            connect = await reader.read(1)
        assert connect == b"\x10"  # MQTT CONNECT, never answered
        async with asyncio.timeout(5):
            await transport.close()
            await reader.read()  # returns at EOF: hesd closed its end
        assert reader.at_eof()
        assert transport.connections == 0
        writer.close()


async def test_password_token_must_be_in_the_secrets_file(hes: Hes) -> None:
    token = "broker"
    config = mqtt_config(hes.broker, hes.prefix, username="hesd", password_token=token)
    with pytest.raises(ConfigError) as info:
        hes.transport_for(config, SecretStore("/etc/hesd/secrets.toml"))
    assert str(info.value) == (
        '/etc/hesd/secrets.toml: tokens: no token "broker" (named by mqtt.password_token)'
    )


async def test_unloadable_ca_file_is_a_config_error(hes: Hes, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^hesd\.toml: mqtt\.ca_file: cannot load CA"):
        hes.transport_for(mqtt_config(hes.broker, hes.prefix, tls=True, ca_file=garbage))


# -- [mqtt] in hesd.toml ------------------------------------------------------------------------


def config_error(tmp_path: Path, body: str) -> str:
    (tmp_path / "hesd.toml").write_text(f"[mqtt]\n{body}\n")
    with pytest.raises(ConfigError) as info:
        load_config(Path("hesd.toml"))
    return str(info.value).replace(str(tmp_path.resolve()), "DIR")


def test_mqtt_config(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("")
    path = tmp_path / "hesd.toml"
    path.write_text(
        '[mqtt]\nbroker = "broker.example.net:8883"\ntls = true\nca_file = "ca.pem"\n'
        'shared_group = "hes"\nusername = "hesd"\npassword_token = "broker"\n'
    )
    config = load_config(path).mqtt
    assert config.broker == ("broker.example.net", 8883)
    assert config.ca_file == tmp_path.resolve() / "ca.pem"
    assert (config.tls, config.tls_verify, config.keepalive) == (True, True, 60)
    assert load_config(None).mqtt.broker is None  # off unless configured


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('broker = "nohost"', 'hesd.toml: mqtt.broker: expected "host:port" (port 1..65535), got'),
        (
            'tls = true\nca_file = "missing.pem"',
            "hesd.toml: mqtt.ca_file: file DIR/missing.pem not found",
        ),
        (
            'tls = true\ncert_file = "client.pem"',
            "hesd.toml: mqtt.cert_file: file DIR/client.pem not found",
        ),
        ('ca_file = "ca.pem"', "hesd.toml: mqtt.ca_file: is only used with mqtt.tls = true"),
        ('tls = true\nkey_file = "hesd.toml"', "hesd.toml: mqtt.key_file: needs mqtt.cert_file"),
        ('password_token = "broker"', "hesd.toml: mqtt.password_token: needs mqtt.username"),
        ('uplink_topic = "meters/up"', "hesd.toml: mqtt.uplink_topic: expected exactly one whole"),
        ('uplink_topic = "m/{meter_id}x/up"', "hesd.toml: mqtt.uplink_topic: expected exactly"),
        ('uplink_topic = "m/+/{meter_id}"', "hesd.toml: mqtt.uplink_topic: expected no wildcards"),
        ('uplink_topic = "$SYS/{meter_id}"', "hesd.toml: mqtt.uplink_topic: expected no wildcards"),
        (
            'downlink_topic = "meters/{meter_id}/up"',
            "hesd.toml: mqtt.downlink_topic: must differ from mqtt.uplink_topic",
        ),
        ('shared_group = "a/b"', "hesd.toml: mqtt.shared_group: expected a group name"),
        ("keepalive = 1", "hesd.toml: mqtt.keepalive: expected integer 5..3600, got 1"),
        ("max_queue = 0", "hesd.toml: mqtt.max_queue: expected integer 1..100000, got 0"),
        ("qos = 2", "hesd.toml: mqtt.qos: unknown key (expected one of: "),
    ],
)
def test_mqtt_config_errors_name_the_key(
    tmp_path: Path, body: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert config_error(tmp_path, body).startswith(message)


# -- the daemon ------------------------------------------------------------------------------------


def test_daemon_reads_a_meter_over_mqtt(
    start_hesd: Callable[..., HesdProcess], tmp_path: Path, mosquitto: Broker
) -> None:
    """hesd run with [mqtt], hesctl read through the broker, clean stop."""
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[keysets.lot-a]\nlls_password = "12345678"\n')
    os.chmod(secrets, 0o600)
    config = write_config(
        tmp_path,
        daemon=f'state_dir = "state"\ndrain_timeout = 5.0\nsecrets_file = "{secrets}"',
        dlms=f'system_title = "{HES_TITLE.hex()}"',
        mqtt=(
            f'broker = "{mosquitto.host}:{mosquitto.port}"\nclient_id = "{prefix}-hesd"\n'
            f'uplink_topic = "{prefix}/meters/{{meter_id}}/up"\n'
            f'downlink_topic = "{prefix}/meters/{{meter_id}}/down"'
        ),
    )
    hesd = start_hesd(config)
    wait_for(lambda: '"mqtt.connected"' in hesd.log_text(), 10, "hesd to connect to the broker")
    inventory = tmp_path / "meters.csv"
    inventory.write_text("meter_id,vendor,transport,keyset\nM1,is15959,mqtt,lot-a\n")
    hesd.hesctl("meters", "import", str(inventory))

    ready, stop = threading.Event(), threading.Event()

    async def simulate() -> None:
        async with meter_on_broker(mosquitto, prefix, "M1"):
            ready.set()
            await asyncio.get_running_loop().run_in_executor(None, stop.wait)

    simulation = threading.Thread(target=asyncio.run, args=(simulate(),), name="sim:mqtt-meter")
    simulation.start()
    try:
        assert ready.wait(10)
        result = hesd.hesctl("read", "M1", "1.0.1.8.0.255")
        assert "4242" in result.stdout
    finally:
        stop.set()
        simulation.join(10)
    assert hesd.stop(signal.SIGTERM) == 0
    assert '"daemon.drained"' in hesd.log_text()
