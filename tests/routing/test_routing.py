"""router.routing.decide on config/example.yaml: tables of cases, one decision each.

Every expected instant is worked out by hand from the calendars of the example
config (never by asking a Calendar), with the UTC offsets of the day:

=============  ==========================  ======================================
team           local hours                 2026-06-08..14 (summer) in UTC
=============  ==========================  ======================================
india          mon-sat 09:00-18:00 IST     mon-sat 03:30-12:30
india-night    sun-thu 22:00-06:00 IST     sun-thu 16:30 to 00:30 the next day
latvia         mon-fri 08:00-12:30,        05:00-09:30, 10:00-14:00 (EEST +3);
               13:00-17:00 Riga            winter (EET +2): 06:00-10:30, 11:00-15:00
japan          mon-fri 09:00-18:00 JST     00:00-09:00
brazil         mon-fri 08:00-18:00,        11:00-21:00, sat 12:00-16:00
               sat 09:00-13:00 BRT (-3)
us-east        mon-fri 08:00-20:00,        12:00-24:00, sat 14:00-20:00 (EDT -4);
               sat 10:00-16:00 New York    winter (EST -5): 13:00-01:00, sat 15:00-21:00
vip-desk       no calendar: always open
=============  ==========================  ======================================

The week of Monday 2026-06-08 has no public holiday in any team's country.
First-response budgets: chat 5m, voice/sms/whatsapp 1h, x 2h, email/api 4h,
other channels 8h; urgent 30m, high 2h (the shorter applies).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from router.config import load_config
from router.model import Decision, Hints, InboundMessage
from router.profiles.context import Context
from router.profiles.identity import normalise_identity
from router.routing import Routing, decide

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "example.yaml"
ENV = {"ROUTER_API_TOKEN": "x", "CHAT_SECRET": "x"}
SENDABLE = frozenset({"api", "email", "sms", "chat", "whatsapp", "x", "voice"})

# Senders, written as the channels give them.
US = "+1 212 736 5000"  # New York
IN = "+91 98123 45678"
LV = "+371 2612 3456"
JP = "+81 90 1234 5678"
BR = "whatsapp:+55 11 91234 5678"  # São Paulo
RU = "+7 912 345 6789"  # a Russian mobile: several time zones
EMAIL = "Ana Pereira <Ana.Pereira@Example.COM>"
CHAT = "vis_3f9a2c"
X_USER = "1498765432109876543"

# Instants of the summer reference week (see the module docstring).
WED_US = "2026-06-10T11:00-04:00"  # 15:00Z: US open (LV closed, India closed)
WED_BR = "2026-06-10T11:00-03:00"  # 14:00Z: Brazil and US open
WED_IN = "2026-06-10T11:30+05:30"  # 06:00Z: India and Latvia open
WED_LV = "2026-06-10T10:00+03:00"  # 07:00Z: Latvia and India open
WED_EU_MORNING = "2026-06-10T11:00+03:00"  # 08:00Z: Latvia, India (and Japan) open; US closed
WED_JP = "2026-06-10T11:00+09:00"  # 02:00Z: only Japan open
SAT_NIGHT_US = "2026-06-13T18:00-04:00"  # 22:00Z: every team with a calendar closed

# Markers of the acknowledgement's language and register (the en ones are the
# example config's own templates, which override the built-in English ones).
ACK = {
    "en": "We have received your message and a member of our team will reply by",
    "en-informal": "Thanks for getting in touch! We got your message",
    "es": "Gracias por contactarnos. Hemos recibido su mensaje",
    "pt": "Agradecemos o seu contato. Recebemos a sua mensagem",
    "pt-informal": "Oi! Recebemos sua mensagem e alguém da nossa equipe vai te responder",
    "hi": "आपका संदेश हमें प्राप्त हो गया है।",
    "te": "మీ సందేశం మాకు అందింది.",
    "gu": "અમને આપનો સંદેશ મળ્યો છે.",
    "lv": "Paldies, esam saņēmuši Jūsu ziņu",
    "ru": "Спасибо, мы получили Ваше сообщение",
    "ja": "メッセージを確かに受け付けました。",
}


# -- building cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    """A message and what routing knows of its sender."""

    text: str
    channel: str = "sms"
    sender: str = IN
    subject: str | None = None
    hints: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    customer: dict[str, str] = field(default_factory=dict)
    # the customer's conversation: fields, plus "ago" (seconds since its last activity)
    conversation: dict[str, str] | None = None
    owner_online: bool = False
    depths: dict[str, int] | None = None

    def message(self, now: float) -> InboundMessage:
        return InboundMessage(
            channel=self.channel,
            sender=normalise_identity(self.sender, self.channel),
            text=self.text,
            subject=self.subject,
            received_at=now,
            hints=Hints(**self.hints),
            meta=dict(self.meta),
        )

    def profile(self, now: float) -> Context:
        conversation: dict[str, str] = {}
        if self.conversation is not None:
            fields = dict(self.conversation)
            ago = float(fields.pop("ago", 60))
            conversation = {"id": "v1", "status": "open", "last_activity": str(now - ago)}
            conversation.update(fields)
        return Context(
            customer_id="c1",
            created=not self.customer,
            customer=dict(self.customer),
            conversation=conversation,
            owner_online=self.owner_online,
        )


def conv(language: str | None = None, **fields: Any) -> dict[str, str]:
    """An open conversation, active a minute ago unless ``ago`` says otherwise."""
    out = {k: str(v) for k, v in fields.items()}
    if language is not None:
        out["language"] = language
    return out


def case(case_id: str, msg: Msg, at: str, **expect: Any) -> Any:
    return pytest.param(msg, at, expect, id=case_id)


def utc(text: str) -> datetime:
    """An ISO 8601 instant with an offset (``Z`` allowed) in UTC."""
    at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert at.tzinfo is not None, f"{text!r} needs an offset"
    return at.astimezone(UTC)


def _instant(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def eta_meaning(text: str | None) -> tuple[str, ...] | None:
    """What an ETA tells the customer, whatever the CLDR data's words and order:
    the day of the month, the clock time (on a 12-hour dial) and the UTC offset.
    The exact text is pinned once per language in tests/routing/test_acks.py."""
    if text is None:
        return None
    offset = re.search(r"[+-]\d\d:\d\d", text)
    clock = re.search(r"(?<![+\-\d])\d{1,2}:\d\d", text)
    day = re.search(r"\d{1,2}(?=日)", text) or re.search(r"(?<![\d:+\-])\d{1,2}(?![\d:])", text)
    # 7:00 PM and 19:00 are the same time (a locale's data may switch between them)
    hour, minute = clock.group(0).split(":") if clock else ("?", "?")
    hhmm = f"{int(hour) % 12}:{minute}" if hour != "?" else "?"
    return tuple(m.group(0) if m else "?" for m in (day,)) + (
        hhmm,
        offset.group(0) if offset else "?",
    )


def check(d: Decision, now: float, expect: dict[str, Any]) -> None:
    """Compare the decision with the expected values (all mismatches in one diff)."""
    got: dict[str, Any] = {}
    want: dict[str, Any] = {}
    text = "\n".join(d.reasons)
    for key, value in expect.items():
        if key in ("next_open", "due_at"):
            got[key] = _instant(getattr(d, key))
            want[key] = utc(value) if isinstance(value, str) and value != "now" else value
            if value == "now":
                want[key] = _instant(now)
        elif key in ("due_in", "overflow_in"):  # minutes after now
            attr = getattr(d, "due_at" if key == "due_in" else "overflow_at")
            got[key] = None if attr is None else (attr - now) / 60
            want[key] = value
        elif key == "ack":  # None: no acknowledgement; else a marker of its language
            got[key] = (
                value if d.ack_text is not None and value and value in d.ack_text else d.ack_text
            )
            want[key] = value
        elif key == "ack_not":  # a marker the acknowledgement must not contain
            got[key] = d.ack_text is not None and value in d.ack_text
            want[key] = False
        elif key == "eta":  # same meaning; tests/routing/test_acks.py pins the exact words
            got[key], want[key] = eta_meaning(d.eta_local), eta_meaning(value)
        elif key == "eta_has":
            got[key] = tuple(p for p in value if d.eta_local and p in d.eta_local)
            want[key] = tuple(value)
        elif key == "reasons":  # substrings, each in some reason
            found = tuple(s for s in value if s in text)
            got[key] = found if found == tuple(value) else d.reasons
            want[key] = tuple(value)
        elif key == "min_confidence":
            got[key] = d.language_confidence is not None and d.language_confidence >= value
            want[key] = True
        else:
            got[key], want[key] = getattr(d, key), value
    assert got == want
    invariants(d, now)


def invariants(d: Decision, now: float) -> None:
    """What holds for every decision: each step explained, times consistent."""
    assert d.reasons, "a decision always says why"
    assert d.reasons[0].startswith(f"language {d.language}: "), d.reasons
    assert d.language_source.replace("_", " ") in d.reasons[0], d.reasons
    assert any(
        r.startswith(f"customer time zone {d.timezone} (from {d.timezone_source.replace('_', ' ')}")
        for r in d.reasons
    ), d.reasons
    if d.rule is not None:
        assert f"rule {d.rule!r} matched" in d.reasons, d.reasons
    else:
        assert any(r.startswith("no rule matched") for r in d.reasons), d.reasons
    assert any(r.startswith("first response due ") for r in d.reasons), d.reasons
    assert d.due_at is not None and d.due_at > now
    assert d.due_at - now <= 10 * 86400  # business time, but never absurdly far
    if d.open:
        assert d.next_open == now
        assert any(f"queue {d.queue} " in r and "is open now" in r for r in d.reasons)
    else:
        assert d.next_open is not None and now < d.next_open <= d.due_at
        assert any("is closed; opens" in r for r in d.reasons), d.reasons
    if d.language_source == "detected":
        assert d.language_confidence is not None and d.language_confidence >= 0.5
    else:
        assert d.language_confidence is None
    fallback = any(r.startswith("no acknowledgement template for") for r in d.reasons)
    if d.ack_text is not None and not fallback:  # (a fallback template has its own ETA)
        assert d.eta_local and d.eta_local in d.ack_text, (d.eta_local, d.ack_text)
        assert "{" not in d.ack_text


def run(routing: Routing, msg: Msg, at: str) -> tuple[Decision, float]:
    now = utc(at).timestamp()
    return decide(routing, msg.message(now), msg.profile(now), now, msg.depths), now


@pytest.fixture(scope="module")
def routing() -> Routing:
    cfg = load_config(CONFIG, env=ENV)
    return Routing.build(cfg, SENDABLE)


@pytest.fixture(scope="module")
def baltic(tmp_path_factory: pytest.TempPathFactory) -> Routing:
    """The example config with Lithuanian added (served by the Latvia team)."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["routing"]["languages"].append("lt")
    data["teams"]["latvia"]["languages"].append("lt")
    data["teams"]["vip-desk"]["languages"].append("lt")
    directory = tmp_path_factory.mktemp("baltic")
    data["state_dir"] = str(directory / "state")
    path = directory / "router.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Routing.build(load_config(path, env=ENV), SENDABLE)


# fmt: off
# -- 1. every language, from real sentences, to the team that serves it -----------------------

LANGUAGES = [
    case(
        "en-us-sms-to-support-us",
        Msg(
            "Hello, I ordered a coffee machine two weeks ago and it still has not been "
            "delivered. Could you check what happened?",
            sender=US,
        ),
        WED_US,
        queue="support-us", team="us-east", rule="english-follow-the-sun", language="en",
        language_source="detected", min_confidence=0.9, open=True, priority="normal",
        due_at="2026-06-10T16:00Z", timezone="America/New_York", timezone_source="phone",
        country="US", ack=ACK["en"], eta="Wednesday, June 10, 12:00 PM GMT-04:00",
        reasons=("support-us is open now (follow-the-sun among support-us, support-lv, "
                 "support-in, support-in-night)", "1 business hours for sms/normal"),
    ),
    case(
        "es-email-to-support-us",
        Msg(
            "Buenas tardes, me cobraron dos veces la última factura y necesito que me "
            "devuelvan el dinero lo antes posible.",
            channel="email", sender=EMAIL,
        ),
        WED_US,
        queue="support-us", team="us-east", rule=None, language="es", language_source="detected",
        open=True, priority="normal", due_at="2026-06-10T19:00Z", timezone="UTC",
        timezone_source="default", country=None, ack=ACK["es"],
        reasons=("no rule matched; queues serving es: support-us",),
    ),
    case(
        "pt-whatsapp-to-support-br",
        Msg(
            "Olá, comprei um celular na loja de vocês e ele chegou com a tela quebrada. "
            "Como faço para trocar?",
            channel="whatsapp", sender=BR,
        ),
        WED_BR,
        queue="support-br", team="brazil", rule=None, language="pt", language_source="detected",
        open=True, due_at="2026-06-10T15:00Z", timezone="America/Sao_Paulo",
        timezone_source="phone", country="BR", ack=ACK["pt"],
        eta="quarta-feira, 10 de junho 12:00 GMT-03:00",
    ),
    case(
        "hi-sms-to-support-in",
        Msg(
            "नमस्ते, मेरे खाते से दो बार पैसे कट गए हैं, कृपया जल्दी से जाँच करके पैसे वापस "
            "कर दीजिए।"
        ),
        WED_IN,
        queue="support-in", team="india", rule=None, language="hi", language_source="detected",
        open=True, due_at="2026-06-10T07:00Z", timezone="Asia/Kolkata", timezone_source="phone",
        country="IN", ack=ACK["hi"], eta="बुधवार, 10 जून, 12:30 pm GMT+05:30",
        reasons=("no rule matched; queues serving hi: support-in, support-in-night",
                 "support-in is open now"),
    ),
    case(
        "te-sms-to-support-in",
        Msg("నమస్కారం, నా ఖాతాలో లాగిన్ అవ్వడం కుదరడం లేదు, దయచేసి సహాయం చేయండి."),
        WED_IN,
        queue="support-in", team="india", language="te", language_source="detected",
        min_confidence=1.0, open=True, due_at="2026-06-10T07:00Z", ack=ACK["te"],
        eta_has=("GMT+05:30",),
    ),
    case(
        "gu-sms-to-support-in",
        Msg("નમસ્તે, મારું પાર્સલ ખોટા સરનામે પહોંચી ગયું છે, કૃપા કરીને મદદ કરો."),
        WED_IN,
        queue="support-in", team="india", language="gu", language_source="detected",
        min_confidence=1.0, open=True, due_at="2026-06-10T07:00Z", ack=ACK["gu"],
    ),
    case(
        "lv-sms-to-support-lv",
        Msg(
            "Labdien, vakar pasūtīju jaunu telefonu, bet saņēmu nepareizu krāsu. "
            "Vai varu to apmainīt?",
            sender=LV,
        ),
        WED_LV,
        queue="support-lv", team="latvia", rule=None, language="lv", language_source="detected",
        open=True, due_at="2026-06-10T08:00Z", timezone="Europe/Riga", timezone_source="phone",
        country="LV", ack=ACK["lv"], eta_has=("11:00", "GMT+03:00"),
    ),
    case(
        "ru-sms-to-support-lv",
        Msg(
            "Добрый день, мне пришёл счёт с неправильной суммой, помогите, пожалуйста, "
            "разобраться.",
            sender=LV,
        ),
        WED_LV,
        queue="support-lv", team="latvia", rule=None, language="ru", language_source="detected",
        open=True, due_at="2026-06-10T08:00Z", country="LV", ack=ACK["ru"],
        eta_has=("11:00", "GMT+03:00"),
    ),
    case(
        "ja-sms-to-support-jp",
        Msg(
            "お世話になっております。先日注文した商品がまだ届いていないのですが、"
            "配送状況を確認していただけますか。",
            sender=JP,
        ),
        WED_JP,
        queue="support-jp", team="japan", rule=None, language="ja", language_source="detected",
        open=True, due_at="2026-06-10T03:00Z", timezone="Asia/Tokyo", timezone_source="phone",
        country="JP", ack=ACK["ja"], eta="6月10日水曜日 12:00 GMT+09:00",
    ),
    case(
        "en-from-india-morning-to-support-in",
        Msg("Good morning, the invoice you sent me has the wrong company name on it, please fix it."),
        "2026-06-10T09:15+05:30",  # 03:45Z: India open, Latvia opens 05:00Z
        queue="support-in", team="india", rule="english-follow-the-sun", language="en",
        open=True, due_at="2026-06-10T04:45Z", eta="Wednesday, 10 June, 10:15 am GMT+05:30",
    ),
    case(
        "mixed-en-greeting-ja-body-is-ja",
        Msg("Thanks. お荷物の配送先住所を変更したいのですが、まだ間に合いますか。", sender=JP),
        WED_JP,
        queue="support-jp", language="ja", language_source="detected", ack=ACK["ja"],
    ),
]

# -- 2. scripts that decide at once, look-alike Latin languages ---------------------------------

SCRIPTS = [
    case(
        "te-short-text-decided-by-script",
        Msg("నా ఆర్డర్ రాలేదు"),
        WED_IN,
        language="te", language_source="detected", min_confidence=1.0, queue="support-in",
        ack=ACK["te"], reasons=("language te: detected with confidence 1.00",),
    ),
    case(
        "gu-short-text-decided-by-script",
        Msg("ઓર્ડર ક્યાં છે?"),
        WED_IN,
        language="gu", language_source="detected", min_confidence=1.0, queue="support-in",
        ack=ACK["gu"],
    ),
    case(
        "hi-short-text-decided-by-script",
        Msg("मदद चाहिए"),
        WED_IN,
        language="hi", language_source="detected", min_confidence=1.0, queue="support-in",
    ),
    case(
        "ja-short-text-decided-by-script",
        Msg("返金してください", sender=JP),
        WED_JP,
        language="ja", language_source="detected", queue="support-jp",
    ),
    case(
        "short-latin-text-is-not-detected",
        Msg("where is it?", sender=US),
        WED_US,
        language="en", language_source="default", queue="support-us",
        reasons=("language en: default (text too short to detect)",),
    ),
    case(
        "pt-not-es-refund-sentence",
        Msg(
            "Bom dia, gostaria de saber por que o meu reembolso ainda não foi depositado na "
            "minha conta.",
            channel="email", sender=EMAIL,
        ),
        WED_BR,
        language="pt", language_source="detected", queue="support-br", team="brazil",
        due_at="2026-06-10T18:00Z", ack=ACK["pt"],
    ),
    case(
        "es-not-pt-refund-sentence",
        Msg(
            "Buenos días, quisiera saber por qué mi reembolso todavía no ha sido depositado en "
            "mi cuenta.",
            channel="email", sender=EMAIL,
        ),
        WED_BR,
        language="es", language_source="detected", queue="support-us", team="us-east",
        due_at="2026-06-10T18:00Z", ack=ACK["es"],
    ),
    case(
        "pt-short-login-sentence",
        Msg("Não consigo entrar na minha conta desde ontem.", channel="email", sender=EMAIL),
        WED_BR,
        language="pt", language_source="detected", queue="support-br",
    ),
    case(
        "es-short-login-sentence",
        Msg("No puedo entrar en mi cuenta desde ayer.", channel="email", sender=EMAIL),
        WED_BR,
        language="es", language_source="detected", queue="support-us",
    ),
]

# -- 3. short replies, conversations, preference, channel hints ---------------------------------

SHORT_REPLIES = [
    case(
        "ok-keeps-conversation-ja",
        Msg("ok", sender=JP, conversation=conv("ja")),
        WED_JP,
        language="ja", language_source="conversation", queue="support-jp", team="japan",
        rule=None, ack=None, reasons=("language ja: conversation (text too short to detect)",),
    ),
    case(
        "thanks-keeps-conversation-ja",
        Msg("thanks!", sender=JP, conversation=conv("ja")),
        WED_JP,
        language="ja", language_source="conversation", queue="support-jp", ack=None,
    ),
    case(
        "thumbs-up-keeps-conversation-ja",
        Msg("👍", sender=JP, conversation=conv("ja")),
        WED_JP,
        language="ja", language_source="conversation", queue="support-jp", ack=None,
    ),
    case(
        "hai-keeps-conversation-ja",
        Msg("はい", sender=JP, conversation=conv("ja")),
        WED_JP,
        language="ja", language_source="conversation", queue="support-jp", ack=None,
    ),
    case(
        "url-only-keeps-conversation-ja",
        Msg("https://example.com/orders/12345", sender=JP, conversation=conv("ja")),
        WED_JP,
        language="ja", language_source="conversation", queue="support-jp", ack=None,
    ),
    case(
        "emoji-keeps-conversation-lv",
        Msg("😀", sender=LV, conversation=conv("lv")),
        WED_LV,
        language="lv", language_source="conversation", queue="support-lv", ack=None,
    ),
    case(
        "ok-without-conversation-falls-to-default",
        Msg("ok", sender=JP),
        WED_JP,  # 02:00Z: every English team closed, India opens first (03:30Z)
        language="en", language_source="default", rule="english-follow-the-sun",
        queue="after-hours", team="india", open=False, next_open="2026-06-10T03:30Z",
        due_at="2026-06-10T04:30Z", ack=ACK["en"],
    ),
    case(
        "emoji-only-new-falls-to-default",
        Msg("🙏🙏", sender=JP),
        WED_JP,
        language="en", language_source="default", queue="after-hours", ack=ACK["en"],
    ),
    case(
        "empty-text-falls-to-default",
        Msg("", channel="email", sender=EMAIL),
        WED_IN,  # 06:00Z: Latvia (listed before India) open
        language="en", language_source="default", queue="support-lv", team="latvia",
        reasons=("language en: default",),
    ),
    case(  # a missed call or a picture from +91: the number's country's language
        "empty-text-from-a-phone-takes-its-country-language",
        Msg(""),
        WED_IN,
        language="hi", language_source="channel_hint", queue="support-in", team="india",
        reasons=("language hi: channel hint",),
    ),
    case(  # a message on a resolved conversation within the window reopens it
        "resolved-conversation-within-window-reopens",
        Msg("ok", sender=JP, conversation=conv("ja", status="resolved")),
        WED_JP,
        language="ja", language_source="conversation", ack=None,
    ),
    case(
        "resolved-conversation-past-window-starts-new",
        Msg("ok", sender=JP, conversation=conv("ja", status="resolved", ago=8 * 86400)),
        WED_JP,
        language="en", language_source="default", queue="after-hours", ack=ACK["en"],
    ),
    case(
        "stale-conversation-is-not-kept",
        Msg("ok", sender=JP, conversation=conv("ja", ago=8 * 86400)),
        WED_JP,
        language="en", language_source="default", ack=ACK["en"],
    ),
    case(
        "detection-beats-conversation-language",
        Msg(
            "Sorry, could you send the invoice again? I cannot find it in my mailbox.",
            sender=JP, conversation=conv("ja"),
        ),
        WED_JP,
        language="en", language_source="detected", rule="english-follow-the-sun", ack=None,
    ),
    case(
        "hint-beats-conversation-language",
        Msg("ok", channel="email", sender=EMAIL, hints={"language": "es"},
            conversation=conv("ja")),
        WED_US,
        language="es", language_source="channel_hint", queue="support-us", ack=None,
    ),
    case(
        "locale-pt-BR-hint-for-short-text",
        Msg("👍", channel="api", sender=EMAIL, hints={"locale": "pt-BR"}),
        WED_BR,
        language="pt", language_source="channel_hint", queue="support-br", team="brazil",
        ack=ACK["pt-informal"], reasons=("language pt: channel hint",),
    ),
    case(
        "tweet-lang-hint-for-short-text",
        Msg("ok!!", channel="x", sender=X_USER, hints={"language": "ja"}),
        WED_JP,
        language="ja", language_source="channel_hint", queue="support-jp",
        due_at="2026-06-10T04:00Z", timezone="UTC", timezone_source="default", ack=ACK["ja"],
    ),
    case(
        "accept-language-list-hint-first-served",
        Msg("ok", channel="email", sender=EMAIL, hints={"language": "da, ru;q=0.8, en;q=0.5"}),
        WED_LV,
        language="ru", language_source="channel_hint", queue="support-lv", ack=ACK["ru"],
    ),
    case(
        "detection-beats-channel-hint",
        Msg(
            "Hola, necesito cambiar la dirección de entrega de mi pedido, por favor.",
            channel="chat", sender=CHAT, hints={"locale": "pt-BR"},
        ),
        WED_US,
        language="es", language_source="detected", queue="support-us",
        ack=ACK["es"], ack_not="¡Gracias por escribirnos!",  # pt-BR is not the es register
    ),
    case(
        "preference-beats-detection",
        Msg(
            "Hello, I would like to change the delivery address for my last order.",
            sender=LV, customer={"language_preference": "lv"},
        ),
        WED_LV,
        language="lv", language_source="customer_preference", rule=None, queue="support-lv",
        ack=ACK["lv"], reasons=("language lv: customer preference",),
    ),
    case(
        "preference-locale-pt-BR-beats-detected-es",
        Msg(
            "Hola, quiero devolver los zapatos que compré porque me quedan pequeños.",
            channel="email", sender=EMAIL, customer={"language_preference": "pt-BR"},
        ),
        WED_BR,
        language="pt", language_source="customer_preference", queue="support-br",
        ack=ACK["pt"],
    ),
    case(
        "unserved-preference-is-skipped",
        Msg(
            "Hello, I would like to change the delivery address for my last order.",
            sender=US, customer={"language_preference": "de"},
        ),
        WED_US,
        language="en", language_source="detected", queue="support-us",
    ),
    case(
        "preference-beats-conversation",
        Msg("ok", sender=JP, customer={"language_preference": "ja"}, conversation=conv("lv")),
        WED_JP,
        language="ja", language_source="customer_preference", queue="support-jp", ack=None,
    ),
]

# -- 4. time zone and country ----------------------------------------------------------------

EN = "Hi, I was charged twice for my subscription this month, can you refund one payment?"

TIMEZONES = [
    case(
        "phone-plus91-kolkata",
        Msg(EN, sender=IN), WED_US,
        timezone="Asia/Kolkata", timezone_source="phone", country="IN", queue="support-us",
        due_at="2026-06-10T16:00Z", eta="Wednesday, 10 June, 9:30 pm GMT+05:30",
    ),
    case(
        "phone-plus371-riga",
        Msg(EN, sender=LV), WED_US,
        timezone="Europe/Riga", timezone_source="phone", country="LV",
        eta="Wednesday, June 10, 7:00 PM GMT+03:00",
    ),
    case(
        "phone-plus81-tokyo",
        Msg(EN, sender=JP), WED_US,
        timezone="Asia/Tokyo", timezone_source="phone", country="JP",
        eta_has=("GMT+09:00",),
    ),
    case(
        "phone-plus55-11-sao-paulo",
        Msg(EN, channel="whatsapp", sender=BR), WED_US,
        timezone="America/Sao_Paulo", timezone_source="phone", country="BR",
        eta_has=("GMT-03:00",),
    ),
    case(
        "phone-plus1-212-new-york",
        Msg(EN, sender=US), WED_US,
        timezone="America/New_York", timezone_source="phone", country="US",
        eta="Wednesday, June 10, 12:00 PM GMT-04:00",
    ),
    case(
        "phone-of-several-zones-country-only",
        Msg(EN, sender=RU), WED_US,
        timezone="UTC", timezone_source="default", country="RU",
        reasons=("customer time zone UTC (from default), country RU",),
    ),
    case(
        "profile-beats-phone",
        Msg(EN, sender=IN, customer={"timezone": "Europe/Riga"}), WED_US,
        timezone="Europe/Riga", timezone_source="profile", country="IN",
    ),
    case(
        "invalid-profile-zone-skipped",
        Msg(EN, sender=JP, customer={"timezone": "Mars/Olympus_Mons"}), WED_US,
        timezone="Asia/Tokyo", timezone_source="phone",
    ),
    case(
        "browser-beats-phone",
        Msg(EN, channel="api", sender=IN, hints={"timezone": "America/Sao_Paulo"}), WED_US,
        timezone="America/Sao_Paulo", timezone_source="browser", country="IN",
    ),
    case(
        "chat-browser-zone",
        Msg(EN, channel="chat", sender=CHAT, hints={"timezone": "Europe/Riga"}), WED_US,
        timezone="Europe/Riga", timezone_source="browser", country=None,
        due_at="2026-06-10T15:05Z", eta="Wednesday, June 10, 6:05 PM GMT+03:00",
    ),
    case(
        "email-date-offset",
        Msg(EN, channel="email", sender=EMAIL, hints={"date_offset": "+05:30"}), WED_US,
        timezone="UTC+05:30", timezone_source="email_date", country=None,
        due_at="2026-06-10T19:00Z", eta="Thursday, June 11, 12:30 AM GMT+05:30",
    ),
    case(
        "phone-beats-email-date-offset",
        Msg(EN, channel="api", sender=LV, hints={"date_offset": "-05:00"}), WED_US,
        timezone="Europe/Riga", timezone_source="phone", country="LV",
    ),
    case(
        "email-date-offset-minus-zero-means-unknown",
        Msg(EN, channel="email", sender=EMAIL, hints={"date_offset": "-0000"}), WED_US,
        timezone="UTC", timezone_source="default",
    ),
    case(
        "email-nothing-known-default-utc",
        Msg(EN, channel="email", sender=EMAIL), WED_US,
        timezone="UTC", timezone_source="default", country=None,
        eta="Wednesday, June 10, 7:00 PM GMT+00:00",
    ),
    case(
        "country-from-hint",
        Msg(EN, channel="email", sender=EMAIL, hints={"country": "br"}), WED_US,
        country="BR", timezone="UTC",
    ),
    case(
        "country-from-profile",
        Msg(EN, channel="email", sender=EMAIL, customer={"country": "LV"}), WED_US,
        country="LV",
    ),
    case(
        "phone-country-beats-hint",
        Msg(EN, sender=IN, hints={"country": "US"}), WED_US,
        country="IN",
    ),
]

# -- 5. calendars: DST change days, holidays, the night shift, follow-the-sun --------------------

ES = "Hola, el paquete llegó abierto y falta uno de los productos, ¿qué puedo hacer?"
LV_TEXT = "Labdien, es nevaru pieslēgties savam kontam, lūdzu, palīdziet."
TE = "నమస్కారం, నా బిల్లులో తప్పు మొత్తం చూపిస్తోంది, దయచేసి సరిచేయండి."
HI = "नमस्ते, मेरा ऑर्डर अभी तक नहीं आया है, कृपया मदद करें।"
NY_EMAIL = {"channel": "email", "sender": EMAIL, "customer": {"timezone": "America/New_York"}}

CALENDARS = [
    # New York springs forward on Sunday 2026-03-08: Monday opens at 08:00 EDT = 12:00Z.
    case(
        "ny-spring-sat-after-close-due-monday-edt",
        Msg(ES, **NY_EMAIL), "2026-03-07T16:30-05:00",
        team="us-east", language="es", open=False, next_open="2026-03-09T12:00Z",
        due_at="2026-03-09T16:00Z", eta="lunes, 9 de marzo, 12:00\u202fp.m. GMT-04:00",
        ack=ACK["es"],
        reasons=("team us-east (support-us) is closed; opens 2026-03-09T08:00-04:00",),
    ),
    case(
        "ny-spring-sat-1h-left-then-monday",
        Msg(ES, **NY_EMAIL), "2026-03-07T15:00-05:00",
        queue="support-us", open=True, due_at="2026-03-09T15:00Z",
    ),
    case(
        "ny-spring-monday-0759-edt-closed",
        Msg(ES, **NY_EMAIL), "2026-03-09T07:59-04:00",
        team="us-east", open=False, next_open="2026-03-09T12:00Z", due_at="2026-03-09T16:00Z",
    ),
    case(
        "ny-spring-monday-0830-edt-open",
        Msg(ES, **NY_EMAIL), "2026-03-09T08:30-04:00",
        queue="support-us", open=True, next_open="now", due_at="2026-03-09T16:30Z",
    ),
    # New York falls back on Sunday 2026-11-01: Monday opens at 08:00 EST = 13:00Z.
    case(
        "ny-fall-sat-30m-left-then-monday-est",
        Msg(ES, **NY_EMAIL), "2026-10-31T15:30-04:00",
        queue="support-us", open=True, due_at="2026-11-02T16:30Z",
        eta="lunes, 2 de noviembre, 11:30\u202fa.m. GMT-05:00",
    ),
    case(
        "ny-fall-monday-0730-est-closed",
        Msg(ES, **NY_EMAIL), "2026-11-02T07:30-05:00",
        team="us-east", open=False, next_open="2026-11-02T13:00Z", due_at="2026-11-02T17:00Z",
    ),
    case(
        "ny-fall-monday-0801-est-open",
        Msg(ES, **NY_EMAIL), "2026-11-02T08:01-05:00",
        queue="support-us", open=True, due_at="2026-11-02T17:01Z",
    ),
    case(
        "ny-fall-monday-evening-sms-skips-election-day",
        Msg(ES, sender=US), "2026-11-02T19:30-05:00",  # 30m Monday, Tue 11-03 a NY holiday
        queue="support-us", open=True, due_at="2026-11-04T13:30Z",
        eta="miércoles, 4 de noviembre, 8:30\u202fa.m. GMT-05:00",
    ),
    # Riga springs forward on Sunday 2026-03-29: Monday opens at 08:00 EEST = 05:00Z.
    case(
        "riga-spring-friday-evening-next-monday-eest",
        Msg(LV_TEXT, sender=LV), "2026-03-27T17:30+02:00",
        team="latvia", language="lv", open=False, next_open="2026-03-30T05:00Z",
        due_at="2026-03-30T06:00Z", ack=ACK["lv"],
        eta="pirmdiena, 30. marts 09:00 GMT+03:00",
    ),
    case(
        "riga-spring-monday-0730-eest-closed",
        Msg(LV_TEXT, sender=LV), "2026-03-30T07:30+03:00",
        team="latvia", open=False, next_open="2026-03-30T05:00Z", due_at="2026-03-30T06:00Z",
    ),
    case(
        "riga-spring-monday-0830-eest-open",
        Msg(LV_TEXT, sender=LV), "2026-03-30T08:30+03:00",
        queue="support-lv", open=True, due_at="2026-03-30T06:30Z",
    ),
    # Riga falls back on Sunday 2026-10-25: Monday opens at 08:00 EET = 06:00Z.
    case(
        "riga-fall-friday-evening-next-monday-eet",
        Msg(LV_TEXT, sender=LV), "2026-10-23T17:30+03:00",
        team="latvia", open=False, next_open="2026-10-26T06:00Z", due_at="2026-10-26T07:00Z",
        eta="pirmdiena, 26. oktobris 09:00 GMT+02:00",
    ),
    case(
        "riga-fall-monday-0730-eet-closed",
        Msg(LV_TEXT, sender=LV), "2026-10-26T07:30+02:00",
        team="latvia", open=False, next_open="2026-10-26T06:00Z", due_at="2026-10-26T07:00Z",
    ),
    case(
        "riga-fall-email-friday-1h-then-monday-3h",
        Msg(LV_TEXT, channel="email", sender=EMAIL, customer={"timezone": "Europe/Riga"}),
        "2026-10-23T16:00+03:00",
        queue="support-lv", open=True, due_at="2026-10-26T09:00Z",
        eta="pirmdiena, 26. oktobris 11:00 GMT+02:00",
    ),
    case(
        "riga-lunch-break-is-not-business-time",
        Msg(LV_TEXT, sender=LV), "2026-10-26T12:00+02:00",  # 30m, lunch 12:30-13:00, 30m
        queue="support-lv", open=True, due_at="2026-10-26T11:30Z",
    ),
    # Public holidays.
    case(
        "india-republic-day-te-closed-until-tuesday",
        Msg(TE), "2026-01-26T10:30+05:30",
        team="india", language="te", open=False, next_open="2026-01-27T03:30Z",
        due_at="2026-01-27T04:30Z", ack=ACK["te"], eta_has=("10:00", "GMT+05:30"),
        reasons=("team india (support-in) is closed; opens 2026-01-27T09:00+05:30",),
    ),
    case(
        "india-saturday-evening-skips-sunday-and-republic-day",
        Msg(TE), "2026-01-24T18:30+05:30",
        team="india", open=False, next_open="2026-01-27T03:30Z", due_at="2026-01-27T04:30Z",
    ),
    case(
        "india-republic-day-hi-after-hours-until-india-opens",
        Msg(HI), "2026-01-26T10:30+05:30",  # the night shift of the 26th is closed too
        queue="after-hours", team="india", language="hi", open=False,
        next_open="2026-01-27T03:30Z", due_at="2026-01-27T04:30Z", ack=ACK["hi"],
        reasons=("support-in, support-in-night are all closed; after-hours queue after-hours "
                 "until support-in opens",),
    ),
    case(
        "india-night-shift-of-sunday-runs-into-republic-day",
        Msg(HI), "2026-01-26T02:00+05:30",
        queue="support-in-night", team="india-night", open=True, due_at="2026-01-25T21:30Z",
    ),
    case(
        "india-republic-day-en-only-latvia-open",
        Msg(EN, sender=IN), "2026-01-26T10:00+02:00",  # 08:00Z
        queue="support-lv", team="latvia", rule="english-follow-the-sun", open=True,
        due_at="2026-01-26T09:00Z",
    ),
    case(
        "latvia-proclamation-day-lv-closed-until-thursday",
        Msg(LV_TEXT, sender=LV), "2026-11-18T10:00+02:00",
        team="latvia", open=False, next_open="2026-11-19T06:00Z", due_at="2026-11-19T07:00Z",
        eta="ceturtdiena, 19. novembris 09:00 GMT+02:00",
    ),
    case(
        "latvia-proclamation-day-ru-closed-until-thursday",
        Msg("Здравствуйте, не могу войти в личный кабинет, помогите, пожалуйста.", sender=LV),
        "2026-11-18T10:00+02:00",
        team="latvia", language="ru", open=False, next_open="2026-11-19T06:00Z",
        due_at="2026-11-19T07:00Z", ack=ACK["ru"],
        eta="четверг, 19 ноября, 09:00 GMT+02:00",
    ),
    case(
        "latvia-proclamation-day-en-goes-to-india",
        Msg(EN, sender=LV), "2026-11-18T10:00+02:00",  # 08:00Z = 13:30 IST
        queue="support-in", team="india", open=True, due_at="2026-11-18T09:00Z",
    ),
    case(
        "latvia-working-saturday-open",
        Msg(LV_TEXT, sender=LV), "2026-01-17T10:00+02:00",
        queue="support-lv", team="latvia", open=True, due_at="2026-01-17T09:00Z",
    ),
    case(
        "latvia-working-saturday-en-prefers-latvia",
        Msg(EN, sender=IN), "2026-01-17T10:00+02:00",  # India is open too, listed after
        queue="support-lv", open=True,
    ),
    case(
        "latvia-day-off-moved-to-friday-jan-2",
        Msg(LV_TEXT, sender=LV), "2026-01-02T10:00+02:00",
        team="latvia", open=False, next_open="2026-01-05T06:00Z", due_at="2026-01-05T07:00Z",
    ),
    case(
        "us-independence-day-observed-and-saturday",
        Msg(ES, **NY_EMAIL), "2026-07-02T18:00-04:00",  # 2h Thu; Fri 3 and Sat 4 holidays
        queue="support-us", open=True, due_at="2026-07-06T14:00Z",
    ),
    case(
        "japan-year-end-break-until-january-4",
        Msg("年末のセール品の返品について教えてください。", sender=JP), "2026-12-29T10:00+09:00",
        team="japan", language="ja", open=False, next_open="2027-01-04T00:00Z",
        due_at="2027-01-04T01:00Z",
    ),
    # The night shift crosses midnight.
    case(
        "night-shift-en-monday-0200-ist",
        Msg(EN, sender=IN), "2026-06-08T02:00+05:30",  # Sunday 20:30Z
        queue="support-in-night", team="india-night", rule="english-follow-the-sun",
        open=True, due_at="2026-06-07T21:30Z",
        reasons=("support-in-night is open now",),
    ),
    case(
        "night-shift-en-0530-due-in-next-nights-shift",
        Msg(EN, sender=IN), "2026-06-08T05:30+05:30",  # 30m left, then Monday 22:00
        queue="support-in-night", open=True, due_at="2026-06-08T17:00Z",
    ),
    case(
        "night-shift-hi-thursday-night",
        Msg(HI), "2026-06-11T23:00+05:30",
        queue="support-in-night", team="india-night", open=True, due_at="2026-06-11T18:30Z",
    ),
    case(
        "no-friday-night-shift-hi-after-hours",
        Msg(HI), "2026-06-12T23:00+05:30",
        queue="after-hours", team="india", open=False, next_open="2026-06-13T03:30Z",
        due_at="2026-06-13T04:30Z", ack=ACK["hi"], eta="शनिवार, 13 जून, 10:00 am GMT+05:30",
    ),
    # Follow-the-sun for English: the first open queue of support-us, -lv, -in, -in-night.
    case(
        "follow-the-sun-only-latvia-open",
        Msg(EN, sender=US), "2026-11-25T12:45Z",  # 18:15 IST, 07:45 EST, 14:45 Riga
        queue="support-lv", team="latvia", open=True, due_at="2026-11-25T13:45Z",
    ),
    case(
        "follow-the-sun-only-india-open-saturday",
        Msg(EN, sender=US), "2026-06-13T06:00Z",
        queue="support-in", team="india", open=True, due_at="2026-06-13T07:00Z",
    ),
    case(
        "follow-the-sun-latvia-lunch-break-india",
        Msg(EN, sender=US), "2026-06-10T09:45Z",
        queue="support-in", team="india", open=True,
    ),
    case(
        "follow-the-sun-latvia-listed-before-india",
        Msg(EN, sender=US), WED_LV,
        queue="support-lv", open=True,
    ),
    case(
        "follow-the-sun-us-listed-first",
        Msg(EN, sender=IN), "2026-06-10T12:15Z",  # US, Latvia open
        queue="support-us", team="us-east", open=True,
    ),
    # Every team closed: the after-hours queue, hours of the team opening first.
    case(
        "all-closed-after-hours-night-shift-opens-first",
        Msg(EN, sender=US), SAT_NIGHT_US,
        queue="after-hours", team="india-night", rule="english-follow-the-sun", open=False,
        next_open="2026-06-14T16:30Z", due_at="2026-06-14T17:30Z", priority="normal",
        ack=ACK["en"], eta="Sunday, June 14, 1:30 PM GMT-04:00",
        reasons=("after-hours queue after-hours until support-in-night opens",
                 "team india-night (support-in-night) is closed; opens 2026-06-14T22:00+05:30"),
    ),
    case(
        "all-closed-explain-example",
        Msg(
            "Hello, my order has not arrived yet and I need help with the delivery.",
            channel="api", sender="+919812345678",
        ),
        "2026-11-22T10:00Z",
        queue="after-hours", team="india-night", open=False, next_open="2026-11-22T16:30Z",
        due_at="2026-11-22T20:30Z", eta="Monday, 23 November, 2:00 am GMT+05:30",
        ack=ACK["en"],
    ),
    case(
        "single-team-language-closed-goes-to-after-hours",
        Msg("注文した商品のサイズを交換したいです。", sender=JP), "2026-06-13T10:00+09:00",
        queue="after-hours", team="japan", open=False, next_open="2026-06-15T00:00Z",
        due_at="2026-06-15T01:00Z",
    ),
]

# -- 6. rules: VIP, keywords, chat, queue depth, sticky owner ---------------------------------

RULES = [
    case(
        "vip-email-saturday-night",
        Msg(EN, channel="email", sender=EMAIL, customer={"tier": "vip"}), SAT_NIGHT_US,
        rule="vip", queue="vip", team="vip-desk", priority="urgent", target_index=0,
        open=True, next_open="now", due_in=30, overflow_in=10, ack=ACK["en"],
        reasons=("rule 'vip' matched", "moves to target 2 if unclaimed for 10 min",
                 "(0.5 hours for email/urgent)"),
    ),
    case(
        "vip-chat-due-in-5-minutes",
        Msg("荷物が届きません。", channel="chat", sender=CHAT, customer={"tier": "vip"},
            hints={"timezone": "Asia/Tokyo"}),
        WED_JP,
        rule="vip", queue="vip", language="ja", priority="urgent", due_in=5, overflow_in=10,
        timezone="Asia/Tokyo", timezone_source="browser", ack=ACK["ja"],
    ),
    case(
        "vip-beats-outage-keyword",
        Msg("We have an outage on the checkout page.", sender=US, customer={"tier": "vip"}),
        WED_US,
        rule="vip", queue="vip", priority="urgent", overflow_in=10,
    ),
    case(
        "vip-follow-up-to-online-owner",
        Msg("ok", sender=JP, customer={"tier": "vip"},
            conversation=conv("ja", owner="agent-7"), owner_online=True),
        WED_JP,
        rule="vip", queue="vip", agent="agent-7", language="ja", ack=None,
        reasons=("follow-up goes to agent-7, who owns the conversation and is online",),
    ),
    case(
        "other-tier-is-not-vip",
        Msg(EN, sender=US, customer={"tier": "gold"}), WED_US,
        rule="english-follow-the-sun", queue="support-us", priority="normal", overflow_in=None,
    ),
    case(
        "outage-keyword-urgent-us",
        Msg("Your service is down: we have a complete outage of the payment page since this "
            "morning.", sender=US),
        WED_US,
        rule="outage", queue="support-us", priority="urgent", open=True, target_index=0,
        due_at="2026-06-10T15:30Z", overflow_in=None,
        reasons=("(0.5 business hours for sms/urgent)",),
    ),
    case(
        "outage-keyword-in-subject",
        Msg("Please call me back as soon as possible.", channel="email", sender=EMAIL,
            subject="Data breach notification"),
        WED_US,
        rule="outage", queue="support-us", priority="urgent", due_at="2026-06-10T15:30Z",
    ),
    case(
        "outage-keyword-any-case",
        Msg("My account was HACKED last night and someone changed my password.", sender=US),
        WED_US,
        rule="outage", priority="urgent",
    ),
    case(
        "outage-keyword-whole-words-only",
        Msg("Are there any planned outages of the service this weekend?", sender=US), WED_US,
        rule="english-follow-the-sun", priority="normal", due_at="2026-06-10T16:00Z",
    ),
    case(
        "outage-follow-the-sun-latvia",
        Msg("There is an outage of your mobile app, nobody in our office can log in.",
            sender=LV),
        WED_EU_MORNING,
        rule="outage", queue="support-lv", team="latvia", priority="urgent",
        due_at="2026-06-10T08:30Z",
    ),
    case(
        "outage-ja-team-closed-skips-to-vip",
        Msg("決済ページが表示されません。", sender=JP, subject="Outage"),
        "2026-06-13T10:00+09:00",
        rule="outage", queue="vip", team="vip-desk", target_index=1, priority="urgent",
        open=True, due_in=30, language="ja",
        reasons=("skipped target 1 (support-jp): closed now",),
    ),
    case(
        "outage-en-every-team-closed-skips-to-vip",
        Msg("We have a total outage of your API, all our orders are failing.", sender=US),
        SAT_NIGHT_US,
        rule="outage", queue="vip", team="vip-desk", target_index=1, priority="urgent",
        open=True, due_in=30,
    ),
    case(
        "chat-new-non-english-is-high",
        Msg(ES, channel="chat", sender=CHAT, hints={"timezone": "America/Mexico_City"}),
        WED_US,
        rule="chat-is-urgent", queue="support-us", priority="high", due_at="2026-06-10T15:05Z",
        timezone="America/Mexico_City", timezone_source="browser", ack=ACK["es"],
        eta="miércoles, 10 de junio, 9:05\u202fa.m. GMT-06:00",
    ),
    case(
        "chat-new-pt-BR-informal-ack",
        Msg("Oi, quero trocar o endereço de entrega do meu pedido, pode me ajudar?",
            channel="chat", sender=CHAT,
            hints={"locale": "pt-BR", "timezone": "America/Sao_Paulo"}),
        WED_BR,
        rule="chat-is-urgent", queue="support-br", priority="high", due_at="2026-06-10T14:05Z",
        ack=ACK["pt-informal"], eta="quarta-feira, 10 de junho 11:05 GMT-03:00",
    ),
    case(
        "chat-new-english-follow-the-sun-first",
        Msg(EN, channel="chat", sender=CHAT), WED_US,
        rule="english-follow-the-sun", queue="support-us", priority="normal",
        due_at="2026-06-10T15:05Z",
    ),
    case(
        "chat-ongoing-is-not-high",
        Msg(ES, channel="chat", sender=CHAT, conversation=conv("es")), WED_US,
        rule=None, queue="support-us", priority="normal", due_at="2026-06-10T15:05Z", ack=None,
    ),
    case(
        "chat-friday-2-minutes-then-saturday",
        Msg(ES, channel="chat", sender=CHAT), "2026-06-12T19:58-04:00",
        rule="chat-is-urgent", queue="support-us", open=True, due_at="2026-06-13T14:03Z",
    ),
    case(
        "chat-ja-team-closed-due-monday",
        Msg("注文をキャンセルしたいです。", channel="chat", sender=CHAT,
            hints={"timezone": "Asia/Tokyo"}),
        "2026-06-13T10:00+09:00",
        rule="chat-is-urgent", team="japan", priority="high", open=False,
        next_open="2026-06-15T00:00Z", due_at="2026-06-15T00:05Z",
        eta="6月15日月曜日 9:05 GMT+09:00",
    ),
    case(
        "depth-over-limit-skips-to-vip",
        Msg(EN, channel="api", sender=US, depths={"support-us": 500}), WED_US,
        rule="english-follow-the-sun", queue="vip", team="vip-desk", target_index=1,
        priority="high", open=True, due_in=120, overflow_in=None,
        reasons=("skipped target 1 (support-us): 500 waiting, over 200",),
    ),
    case(
        "depth-at-limit-is-not-skipped",
        Msg(EN, channel="api", sender=US, depths={"support-us": 200}), WED_US,
        queue="support-us", target_index=0, priority="normal", due_at="2026-06-10T19:00Z",
    ),
    case(
        "depth-of-a-queue-not-chosen-is-ignored",
        Msg(EN, channel="api", sender=US, depths={"support-us": 500}), WED_EU_MORNING,
        queue="support-lv", target_index=0, priority="normal",
    ),
    case(
        "depth-of-the-chosen-open-queue-skips",
        Msg(EN, channel="api", sender=US, depths={"support-lv": 201}), WED_EU_MORNING,
        queue="vip", target_index=1, priority="high",
    ),
    case(
        "follow-up-to-online-owner",
        Msg("ok", sender=LV, conversation=conv("lv", owner="agent-3"), owner_online=True),
        WED_LV,
        queue="support-lv", agent="agent-3", language="lv", ack=None,
    ),
    case(
        "owner-offline-to-the-queue",
        Msg("ok", sender=LV, conversation=conv("lv", owner="agent-3"), owner_online=False),
        WED_LV,
        queue="support-lv", agent=None,
        reasons=("agent-3 owns the conversation but is offline; to the queue",),
    ),
    case(  # reopened within the window: back to the agent who owns it
        "resolved-conversation-reopens-to-its-owner",
        Msg(LV_TEXT, sender=LV, conversation=conv("lv", owner="agent-3", status="resolved"),
            owner_online=True),
        WED_LV,
        queue="support-lv", agent="agent-3", ack=None,
    ),
    case(
        "old-resolved-conversation-owner-not-sticky",
        Msg(LV_TEXT, sender=LV, conversation=conv("lv", owner="agent-3", status="resolved",
                                                  ago=8 * 86400),
            owner_online=True),
        WED_LV,
        queue="support-lv", agent=None, ack=ACK["lv"],
    ),
]

# -- 7. acknowledgements and first-response due times -----------------------------------------

ACKS_AND_DUE = [
    case(
        "ack-new-conversation-formal-en",
        Msg(EN, channel="email", sender=EMAIL, hints={"locale": "en-US"}), WED_US,
        ack=ACK["en"], ack_not="Thanks for getting in touch",
    ),
    case(
        "ack-en-text-from-pt-BR-browser-is-formal",
        Msg(EN, channel="chat", sender=CHAT, hints={"locale": "pt-BR"}), WED_US,
        language="en", ack=ACK["en"],
    ),
    case(
        "ack-pt-without-locale-is-formal",
        Msg("Olá, o boleto que vocês me enviaram está com o valor errado.", channel="email",
            sender=EMAIL),
        WED_BR,
        language="pt", ack=ACK["pt"], ack_not="Oi!",
    ),
    case(
        "ack-pt-with-pt-BR-locale-is-informal",
        Msg("Olá, o boleto que vocês me enviaram está com o valor errado.", channel="email",
            sender=EMAIL, hints={"locale": "pt-BR"}),
        WED_BR,
        language="pt", ack=ACK["pt-informal"],
    ),
    case(
        "no-ack-for-ongoing-conversation",
        Msg(EN, sender=US, conversation=conv("en")), WED_US,
        ack=None, queue="support-us",
    ),
    case(
        "no-ack-for-auto-reply",
        Msg("I am out of the office until Monday and will reply to your message then.",
            channel="email", sender=EMAIL, meta={"auto_submitted": "auto-replied"}),
        WED_US,
        ack=None, queue="support-us",
        reasons=("no acknowledgement: the message is automatic (auto-reply or bulk)",),
    ),
    case(
        "no-ack-for-bulk-mail",
        Msg("Our monthly newsletter: new products and offers for our partners.",
            channel="email", sender=EMAIL, meta={"bulk": "true"}),
        WED_US,
        ack=None,
        reasons=("no acknowledgement: the message is automatic (auto-reply or bulk)",),
    ),
    case(
        "ack-when-auto-submitted-is-no",
        Msg(EN, channel="email", sender=EMAIL, meta={"auto_submitted": "no"}), WED_US,
        ack=ACK["en"],
    ),
    case(
        "ack-when-auto-submitted-is-No-any-case",
        Msg(EN, channel="email", sender=EMAIL, meta={"auto_submitted": "No"}), WED_US,
        ack=ACK["en"],
    ),
    case(
        "no-ack-on-a-channel-we-cannot-send-on",
        Msg(ES, channel="mms", sender=US), "2026-06-10T16:00-04:00",  # 8h: 4h + 4h Thursday
        ack=None, queue="support-us", due_at="2026-06-11T16:00Z",
        reasons=("(8 business hours for mms/normal)",),
    ),
    case(
        "due-email-friday-evening-us-saturday-hours",
        Msg(ES, **NY_EMAIL), "2026-06-12T18:00-04:00",  # 2h Friday, 2h Saturday
        queue="support-us", open=True, due_at="2026-06-13T16:00Z",
        eta="sábado, 13 de junio, 12:00\u202fp.m. GMT-04:00",
    ),
    case(
        "due-email-saturday-afternoon-us-monday",
        Msg(ES, **NY_EMAIL), "2026-06-13T15:00-04:00",  # 1h Saturday, 3h Monday
        queue="support-us", open=True, due_at="2026-06-15T15:00Z",
    ),
    case(
        "due-email-brazil-saturday-to-monday",
        Msg("Olá, o boleto que vocês me enviaram está com o valor errado.", channel="email",
            sender=EMAIL, customer={"timezone": "America/Sao_Paulo"}),
        "2026-06-13T12:00-03:00",  # 1h Saturday, 3h Monday
        queue="support-br", open=True, due_at="2026-06-15T14:00Z",
        eta="segunda-feira, 15 de junho 11:00 GMT-03:00",
    ),
    case(
        "due-email-japan-friday-to-monday",
        Msg("請求書の宛名を変更していただけますか。", channel="email", sender=EMAIL,
            customer={"timezone": "Asia/Tokyo"}),
        "2026-06-12T17:00+09:00",  # 1h Friday, 3h Monday
        queue="support-jp", open=True, due_at="2026-06-15T03:00Z",
        eta="6月15日月曜日 12:00 GMT+09:00",
    ),
    case(
        "due-voice-one-hour",
        Msg(ES, channel="voice", sender=US), WED_US,
        queue="support-us", due_at="2026-06-10T16:00Z", ack=ACK["es"],
    ),
    case(
        "due-api-four-hours",
        Msg(EN, channel="api", sender=US), WED_US,
        queue="support-us", due_at="2026-06-10T19:00Z",
    ),
]


# -- 8. Latvian and Lithuanian, with lt added to a copy of the config --------------------------

BALTIC = [
    case(
        "lt-sentence-is-lt",
        Msg("Laba diena, mano užsakymas vis dar neatvyko, nors praėjo jau dvi savaitės.",
            sender=LV),
        WED_LV,
        language="lt", language_source="detected", queue="support-lv", team="latvia",
        rule=None,
    ),
    case(
        "lv-sentence-is-lv",
        Msg("Labdien, mans pasūtījums joprojām nav pienācis, lai gan pagājušas jau divas "
            "nedēļas.", sender=LV),
        WED_LV,
        language="lv", language_source="detected", queue="support-lv", ack=ACK["lv"],
    ),
    case(
        "lt-short-sentence-is-lt",
        Msg("Noriu grąžinti sugedusią prekę.", sender=LV),
        WED_LV,
        language="lt", language_source="detected", queue="support-lv",
    ),
    case(
        "lv-short-sentence-is-lv",
        Msg("Es vēlos atgriezt bojātu preci.", sender=LV),
        WED_LV,
        language="lv", language_source="detected", queue="support-lv",
    ),
]
# fmt: on


@pytest.mark.parametrize(("msg", "at", "expect"), LANGUAGES)
def test_language_routes_to_serving_team(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), SCRIPTS)
def test_scripts_and_look_alikes(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), SHORT_REPLIES)
def test_short_replies_preference_and_hints(
    routing: Routing, msg: Msg, at: str, expect: dict
) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), TIMEZONES)
def test_timezone_and_country(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), CALENDARS)
def test_calendars(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), RULES)
def test_rules(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), ACKS_AND_DUE)
def test_acknowledgements_and_due(routing: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(routing, msg, at)
    check(d, now, expect)


@pytest.mark.parametrize(("msg", "at", "expect"), BALTIC)
def test_latvian_and_lithuanian(baltic: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(baltic, msg, at)
    check(d, now, expect)


def test_lithuanian_is_not_configured_in_the_example(routing: Routing) -> None:
    """Without lt configured, a Lithuanian sentence is never reported as lt."""
    msg = Msg(
        "Laba diena, mano užsakymas vis dar neatvyko, nors praėjo jau dvi savaitės.", sender=LV
    )
    d, now = run(routing, msg, WED_LV)
    assert d.language in routing.cfg.routing.languages
    assert d.language != "lt"
    invariants(d, now)


def test_decide_is_pure(routing: Routing) -> None:
    """The same inputs give the same decision (no hidden state, nothing mutated)."""
    msg = Msg(EN, sender=US, customer={"tier": "vip"})
    first, _ = run(routing, msg, SAT_NIGHT_US)
    second, _ = run(routing, msg, SAT_NIGHT_US)
    assert first == second


LT_TEXT = "Laba diena, mano užsakymas vis dar neatvyko, nors praėjo jau dvi savaitės."
LITHUANIAN_WORDS = ("birželio", "trečiadienis")  # June (genitive), Wednesday


def test_ack_without_a_template_is_not_mixed_language(baltic: Routing) -> None:
    d, _ = run(baltic, Msg(LT_TEXT, sender=LV), WED_LV)
    assert d.language == "lt"
    assert d.ack_text is not None
    if d.ack_text.startswith("Thank"):  # the English fallback: the ETA in English too
        assert not any(word in d.ack_text for word in LITHUANIAN_WORDS), d.ack_text


def test_ack_fallback_uses_the_configured_english_template(baltic: Routing) -> None:
    d, _ = run(baltic, Msg(LT_TEXT, sender=LV), WED_LV)
    assert d.ack_text is not None
    if d.ack_text.startswith("Thank"):
        assert ACK["en"] in d.ack_text, d.ack_text


# -- 9. where a message came from within its channel: X brand search, voicemails ---------------
# (issue 14: a post that merely names the brand got an automatic public reply)


@pytest.fixture(scope="module")
def watching(tmp_path_factory: pytest.TempPathFactory) -> Routing:
    """The example config with a social-media desk and two rules on `source`
    in front of the others."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["queues"]["brand-watch"] = {"description": "posts that name the brand"}
    data["rules"][:0] = [
        {
            "name": "brand-search",
            "when": {"source": ["search"]},
            "targets": [{"queue": "brand-watch", "priority": "low"}],
        },
        {
            "name": "voicemails",
            "when": {"source": ["voicemail", "missed_call"]},
            "targets": [{"queue": "support-us", "priority": "high"}],
        },
    ]
    directory = tmp_path_factory.mktemp("watching")
    data["state_dir"] = str(directory / "state")
    path = directory / "router.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return Routing.build(load_config(path, env=ENV), SENDABLE)


# fmt: off
SEARCH_HIT = {"kind": "search", "public": "true", "unsolicited": "true"}
MENTION = {"kind": "mention", "public": "true"}
NO_ACK_SEARCH = (
    "no acknowledgement: the sender did not write to us (a post found by brand search); "
    "a person decides whether to answer"
)

SOURCES = [
    case(
        "x-search-hit-to-its-rule-without-ack",
        Msg("Just got my Acme Shoes, they look great", channel="x", sender=X_USER,
            meta=SEARCH_HIT),
        WED_US,
        rule="brand-search", queue="brand-watch", priority="low", ack=None,
        reasons=("rule 'brand-search' matched", NO_ACK_SEARCH),
    ),
    case(
        "x-mention-is-not-a-search-hit-and-is-acknowledged",
        Msg(EN, channel="x", sender=X_USER, meta=MENTION),
        WED_US,
        rule="english-follow-the-sun", queue="support-us", ack=ACK["en"],
    ),
    case(
        "sms-has-no-source",
        Msg(EN, sender=US), WED_US,
        rule="english-follow-the-sun", queue="support-us",
    ),
    case(
        "voicemail-by-source",
        Msg(EN, channel="voice", sender=US, meta={"kind": "voicemail"}), WED_US,
        rule="voicemails", queue="support-us", priority="high",
    ),
]
# fmt: on


@pytest.mark.parametrize(("msg", "at", "expect"), SOURCES)
def test_rules_on_source(watching: Routing, msg: Msg, at: str, expect: dict) -> None:
    d, now = run(watching, msg, at)
    check(d, now, expect)


def test_a_search_hit_is_never_acknowledged_even_without_a_rule(routing: Routing) -> None:
    msg = Msg("Acme Shoes are the best running shoes", channel="x", sender=X_USER, meta=SEARCH_HIT)
    d, now = run(routing, msg, WED_US)
    check(d, now, {"ack": None, "reasons": (NO_ACK_SEARCH,)})


def test_an_unknown_source_is_a_config_error(tmp_path: Path) -> None:
    from router.config import ConfigError

    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["rules"][0]["when"] = {"source": ["serach"]}
    data["state_dir"] = str(tmp_path / "state")
    path = tmp_path / "router.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path, env=ENV)
    problems = "\n".join(refused.value.problems)
    assert "rules" in problems and "source" in problems and "'search'" in problems, problems
