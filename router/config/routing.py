"""Routing settings: calendars, teams, queues, rules and their targets,
first-response targets and acknowledgements, each with the checker of the
cross-references no single field can see (names that point at nothing,
zones and countries that do not exist, languages no team serves)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from router.config.types import DAYS, Duration, Loc, Problem, Strict, parse_days

if TYPE_CHECKING:
    from router.calendars import Calendar
    from router.config.daemon import Config

PRIORITIES: dict[str, int] = {"urgent": 0, "high": 1, "normal": 2, "low": 3}
Priority = Literal["urgent", "high", "normal", "low"]


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
                    raise ValueError(f"{DAYS[day]} is given twice ({seen[day]!r} and {key!r})")
                seen[day] = key
        return v


def check_calendars(cfg: Config) -> Iterator[Problem]:
    """Every calendar builds: its zone, holiday country and periods exist."""
    for name, cal in cfg.calendars.items():
        try:
            cal.build(name)
        except ValueError as exc:
            field = (
                "timezone"
                if "time zone" in str(exc)
                else ("holidays" if cal.holidays and "holiday" in str(exc).lower() else "hours")
            )
            yield ("calendars", name, field), f"calendar {name!r}: {exc}"


class TeamSettings(Strict):
    """People who answer: the languages they serve, on a calendar."""

    languages: list[str] = Field(min_length=1)
    # No calendar: always open (e.g. an outsourced 24/7 desk).
    calendar: str | None = None
    # Channels the team handles (all if not given).
    channels: list[str] | None = None
    skills: list[str] = []


def check_teams(cfg: Config) -> Iterator[Problem]:
    """A team's calendar exists and it serves only configured languages."""
    languages = set(cfg.routing.languages)
    for name, team in cfg.teams.items():
        if team.calendar is not None and team.calendar not in cfg.calendars:
            yield (
                ("teams", name, "calendar"),
                (
                    f"team {name!r} uses calendar {team.calendar!r}, which is not defined under "
                    f"calendars: ({', '.join(sorted(cfg.calendars)) or 'none'})"
                ),
            )
        for j, lang in enumerate(team.languages):
            if lang not in languages:
                yield (
                    ("teams", name, "languages", j),
                    (f"team {name!r} serves {lang!r}, which is not in routing.languages"),
                )


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


def check_queues(cfg: Config) -> Iterator[Problem]:
    """A queue's team exists, and every language has a queue to go to."""
    queues, teams = cfg.queues, cfg.teams
    languages = set(cfg.routing.languages)
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


def check_rules(cfg: Config) -> Iterator[Problem]:
    """Rule names are unique; the queues, languages and calendars they name exist."""
    queues, calendars = cfg.queues, cfg.calendars
    languages = set(cfg.routing.languages)
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


class OnBreachSettings(Strict):
    """What the SLA watch does once when a work item's first-response due
    time passes with no agent reply (besides the ``sla_breached`` event and
    the counter): raise the item to ``priority`` (never lowered) and/or move
    it to ``queue``, keeping its fields and due time. A claimed item stays
    with its agent; the breach is still recorded."""

    priority: Priority | None = None
    queue: str | None = None


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


def check_acknowledgements(cfg: Config) -> Iterator[Problem]:
    """Templates are for configured languages and use only known placeholders."""
    from router.acks import template_problems

    languages = set(cfg.routing.languages)
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
    # How soon a person must answer a customer message that follows an agent
    # reply (same form as first_response); none: only first responses are watched.
    next_response: FirstResponseSettings | None = None
    # A follow-up goes to the agent who owns the conversation while they are
    # online; if they have not claimed it within this time it goes to the queue.
    sticky_wait: Duration = 300.0
    repeat_contact: RepeatContactSettings = RepeatContactSettings()
    # The SLA watch's escalation of a breached response target.
    on_breach: OnBreachSettings = OnBreachSettings()


def _queue_ref(cfg: Config, loc: Loc, name: str | None, what: str) -> Iterator[Problem]:
    if name is not None and name not in cfg.queues:
        yield (
            loc,
            (
                f"{what} {name!r} is not a queue (defined under queues: "
                f"{', '.join(sorted(cfg.queues))})"
            ),
        )


def check_routing(cfg: Config) -> Iterator[Problem]:
    """Languages as ISO 639-1 codes, a known default language and time zone,
    default and after-hours queues that exist."""
    from router.language import normalise_language
    from router.timezones import valid_zone

    routing = cfg.routing
    for i, code in enumerate(routing.languages):
        if normalise_language(code) != code:
            yield (
                ("routing", "languages", i),
                (
                    f"{code!r}: write languages as ISO 639-1 codes, "
                    f"e.g. {normalise_language(code)!r}"
                ),
            )
    if routing.default_language not in routing.languages:
        yield (
            ("routing", "default_language"),
            f"default_language {routing.default_language!r} is not in routing.languages",
        )
    if not valid_zone(routing.default_timezone):
        yield (
            ("routing", "default_timezone"),
            (f"unknown time zone {routing.default_timezone!r} (use an IANA name like Europe/Riga)"),
        )
    yield from _queue_ref(cfg, ("routing", "default_queue"), routing.default_queue, "default_queue")
    yield from _queue_ref(
        cfg, ("routing", "after_hours_queue"), routing.after_hours_queue, "after_hours_queue"
    )
    yield from _queue_ref(
        cfg, ("routing", "on_breach", "queue"), routing.on_breach.queue, "on_breach queue"
    )
