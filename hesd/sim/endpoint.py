"""``MeterEndpoint``: one simulated meter on the wire, sans-IO (bytes and ``now`` in, a
``Reply`` out); ``HdlcBus``: the meters of one HDLC multidrop bus.

An endpoint joins the framing (a WRAPPER framer per connection, or an HDLC server link), the DLMS
``ServerConnection``, the meter model and the meter's faults. The transports (``hesd.sim.tcp``,
``hesd.sim.serial``, ``hesd.sim.mqtt``) only move bytes and arm timers.

Memory matters: 10,000 idle meters live in one process. An endpoint is a dozen slots; its
``ServerConnection`` is made on the first APDU and kept (it holds the meter's invocation counter
and the last counter of each client, so replays stay refused across connections), its framer or
HDLC link lives only while a link is open.

Choices:

* Time: ``now`` is simulated time (``SimClock``). Protocol timeouts are the profile's in real
  seconds, so the endpoint multiplies them by the time scale. Inactivity is checked when
  something arrives (lazily): a transport may also arm a timer at ``deadline``.
* The link closing ends the association (as a real meter's does); the connection object stays.
* A client that breaks the framing or the protocol (a WRAPPER header for another wPort, an AARE
  sent to the meter...) gets the link closed: ``Reply.close``.
* Pushes (Data-Notifications) go to the client SAP of the open association, ciphered as it is
  (general-glo-ciphering with the meter's system title and the vendor's GUEK/GAK), or, with no
  association open, to ``PUSH_WPORT`` (102), ciphered when the vendor's default association
  (``[session] association``) is: what hesd expects of a meter it has not associated with.
  The identification push of dial mode follows the same rule (``docs/simulator.md``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from hesd.sim.faults import MeterFaults, Reply
from hesd.sim.fleet import VendorSite
from hesd.sim.model import SimulatedMeter
from hesd.sim.stats import Stats
from hesd.sim.timebase import date_time_octets
from protocols.dlms.acse import Aarq, decode_acse
from protocols.dlms.axdr import Value
from protocols.dlms.hdlc import HdlcFrame, HdlcFramer
from protocols.dlms.hdlc_link import (
    ApduReceived,
    Connected,
    Disconnected,
    FrameDropped,
    HdlcLink,
)
from protocols.dlms.server import (
    AssociationAccepted,
    AssociationLost,
    AssociationRefused,
    Authenticated,
    Event,
    Released,
    RequestRejected,
    RequestServed,
    ServerConnection,
)
from protocols.dlms.wrapper import WrapperFramer, encode_wrapper
from protocols.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "PUSH_WPORT",
    "FleetContext",
    "HdlcBus",
    "MeterEndpoint",
    "Reply",
    "Sink",
    "identification_body",
]

PUSH_WPORT: Final = 102  # the client SAP pushes go to when no association is open
MIN_TIMER: Final = 1e-3  # simulated seconds: the shortest protocol timer (see _inactivity)


class Sink(Protocol):
    """The open link of an endpoint (a TCP connection, the MQTT uplink topic): ``send`` writes
    a reply as it says (delay, close); ``push`` sends a push in the link's format."""

    def send(self, reply: Reply) -> None: ...

    def push(self, now: float, body: Value | None = None) -> None: ...


@dataclass(slots=True)
class FleetContext:
    """What every endpoint of a fleet shares."""

    stats: Stats
    time_scale: float = 1.0


def identification_body(meter: SimulatedMeter) -> Value:
    """The body of the identification push (dial mode): structure { serial number
    (visible-string), system title (octet-string, 8), logical device name (octet-string) }.
    hesd's ``identify_push`` takes the first string as the serial number and the first
    8-octet string as the system title."""
    spec = meter.spec
    return (spec.serial_number, spec.system_title, meter.logical_device_name())


class MeterEndpoint:
    """One meter: feed ``receive`` (WRAPPER byte stream) or ``receive_frame`` (HDLC, from an
    ``HdlcBus``); call ``open``/``close`` around a link; ``push`` for a Data-Notification."""

    __slots__ = (
        "_conn",
        "_framer",
        "_link",
        "associations_served",
        "connected",
        "ctx",
        "faults",
        "index",
        "meter",
        "sink",
        "site",
    )

    def __init__(
        self,
        index: int,
        meter: SimulatedMeter,
        site: VendorSite,
        ctx: FleetContext,
        faults: MeterFaults | None = None,
    ) -> None:
        self.index = index
        self.meter = meter
        self.site = site
        self.ctx = ctx
        self.faults = faults
        self.connected = False
        self.associations_served = 0
        self.sink: Sink | None = None
        self._conn: ServerConnection | None = None
        self._framer: WrapperFramer | None = None
        self._link: HdlcLink | None = None

    @property
    def meter_id(self) -> str:
        return self.meter.spec.meter_id

    @property
    def association(self) -> str | None:
        """The name of the open (maybe pending) association."""
        return None if self._conn is None else self._conn.association

    # -- links --------------------------------------------------------------------------------

    def open(self, now: float) -> Reply:
        """A link opens (a TCP connection): a fresh framer, faults count answers from zero."""
        reply = Reply()
        if self.connected:
            self._drop(reply, "replaced by a new link")
        self.connected = True
        self._framer = None
        self.meter.take_restart()  # a restart while no link was up is over by now
        self.ctx.stats.connections += 1
        if self.faults is not None:
            self.faults.new_session()
        reply.note("sim.meter.connected")
        return reply

    def close(self, now: float, reason: str = "link closed") -> Reply:
        """The link is gone: the association with it."""
        reply = Reply()
        if self.connected:
            self.ctx.stats.disconnections += 1
            reply.note("sim.meter.disconnected", reason=reason)
        self._drop(reply, reason)
        return reply

    def _drop(self, reply: Reply, reason: str) -> None:
        self.connected = False
        self.sink = None
        self._framer = None
        self._link = None
        if self._conn is not None and self._conn.association is not None:
            self._account(self._conn.handle_timeout(math.inf), reply, reason)

    # -- WRAPPER ------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> Reply:
        """WRAPPER bytes from the client; the reply holds the framed answers."""
        reply = Reply()
        self.ctx.stats.bytes_in += len(data)
        framer = self._framer
        if framer is None:
            framer = self._framer = WrapperFramer(self.site.profile.framing.server_wport, None)
        out: list[tuple[int, bytes]] = []
        try:
            framer.receive_data(data)
            while (frame := framer.next_frame()) is not None:
                client = frame.source_wport
                out += ((client, a) for a in self._serve(client, frame.apdu, now, reply))
                if reply.close:
                    break
        except RemoteProtocolError as exc:
            self._protocol_error(reply, str(exc))
        if self.meter.take_push_request():
            out += self._push_apdus(now, None, None, reply)
        self._emit_wrapper(out, reply)
        return reply

    def push(self, now: float, body: Value | None = None) -> Reply:
        """A Data-Notification (``push_body`` unless ``body``), WRAPPER-framed."""
        reply = Reply()
        self._emit_wrapper(self._push_apdus(now, body, None, reply), reply)
        return reply

    def identification(self, now: float) -> Reply:
        """The identification Data-Notification a dialling meter sends first (ciphered like
        any push without an association)."""
        reply = Reply()
        body = identification_body(self.meter)
        self._emit_wrapper(self._push_apdus(now, body, None, reply), reply)
        return reply

    def _emit_wrapper(self, apdus: list[tuple[int, bytes]], reply: Reply) -> None:
        if not apdus:
            return
        wport = self.site.profile.framing.server_wport
        faults = self.faults
        if faults is not None:
            clients = [c for c, _ in apdus]
            changed = faults.apdus([a for _, a in apdus], reply)
            apdus = list(zip(clients, changed, strict=True))
        data = b"".join(encode_wrapper(wport, client, apdu) for client, apdu in apdus)
        self._deliver(data, reply)

    def _deliver(self, data: bytes, reply: Reply) -> None:
        if self.faults is None:
            reply.data += data
        else:
            self.faults.deliver(data, reply)
            for event, fields in reply.notes:
                if event == "sim.fault":
                    self.ctx.stats.faults[str(fields["kind"])] += 1
        self.ctx.stats.bytes_out += len(reply.data)

    # -- HDLC ---------------------------------------------------------------------------------

    def receive_frame(self, frame: HdlcFrame, now: float) -> Reply:
        """An HDLC frame addressed to this meter (the bus routed it)."""
        reply = Reply()
        self.ctx.stats.bytes_in += frame.length + 2
        link = self._link
        if link is None or link.local != frame.destination:
            link = self._link = HdlcLink(
                role="server",
                local=frame.destination,
                remote=None,
                inactivity_timeout=self._inactivity(),
                max_apdu_size=max(64, self.site.profile.framing.max_pdu_size),
            )
        try:
            events = link.handle_timeout(now) + link.receive_data(frame.encode(), now)
        except RemoteProtocolError as exc:  # the link is FAILED and answers FRMR
            self.ctx.stats.protocol_errors += 1
            reply.note("sim.meter.protocol_error", reason=str(exc))
            events = []
        out = b""
        for event in events:
            if isinstance(event, Connected):
                if not self.connected:
                    self.ctx.stats.connections += 1
                    reply.note("sim.meter.connected")
                self.connected = True
                if self.faults is not None:
                    self.faults.new_session()
            elif isinstance(event, ApduReceived):
                answers = self._serve(frame.source.logical, event.apdu, now, reply)
                if self.faults is not None:
                    answers = self.faults.apdus(answers, reply)
                for apdu in answers:
                    try:
                        out += link.send_apdu(apdu, now)  # returns what is due, at once
                    except LocalProtocolError as exc:  # an APDU still in flight
                        reply.note("sim.meter.answer_dropped", reason=str(exc))
            elif isinstance(event, Disconnected):
                if self.connected:
                    self.ctx.stats.disconnections += 1
                    reply.note("sim.meter.disconnected", reason=event.reason)
                self.connected = False
                if self._conn is not None and self._conn.association is not None:
                    self._account(self._conn.handle_timeout(math.inf), reply, event.reason)
            elif isinstance(event, FrameDropped):
                self.ctx.stats.frames_dropped += 1
        self._deliver(out + link.data_to_send(), reply)
        if self._link is link and any(e == "sim.meter.restarted" for e, _ in reply.notes):
            # the meter restarted with new firmware: its HDLC connection is gone with it
            self._link = None
            self.connected = False
            if self._conn is not None and self._conn.association is not None:
                self._account(self._conn.handle_timeout(math.inf), reply, "restarted")
        return reply

    # -- DLMS ---------------------------------------------------------------------------------

    def _server(self) -> ServerConnection:
        conn = self._conn
        if conn is None:
            keys = self.site.keys
            conn = self._conn = ServerConnection(
                self.site.associations,
                self.meter,
                system_title=self.meter.spec.system_title,
                keys=(keys.global_unicast_key, keys.authentication_key),
                inactivity_timeout=self._inactivity(),
            )
        return conn

    def _inactivity(self) -> float:
        """The profile's inactivity timeout (real seconds) in simulated seconds, at least
        ``MIN_TIMER``: near 2026 an epoch-seconds float resolves about 0.24 µs, so a timer of
        60 s at time scale 1e-9 (6e-8 simulated s) would expire at the next tick of the clock."""
        return max(self.site.profile.inactivity_timeout * self.ctx.time_scale, MIN_TIMER)

    @property
    def deadline(self) -> float | None:
        """When ``on_timeout`` should run (simulated time), if a timer is wanted."""
        deadlines = [
            d
            for d in (
                None if self._conn is None else self._conn.next_deadline(),
                None if self._link is None else self._link.next_deadline(),
            )
            if d is not None
        ]
        return min(deadlines, default=None)

    def on_timeout(self, now: float) -> Reply:
        reply = Reply()
        if self._conn is not None:
            self._account(self._conn.handle_timeout(now), reply, "inactivity")
        if self._link is not None:
            for event in self._link.handle_timeout(now):
                if isinstance(event, Disconnected):
                    self.connected = False
        return reply

    def _serve(self, client: int, apdu: bytes, now: float, reply: Reply) -> list[bytes]:
        conn = self._server()
        events = conn.handle_timeout(now)
        if apdu[:1] == b"\x60":
            self._note_client_title(apdu)
        meter = self.meter
        blocks = meter.image_blocks
        try:
            events += conn.receive_apdu(client, apdu, now)
        except RemoteProtocolError as exc:
            self._account(events, reply, "")
            self._protocol_error(reply, str(exc))
            return []
        self._account(events, reply, "")
        answers = conn.data_to_send()
        block, faults = meter.image_last_block, self.faults
        arrived = blocks != meter.image_blocks
        if arrived and block is not None and faults is not None and faults.cut(block):  # kept
            self.ctx.stats.faults["cut_block"] += 1
            reply.note("sim.fault", kind="cut_block", block=block)
            reply.close = True
            return []
        if meter.take_restart():  # new firmware boots: the answer goes out, then the link closes
            reply.note("sim.meter.restarted", firmware=meter.firmware_version)
            reply.close = True
        return answers

    def _note_client_title(self, apdu: bytes) -> None:
        """Tell the model the client's system title (its security setup shows it)."""
        try:
            aarq = decode_acse(apdu)
        except RemoteProtocolError:
            return  # the ServerConnection refuses it
        if isinstance(aarq, Aarq) and aarq.calling_ap_title is not None:
            self.meter.note_client_system_title(aarq.calling_ap_title)

    def _protocol_error(self, reply: Reply, reason: str) -> None:
        self.ctx.stats.protocol_errors += 1
        reply.note("sim.meter.protocol_error", reason=reason)
        reply.close = True

    def _account(self, events: Sequence[Event], reply: Reply, reason: str) -> None:
        stats = self.ctx.stats
        for event in events:
            if isinstance(event, RequestServed):
                stats.requests += 1
            elif isinstance(event, AssociationAccepted):
                stats.associations += 1
                self.associations_served += 1
                reply.note(
                    "sim.meter.associated",
                    association=event.name,
                    client=event.client_address,
                )
            elif isinstance(event, Authenticated):
                reply.note("sim.meter.authenticated", association=event.name)
            elif isinstance(event, Released):
                stats.released += 1
                reply.note("sim.meter.released", association=event.name)
            elif isinstance(event, AssociationRefused):
                stats.refused += 1
                reply.note("sim.meter.refused", client=event.client_address, reason=event.reason)
            elif isinstance(event, AssociationLost):
                stats.lost += 1
                reply.note("sim.meter.association_lost", reason=reason or event.reason)
            elif isinstance(event, RequestRejected):
                stats.rejected += 1
                reply.note("sim.meter.request_rejected", reason=event.reason)

    # -- pushes -------------------------------------------------------------------------------

    def _push_apdus(
        self, now: float, body: Value | None, ciphered: bool | None, reply: Reply
    ) -> list[tuple[int, bytes]]:
        conn = self._server()
        client = PUSH_WPORT
        name = conn.association
        if name is not None:
            client = next(
                a.client_address for a in self.site.associations.values() if a.name == name
            )
        if ciphered is None:  # as the open association is, else as the vendor's default one
            if name is not None:
                ciphered = self.site.associations[client].ciphered
            else:
                ciphered = self.site.push_ciphered
        if body is None:
            body = self.meter.push_body(now)
        try:
            conn.notify(body, now, ciphered=ciphered)
        except LocalProtocolError as exc:  # longer than the client takes
            reply.note("sim.push.refused", reason=str(exc))
            return []
        self.ctx.stats.pushes += 1
        reply.note("sim.push.sent", client=client, ciphered=ciphered)
        return [(client, apdu) for apdu in conn.data_to_send()]

    def meter_clock(self, now: float) -> bytes:
        """The meter's clock now, as COSEM date-time octets."""
        return date_time_octets(self.meter.meter_time(now))


class HdlcBus:
    """The meters on one HDLC multidrop bus (RS-485), by server address. A frame goes to the
    meter it is addressed to (upper = the vendor's logical device, lower = the meter's
    physical address); frames for no meter of the bus are dropped, as the other stations on
    a real bus ignore them. A bus of one meter (HDLC over TCP) takes any lower address."""

    __slots__ = ("_by_address", "_framer", "ctx", "endpoints")

    def __init__(
        self, endpoints: Sequence[MeterEndpoint], physical: Sequence[int], ctx: FleetContext
    ) -> None:
        if len(endpoints) != len(physical):
            raise ValueError("one physical address per meter")
        self.endpoints = list(endpoints)
        self.ctx = ctx
        self._by_address: dict[tuple[int, int | None], MeterEndpoint] = {}
        for endpoint, address in zip(endpoints, physical, strict=True):
            # IEC 62056-46 §6.4.2.2: lower HDLC addresses 0x10..0x3FFD are for meters
            if not 0x10 <= address <= 0x3FFD:
                raise ValueError(f"HDLC physical address {address} outside 16..16381")
            logical = endpoint.site.profile.framing.hdlc_logical_address
            self._by_address[logical, address] = endpoint
        self._framer = HdlcFramer()

    def route(self, frame: HdlcFrame) -> MeterEndpoint | None:
        dest = frame.destination
        found = self._by_address.get((dest.logical, dest.physical))
        if found is None and len(self.endpoints) == 1:
            only = self.endpoints[0]
            if dest.logical == only.site.profile.framing.hdlc_logical_address:
                found = only
        return found

    def receive(self, data: bytes, now: float) -> list[tuple[MeterEndpoint, Reply]]:
        """Bus bytes in; the answer of each meter addressed (at most one per frame)."""
        framer = self._framer
        replies: list[tuple[MeterEndpoint, Reply]] = []
        try:
            framer.receive_data(data)
        except RemoteProtocolError:
            self.ctx.stats.frames_dropped += 1
        while True:
            try:
                frame = framer.next_frame()
            except RemoteProtocolError:
                self.ctx.stats.frames_dropped += 1
                continue
            if frame is None:
                return replies
            endpoint = self.route(frame)
            if endpoint is None:
                self.ctx.stats.frames_dropped += 1
                continue
            replies.append((endpoint, endpoint.receive_frame(frame, now)))

    def close(self, now: float) -> list[tuple[MeterEndpoint, Reply]]:
        """The bus is gone (the pty closed): every meter's link with it."""
        return [(e, e.close(now, "bus closed")) for e in self.endpoints if e.connected]
