"""Normalised customer identities: one spelling per person per channel kind.

Two messages from the same person must produce the same identity string, or
the customer splits into two profiles. E-mail addresses are lower-cased
(local parts are case-insensitive in practice), phone numbers become E.164.
"""

from __future__ import annotations

import re
from email.utils import parseaddr

import phonenumbers

from router.channels import IDENTITY_KINDS
from router.model import Identity

# No spaces and no control characters (C0, DEL, C1): an address with a NUL or
# an escape in it would otherwise become a Redis key and reach log lines.
_PART = r"[^@\s<>\x00-\x1f\x7f-\x9f]+"
_EMAIL_RE = re.compile(rf"{_PART}@{_PART}\.{_PART}")  # (fullmatch)

# Channels whose sender is always of one kind (from the channel table).
_CHANNEL_KIND = IDENTITY_KINDS


def normalise_email(value: str) -> str | None:
    """``"Ana <Ana@Example.COM>"`` -> ``"ana@example.com"``; None if not an address."""
    plain = value.strip().lower()
    if _EMAIL_RE.fullmatch(plain):  # the common case, without the RFC 5322 parser
        return plain
    _, addr = parseaddr(value)
    addr = (addr or value).strip().lower()
    return addr if _EMAIL_RE.fullmatch(addr) else None


def normalise_phone(value: str, region: str | None = None) -> str | None:
    """Any written form of a number (``whatsapp:+44 20 ...``) -> E.164, or None."""
    value = value.strip()
    if value.lower().startswith("whatsapp:"):
        value = value[len("whatsapp:") :]
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_identity(raw: str, channel: str) -> Identity:
    """The identity behind a sender string as a channel gives it.

    Channels with a fixed kind (email, sms, x...) normalise to that kind. For
    the generic API the value is sniffed: an e-mail address or an
    international phone number links to the same profile as that person's
    mail or texts; anything else stays an opaque ``api`` id.
    """
    raw = raw.strip()
    kind = _CHANNEL_KIND.get(channel)
    if kind == "email":
        return Identity("email", normalise_email(raw) or raw.lower())
    if kind == "phone":
        return Identity("phone", normalise_phone(raw) or raw)
    if kind is not None:
        return Identity(kind, raw)
    if "@" in raw and (email := normalise_email(raw)):
        return Identity("email", email)
    if raw.startswith("+") and (phone := normalise_phone(raw)):
        return Identity("phone", phone)
    return Identity("api", raw)


def redact(identity: Identity, key: bytes) -> str:
    """A log-safe form: kind and a short hash keyed with the install's secret
    (``Store.log_key``), stable across lines and daemons but not reversible by
    hashing every phone number: never the address itself."""
    import hashlib

    digest = hashlib.blake2s(identity.value.encode(), digest_size=6, key=key).hexdigest()
    return f"{identity.kind}:{digest}"
