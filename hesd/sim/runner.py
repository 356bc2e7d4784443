"""``Simulator``: a running fleet — endpoints, one transport, pushes, alarms, the control API and
the ``sim.stats`` line, all in one ``TaskGroup``.

Pushes: meter ``i`` pushes every ``push_interval`` simulated seconds at its own phase (a hash
of the seed and its id), so a fleet's pushes spread evenly over the interval; one task walks the
meters in phase order (no timer per meter). A push needs an open link: in serve mode only while
a client is connected, in dial mode while the meter's connection is up, over MQTT while the
broker connection is; serial meters never push. Alarms: ``alarms_per_day`` tamper events per
meter per simulated day, fleet-wide as a Poisson process, each on a random meter with a
random tamper kind its vendor logs, followed at once by the meter's alert push (``inject``).
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
import random
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from hesd.sim.clock import SimClock
from hesd.sim.control import serve_control
from hesd.sim.endpoint import FleetContext, MeterEndpoint
from hesd.sim.events import TAMPER_KINDS
from hesd.sim.faults import FaultPlan, FaultSpecError, MeterFaults, parse_faults
from hesd.sim.fleet import Fleet
from hesd.sim.model import SimulatedMeter
from hesd.sim.mqtt import MqttTransport
from hesd.sim.stats import Stats
from hesd.sim.transports import SimEnv, Transport
from protocols.dlms.axdr import Value

__all__ = ["SimOptions", "Simulator"]

DAY: Final = 86400.0


@dataclass(frozen=True, slots=True)
class SimOptions:
    push_interval: float = 900.0  # simulated seconds; 0: no scheduled pushes
    alarms_per_day: float = 0.0  # tamper alarms per meter per simulated day
    stats_interval: float = 10.0  # real seconds between sim.stats lines; 0: none
    inventory_out: Path | None = None
    secrets_out: Path | None = None
    control: tuple[str, int] | None = None


def _unit(*parts: object) -> float:
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Simulator:
    """A fleet served over one transport. Build the transport with ``env`` and ``endpoints``."""

    def __init__(
        self,
        fleet: Fleet,
        clock: SimClock,
        options: SimOptions,
        faults: FaultPlan | None = None,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.options = options
        self.stats = Stats()
        self.ctx = FleetContext(self.stats, clock.time_scale)
        self.env = SimEnv.create(clock, self.ctx, len(fleet))
        plan = faults or FaultPlan()
        self.endpoints = [
            MeterEndpoint(
                i,
                SimulatedMeter(spec),
                fleet.site_of(spec),
                self.ctx,
                plan.for_meter(fleet.seed, spec.meter_id),
            )
            for i, spec in enumerate(fleet.specs)
        ]
        self.by_id = {e.meter_id: e for e in self.endpoints}
        self.transport: Transport | None = None
        self.ready = asyncio.Event()
        self.control_address: tuple[str, int] | None = None
        self._random = random.Random(fleet.seed)  # noqa: S311 - simulation, not cryptography
        self._tampers = {
            name: sorted(
                k
                for k in TAMPER_KINDS
                if (code := site.profile.events.by_kind(k)) is not None and code.occurrence
            )
            for name, site in fleet.sites.items()
        }

    # -- running ------------------------------------------------------------------------------

    async def run(self, transport: Transport, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set (or a task fails); everything is cleaned up on return."""
        self.transport = transport
        if self.options.secrets_out is not None:
            self.fleet.write_secrets(self.options.secrets_out)
        log = self.env.log
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(transport.run(self._on_ready), name=f"sim:{transport.mode}")]
            if self.options.control is not None:
                host, port = self.options.control
                tasks.append(tg.create_task(serve_control(self, host, port), name="sim:control"))
            tasks.append(tg.create_task(self._pushes(), name="sim:pushes"))
            if self.options.alarms_per_day > 0:
                tasks.append(tg.create_task(self._alarms(), name="sim:alarms"))
            if self.options.stats_interval > 0:
                tasks.append(tg.create_task(self._stats_lines(), name="sim:stats"))
            await stop.wait()
            log.info("sim.stopping", **self._summary())
            for task in tasks:
                task.cancel()
        log.info("sim.stopped", **self._summary())

    def _on_ready(self) -> None:
        transport = self.transport
        assert transport is not None
        if self.options.inventory_out is not None:
            addresses = [transport.address(e) for e in self.endpoints]
            self.fleet.write_inventory(self.options.inventory_out, transport.mode, addresses)
        self.env.log.info(
            "sim.ready",
            mode=transport.mode,
            meters=len(self.endpoints),
            vendors=sorted(self.fleet.sites),
            seed=self.fleet.seed,
            time_scale=self.clock.time_scale,
            sim_time=_iso(self.clock.now()),
            inventory=None
            if self.options.inventory_out is None
            else str(self.options.inventory_out),
            secrets=None if self.options.secrets_out is None else str(self.options.secrets_out),
        )
        self.ready.set()

    def _summary(self) -> dict[str, object]:
        return {
            "connected": sum(e.connected for e in self.endpoints),
            "requests": self.stats.requests,
            "associations": self.stats.associations,
            "pushes": self.stats.pushes,
            "faults": sum(self.stats.faults.values()),
        }

    async def _stats_lines(self) -> None:
        while True:
            await asyncio.sleep(self.options.stats_interval)
            self.env.log.info(
                "sim.stats",
                sim_time=_iso(self.clock.now()),
                connected=sum(e.connected for e in self.endpoints),
                **self.stats.as_dict(),
            )

    # -- pushes and alarms --------------------------------------------------------------------

    def push(self, endpoint: MeterEndpoint, now: float, body: Value | None = None) -> bool:
        """Push now (``push_body``, or ``body``) if the meter has an open link; false if it has
        none."""
        sink = endpoint.sink
        if sink is None:
            return False
        sink.push(now, body)
        return True

    async def _pushes(self) -> None:
        interval = self.options.push_interval
        count = len(self.endpoints)
        if interval <= 0 or not count:
            return
        seed = self.fleet.seed
        phase = array("d", (_unit(seed, e.meter_id, "push") * interval for e in self.endpoints))
        order = array("I", sorted(range(count), key=phase.__getitem__))
        offsets = [phase[i] for i in order]
        now = self.clock.now()
        base = math.floor(now / interval) * interval
        position = bisect.bisect_left(offsets, now - base)
        burst = 0
        while True:
            if position == count:
                position, base = 0, base + interval
            due = base + offsets[position]
            delay = self.clock.real_delay(due)
            if delay > 0:
                burst = 0
                await asyncio.sleep(delay)
            elif (burst := burst + 1) % 100 == 0:
                await asyncio.sleep(0)  # behind schedule: let the links breathe
            self.push(self.endpoints[order[position]], self.clock.now())
            position += 1

    def inject(self, endpoint: MeterEndpoint, kind: str | int, now: float) -> dict[str, object]:
        """Log an event on the meter and push at once if it is connected (the control API's
        ``POST .../events``): the alert push if the event raises one (its vendor's
        ``[alerts.bits]`` has its code), else the instantaneous push (and over a JSON uplink,
        which carries no alert, the JSON record). ``ValueError`` if the vendor has no such
        event."""
        meter = endpoint.meter
        entry = meter.inject_event(kind, now)
        self.stats.alarms += 1
        body = None if self._json_uplink(endpoint) else meter.alert_body(entry, now)
        pushed = self.push(endpoint, now, body)
        if pushed and body is not None:
            self.stats.alerts += 1
        alerts = meter.spec.profile.alerts
        fields = {
            "kind": entry.kind,
            "code": entry.code,
            "pushed": pushed,
            "alert": body is not None,
            "esw_bit": alerts.bit_of(entry.code)
            if body is not None and alerts.carries_esw
            else None,
        }
        self.env.log.info("sim.meter.event", meter=endpoint.meter_id, **fields)
        return {"time": _iso(now), "name": entry.name, **fields}

    def _json_uplink(self, endpoint: MeterEndpoint) -> bool:
        transport = self.transport
        return isinstance(transport, MqttTransport) and transport.is_json(endpoint)

    async def _alarms(self) -> None:
        count = len(self.endpoints)
        rate = count * self.options.alarms_per_day / DAY  # per simulated second
        if not count or rate <= 0:
            return
        rng = self._random
        while True:
            await asyncio.sleep(rng.expovariate(rate) / self.clock.time_scale)
            endpoint = self.endpoints[rng.randrange(count)]
            kinds = self._tampers.get(endpoint.site.name)
            if kinds:
                self.inject(endpoint, rng.choice(kinds), self.clock.now())

    # -- faults at run time -------------------------------------------------------------------

    def set_faults(self, endpoint: MeterEndpoint, spec: str) -> str:
        """Replace a meter's faults by ``spec`` (no ``@fraction``); returns them as text."""
        plan = parse_faults(spec)
        for fault in plan.faults:
            if fault.fraction != 1:
                raise FaultSpecError(f"fault {fault}: a fraction makes no sense for one meter")
        seed = int.from_bytes(
            hashlib.blake2b(
                f"{self.fleet.seed}:{endpoint.meter_id}:api".encode(), digest_size=8
            ).digest(),
            "big",
        )
        faults = MeterFaults(plan.faults, seed) if plan.faults else None
        endpoint.faults = faults
        endpoint.meter.set_clock_drift_ppm(
            0.0 if faults is None else faults.drift_ppm, self.clock.now()
        )
        text = "" if faults is None else str(faults)
        self.env.log.info("sim.meter.faults", meter=endpoint.meter_id, faults=text)
        return text

    # -- the modem at run time ----------------------------------------------------------------

    def set_signal(self, endpoint: MeterEndpoint, quality: int) -> None:
        """The meter's modem reports ``quality`` from now on (``ValueError``: no GSM diagnostic
        object, or not 0..31 or 99)."""
        endpoint.meter.set_signal_quality(quality)
        self.env.log.info("sim.meter.signal", meter=endpoint.meter_id, signal_quality=quality)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")
