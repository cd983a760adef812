"""router.language: detection on real sentences, and the language precedence."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router.language import (
    DEFAULT_MIN_CONFIDENCE,
    Detection,
    LanguageDetector,
    choose_language,
    normalise_language,
)

LANGUAGES = ["en", "hi", "te", "gu", "lv", "ru", "ja", "pt", "es"]

# Customer-service sentences, a few per language.
SENTENCES = {
    "en": [
        "Hello, I ordered a pair of shoes last week and they still have not arrived.",
        "Could you please tell me where my package is?",
        "Thanks for the quick reply, that solved the problem.",
        "I want to cancel my order and get my money back.",
        "My password does not work anymore, please help me log in.",
        "There is a mistake on the invoice, I was charged twice.",
    ],
    "hi": [
        "नमस्ते, मैंने पिछले हफ्ते एक जोड़ी जूते ऑर्डर किए थे और वे अभी तक नहीं आए हैं।",
        "क्या आप बता सकते हैं कि मेरा पैकेज कहाँ है?",
        "जल्दी जवाब देने के लिए धन्यवाद, इससे समस्या हल हो गई।",
        "मैं अपना ऑर्डर रद्द करके पैसे वापस चाहता हूँ।",
        "मेरा पासवर्ड अब काम नहीं करता, कृपया लॉग इन करने में मदद करें।",
        "बिल में गलती है, मुझसे दो बार पैसे लिए गए।",
    ],
    "te": [
        "నమస్కారం, నేను గత వారం బూట్లు ఆర్డర్ చేశాను, అవి ఇంకా రాలేదు.",
        "నా ప్యాకేజీ ఎక్కడ ఉందో చెప్పగలరా?",
        "త్వరగా స్పందించినందుకు ధన్యవాదాలు, సమస్య పరిష్కారమైంది.",
        "నేను నా ఆర్డర్‌ను రద్దు చేసి డబ్బు వాపసు పొందాలనుకుంటున్నాను.",
    ],
    "gu": [
        "નમસ્તે, મેં ગયા અઠવાડિયે જૂતાની જોડી ઓર્ડર કરી હતી અને તે હજુ સુધી આવી નથી.",
        "શું તમે કહી શકો કે મારું પેકેજ ક્યાં છે?",
        "ઝડપી જવાબ બદલ આભાર, સમસ્યા ઉકેલાઈ ગઈ.",
        "હું મારો ઓર્ડર રદ કરીને પૈસા પાછા મેળવવા માંગુ છું.",
    ],
    "lv": [
        "Labdien, pagājušajā nedēļā pasūtīju apavus, bet tie joprojām nav pienākuši.",
        "Vai varat pateikt, kur ir mans sūtījums?",
        "Paldies par ātro atbildi, tas palīdzēja.",
        "Es vēlos atcelt savu pasūtījumu un saņemt naudu atpakaļ.",
        "Mana parole vairs nedarbojas, lūdzu, palīdziet man ielogoties.",
        "Rēķinā ir kļūda, man divreiz noņēma naudu.",
    ],
    "ru": [
        "Здравствуйте, я заказал пару обуви на прошлой неделе, и она до сих пор не пришла.",
        "Подскажите, пожалуйста, где моя посылка?",
        "Спасибо за быстрый ответ, это решило проблему.",
        "Я хочу отменить заказ и вернуть деньги.",
        "Мой пароль больше не работает, помогите мне войти в аккаунт.",
        "В счёте ошибка, с меня списали деньги дважды.",
    ],
    "ja": [
        "こんにちは、先週靴を注文しましたが、まだ届いていません。",
        "荷物がどこにあるか教えていただけますか？",
        "早速のご返信ありがとうございます。問題が解決しました。",
        "注文をキャンセルして返金してほしいです。",
        "パスワードが使えなくなりました。ログインを手伝ってください。",
        "請求書に誤りがあり、二重に請求されました。",
    ],
    "pt": [
        "Olá, encomendei um par de sapatos na semana passada e ainda não chegaram.",
        "Vocês podem me dizer onde está o meu pacote?",
        "Obrigado pela resposta rápida, isso resolveu o problema.",
        "Quero cancelar o meu pedido e receber o dinheiro de volta.",
        "Minha senha não funciona mais, por favor me ajudem a entrar na conta.",
        "Há um erro na fatura, fui cobrado duas vezes.",
    ],
    "es": [
        "Hola, pedí un par de zapatos la semana pasada y todavía no han llegado.",
        "¿Me pueden decir dónde está mi paquete?",
        "Gracias por la respuesta rápida, eso resolvió el problema.",
        "Quiero cancelar mi pedido y recibir el reembolso.",
        "Mi contraseña ya no funciona, por favor ayúdenme a entrar en la cuenta.",
        "Hay un error en la factura, me cobraron dos veces.",
    ],
}
LITHUANIAN = [
    "Laba diena, praėjusią savaitę užsisakiau batus, bet jie vis dar neatkeliavo.",
    "Ar galite pasakyti, kur yra mano siuntinys?",
    "Ačiū už greitą atsakymą, tai padėjo.",
    "Noriu atšaukti savo užsakymą ir susigrąžinti pinigus.",
    "Mano slaptažodis nebeveikia, prašau padėti prisijungti.",
    "Sąskaitoje yra klaida, pinigus nuskaitė du kartus.",
]
# Short messages of 12+ letters: the hard cases for look-alike languages.
SHORT = {
    "en": ["where is my order", "thank you very much", "the app keeps crashing"],
    "es": ["Gracias por la ayuda", "muchas gracias amigo", "necesito cambiar mi dirección"],
    "pt": ["Obrigado pela ajuda", "muito obrigado amigo", "preciso mudar meu endereço"],
    "lv": ["Paldies par palīdzību", "Es gribu atcelt pasūtījumu", "kur ir mans pasūtījums"],
    "lt": ["Ačiū už pagalbą", "Noriu atšaukti užsakymą", "kur yra mano užsakymas"],
}


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(LANGUAGES)


@pytest.fixture(scope="module")
def baltic() -> LanguageDetector:
    """Latvian and Lithuanian both configured (the models are shared: cheap)."""
    return LanguageDetector([*LANGUAGES, "lt"])


# -- construction -------------------------------------------------------------


def test_unknown_code_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'xx'"):
        LanguageDetector(["en", "xx"])
    with pytest.raises(ValueError, match="'english'"):
        LanguageDetector(["english"])
    with pytest.raises(ValueError):
        LanguageDetector([])


def test_codes_are_normalised(detector: LanguageDetector) -> None:
    assert LanguageDetector(["pt-BR", "EN", "es"]).languages == ("pt", "en", "es")
    assert detector.languages == tuple(LANGUAGES)


def test_min_confidence_must_be_a_probability() -> None:
    with pytest.raises(ValueError):
        LanguageDetector(["en", "es"], min_confidence=1.5)


# -- single-language messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("language", "text"),
    [(language, text) for language, texts in SENTENCES.items() for text in texts],
)
def test_detects_real_sentences(detector: LanguageDetector, language: str, text: str) -> None:
    detection = detector.detect(text)
    assert detection is not None
    assert detection.language == language
    assert detection.confident
    assert 0.5 <= detection.confidence <= 1.0


@pytest.mark.parametrize("language", LANGUAGES)
def test_detects_whole_messages(detector: LanguageDetector, language: str) -> None:
    """Several sentences of one language: one language, high confidence."""
    detection = detector.detect(" ".join(SENTENCES[language]))
    assert detection == Detection(language, pytest.approx(detection.confidence), True)
    assert detection.confidence > 0.9


@pytest.mark.parametrize(
    ("language", "text"),
    [(lang, text) for lang in ("lv",) for text in SENTENCES[lang]]
    + [("lt", text) for text in LITHUANIAN]
    + [(lang, text) for lang in ("lv", "lt") for text in SHORT[lang]],
)
def test_latvian_and_lithuanian_apart(baltic: LanguageDetector, language: str, text: str) -> None:
    detection = baltic.detect(text)
    assert detection is not None and detection.language == language and detection.confident


@pytest.mark.parametrize(
    ("language", "text"),
    [(lang, text) for lang in ("pt", "es") for text in SENTENCES[lang] + SHORT[lang]]
    + [("en", text) for text in SHORT["en"]],
)
def test_portuguese_and_spanish_apart(detector: LanguageDetector, language: str, text: str) -> None:
    detection = detector.detect(text)
    assert detection is not None and detection.language == language and detection.confident


def test_ambiguous_short_text_is_not_confident(detector: LanguageDetector) -> None:
    # "the house is big": the same words in Spanish and Portuguese but one
    detection = detector.detect("la casa es grande")
    assert detection is not None
    assert not detection.confident
    assert detection.confidence < DEFAULT_MIN_CONFIDENCE


def test_min_confidence_is_configurable(detector: LanguageDetector) -> None:
    text = "Quero cancelar o meu pedido"  # pt, but Spanish-looking
    strict = LanguageDetector(LANGUAGES, min_confidence=0.95)
    lenient = LanguageDetector(LANGUAGES, min_confidence=0.0)
    detected = detector.detect(text)
    assert detected is not None and detected.language == "pt"
    assert strict.detect(text) == Detection("pt", pytest.approx(detected.confidence), False)
    assert lenient.detect("la casa es grande").confident  # type: ignore[union-attr]


def test_detection_confident_defaults_from_confidence() -> None:
    assert Detection("en", 0.9).confident is True
    assert Detection("en", 0.3).confident is False
    assert Detection("en", 0.3, True).confident is True


# -- too little to judge ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   \n ",
        "ok",
        "OK!",
        "thanks!",
        "Thanks a lot!!",
        "yes please",
        "no",
        "👍",
        "😀🙏🏽❤️",
        "12345",
        "+44 20 7946 0958",
        "https://example.com/orders/12345?page=2",
        "ok https://www.example.com/this-is-a-long-english-path-about-orders",
        "@support #help #order12345",
        "see john.smith@example.com",
        "はい",
        "ठीक है",
        "Да",
        "Sí",
        "Obrigado",
        # a script no configured language is written in
        "مرحبا، لم يصل طلبي بعد، هل يمكنكم المساعدة؟",
    ],
)
def test_too_short_or_no_letters_is_none(detector: LanguageDetector, text: str | None) -> None:
    assert detector.detect(text) is None


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("धन्यवाद", "hi"),
        ("ありがとう", "ja"),
        ("ధన్యవాదాలు", "te"),
        ("ખૂબ આભાર", "gu"),
        ("Спасибо", "ru"),
    ],
)
def test_short_text_in_a_deciding_script(
    detector: LanguageDetector, text: str, language: str
) -> None:
    """A script only one configured language uses decides with fewer letters."""
    assert detector.detect(text) == Detection(language, 1.0, True)


def test_cyrillic_needs_more_letters_when_shared() -> None:
    shared = LanguageDetector(["en", "ru", "uk"])
    assert shared.detect("Спасибо") is None
    detection = shared.detect("Здравствуйте, я заказал пару обуви, и она до сих пор не пришла.")
    assert detection is not None and detection.language == "ru"


def test_noise_is_stripped_before_judging(detector: LanguageDetector) -> None:
    text = (
        "@acme_support #pedido Hola, mi pedido no ha llegado todavía: "
        "https://tienda.example.com/track?order=48213&lang=en-US 😡 juan@example.com"
    )
    detection = detector.detect(text)
    assert detection is not None and detection.language == "es" and detection.confident


def test_fancy_letters_are_normalised(detector: LanguageDetector) -> None:
    detection = detector.detect("𝐇𝐞𝐥𝐥𝐨, 𝐰𝐡𝐞𝐫𝐞 𝐢𝐬 𝐦𝐲 𝐨𝐫𝐝𝐞𝐫 𝐩𝐥𝐞𝐚𝐬𝐞?")
    assert detection is not None and detection.language == "en"


# -- mixed-language text: the language with most letters ---------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        # English greeting, Hindi body
        ("Hello team, " + SENTENCES["hi"][0] + " " + SENTENCES["hi"][4], "hi"),
        # a Hindi phrase, then English
        ("मेरा ऑर्डर नहीं आया। " + SENTENCES["en"][1] + " " + SENTENCES["en"][0], "en"),
        # English with one short Latvian sentence: lingua alone says Latvian
        (SENTENCES["en"][0] + " " + SENTENCES["lv"][1], "en"),
        (SENTENCES["en"][0] + " " + SENTENCES["lv"][2], "en"),
        # Latvian body, English apology
        (SENTENCES["lv"][0] + " " + SENTENCES["lv"][3] + " Sorry for the trouble, thanks.", "lv"),
        # Spanish body, a Portuguese sentence
        (SENTENCES["es"][0] + " " + SENTENCES["pt"][5], "es"),
        (SENTENCES["pt"][3] + " " + SENTENCES["es"][1], "pt"),
        # Japanese with an English order reference, no space between
        ("先週靴を注文しましたが、まだ届いていません。Order #1234 please", "ja"),
        ("Order 1234: " + SENTENCES["ja"][0] + SENTENCES["ja"][1], "ja"),
        # Russian greeting, English body
        ("Здравствуйте! " + SENTENCES["en"][0] + " " + SENTENCES["en"][1], "en"),
        ("Hi! " + SENTENCES["ru"][0], "ru"),
        # Telugu body with an English sign-off
        (SENTENCES["te"][0] + " " + SENTENCES["te"][1] + " Thanks, Ravi", "te"),
    ],
)
def test_mixed_text_picks_dominant(detector: LanguageDetector, text: str, language: str) -> None:
    detection = detector.detect(text)
    assert detection is not None and detection.language == language


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def test_mixed_pairs_pick_the_language_with_most_letters(detector: LanguageDetector) -> None:
    """Every pair of sentences in two languages whose letter counts differ by 25 %+."""
    wrong = []
    for first, second in itertools.permutations(LANGUAGES, 2):
        for a in SENTENCES[first][:3]:
            for b in SENTENCES[second][:3]:
                la, lb = _letters(a), _letters(b)
                if abs(la - lb) < 0.25 * max(la, lb):
                    continue
                expected = first if la > lb else second
                detection = detector.detect(a + " " + b)
                if detection is None or detection.language != expected:
                    wrong.append((expected, detection, a + " " + b))
    assert not wrong


def test_mixed_confidence_is_the_dominant_share(detector: LanguageDetector) -> None:
    text = SENTENCES["en"][0] + " " + SENTENCES["lv"][1]
    detection = detector.detect(text)
    assert detection is not None and detection.language == "en"
    en, lv = _letters(SENTENCES["en"][0]), _letters(SENTENCES["lv"][1])
    assert detection.confidence == pytest.approx(en / (en + lv), abs=0.05)


# -- long text, threads, robustness -------------------------------------------------


def test_long_text_reads_only_the_start(detector: LanguageDetector) -> None:
    text = " ".join(SENTENCES["es"]) * 20 + " " + " ".join(SENTENCES["pt"]) * 40
    started = time.perf_counter()
    detection = detector.detect(text)
    assert time.perf_counter() - started < 0.05
    assert detection is not None and detection.language == "es"


def test_thread_safe(detector: LanguageDetector) -> None:
    texts = [text for texts in SENTENCES.values() for text in texts] * 5
    expected = [detector.detect(text) for text in texts]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(detector.detect, texts)) == expected


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_any_text_is_judged_or_none(detector: LanguageDetector, text: str) -> None:
    detection = detector.detect(text)
    if detection is not None:
        assert detection.language in detector.languages
        assert 0.0 <= detection.confidence <= 1.0
        assert detection.confident == (detection.confidence >= detector.min_confidence)


def test_detect_speed(detector: LanguageDetector) -> None:
    """Per-call time on ~200-character messages (printed with -s)."""
    timings = {}
    for language in LANGUAGES:
        text = " ".join(SENTENCES[language])
        while len(text) > 200:
            text = text[: text.rfind(" ")]
        detector.detect(text)
        runs = 200
        started = time.perf_counter()
        for _ in range(runs):
            detector.detect(text)
        timings[language] = (time.perf_counter() - started) / runs * 1e6
    print("detect, us per ~200-char message:", {k: round(v) for k, v in timings.items()})
    # Dev machine: 15-30 us by script, 120-170 us via lingua. Generous for a busy CI.
    assert max(timings.values()) < 3000


# -- precedence ----------------------------------------------------------------------

SERVED = ("en", "hi", "pt", "es", "ja")
SURE = Detection("es", 0.93, True)
UNSURE = Detection("es", 0.41, False)


@pytest.mark.parametrize(
    ("preference", "detection", "hint", "conversation", "expected"),
    [
        # each source wins when everything above it is missing
        ("pt-BR", SURE, "ja", "hi", ("pt", "customer_preference", None)),
        (None, SURE, "ja", "hi", ("es", "detected", 0.93)),
        (None, None, "ja", "hi", ("ja", "channel_hint", None)),
        (None, None, None, "hi", ("hi", "conversation", None)),
        (None, None, None, None, ("en", "default", None)),
        # an unconfident detection is skipped
        (None, UNSURE, "pt-BR", "hi", ("pt", "channel_hint", None)),
        (None, UNSURE, None, "hi", ("hi", "conversation", None)),
        # values not served are skipped
        ("fr", SURE, None, None, ("es", "detected", 0.93)),
        (None, Detection("lv", 0.99, True), "en_US", None, ("en", "channel_hint", None)),
        (None, None, "de-DE", "ru", ("en", "default", None)),
        # locale forms of hints and preferences
        ("PT_br", None, None, None, ("pt", "customer_preference", None)),
        (None, None, "ja-JP", None, ("ja", "channel_hint", None)),
        (None, None, "en_US.UTF-8", None, ("en", "channel_hint", None)),
        (None, None, "und", "es-MX", ("es", "conversation", None)),
        # an Accept-Language / Content-Language list, in quality order
        (None, None, "de-DE, fr;q=0.9, pt-BR;q=0.8, en;q=0.7", None, ("pt", "channel_hint", None)),
        (None, None, "en;q=0.5, hi;q=0.9", None, ("hi", "channel_hint", None)),
        # several hints (Content-Language, browser locale), the first served wins
        (None, None, [None, "fr-CA", "es-419"], None, ("es", "channel_hint", None)),
        # empty strings are missing values
        ("", None, "", "", ("en", "default", None)),
    ],
)
def test_choose_language_precedence(preference, detection, hint, conversation, expected) -> None:
    got = choose_language(
        preference=preference,
        detection=detection,
        hint=hint,
        conversation_language=conversation,
        default="en",
        served=SERVED,
    )
    assert got == expected


def test_short_reply_keeps_the_conversation_language(detector: LanguageDetector) -> None:
    """The design's rule, end to end: "thanks!" in a Hindi conversation stays Hindi."""
    for text in ("thanks!", "ok", "👍"):
        chosen = choose_language(
            preference=None,
            detection=detector.detect(text),
            hint=None,
            conversation_language="hi",
            default="en",
            served=LANGUAGES,
        )
        assert chosen == ("hi", "conversation", None)


def test_detected_beats_hint_and_conversation(detector: LanguageDetector) -> None:
    chosen = choose_language(
        preference=None,
        detection=detector.detect(SENTENCES["pt"][0]),
        hint="en-US",
        conversation_language="es",
        default="en",
        served=LANGUAGES,
    )
    assert chosen[:2] == ("pt", "detected")
    assert chosen[2] is not None and chosen[2] > 0.9


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("pt-BR", "pt"),
        ("en_US", "en"),
        ("ja", "ja"),
        ("EN", "en"),
        ("zh-Hant-TW", "zh"),
        ("en_GB.UTF-8@euro", "en"),
        ("iw", "he"),
        ("in", "id"),
        ("no", "nb"),
        ("por", "pt"),
        ("spa", "es"),
        ("und", None),
        ("*", None),
        ("C", None),
        ("", None),
        (None, None),
        ("1234", None),
        ("english", None),
    ],
)
def test_normalise_language(tag: str | None, code: str | None) -> None:
    assert normalise_language(tag) == code
