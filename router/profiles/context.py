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

import orjson

from router.keys import Keys
from router.model import Identity, InboundMessage, new_id
from router.scripts import Scripts


@dataclass
class Context:
    """A customer profile and their open conversation, as routing sees them."""

    customer_id: str
    created: bool
    customer: dict[str, str] = field(default_factory=dict)
    conversation: dict[str, str] = field(default_factory=dict)
    # Whether the conversation's owner (an agent) is online now.
    owner_online: bool = False


async def identify_many(
    keys: Keys, scripts: Scripts, identities: Sequence[Identity], now: float
) -> list[Context]:
    """Resolve each identity to a customer (creating new ones), in order, in one call.

    An identity that occurs several times in the batch is looked up once;
    its occurrences share one Context (later messages see earlier ones).
    """
    distinct = list(dict.fromkeys(identities))
    items = [(keys.identity(i.kind, i.value), new_id("c"), str(i)) for i in distinct]
    rows = await scripts.identify(args=[int(now), keys.prefix, orjson.dumps(items)])
    found: dict[Identity, Context] = {}
    for ident, r in zip(distinct, rows, strict=True):
        sep = r.index("|")
        cust = r[2:sep]
        conv = r[sep + 1 :]
        found[ident] = Context(
            customer_id=r[0],
            created=r[1] == 1,
            customer=dict(zip(cust[::2], cust[1::2], strict=True)),
            conversation=dict(zip(conv[::2], conv[1::2], strict=True)),
        )
    return [found[i] for i in identities]


def joins_open_conversation(ctx: Context, window: float, now: float) -> bool:
    """Does a message now continue the customer's open conversation?

    Yes if that conversation is not resolved and saw activity within
    ``window`` seconds, whatever the channel.
    """
    conv = ctx.conversation
    if not conv.get("id") or conv.get("status", "open") == "resolved":
        return False
    return now - float(conv.get("last_activity", 0) or 0) <= window


def thread(ctx: Context, message: InboundMessage, window: float, now: float) -> tuple[str, bool]:
    """The conversation ``message`` joins: (conversation id, is new)."""
    if joins_open_conversation(ctx, window, now):
        return ctx.conversation["id"], False
    return new_id("v"), True
