"""Customer and conversation administration: show, set, merge, import,
export, forget, and a conversation's whole cross-channel history.

Used by the ``router customer ...`` and ``router conversation ...``
commands; everything goes through the documented Redis keys.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from redis.exceptions import ResponseError

from router.keys import INGEST_GROUP, OUTBOX_GROUP, QUEUE_GROUP, Keys
from router.model import Identity, new_id
from router.profiles.claims import address_digest
from router.profiles.identity import normalise_email, normalise_identity, normalise_phone
from router.store import Store

# Profile fields an admin may set, and the CSV columns import understands.
SETTABLE = ("name", "tier", "language_preference", "timezone", "country")
IDENTITY_COLUMNS = {"email": "email", "phone": "phone", "x": "x", "chat": "chat", "api": "api"}


class AdminError(Exception):
    """A request that cannot be done, with the reason."""


def identity_of(ref: str) -> Identity | None:
    """An identity written by a person: ``email:ana@x.org``, ``ana@x.org``,
    ``+14155550100``, ``x:12345``; None if ``ref`` looks like a customer id."""
    kind, sep, value = ref.partition(":")
    if sep and kind in IDENTITY_COLUMNS and value:
        if kind == "email":
            return Identity("email", normalise_email(value) or value.lower())
        if kind == "phone":
            return Identity("phone", normalise_phone(value) or value)
        return Identity(kind, value)
    if "@" in ref or ref.startswith("+"):
        return normalise_identity(ref, "api")
    return None


@dataclass
class ImportSummary:
    rows: int = 0
    created: int = 0
    updated: int = 0
    merged: int = 0
    skipped: list[str] = field(default_factory=list)


class Admin:
    """Administrative operations on profiles and conversations."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys: Keys = store.keys
        self.redis = store.redis

    # -- finding -----------------------------------------------------------------
    async def customer_id(self, ref: str) -> str:
        """The live customer id for an id or an identity (following merges)."""
        ident = identity_of(ref)
        if ident is not None:
            cid = await self.redis.get(self.keys.identity(ident.kind, ident.value))
            if cid is None:
                raise AdminError(f"no customer has the identity {ident}")
        else:
            cid = ref
        for _ in range(10):
            into = await self.redis.hget(self.keys.customer(cid), "merged_into")
            if into is None:
                break
            cid = into
        if not await self.redis.exists(self.keys.customer(cid)):
            raise AdminError(f"no customer {ref!r}")
        return cid

    async def show(self, ref: str) -> dict[str, Any]:
        cid = await self.customer_id(ref)
        k = self.keys
        profile = await self.redis.hgetall(k.customer(cid))
        conversations = []
        for conv_id, created in await self.redis.zrange(
            k.customer_conversations(cid), 0, -1, withscores=True
        ):
            conv = await self.redis.hgetall(k.conversation(conv_id))
            conversations.append(
                {
                    "id": conv_id,
                    "created_at": created,
                    "status": conv.get("status", "(expired)"),
                    "channel": conv.get("channel"),
                    "last_activity": conv.get("last_activity"),
                    "messages": int(conv.get("message_count", 0) or 0),
                    "owner": conv.get("owner"),
                }
            )
        return {
            **profile,
            "identities": sorted(await self.redis.smembers(k.customer_identities(cid))),
            "channels": sorted(await self.redis.smembers(k.customer_channels(cid))),
            "conversations": conversations,
        }

    async def routing_of(self, conversation_id: str) -> dict[str, Any]:
        """Where a conversation waits and why: its queue and owner, and the
        routing decision on its last message (``{}`` if it has expired)."""
        k = self.keys
        conv = await self.redis.hgetall(k.conversation(conversation_id))
        if not conv:
            return {}
        raw = None
        if conv.get("last_message_id"):
            raw = await self.redis.hget(k.message(conv["last_message_id"]), "decision")
        return {
            "queue": conv.get("queue"),
            "owner": conv.get("owner"),
            "decision": orjson.loads(raw) if raw else None,
        }

    # -- changing ----------------------------------------------------------------
    async def set(self, ref: str, values: dict[str, str | None]) -> dict[str, Any]:
        """Set profile fields (``tier``, ``language_preference``, ``timezone``...);
        an empty value removes the field."""
        from router.timezones import valid_zone

        cid = await self.customer_id(ref)
        unknown = set(values) - set(SETTABLE)
        if unknown:
            raise AdminError(f"cannot set {', '.join(sorted(unknown))}; settable: {SETTABLE}")
        key = self.keys.customer(cid)
        pipe = self.redis.pipeline(transaction=True)
        for name, value in values.items():
            if value is None:
                continue
            if name == "timezone" and value and not valid_zone(value):
                raise AdminError(f"unknown time zone {value!r} (use an IANA name)")
            field_name = "display_name" if name == "name" else name
            if value == "":
                pipe.hdel(key, field_name)
            else:
                pipe.hset(key, field_name, value.upper() if name == "country" else value)
            if name == "timezone":
                # a zone an admin sets wins over what channels suggest
                pipe.hset(key, "timezone_source", "profile") if value else pipe.hdel(
                    key, "timezone_source"
                )
        await pipe.execute()
        return await self.show(cid)

    async def merge(self, keep: str, other: str, by: str = "admin") -> str:
        """Merge customer ``other`` into ``keep``; return the surviving id."""
        a, b = await self.customer_id(keep), await self.customer_id(other)
        try:
            return str(
                await self.store.scripts.merge(
                    args=[f"{time.time():.3f}", self.keys.prefix, b, a, by]
                )
            )
        except ResponseError as exc:
            raise AdminError(str(exc)) from None

    async def import_csv(
        self, path: Path, progress: Callable[[int, ImportSummary], None] | None = None
    ) -> ImportSummary:
        """Create or update profiles from a CSV file with a header row.

        Identity columns: ``email``, ``phone``, ``x``, ``chat``, ``api`` (any
        number; a row naming identities of two existing profiles merges them);
        profile columns: ``name``, ``tier``, ``language_preference``,
        ``timezone``, ``country``.
        """
        summary = ImportSummary()
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            known = set(IDENTITY_COLUMNS) | set(SETTABLE)
            unknown = [c for c in reader.fieldnames or () if c not in known]
            if unknown:
                raise AdminError(
                    f"{path}: unknown column(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
            for line, row in enumerate(reader, start=2):
                summary.rows += 1
                idents: list[str] = []
                for col, kind in IDENTITY_COLUMNS.items():
                    value = (row.get(col) or "").strip()
                    if not value:
                        continue
                    ident = identity_of(f"{kind}:{value}")
                    if (
                        ident is None
                        or (kind == "email" and not normalise_email(value))
                        or (kind == "phone" and not normalise_phone(value))
                    ):
                        summary.skipped.append(f"{path}:{line}: {col} {value!r} is not valid")
                        idents = []
                        break
                    idents.append(str(ident))
                if not idents:
                    if not summary.skipped or not summary.skipped[-1].startswith(f"{path}:{line}:"):
                        summary.skipped.append(f"{path}:{line}: no identity (email, phone...)")
                    continue
                (r,) = await self.store.scripts.identify(
                    args=[
                        f"{time.time():.3f}",
                        self.keys.prefix,
                        orjson.dumps([(idents, new_id("c"), [])]),
                    ]
                )
                cid, created, merged = r[0], r[1] == 1, int(r[2])
                summary.created += created
                summary.updated += not created
                summary.merged += merged
                values = {c: (row.get(c) or "").strip() or None for c in SETTABLE}
                try:
                    await self.set(cid, values)
                except AdminError as exc:
                    summary.skipped.append(f"{path}:{line}: {exc}")
                if progress is not None and summary.rows % 500 == 0:
                    progress(summary.rows, summary)
        return summary

    async def set_status(self, conversation_id: str, status: str, agent: str | None) -> None:
        from router.agent import AgentClient, AgentError

        try:
            await AgentClient(self.store).set_status(conversation_id, status, agent)
        except AgentError as exc:
            raise AdminError(str(exc)) from None

    # -- reading everything -----------------------------------------------------
    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """A conversation and its whole timeline, inbound and outbound, in order."""
        k = self.keys
        conv = await self.redis.hgetall(k.conversation(conversation_id))
        if not conv:
            raise AdminError(f"conversation {conversation_id} does not exist (or has expired)")
        timeline = []
        for entry_id, f in await self.redis.xrange(k.timeline(conversation_id)):
            item: dict[str, Any] = {"entry": entry_id, **f}
            if f.get("message_id"):
                item["message"] = await self.redis.hgetall(k.message(f["message_id"]))
            if f.get("outbox_id"):
                item["delivery"] = await self.redis.hgetall(k.delivery(f["outbox_id"]))
            timeline.append(item)
        return {**conv, "timeline": timeline}

    async def export(self, ref: str) -> dict[str, Any]:
        """Everything stored about a customer, as JSON-able data."""
        cid = await self.customer_id(ref)
        out = await self.show(cid)
        out["conversations"] = [
            await self.conversation(c["id"])
            for c in out["conversations"]
            if c["status"] != "(expired)"
        ]
        out["merges"] = [
            f
            for _, f in await self.redis.xrange(self.keys.merges)
            if cid in (f.get("from"), f.get("into"))
        ]
        out["exported_at"] = time.time()
        return out

    # -- forgetting -------------------------------------------------------------
    async def forget(self, ref: str) -> dict[str, int]:
        """Erase a customer's personal data and message bodies everywhere in
        Redis; keep an anonymous profile with the counts. Returns what was
        removed."""
        k, r = self.keys, self.redis
        cid = await self.customer_id(ref)
        identities = list(await r.smembers(k.customer_identities(cid)))
        values = {i.partition(":")[2] for i in identities}
        conversations = [
            c for c, _ in await r.zrange(k.customer_conversations(cid), 0, -1, withscores=True)
        ]
        removed = {
            "messages": 0,
            "deliveries": 0,
            "conversations": 0,
            "queue_entries": 0,
            "outbox_entries": 0,
            "dead_letters": 0,
            "identities": len(identities),
            "chat_keys": 0,
            "adapter_keys": 0,
        }
        message_ids: set[str] = set()
        outbox_ids: set[str] = set()
        for conv_id in conversations:
            for _, f in await r.xrange(k.timeline(conv_id)):
                if f.get("message_id"):
                    message_ids.add(f["message_id"])
                if f.get("outbox_id"):
                    outbox_ids.add(f["outbox_id"])
        pipe = r.pipeline(transaction=False)
        for mid in message_ids:
            msg = await r.hgetall(k.message(mid))
            if msg.get("source_id"):
                pipe.delete(k.dedup(msg.get("channel", ""), msg["source_id"]))
            pipe.delete(k.message(mid))
        for oid in outbox_ids:
            pipe.delete(k.delivery(oid))
        for conv_id in conversations:
            for tk in await r.smembers(k.conversation_refs(conv_id)):
                pipe.delete(tk)
            pipe.delete(k.conversation(conv_id), k.timeline(conv_id), k.conversation_refs(conv_id))
        for ident in identities:
            pipe.delete(k.identity_of(ident))
        await pipe.execute()
        removed["messages"], removed["deliveries"] = len(message_ids), len(outbox_ids)
        removed["conversations"] = len(conversations)
        conv_set = set(conversations)

        # queue entries of this customer (their message is gone)
        async for key in r.scan_iter(match=k.queue_pattern, _type="stream"):
            for entry_id, f in await r.xrange(key):
                if f.get("customer_id") == cid:
                    await r.xack(key, QUEUE_GROUP, entry_id)
                    await r.xdel(key, entry_id)
                    removed["queue_entries"] += 1
        # replies waiting to be sent, now or after a retry
        for entry_id, f in await r.xrange(k.outbox):
            if _mentions(f.get("o", ""), conv_set, values):
                await r.xack(k.outbox, OUTBOX_GROUP, entry_id)
                await r.xdel(k.outbox, entry_id)
                removed["outbox_entries"] += 1
        for payload in await r.zrange(k.outbox_delayed, 0, -1):
            if _mentions(payload, conv_set, values):
                await r.zrem(k.outbox_delayed, payload)
                removed["outbox_entries"] += 1
        # dead letters and messages still waiting to be routed
        for entry_id, f in await r.xrange(k.deadletter):
            if _mentions(f.get("payload", ""), conv_set | message_ids, values):
                await r.xdel(k.deadletter, entry_id)
                removed["dead_letters"] += 1
        for p in range(self.store.partitions):
            stream = k.ingest(p)
            for entry_id, f in await r.xrange(stream):
                if _mentions(f.get("m", ""), set(), values):
                    await r.xack(stream, INGEST_GROUP, entry_id)
                    await r.xdel(stream, entry_id)

        # chat: each visitor's stream (agent replies and their own messages),
        # presence and pending e-mail claim; the hourly code count of each
        # address (named by a hash of it, which still finds it)
        visitors = [i.partition(":")[2] for i in identities if i.startswith("chat:")]
        emails = {i.partition(":")[2] for i in identities if i.startswith("email:")}
        chat_keys = [
            key
            for v in visitors
            for key in (k.chat_events(v), k.chat_online(v), k.chat_claim(v), k.chat_claim_wait(v))
        ]
        chat_keys += [k.claim_mails(address_digest(e)) for e in emails]
        # another visitor's pending claim of one of these addresses names it too
        async for key in r.scan_iter(match=k.chat_claim("*"), _type="hash"):
            if await r.hget(key, "email") in emails:
                chat_keys.append(key)
        if chat_keys:
            removed["chat_keys"] = await r.delete(*chat_keys)
        # channel adapters' own state: a voicemail waiting for its
        # transcription (the caller's number, the recording URL), the
        # provider's id of a reply sent...
        needles = {n for n in conv_set | message_ids | outbox_ids | values if n}
        async for key in r.scan_iter(match=k.adapter_state("*", "*"), _type="string"):
            raw = await r.get(key)
            if raw is not None and _holds(raw, needles):
                removed["adapter_keys"] += await r.delete(key)

        # an anonymous profile: the counts stay, nothing that identifies
        ck = k.customer(cid)
        profile = await r.hgetall(ck)
        keep = {
            f: profile[f]
            for f in ("id", "created_at", "message_count", "conversation_count", "repeat_contacts")
            if f in profile
        }
        pipe = r.pipeline(transaction=True)
        pipe.delete(
            ck, k.customer_identities(cid), k.customer_channels(cid), k.customer_conversations(cid)
        )
        pipe.hset(ck, mapping={**keep, "forgotten_at": f"{time.time():.3f}"})
        await pipe.execute()
        return removed


# -- reading for people: `router customer show` / `conversation show` -----------


def local_time(ts: str | float | None) -> str:
    """A stored Unix time in the viewer's time zone: ``2026-11-30 09:00:00+01:00``."""
    if ts is None or ts == "":
        return "-"
    return datetime.fromtimestamp(float(ts)).astimezone().isoformat(" ", "seconds")


def _count(n: int | str | None, what: str) -> str:
    n = int(n or 0)
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _decision_lines(decision: dict[str, Any] | None, indent: str) -> list[str]:
    """A routing decision as lines: where, when due, then its reasons one a line."""
    if not decision:
        return [f"{indent}(no routing decision recorded)"]
    where = f"routed to {decision.get('queue')}"
    details = [f"priority {decision.get('priority')}"]
    if decision.get("rule"):
        details.append(f"rule {decision['rule']}")
    if decision.get("team"):
        details.append(f"team {decision['team']} {'open' if decision.get('open') else 'closed'}")
    lines = [f"{indent}{where} ({', '.join(details)})"]
    if decision.get("due_at"):
        lines.append(f"{indent}first reply due {local_time(decision['due_at'])}")
    lines.append(f"{indent}why:")
    lines += [f"{indent}  - {reason}" for reason in decision.get("reasons") or []]
    return lines


def format_customer(
    profile: dict[str, Any], routing: dict[str, dict[str, Any]], shown: int = 5
) -> str:
    """``Admin.show`` (plus ``routing_of`` of its newest conversations) for a terminal."""
    if profile.get("forgotten_at"):
        return f"customer {profile.get('id')}: forgotten on {local_time(profile['forgotten_at'])}"
    zone = profile.get("timezone") or "-"
    if profile.get("timezone") and profile.get("timezone_source"):
        zone += f" (from {profile['timezone_source']})"
    language = profile.get("language") or "-"
    if profile.get("language_preference"):
        language += f" (prefers {profile['language_preference']})"
    rows = [
        ("identities", ", ".join(profile.get("identities") or []) or "-"),
        ("channels", ", ".join(profile.get("channels") or []) or "-"),
        ("language", language),
        ("time zone", zone),
        ("country", profile.get("country") or "-"),
        ("tier", profile.get("tier") or "-"),
        ("first seen", local_time(profile.get("created_at"))),
        ("last seen", local_time(profile.get("last_seen"))),
        (
            "messages",
            f"{_count(profile.get('message_count'), 'message')} in "
            f"{_count(profile.get('conversation_count'), 'conversation')}",
        ),
    ]
    rows += [
        (name.replace("_", " "), profile[name])
        for name in sorted(profile)
        if name.startswith("consent_") and not name.endswith("_at")
    ]
    name = profile.get("display_name")
    lines = [f"customer {profile.get('id')}" + (f"  {name}" if name else "")]
    lines += [f"  {label:<12}{value}" for label, value in rows]
    conversations = sorted(
        profile.get("conversations") or [], key=lambda c: float(c["created_at"]), reverse=True
    )
    lines += ["", "conversations, newest first:" if conversations else "no conversations"]
    for c in conversations[:shown]:
        lines.append(
            f"  {c['id']}  {c['status']}, {c.get('channel') or '-'}, "
            f"{_count(c.get('messages'), 'message')}, "
            f"last activity {local_time(c.get('last_activity'))}"
        )
        r = routing.get(c["id"]) or {}
        if r.get("queue"):
            owner = f", owned by {r['owner']}" if r.get("owner") else ""
            lines.append(
                f"    queue {r['queue']}{owner}  "
                f"(claim it: router queue pull {r['queue']} --agent NAME)"
            )
            lines += _decision_lines(r.get("decision"), "    ")
    if len(conversations) > shown:
        lines.append(f"  ... and {len(conversations) - shown} older (--json lists them all)")
    return "\n".join(lines)


def format_conversation(history: dict[str, Any]) -> str:
    """``Admin.conversation`` for a terminal: the state, then the timeline with
    each message's routing reasons and each reply's delivery state."""
    rows = [
        ("customer", history.get("customer_id") or "-"),
        ("channel", history.get("channel") or "-"),
        ("replies to", history.get("reply_to") or "-"),
        ("language", history.get("language") or "-"),
        ("queue", history.get("queue") or "-"),
        ("owner", history.get("owner") or "-"),
        ("subject", history.get("subject") or "-"),
        ("created", local_time(history.get("created_at"))),
        ("last activity", local_time(history.get("last_activity"))),
    ]
    lines = [f"conversation {history.get('id')}  {history.get('status', '-')}"]
    lines += [f"  {label:<14}{value}" for label, value in rows]
    lines += ["", "timeline:"]
    for item in history.get("timeline") or []:
        when = local_time(item.get("at"))
        if item.get("direction") == "in":
            m = item.get("message") or {}
            sender = m.get("sender") or "-"
            lines.append(f"  {when}  in  {item.get('channel')}  from {sender}  {m.get('id', '')}")
            lines += [f"      {line}" for line in (m.get("text") or "(no text)").splitlines()]
            raw = m.get("decision")
            lines += _decision_lines(orjson.loads(raw) if raw else None, "    ")
        elif item.get("direction") == "event":  # e.g. a transfer between queues
            kind = item.get("type") or "event"
            detail = "  ".join(
                f"{k} {item[k]}" for k in ("from_queue", "queue", "agent", "by") if item.get(k)
            )
            lines.append(f"  {when}  --  {kind}  {detail}".rstrip())
            if item.get("note"):
                lines += [f"      {line}" for line in item["note"].splitlines()]
        else:
            d = item.get("delivery") or {}
            who = f"by {item['agent']}" if item.get("agent") else "automatic"
            state = d.get("status", "(expired)")
            if d.get("attempts") and int(d["attempts"]) > 1:
                state += f" after {d['attempts']} attempts"
            lines.append(
                f"  {when}  out {item.get('channel')}  {d.get('kind', 'reply')} {who}  "
                f"{item.get('outbox_id', '')}  {state}"
            )
            lines += [f"      {line}" for line in (d.get("text") or "").splitlines()]
            if d.get("last_error"):
                lines.append(f"    error: {d['last_error']}")
    return "\n".join(lines)


def _holds(raw: str, needles: set[str]) -> bool:
    """Does a stored JSON value hold one of ``needles`` as a whole string (a
    number, an id; or ``whatsapp:+351...``)? Whole strings only: an adapter's
    cursor that merely contains a short id as digits must stay."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item in needles or item.rpartition(":")[2] in needles:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _mentions(payload: str, ids: Iterable[str], values: Iterable[str]) -> bool:
    """Does a stored JSON payload belong to these conversations/messages or
    carry one of these addresses or numbers?"""
    if not payload:
        return False
    return any(i and i in payload for i in ids) or any(v and v in payload for v in values)
