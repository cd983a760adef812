"""The dead-letter stream: what could not be routed or sent, with the reason.

Each entry keeps the original payload, so once the cause is fixed (a config
that routes the language, a channel that is enabled again) it can be put back
where it came from with ``router dead-letters replay``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from router.scripts import flat
from router.store import Store


def dead_letter_fields(kind: str, stage: str, reason: str, payload: Any, **extra: Any) -> list:
    """The flat field list of a dead-letter entry (see docs/redis-schema.md)."""
    fields: dict[str, Any] = {
        "kind": kind,
        "stage": stage,
        "reason": reason[:2000],
        "failed_at": f"{time.time():.3f}",
        **extra,
        "payload": payload if payload is not None else "",
    }
    return flat(fields)


@dataclass
class DeadLetter:
    """One dead-letter entry."""

    id: str
    fields: dict[str, str]

    @property
    def kind(self) -> str:
        return self.fields.get("kind", "")

    def summary(self) -> dict[str, Any]:
        """Everything but the payload (which may hold a customer's text)."""
        out: dict[str, Any] = {"id": self.id}
        out.update({k: v for k, v in self.fields.items() if k != "payload"})
        return out


async def list_dead_letters(store: Store, count: int = 100) -> list[DeadLetter]:
    """The oldest ``count`` dead letters."""
    rows = await store.redis.xrange(store.keys.deadletter, count=count)
    return [DeadLetter(i, f) for i, f in rows]


async def replay(store: Store, ids: list[str]) -> list[tuple[str, str | None, str]]:
    """Put dead letters back where they came from.

    Returns (dead-letter id, new stream entry id or None, note) per id. An
    ingest message goes back to its ingest partition (routing is idempotent:
    a message that did get routed is not queued twice); a reply goes back to
    the outbox with its attempt count reset.
    """
    keys = store.keys
    out: list[tuple[str, str | None, str]] = []
    for dl_id in ids:
        rows = await store.redis.xrange(keys.deadletter, dl_id, dl_id, count=1)
        if not rows:
            out.append((dl_id, None, "no such dead letter"))
            continue
        fields = rows[0][1]
        kind = fields.get("kind")
        payload = fields.get("payload", "")
        if kind == "ingest":
            target = fields.get("source") or ""
            if not keys.is_ingest(target):
                out.append((dl_id, None, "entry does not name its ingest stream"))
                continue
            field = "m"
        elif kind == "outbox":
            from router.model import OutboundMessage

            try:
                msg = OutboundMessage.from_json(payload)
            except Exception as exc:
                out.append((dl_id, None, f"payload is not a reply: {exc}"))
                continue
            msg.attempt = 0
            payload = msg.to_json().decode()
            await store.redis.hset(keys.delivery(msg.id), mapping={"status": "queued"})
            target, field = keys.outbox, "o"
        else:
            out.append((dl_id, None, f"unknown kind {kind!r}"))
            continue
        new_id = await store.scripts.replay(
            keys=[keys.deadletter, target], args=[dl_id, field, payload]
        )
        out.append((dl_id, new_id, "replayed" if new_id else "already replayed"))
    return out


async def dead_letter_raw(store: Store, source: str, raw: bytes, reason: str) -> str:
    """Keep something a channel received but could not turn into a message (an
    e-mail that cannot be parsed), base64-encoded, with the reason."""
    import base64

    fields = {
        "kind": "raw",
        "stage": "parse",
        "reason": reason[:2000],
        "failed_at": f"{time.time():.3f}",
        "source": source,
        "encoding": "base64",
        "payload": base64.b64encode(raw).decode(),
    }
    return str(await store.redis.xadd(store.keys.deadletter, fields))
