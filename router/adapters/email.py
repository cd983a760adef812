"""The e-mail channel: IMAP in (``imap.py``), SMTP out (``smtp.py``)."""

from __future__ import annotations

from collections.abc import Callable

from router.adapters.base import AdapterContext, Channel
from router.adapters.imap import ImapAdapter
from router.adapters.smtp import SmtpSender
from router.config import EmailSettings


def factory(
    settings: Callable[[], EmailSettings],
    ctx: AdapterContext,
    public_url: Callable[[], str | None],
) -> Channel[EmailSettings]:
    """Mailboxes watched over IMAP (if any accounts), replies by SMTP (if configured)."""
    email = settings()
    return Channel(
        adapter=ImapAdapter(settings, ctx) if email.accounts else None,
        senders={"email": SmtpSender(settings, ctx)} if email.smtp is not None else {},
        sends=lambda e: frozenset({"email"}) if e.smtp is not None else frozenset(),
        # the watchers are made at start, one per folder
        restart_only=("accounts",),
    )
