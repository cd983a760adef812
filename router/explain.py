"""``router explain``: dry-run the routing of one message, with the reasons.

Uses the same pure ``decide`` as the routing workers, on an empty profile
(a first contact), and touches no Redis.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from router.adapters.api import BadRequest, parse_message
from router.config import Config
from router.profiles.context import Context
from router.routing import decide


class ExplainError(ValueError):
    """Bad input to explain."""


def parse_at(value: str | None) -> float:
    if not value:
        return time.time()
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ExplainError(f"--at {value!r} is not an ISO 8601 time") from None
    if at.tzinfo is None:
        raise ExplainError(f"--at {value!r} needs a UTC offset, e.g. 2026-11-23T09:30:00+05:30")
    return at.timestamp()


def explain(cfg: Config, raw: bytes, at: str | None = None) -> dict[str, Any]:
    """The decision for the message JSON in ``raw``, as a JSON-able dict."""
    now = parse_at(at)
    try:
        message = parse_message(raw, cfg.ingest.max_text_chars)
    except BadRequest as exc:
        raise ExplainError(f"bad message on stdin: {exc}") from None
    decision = decide(cfg, message, Context(customer_id="(new customer)", created=True), now)
    return decision.to_dict()
