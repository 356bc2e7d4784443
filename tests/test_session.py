"""MeterSession against a DLMS server across a null-modem link: association, requests, pushes,
timeouts, bad input, counters."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.profile import load_profile
from hesd.config import StoreConfig
from hesd.link import Link, LinkClosed, flip_bit, null_modem, split_every
from hesd.secrets import KeySet, Secret
from hesd.session import MeterSession, SessionError, SessionSettings
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Tag, Typed, Value
from protocols.dlms.cosem import CellInfo
from protocols.dlms.framing import HdlcFraming, WrapperFraming
from protocols.dlms.obis import ObisCode
from protocols.dlms.server import ServerConnection
from protocols.dlms.wrapper import encode_wrapper
from tests.conftest import REPO
from tests.dlms_meter import ENERGY, HES_TITLE, KEYSET, DictModel, meter, run_meter

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")


@dataclass
class Rig:
    store: Store
    registry: Registry
    counters: InvocationCounters
    writer: asyncio.Task[None]
    tasks: list[asyncio.Task[object]] = field(default_factory=list)
    notifications: list[tuple[str, object]] = field(default_factory=list)

    def session(
        self, association: str = "reader", keyset: KeySet | None = KEYSET, profile: object = PROFILE
    ) -> MeterSession:
        settings = SessionSettings(
            "M1",
            profile,
            PROFILE.association(association),  # type: ignore[arg-type]
            keyset,
            HES_TITLE,
        )
        return MeterSession(
            settings,
            counters=self.counters,
            registry=self.registry,
            on_notification=lambda m, n, _t: self.notifications.append((m, n)),
        )

    def start(self, coro: object, name: str) -> asyncio.Task[object]:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.append(task)
        return task

    async def connect(
        self,
        session: MeterSession,
        server: ServerConnection,
        to_meter: Callable[[bytes], list[tuple[float, bytes]]] | None = None,
        to_hes: Callable[[bytes], list[tuple[float, bytes]]] | None = None,
        mute: bool = False,
    ) -> tuple[asyncio.Task[object], Link]:
        hes_end, meter_end = null_modem(to_meter, to_hes, names=("hes", "meter"))
        client = session.settings.association.client_address
        serving = self.start(session.serve(hes_end, WrapperFraming(client)), "meter:M1:link")
        self.start(run_meter(meter_end, server, mute=mute), "sim:M1")
        await until(lambda: session.online)
        return serving, meter_end


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Yield to the loop until ``condition`` holds; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        # polls state owned by the code under test, which has no event to wait on
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    await registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    r = Rig(store, registry, InvocationCounters(store), writer)
    yield r
    for task in r.tasks:
        task.cancel()
    await asyncio.gather(*r.tasks, return_exceptions=True)
    await store.close()
    await writer


async def test_lls_read_and_registry(rig: Rig) -> None:
    session = rig.session("reader")
    await rig.connect(session, meter())
    assert await session.get(ENERGY) == 4242
    assert session.associated
    assert await session.get(x.AttributeDescriptor(3, ObisCode.parse("1.0.2.8.0.255"), 2)) == (
        x.DataAccessResult.OBJECT_UNDEFINED
    )
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert record.status == "online"
    assert record.last_seen is not None


async def test_firmware_version_is_read_once_per_connection(rig: Rig) -> None:
    firmware = (1, "1.0.0.2.0.255", 2)  # IS 15959 active firmware version
    energy = (3, "1.0.1.8.0.255", 2)
    model = DictModel({energy: Typed(Tag.DOUBLE_LONG_UNSIGNED, 4242), firmware: b"KX-2.1.0"})
    session = rig.session("reader")
    await rig.connect(session, meter(model))
    assert await session.get(ENERGY) == 4242
    assert session.firmware == "KX-2.1.0"
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert record.firmware == "KX-2.1.0"
    model.values[firmware] = b"KX-2.2.0"  # upgraded: seen on the next connection, not before
    assert await session.get(ENERGY) == 4242
    assert session.firmware == "KX-2.1.0"


async def test_running_firmware_is_the_identity_read_not_a_second_get(rig: Rig) -> None:
    firmware = (1, "1.0.0.2.0.255", 2)
    model = RecordingModel({firmware: b"KX-2.1.0 "})  # (below)
    session = rig.session("reader")
    await rig.connect(session, meter(model))
    assert await session.running_firmware() == "KX-2.1.0"  # associates, reads the identity
    assert await session.running_firmware() == "KX-2.1.0"
    assert model.read.count(firmware) == 1
    model.values[firmware] = b"KX-2.2.0"
    session.forget_identity()  # an activation: the next request reads it again
    assert await session.running_firmware() == "KX-2.2.0"
    assert model.read.count(firmware) == 2
    del model.values[firmware]  # the meter no longer says: unknown, not the older version
    session.forget_identity()
    assert await session.running_firmware() is None
    assert session.firmware == "KX-2.2.0"  # what it said last, as the registry keeps it


async def test_hls_gmac_ciphered_read_persists_counters(rig: Rig) -> None:
    session = rig.session("utility")
    await rig.connect(session, meter())
    assert await session.get(ENERGY) == 4242
    assert await session.get(ENERGY) == 4242
    await rig.store.sync()
    rows = await rig.store.fetchall(
        "SELECT direction, value FROM invocation_counters WHERE meter_id = 'M1' ORDER BY 1"
    )
    assert [tuple(r) for r in rows] == [("rx", rows[0][1]), ("tx", 256)]
    assert rows[0][1] >= 3  # the meter's counter, accepted and persisted


async def test_wrong_password_is_a_clear_error(rig: Rig) -> None:
    wrong = KeySet("lot-a", lls_password=Secret(b"nope"))
    session = rig.session("reader", keyset=wrong)
    await rig.connect(session, meter())
    with pytest.raises(
        SessionError,
        match="meter M1: association rejected_permanent: acse-service-user: authentication-failure",
    ):
        await session.get(ENERGY)


async def test_missing_keys_named(rig: Rig) -> None:
    session = rig.session("utility", keyset=KeySet("lot-a"))
    await rig.connect(session, meter())
    with pytest.raises(SessionError, match="needs the keyset's global_unicast_key"):
        await session.get(ENERGY)


async def test_split_bytes_are_reassembled(rig: Rig) -> None:
    session = rig.session("reader")
    await rig.connect(session, meter(), to_hes=split_every(3), to_meter=split_every(5))
    assert await session.get(ENERGY) == 4242


async def test_silent_meter_times_out_and_its_link_ends(rig: Rig) -> None:
    profile = replace(PROFILE, response_timeout=0.2)
    session = rig.session("reader", profile=profile)
    serving, _ = await rig.connect(session, meter(), mute=True)
    with capture_logs() as logs:
        with pytest.raises(SessionError, match="no answer to the association"):
            await session.get(ENERGY)
        # a link of its own: what the meter does now is unknown, so the link ends with the reason
        assert await asyncio.wait_for(serving, 5) == "no answer to the association within 0.2 s"
    assert not session.online
    assert [e["what"] for e in logs if e["event"] == "session.timeout"] == ["association"]
    [offline] = [e for e in logs if e["event"] == "session.offline"]
    assert offline == {
        "event": "session.offline",
        "log_level": "info",
        "meter": "M1",
        "reason": "no answer to the association within 0.2 s",
    }
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert record.status == "offline"


async def test_half_a_frame_then_silence_leaves_nothing_for_the_next_link(rig: Rig) -> None:
    """A meter that stops in the middle of a frame (hesd-sim's ``disconnect`` over MQTT, where
    no connection closes): the request times out and the link ends, so the half frame its
    framing holds cannot spoil the first answer on the meter's next link."""
    profile = replace(PROFILE, response_timeout=0.2)
    session = rig.session("reader", profile=profile)
    server = meter()
    cut = [False]

    def half_the_get_response(data: bytes) -> list[tuple[float, bytes]]:
        if not cut[0] and data[8] == x.ApduTag.GET_RESPONSE:  # after the 8-octet WRAPPER header
            cut[0] = True
            return [(0.0, data[: len(data) // 2])]
        return [(0.0, data)]

    serving, _ = await rig.connect(session, server, to_hes=half_the_get_response)
    with pytest.raises(SessionError, match=r"no answer to the get request \d+"):
        await session.get(ENERGY)
    reason = await asyncio.wait_for(serving, 5)
    assert re.fullmatch(r"no answer to the get request \d+ within 0\.2 s", reason)
    await rig.connect(session, meter())  # the meter dials in again, or hesd dials it
    assert await session.get(ENERGY) == 4242


async def test_hdlc_link_that_gives_up_ends_with_its_own_reason(rig: Rig) -> None:
    """HDLC on a link of the meter's own (a meter behind a TCP modem) that never answers the
    SNRM: the session ends saying so, not "closed by hesd"."""
    session = rig.session("reader")
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    framing = HdlcFraming(32, 1, response_timeout=0.05, max_retries=1)
    serving = rig.start(session.serve(hes_end, framing), "meter:M1:link")
    reason = await asyncio.wait_for(serving, 5)
    assert reason == "link layer closed: no answer in 0.05s after 1 retransmissions"
    await meter_end.close()


async def test_tampered_tag_ends_the_session_with_a_reason(rig: Rig) -> None:
    session = rig.session("utility")
    serving, _ = await rig.connect(session, meter(), to_hes=flip_bit(-1))
    with capture_logs() as logs, pytest.raises(SessionError, match="protocol error"):
        await session.get(ENERGY)
    reason = await asyncio.wait_for(serving, 5)
    assert str(reason).startswith("protocol error: ")
    assert any(
        entry["event"] == "session.protocol_error" and entry["meter"] == "M1" for entry in logs
    )
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert record.status == "offline"


async def test_garbage_ends_the_session(rig: Rig) -> None:
    session = rig.session("reader")
    serving, meter_end = await rig.connect(session, meter())
    assert await session.get(ENERGY) == 4242
    await meter_end.send(b"\x00\x02garbage!")
    reason = await asyncio.wait_for(serving, 5)
    assert "wrapper: version" in str(reason)
    with pytest.raises(SessionError, match="offline"):
        await session.get(ENERGY)


async def test_push_reaches_the_handler(rig: Rig) -> None:
    session = rig.session("reader")
    server = meter()
    _, meter_end = await rig.connect(session, server)
    push = x.DataNotification(1, None, (b"MTR-1", Typed(Tag.LONG_UNSIGNED, 230))).encode()
    await meter_end.send(encode_wrapper(1, 32, push))
    await until(lambda: bool(rig.notifications))
    [(meter_id, notification)] = rig.notifications
    assert meter_id == "M1"
    assert notification == x.DataNotification(1, None, (b"MTR-1", 230))


async def test_requests_are_serialised(rig: Rig) -> None:
    session = rig.session("reader")
    await rig.connect(session, meter())
    results = await asyncio.gather(*(session.get(ENERGY) for _ in range(10)))
    assert results == [4242] * 10


async def test_a_flooding_meter_loses_its_link(rig: Rig) -> None:
    settings = rig.session("reader").settings
    session = MeterSession(
        settings, counters=rig.counters, registry=rig.registry, max_bytes_per_request=2048
    )
    model = DictModel({(1, "0.0.96.1.0.255", 2): b"x" * 5000})
    serving, _ = await rig.connect(session, meter(model))
    big = x.AttributeDescriptor(1, ObisCode.parse("0.0.96.1.0.255"), 2)
    with pytest.raises(SessionError):
        await session.get(big)
    reason = await asyncio.wait_for(serving, 5)
    assert "more than the 2048 allowed (limits.session_max_bytes)" in str(reason)


# -- the modem's signal quality (GSM diagnostic, IC 47) -------------------------------------------

GSM = ObisCode.parse("0.0.25.6.0.255")
CELLULAR = replace(PROFILE, objects=replace(PROFILE.objects, gsm_diagnostic=GSM))
FIRMWARE_KEY = (1, "1.0.0.2.0.255", 2)
CELL_INFO_KEY = (47, str(GSM), 6)
ENERGY_KEY = (3, "1.0.1.8.0.255", 2)


@dataclass
class RecordingModel(DictModel):
    """A DictModel that remembers which attributes were read, in order."""

    read: list[tuple[int, str, int]] = field(default_factory=list)

    def get(
        self,
        association: str,
        attribute: x.AttributeDescriptor,
        access: x.AccessSelection | None,
        now: float,
    ) -> Value | x.DataAccessResult:
        self.read.append((attribute.class_id, str(attribute.instance), attribute.attribute))
        return super().get(association, attribute, access, now)


def cellular_meter(cell_info: Value | None) -> RecordingModel:
    values: dict[tuple[int, str, int], Value] = {
        ENERGY_KEY: Typed(Tag.DOUBLE_LONG_UNSIGNED, 4242),
        FIRMWARE_KEY: b"KX-2.1.0",
    }
    if cell_info is not None:
        values[CELL_INFO_KEY] = cell_info
    return RecordingModel(values)


async def test_signal_quality_is_read_once_per_connection(rig: Rig) -> None:
    model = cellular_meter(CellInfo(123456, 0x1A2B, 12, 99, 404, 45, 1850).to_value())
    session = rig.session("reader", profile=CELLULAR)
    _, meter_end = await rig.connect(session, meter(model))
    assert await session.get(ENERGY) == 4242
    assert await session.get(ENERGY) == 4242
    assert model.read == [FIRMWARE_KEY, CELL_INFO_KEY, ENERGY_KEY, ENERGY_KEY]
    assert session.signal_quality == -89  # <rssi> 12: -113 + 2 * 12 dBm
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert (record.signal_quality, record.firmware) == (-89, "KX-2.1.0")
    model.values[CELL_INFO_KEY] = CellInfo(1, 2, 31, 0).to_value()  # version 0, a better signal
    assert await session.get(ENERGY) == 4242
    assert session.signal_quality == -89  # seen on the next connection, not before
    await meter_end.close()
    await until(lambda: not session.online)
    await rig.connect(session, meter(model))
    model.read.clear()
    assert await session.get(ENERGY) == 4242
    assert model.read == [FIRMWARE_KEY, CELL_INFO_KEY, ENERGY_KEY]
    assert session.signal_quality == -51
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert record.signal_quality == -51


async def test_a_profile_without_the_object_does_not_ask(rig: Rig) -> None:
    model = cellular_meter(CellInfo(1, 2, 12, 0).to_value())
    session = rig.session("reader")  # IS 15959: no GSM diagnostic
    await rig.connect(session, meter(model))
    assert await session.get(ENERGY) == 4242
    assert model.read == [FIRMWARE_KEY, ENERGY_KEY]
    assert session.signal_quality is None


@pytest.mark.parametrize(
    ("cell_info", "answer"),
    [
        (CellInfo(1, 2, 99, 99).to_value(), "signal_quality 99"),
        (None, "object_undefined"),
        ((Typed(Tag.LONG_UNSIGNED, 1), Typed(Tag.UNSIGNED, 12)), "cell_info must be a structure"),
        (
            tuple(Typed(Tag.UNSIGNED, n) for n in (1, 2, 40, 0)),
            "cell_info: signal_quality 40 is not 0..31 or 99",
        ),
        (Typed(Tag.UNSIGNED, 12), "cell_info must be a structure of 4 or 7, got 12"),
        (b"-71 dBm", "cell_info must be a structure of 4 or 7, got b'-71 dBm'"),
    ],
    ids=["not-known", "no-object", "short", "out-of-range", "a-number", "a-string"],
)
async def test_an_unknown_signal_leaves_the_registry_alone(
    rig: Rig, cell_info: Value | None, answer: str
) -> None:
    rig.registry.note_state("M1", signal_quality=-71)
    model = cellular_meter(cell_info)
    session = rig.session("reader", profile=CELLULAR)
    await rig.connect(session, meter(model))
    with capture_logs() as logs:
        assert await session.get(ENERGY) == 4242  # the read goes on
    [unknown] = [e for e in logs if e["event"] == "session.signal_unknown"]
    assert (unknown["log_level"], unknown["meter"]) == ("info", "M1")
    assert unknown["answer"].startswith(answer), unknown["answer"]
    assert session.signal_quality is None
    assert session.online
    await rig.store.sync()
    record = await rig.registry.get("M1")
    assert record is not None
    assert (record.signal_quality, record.firmware) == (-71, "KX-2.1.0")


class RefusingSend:
    """A link whose sending side has gone (a TCP write after the peer reset) while nothing has
    been read yet that says so."""

    def __init__(self, inner: Link) -> None:
        self.inner = inner
        self.refuse = False

    @property
    def peer(self) -> str:
        return self.inner.peer

    async def send(self, data: bytes) -> None:
        if self.refuse:
            raise LinkClosed("connection reset by peer")
        await self.inner.send(data)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def close(self) -> None:
        await self.inner.close()


async def test_a_link_closing_under_a_request_is_a_session_error(rig: Rig) -> None:
    """Callers of get/set/action (the router's retry policy, the scheduler) handle one error
    type: a link that closes as the request goes out is a SessionError naming the meter."""
    session = rig.session("reader")
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    link = RefusingSend(hes_end)
    client = session.settings.association.client_address
    rig.start(session.serve(link, WrapperFraming(client)), "meter:M1:link")
    rig.start(run_meter(meter_end, meter()), "sim:M1")
    await until(lambda: session.online)
    assert await session.get(ENERGY) == 4242
    link.refuse = True
    with pytest.raises(SessionError, match=r"^meter M1: connection reset by peer$"):
        await session.get(ENERGY)
