"""MeterSession on a SharedLink (a serial bus): the link layer inside the request's hold on the
wire; reassociation after inactivity; a closed HDLC connection; an abandoned exchange."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.profile import VendorProfile, load_profile
from hesd.config import StoreConfig
from hesd.link import NullModemEnd, null_modem
from hesd.session import MeterSession, SessionError, SessionSettings
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from protocols.dlms.framing import HdlcFraming
from protocols.dlms.hdlc import HdlcFramer
from tests.conftest import REPO
from tests.dlms_meter import ENERGY, HES_TITLE, KEYSET
from tests.hdlc_bus import SimMeter
from tests.test_session import until

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")


@dataclass
class Stores:
    store: Store
    registry: Registry


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Stores]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    await registry.upsert([MeterEntry("M17", "is15959", "serial", "/dev/ttyX:17")])
    yield Stores(store, registry)
    await store.close()
    await writer


class SharedEnd:
    """A SharedLink over a null modem that logs holds and the HDLC frames sent. As on a
    ``SerialBus``, a send outside the session's hold (a retransmission after its request gave
    up, logged with "!") waits for the wire, and ``another_meter()`` holds the wire meanwhile."""

    def __init__(self, end: NullModemEnd) -> None:
        self._end = end
        self._lock = asyncio.Lock()
        self._ours = False  # the session holds the wire
        self.unscheduled = 0  # sends outside the session's hold, begun
        self.log: list[str] = []

    @property
    def peer(self) -> str:
        return self._end.peer

    async def send(self, data: bytes) -> None:
        if self._ours:
            self._log_frames(data, "")
            await self._end.send(data)
            return
        self.unscheduled += 1
        async with self._lock:  # its own turn on the wire
            self._log_frames(data, "!")
            await self._end.send(data)

    def _log_frames(self, data: bytes, mark: str) -> None:
        framer = HdlcFramer()
        framer.receive_data(data)
        while (frame := framer.next_frame()) is not None:
            self.log.append(f"{frame.kind.name}{mark}")

    async def receive(self) -> bytes:
        return await self._end.receive()

    async def close(self) -> None:
        await self._end.close()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._lock:
            self.log.append("hold")
            self._ours = True
            try:
                yield
            finally:
                self._ours = False
                self.log.append("release")

    @contextlib.asynccontextmanager
    async def another_meter(self) -> AsyncIterator[None]:
        async with self._lock:
            self.log.append("other")
            yield


@dataclass
class SharedRig:
    session: MeterSession
    link: SharedEnd
    sim: SimMeter
    skew: list[float]


@pytest.fixture
async def shared(hes: Stores) -> AsyncIterator[SharedRig]:
    loop = asyncio.get_running_loop()
    skew = [0.0]
    profile: VendorProfile = dataclasses.replace(
        PROFILE, response_timeout=0.2, inactivity_timeout=60.0
    )
    settings = SessionSettings("M17", profile, PROFILE.association("reader"), KEYSET, HES_TITLE)
    session = MeterSession(
        settings,
        counters=InvocationCounters(hes.store),
        registry=hes.registry,
        clock=lambda: loop.time() + skew[0],
    )
    hes_end, meter_end = null_modem(names=("hes", "meter"))
    link = SharedEnd(hes_end)
    sim = SimMeter(17, 4242)

    async def run_sim() -> None:
        with contextlib.suppress(Exception):
            while True:
                out, _ = sim.feed(await meter_end.receive(), loop.time())
                if out:
                    await meter_end.send(out)

    framing = HdlcFraming(32, 1, 17, response_timeout=0.2)
    tasks = [
        loop.create_task(session.serve(link, framing), name="meter:M17:link"),
        loop.create_task(run_sim(), name="sim:M17"),
    ]
    await until(lambda: session.online)
    yield SharedRig(session, link, sim, skew)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_shared_link_opens_hdlc_inside_the_first_request(shared: SharedRig) -> None:
    await asyncio.sleep(0)  # serve has run: nothing went out before a request
    assert shared.link.log == []
    assert await shared.session.get(ENERGY) == 4242
    # SNRM, then AARQ, the firmware version (once per connection) and the GET
    assert shared.link.log == ["hold", "SNRM", "I", "I", "I", "release"]


async def test_shared_link_reassociates_with_disc_and_snrm_after_inactivity(
    shared: SharedRig,
) -> None:
    assert await shared.session.get(ENERGY) == 4242
    shared.skew[0] = 61.0  # past the profile's inactivity timeout
    shared.link.log.clear()
    assert await shared.session.get(ENERGY) == 4242
    assert shared.link.log == ["hold", "DISC", "SNRM", "I", "I", "release"]


async def test_shared_link_survives_a_meter_that_dropped_its_link_layer(
    shared: SharedRig,
) -> None:
    assert await shared.session.get(ENERGY) == 4242
    shared.sim.reset()  # the meter restarted: it answers DM
    with pytest.raises(SessionError, match="link layer closed: the server is in disconnected"):
        await shared.session.get(ENERGY)
    assert shared.session.online
    assert await shared.session.get(ENERGY) == 4242


async def test_shared_link_abandoned_request_disconnects_before_the_release(
    shared: SharedRig,
) -> None:
    shared.sim.mute = True
    request = asyncio.create_task(shared.session.get(ENERGY), name="test:request")
    await until(lambda: "SNRM" in shared.link.log)
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    assert shared.link.log == ["hold", "SNRM", "DISC", "release"]
    # the DISC went unanswered: the next request waits for the link layer to be down (the
    # DISC's retransmission, in a turn of its own, is answered now), then opens it again
    shared.sim.mute = False
    assert await shared.session.get(ENERGY) == 4242
    assert shared.link.log[4:] == ["DISC!", "hold", "SNRM", "I", "I", "I", "release"]


async def test_a_disc_retried_while_the_next_request_waits_for_the_wire_does_not_stall_it(
    shared: SharedRig,
) -> None:
    """The request after an abandoned exchange waits for the DISC's retries without holding the
    wire: they take turns of their own, which a hold would keep them from (on a SerialBus the
    whole bus stalled until the request's time cap)."""
    assert await shared.session.get(ENERGY) == 4242
    shared.sim.mute = True
    with pytest.raises(SessionError, match=r"no answer to the get request \d+"):
        await shared.session.get(ENERGY)
    assert shared.link.log[-2:] == ["DISC", "release"]  # unanswered: it will be retried
    async with shared.link.another_meter():
        request = asyncio.create_task(shared.session.get(ENERGY), name="test:request")
        await until(lambda: shared.link.unscheduled >= 1)  # the DISC is due again
        shared.sim.mute = False
    assert await asyncio.wait_for(request, 5) == 4242
    assert shared.link.log[-7:] == ["other", "DISC!", "hold", "SNRM", "I", "I", "release"]
