"""``router explain``: dry-run the routing of one message, with the reasons.

Uses the same pure ``decide`` as the routing workers and touches no Redis.
Input: the JSON of ``POST /v1/messages`` (``from``, ``text``, ``channel``,
``subject``, ``hints``...), plus two optional keys to try what-ifs:
``customer`` (profile fields such as ``{"tier": "vip", "language_preference":
"lv", "timezone": "Europe/Riga"}``) and ``conversation`` (the open
conversation, e.g. ``{"id": "v1", "language": "ja", "last_activity": ...}``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import orjson

from router.adapters.api import BadRequest, parse_message
from router.config import Config
from router.profiles.context import Context
from router.routing import Routing, decide


class ExplainError(ValueError):
    """Bad input to explain."""


def parse_at(value: str | None) -> float:
    if not value:
        return time.time()
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ExplainError(f"--at {value!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ExplainError(f"--at {value!r} needs a UTC offset, e.g. 2026-11-23T09:30:00+05:30")
    return at.timestamp()


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def explain(cfg: Config, raw: bytes, at: str | None = None) -> dict[str, Any]:
    """The decision for the message JSON in ``raw``, as a JSON-able dict."""
    now = parse_at(at)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExplainError(f"bad message on stdin: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExplainError("bad message on stdin: expected a JSON object")
    customer = data.pop("customer", None) or {}
    conversation = data.pop("conversation", None) or {}
    if not isinstance(customer, dict) or not isinstance(conversation, dict):
        raise ExplainError("bad message on stdin: 'customer' and 'conversation' must be objects")
    try:
        message = parse_message(orjson.dumps(data), cfg.ingest.max_text_chars)
    except BadRequest as exc:
        raise ExplainError(f"bad message on stdin: {exc}") from None
    profile = Context(
        customer_id="(dry run)",
        created=not customer,
        customer={k: str(v) for k, v in customer.items()},
        conversation={k: str(v) for k, v in conversation.items()},
    )
    # show the acknowledgement as if the daemon could send on this channel
    d = decide(Routing.build(cfg, frozenset({message.channel})), message, profile, now)
    return {
        "queue": d.queue,
        "team": d.team,
        "rule": d.rule,
        "target": d.target_index,
        "language": d.language,
        "language_source": d.language_source,
        "language_confidence": d.language_confidence,
        "timezone": d.timezone,
        "timezone_source": d.timezone_source,
        "country": d.country,
        "open": d.open,
        "next_open": _iso(d.next_open),
        "priority": d.priority,
        "due_at": _iso(d.due_at),
        "eta_local": d.eta_local,
        "ack_text": d.ack_text,
        "agent": d.agent,
        "overflow_at": _iso(d.overflow_at),
        "reasons": d.reasons,
    }
