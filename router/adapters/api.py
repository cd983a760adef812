"""The generic JSON API: ``POST /v1/messages`` in, a webhook callback out.

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
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web

from router.adapters.base import IngestFn, PermanentSendError
from router.config import Config
from router.ingest import StoreUnavailable
from router.metrics import Metrics
from router.model import Hints, InboundMessage, OutboundMessage
from router.profiles.identity import normalise_identity

log = structlog.get_logger("router.api")

_CHANNEL_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
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


class BadRequest(ValueError):
    """The request body is not a valid message; the text says why."""


def _string_list(data: dict[str, Any], name: str, most: int, longest: int) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f"field {name!r} must be a list of non-empty strings")
    if len(value) > most or any(len(v) > longest for v in value):
        raise BadRequest(f"field {name!r}: at most {most} strings of {longest} characters")
    return [v.strip() for v in value]


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

    def text_field(name: str, required: bool = False, limit: int = 1000) -> str | None:
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
        return value

    sender = text_field("from", required=True, limit=320)
    text = text_field("text", required=True, limit=max_text_chars)
    channel = text_field("channel") or "api"
    if not _CHANNEL_RE.match(channel):
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


class ApiAdapter:
    """Serves ``POST /v1/messages``."""

    name = "api"

    def __init__(
        self,
        get_config: Callable[[], Config],
        ingest: IngestFn,
        metrics: Metrics,
        accepting: Callable[[], bool],
    ) -> None:
        self.get_config = get_config
        self.ingest = ingest
        self.metrics = metrics
        self.accepting = accepting
        self._token: tuple[Config | None, bytes] = (None, b"")

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self.post_message)]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    async def post_message(self, request: web.Request) -> web.Response:
        cfg = self.get_config()
        api = cfg.channels.api
        if not api.enabled or api.token is None:
            return error(404, "the generic API is disabled (channels.api.enabled: false)")
        if self._token[0] is not cfg:  # reading a Secret is slow; once per config
            self._token = (cfg, api.token.value.encode())
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self._token[1]
        ):
            return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        limit = cfg.http.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return error(413, f"body is {request.content_length} bytes; the limit is {limit}")
        if not self.accepting():
            return error(503, "the daemon is shutting down; retry", **{"Retry-After": "5"})
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return error(413, f"body is over the limit of {limit} bytes")
        try:
            message = parse_message(body, cfg.ingest.max_text_chars)
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


class ApiCallbackSender:
    """Delivers replies on the ``api`` channel by POSTing them to a callback URL.

    The body is the reply as JSON; ``Idempotency-Key`` is the outbox id (a
    retry after a timeout may deliver twice: deduplicate on it), and with a
    secret ``X-Router-Signature: sha256=<hex HMAC of the body>``.
    """

    channel = "api"

    def __init__(self, get_config: Callable[[], Config]) -> None:
        self.get_config = get_config
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, message: OutboundMessage) -> str:
        callback = self.get_config().channels.api.callback
        if callback is None:
            raise PermanentSendError(
                "channels.api.callback is not configured, so api replies have nowhere to go"
            )
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
