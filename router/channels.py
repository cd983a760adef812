"""The channels the daemon can run: one table, the only place a channel is plugged in.

Each entry names the channel's factory (``router.adapters.base.ChannelFactory``)
and the channel names it speaks, each with the kind of identity its senders
have (None: sniffed from the value, as the generic API does). The daemon
builds every enabled channel from this table; the rest of the code derives
what it needs from it (``IDENTITY_KINDS`` for profiles, ``PHONE_CHANNELS``
for opt-outs, ``CHANNEL_NAMES`` for metric labels).

Factories are named as ``"module:function"`` and imported only when their
channel is enabled: this module is imported by profiles, metrics and the
outbox, which the adapters themselves import, and a daemon without X never
loads tweepy. A test may put a factory in directly.

To add a channel: write ``router/adapters/<name>.py`` with an adapter, its
senders and a ``factory``, then add one line here (and its settings section
in ``router/config/channels.py`` if it has settings).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.adapters.base import ChannelFactory


@dataclass(frozen=True)
class ChannelPlugin:
    """One table entry: how to build a channel and the channel names it speaks."""

    factory: str | ChannelFactory  # "module:function", or the function itself
    identities: Mapping[str, str | None]  # channel name -> identity kind of its senders
    # built even when its section says enabled: false (it answers "disabled"
    # itself, and enabling it is a reload); else built only when enabled
    always: bool = False

    def load(self) -> ChannelFactory:
        """The factory function (imported now if named)."""
        if not isinstance(self.factory, str):
            return self.factory
        module, _, name = self.factory.partition(":")
        factory: ChannelFactory = getattr(importlib.import_module(module), name)
        return factory


# Keyed by the channel's settings section under ``channels:`` in the config.
CHANNELS: dict[str, ChannelPlugin] = {
    "api": ChannelPlugin("router.adapters.api:factory", {"api": None}, always=True),
    "email": ChannelPlugin("router.adapters.email:factory", {"email": "email"}),
    "chat": ChannelPlugin("router.adapters.chat:factory", {"chat": "chat"}),
    "x": ChannelPlugin("router.adapters.x:factory", {"x": "x", "x_dm": "x"}),
    "twilio": ChannelPlugin(
        "router.adapters.twilio:factory",
        {"sms": "phone", "mms": "phone", "whatsapp": "phone", "voice": "phone"},
    ),
}

# Channel name -> the identity kind of its senders, for channels with a fixed kind.
IDENTITY_KINDS: Mapping[str, str] = {
    channel: kind
    for plugin in CHANNELS.values()
    for channel, kind in plugin.identities.items()
    if kind is not None
}
# Every channel name the daemon's own adapters speak.
CHANNEL_NAMES = frozenset(c for plugin in CHANNELS.values() for c in plugin.identities)
# Channels that send to a phone number: an opt-out (STOP) blocks them all.
PHONE_CHANNELS = frozenset(c for c, kind in IDENTITY_KINDS.items() if kind == "phone")
