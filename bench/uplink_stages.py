"""Where hesd's CPU goes per push: each stage of the push path, timed on its own, in process.

A real IS 15959 instantaneous push (26 values), encoded by the simulator's meter
(``hesd.sim``: ``MeterEndpoint.push``, WRAPPER-framed, plaintext), is taken through the stages
hesd runs for it, each timed in a loop (``time.process_time`` over ``--pushes`` pushes, garbage
collection on as in the daemon; the median of ``--repeat`` loops, in µs per push):

* *framing*: ``WrapperFraming.receive_data`` (a fresh framing per push, as on a new link);
* *APDU + A-XDR decode*: ``apdu.decode_apdu`` of the Data-Notification;
* *normalise*: ``Normaliser.push_wire``, the daemon's path: the 26 readings' wire form filled
  in without ``Reading`` objects; *with Readings*: ``Normaliser.push`` (26 ``Reading``s, each
  validated: the path of a vendor with an adapter), *of which Reading construction*: building
  the same 26 ``Reading``s from their fields alone;
* *outbox encode*: ``Outbox.offer_texts`` of those texts (the daemon's path) with a store that
  only collects what it is given, no SQLite; *with Readings*: ``Outbox.offer`` of the Readings;
* *outbox insert + commit*: ``Outbox.offer_texts`` on a real store (WAL, ``synchronous=FULL``),
  pushes offered 200 at a time and committed by the group-commit writer, minus *outbox encode*:
  the CPU of every thread of this process (SQLite runs in the store's threads);
* *forwarder body*: the JSON document of batches of the outbox rows as the forwarder builds it
  (``Forwarder._document``), without gzip; *gzip*: compressing that document (level 1: the
  daemon does it on another thread);
* *seal + delete*: the forwarder's two statements per batch (its rows get the batch key, then
  are deleted once delivered), committed one batch at a time, all threads.

Not in any stage: the event loop, TCP, the session's bookkeeping, aiohttp and the receiver:
``bench/uplink.py --only latency`` measures hesd as a whole (its CPU per push delivered).

    .venv/bin/python bench/uplink_stages.py [--pushes 2000] [--repeat 5]

Prints a table and writes bench/results/uplink_stages.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gzip
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import structlog
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.hooks import MeterContext, load_adapter
from adapters.model import Reading
from adapters.normalise import Normaliser
from adapters.profile import load_profiles
from bench.report import print_results, write_report
from hesd.config import load_config
from hesd.secrets import SecretStore
from hesd.sim.clock import SimClock
from hesd.sim.endpoint import PUSH_WPORT
from hesd.sim.fleet import Fleet
from hesd.sim.runner import SimOptions, Simulator
from hesd.store import Store
from hesd.uplink import forwarder as forwarding
from hesd.uplink.outbox import Outbox
from protocols.dlms import apdu as x
from protocols.dlms.framing import WrapperFraming

REPO: Final = Path(__file__).resolve().parent.parent
START: Final = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BATCH_SIZE: Final = 1000  # hesd.toml's uplink.batch_size


def push_frame() -> bytes:
    """One IS 15959 instantaneous push as the simulator's meter sends it (WRAPPER, plaintext)."""
    profiles = load_profiles(REPO / "conf" / "vendors", ("is15959",), source="bench")
    fleet = Fleet.build(profiles, [("is15959", 1)], seed=1)
    clock = SimClock(START, 1.0, monotonic=lambda: 0.0)
    sim = Simulator(fleet, clock, SimOptions(push_interval=0, stats_interval=0))
    [endpoint] = sim.endpoints
    return endpoint.push(START).data


def per_push(loop: Callable[[], None], pushes: int, repeat: int) -> float:
    """Median CPU µs per push of ``loop`` (which handles ``pushes`` pushes)."""
    runs = []
    for _ in range(repeat):
        started = time.process_time()
        loop()
        runs.append((time.process_time() - started) / pushes * 1e6)
    return statistics.median(runs)


class _Collector:
    """A store that takes submissions and commits nothing (the outbox's own CPU alone)."""

    def __init__(self) -> None:
        self.statements = 0

    def submit(self, statements: Sequence[tuple[str, Any]]) -> asyncio.Future[None]:
        self.statements += len(statements)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


async def stages(pushes: int, repeat: int, tmp: Path) -> dict[str, float]:
    frame = push_frame()
    defaults = load_config(None)
    profile = load_profiles(REPO / "conf" / "vendors", ("is15959",), source="bench")["is15959"]
    normaliser = Normaliser(profile, load_adapter(profile.adapter, profile.source))
    meter = MeterContext("SIM-is15959-000001", profile.name, None, profile.model)

    def framing() -> None:
        for _ in range(pushes):
            WrapperFraming(PUSH_WPORT, 1).receive_data(frame, 0.0)

    [arrived] = WrapperFraming(PUSH_WPORT, 1).receive_data(frame, 0.0)
    apdu = arrived.apdu  # type: ignore[attr-defined]

    def decode() -> None:
        for _ in range(pushes):
            x.decode_apdu(apdu)

    notification = x.decode_apdu(apdu)
    assert isinstance(notification, x.DataNotification)
    body = notification.body
    batch = normaliser.push(meter, body)
    assert not batch.errors, batch.errors
    assert len(batch.readings) == 26
    readings = batch.readings
    texts = normaliser.push_wire(meter, body)
    assert texts == [r.json_text() for r in readings]

    def normalise() -> None:
        for _ in range(pushes):
            normaliser.push_wire(meter, body)

    def normalise_readings() -> None:
        for _ in range(pushes):
            normaliser.push(meter, body)

    fields = [{f.name: getattr(r, f.name) for f in dataclasses.fields(Reading)} for r in readings]

    def construct() -> None:
        for _ in range(pushes):
            for kw in fields:
                Reading(**kw)

    collector = _Collector()
    counting = Outbox(collector, 1 << 40)  # type: ignore[arg-type]

    def encode() -> None:
        for _ in range(pushes):
            counting.offer_texts("reading", meter.meter_id, texts)

    def encode_readings() -> None:
        for _ in range(pushes):
            counting.offer(readings)

    result = {
        "framing_us": per_push(framing, pushes, repeat),
        "apdu_axdr_decode_us": per_push(decode, pushes, repeat),
        "normalise_us": per_push(normalise, pushes, repeat),
        "normalise_readings_us": per_push(normalise_readings, pushes, repeat),
        "reading_construction_us": per_push(construct, pushes, repeat),
        "outbox_encode_us": per_push(encode, pushes, repeat),
        "outbox_encode_readings_us": per_push(encode_readings, pushes, repeat),
    }
    result["rows_per_push"] = collector.statements / (pushes * repeat * 2)
    result.update(
        await _store_stages(
            meter.meter_id, texts, pushes=pushes, repeat=repeat, tmp=tmp, defaults=defaults
        )
    )
    return result


async def _store_stages(
    meter_id: str, texts: list[str], *, pushes: int, repeat: int, tmp: Path, defaults: Any
) -> dict[str, float]:
    runs: dict[str, list[float]] = {}
    for index in range(repeat):
        path = tmp / f"stages-{index}.db"
        store = await Store.open(dataclasses.replace(defaults.store, path=path))
        writer = asyncio.create_task(store.run_writer(), name="store:writer")
        try:
            outbox = Outbox(store, 1 << 40)
            await outbox.load()
            started = time.process_time()
            for start in range(0, pushes, 200):
                await asyncio.gather(
                    *(
                        outbox.offer_texts("reading", meter_id, texts)
                        for _ in range(min(200, pushes - start))
                    )
                )
            runs.setdefault("offer_commit_us", []).append(
                (time.process_time() - started) / pushes * 1e6
            )
            config = dataclasses.replace(defaults.uplink, url="http://127.0.0.1:9", hes_id="b")
            forwarder = forwarding.Forwarder(config, store, outbox, SecretStore(source=None))
            batches = await _batches(forwarder)
            started = time.process_time()
            documents = [forwarder._document(b) for b in batches]  # before gzip
            runs.setdefault("forwarder_body_us", []).append(
                (time.process_time() - started) / pushes * 1e6
            )
            started = time.process_time()
            for document in documents:
                gzip.compress(document, compresslevel=1, mtime=0)
            runs.setdefault("gzip_us", []).append((time.process_time() - started) / pushes * 1e6)
            started = time.process_time()
            for b in batches:
                await store.submit([(forwarding.SEAL, (b.key, forwarding._seqs(b.rows)))])
            for b in batches:
                await store.submit([(forwarding.DELETE, (forwarding._seqs(b.rows), b.key))])
            runs.setdefault("seal_delete_us", []).append(
                (time.process_time() - started) / pushes * 1e6
            )
            runs.setdefault("json_bytes_per_push", []).append(
                sum(len(d) for d in documents) / pushes
            )
            runs.setdefault("outbox_bytes_per_push", []).append(outbox.bytes / pushes)
        finally:
            await store.close()
            await writer
    return {key: statistics.median(values) for key, values in runs.items()}


async def _batches(forwarder: forwarding.Forwarder) -> list[Any]:
    """Every row of the outbox cut into batches as the forwarder cuts them (not sealed)."""
    batches = []
    while True:
        await forwarder._fetch()
        cut = forwarder._cut(time.time() + 3600)
        if not cut:
            return batches
        batches += cut
        for lane in forwarder._lanes:
            while not lane.empty():
                lane.get_nowait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where the store goes (default: $TMPDIR)")
    parser.add_argument("--out", default="bench/results/uplink_stages.json")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))  # warnings only
    with tempfile.TemporaryDirectory(prefix="hesd-bench-stages-", dir=args.dir) as tmp:
        result = uvloop.run(stages(args.pushes, args.repeat, Path(tmp)))
    result["outbox_insert_commit_us"] = result["offer_commit_us"] - result["outbox_encode_us"]
    result["total_us"] = sum(
        result[k]
        for k in (
            "framing_us",
            "apdu_axdr_decode_us",
            "normalise_us",
            "offer_commit_us",
            "forwarder_body_us",
            "gzip_us",
            "seal_delete_us",
        )
    )
    print_results({k: f"{v:,.1f}" for k, v in result.items()})
    write_report(args.out, "uplink_stages", params=vars(args), result=result)


if __name__ == "__main__":
    main()
