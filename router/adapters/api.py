"""The generic JSON API: ``POST /v1/messages`` in; replies out by a webhook
callback, or kept for ``GET /v1/conversations/{id}/replies`` when none is set.

Request (``Authorization: Bearer <token>``)::

    {"from": "ana@example.com", "text": "My order has not arrived",
     "channel": "api", "id": "ticket-123", "subject": "...", "name": "Ana",
     "hints": {"language": "pt", "locale": "pt-BR", "timezone": "America/Sao_Paulo",
               "country": "BR"},
     "identities": ["+5511987654321"], "references": ["ticket-100"]}

``identities`` are further identities of the sender that you have verified
(they tie profiles together); ``references`` are your ids of earlier
messages this one answers (they thread it into that conversation).

Answers: ``202 {"id", "duplicate"}`` once the message is stored durably;
``400`` bad JSON / fields, ``401`` bad token, ``413`` too large, ``503`` when
it cannot be stored (retry later; never a 202 then). ``id`` is the caller's
own id and the deduplication key: sending the same id again is harmless.

``GET /v1/conversations/{conversation_id}/replies[?after=POS&limit=N]`` (same
token) answers ``200 {"conversation_id", "replies": [...], "next": POS}``:
the replies sent on the ``api`` channel, oldest first (the newest ``limit``,
or those after ``after``; pass ``next`` back as ``after`` to poll). Each
reply returned counts as delivered. ``404`` for an unknown conversation.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from redis.exceptions import RedisError

from router.adapters.base import (
    AdapterContext,
    Channel,
    IngestFn,
    Limits,
    PermanentSendError,
)
from router.config import ApiChannelSettings, Config
from router.ingest import StoreUnavailable
from router.metrics import Metrics
from router.model import Hints, InboundMessage, OutboundMessage
from router.profiles.identity import normalise_identity
from router.store import Store

log = structlog.get_logger("router.api")

_CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")  # (fullmatch: "$" would let "api\n" in)
# Control characters (C0, DEL, C1) and the Unicode line and paragraph separators:
# refused in every field that names someone or something, as they would reach a
# Redis key (an identity, a dedup key), a log line or an e-mail header. The
# message text keeps its newlines and tabs.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_FIELDS = {
    "from",
    "text",
    "channel",
    "id",
    "subject",
    "name",
    "hints",
    "identities",
    "references",
}
_HINTS = {"language", "locale", "timezone", "country"}
MAX_ID_CHARS = 256
# GET .../replies: at most this many replies per answer, found among at most
# this many timeline entries (a long conversation is read in pages).
REPLIES_LIMIT = 100
REPLIES_SCAN = 1000
_POSITION_RE = re.compile(r"\d{1,20}-\d{1,20}")  # (fullmatch)
# Delivery states a reply does not leave by itself (failed: dead-lettered).
_SETTLED = frozenset({"sent", "delivered", "failed"})  # (or expired: an empty hash)


class BadRequest(ValueError):
    """The request body is not a valid message; the text says why."""


def _no_control(name: str, value: str) -> str:
    """``value``, or BadRequest naming the field and the first control character in it."""
    found = _CONTROL_RE.search(value)
    if found is not None:
        raise BadRequest(
            f"field {name!r} must not contain control characters "
            f"(U+{ord(found.group()):04X} at position {found.start()})"
        )
    return value


def _string_list(data: dict[str, Any], name: str, most: int, longest: int) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f"field {name!r} must be a list of non-empty strings")
    if len(value) > most or any(len(v) > longest for v in value):
        raise BadRequest(f"field {name!r}: at most {most} strings of {longest} characters")
    return [_no_control(name, v).strip() for v in value]


def json_response(data: Any, status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers or None,
    )


def error(status: int, message: str, **headers: str) -> web.Response:
    return json_response({"error": message}, status, **headers)


def parse_message(body: bytes, max_text_chars: int) -> InboundMessage:
    """Validate a request body and build the normalised message from it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    unknown = set(data) - _FIELDS
    if unknown:
        raise BadRequest(
            f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_FIELDS))}"
        )

    def text_field(
        name: str, required: bool = False, limit: int = 1000, control: bool = False
    ) -> str | None:
        value = data.get(name)
        if value is None:
            if required:
                raise BadRequest(f"field {name!r} is required")
            return None
        if isinstance(value, int) and not isinstance(value, bool) and name == "id":
            value = str(value)
        if not isinstance(value, str):
            raise BadRequest(f"field {name!r} must be a string, not {type(value).__name__}")
        if required and not value.strip():
            raise BadRequest(f"field {name!r} must not be empty")
        if len(value) > limit:
            raise BadRequest(f"field {name!r} is {len(value)} characters; the limit is {limit}")
        return value if control else _no_control(name, value)

    sender = text_field("from", required=True, limit=320)
    text = text_field("text", required=True, limit=max_text_chars, control=True)
    channel = text_field("channel") or "api"
    if not _CHANNEL_RE.fullmatch(channel):
        raise BadRequest("field 'channel' must be 1-32 of a-z 0-9 _ -")
    source_id = text_field("id", limit=MAX_ID_CHARS)
    if source_id is not None and not source_id.strip():
        raise BadRequest("field 'id' must not be empty when given")
    hints_in = data.get("hints") or {}
    if not isinstance(hints_in, dict):
        raise BadRequest("field 'hints' must be an object")
    bad = set(hints_in) - _HINTS
    if bad:
        raise BadRequest(f"unknown hint(s) {', '.join(sorted(bad))}; allowed: {sorted(_HINTS)}")
    for k, v in hints_in.items():
        if v is not None and (not isinstance(v, str) or len(v) > 64):
            raise BadRequest(f"hint {k!r} must be a short string")
        if v is not None:
            _no_control(f"hints.{k}", v)
    assert sender is not None and text is not None
    identities = _string_list(data, "identities", 10, 320)
    references = _string_list(data, "references", 20, MAX_ID_CHARS)
    return InboundMessage(
        identities=[normalise_identity(i, "api") for i in identities],
        references=references,
        channel=channel,
        sender=normalise_identity(sender, channel),
        text=text,
        source_id=source_id,
        subject=text_field("subject", limit=998),
        display_name=text_field("name", limit=200),
        hints=Hints(**hints_in),
    )


def _iso(ts: str | None) -> str | None:
    return datetime.fromtimestamp(float(ts), UTC).isoformat() if ts else None


class ApiAdapter:
    """Serves ``POST /v1/messages`` and ``GET /v1/conversations/{id}/replies``."""

    name = "api"

    def __init__(
        self,
        get_config: Callable[[], Config],
        ingest: IngestFn,
        metrics: Metrics,
        accepting: Callable[[], bool],
        store: Store | None = None,
    ) -> None:
        """The adapter over a whole config (a standalone use: tests, tools);
        the daemon builds it with :func:`factory` from the API's own settings."""
        self._setup(
            lambda: get_config().channels.api,
            lambda: limits_of(get_config()),
            ingest,
            metrics,
            accepting,
            store,
            lambda: Store.open(get_config()),
        )

    @classmethod
    def from_settings(
        cls,
        settings: Callable[[], ApiChannelSettings],
        ctx: AdapterContext,
        metrics: Metrics,
        store: Store,
    ) -> ApiAdapter:
        """The adapter over the API's own settings and the daemon's shared context."""
        adapter = cls.__new__(cls)
        adapter._setup(settings, ctx.limits, ctx.ingest, metrics, ctx.accepting, store, None)
        return adapter

    def _setup(
        self,
        settings: Callable[[], ApiChannelSettings],
        limits: Callable[[], Limits],
        ingest: IngestFn,
        metrics: Metrics,
        accepting: Callable[[], bool],
        store: Store | None,
        open_store: Callable[[], Store] | None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.ingest = ingest
        self.metrics = metrics
        self.accepting = accepting
        self._token: tuple[ApiChannelSettings | None, bytes] = (None, b"")
        # Redis for reading replies: the daemon's own store when given, else
        # one opened on the first GET (and closed when run returns).
        self._store: Store | None = store
        self._open_store = open_store

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/messages", self.post_message),
            web.get("/v1/conversations/{conversation_id}/replies", self.get_replies),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Close the Redis connection this adapter opened itself (if it did)."""
        if self._store is not None and self._open_store is not None:
            await self._store.close()
            self._store = None

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    def _refused(self, request: web.Request) -> web.Response | None:
        """The answer to a request without the API's bearer token (None: let it in)."""
        api = self.settings()
        if not api.enabled or api.token is None:
            return error(404, "the generic API is disabled (channels.api.enabled: false)")
        if self._token[0] is not api:  # reading a Secret is slow; once per config
            self._token = (api, api.token.value.encode())
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._token[1]
        ):
            return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        return None

    async def post_message(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        limits = self.limits()
        limit = limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"body is {request.content_length} bytes; the limit is {limit}")
        if not self.accepting():
            return error(503, "the daemon is shutting down; retry", **{"Retry-After": "5"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body is over the limit of {limit} bytes")
        try:
            message = parse_message(body, limits.max_text_chars)
        except BadRequest as exc:
            return error(400, str(exc))
        try:
            result = await self.ingest(message)
        except StoreUnavailable:  # (logged and counted by the ingestor)
            return error(503, "cannot store the message right now; retry", **{"Retry-After": "5"})
        self.metrics.child(
            self.metrics.messages_in, message.channel, "duplicate" if result.duplicate else "new"
        ).inc()
        return json_response({"id": result.id, "duplicate": result.duplicate}, 202)

    async def get_replies(self, request: web.Request) -> web.Response:
        """The replies sent to a conversation on the api channel (see the module doc)."""
        if (refused := self._refused(request)) is not None:
            return refused
        conversation_id = request.match_info["conversation_id"]
        after = request.query.get("after", "")
        if after and not _POSITION_RE.fullmatch(after):
            return error(400, "'after' must be a 'next' value from an earlier answer")
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= REPLIES_LIMIT:
            return error(400, f"'limit' must be a whole number from 1 to {REPLIES_LIMIT}")
        if self._store is None:
            assert self._open_store is not None
            self._store = self._open_store()
        try:
            body = await self._replies(self._store, conversation_id, after, limit)
        except (RedisError, OSError):
            return error(503, "cannot read replies right now; retry", **{"Retry-After": "5"})
        if body is None:
            return error(404, f"conversation {conversation_id} does not exist (or has expired)")
        return json_response(body)

    @staticmethod
    async def _replies(
        store: Store, conversation_id: str, after: str, limit: int
    ) -> dict[str, Any] | None:
        keys, redis = store.keys, store.redis
        if not await redis.exists(keys.conversation(conversation_id)):
            return None
        timeline = keys.timeline(conversation_id)
        if after:  # polling: what came after the last answer, oldest first
            entries = await redis.xrange(timeline, f"({after}", "+", count=REPLIES_SCAN)
        else:  # the newest
            entries = (await redis.xrevrange(timeline, "+", "-", count=REPLIES_SCAN))[::-1]
        outbound = [
            (n, f["outbox_id"])
            for n, (_, f) in enumerate(entries)
            if f.get("direction") == "out" and f.get("channel") == "api" and f.get("outbox_id")
        ]
        pipe = redis.pipeline(transaction=False)
        for _, outbox_id in outbound:
            pipe.hgetall(keys.delivery(outbox_id))
        deliveries = dict(zip((n for n, _ in outbound), await pipe.execute(), strict=True))
        # A reply the outbox has not sent yet ends what this answer covers, so
        # a poller's next "after" never skips it.
        stop = next(
            (n for n, d in deliveries.items() if d and d.get("status") not in _SETTLED),
            len(entries),
        )
        sent = [
            (entries[n][0], d)
            for n, d in sorted(deliveries.items())
            if n < stop and d.get("status") in ("sent", "delivered")
        ]
        if after:
            found = sent[:limit]
            last = found[-1][0] if len(sent) > limit else entries[stop - 1][0] if stop else after
        else:
            found = sent[-limit:]
            last = entries[stop - 1][0] if stop else ""
        now = f"{time.time():.3f}"
        pipe = redis.pipeline(transaction=False)
        for _, d in found:
            if d["status"] == "sent":  # the customer's system has it now
                pipe.hset(
                    keys.delivery(d["id"]), mapping={"status": "delivered", "delivered_at": now}
                )
                d["status"], d["delivered_at"] = "delivered", now
        await pipe.execute()
        return {
            "conversation_id": conversation_id,
            "replies": [
                {
                    "id": d.get("id"),
                    "kind": d.get("kind"),
                    "agent": d.get("agent") or None,
                    "text": d.get("text"),
                    "sent_at": _iso(d.get("sent_at")),
                }
                for _, d in found
            ],
            "next": last or None,
        }


class ApiCallbackSender:
    """Delivers replies on the ``api`` channel by POSTing them to a callback URL.

    The body is the reply as JSON; ``Idempotency-Key`` is the outbox id (a
    retry after a timeout may deliver twice: deduplicate on it), and with a
    secret ``X-Router-Signature: sha256=<hex HMAC of the body>``.

    Without ``channels.api.callback`` a reply is kept where it already is (its
    delivery record and the conversation's timeline, for
    ``message_retention``) for the caller to pull with
    ``GET /v1/conversations/{id}/replies``; the pull marks it delivered.
    """

    channel = "api"

    def __init__(self, get_config: Callable[[], Config]) -> None:
        """The sender over a whole config (standalone use: tests, tools)."""
        self.settings: Callable[[], ApiChannelSettings] = lambda: get_config().channels.api
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Callable[[], ApiChannelSettings]) -> ApiCallbackSender:
        """The sender over the API's own settings (what the daemon uses)."""
        sender = cls.__new__(cls)
        sender.settings = settings
        sender._session = None
        return sender

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, message: OutboundMessage) -> str:
        callback = self.settings().callback
        if callback is None:  # kept for GET /v1/conversations/{id}/replies
            return ""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        payload: dict[str, Any] = {
            "id": message.id,
            "conversation_id": message.conversation_id,
            "to": message.to,
            "text": message.text,
            "subject": message.subject,
            "in_reply_to": message.in_reply_to,
            "agent": message.agent,
            "kind": message.kind,
        }
        body = orjson.dumps(payload)
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.id}
        if callback.secret is not None:
            digest = hmac.new(callback.secret.value.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Router-Signature"] = f"sha256={digest}"
        async with self._session.post(
            callback.url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=callback.timeout),
        ) as resp:
            if 200 <= resp.status < 300:
                return resp.headers.get("X-Request-Id", "")
            text = (await resp.text())[:200]
            if 400 <= resp.status < 500 and resp.status not in (408, 425, 429):
                raise PermanentSendError(f"callback answered {resp.status}: {text}")
            raise RuntimeError(f"callback answered {resp.status}: {text}")


def limits_of(cfg: Config) -> Limits:
    """The daemon-wide limits adapters honour, from a whole config."""
    return Limits(
        max_body_bytes=cfg.http.max_body_bytes,
        max_text_chars=cfg.ingest.max_text_chars,
        message_retention=float(cfg.routing.message_retention),
    )


def factory(
    settings: Callable[[], ApiChannelSettings],
    ctx: AdapterContext,
    public_url: Callable[[], str | None],
) -> Channel[ApiChannelSettings]:
    """The generic API: ``POST /v1/messages`` in, callbacks (or pulls) out."""
    assert ctx.store is not None and ctx.metrics is not None
    sender = ApiCallbackSender.from_settings(settings)
    return Channel(
        adapter=ApiAdapter.from_settings(settings, ctx, ctx.metrics, ctx.store),
        senders={"api": sender},
        # replies go out only to a callback (pulled replies are not "sent")
        sends=lambda api: frozenset({"api"}) if api.callback else frozenset(),
        restart_only=(),
        closers=[sender.close],
    )
