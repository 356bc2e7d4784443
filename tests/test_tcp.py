"""TCP both ways on loopback: dial-in identification, refusals, reads; dial-out with back-off."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.profile import load_profile
from hesd.config import StoreConfig, load_config
from hesd.secrets import SecretStore
from hesd.session import MeterSession, SessionError
from hesd.sessions import SessionManager
from hesd.store import InvocationCounters, MeterEntry, Registry, Store
from hesd.transports.tcp import TcpDialer, TcpLink, TcpListener, identify_push
from protocols.dlms import apdu as x
from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.security import SecurityContext
from protocols.dlms.wrapper import encode_wrapper
from protocols.errors import RemoteProtocolError
from tests.conftest import REPO, free_port
from tests.dlms_meter import AK, EK, ENERGY, HES_TITLE, KEYSET, METER_TITLE, meter, run_meter

pytestmark = pytest.mark.integration

PROFILE = load_profile(REPO / "conf" / "vendors" / "is15959.toml")


def push(*values: object) -> bytes:
    return x.DataNotification(1, None, tuple(values)).encode()  # type: ignore[arg-type]


def test_identify_push() -> None:
    assert identify_push(push("SN0042", Typed(Tag.LONG_UNSIGNED, 5))) == ("SN0042", "")
    assert identify_push(push(b"SN0042")) == ("SN0042", "")
    assert identify_push(push(METER_TITLE)) == ("", METER_TITLE.hex().upper())
    sec = SecurityContext(system_title=METER_TITLE, ek=EK, ak=AK)
    ciphered = sec.protect(push(b"x"), 7, general=True)
    assert identify_push(ciphered) == ("", METER_TITLE.hex().upper())
    with pytest.raises(RemoteProtocolError, match="neither a serial number nor a system title"):
        identify_push(push(Typed(Tag.LONG_UNSIGNED, 5)))
    with pytest.raises(RemoteProtocolError, match="not a push"):
        identify_push(x.GetRequestNormal(x.InvokeIdAndPriority(1), ENERGY).encode())


@dataclasses.dataclass
class Hes:
    registry: Registry
    manager: SessionManager
    listener: TcpListener
    port: int


@pytest.fixture
async def hes(tmp_path: Path) -> AsyncIterator[Hes]:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 5.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    registry = Registry(store)
    await registry.upsert(
        [
            MeterEntry("M1", "is15959", "tcp-in", serial_number="SN0001", keyset="lot-a"),
            MeterEntry("M2", "is15959", "tcp-in", serial_number="SN0002", keyset="lot-a"),
        ]
    )
    port = free_port()
    tcp = dataclasses.replace(
        load_config(None).tcp,
        listen=(("127.0.0.1", port),),
        identify_timeout=0.5,
        identify_max_bytes=256,
    )
    manager = SessionManager(
        registry=registry,
        counters=InvocationCounters(store),
        vendors={"is15959": PROFILE},
        secrets=SecretStore(None, {"lot-a": KEYSET}),
        client_system_title=HES_TITLE,
        max_requests=10,
        request_timeout=10,
    )
    manager.dialer = TcpDialer(dataclasses.replace(tcp, connect_timeout=2, backoff_initial=60))
    listener = TcpListener(tcp, manager, registry)
    await listener.start()
    yield Hes(registry, manager, listener, port)
    await listener.close()
    await manager.close(grace=1)
    await store.close()
    await writer


async def dial_in(port: int, first: bytes) -> tuple[TcpLink, asyncio.Task[None]]:
    """A meter dialling in: sends ``first``, then answers requests on the same connection."""
    loop = asyncio.get_running_loop()
    link = TcpLink()
    await loop.create_connection(lambda: link, "127.0.0.1", port)
    await link.send(first)
    task = loop.create_task(run_meter(link, meter()), name="sim:dial-in")
    return link, task


async def get_energy(session: MeterSession) -> object:
    return await session.get(ENERGY)


async def wait_online(manager: SessionManager, meter_id: str) -> None:
    async with asyncio.timeout(5):
        while not manager.online(meter_id):  # noqa: ASYNC110 - state owned by the code under test
            await asyncio.sleep(0.01)


async def test_dial_in_identifies_and_serves_reads(hes: Hes) -> None:
    link, task = await dial_in(hes.port, encode_wrapper(1, 102, push("SN0002")))
    await wait_online(hes.manager, "M2")
    assert await hes.manager.request("M2", get_energy) == 4242
    assert hes.listener.accepted == 1
    await link.close()
    await task


async def test_unknown_meter_is_dropped_and_logged(hes: Hes) -> None:
    with capture_logs() as logs:
        _link, task = await dial_in(hes.port, encode_wrapper(1, 102, push("SN9999")))
        await asyncio.wait_for(task, 5)  # the HES hangs up
    [entry] = [e for e in logs if e["event"] == "tcp.unidentified"]
    assert (
        "names serial SN9999 / system title -, which the registry does not know"
        in (entry["reason"])
    )
    assert not hes.manager.online("M1")


async def test_silent_peer_gets_a_bounded_time(hes: Hes) -> None:
    with capture_logs() as logs:
        _link, task = await dial_in(hes.port, b"")
        await asyncio.wait_for(task, 5)
    assert any(
        e["event"] == "tcp.unidentified" and "no identification within 0.5 s" in e["reason"]
        for e in logs
    )


async def test_garbage_peer_gets_a_bounded_budget(hes: Hes) -> None:
    with capture_logs() as logs:
        _link, task = await dial_in(hes.port, b"\x00\x01" + b"\xff" * 300)
        await asyncio.wait_for(task, 5)
    assert any(e["event"] == "tcp.unidentified" for e in logs)
    assert hes.listener.refused == 1


async def test_dial_out_and_back_off(hes: Hes) -> None:
    server_port = free_port()

    # a real meter listening: our scripted one behind a TCP server
    meters: list[asyncio.Task[None]] = []

    def meter_protocol() -> TcpLink:
        link = TcpLink()
        meters.append(
            asyncio.get_running_loop().create_task(run_meter(link, meter()), name="sim:listen")
        )
        return link

    server = await asyncio.get_running_loop().create_server(
        meter_protocol, "127.0.0.1", server_port
    )
    await hes.registry.upsert(
        [
            MeterEntry(
                "M3", "is15959", "tcp-out", address=f"127.0.0.1:{server_port}", keyset="lot-a"
            ),
            MeterEntry(
                "M4", "is15959", "tcp-out", address=f"127.0.0.1:{free_port()}", keyset="lot-a"
            ),
        ]
    )
    assert await hes.manager.request("M3", get_energy) == 4242
    assert hes.manager.online("M3")
    with pytest.raises(SessionError, match=r"meter M4: cannot connect to 127\.0\.0\.1:"):
        await hes.manager.request("M4", get_energy)
    with pytest.raises(SessionError, match=r"meter M4: unreachable, next attempt in \d+ s"):
        await hes.manager.request("M4", get_energy)
    server.close()
    await hes.manager.close(grace=1)
    await asyncio.gather(*meters)
    await server.wait_closed()
