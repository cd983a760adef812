"""What :func:`router.mail.parse` returns, and the one error it raises."""

from __future__ import annotations

from dataclasses import dataclass, field


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
