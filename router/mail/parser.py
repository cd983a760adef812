""":func:`parse`: raw RFC 822 bytes -> one :class:`ParsedMail`.

The one entry point, and the order of the work: check the structure, parse
the MIME tree (repairing broken header blocks), decode the headers, walk the
body, render HTML, strip quoted text, read the noise flags and any delivery
report, and make every string storable as UTF-8.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.message import Message
from email.parser import BytesParser

from router.mail.charsets import _charset_codecs
from router.mail.dates import _date_offset
from router.mail.defects import _Defects, _unsurrogate
from router.mail.headers import _address, _header_text, _Headers, _message_ids
from router.mail.html import _html_to_text, _tidy
from router.mail.limits import _HTML_FACTOR
from router.mail.mime import _content_type, _iter_parts, _raw_param, _Walker
from router.mail.model import MailError, ParsedMail
from router.mail.noise import _is_auto_reply, _is_bounce, _is_bulk, _is_plain_bounce, _keyword
from router.mail.quoted import strip_quoted
from router.mail.reports import _delivery_report, _plain_text_report
from router.mail.structure import check_structure
from router.mail.subjects import normalise_subject

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


def _content_language(value: str | None) -> str | None:
    """The first language tag of Content-Language ("de-DE, en" -> "de-DE")."""
    if not value:
        return None
    first = value.split(",", 1)[0].strip()
    return first if _LANGUAGE_TAG_RE.match(first) else None


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
