"""router.timezones: place from phone numbers and Date: headers, and the zone precedence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.timezones import (
    PhonePlace,
    choose_timezone,
    country_zones,
    offset_label,
    tzinfo_for,
    valid_zone,
    zone_from_date_header,
    zone_from_phone,
)

# -- phone numbers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "place"),
    [
        # phonenumbers says Asia/Calcutta, the legacy alias
        ("+919876543210", PhonePlace("IN", "Asia/Kolkata")),
        # phonenumbers says Europe/Bucharest: same offsets, wrong country
        ("+37120000000", PhonePlace("LV", "Europe/Riga")),
        ("+37167000000", PhonePlace("LV", "Europe/Riga")),
        ("+81312345678", PhonePlace("JP", "Asia/Tokyo")),
        ("+819012345678", PhonePlace("JP", "Asia/Tokyo")),
        # a country of many zones keeps the number's own zone
        ("+12125551234", PhonePlace("US", "America/New_York")),
        ("+16502530000", PhonePlace("US", "America/Los_Angeles")),
        ("+18085551234", PhonePlace("US", "Pacific/Honolulu")),
        ("+5511987654321", PhonePlace("BR", "America/Sao_Paulo")),
        ("+551133334444", PhonePlace("BR", "America/Sao_Paulo")),
        ("+74212000000", PhonePlace("RU", "Asia/Vladivostok")),
        # zone1970.tab gives Africa/Abidjan / Asia/Dubai; zone.tab names the country's own
        ("+3545511234", PhonePlace("IS", "Atlantic/Reykjavik")),
        ("+96824123456", PhonePlace("OM", "Asia/Muscat")),
        # +1 is several countries: the country comes from the region code
        ("+17875551234", PhonePlace("PR", "America/Puerto_Rico")),
        # numbers spanning several offsets: the country, no zone
        ("+18005551234", PhonePlace("US", None)),
        ("+79161234567", PhonePlace("RU", None)),
        ("+61412345678", PhonePlace("AU", None)),
        # spellings the channels use
        ("whatsapp:+919876543210", PhonePlace("IN", "Asia/Kolkata")),
        ("WhatsApp: +91 98765 43210", PhonePlace("IN", "Asia/Kolkata")),
        ("tel:+1-212-555-1234", PhonePlace("US", "America/New_York")),
        ("+1 (212) 555-1234", PhonePlace("US", "America/New_York")),
        ("919876543210", PhonePlace("IN", "Asia/Kolkata")),  # WhatsApp Cloud API wa_id
        # invalid, non-geographic, not numbers
        ("+12345", None),
        ("+4477009001234", None),
        ("+80012345678", None),
        ("whatsapp:", None),
        ("0612345678", None),
        ("not a number", None),
        ("", None),
        (None, None),
    ],
)
def test_zone_from_phone(number: str | None, place: PhonePlace | None) -> None:
    assert zone_from_phone(number) == place


@pytest.mark.parametrize("number", ["+919876543210", "+37120000000", "+3545511234"])
def test_phone_zone_is_tzdata_canonical_for_the_country(number: str) -> None:
    place = zone_from_phone(number)
    assert place is not None and place.timezone is not None
    assert valid_zone(place.timezone)
    assert place.timezone in country_zones(place.country)


def test_phone_zone_has_the_numbers_offsets() -> None:
    """Riga is what phonenumbers meant by Bucharest: the same offsets all year."""
    riga, bucharest = ZoneInfo("Europe/Riga"), ZoneInfo("Europe/Bucharest")
    for month in range(1, 13):
        instant = datetime(2025, month, 1, tzinfo=UTC)
        assert instant.astimezone(riga).utcoffset() == instant.astimezone(bucharest).utcoffset()


def test_country_zones() -> None:
    assert country_zones("IN") == ("Asia/Kolkata",)
    assert country_zones("lv") == ("Europe/Riga",)
    assert country_zones("US")[0] == "America/New_York"
    assert "America/Sao_Paulo" in country_zones("BR")
    assert country_zones("ZZ") == ()


# -- e-mail Date: headers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "label"),
    [
        ("Tue, 14 Jan 2025 10:00:00 +0530", "UTC+05:30"),
        ("Tue, 14 Jan 2025 10:00:00 +0545", "UTC+05:45"),
        ("Tue, 14 Jan 2025 10:00:00 -0300", "UTC-03:00"),
        ("Tue, 14 Jan 2025 10:00:00 +0900", "UTC+09:00"),
        ("14 Jan 2025 10:00 -0800 (PST)", "UTC-08:00"),
        ("Date: Tue, 14 Jan 2025 10:00:00 +0200", "UTC+02:00"),
        ("Tue, 14 Jan 2025 10:00:00 +0000", "UTC+00:00"),
        ("Tue, 14 Jan 2025 10:00:00 GMT", "UTC+00:00"),
        ("Tue, 14 Jan 2025 10:00:00 EST", "UTC-05:00"),
        ("Tue, 14 Jan 2025 10:00:00 +05:30", "UTC+05:30"),  # not RFC, but seen
        # -0000: "no information about the local time zone" (RFC 5322)
        ("Tue, 14 Jan 2025 10:00:00 -0000", None),
        ("Tue, 14 Jan 2025 10:00:00 CEST", None),
        ("Tue, 14 Jan 2025 10:00:00", None),
        ("Tue, 14 Jan 2025 10:00:00 +0575", None),
        ("Tue, 14 Jan 2025 10:00:00 +9999", None),
        ("Tue, 14 Jan 2025 10:00:00 Z", "UTC+00:00"),
        ("yesterday at noon", None),
        ("+0530", None),
        ("", None),
        (None, None),
    ],
)
def test_zone_from_date_header(header: str | None, label: str | None) -> None:
    assert zone_from_date_header(header) == label


@pytest.mark.parametrize(
    ("value", "label"),
    [
        ("+05:30", "UTC+05:30"),
        ("+0530", "UTC+05:30"),
        ("-08:00", "UTC-08:00"),
        ("UTC+09:00", "UTC+09:00"),
        ("+00:00", "UTC+00:00"),
        ("-0000", None),
        ("+1500", None),
        ("+05:60", None),
        ("5:30", None),
        ("", None),
        (None, None),
    ],
)
def test_offset_label(value: str | None, label: str | None) -> None:
    assert offset_label(value) == label


@given(st.integers(min_value=-12 * 60, max_value=14 * 60).filter(bool))
def test_label_round_trips_through_tzinfo(minutes: int) -> None:
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    label = offset_label(f"{sign}{hours:02d}{mins:02d}")
    assert label is not None and valid_zone(label)
    assert tzinfo_for(label).utcoffset(None) == timedelta(minutes=minutes)


@given(st.text(max_size=80))
def test_date_header_never_raises(value: str) -> None:
    label = zone_from_date_header(value)
    assert label is None or valid_zone(label)


# -- zones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("Asia/Tokyo", True),
        ("America/New_York", True),
        ("Asia/Calcutta", True),  # what some browsers still report
        ("UTC", True),
        ("UTC+05:30", True),
        ("UTC-12:00", True),
        ("UTC+14:00", True),
        ("UTC+14:30", False),
        ("UTC+5:30", False),
        ("UTC+05:60", False),
        ("Mars/Olympus_Mons", False),
        ("asia/tokyo", False),
        ("Factory", False),
        ("localtime", False),
        ("../../etc/passwd", False),
        ("/usr/share/zoneinfo/UTC", False),
        ("", False),
        (None, False),
    ],
)
def test_valid_zone(name: str | None, valid: bool) -> None:
    assert valid_zone(name) is valid


def test_tzinfo_for_iana_names_follows_dst() -> None:
    new_york = tzinfo_for("America/New_York")
    assert datetime(2025, 1, 15, 12, tzinfo=new_york).utcoffset() == timedelta(hours=-5)
    assert datetime(2025, 7, 15, 12, tzinfo=new_york).utcoffset() == timedelta(hours=-4)


def test_tzinfo_for_labels_is_fixed() -> None:
    kolkata = tzinfo_for("UTC+05:30")
    assert datetime(2025, 7, 15, 12, tzinfo=kolkata).utcoffset() == timedelta(hours=5, minutes=30)
    assert datetime(2025, 1, 15, tzinfo=kolkata).tzname() == "UTC+05:30"
    assert tzinfo_for("UTC-03:00").utcoffset(None) == timedelta(hours=-3)


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "UTC+99:00", "", "UTC+5"])
def test_tzinfo_for_rejects_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        tzinfo_for(name)


# -- precedence ----------------------------------------------------------------------

MUMBAI = PhonePlace("IN", "Asia/Kolkata")
TOLL_FREE = PhonePlace("US", None)


@pytest.mark.parametrize(
    ("profile", "browser", "phone", "date_offset", "expected"),
    [
        # each source wins when everything above it is missing
        ("Europe/Riga", "Asia/Tokyo", MUMBAI, "+05:30", ("Europe/Riga", "profile")),
        (None, "Asia/Tokyo", MUMBAI, "+05:30", ("Asia/Tokyo", "browser")),
        (None, None, MUMBAI, "UTC-03:00", ("Asia/Kolkata", "phone")),
        (None, None, None, "UTC-03:00", ("UTC-03:00", "email_date")),
        (None, None, None, "+05:30", ("UTC+05:30", "email_date")),
        (None, None, None, None, ("America/Sao_Paulo", "default")),
        # invalid names are skipped
        ("Mars/Base", "Asia/Tokyo", None, None, ("Asia/Tokyo", "browser")),
        ("", "not a zone", MUMBAI, None, ("Asia/Kolkata", "phone")),
        (None, None, TOLL_FREE, "-0800", ("UTC-08:00", "email_date")),
        (None, None, TOLL_FREE, "-0000", ("America/Sao_Paulo", "default")),
        (None, None, None, "garbled", ("America/Sao_Paulo", "default")),
        # a label stored in the profile is a zone too
        ("UTC+05:30", None, None, None, ("UTC+05:30", "profile")),
    ],
)
def test_choose_timezone_precedence(profile, browser, phone, date_offset, expected) -> None:
    got = choose_timezone(
        profile=profile,
        browser=browser,
        phone=phone,
        date_offset=date_offset,
        default="America/Sao_Paulo",
    )
    assert got == expected


def test_end_to_end_from_channels() -> None:
    """A WhatsApp message and an e-mail, as the adapters would see them."""
    zone, source = choose_timezone(
        profile=None,
        browser=None,
        phone=zone_from_phone("whatsapp:+37120000000"),
        date_offset=None,
        default="UTC",
    )
    assert (zone, source) == ("Europe/Riga", "phone")
    zone, source = choose_timezone(
        profile=None,
        browser=None,
        phone=None,
        date_offset=zone_from_date_header("Tue, 14 Jan 2025 10:00:00 +0900"),
        default="UTC",
    )
    assert (zone, source) == ("UTC+09:00", "email_date")
    assert datetime(2025, 1, 14, 1, tzinfo=UTC).astimezone(tzinfo_for(zone)).hour == 10
