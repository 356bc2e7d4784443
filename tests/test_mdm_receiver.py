# SPDX-License-Identifier: GPL-2.0-or-later
"""bench/mdm_receiver.py, the reference MDM: what it stores, what it refuses and why, its faults,
its helpers for tests, and its command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import gzip
import json
import random
import signal
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bench.mdm_receiver import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    BodyTooLarge,
    Kind,
    MdmReceiver,
    gunzip,
)
from tests import mdm_payloads as mp

REPO = Path(__file__).resolve().parent.parent


@asynccontextmanager
async def served(receiver: MdmReceiver) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(receiver.app)) as client:
        yield client


async def post(
    client: TestClient[web.Request, web.Application] | aiohttp.ClientSession,
    body: Any,
    *,
    kind: Kind = "readings",
    key: str | None = None,
    gzipped: bool = True,
    extra: dict[str, str] | None = None,
    data: bytes | None = None,
    url: str = "",
) -> tuple[int, Any, Any]:
    """POST one batch; (status, JSON answer, headers). ``key`` defaults to the body's batch_id."""
    key = key if key is not None else body["batch_id"]
    async with client.post(
        f"{url}/api/v1/meters/{kind}",
        data=data if data is not None else mp.encode(body, gzipped=gzipped),
        headers=mp.headers(key, gzipped=gzipped, extra=extra),
    ) as response:
        answer = await response.json(content_type=None)
        if response.status >= 400:
            assert response.content_type == "application/problem+json"
            assert answer["status"] == response.status
        return response.status, answer, response.headers


# -- storing --------------------------------------------------------------------------------------


async def test_gzip_and_identity_bodies_are_stored_in_arrival_order() -> None:
    receiver = MdmReceiver()
    first = mp.batch([mp.reading("MTR-1"), mp.reading("MTR-2")], key="k1", first_seq=1)
    second = mp.batch([mp.reading("MTR-1", minutes=15)], key="k2", first_seq=3)
    async with served(receiver) as client:
        assert (await post(client, first))[:2] == (200, {"accepted": 2, "duplicate": False})
        assert (await post(client, second, gzipped=False))[:2] == (
            200,
            {"accepted": 1, "duplicate": False},
        )
    assert receiver.records("readings") == first["records"] + second["records"]
    assert [(b.key, b.kind, b.count, b.content_encoding) for b in receiver.batches] == [
        ("k1", "readings", 2, "gzip"),
        ("k2", "readings", 1, "identity"),
    ]
    assert {b.user_agent for b in receiver.batches} == {"hesd/0.1.0"}
    assert receiver.batches[0].sent_at == "2026-11-23T08:45:01.250Z"
    assert receiver.counts == {"readings": 3, "events": 0, "command-results": 0}
    assert receiver.per_meter_sequences("readings") == {"MTR-1": [1, 3], "MTR-2": [2]}


async def test_each_path_stores_its_kind() -> None:
    receiver = MdmReceiver()
    async with served(receiver) as client:
        for kind, record in (
            ("readings", mp.reading()),
            ("events", mp.event()),
            ("command-results", mp.command_result()),
        ):
            body = mp.batch([record], key=f"key-{kind}")
            status, answer, _ = await post(client, body, kind=kind)  # type: ignore[arg-type]
            assert status == 200, answer
            assert receiver.records(kind) == body["records"]  # type: ignore[arg-type]
    assert receiver.stats()["records"] == {"readings": 1, "events": 1, "command-results": 1}


async def test_a_replay_is_answered_duplicate_and_stored_once() -> None:
    receiver = MdmReceiver()
    body = mp.batch([mp.reading("MTR-1"), mp.reading("MTR-2")], key="hes-01:7")
    async with served(receiver) as client:
        assert (await post(client, body))[0] == 200
        # a retry: the same batch, another sent_at, sent uncompressed this time
        again = {**body, "sent_at": "2026-11-23T08:46:00Z"}
        status, answer, _ = await post(client, again, gzipped=False)
    assert (status, answer) == (200, {"accepted": 2, "duplicate": True})
    assert receiver.duplicates == 1
    assert len(receiver.records("readings")) == 2
    assert len(receiver.batches) == 1


async def test_the_same_key_with_another_batch_is_422() -> None:
    receiver = MdmReceiver()
    body = mp.batch([mp.reading("MTR-1")], key="k")
    async with served(receiver) as client:
        assert (await post(client, body))[0] == 200
        other = mp.batch([mp.reading("MTR-1", value="2")], key="k")
        status, answer, _ = await post(client, other)
        assert status == 422
        assert "Idempotency-Key k was accepted before with another batch" in answer["detail"]
        # the same records under the same key on another path are another batch too
        events = mp.batch([mp.event()], key="k")
        assert (await post(client, events, kind="events"))[0] == 422
        # and so is the same batch from another HES
        assert (await post(client, {**body, "hes_id": "hes-02"}))[0] == 422
    assert receiver.records("readings") == body["records"]
    assert receiver.records("events") == []
    assert receiver.refused == {422: 3}


async def test_the_idempotency_key_is_required_well_formed_and_the_batch_id() -> None:
    receiver = MdmReceiver()
    body = mp.batch([mp.reading()], key="k")
    async with served(receiver) as client:
        async with client.post(
            "/api/v1/meters/readings",
            data=mp.encode(body),
            headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
        ) as response:
            assert response.status == 400
            assert (await response.json())["detail"] == "no Idempotency-Key header"
        status, answer, _ = await post(client, body, key="a key")
        assert status == 400
        assert "Idempotency-Key 'a key' is not 1..128" in answer["detail"]
        assert (await post(client, body, key="x" * 129))[0] == 400
        status, answer, _ = await post(client, body, key="other")
        assert status == 400
        assert answer["detail"] == "$.batch_id: 'k' is not the Idempotency-Key 'other'"
    assert receiver.counts["readings"] == 0


# -- authentication -------------------------------------------------------------------------------


async def test_a_bearer_token() -> None:
    receiver = MdmReceiver(token="s3cret")  # noqa: S106 - made up
    async with served(receiver) as client:
        status, answer, headers = await post(client, mp.batch([mp.reading()], key="k1"))
        assert (status, headers["WWW-Authenticate"]) == (401, "Bearer")
        assert answer["title"] == "Unauthorized"
        wrong = {"Authorization": "Bearer guess"}
        assert (await post(client, mp.batch([mp.reading()], key="k1"), extra=wrong))[0] == 403
        wrong = {"X-API-Key": "s3cret"}  # a token is not an API key
        assert (await post(client, mp.batch([mp.reading()], key="k1"), extra=wrong))[0] == 403
        right = {"Authorization": "Bearer s3cret"}
        assert (await post(client, mp.batch([mp.reading()], key="k1"), extra=right))[0] == 200
    assert receiver.refused == {401: 1, 403: 2}


async def test_an_api_key_or_a_token() -> None:
    receiver = MdmReceiver(token="t", api_key="key-1")  # noqa: S106 - made up
    async with served(receiver) as client:
        body = mp.batch([mp.reading()], key="k1")
        assert (await post(client, body, extra={"X-API-Key": "key-2"}))[0] == 403
        assert (await post(client, body, extra={"X-API-Key": "key-1"}))[0] == 200
        body = mp.batch([mp.reading()], key="k2")
        assert (await post(client, body, extra={"Authorization": "Bearer t"}))[0] == 200
    receiver = MdmReceiver(api_key="key-1")
    async with served(receiver) as client:
        status, _, headers = await post(client, body)
        assert status == 401
        assert "WWW-Authenticate" not in headers  # no bearer scheme to offer


# -- bodies ---------------------------------------------------------------------------------------


async def test_a_body_that_breaks_the_contract_is_400_naming_the_field() -> None:
    receiver = MdmReceiver()
    body = mp.batch([mp.reading(), mp.reading(minutes=15)], key="k")
    body["records"][1]["value"] = "12.50"
    async with served(receiver) as client:
        status, answer, _ = await post(client, body)
        assert status == 400
        assert answer["detail"].startswith("$.records[1].value must match pattern"), answer
        del body["records"][0]["seq"]
        status, answer, _ = await post(client, body)
        assert answer["detail"] == "$.records[0] must contain ['seq'] properties"
    assert receiver.counts["readings"] == 0


async def test_without_validation_only_what_the_receiver_needs_is_checked() -> None:
    receiver = MdmReceiver(validate=False)
    body = mp.batch([mp.reading()], key="k")
    body["records"][0]["value"] = "12.50"  # not canonical: let through
    async with served(receiver) as client:
        assert (await post(client, body))[0] == 200
        for change, detail in (
            ({"seq": "1"}, "$.records[0].seq: expected an integer >= 0"),
            ({"meter_id": 7}, "$.records[0].meter_id: expected a non-empty string"),
        ):
            broken = mp.batch([mp.reading()], key="k2")
            broken["records"][0].update(change)
            status, answer, _ = await post(client, broken)
            assert (status, answer["detail"]) == (400, detail)
        status, answer, _ = await post(client, {"batch_id": "k3", "records": []})
        assert (status, answer["detail"]) == (400, "$.hes_id: expected a non-empty string")


@pytest.mark.parametrize(
    ("headers", "data", "status", "detail"),
    [
        ({"Content-Type": "text/plain"}, b"{}", 415, "Content-Type text/plain is not"),
        ({"Content-Encoding": "br"}, b"{}", 415, "Content-Encoding br is not gzip or identity"),
        ({"Content-Encoding": "gzip"}, b"{}", 400, "the body is not gzip: Error -3"),
        ({"Content-Encoding": "gzip"}, gzip.compress(b"{}")[:-3], 400, "cut short"),
        ({"Content-Encoding": "identity"}, b"{,}", 400, "the body is not JSON: Expecting"),
        ({"Content-Encoding": "identity"}, b"\xff{}", 400, "the body is not JSON"),
        ({"Content-Encoding": "identity"}, b"[" * 100_000, 400, "the body is not JSON"),
        ({"Content-Encoding": "identity"}, b"[]", 400, "$ must be object"),
    ],
)
async def test_bodies_that_are_not_a_json_batch(
    headers: dict[str, str], data: bytes, status: int, detail: str
) -> None:
    receiver = MdmReceiver()
    sent = {"Content-Type": "application/json", "Idempotency-Key": "k", **headers}
    async with (
        served(receiver) as client,
        client.post("/api/v1/meters/readings", data=data, headers=sent) as response,
    ):
        assert response.status == status
        assert response.content_type == "application/problem+json"
        assert detail in (await response.json())["detail"]


async def test_a_gzip_bomb_is_413_without_inflating_it_all() -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflate.compress(zeros) for _ in range(MAX_BODY_BYTES // len(zeros) + 1))
    bomb += deflate.flush()
    assert len(bomb) < MAX_BODY_BYTES // 500
    receiver = MdmReceiver()
    async with served(receiver) as client:
        status, answer, _ = await post(client, None, key="k", data=bomb)
    assert (status, answer["detail"]) == (413, f"the body inflates past {MAX_BODY_BYTES} bytes")


async def test_bodies_over_the_limits_are_413() -> None:
    receiver = MdmReceiver(max_body_bytes=4096)
    body = mp.batch([mp.reading(minutes=i) for i in range(40)], key="k")
    async with served(receiver) as client:
        status, answer, _ = await post(client, body, gzipped=False)  # bigger than 4096 as sent
        assert (status, answer["detail"]) == (413, "the body is larger than 4096 bytes")
        status, answer, _ = await post(client, body)  # small as sent, big inflated
        assert (status, answer["detail"]) == (413, "the body inflates past 4096 bytes")
    receiver = MdmReceiver(validate=False)
    record = mp.batch([mp.reading()])["records"][0]
    body = {"hes_id": "h", "batch_id": "k", "sent_at": "x", "records": [record] * MAX_RECORDS}
    async with served(receiver) as client:
        assert (await post(client, body))[0] == 200
        status, answer, _ = await post(
            client, {**body, "batch_id": "k2", "records": [record] * (MAX_RECORDS + 1)}
        )
    assert (status, answer["detail"]) == (413, "10001 records; a batch holds at most 10000")


def test_gunzip() -> None:
    data = b"0123456789" * 100
    assert gunzip(gzip.compress(data), 1000) == data
    assert gunzip(gzip.compress(data[:500]) + gzip.compress(data[500:]), 1000) == data
    with pytest.raises(BodyTooLarge):
        gunzip(gzip.compress(data), 999)
    with pytest.raises(BodyTooLarge):  # the limit holds over members too
        gunzip(gzip.compress(data[:500]) + gzip.compress(data[500:]), 999)
    for cut in (gzip.compress(data)[:-1], gzip.compress(data)[:12], b""):
        with pytest.raises(ValueError, match="cut short"):
            gunzip(cut, 1000)
    with pytest.raises(ValueError, match="not gzip"):
        gunzip(gzip.compress(data) + b"trailing", 1000)


# -- faults ---------------------------------------------------------------------------------------


async def test_a_seeded_fail_rate_fails_the_same_requests_every_time() -> None:
    receiver = MdmReceiver(seed=7)
    receiver.fail(1 / 3, status=502)
    draws = random.Random(7)  # noqa: S311 - replays the receiver's seeded draws
    expected = [draws.random() < 1 / 3 for _ in range(300)]
    async with served(receiver) as client:
        failed = []
        for i in range(300):
            status, _, _ = await post(client, mp.batch([mp.reading()], key=f"k{i}", first_seq=i))
            assert status in (200, 502)
            failed.append(status == 502)
    assert failed == expected
    assert 70 <= sum(failed) <= 130  # and it is about a third
    assert receiver.refused == {502: sum(failed)}
    assert receiver.counts["readings"] == 300 - sum(failed)  # a failure stores nothing
    assert [b.key for b in receiver.batches] == [f"k{i}" for i in range(300) if not failed[i]]


async def test_throttle_answers_the_next_n_with_retry_after() -> None:
    receiver = MdmReceiver()
    receiver.throttle(429, retry_after=7, count=2)
    async with served(receiver) as client:
        for _ in range(2):
            status, answer, headers = await post(client, mp.batch([mp.reading()], key="k"))
            assert (status, headers["Retry-After"]) == (429, "7")
            assert answer["title"] == "Too Many Requests"
        assert (await post(client, mp.batch([mp.reading()], key="k")))[0] == 200
        when = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
        receiver.throttle(503, retry_after=when)
        status, _, headers = await post(client, mp.batch([mp.reading()], key="k2"))
        assert (status, headers["Retry-After"]) == (503, "Mon, 23 Nov 2026 09:00:00 GMT")
        assert email.utils.parsedate_to_datetime(headers["Retry-After"]) == when
        receiver.throttle(503, retry_after=None)
        status, _, headers = await post(client, mp.batch([mp.reading()], key="k2"))
        assert status == 503
        assert "Retry-After" not in headers
    assert receiver.counts["readings"] == 1


async def test_slow_answers_late_but_stores_first() -> None:
    receiver = MdmReceiver()
    receiver.slow(0.3)
    loop = asyncio.get_running_loop()
    async with served(receiver) as client:
        began = loop.time()
        answer = asyncio.create_task(post(client, mp.batch([mp.reading()], key="k")))
        await receiver.wait_for_records("readings", 1, timeout=5)
        assert not answer.done()  # stored, not yet answered
        assert (await answer)[0] == 200
        assert loop.time() - began >= 0.3


async def test_reject_refuses_batches_holding_the_meter() -> None:
    receiver = MdmReceiver()
    receiver.reject("MTR-2")
    async with served(receiver) as client:
        body = mp.batch([mp.reading("MTR-1"), mp.reading("MTR-2")], key="k1")
        status, answer, _ = await post(client, body)
        assert status == 400
        assert answer["detail"] == "meter MTR-2 is refused by this MDM"
        assert answer["meter_id"] == "MTR-2"
        assert (await post(client, mp.batch([mp.reading("MTR-1")], key="k2")))[0] == 200
        receiver.reset_faults()
        assert (await post(client, body))[0] == 200
    assert receiver.per_meter_sequences("readings") == {"MTR-1": [1, 1], "MTR-2": [2]}


async def test_faults_leave_control_alone_and_control_sets_them() -> None:
    receiver = MdmReceiver()
    async with served(receiver) as client:
        receiver.fail(1.0)
        async with client.get("/control/stats") as response:
            assert response.status == 200
        receiver.reset_faults()
        for path, args in (
            ("fail", {"rate": 0.5, "status": 503}),
            ("throttle", {"status": 429, "retry_after": 3, "count": 4}),
            ("slow", {"delay_s": 0.25}),
            ("reject", {"meter_id": "MTR-9"}),
        ):
            async with client.post(f"/control/{path}", json=args) as response:
                assert response.status == 200, await response.text()
        async with client.get("/control/stats") as response:
            faults = (await response.json())["faults"]
        assert faults == {
            "fail_rate": 0.5,
            "fail_status": 503,
            "throttle_left": 4,
            "throttle_status": 429,
            "delay_s": 0.25,
            "rejected": ["MTR-9"],
        }
        async with client.post("/control/reset") as response:
            stats = await response.json()
        assert stats["faults"]["fail_rate"] == 0.0
        assert stats["faults"]["rejected"] == []
        bad: tuple[tuple[str, object], ...] = (
            ("fail", {"rate": 2}),
            ("fail", {}),
            ("throttle", {"status": 500}),
            ("slow", {"delay_s": -1}),
            ("slow", [1]),
            ("go-away", {"seconds": 1}),  # a TestServer's listener is not ours to close
        )
        for path, wrong in bad:
            async with client.post(f"/control/{path}", json=wrong) as response:
                assert response.status == 400, (path, wrong)
                assert response.content_type == "application/problem+json"


async def test_stats() -> None:
    receiver = MdmReceiver()
    async with served(receiver) as client:
        await post(client, mp.batch([mp.reading(), mp.reading(minutes=15)], key="k"))
        await post(client, mp.batch([mp.reading(), mp.reading(minutes=15)], key="k"))
        await post(client, mp.batch([mp.event()], key="k2"), kind="events")
        await post(client, mp.batch([mp.event()], key="no spaces"), kind="events")
        async with client.get("/control/stats") as response:
            stats = await response.json()
    assert stats == {
        "records": {"readings": 2, "events": 1, "command-results": 0},
        "batches": 2,
        "duplicates": 1,
        "requests": 4,
        "refused": {"400": 1},
        "listening": True,
        "faults": stats["faults"],
    }


# -- helpers for tests ----------------------------------------------------------------------------


async def test_wait_for_records() -> None:
    receiver = MdmReceiver()
    async with served(receiver) as client:
        waiting = asyncio.create_task(receiver.wait_for_records("events", 3, timeout=5))
        await post(client, mp.batch([mp.event(), mp.event()], key="k1"), kind="events")
        assert not waiting.done()
        await post(client, mp.batch([mp.event()], key="k2", first_seq=3), kind="events")
        await waiting
        with pytest.raises(TimeoutError, match=r"events: 3 of 4 records arrived in 0.05 s"):
            await receiver.wait_for_records("events", 4, timeout=0.05)


async def test_check_order_names_the_meter_that_arrived_out_of_order() -> None:
    receiver = MdmReceiver()
    async with served(receiver) as client:
        b1 = mp.batch([mp.reading("A"), mp.reading("B"), mp.reading("A")], key="k1", seqs=[1, 2, 3])
        await post(client, b1)
        # the same records again under another key (a re-formed batch): duplicates, not disorder
        await post(client, mp.batch([mp.reading("A"), mp.reading("B")], key="k2", seqs=[1, 2]))
        # another HES counts its own seqs
        await post(client, mp.batch([mp.reading("A")], key="k3", hes_id="hes-02", seqs=[1]))
        await post(client, mp.batch([mp.reading("B"), mp.reading("A")], key="k4", seqs=[5, 4]))
        receiver.check_order()
        assert receiver.per_meter_sequences("readings") == {"A": [1, 3, 1, 1, 4], "B": [2, 2, 5]}
        # a meter's batch that overtook an earlier one
        await post(client, mp.batch([mp.reading("B")], key="k5", seqs=[4]))
        with pytest.raises(AssertionError, match=r"meter B \(readings from hes-01\): seq 4 .* 5"):
            receiver.check_order()
        receiver.check_order("events")
        # and inside one batch
        await post(
            client, mp.batch([mp.event("C"), mp.event("C")], key="k6", seqs=[9, 8]), kind="events"
        )
        with pytest.raises(AssertionError, match=r"meter C \(events from hes-01\): seq 8"):
            receiver.check_order("events")


async def test_without_kept_records_the_counts_stay() -> None:
    receiver = MdmReceiver(keep_records=False)
    async with served(receiver) as client:
        await post(client, mp.batch([mp.reading()], key="k"))
        await receiver.wait_for_records("readings", 1, timeout=5)
    assert receiver.counts["readings"] == 1
    with pytest.raises(RuntimeError, match="keep_records=False"):
        receiver.records("readings")
    with pytest.raises(RuntimeError, match="keep_records=False"):
        receiver.check_order()


# -- a real listener ------------------------------------------------------------------------------


@pytest.mark.integration
async def test_go_away_refuses_connections_and_comes_back_on_the_same_port() -> None:
    receiver = MdmReceiver()
    url = await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            body = mp.batch([mp.reading()], key="k1")
            assert (await post(session, body, url=url))[0] == 200  # leaves a kept-alive connection
            await receiver.go_away()
            assert not receiver.listening
            for _ in range(2):  # the kept-alive connection is gone too
                with pytest.raises(aiohttp.ClientConnectionError):
                    await post(session, mp.batch([mp.reading()], key="k2"), url=url)
            await receiver.come_back()
            assert receiver.url == url
            assert (await post(session, mp.batch([mp.reading()], key="k2"), url=url))[0] == 200
    finally:
        await receiver.stop()
    assert [b.key for b in receiver.batches] == ["k1", "k2"]


@pytest.mark.integration
async def test_go_away_over_http_for_a_while() -> None:
    receiver = MdmReceiver()
    url = await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/control/go-away", json={"seconds": 0.2}) as response:
                assert response.status == 202
                assert (await response.json())["listening"] is False
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as fresh:
                with pytest.raises(aiohttp.ClientConnectorError):
                    await post(fresh, mp.batch([mp.reading()], key="k"), url=url)
                await receiver.wait_listening(timeout=5)
                assert (await post(fresh, mp.batch([mp.reading()], key="k"), url=url))[0] == 200
    finally:
        await receiver.stop()


@pytest.mark.integration
async def test_go_away_cuts_a_slow_answer_after_storing() -> None:
    """What hesd meets when the MDM dies while answering: a cut, then a duplicate on retry."""
    receiver = MdmReceiver()
    url = await receiver.start()
    receiver.slow(30)
    try:
        async with aiohttp.ClientSession() as session:
            body = mp.batch([mp.reading()], key="k")
            pending = asyncio.create_task(post(session, body, url=url))
            await receiver.wait_for_records("readings", 1, timeout=5)
            await receiver.go_away()
            with pytest.raises(aiohttp.ClientError):
                await pending
            await receiver.come_back()
            receiver.reset_faults()
            assert (await post(session, body, url=url))[:2] == (
                200,
                {"accepted": 1, "duplicate": True},
            )
    finally:
        await receiver.stop()


@pytest.mark.integration
def test_the_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "bench/mdm_receiver.py", "--port", "0", "--token", "T"]
    command += ["--log-every", "0.1", "--fail-rate", "0.0001"]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = ""
        while not url:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else ""
            if line.startswith("mdm-receiver: listening on "):
                url = line.split()[-1]
        body = mp.batch([mp.reading(), mp.reading(minutes=15)], key="k")
        request = urllib.request.Request(  # noqa: S310 - a loopback URL the receiver printed
            f"{url}/api/v1/meters/readings",
            data=mp.encode(body),
            headers=mp.headers("k", extra={"Authorization": "Bearer T"}),
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert json.load(response) == {"accepted": 2, "duplicate": False}
        with urllib.request.urlopen(f"{url}/control/stats", timeout=10) as response:  # noqa: S310
            stats = json.load(response)
        assert stats["records"]["readings"] == 2
        assert stats["faults"]["fail_rate"] == 0.0001
        while "readings" not in (line := process.stdout.readline()):
            assert line
        assert line.startswith("mdm-receiver: readings ")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    final = out.strip().splitlines()[-1]
    assert final.startswith("mdm-receiver: final, ")
    assert "readings" in final
    assert "(2)" in final
