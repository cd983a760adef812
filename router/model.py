"""The data that flows through the daemon: normalised messages and decisions.

Adapters build an :class:`InboundMessage`; routing produces a
:class:`Decision`; agent tools' replies become :class:`OutboundMessage`.
They serialise to flat JSON with orjson for Redis.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


def new_id(prefix: str) -> str:
    """A unique id that sorts by creation time: ``m`` + 12 hex digits of
    milliseconds + 20 random hex digits (80 bits).

    Sorting ids sorts by creation time (to the millisecond), which makes
    Redis listings readable. Cheap: it is called several times per message.
    """
    return f"{prefix}{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


@dataclass(frozen=True, slots=True)
class Identity:
    """One way to reach a customer: ``email``/``phone``/``x``/``chat``/``api`` + value."""

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(slots=True)
class Hints:
    """What the channel tells us about language, place and time zone."""

    language: str | None = None  # e.g. email Content-Language, tweet lang
    locale: str | None = None  # e.g. browser "pt-BR"
    timezone: str | None = None  # e.g. browser "Asia/Tokyo"
    date_offset: str | None = None  # e.g. email Date: "+05:30"
    country: str | None = None  # ISO 3166 alpha-2


@dataclass(slots=True)
class InboundMessage:
    """A customer message from any channel, normalised.

    ``source_id`` is the channel's own id (IMAP UID key, MessageSid, tweet id,
    client message id); with ``channel`` it is the deduplication key.
    ``references`` are the channel's ids of what this message answers (an
    e-mail's In-Reply-To and References, an X conversation id, a chat
    session); they thread it into an earlier conversation.
    ``identities`` are further *verified* identities of the sender that the
    channel knows (the e-mail address a chat visitor typed): they tie
    profiles together.
    """

    channel: str
    sender: Identity
    text: str
    source_id: str | None = None
    subject: str | None = None
    display_name: str | None = None
    references: list[str] = field(default_factory=list)
    identities: list[Identity] = field(default_factory=list)
    received_at: float = field(default_factory=time.time)
    hints: Hints = field(default_factory=Hints)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    # Channel facts routing may use (e.g. auto_submitted=true), all strings.
    meta: dict[str, str] = field(default_factory=dict)
    id: str = ""

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serialises dataclasses natively (and fast)

    @classmethod
    def from_json(cls, raw: bytes | str) -> InboundMessage:
        data = orjson.loads(raw)
        data["sender"] = Identity(**data["sender"])
        data["hints"] = Hints(**data.get("hints") or {})
        data["identities"] = [Identity(**i) for i in data.get("identities") or ()]
        return cls(**data)


@dataclass(slots=True)
class Decision:
    """Where a message goes, when a person should answer, and why.

    Produced by the pure routing function; times are Unix seconds.
    """

    queue: str
    priority: str
    language: str
    language_source: str
    rule: str | None
    reasons: list[str]
    target_index: int = 0
    due_at: float | None = None
    timezone: str | None = None
    timezone_source: str | None = None
    team: str | None = None
    language_confidence: float | None = None
    country: str | None = None
    open: bool = True
    next_open: float | None = None
    eta_local: str | None = None
    ack_text: str | None = None
    agent: str | None = None  # sticky: the owner who gets this follow-up
    repeat: int = 0  # messages in this conversation since the last answer (this one included)
    overflow_at: float | None = None  # moves to the next target if unclaimed by then

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class OutboundMessage:
    """A reply (or acknowledgement) to send on a channel.

    Agent tools may give only ``id``, ``conversation_id`` and ``text`` (and
    ``agent``); the daemon fills in the channel, address and threading
    references from the conversation.
    """

    id: str
    conversation_id: str
    text: str
    channel: str = ""
    to: str = ""
    subject: str | None = None
    in_reply_to: str | None = None  # channel reference of the message answered
    agent: str | None = None
    kind: str = "reply"  # reply | ack
    attempt: int = 0
    meta: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> OutboundMessage:
        return cls(**orjson.loads(raw))
