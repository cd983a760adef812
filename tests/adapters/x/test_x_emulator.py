"""Self-test of the X API v2 emulator, driven by the real tweepy AsyncClient."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import tweepy
import yaml
from tweepy.asynchronous import AsyncClient, AsyncPaginator
from yarl import URL

from tests.adapters.x.x_emulator import (
    CORPUS_DIR,
    ForeignHostError,
    XCredentials,
    XEmulator,
    dm_conversation_id_for,
    redirect_session,
    snowflake_time,
)
from tests.adapters.x.x_emulator import x_emulator as x_emulator  # fixture

RECORDED_MENTIONS = ["1578522401263919106", "1578522395434192896"]
RECORDED_DMS = ["1585823814956482567", "1585823814058971140"]
DM_PARTICIPANT = "750362064426721281"

RECORDED_CASSETTES = [
    "test_asyncclient_create_and_delete_tweet.yaml",
    "test_asyncclient_get_me.yaml",
    "test_asyncclient_get_users_mentions.yaml",
    "test_asyncclient_manage_and_lookup_direct_messages.yaml",
    "test_asyncclient_search_recent_tweets.yaml",
]


@pytest.mark.parametrize("name", RECORDED_CASSETTES)
def test_recorded_responses_are_in_the_repository(name: str) -> None:
    # A missing fixture fails and names the file; it never skips.
    assert (CORPUS_DIR / name).is_file(), f"missing fixture {CORPUS_DIR / name}"


def cassette_body(name: str, index: int = 0) -> dict[str, Any]:
    data = yaml.safe_load((CORPUS_DIR / name).read_text(encoding="utf-8"))
    return json.loads(data["interactions"][index]["response"]["body"]["string"])


# ---------------------------------------------------------------- redirect + recorded data


async def test_tweepy_reaches_only_the_emulator(x_emulator: XEmulator) -> None:
    resolved: list[str] = []

    async def on_dns(_s: Any, _c: Any, params: aiohttp.TraceDnsResolveHostStartParams) -> None:
        resolved.append(params.host)

    trace = aiohttp.TraceConfig()
    trace.on_dns_resolvehost_start.append(on_dns)
    session = redirect_session(x_emulator.base_url, trace_configs=[trace])
    client = AsyncClient(**x_emulator.credentials.client_kwargs())
    client.session = session
    try:
        mentions = await client.get_users_mentions(x_emulator.user_id)
        dms = await client.get_direct_message_events()
        search = await client.search_recent_tweets("Tweepy")
        posted = await client.create_tweet(text="hello", in_reply_to_tweet_id=RECORDED_MENTIONS[0])
        sent = await client.create_direct_message(participant_id=DM_PARTICIPANT, text="hi")
        # tweepy never closes a session it was given
        assert client.session is session and not session.closed
        with pytest.raises(ForeignHostError):
            await session.get("https://example.com/")
    finally:
        await session.close()

    assert [t.id for t in mentions.data] == [int(i) for i in RECORDED_MENTIONS]
    assert dms.data is not None and search.data is not None
    assert posted.data["text"] == "hello" and sent.data["dm_event_id"]
    assert resolved == []  # no name was ever resolved: nothing went to api.twitter.com
    log = x_emulator.requests
    assert [(r.method, r.endpoint, r.status) for r in log] == [
        ("GET", "mentions", 200),
        ("GET", "dm_events", 200),
        ("GET", "search_recent", 200),
        ("POST", "create_tweet", 201),
        ("POST", "create_dm", 201),
    ]
    assert {r.headers["Host"] for r in log} == {f"127.0.0.1:{x_emulator.port}"}
    assert [r.auth for r in log] == ["bearer", "oauth1", "bearer", "oauth1", "oauth1"]
    assert log[0].headers["Authorization"] == f"Bearer {x_emulator.credentials.bearer_token}"
    assert log[1].headers["Authorization"].startswith("OAuth ")
    assert "Tweepy/" in log[0].headers["User-Agent"]


async def test_raw_response_and_rate_limit_headers(x_emulator: XEmulator) -> None:
    client = x_emulator.client(return_type=aiohttp.ClientResponse)
    resp = await client.get_users_mentions(x_emulator.user_id)
    assert isinstance(resp, aiohttp.ClientResponse)
    assert resp.status == 200
    # aiohttp reports the URL as asked (before the middleware); request_info.url is where
    # the request really went
    assert resp.url.host == "api.twitter.com" and resp.request_info.real_url.host == resp.url.host
    assert resp.request_info.url.host == "127.0.0.1"
    assert resp.request_info.url.port == x_emulator.port
    assert resp.headers["x-rate-limit-limit"] == "450"
    assert resp.headers["x-rate-limit-remaining"] == "449"
    assert int(resp.headers["x-rate-limit-reset"]) >= time.time() + 899
    body = await resp.json()  # already read and released by tweepy; the body is cached
    assert [t["id"] for t in body["data"]] == RECORDED_MENTIONS


async def test_rate_limit_headers_via_session_middleware(x_emulator: XEmulator) -> None:
    seen: list[tuple[str, str | None]] = []

    async def capture(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        resp = await handler(req)
        seen.append((req.url.path, resp.headers.get("x-rate-limit-remaining")))
        return resp

    client = x_emulator.client(session=x_emulator.session(middlewares=[capture]))
    x_emulator.set_limit("dm_events", 3)
    for _ in range(3):
        await client.get_direct_message_events()
    with pytest.raises(tweepy.errors.TooManyRequests):
        await client.get_direct_message_events()
    assert seen == [("/2/dm_events", n) for n in ("2", "1", "0", "0")]


async def test_get_me_recorded_and_configurable() -> None:
    recorded = cassette_body("test_asyncclient_get_me.yaml")["data"]
    default = await XEmulator().start()
    custom = await XEmulator(user_id="42", username="acme_care", name="Acme Care").start()
    try:
        me = await default.client().get_me()
        assert me.data.data == recorded
        me2 = await custom.client().get_me(user_fields=["created_at"])
        assert (me2.data.id, me2.data.username, me2.data.name) == (42, "acme_care", "Acme Care")
        assert "created_at" in me2.data.data
        mentions = await custom.client().get_users_mentions(42)
        assert [str(t.id) for t in mentions.data] == RECORDED_MENTIONS
        dms = await custom.client().get_direct_message_events(
            dm_event_fields=["dm_conversation_id", "sender_id"]
        )
        assert {e.dm_conversation_id for e in dms.data} == {f"42-{DM_PARTICIPANT}"}
        assert {e.sender_id for e in dms.data} == {42}
    finally:
        await default.stop()
        await custom.stop()


# ---------------------------------------------------------------- mentions


async def test_recorded_mentions(x_emulator: XEmulator) -> None:
    recorded = cassette_body("test_asyncclient_get_users_mentions.yaml")
    r = await x_emulator.client(return_type=dict).get_users_mentions(x_emulator.user_id)
    assert r["data"] == recorded["data"]
    assert r["meta"] == {
        "result_count": 2,
        "newest_id": RECORDED_MENTIONS[0],
        "oldest_id": RECORDED_MENTIONS[1],
    }
    assert "includes" not in r


async def test_since_id_returns_only_newer(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    a = x_emulator.add_mention("@TweepyDev first", author_username="alice")
    b = x_emulator.add_mention("@TweepyDev second", author_username="bob")
    r = await client.get_users_mentions(x_emulator.user_id, since_id=RECORDED_MENTIONS[0])
    assert [str(t.id) for t in r.data] == [b["id"], a["id"]]
    assert r.meta == {"result_count": 2, "newest_id": b["id"], "oldest_id": a["id"]}
    r = await client.get_users_mentions(x_emulator.user_id, since_id=b["id"])
    assert r.data is None and r.meta == {"result_count": 0}
    assert x_emulator.requests_for("mentions")[0].query["since_id"] == RECORDED_MENTIONS[0]


async def test_added_mentions_have_asked_fields_and_includes(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    first = x_emulator.add_mention(
        "@TweepyDev mon colis #1234 est en retard",
        author_username="claire",
        author_name="Claire D.",
        lang="fr",
        created_at="2024-05-01T10:00:00Z",
    )
    reply = x_emulator.add_mention(
        "@TweepyDev toujours rien", author_username="claire", in_reply_to_tweet_id=first["id"]
    )
    fields = ["created_at", "lang", "conversation_id", "referenced_tweets", "author_id"]
    r = await client.get_users_mentions(
        x_emulator.user_id,
        since_id=RECORDED_MENTIONS[0],
        tweet_fields=fields,
        expansions=["author_id"],
        user_fields=["created_at"],
    )
    newest, older = r.data
    assert set(older.data) == {"id", "text", "edit_history_tweet_ids", *fields} - {
        "referenced_tweets"
    }
    assert older.lang == "fr" and older.created_at == datetime.fromisoformat("2024-05-01T10:00Z")
    assert older.conversation_id == int(first["id"])
    assert newest.conversation_id == int(first["id"])
    assert [(ref.type, str(ref.id)) for ref in newest.referenced_tweets] == [
        ("replied_to", first["id"])
    ]
    assert newest.created_at == snowflake_time(reply["id"]).replace(microsecond=0)
    (claire,) = r.includes["users"]
    assert (claire.id, claire.username, claire.name) == (older.author_id, "claire", "Claire D.")
    assert set(claire.data) == {"id", "name", "username", "created_at"}

    plain = await client.get_users_mentions(x_emulator.user_id, max_results=5)
    assert all(set(t.data) == {"id", "text", "edit_history_tweet_ids"} for t in plain.data)
    assert plain.includes == {}
    # an expansion alone brings the id field into the tweet, as on X
    exp = await client.get_users_mentions(x_emulator.user_id, expansions=["author_id"])
    assert all(
        set(t.data) == {"id", "text", "edit_history_tweet_ids", "author_id"} for t in exp.data
    )
    replied = await client.get_users_mentions(
        x_emulator.user_id, expansions=["in_reply_to_user_id", "referenced_tweets.id"]
    )
    assert [t.id for t in replied.includes["tweets"]] == [int(first["id"])]
    assert replied.data[0].in_reply_to_user_id == older.author_id


async def test_mentions_pagination(x_emulator: XEmulator) -> None:
    for i in range(6):
        x_emulator.add_mention(f"@TweepyDev message {i}")
    client = x_emulator.client()
    pages = [
        page
        async for page in AsyncPaginator(
            client.get_users_mentions, x_emulator.user_id, max_results=5
        )
    ]
    assert [len(p.data) for p in pages] == [5, 3]
    ids = [t.id for p in pages for t in p.data]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 8
    assert "next_token" in pages[0].meta and "next_token" not in pages[1].meta
    assert x_emulator.requests_for("mentions")[1].query["pagination_token"]


async def test_mentions_bad_parameters(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    with pytest.raises(tweepy.errors.BadRequest, match="is not between 5 and 100"):
        await client.get_users_mentions(x_emulator.user_id, max_results=1)
    with pytest.raises(tweepy.errors.BadRequest, match=r"value \[colour\] is not one of"):
        await client.get_users_mentions(x_emulator.user_id, tweet_fields=["colour"])
    with pytest.raises(tweepy.errors.BadRequest, match="pagination_token"):
        await client.get_users_mentions(x_emulator.user_id, pagination_token="nope")
    missing = await client.get_users_mentions(999)
    assert missing.data is None
    assert missing.errors[0]["detail"] == "Could not find user with id: [999]."


# ---------------------------------------------------------------- DMs, search


async def test_dm_events_recorded_and_added(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    r = await client.get_direct_message_events()
    recorded = cassette_body("test_asyncclient_manage_and_lookup_direct_messages.yaml", 4)
    assert [e.data for e in r.data] == recorded["data"]
    assert r.meta == {"result_count": 2}

    ev = x_emulator.add_dm("Hi, where is my parcel?", sender_username="dora")
    r = await client.get_direct_message_events(
        dm_event_fields=["created_at", "dm_conversation_id", "sender_id"],
        event_types="MessageCreate",
        expansions=["sender_id"],
        user_fields=["created_at"],
    )
    assert [str(e.id) for e in r.data] == [ev["id"], *RECORDED_DMS]
    newest = r.data[0]
    assert set(newest.data) == {
        "id",
        "event_type",
        "text",
        "created_at",
        "dm_conversation_id",
        "sender_id",
    }
    dora = x_emulator.user_by_username("dora")
    assert dora is not None
    assert newest.dm_conversation_id == dm_conversation_id_for(dora["id"], x_emulator.user_id)
    assert [u.username for u in r.includes["users"]] == ["dora", "TweepyDev"]
    assert "since_id" not in x_emulator.requests_for("dm_events")[-1].query

    conv = await client.get_direct_message_events(participant_id=dora["id"])
    assert [str(e.id) for e in conv.data] == [ev["id"]]
    with pytest.raises(tweepy.errors.BadRequest):
        await client.get_direct_message_events(event_types="Typing")


async def test_search_recent(x_emulator: XEmulator) -> None:
    recorded = cassette_body("test_asyncclient_search_recent_tweets.yaml")
    client = x_emulator.client(return_type=dict)
    r = await client.search_recent_tweets("Tweepy")
    assert r["data"] == recorded["data"]
    assert {k: r["meta"][k] for k in ("newest_id", "oldest_id", "result_count")} == {
        k: recorded["meta"][k] for k in ("newest_id", "oldest_id", "result_count")
    }
    newest = recorded["data"][0]["id"]
    r = await client.search_recent_tweets("Tweepy", since_id=recorded["data"][2]["id"])
    assert [t["id"] for t in r["data"]] == [newest, recorded["data"][1]["id"]]

    mine = x_emulator.add_tweet("Is tweepy down for anyone?", author_username="erin")
    r = await client.search_recent_tweets("tweepy -is:retweet", since_id=newest)
    assert [t["id"] for t in r["data"]] == [mine["id"]]
    r = await client.search_recent_tweets("from:erin", tweet_fields=["author_id"])
    assert r["data"] == [
        {
            "id": mine["id"],
            "text": mine["text"],
            "edit_history_tweet_ids": [mine["id"]],
            "author_id": mine["author_id"],
        }
    ]
    r = await client.search_recent_tweets("nothing-matches-this")
    assert r == {"meta": {"result_count": 0}}


# ---------------------------------------------------------------- writes


async def test_create_tweet_in_reply(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    mention = x_emulator.add_mention("@TweepyDev help!", author_username="frank")
    r = await client.create_tweet(text="@frank we're on it", in_reply_to_tweet_id=mention["id"])
    assert set(r.data) == {"id", "text", "edit_history_tweet_ids"}
    assert r.data["text"] == "@frank we're on it"
    (posted,) = x_emulator.posted
    assert (posted.id, posted.in_reply_to_tweet_id) == (r.data["id"], mention["id"])
    assert posted.body == {
        "text": "@frank we're on it",
        "reply": {"in_reply_to_tweet_id": mention["id"]},
    }
    stored = x_emulator.tweets[posted.id]
    assert stored["conversation_id"] == mention["id"]
    assert stored["in_reply_to_user_id"] == mention["author_id"]
    assert stored["author_id"] == x_emulator.user_id
    req = x_emulator.requests_for("create_tweet")[0]
    assert req.auth == "oauth1" and req.status == 201

    with pytest.raises(tweepy.errors.Forbidden, match="deleted or not visible"):
        await client.create_tweet(text="x", in_reply_to_tweet_id="12345")
    with pytest.raises(tweepy.errors.BadRequest):
        await client.create_tweet()


async def test_create_direct_message(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    r = await client.create_direct_message(participant_id=DM_PARTICIPANT, text="Hello again")
    conv = dm_conversation_id_for(DM_PARTICIPANT, x_emulator.user_id)
    assert r.data["dm_conversation_id"] == conv
    (sent,) = x_emulator.dms_sent
    assert (sent.dm_event_id, sent.participant_id, sent.text) == (
        r.data["dm_event_id"],
        DM_PARTICIPANT,
        "Hello again",
    )
    assert sent.body == {"text": "Hello again"}
    r2 = await client.create_direct_message(dm_conversation_id=conv, text="And again")
    assert x_emulator.dms_sent[1].participant_id is None
    # sent messages show up in /2/dm_events as the account's own, like on X
    events = await client.get_direct_message_events(dm_event_fields=["sender_id"])
    assert [str(e.id) for e in events.data[:2]] == [
        r2.data["dm_event_id"],
        r.data["dm_event_id"],
    ]
    assert {e.sender_id for e in events.data} == {int(x_emulator.user_id)}


# ---------------------------------------------------------------- auth


async def test_unauthorized_without_credentials(x_emulator: XEmulator) -> None:
    client = x_emulator.client(bearer_token=None)  # tweepy then sends "Bearer None"
    with pytest.raises(tweepy.errors.Unauthorized) as info:
        await client.get_users_mentions(x_emulator.user_id)
    assert info.value.response.status == 401
    assert x_emulator.requests[-1].headers["Authorization"] == "Bearer None"
    async with aiohttp.ClientSession() as plain:
        async with plain.get(f"{x_emulator.base_url}/2/users/me") as resp:
            assert resp.status == 401
            assert await resp.json() == {
                "title": "Unauthorized",
                "detail": "Unauthorized",
                "type": "about:blank",
                "status": 401,
            }
            assert "x-rate-limit-remaining" not in resp.headers
    # app-only auth on a user-context endpoint
    with pytest.raises(tweepy.errors.Forbidden, match="Application-Only is forbidden"):
        await x_emulator.client().get_direct_message_events(user_auth=False)


async def test_strict_auth_checks_oauth1_signature() -> None:
    emulator = await XEmulator(strict_auth=True).start()
    try:
        good = emulator.client()
        r = await good.get_direct_message_events(
            dm_event_fields=["created_at", "sender_id"], max_results=1
        )
        assert len(r.data) == 1
        await good.create_tweet(text="signed", in_reply_to_tweet_id=RECORDED_MENTIONS[1])
        await good.get_users_mentions(emulator.user_id)
        forged = emulator.client(consumer_secret="wrong")
        with pytest.raises(tweepy.errors.Unauthorized):
            await forged.get_direct_message_events(max_results=1)
        with pytest.raises(tweepy.errors.Unauthorized):
            await emulator.client(bearer_token="other").get_users_mentions(emulator.user_id)
        assert [r.status for r in emulator.requests] == [200, 201, 200, 401, 401]
        # the signature covers the query as tweepy signed it for https://api.twitter.com:
        # replaying it verbatim passes, changing the query does not
        signed = emulator.requests[0]
        auth = {"Authorization": signed.headers["Authorization"]}
        async with aiohttp.ClientSession() as plain:
            url = f"{emulator.base_url}{signed.path}?{signed.raw_query}"
            async with plain.get(URL(url, encoded=True), headers=auth) as resp:
                assert resp.status == 200
            tampered = url.replace("max_results=1", "max_results=2")
            async with plain.get(tampered, headers=auth) as resp:
                assert resp.status == 401
    finally:
        await emulator.stop()
    assert XCredentials().client_kwargs()["consumer_key"] == "emulator-consumer-key"


# ---------------------------------------------------------------- rate limits, failures


async def test_rate_limit_raises_too_many_requests(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    reset = x_emulator.rate_limit("mentions", remaining=0, reset_in=1.0)
    with pytest.raises(tweepy.errors.TooManyRequests) as info:
        await client.get_users_mentions(x_emulator.user_id)
    exc = info.value
    assert exc.reset_time == reset
    assert exc.response.status == 429
    assert exc.response.headers["x-rate-limit-reset"] == str(reset)
    assert exc.response.headers["x-rate-limit-remaining"] == "0"
    assert exc.response.headers["x-rate-limit-limit"] == "450"
    assert exc.api_messages == ["Too Many Requests"]
    # other endpoints are not affected
    await client.search_recent_tweets("Tweepy")

    await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)
    r = await client.get_users_mentions(x_emulator.user_id)
    assert len(r.data) == 2
    log = x_emulator.requests_for("mentions")
    assert [e.status for e in log] == [429, 200]
    assert log[0].at < reset <= log[1].at


async def test_wait_on_rate_limit_waits_for_reset_only(x_emulator: XEmulator) -> None:
    client = x_emulator.client(wait_on_rate_limit=True)
    reset = x_emulator.rate_limit("mentions", remaining=1, reset_in=1.0)
    await client.get_users_mentions(x_emulator.user_id)  # the one left in the window
    r = await client.get_users_mentions(x_emulator.user_id)  # 429, sleeps, retries
    assert len(r.data) == 2
    log = x_emulator.requests_for("mentions")
    assert [e.status for e in log] == [200, 429, 200]  # one retry, no spinning
    # tweepy sleeps reset - int(now) + 1: up to 2 s past the reset, never before it
    assert reset <= log[2].at < reset + 2.2


async def test_server_error_storm(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    x_emulator.fail_next("mentions", status=500, times=2)
    x_emulator.fail_next("mentions", status=503)
    for status in (500, 500, 503):
        with pytest.raises(tweepy.errors.TwitterServerError) as info:
            await client.get_users_mentions(x_emulator.user_id)
        assert info.value.response.status == status
        assert "x-rate-limit-remaining" in info.value.response.headers
    assert len((await client.get_users_mentions(x_emulator.user_id)).data) == 2
    # a non-JSON error page (edge/proxy) is not turned into a tweepy exception
    x_emulator.fail_next("create_tweet", status=502, json_body=False)
    with pytest.raises(aiohttp.ContentTypeError):
        await client.create_tweet(text="x")
    statuses = [e.status for e in x_emulator.requests]
    assert statuses == [500, 500, 503, 200, 502]
    # failed requests used quota, like on X
    assert x_emulator.rate_limit_state("mentions")[1] == 450 - 4


async def test_delay_and_wait_for_requests(x_emulator: XEmulator) -> None:
    client = x_emulator.client()
    x_emulator.delay_next("search_recent", 0.3)
    task = asyncio.create_task(client.search_recent_tweets("Tweepy"))
    await asyncio.sleep(0.1)
    assert x_emulator.requests[-1].status is None  # arrived, not answered yet
    (req,) = await x_emulator.wait_for_requests("search_recent", 1, timeout=2)
    assert req.status == 200
    await task
    with pytest.raises(TimeoutError):
        await x_emulator.wait_for_requests("mentions", 1, timeout=0.1)
    with pytest.raises(KeyError):
        x_emulator.rate_limit("no_such_endpoint")
