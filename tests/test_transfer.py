"""Transfer: a conversation's live work item moves to another queue (or an
agent's own queue) keeping its due time, atomically, with its event; through
the CLI as an operator runs it, and through the published script as a tool
in another language would (raw EVALSHA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router.agent import AgentClient, AgentError
from router.keys import QUEUE_GROUP
from router.store import Store
from tests.support import cli


async def depth(store: Store, queue: str) -> int:
    return sum([await store.redis.xlen(k) for k in store.keys.queue_bands(queue)])


async def events(store: Store, kind: str) -> list[dict[str, str]]:
    return [f for _, f in await store.redis.xrange(store.keys.events) if f["type"] == kind]


async def test_transfer_keeps_the_due_time_and_releases_the_claim(
    config_path: Path, routed: dict, store: Store
) -> None:
    assert routed["queue"] == "general"
    conv = routed["conversation_id"]
    client = AgentClient(store)
    held = await client.claim("general", "alice")  # a claim the transfer releases
    assert held is not None and held.fields["conversation_id"] == conv
    due_at = held.fields["due_at"]
    note = "VIP customer, order lost in transit"
    out = cli(
        config_path,
        "conversation",
        "transfer",
        conv,
        "--queue",
        "vip",
        "--note",
        note,
        "--by",
        "alice",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    moved = json.loads(out.stdout)
    assert (moved["from_queue"], moved["queue"]) == ("general", "vip")
    # the old queue is empty: no entry, no claim, nothing in its due sets
    assert await depth(store, "general") == 0
    for key in store.keys.queue_bands("general"):
        assert (await store.redis.xpending(key, QUEUE_GROUP))["pending"] == 0
        assert await store.redis.zcard(store.keys.queue_due(key)) == 0
    # the conversation and its first message point at the new entry
    state = await store.redis.hgetall(store.keys.conversation(conv))
    assert state["item"] == f"{moved['stream']} {moved['entry_id']}"
    assert (state["item_queue"], state["queue"]) == ("vip", "vip")
    m = await store.redis.hgetall(store.keys.message(routed["id"]))
    assert m["queue_entry"] == state["item"]
    # claimed from the new queue: the same work item, the same due time
    assert await client.claim("general", "bob") is None
    got = await client.claim("vip", "bob")
    assert got is not None and got.entry_id == moved["entry_id"] and got.deliveries == 1
    assert got.fields["due_at"] == due_at
    assert got.fields["message_id"] == routed["id"]
    assert got.fields["transferred_from"] == "general"
    assert got.fields["queued_at"] == held.fields["queued_at"]
    # the event (the note's length, not its text) and the timeline entry (the note)
    (ev,) = await events(store, "transferred")
    assert ev["conversation_id"] == conv and ev["customer_id"] == routed["customer_id"]
    assert (ev["from_queue"], ev["queue"], ev["by"]) == ("general", "vip", "alice")
    assert ev["note_length"] == str(len(note)) and note not in json.dumps(ev)
    assert ev["due_at"] == due_at and ev["entry_id"] == moved["entry_id"]
    timeline = [f for _, f in await store.redis.xrange(store.keys.timeline(conv))]
    assert timeline[-1]["direction"] == "event" and timeline[-1]["type"] == "transferred"
    assert timeline[-1]["note"] == note and timeline[-1]["queue"] == "vip"
    # `conversation show` reads the transfer as one, not as a reply gone missing
    shown = cli(config_path, "conversation", "show", conv)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if "transferred" in x)
    assert "from_queue general" in line and "queue vip" in line and "by alice" in line
    assert "(expired)" not in shown.stdout and note in shown.stdout
    # bob finishes it: nothing is left to transfer
    await client.ack("vip", got.entry_id, "bob")
    out = cli(config_path, "conversation", "transfer", conv, "--queue", "general")
    assert out.returncode == 1
    assert "no live work item" in out.stderr and conv in out.stderr


async def test_transfer_refuses_clearly(config_path: Path, routed: dict, store: Store) -> None:
    conv = routed["conversation_id"]
    out = cli(config_path, "conversation", "transfer", conv, "--queue", "nowhere")
    assert out.returncode == 1
    assert "unknown queue nowhere; known queues: general, support-es, vip" in out.stderr
    out = cli(config_path, "conversation", "transfer", conv, "--queue", "general")
    assert out.returncode == 1 and "already in queue general" in out.stderr
    out = cli(config_path, "conversation", "transfer", "v-nope", "--queue", "vip")
    assert out.returncode == 1 and "no conversation" in out.stderr
    # nothing moved, nothing recorded
    assert await depth(store, "general") == 1 and await depth(store, "vip") == 0
    assert await events(store, "transferred") == []


async def test_transfer_to_an_agent(routed: dict, store: Store) -> None:
    conv = routed["conversation_id"]
    client = AgentClient(store)
    moved = await client.transfer(conv, "vip", agent="carol")
    assert moved.queue == "~carol" and moved.from_queue == "general"
    assert await client.claim("vip", "dave") is None  # only carol sees it
    got = await client.claim("vip", "carol")  # her own queue first
    assert got is not None and got.entry_id == moved.entry_id
    assert (got.fields["agent"], got.fields["fallback_queue"]) == ("carol", "vip")
    (ev,) = await events(store, "transferred")
    assert (ev["queue"], ev["agent"], ev["note_length"]) == ("~carol", "carol", "0")
    with pytest.raises(AgentError, match="already in queue ~carol"):
        await client.transfer(conv, "general", agent="carol")


async def test_transfer_with_the_published_script(routed: dict, store: Store) -> None:
    """As a tool in another language would: HGET the SHA, EVALSHA it."""
    conv = routed["conversation_id"]
    sha = await store.redis.hget(store.keys.scripts, "transfer")
    assert sha
    stream, entry_id, from_queue = await store.redis.evalsha(
        sha, 1, store.keys.conversation(conv), "support-es", "", "", "", store.keys.prefix
    )
    assert from_queue == "general" and stream == store.keys.queue("support-es", 2)
    assert await store.redis.zscore(store.keys.queue_due(stream), entry_id) is not None
    got = await AgentClient(store).claim("support-es", "eve")
    assert got is not None and got.entry_id == entry_id
