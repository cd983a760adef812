"""The bounds one message's parse keeps: a pathological message costs bounded work."""

from __future__ import annotations

_MAX_DEPTH = 40  # MIME nesting deeper than this is an attack or a loop, not mail
_MAX_DEFECTS = 60  # a pathological message must not produce an unbounded list
_MAX_PARTS = 500  # leaves walked per message; real mail has a handful
# Refused before the full parse (check_structure): the standard library builds
# the whole tree first, at about half a millisecond of CPU per part, so these
# bound the work a message can cost. Real mail stays far below both.
MAX_MIME_PARTS = 1000
MAX_MIME_DEPTH = _MAX_DEPTH
_HTML_FACTOR = 10  # HTML is markup-heavy: keep up to 10x the text limit of it
