"""What the image transfer of Blue Book 4.4.6 (interface class 18) means on both ends: the
daemon's upgrades (``hesd.firmware``, ``hesd.firmware_images``) and the simulator's meters
(``hesd.sim.image``) share ``image_transfer_status`` and the firmware image format hesd-sim
meters take and hesd reads a version from::

    magic      8 octets  b"HESDFW1\\0"
    length     1 octet   n, 1..64
    version    n octets  the firmware version, printable ASCII (becomes firmware_version)
    payload    any       opaque
    digest     32 octets SHA-256 of everything before it

A meter verifies an image by its digest; activation makes ``version`` its firmware version.
"""

from __future__ import annotations

import enum
import hashlib
from typing import Final

__all__ = ["DIGEST_SIZE", "MAGIC", "TransferStatus", "build_image", "parse_image"]

MAGIC: Final = b"HESDFW1\x00"
DIGEST_SIZE: Final = 32  # octets of the SHA-256 that ends an image


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
    """A firmware image in the hesd-sim format (module docstring)."""
    encoded = version.encode("ascii")
    if not 1 <= len(encoded) <= 64 or not encoded.isascii() or not version.isprintable():
        raise ValueError(f"firmware version {version!r} is not 1..64 printable ASCII characters")
    body = MAGIC + bytes((len(encoded),)) + encoded + payload
    return body + hashlib.sha256(body).digest()


def parse_image(image: bytes) -> str | None:
    """The firmware version of a valid image; None if the format or the digest is wrong."""
    if len(image) < len(MAGIC) + 2 + DIGEST_SIZE or not image.startswith(MAGIC):
        return None
    body, digest = image[:-DIGEST_SIZE], image[-DIGEST_SIZE:]
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
