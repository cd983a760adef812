"""Who sent a message and which conversation it belongs to.

The routing worker asks :func:`identify_many` for the customer behind each
sender (creating the profile on first contact) together with the state of
the customer's open conversation, in one round trip per batch, then threads
each message with :func:`thread`. Both are deliberately small here; identity
merge across channels builds on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from router.keys import Keys
from router.model import Identity, InboundMessage, new_id
from router.scripts import Scripts
from router.store import evalsha_many


def identities_key(keys: Keys, customer_id: str) -> str:
    """Set: the identity strings (``email:ana@example.com``) of a customer."""
    return f"{keys.prefix}customer:{{{customer_id}}}:identities"


@dataclass
class Context:
    """A customer profile and their open conversation, as routing sees them."""

    customer_id: str
    created: bool
    customer: dict[str, str] = field(default_factory=dict)
    conversation: dict[str, str] = field(default_factory=dict)


async def identify_many(
    redis: Redis, keys: Keys, scripts: Scripts, identities: Sequence[Identity], now: float
) -> list[Context]:
    """Resolve each identity to a customer (creating new ones), in order."""
    calls = []
    for ident in identities:
        new = new_id("c")
        calls.append(
            (
                [
                    keys.identity(ident.kind, ident.value),
                    keys.customer(new),
                    identities_key(keys, new),
                ],
                [new, int(now), str(ident), keys.prefix],
            )
        )
    results = await evalsha_many(redis, scripts.identify, calls)
    out = []
    for r in results:
        if isinstance(r, Exception):
            raise r
        sep = r.index("|")
        cust = r[2:sep]
        conv = r[sep + 1 :]
        out.append(
            Context(
                customer_id=r[0],
                created=bool(int(r[1])),
                customer=dict(zip(cust[::2], cust[1::2], strict=True)),
                conversation=dict(zip(conv[::2], conv[1::2], strict=True)),
            )
        )
    return out


def thread(ctx: Context, message: InboundMessage, window: float, now: float) -> tuple[str, bool]:
    """The conversation ``message`` joins: (conversation id, is new).

    The customer's open conversation if it saw activity within ``window``
    seconds, whatever the channel; otherwise a new one.
    """
    conv = ctx.conversation
    if conv.get("id") and conv.get("status", "open") != "resolved":
        last = float(conv.get("last_activity", 0) or 0)
        if now - last <= window:
            return conv["id"], False
    return new_id("v"), True
