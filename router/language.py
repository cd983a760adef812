"""Language of a customer message, and which language a conversation is served in.

Two pure pieces:

* :class:`LanguageDetector` wraps lingua, built from the configured languages
  only, with every model loaded in the constructor (lingua's
  ``with_preloaded_language_models()``), so the first message is not slow.
  ``detect(text)`` returns a :class:`Detection` or ``None`` when there is too
  little text to judge ("ok", "thanks!", emoji, numbers, a bare URL).
* :func:`choose_language` applies the routing precedence: customer's stated
  preference > confident detection > channel hint > conversation's last
  language > default.

How ``detect`` works
--------------------
URLs, e-mail addresses, @mentions and #hashtags are removed; emoji, digits and
punctuation are ignored. The rest is cut into chunks, at every change of
script (Latin/Devanagari/Cyrillic/...) and, inside a script that several
configured languages share, at sentence ends (a chunk is at least
``MIN_LETTERS`` letters, so "Hi!" or "e.g." stay with their neighbours).
A chunk whose script only one configured language uses (Telugu, Gujarati,
Japanese kana, Hindi when Marathi is not configured...) is decided by the
script without asking lingua; the others get lingua's confidence values.
Each chunk votes ``letters x confidence`` for each language: the winner is
the language with most letters (the dominant one in mixed text), and
``Detection.confidence`` is its share of the judged letters, 0..1.

Measured on the test corpus (sentences in 9 languages, every pair of
sentences in two languages whose letter counts differ by 25 %+): lingua's
confidence values on the whole text pick the language with most letters in
69 % of the pairs, ``detect_multiple_languages_of`` + letters per segment in
97 % at 2-4x the cost, cutting at script changes only in 97 %, and cutting at
script changes and sentence ends 100 %. The whole-text call mostly tips to
the minority language when that one has a script or letters of its own:
English with one Hindi, Japanese or Latvian sentence comes out Hindi,
Japanese, Latvian. A text of several chunks is judged with
lingua's low-accuracy mode (trigrams only): per sentence it is about twice
as fast as the high-accuracy models and was as right on the corpus (also on
pairs of short es/pt/en/lv/lt sentences); a single chunk, short text
included, gets the high-accuracy models.

Per-call time of ``detect`` on a ~200-character message, 9 languages, on
the (shared, 2-core) dev machine: 15-40 us for Telugu, Gujarati, Hindi,
Russian (decided by script, lingua not called), 30-50 us Japanese,
120-190 us for English, Spanish, Portuguese, Latvian (lingua alone on the
whole text: 70-110 us). ``tests/routing/test_language.py::test_detect_speed`` prints
it (``pytest -s``). Only the first ``max_chars`` (600) characters are read.

Thread safety: a built detector is immutable; lingua's detector may be used
from several threads. ``detect`` is synchronous and CPU-bound; call it
directly from the event loop (it is well under a millisecond).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from lingua import (
    ConfidenceValue,
    IsoCode639_1,
    IsoCode639_3,
    Language,
    LanguageDetectorBuilder,
)
from lingua import (
    LanguageDetector as _LinguaDetector,
)

__all__ = [
    "DEFAULT_MIN_CONFIDENCE",
    "LANGUAGE_SOURCES",
    "MIN_LETTERS",
    "MIN_LETTERS_BY_SCRIPT",
    "Detection",
    "LanguageDetector",
    "choose_language",
    "normalise_language",
]

#: Below this, a detection is reported but ``confident`` is False. Tuned on
#: the test corpus: correct detections of real sentences of 12+ letters score
#: >= 0.52 (Spanish vs Portuguese look-alikes and "my order is late" are the
#: lowest); the wrong one seen ("la casa es grande" -> pt) scores 0.44-0.47.
DEFAULT_MIN_CONFIDENCE = 0.5
#: Fewest letters in a chunk of a script that several configured languages
#: share (Latin, Cyrillic with ru+uk, ...). "thanks a lot" has 10 letters.
MIN_LETTERS = 12
#: Fewest letters in a chunk of a script that decides the language at once
#: (only one configured language writes it). Vowel signs are not letters, so
#: Hindi "धन्यवाद" has 5 and "ठीक है" 3; Japanese "ありがとう" has 5, "はい" 2.
MIN_LETTERS_BY_SCRIPT = 4
#: Text beyond this many characters (after URLs etc. are removed) is ignored.
DEFAULT_MAX_CHARS = 600

LANGUAGE_SOURCES = ("customer_preference", "detected", "channel_hint", "conversation", "default")


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected language of one message.

    ``language`` is an ISO 639-1 code; ``confidence`` (0..1) is the share of
    the message's judged letters in that language as lingua sees it.
    ``confident`` says whether ``confidence`` reached the detector's
    ``min_confidence``; left out, it is computed with
    :data:`DEFAULT_MIN_CONFIDENCE`.
    """

    language: str
    confidence: float
    confident: bool | None = None

    def __post_init__(self) -> None:
        if self.confident is None:
            object.__setattr__(self, "confident", self.confidence >= DEFAULT_MIN_CONFIDENCE)


# -- text clean-up -----------------------------------------------------------

_NOISE = re.compile(
    r"""(?x)
      (?:[Hh][Tt][Tt][Pp][Ss]?|[Ff][Tt][Pp])://[!-~]+   # URLs: ASCII up to a space
    | (?<![!-~])[Ww][Ww][Ww]\.[!-~]+                   # www.example.com/...
    | (?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)+       # e-mail addresses
    | (?<![\w@])@\w+                                   # @mentions
    | (?<![\w&])\#\w+                                  # #hashtags (not &#39;)
    """
)


def _strip_noise(text: str) -> str:
    """``text`` without URLs, e-mail addresses, @mentions and #hashtags."""
    if "@" in text or "#" in text or "://" in text or "ww." in text or "WW." in text:
        return _NOISE.sub(" ", text)
    return text


# Where a sentence ends (also the ideographic full stop, fullwidth ! ? ; and the
# Devanagari danda); chunks of shared scripts are cut only here.
_BREAK_CHARS = ".!?;\n\u2026\u3002\uff01\uff1f\uff1b\u0964\u0965"
_BREAKS = frozenset(_BREAK_CHARS)

# Character classes in the cache: a script name (a letter), or one of these.
_NEUTRAL = 0  # space, punctuation, digit, emoji, symbol: belongs to no script
_BREAK = 1  # neutral, and ends a sentence
_MARK = 2  # combining mark (Indic vowel signs): extends the letter before it

# Unicode name prefixes -> script, for the scripts of lingua's 75 languages
# and a few more (a letter of a script no configured language uses still cuts
# a chunk, and that chunk is not judged).
_NAME_SCRIPT = {
    "HIRAGANA": "KANA",
    "KATAKANA": "KANA",
    "KATAKANA-HIRAGANA": "KANA",
    "HALFWIDTH": "KANA",  # NFKC leaves few of these; halfwidth katakana
    "CJK": "HAN",
    "IDEOGRAPHIC": "HAN",
}
_KNOWN_SCRIPTS = frozenset(
    {
        "LATIN", "CYRILLIC", "ARABIC", "DEVANAGARI", "HAN", "KANA", "HANGUL", "TELUGU",
        "GUJARATI", "BENGALI", "GURMUKHI", "TAMIL", "GREEK", "HEBREW", "ARMENIAN",
        "GEORGIAN", "THAI", "KANNADA", "MALAYALAM", "ORIYA", "SINHALA", "ETHIOPIC",
        "KHMER", "LAO", "MYANMAR", "TIBETAN", "SYRIAC", "THAANA", "MONGOLIAN",
    }
)  # fmt: skip
# Scripts that several scripts' letters share a chunk with (Japanese mixes
# kanji and kana in one sentence).
_SCRIPT_GROUP = {"KANA": "CJK", "HAN": "CJK"}

# Scripts of the lingua languages that are not in lingua's own script sets.
_OTHER_SCRIPTS: dict[str, frozenset[str]] = {
    "ja": frozenset({"HAN", "KANA"}),
    "zh": frozenset({"HAN"}),
    "ko": frozenset({"HANGUL"}),
    "te": frozenset({"TELUGU"}),
    "gu": frozenset({"GUJARATI"}),
    "bn": frozenset({"BENGALI"}),
    "pa": frozenset({"GURMUKHI"}),
    "ta": frozenset({"TAMIL"}),
    "el": frozenset({"GREEK"}),
    "he": frozenset({"HEBREW"}),
    "hy": frozenset({"ARMENIAN"}),
    "ka": frozenset({"GEORGIAN"}),
    "th": frozenset({"THAI"}),
}

_char_class: dict[str, str | int] = {}
_CHAR_CACHE_MAX = 1 << 16


def _classify(ch: str) -> str | int:
    if ch.isalpha():
        first = unicodedata.name(ch, "").split(" ", 1)[0]
        script = _NAME_SCRIPT.get(first, first)
        cls: str | int = script if script in _KNOWN_SCRIPTS else _NEUTRAL
    elif ch in _BREAKS:
        cls = _BREAK
    elif unicodedata.category(ch).startswith("M"):
        cls = _MARK
    else:
        cls = _NEUTRAL
    if len(_char_class) < _CHAR_CACHE_MAX:
        _char_class[ch] = cls
    return cls


def _lingua_scripts(language: Language) -> frozenset[str]:
    code = language.iso_code_639_1.name.lower()
    scripts = set(_OTHER_SCRIPTS.get(code, ()))
    for script, members in (
        ("LATIN", Language.all_with_latin_script()),
        ("CYRILLIC", Language.all_with_cyrillic_script()),
        ("ARABIC", Language.all_with_arabic_script()),
        ("DEVANAGARI", Language.all_with_devanagari_script()),
    ):
        if language in members:
            scripts.add(script)
    return frozenset(scripts)


def _lingua_language(code: str) -> Language | None:
    """A lingua Language from an ISO 639-1 (or 639-3) code, or None."""
    try:
        if len(code) == 2:
            return Language.from_iso_code_639_1(IsoCode639_1.from_str(code))
        if len(code) == 3:
            return Language.from_iso_code_639_3(IsoCode639_3.from_str(code))
    except ValueError:
        return None
    return None


class _Chunk:
    """A stretch of text in one script group: ``text[start:end]``."""

    __slots__ = ("end", "group", "letters", "scripts", "start")

    def __init__(self, start: int, end: int = 0, letters: int = 0) -> None:
        self.start = start
        self.end = end
        self.letters = letters
        self.group: str | None = None
        self.scripts: set[str] = set()


# A sentence and the run of sentence-ending characters after it.
_SENTENCE = re.compile(f"[^{re.escape(_BREAK_CHARS)}]*[{re.escape(_BREAK_CHARS)}]*")


class LanguageDetector:
    """Detects the language of customer messages among the configured ones.

    ``languages``: ISO 639-1 codes (case and a region such as ``pt-BR`` are
    tolerated); an unknown code raises ``ValueError`` naming it. Building
    takes about 1-1.5 s and ~190 MB for 9-10 languages, once at start-up.

    ``min_confidence``: a detection below it has ``confident=False``.
    ``min_letters`` / ``min_letters_by_script``: fewest letters worth judging
    in a shared script (Latin...) / in a script that decides the language.
    ``max_chars``: only the start of a long text is looked at.
    """

    def __init__(
        self,
        languages: Iterable[str],
        *,
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        min_letters: int = MIN_LETTERS,
        min_letters_by_script: int = MIN_LETTERS_BY_SCRIPT,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within 0..1, not {min_confidence!r}")
        if isinstance(languages, str):
            languages = [languages]
        by_code: dict[str, Language] = {}
        for raw in languages:
            code = normalise_language(raw) if isinstance(raw, str) else None
            language = _lingua_language(code) if code else None
            if language is None:
                raise ValueError(f"unknown language code {raw!r} (want ISO 639-1, e.g. 'en')")
            by_code[language.iso_code_639_1.name.lower()] = language
        if not by_code:
            raise ValueError("LanguageDetector needs at least one language")
        self.languages: tuple[str, ...] = tuple(by_code)
        self.min_confidence = min_confidence
        self.min_letters = min_letters
        self.min_letters_by_script = min_letters_by_script
        self.max_chars = max_chars
        self._code = {language: code for code, language in by_code.items()}
        # script -> configured languages written in it
        script_langs: dict[str, set[str]] = {}
        for code, language in by_code.items():
            for script in _lingua_scripts(language):
                script_langs.setdefault(script, set()).add(code)
        self._script_langs = {s: frozenset(c) for s, c in script_langs.items()}
        # Scripts that decide the language at once. Latin never does: "ok",
        # "thanks", "lol" are written in every language's chats.
        self._decisive = {
            s: next(iter(c)) for s, c in self._script_langs.items() if len(c) == 1 and s != "LATIN"
        }
        # Script groups worth cutting at sentence ends: several languages share them.
        self._split_groups = frozenset(
            _SCRIPT_GROUP.get(s, s) for s, c in self._script_langs.items() if len(c) > 1
        )
        # One chunk (most messages): the high-accuracy models, which matter
        # most for short text. Several sentences: lingua's low-accuracy mode
        # (trigrams only), about twice as fast per sentence and as right on
        # the test corpus. It shares the loaded models: no extra memory.
        self._lingua = (
            LanguageDetectorBuilder.from_languages(*by_code.values())
            .with_preloaded_language_models()
            .build()
        )
        self._lingua_sentences = (
            LanguageDetectorBuilder.from_languages(*by_code.values())
            .with_low_accuracy_mode()
            .with_preloaded_language_models()
            .build()
        )

    def __repr__(self) -> str:
        return f"LanguageDetector({list(self.languages)!r}, min_confidence={self.min_confidence})"

    # -- detection -----------------------------------------------------------

    def detect(self, text: str | None) -> Detection | None:
        """The dominant language of ``text``, or None if there is too little to judge."""
        if not text:
            return None
        clean = _strip_noise(text)
        if len(clean) > self.max_chars:
            cut = clean.rfind(" ", 0, self.max_chars)
            clean = clean[: cut if cut > self.max_chars // 2 else self.max_chars]
        if not unicodedata.is_normalized("NFKC", clean):
            # fullwidth and "mathematical bold" letters, ligatures, halfwidth kana
            clean = unicodedata.normalize("NFKC", clean)
        chunks = self._chunks(clean)
        lingua = self._lingua if len(chunks) == 1 else self._lingua_sentences
        scores: dict[str, float] = {}
        judged = 0
        for chunk in chunks:
            outcome = self._judge(clean, chunk, lingua)
            if outcome is None:
                continue
            judged += chunk.letters
            if isinstance(outcome, str):
                scores[outcome] = scores.get(outcome, 0.0) + chunk.letters
                continue
            for value in outcome:
                confidence = value.value
                if confidence <= 0.0:
                    break  # sorted, highest first
                code = self._code[value.language]
                scores[code] = scores.get(code, 0.0) + chunk.letters * confidence
        if not scores:
            return None
        best = max(scores, key=scores.__getitem__)
        # lingua's last digits vary from call to call (it sums in hash order)
        confidence = round(min(1.0, scores[best] / judged), 4)
        return Detection(best, confidence, confidence >= self.min_confidence)

    def _judge(
        self, text: str, chunk: _Chunk, lingua: _LinguaDetector
    ) -> str | list[ConfidenceValue] | None:
        """A code when the script decides, lingua's values, or None (not judged)."""
        candidates: frozenset[str] | None = None
        for script in chunk.scripts:  # usually one; kana and kanji together
            langs = self._script_langs.get(script, frozenset())
            candidates = langs if candidates is None else candidates & langs
        if not candidates:
            return None  # a script no configured language is written in
        if len(candidates) == 1 and "LATIN" not in chunk.scripts:
            if chunk.letters < self.min_letters_by_script:
                return None
            return next(iter(candidates))
        if chunk.letters < self.min_letters:
            return None
        if len(candidates) == 1:
            return next(iter(candidates))
        return lingua.compute_language_confidence_values(text[chunk.start : chunk.end])

    def _chunks(self, text: str) -> list[_Chunk]:
        """Cut ``text`` at script changes, and at sentence ends inside shared scripts."""
        classes = _char_class
        scripts: set[str] = set()
        for ch in set(text):
            cls = classes.get(ch)
            if cls is None:
                cls = _classify(ch)
            if cls.__class__ is str:
                scripts.add(cls)
        if not scripts:
            return []
        groups = {_SCRIPT_GROUP.get(s, s) for s in scripts}
        if len(groups) > 1:
            return self._chunks_by_script(text)
        (group,) = groups
        if group not in self._split_groups:
            chunk = _Chunk(0, len(text), sum(map(str.isalpha, text)))
            chunk.group, chunk.scripts = group, scripts
            return [chunk]
        # one shared script: cut at sentence ends, each chunk >= min_letters
        chunks: list[_Chunk] = []
        cur = _Chunk(0)
        for match in _SENTENCE.finditer(text):
            if match.end() == match.start():
                continue
            cur.letters += sum(map(str.isalpha, match.group()))
            cur.end = match.end()
            if cur.letters >= self.min_letters:
                cur.group, cur.scripts = group, scripts
                chunks.append(cur)
                cur = _Chunk(cur.end)
        if cur.letters:
            cur.group, cur.scripts = group, scripts
            self._close(chunks, cur)
        return chunks

    def _chunks_by_script(self, text: str) -> list[_Chunk]:
        """The slow path, character by character, for text in several scripts."""
        chunks: list[_Chunk] = []
        classes = _char_class
        split_groups = self._split_groups
        min_letters = self.min_letters
        cur = _Chunk(0)
        last_end = 0  # just past the last letter (or its marks) of ``cur``
        for i, ch in enumerate(text):
            cls = classes.get(ch)
            if cls is None:  # the cache is full
                cls = _classify(ch)
            if cls.__class__ is int:
                if cls == _NEUTRAL:
                    continue
                if cls == _MARK:
                    if cur.letters:
                        last_end = i + 1
                    continue
                # a sentence end
                if cur.letters >= min_letters and cur.group in split_groups:
                    cur.end = i + 1
                    chunks.append(cur)
                    cur = _Chunk(i + 1)
                    last_end = i + 1
                continue
            script: str = cls  # type: ignore[assignment]
            group = _SCRIPT_GROUP.get(script, script)
            if cur.group is not None and group != cur.group:
                cur.end = last_end
                self._close(chunks, cur)
                cur = _Chunk(last_end)
            cur.group = group
            cur.scripts.add(script)
            cur.letters += 1
            last_end = i + 1
        if cur.letters:
            cur.end = len(text)
            self._close(chunks, cur)
        return chunks

    def _close(self, chunks: list[_Chunk], cur: _Chunk) -> None:
        """Append ``cur``; a short tail after a sentence end joins the sentence before."""
        if cur.letters < self.min_letters and chunks:
            prev = chunks[-1]
            if prev.group == cur.group and prev.end == cur.start:
                prev.end = cur.end
                prev.letters += cur.letters
                prev.scripts = prev.scripts | cur.scripts
                return
        chunks.append(cur)


# -- precedence --------------------------------------------------------------

# ISO 639 codes that browsers, Twitter and mail clients still send.
_LEGACY_CODES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro", "no": "nb"}
_NOT_A_LANGUAGE = frozenset({"und", "mul", "zxx", "mis", "c", "posix", "i", "x"})


@lru_cache(maxsize=1024)
def normalise_language(tag: str | None) -> str | None:
    """The 2-letter ISO 639-1 code of a language tag or locale, or None.

    ``"pt-BR"``, ``"en_US.UTF-8"``, ``"JA"``, ``"zh-Hant-TW"``, ``"por"`` ->
    ``"pt"``, ``"en"``, ``"ja"``, ``"zh"``, ``"pt"``; legacy ``"iw"`` ->
    ``"he"``; ``"und"``, ``"*"``, ``""`` -> None.
    """
    if not tag:
        return None
    primary = re.split(r"[-_.@;,\s]", tag.strip(), maxsplit=1)[0].lower()
    if not primary.isascii() or not primary.isalpha() or primary in _NOT_A_LANGUAGE:
        return None
    if len(primary) == 2:
        return _LEGACY_CODES.get(primary, primary)
    if len(primary) == 3:
        language = _lingua_language(primary)
        if language is not None:
            return language.iso_code_639_1.name.lower()
    return None


def _hint_codes(hint: str | Sequence[str | None] | None) -> list[str]:
    """Codes from a hint, best first: one tag, a list of tags, or an
    Accept-Language / Content-Language list (``"da, en-GB;q=0.8, en;q=0.7"``)."""
    if not hint:
        return []
    if not isinstance(hint, str):
        return [code for item in hint for code in _hint_codes(item)]
    if "," not in hint and ";" not in hint:
        code = normalise_language(hint)
        return [code] if code else []
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(hint.split(",")):
        tag, _, params = part.partition(";")
        quality = 1.0
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        code = normalise_language(tag)
        if code and quality > 0:
            weighted.append((-quality, position, code))
    return [code for _, _, code in sorted(weighted)]


def choose_language(
    *,
    preference: str | None,
    detection: Detection | None,
    hint: str | Sequence[str | None] | None,
    conversation_language: str | None,
    default: str,
    served: Collection[str],
) -> tuple[str, str, float | None]:
    """(code, source, confidence) for a message, by the routing precedence.

    customer's stated ``preference`` > confident ``detection`` > channel
    ``hint`` (Content-Language, tweet ``lang``, browser locale; a list or an
    Accept-Language string is tried in order) > ``conversation_language`` >
    ``default``. Tags are normalised to 2-letter codes ("pt-BR" -> "pt");
    a value not in ``served`` is skipped and the next source is used.
    ``source`` is one of :data:`LANGUAGE_SOURCES`; ``confidence`` is the
    detection's when the source is "detected", else None. ``default`` is
    returned as given (config validation checks it is served).
    """
    served_codes = {normalise_language(code) for code in served}
    code = normalise_language(preference)
    if code in served_codes:
        return code, "customer_preference", None  # type: ignore[return-value]
    if detection is not None and detection.confident:
        code = normalise_language(detection.language)
        if code in served_codes:
            return code, "detected", detection.confidence  # type: ignore[return-value]
    for code in _hint_codes(hint):
        if code in served_codes:
            return code, "channel_hint", None
    code = normalise_language(conversation_language)
    if code in served_codes:
        return code, "conversation", None  # type: ignore[return-value]
    return default, "default", None


def language_for_country(country: str | None, served: list[str]) -> str | None:
    """The first official language of ``country`` (CLDR) in ``served``: a
    caller's likely language when a phone number is all we know."""
    from babel.languages import get_official_languages

    if not country:
        return None
    for code in get_official_languages(country.upper(), de_facto=True):
        if code in served:
            return str(code)
    return None
