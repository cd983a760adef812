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

The package, by seam:

- ``types``: the strict base model, ``Secret``, ``Duration`` and the parsers
  of durations, listen addresses and day ranges;
- ``channels``: the settings of each channel (API, Twilio, X, chat, e-mail);
- ``routing``: calendars, teams, queues, rules, first-response targets and
  acknowledgements;
- ``daemon``: the process's own settings (Redis, HTTP, ingest, workers,
  outbox, logging) and the root ``Config``;
- ``load``: YAML -> ``Config`` (environment overrides, validation, the
  checks of each section, secrets).

Each section's checker (``check_rules``...) sits beside the models it checks
and finds what no single field can see; ``load.CHECKS`` runs them in order.
"""

from router.config.channels import (
    API_TOKEN_ENV,
    ApiCallbackSettings,
    ApiChannelSettings,
    ChannelsSettings,
    ChatSettings,
    EmailSettings,
    ImapAccountSettings,
    SmtpSettings,
    TwilioSettings,
    TwilioVoiceSettings,
    XSettings,
    check_channels,
)
from router.config.daemon import (
    Config,
    EmbeddedRedisSettings,
    HttpSettings,
    IngestSettings,
    LoadContext,
    LoggingSettings,
    OutboxSettings,
    RedisSettings,
    WorkerSettings,
)
from router.config.load import (
    CHECKS,
    ENV_OVERRIDES,
    build_config,
    config_from_text,
    load_config,
)
from router.config.routing import (
    PRIORITIES,
    AcknowledgementSettings,
    AckTemplate,
    CalendarSettings,
    FirstResponseSettings,
    HolidaySettings,
    Priority,
    QueueSettings,
    RepeatContactSettings,
    RoutingSettings,
    Rule,
    SkipIf,
    Target,
    TeamSettings,
    TimeCondition,
    When,
    check_acknowledgements,
    check_calendars,
    check_queues,
    check_routing,
    check_rules,
    check_teams,
)
from router.config.types import (
    DAYS,
    Duration,
    Loc,
    Problem,
    Secret,
    Strict,
    parse_days,
    parse_duration,
    parse_listen,
)
from router.yamlsource import ConfigError

__all__ = [
    "API_TOKEN_ENV",
    "CHECKS",
    "DAYS",
    "ENV_OVERRIDES",
    "PRIORITIES",
    "AckTemplate",
    "AcknowledgementSettings",
    "ApiCallbackSettings",
    "ApiChannelSettings",
    "CalendarSettings",
    "ChannelsSettings",
    "ChatSettings",
    "Config",
    "ConfigError",
    "Duration",
    "EmailSettings",
    "EmbeddedRedisSettings",
    "FirstResponseSettings",
    "HolidaySettings",
    "HttpSettings",
    "ImapAccountSettings",
    "IngestSettings",
    "LoadContext",
    "Loc",
    "LoggingSettings",
    "OutboxSettings",
    "Priority",
    "Problem",
    "QueueSettings",
    "RedisSettings",
    "RepeatContactSettings",
    "RoutingSettings",
    "Rule",
    "Secret",
    "SkipIf",
    "SmtpSettings",
    "Strict",
    "Target",
    "TeamSettings",
    "TimeCondition",
    "TwilioSettings",
    "TwilioVoiceSettings",
    "When",
    "WorkerSettings",
    "XSettings",
    "build_config",
    "check_acknowledgements",
    "check_calendars",
    "check_channels",
    "check_queues",
    "check_routing",
    "check_rules",
    "check_teams",
    "config_from_text",
    "load_config",
    "parse_days",
    "parse_duration",
    "parse_listen",
]
