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
import functools
import gc
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from router.adapters.api import limits_of
from router.adapters.base import Adapter, AdapterContext, Channel, Sender
from router.agent import AgentClient
from router.channels import CHANNELS
from router.config import Config, load_config
from router.deadletters import dead_letter_raw
from router.embedded import EmbeddedRedis
from router.http import CappedTCPSite, build_app, raise_open_file_limit
from router.ingest import Ingestor
from router.metrics import Metrics
from router.outbox import OutboxWorker, record_delivery_report
from router.overflow import OverflowWorker
from router.pipeline import RoutingWorker
from router.routing import Routing
from router.sla import SlaWorker
from router.status import ingest_status
from router.store import RedisAdapterState, Store
from router.systemd import Notifier
from router.voice import VoicePrompter
from router.yamlsource import ConfigError

log = structlog.get_logger("router.app")

# Settings only a restart can change: a reload that changes them is refused.
# Each channel adds its own: ``channels.<name>.enabled``, and what its
# factory names in ``Channel.restart_only``.
RESTART_ONLY = (
    ("redis",),
    ("http", "listen"),
    ("state_dir",),
    ("ingest", "partitions"),
    ("instance_id",),
)


class StartFailed(Exception):
    """The daemon cannot start; ``action`` says what the operator can do."""

    def __init__(self, message: str, action: str) -> None:
        super().__init__(message)
        self.action = action


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


def _section(cfg: Config, name: str) -> Any:
    """A channel's own settings (``channels.<name>``); None if it has no section."""
    return getattr(cfg.channels, name, None)


class Daemon:
    """One running router process.

    Lifecycle: :meth:`run` starts each piece inside one ``AsyncExitStack``
    that registers how to undo it as soon as it exists, and one
    ``asyncio.TaskGroup`` (entered first, so it closes last) that owns every
    loop: the routing, outbox and overflow workers, every adapter's
    ``run(stop)``, the embedded Redis supervisor, the watchdog and reloads.
    A failed start, a stop signal and a crashed loop all leave the same way:
    the stack unwinds in reverse order (intake, HTTP, ingest, workers,
    senders, Redis), each wait bounded by what is left of ``shutdown_timeout``.
    """

    def __init__(self, config_path: Path, cfg: Config) -> None:
        self.config_path = config_path
        self.cfg = cfg
        self.routing: Routing | None = None
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.accepting = False
        self._stop = asyncio.Event()
        self._workers_stop = asyncio.Event()
        self._adapters_stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self.embedded: EmbeddedRedis | None = None
        self._redis_stop = asyncio.Event()
        self.store: Store | None = None
        self.http_port: int | None = None
        self.channels: dict[str, Channel[Any]] = {}
        self.adapters: list[Adapter] = []
        self._crashed: list[str] = []
        self._draining = False
        self._deadline: float | None = None

    def config(self) -> Config:
        return self.cfg

    def current_routing(self) -> Routing:
        assert self.routing is not None
        return self.routing

    def sendable(self, cfg: Config) -> frozenset[str]:
        """Channels replies (and acknowledgements) can go out on under ``cfg``."""
        out: frozenset[str] = frozenset()
        for name, channel in self.channels.items():
            out |= channel.sendable(_section(cfg, name))
        return out

    # -- run -------------------------------------------------------------------
    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT or a crashed loop, drain, stop.

        Exit code 0 after a stop signal; 1 after a failed start or a crash
        (systemd restarts the daemon)."""
        started = False
        async with contextlib.AsyncExitStack() as stack:
            tasks = await stack.enter_async_context(asyncio.TaskGroup())
            try:
                await self._start(stack, tasks)
                started = True
            except Exception as exc:
                self._start_failed(exc)
            else:
                await self._stop.wait()
            self._begin_drain()
            # leaving the block unwinds the stack: everything started is stopped
        log.info("stopped", seconds=round(self._elapsed(), 2))
        return 0 if started and not self._crashed else 1

    async def _start(self, stack: contextlib.AsyncExitStack, tasks: asyncio.TaskGroup) -> None:
        """Start every piece in order; each registers its undoing on ``stack``
        the moment it exists, so a failure part-way undoes exactly what started."""
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if cfg.embedded_redis:
            embedded = self.embedded = EmbeddedRedis(
                cfg.state_dir / "redis", cfg.redis.embedded.appendfsync
            )
            stack.push_async_callback(self._quietly, "embedded redis", embedded.stop)
            await embedded.start(cfg.redis.embedded.start_timeout)
            # restarted if it dies, until the stack unwinds; watched like a worker
            supervisor = tasks.create_task(
                self._watched(
                    "embedded-redis",
                    embedded.supervise(self._redis_stop, cfg.redis.embedded.start_timeout),
                ),
                name="embedded-redis",
            )
            stack.push_async_callback(
                self._end_tasks, "embedded-redis", self._redis_stop, [supervisor]
            )
        store = self.store = Store.open(cfg)
        stack.push_async_callback(self._quietly, "redis connections", store.close)
        version = await self._connect(store)

        ingestor = Ingestor(store, cfg.ingest.dedup_ttl, metrics=self.metrics)
        self.channels = self._build_channels(store, ingestor)  # factories: no I/O
        senders: dict[str, Sender] = {}
        for name, channel in self.channels.items():
            senders.update(channel.senders)
            for close in channel.closers:  # after the last reply went out
                stack.push_async_callback(self._quietly, f"{name} senders", close)
        self.adapters = [c.adapter for c in self.channels.values() if c.adapter is not None]
        # Calendars and the language detector load now, not on the first message.
        self.routing = await asyncio.to_thread(Routing.build, cfg, self.sendable(cfg))

        if self.notifier.watchdog_interval:
            watchdog = tasks.create_task(self._watchdog(), name="watchdog")
            stack.callback(watchdog.cancel)  # alive until the workers are done
        node = cfg.node_id
        workers: dict[str, RoutingWorker | OutboxWorker | OverflowWorker | SlaWorker] = {
            "routing": RoutingWorker(store, self.current_routing, self.metrics, node),
            "outbox": OutboxWorker(store, self.config, senders, self.metrics, node),
            "overflow": OverflowWorker(store, self.current_routing, self.metrics),
            "sla": SlaWorker(store, self.current_routing, self.metrics),
        }
        worker_tasks = [
            tasks.create_task(self._watched(name, w.run(self._workers_stop)), name=name)
            for name, w in workers.items()
        ]
        stack.push_async_callback(self._end_tasks, "workers", self._workers_stop, worker_tasks)
        await ingestor.start()
        stack.push_async_callback(self._quietly, "ingest", ingestor.stop)  # flushes first

        adapter_tasks = [
            tasks.create_task(
                self._watched(f"adapter-{a.name}", a.run(self._adapters_stop)),
                name=f"adapter-{a.name}",
            )
            for a in self.adapters
        ]
        # let each adapter begin (connect, start its workers) before the port opens
        await asyncio.sleep(0)
        stop_adapters = functools.partial(
            self._end_tasks, "adapters", self._adapters_stop, adapter_tasks
        )
        stack.push_async_callback(stop_adapters)  # (a failed bind undoes them)

        runner = await self._listen(stack)
        # On a drain, intake stops with the adapters before the listener (chat
        # sockets closed first, so the listener does not wait for them).
        stack.push_async_callback(stop_adapters)
        self.http_port = _bound_port(runner) or cfg.http.host_port[1]

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(
            signal.SIGHUP, lambda: tasks.create_task(self._reload_on_signal(), name="reload")
        )
        stack.callback(self._remove_signal_handlers)
        self.accepting = True
        # Everything allocated so far lives as long as the process: keep the
        # collector from scanning it again and again, and collect the young
        # generation less often (the hot path allocates many short-lived objects).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)
        host = cfg.http.host_port[0]
        log.info(
            "started",
            node=node,
            http=f"{host}:{self.http_port}",
            redis="embedded" if cfg.embedded_redis else _safe_url(cfg.redis.url),
            redis_version=version,
            config=str(self.config_path),
            queues=sorted(cfg.queues),
            channels=sorted(self.channels),
        )
        self.notifier.ready(f"routing; http on {host}:{self.http_port}")

    async def _listen(self, stack: contextlib.AsyncExitStack) -> web.AppRunner:
        """The HTTP server (operations endpoints and the adapters' routes), bound."""
        cfg = self.cfg
        app = build_app(
            adapters=self.adapters,
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
        # stops listening, lets in-flight requests finish
        stack.push_async_callback(self._quietly, "http", runner.cleanup)
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
        try:
            await site.start()
        except OSError as exc:
            raise StartFailed(
                f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}",
                action=f"another process holds {host}:{port} (ss -ltnp 'sport = :{port}'); "
                "stop it or change http.listen",
            ) from None
        return runner

    def _build_channels(self, store: Store, ingestor: Ingestor) -> dict[str, Channel[Any]]:
        """Every enabled channel of the table (router/channels.py), from its factory."""
        cfg = self.cfg
        built: dict[str, Channel[Any]] = {}
        for name, plugin in CHANNELS.items():
            section = _section(cfg, name)
            if not plugin.always and section is not None and not getattr(section, "enabled", True):
                continue
            factory = plugin.load()
            built[name] = factory(
                functools.partial(lambda n: _section(self.cfg, n), name),
                self._context(name, store, ingestor),
                lambda: self.cfg.http.public_url,
            )
        return built

    def _context(self, name: str, store: Store, ingestor: Ingestor) -> AdapterContext:
        """What the daemon shares with channel ``name``."""

        async def report(outbox_id: str, status: str, error: str | None) -> None:
            await record_delivery_report(store, outbox_id, status, error)

        async def dead_letter(source: str, raw: bytes, reason: str) -> None:
            await dead_letter_raw(store, source, raw, reason)
            self.metrics.dead_letters.labels(name).inc()

        return AdapterContext(
            ingest=ingestor.ingest,
            state=RedisAdapterState(store, name),
            report_delivery=report,
            accepting=lambda: self.accepting,
            voice_prompt=VoicePrompter(store, self.current_routing),
            node=self.cfg.node_id,
            store=store,
            metrics=self.metrics,
            log=structlog.get_logger(f"router.adapters.{name}"),
            limits=lambda: limits_of(self.cfg),
            can_send=lambda channel: channel in self.sendable(self.cfg),
            dead_letter=dead_letter,
        )

    # -- the task group's loops ------------------------------------------------
    async def _watched(self, name: str, loop: Awaitable[None]) -> None:
        """Run one of the daemon's loops; if it crashes (a bug) or ends before it
        was told to, log it and stop the daemon: systemd restarts it."""
        try:
            await loop
        except Exception:
            self._crashed.append(name)
            log.error(
                "worker_crashed",
                worker=name,
                exc_info=True,
                action="the daemon stops (exit 1) so systemd restarts it; report this bug",
            )
            self._stop.set()
            return
        if not self._draining:
            self._crashed.append(name)
            log.error(
                "worker_ended",
                worker=name,
                action="the daemon stops (exit 1) so systemd restarts it; report this bug",
            )
            self._stop.set()

    async def _reload_on_signal(self) -> None:
        try:
            await self.reload()
        except Exception:  # a bug: the old config stays live, the daemon goes on
            self.metrics.config_reloads.labels("error").inc()
            log.error(
                "config_reload_failed",
                exc_info=True,
                action="the old config stays live; report this bug",
            )

    # -- stopping --------------------------------------------------------------
    def _begin_drain(self) -> None:
        self._draining = True
        if self._deadline is None:
            self._deadline = time.monotonic() + self.cfg.shutdown_timeout
        self.notifier.stopping()
        log.info("stopping", timeout_s=self.cfg.shutdown_timeout)
        self.accepting = False
        self._remove_signal_handlers()  # no reload of a daemon that is stopping

    def _elapsed(self) -> float:
        if self._deadline is None:
            return 0.0
        return time.monotonic() - (self._deadline - self.cfg.shutdown_timeout)

    def _remaining(self, least: float = 0.1) -> float:
        """What is left of ``shutdown_timeout`` (at least ``least`` seconds)."""
        if self._deadline is None:
            return self.cfg.shutdown_timeout
        return max(least, self._deadline - time.monotonic())

    async def _end_tasks(
        self, what: str, stop: asyncio.Event, tasks: list[asyncio.Task[None]]
    ) -> None:
        """Tell loops to stop, wait what is left of the shutdown time, then cancel
        the ones still running (idempotent)."""
        stop.set()
        pending = [t for t in tasks if not t.done()]
        if not pending:
            return
        _, pending_set = await asyncio.wait(pending, timeout=self._remaining())
        if pending_set:
            log.warning(
                "stop_timed_out",
                what=what,
                tasks=sorted(t.get_name() for t in pending_set),
                action="cancelled; unfinished work is redelivered after the restart",
            )
            for t in pending_set:
                t.cancel()
            await asyncio.wait(pending_set, timeout=1.0)

    async def _quietly(self, what: str, close: Callable[[], Awaitable[None]]) -> None:
        """Run one step of the unwinding; a failure is logged and the rest goes on."""
        try:
            await close()
        except Exception as exc:
            log.warning("stop_step_failed", what=what, error=f"{type(exc).__name__}: {exc}")

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    def _start_failed(self, exc: Exception) -> None:
        if isinstance(exc, StartFailed):
            log.error("start_failed", error=str(exc), action=exc.action)
        else:
            log.error(
                "start_failed",
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
                action="fix the cause above; what had started is stopped again",
            )

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
            self.cfg.queues,
            queue_settings(self.cfg),
            self.cfg.routing.message_retention,
            self.cfg.events.retention,
        )
        return version

    def _restart_only(self) -> list[tuple[str, ...]]:
        """The settings a reload may not change: the daemon's and each channel's."""
        paths = list(RESTART_ONLY)
        for name, plugin in CHANNELS.items():
            if not plugin.always and hasattr(self.cfg.channels, name):
                paths.append(("channels", name, "enabled"))
            if (channel := self.channels.get(name)) is not None:
                paths += [("channels", name, setting) for setting in channel.restart_only]
        return paths

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
                changed = [
                    ".".join(p) for p in self._restart_only() if _get(new, p) != _get(self.cfg, p)
                ]
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
                    new.queues,
                    queue_settings(new),
                    new.routing.message_retention,
                    new.events.retention,
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
