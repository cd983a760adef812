"""The SLA watch: a first-response due time that passes with no agent reply.

The routing commit files each new work item's due time in the ``sla`` sorted
set (member ``"first_response <conversation id>"``, score = ``due_at`` in
ms). This worker looks at due members every second and runs
``lua/sla_breach.lua`` on each: the script re-checks that the item is still
live and unanswered, takes the member out of the set, marks the breach on
the conversation, appends the ``sla_breached`` event and applies
``routing.on_breach`` (a more urgent band, another queue), all in one atomic
step. So a breach is acted on exactly once, whatever the number of daemons
running this worker, restarts or retries; an agent reply before the due
time (``last_response_at`` on the conversation) cancels it.

With ``routing.next_response``, a customer message that follows an agent
reply files ``"next_response <conversation id>"`` (scored at once, with
``next_response_from`` on the conversation); this worker first computes its
due time in the business time of the item's queue (``next_response_due_at``)
and re-scores it, then watches it the same way, counted from that message.
A work item queued by such a message is watched by its next-response target
only (its first-response member is dropped as superseded).

Not yet here (issue 16): telling the customer, an ETA from the live queue,
per-rule ``on_breach``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import structlog

from router.config import PRIORITIES, FirstResponseSettings
from router.logs import Outage
from router.metrics import Metrics
from router.routing import Routing
from router.scripts import pairs, source
from router.store import Store
from router.ticker import BATCH, tick_until

log = structlog.get_logger("router.sla")

BAND_NAMES = {band: name for name, band in PRIORITIES.items()}


def escalation(
    routing: Routing, queue: str, band: int, fields: dict[str, str], now: float
) -> tuple[str, int, dict[str, str], str] | None:
    """Where ``routing.on_breach`` sends a breached item in band ``band`` of
    ``queue``: (queue, band, its entry fields, raised priority or ""), or None
    when it stays where it is."""
    on = routing.cfg.routing.on_breach
    dest = on.queue or queue
    new_band = min(band, PRIORITIES[on.priority]) if on.priority else band
    if dest == queue and new_band == band:
        return None
    moved = dict(fields)
    if dest != queue:
        for k in ("agent", "fallback_queue"):
            moved.pop(k, None)
        moved["team"] = routing.team_of(dest) or ""
        moved["escalated_from"] = queue
        moved["escalated_at"] = f"{now:.3f}"
    moved["priority"] = BAND_NAMES[new_band]
    return dest, new_band, moved, BAND_NAMES[new_band] if new_band != band else ""


def next_response_due(
    routing: Routing,
    settings: FirstResponseSettings,
    queue: str,
    channel: str,
    priority: str,
    start: float,
) -> float:
    """When a next response is due for a customer message at ``start``: the
    shorter of the channel's and the priority's target (at most ``max``), in
    the business time of the queue's team (a queue without one: wall time)."""
    seconds = settings.channels.get(channel, settings.default)
    if priority in settings.priorities:
        seconds = min(seconds, settings.priorities[priority])
    seconds = min(seconds, settings.max)
    at = datetime.fromtimestamp(start, UTC)
    cal = routing.queue_calendar.get(queue)
    due = cal.add_business_time(at, timedelta(seconds=seconds)) if cal else None
    if due is None:
        due = at + timedelta(seconds=seconds if cal is None else settings.max)
    return due.timestamp()


class SlaWorker:
    """Acts once on each work item whose first-response target passed unanswered."""

    def __init__(
        self,
        store: Store,
        get_routing: Callable[[], Routing],
        metrics: Metrics,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.get_routing = get_routing
        self.metrics = metrics
        self.interval = interval
        self.script = store.redis.register_script(source("sla_breach"))

    async def run(self, stop: asyncio.Event) -> None:
        await tick_until(
            stop,
            self.tick,
            self.interval,
            Outage(log, "sla_watch_paused", "sla_watch_resumed"),
            action="retrying; due times wait in Redis and are acted on once it is back",
        )

    async def tick(self, now: float | None = None) -> int:
        """Act on the targets due by ``now``; return how many were looked at."""
        now = time.time() if now is None else now
        keys, redis = self.store.keys, self.store.redis
        due = await redis.zrangebyscore(keys.sla, "-inf", int(now * 1000), start=0, num=BATCH)
        if not due:
            return 0
        routing = self.get_routing()
        for member in due:
            target, _, conversation_id = member.partition(" ")
            ck = keys.conversation(conversation_id)
            item = await redis.hget(ck, "item") or ""
            stream, _, entry_id = item.rpartition(" ")
            rows = await redis.xrange(stream, entry_id, entry_id, count=1) if stream else []
            fields = rows[0][1] if rows else {}
            queue, band = keys.parse_queue(stream) if stream else ("", 2)
            mode, extra = await self._mode(routing, target, ck, queue, fields)
            if mode:
                await self.script(
                    keys=[keys.sla, ck],
                    args=[keys.prefix, member, f"{now:.3f}", item, "", "[]", "", "", mode, *extra],
                )
                continue
            step = escalation(routing, queue, band, fields, now) if rows else None
            dest_stream, moved, dest, raised = "", b"[]", "", ""
            if step is not None:
                dest, dest_band, moved_fields, raised = step
                dest_stream = keys.queue(dest, dest_band)
                moved = orjson.dumps(pairs(moved_fields))
            result = await self.script(
                keys=[keys.sla, ck],
                args=[
                    keys.prefix,
                    member,
                    f"{now:.3f}",
                    item,
                    dest_stream,
                    moved,
                    dest,
                    raised,
                    "",
                    "",
                    "",
                    "1" if routing.cfg.routing.next_response is not None else "",
                ],
            )
            if int(result[0]) != 1:
                continue
            escalated = int(result[2]) == 1
            label = queue if queue in routing.cfg.queues else "other"
            self.metrics.child(self.metrics.sla_breaches, label, target).inc()
            log.warning(
                "sla_breached",
                conversation_id=conversation_id,
                message_id=fields.get("message_id"),
                target=target,
                queue=queue,
                due_at=fields.get("due_at"),
                moved_to=dest if escalated and dest != queue else None,
                raised_to=raised if escalated and raised else None,
                action="escalated" if escalated else "recorded (the item is claimed or stays)",
            )
        return len(due)

    async def _mode(
        self, routing: Routing, target: str, ck: str, queue: str, fields: dict[str, str]
    ) -> tuple[str, list[str]]:
        """For a next-response member: ``("drop", [])`` when no such target is
        configured, ``("schedule", [from, due])`` when its due time is still to
        be computed; else ``("", [])``: act on it."""
        if target != "next_response":
            return "", []
        settings = routing.cfg.routing.next_response
        if settings is None:
            return "drop", []
        start, due_at, channel = await self.store.redis.hmget(
            ck, "next_response_from", "next_response_due_at", "channel"
        )
        if due_at or not start:
            return "", []
        if queue.startswith("~"):
            queue = fields.get("fallback_queue", "")
        due = next_response_due(
            routing,
            settings,
            queue,
            fields.get("channel") or channel or "",
            fields.get("priority", "normal"),
            float(start),
        )
        return "schedule", [start, f"{due:.3f}"]
