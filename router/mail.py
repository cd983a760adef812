"""Raw RFC 822 mail -> one :class:`ParsedMail`: the email channel's wire format.

Pure: bytes in, a dataclass out, no I/O. The IMAP adapter calls :func:`parse`
on every fetched message; the routing side reads the fields it needs
(sender, thread ids, routed text, language / time-zone hints and the noise
flags that suppress acknowledgements).

Real mail is broken in every way there is, and a bad message must never stop
the adapter, so :func:`parse` reads leniently and records what it had to
repair in ``defects``; it raises :class:`MailError` only when nothing usable
is left (empty input, no header at all, neither a sender nor a body). The
structure comes from the standard library's ``email`` parser (modern policy);
header text is decoded here from the raw bytes because the header registry
mis-handles the real-world cases that matter (raw 8-bit headers in legacy
charsets, RFC 6532 addresses, encoded-words split mid-character, unknown
charsets). HTML is turned into text by ``inscriptis`` (on an ``lxml`` tree).
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import dataclasses
import email
import email.message
import email.policy
import quopri
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value, getaddresses
from html import unescape as unescape_html

from inscriptis import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml import etree
from lxml import html as lxml_html

from router.profiles.identity import normalise_email

__all__ = [
    "MAX_MIME_DEPTH",
    "MAX_MIME_PARTS",
    "Attachment",
    "DeliveryReport",
    "MailError",
    "ParsedMail",
    "check_structure",
    "normalise_subject",
    "parse",
    "strip_quoted",
]


class MailError(ValueError):
    """Nothing usable in the message; the daemon dead-letters it with this reason."""


@dataclass
class Attachment:
    """Metadata of one attached (or inline) part; the content itself is not kept."""

    filename: str | None
    content_type: str
    size: int  # decoded bytes (exact for base64, the encoded length for huge others)
    content_id: str | None  # without <>, as ``cid:`` URLs in the HTML refer to it
    inline: bool


@dataclass
class DeliveryReport:
    """The first per-recipient block of a ``multipart/report; report-type=delivery-status``,
    or what a plain-text bounce (qmail, Exim, old Exchange) says in words."""

    original_message_id: str | None  # Message-ID of the mail that bounced, without <>
    recipient: str | None
    action: str | None  # failed / delayed / delivered / relayed / expanded (lower-cased)
    status: str | None  # e.g. "5.1.1"
    diagnostic: str | None
    plain_text: bool = False  # read from a bounce's words, not a delivery-status part


@dataclass
class ParsedMail:
    """Everything the daemon needs from one email."""

    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    sender: str | None
    display_name: str | None
    reply_to: str | None
    subject: str
    raw_subject: str
    text: str
    full_text: str
    html: str | None
    attachments: list[Attachment]
    content_language: str | None
    date_offset: str | None
    auto_submitted: str | None
    bulk: bool
    bounce: bool
    auto_reply: bool
    delivery_report: DeliveryReport | None
    defects: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- limits

_MAX_DEPTH = 40  # MIME nesting deeper than this is an attack or a loop, not mail
_MAX_DEFECTS = 60  # a pathological message must not produce an unbounded list
_MAX_PARTS = 500  # leaves walked per message; real mail has a handful
# Refused before the full parse (check_structure): the standard library builds
# the whole tree first, at about half a millisecond of CPU per part, so these
# bound the work a message can cost. Real mail stays far below both.
MAX_MIME_PARTS = 1000
MAX_MIME_DEPTH = _MAX_DEPTH
_HTML_FACTOR = 10  # HTML is markup-heavy: keep up to 10x the text limit of it

# --------------------------------------------------------------------------- charsets

# Labels real mail uses that Python does not know, or knows as a narrower
# codec than the one senders actually produce. Each maps to codecs tried in
# order (strictly); the first that decodes the bytes wins.
_LATIN1 = ("cp1252", "latin-1")  # WHATWG: "iso-8859-1" on the wire is windows-1252
_ASCII = ("ascii", "utf-8", "cp1252", "latin-1")  # 8-bit "us-ascii" is UTF-8 or cp1252
_CHARSET_ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us", "646"), _ASCII),
    **dict.fromkeys(
        ("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819"), _LATIN1
    ),
    **dict.fromkeys(("windows-1252", "cp1252", "x-cp1252", "win-1252"), _LATIN1),
    **dict.fromkeys(
        (
            "ks_c_5601-1987",
            "ks_c_5601",
            "ks_c_5601_1987",
            "ksc5601",
            "ksc_5601",
            "euc-kr",
            "euckr",
            "x-windows-949",
            "windows-949",
            "cp949",
            "uhc",
        ),
        ("cp949",),  # superset of EUC-KR: Outlook's "ks_c_5601-1987" is really cp949
    ),
    **dict.fromkeys(("unicode-1-1-utf-7", "utf-7", "utf7", "x-unicode-2-0-utf-7"), ("utf-7",)),
    **dict.fromkeys(
        (
            "x-sjis",
            "shift_jis",
            "shift-jis",
            "sjis",
            "x-shift_jis",
            "x-shift-jis",
            "ms_kanji",
            "csshiftjis",
            "windows-31j",
            "cp932",
        ),
        ("cp932", "shift_jis_2004"),  # phones and Windows send cp932 (NEC/IBM extensions)
    ),
    **dict.fromkeys(
        ("iso-2022-jp", "csiso2022jp", "iso2022jp", "iso-2022-jp-2"),
        ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004"),
    ),
    **dict.fromkeys(("euc-jp", "x-euc-jp", "eucjp"), ("euc_jp", "euc_jis_2004")),
    **dict.fromkeys(
        ("gb2312", "gbk", "x-gbk", "euc-cn", "cp936", "csgb2312", "gb_2312-80", "chinese"),
        ("gb18030",),  # the superset; mail labelled gb2312 routinely has GBK characters
    ),
    "hz-gb-2312": ("hz",),
    **dict.fromkeys(
        ("big5", "x-x-big5", "big5-hkscs", "cn-big5", "csbig5", "x-big5", "big-5"),
        ("big5hkscs", "cp950"),
    ),
    **dict.fromkeys(
        ("windows-874", "x-windows-874", "tis-620", "tis620", "iso-8859-11", "cp874"), ("cp874",)
    ),
    **dict.fromkeys(("iso-8859-8-i", "iso-8859-8-e", "logical", "visual"), ("iso8859_8",)),
    **dict.fromkeys(("iso-8859-6-i", "iso-8859-6-e"), ("iso8859_6",)),
    **dict.fromkeys(("x-mac-roman", "macintosh", "mac"), ("mac_roman",)),
    "x-mac-cyrillic": ("mac_cyrillic",),
    **dict.fromkeys(("utf8", "utf-8", "x-utf-8", "unicode-1-1-utf-8", "utf-8-sig"), ("utf-8",)),
}
# Labels that say "I don't know": guess UTF-8, then Windows-1252 (which with
# latin-1 as the last resort never fails).
_UNKNOWN_CHARSET = ("utf-8", "cp1252", "latin-1")
_UNKNOWN_LABELS = frozenset(
    ("x-user-defined", "unknown", "x-unknown", "unknown-8bit", "default", "none", "x-none")
)
# Text codecs Python has that no mail charset means (and some that decode code).
_REFUSED_CODECS = frozenset(
    ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem")
)


def _charset_codecs(label: str | None) -> tuple[tuple[str, ...], bool]:
    """Codecs to try for a charset label, and whether the label was understood."""
    if label is None or not label.strip():
        return _ASCII, True  # RFC 2045 default, read as mail really is
    name = label.strip().strip("\"'").strip().lower().rstrip(";,. ")
    if name.startswith("3d"):  # "charset=3Diso-8859-1": a quoted-printable leftover
        name = name[2:]
    if name in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[name], True
    if name in _UNKNOWN_LABELS:
        return _UNKNOWN_CHARSET, False
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return _UNKNOWN_CHARSET, False
    if not getattr(info, "_is_text_encoding", True) or (
        info.name.replace("-", "_") in _REFUSED_CODECS
    ):
        return _UNKNOWN_CHARSET, False
    return (info.name,), True


def _decode_bytes(
    data: bytes, label: str | None, defects: _Defects, where: str, *, truncated: bool = False
) -> str:
    """Bytes in a declared charset -> text, never failing; guesses are recorded as defects."""
    candidates, known = _charset_codecs(label)
    if not known:
        defects.add(f"{where}: unknown charset {label!r}, read as UTF-8 or Windows-1252")
    for codec in candidates:
        try:
            return _decode_strict(data, codec, truncated)
        except (UnicodeError, LookupError, ValueError):
            continue
    if "utf-8" not in candidates:
        try:
            text = _decode_strict(data, "utf-8", truncated)
        except (UnicodeError, ValueError):
            pass
        else:
            defects.add(f"{where}: labelled {label!r} but the bytes are UTF-8")
            return text
    elif not _mostly_utf8(data):
        # Labelled UTF-8 but written in a legacy charset (mail clients that
        # label everything UTF-8): Windows-1252 reads it, latin-1 never fails.
        defects.add(f"{where}: labelled {label!r} but the bytes are Windows-1252")
        for codec in ("cp1252", "latin-1"):
            try:
                return _decode_strict(data, codec, truncated)
            except (UnicodeError, ValueError):
                continue
    defects.add(f"{where}: bytes not valid in {label or 'us-ascii'!r}, replaced")
    try:
        return data.decode(candidates[0], errors="replace")
    except (LookupError, ValueError):
        return data.decode("latin-1")


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a few bad bytes (a cut or a stray byte), not text in another charset.

    At least three well-formed multi-byte characters per invalid byte: text in
    a legacy charset almost never forms even one.
    """
    text = data.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    valid = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return valid > 0 and invalid * 3 <= valid


def _decode_strict(data: bytes, codec: str, truncated: bool) -> str:
    if not truncated:
        text = data.decode(codec)
    else:
        # A cut body may end inside a multi-byte character: let the incremental
        # decoder hold the incomplete tail back instead of failing on it.
        text = codecs.getincrementaldecoder(codec)().decode(data, final=False)
    return text[1:] if text.startswith("\ufeff") else text


# --------------------------------------------------------------------------- defects


_DEFECT_TEXT = {
    "NoBoundaryInMultipartDefect": "multipart part without a boundary parameter",
    "StartBoundaryNotFoundDefect": "multipart boundary never found in the body",
    "CloseBoundaryNotFoundDefect": "multipart closing boundary missing",
    "FirstHeaderLineIsContinuationDefect": "first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": 'misplaced mbox "From " line in the headers',
    "MissingHeaderBodySeparatorDefect": "malformed header line (taken as the start of the body)",
    "MultipartInvariantViolationDefect": "multipart content type without multipart content",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with a content transfer encoding",
    "UndecodableBytesDefect": "undecodable bytes",
    "InvalidBase64PaddingDefect": "bad base64 padding",
    "InvalidBase64CharactersDefect": "invalid characters in base64",
    "InvalidBase64LengthDefect": "bad base64 length",
}


class _Defects:
    """An ordered, de-duplicated, bounded list of human-readable problems."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, text: str) -> None:
        # Details quote the message itself: keep them short, printable and UTF-8.
        text = "".join(ch if ch.isprintable() else " " for ch in _unsurrogate(text))
        text = " ".join(text.split())[:300]
        if len(self._items) < _MAX_DEFECTS:
            self._items.setdefault(text, None)

    def add_python(self, defects: list[object], where: str) -> None:
        for defect in defects:
            name = type(defect).__name__
            words = (
                _DEFECT_TEXT.get(name)
                or re.sub(r"(?<!^)(?=[A-Z])", " ", name.removesuffix("Defect")).lower()
            )
            detail = str(defect).strip()
            self.add(f"{where}: {words}" + (f" ({detail})" if detail else ""))

    def list(self) -> list[str]:
        return list(self._items)


# --------------------------------------------------------------------------- headers

_EW_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_B64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")


class _Headers:
    """Raw header values by lower-cased name, recovered as text.

    The parser keeps header bytes it could not read as ASCII as surrogate
    escapes; those are turned back into bytes and read as UTF-8 (RFC 6532) or,
    failing that, in the charset the body declares (what mail clients do).
    """

    def __init__(self, msg: Message, defects: _Defects, fallback_charset: str | None) -> None:
        self._values: dict[str, list[str]] = {}
        self._defects = defects
        self._fallback = fallback_charset
        for name, value in msg.raw_items():
            key = str(name).strip().lower()
            self._values.setdefault(key, []).append(self._recover(key, str(value)))

    def _recover(self, name: str, value: str) -> str:
        value = re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", " ").replace("\n", " ")
        if value.isascii():
            return value.strip()
        data = _escape_raw_bytes_in_words(value.encode("utf-8", "surrogateescape"))
        if data.isascii():
            return data.decode("ascii").strip()
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            pass
        if _mostly_utf8(data):
            self._defects.add(f"header {name}: invalid bytes in UTF-8, replaced")
            return data.decode("utf-8", errors="replace").strip()
        label = self._fallback
        if label is None or "utf-8" in _charset_codecs(label)[0]:
            label = "windows-1252"  # not UTF-8 again: that just failed
        self._defects.add(f"header {name}: raw 8-bit bytes that are not UTF-8, read as {label}")
        return _decode_bytes(data, label, _Defects(), name).strip()

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def has(self, name: str) -> bool:
        return any(v.strip() for v in self._values.get(name, []))

    def __len__(self) -> int:
        return len(self._values)


_EW_BYTES_RE = re.compile(rb"=\?([^?\s]+)\?([qQ])\?([^?]*?)\?=")


def _escape_raw_bytes_in_words(data: bytes) -> bytes:
    """Raw 8-bit bytes inside Q encoded-words (Eudora), written as =XX escapes.

    The bytes are in the word's own charset, so they must be decoded once,
    with the word, not first as the header's bytes and then again as the
    word's. Raw UTF-8 inside a word of another charset is re-encoded into it.
    """

    def escape(match: re.Match[bytes]) -> bytes:
        payload = match.group(3)
        if payload.isascii():
            return match.group(0)
        charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]
        codec = _charset_codecs(charset)[0][0]
        if codec != "utf-8":
            with contextlib.suppress(UnicodeError, LookupError):
                payload = payload.decode("utf-8").encode(codec)
        escaped = re.sub(rb"[\x80-\xff]", lambda b: b"=%02X" % b.group(0)[0], payload)
        return b"=?" + match.group(1) + b"?" + match.group(2) + b"?" + escaped + b"?="

    return _EW_BYTES_RE.sub(escape, data)


def _decode_words(value: str, defects: _Defects, where: str) -> str:
    """Decode RFC 2047 encoded-words leniently.

    Adjacent encoded-words in one charset are joined as bytes before decoding,
    because real senders split multi-byte characters across them; whitespace
    between encoded-words is dropped as RFC 2047 says.
    """
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset, defects, where))
            pending.clear()
            pending_charset = None

    for match in _EW_RE.finditer(value):
        between = value[pos : match.start()]
        if not (pending_charset is not None and not between.strip()):
            flush()
            out.append(between)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        encoded = match.group(3)
        try:
            if match.group(2) in "bB":
                data = _b64decode_lenient(encoded.encode("utf-8", "surrogateescape"))
            else:
                data = binascii.a2b_qp(encoded.encode("utf-8", "surrogateescape"), header=True)
        except (binascii.Error, ValueError):
            defects.add(f"{where}: undecodable encoded-word kept as it is")
            flush()
            out.append(match.group(0))
            pos = match.end()
            continue
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset
        pending.extend(data)
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def _b64decode_lenient(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        cleaned = _B64_JUNK_RE.sub(b"", data)
        if len(cleaned) % 4 == 1:  # a stray character cannot be decoded; drop it
            cleaned = cleaned[:-1]
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


def _header_text(headers: _Headers, name: str, defects: _Defects) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return " ".join(_decode_words(value, defects, f"header {name}").split())


_ADDR_SPEC_RE = re.compile(r"[^\s<>()\[\]@,;:\"]+@[^\s<>()\[\]@,;:\"]+\.[^\s<>()\[\]@,;:\".]+")


def _address(
    headers: _Headers, msg: Message, name: str, defects: _Defects
) -> tuple[str | None, str | None]:
    """(normalised address, decoded display name) of the first usable mailbox in a header."""
    value = headers.get(name)
    if value is None:
        return None, None
    for display, addr in getaddresses([value]):
        address = _mailbox_address(addr, defects, name) if addr else None
        if address:
            return address, _display_name(display, defects, name)
    # The modern header registry copes with some shapes email.utils does not
    # (missing commas, obsolete routes); its display name is already decoded.
    try:
        header = msg[name]
        mailboxes = list(getattr(header, "addresses", ()))
    except Exception:
        mailboxes = []
    for mailbox in mailboxes:
        address = normalise_email(_unsurrogate(mailbox.addr_spec))
        if address:
            return address, _display_name(_unsurrogate(mailbox.display_name), defects, name)
    found = _ADDR_SPEC_RE.search(value)
    if found and (address := normalise_email(found.group(0))):
        defects.add(f"header {name}: unparseable, took the first address in it")
        return address, None
    defects.add(f"header {name}: no address in {value[:80]!r}")
    return None, None


# RFC 5321 quoted local part ("john doe"@example.com): printable ASCII, with
# backslash escapes; legal, deliverable, and what some gateways write.
_QUOTED_ADDRESS_RE = re.compile(
    r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]){1,64}"@[a-z0-9-]+(?:\.[a-z0-9-]+)+$',
    re.IGNORECASE,
)
_DOTLESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>.]+$")


def _mailbox_address(addr: str, defects: _Defects, header: str) -> str | None:
    """The normalised address of one mailbox, or None (with the reason as a defect)."""
    address = normalise_email(addr)
    if address:
        return address
    addr = addr.strip()
    if _QUOTED_ADDRESS_RE.match(addr):
        return addr.lower()
    if _DOTLESS_RE.match(addr):
        # Judgement call (issue 14): a domain without a dot ("bob@extern",
        # "guest@localhost") is a host on the sender's own network, never an
        # address our replies can reach on the internet: not a customer identity.
        defects.add(f"header {header}: address domain has no dot (a local host name), refused")
    return None


def _display_name(raw: str, defects: _Defects, header: str) -> str | None:
    name = " ".join(_decode_words(raw, defects, f"header {header}").split())
    name = name.strip().strip("\"'").strip()
    return name or None


def _unsurrogate(value: str) -> str:
    """Text that encodes as UTF-8: escaped raw bytes read as UTF-8, lone surrogates replaced."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes (UTF-7 can make them)
        return value.encode("utf-8", "surrogatepass").decode("utf-8", errors="replace")


def _utf8_fields(value: object) -> None:
    """Make every string of a result dataclass storable as UTF-8, in place."""
    for item in dataclasses.fields(value):  # type: ignore[arg-type]
        current = getattr(value, item.name)
        if isinstance(current, str):
            setattr(value, item.name, _unsurrogate(current))
        elif isinstance(current, list):
            for index, element in enumerate(current):
                if isinstance(element, str):
                    current[index] = _unsurrogate(element)
                elif dataclasses.is_dataclass(element):
                    _utf8_fields(element)
        elif dataclasses.is_dataclass(current):
            _utf8_fields(current)


_MSGID_RE = re.compile(r"<([^<>]*)>")


def _message_ids(values: list[str]) -> list[str]:
    """All ids in Message-ID-like headers, without <>, in order, once each."""
    ids: dict[str, None] = {}
    for value in values:
        value = re.sub(r"\([^()]*\)", "", value)  # RFC 5322 comments are not part of ids
        bracketed = _MSGID_RE.findall(value)
        if not bracketed and value.strip() and len(value.split()) == 1:
            bracketed = [value]  # a bare id without angle brackets
        for raw_id in bracketed:
            msg_id = "".join(raw_id.split())  # folding inside the brackets is not part of it
            if msg_id:
                ids.setdefault(msg_id, None)
    return list(ids)


# --------------------------------------------------------------------------- date

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


# --------------------------------------------------------------------------- subjects

_SUBJECT_PREFIXES = (
    "re|fwd|fw|aw|wg|sv|vs|vl|vb|antw|doorst|tr|rv|enc|res|odp|pd|ynt|ilt|rif|"
    "отв|ответ|пересл|απ|σχετ|πρθ|回复|答复|转发|回覆|轉寄|返信|転送"
)
_PREFIX_RE = re.compile(
    r"^\s*((?:\[[^\[\]]{0,80}\]\s*)*)"  # list/ticket tags, kept
    rf"(?:{_SUBJECT_PREFIXES})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]\s*",
    re.IGNORECASE,
)
_FWD_SUFFIX_RE = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)


def normalise_subject(subject: str) -> str:
    """The subject without reply/forward prefixes, for threading by subject.

    Strips, repeatedly, "Re:", "Fwd:", "AW:", "SV:", "RE[2]:", "Re(3):",
    "回复:" and their kin in many languages; "[ticket-123]"-like list tags are
    kept; whitespace is collapsed.
    """
    text = subject
    for _ in range(50):  # bounded: each round removes at least one prefix
        match = _PREFIX_RE.match(text)
        if not match:
            break
        text = match.group(1) + text[match.end() :]
    text = _FWD_SUFFIX_RE.sub("", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- quoted text

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


# --------------------------------------------------------------------------- noise flags

_AUTO_REPLY_SUBJECT_RE = re.compile(
    r"^\s*(?:"
    r"out of (?:the )?office|automatic reply|auto(?:matic)?[- ]?(?:reply|response|answer)|"
    r"autoreply|away from (?:the )?office|vacation (?:reply|notice|message)|"
    r"abwesenheitsnotiz|automatische antwort|abwesend|"  # de
    r"réponse automatique|reponse automatique|absence du bureau|absent du bureau|"  # fr
    r"respuesta automática|respuesta automatica|fuera de la oficina|"  # es
    r"resposta automática|resposta automatica|fora do escritório|"  # pt
    r"risposta automatica|fuori ufficio|fuori sede|"  # it
    r"automatisch antwoord|afwezig|"  # nl
    r"automatiskt svar|autosvar|automatisk svar|frånvaro|"  # sv / da / no
    r"автоответ|автоматический ответ|вне офиса|"  # ru
    r"自動応答|自動返信|不在通知|自动回复|自動回覆|"  # ja / zh
    r"automātiskā atbilde|automātiska atbilde|"  # lv
    r"automatyczna odpowiedź|poza biurem|otomatik yanıt|automatická odpověď|"  # noqa: RUF001
    r"automaattinen vastaus"
    r")(?=\W|$)",
    re.IGNORECASE,
)
_DAEMON_LOCALPARTS = frozenset(("mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster"))
_LIST_HEADERS = (
    "list-id",
    "list-unsubscribe",
    "list-post",
    "list-help",
    "list-subscribe",
    "list-owner",
    "list-archive",
)


def _keyword(value: str | None) -> str | None:
    """'auto-generated (failure); x=y' -> 'auto-generated'."""
    if value is None:
        return None
    value = re.sub(r"\([^()]*\)", " ", value).split(";", 1)[0].strip().lower()
    return value or None


def _is_bulk(headers: _Headers) -> bool:
    if _keyword(headers.get("precedence")) in ("bulk", "junk", "list"):
        return True
    return any(headers.has(name) for name in _LIST_HEADERS)


# Subjects MTAs give bounces; a postmaster's mail is a bounce only with one
# (people write from postmaster@ too), or with other signs of automation.
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|undelivered|delivery (?:status )?notification|delivery (?:has )?failed|"
    r"delivery failure|returned mail|returned to sender|failure notice|mail delivery failed|"
    r"non[- ]?delivery|nondeliverable|could not be delivered|delivery delayed|delayed mail|"
    r"warning: could not send|unzustellbar|nicht zustellbar|non remis|no se pudo entregar|"
    r"impossible de remettre|non recapitabile",
    re.IGNORECASE,
)
_DELAY_RE = re.compile(r"delay|deferred|still trying|will (?:keep )?(?:re)?try|verzögert", re.I)


def _is_bounce(
    headers: _Headers, sender: str | None, subject: str, auto_submitted: str | None
) -> bool:
    return_path = headers.get("return-path")
    if return_path is not None and re.fullmatch(r"\s*<\s*>\s*", return_path):
        return True
    if sender:
        local = sender.rsplit("@", 1)[0]
        if local != "postmaster" and (
            local in _DAEMON_LOCALPARTS or local.startswith("mailer-daemon")
        ):
            return True
        if local == "postmaster":
            automated = auto_submitted not in (None, "no")
            return automated or bool(_BOUNCE_SUBJECT_RE.search(subject))
    return False


def _is_plain_bounce(headers: _Headers, sender: str | None, subject: str) -> bool:
    """A bounce written as plain text: from a mailer daemon, or saying so in its subject.

    An auto-reply also comes from "<>" (RFC 3834), so "<>" alone is not enough.
    """
    local = sender.rsplit("@", 1)[0] if sender else ""
    if local != "postmaster" and (local in _DAEMON_LOCALPARTS or local.startswith("mailer-daemon")):
        return True
    return bool(_BOUNCE_SUBJECT_RE.search(subject))


_TEXT_MSGID_RE = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*(<[^<>\s]+>)")
_TEXT_RECIPIENT_RE = re.compile(r"(?m)^[ \t]*<([^<>\s@]+@[^<>\s@]+)>:?")
_TEXT_STATUS_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_TEXT_DIAGNOSTIC_RE = re.compile(r"(?m)^.*\b[45]\d\d[ -].*$")


def _plain_text_report(
    msg: Message, text: str, subject: str, in_reply_to: list[str], headers: _Headers
) -> DeliveryReport:
    """What a plain-text bounce says: the bounced Message-ID (from the copy it
    quotes, the message it attaches, or its In-Reply-To), the recipient and the
    SMTP answer, as far as the words give them."""
    original: str | None = None
    for part in _iter_parts(msg, 0):
        if _content_type(part) in ("message/rfc822", "message/global"):
            inner = _raw_payload(part)
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original = _unsurrogate(_first_raw(inner[0], "message-id") or "") or None
                break
    if original is None and (found := _TEXT_MSGID_RE.search(text)):
        original = found.group(1)
    ids = _message_ids([original]) if original else []
    if not ids:
        ids = in_reply_to or _message_ids(headers.get_all("references"))[-1:]
    recipient = None
    if found := _TEXT_RECIPIENT_RE.search(text):
        recipient = normalise_email(found.group(1))
    status = _TEXT_STATUS_RE.search(text)
    diagnostic = _TEXT_DIAGNOSTIC_RE.search(text)
    delayed = _DELAY_RE.search(subject) is not None
    return DeliveryReport(
        original_message_id=ids[0] if ids else None,
        recipient=recipient,
        action="delayed" if delayed else "failed",
        status=status.group(1) if status else None,
        diagnostic=" ".join(diagnostic.group(0).split())[:300] if diagnostic else None,
        plain_text=True,
    )


def _is_auto_reply(headers: _Headers, subject: str, auto_submitted: str | None) -> bool:
    if auto_submitted == "auto-replied":
        return True
    for name in ("x-autoreply", "x-autorespond", "x-autoresponder"):
        value = headers.get(name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return True
    if _keyword(headers.get("precedence")) == "auto_reply":
        return True
    if (headers.get("x-autogenerated") or "").strip().lower() == "reply":
        return True
    return bool(_AUTO_REPLY_SUBJECT_RE.match(subject))


# --------------------------------------------------------------------------- MIME body


def _raw_param(part: Message, header: str, param: str) -> str | None:
    """A Content-Type/-Disposition parameter, via compat32 when the modern parser fails."""
    try:
        value = part.get_param(param, header=header)
    except Exception:
        value = None
        raw = next((str(v) for k, v in part.raw_items() if k.lower() == header), None)
        if raw is not None:
            legacy = email.message.Message()
            legacy[header] = raw
            try:
                value = legacy.get_param(param, header=header)
            except Exception:
                value = None
    if value is None:
        return None
    if isinstance(value, tuple):
        value = collapse_rfc2231_value(value)
    return str(value)


_MIME_TYPE_RE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:
        return "text/plain"
    # A garbled type is as good as none; it must not carry junk into the metadata.
    return ctype if _MIME_TYPE_RE.match(ctype) else "application/octet-stream"


def _first_raw(part: Message, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.strip().lower() == name:
            return re.sub(r"\s+", " ", str(value)).strip()
    return None


def _cte(part: Message, defects: _Defects) -> str:
    """The transfer encoding, read leniently: 'base64', 'quoted-printable', 'uuencode' or ''."""
    raw = _first_raw(part, "content-transfer-encoding")
    if raw is None:
        return ""
    value = raw.strip().strip("\"'").split(";", 1)[0].strip().lower()
    if value in ("", "7bit", "8bit", "binary"):
        return ""
    if "base64" in value:
        return "base64"
    if "quoted" in value or "printable" in value or value == "qp":
        if value != "quoted-printable":
            defects.add(f"content transfer encoding {raw!r} read as quoted-printable")
        return "quoted-printable"
    if "uu" in value:
        return "uuencode"
    defects.add(f"unknown content transfer encoding {raw!r}, body read as it is")
    return ""


def _raw_payload(part: Message) -> object:
    """The body as the parser read it (8-bit bytes as surrogate escapes).

    ``get_payload()`` re-decodes an 8-bit body in its declared charset with
    errors="replace", which loses exactly the bytes a wrong or unknown label
    makes us read ourselves; the parser's lossless text is only on ``_payload``.
    """
    return getattr(part, "_payload", None)


def _payload_bytes(part: Message, defects: _Defects) -> bytes:
    payload = _raw_payload(part)
    if payload is None or isinstance(payload, list):
        return b""
    if isinstance(payload, bytes):
        raw = payload
    else:
        raw = str(payload).encode("utf-8", "surrogateescape")
    cte = _cte(part, defects)
    try:
        if cte == "base64":
            if not _looks_like_base64(raw):
                defects.add("body labelled base64 is not base64; read as it is")
                return raw
            return _b64decode_lenient(raw)
        if cte == "quoted-printable":
            return quopri.decodestring(raw)
        if cte == "uuencode":
            return _uudecode(raw, defects)
    except (binascii.Error, ValueError) as exc:
        defects.add(f"{cte} body undecodable ({exc}), kept as it is")
    return raw


_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=\r\n]")


def _looks_like_base64(data: bytes) -> bool:
    """Base64 has no characters outside its alphabet inside its lines; text has
    spaces and punctuation. A stray character or two is still base64."""
    sample = b"\n".join(line.strip() for line in data[:65536].splitlines())
    junk = len(_NOT_BASE64_RE.findall(sample))
    return junk * 20 <= len(sample)


def _uudecode(data: bytes, defects: _Defects) -> bytes:
    out = bytearray()
    inside = False
    for line in data.splitlines():
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines wrongly; decode what the length byte promises.
            length = (((line[0] - 32) & 63) * 4 + 5) // 3 if line else 0
            try:
                out += binascii.a2b_uu(line[:length])
            except binascii.Error:
                defects.add("bad uuencoded line skipped")
    if not inside:
        return data  # labelled uuencode but not encoded at all
    return bytes(out)


def _part_size(part: Message, defects: _Defects, limit: int) -> int:
    payload = _raw_payload(part)
    if isinstance(payload, list):
        total = 0
        for sub in payload:
            if isinstance(sub, Message):
                total += _message_size(sub)
        return total
    if payload is None:
        return 0
    text = str(payload)
    cte = _cte(part, _Defects())  # already reported when the part was read
    if cte == "base64":
        # Exact for well-formed base64 and needs no decoding of a huge part.
        chars = len(_B64_JUNK_RE.sub(b"", text.encode("utf-8", "surrogateescape")))
        return chars * 3 // 4
    if len(text) > limit:
        return len(text)
    return len(_payload_bytes(part, _Defects()))


def _message_size(msg: Message) -> int:
    for policy in (email.policy.default, email.policy.compat32):
        try:
            return len(msg.as_bytes(policy=policy))
        except Exception:
            continue
    return 0


def _filename(part: Message, defects: _Defects) -> str | None:
    """The attachment's name: RFC 2231, encoded-words, and unquoted names with spaces."""
    raw_cd = _first_raw(part, "content-disposition") or ""
    raw_ct = _first_raw(part, "content-type") or ""
    name: str | None = None
    if re.search(r"(?:file)?name\*", raw_cd + raw_ct, re.IGNORECASE):
        # RFC 2231 (charset'lang'%XX and name*0*= continuations): the library's job.
        try:
            name = part.get_filename() or _raw_param(part, "content-type", "name")
        except Exception:
            name = None
    if name is None:
        for raw, param in ((raw_cd, "filename"), (raw_ct, "name")):
            match = re.search(
                rf'(?:^|;)\s*{param}\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', raw, re.IGNORECASE
            )
            if match:
                value = match.group(1).strip()
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                name = value
                break
    if name is None:
        return None
    name = _unsurrogate(name)
    name = " ".join(_decode_words(name, defects, "attachment name").split())
    return name or None


def _disposition(part: Message) -> str | None:
    raw = _first_raw(part, "content-disposition")
    if raw is None:
        return None
    value = raw.split(";", 1)[0].strip().strip("\"'").lower()
    return value if value in ("inline", "attachment") else None


def _content_id(part: Message) -> str | None:
    raw = _first_raw(part, "content-id")
    if not raw:
        return None
    value = _unsurrogate(raw).strip().strip("<>").strip()
    return value or None


_META_CHARSET_RE = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)


@dataclass
class _Body:
    """What a walk over the MIME tree collects."""

    pieces: list[tuple[str, str]] = field(default_factory=list)  # ("plain"|"html", text)
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    language: str | None = None
    parts: int = 0


class _Walker:
    """Walks the MIME tree once: body text in order, the HTML, attachments' metadata."""

    def __init__(self, defects: _Defects, max_text_chars: int, max_attachment_bytes: int) -> None:
        self.defects = defects
        self.max_text_bytes = max_text_chars * 4  # UTF-8's worst case per character
        self.max_html_bytes = max_text_chars * _HTML_FACTOR  # conversion is ~2 s per MB
        self.max_attachment_bytes = max_attachment_bytes
        self.body = _Body()
        self.text_attachments: list[tuple[Message, str]] = []

    def walk(self, part: Message, depth: int = 0, *, body: bool = True) -> None:
        self.body.parts += 1
        if depth > _MAX_DEPTH or self.body.parts > _MAX_PARTS:
            self.defects.add("MIME tree too deep or too large; the rest ignored")
            return
        self.defects.add_python(list(getattr(part, "defects", [])), "mime")
        ctype = _content_type(part)
        maintype = ctype.split("/", 1)[0]
        if maintype == "message" and isinstance(part.get_payload(), list):
            # An attached mail (message/rfc822, forwarded as attachment): its
            # words are not the sender's, so it is listed, not read.
            self._attachment(part, ctype)
            return
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if ctype == "multipart/alternative":
                chosen = _choose_alternative(children)
                for child in children:
                    self.walk(child, depth + 1, body=body and child is chosen)
            elif ctype == "multipart/report":
                # Only the human-readable first part is text; the machine parts
                # are read by _delivery_report, not listed as attachments.
                first = _content_type(children[0]) if children else "message/"
                if not first.startswith("message/") and first not in _HEADER_DUMP_TYPES:
                    self.walk(children[0], depth + 1, body=body)
            else:
                for child in children:
                    self.walk(child, depth + 1, body=body)
            return
        if maintype == "multipart":
            recovered = _recover_multipart(part, self.defects)
            if recovered is not None:
                self.walk(recovered, depth + 1, body=body)
                return
            if not str(_raw_payload(part) or "").strip():
                return  # an empty multipart: nothing to read
            self.defects.add(f"{ctype} without readable parts, read as text")
            ctype = "text/plain"
        filename = _filename(part, self.defects)
        disposition = _disposition(part)
        if ctype in ("text/plain", "text/html"):
            # A name alone does not make text an attachment: MMS gateways and
            # some clients name the message's own text part. Only the sender's
            # "attachment" does, and even then it is the fallback body text.
            if disposition != "attachment":
                self._text(part, ctype, body=body)
                return
            if body:
                self.text_attachments.append((part, ctype))
        self._attachment(part, ctype, filename=filename, disposition=disposition)

    def fall_back_to_text_attachments(self) -> None:
        """No body text at all: read the text attachments as the body."""
        if self.body.pieces or not self.text_attachments:
            return
        self.defects.add("no body text; the text attachment read as the body")
        for part, ctype in self.text_attachments:
            self._text(part, ctype, body=True)

    def _text(self, part: Message, ctype: str, *, body: bool) -> None:
        is_html = ctype == "text/html"
        if not body and not (is_html and self.body.html is None):
            return  # an alternative rendering of text already taken
        data = _payload_bytes(part, self.defects)
        limit = self.max_html_bytes if is_html else self.max_text_bytes
        truncated = len(data) > limit
        if truncated:
            self.defects.add(f"{ctype} body of {len(data)} bytes: only the first {limit} read")
            data = data[:limit]
        charset = _raw_param(part, "content-type", "charset")
        if is_html and charset is None:
            meta = _META_CHARSET_RE.search(data[:4096])
            charset = meta.group(1).decode("ascii", "replace") if meta else None
        text = _decode_bytes(data, charset, self.defects, ctype, truncated=truncated)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        if not is_html and _first_raw(part, "content-type") is None and _looks_like_html(text):
            self.defects.add("body without a Content-Type is HTML; read as HTML")
            is_html = True
        if is_html:
            if self.body.html is None:
                self.body.html = text
            if not body:
                return
        elif (_raw_param(part, "content-type", "format") or "").lower() == "flowed":
            delsp = (_raw_param(part, "content-type", "delsp") or "").lower() == "yes"
            text = _unflow(text, delsp=delsp)
        if self.body.language is None:
            self.body.language = _first_raw(part, "content-language")
        self.body.pieces.append(("html" if is_html else "plain", text))

    def _attachment(
        self,
        part: Message,
        ctype: str,
        *,
        filename: str | None = None,
        disposition: str | None = None,
    ) -> None:
        if filename is None:
            filename = _filename(part, self.defects)
        if disposition is None:
            disposition = _disposition(part)
        content_id = _content_id(part)
        size = _part_size(part, self.defects, self.max_attachment_bytes)
        if size > self.max_attachment_bytes:
            self.defects.add(
                f"attachment {filename or ctype!r} is {size} bytes, over the "
                f"{self.max_attachment_bytes}-byte limit"
            )
        inline = disposition == "inline" or (disposition is None and content_id is not None)
        self.body.attachments.append(Attachment(filename, ctype, size, content_id, inline))


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:2000]
    return head.startswith("<") and bool(
        re.search(r"<(?:html|body|p|br|div|table)\b", head, re.IGNORECASE)
    )


def _choose_alternative(children: list[Message]) -> Message | None:
    """The alternative to route on: non-empty plain text first, else HTML, else the first."""
    best: Message | None = None
    best_score = -1
    for child in children:
        score = _alternative_score(child, 0)
        if score > best_score:
            best, best_score = child, score
    return best


def _alternative_score(part: Message, depth: int) -> int:
    ctype = _content_type(part)
    if ctype == "text/plain":
        payload = _raw_payload(part)
        return 2 if isinstance(payload, str) and payload.strip() else 0
    if ctype == "text/html":
        return 1
    if ctype.startswith("multipart/") and part.is_multipart() and depth < 5:
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        return max((_alternative_score(c, depth + 1) for c in children), default=0)
    return 0


def _recover_multipart(part: Message, defects: _Defects) -> Message | None:
    """Re-split a multipart whose boundary parameter is missing or wrong.

    The boundary actually used is the "--X" line that opens parts and is
    closed by "--X--"; the part is re-parsed with it.
    """
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return None
    openers: Counter[str] = Counter()
    closers: set[str] = set()
    for line in payload.splitlines():
        if not line.startswith("--") or len(line) > 200:
            continue
        candidate = line[2:].rstrip()
        if candidate.endswith("--"):
            closers.add(candidate[:-2])
        openers[candidate] += 1
    usable = [b for b in openers if b.strip("-") and (b in closers or openers[b] >= 2)]
    if not usable:
        return None
    boundary = max(usable, key=lambda b: (b in closers, openers[b], len(b)))
    if openers[boundary] > MAX_MIME_PARTS:  # the same bound check_structure keeps
        defects.add(f"multipart without a boundary parameter has over {MAX_MIME_PARTS} parts")
        return None
    subtype = _content_type(part).split("/", 1)[1] or "mixed"
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
    try:
        rebuilt = email.message_from_bytes(
            head.encode("utf-8", "surrogateescape") + payload.encode("utf-8", "surrogateescape"),
            policy=email.policy.default,
        )
    except Exception:
        return None
    if not rebuilt.is_multipart():
        return None
    defects.add(f"multipart boundary missing or wrong; recovered {boundary[:60]!r}")
    return rebuilt


def _unflow(text: str, *, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines back into paragraphs."""
    out: list[str] = []
    current: str | None = None
    current_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if current is not None and depth != current_depth:
            out.append(_quote_prefix(current_depth) + current)
            current = None
        flowed = content.endswith(" ") and content.rstrip() != "--"
        if flowed and delsp:
            content = content[:-1]
        current = content if current is None else current + content
        current_depth = depth
        if not flowed:
            out.append(_quote_prefix(depth) + current)
            current = None
    if current is not None:
        out.append(_quote_prefix(current_depth) + current)
    return "\n".join(out)


def _quote_prefix(depth: int) -> str:
    return ">" * depth + " " if depth else ""


# --------------------------------------------------------------------------- HTML

_HTML_CONFIG = ParserConfig(display_links=False, display_images=False)
_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>")
_QUOTE_XPATH = (
    "//blockquote"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' yahoo_quoted ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' moz-cite-prefix ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_signature ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' moz-signature ')]"
    "|//*[@id='divRplyFwdMsg']|//*[@id='appendonsend']"
)


def _html_to_text(html: str, defects: _Defects) -> tuple[str, str]:
    """Readable text from HTML (inscriptis): the whole of it, and without quoted replies.

    The tree is parsed once; the second rendering only happens when the HTML
    has reply-quote elements to drop (conversion is the slow step).
    """
    source = _XML_DECL_RE.sub("", html, count=1).strip()
    if not source:
        return "", ""
    try:
        try:
            tree = lxml_html.document_fromstring(source)
        except etree.ParserError:
            tree = lxml_html.document_fromstring("<pre>" + source + "</pre>")
        for element in tree.xpath("//script|//style|//noscript|//template|//head"):
            element.drop_tree()
        full = _tidy(Inscriptis(tree, _HTML_CONFIG).get_text())
        quotes = tree.xpath(_QUOTE_XPATH)
        if not quotes:
            return full, full
        for element in quotes:
            if element.getparent() is not None:
                # Outlook's reply header div: everything after it is history too.
                if element.get("id") in ("divRplyFwdMsg", "appendonsend"):
                    for sibling in list(element.itersiblings()):
                        sibling.drop_tree()
                element.drop_tree()
        return full, _tidy(Inscriptis(tree, _HTML_CONFIG).get_text())
    except Exception as exc:  # lxml refuses some inputs (control characters, huge trees)
        defects.add(f"HTML not convertible ({type(exc).__name__}), tags stripped instead")
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", source)
        text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", "\n", text)
        text = _tidy(unescape_html(re.sub(r"<[^>]*>", " ", text)))
        return text, text


def _tidy(text: str) -> str:
    text = text.replace("\xa0", " ").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").strip()


# --------------------------------------------------------------------------- reports


def _delivery_report(msg: Message, defects: _Defects) -> DeliveryReport | None:
    report = _find_report(msg, 0)
    if report is None:
        return None
    children = [c for c in report.get_payload() if isinstance(c, Message)]
    fields: dict[str, str] = {}
    original: str | None = None
    for child in children:
        ctype = _content_type(child)
        if ctype in ("message/delivery-status", "message/global-delivery-status") and not fields:
            fields = _recipient_fields(child)
        elif ctype in ("message/rfc822", "message/global") and original is None:
            inner = child.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                original = _unsurrogate(_first_raw(inner[0], "message-id") or "") or None
        elif ctype in _HEADER_DUMP_TYPES and original is None:
            original = _id_in_header_dump(child, defects)
    if not fields:
        defects.add("delivery report without a per-recipient block")
    original_ids = _message_ids([original]) if original else []
    recipient = _strip_type(fields.get("final-recipient") or fields.get("original-recipient"))
    if recipient:
        recipient = normalise_email(recipient.strip("<>")) or recipient.strip("<>").lower()
    status = fields.get("status")
    if status:
        found = re.search(r"\d\.\d{1,3}\.\d{1,3}", status)
        status = found.group(0) if found else status.split()[0]
    return DeliveryReport(
        original_message_id=original_ids[0] if original_ids else None,
        recipient=recipient or None,
        action=(fields.get("action") or "").split()[0].lower() if fields.get("action") else None,
        status=status or None,
        diagnostic=_strip_type(fields.get("diagnostic-code")) or None,
    )


def _find_report(part: Message, depth: int) -> Message | None:
    """The delivery-status multipart/report, not looking inside attached messages."""
    if depth > 10 or not part.is_multipart():
        return None
    children = [c for c in part.get_payload() if isinstance(c, Message)]
    if _content_type(part) == "multipart/report":
        report_type = (_raw_param(part, "content-type", "report-type") or "").lower()
        has_status = any(
            _content_type(c) in ("message/delivery-status", "message/global-delivery-status")
            for c in children
        )
        if report_type == "delivery-status" or has_status:
            return part
    for child in children:
        if _content_type(child).startswith("multipart/"):
            found = _find_report(child, depth + 1)
            if found is not None:
                return found
    return None


def _recipient_fields(part: Message) -> dict[str, str]:
    """The first block of a delivery-status part that names a recipient or an action."""
    payload = part.get_payload()
    blocks: list[dict[str, str]] = []
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                blocks.append(
                    {
                        k.strip().lower(): " ".join(_unsurrogate(str(v)).split())
                        for k, v in sub.raw_items()
                    }
                )
    elif isinstance(payload, str):  # the parser did not split it: read it as text
        for chunk in re.split(r"\n\s*\n", payload.replace("\r\n", "\n")):
            fields: dict[str, str] = {}
            last = None
            for line in chunk.split("\n"):
                if line[:1] in (" ", "\t") and last:
                    fields[last] += " " + line.strip()
                elif ":" in line:
                    name, value = line.split(":", 1)
                    last = name.strip().lower()
                    fields[last] = value.strip()
            blocks.append(fields)
    for block in blocks:
        if "action" in block or "final-recipient" in block:
            return block
    return {}


# The original's headers in a bounce. message/rfc822-headers is not a
# registered type but MTAs send it; the parser reads message/* as a message.
_HEADER_DUMP_TYPES = ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers")


def _id_in_header_dump(part: Message, defects: _Defects) -> str | None:
    payload = _raw_payload(part)
    if isinstance(payload, list):
        inner = next((p for p in payload if isinstance(p, Message)), None)
        found = _first_raw(inner, "message-id") if inner is not None else None
        return _unsurrogate(found) if found else None
    data = _payload_bytes(part, defects)
    try:
        headers = BytesParser(policy=email.policy.compat32).parsebytes(data, headersonly=True)
    except Exception:
        return None
    value = headers.get("message-id")
    return _unsurrogate(str(value)) if value is not None else None


def _strip_type(value: str | None) -> str | None:
    """'rfc822; a@b' -> 'a@b', 'smtp; 550 ...' -> '550 ...'."""
    if value is None:
        return None
    if ";" in value and re.match(r"^\s*[\w-]{1,20}\s*;", value):
        value = value.split(";", 1)[1]
    return " ".join(value.split()) or None


# --------------------------------------------------------------------------- parse

_HEADER_LINE_RE = re.compile(rb"^[!-9;-~]+:")
_OBS_HEADER_LINE_RE = re.compile(rb"^([!-9;-~]+)[ \t]+:")
_LANGUAGE_TAG_RE = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")


def parse(
    raw: bytes, *, max_text_chars: int = 100_000, max_attachment_bytes: int = 25_000_000
) -> ParsedMail:
    """Parse one raw RFC 822 message.

    Never raises for any input bytes except :class:`MailError`, which means
    there is nothing usable: empty input, no header at all, or neither a
    sender nor a body. Everything repaired on the way is in ``defects``.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse() wants bytes, not {type(raw).__name__}")
    data = bytes(raw)
    if not data.strip():
        raise MailError("empty message")
    try:
        return _parse(data, max_text_chars, max_attachment_bytes)
    except MailError:
        raise
    except RecursionError as exc:
        raise MailError("message structure too deeply nested to parse") from exc
    except Exception as exc:  # the promise to the adapter: a bad message is a reason, not a crash
        raise MailError(f"unparseable message ({type(exc).__name__}: {exc})"[:300]) from exc


def check_structure(
    raw: bytes, *, max_parts: int = MAX_MIME_PARTS, max_depth: int = MAX_MIME_DEPTH
) -> None:
    """Refuse (MailError) a message whose MIME tree is too large or too deep.

    Reads only the raw lines (Content-Type headers and boundary delimiter
    lines, split the way the standard library's parser splits parts), so the
    bound holds before that parser builds anything. Linear in the size, no
    recursion, and it stops at the first limit crossed.
    """
    # Each open container: the boundary of a multipart, or None for an
    # attached message (message/rfc822) whose own header block comes next.
    stack: list[bytes | None] = []
    digests: set[int] = set()  # levels that are multipart/digest
    in_digest = False  # this header block opens a part of a digest
    in_headers = True
    status_blocks = False  # in a message/delivery-status body: each block is a part
    content_type: bytes | None = None
    collecting = False
    parts = 0

    def count_part() -> None:
        nonlocal parts
        parts += 1
        if parts > max_parts:
            raise MailError(f"more than {max_parts} MIME parts; refused before parsing")

    for line in raw.splitlines():
        if line.startswith(b"--") and any(b is not None for b in stack):
            candidate = line[2:].rstrip(b" \t")
            level, closing = _open_boundary(stack, candidate)
            if level is not None:
                del stack[level + 1 :]
                digests = {d for d in digests if d < len(stack)}
                status_blocks = False
                if closing:
                    stack.pop()
                    digests.discard(level)
                    in_headers = False  # the epilogue: no structure in it
                else:
                    count_part()
                    in_headers, content_type, collecting = True, None, False
                    in_digest = level in digests
                continue
        while in_headers:
            if line[:1] in (b" ", b"\t"):  # a continuation line (also one of blanks)
                if collecting and content_type is not None:
                    content_type += b" " + line.strip()
                break
            if line and _HEADER_START_RE.match(line):
                name, _, value = line.partition(b":")
                # The parser goes by the first Content-Type of a block.
                collecting = content_type is None and name.strip().lower() == b"content-type"
                if collecting:
                    content_type = value.strip()
                break
            # The empty line, or a line that is no header (which the parser
            # takes as the first body line): what does the block open?
            # (a digest's part without a type is a message/rfc822 to the parser)
            in_headers, opened = False, _opens(content_type or b"", in_digest)
            digest = _is_digest(content_type or b"")
            content_type, collecting, in_digest = None, False, False
            if opened == b"":
                status_blocks = True
            elif opened is not False:
                stack.append(opened if isinstance(opened, bytes) else None)
                if digest and isinstance(opened, bytes):
                    digests.add(len(stack) - 1)
                if len(stack) > max_depth:
                    raise MailError(
                        f"MIME nesting deeper than {max_depth} levels; refused before parsing"
                    )
                in_headers = opened is None  # an attached message: its headers follow
            if not line:
                break  # the separator itself is no body line
        else:
            if status_blocks:
                if not line.strip():
                    count_part()
            elif not any(b is not None for b in stack):
                return  # a body outside any multipart: nothing below can open a part


# A header line to the parser (email.feedparser.headerRE): "From ", or a name and a colon.
_HEADER_START_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:")


def _open_boundary(stack: list[bytes | None], candidate: bytes) -> tuple[int | None, bool]:
    """The innermost open multipart a delimiter line belongs to, and whether it closes it."""
    for level in range(len(stack) - 1, -1, -1):
        boundary = stack[level]
        if boundary is None:
            continue
        if candidate == boundary:
            return level, False
        if candidate.endswith(b"--") and candidate[:-2] == boundary:
            return level, True
    return None, False


def _opens(content_type: bytes, in_digest: bool = False) -> bytes | bool | None:
    """What a header block's Content-Type opens, read as the parser reads it.

    A multipart's boundary; None for an attached message (parsed as one);
    b"" for a delivery-status body (parsed as blocks of fields); False for a leaf.
    Without a (valid) type, a part of a multipart/digest is a message.
    """
    probe = email.message.Message()  # the parser's own reading of one header
    if in_digest:
        probe.set_default_type("message/rfc822")
    if content_type:
        probe["Content-Type"] = content_type.decode("ascii", "surrogateescape")
    try:
        maintype, subtype = probe.get_content_maintype(), probe.get_content_subtype()
        if maintype == "multipart":
            boundary = probe.get_boundary()
            return boundary.encode("ascii", "surrogateescape") if boundary else False
    except Exception:  # what the parser cannot read it reads as a leaf
        return False
    if maintype == "message":
        return b"" if subtype == "delivery-status" else None
    return False


def _is_digest(content_type: bytes) -> bool:
    probe = email.message.Message()
    probe["Content-Type"] = content_type.decode("ascii", "surrogateescape")
    try:
        return probe.get_content_type() == "multipart/digest"
    except Exception:
        return False


def _parse(data: bytes, max_text_chars: int, max_attachment_bytes: int) -> ParsedMail:
    defects = _Defects()
    # Whitespace (or a BOM) before the first header line would make it a
    # continuation line of nothing, and the parser would drop the sender.
    data = data.lstrip(b" \t\r\n").removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    check_structure(data)
    msg = _parse_structure(data, defects)

    body_charset = _charset_hint(msg)
    headers = _Headers(msg, defects, body_charset)
    if len(headers) == 0:
        raise MailError("no headers")

    sender, display_name = _address(headers, msg, "from", defects)
    if sender is None and headers.get("from") is None:
        sender, display_name = _address(headers, msg, "sender", defects)
    reply_to, _ = _address(headers, msg, "reply-to", defects)

    raw_subject = _header_text(headers, "subject", defects) or ""
    walker = _Walker(defects, max_text_chars, max_attachment_bytes)
    walker.walk(msg)
    walker.fall_back_to_text_attachments()
    body = walker.body

    full_pieces: list[str] = []
    route_pieces: list[str] = []
    for kind, piece in body.pieces:
        if kind == "html":
            full, routed_part = _html_to_text(piece, defects)
            full_pieces.append(full)
            route_pieces.append(routed_part)
        else:
            full_pieces.append(_tidy(piece))
            route_pieces.append(full_pieces[-1])
    full_text = "\n\n".join(p for p in full_pieces if p)
    routed = "\n\n".join(p for p in route_pieces if p) or full_text
    # Quotes start near the top; cutting first bounds the work on huge bodies.
    text = strip_quoted(routed[:max_text_chars]) if routed else ""
    if len(full_text) > max_text_chars:
        defects.add(f"text cut at {max_text_chars} characters (was {len(full_text)})")
        full_text = full_text[:max_text_chars]
    text = text[:max_text_chars]
    html = body.html
    if html is not None and len(html) > max_text_chars * _HTML_FACTOR:
        defects.add(f"HTML cut at {max_text_chars * _HTML_FACTOR} characters")
        html = html[: max_text_chars * _HTML_FACTOR]

    if sender is None and not full_text.strip() and not body.attachments:
        raise MailError("no sender and no body")

    auto_submitted = _keyword(headers.get("auto-submitted"))
    report = _delivery_report(msg, defects)
    in_reply_to = _message_ids(headers.get_all("in-reply-to"))
    bounce = _is_bounce(headers, sender, raw_subject, auto_submitted)
    if report is None and bounce and _is_plain_bounce(headers, sender, raw_subject):
        report = _plain_text_report(msg, full_text, raw_subject, in_reply_to, headers)
    parsed = ParsedMail(
        message_id=next(iter(_message_ids(headers.get_all("message-id")[:1])), None),
        in_reply_to=in_reply_to,
        references=_message_ids(headers.get_all("references")),
        sender=sender,
        display_name=display_name,
        reply_to=reply_to,
        subject=normalise_subject(raw_subject),
        raw_subject=raw_subject,
        text=text,
        full_text=full_text,
        html=html,
        attachments=body.attachments,
        content_language=_content_language(headers.get("content-language") or body.language),
        date_offset=_date_offset(headers.get("date")),
        auto_submitted=auto_submitted,
        bulk=_is_bulk(headers),
        bounce=bounce or report is not None,
        # A delivery report is stamped auto-replied by most MTAs, but it is a
        # bounce, not an out-of-office: the two flags mean different handling.
        auto_reply=report is None and _is_auto_reply(headers, raw_subject, auto_submitted),
        delivery_report=report,
        defects=defects.list(),
    )
    # The result goes to Redis as JSON: no escaped raw bytes may survive in it.
    _utf8_fields(parsed)
    return parsed


def _parse_structure(data: bytes, defects: _Defects) -> Message:
    """The MIME tree, re-parsed without broken header lines when they hid the headers."""
    msg: Message
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:
        defects.add(f"modern parser failed ({type(exc).__name__}); read with compat32")
        msg = BytesParser(policy=email.policy.compat32).parsebytes(data)
    broken = any(
        type(d).__name__ in ("MissingHeaderBodySeparatorDefect", "MisplacedEnvelopeHeaderDefect")
        for d in msg.defects
    )
    if not broken and len(msg.keys()) > 0:
        return msg
    repaired = _repair_headers(data, defects)
    if repaired is None:
        return msg
    check_structure(repaired)  # the repair may reveal a Content-Type: bound it too
    try:
        again = email.message_from_bytes(repaired, policy=email.policy.default)
    except Exception:
        return msg
    return again if len(again.keys()) > len(msg.keys()) else msg


def _repair_headers(data: bytes, defects: _Defects) -> bytes | None:
    """Drop header lines that are not headers; fix obsolete "Name :" syntax."""
    split = re.search(rb"\r?\n\r?\n", data)
    head, rest = (data[: split.start()], data[split.start() :]) if split else (data, b"")
    out: list[bytes] = []
    changed = False
    for index, line in enumerate(head.splitlines(keepends=True)):
        if index == 0 and line.startswith(b"From ") and not re.match(rb"From\s*:", line):
            out.append(line)  # mbox envelope line: the parser knows it
        elif line[:1] in (b" ", b"\t"):
            if out:
                out.append(line)
            else:
                changed = True
        elif _HEADER_LINE_RE.match(line):
            out.append(line)
        elif obsolete := _OBS_HEADER_LINE_RE.match(line):
            out.append(obsolete.group(1) + b":" + line[obsolete.end() :])
            changed = True
        else:
            shown = line.strip()[:60].decode("utf-8", "replace")
            defects.add(f"malformed header line dropped: {shown!r}")
            changed = True
    if not changed or not out:
        return None
    return b"".join(out) + rest


def _charset_hint(msg: Message) -> str | None:
    """The body's declared charset: how a client would read raw 8-bit headers."""
    for part in _iter_parts(msg, 0):
        if _content_type(part).startswith("text/"):
            charset = _raw_param(part, "content-type", "charset")
            if charset and _charset_codecs(charset)[1]:
                return charset
    return None


def _iter_parts(part: Message, depth: int) -> Iterator[Message]:
    yield part
    if depth < 10 and _content_type(part).startswith("multipart/") and part.is_multipart():
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _iter_parts(child, depth + 1)


def _content_language(value: str | None) -> str | None:
    """The first language tag of Content-Language ("de-DE, en" -> "de-DE")."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first if _LANGUAGE_TAG_RE.match(first) else None
