"""Simulated meters on the far side of a pty: an RS-485 bus of HDLC meters, an optical probe.

hesd opens the pty's slave by path with pyserial-asyncio-fast; these helpers drive the master
side from a reader callback on the test's event loop (no tasks, no threads). Every meter on the
bus sees every byte, as on a multidrop wire; each meter's ``HdlcLink`` drops the frames for other
stations, and only the addressed meter answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass, field

from protocols.dlms.axdr import Tag, Typed
from protocols.dlms.hdlc import FrameType, HdlcAddress, HdlcFramer
from protocols.dlms.hdlc_link import ApduReceived, Disconnected, HdlcLink
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.iec62056_21 import (
    Event,
    HandshakeComplete,
    IdentificationMessage,
    OpticalMeterHandshake,
    SwitchLine,
    Transmit,
)
from tests.dlms_meter import DictModel, meter

CLIENT = 32  # the reader association's client address (is15959)


@dataclass
class Pty:
    master: int
    slave: int
    path: str

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def line(self) -> tuple[int, int, int]:
        """(output speed, CSIZE bits, PARENB bit) of the slave's termios, as hesd set them."""
        attrs = termios.tcgetattr(self.slave)
        return attrs[5], attrs[2] & termios.CSIZE, attrs[2] & termios.PARENB


def open_pty() -> Pty:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    return Pty(master, slave, os.ttyname(slave))


def energy_model(value: int) -> DictModel:
    return DictModel({(3, "1.0.1.8.0.255", 2): Typed(Tag.DOUBLE_LONG_UNSIGNED, value)})


@dataclass
class SimMeter:
    """One HDLC server (secondary station) with a scripted DLMS server behind it. Any client
    may connect while the link is disconnected; ``clients`` lists who did (SNRM), in order."""

    physical: int
    value: int
    mute: bool = False
    link: HdlcLink = field(init=False)
    polls: int = 0  # frames addressed to this meter
    clients: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = meter(energy_model(self.value))
        self._snoop = HdlcFramer()
        self.reset()

    @property
    def client(self) -> int:
        """The client address of the HDLC connection (the last SNRM's)."""
        return self.clients[-1] if self.clients else CLIENT

    def reset(self) -> None:
        """Forget the HDLC connection (a meter that restarted or timed out its link)."""
        self.link = HdlcLink(
            role="server",
            local=HdlcAddress.server(1, self.physical),
            remote=None,
            inactivity_timeout=None,
        )

    def _note_snrm(self, data: bytes) -> None:
        self._snoop.receive_data(data)
        with contextlib.suppress(RemoteProtocolError):
            while (frame := self._snoop.next_frame()) is not None:
                if frame.kind is FrameType.SNRM and frame.destination == self.link.local:
                    self.clients.append(frame.source.logical)

    def feed(self, data: bytes, now: float) -> tuple[bytes, bool]:
        """(what the meter answers, whether its link disconnected)."""
        self._note_snrm(data)
        try:
            events = self.link.receive_data(data, now)
        except RemoteProtocolError:
            events = []
        disconnected = False
        out = bytearray(self.link.data_to_send())
        for event in events:
            if isinstance(event, ApduReceived):
                self.polls += 1
                self.server.receive_apdu(self.client, event.apdu, now)
                for apdu in self.server.data_to_send():
                    with contextlib.suppress(LocalProtocolError):  # a DISC came in the same read
                        out += self.link.send_apdu(apdu, now)  # returns what it queued
            elif isinstance(event, Disconnected):
                disconnected = True
        out += self.link.data_to_send()
        return (b"" if self.mute else bytes(out)), disconnected


class MeterBus:
    """Meters on the master side of a pty; ``bursts`` keeps who was addressed, in order."""

    def __init__(self, pty: Pty, meters: list[SimMeter]) -> None:
        self.pty = pty
        self.meters = meters
        self.addressed: list[int] = []  # physical address of each frame hesd sent, in order
        self._framer = HdlcFramer()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pty.master, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.pty.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.stop()
            return
        self._note_frames(data)
        now = self._loop.time()
        for sim in self.meters:
            out, _ = sim.feed(data, now)
            if out:
                os.write(self.pty.master, out)

    def _note_frames(self, data: bytes) -> None:
        self._framer.receive_data(data)
        with contextlib.suppress(RemoteProtocolError):
            while (frame := self._framer.next_frame()) is not None:
                self.addressed.append(frame.destination.physical or 0)

    def stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.pty.master)


class OpticalProbeMeter:
    """A meter behind an optical probe: IEC 62056-21 mode E sign-on, then HDLC.

    On a pty (``pty``) it reads the master side itself; otherwise call ``feed`` with what hesd
    wrote and it answers through ``write``.
    """

    def __init__(
        self,
        sim: SimMeter,
        *,
        pty: Pty | None = None,
        write: Callable[[bytes], object] | None = None,
        baud_char: str = "5",
        software_parity: bool = False,
    ) -> None:
        self.sim = sim
        self.pty = pty
        self._write = write or (lambda data: os.write(pty.master, data) if pty else None)
        # third letter lower case: 20 ms reaction time (IEC 62056-21 §6.3.2)
        ident = IdentificationMessage("ISk", baud_char, "\\2MT382")
        self.handshake = OpticalMeterHandshake(ident, software_parity=software_parity)
        self.hdlc = False
        self.lines: list[str] = []  # the line settings the meter switched to, in order
        self.sign_ons = 0
        self._loop = asyncio.get_running_loop()
        self._timers: list[asyncio.TimerHandle] = []
        if pty is not None:
            self._loop.add_reader(pty.master, self._readable)

    def _readable(self) -> None:
        assert self.pty is not None
        try:
            data = os.read(self.pty.master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.stop()
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        now = self._loop.time()
        if self.hdlc:
            out, disconnected = self.sim.feed(data, now)
            if out:
                self._write(out)
            if disconnected:  # back to 300 Bd, listening for a sign-on
                self.hdlc = False
                self._carry_out(self.handshake.reset())
            return
        with contextlib.suppress(RemoteProtocolError):
            self._carry_out(self.handshake.receive_data(data, now))

    def _carry_out(self, events: list[Event]) -> None:
        delay = 0.0
        for event in events:
            if isinstance(event, Transmit):
                delay += event.after
                self._timers.append(self._loop.call_later(delay, self._write, event.data))
            elif isinstance(event, SwitchLine):
                s = event.settings
                self.lines.append(f"{s.baud} {s.bytesize}{s.parity}{s.stopbits}")
            elif isinstance(event, HandshakeComplete):
                self.sign_ons += 1
                self.hdlc = True
                self.sim.reset()

    def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self.pty is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(self.pty.master)
