"""Business-hours calendars: when is a support team open, and how much open time lies ahead.

A :class:`Calendar` combines weekly periods in the team's IANA time zone, public holidays from the
``holidays`` package and custom closed / open dates.  It answers "is the team open at this
instant", "when does it next open / close" and business-time arithmetic.  Pure: no I/O, nothing
else from ``router`` is imported.

Model
    Each :class:`Period` belongs to the local date on which it *starts*.  A period whose end is at
    or before its start runs into the next day (``22:00-06:00``); ``00:00-00:00`` is 24 hours.
    For a date, the periods are, in order of precedence: ``open_dates[date]`` (replaces the day's
    periods, even on a holiday or weekend); none if the date is in ``closed_dates`` or is a public
    holiday; otherwise the weekly periods for its weekday.  Closing a date therefore closes the
    periods that *start* on it: the tail of the previous evening's overnight shift still runs.
    An open period is the half-open interval ``[start, end)``; overlapping or touching periods
    (also across days) form one open stretch.

Time and DST
    Every instant is handled as integer microseconds since the Unix epoch, so business time is
    real elapsed time and arithmetic is exact: ``business_time_between(s, add_business_time(s, d))
    == d``.  A period covers exactly the instants from the *first* instant its start time is shown
    on the wall clock to the *last* instant before its end time is shown (the hull of the
    instants whose wall time lies in the period):

    * a boundary inside a spring-forward gap (02:30 in New York on 2026-03-08) snaps to the
      transition instant (03:00 EDT), so a period lying wholly in the gap is empty and a day with
      a gap has one hour less of wall time;
    * in a fall-back fold a start uses the first occurrence (EDT) and an end the second one (EST),
      so a period spanning the repeated hour gets the extra hour.

Performance
    The open intervals of each local date are computed once and cached (as are each year's
    holidays), so queries step through a few cached periods instead of scanning the clock.
    Searches that could run forever stop after ``horizon_days`` (default 400) without open time.
"""

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays

__all__ = ["DEFAULT_HORIZON_DAYS", "Calendar", "Period", "parse_period"]

#: How far :meth:`Calendar.next_open` and friends look before answering ``None``.
DEFAULT_HORIZON_DAYS = 400

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_MIDNIGHT = dt.time(0)
# Keep a margin from date.min / date.max so that day +/- 2 and the zone conversions never overflow;
# days outside this range are treated as closed.
_FIRST_ORDINAL = dt.date(1, 1, 10).toordinal()
_LAST_ORDINAL = dt.date(9999, 12, 20).toordinal()
# Bounds memory in a long-running daemon; one entry per local date touched.
_DAY_CACHE_SIZE = 8192
_NO_OPEN_DATES: Mapping[dt.date, Sequence["Period"]] = MappingProxyType({})

_Span = tuple[int, int]  # [start, end) in microseconds since the epoch


@dataclass(frozen=True, slots=True)
class Period:
    """One open period in local wall-clock time, belonging to the date on which it starts.

    ``end <= start`` means the period crosses midnight into the next day (``22:00-06:00``);
    ``start == end`` is a whole 24 hours (``00:00-00:00``, written ``00:00-24:00``).
    """

    start: dt.time
    end: dt.time

    def __post_init__(self) -> None:
        for label, value in (("start", self.start), ("end", self.end)):
            if not isinstance(value, dt.time) or value.tzinfo is not None:
                raise ValueError(f"period {label} must be a naive datetime.time, got {value!r}")

    @property
    def crosses_midnight(self) -> bool:
        """True if the period ends on the day after it starts."""
        return self.end <= self.start

    def __str__(self) -> str:
        end = "24:00" if self.end == _MIDNIGHT else _format_time(self.end)
        return f"{_format_time(self.start)}-{end}"


def _format_time(value: dt.time) -> str:
    return value.isoformat("seconds" if value.second or value.microsecond else "minutes")


_PERIOD_RE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*[-\u2013]\s*(\d{1,2}):(\d{2})\s*")


def parse_period(text: str) -> Period:
    """Parse ``"HH:MM-HH:MM"`` (e.g. ``"09:00-17:30"``, ``"22:00-06:00"``, ``"00:00-24:00"``).

    ``24:00`` is accepted as an end only.  Raises ValueError naming the bad text.
    """
    match = _PERIOD_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"invalid period {text!r}: expected 'HH:MM-HH:MM', e.g. '09:00-17:30'")
    start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise ValueError(
            f"invalid period {text!r}: times run from 00:00 to 23:59 (24:00 only as an end)"
        )
    end = _MIDNIGHT if end_h == 24 else dt.time(end_h, end_m)
    return Period(dt.time(start_h, start_m), end)


def _periods(periods: Sequence[Period], where: str) -> tuple[Period, ...]:
    if isinstance(periods, Period):  # a common slip: one period instead of a list of them
        periods = (periods,)
    for period in periods:
        if not isinstance(period, Period):
            raise ValueError(f"{where}: expected Period objects, got {period!r}")
    return tuple(sorted(periods, key=lambda period: period.start))


def _date(value: object, where: str) -> dt.date:
    # datetime is a subclass of date but never equals one, so it would silently never match.
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise ValueError(f"{where}: expected a datetime.date, got {value!r}")
    return value


def _to_us(at: dt.datetime) -> int:
    try:
        return (at - _EPOCH) // _MICROSECOND
    except TypeError:  # naive datetime (or not a datetime at all)
        raise ValueError(f"expected a timezone-aware datetime, got {at!r}") from None


class Calendar:
    """A team's business hours; see the module docstring for the exact semantics.

    ``weekly`` maps a weekday (0 = Monday .. 6 = Sunday) to the periods starting that day.
    Public holidays of ``holidays_country`` (ISO code, e.g. ``"LV"``) and optional
    ``holidays_subdivision`` (e.g. ``"NY"`` for ``"US"``) close the periods that start on them,
    as do ``closed_dates``; ``open_dates`` replace a date's periods, even on a holiday or weekend.
    Raises ValueError at construction for an unknown time zone, country or subdivision, and for
    a date both in ``closed_dates`` and ``open_dates``.

    Query methods take timezone-aware datetimes in any zone (ValueError for naive ones) and return
    datetimes in the calendar's zone.  Beware that between two datetimes sharing a tzinfo Python
    compares, subtracts and adds *wall-clock* time and ignores ``fold``: around a DST change,
    convert results to UTC (or use ``.timestamp()``) before comparing or doing arithmetic.
    """

    def __init__(
        self,
        timezone: str,
        weekly: Mapping[int, Sequence[Period]],
        holidays_country: str | None = None,
        holidays_subdivision: str | None = None,
        closed_dates: Iterable[dt.date] = (),
        open_dates: Mapping[dt.date, Sequence[Period]] = _NO_OPEN_DATES,
        name: str = "",
        *,
        horizon_days: int = DEFAULT_HORIZON_DAYS,
    ) -> None:
        self.name = name
        self.timezone = timezone
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError, TypeError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        if horizon_days < 1:
            raise ValueError(f"horizon_days must be at least 1, got {horizon_days!r}")
        self.horizon_days = horizon_days

        week: list[tuple[Period, ...]] = [()] * 7
        for weekday, periods in weekly.items():
            if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
                raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}")
            week[weekday] = _periods(periods, f"weekday {weekday}")
        self._weekly = tuple(week)
        self._closed = frozenset(_date(day, "closed_dates") for day in closed_dates)
        self._open = {
            _date(day, "open_dates"): _periods(periods, f"open_dates[{day}]")
            for day, periods in open_dates.items()
        }
        both = sorted(self._closed & self._open.keys())
        if both:
            raise ValueError(f"date {both[0].isoformat()} is in both closed_dates and open_dates")
        # Lets searches on a calendar without any periods answer at once.
        self._never_open = not any(self._weekly) and not any(self._open.values())

        self._country, self._subdivision = self._check_holidays(
            holidays_country, holidays_subdivision
        )
        self._holiday_years: dict[int, dict[dt.date, str]] = {}
        self._days: dict[int, tuple[_Span, ...]] = {}

    def __repr__(self) -> str:
        return f"Calendar(name={self.name!r}, timezone={self.timezone!r})"

    @staticmethod
    def _check_holidays(
        country: str | None, subdivision: str | None
    ) -> tuple[str | None, str | None]:
        if country is None:
            if subdivision is not None:
                raise ValueError(f"holidays subdivision {subdivision!r} given without a country")
            return None, None
        if not isinstance(country, str):  # e.g. YAML reads an unquoted NO (Norway) as False
            raise ValueError(f"holidays country must be a string, got {country!r}")
        code = country.strip().upper()
        try:
            known = holidays.country_holidays(code).subdivisions
        except NotImplementedError:
            raise ValueError(
                f"unknown holidays country {country!r}: expected an ISO 3166-1 alpha-2 code"
                " supported by the holidays package, e.g. 'US', 'IN', 'LV'"
            ) from None
        try:  # the package also accepts aliases of subdivisions, so let it decide
            holidays.country_holidays(code, subdiv=subdivision)
        except NotImplementedError:
            raise ValueError(
                f"unknown holidays subdivision {subdivision!r} for country {code!r}"
                f" (known: {', '.join(known) or 'none'})"
            ) from None
        return code, subdivision

    # -- dates ---------------------------------------------------------------------------------

    def holiday_name(self, day: dt.date) -> str | None:
        """The public holiday's name on ``day`` (several are joined by "; "), else None."""
        day = _date(day, "holiday_name")
        return self._holidays(day.year).get(day)

    def periods_on(self, day: dt.date) -> tuple[Period, ...]:
        """The periods starting on local date ``day`` after holidays and custom dates."""
        day = _date(day, "periods_on")
        if day in self._open:
            return self._open[day]
        if day in self._closed or self.holiday_name(day) is not None:
            return ()
        return self._weekly[day.weekday()]

    def _holidays(self, year: int) -> dict[dt.date, str]:
        table = self._holiday_years.get(year)
        if table is None:  # building a year costs about a millisecond: once per year
            table = {}
            if self._country is not None:
                table.update(
                    holidays.country_holidays(self._country, subdiv=self._subdivision, years=year)
                )
            self._holiday_years[year] = table
        return table

    # -- open intervals ------------------------------------------------------------------------

    def _day(self, ordinal: int) -> tuple[_Span, ...]:
        """Sorted [start, end) spans of the periods starting on the local date ``ordinal``."""
        spans = self._days.get(ordinal)
        if spans is None:
            spans = self._compute_day(ordinal) if _FIRST_ORDINAL <= ordinal <= _LAST_ORDINAL else ()
            if len(self._days) >= _DAY_CACHE_SIZE:
                self._days.clear()
            self._days[ordinal] = spans
        return spans

    def _compute_day(self, ordinal: int) -> tuple[_Span, ...]:
        day = dt.date.fromordinal(ordinal)
        spans = []
        for period in self.periods_on(day):
            start = self._wall_to_us(day, period.start, is_end=False)
            end_day = day + dt.timedelta(days=1) if period.crosses_midnight else day
            end = self._wall_to_us(end_day, period.end, is_end=True)
            if end > start:  # empty when the period lies inside a spring-forward gap
                spans.append((start, end))
        # Start instants grow with wall time, so spans sorted per day are sorted across days too.
        spans.sort()
        return tuple(spans)

    def _wall_to_us(self, day: dt.date, wall: dt.time, *, is_end: bool) -> int:
        naive = dt.datetime.combine(day, wall)
        first = _to_us(naive.replace(tzinfo=self.zone, fold=0))
        second = _to_us(naive.replace(tzinfo=self.zone, fold=1))
        if first == second:
            return first
        if first < second:  # shown twice (clocks fall back): starts take the first, ends the last
            return second if is_end else first
        # Never shown (clocks spring forward): zoneinfo maps the two folds to either side of the
        # transition; find the transition instant itself (rare, and cached per day).
        return self._transition(second, first)

    def _transition(self, before: int, after: int) -> int:
        target = self._offset(after)
        while after - before > 1:
            middle = (before + after) // 2
            if self._offset(middle) == target:
                after = middle
            else:
                before = middle
        return after

    def _offset(self, us: int) -> dt.timedelta | None:
        return self._from_us(us).utcoffset()

    def _from_us(self, us: int) -> dt.datetime:
        return (_EPOCH + dt.timedelta(microseconds=us)).astimezone(self.zone)

    def _instant(self, at: dt.datetime) -> tuple[int, int]:
        """``at`` as microseconds, and the ordinal of its local date in the calendar's zone."""
        return _to_us(at), at.astimezone(self.zone).toordinal()

    def _last_day(self, ordinal: int) -> int:
        return min(ordinal + self.horizon_days, _LAST_ORDINAL)

    # -- queries -------------------------------------------------------------------------------

    def is_open(self, at: dt.datetime) -> bool:
        """Whether the calendar is open at the instant ``at``."""
        now, today = self._instant(at)
        # A span lies within two wall-clock days of its date; one more day each side covers
        # zones whose DST fold crosses midnight.
        for ordinal in range(today - 2, today + 2):
            for start, end in self._day(ordinal):
                if start > now:
                    break
                if now < end:
                    return True
        return False

    def next_open(self, at: dt.datetime) -> dt.datetime | None:
        """``at`` itself if open, else the instant the calendar next opens.

        None if it does not open within ``horizon_days``.
        """
        now, today = self._instant(at)
        if self._never_open:
            return None
        for ordinal in range(today - 2, self._last_day(today) + 1):
            for start, end in self._day(ordinal):
                # Spans come sorted by start: the first one not over yet is open now or next.
                if end > now:
                    return self._from_us(max(start, now))
        return None

    def next_close(self, at: dt.datetime) -> dt.datetime | None:
        """The end of the open stretch containing ``at``; ``at`` itself if closed then.

        Touching or overlapping periods (also across midnight) merge into one stretch.  None if
        the stretch does not end within ``horizon_days``.
        """
        now, today = self._instant(at)
        if self._never_open:
            return self._from_us(now)
        last = self._last_day(today)
        close: int | None = None
        for ordinal in range(today - 2, last + 1):
            for start, end in self._day(ordinal):
                if close is None:
                    if end <= now:
                        continue
                    if start > now:
                        return self._from_us(now)
                    close = end
                elif start > close:
                    return self._from_us(close)
                else:
                    close = max(close, end)
        if close is None:
            return self._from_us(now)
        # Later days' periods start at or after the next local midnight: before it, `close` is
        # final; otherwise the stretch may go on beyond the horizon.
        if close < self._wall_to_us(dt.date.fromordinal(last + 1), _MIDNIGHT, is_end=False):
            return self._from_us(close)
        return None

    def add_business_time(self, start: dt.datetime, duration: dt.timedelta) -> dt.datetime | None:
        """The earliest instant by which ``duration`` of open time has elapsed since ``start``.

        Counts real elapsed time; e.g. with Mon-Fri 09:00-17:00, 4 h from Friday 16:00 ends
        Monday 12:00, and 1 h from 16:00 ends at 17:00 (not at next opening).  A zero duration
        returns ``start``.  None if the calendar has no open time for ``horizon_days`` on end.
        Raises ValueError for a negative duration.
        """
        cursor, today = self._instant(start)
        remaining = duration // _MICROSECOND
        if remaining < 0:
            raise ValueError(f"duration must not be negative, got {duration!r}")
        if remaining == 0:
            return self._from_us(cursor)
        if self._never_open:
            return None
        ordinal = today - 2
        give_up = self._last_day(today)
        while ordinal <= give_up:
            for start_us, end in self._day(ordinal):
                if end <= cursor:
                    continue
                begin = max(start_us, cursor)  # overlapping spans count once
                if end - begin >= remaining:
                    return self._from_us(begin + remaining)
                remaining -= end - begin
                cursor = end
                give_up = self._last_day(ordinal)
            ordinal += 1
        return None

    def business_time_between(self, start: dt.datetime, end: dt.datetime) -> dt.timedelta:
        """Open time in ``[start, end)``; negative if ``end`` is before ``start``."""
        begin, first_day = self._instant(start)
        finish, last_day = self._instant(end)
        if finish < begin:
            return -self.business_time_between(end, start)
        total = 0
        cursor = begin
        for ordinal in range(first_day - 2, last_day + 2):
            for span_start, span_end in self._day(ordinal):
                if span_start >= finish:
                    break
                if span_end <= cursor:
                    continue
                piece_end = min(span_end, finish)
                total += piece_end - max(span_start, cursor)
                cursor = piece_end
        return dt.timedelta(microseconds=total)
