"""E-mail out: replies and acknowledgements by SMTP (aiosmtplib).

Each reply carries ``In-Reply-To`` / ``References`` of the customer's last
message, so their mail client threads it; a text part and an HTML part; a
Message-ID the daemon remembers, so the customer's answer threads back into
the conversation and a bounce (delivery report) marks this reply failed.
Acknowledgements carry ``Auto-Submitted: auto-replied`` (RFC 3834), so other
auto-responders do not answer them. Temporary failures are retried by the
outbox; a refused recipient (5xx) fails for good.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formataddr, formatdate

import aiosmtplib

from router.adapters.base import AdapterContext, PermanentSendError
from router.adapters.imap import tls_context
from router.config import EmailSettings, SmtpSettings
from router.model import OutboundMessage

SENT_TTL = 30 * 86400  # how long a sent Message-ID maps to its outbox id (bounces)

_ID_SAFE_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")
_ADDRESS_RE = re.compile(r"<?[^\s<>@,;:\"'()\[\]]+@[^\s<>@,;:\"'()\[\]]+>?")


class SmtpTemporaryError(Exception):
    """The server refused for now (4xx, a dropped connection): the outbox retries."""


def message_id(outbox_id: str, domain: str | None) -> str:
    """The Message-ID of one outbox entry: the same on every attempt."""
    local = outbox_id if _ID_SAFE_RE.fullmatch(outbox_id) else None
    if local is None:  # an agent tool's own id: any characters, so hashed
        local = hashlib.blake2s(outbox_id.encode(), digest_size=16).hexdigest()
    return f"<{local}@{domain or 'router.invalid'}>"


def redact(text: str) -> str:
    """An SMTP error without the addresses servers quote in it."""
    return _ADDRESS_RE.sub("<address>", text)


def build(message: OutboundMessage, smtp: SmtpSettings) -> EmailMessage:
    """The MIME message of a reply."""
    mail = EmailMessage()
    queue = message.meta.get("queue", "")
    sender = smtp.from_by_queue.get(queue, smtp.from_address)
    mail["From"] = formataddr((smtp.from_name or "", sender)) if smtp.from_name else sender
    mail["To"] = message.to
    subject = message.subject or ""
    if (
        message.kind not in ("new", "transcript", "verify")
        and subject
        and not subject.lower().startswith("re:")
    ):
        subject = f"Re: {subject}"
    mail["Subject"] = subject or "Your message"
    mail["Date"] = formatdate(localtime=False)
    domain = smtp.message_id_domain or sender.rpartition("@")[2] or None
    mail["Message-ID"] = message_id(message.id, domain)
    if message.in_reply_to:
        ref = message.in_reply_to.strip("<>")
        if "@" in ref:  # an e-mail Message-ID, not another channel's id
            mail["In-Reply-To"] = f"<{ref}>"
            mail["References"] = f"<{ref}>"
    if message.kind == "ack":
        mail["Auto-Submitted"] = "auto-replied"
        mail["X-Auto-Response-Suppress"] = "All"
    elif message.kind in ("verify", "transcript"):
        # written by the daemon, not in answer to a mail (RFC 3834): an
        # auto-responder must not answer it and open a conversation
        mail["Auto-Submitted"] = "auto-generated"
        mail["X-Auto-Response-Suppress"] = "All"
    if message.meta.get("language"):
        mail["Content-Language"] = message.meta["language"]
    mail.set_content(message.text)
    body = "<br>\n".join(html.escape(line) for line in message.text.splitlines())
    mail.add_alternative(
        f"<!doctype html><html><body><div>{body}</div></body></html>", subtype="html"
    )
    return mail


class SmtpSender:
    """Sends e-mail replies."""

    channel = "email"

    def __init__(self, settings: Callable[[], EmailSettings], ctx: AdapterContext) -> None:
        self.settings = settings
        self.ctx = ctx

    async def send(self, message: OutboundMessage) -> str:
        smtp = self.settings().smtp
        if smtp is None:
            raise PermanentSendError("channels.email.smtp is not configured")
        mail = build(message, smtp)
        port = smtp.port or {"tls": 465, "starttls": 587, "none": 25}[smtp.security]
        ctx = tls_context(smtp.verify_tls, smtp.ca_file)
        sent_id = str(mail["Message-ID"]).strip("<>")
        # Remembered before sending: a crash after the server took the mail
        # must not leave its bounce unmatched (the retry sends the same id).
        await self.ctx.state.put(f"sent:{sent_id}", message.id, ttl=SENT_TTL)
        try:
            await aiosmtplib.send(
                mail,
                hostname=smtp.host,
                port=port,
                use_tls=smtp.security == "tls",
                start_tls=True if smtp.security == "starttls" else False,
                tls_context=ctx if smtp.security != "none" else None,
                username=smtp.username,
                password=smtp.password.value if smtp.password else None,
                timeout=smtp.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusals = "; ".join(f"{r.code} {redact(r.message)}" for r in exc.recipients)
            if all(500 <= r.code < 600 for r in exc.recipients):
                raise PermanentSendError(f"recipient refused: {refusals}") from None
            raise SmtpTemporaryError(f"recipient refused for now: {refusals}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600 and exc.code != 554:
                raise PermanentSendError(f"SMTP {exc.code}: {redact(exc.message)}") from None
            raise SmtpTemporaryError(f"SMTP {exc.code}: {redact(exc.message)}") from None
        except aiosmtplib.SMTPException as exc:
            raise SmtpTemporaryError(f"{type(exc).__name__}: {redact(str(exc))}") from None
        except ValueError as exc:  # aiosmtplib: characters no SMTP command may carry
            raise PermanentSendError(f"refused before sending: {redact(str(exc))}") from None
        return sent_id
