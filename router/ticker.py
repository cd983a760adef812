"""The loop of a worker that acts on what falls due in Redis (overflow moves,
SLA breaches): tick, and again at once while a tick finds a full batch;
Redis trouble goes through the outage throttle; wait ``interval`` between."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from router.logs import Outage

BATCH = 100  # what one tick looks at, at most: a full tick means a backlog


async def tick_until(
    stop: asyncio.Event,
    tick: Callable[[], Awaitable[int]],
    interval: float,
    outage: Outage,
    action: str,
) -> None:
    """Run ``tick`` every ``interval`` seconds until ``stop`` is set. A failed
    tick is logged once when the failures start, every 30 s while they last
    and once when they end (``outage``), with ``action`` for the person on call."""
    while not stop.is_set():
        try:
            while await tick() == BATCH:  # a backlog: keep going
                pass
            outage.ok()
        except (RedisError, OSError) as exc:
            outage.failed(error=f"{type(exc).__name__}: {exc}", action=action)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
