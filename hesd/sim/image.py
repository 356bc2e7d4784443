"""Firmware images for simulated meters, and the image transfer process (Blue Book 4.4.6, IC 18).

The simulator's image format (what ``build_image`` makes and ``parse_image`` accepts)::

    magic      8 octets  b"HESDFW1\\0"
    length     1 octet   n, 1..64
    version    n octets  the firmware version, printable ASCII (becomes firmware_version)
    payload    any       opaque
    digest     32 octets SHA-256 of everything before it

A meter verifies an image by its digest; activation makes ``version`` its firmware version.

``ImageTransfer`` is the state a meter holds only while a transfer is in progress: the image
identifier and size, the octets received, and a bitmap of the blocks. Initiating again with the
same identifier and size resumes (the blocks already received are kept); another identifier
starts over.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Final

from protocols.dlms.apdu import ActionResult
from protocols.dlms.axdr import BitString

__all__ = [
    "BLOCK_SIZE",
    "MAGIC",
    "MAX_IMAGE_SIZE",
    "ImageTransfer",
    "TransferStatus",
    "build_image",
    "parse_image",
]

MAGIC: Final = b"HESDFW1\x00"
BLOCK_SIZE: Final = 192  # image_block_size, octets
MAX_IMAGE_SIZE: Final = 4 << 20  # a simulated meter refuses bigger images
_DIGEST: Final = 32


class TransferStatus(enum.IntEnum):
    """image_transfer_status (Blue Book 4.4.6, attribute 6)."""

    NOT_INITIATED = 0
    INITIATED = 1
    VERIFICATION_INITIATED = 2
    VERIFICATION_SUCCESSFUL = 3
    VERIFICATION_FAILED = 4
    ACTIVATION_INITIATED = 5
    ACTIVATION_SUCCESSFUL = 6
    ACTIVATION_FAILED = 7


def build_image(version: str, payload: bytes) -> bytes:
    """A firmware image in the simulator's format (module docstring)."""
    encoded = version.encode("ascii")
    if not 1 <= len(encoded) <= 64 or not encoded.isascii() or not version.isprintable():
        raise ValueError(f"firmware version {version!r} is not 1..64 printable ASCII characters")
    body = MAGIC + bytes((len(encoded),)) + encoded + payload
    return body + hashlib.sha256(body).digest()


def parse_image(image: bytes) -> str | None:
    """The firmware version of a valid image; None if the format or the digest is wrong."""
    if len(image) < len(MAGIC) + 2 + _DIGEST or not image.startswith(MAGIC):
        return None
    body, digest = image[:-_DIGEST], image[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        return None
    length = body[len(MAGIC)]
    version = body[len(MAGIC) + 1 : len(MAGIC) + 1 + length]
    if not 1 <= length <= 64 or len(version) != length:
        return None
    try:
        text = version.decode("ascii")
    except UnicodeDecodeError:
        return None
    return text if text.isprintable() else None


class ImageTransfer:
    """One image being transferred to one meter."""

    __slots__ = ("_received", "data", "identifier", "size", "status", "version")

    def __init__(self, identifier: bytes, size: int) -> None:
        self.identifier = identifier
        self.size = size
        self.data = bytearray(size)
        self._received = bytearray(self.blocks)  # 1 per block received
        self.status = TransferStatus.INITIATED
        self.version: str | None = None  # set by a successful verification

    @property
    def blocks(self) -> int:
        return -(-self.size // BLOCK_SIZE)

    def block(self, number: int, octets: bytes) -> ActionResult:
        """image_block_transfer: store block ``number`` (Blue Book 4.4.6, method 2)."""
        if not 0 <= number < self.blocks:
            return ActionResult.OTHER_REASON
        start = number * BLOCK_SIZE
        expected = min(BLOCK_SIZE, self.size - start)
        if len(octets) != expected:
            return ActionResult.OTHER_REASON
        self.data[start : start + expected] = octets
        self._received[number] = 1
        self.status = TransferStatus.INITIATED
        self.version = None
        return ActionResult.SUCCESS

    def bitmap(self) -> BitString:
        """image_transferred_blocks_status: bit n set when block n has arrived."""
        return BitString.from_bits("".join("1" if r else "0" for r in self._received))

    def first_missing(self) -> int:
        """image_first_not_transferred_block_number (the number of blocks when none is)."""
        index = self._received.find(0)
        return self.blocks if index < 0 else index

    def verify(self) -> ActionResult:
        """image_verify (method 3): every block there and the image valid."""
        if self.first_missing() < self.blocks:
            self.status = TransferStatus.VERIFICATION_FAILED
            return ActionResult.OTHER_REASON
        self.version = parse_image(bytes(self.data))
        if self.version is None:
            self.status = TransferStatus.VERIFICATION_FAILED
            return ActionResult.OTHER_REASON
        self.status = TransferStatus.VERIFICATION_SUCCESSFUL
        return ActionResult.SUCCESS

    def digest(self) -> bytes:
        return bytes(self.data[-_DIGEST:]) if self.size >= _DIGEST else b""
