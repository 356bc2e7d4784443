"""Firmware upgrades over the air: the ``firmware_upgrade`` command kind.

Images and the command's parameters are ``hesd.firmware_images``. The upgrade is the image
transfer process of Blue Book 4.4.6 (interface class 18), one attempt per ``run`` (the router
retries a ``SessionError`` up to ``[firmware] max_attempts`` times):

1. read the active firmware version; if it is already the image's, the upgrade is done (an
   earlier attempt activated it, and the meter restarted before it could be read back);
2. read ``image_block_size`` (attribute 2), ``image_transferred_blocks_status`` (3),
   ``image_first_not_transferred_block_number`` (4), ``image_transfer_enabled`` (5),
   ``image_transfer_status`` (6) and ``image_to_activate_info`` (7);
3. transfer (4.4.6.4 steps 2 to 4): where the meter is still in the transfer this upgrade
   initiated (status initiated or verification failed or under way, the same block size, and a
   ``image_transferred_blocks_status`` as long as this image has blocks), the blocks it lacks are
   sent without initiating again: the transfer *resumes*. Otherwise ``image_transfer_initiate``
   (method 1) with the identifier and size, then attributes 4 and 3 read again (a meter that
   keeps the blocks of an image initiated again with the same identifier and size resumes too),
   then ``image_block_transfer`` (method 2) for every block it lacks, and attribute 4 read back;
4. ``image_verify`` (method 3, step 5), polling attribute 6 while the meter verifies in the
   background; a meter holding this very image verified (attribute 7) skips 3 and 4;
5. activation (step 7): ``image_activate`` (method 4) at once, or, with ``activate_at`` in the
   future, ``execution_time`` of the meter's image activation scheduler (IC 22, Blue Book
   4.5.7, ``[objects] image_activation`` of the vendor profile) written and read back;
6. after ``image_activate`` the meter restarts with the new firmware: the next request (the
   read-back, or the next attempt's first) associates afresh, the session reads the firmware
   version after association (the registry keeps it), and the upgrade succeeds only if it is
   the image's version.

Activation is never sent twice blindly. Before ``image_activate`` goes out, the progress says so
durably (``Command.save_progress``). An attempt that finds it sent (a retry, or after a restart
of hesd) and the meter not running the image's version activates again only if the meter shows
that the first never took effect: it still holds this image verified (status verification
successful, attribute 7 naming it). Otherwise the upgrade fails, saying what the meter reports.

Progress (``Command.note_progress``, in the command's JSON): phase, blocks done of the total,
blocks sent over all attempts, and the blocks each resumed attempt began at.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog

from hesd.command_settings import acting, integer_of
from hesd.firmware_images import (
    ImageDamaged,
    ImageNotFound,
    ImageStore,
    Target,
    identifier_text,
    target_of,
)
from hesd.image_transfer import TransferStatus
from hesd.router import Command, CommandKind, CommandRejected, Outcome
from hesd.session import MeterSession, SessionError
from hesd.timefmt import iso
from protocols.dlms import apdu as x
from protocols.dlms.axdr import BitString, Tag, Typed, Value
from protocols.dlms.calendar import Date, DateTime, Time
from protocols.errors import HesdError

__all__ = [
    "IMAGE_TRANSFER_CLASS",
    "MeterImage",
    "TransferStatus",
    "Upgrade",
    "firmware_kind",
    "missing_blocks",
    "resume_point",
]

log = structlog.get_logger("hesd.firmware")

IMAGE_TRANSFER_CLASS: Final = 18  # Blue Book 4.4.6
SCHEDULE_CLASS: Final = 22  # Blue Book 4.5.7 single action schedule
CLOCK_CLASS: Final = 8
POLL_INTERVAL: Final = 1.0  # seconds between reads of image_transfer_status
ACTIVATE_NOW_WITHIN: Final = 60.0  # an activate_at closer than this activates at once


_RESUMABLE: Final = frozenset(
    {
        TransferStatus.INITIATED,
        TransferStatus.VERIFICATION_INITIATED,
        TransferStatus.VERIFICATION_FAILED,
    }
)


# -- what the meter reports -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MeterImage:
    """The image transfer object's state as the meter reports it (Blue Book 4.4.6, 2..7)."""

    block_size: int
    bitmap: str | None  # attribute 3, "1" per block received; None: not readable
    first_missing: int | None  # attribute 4
    enabled: bool
    status: TransferStatus
    to_activate: tuple[tuple[int, bytes], ...]  # attribute 7: (size, identifier) per image

    def __post_init__(self) -> None:
        if self.block_size < 1:
            raise ValueError(f"image_block_size {self.block_size} is not positive")

    def holds_verified(self, target: Target) -> bool:
        """The meter holds this image, verified, ready to activate."""
        return (
            self.status is TransferStatus.VERIFICATION_SUCCESSFUL
            and (target.size, target.identifier) in self.to_activate
        )


def resume_point(state: MeterImage, target: Target, progress: Mapping[str, Any]) -> int | None:
    """The block a transfer can continue from without initiating it again, or None.

    It can when this upgrade initiated the transfer the meter is in (its progress names this
    image and block size) and the meter is still in it (status initiated, or verifying, or
    verification failed for missing blocks) with as many blocks as this image has. Blue Book
    4.4.6.4: a client resumes an interrupted transfer from image_first_not_transferred_block.
    """
    if state.status not in _RESUMABLE:
        return None
    if progress.get("initiated") != [target.sha256, state.block_size]:
        return None
    total = target.blocks(state.block_size)
    if state.bitmap is not None and len(state.bitmap) != total:
        return None  # the meter is receiving an image of another size
    if state.first_missing is None or not 0 <= state.first_missing <= total:
        return None
    return state.first_missing


def missing_blocks(state: MeterImage, total: int, start: int) -> list[int]:
    """The blocks from ``start`` the meter lacks: by its bitmap where it gives one of the
    right length, else every block from ``start`` on."""
    bitmap = state.bitmap
    if bitmap is None or len(bitmap) != total:
        return list(range(start, total))
    return [n for n in range(start, total) if bitmap[n] != "1"]


def _octets(value: object) -> bytes | None:
    if isinstance(value, Typed):
        value = value.value
    return value if isinstance(value, bytes) else None


def _to_activate(value: Value | x.DataAccessResult) -> tuple[tuple[int, bytes], ...]:
    """image_to_activate_info: array of structure { size, identifier, signature }."""
    if isinstance(value, Typed):
        value = value.value  # type: ignore[assignment]
    if not isinstance(value, list | tuple):
        return ()
    found = []
    for item in value:
        inner = item.value if isinstance(item, Typed) else item
        if isinstance(inner, list | tuple) and len(inner) >= 2:
            size, identifier = integer_of(inner[0]), _octets(inner[1])
            if size is not None and identifier is not None:
                found.append((size, identifier))
    return tuple(found)


class Upgrade:
    """One attempt of one upgrade on one meter's session (see the module docstring)."""

    def __init__(
        self,
        session: MeterSession,
        cmd: Command,
        target: Target,
        image: bytes,
        *,
        verify_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.session, self.cmd, self.target, self.image = session, cmd, target, image
        self.verify_timeout = verify_timeout
        self.clock = clock
        self.meter = session.meter_id
        self.obis = session.settings.profile.objects.image_transfer
        self.progress: dict[str, Any] = dict(cmd.progress or {})
        if self.progress.get("image") != target.sha256:  # another image: nothing carries over
            self.progress = {"image": target.sha256, "blocks_sent": 0, "resumed_from": []}

    # -- reading the meter ----------------------------------------------------------------

    async def _get(self, attribute: int) -> Value | x.DataAccessResult:
        return await self.session.get(
            x.AttributeDescriptor(IMAGE_TRANSFER_CLASS, self.obis, attribute)
        )

    async def _act(self, method: int, parameters: Value) -> x.ActionResult:
        result, _ = await self.session.action(
            x.MethodDescriptor(IMAGE_TRANSFER_CLASS, self.obis, method), parameters
        )
        return result

    async def firmware(self) -> str | None:
        """The version the meter runs: the one it reported on this connection (the session
        reads it right after association), not a second GET."""
        return await self.session.running_firmware()

    async def status(self) -> TransferStatus:
        answer = await self._get(6)
        number = integer_of(answer)
        try:
            return TransferStatus(-1 if number is None else number)
        except ValueError:
            raise SessionError(
                f"meter {self.meter}: image transfer {self.obis}: image_transfer_status "
                f"(attribute 6) unreadable: {answer!r}"
            ) from None

    async def state(self) -> MeterImage:
        size, enabled = integer_of(await self._get(2)), await self._get(5)
        if size is None or size < 1 or not isinstance(enabled, bool):
            raise SessionError(
                f"meter {self.meter}: image transfer {self.obis}: unreadable image_block_size "
                f"or image_transfer_enabled ({size!r}, {enabled!r})"
            )
        bits = await self._get(3)
        return MeterImage(
            block_size=size,
            bitmap=bits.bits if isinstance(bits, BitString) else None,
            first_missing=integer_of(await self._get(4)),
            enabled=enabled,
            status=await self.status(),
            to_activate=_to_activate(await self._get(7)),
        )

    # -- the attempt ----------------------------------------------------------------------

    def _note(self, **changes: Any) -> None:
        self.progress.update(changes)
        self.cmd.note_progress(self.progress)

    def _data(self, **extra: Any) -> dict[str, Any]:
        keys = ("phase", "block_size", "blocks_total", "blocks_done", "blocks_sent", "resumed_from")
        return {
            "image": self.target.sha256,
            "image_identifier": identifier_text(self.target.identifier),
            "image_size": self.target.size,
            "version": self.target.version,
            "version_before": self.progress.get("version_before"),
            **{k: self.progress.get(k) for k in keys},
            **extra,
        }

    def _fail(self, detail: str, **extra: Any) -> Outcome:
        log.warning("firmware.failed", meter=self.meter, command=self.cmd.command_id, reason=detail)
        return Outcome(False, detail, data=self._data(**extra))

    async def run(self) -> Outcome:
        target = self.target
        running = await self.firmware()
        self.progress.setdefault("version_before", running)
        if running == target.version:
            return self._done(running)
        scheduler = self.session.settings.profile.objects.image_activation
        later = self._scheduled()
        if later and scheduler is None:
            return self._fail(
                f"activate_at: vendor {self.session.settings.profile.name}'s profile names no "
                "image activation scheduler ([objects] image_activation); activate at once"
            )
        state = await self.state()
        if not state.enabled:
            return self._fail("image transfer is disabled on the meter (image_transfer_enabled)")
        total = target.blocks(state.block_size)
        self._note(block_size=state.block_size, blocks_total=total)
        if self.progress.get("activation_sent"):
            return await self._after_activation(state, running)
        if not state.holds_verified(target):
            await self._transfer(state, total)
            failed = await self._verify()
            if failed is not None:
                return failed
        if later:
            return await self._schedule()
        return await self._activate()

    def _scheduled(self) -> bool:
        at = self.target.activate_at
        return at is not None and at.timestamp() > self.clock() + ACTIVATE_NOW_WITHIN

    def _done(self, running: str | None) -> Outcome:
        self._note(phase="done")
        progress = self.progress
        if not progress.get("activation_sent"):
            detail = f"the meter already runs {running}: nothing sent"
            return Outcome(True, detail, data=self._data(version_after=running, activation="none"))
        detail = (
            f"activated: the meter runs {running} (was {progress.get('version_before')}); "
            f"{progress.get('blocks_sent', 0)} blocks sent for {progress.get('blocks_total')}"
        )
        resumed = progress.get("resumed_from") or []
        if resumed:
            detail += ", resumed from block " + ", ".join(str(b) for b in resumed)
        log.info(
            "firmware.activated", meter=self.meter, command=self.cmd.command_id, version=running
        )
        return Outcome(True, detail, data=self._data(version_after=running, activation="immediate"))

    async def _transfer(self, state: MeterImage, total: int) -> None:
        """Blue Book 4.4.6.4 steps 2-4: initiate (or resume), then the blocks the meter lacks."""
        target = self.target
        start = resume_point(state, target, self.progress)
        if start is None:
            parameters = (target.identifier, Typed(Tag.DOUBLE_LONG_UNSIGNED, target.size))
            result = await self._act(1, parameters)  # image_transfer_initiate
            if result is not x.ActionResult.SUCCESS:
                raise _Refused(f"the meter refused image_transfer_initiate: {result.name.lower()}")
            self._note(initiated=[target.sha256, state.block_size])
            state = await self.state()  # a meter may keep the blocks of the same image
            start = state.first_missing if state.first_missing is not None else 0
            start = min(max(start, 0), total)
        todo = missing_blocks(state, total, start)
        done = total - len(todo)
        if done:
            self.progress["resumed_from"] = [
                *self.progress.get("resumed_from", []),
                todo[0] if todo else total,
            ]
            log.info(
                "firmware.resumed",
                meter=self.meter,
                command=self.cmd.command_id,
                block=todo[0] if todo else total,
                blocks_total=total,
            )
        else:
            log.info(
                "firmware.transfer_started",
                meter=self.meter,
                command=self.cmd.command_id,
                blocks_total=total,
            )
        self._note(phase="transfer", blocks_done=done)
        for _ in range(2):  # a second pass for blocks the meter says it still lacks
            for number in todo:
                self._note(blocks_sent=self.progress.get("blocks_sent", 0) + 1)  # sent, even if
                await self._block(number, state.block_size)  # its answer is lost
                done += 1
                self._note(blocks_done=done)
            after = await self.state()
            todo = missing_blocks(
                after, total, after.first_missing if after.first_missing is not None else total
            )
            if not todo:
                return
            done = total - len(todo)
        raise _Refused(
            f"the meter still lacks {len(todo)} blocks after two passes (from block {todo[0]})"
        )

    async def _block(self, number: int, size: int) -> None:
        chunk = self.image[number * size : (number + 1) * size]
        result = await self._act(2, (Typed(Tag.DOUBLE_LONG_UNSIGNED, number), chunk))
        if result is not x.ActionResult.SUCCESS:
            raise _Refused(f"the meter refused image block {number}: {result.name.lower()}")

    async def _verify(self) -> Outcome | None:
        """Blue Book 4.4.6.4 step 5: image_verify, polling image_transfer_status while the
        meter verifies in the background (the method answers temporary-failure)."""
        self._note(phase="verify")
        result = await self._act(3, Typed(Tag.INTEGER, 0))
        status = await self._settle(
            result, {TransferStatus.VERIFICATION_SUCCESSFUL, TransferStatus.VERIFICATION_FAILED}
        )
        if result is x.ActionResult.SUCCESS or status is TransferStatus.VERIFICATION_SUCCESSFUL:
            log.info("firmware.verified", meter=self.meter, command=self.cmd.command_id)
            return None
        return self._fail(
            f"the meter's verification of the image failed (image_verify: "
            f"{result.name.lower()}; image_transfer_status: {status.name.lower()}): the image is "
            "damaged or not for this meter",
            image_verify=result.name.lower(),
            image_transfer_status=status.name.lower(),
        )

    async def _settle(self, result: x.ActionResult, final: set[TransferStatus]) -> TransferStatus:
        """image_transfer_status once it is one of ``final`` (polled for at most
        ``verify_timeout`` while the method said temporary-failure), else what it is."""
        status = await self.status()
        if result is not x.ActionResult.TEMPORARY_FAILURE:
            return status
        deadline = time.monotonic() + self.verify_timeout
        while status not in final:
            if time.monotonic() >= deadline:
                raise SessionError(
                    f"meter {self.meter}: image_transfer_status still {status.name.lower()} "
                    f"after {self.verify_timeout:g} s"
                )
            await asyncio.sleep(POLL_INTERVAL)
            status = await self.status()
        return status

    async def _activate(self) -> Outcome:
        """Blue Book 4.4.6.4 step 7: image_activate, recorded durably before it goes out."""
        await self.cmd.save_progress(
            {**self.progress, "phase": "activate", "activation_sent": iso(self.clock())}
        )
        self.progress = dict(self.cmd.progress or self.progress)
        log.info("firmware.activation_sent", meter=self.meter, command=self.cmd.command_id)
        result = await self._act(4, Typed(Tag.INTEGER, 0))
        if result not in (x.ActionResult.SUCCESS, x.ActionResult.TEMPORARY_FAILURE):
            return self._fail(f"the meter refused image_activate: {result.name.lower()}")
        status = await self._settle(
            result, {TransferStatus.ACTIVATION_SUCCESSFUL, TransferStatus.ACTIVATION_FAILED}
        )
        return await self._read_back(status)

    async def _read_back(self, status: TransferStatus) -> Outcome:
        self.session.forget_identity()  # the meter's identity is read again, and kept
        running = await self.firmware()
        if running == self.target.version:
            return self._done(running)
        return self._fail(
            f"after activation the meter runs {running}, not {self.target.version} "
            f"(image_transfer_status {status.name.lower()})",
            version_after=running,
        )

    async def _after_activation(self, state: MeterImage, running: str | None) -> Outcome:
        """The activation went out in an earlier attempt, and the meter does not run the
        image's version: activate again only if the meter shows the first never arrived."""
        if state.holds_verified(self.target):
            log.warning("firmware.activation_resent", meter=self.meter, command=self.cmd.command_id)
            return await self._activate()
        if state.status is TransferStatus.ACTIVATION_INITIATED:
            return await self._read_back(
                await self._settle(
                    x.ActionResult.TEMPORARY_FAILURE,
                    {TransferStatus.ACTIVATION_SUCCESSFUL, TransferStatus.ACTIVATION_FAILED},
                )
            )
        return self._fail(
            f"the activation was sent at {self.progress.get('activation_sent')}; the meter runs "
            f"{running}, not {self.target.version}, and reports image_transfer_status "
            f"{state.status.name.lower()}: not activated again (queue a new upgrade to retry)",
            version_after=running,
        )

    async def _schedule(self) -> Outcome:
        """activate_at: the image activation scheduler's execution_time (IC 22 attribute 4,
        array of structure { time, date } in the meter's local time), written and read back."""
        at = self.target.activate_at
        assert at is not None
        profile = self.session.settings.profile
        scheduler = profile.objects.image_activation
        assert scheduler is not None
        deviation = await self._deviation()
        local = (at + dt.timedelta(minutes=-deviation)).replace(tzinfo=None, microsecond=0)
        written = (
            Time.from_time(local.time()).to_octets(),
            Date.from_date(local.date()).to_octets(),
        )
        execution: list[Value] = [written]
        attribute = x.AttributeDescriptor(SCHEDULE_CLASS, scheduler, 4)
        result = await self.session.set(attribute, execution)
        if result is not x.DataAccessResult.SUCCESS:
            return self._fail(
                f"the meter refused the activation time {local.isoformat()} (meter local time): "
                f"{result.name.lower()}"
            )
        back = await self.session.get(attribute)
        if not _same_schedule(back, written):
            return self._fail(f"the activation time read back is {back!r}, not what was written")
        self._note(phase="scheduled", activate_at=iso(at.timestamp()))
        log.info(
            "firmware.activation_scheduled",
            meter=self.meter,
            command=self.cmd.command_id,
            at=iso(at.timestamp()),
        )
        return Outcome(
            True,
            f"image verified; the meter activates it at {iso(at.timestamp())} "
            f"({local.isoformat()} meter local time), and hesd reads its firmware at every "
            "association",
            data=self._data(activation="scheduled", activate_at=iso(at.timestamp())),
        )

    async def _deviation(self) -> int:
        """The meter's deviation (UTC = local + deviation, minutes) from its clock, else the
        profile's utc_offset."""
        clock = self.session.settings.profile.objects.clock
        value = await self.session.get(x.AttributeDescriptor(CLOCK_CLASS, clock, 2))
        with contextlib.suppress(HesdError, TypeError, ValueError):
            if isinstance(value, bytes):
                value = DateTime.from_octets(value)
            if isinstance(value, DateTime) and value.deviation is not None:
                return value.deviation
        return -self.session.settings.profile.utc_offset


def _same_schedule(value: Value | x.DataAccessResult, written: tuple[bytes, bytes]) -> bool:
    if isinstance(value, Typed):
        value = value.value  # type: ignore[assignment]
    if not isinstance(value, list | tuple) or len(value) != 1:
        return False
    item = value[0].value if isinstance(value[0], Typed) else value[0]
    return isinstance(item, list | tuple) and tuple(_octets(v) for v in item) == written


class _Refused(HesdError):
    """The meter refused a step of the transfer: the upgrade fails with this detail."""


# -- the command kind -----------------------------------------------------------------------------


def firmware_kind(
    images: ImageStore,
    *,
    max_attempts: int,
    backoff: float,
    attempt_timeout: float,
    verify_timeout: float,
    clock: Callable[[], float] = time.time,
) -> CommandKind:
    """``firmware_upgrade``: its parameters are checked against the stored images at submit."""

    async def run(session: MeterSession, cmd: Command) -> Outcome:
        try:
            target = target_of(cmd.params, images)
            image = await images.read(target.sha256)  # checked against its SHA-256
        except (CommandRejected, ImageNotFound, ImageDamaged) as exc:
            return Outcome(False, str(exc))
        upgrade = Upgrade(session, cmd, target, image, verify_timeout=verify_timeout, clock=clock)
        try:
            return await upgrade.run()
        except _Refused as exc:
            return upgrade._fail(str(exc))

    def check(params: Mapping[str, Any]) -> None:
        target_of(params, images)

    return CommandKind(
        "firmware_upgrade",
        acting(run),  # under the profile's [session] command_association
        check,
        max_attempts=max_attempts,
        backoff=backoff,
        rerunnable=True,  # every attempt starts from what the meter reports; see the docstring
        timeout=attempt_timeout,
    )
