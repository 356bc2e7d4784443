"""Faults a simulated meter can show, from a ``--faults`` spec, deterministic per meter.

Grammar (items separated by commas, spaces ignored)::

    SPEC     := ITEM ("," ITEM)*
    ITEM     := NAME ["=" VALUE] ["@" FRACTION]
    FRACTION := a number in (0, 1], or a percentage "5%": the share of the fleet that has it

===========  =====================  ===================================================
name         value                  effect on each answer of a meter that has the fault
===========  =====================  ===================================================
latency      ``20ms`` or            sent after a delay drawn uniformly in the range
             ``20ms..200ms``        (real time, ``ms`` or ``s``)
drop         probability (1)        not sent
garbage      probability (1)        random bytes sent instead of it, or in front of it
disconnect   probability (1)        half of it sent, then the link closed
wrong_tag    probability (1)        a ciphered APDU's GCM tag has a bit flipped
replay       probability (1)        an earlier ciphered APDU is sent instead
silent       none                   never answers
hang         answers (2)            answers that many times per connection, then nothing
drift        ``120ppm``             the meter's clock drifts (applied once, at start)
cut_block    block number N         when image block N arrives (IC 18 image_block_transfer),
                                    the meter keeps it but its answer is lost and the link
                                    closes; once, then the fault is spent
===========  =====================  ===================================================

Which meters have a fault is decided by a hash of (fleet seed, meter id, fault name), so the
same seed gives the same faulty meters; the draws of each faulty meter come from a small
splitmix64 stream seeded the same way (a ``random.Random`` per meter would cost 2.5 KB each).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from protocols.dlms.security import is_ciphered
from protocols.errors import HesdError

__all__ = [
    "FAULT_NAMES",
    "Fault",
    "FaultPlan",
    "FaultSpecError",
    "MeterFaults",
    "Note",
    "Reply",
    "parse_faults",
]

_PROBABILITY: Final = ("drop", "garbage", "disconnect", "wrong_tag", "replay")
FAULT_NAMES: Final = ("latency", *_PROBABILITY, "silent", "hang", "drift", "cut_block")
DEFAULT_HANG: Final = 2  # the AARE and one answer: the session stalls in the middle
_ITEM: Final = re.compile(r"(?P<name>[a-z_]+)(?:=(?P<value>[^@]*))?(?:@(?P<fraction>.*))?")
_NUMBER: Final = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_DURATION: Final = re.compile(rf"(?P<n>{_NUMBER})(?P<unit>ms|s)")
_MASK64: Final = (1 << 64) - 1

FaultValue: TypeAlias = float | int | tuple[float, float] | None
Note: TypeAlias = tuple[str, dict[str, object]]  # a log event name and its fields


class FaultSpecError(HesdError, ValueError):
    """A ``--faults`` spec that does not parse; the message names the bad item."""


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    value: FaultValue
    fraction: float = 1.0

    def __str__(self) -> str:
        value = self.value
        if isinstance(value, tuple):
            lo, hi = value
            text = f"={_ms(lo)}" if lo == hi else f"={_ms(lo)}..{_ms(hi)}"
        elif self.name == "drift":
            text = f"={value:g}ppm"
        elif value is None or (self.name in _PROBABILITY and value == 1):
            text = ""
        else:
            text = f"={value:g}"
        return f"{self.name}{text}" + ("" if self.fraction == 1 else f"@{self.fraction:g}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _duration(item: str, text: str) -> float:
    m = _DURATION.fullmatch(text.strip())
    if m is None:
        raise FaultSpecError(f"fault {item!r}: {text!r} is not a duration like 20ms or 1.5s")
    seconds = float(m["n"]) / (1000 if m["unit"] == "ms" else 1)
    if not 0 <= seconds <= 3600:
        raise FaultSpecError(f"fault {item!r}: duration {text!r} outside 0..3600 s")
    return seconds


def _number(item: str, text: str, what: str) -> float:
    if re.fullmatch(_NUMBER, text.strip()) is None:
        raise FaultSpecError(f"fault {item!r}: {text!r} is not {what}")
    return float(text)


def _value(item: str, name: str, text: str | None) -> FaultValue:
    if name == "silent":
        if text is not None:
            raise FaultSpecError(f"fault {item!r}: silent takes no value")
        return None
    if name == "latency":
        if not text:
            raise FaultSpecError(f"fault {item!r}: latency needs a value like 20ms or 20ms..200ms")
        low, sep, high = text.partition("..")
        lo = _duration(item, low)
        hi = _duration(item, high) if sep else lo
        if hi < lo:
            raise FaultSpecError(f"fault {item!r}: the range {text!r} ends before it starts")
        return (lo, hi)
    if name == "hang":
        if text is None:
            return DEFAULT_HANG
        if not text.strip().isdigit():
            raise FaultSpecError(f"fault {item!r}: hang takes a number of answers, got {text!r}")
        return int(text)
    if name == "cut_block":
        if text is None or not text.strip().isdigit():
            raise FaultSpecError(
                f"fault {item!r}: cut_block takes an image block number, got {text!r}"
            )
        return int(text)
    if name == "drift":
        if not text:
            raise FaultSpecError(f"fault {item!r}: drift needs a value like 120ppm")
        ppm = _number(item, text.strip().removesuffix("ppm"), "a drift like 120ppm")
        if not -1e5 < ppm < 1e5:
            raise FaultSpecError(f"fault {item!r}: drift {ppm:g} ppm outside ±100000")
        return ppm
    if text is None:
        return 1.0
    p = _number(item, text, "a probability")
    if not 0 <= p <= 1:
        raise FaultSpecError(f"fault {item!r}: probability {p:g} outside 0..1")
    return p


def _fraction(item: str, text: str | None) -> float:
    if text is None:
        return 1.0
    text = text.strip()
    percent = text.endswith("%")
    f = _number(item, text.removesuffix("%"), "a fraction of the fleet like 0.05 or 5%")
    if percent:
        f /= 100
    if not 0 < f <= 1:
        raise FaultSpecError(f"fault {item!r}: fraction {text} outside (0, 1]")
    return f


def parse_faults(spec: str) -> FaultPlan:
    """Parse a ``--faults`` spec; ``FaultSpecError`` names the first bad item."""
    faults: list[Fault] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            if spec.strip():
                raise FaultSpecError(f"faults {spec!r}: an empty item (two commas in a row?)")
            continue
        m = _ITEM.fullmatch(item.replace(" ", ""))
        if m is None or m["name"] not in FAULT_NAMES:
            name = m["name"] if m else item
            raise FaultSpecError(
                f"fault {item!r}: unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})"
            )
        name = m["name"]
        if any(f.name == name for f in faults):
            raise FaultSpecError(f"fault {item!r}: {name} is given twice")
        faults.append(Fault(name, _value(item, name, m["value"]), _fraction(item, m["fraction"])))
    return FaultPlan(tuple(faults))


def _hash64(*parts: object) -> int:
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The parsed spec; ``for_meter`` says which faults one meter has."""

    faults: tuple[Fault, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(f) for f in self.faults)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def for_meter(self, seed: int, meter_id: str) -> MeterFaults | None:
        """The faults of meter ``meter_id`` (None: it has none), the same for the same seed."""
        chosen = [
            f
            for f in self.faults
            if f.fraction >= 1 or _hash64(seed, meter_id, f.name) < f.fraction * 2**64
        ]
        if not chosen:
            return None
        return MeterFaults(tuple(chosen), _hash64(seed, meter_id, "draws"))


@dataclass(slots=True)
class Reply:
    """What a meter sends back for what it received: ``data`` after ``delay`` real seconds,
    then the link is closed if ``close``; ``notes`` are log events for the transport."""

    data: bytes = b""
    delay: float = 0.0
    close: bool = False
    notes: list[Note] = field(default_factory=list)

    def note(self, event: str, **fields: object) -> None:
        self.notes.append((event, fields))


class MeterFaults:
    """The faults of one meter, and the little state they need (draws, answers, replays)."""

    __slots__ = (
        "_answered",
        "_last_ciphered",
        "_state",
        "cut_block",
        "disconnect",
        "drift_ppm",
        "drop",
        "faults",
        "garbage",
        "hang",
        "latency",
        "replay",
        "silent",
        "wrong_tag",
    )

    def __init__(self, faults: tuple[Fault, ...], seed: int) -> None:
        self.faults = faults
        values = {f.name: f.value for f in faults}
        self.silent = "silent" in values
        self.latency: tuple[float, float] | None = None
        latency = values.get("latency")
        if isinstance(latency, tuple):
            self.latency = latency
        hang = values.get("hang")
        self.hang = hang if isinstance(hang, int) else None
        cut = values.get("cut_block")
        self.cut_block = cut if isinstance(cut, int) and "cut_block" in values else None
        drift = values.get("drift")
        self.drift_ppm = float(drift) if isinstance(drift, float | int) else 0.0
        p = {name: values.get(name) for name in _PROBABILITY}
        self.drop, self.garbage, self.disconnect, self.wrong_tag, self.replay = (
            float(v) if isinstance(v, float | int) else 0.0 for v in p.values()
        )
        self._state = seed
        self._answered = 0
        self._last_ciphered: bytes | None = None

    def __str__(self) -> str:
        return ",".join(str(Fault(f.name, f.value)) for f in self.faults)

    def random(self) -> float:
        """The next draw in [0, 1) (splitmix64)."""
        self._state = z = (self._state + 0x9E3779B97F4A7C15) & _MASK64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return ((z ^ (z >> 31)) >> 11) / (1 << 53)

    def _chance(self, p: float) -> bool:
        return p > 0 and self.random() < p

    def cut(self, block: int) -> bool:
        """True if the arrival of image block ``block`` is where the link is cut (once)."""
        if self.cut_block != block:
            return False
        self.cut_block = None
        self.faults = tuple(f for f in self.faults if f.name != "cut_block")
        return True

    def new_session(self) -> None:
        """A new connection: ``hang`` counts answers from zero again."""
        self._answered = 0

    def apdus(self, apdus: list[bytes], reply: Reply) -> list[bytes]:
        """Faults on APDUs before framing: ``wrong_tag`` and ``replay`` of ciphered ones."""
        if not (self.wrong_tag or self.replay):
            return apdus
        out = []
        for apdu in apdus:
            sent = apdu
            if not apdu or not is_ciphered(apdu[0]):
                out.append(apdu)
                continue
            earlier = self._last_ciphered
            if earlier is not None and self._chance(self.replay):
                reply.note("sim.fault", kind="replay")
                sent = earlier
            elif self._chance(self.wrong_tag):
                reply.note("sim.fault", kind="wrong_tag")
                sent = apdu[:-1] + bytes((apdu[-1] ^ 0x01,))  # the last octet of the GCM tag
            if self.replay:
                self._last_ciphered = sent  # what goes out, so a replay repeats a sent APDU
            out.append(sent)
        return out

    def deliver(self, data: bytes, reply: Reply) -> None:
        """Faults on the framed bytes about to go out: fill ``reply`` (data, delay, close)."""
        if not data:
            return
        if self.silent:
            reply.note("sim.fault", kind="silent")
            return
        if self.hang is not None and self._answered >= self.hang:
            reply.note("sim.fault", kind="hang")
            return
        self._answered += 1
        if self._chance(self.drop):
            reply.note("sim.fault", kind="drop")
            return
        if self._chance(self.disconnect):
            reply.note("sim.fault", kind="disconnect")
            data = data[: max(1, len(data) // 2)]
            reply.close = True
        elif self._chance(self.garbage):
            reply.note("sim.fault", kind="garbage")
            noise = self._noise()
            data = noise if self.random() < 0.5 else noise + data
        if self.latency is not None:
            lo, hi = self.latency
            reply.delay = lo + (hi - lo) * self.random()
        reply.data += data

    def _noise(self) -> bytes:
        """8..23 random octets (at least a WRAPPER header's worth); the first has its high bit
        set, so it is neither a WRAPPER version (0x00 0x01) nor an HDLC flag (0x7E)."""
        size = 8 + int(self.random() * 16)
        raw = bytearray(int(self.random() * 256) for _ in range(size))
        raw[0] |= 0x80
        return bytes(raw)
