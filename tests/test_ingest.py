"""Ingest against a real redis-server: durable, deduplicated, partitioned."""

from __future__ import annotations

import asyncio

import pytest

from router.config import Config
from router.ingest import Ingestor, StoreUnavailable
from router.keys import INGEST_GROUP
from router.model import Identity, InboundMessage
from router.store import Store
from tests.support import RedisServer


def msg(
    sender: str = "ana@example.com", source_id: str | None = "s1", text: str = "hi"
) -> InboundMessage:
    return InboundMessage(
        channel="api", sender=Identity("email", sender), text=text, source_id=source_id
    )


async def ingest_entries(store: Store) -> list[tuple[int, str, dict]]:
    out = []
    for p in range(store.partitions):
        for entry_id, fields in await store.redis.xrange(store.keys.ingest(p)):
            out.append((p, entry_id, fields))
    return out


async def test_stores_once_per_channel_and_source_id(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, cfg.ingest.dedup_ttl)
    first = await ing.ingest(msg())
    again = await ing.ingest(msg(text="retry of the same webhook"))
    other = await ing.ingest(msg(source_id="s2"))
    assert not first.duplicate and again.duplicate and not other.duplicate
    assert again.id == first.id != other.id
    entries = await ingest_entries(store)
    assert len(entries) == 2
    stored = InboundMessage.from_json(entries[0][2]["m"])
    assert stored.id in (first.id, other.id) and stored.sender.value == "ana@example.com"
    ttl = await store.redis.ttl(store.keys.dedup("api", "s1"))
    assert 0 < ttl <= cfg.ingest.dedup_ttl


async def test_same_source_id_on_another_channel_is_not_a_duplicate(store: Store) -> None:
    ing = Ingestor(store, 60)
    a = await ing.ingest(msg())
    m = msg()
    m.channel = "sms"
    b = await ing.ingest(m)
    assert not b.duplicate and a.id != b.id


async def test_one_sender_one_partition(store: Store) -> None:
    ing = Ingestor(store, 60)
    for i in range(20):
        await ing.ingest(msg(source_id=f"a{i}"))
        await ing.ingest(msg(sender=f"user{i}@example.com", source_id=f"b{i}"))
    entries = await ingest_entries(store)
    ana = {p for p, _, f in entries if '"ana@example.com"' in f["m"]}
    assert len(ana) == 1
    assert len({p for p, _, _ in entries}) > 1  # the others spread out
    # ana's entries in her partition are in the order they were sent
    (p,) = ana
    texts = [
        InboundMessage.from_json(f["m"]).source_id
        for q, _, f in entries
        if q == p and '"ana@example.com"' in f["m"]
    ]
    assert texts == [f"a{i}" for i in range(20)]


async def test_concurrent_ingest_is_batched_and_exact(store: Store) -> None:
    ing = Ingestor(store, 60)
    await ing.start()
    try:
        # 300 distinct + every one sent twice concurrently
        ids = [f"x{i}" for i in range(300)]
        results = await asyncio.gather(
            *(
                ing.ingest(msg(sender=f"u{i % 37}@example.com", source_id=s))
                for i, s in enumerate(ids + ids)
            )
        )
    finally:
        await ing.stop()
    assert sum(not r.duplicate for r in results) == 300
    assert len({r.id for r in results}) == 300
    assert len(await ingest_entries(store)) == 300


async def test_message_without_source_id_is_never_deduplicated(store: Store) -> None:
    ing = Ingestor(store, 60)
    a = await ing.ingest(msg(source_id=None))
    b = await ing.ingest(msg(source_id=None))
    assert a.id != b.id and not a.duplicate and not b.duplicate
    assert len(await ingest_entries(store)) == 2


async def test_redis_down_raises_and_stores_nothing(
    store: Store, redis_server: RedisServer
) -> None:
    ing = Ingestor(store, 60)
    await ing.start()
    redis_server.stop()
    try:
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(ing.ingest(msg()), 10)
    finally:
        await ing.stop()
    redis_server.start()
    assert await ingest_entries(store) == []


async def test_groups_exist_for_every_partition(store: Store) -> None:
    for p in range(store.partitions):
        groups = await store.redis.xinfo_groups(store.keys.ingest(p))
        assert [g["name"] for g in groups] == [INGEST_GROUP]
