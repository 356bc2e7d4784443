"""UNIX times as hesd writes them in its API answers, logs and command records: ISO 8601 in UTC
with a ``Z`` (``2026-11-23T21:00:00Z``), the same form as the records it sends the MDM.

One function, so that an integrator parses one format whatever the endpoint: the status and the
outbox once wrote ``+00:00`` where commands and schedules wrote ``Z``.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, overload

__all__ = ["iso", "utc"]

Spec = Literal["seconds", "milliseconds", "auto"]  # isoformat's timespec, those hesd uses


@overload
def iso(t: float, timespec: Spec = "seconds") -> str: ...


@overload
def iso(t: float | None, timespec: Spec = "seconds") -> str | None: ...


def iso(t: float | None, timespec: Spec = "seconds") -> str | None:
    """``t`` (UNIX seconds) in UTC with a ``Z``, to the second (or as ``timespec`` says:
    ``"auto"``, with its microseconds when it has any); None stays None."""
    if t is None:
        return None
    return utc(t).isoformat(timespec=timespec).replace("+00:00", "Z")


def utc(t: float) -> dt.datetime:
    """``t`` (UNIX seconds) as an aware datetime in UTC."""
    return dt.datetime.fromtimestamp(t, dt.UTC)
