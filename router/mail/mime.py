"""The MIME tree: transfer encodings, parameters, and one walk that collects
the body text in order, the HTML and the attachments' metadata."""

from __future__ import annotations

import binascii
import email
import email.message
import email.policy
import quopri
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import collapse_rfc2231_value

from router.mail.charsets import _decode_bytes
from router.mail.defects import _Defects, _unsurrogate
from router.mail.headers import _B64_JUNK_RE, _b64decode_lenient, _decode_words
from router.mail.limits import _HTML_FACTOR, _MAX_DEPTH, _MAX_PARTS, MAX_MIME_PARTS
from router.mail.model import Attachment


def _raw_param(part: Message, header: str, param: str) -> str | None:
    """A Content-Type/-Disposition parameter, via compat32 when the modern parser fails."""
    try:
        value = part.get_param(param, header=header)
    except Exception:
        value = None
        raw = next((str(v) for k, v in part.raw_items() if k.lower() == header), None)
        if raw is not None:
            legacy = email.message.Message()
            legacy[header] = raw
            try:
                value = legacy.get_param(param, header=header)
            except Exception:
                value = None
    if value is None:
        return None
    if isinstance(value, tuple):
        value = collapse_rfc2231_value(value)
    return str(value)


_MIME_TYPE_RE = re.compile(r"^[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+$")


def _content_type(part: Message) -> str:
    try:
        ctype = part.get_content_type()
    except Exception:
        return "text/plain"
    # A garbled type is as good as none; it must not carry junk into the metadata.
    return ctype if _MIME_TYPE_RE.match(ctype) else "application/octet-stream"


def _first_raw(part: Message, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.strip().lower() == name:
            return re.sub(r"\s+", " ", str(value)).strip()
    return None


def _cte(part: Message, defects: _Defects) -> str:
    """The transfer encoding, read leniently: 'base64', 'quoted-printable', 'uuencode' or ''."""
    raw = _first_raw(part, "content-transfer-encoding")
    if raw is None:
        return ""
    value = raw.strip().strip("\"'").split(";", 1)[0].strip().lower()
    if value in ("", "7bit", "8bit", "binary"):
        return ""
    if "base64" in value:
        return "base64"
    if "quoted" in value or "printable" in value or value == "qp":
        if value != "quoted-printable":
            defects.add(f"content transfer encoding {raw!r} read as quoted-printable")
        return "quoted-printable"
    if "uu" in value:
        return "uuencode"
    defects.add(f"unknown content transfer encoding {raw!r}, body read as it is")
    return ""


def _raw_payload(part: Message) -> object:
    """The body as the parser read it (8-bit bytes as surrogate escapes).

    ``get_payload()`` re-decodes an 8-bit body in its declared charset with
    errors="replace", which loses exactly the bytes a wrong or unknown label
    makes us read ourselves; the parser's lossless text is only on ``_payload``.
    """
    return getattr(part, "_payload", None)


def _payload_bytes(part: Message, defects: _Defects) -> bytes:
    payload = _raw_payload(part)
    if payload is None or isinstance(payload, list):
        return b""
    if isinstance(payload, bytes):
        raw = payload
    else:
        raw = str(payload).encode("utf-8", "surrogateescape")
    cte = _cte(part, defects)
    try:
        if cte == "base64":
            if not _looks_like_base64(raw):
                defects.add("body labelled base64 is not base64; read as it is")
                return raw
            return _b64decode_lenient(raw)
        if cte == "quoted-printable":
            return quopri.decodestring(raw)
        if cte == "uuencode":
            return _uudecode(raw, defects)
    except (binascii.Error, ValueError) as exc:
        defects.add(f"{cte} body undecodable ({exc}), kept as it is")
    return raw


_NOT_BASE64_RE = re.compile(rb"[^A-Za-z0-9+/=\r\n]")


def _looks_like_base64(data: bytes) -> bool:
    """Base64 has no characters outside its alphabet inside its lines; text has
    spaces and punctuation. A stray character or two is still base64."""
    sample = b"\n".join(line.strip() for line in data[:65536].splitlines())
    junk = len(_NOT_BASE64_RE.findall(sample))
    return junk * 20 <= len(sample)


def _uudecode(data: bytes, defects: _Defects) -> bytes:
    out = bytearray()
    inside = False
    for line in data.splitlines():
        if not inside:
            inside = line.startswith(b"begin ")
            continue
        if line.strip() in (b"end", b"`"):
            if line.strip() == b"end":
                break
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines wrongly; decode what the length byte promises.
            length = (((line[0] - 32) & 63) * 4 + 5) // 3 if line else 0
            try:
                out += binascii.a2b_uu(line[:length])
            except binascii.Error:
                defects.add("bad uuencoded line skipped")
    if not inside:
        return data  # labelled uuencode but not encoded at all
    return bytes(out)


def _part_size(part: Message, defects: _Defects, limit: int) -> int:
    payload = _raw_payload(part)
    if isinstance(payload, list):
        total = 0
        for sub in payload:
            if isinstance(sub, Message):
                total += _message_size(sub)
        return total
    if payload is None:
        return 0
    text = str(payload)
    cte = _cte(part, _Defects())  # already reported when the part was read
    if cte == "base64":
        # Exact for well-formed base64 and needs no decoding of a huge part.
        chars = len(_B64_JUNK_RE.sub(b"", text.encode("utf-8", "surrogateescape")))
        return chars * 3 // 4
    if len(text) > limit:
        return len(text)
    return len(_payload_bytes(part, _Defects()))


def _message_size(msg: Message) -> int:
    for policy in (email.policy.default, email.policy.compat32):
        try:
            return len(msg.as_bytes(policy=policy))
        except Exception:
            continue
    return 0


def _filename(part: Message, defects: _Defects) -> str | None:
    """The attachment's name: RFC 2231, encoded-words, and unquoted names with spaces."""
    raw_cd = _first_raw(part, "content-disposition") or ""
    raw_ct = _first_raw(part, "content-type") or ""
    name: str | None = None
    if re.search(r"(?:file)?name\*", raw_cd + raw_ct, re.IGNORECASE):
        # RFC 2231 (charset'lang'%XX and name*0*= continuations): the library's job.
        try:
            name = part.get_filename() or _raw_param(part, "content-type", "name")
        except Exception:
            name = None
    if name is None:
        for raw, param in ((raw_cd, "filename"), (raw_ct, "name")):
            match = re.search(
                rf'(?:^|;)\s*{param}\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', raw, re.IGNORECASE
            )
            if match:
                value = match.group(1).strip()
                if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                name = value
                break
    if name is None:
        return None
    name = _unsurrogate(name)
    name = " ".join(_decode_words(name, defects, "attachment name").split())
    return name or None


def _disposition(part: Message) -> str | None:
    raw = _first_raw(part, "content-disposition")
    if raw is None:
        return None
    value = raw.split(";", 1)[0].strip().strip("\"'").lower()
    return value if value in ("inline", "attachment") else None


def _content_id(part: Message) -> str | None:
    raw = _first_raw(part, "content-id")
    if not raw:
        return None
    value = _unsurrogate(raw).strip().strip("<>").strip()
    return value or None


_META_CHARSET_RE = re.compile(rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([\w.:-]+)", re.IGNORECASE)


# The original's headers in a bounce. message/rfc822-headers is not a
# registered type but MTAs send it; the parser reads message/* as a message.
_HEADER_DUMP_TYPES = ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers")


@dataclass
class _Body:
    """What a walk over the MIME tree collects."""

    pieces: list[tuple[str, str]] = field(default_factory=list)  # ("plain"|"html", text)
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    language: str | None = None
    parts: int = 0


class _Walker:
    """Walks the MIME tree once: body text in order, the HTML, attachments' metadata."""

    def __init__(self, defects: _Defects, max_text_chars: int, max_attachment_bytes: int) -> None:
        self.defects = defects
        self.max_text_bytes = max_text_chars * 4  # UTF-8's worst case per character
        self.max_html_bytes = max_text_chars * _HTML_FACTOR  # conversion is ~2 s per MB
        self.max_attachment_bytes = max_attachment_bytes
        self.body = _Body()
        self.text_attachments: list[tuple[Message, str]] = []

    def walk(self, part: Message, depth: int = 0, *, body: bool = True) -> None:
        self.body.parts += 1
        if depth > _MAX_DEPTH or self.body.parts > _MAX_PARTS:
            self.defects.add("MIME tree too deep or too large; the rest ignored")
            return
        self.defects.add_python(list(getattr(part, "defects", [])), "mime")
        ctype = _content_type(part)
        maintype = ctype.split("/", 1)[0]
        if maintype == "message" and isinstance(part.get_payload(), list):
            # An attached mail (message/rfc822, forwarded as attachment): its
            # words are not the sender's, so it is listed, not read.
            self._attachment(part, ctype)
            return
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if ctype == "multipart/alternative":
                chosen = _choose_alternative(children)
                for child in children:
                    self.walk(child, depth + 1, body=body and child is chosen)
            elif ctype == "multipart/report":
                # Only the human-readable first part is text; the machine parts
                # are read by _delivery_report, not listed as attachments.
                first = _content_type(children[0]) if children else "message/"
                if not first.startswith("message/") and first not in _HEADER_DUMP_TYPES:
                    self.walk(children[0], depth + 1, body=body)
            else:
                for child in children:
                    self.walk(child, depth + 1, body=body)
            return
        if maintype == "multipart":
            recovered = _recover_multipart(part, self.defects)
            if recovered is not None:
                self.walk(recovered, depth + 1, body=body)
                return
            if not str(_raw_payload(part) or "").strip():
                return  # an empty multipart: nothing to read
            self.defects.add(f"{ctype} without readable parts, read as text")
            ctype = "text/plain"
        filename = _filename(part, self.defects)
        disposition = _disposition(part)
        if ctype in ("text/plain", "text/html"):
            # A name alone does not make text an attachment: MMS gateways and
            # some clients name the message's own text part. Only the sender's
            # "attachment" does, and even then it is the fallback body text.
            if disposition != "attachment":
                self._text(part, ctype, body=body)
                return
            if body:
                self.text_attachments.append((part, ctype))
        self._attachment(part, ctype, filename=filename, disposition=disposition)

    def fall_back_to_text_attachments(self) -> None:
        """No body text at all: read the text attachments as the body."""
        if self.body.pieces or not self.text_attachments:
            return
        self.defects.add("no body text; the text attachment read as the body")
        for part, ctype in self.text_attachments:
            self._text(part, ctype, body=True)

    def _text(self, part: Message, ctype: str, *, body: bool) -> None:
        is_html = ctype == "text/html"
        if not body and not (is_html and self.body.html is None):
            return  # an alternative rendering of text already taken
        data = _payload_bytes(part, self.defects)
        limit = self.max_html_bytes if is_html else self.max_text_bytes
        truncated = len(data) > limit
        if truncated:
            self.defects.add(f"{ctype} body of {len(data)} bytes: only the first {limit} read")
            data = data[:limit]
        charset = _raw_param(part, "content-type", "charset")
        if is_html and charset is None:
            meta = _META_CHARSET_RE.search(data[:4096])
            charset = meta.group(1).decode("ascii", "replace") if meta else None
        text = _decode_bytes(data, charset, self.defects, ctype, truncated=truncated)
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        if not is_html and _first_raw(part, "content-type") is None and _looks_like_html(text):
            self.defects.add("body without a Content-Type is HTML; read as HTML")
            is_html = True
        if is_html:
            if self.body.html is None:
                self.body.html = text
            if not body:
                return
        elif (_raw_param(part, "content-type", "format") or "").lower() == "flowed":
            delsp = (_raw_param(part, "content-type", "delsp") or "").lower() == "yes"
            text = _unflow(text, delsp=delsp)
        if self.body.language is None:
            self.body.language = _first_raw(part, "content-language")
        self.body.pieces.append(("html" if is_html else "plain", text))

    def _attachment(
        self,
        part: Message,
        ctype: str,
        *,
        filename: str | None = None,
        disposition: str | None = None,
    ) -> None:
        if filename is None:
            filename = _filename(part, self.defects)
        if disposition is None:
            disposition = _disposition(part)
        content_id = _content_id(part)
        size = _part_size(part, self.defects, self.max_attachment_bytes)
        if size > self.max_attachment_bytes:
            self.defects.add(
                f"attachment {filename or ctype!r} is {size} bytes, over the "
                f"{self.max_attachment_bytes}-byte limit"
            )
        inline = disposition == "inline" or (disposition is None and content_id is not None)
        self.body.attachments.append(Attachment(filename, ctype, size, content_id, inline))


def _looks_like_html(text: str) -> bool:
    head = text.lstrip()[:2000]
    return head.startswith("<") and bool(
        re.search(r"<(?:html|body|p|br|div|table)\b", head, re.IGNORECASE)
    )


def _choose_alternative(children: list[Message]) -> Message | None:
    """The alternative to route on: non-empty plain text first, else HTML, else the first."""
    best: Message | None = None
    best_score = -1
    for child in children:
        score = _alternative_score(child, 0)
        if score > best_score:
            best, best_score = child, score
    return best


def _alternative_score(part: Message, depth: int) -> int:
    ctype = _content_type(part)
    if ctype == "text/plain":
        payload = _raw_payload(part)
        return 2 if isinstance(payload, str) and payload.strip() else 0
    if ctype == "text/html":
        return 1
    if ctype.startswith("multipart/") and part.is_multipart() and depth < 5:
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        return max((_alternative_score(c, depth + 1) for c in children), default=0)
    return 0


def _recover_multipart(part: Message, defects: _Defects) -> Message | None:
    """Re-split a multipart whose boundary parameter is missing or wrong.

    The boundary actually used is the "--X" line that opens parts and is
    closed by "--X--"; the part is re-parsed with it.
    """
    payload = _raw_payload(part)
    if not isinstance(payload, str):
        return None
    openers: Counter[str] = Counter()
    closers: set[str] = set()
    for line in payload.splitlines():
        if not line.startswith("--") or len(line) > 200:
            continue
        candidate = line[2:].rstrip()
        if candidate.endswith("--"):
            closers.add(candidate[:-2])
        openers[candidate] += 1
    usable = [b for b in openers if b.strip("-") and (b in closers or openers[b] >= 2)]
    if not usable:
        return None
    boundary = max(usable, key=lambda b: (b in closers, openers[b], len(b)))
    if openers[boundary] > MAX_MIME_PARTS:  # the same bound check_structure keeps
        defects.add(f"multipart without a boundary parameter has over {MAX_MIME_PARTS} parts")
        return None
    subtype = _content_type(part).split("/", 1)[1] or "mixed"
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'
    try:
        rebuilt = email.message_from_bytes(
            head.encode("utf-8", "surrogateescape") + payload.encode("utf-8", "surrogateescape"),
            policy=email.policy.default,
        )
    except Exception:
        return None
    if not rebuilt.is_multipart():
        return None
    defects.add(f"multipart boundary missing or wrong; recovered {boundary[:60]!r}")
    return rebuilt


def _unflow(text: str, *, delsp: bool) -> str:
    """RFC 3676 format=flowed: join soft-broken lines back into paragraphs."""
    out: list[str] = []
    current: str | None = None
    current_depth = 0
    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]  # space-stuffing
        if current is not None and depth != current_depth:
            out.append(_quote_prefix(current_depth) + current)
            current = None
        flowed = content.endswith(" ") and content.rstrip() != "--"
        if flowed and delsp:
            content = content[:-1]
        current = content if current is None else current + content
        current_depth = depth
        if not flowed:
            out.append(_quote_prefix(depth) + current)
            current = None
    if current is not None:
        out.append(_quote_prefix(current_depth) + current)
    return "\n".join(out)


def _quote_prefix(depth: int) -> str:
    return ">" * depth + " " if depth else ""


def _iter_parts(part: Message, depth: int) -> Iterator[Message]:
    yield part
    if depth < 10 and _content_type(part).startswith("multipart/") and part.is_multipart():
        for child in part.get_payload():
            if isinstance(child, Message):
                yield from _iter_parts(child, depth + 1)
