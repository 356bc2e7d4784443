"""Serial transport of ``hesd-sim``: the fleet on HDLC multidrop buses, each a pty pair.

For each bus the simulator opens a pty (``os.openpty``), puts the tty side in raw mode
(termios: no echo, no line editing, 8-bit), keeps both ends open and logs
``sim.serial.ready path=/dev/pts/N``: hesd (or a test) opens that path as it would open
``/dev/ttyUSB0``. The meters of a bus answer to HDLC server address upper = the vendor's
``hdlc_logical_address``, lower = 16 + their position on the bus (0x10..0x3FFD, IEC 62056-46
§6.4.2.2). ``buses`` splits the fleet in that many contiguous slices.

A serial meter does not push: HDLC in normal response mode only answers the client's polls.
"""

from __future__ import annotations

import asyncio
import os
import tty
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from hesd.sim.endpoint import HdlcBus, MeterEndpoint, Reply
from hesd.sim.transports import SimEnv

__all__ = ["FIRST_PHYSICAL", "SerialTransport"]

FIRST_PHYSICAL: Final = 0x10  # IEC 62056-46 §6.4.2.2: the lowest lower address of a meter
_MAX_PER_BUS: Final = 0x3FFD - FIRST_PHYSICAL + 1
_READ_SIZE: Final = 4096


class _Pty:
    """One bus: the pty master the simulator reads and writes, the tty it keeps open."""

    def __init__(self, bus: HdlcBus, env: SimEnv) -> None:
        self.bus = bus
        self.env = env
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # the tty side: raw, as hesd will set it anyway
        os.set_blocking(self.master, False)
        self.path = os.ttyname(self.slave)
        self._out = bytearray()
        self._pending: deque[asyncio.TimerHandle] = deque()
        self._not_before = 0.0
        self._writing = False
        self._loop = asyncio.get_running_loop()

    def readable(self) -> None:
        try:
            data = os.read(self.master, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:  # EIO: cannot happen while we hold the tty open; stop reading
            self._loop.remove_reader(self.master)
            return
        for endpoint, reply in self.bus.receive(data, self.env.clock.now()):
            self.send(endpoint, reply)

    def send(self, endpoint: MeterEndpoint, reply: Reply) -> None:
        self.env.report(endpoint, reply)
        if not reply.data:
            return  # a serial link does not close; "disconnect" only cuts the frame
        now = self._loop.time()
        at = max(now + reply.delay, self._not_before)
        if at <= now and not self._pending:
            self._write(reply.data)
            return
        self._not_before = at
        self._pending.append(self._loop.call_at(at, self._write_later, reply.data))

    def _write_later(self, data: bytes) -> None:
        self._pending.popleft()
        self._write(data)

    def _write(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                sent = os.write(self.master, self._out)
            except BlockingIOError:
                break
            del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self.master, self._flush)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self.master)

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().cancel()
        self._loop.remove_reader(self.master)
        if self._writing:
            self._loop.remove_writer(self.master)
        for endpoint, reply in self.bus.close(self.env.clock.now()):
            self.env.report(endpoint, reply)
        os.close(self.master)
        os.close(self.slave)


class SerialTransport:
    """The fleet on ``buses`` HDLC multidrop buses (inventory transport ``serial``)."""

    mode = "serial"

    def __init__(self, env: SimEnv, endpoints: Sequence[MeterEndpoint], *, buses: int = 1) -> None:
        count = len(endpoints)
        if not 1 <= buses <= max(1, count):
            raise ValueError(f"{buses} serial buses for {count} meters")
        per_bus = -(-count // buses)
        if per_bus > _MAX_PER_BUS:
            raise ValueError(f"{per_bus} meters on one bus: HDLC addresses {_MAX_PER_BUS} at most")
        self.env = env
        self.endpoints = list(endpoints)
        self.buses = buses
        self._slices = [self.endpoints[i : i + per_bus] for i in range(0, count, per_bus)]
        self._paths: list[str] = []
        self.per_bus = per_bus

    def physical_address(self, endpoint: MeterEndpoint) -> int:
        return FIRST_PHYSICAL + endpoint.index % self.per_bus

    @property
    def paths(self) -> list[str]:
        """The tty of each bus (once ``run`` has opened them)."""
        return list(self._paths)

    def address(self, endpoint: MeterEndpoint) -> str:
        path = self._paths[endpoint.index // self.per_bus]
        return f"{path}:{self.physical_address(endpoint)}"

    async def run(self, ready: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        ptys: list[_Pty] = []
        try:
            for number, meters in enumerate(self._slices):
                physical = [self.physical_address(e) for e in meters]
                pty = _Pty(HdlcBus(meters, physical, self.env.ctx), self.env)
                ptys.append(pty)
                loop.add_reader(pty.master, pty.readable)
                self._paths.append(pty.path)
                self.env.log.info(
                    "sim.serial.ready",
                    path=pty.path,
                    bus=number,
                    meters=len(meters),
                    first_address=physical[0],
                    last_address=physical[-1],
                )
            ready()
            await asyncio.Event().wait()
        finally:
            for pty in ptys:
                pty.close()
