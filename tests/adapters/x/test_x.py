"""X end to end: the daemon as a process polls a local X API v2 emulator
(serving the recorded real responses plus posts the tests add) with the real
tweepy client redirected to it."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis as redis_sync
import yaml

from router.adapters.x import PUBLIC_ACKS, RateLimits, _thread
from tests.adapters.x.x_emulator import XEmulator
from tests.adapters.x.x_emulator import x_emulator as x_emulator
from tests.support import DaemonProcess, RedisServer, cli, free_port, per_message, write_config

PORTUGUESE = "@suporte meu pedido ainda não chegou e já se passaram duas semanas, podem ajudar?"
JAPANESE = "こんにちは、先週注文した靴がまだ届いていません。確認していただけますか？"


def test_rate_limits_wait_for_the_reset_and_no_longer() -> None:
    limits = RateLimits()
    now = 1000.0
    limits.observe("mentions", {"x-rate-limit-remaining": "5", "x-rate-limit-reset": "1900"}, now)
    assert limits.wait("mentions", now) == 0
    limits.observe("mentions", {"x-rate-limit-remaining": "0", "x-rate-limit-reset": "1010"}, now)
    assert limits.wait("mentions", now) == 11.0  # the reset, plus a second of clock margin
    assert limits.wait("dm", now) == 0  # per endpoint
    limits.observe("mentions", {"x-rate-limit-reset": "1020"}, now, limited=True)
    assert limits.wait("mentions", 1015.0) == 6.0


def test_long_public_replies_become_threads() -> None:
    parts = _thread("word " * 150)
    assert len(parts) == 3 and all(len(p) <= 280 for p in parts)


def x_config(tmp: Path, redis_url: str, em: XEmulator, instance: str, **extra: Any) -> Path:
    port = free_port()
    return write_config(
        tmp / f"{instance}.yaml",
        redis_url,
        port,
        **{
            "instance_id": instance,
            "state_dir": str(tmp / instance),
            "channels.x": {
                "enabled": True,
                "account_id": em.user_id,
                **{k: {"env": f"X_{k.upper()}"} for k in em.credentials.client_kwargs()},
                "poll_interval": "500ms",
                "lease_ttl": "2s",
                "api_base_url": em.base_url,
            },
            "routing": {
                "languages": ["en", "pt", "ja"],
                "default_language": "en",
                "default_queue": "general",
            },
            "teams": {
                "brazil": {"languages": ["pt"]},
                "japan": {"languages": ["ja"]},
                "world": {"languages": ["en"]},
            },
            "queues": {
                "support-br": {"team": "brazil"},
                "support-jp": {"team": "japan"},
                "support-en": {"team": "world"},
                "general": {},
            },
            "rules": [],
            **extra,
        },
    )


def start(config: Path, em: XEmulator) -> DaemonProcess:
    import yaml

    port = int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])
    env = {f"X_{k.upper()}": v for k, v in em.credentials.client_kwargs().items()}
    return DaemonProcess(config, port, env=env).start()


def entries(r: redis_sync.Redis, queue: str) -> list[dict[str, str]]:
    """One per routed message (follow-ups join their conversation's work item)."""
    return per_message(r, [f for b in range(4) for _, f in r.xrange(f"router:q:{{{queue}}}:p{b}")])


async def until(predicate: Callable[[], Any], timeout: float = 20, what: str = "") -> Any:
    for _ in range(int(timeout / 0.05)):
        if value := predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_mention_in_portuguese_and_dm_in_japanese(
    tmp_path: Path, redis_server: RedisServer, x_emulator: XEmulator
) -> None:
    em = x_emulator
    r = redis_server.client()
    mention = em.add_mention(
        PORTUGUESE, author_id="1111", author_username="cliente_br", author_name="Cliente", lang="pt"
    )
    em.add_dm(JAPANESE, sender_id="2222", sender_username="kyaku_jp")
    daemon = start(x_config(tmp_path, redis_server.url, em, "d1"), em)
    try:
        (br,) = await until(lambda: entries(r, "support-br"), what="the mention routed")
        (jp,) = await until(lambda: entries(r, "support-jp"), what="the DM routed")
        assert (br["channel"], jp["channel"]) == ("x", "x_dm")
        msg = r.hgetall(f"router:msg:{{{br['message_id']}}}")
        assert msg["sender"] == "x:1111" and msg["source_id"] == mention["id"]
        assert json.loads(msg["hints"])["language"] == "pt"
        # the recorded real mentions came through too, under their authors' ids
        await until(lambda: entries(r, "support-en"), what="recorded mentions routed")
        # the public acknowledgement: a short reply to that very post, in Portuguese
        posted = await until(
            lambda: [p for p in em.posted if p.in_reply_to_tweet_id == mention["id"]],
            what="public reply",
        )
        assert posted[0].text == PUBLIC_ACKS["pt"]
        dm = await until(
            lambda: [d for d in em.dms_sent if d.participant_id == "2222"],
            what="DM acknowledgement",
        )
        assert "ありがとう" in (dm[0].text or "") or "返信" in (dm[0].text or "")
        # an agent's reply in the public conversation answers the customer's latest post
        later = em.add_mention(
            "@suporte alguma novidade?",
            author_id="1111",
            author_username="cliente_br",
            lang="pt",
            in_reply_to_tweet_id=mention["id"],
        )
        await until(lambda: len(entries(r, "support-br")) == 2, what="follow-up routed")
        out = cli(
            daemon.config,
            "reply",
            br["conversation_id"],
            "--text",
            "Já verificamos!",
            "--agent",
            "ana",
        )
        assert out.returncode == 0, out.stderr
        reply = await until(
            lambda: [p for p in em.posted if p.text == "Já verificamos!"], what="agent reply"
        )
        assert reply[0].in_reply_to_tweet_id == later["id"]
        # cursors are in Redis; a restart neither loses nor repeats posts
        assert r.get("router:adapter:x:cursor:mentions")
    finally:
        daemon.stop()
    em.add_mention("@suporte e agora?", author_id="1111", author_username="cliente_br", lang="pt")
    daemon = start(x_config(tmp_path, redis_server.url, em, "d1"), em)
    try:
        await until(lambda: len(entries(r, "support-br")) == 3, what="new mention after restart")
        await asyncio.sleep(1.5)  # several more polls
        assert len(entries(r, "support-br")) == 3 and len(entries(r, "support-jp")) == 1
    finally:
        daemon.stop()


async def test_429_waits_until_the_reset_and_500s_back_off(
    tmp_path: Path, redis_server: RedisServer, x_emulator: XEmulator
) -> None:
    em = x_emulator
    daemon = start(x_config(tmp_path, redis_server.url, em, "d1"), em)
    try:
        await em.wait_for_requests("mentions", 2, timeout=10)
        reset = em.rate_limit("mentions", remaining=0, reset_in=3)
        limited_at = time.time()
        await asyncio.sleep(reset - time.time() + 2.5)
        after = [q.at for q in em.requests_for("mentions") if q.at > limited_at]
        # one request met the 429; none until the reset; the next soon after it
        assert sum(1 for t in after if t < reset) == 1, after
        nxt = [t for t in after if t >= reset]
        assert nxt and nxt[0] - reset < 2.0, (reset, after)
        assert "router_adapter_state" in await metrics(daemon)

        # a 500 storm: the adapter backs off (growing pauses), never spins
        em.fail_next("mentions", status=500, times=4)
        storm_start = time.time()
        await asyncio.sleep(6)
        times = [q.at for q in em.requests_for("mentions") if q.at >= storm_start]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 2 <= len(times) <= 5, times
        assert gaps == sorted(gaps) or gaps[-1] > gaps[0]
        assert daemon.events("x_poll_failed")
    finally:
        daemon.stop()


async def metrics(daemon: DaemonProcess) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.url}/metrics") as r:
        return await r.text()


async def test_two_daemons_never_both_poll(
    tmp_path: Path, redis_server: RedisServer, x_emulator: XEmulator
) -> None:
    em = x_emulator
    a = start(x_config(tmp_path, redis_server.url, em, "a"), em)
    b = start(x_config(tmp_path, redis_server.url, em, "b"), em)
    try:
        await asyncio.sleep(2)
        polling = [
            'router_adapter_state{adapter="x",name="polling"} 1.0' in await metrics(d)
            for d in (a, b)
        ]
        assert polling.count(True) == 1, polling
        # one poller: about one mentions request per poll interval, not two
        t0 = time.time()
        await asyncio.sleep(3)
        n = len([q for q in em.requests_for("mentions") if q.at >= t0])
        assert 3 <= n <= 8, n
        # the poller dies: the other takes over once the lease expires
        (a if polling[0] else b).kill()
        other = b if polling[0] else a
        t1 = time.time()
        await asyncio.sleep(4)
        assert [q for q in em.requests_for("mentions") if q.at > t1 + 2.5], "no takeover"
        assert 'name="polling"} 1.0' in await metrics(other)
    finally:
        a.stop()
        b.stop()


async def test_a_post_whose_ids_are_not_x_ids_is_skipped_and_polling_goes_on(
    tmp_path: Path, redis_server: RedisServer, x_emulator: XEmulator
) -> None:
    """Issue 14 (control characters): an id from X becomes a Redis key (the
    customer's identity, the dedup key) and reaches log lines; one that is not
    a number is skipped with one line, and the next posts flow on."""
    em = x_emulator
    r = redis_server.client()
    forged = em.add_mention("@acme help", author_id="3333", author_username="odd_one", lang="en")
    em.tweets[forged["id"]]["author_id"] = "3333\x00\x1b[2J"
    fine = em.add_mention("@acme my order is late", author_id="4444", author_username="fine")
    daemon = start(x_config(tmp_path, redis_server.url, em, "d1"), em)
    try:
        routed = await until(
            lambda: [
                e
                for e in entries(r, "support-en")
                if r.hget(f"router:msg:{{{e['message_id']}}}", "source_id") == fine["id"]
            ],
            what="the good mention routed",
        )
        assert routed
        (skipped,) = daemon.events("x_item_skipped")
        assert skipped["fields"] == ["author_id"] and "\\x00" in skipped["values"][0]
        assert "\x1b" not in daemon.log() and not daemon.events("x_poll_error")
        assert not [k for k in r.scan_iter("router:*") if "\x00" in k or "\x1b" in k]
        senders = {
            r.hget(f"router:msg:{{{e['message_id']}}}", "sender") for e in entries(r, "support-en")
        }
        assert "x:4444" in senders and not any("3333" in s for s in senders)
    finally:
        daemon.stop()


def test_x_ids_that_are_not_numbers_never_become_references() -> None:
    from router.adapters.x import dm_message, tweet_message

    tweet = {
        "id": "1",
        "author_id": "2",
        "text": "hi",
        "conversation_id": "5\n",
        "referenced_tweets": [{"type": "replied_to", "id": "6"}, {"type": "quoted", "id": "x"}],
    }
    assert tweet_message(tweet, {}, "mention").references == ["6"]
    dm = {"id": "7", "sender_id": "2", "text": "hi", "dm_conversation_id": "2-3"}
    assert dm_message(dm, {}).references == ["2-3"]
    assert dm_message({**dm, "dm_conversation_id": "2-3\x00"}, {}).references == []


async def test_a_brand_search_hit_is_queued_for_a_person_and_never_answered(
    tmp_path: Path, redis_server: RedisServer, x_emulator: XEmulator
) -> None:
    """Issue 14: a post that merely names the brand got an automatic public
    reply. It is routed (here by a rule on `source`) with no acknowledgement;
    a mention still gets its public one."""
    em = x_emulator
    r = redis_server.client()
    hit = em.add_tweet(
        "Just got my Acme Shoes and they already feel great",
        author_id="5555",
        author_username="runner",
        lang="en",
    )
    mention = em.add_mention(
        "@acme my Acme Shoes order has not arrived", author_id="6666", author_username="buyer"
    )
    config = x_config(
        tmp_path,
        redis_server.url,
        em,
        "d1",
        **{
            "queues": {
                "support-br": {"team": "brazil"},
                "support-jp": {"team": "japan"},
                "support-en": {"team": "world"},
                "general": {},
                "brand-watch": {},
            },
            "rules": [
                {
                    "name": "brand-search",
                    "when": {"source": ["search"]},
                    "targets": [{"queue": "brand-watch", "priority": "low"}],
                }
            ],
        },
    )
    data = yaml.safe_load(config.read_text())
    data["channels"]["x"]["search_query"] = '"Acme Shoes" -is:retweet'
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    daemon = start(config, em)
    try:
        (queued,) = await until(lambda: entries(r, "brand-watch"), what="the search hit routed")
        msg = r.hgetall(f"router:msg:{{{queued['message_id']}}}")
        assert msg["source_id"] == hit["id"] and msg["sender"] == "x:5555"
        assert json.loads(msg["meta"])["kind"] == "search"
        d = json.loads(msg["decision"])
        assert d["rule"] == "brand-search" and d["ack_text"] is None
        assert any("did not write to us" in reason for reason in d["reasons"])
        # the mention (it names the brand too, and was found first) is acknowledged
        acked = await until(
            lambda: [p for p in em.posted if p.in_reply_to_tweet_id == mention["id"]],
            what="the mention's public acknowledgement",
        )
        assert acked[0].text == PUBLIC_ACKS["en"]
        await asyncio.sleep(2)  # the outbox is idle: nothing more is coming
        assert not [p for p in em.posted if p.in_reply_to_tweet_id == hit["id"]]
    finally:
        daemon.stop()
