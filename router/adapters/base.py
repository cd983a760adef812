"""The small interface every channel adapter implements.

An adapter receives its channel's events, normalises each into an
``InboundMessage`` and hands it to ``ingest`` (it must not acknowledge the
source before ``ingest`` returns); it may serve HTTP routes on the daemon's
server, and it may provide a ``Sender`` for replies on its channel.
Adapters never import routing, and routing never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from router.ingest import IngestResult
from router.model import InboundMessage, OutboundMessage

IngestFn = Callable[[InboundMessage], Awaitable[IngestResult]]


class Adapter(Protocol):
    name: str

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this adapter serves on the daemon's server."""
        ...

    async def start(self) -> None:
        """Connect and begin listening (background work is the adapter's own task)."""
        ...

    async def stop(self) -> None:
        """Stop taking new events; finish or hand back what is in flight."""
        ...

    def ready(self) -> tuple[bool, str]:
        """Connected and working? With a short reason for /readyz."""
        ...


class PermanentSendError(Exception):
    """The channel refused the message for good (bad address, opted out...): no retry."""


class Sender(Protocol):
    """Delivers outbound messages of one channel. Adapters implement it."""

    channel: str

    async def send(self, message: OutboundMessage) -> str:
        """Deliver ``message``; return the channel's id for it (may be "").

        Raise PermanentSendError when retrying cannot help; any other
        exception is retried with backoff.
        """
        ...
