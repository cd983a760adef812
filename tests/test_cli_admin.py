"""The admin commands as an operator runs them: customer, conversation, agent."""

from __future__ import annotations

import json
import re
from pathlib import Path

from router.agent import AgentClient
from router.store import Store
from tests.support import cli


async def test_customer_commands(config_path: Path, routed: dict, tmp_path: Path) -> None:
    out = cli(config_path, "customer", "show", "ana@example.com", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["id"] == routed["customer_id"] and shown["identities"] == ["email:ana@example.com"]
    out = cli(
        config_path,
        "customer",
        "set",
        "ana@example.com",
        "--tier",
        "vip",
        "--timezone",
        "Europe/Lisbon",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["tier"] == "vip"
    out = cli(config_path, "customer", "set", "ana@example.com", "--timezone", "Nowhere/City")
    assert out.returncode == 1 and "unknown time zone 'Nowhere/City'" in out.stderr
    csv = tmp_path / "c.csv"
    csv.write_text("email,phone,name\nana@example.com,+351912345678,Ana\n")
    out = cli(config_path, "customer", "import", str(csv))
    assert out.returncode == 0, out.stderr
    assert "imported 1 rows" in out.stderr and "0 created, 1 updated" in out.stderr
    out = cli(config_path, "customer", "export", "+351912345678")
    exported = json.loads(out.stdout)
    assert exported["conversations"][0]["timeline"][0]["message"]["text"] == "Where is my order?"
    out = cli(config_path, "customer", "forget", "+351912345678")
    assert out.returncode == 1 and "--yes" in out.stderr
    out = cli(config_path, "customer", "forget", "+351912345678", "--yes")
    assert out.returncode == 0 and json.loads(out.stdout)["removed"]["messages"] == 1
    out = cli(config_path, "customer", "show", "ana@example.com")
    assert out.returncode == 1 and "no customer has the identity" in out.stderr


async def test_conversation_and_agent_commands(
    config_path: Path, routed: dict, store: Store
) -> None:
    conv = routed["conversation_id"]
    out = cli(config_path, "conversation", "show", conv, "--json")
    assert out.returncode == 0, out.stderr
    history = json.loads(out.stdout)
    assert history["subject"] == "Order 77"
    assert [t["direction"] for t in history["timeline"]] == ["in"]
    out = cli(config_path, "conversation", "resolve", conv, "--agent", "bob")
    assert out.returncode == 0, out.stderr
    state = await store.redis.hgetall(store.keys.conversation(conv))
    assert (state["status"], state["status_by"]) == ("resolved", "bob")
    out = cli(config_path, "conversation", "wait", "v-nope")
    assert out.returncode == 1 and "does not exist" in out.stderr
    out = cli(config_path, "agent", "online", "bob", "--ttl", "30")
    assert out.returncode == 0
    assert 0 < await store.redis.ttl(store.keys.presence("bob")) <= 30
    cli(config_path, "agent", "offline", "bob")
    assert not await store.redis.exists(store.keys.presence("bob"))


async def test_agent_presence_per_queue_in_queue_list(config_path: Path, store: Store) -> None:
    out = cli(config_path, "agent", "online", "bob", "--queues", "general,vip", "--ttl", "30")
    assert out.returncode == 0, out.stderr
    assert "bob is online for general, vip for 30s" in out.stdout
    out = cli(config_path, "agent", "online", "ann", "--queues", "vip")
    assert out.returncode == 0, out.stderr
    out = cli(config_path, "queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    online = {q["queue"]: q["agents_online"] for q in json.loads(out.stdout)}
    assert online == {"general": ["bob"], "support-es": [], "vip": ["ann", "bob"]}
    assert all(q["handle_time_seconds"] is None for q in json.loads(out.stdout))
    text = cli(config_path, "queue", "list").stdout
    assert "AGENTS ONLINE" in text
    assert re.search(r"^vip\s.*\s{2}ann, bob$", text, re.M), text
    out = cli(config_path, "agent", "online", "bob", "--queues", "nowhere")
    assert out.returncode == 1 and "unknown queue nowhere" in out.stderr
    out = cli(config_path, "agent", "offline", "bob")
    assert out.returncode == 0, out.stderr
    out = cli(config_path, "queue", "list", "--json")
    online = {q["queue"]: q["agents_online"] for q in json.loads(out.stdout)}
    assert online == {"general": [], "support-es": [], "vip": ["ann"]}


# A stored Unix time (seconds, often with milliseconds) leaking into a view.
EPOCH = re.compile(r"\b1\d{9}(\.\d+)?\b")
INDIA = {"TZ": "Asia/Kolkata"}  # the viewer's zone: +05:30 all year, no DST


async def test_customer_show_reads_as_text(config_path: Path, routed: dict) -> None:
    out = cli(config_path, "customer", "show", "ana@example.com", env=INDIA)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"customer {routed['customer_id']}")
    assert "identities  email:ana@example.com" in text
    assert re.search(r"first seen  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30", text), text
    # the conversation names its queue, how to claim it, and why it is there
    assert f"  {routed['conversation_id']}  open, email, 1 message, last activity " in text
    queue = routed["queue"]
    assert f"    queue {queue}  (claim it: router queue pull {queue} --agent NAME)" in text
    why = text.split("    why:\n", 1)[1].splitlines()
    reasons = json.loads(routed["decision"])["reasons"]
    assert reasons and why[: len(reasons)] == [f"      - {r}" for r in reasons]
    assert not EPOCH.search(text) and '{"' not in text, text


async def test_conversation_show_reads_as_text(
    config_path: Path, routed: dict, store: Store
) -> None:
    conv = routed["conversation_id"]
    oid = await AgentClient(store).reply(conv, "It left the warehouse today.", agent="bob")
    out = cli(config_path, "conversation", "show", conv, env=INDIA)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith(f"conversation {conv}  open\n")
    assert "  subject       Order 77" in text
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+05:30"
    assert re.search(rf"^  {stamp}  in  email  from email:ana@example.com  ", text, re.M), text
    assert "      Where is my order?" in text
    # the routing decision: where, then each reason on its own line
    assert f"    routed to {routed['queue']} (priority normal" in text
    for reason in json.loads(routed["decision"])["reasons"]:
        assert f"\n      - {reason}\n" in text + "\n"
    # the reply with its delivery state (no outbox runs here: still queued)
    assert re.search(rf"^  {stamp}  out email  reply by bob  {oid}  queued$", text, re.M), text
    assert "      It left the warehouse today." in text
    assert not EPOCH.search(text) and '{"' not in text, text
