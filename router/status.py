"""What the daemons and Redis are doing, for ``router status`` and ``/metrics``.

The question on call is "are messages getting through?". The answer is in
Redis, whichever daemon is up: the ingest backlog (messages stored but not
yet routed: routed and dead-lettered entries are deleted from the ingest
streams) and the age of its oldest message, which daemon holds each ingest
partition, the routing daemons alive, the agent queues, the outbox and the
dead letters. Read-only; one pipelined round trip for the ingest part.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from router.agent import AgentClient
from router.keys import INGEST_GROUP
from router.store import Store


@dataclass
class PartitionStatus:
    partition: int
    holder: str | None  # the routing daemon holding its lease, if any
    backlog: int  # stored, not yet routed (or dead-lettered)
    in_flight: int  # of those, read by a routing daemon and not yet committed
    oldest_age_seconds: float | None  # of the oldest message in the backlog


@dataclass
class IngestStatus:
    partitions: list[PartitionStatus]

    @property
    def backlog(self) -> int:
        return sum(p.backlog for p in self.partitions)

    @property
    def in_flight(self) -> int:
        return sum(p.in_flight for p in self.partitions)

    @property
    def oldest_age_seconds(self) -> float | None:
        ages = [p.oldest_age_seconds for p in self.partitions if p.oldest_age_seconds is not None]
        return max(ages) if ages else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "backlog": self.backlog,
            "in_flight": self.in_flight,
            "oldest_age_seconds": self.oldest_age_seconds,
            "partitions": [asdict(p) for p in self.partitions],
        }


async def _redis_now(store: Store) -> float:
    """Redis's clock: stream entry ids are Redis time, whatever this host's says."""
    seconds, micros = await store.redis.time()
    return seconds + micros / 1e6


async def ingest_status(store: Store, now: float | None = None) -> IngestStatus:
    """Backlog, in-flight count, oldest age and holder of every ingest partition
    (``now``: Redis's clock, read here if not given)."""
    keys = store.keys
    pipe = store.redis.pipeline(transaction=False)
    for p in range(store.partitions):
        stream = keys.ingest(p)
        pipe.xlen(stream)
        pipe.xrange(stream, count=1)
        pipe.xpending(stream, INGEST_GROUP)
        pipe.get(keys.lease(p))
    raw = await pipe.execute(raise_on_error=False)
    if now is None:
        now = await _redis_now(store)
    out = []
    for p in range(store.partitions):
        n, first, pending, holder = raw[4 * p : 4 * p + 4]
        age = None
        if isinstance(first, list) and first:
            entry_ms = int(str(first[0][0]).split("-", 1)[0])
            age = round(max(0.0, now - entry_ms / 1000), 3)
        out.append(
            PartitionStatus(
                partition=p,
                holder=holder if isinstance(holder, str) else None,
                backlog=n if isinstance(n, int) else 0,
                in_flight=int(pending.get("pending") or 0) if isinstance(pending, dict) else 0,
                oldest_age_seconds=age,
            )
        )
    return IngestStatus(out)


async def routing_nodes(store: Store, now: float) -> list[dict[str, Any]]:
    """Routing daemons alive at ``now`` (Redis's clock): heartbeats in ``{p}nodes:routing``."""
    rows = await store.redis.zrange(store.keys.routing_nodes, 0, -1, withscores=True)
    return [
        {"node": node, "heartbeat_expires_in_seconds": round(score / 1000 - now, 1)}
        for node, score in rows
        if score / 1000 > now
    ]


async def overview(store: Store) -> dict[str, Any]:
    """Everything ``router status`` shows, and the problems it sees."""
    keys = store.keys
    now = await _redis_now(store)
    ingest = await ingest_status(store, now)
    nodes = await routing_nodes(store, now)
    queues = [q.to_dict() for q in await AgentClient(store).status()]
    pipe = store.redis.pipeline(transaction=False)
    pipe.xlen(keys.outbox)
    pipe.zcard(keys.outbox_delayed)
    pipe.xlen(keys.deadletter)
    pipe.info("server")
    outbox, retrying, dead, server = await pipe.execute()
    problems = []
    if ingest.backlog and not nodes:
        problems.append(
            f"{ingest.backlog} messages wait to be routed and no routing daemon is alive: "
            "start `router serve` (systemctl start router)"
        )
    unheld = [p.partition for p in ingest.partitions if p.backlog and p.holder is None]
    if unheld and nodes:
        problems.append(
            f"partitions {unheld} have messages but no daemon holds them yet "
            "(normal for a few seconds after a daemon stops; if it lasts, "
            "check the daemons' logs for partitions_lost or lease_renewal_failed)"
        )
    return {
        "checked_at": round(time.time(), 3),
        "redis": {"version": server.get("redis_version"), "prefix": keys.prefix},
        "routing_nodes": nodes,
        "ingest": ingest.to_dict(),
        "queues": queues,
        "outbox": {"waiting": outbox, "retrying": retrying},
        "dead_letters": dead,
        "problems": problems,
    }
