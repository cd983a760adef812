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

Not yet here (issue 16): next-response targets, telling the customer, an
ETA from the live queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson
import structlog
from redis.exceptions import RedisError

from router.config import PRIORITIES
from router.logs import Outage
from router.metrics import Metrics
from router.routing import Routing
from router.scripts import pairs, source
from router.store import Store

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
        outage = Outage(log, "sla_watch_paused", "sla_watch_resumed")
        while not stop.is_set():
            try:
                while await self.tick() == 100:  # a backlog: keep going
                    pass
                outage.ok()
            except (RedisError, OSError) as exc:
                outage.failed(
                    error=f"{type(exc).__name__}: {exc}",
                    action="retrying; due times wait in Redis and are acted on once it is back",
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def tick(self, now: float | None = None) -> int:
        """Act on the targets due by ``now``; return how many were looked at."""
        now = time.time() if now is None else now
        keys, redis = self.store.keys, self.store.redis
        due = await redis.zrangebyscore(keys.sla, "-inf", int(now * 1000), start=0, num=100)
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
