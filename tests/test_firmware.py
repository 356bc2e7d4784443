"""Firmware upgrades (hesd/firmware.py, hesd/firmware_images.py) against a simulated meter's
object model in-process: the transfer, its resume after a broken connection, verification,
activation once and only once, the activation scheduler; the image store; the router's
progress; the image routes of the API."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import msgpack
import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from adapters.model import CommandResult
from adapters.profile import VendorProfile, load_profile
from hesd.api.app import build_app
from hesd.commands import command_kinds
from hesd.config import FirmwareConfig, StoreConfig, load_config
from hesd.daemon import Daemon, build_normalisers
from hesd.firmware import MeterImage, TransferStatus, firmware_kind, missing_blocks, resume_point
from hesd.firmware_images import (
    FirmwareError,
    ImageDamaged,
    ImageStore,
    ImageTooLarge,
    Target,
    parse_identifier,
    target_of,
)
from hesd.router import Command, CommandKind, CommandRejected, CommandRouter, CommandState, Outcome
from hesd.session import MeterSession, SessionError
from hesd.sim.faults import FaultSpecError, parse_faults
from hesd.sim.image import BLOCK_SIZE, build_image
from hesd.sim.model import MeterSpec, SimulatedMeter
from hesd.store import MeterEntry, Registry, Store
from protocols.dlms import apdu as x
from protocols.dlms import axdr
from protocols.dlms.axdr import Value
from tests.hes_api_contract import contract_middleware

REPO = Path(__file__).resolve().parent.parent
NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
IMAGE = build_image("2.0.0", bytes(range(256)) * 16)  # 4,138 octets: 22 blocks of 192
BLOCKS = -(-len(IMAGE) // BLOCK_SIZE)
SCHEDULER = '\nimage_activation    = "0.0.15.0.2.255"'
_T = TypeVar("_T")


@functools.cache
def _profile(name: str) -> VendorProfile:
    return load_profile(REPO / "conf" / "vendors" / f"{name}.toml")


def scheduled_profile(tmp_path: Path) -> VendorProfile:
    """is15959 whose meters have an image activation scheduler."""
    text = (REPO / "conf" / "vendors" / "is15959.toml").read_text()
    old = '\nimage_activation    = ""'
    assert old in text, "is15959.toml changed: update this test"
    path = tmp_path / "is15959.toml"
    path.write_text(text.replace(old, SCHEDULER))
    return load_profile(path)


# -- a session on a simulated meter ------------------------------------------------------------


@dataclass
class Settings:
    profile: VendorProfile


@dataclass
class SimSession:
    """What the upgrade sees of ``MeterSession``, on a ``SimulatedMeter`` (utility association,
    values through A-XDR as on the wire). ``cut_at`` breaks the link as image block N arrives
    (after the meter kept it, before its answer); an activation restarts the meter, which ends
    the link: until ``reconnect`` every request fails like a closed link."""

    meter: SimulatedMeter
    now: float = NOW
    association: str = "utility"
    cut_at: int | None = None
    down: bool = False
    forgot: int = 0
    requests: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)  # associations asked for with ``using``
    refused: set[tuple[int, int]] = field(default_factory=set)  # (class, attribute) it won't read

    @property
    def settings(self) -> Settings:
        return Settings(self.meter.spec.profile)

    @property
    def meter_id(self) -> str:
        return self.meter.spec.meter_id

    def _check(self, what: str) -> None:
        self.requests.append(what)
        if self.down:
            raise SessionError(f"meter {self.meter_id}: link closed: peer closed the connection")

    def reconnect(self) -> None:
        self.down = False

    @contextlib.contextmanager
    def using(self, name: str) -> Iterator[None]:
        """The association the upgrade asked for; the fake stays on ``association``."""
        self.used.append(name)
        yield

    def forget_identity(self) -> None:
        self.forgot += 1

    async def running_firmware(self) -> str | None:
        """``MeterSession.running_firmware``: the version the meter reports (a GET here, as
        the session's identity read after association is one)."""
        obis = self.settings.profile.objects.firmware_version
        value = await self.get(x.AttributeDescriptor(1, obis, 2))
        if isinstance(value, bytes) and value.isascii():
            value = value.decode()
        return value.strip() if isinstance(value, str) else None

    async def get(
        self, attribute: x.AttributeDescriptor, access: object = None
    ) -> Value | x.DataAccessResult:
        self._check(f"get {attribute.class_id}:{attribute.attribute}")
        if (attribute.class_id, attribute.attribute) in self.refused:
            return x.DataAccessResult.READ_WRITE_DENIED
        value = self.meter.get(self.association, attribute, None, self.now)
        return value if isinstance(value, x.DataAccessResult) else wire(value)

    async def set(self, attribute: x.AttributeDescriptor, value: Value) -> x.DataAccessResult:
        self._check(f"set {attribute.class_id}:{attribute.attribute}")
        return self.meter.set(self.association, attribute, wire(value), self.now)

    async def action(
        self, method: x.MethodDescriptor, parameters: Value | None = None
    ) -> tuple[x.ActionResult, None]:
        self._check(f"act {method.class_id}:{method.attribute}")
        result, _ = self.meter.action(
            self.association, method, None if parameters is None else wire(parameters), self.now
        )
        if self.meter.take_restart():
            self.down = True  # the answer went out, then the meter restarted
        elif method.attribute == 2 and self.cut_at == self.meter.image_last_block:
            self.cut_at, self.down = None, True
            raise SessionError(f"meter {self.meter_id}: link closed: peer closed the connection")
        return result, None


def wire(value: Value) -> Value:
    return axdr.decode_all(axdr.encode(value))


def sim_meter(profile: VendorProfile | None = None, firmware: str = "1.0.0") -> SimulatedMeter:
    spec = MeterSpec(
        "M1", "00000001", b"SIM\x00\x00\x00\x00\x01", 1, profile or _profile("is15959")
    )
    return SimulatedMeter(replace(spec, firmware_version=firmware))


def images(tmp_path: Path, *data: bytes) -> tuple[ImageStore, list[str]]:
    store = ImageStore(tmp_path / "images", 1 << 20)
    store.open()

    async def one(chunk: bytes) -> AsyncIterator[bytes]:
        yield chunk

    names = [asyncio.run(store.receive(one(d)))[0].sha256 for d in data]
    return store, names


def kind(store: ImageStore, clock: Callable[[], float] = lambda: NOW) -> CommandKind:
    return firmware_kind(
        store, max_attempts=10, backoff=0, attempt_timeout=60, verify_timeout=5, clock=clock
    )


def command(params: dict[str, Any]) -> Command:
    return Command(
        "c1", "M1", "firmware_upgrade", params, CommandState.SENT, "t", NOW, NOW, NOW + 1e5
    )


async def upgrade(spec: CommandKind, session: SimSession, cmd: Command, limit: int = 6) -> Outcome:
    """Run attempts as the router does: a SessionError ends one, the next reconnects."""
    for _ in range(limit):
        try:
            return await spec.run(cast(MeterSession, session), cmd)
        except SessionError:
            cmd.attempts += 1
            session.reconnect()
    pytest.fail(f"no outcome in {limit} attempts")


@pytest.fixture
def store(tmp_path: Path) -> tuple[ImageStore, list[str]]:
    corrupt = bytearray(build_image("6.6.6", b"payload" * 300))
    corrupt[100] ^= 1
    return images(tmp_path, IMAGE, bytes(corrupt), b"vendor image without a known format")


# -- the transfer ---------------------------------------------------------------------------------


async def test_a_full_upgrade_activates_the_image_and_reads_the_version_back(
    store: tuple[ImageStore, list[str]],
) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter()
    session = SimSession(meter)
    cmd = command({"image": sha})
    with capture_logs() as logs:
        outcome = await upgrade(kind(images_), session, cmd)
    assert outcome.succeeded, outcome.detail
    assert meter.firmware_version == "2.0.0"
    assert (
        outcome.detail
        == f"activated: the meter runs 2.0.0 (was 1.0.0); {BLOCKS} blocks sent for {BLOCKS}"
    )
    data = outcome.data
    assert (data["blocks_total"], data["blocks_sent"], data["resumed_from"]) == (BLOCKS, BLOCKS, [])
    assert (data["version_before"], data["version_after"], data["activation"]) == (
        "1.0.0",
        "2.0.0",
        "immediate",
    )
    assert data["image_identifier"] == "2.0.0"  # derived from a hesd-sim image
    assert meter.image_blocks == BLOCKS
    assert session.requests.count("act 18:4") == 1  # activated once
    assert set(session.used) == {"utility"}  # the profile's command_association, every attempt
    assert cmd.attempts == 1  # the meter restarted after activating: a second attempt read it
    events = [e["event"] for e in logs]
    assert events.index("firmware.transfer_started") < events.index("firmware.verified")
    assert events.index("firmware.activation_sent") < events.index("firmware.activated")


async def test_a_broken_connection_resumes_the_transfer(
    store: tuple[ImageStore, list[str]],
) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter()
    session = SimSession(meter, cut_at=9)
    cmd = command({"image": sha})
    with capture_logs() as logs:
        outcome = await upgrade(kind(images_), session, cmd)
    assert outcome.succeeded, outcome.detail
    assert outcome.data["resumed_from"] == [10]  # block 9 arrived, its answer did not
    assert outcome.data["blocks_sent"] == BLOCKS
    assert meter.image_blocks == BLOCKS  # nothing sent twice
    assert session.requests.count("act 18:1") == 1  # initiated once: resumed, not restarted
    assert "resumed from block 10" in outcome.detail
    resumed = [e for e in logs if e["event"] == "firmware.resumed"]
    assert [(e["block"], e["blocks_total"]) for e in resumed] == [(10, BLOCKS)]


async def test_lost_progress_still_resumes_where_the_meter_keeps_the_blocks(
    store: tuple[ImageStore, list[str]],
) -> None:
    """hesd stopped before its progress was stored: it initiates again with the same
    identifier and size, and a meter that keeps the blocks says where to go on."""
    images_, (sha, _, _) = store
    meter = sim_meter()
    session = SimSession(meter, cut_at=4)
    cmd = command({"image": sha})
    with pytest.raises(SessionError):
        await kind(images_).run(cast(MeterSession, session), cmd)
    cmd.progress = None
    session.reconnect()
    outcome = await upgrade(kind(images_), session, cmd)
    assert outcome.succeeded, outcome.detail
    assert outcome.data["resumed_from"] == [5]
    assert meter.image_blocks == BLOCKS


async def test_another_image_on_the_meter_is_started_over(
    store: tuple[ImageStore, list[str]],
) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter()
    session = SimSession(meter)
    other = build_image("9.9.9", bytes(700))
    await session.action(
        x.MethodDescriptor(18, meter.spec.profile.objects.image_transfer, 1),
        (b"9.9.9", axdr.Typed(axdr.Tag.DOUBLE_LONG_UNSIGNED, len(other))),
    )
    cmd = command({"image": sha})
    cmd.progress = {
        "image": sha,
        "initiated": [sha, BLOCK_SIZE],
        "blocks_sent": 3,
        "resumed_from": [],
    }
    outcome = await upgrade(kind(images_), session, cmd)
    assert outcome.succeeded, outcome.detail
    assert outcome.data["resumed_from"] == []
    assert outcome.data["blocks_sent"] == 3 + BLOCKS


async def test_an_association_that_may_not_act_is_a_clear_failure(
    store: tuple[ImageStore, list[str]],
) -> None:
    """The shipped profiles' sessions associate as the meter reader (LLS), which may read."""
    images_, (sha, _, _) = store
    session = SimSession(sim_meter(), association="reader")
    outcome = await upgrade(kind(images_), session, command({"image": sha}))
    assert (outcome.succeeded, outcome.detail) == (
        False,
        "the meter refused image_transfer_initiate: read_write_denied",
    )


def test_resume_point_decisions() -> None:
    target = Target("a" * 64, len(IMAGE), b"2.0.0", "2.0.0", None)
    ours = {"initiated": ["a" * 64, BLOCK_SIZE]}

    def state(status: TransferStatus, bitmap: str | None, first: int | None) -> MeterImage:
        return MeterImage(BLOCK_SIZE, bitmap, first, True, status, ())

    half = "1" * 10 + "0" * (BLOCKS - 10)
    assert resume_point(state(TransferStatus.INITIATED, half, 10), target, ours) == 10
    assert resume_point(state(TransferStatus.VERIFICATION_FAILED, half, 10), target, ours) == 10
    assert resume_point(state(TransferStatus.INITIATED, None, 10), target, ours) == 10
    assert resume_point(state(TransferStatus.INITIATED, half, 10), target, {}) is None  # not ours
    assert resume_point(state(TransferStatus.INITIATED, "1" * 5, 5), target, ours) is None  # size
    assert resume_point(state(TransferStatus.NOT_INITIATED, "", 0), target, ours) is None
    assert resume_point(state(TransferStatus.ACTIVATION_SUCCESSFUL, half, 10), target, ours) is None
    assert resume_point(state(TransferStatus.INITIATED, half, BLOCKS + 1), target, ours) is None
    other_size = {"initiated": ["a" * 64, 128]}
    assert resume_point(state(TransferStatus.INITIATED, half, 10), target, other_size) is None
    holes = "1101" + "1" * (BLOCKS - 4)
    assert missing_blocks(state(TransferStatus.INITIATED, holes, 2), BLOCKS, 2) == [2]
    assert missing_blocks(state(TransferStatus.INITIATED, None, 20), BLOCKS, 20) == [20, 21]


async def test_a_corrupt_image_fails_verification(store: tuple[ImageStore, list[str]]) -> None:
    images_, (_, corrupt, _) = store
    meter = sim_meter()
    session = SimSession(meter)
    params = {"image": corrupt, "version": "6.6.6", "image_identifier": "6.6.6"}
    outcome = await upgrade(kind(images_), session, command(params))
    assert not outcome.succeeded
    assert outcome.detail == (
        "the meter's verification of the image failed (image_verify: other_reason; "
        "image_transfer_status: verification_failed): the image is damaged or not for this meter"
    )
    assert outcome.data["image_transfer_status"] == "verification_failed"
    assert "act 18:4" not in session.requests  # never activated
    assert meter.firmware_version == "1.0.0"


async def test_a_refused_transfer_status_is_not_taken_for_a_number(
    store: tuple[ImageStore, list[str]],
) -> None:
    """A meter that refuses to read image_transfer_status answers read-write-denied (3), which
    is also the number of "verification successful": the upgrade must stop, not activate."""
    images_, (good, _, _) = store
    meter = sim_meter()
    session = SimSession(meter, refused={(18, 6)})
    params = {"image": good, "version": "2.0.0", "image_identifier": "2.0.0"}
    with pytest.raises(SessionError, match=r"image_transfer_status \(attribute 6\) unreadable"):
        await kind(images_).run(cast(MeterSession, session), command(params))
    assert "act 18:4" not in session.requests  # never activated
    assert meter.firmware_version == "1.0.0"


async def test_the_meter_already_running_the_version_is_left_alone(
    store: tuple[ImageStore, list[str]],
) -> None:
    images_, (sha, _, _) = store
    session = SimSession(sim_meter(firmware="2.0.0"))
    outcome = await upgrade(kind(images_), session, command({"image": sha}))
    assert (outcome.succeeded, outcome.detail) == (
        True,
        "the meter already runs 2.0.0: nothing sent",
    )
    assert not any(r.startswith("act") for r in session.requests)


async def test_a_damaged_stored_image_is_not_sent(store: tuple[ImageStore, list[str]]) -> None:
    images_, (sha, _, _) = store
    path = images_.directory / sha
    damaged = bytearray(path.read_bytes())
    damaged[10] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(ImageDamaged, match=f"image {sha}: the stored file is damaged"):
        await images_.read(sha)
    session = SimSession(sim_meter())
    outcome = await upgrade(kind(images_), session, command({"image": sha}))
    assert (outcome.succeeded, outcome.detail) == (
        False,
        f"image {sha}: the stored file is damaged",
    )
    assert session.requests == []


async def test_a_sent_activation_is_repeated_only_if_the_meter_shows_it_never_arrived(
    store: tuple[ImageStore, list[str]],
) -> None:
    """A restart of hesd after image_activate went out (its progress says so, durably)."""
    images_, (sha, _, _) = store
    meter = sim_meter()
    session = SimSession(meter)
    cmd = command({"image": sha})
    # the transfer and verification of an earlier run; its activation was lost on the way
    method = meter.spec.profile.objects.image_transfer
    await session.action(
        x.MethodDescriptor(18, method, 1),
        (b"2.0.0", axdr.Typed(axdr.Tag.DOUBLE_LONG_UNSIGNED, len(IMAGE))),
    )
    for n in range(BLOCKS):
        block = IMAGE[n * BLOCK_SIZE : (n + 1) * BLOCK_SIZE]
        await session.action(
            x.MethodDescriptor(18, method, 2), (axdr.Typed(axdr.Tag.DOUBLE_LONG_UNSIGNED, n), block)
        )
    await session.action(x.MethodDescriptor(18, method, 3), axdr.Typed(axdr.Tag.INTEGER, 0))
    sent = {
        "image": sha,
        "phase": "activate",
        "activation_sent": "2026-01-01T00:00:00Z",
        "blocks_sent": BLOCKS,
        "resumed_from": [],
    }
    cmd.progress = dict(sent)
    with capture_logs() as logs:
        outcome = await upgrade(kind(images_), session, cmd)
    assert outcome.succeeded, outcome.detail
    assert "firmware.activation_resent" in [e["event"] for e in logs]
    assert meter.firmware_version == "2.0.0"

    # the meter lost the image (it restarted into the old firmware): not activated blindly
    fresh = sim_meter()
    session = SimSession(fresh)
    cmd = command({"image": sha})
    cmd.progress = dict(sent)
    outcome = await upgrade(kind(images_), session, cmd)
    assert not outcome.succeeded
    assert outcome.detail == (
        "the activation was sent at 2026-01-01T00:00:00Z; the meter runs 1.0.0, not 2.0.0, and "
        "reports image_transfer_status not_initiated: not activated again (queue a new upgrade "
        "to retry)"
    )
    assert not any(r.startswith("act") for r in session.requests)


async def test_activate_at_is_written_to_the_meters_activation_scheduler(
    tmp_path: Path, store: tuple[ImageStore, list[str]]
) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter(scheduled_profile(tmp_path))
    session = SimSession(meter)
    at = "2026-01-02T03:04:05+00:00"
    outcome = await upgrade(kind(images_), session, command({"image": sha, "activate_at": at}))
    assert outcome.succeeded, outcome.detail
    assert outcome.detail == (
        "image verified; the meter activates it at 2026-01-02T03:04:05Z (2026-01-02T08:34:05 "
        "meter local time), and hesd reads its firmware at every association"
    )
    assert outcome.data["activation"] == "scheduled"
    assert "act 18:4" not in session.requests
    due = dt.datetime.fromisoformat(at).timestamp()
    assert meter.activation_at == due  # meter time; its clock is right
    meter.run_due(due - 1)
    assert meter.firmware_version == "1.0.0"
    meter.run_due(due)  # the meter's clock gets there
    assert meter.firmware_version == "2.0.0"
    assert meter.take_restart()


def test_the_activation_scheduler_takes_an_array_not_a_structure(tmp_path: Path) -> None:
    """execution_time is an array (a list, or typed); an untyped tuple is a structure
    (protocols/dlms/axdr.py), refused as push setup's communication_window refuses it."""
    profile = scheduled_profile(tmp_path)
    meter = sim_meter(profile)
    scheduler = profile.objects.image_activation
    assert scheduler is not None
    execution = x.AttributeDescriptor(22, scheduler, 4)
    entry = (b"\x03\x04\x05\x00", b"\x07\xea\x01\x02\xff")
    assert meter.set("utility", execution, (entry,), NOW) is x.DataAccessResult.TYPE_UNMATCHED
    assert meter.activation_at is None
    assert meter.set("utility", execution, [entry], NOW) is x.DataAccessResult.SUCCESS
    assert meter.activation_at is not None
    typed = axdr.Typed(axdr.Tag.ARRAY, (entry,))
    assert meter.set("utility", execution, typed, NOW) is x.DataAccessResult.SUCCESS


async def test_activate_at_needs_a_scheduler(store: tuple[ImageStore, list[str]]) -> None:
    images_, (sha, _, _) = store
    session = SimSession(sim_meter())
    params = {"image": sha, "activate_at": "2026-02-01T00:00:00Z"}
    outcome = await upgrade(kind(images_), session, command(params))
    assert not outcome.succeeded
    assert "names no image activation scheduler ([objects] image_activation)" in outcome.detail
    assert not any(r.startswith("act") for r in session.requests)  # nothing transferred


async def test_a_past_activate_at_activates_at_once(store: tuple[ImageStore, list[str]]) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter()
    params = {"image": sha, "activate_at": "2025-12-31T00:00:00Z"}
    outcome = await upgrade(kind(images_), SimSession(meter), command(params))
    assert (outcome.succeeded, outcome.data["activation"]) == (True, "immediate")


async def test_disabled_image_transfer_is_a_clear_failure(
    store: tuple[ImageStore, list[str]],
) -> None:
    images_, (sha, _, _) = store
    meter = sim_meter()
    meter.transfer_enabled = False
    outcome = await upgrade(kind(images_), SimSession(meter), command({"image": sha}))
    assert (outcome.succeeded, outcome.detail) == (
        False,
        "image transfer is disabled on the meter (image_transfer_enabled)",
    )


# -- parameters -----------------------------------------------------------------------------------


def test_parameters_are_checked_at_submit(store: tuple[ImageStore, list[str]]) -> None:
    images_, (sha, _, vendor) = store
    check = kind(images_).check
    unknown = "0" * 64
    cases = {
        f"firmware_upgrade: image {unknown} is not stored; upload it first "
        "(POST /api/v1/firmware/images, hesctl firmware upgrade)": {"image": unknown},
        "firmware_upgrade: 'image' must be the SHA-256 of an uploaded image (64 hex digits)": {
            "image": "abc"
        },
        "firmware_upgrade: unknown parameters ['force']; known: ['activate_at', 'image', "
        "'image_identifier', 'version']": {"image": sha, "force": True},
        "firmware_upgrade: activate_at '2026-01-01T00:00:00' has no UTC offset": {
            "image": sha,
            "activate_at": "2026-01-01T00:00:00",
        },
        "firmware_upgrade: image_identifier '0xZZ' is not 0x and hex digits": {
            "image": sha,
            "image_identifier": "0xZZ",
        },
        "firmware_upgrade: 'version' (the firmware version the meter reports once the image is "
        "active, 1..64 characters) cannot be read from this image: give it": {"image": vendor},
        "firmware_upgrade: 'image_identifier' (what the meter expects in image_transfer_initiate) "
        "cannot be derived from this image: give it": {"image": vendor, "version": "KX-3.0"},
    }
    for message, params in cases.items():
        with pytest.raises(CommandRejected) as info:
            check(params)
        assert str(info.value) == message
    target = target_of(
        {"image": vendor, "version": "KX-3.0", "image_identifier": "0x00ff"}, images_
    )
    assert (target.identifier, target.version) == (b"\x00\xff", "KX-3.0")
    assert parse_identifier("KX3 image") == b"KX3 image"


# -- the image store ------------------------------------------------------------------------------


async def chunks(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_the_image_store_keeps_images_whole_and_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images", 5000)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".part-left-by-a-crash").write_bytes(b"x")
    store.open()
    assert list((tmp_path / "images").iterdir()) == []
    info, created = await store.receive(chunks(IMAGE))
    assert created
    assert (info.sha256, info.size, info.version) == (
        hashlib.sha256(IMAGE).hexdigest(),
        len(IMAGE),
        "2.0.0",
    )
    again, created = await store.receive(chunks(IMAGE, 77))
    assert (again, created) == (info, False)
    assert await store.read(info.sha256) == IMAGE
    with pytest.raises(ImageTooLarge, match=r"larger than firmware.max_image_bytes \(5000 bytes\)"):
        await store.receive(chunks(bytes(6000)))
    with pytest.raises(FirmwareError, match="the image is empty"):
        await store.receive(chunks(b""))
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
        info.sha256,
        f"{info.sha256}.json",
    ]
    assert [i.sha256 for i in store.list()] == [info.sha256]
    store.delete(info.sha256)
    assert store.list() == []


@pytest.mark.parametrize(
    "module", ["firmware.py", "firmware_images.py", "image_transfer.py", "api/firmware.py"]
)
def test_the_daemon_reads_images_without_the_simulator(module: str) -> None:
    """The image format and image_transfer_status are hesd.image_transfer's, which hesd-sim
    shares: the daemon's firmware code does not import the simulator."""
    tree = ast.parse((REPO / "hesd" / module).read_text())
    imported = [
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert not [name for name in imported if name.startswith("hesd.sim")]


# -- the router: progress, the kind's time cap ----------------------------------------------------


@dataclass
class Access:
    caps: list[float | None] = field(default_factory=list)

    async def reachable(self, meter_id: str) -> bool:
        return True

    async def request(
        self,
        meter_id: str,
        op: Callable[[MeterSession], Awaitable[_T]],
        time_cap: float | None = None,
    ) -> _T:
        self.caps.append(time_cap)
        return await op(cast(MeterSession, None))


@dataclass
class Sink:
    results: list[CommandResult] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, records: Sequence[CommandResult]) -> asyncio.Future[None]:
        self.results.extend(records)
        self.arrived.set()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def test_progress_is_visible_while_running_and_stored(tmp_path: Path) -> None:
    store = await Store.open(StoreConfig(tmp_path / "hesd.db", 0.0, 100, 1.0))
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    gate, reported = asyncio.Event(), asyncio.Event()

    async def run(session: MeterSession, cmd: Command) -> Outcome:
        cmd.note_progress({"phase": "transfer", "blocks_done": 3, "blocks_total": 9})
        reported.set()
        await gate.wait()
        await cmd.save_progress({"phase": "activate", "blocks_done": 9, "blocks_total": 9})
        return Outcome(True, "done")

    access, sink = Access(), Sink()
    kinds = {"firmware_upgrade": CommandKind("firmware_upgrade", run, timeout=7200.0)}
    router = CommandRouter(store, access, kinds, sink, workers=2)
    task = asyncio.create_task(router.run(), name="router")
    try:
        cmd = await router.submit("M1", "firmware_upgrade", {}, "test", 600)
        async with asyncio.timeout(5):
            await reported.wait()
        live = await router.get(cmd.command_id)
        assert live is not None
        assert (live.state, live.to_json()["progress"]) == (
            CommandState.SENT,
            {"phase": "transfer", "blocks_done": 3, "blocks_total": 9},
        )
        await store.sync()  # what was noted is committed, by the router's flusher
        row = await store.fetchone("SELECT progress FROM commands")
        assert row is not None
        assert msgpack.unpackb(row["progress"])["blocks_done"] == 3
        gate.set()
        async with asyncio.timeout(5):
            await sink.arrived.wait()
        found = await router.get(cmd.command_id)
        assert found is not None
        assert (found.state, found.progress) == (
            CommandState.SUCCEEDED,
            {"phase": "activate", "blocks_done": 9, "blocks_total": 9},
        )
        assert access.caps == [7200.0]
    finally:
        router.close()
        await task
        await store.close()
        await writer


# -- the simulator's side -------------------------------------------------------------------------


def test_the_cut_block_fault_parses_and_is_spent_once() -> None:
    plan = parse_faults("cut_block=7")
    faults = plan.for_meter(1, "M1")
    assert faults is not None
    assert str(faults) == "cut_block=7"
    assert not faults.cut(6)
    assert faults.cut(7)
    assert not faults.cut(7)
    assert str(faults) == ""
    with pytest.raises(FaultSpecError, match="cut_block takes an image block number"):
        parse_faults("cut_block")


# -- the API --------------------------------------------------------------------------------------


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.chdir(REPO)
    config = load_config(None)
    config = replace(
        config,
        store=replace(config.store, path=tmp_path / "hesd.db"),
        firmware=FirmwareConfig(max_image_bytes=8192),
    )
    daemon = Daemon(config, None)
    daemon.images = ImageStore(tmp_path / "images", 8192)
    daemon.images.open()
    daemon.vendors = config.load_vendor_profiles()
    daemon.normalisers = build_normalisers(daemon.vendors)
    store = await Store.open(config.store)
    writer = asyncio.create_task(store.run_writer(), name="store:writer")
    daemon._store, daemon._registry = store, Registry(store)
    await daemon.registry.upsert([MeterEntry("M1", "is15959", "tcp-in")])
    kinds = command_kinds(lambda: daemon.normalisers, images=daemon.images)
    daemon.router = CommandRouter(store, Access(), kinds, None, workers=1)  # not running
    app = build_app(daemon)
    violations: list[str] = []
    app.middlewares.insert(0, contract_middleware(violations))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client
    await store.close()
    await writer
    assert violations == [], "answers that docs/hes-api.yaml does not describe"


async def test_images_are_uploaded_listed_and_kept_while_in_use(client: TestClient) -> None:
    octets = {"Content-Type": "application/octet-stream"}
    first = await client.post("/api/v1/firmware/images", data=IMAGE, headers=octets)
    assert first.status == 201
    body = await first.json()
    sha = hashlib.sha256(IMAGE).hexdigest()
    assert (body["sha256"], body["size"], body["version"], body["in_use"]) == (
        sha,
        len(IMAGE),
        "2.0.0",
        False,
    )
    again = await client.post("/api/v1/firmware/images", data=IMAGE, headers=octets)
    assert again.status == 200
    listing = await (await client.get("/api/v1/firmware/images")).json()
    assert ([i["sha256"] for i in listing["images"]], listing["max_image_bytes"]) == ([sha], 8192)
    queued = await client.post(
        "/api/v1/commands",
        json={"meter_id": "M1", "kind": "firmware_upgrade", "params": {"image": sha}},
    )
    assert queued.status == 202
    assert (await queued.json())["progress"] is None
    busy = await client.delete(f"/api/v1/firmware/images/{sha}")
    assert busy.status == 409
    assert "is used by a queued or running upgrade" in (await busy.json())["detail"]
    assert (await (await client.get(f"/api/v1/firmware/images/{sha}")).json())["in_use"] is True
    await client.delete(f"/api/v1/commands/{(await queued.json())['command_id']}")
    gone = await client.delete(f"/api/v1/firmware/images/{sha}")
    assert gone.status == 204
    missing = await client.get(f"/api/v1/firmware/images/{sha}")
    assert missing.status == 404
    assert (await missing.json())["detail"] == f"firmware image {sha} is not stored"


async def test_bad_uploads_are_problems(client: TestClient) -> None:
    octets = {"Content-Type": "application/octet-stream"}
    declared = await client.post("/api/v1/firmware/images", data=bytes(9000), headers=octets)
    assert declared.status == 413
    assert declared.content_type == "application/problem+json"
    problem = await declared.json()
    assert problem["detail"] == "the image is 9000 bytes; firmware.max_image_bytes is 8192"
    assert problem["max_image_bytes"] == 8192

    async def streamed() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse by
        for _ in range(9):
            yield bytes(1000)

    chunked = await client.post("/api/v1/firmware/images", data=streamed(), headers=octets)
    assert chunked.status == 413
    assert (await chunked.json())[
        "detail"
    ] == "image larger than firmware.max_image_bytes (8192 bytes)"
    wrong = await client.post(
        "/api/v1/firmware/images", data=b"{}", headers={"Content-Type": "application/json"}
    )
    assert wrong.status == 415
    unknown = await client.post(
        "/api/v1/commands",
        json={"meter_id": "M1", "kind": "firmware_upgrade", "params": {"image": "f" * 64}},
    )
    assert unknown.status == 400
    assert (await unknown.json())["detail"].startswith(
        f"firmware_upgrade: image {'f' * 64} is not stored"
    )
    assert problem["title"] == "Payload Too Large"
