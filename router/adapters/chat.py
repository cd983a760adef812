"""Web chat: a WebSocket endpoint, an embeddable widget, replies pushed live.

Protocol (JSON text frames, documented in docs/chat-protocol.md):

visitor -> daemon
    ``{"type": "hello", "token"?, "timezone"?, "locale"?, "page"?, "last_seen"?}``
    ``{"type": "message", "id": "<client id>", "text": "..."}``
    ``{"type": "email", "email": "ana@example.com"}``   (optional: "leave your e-mail")
    ``{"type": "verify", "code": "123456"}``            (the code e-mailed to that address)
    ``{"type": "typing"}``
daemon -> visitor
    ``{"type": "welcome", "token", "visitor"}``         (keep the token for next time)
    ``{"type": "ack", "id", "message_id", "duplicate"}`` (the message is stored)
    ``{"type": "message", "event", "from": "agent"|"system", "text", "agent"?, "at"}``
    ``{"type": "email_ok", "email", "verified": false, "code_sent"}``
    ``{"type": "email_verified", "email"}``
    ``{"type": "error", "code", "message"}``             (the connection stays open)
    ``{"type": "error", "code": "busy"|"unavailable", "message", "retry_after"}``
                                                          (then closed: come back later)

A visitor's token is their visitor id and its time of issue signed with
HMAC-SHA256: a visitor can only ever resume their own chat, and only for
``token_ttl`` after the token was issued (each hello issues a fresh one).
Every message pushed to a visitor is kept in a Redis stream, so after a
reconnect the widget sends the last event it saw and gets everything after
it; replies reach the socket on whichever daemon holds it (Redis pub/sub).
The ``Origin`` of the page must be allowed; frames are size-limited and
rate-limited per connection; a socket says ``hello`` once.

A burst of sockets (every open widget reconnects when the daemon restarts)
holds no Redis connection per socket: their Redis work goes through one
:class:`RedisBatch` (one pipeline per loop turn), and at most
``max_pending_hellos`` hellos are answered at once; a few more wait a short
turn, and the rest are told to come back after ``retry_after`` seconds (error
``busy``, then the socket is closed with 1013, "try again later").

An e-mail address a visitor types is a claim, not an identity (see
router/profiles/claims.py): it becomes one of the visitor's identities only
once the visitor types back the code e-mailed to it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import WSMsgType, web
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError

from router.adapters.base import AdapterContext, Channel
from router.config import ChatSettings
from router.ingest import StoreUnavailable
from router.keys import Keys
from router.logs import Outage, RefusalLog
from router.model import Hints, Identity, InboundMessage, OutboundMessage
from router.profiles.claims import ClaimRefused, EmailClaims
from router.profiles.identity import normalise_email

log = structlog.get_logger("router.chat")

STATIC = Path(__file__).resolve().parent.parent / "static"
VISITOR_RE = re.compile(r"v_[A-Za-z0-9_-]{16,64}")
# RFC 5321: a path (and so an address) is at most 254 characters
MAX_EMAIL_CHARS = 254
# how long the e-mail frame waits for its note to be routed (the code e-mail
# belongs to the visitor's conversation, which routing may only now create)
CODE_MAIL_WAIT = 10.0
# most events one resume sends (the page's redraw after a reload included)
RESUME_MAX = 200
# most commands in one pipeline of the sockets' shared Redis work
BATCH_MAX = 256
# how long a hello waits for Redis before the visitor is told to come back
HELLO_WAIT = 5.0
# how long a hello over max_pending_hellos waits for a turn, and how many may
# wait (per allowed pending hello), before the client is told to come back
HELLO_QUEUE_WAIT = 2.0
HELLO_QUEUE_FACTOR = 4
# the range of the retry hint (seconds) given to a client told to come back:
# spread, so that the clients turned away do not all come back at once
RETRY_AFTER = (2, 10)
# at most one log line this often for a warning any visitor can cause at will
QUIET_LOG_EVERY = 60.0
# close code: "try again later" (RFC 6455, registered 1013)
TRY_AGAIN_LATER = 1013


def sign_visitor(secret: str, visitor: str, issued: float | None = None) -> str:
    """``{visitor}.{issued}.{mac}``: the visitor id and when the token was
    issued (Unix seconds, default now), signed together."""
    body = f"{visitor}.{int(time.time() if issued is None else issued)}"
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return f"{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def verify_token(
    secret: str, token: str, ttl: float | None = None, now: float | None = None
) -> str | None:
    """The visitor id a token names, if the token is genuine (and, given
    ``ttl``, issued at most ``ttl`` seconds before ``now``)."""
    body, _, _ = token.rpartition(".")
    visitor, _, issued = body.rpartition(".")
    if not VISITOR_RE.fullmatch(visitor) or not re.fullmatch(r"[0-9]{1,12}", issued):
        return None
    # (as bytes: compare_digest refuses str with non-ASCII characters)
    expected = sign_visitor(secret, visitor, int(issued)).encode()
    if not hmac.compare_digest(expected, token.encode()):
        return None
    if ttl is not None and (time.time() if now is None else now) - int(issued) > ttl:
        return None
    return visitor


def retry_after() -> int:
    """Seconds a client turned away should wait (spread over RETRY_AFTER)."""
    return random.randint(*RETRY_AFTER)


_Command = Callable[[Pipeline], Any]


class RedisBatch:
    """The Redis work of many sockets, sent together.

    Each caller adds one command; the commands queued while a pipeline is
    in flight go in the next one (up to ``BATCH_MAX``), and one pipeline is
    in flight at a time. So a thousand sockets saying hello at once cost a
    few round trips on one pooled connection, instead of a connection each
    (a pool of 64 ran out at the 65th socket: issue 14)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._pending: list[tuple[_Command, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._serving = False

    async def serve(self) -> None:
        """Send the queued commands until cancelled; then what is left fails."""
        self._serving = True
        try:
            await self._run()
        finally:
            self._serving = False
            for _, fut in self._pending:
                if not fut.done():
                    fut.set_exception(ConnectionError("chat is stopping"))
            self._pending.clear()

    async def run(self, command: _Command) -> Any:
        """Add one command (``lambda pipe: pipe.get(key)``); its result, or
        the Redis error raised."""
        if not self._serving:  # not served (tests, CLI): its own round trip
            pipe = self.redis.pipeline(transaction=False)
            command(pipe)
            return (await pipe.execute())[0]
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, fut))
        self._wakeup.set()
        return await fut

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                # (a caller gone meanwhile, e.g. a closed socket, is skipped)
                batch = [(c, f) for c, f in self._pending[:BATCH_MAX] if not f.done()]
                del self._pending[:BATCH_MAX]
                if batch:
                    await self._send(batch)

    async def _send(self, batch: list[tuple[_Command, asyncio.Future[Any]]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for command, _ in batch:
            command(pipe)
        try:
            results = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: every caller hears it
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)


class Bucket:
    """Token bucket: ``burst`` messages at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ChatHub:
    """Where pushed events live (a stream per visitor) and how every daemon
    hears of them (pub/sub), so a reply reaches the socket wherever it is."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.channel = self.keys.chat_push
        self.sockets: dict[str, set[web.WebSocketResponse]] = {}
        # the sockets' own Redis work (presence, resume reads, their messages
        # kept for a redraw) shares this: no connection per socket
        self.batch = RedisBatch(redis)
        # resubscribing once a second while Redis is down: a few lines, not one a second
        self._listener_outage = Outage(
            log, "chat_push_listener_restarting", "chat_push_listener_resumed"
        )

    def events_key(self, visitor: str) -> str:
        return self.keys.chat_events(visitor)

    def online_key(self, visitor: str) -> str:
        return self.keys.chat_online(visitor)

    async def push(
        self, visitor: str, event: dict[str, Any], keep: int, ttl: float, publish: bool = True
    ) -> str:
        key = self.events_key(visitor)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(key, {"e": orjson.dumps(event)}, maxlen=keep, approximate=True)
        pipe.expire(key, int(ttl))
        event_id = (await pipe.execute())[0]
        if publish:
            await self.redis.publish(self.channel, orjson.dumps({"v": visitor, "id": event_id}))
        return str(event_id)

    async def keep(self, visitor: str, event: dict[str, Any], keep: int, ttl: float) -> None:
        """Add a visitor's own message to their stream (not announced: their
        socket has it), through the shared batch."""
        key = self.events_key(visitor)
        data = {"e": orjson.dumps(event)}
        await asyncio.gather(
            self.batch.run(lambda p: p.xadd(key, data, maxlen=keep, approximate=True)),
            self.batch.run(lambda p: p.expire(key, int(ttl))),
        )

    async def set_online(self, visitor: str, away_after: float) -> None:
        key = self.online_key(visitor)
        await self.batch.run(lambda p: p.set(key, "1", ex=int(away_after)))

    async def since(self, visitor: str, last: str | None) -> list[tuple[str, dict[str, Any]]]:
        """The events after ``last`` (all kept ones without it), at most the
        latest ``RESUME_MAX``: one resume costs a bounded amount of traffic."""
        start = f"({last}" if last else "-"
        key = self.events_key(visitor)
        rows = await self.batch.run(
            lambda p: p.xrevrange(key, max="+", min=start, count=RESUME_MAX)
        )
        return [(i, orjson.loads(f["e"])) for i, f in reversed(rows)]

    async def listen(self) -> None:
        """Deliver pushed events to the sockets here, resubscribing after any failure
        (a socket misses nothing meanwhile: it resumes from the stream)."""
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listener_outage.failed(
                    error=f"{type(exc).__name__}: {exc}",
                    action="resubscribing every 1s; Redis may be restarting",
                )
                await asyncio.sleep(1.0)

    async def _listen_once(self) -> None:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)
        self._listener_outage.ok()
        try:
            async for note in pubsub.listen():
                if note.get("type") != "message":
                    continue
                data = orjson.loads(note["data"])
                sockets = list(self.sockets.get(data["v"], ()))
                if not sockets:  # (the visitor's socket is on another daemon)
                    continue
                # one read per event, whatever the number of the visitor's tabs
                rows = await self.redis.xrange(self.events_key(data["v"]), data["id"], data["id"])
                for event_id, fields in rows:
                    frame = _event_frame(event_id, orjson.loads(fields["e"]))
                    for ws in sockets:
                        with contextlib.suppress(ConnectionError, RuntimeError):
                            await ws.send_str(frame)
        finally:
            await pubsub.aclose()


def _event_frame(event_id: str, event: dict[str, Any]) -> str:
    return orjson.dumps({"type": "message", "event": event_id, **event}).decode()


class ChatAdapter:
    """Serves ``/chat/ws`` (the socket), ``/chat/widget.js`` and ``/chat/demo``."""

    name = "chat"

    def __init__(
        self, settings: Callable[[], ChatSettings], ctx: AdapterContext, hub: ChatHub
    ) -> None:
        self._settings = settings
        self.ctx = ctx
        self.hub = hub
        self.claims = EmailClaims(hub.redis, Keys(hub.prefix))
        self._listener: asyncio.Task[None] | None = None
        # hellos being answered now (at most max_pending_hellos, read at start)
        # and waiting for a turn
        self.hello_slots = asyncio.Semaphore(self.settings.max_pending_hellos)
        self.pending_hellos = 0
        self.waiting_hellos = 0
        # the claims' own Redis calls (a few round trips each) at once: a
        # burst of e-mail frames waits here, not on the daemon's shared pool
        self.claim_slots = asyncio.Semaphore(8)
        self.token_refused = RefusalLog(log, "chat_token_refused", every=QUIET_LOG_EVERY)
        self.busy_log = RefusalLog(log, "chat_busy", every=QUIET_LOG_EVERY)
        # Redis trouble seen by sockets: a few lines, not one per socket
        self.redis_outage = Outage(log, "chat_redis_unavailable", "chat_redis_recovered")

    @property
    def settings(self) -> ChatSettings:
        return self._settings()

    def can_mail(self) -> bool:
        """Whether e-mail goes out (a code can be sent to a claimed address)."""
        return self.ctx.can_send("email")

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/chat/ws", self.socket),
            web.get("/chat/widget.js", self.widget),
            web.get("/chat/demo", self.demo),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """The shared Redis batch, the push listener and presence, until ``stop``;
        then the sockets are closed (visitors reconnect to another daemon)."""
        async with asyncio.TaskGroup() as tg:
            loops = [
                tg.create_task(self.hub.batch.serve(), name="chat-redis-batch"),
                tg.create_task(self.hub.listen(), name="chat-push"),
                tg.create_task(self._keep_online(), name="chat-presence"),
            ]
            self._listener = loops[1]
            try:
                await stop.wait()
                for sockets in list(self.hub.sockets.values()):
                    for ws in list(sockets):
                        await ws.close(code=1001, message=b"server shutting down")
            finally:
                for task in loops:
                    task.cancel()

    async def _keep_online(self) -> None:
        """Visitors with a socket open here stay "online" (replies are not e-mailed)."""
        while True:
            away = self.settings.away_after
            visitors = list(self.hub.sockets)
            with contextlib.suppress(Exception):
                # pipelined: ten thousand visitors are a few round trips
                for i in range(0, len(visitors), BATCH_MAX):
                    pipe = self.hub.redis.pipeline(transaction=False)
                    for visitor in visitors[i : i + BATCH_MAX]:
                        pipe.set(self.hub.online_key(visitor), "1", ex=int(away))
                    await pipe.execute()
            await asyncio.sleep(max(1.0, away / 3))

    def ready(self) -> tuple[bool, str]:
        alive = self._listener is not None and not self._listener.done()
        return alive, "ok" if alive else "push listener stopped"

    def gauges(self) -> dict[str, float]:
        return {"open_sockets": float(sum(len(s) for s in self.hub.sockets.values()))}

    async def widget(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            STATIC / "chat-widget.js", headers={"Cache-Control": "public, max-age=300"}
        )

    async def demo(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "chat-demo.html")

    # -- the socket ---------------------------------------------------------------
    async def socket(self, request: web.Request) -> web.StreamResponse:
        chat = self.settings
        origin = request.headers.get("Origin", "")
        allowed = set(chat.allowed_origins) | {_own_origin(request)}
        if origin not in allowed:
            log.warning(
                "chat_origin_refused",
                origin=origin,
                action="add the site to channels.chat.allowed_origins if it is yours",
            )
            return web.json_response({"error": f"origin {origin!r} is not allowed"}, status=403)
        ws = web.WebSocketResponse(heartbeat=25, max_msg_size=chat.max_frame_bytes * 4)
        await ws.prepare(request)
        session = Session(self, ws)
        try:
            await session.run()
        except ConnectionResetError:
            pass  # the client went away while we answered: nobody to tell
        except (RedisError, OSError) as exc:
            # Redis away or too slow: the visitor hears it and comes back
            # later (its unacknowledged messages are re-sent), no traceback
            self.redis_outage.failed(
                error=f"{type(exc).__name__}: {exc}",
                action="visitors are told to retry; check Redis",
            )
            with contextlib.suppress(Exception):
                await session.come_back_later(
                    "unavailable", "the chat cannot reach its store; trying again shortly"
                )
        finally:
            session.close()
        return ws


def _own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


class Session:
    """One open socket."""

    def __init__(self, adapter: ChatAdapter, ws: web.WebSocketResponse) -> None:
        self.adapter = adapter
        self.ws = ws
        self.visitor: str | None = None
        self.hints = Hints()
        # the visitor's address once proven by the e-mailed code (never merely typed)
        self.email: str | None = None
        chat = adapter.settings
        self.bucket = Bucket(chat.rate, chat.burst)

    async def error(self, code: str, message: str) -> None:
        await self.ws.send_str(
            orjson.dumps({"type": "error", "code": code, "message": message}).decode()
        )

    async def come_back_later(self, code: str, message: str) -> None:
        """Tell the client when to come back (``retry_after`` seconds, spread),
        then close the socket ("try again later")."""
        frame = {"type": "error", "code": code, "message": message, "retry_after": retry_after()}
        # (a client already gone needs no answer)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await self.ws.send_str(orjson.dumps(frame).decode())
            await self.ws.close(code=TRY_AGAIN_LATER, message=b"try again later")

    async def run(self) -> None:
        chat = self.adapter.settings
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                if msg.type == WSMsgType.BINARY:
                    await self.error("bad_frame", "send JSON text frames")
                continue
            if len(msg.data.encode()) > chat.max_frame_bytes:
                await self.error("too_large", f"frames are limited to {chat.max_frame_bytes} bytes")
                continue
            try:
                frame = orjson.loads(msg.data)
                if not isinstance(frame, dict):
                    raise ValueError("not an object")
            except (orjson.JSONDecodeError, ValueError):
                await self.error("bad_frame", "a frame must be a JSON object")
                continue
            kind = frame.get("type")
            if kind == "hello" and self.visitor is not None:
                # one visitor per socket: a hello loop would otherwise leak a
                # visitor (and a resume) per frame
                await self.error("hello_once", "this chat has started; hello is sent once")
            elif kind == "hello":
                await self.admit_hello(frame)
                if self.visitor is None:
                    return  # turned away (busy, bad token): the socket is closed
            elif self.visitor is None:
                await self.error("hello_first", 'start with {"type": "hello"}')
            elif kind == "message":
                await self.message(frame)
            elif kind == "email":
                await self.give_email(frame)
            elif kind == "verify":
                await self.verify(frame)
            elif kind == "typing":
                continue
            else:
                await self.error("unknown_type", f"unknown frame type {kind!r}")

    async def admit_hello(self, frame: dict[str, Any]) -> None:
        """Answer a hello, or tell the client to come back later when
        ``max_pending_hellos`` are being answered already."""
        adapter = self.adapter
        if not await self._turn():
            adapter.busy_log.refused(
                pending=adapter.pending_hellos,
                waiting=adapter.waiting_hellos,
                action="visitors are told to retry in a few seconds; "
                "raise channels.chat.max_pending_hellos if Redis has room",
            )
            await self.come_back_later("busy", "many visitors are connecting; trying again shortly")
            return
        adapter.pending_hellos += 1
        try:
            async with asyncio.timeout(HELLO_WAIT):
                await self.hello(frame)
        except (ConnectionResetError, RuntimeError):
            self._leave()  # the client went away meanwhile: nobody to tell
        except TimeoutError:
            self._leave()  # (not welcomed: nothing of it stays)
            adapter.redis_outage.failed(
                error=f"Redis did not answer a hello within {HELLO_WAIT:g}s",
                action="visitors are told to retry; check Redis",
            )
            await self.come_back_later("busy", "the chat is slow to answer; trying again shortly")
        except (RedisError, OSError) as exc:
            self._leave()
            adapter.redis_outage.failed(
                error=f"{type(exc).__name__}: {exc}",
                action="visitors are told to retry; check Redis",
            )
            await self.come_back_later(
                "unavailable", "the chat cannot reach its store; trying again shortly"
            )
        else:
            if self.visitor is not None:
                adapter.redis_outage.ok()
        finally:
            adapter.pending_hellos -= 1
            adapter.hello_slots.release()

    async def _turn(self) -> bool:
        """A turn among the hellos answered at once: at once, or after a short
        wait in a bounded line; False: come back later."""
        adapter = self.adapter
        if not adapter.hello_slots.locked():
            await adapter.hello_slots.acquire()
            return True
        if adapter.waiting_hellos >= HELLO_QUEUE_FACTOR * adapter.settings.max_pending_hellos:
            return False
        adapter.waiting_hellos += 1
        try:
            async with asyncio.timeout(HELLO_QUEUE_WAIT):
                await adapter.hello_slots.acquire()
            return True
        except TimeoutError:
            return False
        finally:
            adapter.waiting_hellos -= 1

    async def hello(self, frame: dict[str, Any]) -> None:
        chat = self.adapter.settings
        assert chat.secret is not None
        token = frame.get("token")
        if token:
            visitor = verify_token(chat.secret.value, str(token), ttl=chat.token_ttl)
            if visitor is None:
                expired = verify_token(chat.secret.value, str(token)) is not None
                self.adapter.token_refused.refused(
                    reason="expired" if expired else "not genuine",
                    action="the visitor starts a new chat"
                    + ("" if expired else "; a forged or foreign token"),
                )
                why = "this chat has expired" if expired else "this token is not valid"
                await self.error("bad_token", f"{why}; starting a new chat")
                await self.ws.close(code=4401, message=b"bad token")
                return
        else:
            visitor = "v_" + secrets.token_urlsafe(18)
        tz, locale = frame.get("timezone"), frame.get("locale")
        hints = Hints(
            timezone=tz if isinstance(tz, str) and len(tz) < 64 else None,
            locale=locale if isinstance(locale, str) and len(locale) < 32 else None,
        )
        last = frame.get("last_seen")
        last = last if isinstance(last, str) and re.fullmatch(r"\d+-\d+", last) else None
        hub = self.adapter.hub
        # presence and the resume read go in the sockets' shared pipeline;
        # resume: what was pushed after what the widget saw; without
        # last_seen (a reloaded page) the kept conversation, to redraw it
        online = hub.set_online(visitor, chat.away_after)
        if token:
            _, events = await asyncio.gather(online, hub.since(visitor, last))
        else:
            await online
            events = []
        self.visitor, self.hints = visitor, hints
        hub.sockets.setdefault(visitor, set()).add(self.ws)
        # a fresh token: a visitor who comes back keeps their chat for token_ttl more
        await self.ws.send_str(
            orjson.dumps(
                {
                    "type": "welcome",
                    "visitor": visitor,
                    "token": sign_visitor(chat.secret.value, visitor),
                }
            ).decode()
        )
        for event_id, event in events:
            await self.ws.send_str(_event_frame(event_id, event))

    async def _online(self) -> None:
        """Presence, best effort (a message is stored whether or not it lands)."""
        assert self.visitor is not None
        with contextlib.suppress(RedisError, OSError):
            await self.adapter.hub.set_online(self.visitor, self.adapter.settings.away_after)

    async def message(self, frame: dict[str, Any]) -> None:
        chat = self.adapter.settings
        client_id, text = frame.get("id"), frame.get("text")
        if not isinstance(client_id, str) or not 0 < len(client_id) <= 64:
            await self.error("bad_message", "a message needs an id (string, up to 64 chars)")
            return
        if not isinstance(text, str) or not text.strip():
            await self.error("bad_message", "a message needs some text")
            return
        if len(text) > chat.max_text_chars:
            await self.error(
                "too_large", f"messages are limited to {chat.max_text_chars} characters"
            )
            return
        if not self.bucket.take():
            await self.error("slow_down", "too many messages; wait a moment and send again")
            return
        assert self.visitor is not None
        await self._online()
        message = InboundMessage(
            channel="chat",
            sender=Identity("chat", self.visitor),
            text=text,
            source_id=f"{self.visitor}:{client_id}",
            references=[self.visitor],
            hints=self.hints,
            identities=[Identity("email", self.email)] if self.email else [],
            meta={"kind": "chat"},
        )
        try:
            result = await self.adapter.ctx.ingest(message)
        except StoreUnavailable:
            await self.error("unavailable", "could not store your message; please send it again")
            return
        if not result.duplicate:
            # the visitor's own side of the conversation is kept beside the
            # replies (not pushed live: this socket has it), so a reloaded
            # page can draw both
            event = {"from": "visitor", "id": client_id, "text": text, "at": time.time()}
            with contextlib.suppress(RedisError, OSError):
                await self.adapter.hub.keep(self.visitor, event, chat.history, chat.history_ttl)
        await self.ws.send_str(
            orjson.dumps(
                {
                    "type": "ack",
                    "id": client_id,
                    "message_id": result.id,
                    "duplicate": result.duplicate,
                }
            ).decode()
        )

    async def give_email(self, frame: dict[str, Any]) -> None:
        """The visitor types an address for the answer. It is a claim, not an
        identity: agents see it as a note, and a one-time code is e-mailed to
        it; only the ``verify`` frame with that code makes it the visitor's
        (merging with a profile that has it). Until then it merges nothing,
        joins no other customer's conversation and redirects no reply."""
        raw = frame.get("email")
        email = (
            normalise_email(raw) if isinstance(raw, str) and len(raw) <= MAX_EMAIL_CHARS else None
        )
        if email is None:
            await self.error("bad_email", "that does not look like an e-mail address")
            return
        if not self.bucket.take():
            await self.error("slow_down", "too many frames; wait a moment and send again")
            return
        chat = self.adapter.settings
        assert self.visitor is not None and chat.secret is not None
        claims = self.adapter.claims
        try:
            claim = None
            if self.adapter.can_mail():
                async with self.adapter.claim_slots:
                    claim = await claims.start(chat.secret.value, self.visitor, email)
        except ClaimRefused as exc:
            await self.error(exc.code, exc.message)
            return
        except (RedisError, OSError):
            await self.error("unavailable", "could not store your address; please try again")
            return
        how = "a code was sent to it" if claim else "e-mail is not configured, so it stays so"
        message = InboundMessage(
            channel="chat",
            sender=Identity("chat", self.visitor),
            text="",
            source_id=f"{self.visitor}:email:{email}",
            references=[self.visitor],
            hints=self.hints,
            meta={
                "kind": "contact",
                "claimed_email": email,
                "note": f"The visitor typed an e-mail address, not verified ({how}): {email}",
            },
        )
        try:
            result = await self.adapter.ctx.ingest(message)
        except StoreUnavailable:
            await self.error("unavailable", "could not store your address; please try again")
            return
        code_sent = False
        if claim is not None:
            try:
                conversation = await claims.routed_conversation(
                    result.id, CODE_MAIL_WAIT, read=self.adapter.hub.batch.run
                )
                if conversation is not None:
                    retention = int(self.adapter.ctx.limits().message_retention)
                    async with self.adapter.claim_slots:
                        await claims.mail_code(claim, conversation, retention)
                    code_sent = True
            except (RedisError, OSError):
                pass
            if not code_sent:
                log.warning(
                    "chat_code_not_sent",
                    message_id=result.id,
                    reason="the visitor's note was not routed in time",
                    action="the visitor may ask again; check `router status` for a routing backlog",
                )
        await self.ws.send_str(
            orjson.dumps(
                {"type": "email_ok", "email": email, "verified": False, "code_sent": code_sent}
            ).decode()
        )

    async def verify(self, frame: dict[str, Any]) -> None:
        """The visitor types the code e-mailed to the address they claimed:
        now the address is theirs, and joins their profile."""
        code = frame.get("code")
        if not isinstance(code, str) or not re.fullmatch(r"\s*\d{4,12}\s*", code):
            await self.error("bad_code", "send the code from the e-mail (digits only)")
            return
        if not self.bucket.take():
            await self.error("slow_down", "too many frames; wait a moment and send again")
            return
        chat = self.adapter.settings
        assert self.visitor is not None and chat.secret is not None
        claims = self.adapter.claims
        try:
            async with self.adapter.claim_slots:
                email = await claims.check(chat.secret.value, self.visitor, code)
        except ClaimRefused as exc:
            await self.error(exc.code, exc.message)
            return
        except (RedisError, OSError):
            await self.error("unavailable", "could not check your code; please send it again")
            return
        message = InboundMessage(
            channel="chat",
            sender=Identity("chat", self.visitor),
            text="",
            source_id=f"{self.visitor}:verified:{email}",
            references=[self.visitor],
            hints=self.hints,
            identities=[Identity("email", email)],
            meta={
                "kind": "contact",
                "verified_email": email,
                "note": f"The visitor proved their e-mail address (code e-mailed to it): {email}",
            },
        )
        try:
            await self.adapter.ctx.ingest(message)
            async with self.adapter.claim_slots:
                await claims.done(self.visitor)
        except (StoreUnavailable, RedisError, OSError):
            await self.error("unavailable", "could not store your address; please send it again")
            return
        self.email = email
        await self.ws.send_str(orjson.dumps({"type": "email_verified", "email": email}).decode())

    def _leave(self) -> None:
        """Forget this socket's visitor (a hello that did not finish)."""
        self.close()
        self.visitor = None

    def close(self) -> None:
        if self.visitor is not None:
            sockets = self.adapter.hub.sockets.get(self.visitor, set())
            sockets.discard(self.ws)
            if not sockets:
                self.adapter.hub.sockets.pop(self.visitor, None)


class ChatSender:
    """Pushes replies to the visitor (stored for resume, delivered live); a
    visitor who has left gets the transcript by e-mail if they gave an address."""

    channel = "chat"

    def __init__(
        self,
        settings: Callable[[], ChatSettings],
        hub: ChatHub,
        transcript: Callable[[OutboundMessage], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.transcript = transcript

    async def send(self, message: OutboundMessage) -> str:
        chat = self.settings()
        event = {
            "from": "system" if message.kind == "ack" else "agent",
            "text": message.text,
            "agent": message.agent,
            "at": time.time(),
        }
        event_id = await self.hub.push(message.to, event, chat.history, chat.history_ttl)
        away = not await self.hub.redis.exists(self.hub.online_key(message.to))
        if away and message.kind == "reply" and self.transcript is not None:
            await self.transcript(message)
        return event_id


def factory(
    settings: Callable[[], ChatSettings],
    ctx: AdapterContext,
    public_url: Callable[[], str | None],
) -> Channel[ChatSettings]:
    """Web chat: the socket and widget in, pushes (or a transcript by e-mail) out."""
    store = ctx.store
    assert store is not None
    hub = ChatHub(store.redis, store.keys.prefix)

    async def transcript(message: OutboundMessage) -> None:
        if ctx.can_send("email"):  # a visitor who left gets it by e-mail
            from router.agent import send_transcript

            await send_transcript(store, message)

    return Channel(
        adapter=ChatAdapter(settings, ctx, hub),
        senders={"chat": ChatSender(settings, hub, transcript)},
    )
