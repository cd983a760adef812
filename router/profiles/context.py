"""Who sent a message and which conversation it belongs to.

The routing worker asks :func:`identify_many` for the customer behind each
message, in one script call per batch. The script (``scripts.IDENTIFY``)
finds the customer by any of the message's identities (the sender plus any
verified identity the channel adds, such as the e-mail address a chat
visitor proved with the code e-mailed to it; a merely typed one is a claim,
never an identity: see claims.py), creates one on first contact, and merges
two profiles when one message ties their identities together, atomically,
so two messages of a new customer on two channels at the same instant still
make one profile.
It returns the profile, the customer's latest conversation and the
conversation the message refers to (an e-mail's In-Reply-To, an X
conversation id, a chat session).

:func:`conversation_joined` then applies the threading rule: the referenced
conversation (if open, or resolved within the window, which reopens it),
else the customer's latest conversation if active within the window
(whatever the channel; a resolved one reopens), else a new one.
:class:`BatchThreads` keeps that rule true inside one routing batch (a
customer's later message sees the conversation an earlier one joined), and
the commit script (``lua/commit_route.lua``) applies its second clause once
more at commit, where it is atomic: a message that would open a conversation
joins the one another worker opened a moment before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from router.keys import Keys
from router.model import InboundMessage, new_id
from router.scripts import Scripts


@dataclass
class Context:
    """A customer profile and their conversations, as routing sees them."""

    customer_id: str
    created: bool
    customer: dict[str, str] = field(default_factory=dict)
    # The customer's latest conversation.
    conversation: dict[str, str] = field(default_factory=dict)
    # The conversation this message refers to by a channel reference, if any.
    referenced: dict[str, str] = field(default_factory=dict)
    # Whether the owner (an agent) of the conversation joined is online now.
    owner_online: bool = False
    merged: int = 0


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


async def identify_many(
    keys: Keys, scripts: Scripts, messages: Sequence[InboundMessage], now: float
) -> list[Context]:
    """Resolve each message's customer (creating or merging profiles), in order.

    Messages with the same identities and references in one batch are looked
    up once and share one Context (later messages see what earlier ones did).
    """
    wanted: dict[tuple, int] = {}
    items: list[tuple[list[str], str, list[str]]] = []
    slots: list[int] = []
    for m in messages:
        identities = [str(m.sender), *(str(i) for i in m.identities if i != m.sender)]
        refs = [keys.thread(m.channel, r) for r in m.references]
        key = (tuple(identities), tuple(refs))
        if key not in wanted:
            wanted[key] = len(items)
            items.append((identities, new_id("c"), refs))
        slots.append(wanted[key])
    rows = await scripts.identify(args=[f"{now:.3f}", keys.prefix, orjson.dumps(items)])
    contexts = []
    for r in rows:
        first, second = r.index("|"), r.index("|", r.index("|") + 1)
        contexts.append(
            Context(
                customer_id=r[0],
                created=r[1] == 1,
                merged=int(r[2]),
                owner_online=r[3] == 1,
                customer=_pairs(r[4:first]),
                conversation=_pairs(r[first + 1 : second]),
                referenced=_pairs(r[second + 1 :]),
            )
        )
    return [contexts[i] for i in slots]


def _recent(conv: dict[str, str], window: float, now: float) -> bool:
    return now - float(conv.get("last_activity", 0) or 0) <= window


def conversation_joined(ctx: Context, window: float, now: float) -> dict[str, str] | None:
    """The existing conversation a message now joins, or None for a new one.

    1. the referenced conversation, if it is not resolved, or was resolved
       but active within ``window`` (it reopens);
    2. else the customer's latest conversation if active within ``window``,
       whatever the channel (a resolved one reopens);
    3. else None: a new conversation.
    """
    ref = ctx.referenced
    if ref.get("id") and ref.get("customer_id") == ctx.customer_id:
        if ref.get("status", "open") != "resolved" or _recent(ref, window, now):
            return ref
    conv = ctx.conversation
    if conv.get("id") and _recent(conv, window, now):
        return conv
    return None


def thread(ctx: Context, message: InboundMessage, window: float, now: float) -> tuple[str, bool]:
    """The conversation ``message`` joins: (conversation id, is new)."""
    joined = conversation_joined(ctx, window, now)
    if joined is not None:
        return joined["id"], False
    return new_id("v"), True


class BatchThreads:
    """The threading state of one routing batch, as its later messages must see it.

    Identify reads Redis once for the whole batch, before anything in it is
    committed; so a customer's second message in the batch must see the
    conversation their first one joined or opened, not what Redis held.
    """

    def __init__(self) -> None:
        self._state: dict[str, Context] = {}

    def context(self, read: Context) -> Context:
        """``read`` (what identify read from Redis) with what earlier messages
        of the same customer in this batch left behind."""
        state = self._state.setdefault(read.customer_id, read)
        referenced = read.referenced
        if referenced.get("id") and referenced.get("id") == state.conversation.get("id"):
            referenced = state.conversation  # updated by an earlier message of the batch
        return Context(
            customer_id=state.customer_id,
            created=read.created,
            customer=state.customer,
            conversation=state.conversation,
            referenced=referenced,
            owner_online=read.owner_online,
        )

    def advance(
        self, ctx: Context, conversation_id: str, new: bool, language: str, now: float
    ) -> None:
        """Record that the message of ``ctx`` joined (or opened, ``new``) a
        conversation, as the commit will write it."""
        state = self._state[ctx.customer_id]
        joined = (
            {}
            if new
            else (
                ctx.referenced if ctx.referenced.get("id") == conversation_id else ctx.conversation
            )
        )
        state.customer["open_conversation"] = conversation_id
        state.conversation = {
            **joined,
            "id": conversation_id,
            "customer_id": state.customer_id,
            "status": "open",
            "last_activity": f"{now:.3f}",
            "language": language,
            "inbound_since_reply": str(int(joined.get("inbound_since_reply", 0) or 0) + 1),
        }
