"""Subjects without reply and forward prefixes, for threading by subject."""

from __future__ import annotations

import re

_SUBJECT_PREFIXES = (
    "re|fwd|fw|aw|wg|sv|vs|vl|vb|antw|doorst|tr|rv|enc|res|odp|pd|ynt|ilt|rif|"
    "отв|ответ|пересл|απ|σχετ|πρθ|回复|答复|转发|回覆|轉寄|返信|転送"
)
_PREFIX_RE = re.compile(
    r"^\s*((?:\[[^\[\]]{0,80}\]\s*)*)"  # list/ticket tags, kept
    rf"(?:{_SUBJECT_PREFIXES})\s*(?:\[\d+\]|\(\d+\)|\^\d+)?\s*[:\uff1a]\s*",
    re.IGNORECASE,
)
_FWD_SUFFIX_RE = re.compile(r"\s*\((?:fwd|fw)\)\s*$", re.IGNORECASE)


def normalise_subject(subject: str) -> str:
    """The subject without reply/forward prefixes, for threading by subject.

    Strips, repeatedly, "Re:", "Fwd:", "AW:", "SV:", "RE[2]:", "Re(3):",
    "回复:" and their kin in many languages; "[ticket-123]"-like list tags are
    kept; whitespace is collapsed.
    """
    text = subject
    for _ in range(50):  # bounded: each round removes at least one prefix
        match = _PREFIX_RE.match(text)
        if not match:
            break
        text = match.group(1) + text[match.end() :]
    text = _FWD_SUFFIX_RE.sub("", text)
    return " ".join(text.split())
