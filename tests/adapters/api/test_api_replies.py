"""GET /v1/conversations/{id}/replies: what an API caller without a callback
reads back, over real HTTP from the adapter, on a real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.adapters.api import ApiAdapter
from router.agent import AgentClient
from router.config import Config
from router.metrics import Metrics
from router.store import Store
from tests.support import API_TOKEN, free_port

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def base_url(cfg: Config) -> AsyncIterator[str]:
    async def no_ingest(message: Any) -> Any:
        raise AssertionError("these tests post nothing")

    adapter = ApiAdapter(lambda: cfg, no_ingest, Metrics(), lambda: True)
    app = web.Application()
    app.router.add_routes(adapter.routes())
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}"
    await adapter.stop()
    await runner.cleanup()


async def conversation(store: Store, conv_id: str = "v1") -> str:
    await store.redis.hset(
        store.keys.conversation(conv_id),
        mapping={"id": conv_id, "status": "open", "channel": "api", "reply_to": "ana@example.com"},
    )
    return conv_id


async def reply(store: Store, conv: str, text: str, status: str, channel: str = "api") -> str:
    """A reply as the outbox leaves it (``sent``) or before it got to it (``queued``)."""
    oid = await AgentClient(store).reply(conv, text, agent="bob", channel=channel)
    await mark(store, oid, status)
    return oid


async def mark(store: Store, oid: str, status: str) -> None:
    await store.redis.hset(
        store.keys.delivery(oid), mapping={"status": status, "sent_at": f"{time.time():.3f}"}
    )


async def get(base_url: str, conv: str, headers: dict[str, str] = AUTH, **query: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{base_url}/v1/conversations/{conv}/replies", headers=headers, params=query
        ) as resp,
    ):
        return resp.status, await resp.json()


async def test_refusals(base_url: str, store: Store) -> None:
    conv = await conversation(store)
    assert (await get(base_url, conv, headers={}))[0] == 401
    assert (await get(base_url, conv, headers={"Authorization": "Bearer nope"}))[0] == 401
    status, body = await get(base_url, "v-missing")
    assert status == 404 and "does not exist" in body["error"]
    assert (await get(base_url, conv, limit="0"))[0] == 400
    assert (await get(base_url, conv, limit="many"))[0] == 400
    status, body = await get(base_url, conv, after="yesterday")
    assert status == 400 and "'after'" in body["error"]
    assert await get(base_url, conv) == (
        200,
        {"conversation_id": conv, "replies": [], "next": None},
    )


async def test_polling_returns_each_sent_reply_and_skips_none(base_url: str, store: Store) -> None:
    conv = await conversation(store)
    first = await reply(store, conv, "one", "sent")
    await reply(store, conv, "by mail", "sent", channel="email")  # not the API's
    second = await reply(store, conv, "two", "queued")  # the outbox has not sent it yet
    third = await reply(store, conv, "three", "sent")

    status, body = await get(base_url, conv)
    assert status == 200
    # "two" is not sent yet: the answer stops before it, so polling finds it later
    assert [(r["id"], r["text"], r["agent"], r["kind"]) for r in body["replies"]] == [
        (first, "one", "bob", "reply")
    ]
    assert body["replies"][0]["sent_at"].endswith("+00:00")
    delivery = await AgentClient(store).delivery(first)
    assert delivery["status"] == "delivered" and float(delivery["delivered_at"]) > 0

    await mark(store, second, "sent")
    status, body = await get(base_url, conv, after=body["next"])
    assert [r["id"] for r in body["replies"]] == [second, third]
    assert (await AgentClient(store).delivery(third))["status"] == "delivered"

    # nothing new: the same position comes back
    assert await get(base_url, conv, after=body["next"]) == (
        200,
        {"conversation_id": conv, "replies": [], "next": body["next"]},
    )
    # a later reply, and pages of one
    fourth = await reply(store, conv, "four", "sent")
    fifth = await reply(store, conv, "five", "sent")
    _, page = await get(base_url, conv, after=body["next"], limit="1")
    assert [r["id"] for r in page["replies"]] == [fourth]
    _, page = await get(base_url, conv, after=page["next"], limit="1")
    assert [r["id"] for r in page["replies"]] == [fifth]


async def test_without_after_the_newest_come_oldest_first(base_url: str, store: Store) -> None:
    conv = await conversation(store)
    ids = [await reply(store, conv, f"reply {n}", "sent") for n in range(5)]
    _, body = await get(base_url, conv, limit="3")
    assert [r["id"] for r in body["replies"]] == ids[2:]
    # a reply that failed for good (dead-lettered) does not hold polling back
    failed = await reply(store, conv, "never sent", "failed")
    later = await reply(store, conv, "after it", "sent")
    _, more = await get(base_url, conv, after=body["next"])
    assert [r["id"] for r in more["replies"]] == [later] and failed not in str(more)
