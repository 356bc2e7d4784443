"""Serial buses: one exchange at a time, fair turns, silent meters, lost ports, optical sign-on,
late imports; the [serial] configuration; the daemon opening its ports. (The session's side of
a shared link: test_session_shared.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import termios
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.profile import load_profile
from adapters.schema import ConfigError
from hesd.config import SerialConfig, SerialPortConfig, StoreConfig, load_config
from hesd.link import LinkClosed, SharedLink
from hesd.secrets import SecretStore
from hesd.session import MeterSession, SessionError
from hesd.sessions import SessionManager
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from hesd.transports.serial import BusLink, SerialBus, SerialPorts, SignOnFailed
from tests.conftest import REPO, HesdProcess, wait_for, write_config
from tests.dlms_meter import ENERGY, HES_TITLE, KEYSET
from tests.hdlc_bus import MeterBus, OpticalProbeMeter, SimMeter, open_pty
from tests.test_session import until

pytestmark = pytest.mark.integration

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")
RS485 = SerialPortConfig(
    path="/dev/null",
    kind="rs485",
    baud=9600,
    bytesize=8,
    parity="N",
    stopbits=1,
    inter_request_gap=0.005,
    settle_time=0.05,
    inactivity=120.0,
    software_parity=False,
)


# -- a head end with a registry and a session manager -----------------------------------------


@dataclass
class Hes:
    store: Store
    registry: Registry
    manager: SessionManager
    buses: list[SerialBus] = field(default_factory=list)
    trace: list[tuple[str, str]] = field(default_factory=list)

    def profile(self, **changes: float) -> None:
        self.manager.vendors["is15959"] = dataclasses.replace(PROFILE, **changes)  # type: ignore[arg-type]

    async def meters(self, path: str, physicals: list[int]) -> list[str]:
        ids = [f"M{p}" for p in physicals]
        await self.registry.upsert(
            [
                MeterEntry(i, "is15959", "serial", f"{path}:{p}", keyset="lot-a")
                for i, p in zip(ids, physicals, strict=True)
            ]
        )
        return ids

    async def bus(self, config: SerialPortConfig, **kwargs: object) -> SerialBus:
        bus = SerialBus(config, self.manager, self.registry, **kwargs)  # type: ignore[arg-type]
        bus.trace = lambda what, who: self.trace.append((what, who))
        self.buses.append(bus)
        bus.start()
        return bus

    def events(self, *kinds: str) -> list[tuple[str, str]]:
        return [event for event in self.trace if event[0] in kinds]


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    manager = SessionManager(
        registry=registry,
        counters=InvocationCounters(store),
        vendors={"is15959": dataclasses.replace(PROFILE, response_timeout=2.0)},
        secrets=SecretStore(None, {"lot-a": KEYSET}),
        client_system_title=HES_TITLE,
        max_requests=100,
        request_timeout=10,
    )
    h = Hes(store, registry, manager)
    yield h
    await manager.close(grace=1)
    for bus in h.buses:
        await bus.close()
    await store.close()
    await writer


async def read_energy(session: MeterSession) -> object:
    return await session.get(ENERGY)


def check_one_exchange_at_a_time(trace: list[tuple[str, str]]) -> list[str]:
    """Grants and releases alternate, only the holder writes, and turns go first come first
    served (FIFO over the "wait" events); returns the meters in the order they got the wire."""
    holder: str | None = None
    waiting: list[str] = []
    granted: list[str] = []
    for what, who in trace:
        if what == "wait":
            waiting.append(who)
        elif what == "grant":
            assert holder is None, f"{who} granted while {holder} holds the wire"
            assert waiting, f"{who} granted without waiting"
            assert waiting[0] == who, f"{who} granted before {waiting[0]}"
            waiting.pop(0)
            holder = who
            granted.append(who)
        elif what == "release":
            assert holder == who
            holder = None
        elif what == "write":
            assert holder == who, f"{who} wrote while {holder} holds the wire"
    return granted


# -- RS-485: eight meters on one bus ----------------------------------------------------------


async def test_eight_meters_share_the_bus_one_exchange_at_a_time(hes: Hes) -> None:
    pty = open_pty()
    sims = [SimMeter(16 + i, 1000 + i) for i in range(8)]
    wire = MeterBus(pty, sims)
    try:
        ids = await hes.meters(pty.path, [s.physical for s in sims])
        bus = await hes.bus(dataclasses.replace(RS485, path=pty.path))
        await bus.wait_open()
        await until(lambda: all(hes.manager.online(m) for m in ids))
        assert all(isinstance(link, SharedLink) for link in bus.links.values())

        async def three_reads(session: MeterSession) -> list[object]:
            return [await session.get(ENERGY) for _ in range(3)]

        results = await asyncio.gather(*(hes.manager.request(m, three_reads) for m in ids))
        assert results == [[1000 + i] * 3 for i in range(8)]  # each answer reached its meter

        granted = check_one_exchange_at_a_time(hes.trace)
        assert sorted(granted) == sorted(ids * 3)
        # one exchange per turn: a meter never gets two turns in a row while others wait
        assert all(a != b for a, b in itertools.pairwise(granted))
        # on the wire: each turn is one run of frames to one station, none interleaved
        runs = [p for k, p in enumerate(wire.addressed) if k == 0 or wire.addressed[k - 1] != p]
        assert [f"M{p}" for p in runs] == granted
        assert [s.polls for s in sims] == [5] * 8  # AARQ, the firmware version, 3 GETs each
    finally:
        wire.stop()
        for bus in hes.buses:
            await bus.close()
        pty.close()


async def test_silent_meter_costs_the_others_at_most_its_own_timeout(hes: Hes) -> None:
    hes.profile(response_timeout=0.2)  # HDLC: SNRM + 3 retransmissions = 0.8 s
    pty = open_pty()
    sims = [SimMeter(16 + i, 2000 + i, mute=(i == 0)) for i in range(4)]
    wire = MeterBus(pty, sims)
    try:
        ids = await hes.meters(pty.path, [s.physical for s in sims])
        bus = await hes.bus(dataclasses.replace(RS485, path=pty.path))
        await bus.wait_open()
        await until(lambda: all(hes.manager.online(m) for m in ids))
        loop = asyncio.get_running_loop()
        started = loop.time()
        done: dict[str, float] = {}

        async def timed(meter_id: str) -> object:
            try:
                return await hes.manager.request(meter_id, read_energy)
            finally:
                done[meter_id] = loop.time() - started

        with capture_logs() as logs:
            results = await asyncio.gather(*(timed(m) for m in ids), return_exceptions=True)
        assert isinstance(results[0], SessionError)
        assert "no answer" in str(results[0])
        assert results[1:] == [2001, 2002, 2003]
        silent_turn = done[ids[0]]
        assert 0.8 <= silent_turn < 1.5
        # the others waited for the silent meter's turn (its timeout) and the settle time only
        assert max(done[m] for m in ids[1:]) < silent_turn + RS485.settle_time + 0.5
        assert any(e["event"] == "session.link_gave_up" for e in logs)
        check_one_exchange_at_a_time(hes.trace)
        # the bus and the silent meter's session stay up: the next request tries again
        assert hes.manager.online(ids[0])
        sims[0].mute = False
        assert await hes.manager.request(ids[0], read_energy) == 2000
    finally:
        wire.stop()
        for bus in hes.buses:
            await bus.close()
        pty.close()


async def test_lost_port_takes_its_meters_offline_and_is_retried(hes: Hes) -> None:
    pty = open_pty()
    sims = [SimMeter(16 + i, 3000 + i) for i in range(2)]
    wire = MeterBus(pty, sims)
    ids = await hes.meters(pty.path, [s.physical for s in sims])
    try:
        bus = await hes.bus(
            dataclasses.replace(RS485, path=pty.path), reopen_initial=0.05, reopen_max=0.1
        )
        await bus.wait_open()
        await until(lambda: all(hes.manager.online(m) for m in ids))
        assert await hes.manager.request(ids[1], read_energy) == 3001
        with capture_logs() as logs:
            wire.stop()
            pty.close()  # the adapter is unplugged
            await until(lambda: not bus.is_open and not any(map(hes.manager.online, ids)))
            await until(lambda: len(hes.events("open_failed")) >= 2)
        events = [e["event"] for e in logs]
        assert "serial.port_lost" in events
        assert events.count("session.offline") == 2
        failed = [e for e in logs if e["event"] == "serial.open_failed"]
        assert failed[0]["port"] == pty.path
        assert failed[0]["retry_in"] <= 0.1
        await hes.store.sync()
        for meter_id in ids:
            record = await hes.registry.get(meter_id)
            assert record is not None
            assert record.status == "offline"
        with pytest.raises(SessionError, match="offline"):
            await hes.manager.request(ids[0], read_energy)
    finally:
        wire.stop()
        for bus in hes.buses:
            await bus.close()
        pty.close()


# -- reopening, with a port we control -------------------------------------------------------


class PySerialSettings:
    """Stands in for the pyserial object: records the line settings hesd makes."""

    def __init__(self) -> None:
        object.__setattr__(self, "sets", [])

    def __setattr__(self, name: str, value: object) -> None:
        self.sets.append((name, value))


class FakePort(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self.protocol = protocol
        self.written: list[bytes] = []
        self.serial = PySerialSettings()
        self.on_write: Callable[[bytes], None] | None = None
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        if self.on_write is not None:
            self.on_write(bytes(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.serial if name == "serial" else default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def unplug(self) -> None:
        self._closing = True
        self.protocol.connection_lost(OSError(5, "device reports readiness to read but no data"))


@dataclass
class FakeOpener:
    failures: list[int]  # how many attempts fail before each successful open
    attempts: int = 0
    ports: list[FakePort] = field(default_factory=list)

    async def __call__(
        self, config: SerialPortConfig, factory: Callable[[], asyncio.Protocol]
    ) -> asyncio.Transport:
        self.attempts += 1
        if self.failures and self.failures[0] > 0:
            self.failures[0] -= 1
            raise FileNotFoundError(2, "No such file or directory", config.path)
        if self.failures:
            self.failures.pop(0)
        protocol = factory()
        port = FakePort(protocol)
        self.ports.append(port)
        asyncio.get_running_loop().call_soon(protocol.connection_made, port)
        return port


async def test_reopen_backs_off_with_cap_and_jitter_then_reattaches(hes: Hes) -> None:
    ids = await hes.meters("/dev/ttyFAKE0", [16, 17])
    await hes.meters("/dev/ttyFAKE1", [18])  # another port's meter
    opener = FakeOpener(failures=[4, 2])
    with capture_logs() as logs:
        bus = await hes.bus(
            dataclasses.replace(RS485, path="/dev/ttyFAKE0"),
            reopen_initial=0.01,
            reopen_max=0.03,
            opener=opener,
        )
        await bus.wait_open()
        await until(lambda: all(hes.manager.online(m) for m in ids))
        assert sorted(bus.links) == ids
        assert not hes.manager.online("M18")
        opener.ports[0].unplug()
        await until(lambda: len(opener.ports) == 2 and all(hes.manager.online(m) for m in ids))
    failed = [e for e in logs if e["event"] == "serial.open_failed"]
    assert [e["attempt"] for e in failed] == [1, 2, 3, 4, 2, 3]
    for entry in failed:  # doubling from 0.01, capped at 0.03, jittered down to half
        cap = min(0.03, 0.01 * 2 ** (entry["attempt"] - 1))
        assert cap / 2 - 0.001 <= entry["retry_in"] <= cap + 0.001
    lost = [e for e in logs if e["event"] == "serial.port_lost"]
    assert len(lost) == 1
    assert "device reports readiness" in lost[0]["reason"]
    assert [e["event"] for e in logs].count("serial.port_opened") == 2


async def test_meters_imported_later_are_attached_by_their_first_request(hes: Hes) -> None:
    config = SerialConfig((dataclasses.replace(RS485, path="/dev/ttyFAKE0"),), 0.01, 0.03)
    ports = SerialPorts(config, hes.manager, hes.registry, opener=FakeOpener(failures=[]))
    hes.manager.providers["serial"] = ports
    bus = ports.buses["/dev/ttyFAKE0"]
    hes.buses.append(bus)
    ports.start()
    await bus.wait_open()
    assert bus.links == {}
    [meter_id] = await hes.meters("/dev/ttyFAKE0", [16])  # imported after the port opened

    async def online(session: MeterSession) -> bool:
        return session.online

    assert await hes.manager.request(meter_id, online)
    assert list(bus.links) == [meter_id]
    [elsewhere] = await hes.meters("/dev/ttyUSB9", [17])
    with pytest.raises(SessionError, match=r"/dev/ttyUSB9 is not one of the serial\.ports"):
        await hes.manager.request(elsewhere, online)


async def test_wire_turns_unscheduled_sends_and_cancelled_waiters(hes: Hes) -> None:
    await hes.meters("/dev/ttyFAKE0", [16])
    opener = FakeOpener(failures=[])
    bus = await hes.bus(dataclasses.replace(RS485, path="/dev/ttyFAKE0"), opener=opener)
    await bus.wait_open()
    a, b, c = BusLink(bus, "A"), BusLink(bus, "B"), BusLink(bus, "C")
    async with a.exclusive():
        sending = asyncio.create_task(b.send(b"b"), name="test:b-send")
        waiting = asyncio.create_task(c.exclusive().__aenter__(), name="test:c-wait")
        await until(lambda: len(hes.events("wait")) == 3)
        waiting.cancel()  # leaves the queue
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        await a.send(b"a")
        assert not sending.done()
    await sending
    assert opener.ports[0].written == [b"a", b"b"]
    assert hes.events("grant", "release") == [
        ("grant", "A"),
        ("release", "A"),
        ("grant", "B"),
        ("release", "B"),
    ]
    # bytes arriving belong to the meter that last had the wire
    bus.data_received(b"late")
    assert await b.receive() == b"late"
    await b.close()
    with pytest.raises(LinkClosed):
        await b.send(b"x")
    with pytest.raises(LinkClosed):
        await b.receive()


# -- optical ----------------------------------------------------------------------------------


async def test_optical_signs_on_before_each_hdlc_connection(hes: Hes) -> None:
    hes.profile(response_timeout=3.0)
    pty = open_pty()
    # a pty takes 8N1 only: the 7E1 sign-on's parity bit is made in software on both sides
    probe = OpticalProbeMeter(
        SimMeter(17, 4242), pty=pty, baud_char="6", software_parity=True
    )  # offers 19200
    try:
        [meter_id] = await hes.meters(pty.path, [17])
        optical = dataclasses.replace(
            RS485, path=pty.path, kind="optical", baud=9600, software_parity=True
        )
        bus = await hes.bus(optical)
        await bus.wait_open()
        await until(lambda: hes.manager.online(meter_id))
        with capture_logs() as logs:
            assert await hes.manager.request(meter_id, read_energy) == 4242
        [signed] = [e for e in logs if e["event"] == "serial.signed_on"]
        assert signed["identification"] == "/ISk6\\2MT382"
        assert signed["baud"] == 9600  # capped by the port's baud
        assert [d for w, d in hes.trace if w == "line"] == ["300 8N1", "9600 8N1"]
        assert probe.lines == ["9600 8N1"]
        speed, size, parity = pty.line()
        assert (speed, size, parity) == (termios.B9600, termios.CS8, 0)
        # a second read on the same HDLC connection: no new sign-on
        assert await hes.manager.request(meter_id, read_energy) == 4242
        assert probe.sign_ons == 1

        # the session ends (DISC): the meter goes back to 300 Bd, the bus attaches a new link,
        # and the next HDLC connection signs on again
        old = bus.links[meter_id]
        session, _ = await hes.manager.session(meter_id)
        await session.close()
        await until(lambda: bus.links.get(meter_id) not in (None, old))
        await until(lambda: hes.manager.online(meter_id) and not probe.hdlc)
        assert await hes.manager.request(meter_id, read_energy) == 4242
        assert probe.sign_ons == 2
        lines = [d for w, d in hes.trace if w == "line"]
        assert lines == ["300 8N1", "9600 8N1", "300 8N1", "9600 8N1"]
    finally:
        probe.stop()
        for bus in hes.buses:
            await bus.close()
        pty.close()


async def test_optical_7e1_sign_on_switches_the_live_pyserial_port(hes: Hes) -> None:
    [meter_id] = await hes.meters("/dev/ttyOPT", [17])
    opener = FakeOpener(failures=[])
    bus = await hes.bus(
        dataclasses.replace(RS485, path="/dev/ttyOPT", kind="optical", baud=4800), opener=opener
    )
    await bus.wait_open()
    port = opener.ports[0]
    probe = OpticalProbeMeter(SimMeter(17, 77), write=bus.data_received, baud_char="5")
    port.on_write = probe.feed
    try:
        await until(lambda: hes.manager.online(meter_id))
        assert await hes.manager.request(meter_id, read_energy) == 77
        assert port.serial.sets == [  # in this order: the sign-on's line, then mode E's
            ("baudrate", 300),
            ("bytesize", 7),
            ("parity", "E"),
            ("stopbits", 1),
            ("baudrate", 4800),  # the meter offered 9600; the port caps it
            ("bytesize", 8),
            ("parity", "N"),
            ("stopbits", 1),
        ]
        assert port.written[0] == b"/?!\r\n"
        assert port.written[1] == b"\x06242\r\n"  # option select: ACK, V=2, Z=4 (4800), Y=2
        assert probe.lines == ["4800 8N1"]
    finally:
        probe.stop()


async def test_optical_meter_that_does_not_sign_on(hes: Hes) -> None:
    pty = open_pty()  # nobody answers on the far side
    try:
        [meter_id] = await hes.meters(pty.path, [17])
        optical = dataclasses.replace(RS485, path=pty.path, kind="optical", software_parity=True)
        bus = await hes.bus(optical)
        await bus.wait_open()
        await until(lambda: hes.manager.online(meter_id))
        first = bus.links[meter_id]
        with pytest.raises(SignOnFailed, match=r"no identification within 1\.5s"):
            await hes.manager.request(meter_id, read_energy)
        # the link is ended and a fresh one attached, ready for the next try
        await until(lambda: bus.links.get(meter_id) not in (None, first))
        await until(lambda: hes.manager.online(meter_id))
        assert [d for w, d in hes.trace if w == "line"] == ["300 8N1"]
    finally:
        for bus in hes.buses:
            await bus.close()
        pty.close()


# -- configuration ---------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "hesd.toml"
    path.write_text(text)
    return load_config(path)


def test_serial_config(tmp_path: Path) -> None:
    config = load_config(
        write_config(
            tmp_path,
            serial='reopen_max = 30\n[[serial.ports]]\npath = "/dev/ttyUSB0"\n'
            '[[serial.ports]]\npath = "/dev/ttyUSB1"\nkind = "optical"\nbaud = 4800',
        )
    )
    rs485, optical = config.serial.ports
    assert rs485 == dataclasses.replace(
        RS485, path="/dev/ttyUSB0", inter_request_gap=0.05, settle_time=0.5
    )
    assert (optical.kind, optical.baud, optical.bytesize, optical.parity) == (
        "optical",
        4800,
        8,
        "N",
    )
    assert config.serial.reopen_max == 30.0
    assert load_config(None).serial.ports == ()


@pytest.mark.parametrize(
    ("port", "message"),
    [
        ('path = "ttyUSB0"', "serial.ports[0].path: expected an absolute device path"),
        ("", "serial.ports[0].path: missing"),
        ('path = "/dev/ttyUSB0"\nbaud = 1234', "serial.ports[0].baud: expected one of 300, 600"),
        (
            'path = "/dev/ttyUSB0"\nkind = "optical"\nbaud = 38400',
            "serial.ports[0].baud: expected one of 300, 600, 1200, 2400, 4800, 9600, 19200,",
        ),
        (
            'path = "/dev/ttyUSB0"\nkind = "optical"\nparity = "E"',
            "serial.ports[0].parity: not for optical ports (7E1 to sign on, then 8N1)",
        ),
        ('path = "/dev/ttyUSB0"\ninactivity = 60', "serial.ports[0].inactivity: only for optical"),
        ('path = "/dev/ttyUSB0"\nparity = "X"', 'serial.ports[0].parity: expected one of "N"'),
        ('path = "/dev/ttyUSB0"\nspeed = 9600', "serial.ports[0].speed: unknown key"),
        ('path = "/dev/ttyUSB0"\nkind = "rs232"', 'serial.ports[0].kind: expected one of "rs485"'),
    ],
)
def test_serial_port_errors_name_the_key(tmp_path: Path, port: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[[serial.ports]]\n{port}\n")
    assert str(info.value).startswith(f"{tmp_path / 'hesd.toml'}: {message}"), str(info.value)


def test_serial_duplicate_port_and_bad_array(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'serial.ports\[1\].path: "/dev/ttyS0" is already'):
        load(
            tmp_path,
            '[[serial.ports]]\npath = "/dev/ttyS0"\n[[serial.ports]]\npath = "/dev/ttyS0"\n',
        )
    with pytest.raises(ConfigError, match=r"serial.ports: expected an array of tables"):
        load(tmp_path, '[serial]\nports = "/dev/ttyS0"\n')


# -- the daemon -------------------------------------------------------------------------------


def test_hesd_opens_its_configured_ports(
    tmp_path: Path, start_hesd: Callable[..., HesdProcess]
) -> None:
    pty = open_pty()
    missing = tmp_path / "ttyGONE"
    try:
        config = write_config(
            tmp_path,
            serial=f'[[serial.ports]]\npath = "{pty.path}"\n'
            f'[[serial.ports]]\npath = "{missing}"\nkind = "optical"',
        )
        hesd = start_hesd(config)
        wait_for(lambda: "serial.port_opened" in hesd.log_text(), 10, "the port to open")
        wait_for(lambda: "serial.open_failed" in hesd.log_text(), 10, "the missing port")
        assert hesd.stop() == 0
    finally:
        pty.close()
