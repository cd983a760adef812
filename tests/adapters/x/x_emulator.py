"""A local X (Twitter) API v2 emulator the *real* ``tweepy.asynchronous.AsyncClient`` can use.

It speaks X API v2's wire format for what the daemon uses:

* ``GET /2/users/me``: the account (recorded ``TweepyDev`` by default; id configurable);
* ``GET /2/users/{id}/mentions``: a programmable mentions timeline, newest first, with
  ``since_id``/``until_id``/``start_time``/``end_time``, ``max_results`` (5..100, default
  10), ``pagination_token``, ``tweet.fields``, ``user.fields`` and ``expansions``;
* ``GET /2/dm_events`` (no ``since_id``, as the real endpoint) and the per-conversation
  ``GET /2/dm_conversations/with/{participant_id}/dm_events`` and
  ``GET /2/dm_conversations/{dm_conversation_id}/dm_events``: ``dm_event.fields``,
  ``event_types``, ``expansions``, ``max_results`` (1..100, default 100),
  ``pagination_token``;
* ``GET /2/tweets/search/recent``: ``query`` (terms, ``"phrases"``, ``-negation``, ``OR``,
  ``from:``, ``to:``, ``is:reply``/``is:retweet``/``is:quote``, ``conversation_id:``,
  ``lang:``), ``since_id``, ``max_results`` (10..100), ``next_token``, fields as above;
* ``POST /2/tweets`` -> 201 ``{"data": {"id", "text", "edit_history_tweet_ids"}}``
  (logged in ``posted``); ``POST /2/dm_conversations/with/{participant_id}/messages`` and
  ``POST /2/dm_conversations/{dm_conversation_id}/messages`` -> 201
  ``{"data": {"dm_conversation_id", "dm_event_id"}}`` (logged in ``dms_sent``; the message
  also shows up in ``/2/dm_events`` as sent by the account, as on X).

As on X: objects carry only ``id``, ``text`` (and ``edit_history_tweet_ids`` for tweets,
``event_type`` for DM events) plus the fields asked for in ``*.fields`` and the id fields of
the asked expansions; empty pages are ``{"meta": {"result_count": 0}}`` with no ``data``;
unknown query parameters, field names or out-of-range ``max_results`` answer 400 with X's
"Invalid Request" problem JSON; mentions of an unknown user id answer 200 with only an
``errors`` array; app-only Bearer auth on user-context endpoints (``users/me``, DMs,
``POST /2/tweets``) answers 403 "Unsupported Authentication"; replying to an unknown tweet
answers 403 like X does for deleted/invisible tweets (``strict_replies``).

Auth: every request needs ``Authorization: Bearer <token>`` or ``OAuth ...`` (OAuth 1.0a
with all ``oauth_*`` parameters), else 401 ``{"title": "Unauthorized", ...}``. tweepy sends
``Bearer None`` when it has no bearer token: that counts as missing. With
``strict_auth=True`` the tokens must equal ``credentials`` and the OAuth 1.0a HMAC-SHA1
signature is verified against ``https://api.twitter.com`` + path + raw query, i.e. the URL
tweepy signed before the redirect rewrote it.

Rate limits: every authenticated response carries ``x-rate-limit-limit``,
``x-rate-limit-remaining`` and ``x-rate-limit-reset`` (whole epoch seconds) for its
endpoint (limits from the recorded headers, 15-minute windows; ``set_limit`` changes them).
``rate_limit(endpoint, remaining=0, reset_in=2.0)`` makes it answer 429 (X's JSON) until
``ceil(now + reset_in)``, the epoch the header announces. ``fail_next(endpoint, status,
times)`` injects 5xx (or any) answers, ``delay_next`` slow answers. Order of checks: route,
auth (401/403, no rate-limit headers, no quota used), rate limit (429), injected failure
(uses quota), parameter validation (400, uses quota), the endpoint itself. Every request is
logged in ``requests`` (``XRequest``: epoch ``at``, ``monotonic``, method, path, query,
headers, JSON body, endpoint name, auth kind, status).

Endpoint names (for ``rate_limit``, ``fail_next``, ``delay_next``, ``set_limit``,
``requests_for``): ``users_me``, ``mentions``, ``dm_events``, ``dm_conversation_events``,
``search_recent``, ``create_tweet``, ``create_dm``.

Fixtures: the recorded responses in ``<corpora>/x-api`` (tweepy's VCR cassettes, MIT
licence, Copyright 2009-2023 Joshua Roesslein; see that directory's LICENSE) are loaded at
``XEmulator()`` time: the ``get_me`` user, the two recorded mentions (recorded as mentions
of @Twitter, 783214; served here as mentions of the configured account), the ten recorded
``search/recent?query=Tweepy`` tweets and the two DM events the recorded conversation
lookups returned (the recorded ``GET /2/dm_events`` itself answered ``result_count: 0``).
The cassettes hold only default fields, so ``created_at`` is derived from the snowflake ids,
``conversation_id`` is the tweet's own id, ``lang`` is ``en``, DM ``sender_id`` is the
account (it sent them in the recording), and the authors of recorded tweets are synthetic
users (``recorded_author_1``/``_2``, ``recorded_searcher``, ``recorded_dm_participant``).
``XEmulator(fixtures=False)`` starts empty.

Redirecting tweepy: ``AsyncClient.request`` builds ``"https://api.twitter.com" + route``
(hard-coded) and uses ``client.session`` when it is set; otherwise it creates an
``aiohttp.ClientSession`` per request and closes it afterwards. A session it did not create
is never closed by tweepy: its owner must ``await session.close()``.
``redirect_session(base_url)`` returns a session whose client middleware rewrites scheme,
host and port (and prepends ``base_url``'s path) of every request to ``api.twitter.com`` /
``api.x.com``, keeping the raw path and query byte for byte (OAuth 1.0a signatures stay
valid for the server, which must verify them against the original URL), and refuses any
other host with ``ForeignHostError``. ``redirect_session``/``redirect_middleware`` depend
only on aiohttp and yarl, so they can move into the daemon unchanged.

Use from tests: ``from tests.adapters.x.x_emulator import x_emulator as x_emulator`` in a test module
(or in ``tests/conftest.py``), take ``x_emulator`` as a fixture argument, and build clients
with ``x_emulator.client()`` (closed by ``stop()``) or by hand::

    client = tweepy.asynchronous.AsyncClient(**x_emulator.credentials.client_kwargs())
    client.session = redirect_session(x_emulator.base_url)   # close it yourself
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
import yaml
from aiohttp import hdrs, web
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849 import utils as oauth_utils
from yarl import URL

# --------------------------------------------------------------------------------------
# Redirecting aiohttp session (no test-only dependencies: aiohttp + yarl only)
# --------------------------------------------------------------------------------------

X_API_HOSTS: frozenset[str] = frozenset({"api.twitter.com", "api.x.com"})


class ForeignHostError(aiohttp.ClientError):
    """A redirecting session refused a request to a host it does not redirect."""


def redirect_middleware(
    base_url: str | URL,
    *,
    hosts: Iterable[str] = X_API_HOSTS,
    refuse_other_hosts: bool = True,
) -> aiohttp.ClientMiddlewareType:
    """An aiohttp client middleware sending requests for ``hosts`` to ``base_url``.

    Scheme, host and port are replaced by ``base_url``'s, whose path (if any) is prepended;
    the request's raw path and query are kept unchanged. Requests to ``base_url``'s own
    origin pass untouched; any other host raises ``ForeignHostError`` when
    ``refuse_other_hosts`` (the default).
    """
    base = URL(str(base_url))
    if not base.absolute or base.scheme not in {"http", "https"}:
        raise ValueError(f"base_url must be an absolute http(s) URL, not {str(base_url)!r}")
    if base.raw_user or base.raw_password or base.raw_query_string or base.raw_fragment:
        raise ValueError("base_url must not carry credentials, a query or a fragment")
    prefix = base.raw_path.rstrip("/")
    redirected = frozenset(h.lower().rstrip(".") for h in hosts)
    origin = base.origin()

    async def middleware(
        req: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        url = req.url
        host = (url.host or "").lower().rstrip(".")
        if host in redirected:
            new = URL.build(
                scheme=base.scheme,
                authority=base.raw_authority,
                path=prefix + url.raw_path,
                query_string=url.raw_query_string,
                encoded=True,
            )
            # ClientRequest derives connection key, TLS and request line from req.url.
            req.url = new
            req.headers[hdrs.HOST] = new.host_port_subcomponent or base.raw_authority
        elif refuse_other_hosts and url.origin() != origin:
            raise ForeignHostError(
                f"refusing {req.method} {url.origin()}: this session only talks to "
                f"{sorted(redirected)} (redirected to {origin})"
            )
        return await handler(req)

    return middleware


def redirect_session(
    base_url: str | URL,
    *,
    hosts: Iterable[str] = X_API_HOSTS,
    refuse_other_hosts: bool = True,
    **session_kwargs: Any,
) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose requests to the X API go to ``base_url``.

    For ``tweepy.asynchronous.AsyncClient``: ``client.session = redirect_session(url)``.
    tweepy never closes a session it was given: ``await session.close()`` when done.
    Must be called with an event loop running. Extra ``middlewares=`` run after (inside)
    the redirect, so they see the rewritten URL; other keyword arguments go to
    ``ClientSession``.
    """
    extra = tuple(session_kwargs.pop("middlewares", None) or ())
    mw = redirect_middleware(base_url, hosts=hosts, refuse_other_hosts=refuse_other_hosts)
    return aiohttp.ClientSession(middlewares=(mw, *extra), **session_kwargs)


# --------------------------------------------------------------------------------------
# Wire constants
# --------------------------------------------------------------------------------------

CORPUS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "x-api"
SIGNED_ORIGIN = "https://api.twitter.com"
TWEPOCH_MS = 1288834974657
RECORDED_ME_ID = "1072250532645998596"
FIFTEEN_MINUTES = 900.0

# name: default limit per 15-minute window (from the recorded x-rate-limit-limit headers)
DEFAULT_LIMITS: dict[str, int] = {
    "users_me": 75,
    "mentions": 450,
    "dm_events": 300,
    "dm_conversation_events": 300,
    "search_recent": 450,
    "create_tweet": 200,
    "create_dm": 200,
}
USER_CONTEXT_ONLY = frozenset(
    {"users_me", "dm_events", "dm_conversation_events", "create_tweet", "create_dm"}
)
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/2/users/me"), "users_me"),
    ("GET", re.compile(r"/2/users/(?P<id>[^/]+)/mentions"), "mentions"),
    ("GET", re.compile(r"/2/dm_events"), "dm_events"),
    (
        "GET",
        re.compile(r"/2/dm_conversations/with/(?P<participant_id>[^/]+)/dm_events"),
        "dm_conversation_events",
    ),
    (
        "GET",
        re.compile(r"/2/dm_conversations/(?P<dm_conversation_id>[^/]+)/dm_events"),
        "dm_conversation_events",
    ),
    ("GET", re.compile(r"/2/tweets/search/recent"), "search_recent"),
    ("POST", re.compile(r"/2/tweets"), "create_tweet"),
    (
        "POST",
        re.compile(r"/2/dm_conversations/with/(?P<participant_id>[^/]+)/messages"),
        "create_dm",
    ),
    (
        "POST",
        re.compile(r"/2/dm_conversations/(?P<dm_conversation_id>[^/]+)/messages"),
        "create_dm",
    ),
]

TWEET_FIELDS = frozenset(
    "article attachments author_id card_uri context_annotations conversation_id created_at "
    "display_text_range edit_controls edit_history_tweet_ids entities geo id "
    "in_reply_to_user_id lang media_metadata non_public_metrics note_tweet organic_metrics "
    "possibly_sensitive promoted_metrics public_metrics referenced_tweets reply_settings "
    "scopes source text withheld".split()
)
USER_FIELDS = frozenset(
    "affiliation connection_status created_at description entities id location "
    "most_recent_tweet_id name pinned_tweet_id profile_banner_url profile_image_url "
    "protected public_metrics receives_your_dm subscription_type url username verified "
    "verified_type withheld".split()
)
DM_EVENT_FIELDS = frozenset(
    "id text event_type created_at dm_conversation_id sender_id participant_ids "
    "referenced_tweets attachments".split()
)
TWEET_EXPANSIONS = frozenset(
    "article.cover_media article.media_entities attachments.media_keys "
    "attachments.media_source_tweet attachments.poll_ids author_id edit_history_tweet_ids "
    "entities.mentions.username entities.note.mentions.username geo.place_id "
    "in_reply_to_user_id referenced_tweets.id referenced_tweets.id.author_id".split()
)
DM_EXPANSIONS = frozenset(
    "attachments.media_keys referenced_tweets.id sender_id participant_ids".split()
)
USER_EXPANSIONS = frozenset({"pinned_tweet_id", "affiliation.user_id", "most_recent_tweet_id"})
DM_EVENT_TYPES = frozenset({"MessageCreate", "ParticipantsJoin", "ParticipantsLeave"})

_TIMELINE_PARAMS = frozenset(
    "end_time expansions max_results media.fields pagination_token place.fields "
    "poll.fields since_id start_time tweet.fields until_id user.fields".split()
)
_ALLOWED_PARAMS: dict[str, frozenset[str]] = {
    "users_me": frozenset({"expansions", "tweet.fields", "user.fields"}),
    "mentions": _TIMELINE_PARAMS,
    "search_recent": _TIMELINE_PARAMS | {"query", "next_token", "sort_order"},
    "dm_events": frozenset(
        "dm_event.fields event_types expansions max_results media.fields "
        "pagination_token tweet.fields user.fields".split()
    ),
}
_ALLOWED_PARAMS["dm_conversation_events"] = _ALLOWED_PARAMS["dm_events"]
_MAX_RESULTS = {  # endpoint: (min, max, default)
    "mentions": (5, 100, 10),
    "search_recent": (10, 100, 10),
    "dm_events": (1, 100, 100),
    "dm_conversation_events": (1, 100, 100),
}

_MENTION_RE = re.compile(r"(?<![\w@])@(\w{1,15})")
_HASHTAG_RE = re.compile(r"(?<![\w#])#(\w+)")
_URL_RE = re.compile(r"https?://\S+")
_ID_RE = re.compile(r"[0-9]{1,19}")


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass
class XCredentials:
    """Credentials ``client()`` uses and ``strict_auth`` checks."""

    bearer_token: str = "emulator-bearer-token"
    consumer_key: str = "emulator-consumer-key"
    consumer_secret: str = "emulator-consumer-secret"
    access_token: str = f"{RECORDED_ME_ID}-emulator-access-token"
    access_token_secret: str = "emulator-access-token-secret"

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``tweepy.asynchronous.AsyncClient``."""
        return dataclasses.asdict(self)


@dataclass
class XRequest:
    """One request the emulator received."""

    at: float  # epoch seconds (emulator clock) when it arrived
    monotonic: float
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    headers: dict[str, str]
    body: Any  # parsed JSON body, or the raw text if it was not JSON, or None
    endpoint: str | None  # see DEFAULT_LIMITS; None for an unknown route
    auth: str | None = None  # "bearer" | "oauth1" | None
    status: int | None = None  # None until answered (or if the answer was never sent)


@dataclass
class PostedTweet:
    id: str
    text: str | None
    in_reply_to_tweet_id: str | None
    body: dict[str, Any]
    at: float


@dataclass
class SentDM:
    dm_event_id: str
    dm_conversation_id: str
    participant_id: str | None  # None when sent with a dm_conversation_id
    text: str | None
    body: dict[str, Any]
    at: float


@dataclass
class _Window:
    limit: int
    window: float
    remaining: int = 0
    reset_at: int = 0  # epoch seconds, as sent in x-rate-limit-reset; 0: not started


@dataclass
class _Fault:
    status: int
    json_body: bool = True


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def snowflake_time(snowflake: str | int) -> datetime:
    """The creation time encoded in an X snowflake id."""
    ms = (int(snowflake) >> 22) + TWEPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def x_time(dt: datetime) -> str:
    """X's v2 timestamp format, e.g. ``2022-10-07T23:07:22.000Z``."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_time(value: str | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def dm_conversation_id_for(a: str | int, b: str | int) -> str:
    """X's id of the one-to-one conversation between two users: ``"{low}-{high}"``."""
    low, high = sorted((int(a), int(b)))
    return f"{low}-{high}"


def _entities(text: str, users_by_name: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mentions = []
    for m in _MENTION_RE.finditer(text):
        ent: dict[str, Any] = {"start": m.start(), "end": m.end(), "username": m.group(1)}
        user = users_by_name.get(m.group(1).lower())
        if user is not None:
            ent["id"] = user["id"]
        mentions.append(ent)
    if mentions:
        out["mentions"] = mentions
    tags = [
        {"start": m.start(), "end": m.end(), "tag": m.group(1)} for m in _HASHTAG_RE.finditer(text)
    ]
    if tags:
        out["hashtags"] = tags
    urls = [
        {
            "start": m.start(),
            "end": m.end(),
            "url": m.group(0),
            "expanded_url": m.group(0),
            "display_url": m.group(0).split("://", 1)[1][:26],
        }
        for m in _URL_RE.finditer(text)
    ]
    if urls:
        out["urls"] = urls
    return out


def _problem(status: int, title: str, detail: str, type_: str = "about:blank") -> dict[str, Any]:
    return {"title": title, "detail": detail, "type": type_, "status": status}


def _invalid(param: str, value: str, message: str) -> dict[str, Any]:
    return {
        "errors": [{"parameters": {param: [value]}, "message": message}],
        "title": "Invalid Request",
        "detail": "One or more parameters to your request was invalid.",
        "type": "https://api.twitter.com/2/problems/invalid-request",
    }


class _BadRequest(Exception):
    def __init__(self, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(body)
        self.body = body
        self.status = status


def _csv(query: Any, name: str, allowed: frozenset[str] | None) -> set[str]:
    raw = query.get(name)
    if raw is None:
        return set()
    values = [v for v in raw.split(",") if v]
    if allowed is not None:
        for v in values:
            if v not in allowed:
                raise _BadRequest(
                    _invalid(
                        name,
                        v,
                        f"The `{name}` query parameter value [{v}] is not one of "
                        f"[{','.join(sorted(allowed))}]",
                    )
                )
    return set(values)


def _load_cassette(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load(path.read_text(encoding="utf-8"))["interactions"])


def _recorded_body(
    interactions: list[dict[str, Any]], method: str, uri_re: str
) -> tuple[re.Match[str], dict[str, Any]]:
    for inter in interactions:
        req = inter["request"]
        m = re.fullmatch(uri_re, req["uri"])
        if req["method"] == method and m:
            return m, json.loads(inter["response"]["body"]["string"])
    raise LookupError(f"no recorded {method} {uri_re}")


# --------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------


class XEmulator:
    """X API v2 on 127.0.0.1 for the real tweepy AsyncClient (see the module docstring)."""

    def __init__(
        self,
        *,
        user_id: str = RECORDED_ME_ID,
        username: str | None = None,
        name: str | None = None,
        fixtures: bool = True,
        corpus_dir: Path = CORPUS_DIR,
        credentials: XCredentials | None = None,
        strict_auth: bool = False,
        strict_replies: bool = True,
        reject_duplicate_tweets: bool = False,
        user_context_bearer_tokens: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.user_id = str(user_id)
        self.credentials = credentials or XCredentials()
        self.strict_auth = strict_auth
        self.strict_replies = strict_replies
        self.reject_duplicate_tweets = reject_duplicate_tweets
        # OAuth 2.0 *user-context* bearer tokens (allowed on user-context endpoints).
        self.user_context_bearer_tokens = set(user_context_bearer_tokens)
        self.clock = clock

        self.requests: list[XRequest] = []
        self.posted: list[PostedTweet] = []
        self.dms_sent: list[SentDM] = []

        self.users: dict[str, dict[str, Any]] = {}
        self.tweets: dict[str, dict[str, Any]] = {}
        self.dm_events: dict[str, dict[str, Any]] = {}
        self._mentions: dict[str, list[str]] = {}
        self._ids_used: set[int] = set()
        self._last_now_id = 0
        self._synthetic_users = 0
        self._tokens: dict[str, tuple[str, int]] = {}  # pagination token -> (endpoint, below)
        self._windows = {n: _Window(limit, FIFTEEN_MINUTES) for n, limit in DEFAULT_LIMITS.items()}
        self._faults: dict[str, list[_Fault]] = {n: [] for n in DEFAULT_LIMITS}
        self._delays: dict[str, list[float]] = {n: [] for n in DEFAULT_LIMITS}
        self._sessions: list[aiohttp.ClientSession] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

        me: dict[str, Any] = {"id": self.user_id, "name": "Tweepy Testing", "username": "TweepyDev"}
        if fixtures:
            me = self._load_fixtures(corpus_dir)
        if username is not None:
            me["username"] = username
        if name is not None:
            me["name"] = name
        self.me = self.add_user(me.pop("username"), name=me.pop("name"), user_id=self.user_id)
        self._mentions.setdefault(self.user_id, [])

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        if not self.port:
            raise RuntimeError("XEmulator not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> XEmulator:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for s in self._sessions:
            await s.close()
        self._sessions.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """A ``redirect_session`` to this emulator, closed by ``stop()``."""
        s = redirect_session(self.base_url, **kwargs)
        self._sessions.append(s)
        return s

    def client(self, *, session: aiohttp.ClientSession | None = None, **kwargs: Any) -> Any:
        """A real ``tweepy.asynchronous.AsyncClient`` with ``credentials``, redirected here.

        ``kwargs`` override the credentials or set ``return_type``/``wait_on_rate_limit``.
        """
        from tweepy.asynchronous import AsyncClient

        client = AsyncClient(**{**self.credentials.client_kwargs(), **kwargs})
        client.session = session or self.session()
        return client

    # ---------------------------------------------------------------- programming

    def add_user(
        self,
        username: str,
        *,
        name: str | None = None,
        user_id: str | int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Register (or update) a user; returns the stored user object."""
        uid = str(user_id) if user_id is not None else str(self._new_id(self.clock()))
        user = self.users.get(uid, {})
        user.update({"id": uid, "name": name or user.get("name") or username, "username": username})
        user.setdefault(
            "created_at",
            x_time(snowflake_time(uid)) if int(uid) >> 22 else "2010-01-01T00:00:00.000Z",
        )
        user.setdefault("description", "")
        user.setdefault("protected", False)
        user.setdefault("verified", False)
        user.update(fields)
        self.users[uid] = user
        self._ids_used.add(int(uid))
        return user

    def user_by_username(self, username: str) -> dict[str, Any] | None:
        wanted = username.lstrip("@").lower()
        return next((u for u in self.users.values() if u["username"].lower() == wanted), None)

    def add_tweet(
        self,
        text: str,
        *,
        author_id: str | int | None = None,
        author_username: str | None = None,
        author_name: str | None = None,
        lang: str | None = "en",
        conversation_id: str | int | None = None,
        created_at: str | datetime | None = None,
        referenced_tweets: Iterable[dict[str, Any]] | None = None,
        in_reply_to_tweet_id: str | int | None = None,
        in_reply_to_user_id: str | int | None = None,
        tweet_id: str | int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Store a tweet (searchable; not in any mentions timeline). Returns it, all fields.

        The id is a snowflake of ``created_at`` (default: now), so ``since_id`` works as on
        X: a tweet added with an older ``created_at`` than ``since_id``'s is not "newer".
        ``in_reply_to_tweet_id`` adds a ``replied_to`` reference and takes the parent's
        conversation and author. ``extra`` fields are served when asked for.
        """
        author = self._resolve_user(author_id, author_username, author_name)
        when = _parse_time(created_at) if created_at is not None else None
        tid = (
            str(tweet_id)
            if tweet_id is not None
            else str(
                self._new_id(when.timestamp() if when else self.clock(), monotonic=when is None)
            )
        )
        self._ids_used.add(int(tid))
        refs = [dict(r, id=str(r["id"])) for r in referenced_tweets or ()]
        parent = None
        if in_reply_to_tweet_id is not None:
            refs.insert(0, {"type": "replied_to", "id": str(in_reply_to_tweet_id)})
        for r in refs:
            if r["type"] == "replied_to":
                parent = self.tweets.get(r["id"])
        if in_reply_to_user_id is None and parent is not None:
            in_reply_to_user_id = parent["author_id"]
        if conversation_id is None:
            conversation_id = parent["conversation_id"] if parent is not None else tid
        created = when or snowflake_time(tid)
        tweet: dict[str, Any] = {
            "id": tid,
            "text": text,
            "edit_history_tweet_ids": [tid],
            "author_id": author["id"],
            "created_at": x_time(created),
            "conversation_id": str(conversation_id),
        }
        if lang is not None:
            tweet["lang"] = lang
        if refs:
            tweet["referenced_tweets"] = refs
        if in_reply_to_user_id is not None:
            tweet["in_reply_to_user_id"] = str(in_reply_to_user_id)
        ents = _entities(text, {u["username"].lower(): u for u in self.users.values()})
        if ents:
            tweet["entities"] = ents
        tweet["public_metrics"] = {
            "retweet_count": 0,
            "reply_count": 0,
            "like_count": 0,
            "quote_count": 0,
            "bookmark_count": 0,
            "impression_count": 0,
        }
        tweet["possibly_sensitive"] = False
        tweet["reply_settings"] = "everyone"
        tweet["edit_controls"] = {
            "edits_remaining": 5,
            "is_edit_eligible": not refs,
            "editable_until": x_time(datetime.fromtimestamp(created.timestamp() + 3600, UTC)),
        }
        tweet.update(extra)
        self.tweets[tid] = tweet
        return tweet

    def add_mention(
        self, text: str, *, mentioned_user_id: str | int | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """``add_tweet`` + put it in the mentions timeline of ``mentioned_user_id``
        (default: the account). The text is not checked for ``@username``."""
        tweet = self.add_tweet(text, **kwargs)
        uid = str(mentioned_user_id) if mentioned_user_id is not None else self.user_id
        if uid not in self.users:
            raise KeyError(f"unknown user {uid}: add_user() first")
        self._mentions.setdefault(uid, []).append(tweet["id"])
        return tweet

    def add_dm(
        self,
        text: str | None,
        *,
        sender_id: str | int | None = None,
        sender_username: str | None = None,
        sender_name: str | None = None,
        dm_conversation_id: str | None = None,
        created_at: str | datetime | None = None,
        event_id: str | int | None = None,
        event_type: str = "MessageCreate",
        participant_ids: Iterable[str | int] | None = None,
        attachments: dict[str, Any] | None = None,
        referenced_tweets: Iterable[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Store a DM event visible in ``/2/dm_events``; returns it with all fields.

        Default sender: a new synthetic user; default conversation: the one-to-one
        conversation ``"{low id}-{high id}"`` of sender and account. DM events have no
        ``lang`` on X.
        """
        sender = self._resolve_user(sender_id, sender_username, sender_name)
        when = _parse_time(created_at) if created_at is not None else None
        eid = (
            str(event_id)
            if event_id is not None
            else str(
                self._new_id(when.timestamp() if when else self.clock(), monotonic=when is None)
            )
        )
        self._ids_used.add(int(eid))
        conv = dm_conversation_id or dm_conversation_id_for(sender["id"], self.user_id)
        event: dict[str, Any] = {"id": eid, "event_type": event_type}
        if event_type == "MessageCreate":
            event["text"] = text or ""
        event["sender_id"] = sender["id"]
        event["dm_conversation_id"] = conv
        event["created_at"] = x_time(when or snowflake_time(eid))
        if participant_ids is not None:
            event["participant_ids"] = [str(p) for p in participant_ids]
        if attachments is not None:
            event["attachments"] = attachments
        if referenced_tweets is not None:
            event["referenced_tweets"] = [dict(r, id=str(r["id"])) for r in referenced_tweets]
        self.dm_events[eid] = event
        return event

    def rate_limit(self, endpoint: str, remaining: int = 0, reset_in: float = 2.0) -> int:
        """Let ``remaining`` more requests through, then 429 until the returned epoch
        second (``ceil(now + reset_in)``, also sent as ``x-rate-limit-reset``)."""
        w = self._window(endpoint)
        w.remaining = remaining
        w.reset_at = math.ceil(self.clock() + reset_in)
        return w.reset_at

    def set_limit(self, endpoint: str, limit: int, window: float = FIFTEEN_MINUTES) -> None:
        """Change an endpoint's limit and window; starts a fresh window at the next request."""
        w = self._window(endpoint)
        w.limit, w.window, w.remaining, w.reset_at = limit, window, limit, 0

    def rate_limit_state(self, endpoint: str) -> tuple[int, int, int]:
        """``(limit, remaining, reset epoch)`` as the next response would report it."""
        w = self._window(endpoint)
        if self.clock() >= w.reset_at:
            return w.limit, w.limit, math.ceil(self.clock() + w.window)
        return w.limit, w.remaining, w.reset_at

    def fail_next(
        self, endpoint: str, status: int = 500, times: int = 1, *, json_body: bool = True
    ) -> None:
        """The next ``times`` requests to ``endpoint`` (after auth and rate limiting) answer
        ``status`` with X's problem JSON, or an HTML page if ``json_body=False`` (what a
        proxy/edge error looks like; tweepy then raises ``aiohttp.ContentTypeError``)."""
        self._window(endpoint)
        self._faults[endpoint].extend(_Fault(status, json_body) for _ in range(times))

    def delay_next(self, endpoint: str, seconds: float, times: int = 1) -> None:
        """The next ``times`` requests to ``endpoint`` wait ``seconds`` before answering."""
        self._window(endpoint)
        self._delays[endpoint].extend([seconds] * times)

    def requests_for(self, endpoint: str | None = None) -> list[XRequest]:
        return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    async def wait_for_requests(
        self, endpoint: str | None = None, count: int = 1, timeout: float = 5.0
    ) -> list[XRequest]:
        """Wait until at least ``count`` requests to ``endpoint`` were answered."""
        async with asyncio.timeout(timeout):
            while True:
                got = [r for r in self.requests_for(endpoint) if r.status is not None]
                if len(got) >= count:
                    return got
                await asyncio.sleep(0.01)

    # ---------------------------------------------------------------- internals

    def _window(self, endpoint: str) -> _Window:
        try:
            return self._windows[endpoint]
        except KeyError:
            raise KeyError(
                f"unknown endpoint {endpoint!r}; one of {sorted(DEFAULT_LIMITS)}"
            ) from None

    def _new_id(self, when: float, *, monotonic: bool = True) -> int:
        candidate = (int(when * 1000) - TWEPOCH_MS) << 22
        if monotonic:
            candidate = max(candidate, self._last_now_id + 1)
        while candidate in self._ids_used:
            candidate += 1
        self._ids_used.add(candidate)
        if monotonic:
            self._last_now_id = candidate
        return candidate

    def _resolve_user(
        self, user_id: str | int | None, username: str | None, name: str | None
    ) -> dict[str, Any]:
        if user_id is not None and str(user_id) in self.users:
            user = self.users[str(user_id)]
            if username is not None or name is not None:
                user = self.add_user(username or user["username"], name=name, user_id=user_id)
            return user
        if user_id is None and username is not None:
            known = self.user_by_username(username)
            if known is not None:
                return known
        if username is None:
            self._synthetic_users += 1
            username = f"customer{self._synthetic_users}"
        return self.add_user(username, name=name, user_id=user_id)

    def _load_fixtures(self, corpus: Path) -> dict[str, Any]:
        _, me_body = _recorded_body(
            _load_cassette(corpus / "test_asyncclient_get_me.yaml"),
            "GET",
            r"https://api\.twitter\.com/2/users/me",
        )
        me = dict(me_body["data"])
        recorded_me = me["id"]
        self.add_user(me["username"], name=me["name"], user_id=self.user_id)
        _, mentions = _recorded_body(
            _load_cassette(corpus / "test_asyncclient_get_users_mentions.yaml"),
            "GET",
            r"https://api\.twitter\.com/2/users/\d+/mentions",
        )
        for n, t in enumerate(reversed(mentions["data"]), 1):
            author = self.add_user(
                f"recorded_author_{n}",
                name=f"Recorded author {n}",
                user_id=str(1000000000000000000 + n),
            )
            self.add_mention(t["text"], tweet_id=t["id"], author_id=author["id"])
        _, search = _recorded_body(
            _load_cassette(corpus / "test_asyncclient_search_recent_tweets.yaml"),
            "GET",
            r"https://api\.twitter\.com/2/tweets/search/recent\?query=Tweepy",
        )
        searcher = self.add_user(
            "recorded_searcher", name="Recorded searcher", user_id="1000000000000000100"
        )
        for t in reversed(search["data"]):
            self.add_tweet(t["text"], tweet_id=t["id"], author_id=searcher["id"])
        m, dms = _recorded_body(
            _load_cassette(corpus / "test_asyncclient_manage_and_lookup_direct_messages.yaml"),
            "GET",
            r"https://api\.twitter\.com/2/dm_conversations/(\d+)-(\d+)/dm_events",
        )
        other = m.group(1) if m.group(2) == recorded_me else m.group(2)
        self.add_user("recorded_dm_participant", name="Recorded DM participant", user_id=other)
        for e in reversed(dms["data"]):
            self.add_dm(
                e["text"],
                event_id=e["id"],
                sender_id=self.user_id,
                dm_conversation_id=dm_conversation_id_for(other, self.user_id),
                event_type=e["event_type"],
            )
        return me

    # ---- HTTP plumbing

    def _json(
        self, body: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            status=status,
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        path = request.rel_url.raw_path
        endpoint, match = None, None
        for method, pattern, name in _ROUTES:
            m = pattern.fullmatch(path)
            if m and method == request.method:
                endpoint, match = name, m
                break
        entry = XRequest(
            at=self.clock(),
            monotonic=time.monotonic(),
            method=request.method,
            path=path,
            query=dict(request.query),
            raw_query=request.rel_url.raw_query_string,
            headers=dict(request.headers),
            body=body,
            endpoint=endpoint,
        )
        self.requests.append(entry)
        resp = await self._answer(request, entry, match)
        entry.status = resp.status
        return resp

    async def _answer(
        self, request: web.Request, entry: XRequest, match: re.Match[str] | None
    ) -> web.Response:
        endpoint = entry.endpoint
        if endpoint is None or match is None:
            return self._json(
                {"errors": [{"message": "Sorry, that page does not exist", "code": 34}]}, 404
            )
        auth, denial = self._authenticate(request, endpoint)
        entry.auth = auth
        if denial is not None:
            return denial
        w = self._windows[endpoint]
        now = self.clock()
        if now >= w.reset_at:
            w.remaining, w.reset_at = w.limit, math.ceil(now + w.window)
        allowed = w.remaining > 0
        if allowed:
            w.remaining -= 1
        headers = {
            "x-rate-limit-limit": str(w.limit),
            "x-rate-limit-remaining": str(w.remaining),
            "x-rate-limit-reset": str(w.reset_at),
        }
        if not allowed:
            return self._json(_problem(429, "Too Many Requests", "Too Many Requests"), 429, headers)
        if self._delays[endpoint]:
            await asyncio.sleep(self._delays[endpoint].pop(0))
        if self._faults[endpoint]:
            fault = self._faults[endpoint].pop(0)
            reason = _reason(fault.status)
            if not fault.json_body:
                return web.Response(
                    text=f"<html><body><h1>{fault.status} {reason}</h1></body></html>",
                    status=fault.status,
                    content_type="text/html",
                    headers=headers,
                )
            return self._json(_problem(fault.status, reason, reason), fault.status, headers)
        try:
            allowed_params = _ALLOWED_PARAMS.get(endpoint)
            if allowed_params is not None:
                for key, value in request.query.items():
                    if key not in allowed_params:
                        raise _BadRequest(
                            _invalid(
                                key,
                                value,
                                f"The query parameter [{key}] is not one of "
                                f"[{','.join(sorted(allowed_params))}]",
                            )
                        )
            handler = getattr(self, f"_h_{endpoint}")
            status, body = handler(request, match.groupdict(), entry)
        except _BadRequest as exc:
            return self._json(exc.body, exc.status, headers)
        if endpoint == "create_tweet" and status == 201:
            headers["location"] = f"{SIGNED_ORIGIN}/2/tweets/{body['data']['id']}"
        return self._json(body, status, headers)

    def _authenticate(
        self, request: web.Request, endpoint: str
    ) -> tuple[str | None, web.Response | None]:
        unauthorized = self._json(_problem(401, "Unauthorized", "Unauthorized"), 401)
        header = request.headers.get(hdrs.AUTHORIZATION, "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            token = value.strip()
            # tweepy sends "Bearer None" when the client has no bearer token
            if not token or token == "None":
                return None, unauthorized
            user_ctx = token in self.user_context_bearer_tokens
            if self.strict_auth and not user_ctx and token != self.credentials.bearer_token:
                return "bearer", unauthorized
            if endpoint in USER_CONTEXT_ONLY and not user_ctx:
                return "bearer", self._json(
                    _problem(
                        403,
                        "Unsupported Authentication",
                        "Authenticating with OAuth 2.0 Application-Only is forbidden for this "
                        "endpoint.  Supported authentication types are [OAuth 1.0a User "
                        "Context, OAuth 2.0 User Context].",
                        "https://api.twitter.com/2/problems/unsupported-authentication",
                    ),
                    403,
                )
            return "bearer", None
        if scheme == "OAuth":
            try:
                params = {
                    k: oauth_utils.unescape(v)
                    for k, v in oauth_utils.parse_authorization_header(header)
                }
            except ValueError:
                return None, unauthorized
            required = {
                "oauth_consumer_key",
                "oauth_token",
                "oauth_signature",
                "oauth_signature_method",
                "oauth_timestamp",
                "oauth_nonce",
            }
            if not required <= params.keys() or not all(params[k] for k in required):
                return None, unauthorized
            if self.strict_auth and not self._oauth1_valid(request, header, params):
                return "oauth1", unauthorized
            return "oauth1", None
        return None, unauthorized

    def _oauth1_valid(self, request: web.Request, header: str, params: dict[str, str]) -> bool:
        cred = self.credentials
        if (
            params["oauth_consumer_key"] != cred.consumer_key
            or params["oauth_token"] != cred.access_token
            or params["oauth_signature_method"] != "HMAC-SHA1"
        ):
            return False
        collected = oauth_signature.collect_parameters(
            uri_query=request.rel_url.raw_query_string,
            headers={"Authorization": header},
            exclude_oauth_signature=True,
        )
        normalized = oauth_signature.normalize_parameters(collected)
        for origin in (SIGNED_ORIGIN, self.base_url):
            uri = oauth_signature.base_string_uri(origin + request.rel_url.raw_path)
            base = oauth_signature.signature_base_string(request.method, uri, normalized)
            key = f"{oauth_utils.escape(cred.consumer_secret)}&" + oauth_utils.escape(
                cred.access_token_secret
            )
            digest = hmac.new(key.encode(), base.encode(), hashlib.sha1).digest()
            expected = base64.b64encode(digest).decode()
            if hmac.compare_digest(expected, params["oauth_signature"]):
                return True
        return False

    # ---- rendering

    def _render_user(self, user: dict[str, Any], fields: set[str]) -> dict[str, Any]:
        keys = {"id", "name", "username"} | fields
        return {k: v for k, v in user.items() if k in keys}

    def _render_tweet(
        self, tweet: dict[str, Any], fields: set[str], expansions: set[str]
    ) -> dict[str, Any]:
        keys = {"id", "text", "edit_history_tweet_ids"} | fields
        if "author_id" in expansions:
            keys.add("author_id")
        if "in_reply_to_user_id" in expansions:
            keys.add("in_reply_to_user_id")
        if expansions & {"referenced_tweets.id", "referenced_tweets.id.author_id"}:
            keys.add("referenced_tweets")
        if "entities.mentions.username" in expansions:
            keys.add("entities")
        return {k: v for k, v in tweet.items() if k in keys}

    def _tweet_includes(
        self, tweets: list[dict[str, Any]], expansions: set[str], query: Any
    ) -> dict[str, Any]:
        user_fields = _csv(query, "user.fields", USER_FIELDS)
        tweet_fields = _csv(query, "tweet.fields", TWEET_FIELDS)
        user_ids: list[str] = []
        ref_tweets: list[dict[str, Any]] = []
        for t in tweets:
            if "author_id" in expansions:
                user_ids.append(t["author_id"])
            if "in_reply_to_user_id" in expansions and "in_reply_to_user_id" in t:
                user_ids.append(t["in_reply_to_user_id"])
            if "entities.mentions.username" in expansions:
                for ment in t.get("entities", {}).get("mentions", []):
                    u = self.user_by_username(ment["username"])
                    if u is not None:
                        user_ids.append(u["id"])
            for ref in t.get("referenced_tweets", []):
                rt = self.tweets.get(ref["id"])
                if rt is None:
                    continue
                if "referenced_tweets.id" in expansions and rt not in ref_tweets:
                    ref_tweets.append(rt)
                if "referenced_tweets.id.author_id" in expansions:
                    user_ids.append(rt["author_id"])
        includes: dict[str, Any] = {}
        users = [self.users[u] for u in dict.fromkeys(user_ids) if u in self.users]
        if users:
            includes["users"] = [self._render_user(u, user_fields) for u in users]
        if ref_tweets:
            includes["tweets"] = [self._render_tweet(t, tweet_fields, set()) for t in ref_tweets]
        return includes

    def _page(
        self, endpoint: str, items: list[dict[str, Any]], query: Any, token_params: tuple[str, ...]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        low, high, default = _MAX_RESULTS[endpoint]
        raw_max = query.get("max_results")
        size = default
        if raw_max is not None:
            if not raw_max.isdigit() or not low <= int(raw_max) <= high:
                raise _BadRequest(
                    _invalid(
                        "max_results",
                        raw_max,
                        f"The `max_results` query parameter value [{raw_max}] is not between "
                        f"{low} and {high}",
                    )
                )
            size = int(raw_max)
        items = sorted(items, key=lambda t: int(t["id"]), reverse=True)
        for param in token_params:
            token = query.get(param)
            if token is None:
                continue
            cursor = self._tokens.get(token)
            if cursor is None or cursor[0] != endpoint:
                raise _BadRequest(
                    _invalid(
                        param,
                        token,
                        f"The `{param}` query parameter value [{token}] is not valid",
                    )
                )
            items = [t for t in items if int(t["id"]) < cursor[1]]
        page = items[:size]
        meta: dict[str, Any] = {"result_count": len(page)}
        if page and endpoint not in ("dm_events", "dm_conversation_events"):
            meta["newest_id"] = page[0]["id"]
            meta["oldest_id"] = page[-1]["id"]
        if len(items) > size:
            token = secrets.token_hex(16)
            self._tokens[token] = (endpoint, int(page[-1]["id"]))
            meta["next_token"] = token
        return page, meta

    def _tweet_timeline(
        self,
        endpoint: str,
        tweets: list[dict[str, Any]],
        request: web.Request,
        token_params: tuple[str, ...],
    ) -> tuple[int, dict[str, Any]]:
        q = request.query
        fields = _csv(q, "tweet.fields", TWEET_FIELDS)
        _csv(q, "user.fields", USER_FIELDS)
        expansions = _csv(q, "expansions", TWEET_EXPANSIONS)
        for param in ("since_id", "until_id"):
            value = q.get(param)
            if value is None:
                continue
            if not _ID_RE.fullmatch(value):
                raise _BadRequest(
                    _invalid(
                        param,
                        value,
                        f"The `{param}` query parameter value [{value}] does not match "
                        "^[0-9]{1,19}$",
                    )
                )
            bound = int(value)
            tweets = [
                t
                for t in tweets
                if (int(t["id"]) > bound if param == "since_id" else int(t["id"]) < bound)
            ]
        for param in ("start_time", "end_time"):
            value = q.get(param)
            if value is None:
                continue
            try:
                bound_t = _parse_time(value)
            except ValueError:
                raise _BadRequest(
                    _invalid(
                        param,
                        value,
                        f"The `{param}` query parameter value [{value}] is not a valid RFC3339 "
                        "date-time",
                    )
                ) from None
            tweets = [
                t
                for t in tweets
                if (
                    _parse_time(t["created_at"]) >= bound_t
                    if param == "start_time"
                    else _parse_time(t["created_at"]) < bound_t
                )
            ]
        page, meta = self._page(endpoint, tweets, q, token_params)
        body: dict[str, Any] = {}
        if page:
            body["data"] = [self._render_tweet(t, fields, expansions) for t in page]
            includes = self._tweet_includes(page, expansions, q)
            if includes:
                body["includes"] = includes
        body["meta"] = meta
        return 200, body

    # ---- endpoints

    def _h_users_me(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        fields = _csv(request.query, "user.fields", USER_FIELDS)
        _csv(request.query, "tweet.fields", TWEET_FIELDS)
        _csv(request.query, "expansions", USER_EXPANSIONS)
        return 200, {"data": self._render_user(self.users[self.user_id], fields)}

    def _h_mentions(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        uid = params["id"]
        if not _ID_RE.fullmatch(uid):
            raise _BadRequest(
                _invalid(
                    "id",
                    uid,
                    f"The `id` query parameter value [{uid}] does not match ^[0-9]{{1,19}}$",
                )
            )
        if uid not in self.users:
            return 200, {
                "errors": [
                    {
                        "value": uid,
                        "detail": f"Could not find user with id: [{uid}].",
                        "title": "Not Found Error",
                        "resource_type": "user",
                        "parameter": "id",
                        "resource_id": uid,
                        "type": "https://api.twitter.com/2/problems/resource-not-found",
                    }
                ]
            }
        tweets = [self.tweets[t] for t in self._mentions.get(uid, [])]
        return self._tweet_timeline("mentions", tweets, request, ("pagination_token",))

    def _h_search_recent(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        query = request.query.get("query", "")
        if not query.strip():
            raise _BadRequest(
                _invalid("query", query, "The `query` query parameter can not be empty")
            )
        match = self._compile_query(query)
        tweets = [t for t in self.tweets.values() if match(t)]
        return self._tweet_timeline(
            "search_recent", tweets, request, ("next_token", "pagination_token")
        )

    def _dm_listing(
        self, endpoint: str, events: list[dict[str, Any]], request: web.Request
    ) -> tuple[int, dict[str, Any]]:
        q = request.query
        fields = _csv(q, "dm_event.fields", DM_EVENT_FIELDS)
        _csv(q, "user.fields", USER_FIELDS)
        _csv(q, "tweet.fields", TWEET_FIELDS)
        expansions = _csv(q, "expansions", DM_EXPANSIONS)
        types = _csv(q, "event_types", DM_EVENT_TYPES)
        if types:
            events = [e for e in events if e["event_type"] in types]
        page, meta = self._page(endpoint, events, q, ("pagination_token",))
        keys = {"id", "event_type", "text"} | fields
        if "sender_id" in expansions:
            keys.add("sender_id")
        if "participant_ids" in expansions:
            keys.add("participant_ids")
        if "referenced_tweets.id" in expansions:
            keys.add("referenced_tweets")
        body: dict[str, Any] = {}
        if page:
            body["data"] = [{k: v for k, v in e.items() if k in keys} for e in page]
            user_ids: list[str] = []
            ref: list[dict[str, Any]] = []
            for e in page:
                if "sender_id" in expansions:
                    user_ids.append(e["sender_id"])
                if "participant_ids" in expansions:
                    user_ids.extend(e.get("participant_ids", []))
                if "referenced_tweets.id" in expansions:
                    ref.extend(
                        self.tweets[r["id"]]
                        for r in e.get("referenced_tweets", [])
                        if r["id"] in self.tweets
                    )
            includes: dict[str, Any] = {}
            user_fields = _csv(q, "user.fields", USER_FIELDS)
            users = [self.users[u] for u in dict.fromkeys(user_ids) if u in self.users]
            if users:
                includes["users"] = [self._render_user(u, user_fields) for u in users]
            if ref:
                tf = _csv(q, "tweet.fields", TWEET_FIELDS)
                includes["tweets"] = [self._render_tweet(t, tf, set()) for t in ref]
            if includes:
                body["includes"] = includes
        body["meta"] = meta
        return 200, body

    def _h_dm_events(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        return self._dm_listing("dm_events", list(self.dm_events.values()), request)

    def _h_dm_conversation_events(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        conv = params.get("dm_conversation_id") or dm_conversation_id_for(
            params["participant_id"], self.user_id
        )
        events = [e for e in self.dm_events.values() if e["dm_conversation_id"] == conv]
        return self._dm_listing("dm_conversation_events", events, request)

    def _json_body(self, entry: XRequest) -> dict[str, Any]:
        if not isinstance(entry.body, dict):
            raise _BadRequest(
                {
                    "errors": [{"message": "Request body must be a JSON object"}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                }
            )
        return entry.body

    def _h_create_tweet(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        body = self._json_body(entry)
        text = body.get("text")
        if not text and not body.get("media"):
            raise _BadRequest(
                {
                    "errors": [{"message": "$.text: is missing but it is required"}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                }
            )
        reply_to = (body.get("reply") or {}).get("in_reply_to_tweet_id")
        if reply_to is not None and self.strict_replies and str(reply_to) not in self.tweets:
            return 403, _problem(
                403,
                "Forbidden",
                "You attempted to reply to a Tweet that is deleted or not visible to you.",
            )
        if self.reject_duplicate_tweets and any(p.text == text for p in self.posted):
            return 403, _problem(
                403, "Forbidden", "You are not allowed to create a Tweet with duplicate content."
            )
        refs = []
        if body.get("quote_tweet_id"):
            refs.append({"type": "quoted", "id": str(body["quote_tweet_id"])})
        extra = {k: body[k] for k in ("media", "poll", "geo") if k in body}
        tweet = self.add_tweet(
            text or "",
            author_id=self.user_id,
            in_reply_to_tweet_id=reply_to,
            referenced_tweets=refs,
            lang=None,
            **extra,
        )
        self.posted.append(
            PostedTweet(
                id=tweet["id"],
                text=text,
                in_reply_to_tweet_id=None if reply_to is None else str(reply_to),
                body=body,
                at=entry.at,
            )
        )
        return 201, {
            "data": {
                "edit_history_tweet_ids": tweet["edit_history_tweet_ids"],
                "id": tweet["id"],
                "text": tweet["text"],
            }
        }

    def _h_create_dm(
        self, request: web.Request, params: dict[str, str], entry: XRequest
    ) -> tuple[int, dict[str, Any]]:
        body = self._json_body(entry)
        text = body.get("text")
        if not text and not body.get("attachments"):
            raise _BadRequest(
                {
                    "errors": [{"message": "Either `text` or `attachments` is required"}],
                    "title": "Invalid Request",
                    "detail": "One or more parameters to your request was invalid.",
                    "type": "https://api.twitter.com/2/problems/invalid-request",
                }
            )
        participant = params.get("participant_id")
        if participant is not None and not _ID_RE.fullmatch(participant):
            raise _BadRequest(
                _invalid(
                    "participant_id",
                    participant,
                    f"The `participant_id` query parameter value [{participant}] does not match "
                    "^[0-9]{1,19}$",
                )
            )
        conv = params.get("dm_conversation_id") or dm_conversation_id_for(
            str(participant), self.user_id
        )
        event = self.add_dm(
            text,
            sender_id=self.user_id,
            dm_conversation_id=conv,
            attachments=body.get("attachments")
            and {"media_keys": [str(a.get("media_id")) for a in body["attachments"]]},
        )
        self.dms_sent.append(
            SentDM(
                dm_event_id=event["id"],
                dm_conversation_id=conv,
                participant_id=participant,
                text=text,
                body=body,
                at=entry.at,
            )
        )
        return 201, {"data": {"dm_conversation_id": conv, "dm_event_id": event["id"]}}

    # ---- search query language (a practical subset of X's)

    def _compile_query(self, query: str) -> Callable[[dict[str, Any]], bool]:
        groups: list[list[tuple[bool, str]]] = []
        pending_or = False
        for tok in re.findall(r'-?"[^"]*"|\S+', query):
            if tok == "OR":
                pending_or = True
                continue
            tok = tok.strip("()")
            if not tok or tok == "-":
                continue
            neg = tok.startswith("-")
            clause = (neg, tok[1:] if neg else tok)
            if pending_or and groups:
                groups[-1].append(clause)
            else:
                groups.append([clause])
            pending_or = False

        def matches(tweet: dict[str, Any]) -> bool:
            return all(
                any(self._clause(tweet, tok) != neg for neg, tok in group) for group in groups
            )

        return matches

    def _clause(self, tweet: dict[str, Any], tok: str) -> bool:
        text = tweet["text"]
        if tok.startswith('"'):
            return tok.strip('"').lower() in text.lower()
        op, sep, arg = tok.partition(":")
        if sep and arg:
            refs = {r["type"] for r in tweet.get("referenced_tweets", [])}
            if op in ("from", "to"):
                key = "author_id" if op == "from" else "in_reply_to_user_id"
                user = self.users.get(tweet.get(key, ""))
                return user is not None and (
                    user["id"] == arg or user["username"].lower() == arg.lstrip("@").lower()
                )
            if op == "is":
                if arg == "retweet":
                    return "retweeted" in refs or text.startswith("RT @")
                return {"reply": "replied_to", "quote": "quoted"}.get(arg, arg) in refs
            if op == "conversation_id":
                return tweet.get("conversation_id") == arg
            if op == "lang":
                return tweet.get("lang") == arg
        return re.search(r"(?<!\w)" + re.escape(tok) + r"(?!\w)", text, re.IGNORECASE) is not None


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


@pytest_asyncio.fixture
async def x_emulator() -> AsyncIterator[XEmulator]:
    """A started ``XEmulator`` with the recorded fixtures (function-scoped); stopped after."""
    emulator = XEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
