"""A small client for agent tools written in Python (the CLI uses it too).

It speaks only the documented Redis protocol of docs/redis-schema.md, so a
tool in any other language can do the same with its own Redis client:

- ``claim``   the most urgent entry of a queue: by band, then due soonest (a stale
              or released claim first)
- ``renew``   keep a claim alive past the queue's visibility timeout
- ``ack``     done with an entry: it leaves the queue
- ``release`` give an entry back, to be claimed next by anyone
- ``reply``   post a reply to a conversation's outbox
- ``transfer`` move a conversation's live work item to another queue or agent
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.exceptions import ResponseError

from router.keys import BANDS, QUEUE_GROUP, Keys
from router.model import OutboundMessage, new_id
from router.store import Store

DEFAULT_VISIBILITY = 600.0
CONVERSATION_STATES = ("open", "waiting", "resolved")
DEFAULT_RETENTION = 90 * 86400
DEFAULT_EVENTS_RETENTION = 400 * 86400


def add_event(
    pipe: Any,
    keys: Keys,
    kind: str,
    at: str,
    conv: Mapping[str, str],
    retention: float,
    **extra: str | None,
) -> None:
    """Queue the XADD of one lifecycle event to ``{p}events`` (trimmed to
    ``retention`` seconds), with the conversation's fields and ``extra``."""
    fields = {
        "type": kind,
        "at": at,
        "conversation_id": conv.get("id"),
        "customer_id": conv.get("customer_id"),
        "queue": conv.get("queue"),
        "channel": conv.get("channel"),
        "language": conv.get("language"),
        **extra,
    }
    pipe.xadd(
        keys.events,
        {k: v for k, v in fields.items() if v},
        minid=int((time.time() - retention) * 1000),
        approximate=True,
    )


def address(msg: OutboundMessage, conv: dict[str, str]) -> OutboundMessage:
    """Fill what the sender needs from the conversation: channel, address, threading."""
    msg.channel = msg.channel or conv.get("channel", "")
    if not msg.to:
        msg.to = conv.get("reply_to", "")
    msg.subject = msg.subject or conv.get("subject")
    msg.in_reply_to = msg.in_reply_to or conv.get("last_thread_ref")
    for key in ("our_address", "last_inbound_at", "country", "language", "queue"):
        if conv.get(key) and key not in msg.meta:
            msg.meta[key] = conv[key]
    return msg


def record_outbound(
    pipe: Any,
    keys: Keys,
    msg: OutboundMessage,
    retention: int,
    conv: Mapping[str, str] | None = None,
    events_retention: float = DEFAULT_EVENTS_RETENTION,
) -> None:
    """Queue the writes that record an outbound message: its delivery hash
    (status ``queued``) and its entry in the conversation's timeline; for an
    agent's reply also the conversation's response times and a ``replied``
    event. Called once per outbound message (the caller checks that its
    delivery hash does not exist yet), so a redelivery counts nothing twice."""
    now = f"{time.time():.3f}"
    delivery = keys.delivery(msg.id)
    pipe.hset(
        delivery,
        mapping={
            "id": msg.id,
            "conversation_id": msg.conversation_id,
            "channel": msg.channel,
            "status": "queued",
            "attempts": 0,
            "created_at": now,
            "agent": msg.agent or "",
            "kind": msg.kind,
            "text": msg.text,
        },
    )
    pipe.expire(delivery, retention)
    pipe.xadd(
        keys.timeline(msg.conversation_id),
        {
            "direction": "out",
            "outbox_id": msg.id,
            "channel": msg.channel,
            "at": now,
            "agent": msg.agent or "",
        },
        maxlen=10000,
        approximate=True,
    )
    if msg.kind == "reply":  # a person answered: the repeat-contact count starts again
        ck = keys.conversation(msg.conversation_id)
        pipe.hset(
            ck, mapping={"last_reply_at": now, "inbound_since_reply": 0, "last_response_at": now}
        )
        pipe.hsetnx(ck, "first_response_at", now)
        add_event(
            pipe,
            keys,
            "replied",
            now,
            {"id": msg.conversation_id, **(conv or {})},
            events_retention,
            agent=msg.agent,
            channel=msg.channel,
            outbox_id=msg.id,
        )


class AgentError(Exception):
    """An agent-side request that cannot be done, with the reason."""


@dataclass
class ClaimedEntry:
    """An entry of an agent queue held by one agent."""

    queue: str
    stream: str
    entry_id: str
    deliveries: int
    fields: dict[str, str]
    message: dict[str, str] = field(default_factory=dict)

    @property
    def priority(self) -> str:
        return self.fields.get("priority", "normal")

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "stream": self.stream,
            "entry_id": self.entry_id,
            "deliveries": self.deliveries,
            **self.fields,
            "message": self.message,
        }


@dataclass
class QueueStatus:
    queue: str
    depth: int
    claimed: int
    oldest_age_seconds: float | None
    agents_online: list[str] = field(default_factory=list)
    handle_time_seconds: float | None = None
    handle_time_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "depth": self.depth,
            "claimed": self.claimed,
            "oldest_age_seconds": self.oldest_age_seconds,
            "agents_online": self.agents_online,
            "handle_time_seconds": self.handle_time_seconds,
            "handle_time_samples": self.handle_time_samples,
        }


@dataclass
class Transfer:
    """Where a transferred work item went."""

    conversation_id: str
    from_queue: str
    queue: str
    stream: str
    entry_id: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class AgentClient:
    """Claim, acknowledge and answer queue entries through Redis."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys: Keys = store.keys

    async def queue_names(self) -> list[str]:
        return sorted(await self.store.redis.hkeys(self.keys.queues))

    async def visibility_timeout(self, queue: str) -> float:
        raw = await self.store.redis.hget(self.keys.queues, queue)
        if raw is None:
            raise AgentError(
                f"unknown queue {queue!r}; known queues: {', '.join(await self.queue_names())}"
            )
        return float(orjson.loads(raw).get("visibility_timeout", DEFAULT_VISIBILITY))

    def _bands(self, queue: str, agent: str) -> list[str]:
        """Where ``agent`` looks: their own follow-ups and ``queue``, band by band."""
        personal = Keys.personal_queue(agent)
        return [
            key
            for band in BANDS
            for key in (self.keys.queue(personal, band), self.keys.queue(queue, band))
        ]

    async def claim(self, queue: str, agent: str) -> ClaimedEntry | None:
        """The most urgent entry for ``agent``: follow-ups of conversations they
        own (sticky routing) and entries of ``queue``, band by band; None if
        there is nothing. The agent becomes the owner of its conversation."""
        vis_ms = int(await self.visibility_timeout(queue) * 1000)
        r = await self.store.scripts.claim(
            keys=self._bands(queue, agent), args=[QUEUE_GROUP, agent, vis_ms, self.keys.prefix]
        )
        if not r:
            return None
        stream, entry_id, deliveries, *flat_fields = r
        fields = dict(zip(flat_fields[::2], flat_fields[1::2], strict=True))
        entry = ClaimedEntry(
            self.keys.parse_queue(stream)[0], stream, entry_id, int(deliveries), fields
        )
        if mid := fields.get("message_id"):
            entry.message = await self.store.redis.hgetall(self.keys.message(mid))
        return entry

    async def _owned_call(self, script: Any, stream: str, agent: str, entry_id: str) -> None:
        try:
            await script(keys=[stream], args=[QUEUE_GROUP, agent, entry_id, self.keys.prefix])
        except ResponseError as exc:
            raise AgentError(f"entry {entry_id} of {stream}: {exc}") from None

    async def find_stream(self, queue: str, entry_id: str, agent: str) -> str:
        """The band stream (of ``queue`` or the agent's own) that holds ``entry_id``."""
        for key in self._bands(queue, agent):
            if await self.store.redis.xrange(key, entry_id, entry_id, count=1):
                return key
        raise AgentError(f"entry {entry_id} is not in queue {queue!r} (acked already?)")

    async def ack(self, queue: str, entry_id: str, agent: str) -> None:
        stream = await self.find_stream(queue, entry_id, agent)
        await self._owned_call(self.store.scripts.ack, stream, agent, entry_id)

    async def release(self, queue: str, entry_id: str, agent: str) -> None:
        stream = await self.find_stream(queue, entry_id, agent)
        await self._owned_call(self.store.scripts.release, stream, agent, entry_id)

    async def renew(self, queue: str, entry_id: str, agent: str) -> None:
        stream = await self.find_stream(queue, entry_id, agent)
        await self._owned_call(self.store.scripts.renew, stream, agent, entry_id)

    async def transfer(
        self,
        conversation_id: str,
        queue: str,
        agent: str | None = None,
        note: str | None = None,
        by: str | None = None,
    ) -> Transfer:
        """Move the conversation's live work item to ``queue`` (or to ``agent``'s
        own queue, falling back to ``queue``), keeping its band and due time and
        releasing any claim on it (the ``transfer`` script, docs/redis-schema.md)."""
        try:
            stream, entry_id, from_queue = await self.store.scripts.transfer(
                keys=[self.keys.conversation(conversation_id)],
                args=[queue, agent or "", note or "", by or "", self.keys.prefix],
            )
        except ResponseError as exc:
            raise AgentError(f"conversation {conversation_id}: {exc}") from None
        return Transfer(
            conversation_id, from_queue, self.keys.parse_queue(stream)[0], stream, entry_id
        )

    async def heartbeat(
        self, agent: str, ttl: float = 60, queues: Sequence[str] | None = None
    ) -> list[str]:
        """Mark ``agent`` online for ``ttl`` seconds (refresh it more often than
        that), for ``queues``: in each queue's online set (``Keys.queue_agents``,
        score = when the presence ends) and out of the ones they left. Without
        ``queues`` the queues declared last are kept. Returns the queues."""
        if not agent or "," in agent:
            raise AgentError(f"bad agent name {agent!r}")
        r = self.store.redis
        key = self.keys.presence(agent)
        before = _queue_list(await r.get(key))
        if queues is None:
            now_for = before
        else:
            now_for = list(dict.fromkeys(q.strip() for q in queues if q.strip()))
            known = set(await self.queue_names())
            if unknown := [q for q in now_for if q not in known]:
                raise AgentError(
                    f"unknown queue {', '.join(unknown)}; known queues: {', '.join(sorted(known))}"
                )
        seconds = max(1, int(ttl))
        until_ms = int((time.time() + seconds) * 1000)
        now_ms = int(time.time() * 1000)
        pipe = r.pipeline(transaction=True)
        pipe.set(key, ",".join(now_for) or "1", ex=seconds)
        for q in before:
            if q not in now_for:
                pipe.zrem(self.keys.queue_agents(q), agent)
        for q in now_for:
            online = self.keys.queue_agents(q)
            pipe.zadd(online, {agent: until_ms})
            pipe.zremrangebyscore(online, "-inf", now_ms)
        await pipe.execute()
        return now_for

    async def offline(self, agent: str) -> None:
        """``agent`` is offline: no presence, in no queue's online set."""
        key = self.keys.presence(agent)
        pipe = self.store.redis.pipeline(transaction=True)
        for q in set(_queue_list(await self.store.redis.get(key))) | set(await self.queue_names()):
            pipe.zrem(self.keys.queue_agents(q), agent)
        pipe.delete(key)
        await pipe.execute()

    async def agents_online(self, queue: str) -> list[str]:
        """The agents online for ``queue`` now, by name."""
        now_ms = int(time.time() * 1000)
        return sorted(
            await self.store.redis.zrangebyscore(self.keys.queue_agents(queue), now_ms + 1, "+inf")
        )

    async def set_status(self, conversation_id: str, status: str, agent: str | None) -> None:
        """Set a conversation open, waiting (on the customer) or resolved."""
        if status not in CONVERSATION_STATES:
            raise AgentError(f"status must be one of {', '.join(CONVERSATION_STATES)}")
        key = self.keys.conversation(conversation_id)
        conv = await self.store.redis.hgetall(key)
        if not conv:
            raise AgentError(f"conversation {conversation_id} does not exist (or has expired)")
        now = f"{time.time():.3f}"
        was = conv.get("status")
        event = (
            "resolved"
            if status == "resolved" and was != "resolved"
            else "reopened"
            if status == "open" and was == "resolved"
            else None
        )
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"status": status, "status_at": now, "status_by": agent or ""})
        if event == "resolved":
            pipe.hset(key, "resolved_at", now)
        elif event == "reopened":
            pipe.hset(key, "reopened_at", now)
            pipe.hincrby(key, "reopen_count", 1)
        if event:
            add_event(pipe, self.keys, event, now, conv, await self.events_retention(), agent=agent)
        await pipe.execute()

    async def status(self) -> list[QueueStatus]:
        """Depth (waiting + claimed), claimed count and oldest age of every queue."""
        names = await self.queue_names()
        pipe = self.store.redis.pipeline(transaction=False)
        for q in names:
            for key in self.keys.queue_bands(q):
                pipe.xlen(key)
                pipe.xrange(key, count=1)
                pipe.xpending(key, QUEUE_GROUP)
        now = time.time()
        for q in names:
            pipe.zrangebyscore(self.keys.queue_agents(q), int(now * 1000) + 1, "+inf")
            pipe.hmget(self.keys.handle_time(q), "mean", "count")
        raw = await pipe.execute(raise_on_error=False)
        extra = raw[len(raw) - 2 * len(names) :]
        online, handle = extra[::2], extra[1::2]
        out = []
        per = 3 * len(BANDS)
        for i, q in enumerate(names):
            depth = claimed = 0
            oldest: float | None = None
            chunk = raw[i * per : (i + 1) * per]
            for j in range(len(BANDS)):
                n, first, pending = chunk[3 * j : 3 * j + 3]
                if isinstance(n, int):
                    depth += n
                if isinstance(pending, dict):
                    claimed += int(pending.get("pending") or 0)
                if isinstance(first, list) and first:
                    queued_at = float(first[0][1].get("queued_at") or 0)
                    if queued_at and (oldest is None or queued_at < oldest):
                        oldest = queued_at
            age = round(max(0.0, now - oldest), 3) if oldest is not None else None
            agents = online[i] if isinstance(online[i], list) else []
            mean, count = handle[i] if isinstance(handle[i], list) else (None, None)
            out.append(
                QueueStatus(
                    q,
                    depth,
                    claimed,
                    age,
                    sorted(agents),
                    float(mean) if mean else None,
                    int(count or 0),
                )
            )
        return out

    async def reply(
        self,
        conversation_id: str,
        text: str,
        agent: str | None = None,
        channel: str | None = None,
        kind: str = "reply",
    ) -> str:
        """Post a reply to the outbox; return its outbox id (see ``delivery`` hash)."""
        if not text.strip():
            raise AgentError("a reply needs some text")
        conv = await self.store.redis.hgetall(self.keys.conversation(conversation_id))
        if not conv:
            raise AgentError(f"conversation {conversation_id} does not exist (or has expired)")
        out = address(
            OutboundMessage(
                id=new_id("o"),
                conversation_id=conversation_id,
                text=text,
                agent=agent,
                kind=kind,
                channel=channel or "",
            ),
            conv,
        )
        if not out.channel or not out.to:
            raise AgentError(f"conversation {conversation_id} has no channel to reply on")
        retention = await self.retention()
        pipe = self.store.redis.pipeline(transaction=True)
        record_outbound(pipe, self.keys, out, retention, conv, await self.events_retention())
        pipe.xadd(self.keys.outbox, {"o": out.to_json()})
        await pipe.execute()
        return out.id

    async def retention(self) -> int:
        raw = await self.store.redis.hget(self.keys.meta, "message_retention")
        return int(float(raw)) if raw else DEFAULT_RETENTION

    async def events_retention(self) -> float:
        raw = await self.store.redis.hget(self.keys.meta, "events_retention")
        return float(raw) if raw else DEFAULT_EVENTS_RETENTION

    async def delivery(self, outbox_id: str) -> dict[str, str]:
        return await self.store.redis.hgetall(self.keys.delivery(outbox_id))


def _queue_list(value: str | None) -> list[str]:
    """The queues in a presence value (``"general,vip"``; ``"1"``: none)."""
    if not value or value == "1":
        return []
    return [q for q in value.split(",") if q]


async def send_transcript(
    store: Store, message: OutboundMessage, min_interval: float = 600
) -> bool:
    """E-mail a chat's transcript to the visitor who left, if they gave an
    address (at most once per ``min_interval`` per conversation). True if queued."""
    keys = store.keys
    r = store.redis
    conv = await r.hgetall(keys.conversation(message.conversation_id))
    customer = conv.get("customer_id")
    if not customer:
        return False
    emails = sorted(
        i.partition(":")[2]
        for i in await r.smembers(keys.customer_identities(customer))
        if i.startswith("email:")
    )
    last = float(conv.get("transcript_at", 0) or 0)
    if not emails or time.time() - last < min_interval:
        return False
    lines = []
    for _, f in await r.xrange(keys.timeline(message.conversation_id)):
        if f.get("message_id"):
            text = await r.hget(keys.message(f["message_id"]), "text")
            who = "You"
        else:
            text = await r.hget(keys.delivery(f.get("outbox_id", "")), "text")
            who = f.get("agent") or "Support"
        if text:
            lines.append(f"{who}: {text}")
    out = OutboundMessage(
        id=new_id("o"),
        conversation_id=message.conversation_id,
        channel="email",
        to=emails[0],
        kind="transcript",
        subject=conv.get("subject") or "Your chat with us",
        text="You left the chat before we answered. Here is the conversation:\n\n"
        + "\n\n".join(lines),
    )
    pipe = r.pipeline(transaction=True)
    record_outbound(pipe, keys, out, int(await AgentClient(store).retention()))
    pipe.xadd(keys.outbox, {"o": out.to_json()})
    pipe.hset(keys.conversation(message.conversation_id), "transcript_at", f"{time.time():.3f}")
    await pipe.execute()
    return True
