"""Text of the automatic acknowledgement of a new conversation.

A new conversation gets a short reply in the customer's language saying that
the message arrived and by when a person will answer, in the customer's own
local time (docs/architecture.md; README "How a message is routed"). This module only
renders that text; deciding whether to acknowledge (auto-replies, bounces,
mailing lists) and sending it happen elsewhere. Pure functions, no I/O.

* :func:`template_problems` -- what is wrong with an admin-written template
  (config validation reports these at FILE:LINE).
* :func:`register_for` -- ``"formal"`` or ``"informal"`` for a customer.
* :func:`format_eta` -- the due instant in the customer's zone and locale,
  e.g. ``"Monday 23 November, 09:30 GMT+05:30"`` (en_GB).
* :func:`render` -- a template filled in; an empty name, team or reference
  leaves no doubled spaces or orphaned commas and brackets behind.
* :data:`DEFAULT_TEMPLATES` -- formal and informal templates for the
  languages the project ships with.

Locales
-------
:func:`eta_locale` picks the Babel locale the ETA is written in, first that
works of:

1. the customer's locale (``"pt-BR"``, ``"pt_BR"``, ``"es-MX"``) when it is of
   the customer's language; when it is of another language (a browser in
   ``pt-BR``, a customer writing Spanish), that language in the locale's
   country (``es_BR``); a locale without a country (``"pt"``) is tried
   after step 2, whose country is more telling;
2. the language in the country of the customer's time zone
   (``en`` + ``Asia/Kolkata`` -> ``en_IN``, ``pt`` + ``Europe/Lisbon`` ->
   ``pt_PT``, ``es`` + ``America/New_York`` -> ``es_US``), from Babel's own
   zone -> territory table; fixed offsets such as ``"UTC+05:30"`` have no
   country;
3. a default country per language, :data:`DEFAULT_LOCALES`: CLDR's most
   likely one (``en_US``, ``pt_BR``, ``hi_IN``, ``lv_LV``, ``ru_RU``,
   ``ja_JP``...) except Spanish, which gets ``es_419`` (Latin America, where
   most Spanish speakers live) rather than CLDR's ``es_ES``;
4. the bare language, if Babel knows it;
5. English.

Step 2 exists because a customer rarely tells us their locale but nearly
always has a zone: an English speaker in India reads "9:30 am" and
"23 November", one in New York "9:30 AM" and "November 23".

How the ETA is written
----------------------
CLDR has no ready-made "weekday, day, month, time and zone" format, so it is
assembled the way ICU's pattern generator does, from the locale's own data:
the date from the skeleton ``MMMMEEEEd`` (Babel's ``match_skeleton`` over the
locale's ``availableFormats``, field widths then widened to the full weekday
and month names), the time from ``hmv`` or ``Hmv`` (the locale's hour cycle,
taken from its short time format) so the zone sits where the locale puts it,
both joined by the locale's ``dateTimeFormat``. The zone is always the
localized GMT offset (``GMT+05:30``; ``UTC+05:30`` in French): unambiguous,
and Babel's zone abbreviations are not reliable (``EEST`` for Riga in
November, long names where short ones were asked for). No year: the ETA is
never more than a day or so away. The due instant is rounded *up* to the
minute, so the promise is never earlier than the due time.

There is no "today at 16:00" / "tomorrow at 09:30": Babel 2.18 keeps only
CLDR's "in {0} days" / "{0} days ago" patterns, not the relative day names
("today", "tomorrow"), and ``format_timedelta`` says "in 1 day", which is
neither natural nor exact. So the full weekday and date form is always used.

Templates
---------
Placeholders are ``{eta}``, ``{name}``, ``{team}`` and ``{reference}``;
``{{`` and ``}}`` are literal braces. ``{name}``, ``{team}`` and
``{reference}`` may be missing (None) and then render as nothing; :func:`render`
then removes the space before it or the bracket pair around it, and a
leading ``", "`` at the start of a line. That makes "Hello {name}, thanks"
read "Hello, thanks", but it cannot make every sentence read well ("Dear ,"
becomes "Dear,"; Japanese "{name}様" leaves "様"): write templates so that
they read well without the optional values, as :data:`DEFAULT_TEMPLATES`
do (they use only ``{eta}``).

Some languages decline a date after a preposition ("до понедельника",
"līdz pirmdienai") while Babel gives the nominative ("понедельник",
"pirmdiena"), so the Russian and Latvian defaults put the ETA after a
colon ("Срок ответа: {eta}."), where the nominative is right. Admins writing
their own templates in such languages should do the same.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import lru_cache
from string import Formatter
from typing import Literal

from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.dates import format_datetime, match_skeleton

from router.timezones import tzinfo_for

__all__ = [
    "DEFAULT_LOCALES",
    "DEFAULT_TEMPLATES",
    "PLACEHOLDERS",
    "Register",
    "eta_locale",
    "format_eta",
    "register_for",
    "render",
    "template_problems",
]

Register = Literal["formal", "informal"]

PLACEHOLDERS = frozenset({"name", "eta", "team", "reference"})
# the order placeholders are suggested in, most useful first
_SUGGESTED = ("eta", "name", "team", "reference")
_SUGGESTION = ", ".join(f"{{{p}}}" for p in _SUGGESTED)

# Default country per language when neither the customer's locale nor the
# country of their zone gives a locale Babel knows (see the module docstring).
DEFAULT_LOCALES: dict[str, str] = {
    "en": "en_US",
    "es": "es_419",
    "pt": "pt_BR",
    "hi": "hi_IN",
    "te": "te_IN",
    "gu": "gu_IN",
    "lv": "lv_LV",
    "ru": "ru_RU",
    "ja": "ja_JP",
}
_FALLBACK_LOCALE = "en"

# Formal: the polite register (Sie/vous/Вы/Jūs, です・ます and keigo).
# Informal: the friendly one (tu/ты/tu, "você" with "te" in Brazil). For
# Hindi, Telugu and Gujarati both keep the respectful "you" (आप / మీరు /
# તમે) that customer service always uses; the informal ones are only lighter
# in wording. Japanese stays polite in both. None uses {name} or {reference},
# so all read well without them; Russian and Latvian put {eta} after a colon
# (see the module docstring).
DEFAULT_TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "formal": (
            "Thank you for contacting us. We have received your message, and a member"
            " of our team will reply by {eta}."
        ),
        "informal": "Thanks, we've got your message! Someone from our team will reply by {eta}.",
    },
    "es": {
        "formal": (
            "Gracias por contactarnos. Hemos recibido su mensaje y una persona de nuestro"
            " equipo le responderá a más tardar el {eta}."
        ),
        "informal": (
            "¡Gracias por escribirnos! Recibimos tu mensaje y alguien de nuestro equipo te"
            " responderá a más tardar el {eta}."
        ),
    },
    "pt": {
        "formal": (
            "Agradecemos o seu contato. Recebemos a sua mensagem e um de nossos atendentes"
            " lhe responderá até {eta}."
        ),
        "informal": (
            "Oi! Recebemos sua mensagem e alguém da nossa equipe vai te responder até {eta}."
        ),
    },
    "hi": {
        "formal": "आपका संदेश हमें प्राप्त हो गया है। हमारी टीम के एक सदस्य {eta} तक आपको उत्तर देंगे।",
        "informal": "आपका मैसेज हमें मिल गया है! हमारी टीम से कोई {eta} तक आपको जवाब देगा।",
    },
    "te": {
        "formal": "మీ సందేశం మాకు అందింది. మా బృంద సభ్యులు {eta} లోగా మీకు సమాధానం ఇస్తారు.",
        "informal": "మీ మెసేజ్ మాకు వచ్చింది! మా టీమ్‌లో ఒకరు {eta} లోపు మీకు రిప్లై ఇస్తారు.",
    },
    "gu": {
        "formal": "અમને આપનો સંદેશ મળ્યો છે. અમારી ટીમના એક સભ્ય {eta} સુધીમાં આપને જવાબ આપશે.",
        "informal": "તમારો મેસેજ અમને મળી ગયો છે! અમારી ટીમમાંથી કોઈ {eta} સુધીમાં તમને જવાબ આપશે.",
    },
    "lv": {
        "formal": (
            "Paldies, esam saņēmuši Jūsu ziņu, un mūsu darbinieks Jums noteikti atbildēs."
            " Atbildes termiņš: {eta}."
        ),
        "informal": (
            "Paldies, tava ziņa ir saņemta! Kāds no mūsu komandas tev noteikti atbildēs."
            " Atbildes termiņš: {eta}."
        ),
    },
    "ru": {
        "formal": (
            "Спасибо, мы получили Ваше сообщение, и наш специалист обязательно Вам ответит."
            " Срок ответа: {eta}."
        ),
        "informal": (
            "Спасибо, мы получили твоё сообщение! Наш специалист обязательно тебе ответит."
            " Срок ответа: {eta}."
        ),
    },
    "ja": {
        "formal": "メッセージを確かに受け付けました。担当者より{eta}までにご返信いたします。",
        "informal": "メッセージを受け取りました！担当者から{eta}までにお返事しますね。",  # noqa: RUF001
    },
}


# -- templates -----------------------------------------------------------------


def template_problems(text: str) -> list[str]:
    """What is wrong with a template, one message per problem; ``[]`` if fine.

    Reported: an empty template, malformed braces (a lone ``{`` or ``}``;
    literal braces are written ``{{`` and ``}}``), positional ``{}`` / ``{0}``,
    attribute or index access (``{eta.day}``), conversions and format specs
    (``{eta!r}``, ``{eta:>10}``: the values are finished text) and unknown
    placeholders. Each problem is reported once, in the order found.
    """
    if not text or not text.strip():
        return ["template is empty"]
    problems: list[str] = []
    try:
        # parse() is lazy: a brace error surfaces after the fields before it
        for _literal, field, spec, conversion in Formatter().parse(text):
            if field is None:
                continue
            problems.extend(_field_problems(field, spec or "", conversion))
    except ValueError as exc:
        problems.append(f"malformed braces ({exc}); write {{{{ and }}}} for literal braces")
    return list(dict.fromkeys(problems))


def _field_problems(field: str, spec: str, conversion: str | None) -> list[str]:
    written = (
        "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
    )
    root = re.split(r"[.\[]", field, maxsplit=1)[0]
    if root.strip() == "" or root.strip().isdigit():
        return [f"positional placeholder {written}; use {_SUGGESTION}"]
    if root not in PLACEHOLDERS:
        return [f"unknown placeholder {written}; use {_SUGGESTION}"]
    problems = []
    if root != field:
        problems.append(f"placeholder {written} uses attribute or index access; write {{{root}}}")
    if conversion is not None:
        problems.append(f"conversion !{conversion} in {written} is not allowed; write {{{root}}}")
    if spec:
        problems.append(f"format spec :{spec} in {written} is not allowed; write {{{root}}}")
    return problems


# A private-use character marks where an empty value was, so the tidying
# below touches only text next to it, never the admin's own spacing.
_HOLE = "\ue000"
_H = "[ \t]"  # horizontal space: tidying never joins lines
_TIDY = [
    # several holes in a row count as one ("{name} {team}")
    (re.compile(f"{_HOLE}(?:{_H}*{_HOLE})+"), _HOLE),
    # a line that held only the hole goes away, with its line break
    (re.compile(f"\n{_H}*{_HOLE}{_H}*(?=\n|$)"), ""),
    (re.compile(f"^{_H}*{_HOLE}{_H}*(?:\n|$)"), ""),
    # an empty bracket pair: "Ticket ({reference})." -> "Ticket."
    (
        re.compile(f"\\({_HOLE}\\)|\\[{_HOLE}\\]|（{_HOLE}）|「{_HOLE}」|«{_HOLE}»|“{_HOLE}”"),  # noqa: RUF001
        _HOLE,
    ),
    # at the start of a line, a hole takes its comma with it: "{name}, hi" -> "hi"
    (re.compile(f"(^|\n){_H}*{_HOLE}{_H}*[,;:]?{_H}*"), r"\1"),
    # no space before punctuation: "Hi {name}, thanks" -> "Hi, thanks"
    (re.compile(f"{_H}*{_HOLE}{_H}*(?=[,.!?;:)\\]、。，！？]|\n|$)"), ""),  # noqa: RUF001
    # no doubled space: "Hi {name} thanks" -> "Hi thanks"
    (re.compile(f"{_H}+{_HOLE}{_H}+"), " "),
]


def render(
    template: str,
    *,
    eta: str,
    name: str | None,
    team: str | None,
    reference: str | None,
) -> str:
    """The template with its placeholders filled in.

    ``name``, ``team`` and ``reference`` are cleaned (whitespace runs and
    control characters become one space: they come from customers' profiles
    and channel metadata) and may be None or empty: the placeholder then
    renders as nothing and the space or brackets around it are tidied (see
    the module docstring). ``ValueError`` if :func:`template_problems` finds
    anything (config validation should have caught it first).
    """
    problems = template_problems(template)
    if problems:
        raise ValueError("; ".join(problems))
    values = {
        "eta": eta.replace(_HOLE, ""),  # kept as Babel wrote it (narrow no-break spaces)
        "name": _clean(name),
        "team": _clean(team),
        "reference": _clean(reference),
    }
    parts = []
    for literal, field, _spec, _conversion in Formatter().parse(template.replace(_HOLE, "")):
        parts.append(literal)
        if field is not None:
            parts.append(values[field] or _HOLE)
    text = "".join(parts)
    if _HOLE in text:
        for pattern, replacement in _TIDY:
            text = pattern.sub(replacement, text)
        text = text.replace(_HOLE, "")
    return text


def _clean(value: str | None) -> str:
    if not value:
        return ""
    # control characters (escapes, NUL) become spaces; format characters such
    # as the zero-width (non-)joiners of Indic and Persian names stay
    value = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return " ".join(value.replace(_HOLE, "").split())


# -- register ------------------------------------------------------------------


def _norm_tag(tag: str) -> str:
    return tag.strip().replace("_", "-").lower()


def register_for(locale: str | None, language: str, informal_locales: Collection[str]) -> Register:
    """``"informal"`` when the customer's locale (``"pt-BR"``, ``"pt_BR"``,
    ``"es-MX"``) or their bare language (``"pt"``) is in ``informal_locales``,
    else ``"formal"``. Case, ``-`` and ``_`` do not matter.

    The locale counts only when it is of ``language``: a customer writing
    Spanish from a ``pt-BR`` browser is not addressed informally because
    Brazilian Portuguese is.
    """
    wanted = {_norm_tag(tag) for tag in informal_locales}
    lang = _norm_tag(language).split("-")[0]
    if lang in wanted:
        return "informal"
    if locale:
        tag = _norm_tag(locale)
        if tag.split("-")[0] == lang and tag in wanted:
            return "informal"
    return "formal"


# -- ETA -----------------------------------------------------------------------


def _parse(identifier: str) -> Locale | None:
    try:
        return Locale.parse(identifier)
    except (ValueError, TypeError, UnknownLocaleError):
        return None


def _zone_territory(timezone: str) -> str | None:
    """The country of an IANA zone, from Babel's table (CLDR's, aliases resolved)."""
    territories = get_global("zone_territories")
    territory = territories.get(timezone) or territories.get(
        get_global("zone_aliases").get(timezone, "")
    )
    if territory in (None, "ZZ", "001"):  # Etc/UTC and other zones of no country
        return None
    return territory


@lru_cache(maxsize=1024)
def eta_locale(language: str, locale: str | None = None, timezone: str | None = None) -> str:
    """The Babel locale identifier :func:`format_eta` writes in (``"pt_BR"``):
    the customer's locale, the language in their zone's country, the
    language's default country, the bare language, English -- the first
    Babel knows (see the module docstring)."""
    lang = _norm_tag(language or "").split("-")[0]
    candidates: list[str] = []
    script = ""  # "zh-Hant" keeps its script in the zone's country
    bare_given = None  # "pt": less telling than the zone's country
    if locale:
        # "pt-BR", "pt_BR.UTF-8", "pt-BR,pt;q=0.9": the first tag
        given = _parse(re.split(r"[.@,;\s]", locale.strip())[0].replace("-", "_"))
        if given is not None and given.language == lang:
            if given.territory:
                candidates.append(str(given))
            else:
                script, bare_given = f"_{given.script}" if given.script else "", str(given)
        elif given is not None and given.territory:
            candidates.append(f"{lang}_{given.territory}")
    if timezone:
        territory = _zone_territory(timezone)
        if territory:
            candidates.append(f"{lang}{script}_{territory}")
    if bare_given:
        candidates.append(bare_given)
    if lang in DEFAULT_LOCALES:
        candidates.append(DEFAULT_LOCALES[lang])
    candidates.append(lang)
    for candidate in candidates:
        parsed = _parse(candidate)
        # Locale.parse may fill in likely subtags ("zh_TW" -> zh_Hant_TW), never
        # another language; checked anyway so a surprise cannot switch it
        if parsed is not None and parsed.language == lang:
            return str(parsed)
    return _FALLBACK_LOCALE


# a date/time pattern: quoted literal, run of one pattern letter, other literal
_PATTERN_TOKEN = re.compile(r"'(?:[^']|'')*'?|([A-Za-z])\1*|[^'A-Za-z]+")


def _map_fields(pattern: str, change: dict[str, str]) -> str:
    """``pattern`` with some field runs replaced (``{"EEE": "EEEE"}``); quoted
    literals ("'de'") and other text untouched."""
    return "".join(
        change.get(token.group(0), token.group(0)) if token.group(1) else token.group(0)
        for token in _PATTERN_TOKEN.finditer(pattern)
    )


# Widen abbreviated weekday and month fields to full names; numeric months
# (Japanese "M月") stay numeric, as CLDR's skeleton matching requires.
_FULL_NAMES = {
    "E": "EEEE", "EE": "EEEE", "EEE": "EEEE", "ccc": "cccc", "eee": "eeee",
    "MMM": "MMMM", "LLL": "LLLL",
}  # fmt: skip
# The zone field of the time skeleton becomes the localized GMT format.
_GMT_ZONE = {run: "ZZZZ" for ch in "vz" for run in (ch, ch * 4)}


@lru_cache(maxsize=256)
def _eta_pattern(locale_id: str) -> str:
    """The locale's pattern for weekday, day, month, time and zone."""
    locale = Locale.parse(locale_id)
    skeletons = locale.datetime_skeletons
    date_key = match_skeleton("MMMMEEEEd", skeletons) or match_skeleton(
        "MMMMEEEEd", skeletons, allow_different_fields=True
    )
    date = _map_fields(str(skeletons[date_key]), _FULL_NAMES) if date_key else "EEEE, d MMMM"
    # the hour cycle the locale prefers: its short time format's hour field
    short_time = re.sub(r"'(?:[^']|'')*'", "", str(locale.time_formats["short"]))
    hour = re.search(r"[hHkK]", short_time)
    twelve_hour = hour is not None and hour.group(0) in "hK"
    time_key = match_skeleton("hmv" if twelve_hour else "Hmv", skeletons)
    time = str(skeletons[time_key]) if time_key else ("h:mm a v" if twelve_hour else "HH:mm v")
    time = _map_fields(time, _GMT_ZONE)
    if "ZZZZ" not in time:
        time += " ZZZZ"
    # CLDR's dateTimeFormat is itself a pattern ("{1}, {0}", "{1} 'um' {0}")
    return str(locale.datetime_formats["full"]).replace("{1}", date).replace("{0}", time)


def format_eta(due: datetime, timezone: str, *, language: str, locale: str | None = None) -> str:
    """``due`` as the customer reads it: in their ``timezone`` (IANA name or
    ``"UTC+05:30"``), written for their ``language`` / ``locale`` -- weekday,
    day, month, hour and minute and the GMT offset, in the locale's own order
    and words ("Monday 23 November, 09:30 GMT+05:30" in en_GB,
    "segunda-feira, 23 de novembro 09:30 GMT-03:00" in pt_BR,
    "11月23日月曜日 9:30 GMT+09:00" in ja).

    ``due`` must be timezone-aware (any zone); it is rounded up to the minute
    so the promise is never early. ``ValueError`` for a naive ``due`` or an
    unknown zone. Locale choice: :func:`eta_locale`.
    """
    if due.tzinfo is None or due.utcoffset() is None:
        raise ValueError("due must be a timezone-aware datetime")
    tz = tzinfo_for(timezone)
    if due.second or due.microsecond:
        due = due.replace(second=0, microsecond=0) + timedelta(minutes=1)
    locale_id = eta_locale(language, locale, timezone)
    return format_datetime(due.astimezone(tz), _eta_pattern(locale_id), tzinfo=tz, locale=locale_id)
