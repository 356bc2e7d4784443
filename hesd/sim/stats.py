"""Fleet-wide counters of ``hesd-sim``: what ``GET /api/v1/stats`` and ``sim.stats`` show."""

from __future__ import annotations

from collections import Counter

__all__ = ["Stats"]

_COUNTERS = (
    "requests",  # GET/SET/ACTION entries served
    "rejected",  # APDUs answered with an Exception-Response or a refused block
    "associations",  # AARQs accepted
    "refused",  # AARQs (and HLS pass 3) refused
    "released",
    "lost",  # associations dropped without release (link closed, inactivity, replaced)
    "bytes_in",
    "bytes_out",
    "pushes",  # Data-Notifications sent (scheduled, alarms, identification)
    "alarms",  # events injected (schedule or control API)
    "alerts",  # alert pushes sent (of the pushes)
    "protocol_errors",  # links closed because the client broke the framing or the protocol
    "frames_dropped",  # HDLC frames for no meter of the bus, or discarded by a link
    "connections",  # links opened (TCP accepted or dialled, HDLC SNRM)
    "disconnections",
    "connect_failures",  # dial mode: connection attempts that failed
)


class Stats:
    """Plain counters (the event loop is single-threaded), plus faults by kind and per-mode
    counters a transport adds (``per_mode``: reconnects, MQTT messages...)."""

    __slots__ = ("faults", "per_mode", *_COUNTERS)

    def __init__(self) -> None:
        for name in _COUNTERS:
            setattr(self, name, 0)
        self.faults: Counter[str] = Counter()
        self.per_mode: Counter[str] = Counter()

    requests: int
    rejected: int
    associations: int
    refused: int
    released: int
    lost: int
    bytes_in: int
    bytes_out: int
    pushes: int
    alarms: int
    alerts: int
    protocol_errors: int
    frames_dropped: int
    connections: int
    disconnections: int
    connect_failures: int

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in _COUNTERS}
        out["faults"] = dict(sorted(self.faults.items()))
        out["per_mode"] = dict(sorted(self.per_mode.items()))
        return out
