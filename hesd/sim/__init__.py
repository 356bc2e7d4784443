"""hesd-sim: simulated smart meters for tests, demos and benchmarks.

``SimulatedMeter`` is the COSEM object model of one meter (``hesd.sim.model``), deterministic in
its seed and the simulated time; ``hesd.sim.truth`` says what it measures; ``build_image`` makes
firmware images it accepts. The model does no I/O and reads no clock; the runtime
(``runner``, ``tcp``, ``serial``, ``mqtt``, ``control``, ``cli``) drives meters with ``now`` from
``SimClock`` over real links. Reference: ``docs/simulator.md``.
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
