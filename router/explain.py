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


# The instants a decision can be explained at. Routing looks ahead up to a
# year (the next opening of a closed team, a due time in business hours), and
# Python's dates end with the year 9999: past this, that arithmetic overflows.
EARLIEST_AT = datetime(1970, 1, 1, tzinfo=UTC).timestamp()
LATEST_AT = datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
SUPPORTED_RANGE = "from 1970-01-01T00:00:00Z to 9998-12-31T23:59:59Z"


def check_at(ts: float, what: str) -> float:
    """``ts`` if a decision can be made at that instant, else ExplainError saying the range."""
    if not EARLIEST_AT <= ts <= LATEST_AT:
        raise ExplainError(f"{what} is outside the supported range, {SUPPORTED_RANGE}")
    return ts


def parse_at(value: str | None) -> float:
    """The ``--at`` instant (an ISO 8601 time with a UTC offset) as Unix seconds; now if None."""
    if value is None:
        return time.time()
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ExplainError(
            f"--at {value[:64]!r} is not an ISO 8601 time with a UTC offset "
            f"(e.g. 2026-11-23T09:30:00+05:30), {SUPPORTED_RANGE}"
        ) from None
    if at.tzinfo is None:
        raise ExplainError(
            f"--at {value!r} needs a UTC offset, e.g. 2026-11-23T09:30:00+05:30 "
            f"or 2026-11-23T04:00:00Z"
        )
    return check_at(at.timestamp(), f"--at {value!r}")


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
    routing = Routing.build(cfg, frozenset({message.channel}))
    try:
        d = decide(routing, message, profile, now)
    except OverflowError:  # a due time or next opening past the year 9999
        raise ExplainError(
            f"the decision at {_iso(now)} reaches past the year 9999; "
            f"explain supports {SUPPORTED_RANGE.removeprefix('from ')}"
        ) from None
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
