"""The customer's new words: quoted history, attributions and signatures removed."""

from __future__ import annotations

import re

# "On <date>, <name> wrote:" and its equivalents, matched against one to three
# joined lines because clients wrap long attribution lines. Anchored ones start
# with the opener word the client writes; generic ones only end like an
# attribution, so they need more evidence (a date or address, or quoted lines
# after them) before a customer's own "as I wrote:" is taken for one.
_ANCHORED_ATTRIBUTION_RES = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"^on\b.{0,300}\bwrote\s*:$",  # en
        r"^am\b.{0,300}\bschrieb\b.{0,200}:$",  # de
        r"^le\b.{0,300}\ba\s+(?:é|e)crit\s*:$",  # fr
        r"^el\b.{0,300}\bescribi(?:ó|o)\s*:$",  # es
        r"^(?:em|no dia)\b.{0,300}\bescreveu\s*:$",  # pt
        r"^(?:il|in data)\b.{0,300}\bha\s+scritto\s*:$",  # it
        r"^op\b.{0,300}\bschreef\b.{0,200}:$",  # nl
        r"^(?:den|på)\b.{0,300}\bskrev\b.{0,200}:$",  # sv / da / no
    )
]
_GENERIC_ATTRIBUTION_RE = re.compile(
    r"(?:\bwrote|\bschrieb|\ba\s+écrit|\bescribi(?:ó|o)|\bescreveu|\bha\s+scritto|\bschreef|"
    r"\bskrev|\bнаписала?|\bпишет|書きました|\brakstīja)\b.{0,120}[:\uff1a]$",  # noqa: RUF001
    re.IGNORECASE,
)
# Gmail in ru/ja/lv... writes only "<date>, <name> <address>:" before ">" lines.
_ADDRESS_ATTRIBUTION_RE = re.compile(r"<?[\w.+-]+@[\w.-]+>?\)?\s*[:\uff1a]$")
# How the first line of a wrapped attribution begins: an opener word, a date,
# or a weekday abbreviation and a date ("пн, 15 янв.", "pirmd., 2024").
_ATTRIBUTION_START_RE = re.compile(
    r"^(?:on|am|le|el|em|no dia|il|in data|op|den|på)\b|^\d|^[^\W\d]{2,6}\.?,\s*\d",
    re.IGNORECASE,
)

_SEPARATOR_WORDS = (
    "original message|forwarded message|ursprüngliche nachricht|weitergeleitete nachricht|"
    "originalnachricht|message d'origine|message transféré|message original|mensaje original|"
    "mensaje reenviado|mensagem original|mensagem encaminhada|messaggio originale|"
    "messaggio inoltrato|oorspronkelijk bericht|doorgestuurd bericht|ursprungligt meddelande|"
    "vidarebefordrat meddelande|originalmeddelelse|исходное сообщение|пересылаемое сообщение|"
    "переадресованное сообщение|元のメッセージ|転送されたメッセージ|oriģinālā ziņa|"
    "pārsūtīta ziņa|sākotnējā ziņa"
)
_SEPARATOR_RE = re.compile(
    rf"^\s*[-_=*]{{2,}}\s*(?:{_SEPARATOR_WORDS})\s*[-_=*]{{2,}}\s*$", re.IGNORECASE
)
_FORWARD_INTRO_RE = re.compile(
    r"^\s*(?:begin forwarded message|anfang der weitergeleiteten nachricht|"
    r"début du message réexpédié|inicio del mensaje reenviado|início da mensagem reencaminhada|"
    r"inizio messaggio inoltrato|begin doorgestuurd bericht|vidarebefordrat brev)\s*:\s*$",
    re.IGNORECASE,
)
# An Outlook-style header block: "From: ..." then more "Name: value" lines.
_OUTLOOK_FROM_RE = re.compile(
    r"^\s*\*?(?:from|von|de|da|van|från|fra|от|差出人|送信者|no|od|kimden|lähettäjä)\s*\*?\s*[:\uff1a]\s*\S",
    re.IGNORECASE,
)
_OUTLOOK_FIELD_RE = re.compile(
    r"^\s*\*?(?:sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|date|à|objet|"
    r"enviado|fecha|para|asunto|assunto|data|inviato|a|oggetto|verzonden|aan|onderwerp|"
    r"skickat|till|ämne|sendt|til|emne|отправлено|дата|кому|тема|送信日時|日付|宛先|件名|"
    r"nosūtīts|datums|kam|tēma|wysłano|do|temat|gönderildi|kime|konu)\s*\*?\s*[:\uff1a]",
    re.IGNORECASE,
)
_SUBJECT_FIELD_RE = re.compile(
    r"^\s*\*?(?:subject|betreff|objet|asunto|assunto|oggetto|onderwerp|ämne|emne|тема|件名|"
    r"tēma|temat|konu|aihe)\s*\*?\s*[:\uff1a]",
    re.IGNORECASE,
)
_SIGNATURE_RE = re.compile(r"^--\s*$")
_DEVICE = (
    r"(?:iphone|ipad|ipod|android|samsung|galaxy|blackberry|mobile|smartphone|phone|handy|"
    r"huawei|xiaomi|pixel|tablet|móvil|movil|celular|cellulare|telefono|telefoon|mobiel|mobil|"
    r"mobiltelefon|телефона?|смартфона?|мобильного)"
)
_MOBILE_SIGNATURE_RE = re.compile(
    rf"^\s*(?:sent from my {_DEVICE}\b.{{0,30}}|sent from (?:outlook|mail for windows|yahoo mail)"
    rf"\b.{{0,30}}|get outlook for (?:ios|android)\b.{{0,20}}|"
    rf"von meinem {_DEVICE}\b.{{0,30}}\bgesendet|gesendet von meinem {_DEVICE}\b.{{0,30}}|"
    rf"envoyé (?:de|depuis) mon {_DEVICE}\b.{{0,30}}|enviado desde mi {_DEVICE}\b.{{0,30}}|"
    rf"enviado (?:do|de) meu {_DEVICE}\b.{{0,30}}|inviato da(?:l mio)? {_DEVICE}\b.{{0,30}}|"
    rf"(?:verzonden|verstuurd) (?:vanaf|met) mijn {_DEVICE}\b.{{0,30}}|"
    rf"skickat från min {_DEVICE}\b.{{0,30}}|sendt fra min {_DEVICE}\b.{{0,30}}|"
    rf"отправлено с (?:моего )?{_DEVICE}\b.{{0,30}}|(?:iphone|android)から送信|"  # noqa: RUF001
    rf"nosūtīts no mana {_DEVICE}\b.{{0,30}})\s*$",
    re.IGNORECASE,
)


def strip_quoted(text: str) -> str:
    """The customer's new words: quoted history and signatures removed.

    Removes "On ... wrote:" attributions (en, de, fr, es, pt, it, nl, sv, ru,
    ja, lv) with what they quote, "-----Original Message-----" and forwarded
    blocks, Outlook "From: / Sent:" header blocks and what follows them, lines
    quoted with ">", a "-- " signature and "Sent from my iPhone"-style lines.
    When that would leave nothing (the whole message is a quote or a
    signature), the original text is returned: better route on old words than
    on none.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _quote_start(lines)
    if cut is not None:
        start, kind = cut
        after = [ln for ln in lines[start + 1 :] if ln.strip()]
        if kind == "attribution" and after and not all(ln.lstrip().startswith(">") for ln in after):
            if after[0].lstrip().startswith(">"):
                # Bottom-posted or interleaved answers: drop the attribution and
                # the quoted lines, keep what was written between them.
                lines = lines[:start] + lines[start + 1 :]
            else:
                lines = lines[:start]
        else:
            lines = lines[:start]
    kept: list[str] = []
    for line in lines:
        if _SIGNATURE_RE.match(line) and any(k.strip() for k in kept):
            break
        if line.lstrip().startswith(">") or _MOBILE_SIGNATURE_RE.match(line):
            continue
        kept.append(line)
    # Drop separator lines left dangling above the cut (Outlook's "____").
    while kept and (not kept[-1].strip() or re.fullmatch(r"\s*[-_=*]{3,}\s*", kept[-1])):
        kept.pop()
    result = "\n".join(kept).strip("\n")
    if not result.strip():
        return text
    return result


def _quote_start(lines: list[str]) -> tuple[int, str] | None:
    """Index of the first line of quoted history, and what kind of marker it is."""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(">"):
            continue
        if _SEPARATOR_RE.match(stripped) or _FORWARD_INTRO_RE.match(stripped):
            return i, "separator"
        if _OUTLOOK_FROM_RE.match(stripped) and _is_header_block(lines, i):
            return i, "outlook"
        for span in (1, 2, 3):
            if i + span > len(lines):
                break
            if span > 1 and not _ATTRIBUTION_START_RE.match(stripped):
                break  # a wrapped attribution starts like one
            joined = " ".join(part.strip() for part in lines[i : i + span])
            if len(joined) > 400:
                break
            if not joined.endswith((":", "\uff1a")):
                continue  # every attribution ends with a colon: skip the regexes
            if (
                span > 1
                and _ATTRIBUTION_START_RE.match(lines[i + 1].strip())
                and _is_attribution(lines, i + 1, span - 1)
            ):
                break  # the attribution starts on a later line, not this one
            if _is_attribution(lines, i, span):
                return i, "attribution"
    return None


def _is_attribution(lines: list[str], start: int, span: int) -> bool:
    joined = " ".join(part.strip() for part in lines[start : start + span])
    if not joined.endswith((":", "\uff1a")):
        return False
    if any(r.match(joined) for r in _ANCHORED_ATTRIBUTION_RES):
        return True
    quoted_next = _next_is_quote(lines, start + span)
    if _GENERIC_ATTRIBUTION_RE.search(joined):
        return quoted_next or bool(re.search(r"\d|@", joined))
    return (
        quoted_next
        and bool(re.search(r"\d", joined))
        and bool(_ADDRESS_ATTRIBUTION_RE.search(joined))
    )


def _is_header_block(lines: list[str], start: int) -> bool:
    """A "From:" line followed by header fields including a subject: a quoted mail's head.

    The subject is required so that "From: Berlin / To: Paris / Date: ..." in a
    customer's own booking request is not taken for quoted history.
    """
    fields = 0
    subject = False
    for line in lines[start + 1 : start + 8]:
        stripped = line.strip()
        if _OUTLOOK_FIELD_RE.match(stripped):
            fields += 1
            subject = subject or bool(_SUBJECT_FIELD_RE.match(stripped))
    return fields >= 2 and subject


def _next_is_quote(lines: list[str], start: int) -> bool:
    for line in lines[start : start + 3]:
        if line.strip():
            return line.lstrip().startswith(">")
    return False
