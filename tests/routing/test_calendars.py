"""Tests for router.calendars: table-driven cases plus hypothesis properties.

Instants are compared as microseconds since the epoch (`us`) and shifted in UTC (`shift`):
between two datetimes sharing a tzinfo Python compares, subtracts and adds wall-clock time and
ignores `fold`, which is wrong around a DST change.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from router.calendars import Calendar, Period, parse_period

UTC = dt.UTC
NY = ZoneInfo("America/New_York")
RIGA = ZoneInfo("Europe/Riga")
KOLKATA = ZoneInfo("Asia/Kolkata")
EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
US_1 = dt.timedelta(microseconds=1)
H = dt.timedelta(hours=1)
MON_FRI = range(5)


def us(moment: dt.datetime) -> int:
    return (moment - EPOCH) // US_1


def shift(moment: dt.datetime, delta: dt.timedelta) -> dt.datetime:
    return moment.astimezone(UTC) + delta


def elapsed(start: dt.datetime, end: dt.datetime) -> dt.timedelta:
    return dt.timedelta(microseconds=us(end) - us(start))


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def weekly(days: range | list[int], *texts: str) -> dict[int, list[Period]]:
    return {day: [parse_period(text) for text in texts] for day in days}


OFFICE_NY = Calendar("America/New_York", weekly(MON_FRI, "09:00-17:00"), "US", "NY", name="ny")
OFFICE_RIGA = Calendar("Europe/Riga", weekly(MON_FRI, "09:00-17:00"), "LV")
OFFICE_IN = Calendar("Asia/Kolkata", weekly(MON_FRI, "09:30-18:00"), "IN")
# Day shift plus a night shift that runs into the next morning, on working days only.
SHIFTS_RIGA = Calendar("Europe/Riga", weekly(MON_FRI, "09:00-17:00", "22:00-06:00"), "LV")
NIGHT_NY = Calendar("America/New_York", weekly([4, 5], "22:00-06:00"))
CLOSED = Calendar("UTC", {})
ALWAYS = Calendar("UTC", weekly(range(7), "00:00-24:00"))
CUSTOM_NY = Calendar(
    "America/New_York",
    weekly(MON_FRI, "09:00-17:00"),
    "US",
    "NY",
    closed_dates=[dt.date(2026, 6, 15)],
    open_dates={
        dt.date(2026, 6, 16): [],  # an empty override closes the day too
        dt.date(2026, 6, 20): [parse_period("10:00-14:00")],  # a Saturday
        dt.date(2026, 7, 3): [parse_period("09:00-12:00")],  # Independence Day (observed)
    },
)


# -- parse_period --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end", "crosses"),
    [
        ("09:00-17:30", dt.time(9), dt.time(17, 30), False),
        ("22:00-06:00", dt.time(22), dt.time(6), True),
        ("00:00-24:00", dt.time(0), dt.time(0), True),
        ("22:00-24:00", dt.time(22), dt.time(0), True),
        (" 9:15 - 9:45 ", dt.time(9, 15), dt.time(9, 45), False),
        ("08:00\u201312:00", dt.time(8), dt.time(12), False),  # en dash
    ],
)
def test_parse_period(text: str, start: dt.time, end: dt.time, crosses: bool) -> None:
    period = parse_period(text)
    assert period == Period(start, end)
    assert period.crosses_midnight is crosses
    assert parse_period(str(period)) == period


@pytest.mark.parametrize(
    "text",
    [
        "",
        "9-17",
        "09:00",
        "09:00-17:00-18:00",
        "24:00-06:00",
        "25:00-26:00",
        "09:60-10:00",
        "09:00-24:30",
        "09:00-17:0",
        "nine-five",
        "09.00-17.00",
    ],
)
def test_parse_period_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid period") as caught:
        parse_period(text)
    assert repr(text) in str(caught.value)


def test_period_rejects_aware_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        Period(dt.time(9, tzinfo=UTC), dt.time(17))


# -- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "America"}, "unknown time zone"),
        ({"holidays_country": "XX"}, "unknown holidays country 'XX'"),
        ({"holidays_country": False}, "must be a string"),
        ({"holidays_country": "US", "holidays_subdivision": "ZZ"}, "subdivision 'ZZ'.*NY"),
        ({"holidays_subdivision": "NY"}, "without a country"),
        ({"weekly": {7: []}}, "weekday must be 0"),
        ({"weekly": {0: ["09:00-17:00"]}}, "expected Period"),
        ({"closed_dates": [dt.datetime(2026, 1, 1)]}, "expected a datetime.date"),
        (
            {"closed_dates": [dt.date(2026, 1, 1)], "open_dates": {dt.date(2026, 1, 1): []}},
            "2026-01-01 is in both",
        ),
        ({"horizon_days": 0}, "horizon_days"),
    ],
)
def test_construction_errors(kwargs: dict, message: str) -> None:
    arguments = {"timezone": "UTC", "weekly": {}} | kwargs
    with pytest.raises(ValueError, match=message):
        Calendar(**arguments)


def test_country_code_case_and_subdivision_alias() -> None:
    calendar = Calendar("America/New_York", {}, "us", "NY")
    assert calendar.holiday_name(dt.date(2026, 7, 3)) == "Independence Day (observed)"


@pytest.mark.parametrize("method", ["is_open", "next_open", "next_close"])
def test_naive_datetime_rejected(method: str) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        getattr(OFFICE_NY, method)(dt.datetime(2026, 1, 5, 10))


def test_naive_datetime_rejected_in_arithmetic() -> None:
    naive, aware = dt.datetime(2026, 1, 5, 10), utc(2026, 1, 5, 10)
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE_NY.add_business_time(naive, H)
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE_NY.business_time_between(aware, naive)
    with pytest.raises(ValueError, match="negative"):
        OFFICE_NY.add_business_time(aware, -H)


# -- open / closed -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calendar", "at", "expected"),
    [
        (OFFICE_NY, dt.datetime(2026, 1, 9, 8, 59, 59, tzinfo=NY), False),
        (OFFICE_NY, dt.datetime(2026, 1, 9, 9, tzinfo=NY), True),
        (OFFICE_NY, dt.datetime(2026, 1, 9, 16, 59, 59, 999999, tzinfo=NY), True),
        (OFFICE_NY, dt.datetime(2026, 1, 9, 17, tzinfo=NY), False),  # periods are [start, end)
        (OFFICE_NY, utc(2026, 1, 9, 15), True),  # 10:00 EST, asked in UTC
        (OFFICE_NY, dt.datetime(2026, 1, 10, 12, tzinfo=NY), False),  # Saturday
        (OFFICE_NY, dt.datetime(2026, 1, 1, 12, tzinfo=NY), False),  # New Year's Day
        (OFFICE_NY, dt.datetime(2026, 2, 12, 12, tzinfo=NY), False),  # Lincoln's Birthday (NY)
        # A Friday night shift is open on Saturday although Saturday has no periods of its own.
        (NIGHT_NY, dt.datetime(2026, 1, 10, 3, tzinfo=NY), True),
        (NIGHT_NY, dt.datetime(2026, 1, 10, 6, tzinfo=NY), False),
        (NIGHT_NY, dt.datetime(2026, 1, 10, 23, tzinfo=NY), True),
        (NIGHT_NY, dt.datetime(2026, 1, 11, 5, 59, tzinfo=NY), True),
        (NIGHT_NY, dt.datetime(2026, 1, 9, 21, 59, tzinfo=NY), False),
        (NIGHT_NY, dt.datetime(2026, 1, 11, 23, tzinfo=NY), False),
        # India: Republic Day (Monday 2026-01-26) is closed, the days around it are not.
        (OFFICE_IN, dt.datetime(2026, 1, 26, 11, tzinfo=KOLKATA), False),
        (OFFICE_IN, dt.datetime(2026, 1, 27, 9, 30, tzinfo=KOLKATA), True),
        (OFFICE_IN, dt.datetime(2026, 1, 23, 17, 59, tzinfo=KOLKATA), True),
        # Latvia: Proclamation Day (Wednesday 2026-11-18) closes the periods starting that day;
        # Tuesday's night shift still runs into Wednesday morning.
        (SHIFTS_RIGA, dt.datetime(2026, 11, 18, 3, tzinfo=RIGA), True),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 18, 6, tzinfo=RIGA), False),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 18, 10, tzinfo=RIGA), False),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 18, 23, tzinfo=RIGA), False),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 19, 3, tzinfo=RIGA), False),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 19, 9, tzinfo=RIGA), True),
        (SHIFTS_RIGA, dt.datetime(2026, 11, 17, 23, tzinfo=RIGA), True),
        # Custom dates.
        (CUSTOM_NY, dt.datetime(2026, 6, 15, 10, tzinfo=NY), False),  # closed_dates
        (CUSTOM_NY, dt.datetime(2026, 6, 16, 10, tzinfo=NY), False),  # empty open_dates
        (CUSTOM_NY, dt.datetime(2026, 6, 17, 10, tzinfo=NY), True),
        (CUSTOM_NY, dt.datetime(2026, 6, 20, 9, 59, tzinfo=NY), False),
        (CUSTOM_NY, dt.datetime(2026, 6, 20, 10, tzinfo=NY), True),  # a Saturday made open
        (CUSTOM_NY, dt.datetime(2026, 6, 20, 14, tzinfo=NY), False),
        (CUSTOM_NY, dt.datetime(2026, 7, 3, 11, tzinfo=NY), True),  # open on a holiday
        (CUSTOM_NY, dt.datetime(2026, 7, 3, 13, tzinfo=NY), False),
        (CLOSED, utc(2026, 1, 5, 12), False),
        (ALWAYS, utc(2026, 1, 5, 12), True),
    ],
)
def test_is_open(calendar: Calendar, at: dt.datetime, expected: bool) -> None:
    assert calendar.is_open(at) is expected


@pytest.mark.parametrize(
    ("calendar", "day", "expected"),
    [
        (OFFICE_IN, dt.date(2026, 1, 26), "Republic Day"),
        (OFFICE_IN, dt.date(2026, 1, 27), None),
        (OFFICE_RIGA, dt.date(2026, 11, 18), "Republic of Latvia Proclamation Day"),
        (OFFICE_RIGA, dt.date(2026, 11, 17), None),
        (OFFICE_NY, dt.date(2026, 7, 3), "Independence Day (observed)"),
        (OFFICE_NY, dt.date(2027, 1, 1), "New Year's Day"),  # another year, cached separately
        (CUSTOM_NY, dt.date(2026, 7, 3), "Independence Day (observed)"),  # even when opened
        (NIGHT_NY, dt.date(2026, 1, 1), None),  # no country configured
    ],
)
def test_holiday_name(calendar: Calendar, day: dt.date, expected: str | None) -> None:
    assert calendar.holiday_name(day) == expected


def test_periods_on() -> None:
    nine_to_five = (parse_period("09:00-17:00"),)
    assert CUSTOM_NY.periods_on(dt.date(2026, 6, 17)) == nine_to_five
    assert CUSTOM_NY.periods_on(dt.date(2026, 6, 15)) == ()
    assert CUSTOM_NY.periods_on(dt.date(2026, 6, 20)) == (parse_period("10:00-14:00"),)
    assert CUSTOM_NY.periods_on(dt.date(2026, 7, 3)) == (parse_period("09:00-12:00"),)
    assert OFFICE_NY.periods_on(dt.date(2026, 7, 3)) == ()


# -- next_open / next_close ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calendar", "at", "opens", "closes"),
    [
        # Open now: next_open is `at` itself, next_close the end of the stretch.
        (OFFICE_NY, utc(2026, 1, 9, 15), utc(2026, 1, 9, 15), utc(2026, 1, 9, 22)),
        # Closed now: next_close is `at` itself.
        (OFFICE_NY, utc(2026, 1, 9, 22), utc(2026, 1, 12, 14), utc(2026, 1, 9, 22)),
        (OFFICE_NY, utc(2025, 12, 31, 23), utc(2026, 1, 2, 14), utc(2025, 12, 31, 23)),
        (
            OFFICE_IN,
            dt.datetime(2026, 1, 26, 11, tzinfo=KOLKATA),
            dt.datetime(2026, 1, 27, 9, 30, tzinfo=KOLKATA),
            dt.datetime(2026, 1, 26, 11, tzinfo=KOLKATA),
        ),
        (
            SHIFTS_RIGA,
            dt.datetime(2026, 11, 18, 3, tzinfo=RIGA),
            dt.datetime(2026, 11, 18, 3, tzinfo=RIGA),
            dt.datetime(2026, 11, 18, 6, tzinfo=RIGA),
        ),
        (
            SHIFTS_RIGA,
            dt.datetime(2026, 11, 18, 6, tzinfo=RIGA),
            dt.datetime(2026, 11, 19, 9, tzinfo=RIGA),
            dt.datetime(2026, 11, 18, 6, tzinfo=RIGA),
        ),
        # Friday and Saturday night shifts touch nothing else: Saturday 06:00 to 22:00 is closed.
        (
            NIGHT_NY,
            dt.datetime(2026, 1, 9, 23, tzinfo=NY),
            dt.datetime(2026, 1, 9, 23, tzinfo=NY),
            dt.datetime(2026, 1, 10, 6, tzinfo=NY),
        ),
        (CLOSED, utc(2026, 1, 5, 12), None, utc(2026, 1, 5, 12)),
        (ALWAYS, utc(2026, 1, 5, 12), utc(2026, 1, 5, 12), None),
    ],
)
def test_next_open_and_close(
    calendar: Calendar, at: dt.datetime, opens: dt.datetime | None, closes: dt.datetime | None
) -> None:
    got_open, got_close = calendar.next_open(at), calendar.next_close(at)
    assert (got_open and us(got_open)) == (opens and us(opens))
    assert (got_close and us(got_close)) == (closes and us(closes))
    for got in (got_open, got_close):
        assert got is None or got.tzinfo is calendar.zone


def test_adjacent_and_overlapping_periods_merge() -> None:
    calendar = Calendar(
        "Europe/Riga",
        {
            0: [
                parse_period("09:00-12:00"),
                parse_period("12:00-14:00"),
                parse_period("13:00-15:00"),
                parse_period("20:00-00:00"),
            ],
            1: [parse_period("00:00-02:00"), parse_period("01:00-03:00")],
        },
    )
    monday = dt.datetime(2026, 6, 1, 10, tzinfo=RIGA)
    assert us(calendar.next_close(monday)) == us(monday.replace(hour=15))
    late = monday.replace(hour=21)
    assert us(calendar.next_close(late)) == us(dt.datetime(2026, 6, 2, 3, tzinfo=RIGA))
    assert calendar.business_time_between(monday.replace(hour=0), monday + 2 * 24 * H) == 13 * H


def test_horizon() -> None:
    future = Calendar("UTC", {}, open_dates={dt.date(2030, 1, 1): [parse_period("09:00-17:00")]})
    assert future.next_open(utc(2026, 1, 1)) is None
    assert future.add_business_time(utc(2026, 1, 1), H) is None
    assert us(future.next_open(utc(2029, 6, 1))) == us(utc(2030, 1, 1, 9))
    assert us(future.add_business_time(utc(2029, 6, 1), H)) == us(utc(2030, 1, 1, 10))
    assert future.business_time_between(utc(2026, 1, 1), utc(2031, 1, 1)) == 8 * H
    short = Calendar("UTC", weekly(range(7), "00:00-24:00"), horizon_days=3)
    assert short.next_close(utc(2026, 1, 1)) is None


def test_all_closed_calendar() -> None:
    start = utc(2026, 1, 5, 12)
    assert CLOSED.next_open(start) is None
    assert CLOSED.add_business_time(start, H) is None
    assert us(CLOSED.add_business_time(start, dt.timedelta(0))) == us(start)
    assert CLOSED.business_time_between(start, start + 1000 * 24 * H) == dt.timedelta(0)
    # Periods exist but every one of them is cancelled: the search still ends.
    cancelled = Calendar(
        "UTC",
        weekly([0], "09:00-17:00"),
        closed_dates=[dt.date(2026, 1, 5) + dt.timedelta(weeks=week) for week in range(60)],
    )
    assert cancelled.next_open(start) is None
    assert cancelled.add_business_time(start, H) is None


# -- business time -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calendar", "start", "duration", "expected"),
    [
        # Friday 16:00 + 4 business hours = Monday 12:00.
        (
            OFFICE_NY,
            dt.datetime(2026, 1, 9, 16, tzinfo=NY),
            4 * H,
            dt.datetime(2026, 1, 12, 12, tzinfo=NY),
        ),
        # The same across the DST weekends of New York and Riga.
        (
            OFFICE_NY,
            dt.datetime(2026, 3, 6, 16, tzinfo=NY),
            4 * H,
            dt.datetime(2026, 3, 9, 12, tzinfo=NY),
        ),
        (
            OFFICE_NY,
            dt.datetime(2026, 10, 30, 16, tzinfo=NY),
            4 * H,
            dt.datetime(2026, 11, 2, 12, tzinfo=NY),
        ),
        (
            OFFICE_RIGA,
            dt.datetime(2026, 3, 27, 16, tzinfo=RIGA),
            4 * H,
            dt.datetime(2026, 3, 30, 12, tzinfo=RIGA),
        ),
        (
            OFFICE_RIGA,
            dt.datetime(2026, 10, 23, 16, tzinfo=RIGA),
            4 * H,
            dt.datetime(2026, 10, 26, 12, tzinfo=RIGA),
        ),
        # Using up a period exactly ends at its close, not at the next opening.
        (
            OFFICE_NY,
            dt.datetime(2026, 1, 9, 16, tzinfo=NY),
            H,
            dt.datetime(2026, 1, 9, 17, tzinfo=NY),
        ),
        # Starting while closed counts from the opening.
        (
            OFFICE_NY,
            dt.datetime(2026, 1, 10, 3, tzinfo=NY),
            30 * dt.timedelta(minutes=1),
            dt.datetime(2026, 1, 12, 9, 30, tzinfo=NY),
        ),
        (
            OFFICE_NY,
            dt.datetime(2026, 1, 10, 3, tzinfo=NY),
            dt.timedelta(0),
            dt.datetime(2026, 1, 10, 3, tzinfo=NY),
        ),
        # Republic Day (Monday) is skipped: 1 h on Friday, 1 h on Tuesday.
        (
            OFFICE_IN,
            dt.datetime(2026, 1, 23, 17, tzinfo=KOLKATA),
            2 * H,
            dt.datetime(2026, 1, 27, 10, 30, tzinfo=KOLKATA),
        ),
        # Proclamation Day (Wednesday) is skipped.
        (
            OFFICE_RIGA,
            dt.datetime(2026, 11, 17, 16, tzinfo=RIGA),
            2 * H,
            dt.datetime(2026, 11, 19, 10, tzinfo=RIGA),
        ),
        # Custom dates: Monday closed, Tuesday empty, Wednesday open again.
        (
            CUSTOM_NY,
            dt.datetime(2026, 6, 12, 16, tzinfo=NY),
            2 * H,
            dt.datetime(2026, 6, 17, 10, tzinfo=NY),
        ),
        # Thursday, then Juneteenth (Friday) closed, a Saturday opened by open_dates, Monday.
        (
            CUSTOM_NY,
            dt.datetime(2026, 6, 18, 16, tzinfo=NY),
            6 * H,
            dt.datetime(2026, 6, 22, 10, tzinfo=NY),
        ),
        (ALWAYS, utc(2026, 1, 5, 12), 1000 * H, utc(2026, 1, 5, 12) + 1000 * H),
        # A week of business time (40 h) is one calendar week later.
        (
            OFFICE_NY,
            dt.datetime(2026, 1, 5, 9, tzinfo=NY),
            40 * H,
            dt.datetime(2026, 1, 9, 17, tzinfo=NY),
        ),
    ],
)
def test_add_business_time(
    calendar: Calendar, start: dt.datetime, duration: dt.timedelta, expected: dt.datetime
) -> None:
    got = calendar.add_business_time(start, duration)
    assert got is not None and us(got) == us(expected)
    assert got.tzinfo is calendar.zone
    assert calendar.business_time_between(start, got) == duration


def test_business_time_between_signs() -> None:
    friday, monday = utc(2026, 1, 9, 21), utc(2026, 1, 12, 17)  # 16:00 EST, 12:00 EST
    assert OFFICE_NY.business_time_between(friday, monday) == 4 * H
    assert OFFICE_NY.business_time_between(monday, friday) == -4 * H
    assert OFFICE_NY.business_time_between(friday, friday) == dt.timedelta(0)


# -- DST -----------------------------------------------------------------------------------------

# (zone, weekday, period, local date the period starts on, open interval in UTC or None if empty)
DST_CASES = [
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z).
    (NY, "00:00-24:00", dt.date(2026, 3, 8), (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))),  # 23 h
    (NY, "01:00-03:00", dt.date(2026, 3, 8), (utc(2026, 3, 8, 6), utc(2026, 3, 8, 7))),
    (NY, "02:30-04:00", dt.date(2026, 3, 8), (utc(2026, 3, 8, 7), utc(2026, 3, 8, 8))),
    (NY, "02:15-02:45", dt.date(2026, 3, 8), None),  # lies wholly in the gap
    (NY, "22:00-02:30", dt.date(2026, 3, 7), (utc(2026, 3, 8, 3), utc(2026, 3, 8, 7))),
    (NY, "22:00-06:00", dt.date(2026, 3, 7), (utc(2026, 3, 8, 3), utc(2026, 3, 8, 10))),  # 7 h
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST (06:00Z).
    (NY, "00:00-24:00", dt.date(2026, 11, 1), (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))),  # 25 h
    (NY, "00:00-01:30", dt.date(2026, 11, 1), (utc(2026, 11, 1, 4), utc(2026, 11, 1, 6, 30))),
    (NY, "01:30-02:00", dt.date(2026, 11, 1), (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7))),
    (NY, "01:30-05:00", dt.date(2026, 11, 1), (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 10))),
    (NY, "22:00-06:00", dt.date(2026, 10, 31), (utc(2026, 11, 1, 2), utc(2026, 11, 1, 11))),  # 9 h
    # Riga, spring forward 2026-03-29 03:00 EET -> 04:00 EEST (01:00Z).
    (RIGA, "00:00-24:00", dt.date(2026, 3, 29), (utc(2026, 3, 28, 22), utc(2026, 3, 29, 21))),
    (RIGA, "03:30-05:00", dt.date(2026, 3, 29), (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))),
    (RIGA, "03:00-04:00", dt.date(2026, 3, 29), None),
    (RIGA, "22:00-06:00", dt.date(2026, 3, 28), (utc(2026, 3, 28, 20), utc(2026, 3, 29, 3))),
    # Riga, fall back 2026-10-25 04:00 EEST -> 03:00 EET (01:00Z).
    (RIGA, "00:00-24:00", dt.date(2026, 10, 25), (utc(2026, 10, 24, 21), utc(2026, 10, 25, 22))),
    (RIGA, "03:30-05:00", dt.date(2026, 10, 25), (utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 3))),
    (RIGA, "22:00-06:00", dt.date(2026, 10, 24), (utc(2026, 10, 24, 19), utc(2026, 10, 25, 4))),
]


@pytest.mark.parametrize(("zone", "text", "day", "interval"), DST_CASES)
def test_dst_periods(
    zone: ZoneInfo, text: str, day: dt.date, interval: tuple[dt.datetime, dt.datetime] | None
) -> None:
    calendar = Calendar(zone.key, {day.weekday(): [parse_period(text)]})
    midnight = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
    two_days = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(0), tzinfo=zone)
    if interval is None:
        assert calendar.business_time_between(midnight, two_days) == dt.timedelta(0)
        assert calendar.next_open(midnight).date() == day + dt.timedelta(weeks=1)
        return
    opens, closes = interval
    assert us(calendar.next_open(midnight)) == us(opens)
    assert us(calendar.next_close(opens)) == us(closes)
    assert calendar.is_open(opens) and calendar.is_open(closes - US_1)
    assert not calendar.is_open(opens - US_1) and not calendar.is_open(closes)
    assert calendar.business_time_between(midnight, two_days) == closes - opens
    assert us(calendar.add_business_time(midnight, closes - opens)) == us(closes)


def test_dst_business_day_lengths() -> None:
    """A 24/7 calendar counts real time: 23 h and 25 h on the DST days."""
    for zone, short, long in [
        (NY, dt.date(2026, 3, 8), dt.date(2026, 11, 1)),
        (RIGA, dt.date(2026, 3, 29), dt.date(2026, 10, 25)),
    ]:
        calendar = Calendar(zone.key, weekly(range(7), "00:00-24:00"))
        for day, hours in [(short, 23), (long, 25), (short + dt.timedelta(days=1), 24)]:
            start = dt.datetime.combine(day, dt.time(0), tzinfo=zone)
            end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=zone)
            assert calendar.business_time_between(start, end) == hours * H


def test_fold_instants_in_other_zones() -> None:
    """Both readings of 01:30 on 2026-11-01 in New York are told apart."""
    calendar = Calendar("America/New_York", {6: [parse_period("01:45-03:00")]})
    first = dt.datetime(2026, 11, 1, 1, 30, tzinfo=NY)  # EDT, before 01:45 EDT
    second = first.replace(fold=1)  # EST, after 01:45 EDT
    assert not calendar.is_open(first)
    assert calendar.is_open(second)
    assert us(calendar.next_open(first)) == us(utc(2026, 11, 1, 5, 45))


def test_zone_with_midnight_transitions() -> None:
    """Santiago moves its clocks at midnight (the local day starts at 01:00 or repeats 23:00)."""
    zone = ZoneInfo("America/Santiago")
    calendar = Calendar(zone.key, weekly(range(7), "00:00-24:00"))
    start = dt.datetime(2026, 1, 1, tzinfo=zone)
    end = dt.datetime(2027, 1, 1, tzinfo=zone)
    total = calendar.business_time_between(start, end)
    assert total == elapsed(start, end)  # every instant of the year is open once
    assert calendar.next_close(shift(start, H)) is None


# -- properties ----------------------------------------------------------------------------------

ZONE_NAMES = [
    "UTC",
    "America/New_York",
    "Europe/Riga",
    "Asia/Kolkata",
    "America/Santiago",
    "Australia/Lord_Howe",  # midnight transitions; a 30-minute DST shift
]


def _transitions(name: str) -> list[dt.datetime]:
    zone, found = ZoneInfo(name), []
    moment = utc(2026, 1, 1)
    previous = moment.astimezone(zone).utcoffset()
    while moment.year < 2027:
        moment += H
        offset = moment.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(moment)
            previous = offset
    return found


TRANSITIONS = [moment for name in ZONE_NAMES for moment in _transitions(name)]
assert len(TRANSITIONS) == 8  # NY, Riga, Santiago and Lord Howe change twice in 2026
AWARE_ZONES = st.sampled_from([UTC, NY, RIGA, KOLKATA, ZoneInfo("Australia/Lord_Howe")])

# Instants anywhere in 2025-2027, or within three days of a 2026 DST transition.
instants = st.one_of(
    st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2027, 12, 31), timezones=AWARE_ZONES),
    st.builds(
        lambda base, minutes, zone: (base + dt.timedelta(minutes=minutes)).astimezone(zone),
        st.sampled_from(TRANSITIONS),
        st.integers(-3 * 24 * 60, 3 * 24 * 60),
        AWARE_ZONES,
    ),
)
minute_instants = instants.map(lambda moment: moment.replace(second=0, microsecond=0))
wall_times = st.builds(dt.time, st.integers(0, 23), st.sampled_from([0, 15, 30, 45]))
periods = st.builds(Period, wall_times, wall_times)
days_2026 = st.dates(dt.date(2026, 1, 1), dt.date(2026, 12, 31))


@st.composite
def calendars(draw: st.DrawFn, zones: list[str] = ZONE_NAMES) -> Calendar:
    country = draw(st.sampled_from([None, "US", "LV", "IN"]))
    closed = draw(st.sets(days_2026, max_size=4))
    opened = draw(st.dictionaries(days_2026, st.lists(periods, max_size=2), max_size=4))
    return Calendar(
        draw(st.sampled_from(zones)),
        draw(st.dictionaries(st.integers(0, 6), st.lists(periods, max_size=3), max_size=7)),
        country,
        closed_dates=closed - opened.keys(),
        open_dates=opened,
        horizon_days=draw(st.sampled_from([400, 30])),
    )


durations = st.integers(0, 30 * 24 * 60).map(lambda minutes: dt.timedelta(minutes=minutes)) | (
    st.integers(0, 10**12).map(lambda micros: dt.timedelta(microseconds=micros))
)
PROPERTIES = settings(max_examples=150, deadline=None)


@PROPERTIES
@given(calendars(), instants)
def test_next_open_is_the_earliest_open_instant(calendar: Calendar, at: dt.datetime) -> None:
    opens = calendar.next_open(at)
    if opens is None:
        assert not calendar.is_open(at)
        return
    assert opens.tzinfo is calendar.zone
    assert us(opens) >= us(at)
    assert calendar.is_open(opens)
    # No instant is both open and closed: open exactly when next_open(at) is `at` itself.
    assert calendar.is_open(at) == (us(opens) == us(at))
    if us(opens) > us(at):
        assert not calendar.is_open(shift(opens, -US_1))


@PROPERTIES
@given(calendars(), instants)
def test_next_close_ends_the_open_stretch(calendar: Calendar, at: dt.datetime) -> None:
    closes = calendar.next_close(at)
    if closes is None:
        assert calendar.is_open(at)
        return
    assert us(closes) >= us(at)
    assert not calendar.is_open(closes)
    assert calendar.is_open(at) == (us(closes) > us(at))
    if us(closes) > us(at):
        assert calendar.is_open(shift(closes, -US_1))
        # The whole stretch is open time.
        assert calendar.business_time_between(at, closes) == elapsed(at, closes)


@PROPERTIES
@given(calendars(), instants, durations, durations)
def test_add_business_time_is_monotonic_in_duration(
    calendar: Calendar, start: dt.datetime, first: dt.timedelta, second: dt.timedelta
) -> None:
    short, long = sorted([first, second])
    end_short = calendar.add_business_time(start, short)
    end_long = calendar.add_business_time(start, long)
    if end_long is not None:
        assert end_short is not None and us(start) <= us(end_short) <= us(end_long)
    if end_short is None:
        assert end_long is None


@PROPERTIES
@given(calendars(), instants, st.integers(0, 10**11), durations)
def test_add_business_time_is_monotonic_in_start(
    calendar: Calendar, start: dt.datetime, later_by: int, duration: dt.timedelta
) -> None:
    later = shift(start, dt.timedelta(microseconds=later_by))
    end_early = calendar.add_business_time(start, duration)
    end_late = calendar.add_business_time(later, duration)
    if end_early is not None and end_late is not None:
        assert us(end_early) <= us(end_late)


@PROPERTIES
@given(calendars(), instants, durations)
def test_business_time_between_inverts_add(
    calendar: Calendar, start: dt.datetime, duration: dt.timedelta
) -> None:
    end = calendar.add_business_time(start, duration)
    assume(end is not None)
    assert calendar.business_time_between(start, end) == duration
    assert end.tzinfo is calendar.zone
    if duration:  # the earliest such instant: open just before it
        assert calendar.is_open(shift(end, -US_1))


@PROPERTIES
@given(calendars(), instants, instants, instants)
def test_business_time_between_is_additive(
    calendar: Calendar, a: dt.datetime, b: dt.datetime, c: dt.datetime
) -> None:
    between = calendar.business_time_between
    assert between(a, b) + between(b, c) == between(a, c)
    assert between(a, b) == -between(b, a)
    low, high = sorted([a, b], key=us)
    assert dt.timedelta(0) <= between(low, high) <= elapsed(low, high)


@settings(max_examples=40, deadline=None)
@given(calendars(), minute_instants)
def test_business_time_matches_minute_sampling(calendar: Calendar, start: dt.datetime) -> None:
    """Periods and DST changes fall on whole minutes, so sampling each minute is exact."""
    minute = dt.timedelta(minutes=1)
    start = start.astimezone(UTC)
    open_minutes = sum(calendar.is_open(start + k * minute) for k in range(2 * 24 * 60))
    assert calendar.business_time_between(start, start + 2 * 24 * H) == open_minutes * minute


def _wall_clock_is_open(calendar: Calendar, at: dt.datetime) -> bool:
    """Reference for zones without DST: compare wall-clock times directly."""
    local = at.astimezone(calendar.zone)
    wall, today = local.time().replace(fold=0), local.date()
    for period in calendar.periods_on(today):
        if period.start <= wall and (period.crosses_midnight or wall < period.end):
            return True
    yesterday = today - dt.timedelta(days=1)
    return any(
        period.crosses_midnight and wall < period.end for period in calendar.periods_on(yesterday)
    )


@PROPERTIES
@given(calendars(zones=["UTC", "Asia/Kolkata"]), instants)
def test_is_open_matches_wall_clock_without_dst(calendar: Calendar, at: dt.datetime) -> None:
    assert calendar.is_open(at) == _wall_clock_is_open(calendar, at)
