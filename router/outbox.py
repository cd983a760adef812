"""The outbox worker: replies from agent tools out through the right channel.

Agent tools (and ``router reply``) add to the ``outbox`` stream; this worker
reads it through the ``senders`` consumer group, hands each entry to the
sender of its channel, and records the delivery state in the entry's
``delivery`` hash. A failed send is retried with exponential backoff (a
sorted set of delayed entries, moved back into the stream when due); after
``outbox.max_attempts`` it is dead-lettered with the last error.

Replies of one conversation are sent in order; different conversations go
out concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import structlog
from redis.exceptions import RedisError

from router.adapters.base import PermanentSendError, Sender
from router.agent import address, record_outbound
from router.channels import PHONE_CHANNELS
from router.config import Config
from router.deadletters import dead_letter_fields
from router.keys import OUTBOX_GROUP
from router.logs import Outage
from router.metrics import Metrics
from router.model import OutboundMessage
from router.scripts import flat
from router.store import Store

log = structlog.get_logger("router.outbox")

# How long an outbox entry may sit with a consumer that stopped before
# another daemon takes it over.
STALE_AFTER_MS = 60_000


def backoff(attempt: int, initial: float, maximum: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): exponential, jittered."""
    base = min(maximum, initial * (2 ** (attempt - 1)))
    return base * random.uniform(0.8, 1.2)


class OutboxWorker:
    """Sends outbox entries with retries; one per daemon."""

    def __init__(
        self,
        store: Store,
        get_config: Callable[[], Config],
        senders: Mapping[str, Sender],
        metrics: Metrics,
        node: str,
    ) -> None:
        self.store = store
        self.get_config = get_config
        self.senders = senders
        self.metrics = metrics
        self.node = node

    async def run(self, stop: asyncio.Event) -> None:
        position = "0"  # our own pending entries first (a restart after a crash)
        last_maintenance = 0.0
        outage = Outage(log, "outbox_paused", "outbox_resumed")
        while not stop.is_set():
            cfg = self.get_config()
            try:
                if time.monotonic() - last_maintenance > 0.5:
                    if await self._maintenance():
                        position = "0"  # entries taken over are in our pending list
                    last_maintenance = time.monotonic()
                resp = await self.store.redis.xreadgroup(
                    OUTBOX_GROUP,
                    self.node,
                    {self.store.keys.outbox: position},
                    count=cfg.outbox.concurrency * 4,
                    block=None if position == "0" else 500,
                )
                items = resp[0][1] if resp else []
                if position == "0" and not items:
                    position = ">"
                    continue
                await self._send_batch(cfg, items)
                outage.ok()
            except (RedisError, OSError) as exc:
                outage.failed(
                    error=f"{type(exc).__name__}: {exc}",
                    action="retrying every second; replies wait safely in the outbox",
                )
                position = "0"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _maintenance(self) -> bool:
        """Move due retries back in; take over entries of a consumer that died.

        True if entries were taken over (they are now in our pending list).
        """
        keys = self.store.keys
        await self.store.scripts.promote_due(
            keys=[keys.outbox_delayed, keys.outbox], args=[int(time.time() * 1000), 100]
        )
        resp = await self.store.redis.xautoclaim(
            keys.outbox, OUTBOX_GROUP, self.node, STALE_AFTER_MS, "0-0", count=100
        )
        return bool(resp[1])

    async def _send_batch(self, cfg: Config, items: list) -> None:
        by_conversation: dict[str, list[tuple[str, OutboundMessage | None, str]]] = defaultdict(
            list
        )
        for entry_id, fields in items:
            raw = (fields or {}).get("o")
            try:
                msg = OutboundMessage.from_json(raw) if raw else None
            except Exception:
                msg = None
            key = msg.conversation_id if msg else entry_id
            by_conversation[key].append((entry_id, msg, raw or ""))
        sem = asyncio.Semaphore(cfg.outbox.concurrency)

        async def one_conversation(batch: list[tuple[str, OutboundMessage | None, str]]) -> None:
            async with sem:
                for entry_id, msg, raw in batch:
                    await self._send_one(cfg, entry_id, msg, raw)

        await asyncio.gather(*(one_conversation(b) for b in by_conversation.values()))

    async def _send_one(
        self, cfg: Config, entry_id: str, msg: OutboundMessage | None, raw: str
    ) -> None:
        keys = self.store.keys
        redis = self.store.redis
        if msg is None:
            if not raw:  # deleted while pending
                await redis.xack(keys.outbox, OUTBOX_GROUP, entry_id)
                return
            await self._dead(entry_id, None, raw, "unreadable outbox entry (not our JSON)")
            return
        delivery = keys.delivery(msg.id)
        status, recorded_attempts = await redis.hmget(delivery, "status", "attempts")
        if status in ("sent", "delivered"):  # redelivered after a crash
            await redis.xack(keys.outbox, OUTBOX_GROUP, entry_id)
            await redis.xdel(keys.outbox, entry_id)
            return
        conv = await redis.hgetall(keys.conversation(msg.conversation_id))
        if not conv:
            await self._dead(
                entry_id, msg, raw, f"conversation {msg.conversation_id} does not exist"
            )
            return
        # a minimal entry from an agent tool gets its address; every reply
        # gets what its sender needs (our number, the customer's last message)
        address(msg, conv)
        if status is None:
            pipe = redis.pipeline(transaction=True)
            record_outbound(
                pipe, keys, msg, int(cfg.routing.message_retention), conv, cfg.events.retention
            )
            await pipe.execute()
        if msg.channel in PHONE_CHANNELS:
            consent = await redis.hget(keys.customer(conv.get("customer_id", "")), "consent_phone")
            if consent == "opted_out":
                await self._dead(
                    entry_id,
                    msg,
                    raw,
                    "the customer opted out of messages (STOP); nothing is sent "
                    "to this number until they send START",
                )
                return
        sender = self.senders.get(msg.channel)
        if sender is None:
            await self._dead(
                entry_id,
                msg,
                raw,
                f"no sender for channel {msg.channel!r} is configured; enable the channel "
                "in the config, then replay",
            )
            return
        # The delivery record counts every attempt begun, also those a crash
        # cut short (the entry's own count only moves on a scheduled retry), so
        # a daemon that dies mid-send again and again still gives up.
        attempt = max(msg.attempt, int(recorded_attempts or 0)) + 1
        if attempt > cfg.outbox.max_attempts:
            await self._dead(
                entry_id,
                msg,
                raw,
                f"gave up after {attempt - 1} attempts, the last cut short "
                "(the daemon stopped while sending); check the channel, then replay",
            )
            return
        await redis.hset(delivery, mapping={"status": "sending", "attempts": attempt})
        try:
            provider_id = await sender.send(msg)
        except PermanentSendError as exc:
            self.metrics.outbox_failures.labels(msg.channel).inc()
            await self._dead(entry_id, msg, raw, f"refused by {msg.channel}: {exc}")
            return
        except Exception as exc:
            self.metrics.outbox_failures.labels(msg.channel).inc()
            error = f"{type(exc).__name__}: {exc}"
            if attempt >= cfg.outbox.max_attempts:
                await self._dead(
                    entry_id, msg, raw, f"gave up after {attempt} attempts; last error: {error}"
                )
                return
            delay = backoff(attempt, cfg.outbox.backoff_initial, cfg.outbox.backoff_max)
            msg.attempt = attempt
            await self.store.scripts.retry_later(
                keys=[keys.outbox, keys.outbox_delayed, delivery],
                args=[
                    OUTBOX_GROUP,
                    entry_id,
                    int((time.time() + delay) * 1000),
                    msg.to_json(),
                    attempt,
                    error[:1000],
                ],
            )
            log.warning(
                "send_failed",
                outbox_id=msg.id,
                conversation_id=msg.conversation_id,
                channel=msg.channel,
                attempt=attempt,
                retry_in_s=round(delay, 1),
                error=error,
            )
            return
        await self.store.scripts.mark_sent(
            keys=[keys.outbox, delivery],
            args=[
                OUTBOX_GROUP,
                entry_id,
                *flat(
                    {
                        "status": "sent",
                        "attempts": attempt,
                        "sent_at": f"{time.time():.3f}",
                        "provider_id": provider_id or "",
                    }
                ),
            ],
        )
        if provider_id:
            await self._thread_refs(cfg, msg, provider_id)
        self.metrics.outbox_sent.labels(msg.channel).inc()
        log.info(
            "sent",
            outbox_id=msg.id,
            conversation_id=msg.conversation_id,
            channel=msg.channel,
            kind=msg.kind,
            attempt=attempt,
        )

    async def _thread_refs(self, cfg: Config, msg: OutboundMessage, provider_id: str) -> None:
        """The channel's ids of what we sent thread the customer's answer back
        into this conversation (an e-mail reply's In-Reply-To names our Message-ID)."""
        keys = self.store.keys
        retention = int(cfg.routing.message_retention)
        refs = keys.conversation_refs(msg.conversation_id)
        pipe = self.store.redis.pipeline(transaction=False)
        for pid in provider_id.split(","):
            if pid:
                pipe.set(keys.thread(msg.channel, pid), msg.conversation_id, ex=retention)
                pipe.sadd(refs, keys.thread(msg.channel, pid))
        pipe.expire(refs, retention)
        await pipe.execute()

    async def _dead(
        self, entry_id: str, msg: OutboundMessage | None, raw: str, reason: str
    ) -> None:
        keys = self.store.keys
        outbox_id = msg.id if msg else None
        log.error(
            "reply_dead_lettered",
            outbox_id=outbox_id,
            conversation_id=msg.conversation_id if msg else None,
            channel=msg.channel if msg else None,
            reason=reason,
            action="fix the cause, then `router dead-letters replay`",
        )
        if msg is not None:
            await self.store.redis.hset(
                keys.delivery(msg.id), mapping={"status": "failed", "last_error": reason}
            )
        await self.store.scripts.dead_letter(
            keys=[keys.outbox, keys.deadletter],
            args=[
                OUTBOX_GROUP,
                entry_id,
                *dead_letter_fields("outbox", "send", reason, raw, outbox_id=outbox_id),
            ],
        )
        self.metrics.dead_letters.labels("outbox").inc()


# What a channel's delivery report says, as our delivery status.
REPORTED = {
    "delivered": "delivered",
    "read": "delivered",
    "failed": "failed",
    "undelivered": "failed",
}


async def record_delivery_report(
    store: Store, outbox_id: str, provider_status: str, error: str | None
) -> None:
    """A channel's report on a sent message (e.g. a Twilio status callback)."""
    key = store.keys.delivery(outbox_id)
    if not await store.redis.exists(key):
        return
    fields = {"provider_status": provider_status, "reported_at": f"{time.time():.3f}"}
    if provider_status in REPORTED:
        fields["status"] = REPORTED[provider_status]
    if error:
        fields["last_error"] = error
    await store.redis.hset(key, mapping=fields)
    if fields.get("status") == "failed":
        log.warning(
            "delivery_failed",
            outbox_id=outbox_id,
            provider_status=provider_status,
            error=error,
            action="the channel could not deliver it; see the delivery record",
        )
