"""hesd-sim: simulated smart meters for tests, demos and benchmarks.

``SimulatedMeter`` is the COSEM object model of one meter (``hesd.sim.model``), deterministic in
its seed and the simulated time; ``hesd.sim.truth`` says what it measures; ``build_image`` makes
firmware images it accepts. Nothing here does I/O or reads a clock: the transport drives meters
with ``now``.
"""

from hesd.sim.handlers import ControlState
from hesd.sim.image import build_image, parse_image
from hesd.sim.model import DEFAULT_START, MeterSnapshot, MeterSpec, SimulatedMeter

__all__ = [
    "DEFAULT_START",
    "ControlState",
    "MeterSnapshot",
    "MeterSpec",
    "SimulatedMeter",
    "build_image",
    "parse_image",
]
