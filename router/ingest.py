"""Ingest: the one door every adapter uses to hand over a customer message.

``await ingestor.ingest(message)`` returns only once the message is in Redis
(deduplicated on channel + source id). Only then may the adapter acknowledge
its source: flag the IMAP message, answer the webhook, move the cursor. If
Redis cannot be reached it raises :class:`StoreUnavailable` and the adapter
must not acknowledge (the source will deliver again).

Concurrent calls are coalesced: while one Redis round trip is in flight, new
messages queue up and go together in the next pipeline, so throughput grows
with load instead of being bound by the round-trip time.

A call waits at most ``timeout`` seconds (:data:`router.store.INGEST_TIMEOUT`,
2 s) for Redis, queueing included: a stalled Redis gets the webhook a 503
in that time, not after the general 10 s socket timeout and its retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from redis.exceptions import RedisError

from router.logs import Outage
from router.metrics import Metrics
from router.model import InboundMessage, new_id
from router.store import INGEST_TIMEOUT, Store

log = structlog.get_logger("router.ingest")


class StoreUnavailable(Exception):
    """Redis did not confirm the write; the message is NOT stored."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    id: str
    duplicate: bool


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def _printable(value: str) -> str | None:
    """``value`` with runs of control characters (C0, DEL, C1, line and
    paragraph separators) made one space, trimmed; None if nothing is left."""
    return " ".join(_CONTROL_RE.sub(" ", value).split()) or None


class Ingestor:
    """Durable, deduplicated intake into the partitioned ingest streams."""

    def __init__(
        self,
        store: Store,
        dedup_ttl: float,
        max_batch: int = 500,
        metrics: Metrics | None = None,
        timeout: float = INGEST_TIMEOUT,
    ) -> None:
        self.store = store
        self.dedup_ttl = int(dedup_ttl)
        self.max_batch = max_batch
        self.metrics = metrics
        self.timeout = timeout
        # the store's short-timeout connections when it has them
        self.redis = store.ingest_redis or store.redis
        # one line when Redis stops taking messages, one when it takes them again
        self.outage = Outage(log, "ingest_unavailable", "ingest_recovered")
        self._pending: list[tuple[InboundMessage, asyncio.Future[IngestResult]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-flusher")

    async def stop(self) -> None:
        """Flush what is queued, then stop."""
        if self._task is None:
            return
        while self._pending:
            self._wakeup.set()
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def ingest(self, message: InboundMessage) -> IngestResult:
        """Store ``message`` durably once; return its id and whether it was a duplicate."""
        if not message.id:
            message.id = new_id("m")
        # One rule for every channel: a name or subject the sender wrote never
        # carries control characters into a profile, a log line or a terminal
        # (`router customer show`). The API refuses them outright (400).
        if message.display_name:
            message.display_name = _printable(message.display_name)
        if message.subject:
            message.subject = _printable(message.subject)
        if self._task is None:  # not started (CLI, tests): a direct round trip
            result = (await self._write([message]))[0]
            if isinstance(result, Exception):
                raise result
            return result
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[IngestResult] = loop.create_future()
        self._pending.append((message, fut))
        self._wakeup.set()
        timer = loop.call_later(self.timeout, self._expire, message, fut)
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, message: InboundMessage, fut: asyncio.Future[IngestResult]) -> None:
        """Redis did not answer in time: refuse the message. Not sent yet, it
        never will be (the flusher skips it); in flight, it may still be
        stored, and the source's retry is deduplicated."""
        if fut.done():
            return
        fut.set_exception(StoreUnavailable(f"Redis did not answer within {self.timeout:g}s"))
        if self.metrics is not None and any(f is fut for _, f in self._pending):
            # (a message in flight is counted when its batch fails)
            self.metrics.ingest_unavailable.labels(message.channel).inc()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = [(m, f) for m, f in self._pending[: self.max_batch] if not f.done()]
                del self._pending[: self.max_batch]
                if not batch:
                    continue
                try:
                    results = await self._write([m for m, _ in batch])
                except StoreUnavailable as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(StoreUnavailable(str(exc)))
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(result, Exception):
                        fut.set_exception(result)
                    else:
                        fut.set_result(result)

    async def _write(self, messages: list[InboundMessage]) -> list[Any]:
        """One script call for the whole batch; a result per message, in order."""
        keys = self.store.keys
        items = [
            (
                keys.dedup(m.channel, m.source_id) if m.source_id else "",
                keys.ingest(self.store.partition_of(str(m.sender))),
                m.id,
                m.to_json().decode(),
            )
            for m in messages
        ]
        try:
            r = await self.store.scripts.ingest(
                args=[self.dedup_ttl, orjson.dumps(items)], client=self.redis
            )
        except (RedisError, OSError) as exc:
            channels = sorted({m.channel for m in messages})
            if self.metrics is not None:
                for m in messages:
                    self.metrics.ingest_unavailable.labels(m.channel).inc()
            self.outage.failed(
                len(messages),
                channels=channels,
                error=f"{type(exc).__name__}: {exc}",
                action="messages are refused, not lost: webhooks get 503 and their senders "
                "retry, mail stays unread, chat visitors are asked to resend. "
                "Check that Redis is up",
            )
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
        self.outage.ok()
        return [IngestResult(str(r[2 * i]), r[2 * i + 1] == 1) for i in range(len(messages))]
