"""The structure check: a MIME tree too large or too deep is refused before parsing.

The standard library's parser builds the whole tree before anything can look
at it, so the bounds are checked on the raw lines first.
"""

from __future__ import annotations

import email.message
import re

from router.mail.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS
from router.mail.model import MailError


def check_structure(
    raw: bytes, *, max_parts: int = MAX_MIME_PARTS, max_depth: int = MAX_MIME_DEPTH
) -> None:
    """Refuse (MailError) a message whose MIME tree is too large or too deep.

    Reads only the raw lines (Content-Type headers and boundary delimiter
    lines, split the way the standard library's parser splits parts), so the
    bound holds before that parser builds anything. Linear in the size, no
    recursion, and it stops at the first limit crossed.
    """
    # Each open container: the boundary of a multipart, or None for an
    # attached message (message/rfc822) whose own header block comes next.
    stack: list[bytes | None] = []
    digests: set[int] = set()  # levels that are multipart/digest
    in_digest = False  # this header block opens a part of a digest
    in_headers = True
    status_blocks = False  # in a message/delivery-status body: each block is a part
    content_type: bytes | None = None
    collecting = False
    parts = 0

    def count_part() -> None:
        nonlocal parts
        parts += 1
        if parts > max_parts:
            raise MailError(f"more than {max_parts} MIME parts; refused before parsing")

    for line in raw.splitlines():
        if line.startswith(b"--") and any(b is not None for b in stack):
            candidate = line[2:].rstrip(b" \t")
            level, closing = _open_boundary(stack, candidate)
            if level is not None:
                del stack[level + 1 :]
                digests = {d for d in digests if d < len(stack)}
                status_blocks = False
                if closing:
                    stack.pop()
                    digests.discard(level)
                    in_headers = False  # the epilogue: no structure in it
                else:
                    count_part()
                    in_headers, content_type, collecting = True, None, False
                    in_digest = level in digests
                continue
        while in_headers:
            if line[:1] in (b" ", b"\t"):  # a continuation line (also one of blanks)
                if collecting and content_type is not None:
                    content_type += b" " + line.strip()
                break
            if line and _HEADER_START_RE.match(line):
                name, _, value = line.partition(b":")
                # The parser goes by the first Content-Type of a block.
                collecting = content_type is None and name.strip().lower() == b"content-type"
                if collecting:
                    content_type = value.strip()
                break
            # The empty line, or a line that is no header (which the parser
            # takes as the first body line): what does the block open?
            # (a digest's part without a type is a message/rfc822 to the parser)
            in_headers, opened = False, _opens(content_type or b"", in_digest)
            digest = _is_digest(content_type or b"")
            content_type, collecting, in_digest = None, False, False
            if opened == b"":
                status_blocks = True
            elif opened is not False:
                stack.append(opened if isinstance(opened, bytes) else None)
                if digest and isinstance(opened, bytes):
                    digests.add(len(stack) - 1)
                if len(stack) > max_depth:
                    raise MailError(
                        f"MIME nesting deeper than {max_depth} levels; refused before parsing"
                    )
                in_headers = opened is None  # an attached message: its headers follow
            if not line:
                break  # the separator itself is no body line
        else:
            if status_blocks:
                if not line.strip():
                    count_part()
            elif not any(b is not None for b in stack):
                return  # a body outside any multipart: nothing below can open a part


# A header line to the parser (email.feedparser.headerRE): "From ", or a name and a colon.
_HEADER_START_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:")


def _open_boundary(stack: list[bytes | None], candidate: bytes) -> tuple[int | None, bool]:
    """The innermost open multipart a delimiter line belongs to, and whether it closes it."""
    for level in range(len(stack) - 1, -1, -1):
        boundary = stack[level]
        if boundary is None:
            continue
        if candidate == boundary:
            return level, False
        if candidate.endswith(b"--") and candidate[:-2] == boundary:
            return level, True
    return None, False


def _opens(content_type: bytes, in_digest: bool = False) -> bytes | bool | None:
    """What a header block's Content-Type opens, read as the parser reads it.

    A multipart's boundary; None for an attached message (parsed as one);
    b"" for a delivery-status body (parsed as blocks of fields); False for a leaf.
    Without a (valid) type, a part of a multipart/digest is a message.
    """
    probe = email.message.Message()  # the parser's own reading of one header
    if in_digest:
        probe.set_default_type("message/rfc822")
    if content_type:
        probe["Content-Type"] = content_type.decode("ascii", "surrogateescape")
    try:
        maintype, subtype = probe.get_content_maintype(), probe.get_content_subtype()
        if maintype == "multipart":
            boundary = probe.get_boundary()
            return boundary.encode("ascii", "surrogateescape") if boundary else False
    except Exception:  # what the parser cannot read it reads as a leaf
        return False
    if maintype == "message":
        return b"" if subtype == "delivery-status" else None
    return False


def _is_digest(content_type: bytes) -> bool:
    probe = email.message.Message()
    probe["Content-Type"] = content_type.decode("ascii", "surrogateescape")
    try:
        return probe.get_content_type() == "multipart/digest"
    except Exception:
        return False
