"""Firmware images and what a ``firmware_upgrade`` command asks for.

``ImageStore`` keeps uploaded images under the state directory as ``images/<sha256>``: each is
streamed to a temporary file (hashed and counted on the way, refused past
``[firmware] max_image_bytes``), fsynced and renamed, so that a crash leaves an image whole or
absent; a small ``<sha256>.json`` beside it says when it arrived and, for an image in a format
hesd can read (the hesd-sim format, ``hesd.image_transfer``), the firmware version it activates.
Leftovers of an interrupted upload are removed at start. An image that an unfinished upgrade
uses is kept (``images_in_use``; the API refuses to delete it).

``target_of`` turns a command's parameters into a ``Target``: the image (by SHA-256, stored), the
``image_identifier`` the meter expects in ``image_transfer_initiate`` (given as printable text
or ``0x`` and hex digits; for a hesd-sim image, derived: its version), the firmware ``version``
the meter reports once the image is active (given, or read from the image), and ``activate_at``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
import structlog

from hesd.image_transfer import parse_image
from hesd.router import CommandRejected
from hesd.store import Store
from hesd.timefmt import iso
from protocols.errors import HesdError

__all__ = [
    "SHA256",
    "FirmwareError",
    "ImageDamaged",
    "ImageInfo",
    "ImageNotFound",
    "ImageStore",
    "ImageTooLarge",
    "Target",
    "identifier_text",
    "images_in_use",
    "parse_identifier",
    "target_of",
]

log = structlog.get_logger("hesd.firmware")

SHA256: Final = re.compile(r"[0-9a-f]{64}")


class FirmwareError(HesdError):
    """An image that cannot be stored or found; the message says which and why."""


class ImageTooLarge(FirmwareError):
    pass


class ImageNotFound(FirmwareError):
    pass


class ImageDamaged(FirmwareError):
    """The stored file no longer has the SHA-256 it is named by."""


# -- images ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A stored image: its SHA-256 (its name), size, when it arrived, and the firmware version it
    activates where hesd can read it from the image (else None)."""

    sha256: str
    size: int
    received_at: float
    version: str | None

    def __post_init__(self) -> None:
        if SHA256.fullmatch(self.sha256) is None:
            raise ValueError(f"image name {self.sha256!r} is not 64 lower-case hex digits")
        if self.size < 1:
            raise ValueError(f"image {self.sha256}: size {self.size} is not positive")

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "received_at": iso(self.received_at),
            "version": self.version,
        }


class ImageStore:
    """Firmware images under ``directory``; see the module docstring."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def open(self) -> None:
        """Create the directory; remove what an interrupted upload left."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".part-*"):
            leftover.unlink(missing_ok=True)

    async def receive(self, chunks: AsyncIterable[bytes]) -> tuple[ImageInfo, bool]:
        """Store an image from ``chunks``: (its info, True if new; False: already stored).
        ``ImageTooLarge`` past ``max_bytes``, ``FirmwareError`` for an empty one."""
        part = self.directory / f".part-{uuid.uuid4().hex}"
        digest, size = hashlib.sha256(), 0
        handle = await asyncio.to_thread(part.open, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise ImageTooLarge(
                        f"image larger than firmware.max_image_bytes ({self.max_bytes} bytes)"
                    )
                digest.update(chunk)
                await asyncio.to_thread(handle.write, chunk)
            if size == 0:
                raise FirmwareError("the image is empty")
            await asyncio.to_thread(_sync_close, handle)
            sha = digest.hexdigest()
            found = await asyncio.to_thread(self.info, sha)
            if found is not None:
                return found, False
            version = await asyncio.to_thread(_image_version, part)
            info = ImageInfo(sha, size, time.time(), version)
            await asyncio.to_thread(self._commit, part, info)
        finally:
            handle.close()
            part.unlink(missing_ok=True)
        log.info("firmware.image_stored", image=sha, size=size, version=version)
        return info, True

    def _commit(self, part: Path, info: ImageInfo) -> None:
        meta = self.directory / f".part-{uuid.uuid4().hex}.json"
        meta.write_text(json.dumps({"received_at": info.received_at, "version": info.version}))
        with meta.open("rb") as handle:
            os.fsync(handle.fileno())
        meta.replace(self.directory / f"{info.sha256}.json")
        part.replace(self.directory / info.sha256)  # the image exists from here on
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def info(self, sha256: str) -> ImageInfo | None:
        """The stored image ``sha256``, or None."""
        if SHA256.fullmatch(sha256) is None:
            return None
        path = self.directory / sha256
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        meta: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            meta = json.loads((self.directory / f"{sha256}.json").read_text())
        received = meta.get("received_at")
        version = meta.get("version")
        return ImageInfo(
            sha256,
            stat.st_size,
            float(received) if isinstance(received, int | float) else stat.st_mtime,
            version if isinstance(version, str) else None,
        )

    def list(self) -> list[ImageInfo]:
        """Every stored image, oldest first."""
        found = [self.info(p.name) for p in self.directory.glob("*") if SHA256.fullmatch(p.name)]
        return sorted((i for i in found if i is not None), key=lambda i: i.received_at)

    async def read(self, sha256: str) -> bytes:
        """The stored image, checked against its SHA-256 (in a thread: up to
        ``max_image_bytes`` read and hashed); ``ImageNotFound``, ``ImageDamaged``."""
        return await asyncio.to_thread(self._read, sha256)

    def _read(self, sha256: str) -> bytes:
        if self.info(sha256) is None:
            raise ImageNotFound(f"image {sha256} is not stored (hesctl firmware images)")
        data = (self.directory / sha256).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ImageDamaged(f"image {sha256}: the stored file is damaged")
        return data

    def delete(self, sha256: str) -> None:
        if self.info(sha256) is None:
            raise ImageNotFound(f"image {sha256} is not stored")
        (self.directory / sha256).unlink()
        (self.directory / f"{sha256}.json").unlink(missing_ok=True)
        log.info("firmware.image_deleted", image=sha256)


def _sync_close(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _image_version(path: Path) -> str | None:
    """The firmware version an image activates, for the formats hesd reads (hesd-sim's)."""
    return parse_image(path.read_bytes())


async def images_in_use(store: Store) -> set[str]:
    """Images that a queued or sent firmware upgrade uses (they must be kept)."""
    rows = await store.fetchall(
        "SELECT params FROM commands WHERE kind = 'firmware_upgrade' "
        "AND state IN ('queued', 'sent')"
    )
    return {str(msgpack.unpackb(r["params"]).get("image")) for r in rows}


# -- parameters -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What one upgrade installs: the image, its identifier, the version it activates."""

    sha256: str
    size: int
    identifier: bytes  # image_identifier of image_transfer_initiate (octet-string)
    version: str  # what the meter reports once the image is active
    activate_at: dt.datetime | None  # UTC; None: at once

    def __post_init__(self) -> None:
        if not 1 <= len(self.identifier) <= 255:
            raise ValueError("image_identifier is not 1..255 octets")
        if not self.version:
            raise ValueError("the firmware version is empty")

    def blocks(self, block_size: int) -> int:
        return -(-self.size // block_size)


def parse_identifier(text: str) -> bytes:
    """``image_identifier`` as given: printable ASCII text, or ``0x`` and hex digits."""
    if text.startswith("0x"):
        try:
            raw = bytes.fromhex(text[2:])
        except ValueError:
            raise CommandRejected(
                f"firmware_upgrade: image_identifier {text!r} is not 0x and hex digits"
            ) from None
    elif text.isascii() and text.isprintable():
        raw = text.encode()
    else:
        raise CommandRejected(
            "firmware_upgrade: image_identifier must be printable ASCII, or 0x and hex digits"
        )
    if not 1 <= len(raw) <= 255:
        raise CommandRejected("firmware_upgrade: image_identifier must be 1..255 octets")
    return raw


def identifier_text(raw: bytes) -> str:
    return raw.decode() if raw.isascii() and raw.decode().isprintable() else "0x" + raw.hex()


def _activate_at(value: object) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CommandRejected("firmware_upgrade: activate_at must be an ISO 8601 date-time")
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandRejected(
            f"firmware_upgrade: activate_at {value!r} is not an ISO 8601 date-time"
        ) from None
    if moment.tzinfo is None:
        raise CommandRejected(f"firmware_upgrade: activate_at {value!r} has no UTC offset")
    return moment.astimezone(dt.UTC)


_PARAMS: Final = frozenset({"image", "image_identifier", "version", "activate_at"})


def target_of(params: Mapping[str, Any], images: ImageStore) -> Target:
    """The upgrade's target from its parameters and the stored image; ``CommandRejected``
    names what is wrong."""
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise CommandRejected(
            f"firmware_upgrade: unknown parameters {unknown}; known: {sorted(_PARAMS)}"
        )
    sha = params.get("image")
    if not isinstance(sha, str) or SHA256.fullmatch(sha) is None:
        raise CommandRejected(
            "firmware_upgrade: 'image' must be the SHA-256 of an uploaded image (64 hex digits)"
        )
    info = images.info(sha)
    if info is None:
        raise CommandRejected(
            f"firmware_upgrade: image {sha} is not stored; upload it first "
            "(POST /api/v1/firmware/images, hesctl firmware upgrade)"
        )
    version = params.get("version", info.version)
    if not isinstance(version, str) or not version.strip() or len(version) > 64:
        raise CommandRejected(
            "firmware_upgrade: 'version' (the firmware version the meter reports once the image "
            "is active, 1..64 characters) cannot be read from this image: give it"
        )
    given = params.get("image_identifier")
    if given is None:
        if info.version is None:
            raise CommandRejected(
                "firmware_upgrade: 'image_identifier' (what the meter expects in "
                "image_transfer_initiate) cannot be derived from this image: give it"
            )
        identifier = info.version.encode()  # hesd-sim images: the version they activate
    elif isinstance(given, str):
        identifier = parse_identifier(given)
    else:
        raise CommandRejected("firmware_upgrade: 'image_identifier' must be a string")
    return Target(
        sha, info.size, identifier, version.strip(), _activate_at(params.get("activate_at"))
    )
