"""The customer's time zone and country, from what the channels tell us.

Pure functions, no I/O beyond reading tzdata's tables once:

* :func:`zone_from_phone` -- country (ISO 3166 region code, from the number's
  region, never from the zone name) and time zone from an E.164 number.
* :func:`zone_from_date_header` -- a fixed-offset label ``"UTC+05:30"`` from
  an e-mail ``Date:`` header.
* :func:`tzinfo_for` / :func:`valid_zone` -- IANA names and those labels.
* :func:`choose_timezone` -- profile > chat browser > phone > e-mail Date
  offset > team default.

phonenumbers' zone data is not tzdata's: +91 gives the legacy alias
``Asia/Calcutta``, +371 gives ``Europe/Bucharest`` (same offsets as Riga,
wrong country). So a number's zones are mapped onto the country's own zones
from tzdata's ``zone1970.tab`` (named as in ``zone.tab``, so Iceland stays
``Atlantic/Reykjavik`` rather than the ``Africa/Abidjan`` it links to).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_tz
from functools import lru_cache
from importlib import resources
from pathlib import Path

import phonenumbers
from phonenumbers import timezone as phone_timezone

__all__ = [
    "TIMEZONE_SOURCES",
    "PhonePlace",
    "choose_timezone",
    "country_zones",
    "offset_label",
    "tzinfo_for",
    "valid_zone",
    "zone_from_date_header",
    "zone_from_phone",
]

TIMEZONE_SOURCES = ("profile", "browser", "phone", "email_date", "default")

# Real UTC offsets lie within -12:00..+14:00.
_MAX_OFFSET_MINUTES = 14 * 60
_LABEL = re.compile(r"UTC([+-])(\d\d):(\d\d)")
_NUMERIC_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")
# RFC 5322 obsolete zone names with a defined offset (military letters are
# unreliable and, like "-0000", mean "unknown").
_NAMED_OFFSETS = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0,
    "EST": -300, "EDT": -240, "CST": -360, "CDT": -300,
    "MST": -420, "MDT": -360, "PST": -480, "PDT": -420,
}  # fmt: skip
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})


@dataclass(frozen=True, slots=True)
class PhonePlace:
    """Where a phone number is: ``country`` (ISO 3166 alpha-2 region code)
    and ``timezone`` (IANA name), None when the number spans several offsets
    (US toll-free, Russian and Australian mobiles)."""

    country: str
    timezone: str | None


# -- tzdata tables -----------------------------------------------------------


def _read_tzdata_file(name: str) -> str | None:
    """A file of tzdata's zoneinfo directory: the ``tzdata`` package, else the system's."""
    try:
        return (resources.files("tzdata") / "zoneinfo" / name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        pass
    for directory in zoneinfo.TZPATH or ("/usr/share/zoneinfo",):
        path = Path(directory) / name
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return None


def _read_tab(name: str) -> list[tuple[list[str], str]]:
    """Rows of a zone table: (country codes, zone name)."""
    rows = []
    for line in (_read_tzdata_file(name) or "").splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) >= 3:
            rows.append((fields[0].split(","), fields[2]))
    return rows


@lru_cache(maxsize=1)
def _links() -> dict[str, str]:
    """Alias -> zone, from tzdata.zi's link lines (``L Asia/Kolkata Asia/Calcutta``)."""
    links = {}
    for line in (_read_tzdata_file("tzdata.zi") or "").splitlines():
        if line.startswith("L "):
            _, target, alias = line.split()[:3]
            links[alias] = target
    return links


def _resolve(name: str) -> str:
    """The zone an alias links to (``Asia/Calcutta`` -> ``Asia/Kolkata``)."""
    links = _links()
    for _ in range(8):  # links may chain; never loop
        target = links.get(name)
        if target is None:
            return name
        name = target
    return name


@lru_cache(maxsize=1)
def _country_table() -> dict[str, tuple[str, ...]]:
    """Country -> its zones: zone1970.tab's, each named as zone.tab names it
    for that country when zone.tab has a name linking to the same zone."""
    own: dict[str, list[str]] = {}
    for countries, zone in _read_tab("zone.tab"):
        for country in countries:
            own.setdefault(country, []).append(zone)
    table: dict[str, list[str]] = {}
    for countries, zone in _read_tab("zone1970.tab"):
        for country in countries:
            names = [z for z in own.get(country, ()) if _resolve(z) == zone]
            table.setdefault(country, []).append(names[0] if names else zone)
    # in zone.tab's order, which for the US puts the "most areas" zones first
    result = {}
    for country, zones in table.items():
        order = {z: i for i, z in enumerate(own.get(country, ()))}
        result[country] = tuple(sorted(zones, key=lambda z: order.get(z, len(order))))
    return result


def country_zones(country: str) -> tuple[str, ...]:
    """The IANA zones of a country (ISO 3166 alpha-2) in zone.tab's order; () if unknown."""
    return _country_table().get(country.upper(), ())


@lru_cache(maxsize=1)
def _available_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


@lru_cache(maxsize=1024)
def _offsets(zone: str, year: int) -> tuple[timedelta | None, ...]:
    """A zone's UTC offsets in mid-January and mid-July (catches DST either side)."""
    tz = zoneinfo.ZoneInfo(zone)
    instants = (datetime(year, month, 15, 12, tzinfo=UTC) for month in (1, 7))
    return tuple(instant.astimezone(tz).utcoffset() for instant in instants)


# -- phone numbers -----------------------------------------------------------

_PHONE_PREFIX = re.compile(r"^\s*(?:whatsapp|tel|sms)\s*:\s*", re.IGNORECASE)


@lru_cache(maxsize=4096)
def zone_from_phone(e164: str | None) -> PhonePlace | None:
    """Country and time zone of an E.164 number, or None if it is not a valid
    number of a country.

    Accepts ``"+919876543210"``, ``"whatsapp:+91 98765 43210"``, ``"tel:+1..."``
    and bare E.164 digits as WhatsApp Cloud API ids come (``"919876543210"``).
    The zone is the country's own when the country has one zone or the
    number's zones share one offset (``+91`` -> ``Asia/Kolkata``, ``+371`` ->
    ``Europe/Riga``); in a country of several zones the number's specific zone
    (``+1 212`` -> ``America/New_York``); None when the number's zones differ
    (US toll-free).
    """
    if not e164:
        return None
    raw = _PHONE_PREFIX.sub("", e164).strip()
    if raw.isdigit() and 8 <= len(raw) <= 15:
        raw = "+" + raw
    try:
        number = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    country = phonenumbers.region_code_for_number(number)
    if not country or country == "001":  # non-geographic (+800, +882...)
        return None
    zones = [
        z
        for z in phone_timezone.time_zones_for_number(number)
        if z in _available_zones()  # drops "Etc/Unknown"
    ]
    return PhonePlace(country, _phone_zone(country, tuple(zones)))


def _phone_zone(country: str, zones: tuple[str, ...]) -> str | None:
    own = country_zones(country)
    if len(own) == 1:
        return own[0]
    year = datetime.now(UTC).year
    if zones and len({_offsets(z, year) for z in zones}) == 1:
        # the number's zones agree: the country's zone that is the number's
        # (an alias resolved), else the country's first with the same offsets
        by_zone = {_resolve(z): z for z in own}
        for zone in zones:
            match = by_zone.get(_resolve(zone))
            if match is not None:
                return match
        offsets = _offsets(zones[0], year)
        for zone in own:
            if _offsets(zone, year) == offsets:
                return zone
        return zones[0]  # a country tzdata does not list (XK)
    return None  # no zone, or zones of different offsets (US toll-free)


# -- e-mail Date: offsets ----------------------------------------------------


def _label(minutes: int) -> str | None:
    if abs(minutes) > _MAX_OFFSET_MINUTES:
        return None
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{mins:02d}"


def offset_label(value: str | None) -> str | None:
    """``"+05:30"``, ``"+0530"`` or ``"UTC+05:30"`` -> ``"UTC+05:30"``.

    ``"-0000"`` (RFC 5322: no information), out-of-range or malformed -> None.
    """
    if not value:
        return None
    value = value.strip()
    if value.upper().startswith("UTC") and len(value) > 3:
        value = value[3:]
    match = _NUMERIC_OFFSET.fullmatch(value)
    if match is None:
        return None
    sign, hours, mins = match.group(1), int(match.group(2)), int(match.group(3))
    if mins >= 60 or (sign == "-" and hours == 0 and mins == 0):
        return None
    return _label((-1 if sign == "-" else 1) * (hours * 60 + mins))


def zone_from_date_header(value: str | None) -> str | None:
    """A fixed-offset label from an e-mail ``Date:`` header, or None.

    ``"Tue, 14 Jan 2025 10:00:00 +0530"`` -> ``"UTC+05:30"``; ``"... GMT"``
    -> ``"UTC+00:00"``; ``-0000``, a missing or unknown zone ("CEST"), or a
    date that does not parse -> None.
    """
    if not value:
        return None
    value = re.sub(r"^\s*Date\s*:", "", value, flags=re.IGNORECASE)
    value = re.sub(r"\s*\([^()]*\)\s*$", "", value).strip()  # "(IST)"
    if parsedate_tz(value) is None:
        return None
    zone = value.rsplit(None, 1)[-1]
    if zone.upper() in _NAMED_OFFSETS:
        return _label(_NAMED_OFFSETS[zone.upper()])
    return offset_label(zone)


# -- zones -------------------------------------------------------------------


@lru_cache(maxsize=256)
def _fixed(label: str) -> timezone | None:
    match = _LABEL.fullmatch(label)
    if match is None:
        return None
    sign, hours, mins = match.group(1), int(match.group(2)), int(match.group(3))
    total = hours * 60 + mins
    if mins >= 60 or total > _MAX_OFFSET_MINUTES:
        return None
    return timezone(timedelta(minutes=-total if sign == "-" else total), label)


def valid_zone(name: str | None) -> bool:
    """An IANA zone name tzdata knows, or a ``"UTC±HH:MM"`` label."""
    if not name or not isinstance(name, str):
        return False
    if name.startswith("UTC") and len(name) > 3:
        return _fixed(name) is not None
    return name in _available_zones()


def tzinfo_for(name: str) -> tzinfo:
    """A tzinfo for an IANA name (``ZoneInfo``) or a ``"UTC±HH:MM"`` label
    (a fixed offset); ``ValueError`` for anything else."""
    if isinstance(name, str) and name.startswith("UTC") and len(name) > 3:
        fixed = _fixed(name)
        if fixed is not None:
            return fixed
    elif valid_zone(name):
        return zoneinfo.ZoneInfo(name)
    raise ValueError(f"unknown time zone {name!r}")


def choose_timezone(
    *,
    profile: str | None,
    browser: str | None,
    phone: PhonePlace | None,
    date_offset: str | None,
    default: str,
) -> tuple[str, str]:
    """(zone, source): the profile's zone > the chat browser's > the phone
    number's > the e-mail Date: offset (a label or ``"+05:30"``) > ``default``.

    Invalid names are skipped. ``source`` is one of :data:`TIMEZONE_SOURCES`.
    ``default`` is returned as given (config validation checks it).
    """
    if valid_zone(profile):
        return profile, "profile"  # type: ignore[return-value]
    if valid_zone(browser):
        return browser, "browser"  # type: ignore[return-value]
    if phone is not None and valid_zone(phone.timezone):
        return phone.timezone, "phone"  # type: ignore[return-value]
    label = offset_label(date_offset)
    if label is not None:
        return label, "email_date"
    return default, "default"
