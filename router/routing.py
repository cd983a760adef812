"""The routing decision: a pure function of config, message, profile and time.

``decide(cfg, message, profile, now)`` does no I/O, so it is tested with
plain tables of cases and reused as-is by ``router explain``. Every step adds
a short sentence to ``reasons`` so an admin can see why a message went
where it went.
"""

from __future__ import annotations

from router.config import Config, Rule
from router.model import Decision, InboundMessage
from router.profiles.context import Context


def _normalise_language(code: str | None) -> str | None:
    """``"pt-BR"``, ``"en_US"``, ``"JA"`` -> ``"pt"``, ``"en"``, ``"ja"``."""
    if not code:
        return None
    return code.replace("_", "-").split("-")[0].strip().lower() or None


def choose_language(cfg: Config, message: InboundMessage, profile: Context) -> tuple[str, str]:
    """(language, source): customer preference > channel hint > conversation > default."""
    served = cfg.routing.languages
    candidates = (
        (profile.customer.get("language_preference"), "customer_preference"),
        (message.hints.language, "channel_hint"),
        (message.hints.locale, "channel_hint"),
        (profile.conversation.get("language"), "conversation"),
    )
    for value, source in candidates:
        code = _normalise_language(value)
        if code and code in served:
            return code, source
    return cfg.routing.default_language, "default"


def _rule_matches(rule: Rule, message: InboundMessage, language: str) -> bool:
    when = rule.when
    if when.channel is not None and message.channel not in when.channel:
        return False
    return not (when.language is not None and language not in when.language)


def decide(cfg: Config, message: InboundMessage, profile: Context, now: float) -> Decision:
    """Where ``message`` goes, with the reasons."""
    language, language_source = choose_language(cfg, message, profile)
    reasons = [f"language {language} ({language_source.replace('_', ' ')})"]
    for rule in cfg.rules:
        if _rule_matches(rule, message, language):
            target = rule.targets[0]
            reasons.append(f"rule {rule.name!r} matched; first target queue {target.queue!r}")
            return Decision(
                queue=target.queue,
                priority=target.priority,
                language=language,
                language_source=language_source,
                rule=rule.name,
                reasons=reasons,
            )
    reasons.append(f"no rule matched; default queue {cfg.routing.default_queue!r}")
    return Decision(
        queue=cfg.routing.default_queue,
        priority="normal",
        language=language,
        language_source=language_source,
        rule=None,
        reasons=reasons,
    )
