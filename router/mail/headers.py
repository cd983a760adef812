"""Header values as text: raw 8-bit bytes, RFC 2047 encoded-words, addresses, ids.

Decoded here from the raw bytes, not by the standard library's header
registry, which mis-handles the cases that matter in real mail (raw 8-bit
headers in legacy charsets, RFC 6532 addresses, encoded-words split
mid-character, unknown charsets).
"""

from __future__ import annotations

import binascii
import contextlib
import re
from email.message import Message
from email.utils import getaddresses

from router.mail.charsets import _charset_codecs, _decode_bytes, _mostly_utf8
from router.mail.defects import _Defects, _unsurrogate
from router.profiles.identity import normalise_email

_EW_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*?)\?=")
_B64_JUNK_RE = re.compile(rb"[^A-Za-z0-9+/]")


class _Headers:
    """Raw header values by lower-cased name, recovered as text.

    The parser keeps header bytes it could not read as ASCII as surrogate
    escapes; those are turned back into bytes and read as UTF-8 (RFC 6532) or,
    failing that, in the charset the body declares (what mail clients do).
    """

    def __init__(self, msg: Message, defects: _Defects, fallback_charset: str | None) -> None:
        self._values: dict[str, list[str]] = {}
        self._defects = defects
        self._fallback = fallback_charset
        for name, value in msg.raw_items():
            key = str(name).strip().lower()
            self._values.setdefault(key, []).append(self._recover(key, str(value)))

    def _recover(self, name: str, value: str) -> str:
        value = re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", " ").replace("\n", " ")
        if value.isascii():
            return value.strip()
        data = _escape_raw_bytes_in_words(value.encode("utf-8", "surrogateescape"))
        if data.isascii():
            return data.decode("ascii").strip()
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError:
            pass
        if _mostly_utf8(data):
            self._defects.add(f"header {name}: invalid bytes in UTF-8, replaced")
            return data.decode("utf-8", errors="replace").strip()
        label = self._fallback
        if label is None or "utf-8" in _charset_codecs(label)[0]:
            label = "windows-1252"  # not UTF-8 again: that just failed
        self._defects.add(f"header {name}: raw 8-bit bytes that are not UTF-8, read as {label}")
        return _decode_bytes(data, label, _Defects(), name).strip()

    def get(self, name: str) -> str | None:
        values = self._values.get(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name, [])

    def has(self, name: str) -> bool:
        return any(v.strip() for v in self._values.get(name, []))

    def __len__(self) -> int:
        return len(self._values)


_EW_BYTES_RE = re.compile(rb"=\?([^?\s]+)\?([qQ])\?([^?]*?)\?=")


def _escape_raw_bytes_in_words(data: bytes) -> bytes:
    """Raw 8-bit bytes inside Q encoded-words (Eudora), written as =XX escapes.

    The bytes are in the word's own charset, so they must be decoded once,
    with the word, not first as the header's bytes and then again as the
    word's. Raw UTF-8 inside a word of another charset is re-encoded into it.
    """

    def escape(match: re.Match[bytes]) -> bytes:
        payload = match.group(3)
        if payload.isascii():
            return match.group(0)
        charset = match.group(1).decode("ascii", "replace").split("*", 1)[0]
        codec = _charset_codecs(charset)[0][0]
        if codec != "utf-8":
            with contextlib.suppress(UnicodeError, LookupError):
                payload = payload.decode("utf-8").encode(codec)
        escaped = re.sub(rb"[\x80-\xff]", lambda b: b"=%02X" % b.group(0)[0], payload)
        return b"=?" + match.group(1) + b"?" + match.group(2) + b"?" + escaped + b"?="

    return _EW_BYTES_RE.sub(escape, data)


def _decode_words(value: str, defects: _Defects, where: str) -> str:
    """Decode RFC 2047 encoded-words leniently.

    Adjacent encoded-words in one charset are joined as bytes before decoding,
    because real senders split multi-byte characters across them; whitespace
    between encoded-words is dropped as RFC 2047 says.
    """
    out: list[str] = []
    pending_charset: str | None = None
    pending = bytearray()
    pos = 0

    def flush() -> None:
        nonlocal pending_charset
        if pending_charset is not None:
            out.append(_decode_bytes(bytes(pending), pending_charset, defects, where))
            pending.clear()
            pending_charset = None

    for match in _EW_RE.finditer(value):
        between = value[pos : match.start()]
        if not (pending_charset is not None and not between.strip()):
            flush()
            out.append(between)
        charset = match.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        encoded = match.group(3)
        try:
            if match.group(2) in "bB":
                data = _b64decode_lenient(encoded.encode("utf-8", "surrogateescape"))
            else:
                data = binascii.a2b_qp(encoded.encode("utf-8", "surrogateescape"), header=True)
        except (binascii.Error, ValueError):
            defects.add(f"{where}: undecodable encoded-word kept as it is")
            flush()
            out.append(match.group(0))
            pos = match.end()
            continue
        if pending_charset is not None and pending_charset.lower() != charset.lower():
            flush()
        pending_charset = charset
        pending.extend(data)
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out)


def _b64decode_lenient(data: bytes) -> bytes:
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        cleaned = _B64_JUNK_RE.sub(b"", data)
        if len(cleaned) % 4 == 1:  # a stray character cannot be decoded; drop it
            cleaned = cleaned[:-1]
        return binascii.a2b_base64(cleaned + b"=" * (-len(cleaned) % 4))


def _header_text(headers: _Headers, name: str, defects: _Defects) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return " ".join(_decode_words(value, defects, f"header {name}").split())


_ADDR_SPEC_RE = re.compile(r"[^\s<>()\[\]@,;:\"]+@[^\s<>()\[\]@,;:\"]+\.[^\s<>()\[\]@,;:\".]+")


def _address(
    headers: _Headers, msg: Message, name: str, defects: _Defects
) -> tuple[str | None, str | None]:
    """(normalised address, decoded display name) of the first usable mailbox in a header."""
    value = headers.get(name)
    if value is None:
        return None, None
    for display, addr in getaddresses([value]):
        address = _mailbox_address(addr, defects, name) if addr else None
        if address:
            return address, _display_name(display, defects, name)
    # The modern header registry copes with some shapes email.utils does not
    # (missing commas, obsolete routes); its display name is already decoded.
    try:
        header = msg[name]
        mailboxes = list(getattr(header, "addresses", ()))
    except Exception:
        mailboxes = []
    for mailbox in mailboxes:
        address = normalise_email(_unsurrogate(mailbox.addr_spec))
        if address:
            return address, _display_name(_unsurrogate(mailbox.display_name), defects, name)
    found = _ADDR_SPEC_RE.search(value)
    if found and (address := normalise_email(found.group(0))):
        defects.add(f"header {name}: unparseable, took the first address in it")
        return address, None
    defects.add(f"header {name}: no address in {value[:80]!r}")
    return None, None


# RFC 5321 quoted local part ("john doe"@example.com): printable ASCII, with
# backslash escapes; legal, deliverable, and what some gateways write.
_QUOTED_ADDRESS_RE = re.compile(
    r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e]){1,64}"@[a-z0-9-]+(?:\.[a-z0-9-]+)+$',
    re.IGNORECASE,
)
_DOTLESS_RE = re.compile(r"^[^@\s<>]+@[^@\s<>.]+$")


def _mailbox_address(addr: str, defects: _Defects, header: str) -> str | None:
    """The normalised address of one mailbox, or None (with the reason as a defect)."""
    address = normalise_email(addr)
    if address:
        return address
    addr = addr.strip()
    if _QUOTED_ADDRESS_RE.match(addr):
        return addr.lower()
    if _DOTLESS_RE.match(addr):
        # Judgement call (issue 14): a domain without a dot ("bob@extern",
        # "guest@localhost") is a host on the sender's own network, never an
        # address our replies can reach on the internet: not a customer identity.
        defects.add(f"header {header}: address domain has no dot (a local host name), refused")
    return None


def _display_name(raw: str, defects: _Defects, header: str) -> str | None:
    name = " ".join(_decode_words(raw, defects, f"header {header}").split())
    name = name.strip().strip("\"'").strip()
    return name or None


_MSGID_RE = re.compile(r"<([^<>]*)>")


def _message_ids(values: list[str]) -> list[str]:
    """All ids in Message-ID-like headers, without <>, in order, once each."""
    ids: dict[str, None] = {}
    for value in values:
        value = re.sub(r"\([^()]*\)", "", value)  # RFC 5322 comments are not part of ids
        bracketed = _MSGID_RE.findall(value)
        if not bracketed and value.strip() and len(value.split()) == 1:
            bracketed = [value]  # a bare id without angle brackets
        for raw_id in bracketed:
            msg_id = "".join(raw_id.split())  # folding inside the brackets is not part of it
            if msg_id:
                ids.setdefault(msg_id, None)
    return list(ids)
