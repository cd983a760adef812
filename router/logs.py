"""Logging setup: structlog, JSON lines for the journal, readable on a terminal.

Log events are key-value facts (``event=routed message_id=... queue=...``).
Message bodies and raw addresses or numbers never go into INFO logs; use
:func:`router.profiles.identity.redact` for a stable, anonymous sender tag.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
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


class Outage:
    """The log of a failure that repeats while it lasts (Redis down: every
    request and every retry loop fails), written for the person on call:

    * the first failure is logged at once (``event``, WARNING or ``level``);
    * while it goes on, at most one line every ``every`` seconds, with how
      long it has lasted and how many failures were not logged since;
    * when something succeeds again, one line (``recovered``, INFO) with the
      outage's length and its number of failures.

    Instead of a line per refused webhook: thousands a second under load,
    which floods the journal and hides everything else.
    """

    def __init__(
        self,
        logger: Any,
        event: str,
        recovered: str,
        every: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        level: str = "warning",
    ) -> None:
        self.log = logger
        self.event = event
        self.recovered = recovered
        self.every = every
        # the level of the failure lines: "error" where a person must act
        self._failure_log = getattr(logger, level)
        self.clock = clock
        self.since: float | None = None  # when the outage began
        self._logged_at = 0.0
        self._failures = 0
        self._unlogged = 0

    def failed(self, count: int = 1, **fields: Any) -> None:
        """``count`` failures (e.g. the messages of a refused batch) happened."""
        now = self.clock()
        if self.since is None:
            self.since, self._logged_at, self._failures, self._unlogged = now, now, count, 0
            self._failure_log(self.event, **fields)
            return
        self._failures += count
        if now - self._logged_at < self.every:
            self._unlogged += count
            return
        self._failure_log(
            self.event,
            **fields,
            ongoing_seconds=round(now - self.since, 1),
            failures_not_logged=self._unlogged,  # since the line before
        )
        self._logged_at, self._unlogged = now, 0

    def ok(self, **fields: Any) -> None:
        """Something succeeded: close the outage, if there was one (cheap otherwise)."""
        if self.since is None:
            return
        self.log.info(
            self.recovered,
            **fields,
            outage_seconds=round(self.clock() - self.since, 1),
            failures=self._failures,
        )
        self.since = None


class RefusalLog:
    """The log of refusals any caller can cause at will (a forged signature or
    token per request, a turned-away connection): bounded, whatever the rate.

    The first refusal is logged at once; after that at most one line every
    ``every`` seconds, carrying how many were refused since the line before
    (``refused_since_last_line``) and since the start (``refused_total``).
    Unlike :class:`router.logs.Outage` nothing "recovers": a valid request in
    between must not reopen the gate, or forged and valid requests
    alternating would log a line each.
    """

    def __init__(
        self, logger: Any, event: str, every: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.log, self.event, self.every, self.clock = logger, event, every, clock
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def refused(self, **fields: Any) -> None:
        self.total += 1
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.every:
            self._unlogged += 1
            return
        self.log.warning(
            self.event,
            **fields,
            refused_since_last_line=self._unlogged + 1,  # this one included
            refused_total=self.total,
        )
        self._logged_at, self._unlogged = now, 0
