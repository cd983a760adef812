"""The small interface every channel adapter implements.

An adapter receives its channel's events, normalises each into an
``InboundMessage`` and hands it to ``ingest`` (it must not acknowledge the
source before ``ingest`` returns); it may serve HTTP routes on the daemon's
server, and it may provide a ``Sender`` for replies on its channel.
Adapters never import routing, and routing never imports an adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True)
class VoicePrompt:
    """What a phone line says to a caller: language, TTS locale, text."""

    language: str
    locale: str
    text: str


class AdapterState(Protocol):
    """A little durable state an adapter keeps about its wire (e.g. a voicemail
    waiting for its transcription); it survives restarts. Keys are the
    adapter's own; values are JSON-able."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: Any, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def items(self, prefix: str) -> list[tuple[str, Any]]: ...

    async def lease(self, key: str, owner: str, ttl: float) -> bool:
        """Take or keep an exclusive lease (e.g. "only one daemon polls this
        account"); True while ``owner`` holds it."""
        ...


@dataclass
class AdapterContext:
    """What the daemon gives an adapter: the door in, its state, and a way to
    report what happened to an outbound message. Nothing about routing."""

    ingest: IngestFn
    state: AdapterState
    # (outbox id, status, error or None) -> recorded on the delivery record
    report_delivery: Callable[[str, str, str | None], Awaitable[None]]
    accepting: Callable[[], bool]
    # what a phone line should say to a caller (language, honest ETA)
    voice_prompt: Callable[[str, str], Awaitable[VoicePrompt]] | None = None
    # this daemon's name (lease owner)
    node: str = ""
