"""One time format in everything hesd writes: ISO 8601 UTC with a Z."""

from __future__ import annotations

import datetime as dt

from hesd.timefmt import iso


def test_iso_is_utc_with_a_z_to_the_second_unless_asked() -> None:
    t = dt.datetime(2026, 11, 23, 8, 47, 56, 123456, tzinfo=dt.UTC).timestamp()
    assert iso(t) == "2026-11-23T08:47:56Z"
    assert iso(t, "milliseconds") == "2026-11-23T08:47:56.123Z"
    assert iso(t, "auto") == "2026-11-23T08:47:56.123456Z"
    assert iso(float(int(t)), "auto") == "2026-11-23T08:47:56Z"
    assert iso(None) is None
    assert dt.datetime.fromisoformat(iso(t)) == dt.datetime(2026, 11, 23, 8, 47, 56, tzinfo=dt.UTC)
