"""The agent-queue protocol on a real Redis: claim by priority, ack, release, renew,
visibility timeout, and the same protocol spoken with raw commands (as redis-cli would)."""

from __future__ import annotations

import time

import pytest

from router.agent import AgentClient, AgentError
from router.keys import QUEUE_GROUP
from router.store import Store


async def put(
    store: Store,
    queue: str,
    band: int,
    message_id: str,
    due_in: float | None = None,
    now: float | None = None,
    entry_id: str = "*",
) -> str:
    """Queue an entry as a plain XADD would, then file it for claims in due
    order (as every daemon does at start with such entries)."""
    now = time.time() if now is None else now
    stream = store.keys.queue(queue, band)
    entry_id = await store.redis.xadd(
        stream,
        {
            "message_id": message_id,
            "conversation_id": f"v-{message_id}",
            "customer_id": "c1",
            "channel": "api",
            "priority": ["urgent", "high", "normal", "low"][band],
            "queued_at": f"{now:.3f}",
            **({"due_at": f"{now + due_in:.3f}"} if due_in is not None else {}),
        },
        id=entry_id,
    )
    assert await store.scripts.file_waiting(keys=[stream]) == 1
    return entry_id


async def test_claims_most_urgent_first_then_in_order(store: Store) -> None:
    for band, mid in [(3, "low1"), (2, "n1"), (2, "n2"), (1, "h1"), (0, "u1")]:
        await put(store, "general", band, mid)
    client = AgentClient(store)
    got = []
    while (e := await client.claim("general", "alice")) is not None:
        got.append(e.fields["message_id"])
    assert got == ["u1", "h1", "n1", "n2", "low1"]


async def test_ack_removes_and_checks_the_owner(store: Store) -> None:
    await put(store, "general", 2, "m1")
    client = AgentClient(store)
    e = await client.claim("general", "alice")
    assert e is not None and e.deliveries == 1
    with pytest.raises(AgentError, match="claimed by alice, not bob"):
        await client.ack("general", e.entry_id, "bob")
    await client.ack("general", e.entry_id, "alice")
    assert await store.redis.xlen(e.stream) == 0
    with pytest.raises(AgentError, match="not in queue"):
        await client.ack("general", e.entry_id, "alice")
    (status,) = [s for s in await client.status() if s.queue == "general"]
    assert status.depth == 0 and status.claimed == 0


async def test_release_puts_the_entry_first_in_line(store: Store) -> None:
    await put(store, "general", 2, "m1")
    await put(store, "general", 2, "m2")
    client = AgentClient(store)
    first = await client.claim("general", "alice")
    assert first is not None and first.fields["message_id"] == "m1"
    await client.release("general", first.entry_id, "alice")
    again = await client.claim("general", "bob")
    assert again is not None and again.fields["message_id"] == "m1"
    assert again.deliveries == 2


async def test_expired_claim_returns_to_the_queue(store: Store) -> None:
    await put(store, "support-es", 2, "m1")  # visibility timeout 2s in the test config
    client = AgentClient(store)
    e = await client.claim("support-es", "alice")
    assert e is not None
    assert await client.claim("support-es", "bob") is None  # still alice's
    time.sleep(1.2)
    await client.renew("support-es", e.entry_id, "alice")  # alice keeps it alive
    time.sleep(1.2)
    assert await client.claim("support-es", "bob") is None
    time.sleep(1.0)  # alice went silent for over 2s
    stolen = await client.claim("support-es", "bob")
    assert stolen is not None and stolen.entry_id == e.entry_id
    with pytest.raises(AgentError, match="claimed by bob"):
        await client.ack("support-es", e.entry_id, "alice")


async def test_claim_skips_entries_deleted_while_claimed(store: Store) -> None:
    await put(store, "support-es", 2, "gone")
    await put(store, "support-es", 2, "kept")
    client = AgentClient(store)
    e = await client.claim("support-es", "alice")
    assert e is not None
    await store.redis.xdel(e.stream, e.entry_id)  # e.g. trimmed by an admin
    time.sleep(2.1)  # alice's claim expires; the pending entry points at nothing
    nxt = await client.claim("support-es", "bob")
    assert nxt is not None and nxt.fields["message_id"] == "kept"
    assert (await store.redis.xpending(e.stream, QUEUE_GROUP))["pending"] == 1


async def test_unknown_queue_is_a_clear_error(store: Store) -> None:
    with pytest.raises(AgentError, match="unknown queue 'nope'; known queues: general"):
        await AgentClient(store).claim("nope", "alice")


async def test_status_reports_depth_claimed_and_age(store: Store) -> None:
    await put(store, "general", 2, "a")
    await put(store, "general", 0, "b")
    client = AgentClient(store)
    await client.claim("general", "alice")
    time.sleep(0.2)
    (s,) = [s for s in await client.status() if s.queue == "general"]
    assert (s.depth, s.claimed) == (2, 1)
    assert s.oldest_age_seconds is not None and 0.2 <= s.oldest_age_seconds < 5


async def test_raw_protocol_as_a_tool_in_another_language_would(store: Store) -> None:
    """Only documented commands and the published script SHAs, no Python helpers."""
    await put(store, "general", 1, "h1")
    await put(store, "general", 2, "n1")
    r = store.redis
    prefix = store.keys.prefix
    shas = await r.hgetall(f"{prefix}scripts")
    assert set(shas) == {"claim", "ack", "release", "renew", "transfer"}
    bands = [f"{prefix}q:{{general}}:p{b}" for b in range(4)]
    # claim with the published script
    got = await r.evalsha(shas["claim"], 4, *bands, "agents", "carol", 600000)
    stream, entry_id, deliveries, *fields = got
    assert stream == bands[1] and dict(zip(fields[::2], fields[1::2]))["message_id"] == "h1"
    await r.evalsha(shas["ack"], 1, stream, "agents", "carol", entry_id)
    # or plain commands, band by band: the band's due set names the entry due
    # soonest; whoever removes it from the set claims it
    assert await r.xreadgroup("agents", "carol", {bands[2]: ">"}, count=1) == []
    (entry_id,) = await r.zrange(f"{bands[2]}:due", 0, 0)
    assert await r.zrem(f"{bands[2]}:due", entry_id) == 1
    ((_, fields),) = await r.xclaim(
        bands[2], "agents", "carol", 0, [entry_id], retrycount=1, force=True
    )
    assert fields["message_id"] == "n1"
    assert (await r.xpending(bands[2], "agents"))["pending"] == 1
    assert await r.xack(bands[2], "agents", entry_id) == 1
    assert await r.xdel(bands[2], entry_id) == 1


async def test_within_a_band_the_entry_due_soonest_is_claimed_first(store: Store) -> None:
    """An e-mail due in 4 h that came first, a chat due in 5 min, an entry
    with no due time and two due at once: soonest first, ties by arrival."""
    email = await put(store, "general", 2, "email-4h", due_in=4 * 3600)
    await put(store, "general", 2, "no-due")
    await put(store, "general", 2, "chat-5m", due_in=300)
    await put(store, "general", 3, "low-now", due_in=0)
    client = AgentClient(store)
    got = []
    while (e := await client.claim("general", "alice")) is not None:
        got.append(e.fields["message_id"])
        assert e.deliveries == 1
    assert got == ["chat-5m", "email-4h", "no-due", "low-now"]
    # equal due times: by arrival, also past the 10th entry of one millisecond
    now = time.time()
    pipe_ids = [f"same-{i}" for i in range(12)]
    for i, mid in enumerate(pipe_ids):  # (as one commit script writes them: one ms)
        await put(store, "general", 1, mid, due_in=60, now=now, entry_id=f"{int(now * 1000)}-{i}")
    same = []
    while (e := await client.claim("general", "alice")) is not None:
        same.append(e.fields["message_id"])
    assert same == pipe_ids
    # a released entry comes back first in its band
    await client.release("general", email, "alice")
    await put(store, "general", 2, "chat-1m", due_in=60)
    again = await client.claim("general", "bob")
    assert again is not None and again.entry_id == email and again.deliveries == 2


async def test_presence_per_queue(store: Store) -> None:
    """Agents declare the queues they serve; each queue's online set holds them
    until their presence ends; offline takes them out of every queue."""
    client = AgentClient(store)
    assert await client.heartbeat("alice", 30, ["general", "vip"]) == ["general", "vip"]
    assert await client.heartbeat("bob", 30, ["vip"]) == ["vip"]
    assert await client.agents_online("vip") == ["alice", "bob"]
    # the documented Redis form: a sorted set scored by when the presence ends (ms)
    score = await store.redis.zscore(store.keys.queue_agents("general"), "alice")
    assert score is not None and 25_000 < score - time.time() * 1000 <= 30_000
    assert await store.redis.get(store.keys.presence("alice")) == "general,vip"
    # the old form renews the queues declared last
    assert await client.heartbeat("alice", 40) == ["general", "vip"]
    assert 30 < await store.redis.ttl(store.keys.presence("alice")) <= 40
    # a new declaration replaces the old one
    assert await client.heartbeat("alice", 30, ["general"]) == ["general"]
    assert await client.agents_online("vip") == ["bob"]
    online = {s.queue: s.agents_online for s in await client.status()}
    assert online == {"general": ["alice"], "support-es": [], "vip": ["bob"]}
    with pytest.raises(AgentError, match="unknown queue nowhere; known queues: general"):
        await client.heartbeat("alice", 30, ["general", "nowhere"])
    # a presence that ran out is offline, even before anything cleans it up
    await store.redis.zadd(store.keys.queue_agents("vip"), {"bob": int(time.time() * 1000) - 1})
    assert await client.agents_online("vip") == []
    await client.offline("alice")
    assert await client.agents_online("general") == []
    assert not await store.redis.exists(store.keys.presence("alice"))


async def test_rolling_handle_time_per_queue(store: Store) -> None:
    """Each ack of a work item adds its claim -> ack time to the queue's
    exponentially weighted mean ({p}handle:{QUEUE}), shown by status()."""
    client = AgentClient(store)
    (s,) = [s for s in await client.status() if s.queue == "general"]
    assert (s.handle_time_seconds, s.handle_time_samples) == (None, 0)
    for n, (mid, took) in enumerate([("m1", 10.0), ("m2", 20.0)], 1):
        entry_id = await put(store, "general", 2, mid)
        conv = store.keys.conversation(f"v-{mid}")
        stream = store.keys.queue("general", 2)
        await store.redis.hset(conv, mapping={"id": f"v-{mid}", "item": f"{stream} {entry_id}"})
        got = await client.claim("general", "alice")
        assert got is not None and got.entry_id == entry_id
        assert await store.redis.hget(conv, "item_claimed_at")  # the claim recorded it
        await store.redis.hset(conv, "item_claimed_at", f"{time.time() - took:.3f}")
        await client.ack("general", entry_id, "alice")
        h = await store.redis.hgetall(store.keys.handle_time("general"))
        assert int(h["count"]) == n and float(h["last"]) == pytest.approx(took, abs=1)
    # 10, then 10 + 0.2 * (20 - 10)
    assert float(h["mean"]) == pytest.approx(12.0, abs=1)
    (s,) = [s for s in await client.status() if s.queue == "general"]
    assert s.handle_time_seconds == pytest.approx(12.0, abs=1) and s.handle_time_samples == 2
    assert s.to_dict()["handle_time_seconds"] == s.handle_time_seconds
    # an entry that is not its conversation's work item adds nothing
    await put(store, "general", 2, "m3")
    got = await client.claim("general", "alice")
    assert got is not None
    await client.ack("general", got.entry_id, "alice")
    assert await store.redis.hget(store.keys.handle_time("general"), "count") == "2"
