# SPDX-License-Identifier: GPL-2.0-or-later
"""A reference MDM receiver: the MDM side of docs/mdm-api.yaml, for tests, demos and benchmarks.

It is not part of the daemon. It serves ``POST /api/v1/meters/{readings,events,command-results}``
as the contract asks of an MDM: gzip or identity bodies (at most 64 MiB decompressed), an
``Idempotency-Key`` per batch (a replay is answered ``{"duplicate": true}`` and stored once; the
same key with another batch is refused with 422), bearer token or API key when configured, and
bodies checked against the contract's request schemas. What it accepts it keeps in arrival order
for the test to inspect (``records``, ``batches``, ``check_order``).

It can be told to misbehave, from a test (methods) or over HTTP (``/control/...``, for the CLI and
``make demo``): fail a seeded random fraction of requests, throttle the next N with
``Retry-After``, answer slowly, refuse batches holding a given meter, or go away (connections
refused) and come back on the same port. Faults apply to the uplink paths only, never to
``/control``.

    .venv/bin/python bench/mdm_receiver.py --port 8080 [--token T] [--fail-rate 0.3] [--log-every 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import email.utils
import functools
import hashlib
import hmac
import http
import json
import random
import re
import signal
import sys
import time
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import structlog
from aiohttp import web

__all__ = [
    "KINDS",
    "MAX_BODY_BYTES",
    "MAX_RECORDS",
    "SPEC",
    "Batch",
    "BodyTooLarge",
    "Kind",
    "MdmReceiver",
    "gunzip",
    "request_checks",
]

Kind = Literal["readings", "events", "command-results"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
SPEC: Final = Path(__file__).resolve().parent.parent / "docs" / "mdm-api.yaml"
MAX_RECORDS: Final = 10_000  # docs/mdm-api.yaml: a batch holds 1 to 10,000 records
MAX_BODY_BYTES: Final = 64 * 1024 * 1024  # ... and a receiver takes 64 MiB decompressed
_KEY: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # components.schemas.BatchId
_DETAIL_CHARS: Final = 400  # a schema error quoting a 64-name enum stays readable

log = structlog.get_logger("mdm_receiver")


@dataclass(frozen=True, slots=True)
class Batch:
    """One accepted batch (replays are not listed again)."""

    key: str  # its Idempotency-Key (== batch_id)
    kind: Kind
    hes_id: str
    count: int  # records
    received_at: float  # time.time() when it was stored
    sent_at: str  # as hesd said
    content_encoding: str  # "gzip" or "identity"
    user_agent: str


class BodyTooLarge(Exception):
    """A body larger than the receiver takes."""


class _Refused(Exception):
    """Answer the request with this problem (RFC 9457) and store nothing."""

    def __init__(
        self,
        status: int,
        detail: str,
        headers: Mapping[str, str] | None = None,
        **extra: str,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        try:
            title = http.HTTPStatus(self.status).phrase
        except ValueError:
            title = "Error"
        body = {
            "type": "about:blank",
            "title": title,
            "status": self.status,
            "detail": self.detail,
            **self.extra,
        }
        return web.json_response(
            body, status=self.status, headers=self.headers, content_type="application/problem+json"
        )


def gunzip(data: bytes, limit: int) -> bytes:
    """Every gzip member in ``data``, inflated; ``BodyTooLarge`` as soon as it passes ``limit``.

    ``ValueError`` when ``data`` is not gzip or is cut short. Never inflates more than
    ``limit + 1`` bytes, whatever the ratio (a gzip bomb costs at most that).
    """
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # RFC 1952 framing
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise ValueError(f"the body is not gzip: {exc}") from None
        if len(out) > limit:
            raise BodyTooLarge(f"the body inflates past {limit} bytes")
        if not inflater.eof:
            raise ValueError("the gzip body is cut short")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)


@functools.cache
def request_checks(spec: Path = SPEC) -> dict[str, Callable[[object], str | None]]:
    """One compiled check per kind, from the request body schema of its path in ``spec``.

    A check returns None for a valid body, or the first error as ``$.path message``.
    fastjsonschema compiles the schema to Python: about 12 µs per reading where jsonschema
    takes 150 (the spec's tests hold the two to the same verdicts).
    """
    # the test extra, as is PyYAML: needed only to validate
    import fastjsonschema  # noqa: PLC0415
    import yaml  # type: ignore[import-untyped]  # noqa: PLC0415

    with spec.open(encoding="utf-8") as f:
        document = yaml.safe_load(f)
    schemas = document["components"]["schemas"]
    checks: dict[str, Callable[[object], str | None]] = {}
    for kind in KINDS:
        body = document["paths"][f"/api/v1/meters/{kind}"]["post"]["requestBody"]
        schema = _inline(body["content"]["application/json"]["schema"], schemas)
        # OpenAPI 3.0 schema objects are JSON Schema draft 4 plus annotations this document
        # does not use (nullable, discriminator)
        schema["$schema"] = "http://json-schema.org/draft-04/schema#"
        validate = fastjsonschema.compile(schema)

        def check(doc: object, validate: Callable[[object], object] = validate) -> str | None:
            try:
                validate(doc)
            except fastjsonschema.JsonSchemaValueException as error:
                return "$" + error.message.removeprefix("data")
            return None

        checks[kind] = check
    return checks


def _inline(node: Any, schemas: Mapping[str, Any]) -> Any:
    """``node`` with every ``#/components/schemas/...`` reference replaced by its target."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:  # draft 4: a reference's siblings are ignored
            return _inline(schemas[ref.removeprefix("#/components/schemas/")], schemas)
        return {key: _inline(value, schemas) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, schemas) for value in node]
    return node


def _retry_after(value: int | dt.datetime | None) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dt.datetime):  # RFC 9110 §10.2.3: an HTTP-date ...
        return {"Retry-After": email.utils.format_datetime(value.astimezone(dt.UTC), usegmt=True)}
    if value < 0:
        raise ValueError(f"retry_after: {value} s is negative")
    return {"Retry-After": str(int(value))}  # ... or delay-seconds, a whole number


class MdmReceiver:
    """The MDM end of docs/mdm-api.yaml, with fault controls and helpers for tests.

    Serve ``app`` with ``start()``/``stop()`` (needed for ``go_away``/``come_back``) or with
    aiohttp's ``TestServer``. ``validate=False`` skips the schema check (benchmarks);
    ``keep_records=False`` keeps counts and batches but not the records (long runs);
    ``on_batch`` is called with each batch accepted and its records, as they are stored
    (bench/uplink.py measures latency there).
    """

    def __init__(
        self,
        token: str | None = None,
        api_key: str | None = None,
        validate: bool = True,
        seed: int = 0,
        *,
        max_body_bytes: int = MAX_BODY_BYTES,
        keep_records: bool = True,
        on_batch: Callable[[Batch, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._token = token
        self._api_key = api_key
        self._checks = request_checks(SPEC) if validate else None
        self._rng = random.Random(seed)
        self._max_body = max_body_bytes
        self._keep = keep_records
        self._on_batch = on_batch
        # what was accepted
        self.batches: list[Batch] = []
        self.counts: Counter[str] = Counter({kind: 0 for kind in KINDS})
        self.duplicates = 0  # replays answered {"duplicate": true}
        self.requests = 0  # requests to the uplink paths, whatever the answer
        self.refused: Counter[int] = Counter()  # non-2xx answers by status
        self._records: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
        self._hes_ids: dict[str, list[str]] = {kind: [] for kind in KINDS}  # beside _records
        self._keys: dict[str, tuple[bytes, int]] = {}  # key -> (batch digest, records)
        self._changed = asyncio.Condition()
        # faults
        self._fail_rate = 0.0
        self._fail_status = 500
        self._throttle_left = 0
        self._throttle_status = 503
        self._throttle_headers: dict[str, str] = {}
        self._delay = 0.0
        self._rejected: set[str] = set()
        # the listener, when start() made it
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._host = "127.0.0.1"
        self._port = 0
        self._away_task: asyncio.Task[None] | None = None
        self._app = self._build_app()

    # -- serving ------------------------------------------------------------------------------

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def url(self) -> str:
        """The base URL ``start()`` listens on."""
        if self._runner is None:
            raise RuntimeError("the receiver was not started with start()")
        return f"http://{self._host}:{self._port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0: a free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("the receiver is already started")
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        self._host = host
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._site = site
        self._port = int(runner.addresses[0][1])
        log.info("mdm_receiver.listening", url=self.url)
        return self.url

    async def stop(self) -> None:
        if self._away_task is not None:
            self._away_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._away_task
            self._away_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    @property
    def listening(self) -> bool:
        return self._site is not None

    async def go_away(self) -> None:
        """Stop listening and drop every open connection: new connections are refused."""
        await self._stop_listening()
        await self._drop_connections()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        if self._runner is None:
            raise RuntimeError("come_back needs start()")
        if self._site is not None:
            return
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._site = site
        log.info("mdm_receiver.came_back", port=self._port)
        async with self._changed:
            self._changed.notify_all()

    async def wait_listening(self, timeout: float) -> None:  # noqa: ASYNC109 - a test helper
        """Return once the receiver listens again (after ``/control/go-away``)."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.listening)

    async def _stop_listening(self) -> None:
        if self._runner is None:
            raise RuntimeError("go_away needs start(): a TestServer owns its listener")
        if self._site is not None:
            await self._site.stop()  # closes the listening socket at once
            self._site = None
            log.info("mdm_receiver.gone_away", port=self._port)

    async def _drop_connections(self) -> None:
        server = self._runner.server if self._runner is not None else None
        if server is not None:
            await server.shutdown(0.01)  # cuts requests in flight (a stored batch stays stored)

    # -- faults -------------------------------------------------------------------------------

    def fail(self, rate: float, status: int = 500) -> None:
        """Answer ``status`` to a random fraction ``rate`` of requests (seeded), storing nothing."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fail rate {rate} is not in [0, 1]")
        if not 400 <= status <= 599:
            raise ValueError(f"fail status {status} is not an error status")
        self._fail_rate, self._fail_status = rate, status
        log.info("mdm_receiver.fault", fault="fail", rate=rate, status=status)

    def throttle(
        self, status: int = 503, retry_after: int | dt.datetime | None = 1, count: int = 1
    ) -> None:
        """Answer the next ``count`` requests ``status`` (429 or 503) with ``Retry-After``."""
        if status not in (429, 503):
            raise ValueError(f"throttle status {status} is not 429 or 503")
        if count < 0:
            raise ValueError(f"throttle count {count} is negative")
        self._throttle_status, self._throttle_left = status, count
        self._throttle_headers = _retry_after(retry_after)
        log.info("mdm_receiver.fault", fault="throttle", status=status, count=count)

    def slow(self, delay_s: float) -> None:
        """Answer every request ``delay_s`` late (an accepted batch is stored before the wait)."""
        if delay_s < 0:
            raise ValueError(f"delay {delay_s} s is negative")
        self._delay = delay_s
        log.info("mdm_receiver.fault", fault="slow", delay_s=delay_s)

    def reject(self, meter_id: str) -> None:
        """Refuse (400, naming the meter) every batch holding a record of ``meter_id``."""
        self._rejected.add(meter_id)
        log.info("mdm_receiver.fault", fault="reject", meter=meter_id)

    def reset_faults(self) -> None:
        """No failures, throttling, delay or rejected meters any more."""
        self._fail_rate, self._throttle_left, self._delay = 0.0, 0, 0.0
        self._rejected.clear()
        log.info("mdm_receiver.fault", fault="none")

    # -- what was received --------------------------------------------------------------------

    def records(self, kind: Kind) -> list[dict[str, Any]]:
        """The records accepted on ``kind``'s path, in arrival order (replays stored once)."""
        self._need_records()
        return list(self._records[kind])

    async def wait_for_records(self, kind: Kind, n: int, timeout: float) -> None:  # noqa: ASYNC109 - a test helper
        """Return once ``n`` records of ``kind`` are in; ``TimeoutError`` after ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.counts[kind] >= n)
        except TimeoutError:
            raise TimeoutError(
                f"{kind}: {self.counts[kind]} of {n} records arrived in {timeout} s"
            ) from None

    def per_meter_sequences(self, kind: Kind) -> dict[str, list[int]]:
        """Each meter's ``seq``s in arrival order (all ``hes_id``s together)."""
        self._need_records()
        out: dict[str, list[int]] = {}
        for record in self._records[kind]:
            out.setdefault(record["meter_id"], []).append(record["seq"])
        return out

    def check_order(self, kind: Kind | None = None) -> None:
        """``AssertionError`` naming the meter when its records arrived out of ``seq`` order.

        Per path, ``hes_id`` and meter. A ``seq`` that arrived before (the same record again in
        another batch) is a duplicate, not a reordering, and is skipped.
        """
        self._need_records()
        for checked in (kind,) if kind is not None else KINDS:
            highest: dict[tuple[str, str], int] = {}
            seen: set[tuple[str, str, int]] = set()
            for hes_id, record in zip(self._hes_ids[checked], self._records[checked], strict=True):
                meter, seq = record["meter_id"], record["seq"]
                if (hes_id, meter, seq) in seen:
                    continue
                seen.add((hes_id, meter, seq))
                last = highest.get((hes_id, meter))
                if last is not None and seq < last:
                    raise AssertionError(
                        f"meter {meter} ({checked} from {hes_id}): seq {seq} arrived after {last}"
                    )
                highest[(hes_id, meter)] = seq

    def stats(self) -> dict[str, Any]:
        """Counts and faults, as ``GET /control/stats`` answers them."""
        return {
            "records": dict(self.counts),
            "batches": len(self.batches),
            "duplicates": self.duplicates,
            "requests": self.requests,
            "refused": {str(status): n for status, n in sorted(self.refused.items())},
            "listening": self._runner is None or self._site is not None,
            "faults": {
                "fail_rate": self._fail_rate,
                "fail_status": self._fail_status,
                "throttle_left": self._throttle_left,
                "throttle_status": self._throttle_status,
                "delay_s": self._delay,
                "rejected": sorted(self._rejected),
            },
        }

    def _need_records(self) -> None:
        if not self._keep:
            raise RuntimeError("this receiver does not keep records (keep_records=False)")

    # -- the uplink paths ---------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        # We inflate gzip ourselves, bounded (gunzip), so aiohttp must hand us the raw body;
        # client_max_size bounds the raw body (identity bodies are then bounded too).
        app = web.Application(
            client_max_size=self._max_body, handler_args={"auto_decompress": False}
        )
        for kind in KINDS:
            app.router.add_post(f"/api/v1/meters/{kind}", self._uplink_handler(kind))
        app.router.add_get("/control/stats", self._control_stats)
        app.router.add_post("/control/fail", self._control_fail)
        app.router.add_post("/control/throttle", self._control_throttle)
        app.router.add_post("/control/slow", self._control_slow)
        app.router.add_post("/control/reject", self._control_reject)
        app.router.add_post("/control/reset", self._control_reset)
        app.router.add_post("/control/go-away", self._control_go_away)
        return app

    def _uplink_handler(self, kind: Kind) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            self.requests += 1
            try:
                response = await self._receive(request, kind)
            except _Refused as refused:
                self.refused[refused.status] += 1
                response = refused.response()
            if self._delay:
                await asyncio.sleep(self._delay)
            return response

        return handle

    async def _receive(self, request: web.Request, kind: Kind) -> web.Response:
        if self._throttle_left > 0:
            self._throttle_left -= 1
            raise _Refused(
                self._throttle_status, "throttled: try again later", self._throttle_headers
            )
        if self._fail_rate and self._rng.random() < self._fail_rate:
            raise _Refused(self._fail_status, "an injected failure (fail rate)")
        self._authenticate(request)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            raise _Refused(400, "no Idempotency-Key header")
        if not _KEY.fullmatch(key):
            raise _Refused(400, f"Idempotency-Key {key[:140]!r} is not 1..128 of [A-Za-z0-9._:-]")
        if request.content_type != "application/json":
            raise _Refused(415, f"Content-Type {request.content_type} is not application/json")
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity"):
            raise _Refused(415, f"Content-Encoding {encoding} is not gzip or identity")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Refused(413, f"the body is larger than {self._max_body} bytes") from None
        try:
            body = gunzip(raw, self._max_body) if encoding == "gzip" else raw
        except BodyTooLarge as exc:
            raise _Refused(413, str(exc)) from None
        except ValueError as exc:  # not gzip, or cut short
            raise _Refused(400, str(exc)) from None
        try:
            doc = json.loads(body)
        except ValueError as exc:  # not UTF-8, not JSON
            raise _Refused(400, f"the body is not JSON: {exc}") from None
        except RecursionError:
            raise _Refused(400, "the body is not JSON: nested too deep") from None
        records = doc.get("records") if isinstance(doc, dict) else None
        if isinstance(records, list) and len(records) > MAX_RECORDS:
            raise _Refused(413, f"{len(records)} records; a batch holds at most {MAX_RECORDS}")
        if self._checks is not None:
            error = self._checks[kind](doc)
            if error is not None:
                raise _Refused(400, error[:_DETAIL_CHARS])
        hes_id, records = _envelope(doc, key)
        digest = hashlib.sha256(
            json.dumps([kind, hes_id, records], sort_keys=True, separators=(",", ":")).encode()
        ).digest()
        known = self._keys.get(key)
        if known is not None:
            if known[0] != digest:
                raise _Refused(422, f"Idempotency-Key {key} was accepted before with another batch")
            self.duplicates += 1
            return web.json_response({"accepted": known[1], "duplicate": True})
        for record in records:
            if record["meter_id"] in self._rejected:
                meter = record["meter_id"]
                raise _Refused(400, f"meter {meter} is refused by this MDM", meter_id=meter)
        batch = Batch(
            key=key,
            kind=kind,
            hes_id=hes_id,
            count=len(records),
            received_at=time.time(),
            sent_at=str(doc.get("sent_at", "")),
            content_encoding=encoding,
            user_agent=request.headers.get("User-Agent", ""),
        )
        self._store(batch, records, digest)
        async with self._changed:
            self._changed.notify_all()
        return web.json_response({"accepted": len(records), "duplicate": False})

    def _authenticate(self, request: web.Request) -> None:
        if self._token is None and self._api_key is None:
            return
        authorization = request.headers.get("Authorization")
        api_key = request.headers.get("X-API-Key")
        if authorization is None and api_key is None:
            challenge = {"WWW-Authenticate": "Bearer"} if self._token is not None else {}
            raise _Refused(401, "no credentials: send a bearer token or X-API-Key", challenge)
        if authorization is not None and self._token is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                token.strip().encode(), self._token.encode()
            ):
                return
        if (
            api_key is not None
            and self._api_key is not None
            and hmac.compare_digest(api_key.encode(), self._api_key.encode())
        ):
            return
        raise _Refused(403, "wrong credentials")

    def _store(self, batch: Batch, records: list[dict[str, Any]], digest: bytes) -> None:
        self._keys[batch.key] = (digest, batch.count)
        self.batches.append(batch)
        self.counts[batch.kind] += batch.count
        if self._keep:
            self._records[batch.kind].extend(records)
            self._hes_ids[batch.kind].extend([batch.hes_id] * batch.count)
        if self._on_batch is not None:
            self._on_batch(batch, records)

    # -- /control -----------------------------------------------------------------------------

    async def _control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _control_fail(self, request: web.Request) -> web.Response:
        return await self._control(request, lambda a: self.fail(a["rate"], a.get("status", 500)))

    async def _control_throttle(self, request: web.Request) -> web.Response:
        return await self._control(
            request,
            lambda a: self.throttle(
                a.get("status", 503), a.get("retry_after", 1), a.get("count", 1)
            ),
        )

    async def _control_slow(self, request: web.Request) -> web.Response:
        return await self._control(request, lambda a: self.slow(a["delay_s"]))

    async def _control_reject(self, request: web.Request) -> web.Response:
        return await self._control(request, lambda a: self.reject(str(a["meter_id"])))

    async def _control_reset(self, request: web.Request) -> web.Response:
        return await self._control(request, lambda a: self.reset_faults())

    async def _control_go_away(self, request: web.Request) -> web.Response:
        """Stop listening now, answer 202, then drop the open connections; listen again after
        ``seconds`` (over HTTP, nobody could ask it to come back)."""
        try:
            seconds = float((await _control_args(request))["seconds"])
        except (ValueError, TypeError, KeyError) as exc:
            return _Refused(400, f"{request.path}: {exc!r}").response()
        if not seconds >= 0 or self._runner is None or self._away_task is not None:
            detail = f"{request.path}: needs start(), seconds >= 0 and no go-away under way"
            return _Refused(400, detail).response()
        await self._stop_listening()
        self._away_task = asyncio.create_task(self._away_for(seconds), name="mdm-receiver:go-away")
        return web.json_response(self.stats(), status=202)

    async def _away_for(self, seconds: float) -> None:
        try:
            await asyncio.sleep(0)  # the 202 goes out on its connection first
            await self._drop_connections()
            await asyncio.sleep(seconds)
            await self.come_back()
        finally:
            self._away_task = None

    async def _control(
        self,
        request: web.Request,
        action: Callable[[dict[str, Any]], None],
        status: int = 200,
    ) -> web.Response:
        try:
            action(await _control_args(request))
        except (ValueError, TypeError, KeyError) as exc:
            return _Refused(400, f"{request.path}: {exc!r}").response()
        return web.json_response(self.stats(), status=status)


async def _control_args(request: web.Request) -> dict[str, Any]:
    args = await request.json() if request.can_read_body else {}
    if not isinstance(args, dict):
        raise TypeError(f"expected a JSON object, got {args!r}")
    return args


def _envelope(doc: object, key: str) -> tuple[str, list[dict[str, Any]]]:
    """``hes_id`` and the records, with what the receiver itself relies on checked.

    Always checked, schema validation or not: ``meter_id`` and ``seq`` drive order checks and
    rejection.
    """
    if not isinstance(doc, dict):
        raise _Refused(400, "$: the body is not a JSON object")
    hes_id, batch_id, records = doc.get("hes_id"), doc.get("batch_id"), doc.get("records")
    if not isinstance(hes_id, str) or not hes_id:
        raise _Refused(400, "$.hes_id: expected a non-empty string")
    if batch_id != key:
        raise _Refused(400, f"$.batch_id: {batch_id!r} is not the Idempotency-Key {key!r}")
    if not isinstance(records, list) or not records:
        raise _Refused(400, "$.records: expected a non-empty array")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise _Refused(400, f"$.records[{i}]: expected an object")
        meter, seq = record.get("meter_id"), record.get("seq")
        if not isinstance(meter, str) or not meter:
            raise _Refused(400, f"$.records[{i}].meter_id: expected a non-empty string")
        if type(seq) is not int or seq < 0:
            raise _Refused(400, f"$.records[{i}].seq: expected an integer >= 0")
    return hes_id, records


# -- the command line ---------------------------------------------------------------------------


def summary_line(now: Mapping[str, Any], before: Mapping[str, Any], elapsed: float) -> str:
    """``readings 812.0/s (40600) · events ...`` between two ``stats()``, ``elapsed`` apart."""
    parts = []
    for kind in KINDS:
        total = now["records"][kind]
        rate = (total - before["records"][kind]) / elapsed if elapsed > 0 else 0.0
        parts.append(f"{kind} {rate:.1f}/s ({total})")
    refused = " ".join(f"{status}:{n}" for status, n in now["refused"].items()) or "none"
    return f"{' · '.join(parts)} · duplicates {now['duplicates']} · refused {refused}"


async def _serve(args: argparse.Namespace) -> int:
    receiver = MdmReceiver(
        token=args.token,
        api_key=args.api_key,
        validate=not args.no_validate,
        seed=args.seed,
        keep_records=False,  # a long run would grow without bound; stats keep the counts
    )
    if args.fail_rate:
        receiver.fail(args.fail_rate)
    url = await receiver.start(args.host, args.port)
    print(f"mdm-receiver: listening on {url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    started = before_at = time.monotonic()
    zero = receiver.stats()
    before = zero
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), args.log_every)
            now, now_at = receiver.stats(), time.monotonic()
            if not stopping.is_set():
                print(f"mdm-receiver: {summary_line(now, before, now_at - before_at)}", flush=True)
            before, before_at = now, now_at
    finally:
        await receiver.stop()
    elapsed = time.monotonic() - started
    print(
        f"mdm-receiver: final, {elapsed:.1f} s: {summary_line(receiver.stats(), zero, elapsed)}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="0: a free port")
    parser.add_argument("--token", help="require Authorization: Bearer TOKEN")
    parser.add_argument("--api-key", help="require X-API-Key: KEY (either one will do)")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="answer 500 to this share")
    parser.add_argument("--seed", type=int, default=0, help="for --fail-rate")
    parser.add_argument("--no-validate", action="store_true", help="skip the schema check")
    parser.add_argument("--log-every", type=float, default=5.0, help="seconds between summaries")
    args = parser.parse_args(argv)
    if args.log_every <= 0:
        parser.error("--log-every must be > 0")
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    sys.exit(main())
