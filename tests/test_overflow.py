"""Overflow on a real Redis: an entry nobody claims within its target's wait
moves to the next target; claimed or finished entries stay; it survives restarts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from router.agent import AgentClient
from router.config import Config, load_config
from router.ingest import Ingestor
from router.metrics import Metrics
from router.model import InboundMessage
from router.overflow import OverflowWorker
from router.pipeline import RoutingWorker
from router.profiles.identity import normalise_identity
from router.routing import Routing
from router.store import Store
from tests.support import RedisServer, free_port, write_config

CHAIN = {
    "queues": {"first": {}, "second": {}, "third": {}, "general": {}},
    "rules": [
        {
            "name": "chain",
            "when": {"channel": ["api"]},
            "targets": [
                {"queue": "first", "wait": "10s"},
                {"queue": "second", "wait": "20s", "priority": "high"},
                {"queue": "third"},
            ],
        }
    ],
}


@pytest.fixture
def chain_cfg(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("ROUTER_API_TOKEN", "t")
    path = write_config(tmp_path / "chain.yaml", redis_server.url, free_port(), **CHAIN)
    return load_config(path)


@pytest.fixture
async def chain(chain_cfg: Config) -> tuple[Store, Routing]:
    store = Store.open(chain_cfg)
    await store.prepare(chain_cfg.queues, {q: {"visibility_timeout": 60} for q in chain_cfg.queues})
    yield store, Routing.build(chain_cfg)
    await store.close()


async def route_one(store: Store, routing: Routing, sender: str) -> str:
    msg = InboundMessage(channel="api", sender=normalise_identity(sender, "api"), text="help")
    result = await Ingestor(store, 60).ingest(msg)
    worker = RoutingWorker(store, lambda: routing, Metrics(), "n1")
    await worker.renew_leases(5)
    for _ in range(3):
        entries = await worker.read(100, 0.05)
        if entries:
            await worker.route(entries)
    return result.id


async def where(store: Store, message_id: str) -> list[tuple[str, dict]]:
    out = []
    for q in ("first", "second", "third"):
        for key in store.keys.queue_bands(q):
            out += [
                (key, f) for _, f in await store.redis.xrange(key) if f["message_id"] == message_id
            ]
    return out


async def test_unclaimed_entry_walks_the_chain(chain: tuple[Store, Routing]) -> None:
    store, routing = chain
    t0 = time.time()
    mid = await route_one(store, routing, "ana@example.com")
    ((key, fields),) = await where(store, mid)
    assert key == store.keys.queue("first", 2) and fields["target"] == "0"
    mover = OverflowWorker(store, lambda: routing, Metrics())
    assert await mover.tick(t0 + 5) == 0  # not yet
    assert await mover.tick(t0 + 11) == 1
    ((key, fields),) = await where(store, mid)
    assert key == store.keys.queue("second", 1)  # high priority band
    assert (fields["target"], fields["overflowed_from"], fields["priority"]) == (
        "1",
        "first",
        "high",
    )
    assert fields["queued_at"] < fields["overflowed_at"]  # age still counts from arrival
    msg = await store.redis.hgetall(store.keys.message(mid))
    assert msg["queue"] == "second" and msg["queue_entry"].startswith(key)
    # a restart: a new worker (state lives in Redis) finishes the chain
    mover = OverflowWorker(store, lambda: routing, Metrics())
    assert await mover.tick(t0 + 25) == 0  # second waits 20s from its own arrival
    assert await mover.tick(t0 + 45) == 1
    ((key, fields),) = await where(store, mid)
    assert key == store.keys.queue("third", 1) and fields["target"] == "2"
    assert await store.redis.zcard(store.keys.overflow) == 0  # end of the chain
    # each move is an event; the conversation's work item followed the entry
    events = [f for _, f in await store.redis.xrange(store.keys.events)]
    assert [(e["type"], e.get("from_queue"), e["queue"]) for e in events] == [
        ("queued", None, "first"),
        ("overflowed", "first", "second"),
        ("overflowed", "second", "third"),
    ]
    conv = await store.redis.hgetall(store.keys.conversation(fields["conversation_id"]))
    assert conv["item"].startswith(key) and conv["item_queue"] == "third"
    # and it waits in its new band's due set, to be claimed by due time
    assert await store.redis.zrange(store.keys.queue_due(key), 0, -1) == [conv["item"].split()[1]]


async def test_claimed_and_finished_entries_stay(chain: tuple[Store, Routing]) -> None:
    store, routing = chain
    t0 = time.time()
    claimed = await route_one(store, routing, "bo@example.com")
    done = await route_one(store, routing, "cy@example.com")
    client = AgentClient(store)
    first = await client.claim("first", "alice")
    second = await client.claim("first", "alice")
    assert {first.fields["message_id"], second.fields["message_id"]} == {claimed, done}
    finished = first if first.fields["message_id"] == done else second
    await client.ack("first", finished.entry_id, "alice")
    mover = OverflowWorker(store, lambda: routing, Metrics())
    assert await mover.tick(t0 + 11) == 2
    ((key, _),) = await where(store, claimed)
    assert key == store.keys.queue("first", 2)  # alice has it: it stays
    assert await where(store, done) == []
    assert await store.redis.zcard(store.keys.overflow) == 0


async def test_moved_entry_can_be_claimed_in_its_new_queue(chain: tuple[Store, Routing]) -> None:
    store, routing = chain
    t0 = time.time()
    mid = await route_one(store, routing, "di@example.com")
    await OverflowWorker(store, lambda: routing, Metrics()).tick(t0 + 11)
    client = AgentClient(store)
    assert await client.claim("first", "alice") is None
    entry = await client.claim("second", "bob")
    assert entry is not None and entry.fields["message_id"] == mid
    assert entry.message["text"] == "help"


async def test_overflow_follows_the_current_config(
    chain: tuple[Store, Routing], chain_cfg: Config
) -> None:
    """A reload that drops the rule stops the chain and leaves the entry where it is."""
    store, routing = chain
    t0 = time.time()
    mid = await route_one(store, routing, "ed@example.com")
    reloaded = Routing.build(chain_cfg.model_copy(update={"rules": []}))
    assert await OverflowWorker(store, lambda: reloaded, Metrics()).tick(t0 + 11) == 1
    ((key, _),) = await where(store, mid)
    assert key == store.keys.queue("first", 2)
    assert await store.redis.zcard(store.keys.overflow) == 0
