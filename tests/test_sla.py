"""The SLA watch on real daemons and a real Redis, with first-response
targets of a few seconds: a due time that passes with no agent reply is a
breach, acted on exactly once (one event, the counter, the escalation of
``routing.on_breach``), across two daemons and a SIGKILL; an agent reply in
time cancels it."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from router.config import load_config
from router.yamlsource import ConfigError
from tests.support import API_TOKEN, DaemonProcess, RedisServer, free_port, write_config

TARGET = {"default": "2s", "max": "2s"}
HEADERS = {"Authorization": f"Bearer {API_TOKEN}"}


def daemon_for(
    tmp_path: Path, redis_server: RedisServer, name: str = "a", **overrides: Any
) -> DaemonProcess:
    (tmp_path / name).mkdir(exist_ok=True)
    port = free_port()
    config = write_config(
        tmp_path / name / "router.yaml",
        redis_server.url,
        port,
        **{"workers.lease_ttl": "2s", "routing.first_response": TARGET, **overrides},
    )
    return DaemonProcess(config, port)


async def post(http: aiohttp.ClientSession, daemon: DaemonProcess, sender: str, n: int) -> str:
    body = {"from": sender, "text": "where is my order?", "id": f"sla-{sender}-{n}"}
    async with http.post(f"{daemon.url}/v1/messages", json=body, headers=HEADERS) as resp:
        assert resp.status == 202, await resp.text()
        return (await resp.json())["id"]


async def conversation_of(r: aioredis.Redis, message_id: str) -> str:
    for _ in range(200):
        conv = await r.hget(f"router:msg:{{{message_id}}}", "conversation_id")
        if conv:
            return conv
        await asyncio.sleep(0.05)
    raise AssertionError(f"message {message_id} was not routed")


async def breaches(r: aioredis.Redis) -> list[dict[str, str]]:
    return [f for _, f in await r.xrange("router:events") if f["type"] == "sla_breached"]


async def wait_breaches(r: aioredis.Redis, n: int, timeout: float = 20.0) -> list[dict[str, str]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        found = await breaches(r)
        if len(found) >= n:
            return found
        await asyncio.sleep(0.1)
    return await breaches(r)


async def metric(http: aiohttp.ClientSession, daemon: DaemonProcess, line_start: str) -> float:
    async with http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(
    "on_breach, stream, priority",
    [
        ({"priority": "urgent"}, "router:q:{general}:p0", "urgent"),
        ({"queue": "vip"}, "router:q:{vip}:p2", "normal"),
    ],
    ids=["band-raised", "queue-moved"],
)
async def test_a_breach_is_acted_on_once(
    tmp_path: Path,
    redis_server: RedisServer,
    on_breach: dict[str, str],
    stream: str,
    priority: str,
) -> None:
    daemon = daemon_for(tmp_path, redis_server, **{"routing.on_breach": on_breach}).start()
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            mid = await post(http, daemon, "ana@example.com", 1)
            conv = await conversation_of(r, mid)
            assert await r.zscore("router:sla", f"first_response {conv}") is not None
            assert await breaches(r) == [], "not before the due time"
            (event,) = await wait_breaches(r, 1)
            await asyncio.sleep(2.5)  # more ticks: still one
            assert len(await breaches(r)) == 1
            assert event["target"] == "first_response"
            assert event["queue"] == "general"
            assert event["conversation_id"] == conv
            assert event["message_id"] == mid
            assert float(event["due_at"]) <= float(event["at"])
            assert await r.zcard("router:sla") == 0
            assert await r.hget(f"router:conv:{{{conv}}}", "breached_first_response")
            # the escalation: the one work item is now in the on_breach band / queue
            entries = await r.xrange(stream)
            assert [f["message_id"] for _, f in entries] == [mid]
            assert entries[0][1]["priority"] == priority
            assert await r.hget(f"router:conv:{{{conv}}}", "item") == f"{stream} {entries[0][0]}"
            assert await r.zrange(f"{stream}:due", 0, -1) == [entries[0][0]]
            assert await r.xlen("router:q:{general}:p2") == 0
            assert event["entry_id"] == entries[0][0]
            if "queue" in on_breach:
                assert event["moved_to"] == "vip"
                assert entries[0][1]["escalated_from"] == "general"
                assert await r.hget(f"router:conv:{{{conv}}}", "item_queue") == "vip"
            else:
                assert event["raised_to"] == "urgent"
            counted = await metric(
                http,
                daemon,
                'router_sla_breaches_total{queue="general",target="first_response"}',
            )
            assert counted == 1.0
        assert len(daemon.events("sla_breached")) == 1
    finally:
        await r.aclose()
        daemon.stop()


async def test_no_breach_when_an_agent_replied_in_time(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    daemon = daemon_for(
        tmp_path, redis_server, **{"routing.on_breach": {"priority": "urgent"}}
    ).start()
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            answered = await post(http, daemon, "ana@example.com", 1)
            waiting = await post(http, daemon, "bo@example.com", 1)
            conv = await conversation_of(r, answered)
            other = await conversation_of(r, waiting)
            reply = {
                "id": "o-tool-1",
                "conversation_id": conv,
                "text": "On its way.",
                "agent": "al",
            }
            await r.xadd("router:outbox", {"o": json.dumps(reply)})
            found = await wait_breaches(r, 1)
            await asyncio.sleep(2.5)
            found = await breaches(r)
            assert [e["conversation_id"] for e in found] == [other]
            assert await r.hget(f"router:conv:{{{conv}}}", "first_response_at")
            assert not await r.hget(f"router:conv:{{{conv}}}", "breached_first_response")
            assert await r.zcard("router:sla") == 0
            assert await r.xlen("router:q:{general}:p2") == 1  # the answered one stays
    finally:
        await r.aclose()
        daemon.stop()


async def test_exactly_once_with_two_daemons_and_a_sigkill(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two daemons watch the same due times; one is SIGKILLed while breaches
    fall due and started again: every conversation is breached exactly once."""
    overrides = {"routing.on_breach": {"priority": "high", "queue": "vip"}}
    a = daemon_for(tmp_path, redis_server, "a", **overrides).start()
    b = daemon_for(tmp_path, redis_server, "b", **overrides).start()
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    n = 0
    try:
        async with aiohttp.ClientSession() as http:
            for wave in range(6):  # due times spread over ~1.5 s
                for i in range(10):
                    await post(http, a if i % 2 else b, f"user{wave}-{i}@example.com", 1)
                    n += 1
                await asyncio.sleep(0.25)
            found = await wait_breaches(r, 1)
            b.kill()  # in the middle of the breaches falling due
            killed_after = len(found)
            await asyncio.sleep(0.3)
            b.start()
            found = await wait_breaches(r, n)
            await asyncio.sleep(2.5)  # more ticks of both: nothing twice
            found = await breaches(r)
        per_conversation = Counter(e["conversation_id"] for e in found)
        assert len(per_conversation) == n
        assert set(per_conversation.values()) == {1}
        assert killed_after < n, "the kill came while breaches were still due"
        assert await r.zcard("router:sla") == 0
        assert await r.xlen("router:q:{vip}:p1") == n
        assert await r.xlen("router:q:{general}:p2") == 0
    finally:
        await r.aclose()
        a.stop()
        b.stop()


def test_on_breach_queue_must_exist(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "router.yaml",
        "redis://127.0.0.1:6399/0",
        free_port(),
        **{"routing.on_breach": {"queue": "nowhere", "priority": "urgent"}},
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"ROUTER_API_TOKEN": "t"})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:")
    assert "on_breach queue 'nowhere' is not a queue" in problem


@pytest.mark.parametrize("acked", [False, True], ids=["joins-the-item", "new-item-after-ack"])
async def test_a_next_response_breach_after_an_agent_reply_and_a_new_message(
    tmp_path: Path, redis_server: RedisServer, acked: bool
) -> None:
    """A customer message after an agent reply starts a next-response target:
    unanswered, it is one `sla_breached` with target next_response (and no
    first-response breach besides, also when it made a new work item)."""
    daemon = daemon_for(
        tmp_path,
        redis_server,
        **{
            "routing.first_response": {"default": "3s", "max": "3s"},
            "routing.next_response": {"default": "2s", "max": "2s"},
            "routing.on_breach": {"priority": "high"},
        },
    ).start()
    r = aioredis.Redis(port=redis_server.port, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            first = await post(http, daemon, "ana@example.com", 1)
            conv = await conversation_of(r, first)
            ck = f"router:conv:{{{conv}}}"
            reply = {"id": "o-1", "conversation_id": conv, "text": "Checking.", "agent": "al"}
            await r.xadd("router:outbox", {"o": json.dumps(reply)})
            for _ in range(100):
                if await r.hget(ck, "first_response_at"):
                    break
                await asyncio.sleep(0.05)
            if acked:  # the agent finished the item: the next message makes a new one
                stream, entry = (await r.hget(ck, "item")).split(" ")
                await r.xack(stream, "agents", entry)
                await r.xdel(stream, entry)
            second = await post(http, daemon, "ana@example.com", 2)
            assert await conversation_of(r, second) == conv
            (event,) = await wait_breaches(r, 1)
            await asyncio.sleep(3.5)  # past the first-response due time too: still one
            assert len(await breaches(r)) == 1
            assert event["target"] == "next_response"
            start = float(await r.hget(ck, "next_response_from"))
            assert abs(float(event["due_at"]) - (start + 2)) < 0.01
            assert float(event["at"]) >= float(event["due_at"])
            assert await r.hget(ck, "breached_next_response")
            assert not await r.hget(ck, "breached_first_response")
            assert await r.zcard("router:sla") == 0
            assert await r.xlen("router:q:{general}:p1") == 1  # raised to high
            counted = await metric(
                http,
                daemon,
                'router_sla_breaches_total{queue="general",target="next_response"}',
            )
            assert counted == 1.0
    finally:
        await r.aclose()
        daemon.stop()
