"""No message lost or queued twice across kill -9 of the daemon and Redis restarts.

A load of POSTs runs against the daemon (each retried on 503 or a broken
connection, as a real integration does); mid-run the daemon is SIGKILLed and
restarted, or Redis is stopped (or SIGKILLed) and started again. Afterwards
every message that got a 202 is in exactly one agent queue entry.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support import (
    DaemonProcess,
    RedisServer,
    free_port,
    post_until_accepted,
    queued_message_ids,
    write_config,
)

N = 3000


def bodies(n: int = N) -> list[dict]:
    # 400 customers, so partitions and conversations are shared
    return [
        {"from": f"user{i % 400}@example.com", "text": f"message {i}", "id": f"load-{i}"}
        for i in range(n)
    ]


async def wait_until_routed(r: aioredis.Redis, expected: int, timeout: float = 60) -> list[str]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ids = await queued_message_ids(r)
        if len(ids) >= expected or asyncio.get_running_loop().time() > deadline:
            return ids
        await asyncio.sleep(0.2)


async def assert_exactly_once(r: aioredis.Redis, seen: dict) -> None:
    accepted = set(seen["ids"])
    assert len(accepted) == N, "every body got a 202 with one id per body"
    queued = await wait_until_routed(r, N)
    counts = Counter(queued)
    twice = [m for m, c in counts.items() if c > 1]
    assert twice == [], f"{len(twice)} messages queued more than once"
    assert set(counts) == accepted, f"{len(accepted - set(counts))} accepted messages missing"
    # and by the caller's own id: no body was stored twice under two message ids
    pipe = r.pipeline()
    for mid in queued:
        pipe.hget(f"router:msg:{{{mid}}}", "source_id")
    sources = Counter(await pipe.execute())
    assert sources == Counter({f"load-{i}": 1 for i in range(N)})
    for p in range(4):
        assert await r.xlen(f"router:ingest:{{{p}}}") == 0


async def assert_retries_are_duplicates(http: aiohttp.ClientSession, url: str, seen: dict) -> None:
    """Every body sent again (a webhook retry) answers the same id, duplicate: true."""
    again: dict = {}
    await post_until_accepted(http, url, bodies(), concurrency=48, progress=again)
    assert again["duplicates"] == N
    assert sorted(again["ids"]) == sorted(seen["ids"])


async def start_load(
    http: aiohttp.ClientSession, daemon: DaemonProcess, seen: dict
) -> asyncio.Task:
    """Start POSTing every body (retrying as integrations do); return once a
    third of them are accepted, with the load still running."""
    load = asyncio.create_task(
        post_until_accepted(
            http, f"{daemon.url}/v1/messages", bodies(), concurrency=48, progress=seen
        )
    )
    while seen.get("202", 0) < N // 3:
        await asyncio.sleep(0.01)
    return load


@pytest.fixture
def setup(tmp_path: Path, redis_server: RedisServer) -> tuple[DaemonProcess, RedisServer]:
    port = free_port()
    config = write_config(
        tmp_path / "router.yaml", redis_server.url, port, **{"workers.lease_ttl": "2s"}
    )
    return DaemonProcess(config, port), redis_server


async def test_sigkill_of_the_daemon_under_load(setup: tuple[DaemonProcess, RedisServer]) -> None:
    daemon, redis_server = setup
    daemon.start()
    seen: dict = {}
    async with aiohttp.ClientSession() as http:
        load = await start_load(http, daemon, seen)
        daemon.kill()  # SIGKILL: in-flight requests die, pending ingest entries stay
        killed_at = seen["202"]
        await asyncio.sleep(0.5)
        daemon.start(wait=False)
        await load
        daemon.wait_ready()
        await assert_retries_are_duplicates(http, f"{daemon.url}/v1/messages", seen)
    assert killed_at < N and seen["conn_errors"] > 0  # the kill hit the load
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        await assert_exactly_once(r, seen)
    finally:
        await r.aclose()
        daemon.stop()


@pytest.mark.parametrize("how", ["stop", "sigkill"])
async def test_redis_restart_under_load(setup: tuple[DaemonProcess, RedisServer], how: str) -> None:
    daemon, redis_server = setup
    daemon.start()
    seen: dict = {}
    async with aiohttp.ClientSession() as http:
        load = await start_load(http, daemon, seen)
        # appendfsync always (the test Redis): what Redis acknowledged is on disk
        redis_server.stop() if how == "stop" else redis_server.kill()
        await asyncio.sleep(1.5)
        redis_server.start()
        await load
    assert seen["503"] > 0, "the outage was seen as 503s, never as a 202"
    assert seen["other"] == []
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        await assert_exactly_once(r, seen)
    finally:
        await r.aclose()
        daemon.stop()
    # The person on call reads a few lines about the outage, not one per
    # refused webhook: when it started and when it ended.
    refused = daemon.events("ingest_unavailable")
    assert 1 <= len(refused) <= 3 < seen["503"], (len(refused), seen["503"])
    assert refused[0]["channels"] == ["api"] and "Redis" in refused[0]["action"]
    (recovered,) = daemon.events("ingest_recovered")
    assert recovered["failures"] >= seen["503"]
    for lane in {e["lane"] for e in daemon.events("routing_paused")}:
        assert [e for e in daemon.events("routing_resumed") if e["lane"] == lane]


async def _holders(r: aioredis.Redis) -> Counter:
    """How many of the 4 partitions each routing daemon holds."""
    return Counter(v for v in await r.mget([f"router:lease:ingest:{{{p}}}" for p in range(4)]) if v)


async def test_two_daemons_share_routing_and_one_is_sigkilled(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two daemons on one Redis split the partitions evenly and both route;
    the second is SIGKILLed under load and the first takes its partitions
    (and the entries it left pending) over: every 202 is queued exactly once."""
    daemons = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        port = free_port()
        config = write_config(
            tmp_path / name / "router.yaml", redis_server.url, port, **{"workers.lease_ttl": "2s"}
        )
        daemons.append(DaemonProcess(config, port))
    a, b = daemons
    a.start()
    b.start()
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        for _ in range(100):  # one renewal (lease_ttl / 3) to share out
            held = await _holders(r)
            if sorted(held.values()) == [2, 2]:
                break
            await asyncio.sleep(0.1)
        assert sorted(held.values()) == [2, 2], held
        seen: dict = {}
        async with aiohttp.ClientSession() as http:
            load = await start_load(http, a, seen)
            for _ in range(100):
                if b.events("routed"):
                    break
                await asyncio.sleep(0.05)
            assert b.events("routed"), "the second daemon routes its share"
            b.kill()
            await load
        await assert_exactly_once(r, seen)
        assert list((await _holders(r)).values()) == [4]  # a took b's partitions over
        assert any(len(e["partitions"]) == 2 for e in a.events("partitions_acquired"))
    finally:
        await r.aclose()
        for d in daemons:
            d.kill()
