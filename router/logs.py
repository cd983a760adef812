"""Logging setup: structlog, JSON lines for the journal, readable on a terminal.

Log events are key-value facts (``event=routed message_id=... queue=...``).
Message bodies and raw addresses or numbers never go into INFO logs; use
:func:`router.profiles.identity.redact` for a stable, anonymous sender tag.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import orjson
import structlog


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog and the standard logging it sits on (idempotent)."""
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor
    factory: Any
    if fmt == "json":
        # orjson + a bytes logger: one log line per message is on the hot path
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stderr.buffer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # Libraries that log through the standard module (aiohttp access log is off).
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)
