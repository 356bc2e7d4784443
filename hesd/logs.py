"""structlog set-up: constant event names, key-value fields, JSON for machines, console for people.

Event names are constants such as ``session.opened`` or ``store.commit_slow``; what varies goes in
fields (``log.info("session.opened", meter=meter_id)``). Tests assert on them with
``structlog.testing.capture_logs``.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog

__all__ = ["configure_logging"]

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(fmt: str, level: str) -> None:
    """Configure structlog for the process; ``fmt`` is "json" or "console"."""
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
