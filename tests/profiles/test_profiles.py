"""One customer, one conversation, on a real Redis: identities across channels,
merges, threads and reopening, ownership and sticky follow-ups, repeat contacts,
the race of two workers, export and forget."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from router.agent import AgentClient
from router.config import Config, load_config
from router.ingest import Ingestor
from router.metrics import Metrics
from router.model import Hints, InboundMessage
from router.overflow import OverflowWorker
from router.pipeline import Entry, RoutingWorker
from router.profiles.admin import Admin, AdminError
from router.profiles.claims import EmailClaims, address_digest
from router.profiles.identity import normalise_identity
from router.routing import Routing
from router.store import RedisAdapterState, Store
from tests.support import RedisServer, free_port, write_config

ANA_EMAIL = "ana.silva@example.com"
ANA_PHONE = "+351912345678"


@pytest.fixture
def pcfg(tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.setenv("ROUTER_API_TOKEN", "t")
    path = write_config(
        tmp_path / "router.yaml",
        redis_server.url,
        free_port(),
        **{
            "routing.conversation_window": "1d",
            "routing.sticky_wait": "2m",
            "rules": [
                {
                    "name": "vip",
                    "when": {"tier": ["vip"]},
                    "targets": [{"queue": "vip", "priority": "urgent"}],
                }
            ],
        },
    )
    return load_config(path)


@pytest.fixture
async def env(pcfg: Config) -> tuple[Store, Routing]:
    store = Store.open(pcfg)
    await store.prepare(pcfg.queues, {q: {"visibility_timeout": 60} for q in pcfg.queues})
    yield store, Routing.build(pcfg)
    await store.close()


def message(sender: str, channel: str, text: str, **kw: object) -> InboundMessage:
    ids = [normalise_identity(i, "api") for i in kw.pop("identities", [])]  # type: ignore[union-attr]
    return InboundMessage(
        channel=channel, sender=normalise_identity(sender, channel), text=text, identities=ids, **kw
    )  # type: ignore[arg-type]


async def route(
    store: Store, routing: Routing, *messages: InboundMessage, now: float | None = None
) -> list[dict]:
    """Ingest and route messages; return their queue entries (in order)."""
    ing = Ingestor(store, 3600)
    ids = [(await ing.ingest(m)).id for m in messages]
    w = RoutingWorker(store, lambda: routing, Metrics(), "w1")
    await w.renew_leases(5)
    for _ in range(4):
        entries = await w.read(100, 0.05)
        if entries:
            if now is not None:  # route as if at `now`
                import router.pipeline as pl

                real = pl.time.time
                pl.time.time = lambda: now  # type: ignore[assignment]
                try:
                    await w.route(entries)
                finally:
                    pl.time.time = real  # type: ignore[assignment]
            else:
                await w.route(entries)
    return [await entry_of(store, mid) for mid in ids]


async def entry_of(store: Store, message_id: str) -> dict:
    stream, _, entry_id = (
        await store.redis.hget(store.keys.message(message_id), "queue_entry")
    ).partition(" ")
    rows = await store.redis.xrange(stream, entry_id, entry_id)
    return {"stream": stream, "entry_id": entry_id, **(rows[0][1] if rows else {})}


async def test_email_then_sms_from_a_known_phone_is_one_conversation(
    env: tuple[Store, Routing], tmp_path: Path
) -> None:
    store, routing = env
    csv = tmp_path / "customers.csv"
    csv.write_text(f"email,phone,name,tier\n{ANA_EMAIL},{ANA_PHONE},Ana Silva,\n")
    summary = await Admin(store).import_csv(csv)
    assert (summary.rows, summary.created, summary.skipped) == (1, 1, [])
    mail, sms = await route(
        store,
        routing,
        message(ANA_EMAIL, "email", "My order 1234 has not arrived", subject="Order 1234"),
        message("+351 912 345 678", "sms", "Any news on my order?"),
    )
    assert mail["customer_id"] == sms["customer_id"]
    assert mail["conversation_id"] == sms["conversation_id"]
    profile = await Admin(store).show(ANA_PHONE)
    assert profile["display_name"] == "Ana Silva"
    assert profile["channels"] == ["email", "sms"]
    assert profile["identities"] == [f"email:{ANA_EMAIL}", f"phone:{ANA_PHONE}"]
    assert profile["message_count"] == "2" and profile["conversation_count"] == "1"
    history = await Admin(store).conversation(mail["conversation_id"])
    assert [(t["channel"], t["message"]["text"]) for t in history["timeline"]] == [
        ("email", "My order 1234 has not arrived"),
        ("sms", "Any news on my order?"),
    ]


async def test_chat_visitor_giving_a_known_email_merges_the_profiles(
    env: tuple[Store, Routing],
) -> None:
    store, routing = env
    (first,) = await route(store, routing, message(ANA_EMAIL, "email", "Hello, about my refund"))
    (chat,) = await route(store, routing, message("visitor-77", "chat", "hi there, anyone?"))
    assert chat["customer_id"] != first["customer_id"]
    # the visitor types their e-mail address: the chat channel adds it as a verified identity
    (tied,) = await route(
        store,
        routing,
        message("visitor-77", "chat", "I am ana.silva@example.com", identities=[ANA_EMAIL]),
    )
    survivor = first["customer_id"]  # the older profile survives
    # (tied joined the chat's waiting work item, raised a band by repeat contact)
    assert (tied["message_id"], tied["priority"]) == (chat["message_id"], "high")
    conv_of_tied = store.keys.conversation(tied["conversation_id"])
    assert await store.redis.hget(conv_of_tied, "customer_id") == survivor
    admin = Admin(store)
    profile = await admin.show("chat:visitor-77")
    assert profile["id"] == survivor
    assert profile["identities"] == ["chat:visitor-77", f"email:{ANA_EMAIL}"]
    assert profile["message_count"] == "3"
    assert {c["id"] for c in profile["conversations"]} >= {first["conversation_id"]}
    # the merged-away profile points at the survivor; the merge is recorded
    gone = await store.redis.hgetall(store.keys.customer(chat["customer_id"]))
    assert gone["merged_into"] == survivor
    (merge,) = [f for _, f in await store.redis.xrange(store.keys.merges)]
    assert (merge["from"], merge["into"], merge["by"]) == (chat["customer_id"], survivor, "message")
    conv = await store.redis.hgetall(store.keys.conversation(chat["conversation_id"]))
    assert conv["customer_id"] == survivor  # its conversations moved over


async def test_admin_merge_and_errors(env: tuple[Store, Routing]) -> None:
    store, routing = env
    a, b = await route(
        store, routing, message(ANA_EMAIL, "email", "one"), message("+14155550100", "sms", "two")
    )
    admin = Admin(store)
    assert await admin.merge(ANA_EMAIL, "+14155550100") == a["customer_id"]
    assert (await admin.show("+14155550100"))["id"] == a["customer_id"]
    with pytest.raises(AdminError, match="already one customer"):
        await admin.merge(a["customer_id"], b["customer_id"])
    with pytest.raises(AdminError, match="no customer has the identity"):
        await admin.show("nobody@example.com")


async def test_threads_references_window_resolve_and_reopen(env: tuple[Store, Routing]) -> None:
    store, routing = env
    admin = Admin(store)
    t0 = time.time()
    (first,) = await route(
        store,
        routing,
        message(ANA_EMAIL, "email", "Where is my parcel?", source_id="<m1@example.com>"),
        now=t0,
    )
    conv = first["conversation_id"]
    await admin.set_status(conv, "resolved", "bob")
    # a reply to that e-mail within the window reopens the conversation
    (reply,) = await route(
        store,
        routing,
        message(
            ANA_EMAIL,
            "email",
            "It came back!",
            source_id="<m2@example.com>",
            references=["<m1@example.com>"],
        ),
        now=t0 + 3600,
    )
    assert reply["conversation_id"] == conv
    state = await store.redis.hgetall(store.keys.conversation(conv))
    assert state["status"] == "open" and state["reopen_count"] == "1"
    await admin.set_status(conv, "resolved", "bob")
    # two days later (window: 1 day) a reply to the old thread starts a new conversation
    (late,) = await route(
        store,
        routing,
        message(
            ANA_EMAIL,
            "email",
            "Same problem again",
            source_id="<m3@example.com>",
            references=["<m2@example.com>"],
        ),
        now=t0 + 3600 + 2 * 86400,
    )
    assert late["conversation_id"] != conv
    # but a referenced conversation that is still open is joined at any age
    (again,) = await route(
        store,
        routing,
        message(ANA_EMAIL, "email", "Following up", references=["<m3@example.com>"]),
        now=t0 + 3600 + 5 * 86400,
    )
    assert again["conversation_id"] == late["conversation_id"]
    customer = await admin.show(ANA_EMAIL)
    assert customer["conversation_count"] == "2"


async def test_other_channel_joins_the_open_conversation_within_the_window(
    env: tuple[Store, Routing],
) -> None:
    store, routing = env
    t0 = time.time()
    (a,) = await route(
        store, routing, message(ANA_PHONE, "sms", "hi", identities=[ANA_EMAIL]), now=t0
    )
    (b,) = await route(store, routing, message(ANA_EMAIL, "email", "details"), now=t0 + 600)
    (c,) = await route(store, routing, message(ANA_PHONE, "sms", "hello?"), now=t0 + 3 * 86400)
    assert a["conversation_id"] == b["conversation_id"] != c["conversation_id"]


async def test_two_workers_one_new_customer_two_channels_same_instant(
    env: tuple[Store, Routing],
) -> None:
    """The race: both workers identify before either commits."""
    store, routing = env
    ing = Ingestor(store, 3600)
    await ing.ingest(message(ANA_EMAIL, "email", "first, by mail", identities=[ANA_PHONE]))
    await ing.ingest(message(ANA_PHONE, "sms", "first, by text", identities=[ANA_EMAIL]))
    reader = RoutingWorker(store, lambda: routing, Metrics(), "reader")
    await reader.renew_leases(5)
    entries: list[Entry] = []
    for _ in range(3):
        entries += await reader.read(100, 0.05)
    assert len(entries) == 2
    w1 = RoutingWorker(store, lambda: routing, Metrics(), "w1")
    w2 = RoutingWorker(store, lambda: routing, Metrics(), "w2")
    await asyncio.gather(w1.route([entries[0]]), w2.route([entries[1]]))
    qs = []
    for key in store.keys.queue_bands("general"):
        qs += [f for _, f in await store.redis.xrange(key)]
    assert len(qs) == 1  # one conversation, one work item
    conv = await store.redis.hgetall(store.keys.conversation(qs[0]["conversation_id"]))
    assert conv["item_message_count"] == "2"
    profile = await Admin(store).show(ANA_EMAIL)
    assert profile["conversation_count"] == "1" and profile["message_count"] == "2"
    assert len(profile["conversations"]) == 1


async def test_owner_gets_follow_ups_while_online(env: tuple[Store, Routing]) -> None:
    store, routing = env
    client = AgentClient(store)
    (first,) = await route(store, routing, message(ANA_EMAIL, "email", "Refund please"))
    claimed = await client.claim("general", "alice")
    assert claimed is not None and claimed.entry_id == first["entry_id"]
    conv = await store.redis.hgetall(store.keys.conversation(first["conversation_id"]))
    assert conv["owner"] == "alice"
    await client.ack("general", claimed.entry_id, "alice")
    await client.reply(first["conversation_id"], "Refund on its way", agent="alice")
    # alice is online: the follow-up goes to her own queue, and she gets it first
    await client.heartbeat("alice", 60)
    (follow,) = await route(store, routing, message(ANA_EMAIL, "email", "Any update?"))
    assert follow["stream"] == store.keys.queue("~alice", 2)
    assert (follow["agent"], follow["fallback_queue"]) == ("alice", "general")
    assert await client.claim("general", "bob") is None  # not bob's
    mine = await client.claim("general", "alice")
    assert mine is not None and mine.fields["message_id"] == follow["message_id"]
    assert mine.queue == "~alice"
    await client.ack("general", mine.entry_id, "alice")
    await client.reply(first["conversation_id"], "Tomorrow", agent="alice")
    # alice is online but does not take the next one in time: it falls back to the queue
    (late,) = await route(store, routing, message(ANA_EMAIL, "email", "Hello??"))
    assert late["stream"] == store.keys.queue("~alice", 2)
    await OverflowWorker(store, lambda: routing, Metrics()).tick(time.time() + 121)
    moved = await entry_of(store, late["message_id"])
    assert moved["stream"] == store.keys.queue("general", 2) and "agent" not in moved
    # offline: straight to the queue
    await client.reply(first["conversation_id"], "Soon", agent="alice")
    await client.offline("alice")
    (off,) = await route(store, routing, message(ANA_EMAIL, "email", "Still waiting"))
    assert off["stream"].startswith(store.keys.prefix + "q:{general}")


async def test_repeat_contact_is_flagged_and_raised_until_answered(
    env: tuple[Store, Routing],
) -> None:
    store, routing = env
    one, two, three = await route(
        store,
        routing,
        message(ANA_PHONE, "sms", "my card was charged twice"),
        message(ANA_PHONE, "sms", "hello?"),
        message(ANA_PHONE, "sms", "HELLO??"),
    )
    # one work item, raised a band by the second message (its due time kept)
    assert one["entry_id"] == two["entry_id"] == three["entry_id"]
    assert (three["priority"], three["repeat"]) == ("high", "2")
    assert three["stream"] == store.keys.queue("general", 1)
    conv = await store.redis.hgetall(store.keys.conversation(one["conversation_id"]))
    assert conv["item_message_count"] == "3"
    customer = await store.redis.hgetall(store.keys.customer(one["customer_id"]))
    assert customer["repeat_contacts"] == "2"
    client = AgentClient(store)
    claimed = await client.claim("general", "bob")
    assert claimed is not None and claimed.fields["message_count"] == "3"
    await client.reply(one["conversation_id"], "Looking into it now", agent="bob")
    await client.ack("general", claimed.entry_id, "bob")
    (four,) = await route(store, routing, message(ANA_PHONE, "sms", "thanks"))
    assert four["entry_id"] != one["entry_id"]
    assert four["priority"] == "normal" and "repeat" not in four


async def test_customer_set_tier_routes_as_vip(env: tuple[Store, Routing]) -> None:
    store, routing = env
    (plain,) = await route(store, routing, message(ANA_EMAIL, "email", "hello"))
    await Admin(store).set(
        ANA_EMAIL, {"tier": "vip", "timezone": "Europe/Lisbon", "language_preference": "pt"}
    )
    await AgentClient(store).set_status(plain["conversation_id"], "resolved", "bob")
    (vip,) = await route(
        store, routing, message(ANA_EMAIL, "email", "hello again"), now=time.time() + 2 * 86400
    )
    assert plain["stream"].startswith(store.keys.prefix + "q:{general}")
    assert vip["stream"] == store.keys.queue("vip", 0) and vip["language"] == "pt"
    msg = await store.redis.hgetall(store.keys.message(vip["message_id"]))
    assert '"timezone_source":"profile"' in msg["decision"]
    with pytest.raises(AdminError, match="unknown time zone"):
        await Admin(store).set(ANA_EMAIL, {"timezone": "Mars/Olympus"})


async def test_import_reports_bad_rows_with_line_numbers(
    env: tuple[Store, Routing], tmp_path: Path
) -> None:
    store, _ = env
    csv = tmp_path / "c.csv"
    csv.write_text(
        "email,phone,tier,timezone\n"
        "a@example.com,,vip,\n"
        "not-an-email,,,\n"
        ",+44 20 7946 0958,,Europe/London\n"
        ",,gold,\n"
        "b@example.com,+44 20 7946 0958,,\n"
        "a@example.com,+442079460958,,\n"
    )
    s = await Admin(store).import_csv(csv)
    # b@ joins the phone's profile; the last row ties a@'s and the phone's: a merge
    assert (s.rows, s.created, s.updated, s.merged) == (6, 2, 2, 1)
    assert s.skipped == [
        f"{csv}:3: email 'not-an-email' is not valid",
        f"{csv}:5: no identity (email, phone...)",
    ]
    one = await Admin(store).show("b@example.com")
    assert one["identities"] == [
        "email:a@example.com",
        "email:b@example.com",
        "phone:+442079460958",
    ]
    assert (one["timezone"], one["tier"]) == ("Europe/London", "vip")
    bad = tmp_path / "bad.csv"
    bad.write_text("mail,tier\nx@example.com,vip\n")
    with pytest.raises(AdminError, match="unknown column"):
        await Admin(store).import_csv(bad)


async def test_export_then_forget_leaves_no_trace(env: tuple[Store, Routing]) -> None:
    store, routing = env
    secret_text = "My IBAN is PT50000201231234567890154, please refund"
    first, second = await route(
        store,
        routing,
        message(
            ANA_EMAIL,
            "email",
            secret_text,
            subject="Refund",
            source_id="<x1@mail>",
            display_name="Ana Silva",
            identities=[ANA_PHONE],
            hints=Hints(language="en"),
        ),
        message(ANA_PHONE, "sms", "Did you get my IBAN?"),
    )
    client = AgentClient(store)
    await client.reply(first["conversation_id"], "Refund issued to PT50 ... 154", agent="bob")
    other = (await route(store, routing, message("zoe@example.com", "email", "unrelated")))[0]
    admin = Admin(store)
    exported = await admin.export(ANA_EMAIL)
    texts = [
        t.get("message", {}).get("text") for c in exported["conversations"] for t in c["timeline"]
    ]
    assert secret_text in texts and "Did you get my IBAN?" in texts
    assert exported["identities"] == [f"email:{ANA_EMAIL}", f"phone:{ANA_PHONE}"]

    needles = [ANA_EMAIL, ANA_PHONE, "351912345678", "IBAN", "PT50", "Ana Silva", "x1@mail"]

    async def traces() -> set[str]:
        found = set()
        async for key in store.redis.scan_iter(match="*"):
            blob = key + " " + await dump(store, key)
            found |= {n for n in needles if n in blob}
        return found

    assert await traces() == set(needles)  # the scan does see them while they are there
    removed = await admin.forget(ANA_PHONE)
    assert removed["messages"] == 2 and removed["identities"] == 2
    assert await traces() == set()
    # anonymous counts stay; the other customer is untouched
    anon = await store.redis.hgetall(store.keys.customer(first["customer_id"]))
    assert anon["message_count"] == "2" and "forgotten_at" in anon
    assert (await admin.show("zoe@example.com"))["message_count"] == "1"
    assert await store.redis.hget(store.keys.message(other["message_id"]), "text") == "unrelated"
    with pytest.raises(AdminError):
        await admin.show(ANA_EMAIL)


async def test_forget_erases_chat_keys_claims_and_adapter_state(
    env: tuple[Store, Routing],
) -> None:
    """Issue 14 item 8: a chat visitor's stream (agent replies, their own
    messages), presence and e-mail claims, the hourly code count of their
    address, another visitor's pending claim of it, and a voicemail waiting
    for its transcription (number and recording URL) all go with forget."""
    from router.adapters.chat import ChatHub

    store, routing = env
    visitor, other_visitor = "v_" + "f" * 24, "v_" + "o" * 24
    recording = "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE7f3e"
    (first,) = await route(
        store,
        routing,
        message(ANA_EMAIL, "email", "Where is my parcel?", identities=[ANA_PHONE]),
    )
    # the visitor proved Ana's address: the verified frame's identities
    (chat_entry,) = await route(
        store,
        routing,
        message(visitor, "chat", "Any news on the parcel?", identities=[ANA_EMAIL]),
    )
    assert chat_entry["customer_id"] == first["customer_id"]
    hub = ChatHub(store.redis, store.keys.prefix)
    await hub.push(visitor, {"from": "agent", "text": "Shipped to Rua Augusta 5"}, 100, 3600)
    await hub.keep(visitor, {"from": "visitor", "id": "c1", "text": "Any news?"}, 100, 3600)
    await hub.set_online(visitor, 120)
    claims = EmailClaims(store.redis, store.keys)
    await claims.start("secret", visitor, ANA_EMAIL)
    # someone else typed Ana's address in the chat and never proved it
    await claims.start("secret", other_visitor, ANA_EMAIL)
    twilio = RedisAdapterState(store, "twilio")
    await twilio.put(
        "voicemail:CA9",
        {"from": ANA_PHONE, "to": "+14155550100", "url": recording, "duration": 7},
        ttl=600,
    )
    await twilio.put("voicemail:CA10", {"from": "+14155550199", "url": "https://x/RE1"}, ttl=600)
    imap = RedisAdapterState(store, "email")
    await imap.put("cursor:main:INBOX", {"uidvalidity": 1, "uid": 351912345678})

    needles = [
        ANA_EMAIL,
        ANA_PHONE,
        visitor,
        "RE7f3e",
        "Rua Augusta",
        "Any news",
        address_digest(ANA_EMAIL),
    ]

    async def traces() -> set[str]:
        found = set()
        async for key in store.redis.scan_iter(match="*"):
            blob = key + " " + await dump(store, key)
            found |= {n for n in needles if n in blob}
        return found

    assert await traces() == set(needles)
    removed = await Admin(store).forget(ANA_EMAIL)
    assert removed["adapter_keys"] == 1
    assert removed["chat_keys"] == 6  # events, online, claim, claim-wait, claim-mails, W's claim
    assert await traces() == set()
    # what is not Ana's stays: another caller's voicemail, the mailbox cursor
    assert await twilio.get("voicemail:CA10") is not None
    assert await imap.get("cursor:main:INBOX") == {"uidvalidity": 1, "uid": 351912345678}


async def dump(store: Store, key: str) -> str:
    """Every value of a key as text, whatever its type."""
    r = store.redis
    kind = await r.type(key)
    if kind == "string":
        return str(await r.get(key))
    if kind == "hash":
        return str(await r.hgetall(key))
    if kind == "set":
        return str(await r.smembers(key))
    if kind == "zset":
        return str(await r.zrange(key, 0, -1))
    if kind == "list":
        return str(await r.lrange(key, 0, -1))
    if kind == "stream":
        return str(await r.xrange(key))
    return ""
