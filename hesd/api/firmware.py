"""Firmware image routes of the hesd API (``docs/hes-api.yaml``, tag ``firmware``).

* ``POST /api/v1/firmware/images``: the image as ``application/octet-stream``, streamed to the
  image store (``hesd.firmware_images``), refused with 413 past ``[firmware] max_image_bytes``;
  201 with the image (``sha256``, ``size``, ``received_at``, ``version``), or 200 when the same
  image was stored already;
* ``GET /api/v1/firmware/images``: every image, whether an unfinished upgrade uses it, and the
  size limit;
* ``GET /api/v1/firmware/images/{sha256}``: one image;
* ``DELETE /api/v1/firmware/images/{sha256}``: remove an image (409 while a queued or running
  upgrade uses it).

The image store's file work (stat, its ``.json``, unlink) runs in a thread, off the event loop.

An upgrade itself is a command: ``POST /api/v1/commands`` with kind ``firmware_upgrade``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import structlog
from aiohttp import web

from hesd.api.app import DAEMON, ApiError, Handler
from hesd.api.security import ADMIN, COMMAND, READ
from hesd.firmware_images import (
    FirmwareError,
    ImageInfo,
    ImageNotFound,
    ImageStore,
    ImageTooLarge,
    images_in_use,
)

__all__ = ["add_routes"]

log = structlog.get_logger("hesd.api")

IMAGE: Final = "{sha256:[0-9a-f]{64}}"
_CHUNK: Final = 1 << 16


def _images(request: web.Request) -> ImageStore:
    return request.app[DAEMON].images


def _json(info: ImageInfo, in_use: set[str]) -> dict[str, object]:
    return {**info.to_json(), "in_use": info.sha256 in in_use}


async def upload_image(request: web.Request) -> web.Response:
    images = _images(request)
    if request.content_type != "application/octet-stream":
        raise ApiError(
            415,
            "Unsupported Media Type",
            f"a firmware image is sent as application/octet-stream, not {request.content_type}",
        )
    length = request.content_length
    if length is not None and length > images.max_bytes:
        raise ApiError(
            413,
            "Payload Too Large",
            f"the image is {length} bytes; firmware.max_image_bytes is {images.max_bytes}",
            max_image_bytes=images.max_bytes,
        )
    try:
        info, created = await images.receive(request.content.iter_chunked(_CHUNK))
    except ImageTooLarge as exc:
        raise ApiError(
            413, "Payload Too Large", str(exc), max_image_bytes=images.max_bytes
        ) from None
    except FirmwareError as exc:
        raise ApiError(400, "Bad Request", str(exc)) from None
    in_use = await images_in_use(request.app[DAEMON].store)
    return web.json_response(_json(info, in_use), status=201 if created else 200)


async def list_images(request: web.Request) -> web.Response:
    images = _images(request)
    in_use = await images_in_use(request.app[DAEMON].store)
    return web.json_response(
        {
            "images": [_json(i, in_use) for i in await asyncio.to_thread(images.list)],
            "max_image_bytes": images.max_bytes,
        }
    )


async def get_image(request: web.Request) -> web.Response:
    sha = request.match_info["sha256"]
    info = await asyncio.to_thread(_images(request).info, sha)
    if info is None:
        raise ApiError(404, "Not Found", f"firmware image {sha} is not stored")
    return web.json_response(_json(info, await images_in_use(request.app[DAEMON].store)))


async def delete_image(request: web.Request) -> web.Response:
    sha = request.match_info["sha256"]
    if sha in await images_in_use(request.app[DAEMON].store):
        raise ApiError(
            409,
            "Conflict",
            f"firmware image {sha} is used by a queued or running upgrade; cancel it or let it "
            "end first",
        )
    try:
        await asyncio.to_thread(_images(request).delete, sha)
    except ImageNotFound as exc:
        raise ApiError(404, "Not Found", str(exc)) from None
    return web.Response(status=204)


# What each route needs on TCP (hesd/api/security.py); merged into hesd.api.app.SCOPES.
SCOPES: Final[dict[Handler, str]] = {
    upload_image: COMMAND,  # an image is uploaded to be sent to meters
    list_images: READ,
    get_image: READ,
    delete_image: ADMIN,
}


def add_routes(add: Callable[[str, str, Handler], None]) -> None:
    """Register the image routes through the app's ``add(method, path, handler)``."""
    add("POST", "/api/v1/firmware/images", upload_image)
    add("GET", "/api/v1/firmware/images", list_images)
    add("GET", f"/api/v1/firmware/images/{IMAGE}", get_image)
    add("DELETE", f"/api/v1/firmware/images/{IMAGE}", delete_image)
