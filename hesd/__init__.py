"""hesd: a Head End System daemon for smart-meter fleets."""

__version__ = "0.1.0"
