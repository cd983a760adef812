"""router.acks: acknowledgement templates, register, and the ETA in the customer's time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from babel import Locale, localedata
from babel.dates import get_day_names, get_period_names, get_timezone_gmt

from router.acks import (
    DEFAULT_LOCALES,
    DEFAULT_TEMPLATES,
    PLACEHOLDERS,
    eta_locale,
    format_eta,
    register_for,
    render,
    template_problems,
)
from router.timezones import tzinfo_for

# -- template_problems ------------------------------------------------------------

USE = "use {eta}, {name}, {team}, {reference}"


@pytest.mark.parametrize(
    "text",
    [
        "We got your message; a person will reply by {eta}.",
        "Hi {name}, {team} will reply by {eta} (ref. {reference}).",
        "No ETA at all, and that is allowed.",
        "Literal braces {{like this}} and {eta}",
        "{eta}{eta}",
        "{eta:}",  # an empty format spec changes nothing
        "メッセージを受け付けました。{eta}までにご返信いたします。",
    ],
)
def test_template_problems_none(text: str) -> None:
    assert template_problems(text) == []


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("Reply by {eta_time}.", [f"unknown placeholder {{eta_time}}; {USE}"]),
        ("{ETA}", [f"unknown placeholder {{ETA}}; {USE}"]),
        ("{ eta }", [f"unknown placeholder {{ eta }}; {USE}"]),
        ("{}", [f"positional placeholder {{}}; {USE}"]),
        (
            "{0} and {1}",
            [f"positional placeholder {{0}}; {USE}", f"positional placeholder {{1}}; {USE}"],
        ),
        ("{!r}", [f"positional placeholder {{!r}}; {USE}"]),
        ("{eta!r}", ["conversion !r in {eta!r} is not allowed; write {eta}"]),
        ("{eta:>10}", ["format spec :>10 in {eta:>10} is not allowed; write {eta}"]),
        (
            "{name!s:^9}",
            [
                "conversion !s in {name!s:^9} is not allowed; write {name}",
                "format spec :^9 in {name!s:^9} is not allowed; write {name}",
            ],
        ),
        ("{eta.day}", ["placeholder {eta.day} uses attribute or index access; write {eta}"]),
        ("{name[0]}", ["placeholder {name[0]} uses attribute or index access; write {name}"]),
        # reported once each, in order
        (
            "{foo} {bar} {foo}",
            [f"unknown placeholder {{foo}}; {USE}", f"unknown placeholder {{bar}}; {USE}"],
        ),
        ("", ["template is empty"]),
        ("  \n ", ["template is empty"]),
    ],
)
def test_template_problems(text: str, problems: list[str]) -> None:
    assert template_problems(text) == problems


@pytest.mark.parametrize(
    ("text", "earlier"),
    [
        ("Reply by {eta", []),
        ("Reply by eta}", []),
        ("Reply {by} {eta", [f"unknown placeholder {{by}}; {USE}"]),  # found before the error
        ("{na{me}", []),
        ("{eta!}", []),
        ("}{", []),
    ],
)
def test_template_problems_malformed_braces(text: str, earlier: list[str]) -> None:
    problems = template_problems(text)
    assert problems[:-1] == earlier
    assert problems[-1].startswith("malformed braces (")
    assert problems[-1].endswith("); write {{ and }} for literal braces")


# -- register_for ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "language", "informal", "expected"),
    [
        ("pt-BR", "pt", {"pt-BR"}, "informal"),
        ("pt_BR", "pt", {"pt-BR"}, "informal"),
        ("PT-br", "pt", {"pt_br"}, "informal"),
        (" pt-BR ", "pt", {"PT_BR"}, "informal"),
        ("pt-PT", "pt", {"pt-BR"}, "formal"),
        (None, "pt", {"pt-BR"}, "formal"),
        (None, "pt", {"pt"}, "informal"),
        ("pt-PT", "pt", {"pt"}, "informal"),  # the bare language covers every country
        ("es-MX", "es", {"es-MX", "pt-BR"}, "informal"),
        ("es-ES", "es", {"es-MX"}, "formal"),
        ("es-MX", "es", {"es-mx"}, "informal"),
        ("en-US", "en", set(), "formal"),
        (None, "ja", [], "formal"),
        ("", "ru", ("ru",), "informal"),
        # the locale counts only for its own language
        ("pt-BR", "es", {"pt-BR"}, "formal"),
        ("pt-BR", "es", {"es"}, "informal"),
        # a language given with a region is still its bare language
        (None, "pt-BR", {"pt"}, "informal"),
    ],
)
def test_register_for(locale, language, informal, expected) -> None:
    assert register_for(locale, language, informal) == expected


# -- locale choice ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("language", "locale", "zone", "expected"),
    [
        # the customer's own locale, in either spelling
        ("pt", "pt-BR", "Europe/Lisbon", "pt_BR"),
        ("pt", "pt_PT", "America/Sao_Paulo", "pt_PT"),
        ("en", "en-GB", "America/New_York", "en_GB"),
        ("en", "en-US,en;q=0.9", None, "en_US"),
        ("pt", "pt_BR.UTF-8", None, "pt_BR"),
        # a bare language says less than the zone's country
        ("pt", "pt", "Europe/Lisbon", "pt_PT"),
        ("pt", "pt", "UTC", "pt"),
        ("zh", "zh-Hant", "Asia/Hong_Kong", "zh_Hant_HK"),
        # a locale of another language lends its country
        ("es", "pt-BR", None, "es_BR"),
        # ... unless Babel has no such locale: then on down the list
        ("hi", "en-US", "UTC+05:30", "hi_IN"),
        # the country of the zone
        ("en", None, "Asia/Kolkata", "en_IN"),
        ("en", None, "Asia/Calcutta", "en_IN"),  # legacy alias
        ("en", None, "Europe/London", "en_GB"),
        ("pt", None, "Europe/Lisbon", "pt_PT"),
        ("pt", None, "America/Sao_Paulo", "pt_BR"),
        ("es", None, "America/New_York", "es_US"),
        ("es", None, "America/Mexico_City", "es_MX"),
        ("es", None, "Europe/Madrid", "es_ES"),
        ("zh", None, "Asia/Taipei", "zh_Hant_TW"),
        # no such locale in Babel (en_LV, ru_LV): the language's default
        ("en", None, "Europe/Riga", "en_US"),
        ("ru", None, "Europe/Riga", "ru_RU"),
        # fixed offsets and UTC have no country
        ("es", None, "UTC-05:00", "es_419"),
        ("pt", None, "UTC-03:00", "pt_BR"),
        ("en", None, "UTC", "en_US"),
        ("ja", None, None, "ja_JP"),
        # unusable locales are ignored
        ("en", "garbage!!", None, "en_US"),
        ("lv", "xx-YY", None, "lv_LV"),
        # a language with no default: the bare language; unknown: English
        ("fr", None, "UTC+01:00", "fr"),
        ("fr", None, "Europe/Paris", "fr_FR"),
        ("xx", None, "Asia/Tokyo", "en"),
        ("", None, None, "en"),
        ("PT", "PT-br", None, "pt_BR"),
    ],
)
def test_eta_locale(language, locale, zone, expected) -> None:
    assert eta_locale(language, locale, zone) == expected


@pytest.mark.parametrize("language", sorted(DEFAULT_LOCALES))
def test_default_locales_exist_in_babel(language: str) -> None:
    locale = DEFAULT_LOCALES[language]
    assert localedata.exists(locale)
    assert Locale.parse(locale).language == language


# -- format_eta ------------------------------------------------------------------


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _shows(text: str, local: datetime, locale: str) -> None:
    """``text`` shows ``local``'s weekday (in the locale's own words), hour and
    minute (12- or 24-hour, with the locale's AM/PM word) and GMT offset."""
    weekday = local.weekday()  # Babel counts from Monday too
    names = {
        get_day_names("wide", context, locale=locale)[weekday]
        for context in ("format", "stand-alone")
    }
    assert any(name in text for name in names), (text, names)
    # no other weekday of the locale appears
    others = {get_day_names("wide", "format", locale=locale)[d] for d in range(7) if d != weekday}
    assert not any(other in text for other in others if all(other not in n for n in names))

    minute = f"{local.minute:02d}"
    if re.search(rf"(?<!\d)0?{local.hour}:{minute}(?!\d)", text) is None:
        hour12 = local.hour % 12 or 12
        assert re.search(rf"(?<!\d)0?{hour12}:{minute}(?!\d)", text), (text, local)
        key = "am" if local.hour < 12 else "pm"
        periods = set()
        for width in ("abbreviated", "narrow", "wide"):
            for context in ("format", "stand-alone"):
                period_names = get_period_names(width, context, locale=locale)
                if key in period_names:
                    periods.add(period_names[key])
        assert any(period in text for period in periods), (text, periods)
    assert get_timezone_gmt(local, locale=locale) in text, text


KOLKATA_DUE = _utc(2026, 11, 23, 4, 0)  # 09:30 on Monday in Kolkata


@pytest.mark.parametrize(
    ("due", "zone", "language", "locale", "wall"),
    [
        # (local wall time as year, month, day, hour, minute; offset in minutes)
        (KOLKATA_DUE, "Asia/Kolkata", "en", None, (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "Asia/Kolkata", "hi", None, (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "Asia/Kolkata", "te", None, (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "Asia/Kolkata", "gu", "gu-IN", (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "Asia/Calcutta", "en", "en-GB", (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "UTC+05:30", "en", None, (2026, 11, 23, 9, 30, 330)),
        (KOLKATA_DUE, "UTC+05:30", "hi", None, (2026, 11, 23, 9, 30, 330)),
        # an aware due in another zone is the same instant
        (
            KOLKATA_DUE.astimezone(ZoneInfo("America/Los_Angeles")),
            "Asia/Kolkata",
            "en",
            None,
            (2026, 11, 23, 9, 30, 330),
        ),
        # past midnight locally: the local weekday, not UTC's
        (_utc(2026, 11, 22, 20, 0), "Asia/Kolkata", "en", None, (2026, 11, 23, 1, 30, 330)),
        (KOLKATA_DUE, "Asia/Tokyo", "ja", None, (2026, 11, 23, 13, 0, 540)),
        (KOLKATA_DUE, "Asia/Tokyo", "en", None, (2026, 11, 23, 13, 0, 540)),
        (_utc(2026, 11, 23, 12, 0), "America/Sao_Paulo", "pt", None, (2026, 11, 23, 9, 0, -180)),
        (_utc(2026, 11, 23, 12, 0), "America/Sao_Paulo", "pt", "pt-BR", (2026, 11, 23, 9, 0, -180)),
        (_utc(2026, 11, 23, 12, 0), "America/Sao_Paulo", "es", None, (2026, 11, 23, 9, 0, -180)),
        # New York either side of the end of DST (1 November 2026)
        (_utc(2026, 10, 30, 13, 0), "America/New_York", "en", None, (2026, 10, 30, 9, 0, -240)),
        (_utc(2026, 11, 2, 14, 0), "America/New_York", "en", None, (2026, 11, 2, 9, 0, -300)),
        (_utc(2026, 11, 2, 21, 45), "America/New_York", "es", None, (2026, 11, 2, 16, 45, -300)),
        # Riga either side of both changes of 2026 (29 March, 25 October)
        (_utc(2026, 3, 28, 7, 30), "Europe/Riga", "lv", None, (2026, 3, 28, 9, 30, 120)),
        (_utc(2026, 3, 30, 6, 30), "Europe/Riga", "lv", None, (2026, 3, 30, 9, 30, 180)),
        (_utc(2026, 10, 24, 6, 30), "Europe/Riga", "lv", None, (2026, 10, 24, 9, 30, 180)),
        (_utc(2026, 10, 26, 7, 30), "Europe/Riga", "ru", None, (2026, 10, 26, 9, 30, 120)),
        # the repeated hour of 25 October: same wall time, the offset tells them apart
        (_utc(2026, 10, 25, 0, 30), "Europe/Riga", "lv", None, (2026, 10, 25, 3, 30, 180)),
        (_utc(2026, 10, 25, 1, 30), "Europe/Riga", "lv", None, (2026, 10, 25, 3, 30, 120)),
        (_utc(2026, 11, 23, 4, 0), "UTC", "en", None, (2026, 11, 23, 4, 0, 0)),
        (_utc(2026, 11, 23, 4, 0), "UTC-03:00", "pt", None, (2026, 11, 23, 1, 0, -180)),
    ],
)
def test_format_eta_wall_time(due, zone, language, locale, wall) -> None:
    *fields, offset = wall
    expected = datetime(*fields, tzinfo=timezone(timedelta(minutes=offset)))
    local = due.astimezone(tzinfo_for(zone))
    assert local.replace(tzinfo=None) == expected.replace(tzinfo=None)  # the table is right
    assert local.utcoffset() == expected.utcoffset()
    text = format_eta(due, zone, language=language, locale=locale)
    _shows(text, local, eta_locale(language, locale, zone))


@pytest.mark.parametrize(
    ("zone", "language", "locale", "expected"),
    [
        # each locale's own order, words and hour cycle
        ("Asia/Kolkata", "en", "en-GB", "Monday 23 November, 09:30 GMT+05:30"),
        ("UTC+05:30", "en", "en-GB", "Monday 23 November, 09:30 GMT+05:30"),
        ("Asia/Kolkata", "en", None, "Monday, 23 November, 9:30 am GMT+05:30"),
        ("Asia/Kolkata", "en", "en-US", "Monday, November 23, 9:30 AM GMT+05:30"),
        ("Asia/Kolkata", "hi", None, "सोमवार, 23 नवंबर, 9:30 am GMT+05:30"),
        ("Asia/Tokyo", "ja", None, "11月23日月曜日 13:00 GMT+09:00"),
        ("America/Sao_Paulo", "pt", None, "segunda-feira, 23 de novembro 01:00 GMT-03:00"),
        ("Europe/Riga", "lv", None, "pirmdiena, 23. novembris 06:00 GMT+02:00"),
        ("Europe/Riga", "ru", None, "понедельник, 23 ноября, 06:00 GMT+02:00"),
        ("Europe/Madrid", "es", None, "lunes, 23 de noviembre, 5:00 GMT+01:00"),
        ("Asia/Kolkata", "te", None, "23 నవంబర్, సోమవారం 9:30 AM GMT+05:30"),
        ("Asia/Kolkata", "gu", None, "સોમવાર, 23 નવેમ્બર 9:30 AM GMT+05:30"),
    ],
)
def test_format_eta_examples(zone, language, locale, expected) -> None:
    """The exact words a customer reads, at least once for every language of
    config/example.yaml, under the locked Babel (requirements/*.lock: 2.18.0).
    Other tests check an ETA's meaning (day, time, offset); these are the ones
    that notice when a Babel/CLDR update changes the text (2.19 writes the
    Brazilian one as "01:00 -03:00 GMT"): review the new words, then update."""
    assert format_eta(KOLKATA_DUE, zone, language=language, locale=locale) == expected


def test_format_eta_rounds_up_to_the_minute() -> None:
    # never promise earlier than the due time
    assert "9:31" in format_eta(KOLKATA_DUE + timedelta(seconds=1), "Asia/Kolkata", language="en")
    assert "9:30" in format_eta(KOLKATA_DUE, "Asia/Kolkata", language="en")
    just_before = KOLKATA_DUE - timedelta(microseconds=1)
    assert "9:30" in format_eta(just_before, "Asia/Kolkata", language="en")


def test_format_eta_rejects_naive_and_unknown_zones() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_eta(datetime(2026, 11, 23, 4, 0), "Asia/Kolkata", language="en")
    with pytest.raises(ValueError, match="unknown time zone"):
        format_eta(KOLKATA_DUE, "Mars/Olympus_Mons", language="en")
    with pytest.raises(ValueError, match="unknown time zone"):
        format_eta(KOLKATA_DUE, "UTC+25:00", language="en")


def test_format_eta_every_babel_language() -> None:
    # the assembled pattern works for every language Babel knows, not just ours
    local = KOLKATA_DUE.astimezone(ZoneInfo("Asia/Kolkata"))
    languages = sorted({Locale.parse(i).language for i in localedata.locale_identifiers()})
    assert len(languages) > 100
    for language in languages:
        text = format_eta(KOLKATA_DUE, "Asia/Kolkata", language=language)
        locale = eta_locale(language, None, "Asia/Kolkata")
        names = {get_day_names("wide", c, locale=locale)[0] for c in ("format", "stand-alone")}
        assert any(name in text for name in names), (language, text)
        assert get_timezone_gmt(local, locale=locale) in text, (language, text)


# -- render ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("Reply by {eta}.", {}, "Reply by ETA."),
        (
            "Hi {name}, {team} replies by {eta}.",
            {"name": "Ana", "team": "Billing"},
            "Hi Ana, Billing replies by ETA.",
        ),
        # an empty name leaves no doubled space or orphaned punctuation
        ("Hi {name}, we got it.", {}, "Hi, we got it."),
        ("Hi {name}! We got it.", {}, "Hi! We got it."),
        ("Hello {name} and welcome.", {}, "Hello and welcome."),
        ("Thanks {name}", {}, "Thanks"),
        ("{name}, we got your message.", {}, "we got your message."),
        ("Dear {name},\nwe got it.", {}, "Dear,\nwe got it."),
        ("{name}\nWe got it.", {}, "We got it."),
        ("We got it.\n{name}\nBye", {}, "We got it.\nBye"),
        ("We got it.\n{team}", {}, "We got it."),
        ("Hi {name} {team} there", {}, "Hi there"),
        ("Ticket ({reference}) is open.", {}, "Ticket is open."),
        ("Ticket [{reference}].", {}, "Ticket."),
        ("Ticket ({reference}) is open.", {"reference": "R-7"}, "Ticket (R-7) is open."),
        ("{name}様、{eta}までにご返信いたします。", {}, "様、ETAまでにご返信いたします。"),
        ("お問い合わせ（{reference}）を受け付けました。", {}, "お問い合わせを受け付けました。"),
        # the admin's own spacing elsewhere is left alone
        ("A  B {name}  C\n\nD", {}, "A  B C\n\nD"),
        ("Literal {{braces}} {eta}", {}, "Literal {braces} ETA"),
        # values are text, never templates; whitespace runs and control characters become one space
        ("Hi {name}.", {"name": "{eta} {0}"}, "Hi {eta} {0}."),
        ("Hi {name}.", {"name": "  Ana\n\tMaria\x1b[31m "}, "Hi Ana Maria [31m."),
        ("Hi {name}.", {"name": "   "}, "Hi."),
        ("Hi {name}.", {"name": ""}, "Hi."),
        # zero-width joiners of Indic names stay
        ("{name}", {"name": "ర\u200cవి"}, "ర\u200cవి"),
    ],
)
def test_render(template: str, values: dict[str, str], expected: str) -> None:
    kwargs = {"name": None, "team": None, "reference": None} | values
    assert render(template, eta="ETA", **kwargs) == expected


def test_render_keeps_the_eta_as_babel_wrote_it() -> None:
    eta = format_eta(_utc(2026, 11, 23, 15, 0), "America/Mexico_City", language="es")
    assert "\u202f" in eta  # narrow no-break space before "p.m."
    assert render("Antes del {eta}.", eta=eta, name=None, team=None, reference=None) == (
        f"Antes del {eta}."
    )


@pytest.mark.parametrize("template", ["{eta_time}", "{", "{0}", "{eta!r}", ""])
def test_render_rejects_bad_templates(template: str) -> None:
    with pytest.raises(ValueError):
        render(template, eta="ETA", name=None, team=None, reference=None)


# -- DEFAULT_TEMPLATES -----------------------------------------------------------

LANGUAGES = ["en", "es", "pt", "hi", "te", "gu", "lv", "ru", "ja"]
DEFAULTS = [(lang, reg) for lang in LANGUAGES for reg in ("formal", "informal")]


def test_default_templates_cover_the_languages() -> None:
    assert sorted(DEFAULT_TEMPLATES) == sorted(LANGUAGES)
    for language, registers in DEFAULT_TEMPLATES.items():
        assert set(registers) == {"formal", "informal"}, language
        assert registers["formal"] != registers["informal"], language


@pytest.mark.parametrize(("language", "register"), DEFAULTS)
def test_default_template_renders(language: str, register: str) -> None:
    template = DEFAULT_TEMPLATES[language][register]
    assert template_problems(template) == []
    assert template.count("{eta}") == 1
    # read well without a name, team or reference: they use none of them
    assert not any(f"{{{p}}}" in template for p in PLACEHOLDERS - {"eta"})
    assert template == template.strip() and "  " not in template
    eta = format_eta(KOLKATA_DUE, "Asia/Kolkata", language=language)
    text = render(template, eta=eta, name=None, team=None, reference=None)
    assert text == template.replace("{eta}", eta)
    assert "None" not in text and "{" not in text and "}" not in text
    # a name given changes nothing either
    assert render(template, eta=eta, name="Ana", team="Billing", reference="R-1") == text


@pytest.mark.parametrize(
    ("language", "formal", "informal"),
    [
        # the register shows in the form of address
        ("en", "Thank you", "Thanks"),
        ("es", "su mensaje", "tu mensaje"),
        ("pt", "lhe responderá", "vai te responder"),
        ("ru", "Ваше", "твоё"),
        ("lv", "Jūsu", "tava"),
        ("hi", "आपका", "आपका"),  # आप in both
        ("ja", "いたします", "しますね"),
    ],
)
def test_default_template_registers(language: str, formal: str, informal: str) -> None:
    assert formal in DEFAULT_TEMPLATES[language]["formal"]
    assert informal in DEFAULT_TEMPLATES[language]["informal"]
