"""What a parse had to repair, as a short list of readable lines, and the UTF-8
repair every string the parser reports or returns goes through."""

from __future__ import annotations

import re

from router.mail.limits import _MAX_DEFECTS

_DEFECT_TEXT = {
    "NoBoundaryInMultipartDefect": "multipart part without a boundary parameter",
    "StartBoundaryNotFoundDefect": "multipart boundary never found in the body",
    "CloseBoundaryNotFoundDefect": "multipart closing boundary missing",
    "FirstHeaderLineIsContinuationDefect": "first header line is a continuation line",
    "MisplacedEnvelopeHeaderDefect": 'misplaced mbox "From " line in the headers',
    "MissingHeaderBodySeparatorDefect": "malformed header line (taken as the start of the body)",
    "MultipartInvariantViolationDefect": "multipart content type without multipart content",
    "InvalidMultipartContentTransferEncodingDefect": "multipart with a content transfer encoding",
    "UndecodableBytesDefect": "undecodable bytes",
    "InvalidBase64PaddingDefect": "bad base64 padding",
    "InvalidBase64CharactersDefect": "invalid characters in base64",
    "InvalidBase64LengthDefect": "bad base64 length",
}


class _Defects:
    """An ordered, de-duplicated, bounded list of human-readable problems."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, text: str) -> None:
        # Details quote the message itself: keep them short, printable and UTF-8.
        text = "".join(ch if ch.isprintable() else " " for ch in _unsurrogate(text))
        text = " ".join(text.split())[:300]
        if len(self._items) < _MAX_DEFECTS:
            self._items.setdefault(text, None)

    def add_python(self, defects: list[object], where: str) -> None:
        for defect in defects:
            name = type(defect).__name__
            words = (
                _DEFECT_TEXT.get(name)
                or re.sub(r"(?<!^)(?=[A-Z])", " ", name.removesuffix("Defect")).lower()
            )
            detail = str(defect).strip()
            self.add(f"{where}: {words}" + (f" ({detail})" if detail else ""))

    def list(self) -> list[str]:
        return list(self._items)


def _unsurrogate(value: str) -> str:
    """Text that encodes as UTF-8: escaped raw bytes read as UTF-8, lone surrogates replaced."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        pass
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", errors="replace")
    except UnicodeEncodeError:  # surrogates that are not escaped bytes (UTF-7 can make them)
        return value.encode("utf-8", "surrogatepass").decode("utf-8", errors="replace")
