"""The sender's UTC offset from a ``Date:`` header: a time-zone hint for routing."""

from __future__ import annotations

import re

_OBS_ZONES = {
    "UT": 0,
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "EST": -5 * 60,
    "EDT": -4 * 60,
    "CST": -6 * 60,
    "CDT": -5 * 60,
    "MST": -7 * 60,
    "MDT": -6 * 60,
    "PST": -8 * 60,
    "PDT": -7 * 60,
}
_DATE_RE = re.compile(
    r"^(?:[A-Za-z]+,?\s*)?(\d{1,2})\s+([A-Za-z]{3})[a-z]*\s+(\d{2,4})\s+"
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([+-]\d{4}|[A-Za-z]{1,5})?\s*$"
)


def _date_offset(value: str | None) -> str | None:
    """'+05:30' from a Date: header; None when absent, -0000 (unknown), or garbled.

    The offset is a time-zone hint for routing, so a date that does not parse
    as a whole is not trusted for it either.
    """
    if not value:
        return None
    value = re.sub(r"\([^()]*\)", " ", value).strip()  # comments like "(PST)"
    match = _DATE_RE.match(value)
    if not match:
        return None
    _, month, year, hour, minute, second, zone = match.groups()
    if month.lower() not in (
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"
    ):  # fmt: skip
        return None
    if not (1900 <= _full_year(int(year)) <= 2200) or int(hour) > 23 or int(minute) > 59:
        return None
    if second is not None and int(second) > 60:
        return None
    if zone is None:
        return None
    if zone[0] in "+-":
        if zone == "-0000":
            return None  # RFC 5322: the local offset is unknown
        hours, minutes = int(zone[1:3]), int(zone[3:5])
        if hours > 14 or minutes > 59:
            return None
        return f"{zone[0]}{hours:02d}:{minutes:02d}"
    offset = _OBS_ZONES.get(zone.upper())
    if offset is None:
        return None  # military letters and unknown names carry no reliable offset
    sign = "-" if offset < 0 else "+"
    return f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


def _full_year(year: int) -> int:
    if year < 50:
        return year + 2000
    if year < 1000:
        return year + 1900
    return year
