"""Cron expressions: parsing, Vixie cron's day rule, month ends, time zones (hesd/cron.py)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hesd.cron import CronError, CronSpec

UTC = dt.UTC
IST = ZoneInfo("Asia/Kolkata")
LONDON = ZoneInfo("Europe/London")


def at(*args: int, zone: dt.tzinfo = UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zone)


def following(spec: str, start: dt.datetime, count: int, zone: dt.tzinfo = UTC) -> list[str]:
    cron = CronSpec.parse(spec)
    found = []
    for _ in range(count):
        nxt = cron.next_after(start, zone)
        assert nxt is not None
        found.append(nxt.strftime("%Y-%m-%d %H:%M %a"))
        start = nxt
    return found


def test_every_thirty_minutes() -> None:
    assert following("*/30 * * * *", at(2026, 1, 1, 0, 0), 3) == [
        "2026-01-01 00:30 Thu",
        "2026-01-01 01:00 Thu",
        "2026-01-01 01:30 Thu",
    ]


def test_strictly_after_even_on_the_minute_and_within_it() -> None:
    cron = CronSpec.parse("0 * * * *")
    assert cron.next_after(at(2026, 1, 1, 5, 0), UTC) == at(2026, 1, 1, 6, 0)
    assert cron.next_after(at(2026, 1, 1, 4, 59, 59), UTC) == at(2026, 1, 1, 5, 0)


def test_ist_midnight_is_1830_utc_the_day_before() -> None:
    nxt = CronSpec.parse("30 0 * * *").next_after(at(2026, 11, 23, 16, 0), IST)
    assert nxt is not None
    assert nxt.utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert nxt.astimezone(UTC) == at(2026, 11, 23, 19, 0)


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 1st, the 15th and every Monday
    assert following("0 0 1,15 * mon", at(2026, 11, 23, 1, 0), 5) == [
        "2026-11-30 00:00 Mon",
        "2026-12-01 00:00 Tue",
        "2026-12-07 00:00 Mon",
        "2026-12-14 00:00 Mon",
        "2026-12-15 00:00 Tue",
    ]


def test_a_field_starting_with_a_star_makes_both_day_fields_apply() -> None:
    # "*/2" is unrestricted for the rule: odd days of the month that are also Mondays
    assert following("0 0 */2 * 1", at(2026, 11, 1), 3) == [
        "2026-11-09 00:00 Mon",
        "2026-11-23 00:00 Mon",
        "2026-12-07 00:00 Mon",
    ]
    assert following("0 0 * * 1-5", at(2026, 11, 27, 12), 2) == [  # a Friday noon
        "2026-11-30 00:00 Mon",
        "2026-12-01 00:00 Tue",
    ]


def test_month_ends_and_leap_days() -> None:
    assert following("0 0 31 * *", at(2026, 1, 31, 1), 3) == [
        "2026-03-31 00:00 Tue",
        "2026-05-31 00:00 Sun",
        "2026-07-31 00:00 Fri",
    ]
    assert following("0 0 29 2 *", at(2026, 1, 1), 2) == [
        "2028-02-29 00:00 Tue",
        "2032-02-29 00:00 Sun",
    ]
    assert following("@monthly", at(2026, 12, 15), 2) == [
        "2027-01-01 00:00 Fri",
        "2027-02-01 00:00 Mon",
    ]


def test_names_macros_sunday_as_7_and_mon_to_sun() -> None:
    assert CronSpec.parse("0 0 * jan,JUL sun").months == {1, 7}
    assert CronSpec.parse("0 0 * * 7").weekdays == {0}
    assert CronSpec.parse("0 0 * * mon-sun").weekdays == set(range(7))
    assert CronSpec.parse("@daily").minutes == (0,)
    assert CronSpec.parse("@weekly").weekdays == {0}
    assert CronSpec.parse("10-50/20 8-18/5 * * *").minutes == (10, 30, 50)
    assert CronSpec.parse("10-50/20 8-18/5 * * *").hours == (8, 13, 18)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("* * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 3"),
        ("61 * * * *", "minute '61': 61 is not in 0..59"),
        ("* 24 * * *", "hour '24': 24 is not in 0..23"),
        ("* * 0 * *", "day of month '0': 0 is not in 1..31"),
        ("* * * 13 *", "month '13': 13 is not in 1..12"),
        ("* * * * 8", "day of week '8': 8 is not in 0..7"),
        ("*/0 * * * *", "minute '*/0': the step must be a whole number from 1"),
        ("5/15 * * * *", "minute '5/15': a step needs * or a range (e.g. 5-59/15)"),
        ("30-10 * * * *", "minute '30-10': the range runs backwards (30 > 10)"),
        ("* * * foo *", "month 'foo': 'foo' is not a number 1..12 or one of jan,"),
        ("@reboot", "unknown macro"),
        ("0 0 31 4,6 *", "no date matches"),
        ("0 0 30 2 *", "no date matches"),
    ],
)
def test_errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        CronSpec.parse(text)
    assert str(info.value).startswith(f"{text!r}: ")
    assert message in str(info.value)


def test_dst_gaps_do_not_match_and_repeated_times_match_once() -> None:
    cron = CronSpec.parse("30 1 * * *")
    # 2026-03-29: London's clocks go from 01:00 to 02:00; 01:30 does not exist that day
    assert cron.next_after(at(2026, 3, 28, 12), LONDON) == at(2026, 3, 30, 1, 30, zone=LONDON)
    # 2026-10-25: 01:30 happens twice; the first (BST, 00:30 UTC), not the second
    first = cron.next_after(at(2026, 10, 24, 12), LONDON)
    assert first is not None
    assert first.astimezone(UTC) == at(2026, 10, 25, 0, 30)
    then = cron.next_after(first, LONDON)
    assert then is not None
    assert then.astimezone(UTC) == at(2026, 10, 26, 1, 30)


# -- properties ------------------------------------------------------------------------------


def _item(lo: int, hi: int) -> st.SearchStrategy[str]:
    value = st.integers(lo, hi)
    ranges = st.tuples(value, value).map(sorted)
    return st.one_of(
        st.just("*"),
        st.integers(1, hi - lo + 1).map(lambda n: f"*/{n}"),
        value.map(str),
        ranges.map(lambda r: f"{r[0]}-{r[1]}"),
        st.tuples(ranges, st.integers(1, 9)).map(lambda t: f"{t[0][0]}-{t[0][1]}/{t[1]}"),
    )


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.lists(_item(lo, hi), min_size=1, max_size=3).map(",".join)


SPECS = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 28), st.just("*") | _field(1, 12), _field(0, 7)
).map(" ".join)
INSTANTS = st.datetimes(
    min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2040, 1, 1), timezones=st.just(UTC)
)
ZONES = st.sampled_from([UTC, IST])
BRUTE_FORCE = dt.timedelta(days=3)


@given(spec=SPECS, now=INSTANTS, zone=ZONES)
def test_next_is_after_now_matches_and_nothing_earlier_does(
    spec: str, now: dt.datetime, zone: dt.tzinfo
) -> None:
    cron = CronSpec.parse(spec)
    nxt = cron.next_after(now, zone)
    assert nxt is not None
    assert nxt > now
    assert (nxt.second, nxt.microsecond) == (0, 0)
    assert cron.matches(nxt.astimezone(zone))
    # every minute in between, as far as three days on, does not match
    minute = now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    end = min(nxt, now + BRUTE_FORCE)
    while minute < end:
        assert not cron.matches(minute.astimezone(zone)), minute
        minute += dt.timedelta(minutes=1)
