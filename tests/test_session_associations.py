"""MeterSession.using: a task's requests under another association of the profile (the command
association), over WRAPPER (another client wPort), point-to-point HDLC and a shared HDLC link
(DISC, then SNRM from the other client address); invocation counters per client; back to the
read association once the command association has expired."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.profile import VendorProfile, load_profile
from hesd.config import StoreConfig
from hesd.link import null_modem
from hesd.session import MeterSession, SessionError, SessionSettings
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.framing import HdlcFraming, WrapperFraming
from protocols.dlms.obis import ObisCode
from protocols.dlms.server import ServerConnection
from protocols.dlms.wrapper import encode_wrapper
from tests.conftest import REPO
from tests.dlms_meter import (
    AK,
    ASSOCIATIONS,
    EK,
    ENERGY,
    HES_TITLE,
    KEYSET,
    METER_TITLE,
    DictModel,
    meter,
    run_meter,
)
from tests.hdlc_bus import SimMeter
from tests.test_session import until
from tests.test_session_shared import SharedEnd

PROFILE: VendorProfile = dataclasses.replace(
    load_profile(REPO / "conf" / "vendors" / "is15959.toml"),
    response_timeout=0.5,
    inactivity_timeout=60.0,
)
LIMIT = x.AttributeDescriptor(71, ObisCode.parse("0.0.17.0.0.255"), 4)


@dataclasses.dataclass
class Hes:
    store: Store
    counters: InvocationCounters
    registry: Registry
    skew: list[float]
    tasks: list[asyncio.Task[object]]

    def session(self, notified: list[object] | None = None) -> MeterSession:
        loop = asyncio.get_running_loop()
        settings = SessionSettings("M1", PROFILE, PROFILE.association("reader"), KEYSET, HES_TITLE)
        return MeterSession(
            settings,
            counters=self.counters,
            registry=self.registry,
            on_notification=None if notified is None else lambda _m, n, _t: notified.append(n),
            clock=lambda: loop.time() + self.skew[0],
        )

    def start(self, coro: object, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self.tasks.append(task)

    async def counters_rows(self) -> list[tuple[int, str]]:
        await self.store.sync()
        rows = await self.store.fetchall(
            "SELECT client_address, direction FROM invocation_counters WHERE meter_id = 'M1' "
            "ORDER BY 1, 2"
        )
        return [(r[0], r[1]) for r in rows]


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    await registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    rig = Hes(store, InvocationCounters(store), registry, [0.0], [])
    yield rig
    for task in rig.tasks:
        task.cancel()
    await asyncio.gather(*rig.tasks, return_exceptions=True)
    await store.close()
    await writer


async def test_wrapper_switches_client_sap_and_keeps_the_association(hes: Hes) -> None:
    session, server = hes.session(), meter()
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    hes.start(session.serve(hes_end, WrapperFraming(32)), "meter:M1:link")
    hes.start(run_meter(meter_end, server), "sim:M1")
    await until(lambda: session.online)

    assert await session.get(ENERGY) == 4242
    assert (session.association, server.association) == ("reader", "reader")
    with capture_logs() as logs:
        with session.using("utility"):
            result = await session.set(LIMIT, Typed(Tag.DOUBLE_LONG_UNSIGNED, 7000))
        assert result is x.DataAccessResult.SUCCESS
    assert (session.association, server.association) == ("utility", "utility")
    [switch] = [e for e in logs if e["event"] == "session.association_switch"]
    assert (switch["association"], switch["previous"]) == ("utility", "reader")
    assert not [e for e in logs if e["event"] == "session.release_unanswered"]  # RLRE came
    # HLS-GMAC suite 0: counters kept for client 48; the LLS reader has none
    assert await hes.counters_rows() == [(48, "rx"), (48, "tx")]

    # outside the block, reads go on over the association that is open: no switch
    with capture_logs() as logs:
        assert await session.get(ENERGY) == 4242
    assert server.association == "utility"
    assert not [e for e in logs if e["event"] == "session.association_switch"]

    # once it has expired, reads open the read association again
    hes.skew[0] = 61.0
    assert await session.get(ENERGY) == 4242
    assert (session.association, server.association) == ("reader", "reader")
    assert session.online


async def test_using_an_association_the_profile_lacks_is_an_error(hes: Hes) -> None:
    session = hes.session()
    with pytest.raises(SessionError) as info:
        session.using("admin").__enter__()
    assert str(info.value) == "meter M1: vendor profile is15959 has no association 'admin'"


async def test_a_refused_command_association_leaves_the_session_up(hes: Hes) -> None:
    """A meter that does not offer the command association refuses it; the request fails
    saying so, a push that follows still arrives, and reads open the read association again."""
    notified: list[object] = []
    session = hes.session(notified)
    readers_only = {k: v for k, v in ASSOCIATIONS.items() if k != 48}
    energy = DictModel({(3, "1.0.1.8.0.255", 2): Typed(Tag.DOUBLE_LONG_UNSIGNED, 4242)})
    server = ServerConnection(readers_only, energy, system_title=METER_TITLE, keys=(EK, AK))
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    hes.start(session.serve(hes_end, WrapperFraming(32)), "meter:M1:link")
    hes.start(run_meter(meter_end, server), "sim:M1")
    await until(lambda: session.online)
    with (
        pytest.raises(SessionError, match="association rejected_permanent"),
        session.using("utility"),
    ):
        await session.get(ENERGY)
    push = x.DataNotification(1, None, (b"MTR-1", Typed(Tag.LONG_UNSIGNED, 230))).encode()
    await meter_end.send(encode_wrapper(1, 102, push))
    await until(lambda: bool(notified))
    assert session.online
    assert await session.get(ENERGY) == 4242
    assert session.association == "reader"


async def test_using_is_the_calling_tasks_only(hes: Hes) -> None:
    """A read of a task started outside the block does not ask for a switch (a task started
    inside inherits the block, as context variables do)."""
    session, server = hes.session(), meter()
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    hes.start(session.serve(hes_end, WrapperFraming(32)), "meter:M1:link")
    hes.start(run_meter(meter_end, server), "sim:M1")
    await until(lambda: session.online)
    go = asyncio.Event()

    async def read_later() -> object:
        await go.wait()
        return await session.get(ENERGY)

    other = asyncio.create_task(read_later(), name="test:other-task")
    with session.using("utility"):
        go.set()
        assert await other == 4242
        assert server.association == "reader"
        assert await session.get(ENERGY) == 4242
        assert server.association == "utility"


async def test_point_to_point_hdlc_reopens_the_link_layer_from_the_other_client(hes: Hes) -> None:
    session, sim = hes.session(), SimMeter(17, 4242)
    loop = asyncio.get_running_loop()
    hes_end, meter_end = null_modem(names=("hes", "meter"))

    async def run_sim() -> None:
        with contextlib.suppress(Exception):
            while True:
                out, _ = sim.feed(await meter_end.receive(), loop.time())
                if out:
                    await meter_end.send(out)

    framing = HdlcFraming(32, 1, 17, response_timeout=0.5)
    hes.start(session.serve(hes_end, framing), "meter:M1:link")
    hes.start(run_sim(), "sim:M1")
    await until(lambda: session.online)
    assert await session.get(ENERGY) == 4242
    assert sim.clients == [32]
    with session.using("utility"):
        assert await session.set(LIMIT, Typed(Tag.DOUBLE_LONG_UNSIGNED, 7000)) == (
            x.DataAccessResult.SUCCESS
        )
    assert sim.clients == [32, 48]
    assert sim.server.association == "utility"
    assert session.online  # our own DISC did not end the link
    assert await session.get(ENERGY) == 4242


async def test_shared_hdlc_link_switches_inside_one_hold(hes: Hes) -> None:
    session, sim = hes.session(), SimMeter(17, 4242)
    loop = asyncio.get_running_loop()
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    link = SharedEnd(hes_end)

    async def run_sim() -> None:
        with contextlib.suppress(Exception):
            while True:
                out, _ = sim.feed(await meter_end.receive(), loop.time())
                if out:
                    await meter_end.send(out)

    hes.start(session.serve(link, HdlcFraming(32, 1, 17, response_timeout=0.5)), "meter:M1:link")
    hes.start(run_sim(), "sim:M1")
    await until(lambda: session.online)
    assert await session.get(ENERGY) == 4242
    link.log.clear()
    with session.using("utility"):
        assert await session.get(ENERGY) == 4242
    # RLRQ, DISC, SNRM from client 48, AARQ, HLS pass 3, the GET: all in one hold of the wire
    assert link.log == ["hold", "I", "DISC", "SNRM", "I", "I", "I", "release"]
    assert sim.clients == [32, 48]
    assert sim.server.association == "utility"


async def test_an_association_is_renewed_a_margin_before_the_meter_drops_it(hes: Hes) -> None:
    """The meter times silence from its last answer, hesd from that answer's arrival, and the
    next request takes time to arrive: at 55 s of a 60 s inactivity timeout (inside the 6 s
    margin) hesd associates afresh rather than send a request the meter may refuse."""
    session, server = hes.session(), meter()
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    hes.start(session.serve(hes_end, WrapperFraming(32)), "meter:M1:link")
    hes.start(run_meter(meter_end, server), "sim:M1")
    await until(lambda: session.online)
    assert await session.get(ENERGY) == 4242

    hes.skew[0] = 53.0  # before the margin: the association is used as it is
    with capture_logs() as logs:
        assert await session.get(ENERGY) == 4242
    assert not [e for e in logs if e["event"] == "session.association_expired"]

    hes.skew[0] = 53.0 + 55.0  # 55 s after the last answer
    with capture_logs() as logs:
        assert await session.get(ENERGY) == 4242
    assert [e["event"] for e in logs if e["event"].startswith("session.associat")] == [
        "session.association_expired",
        "session.associated",
    ]
