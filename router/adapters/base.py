"""The small interface every channel adapter implements.

An adapter receives its channel's events, normalises each into an
``InboundMessage`` and hands it to ``ingest`` (it must not acknowledge the
source before ``ingest`` returns); it may serve HTTP routes on the daemon's
server, and it may provide a ``Sender`` for replies on its channel.
Adapters never import routing, and routing never imports an adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from aiohttp import web

from router.ingest import IngestResult
from router.model import InboundMessage, OutboundMessage

if TYPE_CHECKING:
    from router.metrics import Metrics
    from router.store import Store

IngestFn = Callable[[InboundMessage], Awaitable[IngestResult]]


class Adapter(Protocol):
    name: str

    def routes(self) -> list[web.RouteDef]:
        """HTTP routes this adapter serves on the daemon's server."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, listen, and return once ``stop`` is set (promptly: the daemon
        cancels a loop that outlives its share of ``shutdown_timeout``).

        Every background task of the adapter lives inside this call (a
        ``TaskGroup`` of its own if it needs several), so the daemon's task
        group owns it: nothing runs hidden, and an exception escaping ``run``
        stops the daemon loudly. An adapter without a loop of its own (HTTP
        routes only) just waits for ``stop``.
        """
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


@dataclass(frozen=True)
class Limits:
    """The daemon-wide limits an adapter honours (live: they follow reloads)."""

    max_body_bytes: int = 1 << 20
    max_text_chars: int = 20_000
    message_retention: float = 30 * 86400.0


@dataclass
class AdapterContext:
    """What the daemon gives every channel, the same for all: the door in, its
    state, a way to report what happened to an outbound message, and the
    daemon's shared pieces. Nothing about routing, and no whole ``Config``:
    a channel's own settings come to its factory separately."""

    ingest: IngestFn
    state: AdapterState
    # (outbox id, status, error or None) -> recorded on the delivery record
    report_delivery: Callable[[str, str, str | None], Awaitable[None]]
    accepting: Callable[[], bool]
    # what a phone line should say to a caller (language, honest ETA)
    voice_prompt: Callable[[str, str], Awaitable[VoicePrompt]] | None = None
    # this daemon's name (lease owner)
    node: str = ""
    store: Store | None = None
    metrics: Metrics | None = None
    log: Any = None  # a structlog logger bound to the channel
    limits: Callable[[], Limits] = Limits
    # can the daemon send on this channel now (e.g. "email": is SMTP configured)?
    can_send: Callable[[str], bool] = lambda channel: False
    # (source, raw bytes, reason) -> kept in the dead-letter stream
    dead_letter: Callable[[str, bytes, str], Awaitable[None]] | None = None


S = TypeVar("S")


@dataclass
class Channel(Generic[S]):
    """What a channel's factory returns: everything the daemon needs to run it.

    ``adapter`` receives (None for an outbound-only channel); ``senders``
    deliver replies by channel name (one adapter may serve several: Twilio
    speaks sms, mms, whatsapp and voice); ``sends`` says which of them can
    send under given settings (evaluated again on reload); ``restart_only``
    names the settings of the channel's section a reload may not change
    (besides ``enabled``, which never changes without a restart);
    ``closers`` run at shutdown, after the last reply went out.
    """

    adapter: Adapter | None
    senders: dict[str, Sender] = field(default_factory=dict)
    sends: Callable[[S], frozenset[str]] | None = None
    restart_only: tuple[str, ...] = ()
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def sendable(self, settings: S) -> frozenset[str]:
        """The channels this one can send on under ``settings``."""
        if self.sends is not None:
            return self.sends(settings)
        return frozenset(self.senders)


# ``factory(settings, ctx, public_url) -> Channel``: how a channel plugs in.
# ``settings`` returns the channel's own config section, live (it follows
# reloads; None for a channel without a section); ``public_url`` returns the
# daemon's public base URL (or None). A factory does no I/O: connecting
# happens in ``Adapter.run``.
ChannelFactory = Callable[
    [Callable[[], Any], AdapterContext, Callable[[], "str | None"]], Channel[Any]
]


async def run_until(stop: asyncio.Event, loops: dict[str, Coroutine[Any, Any, None]]) -> None:
    """Run an adapter's ``loops`` (by task name, each meant to run forever) in one
    task group until ``stop`` is set, then cancel them and wait for them.

    A loop that raises cancels the others, and the error escapes ``run``:
    the daemon logs it and stops (systemd restarts it).
    """
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(coro, name=name) for name, coro in loops.items()]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
