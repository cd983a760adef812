"""Overflow: a queue entry nobody claimed within its target's wait moves on.

When a rule's target has ``wait: 10m`` and a next target, the routing commit
puts the queue entry in the ``overflow`` sorted set, scored by the moment it
is due to move. This worker looks at due entries every second: an entry
that is still unclaimed moves to the rule's next target (skip conditions
and follow-the-sun apply again, with the current config); a claimed or
finished one just leaves the set. The set lives in Redis, so pending moves
survive restarts, and the move is one atomic script, so several daemons may
run this worker side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import structlog

from router.config import PRIORITIES, Rule
from router.keys import QUEUE_GROUP
from router.logs import Outage
from router.metrics import Metrics
from router.routing import Routing, choose_target
from router.scripts import pairs
from router.store import Store
from router.ticker import BATCH, tick_until

log = structlog.get_logger("router.overflow")


def _next_step(
    routing: Routing,
    rules: dict[str, Rule],
    fields: dict[str, str],
    at: datetime,
    depths: dict[str, int],
) -> tuple[str, str, dict[str, str], float | None] | None:
    """Where an unclaimed entry goes next: (queue, priority, changed fields,
    wait before the step after), or None when there is nowhere to go."""
    rule = rules.get(fields.get("rule", ""))
    index = int(fields.get("target", 0))
    if fields.get("fallback_queue"):
        # a sticky follow-up its owner did not take: to the queue routing chose,
        # then on along the rule's chain from there
        target = rule.targets[index] if rule is not None and index < len(rule.targets) else None
        more = rule is not None and index + 1 < len(rule.targets)
        wait = target.wait if target is not None and more else None
        return fields["fallback_queue"], fields.get("priority", "normal"), {}, wait
    if rule is None:
        return None
    choice = choose_target(
        routing,
        rule.targets,
        index + 1,
        fields.get("language", ""),
        fields.get("channel", ""),
        at,
        depths,
    )
    if choice is None:
        return None
    target = choice.target
    priority = target.priority if target and target.priority else fields.get("priority", "normal")
    wait = None
    if target is not None and target.wait and choice.index + 1 < len(rule.targets):
        wait = target.wait
    return choice.queue, priority, {"target": str(choice.index)}, wait


class OverflowWorker:
    """Moves unclaimed queue entries to their next target when their wait is over."""

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

    async def run(self, stop: asyncio.Event) -> None:
        await tick_until(
            stop,
            self.tick,
            self.interval,
            Outage(log, "overflow_paused", "overflow_resumed"),
            action="retrying; entries wait in their current queue",
        )

    async def tick(self, now: float | None = None) -> int:
        """Handle the entries due by ``now``; return how many were looked at."""
        now = time.time() if now is None else now
        keys, redis = self.store.keys, self.store.redis
        due = await redis.zrangebyscore(keys.overflow, "-inf", int(now * 1000), start=0, num=BATCH)
        if not due:
            return 0
        routing = self.get_routing()
        rules = {r.name: r for r in routing.cfg.rules}
        depths = await self.store.depths(routing.cfg.queues)
        at = datetime.fromtimestamp(now, UTC)
        for member in due:
            stream, _, entry_id = member.rpartition(" ")
            rows = await redis.xrange(stream, entry_id, entry_id, count=1)
            if not rows:
                await redis.zrem(keys.overflow, member)
                continue
            fields = rows[0][1]
            queue, _ = keys.parse_queue(stream)
            step = _next_step(routing, rules, fields, at, depths)
            if step is None:
                await redis.zrem(keys.overflow, member)
                log.warning(
                    "overflow_stopped",
                    message_id=fields.get("message_id"),
                    queue=queue,
                    rule=fields.get("rule"),
                    reason="the rule or its next target no longer exists in the config; "
                    "the entry stays where it is",
                )
                continue
            dest, priority, moved_fields, wait = step
            moved = {
                **{k: v for k, v in fields.items() if k not in ("agent", "fallback_queue")},
                **moved_fields,
                "priority": priority,
                "team": routing.team_of(dest) or "",
                "overflowed_from": queue,
                "overflowed_at": f"{now:.3f}",
            }
            result = await self.store.scripts.overflow_move(
                keys=[
                    stream,
                    keys.queue(dest, PRIORITIES[priority]),
                    keys.overflow,
                    keys.message(fields.get("message_id", "")),
                    keys.conversation(fields.get("conversation_id", "")),
                ],
                args=[
                    QUEUE_GROUP,
                    entry_id,
                    member,
                    orjson.dumps(pairs(moved)),
                    str(int((now + wait) * 1000)) if wait else "",
                    dest,
                    keys.prefix,
                ],
            )
            if int(result[0]) == 1:
                self.metrics.child(self.metrics.overflowed, queue, dest).inc()
                log.info(
                    "overflowed",
                    message_id=fields.get("message_id"),
                    from_queue=queue,
                    to_queue=dest,
                    priority=priority,
                )
        return len(due)
