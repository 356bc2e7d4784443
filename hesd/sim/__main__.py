"""``python -m hesd.sim``: the same as ``hesd-sim``."""

from hesd.sim.cli import main

main()
