"""Budgets of scheduled reads: the scheduler's share of the fleet budget, and each link's.

A scheduled read of a meter starts only when ``Budget.room`` says both have room: fewer than
``capacity`` meters are being read (``scheduler.max_in_flight``, within the share of
``limits.max_requests`` left after ``scheduler.reserved_requests``), and the meter's link
carries fewer than it allows. ``link_of`` says which link a meter's requests travel on and what
it allows: one exchange at a time on a ``serial`` bus, ``tcp.per_destination`` connections to
one ``tcp-out`` host, and one request at a time for a ``tcp-in`` or ``mqtt`` meter, which is a
link of its own (its session serialises requests). A meter waiting for its link holds nothing,
so a busy bus does not keep other meters from the share.
"""

from __future__ import annotations

from hesd.store import MeterEntry

__all__ = ["Budget", "link_of"]


def link_of(entry: MeterEntry, per_destination: int) -> tuple[str, int]:
    """The link a meter's requests travel on, and how many may be in flight on it at once."""
    if entry.transport == "serial":
        return f"serial:{entry.address.rpartition(':')[0]}", 1
    if entry.transport == "tcp-out":
        host = entry.address.rpartition(":")[0].removeprefix("[").removesuffix("]")
        return f"tcp-out:{host}", per_destination
    return f"{entry.transport}:{entry.meter_id}", 1


class Budget:
    """Meters being read now: in all, and per link."""

    __slots__ = ("_links", "capacity", "held")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"budget capacity {capacity} < 1")
        self.capacity = capacity
        self.held = 0
        self._links: dict[str, int] = {}

    @property
    def full(self) -> bool:
        return self.held >= self.capacity

    def room(self, link: str, allowed: int) -> bool:
        return self.held < self.capacity and self._links.get(link, 0) < allowed

    def on_link(self, link: str) -> int:
        return self._links.get(link, 0)

    def take(self, link: str, allowed: int) -> None:
        if not self.room(link, allowed):
            raise ValueError(f"no room on {link} ({self.on_link(link)} of {allowed}) or in all")
        self.held += 1
        self._links[link] = self._links.get(link, 0) + 1

    def give_back(self, link: str) -> None:
        self.held -= 1
        left = self._links[link] - 1
        if left:
            self._links[link] = left
        else:
            del self._links[link]
