"""Outbox: replies go out through the channel's sender (here the api callback,
over real HTTP to a server on loopback), with retries, then dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from router.adapters.api import ApiCallbackSender
from router.agent import AgentClient, AgentError
from router.config import Config, load_config
from router.deadletters import list_dead_letters, replay
from router.metrics import Metrics
from router.outbox import OutboxWorker, backoff
from router.store import Store
from tests.support import free_port

SECRET = "callback-secret"


class Callback:
    """An HTTP server that answers with the statuses it is told, and records requests."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.requests: list[tuple[dict[str, str], bytes, float]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read(), time.monotonic()))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="nope" if status >= 400 else "ok")


@pytest.fixture
async def callback() -> AsyncIterator[Callback]:
    cb = Callback()
    app = web.Application()
    app.router.add_post("/hook", cb.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", cb.port).start()
    yield cb
    await runner.cleanup()


def with_callback(cfg: Config, port: int, config_path: Path) -> Config:
    text = config_path.read_text().replace(
        "  api:\n    enabled: true\n",
        f"  api:\n    enabled: true\n    callback:\n      url: http://127.0.0.1:{port}/hook\n"
        "      secret: {env: CB_SECRET}\n      timeout: 2s\n",
    )
    config_path.write_text(text)
    import os

    os.environ["CB_SECRET"] = SECRET
    return load_config(config_path)


async def conversation(store: Store, conv_id: str = "v1", channel: str = "api") -> str:
    await store.redis.hset(
        store.keys.conversation(conv_id),
        mapping={
            "id": conv_id,
            "customer_id": "c1",
            "status": "open",
            "channel": channel,
            "reply_to": "ana@example.com",
            "subject": "Order 1234",
            "last_thread_ref": "t-99",
        },
    )
    return conv_id


class Running:
    def __init__(self, store: Store, cfg: Config) -> None:
        self.holder = {"cfg": cfg}
        self.sender = ApiCallbackSender(lambda: self.holder["cfg"])
        self.metrics = Metrics()
        self.worker = OutboxWorker(
            store, lambda: self.holder["cfg"], {"api": self.sender}, self.metrics, "node-a"
        )
        self.stop = asyncio.Event()

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.worker.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await self.task
        await self.sender.close()


async def wait_status(store: Store, outbox_id: str, status: str, timeout: float = 10) -> dict:
    client = AgentClient(store)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = await client.delivery(outbox_id)
        if d.get("status") == status:
            return d
        await asyncio.sleep(0.05)
    raise AssertionError(f"{outbox_id} never became {status}: {await client.delivery(outbox_id)}")


async def test_reply_is_delivered_signed_and_recorded(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    cfg = with_callback(cfg, callback.port, config_path)
    conv = await conversation(store)
    async with Running(store, cfg):
        oid = await AgentClient(store).reply(conv, "Your parcel ships today.", agent="bob")
        d = await wait_status(store, oid, "sent")
    assert d["attempts"] == "1" and d["agent"] == "bob"
    ((headers, body, _),) = callback.requests
    sent = orjson.loads(body)
    assert sent == {
        "id": oid,
        "conversation_id": conv,
        "to": "ana@example.com",
        "text": "Your parcel ships today.",
        "subject": "Order 1234",
        "in_reply_to": "t-99",
        "agent": "bob",
        "kind": "reply",
    }
    assert headers["Idempotency-Key"] == oid
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Router-Signature"] == f"sha256={expected}"
    timeline = await store.redis.xrange(store.keys.timeline(conv))
    assert [(f["direction"], f.get("outbox_id")) for _, f in timeline] == [("out", oid)]
    assert await store.redis.xlen(store.keys.outbox) == 0


async def test_transient_failures_are_retried_with_backoff(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    cfg = with_callback(cfg, callback.port, config_path)
    callback.statuses = [500, 503]
    conv = await conversation(store)
    async with Running(store, cfg) as run:
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "sent")
    assert d["attempts"] == "3"
    times = [t for _, _, t in callback.requests]
    assert len(times) == 3
    # backoff_initial 200ms then 400ms (±20% jitter, plus polling slack)
    assert times[1] - times[0] >= 0.15 and times[2] - times[1] >= 0.3
    assert run.metrics.outbox_failures.labels("api")._value.get() == 2


async def test_gives_up_after_max_attempts_into_dead_letters(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    cfg = with_callback(cfg, callback.port, config_path)
    callback.statuses = [500] * 10
    conv = await conversation(store)
    async with Running(store, cfg):
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "failed")
    assert len(callback.requests) == 3  # max_attempts in the test config
    assert "gave up after 3 attempts" in d["last_error"]
    (dl,) = await list_dead_letters(store)
    assert dl.fields["kind"] == "outbox" and dl.fields["outbox_id"] == oid


async def test_permanent_refusal_is_not_retried(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    cfg = with_callback(cfg, callback.port, config_path)
    callback.statuses = [422]
    conv = await conversation(store)
    async with Running(store, cfg):
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "failed")
    assert len(callback.requests) == 1
    assert "callback answered 422" in d["last_error"]


async def test_dead_letter_replayed_once_the_channel_is_fixed(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    conv = await conversation(store)
    callback.statuses = [404]  # the receiving end is not deployed yet
    async with Running(store, with_callback(cfg, callback.port, config_path)):
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "failed")
        assert "callback answered 404" in d["last_error"]
        (dl,) = await list_dead_letters(store)  # the admin deploys it, then replays
        ((_, new_entry, note),) = await replay(store, [dl.id])
        assert note == "replayed" and new_entry
        await wait_status(store, oid, "sent")
    assert len(callback.requests) == 2
    assert await list_dead_letters(store) == []


async def test_without_a_callback_replies_are_kept_to_be_read(store: Store, cfg: Config) -> None:
    """No channels.api.callback: the reply is sent into its delivery record, for
    GET /v1/conversations/{id}/replies (tests/adapters/api/test_api_replies.py), not dead-lettered."""
    conv = await conversation(store)
    async with Running(store, cfg):
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "sent")
    assert d["text"] == "hello"
    assert await list_dead_letters(store) == []


async def test_channel_without_sender_is_dead_lettered(store: Store, cfg: Config) -> None:
    conv = await conversation(store, channel="sms")
    async with Running(store, cfg):
        oid = await AgentClient(store).reply(conv, "hello")
        d = await wait_status(store, oid, "failed")
    assert "no sender for channel 'sms' is configured" in d["last_error"]


async def test_replies_need_text_and_a_conversation(store: Store) -> None:
    client = AgentClient(store)
    with pytest.raises(AgentError, match="does not exist"):
        await client.reply("v-missing", "hi")
    conv = await conversation(store)
    with pytest.raises(AgentError, match="needs some text"):
        await client.reply(conv, "   ")


async def test_a_sent_reply_redelivered_after_a_crash_is_not_sent_again(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    cfg = with_callback(cfg, callback.port, config_path)
    conv = await conversation(store)
    oid = await AgentClient(store).reply(conv, "hello")
    # the crash: delivered and recorded as sent, but the stream entry was never acked
    await store.redis.hset(store.keys.delivery(oid), "status", "sent")
    async with Running(store, cfg):
        await asyncio.sleep(0.5)
    assert callback.requests == []
    assert await store.redis.xlen(store.keys.outbox) == 0


def test_backoff_grows_and_is_capped() -> None:
    assert 1.6 <= backoff(1, 2, 600) <= 2.4
    assert 6.4 <= backoff(3, 2, 600) <= 9.6
    assert backoff(30, 2, 600) <= 720


async def test_minimal_reply_from_a_tool_in_another_language(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    """Only XADD with id, conversation_id and text: the daemon fills the rest."""
    cfg = with_callback(cfg, callback.port, config_path)
    conv = await conversation(store)
    await store.redis.xadd(
        store.keys.outbox,
        {
            "o": orjson.dumps(
                {"id": "o-raw-1", "conversation_id": conv, "text": "Hi from a bot", "agent": "bot"}
            )
        },
    )
    async with Running(store, cfg):
        d = await wait_status(store, "o-raw-1", "sent")
    assert d["channel"] == "api" and d["text"] == "Hi from a bot"
    ((_, body, _),) = callback.requests
    sent = orjson.loads(body)
    assert (sent["to"], sent["in_reply_to"], sent["subject"]) == (
        "ana@example.com",
        "t-99",
        "Order 1234",
    )
    timeline = await store.redis.xrange(store.keys.timeline(conv))
    assert [f.get("outbox_id") for _, f in timeline] == ["o-raw-1"]
    assert 0 < await store.redis.ttl(store.keys.delivery("o-raw-1"))


async def test_reply_to_a_vanished_conversation_is_dead_lettered(store: Store, cfg: Config) -> None:
    await store.redis.xadd(
        store.keys.outbox,
        {"o": orjson.dumps({"id": "o-raw-2", "conversation_id": "v-gone", "text": "hello?"})},
    )
    async with Running(store, cfg):
        for _ in range(100):
            if await list_dead_letters(store):
                break
            await asyncio.sleep(0.05)
    (dl,) = await list_dead_letters(store)
    assert dl.fields["reason"] == "conversation v-gone does not exist"


async def test_attempts_cut_short_by_crashes_count(
    store: Store, cfg: Config, config_path: Path, callback: Callback
) -> None:
    """A daemon killed while sending leaves the delivery at 'sending' and the
    stream entry's own count unchanged. The attempt it began still counts:
    after one crash the next try is number 2; a crash loop ends in a dead
    letter at max_attempts (3 here) instead of resending forever."""
    cfg = with_callback(cfg, callback.port, config_path)
    conv = await conversation(store)
    client = AgentClient(store)
    once = await client.reply(conv, "after one crash")
    await store.redis.hset(store.keys.delivery(once), mapping={"status": "sending", "attempts": 1})
    looped = await client.reply(conv, "after three crashes")
    await store.redis.hset(
        store.keys.delivery(looped), mapping={"status": "sending", "attempts": 3}
    )
    async with Running(store, cfg):
        d = await wait_status(store, once, "sent")
        for _ in range(100):
            if await list_dead_letters(store):
                break
            await asyncio.sleep(0.05)
    assert d["attempts"] == "2"
    assert [orjson.loads(body)["text"] for _, body, _ in callback.requests] == ["after one crash"]
    (dl,) = await list_dead_letters(store)
    assert "gave up after 3 attempts, the last cut short" in dl.fields["reason"]
