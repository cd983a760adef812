"""Ingest against a real redis-server: durable, deduplicated, partitioned."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from router.config import Config
from router.ingest import Ingestor, StoreUnavailable
from router.keys import INGEST_GROUP
from router.model import Identity, InboundMessage
from router.store import Store
from tests.support import API_TOKEN, DaemonProcess, RedisServer


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


# -- what the generic API lets in (issue 14: NUL in `from`, "api\n" as a channel) --

CONTROL_CASES = [
    ("from", {"from": "ana\x00@example.com"}, "U+0000"),
    ("from", {"from": "ana@example.com\n"}, "U+000A"),
    ("from", {"from": "\x1b[31mroot"}, "U+001B"),
    ("name", {"name": "Ana\x00Admin"}, "U+0000"),
    ("name", {"name": "Ana\u2028Admin"}, "U+2028"),
    ("subject", {"subject": "Order 7\r\nBcc: all@example.com"}, "U+000D"),
    ("subject", {"subject": "late\x85"}, "U+0085"),
    ("channel", {"channel": "api\n"}, "U+000A"),
    ("channel", {"channel": "api\x00"}, "U+0000"),
    ("id", {"id": "ticket-1\x00"}, "U+0000"),
    ("identities", {"identities": ["+34600000000\x00"]}, "U+0000"),
    ("references", {"references": ["ticket-0\n"]}, "U+000A"),
    ("hints.timezone", {"hints": {"timezone": "Asia/Tokyo\x00"}}, "U+0000"),
]


@pytest.mark.parametrize(("field", "change", "char"), CONTROL_CASES)
def test_api_refuses_control_characters_naming_the_field(
    field: str, change: dict, char: str
) -> None:
    from router.adapters.api import BadRequest, parse_message

    body = {"from": "ana@example.com", "text": "Where is my order?", **change}
    with pytest.raises(BadRequest) as refused:
        parse_message(orjson.dumps(body), 10_000)
    assert f"field {field!r} must not contain control characters ({char}" in str(refused.value)


def test_api_channel_is_matched_whole_and_text_keeps_its_lines() -> None:
    from router.adapters.api import _CHANNEL_RE, parse_message

    assert _CHANNEL_RE.fullmatch("api") and not _CHANNEL_RE.fullmatch("api\n")
    message = parse_message(
        orjson.dumps({"from": "Ana@Example.com", "text": "line 1\n\tline 2\r\n", "name": "Ana"}),
        10_000,
    )
    assert message.text == "line 1\n\tline 2\r\n" and message.sender.value == "ana@example.com"


def test_an_email_address_with_control_characters_is_no_address() -> None:
    """The other doors: an e-mail From (IMAP) and a chat claim go through
    normalise_email; an address with a NUL or an escape must not become a key."""
    from router.mail import parse
    from router.profiles.identity import normalise_email

    for bad in ("ana\x00@example.com", "Ana <a\x1bna@example.com>", "ana@exa\x7fmple.com"):
        assert normalise_email(bad) is None, repr(bad)
    assert normalise_email("Ana <Ana@Example.com>") == "ana@example.com"
    raw = b"From: Ana <ana\x00@example.com>\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nhello\r\n"
    parsed = parse(raw)
    assert parsed.sender is None  # the IMAP adapter dead-letters it: no usable From


async def test_api_on_a_daemon_refuses_control_characters_and_stores_nothing(
    daemon: DaemonProcess, redis_server: RedisServer
) -> None:
    import aiohttp

    url = f"{daemon.url}/v1/messages"
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession() as http:
        for field, change, char in CONTROL_CASES:
            body = {"from": "ana@example.com", "text": "hi", **change}
            async with http.post(url, json=body, headers=auth) as r:
                assert r.status == 400, (field, r.status)
                error = (await r.json())["error"]
                assert error.startswith(f"field {field!r} must not contain control"), error
                assert char in error
        async with http.post(
            url, json={"from": "ana@example.com", "text": "ok"}, headers=auth
        ) as r:
            assert r.status == 202
    r = redis_server.client()
    assert sum(r.xlen(f"router:ingest:{{{p}}}") for p in range(4)) == 1


async def test_names_and_subjects_lose_control_characters_on_every_channel(
    store: Store,
) -> None:
    """An e-mail display name or an X name with a bell, an escape sequence or
    a line separator reaches profiles, logs and `router customer show` as
    plain text (the API refuses such fields with a 400 instead)."""
    ing = Ingestor(store, 60)
    m = msg()
    m.channel = "email"
    m.display_name = "Ana\x07 \x1b[31mBell\u2028"
    m.subject = "Order\r\n 1234\x00 late"
    await ing.ingest(m)
    blank = msg(source_id="s2")
    blank.display_name = "\x07\x08"
    await ing.ingest(blank)
    stored = [InboundMessage.from_json(f["m"]) for _, _, f in await ingest_entries(store)]
    by_source = {s.source_id: s for s in stored}
    assert by_source["s1"].display_name == "Ana [31mBell"
    assert by_source["s1"].subject == "Order 1234 late"
    assert by_source["s2"].display_name is None
