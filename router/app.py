"""The daemon's lifecycle: start, serve, reload, drain, stop.

Start: Redis (the embedded one if configured, restarted whenever it dies),
schema check, consumer groups, ingest, adapters, HTTP, routing and outbox
workers, then READY=1.
SIGHUP reloads the config (validated first; on error the old one stays and
the error is logged with file and line). SIGTERM/SIGINT drains: intake stops
(new requests get 503), in-flight requests and the routing batch in hand
finish, leases are released, and the process exits within
``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from router.adapters.api import ApiAdapter, ApiCallbackSender
from router.adapters.base import Adapter, AdapterContext, Sender
from router.adapters.chat import ChatAdapter, ChatHub, ChatSender
from router.adapters.imap import ImapAdapter
from router.adapters.smtp import SmtpSender
from router.adapters.twilio import TwilioAdapter, TwilioSender
from router.adapters.x import XAdapter, XSender
from router.agent import AgentClient, send_transcript
from router.config import Config, load_config
from router.deadletters import dead_letter_raw
from router.embedded import EmbeddedRedis
from router.http import CappedTCPSite, build_app, raise_open_file_limit
from router.ingest import Ingestor
from router.metrics import Metrics
from router.model import OutboundMessage
from router.outbox import OutboxWorker, record_delivery_report
from router.overflow import OverflowWorker
from router.pipeline import RoutingWorker
from router.routing import Routing
from router.status import ingest_status
from router.store import RedisAdapterState, Store
from router.systemd import Notifier
from router.voice import VoicePrompter
from router.yamlsource import ConfigError

log = structlog.get_logger("router.app")

TWILIO_CHANNELS = ("sms", "mms", "whatsapp", "voice")
X_CHANNELS = ("x", "x_dm")

# Settings only a restart can change: a reload that changes them is refused.
RESTART_ONLY = (
    ("redis",),
    ("http", "listen"),
    ("state_dir",),
    ("ingest", "partitions"),
    ("instance_id",),
    ("channels", "twilio", "enabled"),
    ("channels", "x", "enabled"),
    ("channels", "chat", "enabled"),
    ("channels", "email", "enabled"),
    ("channels", "email", "accounts"),
)


def queue_settings(cfg: Config) -> dict[str, dict]:
    """What agent tools may read about each queue (published in Redis)."""
    return {
        name: {"visibility_timeout": q.visibility_timeout, "description": q.description}
        for name, q in cfg.queues.items()
    }


def _get(cfg: Config, path: tuple[str, ...]) -> object:
    value: object = cfg
    for p in path:
        value = getattr(value, p)
    return value


class Daemon:
    """One running router process."""

    def __init__(self, config_path: Path, cfg: Config) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.routing: Routing | None = None
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.accepting = False
        self._stop = asyncio.Event()
        self._workers_stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.embedded: EmbeddedRedis | None = None
        self._redis_stop = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self.store: Store | None = None
        self.http_port: int | None = None
        self.adapters: list[Adapter] = []

    def config(self) -> Config:
        return self.cfg

    def current_routing(self) -> Routing:
        assert self.routing is not None
        return self.routing

    @staticmethod
    def sendable(cfg: Config) -> frozenset[str]:
        """Channels replies (and acknowledgements) can go out on."""
        channels = {"api"} if cfg.channels.api.callback else set()
        if cfg.channels.twilio.enabled:
            channels |= set(TWILIO_CHANNELS)
        if cfg.channels.x.enabled:
            channels |= set(X_CHANNELS)
        if cfg.channels.chat.enabled:
            channels.add("chat")
        if cfg.channels.email.enabled and cfg.channels.email.smtp is not None:
            channels.add("email")
        return frozenset(channels)

    # -- run -------------------------------------------------------------------
    async def run(self) -> int:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        # Calendars and the language detector load now, not on the first message.
        self.routing = await asyncio.to_thread(Routing.build, cfg, self.sendable(cfg))
        if cfg.embedded_redis:
            self.embedded = EmbeddedRedis(cfg.state_dir / "redis", cfg.redis.embedded.appendfsync)
            await self.embedded.start(cfg.redis.embedded.start_timeout)
            # restarted if it dies (until _close_redis); watched like a worker
            self._supervisor = asyncio.create_task(
                self.embedded.supervise(self._redis_stop, cfg.redis.embedded.start_timeout),
                name="embedded-redis",
            )
        store = self.store = Store.open(cfg)
        try:
            version = await self._connect(store)
        except Exception:
            await self._close_redis()
            raise
        ingestor = Ingestor(store, cfg.ingest.dedup_ttl, metrics=self.metrics)
        await ingestor.start()

        adapters, senders, closers = self._channels(cfg, store, ingestor)

        app = build_app(
            adapters=adapters,
            max_body_bytes=cfg.http.max_body_bytes,
            redis_ready=self._redis_ready,
            render_metrics=self._render_metrics,
            read_timeout=cfg.http.read_timeout,
        )
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=max(1.0, cfg.shutdown_timeout / 2),
            keepalive_timeout=cfg.http.keepalive_timeout,
            # after an early answer (413, 408) the rest of a body is read and
            # dropped for at most this long, so the client sees the answer
            lingering_time=2.0,
        )
        await runner.setup()
        host, port = cfg.http.host_port
        # room for the connections plus Redis, IMAP, SMTP and the embedded server
        soft, hard = raise_open_file_limit(cfg.http.max_connections + 512)
        if soft < cfg.http.max_connections + 64:
            log.warning(
                "open_file_limit_low",
                limit=soft,
                hard_limit=hard,
                max_connections=cfg.http.max_connections,
                hint="raise LimitNOFILE (systemd) / ulimit -n, or lower http.max_connections",
            )
        site = CappedTCPSite(
            runner,
            host,
            port,
            reuse_address=True,
            max_connections=cfg.http.max_connections,
            on_refused=self.metrics.http_refused.inc,
        )
        await site.start()
        self.http_port = _bound_port(runner) or port
        for a in adapters:
            await a.start()

        node = cfg.node_id
        routing = RoutingWorker(store, self.current_routing, self.metrics, node)
        outbox = OutboxWorker(store, self.config, senders, self.metrics, node)
        overflow = OverflowWorker(store, self.current_routing, self.metrics)
        tasks = [
            asyncio.create_task(routing.run(self._workers_stop), name="routing"),
            asyncio.create_task(outbox.run(self._workers_stop), name="outbox"),
            asyncio.create_task(overflow.run(self._workers_stop), name="overflow"),
        ]
        if self.notifier.watchdog_interval:
            tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        self.accepting = True
        # Everything allocated so far lives as long as the process: keep the
        # collector from scanning it again and again, and collect the young
        # generation less often (the hot path allocates many short-lived objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        log.info(
            "started",
            node=node,
            http=f"{host}:{self.http_port}",
            redis="embedded" if cfg.embedded_redis else _safe_url(cfg.redis.url),
            redis_version=version,
            config=str(self.config_path),
            queues=sorted(cfg.queues),
        )
        self.notifier.ready(f"routing; http on {host}:{self.http_port}")

        # Wait for SIGTERM/SIGINT, or for a worker to die (a bug: stop loudly).
        stop_wait = asyncio.create_task(self._stop.wait())
        watched = [stop_wait, *tasks, *([self._supervisor] if self._supervisor else [])]
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        crashed = [t for t in done if t is not stop_wait and t.exception() is not None]
        for t in crashed:
            log.error(
                "worker_crashed",
                worker=t.get_name(),
                exc_info=t.exception(),
                action="the daemon stops so systemd restarts it; report this bug",
            )

        # -- drain -------------------------------------------------------------
        started = time.monotonic()
        self.notifier.stopping()
        log.info("stopping", timeout_s=cfg.shutdown_timeout)
        self.accepting = False
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        for a in adapters:
            with contextlib.suppress(Exception):
                await a.stop()
        await runner.cleanup()  # stops listening, lets in-flight requests finish
        await ingestor.stop()
        self._workers_stop.set()
        remaining = max(1.0, cfg.shutdown_timeout - (time.monotonic() - started))
        _, pending = await asyncio.wait(tasks, timeout=remaining)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for close in closers:
            with contextlib.suppress(Exception):
                await close()
        stop_wait.cancel()
        await self._close_redis()
        log.info("stopped", seconds=round(time.monotonic() - started, 2))
        return 1 if crashed else 0

    def _channels(
        self, cfg: Config, store: Store, ingestor: Ingestor
    ) -> tuple[list[Adapter], dict[str, Sender], list[Callable[[], Awaitable[None]]]]:
        """The enabled channels: their adapters (inbound), senders (outbound by
        channel name) and what to close at shutdown."""
        adapters: list[Adapter] = self.adapters
        senders: dict[str, Sender] = {}
        closers: list[Callable[[], Awaitable[None]]] = []

        async def report(outbox_id: str, status: str, error: str | None) -> None:
            await record_delivery_report(store, outbox_id, status, error)

        def context(name: str, **extra: Any) -> AdapterContext:
            return AdapterContext(
                ingest=ingestor.ingest,
                state=RedisAdapterState(store, name),
                report_delivery=report,
                accepting=lambda: self.accepting,
                node=cfg.node_id,
                **extra,
            )

        api_sender = ApiCallbackSender(self.config)
        senders["api"] = api_sender
        closers.append(api_sender.close)
        adapters.append(
            ApiAdapter(
                self.config, ingestor.ingest, self.metrics, lambda: self.accepting, store=store
            )
        )
        email = cfg.channels.email
        if email.enabled:
            mail_ctx = context("email")

            async def dead_mail(source: str, raw: bytes, reason: str) -> None:
                await dead_letter_raw(store, source, raw, reason)
                self.metrics.dead_letters.labels("email").inc()

            if email.accounts:
                adapters.append(ImapAdapter(self.config, mail_ctx, dead_mail))
            if email.smtp is not None:
                senders["email"] = SmtpSender(self.config, mail_ctx)
        if cfg.channels.chat.enabled:
            hub = ChatHub(store.redis, store.keys.prefix)
            adapters.append(ChatAdapter(self.config, context("chat"), hub))

            async def transcript(message: OutboundMessage) -> None:
                if "email" in senders:  # a visitor who left gets it by e-mail
                    await send_transcript(store, message)

            senders["chat"] = ChatSender(self.config, hub, transcript)
        if cfg.channels.x.enabled:
            adapters.append(XAdapter(self.config, context("x")))
            for channel in X_CHANNELS:
                x_sender = XSender(channel, self.config)
                senders[channel] = x_sender
                closers.append(x_sender.close)
        if cfg.channels.twilio.enabled:
            twilio_ctx = context("twilio", voice_prompt=VoicePrompter(store, self.current_routing))
            adapters.append(TwilioAdapter(self.config, twilio_ctx))
            for channel in TWILIO_CHANNELS:
                sender = TwilioSender(channel, self.config, twilio_ctx)
                senders[channel] = sender
                closers.append(sender.close)
        return adapters, senders, closers

    async def _connect(self, store: Store) -> str:
        """Wait for Redis (it may be starting too), then check and prepare it."""
        deadline = time.monotonic() + 30
        while True:
            try:
                version = await store.check_server()
                break
            except (RedisError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"cannot reach Redis at {_safe_url(self.cfg.redis_url)}: {exc}"
                    ) from None
                log.warning("redis_unreachable", error=str(exc), action="retrying")
                await asyncio.sleep(1)
        await store.prepare(
            self.cfg.queues, queue_settings(self.cfg), self.cfg.routing.message_retention
        )
        return version

    async def _close_redis(self) -> None:
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()
        self._redis_stop.set()  # no restart of a server we are stopping
        if self._supervisor is not None:
            with contextlib.suppress(Exception):
                await self._supervisor
        if self.embedded is not None:
            await self.embedded.stop()

    async def _watchdog(self) -> None:
        assert self.notifier.watchdog_interval
        while True:
            # Only claim liveness while the event loop turns and Redis answers.
            ok, _ = await self._redis_ready()
            if ok:
                self.notifier.watchdog()
            await asyncio.sleep(self.notifier.watchdog_interval)

    async def _redis_ready(self) -> tuple[bool, str]:
        if self.store is None:
            return False, "not connected"
        try:
            await asyncio.wait_for(self.store.redis.ping(), timeout=2)
        except Exception as exc:
            return False, f"unreachable: {type(exc).__name__}"
        return True, "ok"

    async def _render_metrics(self) -> bytes:
        if self.store is not None:
            with contextlib.suppress(RedisError, OSError):
                for s in await AgentClient(self.store).status():
                    if s.queue not in self.cfg.queues:
                        continue  # a label is a configured queue, never a stray key
                    self.metrics.queue_depth.labels(s.queue).set(s.depth)
                    self.metrics.queue_oldest_age.labels(s.queue).set(s.oldest_age_seconds or 0)
                ingest = await ingest_status(self.store)
                self.metrics.ingest_backlog.set(ingest.backlog)
                self.metrics.ingest_oldest_age.set(ingest.oldest_age_seconds or 0)
        for a in self.adapters:
            self.metrics.adapter_ready.labels(a.name).set(1.0 if a.ready()[0] else 0.0)
            for name, value in getattr(a, "gauges", dict)().items():
                self.metrics.adapter_state.labels(a.name, name).set(value)
        return await self.metrics.render_async()

    # -- reload ----------------------------------------------------------------
    async def reload(self) -> bool:
        """Load the config again; swap it in only if it is valid."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
                changed = [".".join(p) for p in RESTART_ONLY if _get(new, p) != _get(self.cfg, p)]
                if changed:
                    raise ConfigError(
                        [
                            f"{self.config_path}:1: changing {', '.join(changed)} needs a restart "
                            "(systemctl restart router); nothing was changed"
                        ]
                    )
                routing = await asyncio.to_thread(Routing.build, new, self.sendable(new))
                assert self.store is not None
                await self.store.prepare(
                    new.queues, queue_settings(new), new.routing.message_retention
                )
            except ConfigError as exc:
                self.metrics.config_reloads.labels("error").inc()
                log.error(
                    "config_reload_refused",
                    problems=exc.problems,
                    action="fix the file and send SIGHUP again; the old config stays live",
                )
                return False
            except (RedisError, OSError) as exc:
                self.metrics.config_reloads.labels("error").inc()
                log.error(
                    "config_reload_failed",
                    error=str(exc),
                    action="Redis was unreachable; the old config stays live, retry",
                )
                return False
            finally:
                self.notifier.ready()
            self.cfg = new
            self.routing = routing
            self.metrics.config_reloads.labels("ok").inc()
            log.info(
                "config_reloaded",
                config=str(self.config_path),
                queues=sorted(new.queues),
                rules=len(new.rules),
            )
            return True


def _bound_port(runner: web.AppRunner) -> int | None:
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
    return None


def _safe_url(url: str) -> str:
    """A Redis URL without its password, for logs."""
    import re

    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


async def serve(config_path: Path) -> int:
    """Load the config and run the daemon until it is told to stop."""
    cfg = load_config(config_path)
    from router.logs import configure

    configure(cfg.logging.level, cfg.logging.format)
    return await Daemon(config_path, cfg).run()
