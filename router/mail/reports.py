"""Delivery reports: what bounced, to whom and why.

From a ``multipart/report; report-type=delivery-status`` (RFC 3464), or from
the words of a plain-text bounce (qmail, Exim, old Exchange).
"""

from __future__ import annotations

import email.policy
import re
from email.message import Message
from email.parser import BytesParser

from router.mail.defects import _Defects, _unsurrogate
from router.mail.headers import _Headers, _message_ids
from router.mail.mime import (
    _HEADER_DUMP_TYPES,
    _content_type,
    _first_raw,
    _iter_parts,
    _payload_bytes,
    _raw_param,
    _raw_payload,
)
from router.mail.model import DeliveryReport
from router.profiles.identity import normalise_email


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


_DELAY_RE = re.compile(r"delay|deferred|still trying|will (?:keep )?(?:re)?try|verzögert", re.I)


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
