"""A cheap push generator for bench/uplink.py: thousands of IS 15959 meters dialling in to hesd,
each sending real Data-Notifications built once, at a fixed total rate.

The meters are hesd-sim's (``Fleet.build`` with the same vendor, count and seed as ``hesd-sim
--seed S --meters N``, so hesd's inventory from ``hesd-sim --inventory-out`` knows them). Each
meter's frames are encoded once by the simulator's own code (``MeterEndpoint.identification``
and ``MeterEndpoint.push``: WRAPPER, plaintext, as an IS 15959 meter pushes outside an
association). Per push only what must change is patched in place: the long-invoke-id (a
counter) and the meter's clock in the body (the send time, COSEM date-time in IST, hundredths
of a second). The instantaneous values stay those of the first push. Ciphered pushes are not
generated: suite 0 would need the push encrypted after its clock is set, or every push
encrypted ahead of the run. hesd-sim's IS 15959 meters push in plaintext too (a push outside an
association is ciphered as the profile's default association, the reader's LLS one, is not).

One asyncio process (uvloop): every ``TICK`` seconds it writes the pushes due since the start
(``rate * elapsed``, meters taking turns), all with the same clock (the tick's time), and notes
``(tick time, clock text, first meter, count)`` once per tick. From those notes ``sent_pushes``
gives every push written, by ``(meter id, timestamp as the MDM sees it)``, with the time it was
written: a push's latency is the MDM's store time of its last reading minus that time. A meter
whose connection was lost is not written to (its pushes are listed in ``unsent``, not counted as
sent). Falling behind shows as ``sent_per_s`` below the rate asked.

    python bench/pushgen.py --hes 127.0.0.1:PORT --meters N --rate R --out sent.json

Connects every meter (``connected N`` on stdout), waits for a line on stdin, pushes until the
next line (or end of input), then writes the ticks to ``--out`` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, cast

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.profile import load_profiles
from hesd.sim.clock import SimClock
from hesd.sim.endpoint import PUSH_WPORT
from hesd.sim.fleet import Fleet
from hesd.sim.runner import SimOptions, Simulator
from hesd.sim.timebase import date_time_octets
from protocols.dlms import apdu as x
from protocols.dlms.calendar import DateTime
from protocols.dlms.wrapper import WrapperFramer

REPO: Final = Path(__file__).resolve().parent.parent
TICK: Final = 0.005  # seconds between writes
CONNECTING: Final = 200  # connections being made at once
_U32: Final = struct.Struct(">I")
_WRAPPER_HEADER: Final = 8


class PushFrames:
    """One meter's frames: its identification, and a push to patch (invoke-id and clock)."""

    __slots__ = ("clock_at", "frame", "identification", "meter_id")

    def __init__(self, meter_id: str, identification: bytes, push: bytes, clock: bytes) -> None:
        self.meter_id = meter_id
        self.identification = identification
        self.frame = bytearray(push)
        framer = WrapperFramer(PUSH_WPORT, None)
        framer.receive_data(push)
        frame = framer.next_frame()
        if frame is None or frame.apdu[0] != x.ApduTag.DATA_NOTIFICATION:
            raise ValueError(f"meter {meter_id}: the push is no plaintext Data-Notification")
        self.clock_at = push.index(b"\x09\x0c" + clock) + 2  # octet-string of 12: the clock
        if push.count(clock) != 1:
            raise ValueError(f"meter {meter_id}: the clock is not found once in the push")

    def push(self, invoke_id: int, clock: bytes) -> bytes:
        frame = self.frame
        frame[_WRAPPER_HEADER + 1 : _WRAPPER_HEADER + 5] = _U32.pack(invoke_id & 0xFF_FFFF)
        frame[self.clock_at : self.clock_at + 12] = clock
        return bytes(frame)


def build_frames(meters: int, seed: int, vendor: str = "is15959") -> list[PushFrames]:
    """The frames of hesd-sim's first ``meters`` meters of ``vendor`` (``--seed seed``)."""
    profiles = load_profiles(REPO / "conf" / "vendors", (vendor,), source="pushgen")
    fleet = Fleet.build(profiles, [(vendor, meters)], seed=seed)
    start = time.time()
    clock = SimClock(start, 1.0, monotonic=lambda: 0.0)
    sim = Simulator(fleet, clock, SimOptions(push_interval=0, stats_interval=0))
    out = []
    for endpoint in sim.endpoints:
        endpoint.open(start)
        out.append(
            PushFrames(
                endpoint.meter_id,
                endpoint.identification(start).data,
                endpoint.push(start).data,
                endpoint.meter_clock(start),
            )
        )
    return out


class _Meter(asyncio.Protocol):
    """One meter's connection: what hesd sends is read and dropped (it asks nothing here)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class PushGenerator:
    def __init__(self, frames: Sequence[PushFrames], rate: float) -> None:
        self.frames = list(frames)
        self.rate = rate
        self.meters: list[_Meter] = []
        self.ticks: list[tuple[float, str, int, int]] = []  # (time, clock text, first, count)
        self.unsent: list[tuple[int, str]] = []  # (meter, clock text): its connection was lost
        self.due = 0  # pushes due so far (written, or unsent)
        self.started = 0.0
        self.stopped = 0.0

    async def connect(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECTING)

        async def dial(frames: PushFrames) -> _Meter:
            async with gate:
                _, meter = await loop.create_connection(_Meter, host, port)
            assert meter.transport is not None
            meter.transport.write(frames.identification)
            return meter

        self.meters = list(await asyncio.gather(*(dial(f) for f in self.frames)))

    async def run(self, stop: asyncio.Event) -> None:
        """Push at ``rate`` until ``stop`` is set."""
        frames, meters, count = self.frames, self.meters, len(self.frames)
        self.started = started = time.time()
        next_meter = 0
        while not stop.is_set():
            now = time.time()
            due = int((now - started) * self.rate) - self.due
            if due > 0:
                clock = date_time_octets(now)
                text = _clock_text(clock)
                self.ticks.append((now, text, next_meter, due))
                for _ in range(due):
                    meter = meters[next_meter]
                    if meter.lost or meter.transport is None:
                        self.unsent.append((next_meter, text))
                    else:
                        meter.transport.write(frames[next_meter].push(self.due, clock))
                    self.due += 1
                    next_meter = (next_meter + 1) % count
            with_room = TICK - (time.time() - now)
            await asyncio.sleep(max(0.0, with_room))
        self.stopped = time.time()

    def close(self) -> None:
        for meter in self.meters:
            if meter.transport is not None:
                meter.transport.close()

    def report(self) -> dict[str, Any]:
        elapsed = max(1e-9, self.stopped - self.started)
        sent = self.due - len(self.unsent)
        return {
            "meters": len(self.frames),
            "rate": self.rate,
            "sent": sent,
            "sent_per_s": sent / elapsed,
            "started": self.started,
            "stopped": self.stopped,
            "lost_connections": sum(m.lost for m in self.meters),
            "meter_ids": [f.meter_id for f in self.frames],
            "ticks": self.ticks,
            "unsent": self.unsent,
        }


def _clock_text(clock: bytes) -> str:
    """The timestamp hesd gives a push whose clock is ``clock`` (docs/mdm-api.yaml: UTC, the
    milliseconds only when there are some)."""
    stamp = DateTime.from_octets(clock).to_datetime().astimezone(dt.UTC)
    spec = "milliseconds" if stamp.microsecond else "seconds"
    return stamp.isoformat(timespec=spec).replace("+00:00", "Z")


def sent_pushes(report: dict[str, Any]) -> tuple[dict[tuple[str, str], float], int]:
    """Every push written, ``(meter id, timestamp) -> when``, and how many pushes could not be
    told apart (a meter pushed twice within a hundredth of a second: the first is kept)."""
    meter_ids: list[str] = report["meter_ids"]
    count = len(meter_ids)
    unsent = {(meter_ids[m], text) for m, text in report["unsent"]}
    sent: dict[tuple[str, str], float] = {}
    ambiguous = 0
    for at, text, first, due in report["ticks"]:
        for i in range(due):
            key = (meter_ids[(first + i) % count], text)
            if key in unsent:
                continue
            if key in sent:
                ambiguous += 1
            else:
                sent[key] = at
    return sent, ambiguous


async def _main(args: argparse.Namespace) -> None:
    frames = build_frames(args.meters, args.seed)
    generator = PushGenerator(frames, args.rate)
    host, _, port = args.hes.rpartition(":")
    await generator.connect(host, int(port))
    print(f"connected {len(generator.meters)}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.readline()  # go
    stop = asyncio.Event()
    pushing = asyncio.create_task(generator.run(stop), name="pushgen:push")
    await reader.readline()  # stop (or end of input)
    stop.set()
    await pushing
    report = generator.report()
    generator.close()
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(report))
    print(f"sent {report['sent']} ({report['sent_per_s']:,.0f}/s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hes", required=True, help="hesd's TCP listener, HOST:PORT")
    parser.add_argument("--meters", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="pushes per second, in all")
    parser.add_argument("--seed", type=int, default=1, help="hesd-sim's --seed")
    parser.add_argument("--out", required=True, help="where the ticks go (JSON)")
    uvloop.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
