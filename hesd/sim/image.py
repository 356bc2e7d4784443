"""The image transfer process of a simulated meter (Blue Book 4.4.6, IC 18).

The image format a simulated meter takes (``build_image`` makes it, ``parse_image`` reads its
version) and ``image_transfer_status`` are ``hesd.image_transfer``'s, which the daemon shares;
they are re-exported here for the simulator's users.

``ImageTransfer`` is the state a meter holds only while a transfer is in progress: the image
identifier and size, the octets received, and a bitmap of the blocks. Initiating again with the
same identifier and size resumes (the blocks already received are kept); another identifier
starts over.
"""

from __future__ import annotations

from typing import Final

from hesd.image_transfer import DIGEST_SIZE, MAGIC, TransferStatus, build_image, parse_image
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

BLOCK_SIZE: Final = 192  # image_block_size, octets
MAX_IMAGE_SIZE: Final = 4 << 20  # a simulated meter refuses bigger images


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
        return bytes(self.data[-DIGEST_SIZE:]) if self.size >= DIGEST_SIZE else b""
