"""The routing decision: a pure function of config, message, profile and time.

``decide(routing, message, profile, now)`` does no I/O: it is tested with
plain tables of cases and reused as-is by ``router explain``. ``routing`` is
the config compiled once (calendars built, language detector loaded at
start-up, not on the first message). Every step adds a short sentence to
``reasons`` so an admin can see why a message went where it went:

1. language: customer preference > confident detection > channel hint >
   the conversation's language > default
2. time zone and country: profile > browser > phone number > e-mail Date:
   offset > default
3. the first rule whose conditions match gives ordered targets (no rule:
   every queue whose team serves the language)
4. target by target: skip it if its condition holds (closed, too deep);
   among its queues prefer one serving the language and open now
   (follow-the-sun), else the after-hours queue or the one opening soonest
5. sticky: a follow-up goes to the agent who owns the conversation while
   they are online
6. due time from the first-response target in the team's business hours,
   the ETA in the customer's local time and language, the acknowledgement
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from router.acks import DEFAULT_TEMPLATES, format_eta, register_for, render
from router.calendars import Calendar
from router.config import PRIORITIES, Config, Rule, Target
from router.language import Detection, LanguageDetector, choose_language, language_for_country
from router.model import Decision, InboundMessage
from router.profiles.context import Context, conversation_joined
from router.timezones import choose_timezone, zone_from_phone


@lru_cache(maxsize=8)
def detector_for(languages: tuple[str, ...], min_confidence: float) -> LanguageDetector:
    """One detector per language set, shared (lingua's models are loaded once)."""
    return LanguageDetector(languages, min_confidence=min_confidence)


@lru_cache(maxsize=4096)
def _eta_text(minute: int, timezone: str, language: str, locale: str | None) -> str:
    """format_eta (Babel, the costliest step of a decision) per minute and audience:
    under load many messages share a due minute, zone and language."""
    return format_eta(
        datetime.fromtimestamp(minute * 60, UTC), timezone, language=language, locale=locale
    )


@dataclass
class Routing:
    """A config compiled for routing decisions."""

    cfg: Config
    detector: LanguageDetector
    calendars: dict[str, Calendar]
    # queue -> its team's calendar (None: always open)
    queue_calendar: dict[str, Calendar | None]
    # queue -> languages it serves (None: all)
    queue_languages: dict[str, frozenset[str] | None]
    # queue -> channels it serves (None: all)
    queue_channels: dict[str, frozenset[str] | None]
    keywords: dict[str, re.Pattern[str]] = field(default_factory=dict)
    # channels the daemon can send on (acknowledgements go only there)
    sendable: frozenset[str] = frozenset()
    # some target skips on queue depth: the worker must pass depths in
    needs_depths: bool = False

    @classmethod
    def build(cls, cfg: Config, sendable: frozenset[str] = frozenset()) -> Routing:
        calendars = {name: c.build(name) for name, c in cfg.calendars.items()}
        queue_calendar: dict[str, Calendar | None] = {}
        queue_languages: dict[str, frozenset[str] | None] = {}
        queue_channels: dict[str, frozenset[str] | None] = {}
        for name, q in cfg.queues.items():
            team = cfg.teams.get(q.team) if q.team else None
            queue_calendar[name] = calendars[team.calendar] if team and team.calendar else None
            queue_languages[name] = frozenset(team.languages) if team else None
            queue_channels[name] = (
                frozenset(team.channels) if team and team.channels is not None else None
            )
        keywords = {
            rule.name: re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(k) for k in rule.when.keywords) + r")(?!\w)",
                re.IGNORECASE,
            )
            for rule in cfg.rules
            if rule.when.keywords
        }
        return cls(
            cfg=cfg,
            detector=detector_for(tuple(cfg.routing.languages), cfg.routing.min_confidence),
            calendars=calendars,
            queue_calendar=queue_calendar,
            queue_languages=queue_languages,
            queue_channels=queue_channels,
            keywords=keywords,
            sendable=sendable,
            needs_depths=any(
                t.skip_if is not None and t.skip_if.depth_over is not None
                for r in cfg.rules
                for t in r.targets
            ),
        )

    def team_of(self, queue: str) -> str | None:
        return self.cfg.queues[queue].team

    def is_open(self, queue: str, at: datetime) -> bool:
        cal = self.queue_calendar.get(queue)
        return cal is None or cal.is_open(at)

    def next_open(self, queue: str, at: datetime) -> datetime | None:
        cal = self.queue_calendar.get(queue)
        return at if cal is None else cal.next_open(at)


@dataclass
class Choice:
    """A target chosen for a message (the queue, and what was weighed).

    ``answered_by`` is the queue whose team will answer: the queue itself,
    or, for the after-hours queue, the candidate whose team opens first (its
    hours give the honest due time and ETA).
    """

    queue: str
    index: int
    target: Target | None
    notes: list[str]
    answered_by: str = ""


def _serves(routing: Routing, queue: str, language: str, channel: str) -> bool:
    langs = routing.queue_languages.get(queue)
    chans = routing.queue_channels.get(queue)
    return (langs is None or language in langs) and (chans is None or channel in chans)


def pick_queue(
    routing: Routing,
    candidates: list[str],
    language: str,
    channel: str,
    at: datetime,
    follow_the_sun: bool = True,
) -> tuple[str, str, list[str]]:
    """Among ``candidates``: (queue, queue whose team answers, notes).

    Follow-the-sun (a ``queues:`` target, or no rule): one serving the
    language and open now, else the after-hours queue or the one opening
    soonest, even when only one queue serves the language. A single
    ``queue:`` target is the admin's explicit choice, open or not (use
    ``skip_if: {closed: true}`` to pass it by).
    """
    notes: list[str] = []
    serving = [q for q in candidates if _serves(routing, q, language, channel)]
    if not serving:
        notes.append(
            f"none of {', '.join(candidates)} serves {language} on {channel}; "
            "using the rule's queues as given"
        )
        serving = candidates
    if not follow_the_sun:
        return serving[0], serving[0], notes
    for q in serving:
        if routing.is_open(q, at):
            notes.append(f"{q} is open now (follow-the-sun among {', '.join(serving)})")
            return q, q, notes
    soonest = min(
        serving,
        key=lambda q: routing.next_open(q, at) or datetime.max.replace(tzinfo=UTC),
    )
    cfg = routing.cfg.routing
    if cfg.when_closed == "after_hours" and cfg.after_hours_queue:
        notes.append(
            f"{', '.join(serving)} are all closed; after-hours queue "
            f"{cfg.after_hours_queue} until {soonest} opens"
        )
        return cfg.after_hours_queue, soonest, notes
    notes.append(f"{', '.join(serving)} are all closed; {soonest} opens soonest")
    return soonest, soonest, notes


def choose_target(
    routing: Routing,
    targets: list[Target],
    start: int,
    language: str,
    channel: str,
    at: datetime,
    depths: Mapping[str, int],
) -> Choice | None:
    """The first target from ``start`` on whose skip condition does not hold."""
    notes: list[str] = []
    for i in range(start, len(targets)):
        target = targets[i]
        queue, answered_by, why = pick_queue(
            routing, target.candidates, language, channel, at, target.queues is not None
        )
        notes += why
        skip = target.skip_if
        if skip is not None:
            # closed: its team is closed, also when it waits in the after-hours queue
            if skip.closed and (answered_by != queue or not routing.is_open(queue, at)):
                notes.append(f"skipped target {i + 1} ({answered_by}): closed now")
                continue
            depth = depths.get(queue, 0)
            if skip.depth_over is not None and depth > skip.depth_over:
                notes.append(
                    f"skipped target {i + 1} ({queue}): {depth} waiting, over {skip.depth_over}"
                )
                continue
        return Choice(queue, i, target, notes, answered_by)
    return None


def _rule_matches(
    routing: Routing,
    rule: Rule,
    message: InboundMessage,
    language: str,
    country: str | None,
    tier: str | None,
    ongoing: bool,
    at: datetime,
) -> bool:
    w = rule.when
    if w.channel is not None and message.channel not in w.channel:
        return False
    if w.language is not None and language not in w.language:
        return False
    if w.country is not None and (country or "") not in w.country:
        return False
    if w.tier is not None and (tier or "") not in w.tier:
        return False
    if w.conversation is not None and ("ongoing" if ongoing else "new") not in w.conversation:
        return False
    # the adapters' meta.kind: mention / search / dm (X), voicemail / missed_call (voice)
    if w.source is not None and message.meta.get("kind", "") not in w.source:
        return False
    if w.keywords is not None:
        text = f"{message.subject or ''}\n{message.text}"
        if not routing.keywords[rule.name].search(text):
            return False
    if w.time is not None:
        cal = routing.calendars[w.time.calendar]
        if cal.is_open(at) != w.time.open:
            return False
    return True


def first_response(routing: Routing, channel: str, priority: str) -> float:
    """Seconds of business time within which a person must first answer:
    the shorter of the channel's and the priority's target, at most ``max``."""
    fr = routing.cfg.routing.first_response
    seconds = fr.channels.get(channel, fr.default)
    if priority in fr.priorities:
        seconds = min(seconds, fr.priorities[priority])
    return min(seconds, fr.max)


def _local(at: datetime, cal: Calendar | None) -> str:
    """``at`` on the team's clock, for reasons an admin reads."""
    zone = cal.zone if cal is not None else UTC
    return at.astimezone(zone).isoformat(timespec="minutes")


def _default_candidates(routing: Routing, language: str, channel: str) -> list[str]:
    """Queues for messages no rule matched: teams serving the language (not rules-only)."""
    return [
        q
        for q, settings in routing.cfg.queues.items()
        if settings.team is not None
        and not settings.rules_only
        and _serves(routing, q, language, channel)
    ]


def _ack_template(cfg: Config, language: str, locale: str | None) -> tuple[str, str]:
    """(template, its language): the customer's language, else the default
    language, else English; the config's template before the built-in one."""
    ack = cfg.acknowledgements
    for lang in (language, cfg.routing.default_language, "en"):
        register = register_for(locale, lang, ack.informal_locales)
        tpl = ack.templates.get(lang)
        if tpl is not None:
            return (getattr(tpl, register) or tpl.formal), lang
        if lang in DEFAULT_TEMPLATES:
            return DEFAULT_TEMPLATES[lang][register], lang
    raise AssertionError("DEFAULT_TEMPLATES has English")


def _is_automatic(message: InboundMessage) -> bool:
    """Auto-replies, bounces and list mail never get an acknowledgement.

    Adapters set ``meta``: ``auto_submitted`` (the Auto-Submitted header, or
    the channel's equivalent), ``bulk="true"`` (Precedence bulk/junk/list,
    List-Id), ``bounce="true"`` (null return path, mailer-daemon).
    """
    meta = message.meta
    auto = meta.get("auto_submitted", "no").strip().lower()
    return (
        auto not in ("", "no")
        or meta.get("bulk") == "true"
        or meta.get("bounce") == "true"
        or "consent" in meta  # STOP / START: never answer an opt-out with a message
        or meta.get("auto_reply") == "true"
    )


def decide(
    routing: Routing,
    message: InboundMessage,
    profile: Context,
    now: float,
    depths: Mapping[str, int] | None = None,
) -> Decision:
    """Where ``message`` goes, when a person should answer, and why."""
    cfg = routing.cfg
    rcfg = cfg.routing
    at = datetime.fromtimestamp(now, UTC)
    customer = profile.customer
    joined = conversation_joined(profile, rcfg.conversation_window, now)
    ongoing = joined is not None
    conversation = joined or {}
    reasons: list[str] = []

    # 1. language (and where the customer is: a phone number says)
    phone = zone_from_phone(message.sender.value) if message.sender.kind == "phone" else None
    country = (
        (phone.country if phone else None)
        or (message.hints.country or "").upper()
        or customer.get("country")
        or None
    )
    detection: Detection | None = routing.detector.detect(message.text)
    hints: list[str | None] = [message.hints.language, message.hints.locale]
    if not message.text.strip():  # a missed call, a picture: the country's language
        hints.append(language_for_country(country, rcfg.languages))
    language, language_source, confidence = choose_language(
        preference=customer.get("language_preference"),
        detection=detection,
        hint=hints,
        conversation_language=conversation.get("language") if ongoing else None,
        default=rcfg.default_language,
        served=rcfg.languages,
    )
    if language_source == "detected":
        reasons.append(f"language {language}: detected with confidence {confidence:.2f}")
    else:
        extra = ""
        if detection is not None and not detection.confident:
            extra = f" (detection unsure: {detection.language} {detection.confidence:.2f})"
        elif detection is None and message.text.strip():
            extra = " (text too short to detect)"
        reasons.append(f"language {language}: {language_source.replace('_', ' ')}{extra}")

    # 2. time zone
    timezone, timezone_source = choose_timezone(
        profile=customer.get("timezone"),
        browser=message.hints.timezone,
        phone=phone,
        date_offset=message.hints.date_offset,
        default=rcfg.default_timezone,
    )
    reasons.append(
        f"customer time zone {timezone} (from {timezone_source.replace('_', ' ')})"
        + (f", country {country}" if country else "")
    )

    # 3. rule
    tier = customer.get("tier")
    rule = next(
        (
            r
            for r in cfg.rules
            if _rule_matches(routing, r, message, language, country, tier, ongoing, at)
        ),
        None,
    )
    if rule is not None:
        targets = rule.targets
        reasons.append(f"rule {rule.name!r} matched")
    else:
        serving = _default_candidates(routing, language, message.channel) or [rcfg.default_queue]
        targets = [Target(queues=serving)]
        reasons.append(f"no rule matched; queues serving {language}: {', '.join(serving)}")

    # 4. target (skip conditions, follow-the-sun)
    choice = choose_target(routing, targets, 0, language, message.channel, at, depths or {})
    if choice is None:
        # the default queue; the team that answers is the best one for the language
        serving = _default_candidates(routing, language, message.channel) or [rcfg.default_queue]
        _, answering_queue, _ = pick_queue(routing, serving, language, message.channel, at)
        reasons.append(f"every target was skipped; default queue {rcfg.default_queue}")
        choice = Choice(rcfg.default_queue, len(targets) - 1, None, [], answering_queue)
    reasons += choice.notes
    queue = choice.queue
    # Whose hours count: the queue's team, or, for the after-hours queue, the
    # team that picks the message up when it opens (an honest due time).
    answering = choice.answered_by or queue
    team = routing.team_of(answering)
    priority = choice.target.priority if choice.target and choice.target.priority else "normal"
    repeat = int(conversation.get("inbound_since_reply", 0) or 0) + 1 if ongoing else 1
    rc = rcfg.repeat_contact
    if repeat >= rc.after and PRIORITIES[rc.priority] < PRIORITIES[priority]:
        reasons.append(
            f"repeat contact: message {repeat} without an answer; "
            f"priority {priority} raised to {rc.priority}"
        )
        priority = rc.priority
    elif repeat >= rc.after:
        reasons.append(f"repeat contact: message {repeat} without an answer")
    is_open = routing.is_open(answering, at)
    next_open = at if is_open else routing.next_open(answering, at)
    if is_open:
        reasons.append(f"queue {queue} (team {team or '-'}) is open now")
    elif next_open is not None:
        reasons.append(
            f"team {team or '-'} ({answering}) is closed; opens "
            f"{next_open.isoformat(timespec='minutes')}"
        )
    else:
        reasons.append(f"team {team or '-'} ({answering}) has no opening hours ahead")

    # 5. sticky routing
    agent = None
    owner = conversation.get("owner") if ongoing else None
    if owner:
        if profile.owner_online:
            agent = owner
            reasons.append(f"follow-up goes to {owner}, who owns the conversation and is online")
        else:
            reasons.append(f"{owner} owns the conversation but is offline; to the queue")

    # 6. due time, ETA, acknowledgement
    budget = first_response(routing, message.channel, priority)
    cal = routing.queue_calendar.get(answering)
    due = cal.add_business_time(at, timedelta(seconds=budget)) if cal else None
    if cal is None:
        due = at + timedelta(seconds=budget)
        hours = "hours"
    else:
        hours = "business hours"
    if due is None:  # a calendar that never opens again (within a year)
        due = at + timedelta(seconds=rcfg.first_response.max)
        reasons.append(
            f"no opening hours ahead; first response due {_local(due, cal)} at the latest"
        )
    else:
        reasons.append(
            f"first response due {_local(due, cal)} "
            f"({budget / 3600:g} {hours} for {message.channel}/{priority})"
        )
    eta_local = _eta_text(math.ceil(due.timestamp() / 60), timezone, language, message.hints.locale)
    ack_text = None
    ack = cfg.acknowledgements
    channels = ack.channels if ack.channels is not None else routing.sendable
    if not ongoing and ack.enabled and message.channel in channels:
        if _is_automatic(message):
            reasons.append("no acknowledgement: the message is automatic (auto-reply or bulk)")
        elif message.meta.get("unsolicited") == "true":
            # e.g. a post found by X brand search: an automatic answer would be public
            reasons.append(
                "no acknowledgement: the sender did not write to us (a post found by "
                "brand search); a person decides whether to answer"
            )
        else:
            text, tpl_language = _ack_template(cfg, language, message.hints.locale)
            if tpl_language != language:  # no template in their language: keep it one language
                reasons.append(f"no acknowledgement template for {language}; using {tpl_language}")
                eta = _eta_text(math.ceil(due.timestamp() / 60), timezone, tpl_language, None)
            else:
                eta = eta_local
            ack_text = render(text, eta=eta, name=message.display_name, team=team, reference=None)

    overflow_at = None
    if choice.target is not None and choice.target.wait and choice.index + 1 < len(targets):
        overflow_at = now + choice.target.wait
        reasons.append(
            f"moves to target {choice.index + 2} if unclaimed for {choice.target.wait / 60:g} min"
        )

    return Decision(
        queue=queue,
        priority=priority,
        language=language,
        language_source=language_source,
        rule=rule.name if rule else None,
        reasons=reasons,
        target_index=choice.index,
        due_at=due.timestamp(),
        timezone=timezone,
        timezone_source=timezone_source,
        team=team,
        language_confidence=confidence,
        country=country,
        open=is_open,
        next_open=next_open.timestamp() if next_open else None,
        eta_local=eta_local,
        ack_text=ack_text,
        agent=agent,
        overflow_at=overflow_at,
        repeat=repeat,
    )
