"""What the phone line says: a greeting in the caller's language with an
honest "we will call you back by ..." in their local time.

The language is the caller's profile preference when known, else the
official language of their number's country (if a team serves it), else the
default; the ETA comes from the same routing decision a voicemail would get.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from babel.core import get_global

from router.acks import render
from router.adapters.base import VoicePrompt
from router.language import language_for_country
from router.model import Hints, Identity, InboundMessage
from router.profiles.context import Context
from router.profiles.identity import normalise_phone
from router.routing import Routing, decide
from router.store import Store
from router.timezones import zone_from_phone

# Short, plain sentences: text-to-speech reads them aloud.
VOICE_PROMPTS: dict[str, str] = {
    "en": "Thank you for calling. Please leave a message after the tone, "
    "and we will call you back by {eta}.",
    "es": "Gracias por llamar. Deje un mensaje después del tono "
    "y le devolveremos la llamada a más tardar el {eta}.",
    "pt": "Obrigado por ligar. Deixe uma mensagem após o sinal "
    "e retornaremos a sua ligação até {eta}.",
    "hi": "कॉल करने के लिए धन्यवाद। कृपया बीप के बाद अपना संदेश छोड़ें, हम आपको {eta} तक वापस कॉल करेंगे।",
    "te": "కాల్ చేసినందుకు ధన్యవాదాలు. దయచేసి బీప్ తర్వాత మీ సందేశాన్ని వదిలివేయండి, మేము మీకు {eta} లోగా తిరిగి కాల్ చేస్తాము.",
    "gu": "કૉલ કરવા બદલ આભાર. કૃપા કરીને બીપ પછી તમારો સંદેશ મૂકો, અમે તમને {eta} સુધીમાં પાછો કૉલ કરીશું.",
    "lv": "Paldies par zvanu. Lūdzu, atstājiet ziņu pēc signāla, un mēs jums atzvanīsim. "
    "Atzvanīšanas termiņš: {eta}.",
    "ru": "Спасибо за звонок. Пожалуйста, оставьте сообщение после сигнала, "
    "и мы вам перезвоним. Срок: {eta}.",
    "ja": "お電話ありがとうございます。発信音の後にメッセージをお残しください。"
    "{eta}までに折り返しお電話いたします。",
}


def speech_locale(language: str) -> str:
    """``hi`` -> ``hi-IN``: the BCP 47 tag text-to-speech wants (CLDR likely subtags)."""
    likely = get_global("likely_subtags").get(language, "")
    parts = likely.split("_")
    return f"{language}-{parts[-1]}" if len(parts) >= 2 else language


class VoicePrompter:
    """Builds the greeting for an incoming call (reads the caller's profile)."""

    def __init__(self, store: Store, get_routing: Callable[[], Routing]) -> None:
        self.store = store
        self.get_routing = get_routing

    async def __call__(self, caller: str, line: str) -> VoicePrompt:
        routing = self.get_routing()
        cfg = routing.cfg
        phone = normalise_phone(caller)
        customer: dict[str, str] = {}
        customer_id = None
        if phone is not None:
            customer_id = await self.store.redis.get(self.store.keys.identity("phone", phone))
            if customer_id:
                customer = await self.store.redis.hgetall(self.store.keys.customer(customer_id))
        place = zone_from_phone(phone) if phone else None
        message = InboundMessage(
            channel="voice",
            sender=Identity("phone", phone or caller),
            text="",
            hints=Hints(
                language=language_for_country(
                    place.country if place else None, cfg.routing.languages
                ),
            ),
        )
        profile = Context(
            customer_id=customer_id or "(caller)", created=not customer_id, customer=customer
        )
        decision = decide(routing, message, profile, time.time())
        language = decision.language
        template = cfg.channels.twilio.voice.prompts.get(language) or VOICE_PROMPTS.get(language)
        if template is None:  # no prompt in their language: the default one, ETA to match
            language = cfg.routing.default_language
            template = cfg.channels.twilio.voice.prompts.get(language) or VOICE_PROMPTS["en"]
        text = render(template, eta=decision.eta_local or "", name=None, team=None, reference=None)
        return VoicePrompt(language=language, locale=speech_locale(language), text=text)
