"""Routing workers against a real Redis: routed once, in order, or dead-lettered."""

from __future__ import annotations

import time

import orjson
import pytest

from router.config import Config
from router.deadletters import list_dead_letters, replay
from router.ingest import Ingestor
from router.keys import INGEST_GROUP
from router.metrics import Metrics
from router.model import Hints, InboundMessage
from router.pipeline import RoutingWorker
from router.profiles.identity import normalise_identity
from router.routing import Routing
from router.store import Store
from tests.support import queued_message_ids


def msg(
    sender: str = "ana@example.com",
    text: str = "My parcel is late",
    source_id: str | None = None,
    channel: str = "api",
    language: str | None = None,
) -> InboundMessage:
    return InboundMessage(
        channel=channel,
        sender=normalise_identity(sender, "email"),
        text=text,
        source_id=source_id,
        hints=Hints(language=language),
    )


def worker(store: Store, cfg: Config, node: str = "node-a") -> RoutingWorker:
    routing = Routing.build(cfg)
    return RoutingWorker(store, lambda: routing, Metrics(), node)


async def drain(w: RoutingWorker) -> int:
    """Route until nothing is left; return how many entries were handled."""
    await w.renew_leases(5)
    n = 0
    for _ in range(50):
        replaying = any(p == "0" for p in w.owned.values())
        entries = await w.read(100, 0.05)
        if not entries and not replaying:
            break
        n += len(entries)
        if entries:
            await w.route(entries)
    return n


async def queue_entries(store: Store, queue: str) -> list[tuple[int, str, dict]]:
    out = []
    for band, key in enumerate(store.keys.queue_bands(queue)):
        out += [(band, i, f) for i, f in await store.redis.xrange(key)]
    return out


async def test_routes_by_rule_with_priority_band(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    es = await ing.ingest(msg(text="Hola, mi pedido no ha llegado", language="es"))
    chat = await ing.ingest(msg(sender="bo@example.com", channel="chat"))
    plain = await ing.ingest(msg(sender="cy@example.com"))
    assert await drain(worker(store, cfg)) == 3

    ((band, _, entry),) = await queue_entries(store, "support-es")
    assert band == 2 and entry["message_id"] == es.id and entry["language"] == "es"
    general = await queue_entries(store, "general")
    assert sorted((b, f["message_id"]) for b, _, f in general) == [(1, chat.id), (2, plain.id)]

    stored = await store.redis.hgetall(store.keys.message(es.id))
    assert stored["text"] == "Hola, mi pedido no ha llegado"
    assert stored["queue"] == "support-es"
    assert "rule 'spanish' matched" in orjson.loads(stored["decision"])["reasons"]
    conv = await store.redis.hgetall(store.keys.conversation(entry["conversation_id"]))
    assert conv["status"] == "open" and conv["reply_to"] == "ana@example.com"
    customer = await store.redis.hgetall(store.keys.customer(entry["customer_id"]))
    assert customer["message_count"] == "1" and customer["conversation_count"] == "1"
    # the ingest streams are empty and nothing is pending
    for p in range(store.partitions):
        assert await store.redis.xlen(store.keys.ingest(p)) == 0
        assert (await store.redis.xpending(store.keys.ingest(p), INGEST_GROUP))["pending"] == 0


async def test_redelivered_entries_are_not_queued_twice(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    for i in range(5):
        await ing.ingest(msg(sender=f"u{i}@example.com"))
    w = worker(store, cfg)
    await w.renew_leases(5)
    entries = await w.read(100, 0.05)
    entries += await w.read(100, 0.05)
    assert len(entries) == 5
    await w.route(entries)
    await w.route(entries)  # as if the acks were lost and the entries came again
    assert len(await queue_entries(store, "general")) == 5
    # and no event twice
    events = [f["type"] for _, f in await store.redis.xrange(store.keys.events)]
    assert events == ["queued"] * 5


async def test_entries_of_a_dead_worker_are_taken_over_once(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    sent = [(await ing.ingest(msg(sender=f"u{i}@example.com"))).id for i in range(30)]
    a = worker(store, cfg, "node-a")
    await a.renew_leases(0.3)  # short lease: node-a "dies" holding it
    taken = await a.read(100, 0.05)
    taken += await a.read(100, 0.05)
    assert len(taken) == 30  # read, never committed: pending with node-a
    b = worker(store, cfg, "node-b")
    await b.renew_leases(5)
    assert b.owned == {}  # node-a's leases still hold
    time.sleep(0.4)
    assert await drain(b) == 30
    routed = [f["message_id"] for _, _, f in await queue_entries(store, "general")]
    assert sorted(routed) == sorted(sent)
    # node-a wakes up late and commits what it had read: no duplicate
    await a.route(taken)
    assert len(await queue_entries(store, "general")) == 30


async def test_one_customer_threads_into_one_conversation(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    for text in ("first", "second", "third"):
        await ing.ingest(msg(text=text))
    await ing.ingest(msg(sender="ANA@example.com", text="by another spelling"))
    await drain(worker(store, cfg))
    entries = await queue_entries(store, "general")
    assert len({f["conversation_id"] for _, _, f in entries}) == 1
    assert len({f["customer_id"] for _, _, f in entries}) == 1
    conv_id = entries[0][2]["conversation_id"]
    timeline = await store.redis.xrange(store.keys.timeline(conv_id))
    texts = [
        (await store.redis.hget(store.keys.message(f["message_id"]), "text")) for _, f in timeline
    ]
    assert texts == ["first", "second", "third", "by another spelling"]


async def test_new_conversation_after_the_window(store: Store, cfg: Config) -> None:
    short = cfg.model_copy(
        update={"routing": cfg.routing.model_copy(update={"conversation_window": 0.0})}
    )
    ing = Ingestor(store, 60)
    await ing.ingest(msg(text="one"))
    await drain(worker(store, short))
    time.sleep(0.01)
    await ing.ingest(msg(text="two"))
    await drain(worker(store, short))
    entries = await queue_entries(store, "general")
    assert len({f["conversation_id"] for _, _, f in entries}) == 2
    customer = await store.redis.hgetall(store.keys.customer(entries[0][2]["customer_id"]))
    assert customer["conversation_count"] == "2"


async def test_unreadable_entry_is_dead_lettered_and_the_rest_flows(
    store: Store, cfg: Config
) -> None:
    ing = Ingestor(store, 60)
    good = await ing.ingest(msg())
    part = store.partition_of("email:ana@example.com")
    await store.redis.xadd(store.keys.ingest(part), {"m": b"{not json"})
    await store.redis.xadd(store.keys.ingest(part), {"m": orjson.dumps({"channel": "api"})})
    await drain(worker(store, cfg))
    assert [f["message_id"] for _, _, f in await queue_entries(store, "general")] == [good.id]
    dead = await list_dead_letters(store)
    assert len(dead) == 2
    assert {d.fields["stage"] for d in dead} == {"decode"}
    assert "unreadable ingest entry" in dead[0].fields["reason"]
    assert dead[0].fields["source"] == store.keys.ingest(part)
    # nothing left pending: the bad entries do not block the partition
    assert (await store.redis.xpending(store.keys.ingest(part), INGEST_GROUP))["pending"] == 0


async def test_replay_puts_messages_back_and_stays_idempotent(store: Store, cfg: Config) -> None:
    ing = Ingestor(store, 60)
    routed = msg(text="was routed already")
    await ing.ingest(routed)
    await drain(worker(store, cfg))
    part = store.partition_of("email:ana@example.com")
    lost = msg(text="dead-lettered by an older version")
    lost.id = "m-lost"
    for m in (routed, lost):  # dead letters whose cause is now fixed
        await store.redis.xadd(
            store.keys.deadletter,
            {
                "kind": "ingest",
                "stage": "route",
                "reason": "test",
                "failed_at": "0",
                "source": store.keys.ingest(part),
                "payload": m.to_json(),
            },
        )
    ids = [d.id for d in await list_dead_letters(store)]
    results = await replay(store, ids + ["0-1"])
    assert [r[2] for r in results] == ["replayed", "replayed", "no such dead letter"]
    assert await list_dead_letters(store) == []
    await drain(worker(store, cfg))
    # the routed one is not queued twice (the other joined its conversation's work item)
    ids = sorted(await queued_message_ids(store.redis, store.keys.prefix))
    assert ids == sorted([routed.id, "m-lost"])
    assert len(await queue_entries(store, "general")) == 1


@pytest.mark.parametrize("count", [1, 250])
async def test_batches_commit_everything(store: Store, cfg: Config, count: int) -> None:
    ing = Ingestor(store, 60)
    await ing.start()
    import asyncio

    await asyncio.gather(
        *(ing.ingest(msg(sender=f"u{i % 17}@x.org", source_id=str(i))) for i in range(count))
    )
    await ing.stop()
    await drain(worker(store, cfg))
    assert len(await queued_message_ids(store.redis, store.keys.prefix)) == count
    # one work item per conversation: the follow-ups joined the first one
    assert len(await queue_entries(store, "general")) == min(count, 17)


async def test_lanes_route_every_partition_in_order_and_drain(store: Store, cfg: Config) -> None:
    """workers.concurrency lanes split the partitions; one customer's messages
    (more than a commit slice and a yield stretch) stay in order, everyone's
    are routed once, and stop drains what is left then frees the leases."""
    import asyncio

    cfg = cfg.model_copy(update={"workers": cfg.workers.model_copy(update={"concurrency": 3})})
    ing = Ingestor(store, 60)
    await ing.start()
    ana = [await ing.ingest(msg(sender="ana@example.com", source_id=f"a{i}")) for i in range(120)]
    others = await asyncio.gather(
        *(ing.ingest(msg(sender=f"u{i}@example.com", source_id=f"u{i}")) for i in range(60))
    )
    await ing.stop()
    w = worker(store, cfg)
    stop = asyncio.Event()
    run = asyncio.create_task(w.run(stop))
    for _ in range(200):
        if len(await queued_message_ids(store.redis, store.keys.prefix)) == 180:
            break
        await asyncio.sleep(0.05)
    assert sorted(w.owned) == list(range(cfg.ingest.partitions))  # all lanes' share held
    late = await ing.ingest(msg(sender="bo@example.com", source_id="late"))
    stop.set()
    await asyncio.wait_for(run, 10)

    ids = await queued_message_ids(store.redis, store.keys.prefix)
    assert sorted(ids) == sorted([r.id for r in ana + others] + [late.id])  # each once
    # in the order sent: ana's conversation is one work item, her messages in order,
    # raised a band by repeat contact
    conv_id = await store.redis.hget(store.keys.message(ana[0].id), "conversation_id")
    timeline = await store.redis.xrange(store.keys.timeline(conv_id))
    assert [f["message_id"] for _, f in timeline] == [r.id for r in ana]
    conv = await store.redis.hgetall(store.keys.conversation(conv_id))
    assert conv["item_message_count"] == "120" and conv["item_last_message_id"] == ana[-1].id
    (item,) = [
        (b, f) for b, _, f in await queue_entries(store, "general") if f["message_id"] == ana[0].id
    ]
    assert item[0] == 1 and item[1]["priority"] == "high"
    assert w.owned == {}
    assert not await store.redis.exists(*(store.keys.lease(p) for p in range(4)))


async def test_a_lane_that_crashes_stops_the_worker_loudly(
    store: Store, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    w = worker(store, cfg)
    await Ingestor(store, 60).ingest(msg())

    async def broken(entries: list) -> None:
        raise RuntimeError("a bug in routing")

    monkeypatch.setattr(w, "route", broken)
    with pytest.raises(RuntimeError, match="a bug in routing"):
        await asyncio.wait_for(w.run(asyncio.Event()), 10)


async def test_a_lane_that_crashes_during_a_lease_renewal_stops_the_worker_too(
    store: Store, cfg: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash lands while the worker awaits Redis for its renewal, not
    while it waits on the lanes: it must not go unnoticed."""
    import asyncio

    cfg = cfg.model_copy(update={"workers": cfg.workers.model_copy(update={"lease_ttl": 0.3})})
    w = worker(store, cfg)
    await Ingestor(store, 60).ingest(msg())
    renewing, crashed = asyncio.Event(), asyncio.Event()

    async def broken(entries: list) -> None:
        await renewing.wait()
        crashed.set()
        raise RuntimeError("a bug in routing")

    real_renew = w.renew_leases
    renewals = 0

    async def renew(ttl: float, draining: bool = False) -> None:
        nonlocal renewals
        renewals += 1
        await real_renew(ttl, draining)
        if renewals == 2:  # the lanes are running: one dies now
            renewing.set()
            await crashed.wait()
            await asyncio.sleep(0.05)  # (its task ends)

    monkeypatch.setattr(w, "route", broken)
    monkeypatch.setattr(w, "renew_leases", renew)
    with pytest.raises(RuntimeError, match="a bug in routing"):
        await asyncio.wait_for(w.run(asyncio.Event()), 10)


async def test_routing_nodes_share_the_partitions_evenly(store: Store, cfg: Config) -> None:
    """A second daemon gets half the partitions within one renewal; when it
    stops, the first takes them all back. Nothing is routed twice or lost
    across the hand-overs, also for entries read before a partition moved."""
    ing = Ingestor(store, 60)
    sent = [(await ing.ingest(msg(sender=f"u{i}@example.com"))).id for i in range(80)]
    a, b = worker(store, cfg, "node-a"), worker(store, cfg, "node-b")
    await a.renew_leases(5)
    assert sorted(a.owned) == [0, 1, 2, 3]
    taken = await a.read(5, None)  # read, not yet committed when the partition moves
    await b.renew_leases(5)
    assert b.owned == {}  # nothing free yet
    await a.renew_leases(5)  # a sees two nodes: keeps 2, lets go of 2
    assert len(a.owned) == 2
    await b.renew_leases(5)
    assert len(b.owned) == 2 and set(a.owned).isdisjoint(b.owned)
    assert await drain(b) > 0  # b adopted a's pending entries of its partitions
    await a.route(taken)  # a commits late: what b routed already is not queued twice
    await drain(a)
    await b.release_leases()  # b stops
    await a.renew_leases(5)
    assert sorted(a.owned) == [0, 1, 2, 3]
    await ing.ingest(msg(sender="late@example.com"))
    await drain(a)
    routed = sorted(await queued_message_ids(store.redis, store.keys.prefix))
    assert len(routed) == 81 and set(sent) <= set(routed)


async def test_a_draining_node_keeps_its_partitions_and_takes_no_new_ones(
    store: Store, cfg: Config
) -> None:
    """A stopping daemon routes what its partitions hold, but takes no
    partition another node lets go of meanwhile, and stops counting as a
    routing node at once: the others' share covers the rest."""
    nodes = store.keys.routing_nodes
    a, b, c = (worker(store, cfg, f"node-{n}") for n in "abc")
    await a.renew_leases(5)
    await b.renew_leases(5)
    await a.renew_leases(5)  # two nodes: two partitions each
    await b.renew_leases(5)
    assert len(a.owned) == len(b.owned) == 2
    await a.renew_leases(5, draining=True)  # a begins to stop
    assert len(a.owned) == 2  # keeps what it is draining
    assert await store.redis.zrange(nodes, 0, -1) == ["node-b"]
    await b.release_leases()  # b stops outright: two partitions free
    await a.renew_leases(5, draining=True)
    assert len(a.owned) == 2  # a, draining, does not take them
    await c.renew_leases(5)  # the only live node: takes both free ones
    assert sorted(c.owned) == sorted({0, 1, 2, 3} - set(a.owned))
    await a.release_leases()
    await c.renew_leases(5)
    assert sorted(c.owned) == [0, 1, 2, 3]


async def test_two_workers_opening_a_conversation_at_once_make_one(
    store: Store, cfg: Config
) -> None:
    """Two messages of a new customer, each identified (seeing no
    conversation) before either is committed, as by two workers at once: the
    second commit joins the conversation the first opened, and sends no
    second acknowledgement."""
    acks = cfg.acknowledgements.model_copy(update={"enabled": True, "channels": ["api"]})
    cfg = cfg.model_copy(update={"acknowledgements": acks})
    ing = Ingestor(store, 60)
    first = await ing.ingest(msg(text="first", source_id="f1"))
    second = await ing.ingest(msg(text="second", source_id="f2"))
    w = worker(store, cfg)
    await w.renew_leases(5)
    entries = []
    for _ in range(3):  # (the pending replay, then the new entries)
        entries += await w.read(100, None)
    routing, now = w.get_routing(), time.time()
    batches = []
    for e in entries:
        live = w._decode([e], [])
        await w._identify(live, now)
        batches.append(await w._thread_and_decide(routing, live, now, []))
    opened = [b[0].item["conversation_id"] for b in batches]
    assert opened[0] != opened[1] and all(b[0].item["new_conversation"] for b in batches)
    assert all(b[0].item["acknowledgement"] for b in batches)
    results = [(await w._commit(routing.cfg, b, now))[0] for b in batches]

    assert [r[0] for r in results] == [1, 2]  # the second joins the first's work item
    assert results[0][2] == results[1][2] == opened[0]
    assert results[0][1] == results[1][1] and len(await queue_entries(store, "general")) == 1
    for m in (first, second):
        assert await store.redis.hget(store.keys.message(m.id), "conversation_id") == opened[0]
    assert [
        f["message_id"] for _, f in await store.redis.xrange(store.keys.timeline(opened[0]))
    ] == [
        first.id,
        second.id,
    ]
    assert not await store.redis.exists(store.keys.conversation(opened[1]))
    customer_id = batches[0][0].item["customer_id"]
    assert await store.redis.hget(store.keys.customer(customer_id), "conversation_count") == "1"
    acks = [orjson.loads(f["o"]) for _, f in await store.redis.xrange(store.keys.outbox)]
    assert [(a["kind"], a["conversation_id"]) for a in acks] == [("ack", opened[0])]
