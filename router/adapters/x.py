"""X (Twitter): mentions, brand search and direct messages, polled with tweepy.

Inbound
    Every ``poll_interval`` the daemon that holds the account's lease (so
    several daemons can run side by side, one polls) asks for mentions of
    the support account newer than its ``since_id`` cursor, the newest
    direct-message events (that endpoint has no since_id: events are
    deduplicated by their id) and, optionally, posts matching a brand
    search. Each post or DM becomes a message (identity: the X user id,
    not the handle; ``lang`` as a hint; the X conversation id or DM
    conversation threads it; ``meta.kind`` says mention, search or dm, which
    rules match with ``when: {source: [...]}``). A brand-search hit is someone
    who merely names the brand: it is marked ``unsolicited`` and routed for a
    person to decide, never answered automatically (that answer would be
    public). A cursor moves only after every message up to it is durably
    stored, so a restart neither loses nor repeats posts.

Rate limits
    ``x-rate-limit-remaining`` / ``-reset`` are read on every answer: an
    endpoint with no requests left, or answering 429, is not asked again
    before its reset (and no later); 5xx and network errors back off
    exponentially. Nothing spins. The state is on ``/readyz`` and
    ``/metrics``.

Outbound
    Channel ``x`` replies publicly to the customer's latest post (an
    automatic acknowledgement is a short note inviting them to DM);
    channel ``x_dm`` sends a direct message.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from tweepy.asynchronous import AsyncClient
from tweepy.errors import HTTPException, TooManyRequests, TwitterServerError

from router.adapters.base import AdapterContext, Channel, PermanentSendError, run_until
from router.config import XSettings
from router.ingest import StoreUnavailable
from router.model import Hints, Identity, InboundMessage, OutboundMessage

log = structlog.get_logger("router.x")

TWEET_FIELDS = [
    "author_id",
    "conversation_id",
    "created_at",
    "lang",
    "referenced_tweets",
    "in_reply_to_user_id",
]
DM_FIELDS = ["id", "text", "sender_id", "dm_conversation_id", "created_at", "event_type"]
UNDETERMINED = {"und", "qam", "qct", "qht", "qme", "qst", "zxx", "art"}
MAX_PAGES = 10  # per poll and endpoint; the rest comes next poll
TWEET_LIMIT = 280
# X ids are decimal snowflakes (64-bit); a DM conversation id is two of them.
# Anything else in an answer is refused: it would become a Redis key (identity,
# dedup, cursor), reach log lines, and an id int() cannot read would fail
# every poll from then on.
_ID_RE = re.compile(r"[0-9]{1,20}")
_DM_CONVERSATION_RE = re.compile(r"[0-9]{1,20}(?:-[0-9]{1,20})?")

# A public answer to a mention is short and invites the customer to DM.
PUBLIC_ACKS = {
    "en": "Thanks for reaching out! We're on it. Please send us a DM with the details so "
    "we can help.",
    "es": "¡Gracias por escribirnos! Ya lo estamos revisando. Envíanos un mensaje directo "
    "con los detalles para ayudarte.",
    "pt": "Obrigado pelo contato! Já estamos vendo isso. Mande uma mensagem direta com os "
    "detalhes para podermos ajudar.",
    "hi": "संपर्क करने के लिए धन्यवाद! हम इस पर काम कर रहे हैं। कृपया विवरण के साथ हमें DM भेजें।",
    "te": "సంప్రదించినందుకు ధన్యవాదాలు! మేము దీనిపై పని చేస్తున్నాము. దయచేసి వివరాలతో మాకు DM పంపండి.",
    "gu": "સંપર્ક કરવા બદલ આભાર! અમે આ પર કામ કરી રહ્યા છીએ. કૃપા કરીને વિગતો સાથે અમને DM મોકલો.",
    "lv": "Paldies, ka sazinājāties! Mēs to risinām. Lūdzu, atsūtiet mums ziņu ar "
    "sīkāku informāciju.",
    "ru": "Спасибо, что написали! Мы уже разбираемся. Пожалуйста, пришлите нам личное "
    "сообщение с подробностями.",
    "ja": "ご連絡ありがとうございます。確認しております。詳細をDMでお送りください。",
}


def redirect_session(base_url: str) -> aiohttp.ClientSession:
    """An aiohttp session that sends tweepy's requests (whose host is fixed
    to api.twitter.com) to ``base_url`` instead, path and query kept."""
    from yarl import URL

    target = URL(base_url)

    async def rewrite(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        request.url = (
            request.url.with_scheme(target.scheme)
            .with_host(target.host or "")
            .with_port(target.port)
        )
        return await handler(request)

    return aiohttp.ClientSession(middlewares=(rewrite,))


class RateLimits:
    """When each X endpoint may be asked again."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}

    def wait(self, endpoint: str, now: float) -> float:
        return max(0.0, self.until.get(endpoint, 0.0) - now)

    def observe(self, endpoint: str, headers: Any, now: float, limited: bool = False) -> None:
        remaining = headers.get("x-rate-limit-remaining") if headers else None
        reset = headers.get("x-rate-limit-reset") if headers else None
        if reset is not None and (limited or remaining == "0"):
            # the reset is in whole seconds; a little margin for clock skew
            self.until[endpoint] = float(reset) + 1.0
        elif limited:
            self.until[endpoint] = now + 60.0
        else:
            self.until.pop(endpoint, None)


class XAdapter:
    """Polls the support account's mentions, DMs and brand search."""

    name = "x"

    def __init__(self, settings: Callable[[], XSettings], ctx: AdapterContext) -> None:
        self._settings = settings
        self.ctx = ctx
        self.limits = RateLimits()
        self.failures = 0
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.polling = False  # this daemon holds the lease
        self.polls = 0
        self._client: AsyncClient | None = None
        self._wake = asyncio.Event()

    @property
    def settings(self) -> XSettings:
        return self._settings()

    def routes(self) -> list[Any]:
        return []

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` (a poll in flight is cancelled: its cursor did not move)."""
        self._client = make_client(self.settings)
        try:
            await run_until(stop, {"x-poller": self._run()})
        finally:
            if self._client.session is not None:
                await self._client.session.close()

    def gauges(self) -> dict[str, float]:
        """For /metrics: polling or not, failures in a row, seconds of rate-limit wait."""
        now = time.time()
        return {
            "polling": float(self.polling),
            "consecutive_failures": float(self.failures),
            "polls": float(self.polls),
            **{
                f"rate_limited_seconds_{e}": self.limits.wait(e, now)
                for e in ("mentions", "dm", "search")
            },
        }

    def ready(self) -> tuple[bool, str]:
        if not self.polling:
            return True, "standby (another daemon polls)"
        if self.failures >= 3:
            return False, f"failing: {self.last_error}"
        limited = self.limits.wait("mentions", time.time())
        if limited:
            return True, f"rate limited, next poll in {limited:.0f}s"
        return True, "ok"

    # -- the loop -------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            x = self.settings
            pause = x.poll_interval
            try:
                self.polling = await self.ctx.state.lease("poll-lease", self.ctx.node, x.lease_ttl)
                if self.polling:
                    await self.poll_once()
                    self.failures, self.last_ok = 0, time.time()
            except StoreUnavailable as exc:
                self.failures += 1
                self.last_error = f"Redis: {exc}"
                pause = min(300.0, 5.0 * 2**self.failures)
            except (TwitterServerError, aiohttp.ClientError, TimeoutError) as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                # exponential backoff with jitter; never faster than the poll interval
                pause = max(x.poll_interval, min(900.0, 2.0**self.failures)) * random.uniform(
                    0.9, 1.1
                )
                log.warning(
                    "x_poll_failed",
                    error=self.last_error,
                    retry_in_s=round(pause),
                    action="backing off; X or the network is failing",
                )
            except HTTPException as exc:  # 401/403: credentials; nothing will change soon
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                pause = 300.0
                log.error(
                    "x_poll_refused",
                    error=self.last_error,
                    action="check the X credentials and the account's access level",
                )
            except Exception as exc:  # anything else: back off, never stop polling
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                pause = max(x.poll_interval, min(900.0, 2.0**self.failures))
                log.exception(
                    "x_poll_error",
                    error=self.last_error,
                    retry_in_s=round(pause),
                    action="polling goes on after the pause; report this if it repeats",
                )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    async def poll_once(self) -> int:
        """One round: mentions, DMs, search. Returns how many messages were stored."""
        self.polls += 1
        x = self.settings
        stored = await self._tweets("mentions", "mention", x.account_id)
        if x.direct_messages:
            stored += await self._dms()
        if x.search_query:
            stored += await self._tweets("search", "search", x.search_query)
        return stored

    async def _call(self, endpoint: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """One API call, respecting the endpoint's rate limit; the JSON body or None."""
        now = time.time()
        if self.limits.wait(endpoint, now) > 0:
            return None  # not before its reset
        try:
            response = await fn(*args, **kwargs)
        except TooManyRequests as exc:
            self.limits.observe(endpoint, exc.response.headers, now, limited=True)
            log.warning(
                "x_rate_limited",
                endpoint=endpoint,
                resume_in_s=round(self.limits.wait(endpoint, time.time())),
                action="waiting for the reset X announced; nothing to do",
            )
            return None
        self.limits.observe(endpoint, response.headers, now)
        return await response.json()

    async def _tweets(self, endpoint: str, kind: str, subject: str) -> int:
        """Mentions of the account (or search results) newer than the cursor."""
        assert self._client is not None
        cursor = await self.ctx.state.get(f"cursor:{endpoint}")
        pages: list[dict[str, Any]] = []
        token = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = dict(
                tweet_fields=TWEET_FIELDS,
                expansions=["author_id"],
                user_fields=["username", "name"],
                max_results=100,
            )
            if cursor:
                params["since_id"] = cursor
            if token:
                params["pagination_token"] = token
            if endpoint == "mentions":
                body = await self._call(
                    endpoint, self._client.get_users_mentions, subject, **params
                )
            else:
                body = await self._call(
                    endpoint, self._client.search_recent_tweets, subject, **params
                )
            if body is None:
                break
            pages.append(body)
            token = (body.get("meta") or {}).get("next_token")
            if not token or not cursor:
                break  # the first poll starts from the newest page only
        if not pages:
            return 0
        users = {u["id"]: u for p in pages for u in (p.get("includes") or {}).get("users", [])}
        tweets = [
            t for p in pages for t in p.get("data") or [] if _usable(endpoint, t, "id", "author_id")
        ]
        stored = 0
        for tweet in sorted(tweets, key=lambda t: int(t["id"])):  # oldest first
            if tweet.get("author_id") == self.settings.account_id:
                continue  # our own posts
            await self._store(tweet_message(tweet, users.get(tweet.get("author_id", ""), {}), kind))
            stored += 1
        newest = (pages[0].get("meta") or {}).get("newest_id")
        if not (isinstance(newest, str) and _ID_RE.fullmatch(newest)):
            newest = max((t["id"] for t in tweets), key=int, default=None)
        if newest and (not cursor or int(newest) > int(cursor)):
            await self.ctx.state.put(f"cursor:{endpoint}", newest)
        return stored

    async def _dms(self) -> int:
        """DM events newest first, down to the newest one already seen."""
        assert self._client is not None
        seen = await self.ctx.state.get("cursor:dm")
        body = await self._call(
            "dm",
            self._client.get_direct_message_events,
            dm_event_fields=DM_FIELDS,
            event_types="MessageCreate",
            expansions=["sender_id"],
            user_fields=["username", "name"],
            max_results=100,
            user_auth=True,
        )
        if body is None:
            return 0
        users = {u["id"]: u for u in (body.get("includes") or {}).get("users", [])}
        fresh = []
        for event in body.get("data") or []:
            if not _usable("dm", event, "id", "sender_id"):
                continue
            if seen and int(event["id"]) <= int(seen):
                break
            fresh.append(event)
        stored = 0
        for event in sorted(fresh, key=lambda e: int(e["id"])):
            if event.get("sender_id") == self.settings.account_id or "text" not in event:
                continue
            await self._store(dm_message(event, users.get(event.get("sender_id", ""), {})))
            stored += 1
        if fresh:
            newest = max(fresh, key=lambda e: int(e["id"]))["id"]
            await self.ctx.state.put("cursor:dm", newest)
        return stored

    async def _store(self, message: InboundMessage) -> None:
        """Durably, or raise (the cursor must not move past it)."""
        await self.ctx.ingest(message)


def _usable(endpoint: str, item: dict[str, Any], *id_fields: str) -> bool:
    """Whether a post's or DM's ids are X ids; if not, one log line and it is skipped."""
    bad = [f for f in id_fields if not (isinstance(v := item.get(f), str) and _ID_RE.fullmatch(v))]
    if bad:
        log.warning(
            "x_item_skipped",
            endpoint=endpoint,
            fields=bad,
            # ascii(): escaped, so no control character reaches the journal
            values=[ascii(item.get(f))[:40] for f in bad],
            action="skipped: X answered an id that is not a number; nothing to do",
        )
    return not bad


def tweet_message(tweet: dict[str, Any], user: dict[str, Any], kind: str) -> InboundMessage:
    lang = tweet.get("lang")
    ids = [tweet.get("conversation_id")] + [
        r.get("id") for r in tweet.get("referenced_tweets") or []
    ]
    references = [r for r in ids if isinstance(r, str) and _ID_RE.fullmatch(r)]
    return InboundMessage(
        channel="x",
        sender=Identity("x", tweet.get("author_id", "")),
        text=tweet.get("text", ""),
        source_id=tweet["id"],
        display_name=user.get("name"),
        references=references,
        hints=Hints(language=None if not lang or lang in UNDETERMINED else lang),
        meta={
            "username": user.get("username", ""),
            "kind": kind,
            "public": "true",
            "created_at": tweet.get("created_at", ""),
            # they named the brand without writing to us: no automatic (public) answer
            **({"unsolicited": "true"} if kind == "search" else {}),
        },
    )


def dm_message(event: dict[str, Any], user: dict[str, Any]) -> InboundMessage:
    conversation = str(event.get("dm_conversation_id") or "")
    return InboundMessage(
        channel="x_dm",
        sender=Identity("x", event.get("sender_id", "")),
        text=event.get("text", ""),
        source_id=event["id"],
        display_name=user.get("name"),
        references=[conversation] if _DM_CONVERSATION_RE.fullmatch(conversation) else [],
        meta={
            "username": user.get("username", ""),
            "kind": "dm",
            "public": "false",
            "created_at": event.get("created_at", ""),
        },
    )


def make_client(x: XSettings) -> AsyncClient:
    def secret(s: Any) -> str | None:
        return s.value if s is not None else None

    client = AsyncClient(
        bearer_token=secret(x.bearer_token),
        consumer_key=secret(x.consumer_key),
        consumer_secret=secret(x.consumer_secret),
        access_token=secret(x.access_token),
        access_token_secret=secret(x.access_token_secret),
        return_type=aiohttp.ClientResponse,
        wait_on_rate_limit=False,  # we wait ourselves, without blocking other endpoints
    )
    # tweepy uses client.session when set; without a redirect it is a plain session
    client.session = (
        redirect_session(x.api_base_url)
        if x.api_base_url.rstrip("/") != "https://api.twitter.com"
        else aiohttp.ClientSession()
    )
    return client


X_CHANNELS = ("x", "x_dm")


class XSender:
    """Replies on X: public replies (channel ``x``) and DMs (``x_dm``)."""

    def __init__(self, channel: str, settings: Callable[[], XSettings]) -> None:
        self.channel = channel
        self.settings = settings
        self._client: AsyncClient | None = None

    async def send(self, message: OutboundMessage) -> str:
        x = self.settings()
        if not x.enabled:
            raise PermanentSendError("the x channel is not enabled")
        if self._client is None:
            self._client = make_client(x)
        try:
            if message.channel == "x_dm":
                response = await self._client.create_direct_message(
                    participant_id=message.to, text=message.text, user_auth=True
                )
                return str((await response.json())["data"]["dm_event_id"])
            text = message.text
            if message.kind == "ack":  # in public: short, and move to DMs
                text = PUBLIC_ACKS.get(message.meta.get("language", ""), PUBLIC_ACKS["en"])
            ids = []
            reply_to = message.in_reply_to
            for part in _thread(text):
                response = await self._client.create_tweet(
                    text=part, in_reply_to_tweet_id=reply_to, user_auth=True
                )
                reply_to = str((await response.json())["data"]["id"])
                ids.append(reply_to)
            return ",".join(ids)
        except TooManyRequests as exc:
            raise RuntimeError("X rate limit reached; retrying later") from exc
        except TwitterServerError as exc:
            raise RuntimeError(f"X answered {exc.response.status}") from exc
        except HTTPException as exc:
            raise PermanentSendError(f"X refused it: {exc}") from None

    async def close(self) -> None:
        if self._client is not None and self._client.session is not None:
            await self._client.session.close()


def _thread(text: str, limit: int = TWEET_LIMIT) -> list[str]:
    """A long public reply as a thread of posts, cut at word boundaries."""
    words, parts, cur = text.split(), [], ""
    for w in words:
        if len(cur) + len(w) + 1 > limit:
            parts.append(cur)
            cur = w[:limit]
        else:
            cur = f"{cur} {w}".strip()
    if cur:
        parts.append(cur)
    return parts or [text[:limit]]


def factory(
    settings: Callable[[], XSettings],
    ctx: AdapterContext,
    public_url: Callable[[], str | None],
) -> Channel[XSettings]:
    """X: mentions, DMs and brand search polled in; replies and DMs out."""
    senders = {channel: XSender(channel, settings) for channel in X_CHANNELS}
    return Channel(
        adapter=XAdapter(settings, ctx),
        senders=dict(senders),
        closers=[s.close for s in senders.values()],
    )
