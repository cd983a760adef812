"""Bytes in a declared charset -> text, as senders really write it.

Charset labels are read as the mail real clients send means them (WHATWG's
windows-1252 for "iso-8859-1", cp949 for "ks_c_5601-1987"...); a label that
lies or is unknown is guessed at, and the guess is recorded as a defect.
"""

from __future__ import annotations

import codecs

from router.mail.defects import _Defects

# Labels real mail uses that Python does not know, or knows as a narrower
# codec than the one senders actually produce. Each maps to codecs tried in
# order (strictly); the first that decodes the bytes wins.
_LATIN1 = ("cp1252", "latin-1")  # WHATWG: "iso-8859-1" on the wire is windows-1252
_ASCII = ("ascii", "utf-8", "cp1252", "latin-1")  # 8-bit "us-ascii" is UTF-8 or cp1252
_CHARSET_ALIASES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us", "us", "646"), _ASCII),
    **dict.fromkeys(
        ("iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819"), _LATIN1
    ),
    **dict.fromkeys(("windows-1252", "cp1252", "x-cp1252", "win-1252"), _LATIN1),
    **dict.fromkeys(
        (
            "ks_c_5601-1987",
            "ks_c_5601",
            "ks_c_5601_1987",
            "ksc5601",
            "ksc_5601",
            "euc-kr",
            "euckr",
            "x-windows-949",
            "windows-949",
            "cp949",
            "uhc",
        ),
        ("cp949",),  # superset of EUC-KR: Outlook's "ks_c_5601-1987" is really cp949
    ),
    **dict.fromkeys(("unicode-1-1-utf-7", "utf-7", "utf7", "x-unicode-2-0-utf-7"), ("utf-7",)),
    **dict.fromkeys(
        (
            "x-sjis",
            "shift_jis",
            "shift-jis",
            "sjis",
            "x-shift_jis",
            "x-shift-jis",
            "ms_kanji",
            "csshiftjis",
            "windows-31j",
            "cp932",
        ),
        ("cp932", "shift_jis_2004"),  # phones and Windows send cp932 (NEC/IBM extensions)
    ),
    **dict.fromkeys(
        ("iso-2022-jp", "csiso2022jp", "iso2022jp", "iso-2022-jp-2"),
        ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2", "iso2022_jp_2004"),
    ),
    **dict.fromkeys(("euc-jp", "x-euc-jp", "eucjp"), ("euc_jp", "euc_jis_2004")),
    **dict.fromkeys(
        ("gb2312", "gbk", "x-gbk", "euc-cn", "cp936", "csgb2312", "gb_2312-80", "chinese"),
        ("gb18030",),  # the superset; mail labelled gb2312 routinely has GBK characters
    ),
    "hz-gb-2312": ("hz",),
    **dict.fromkeys(
        ("big5", "x-x-big5", "big5-hkscs", "cn-big5", "csbig5", "x-big5", "big-5"),
        ("big5hkscs", "cp950"),
    ),
    **dict.fromkeys(
        ("windows-874", "x-windows-874", "tis-620", "tis620", "iso-8859-11", "cp874"), ("cp874",)
    ),
    **dict.fromkeys(("iso-8859-8-i", "iso-8859-8-e", "logical", "visual"), ("iso8859_8",)),
    **dict.fromkeys(("iso-8859-6-i", "iso-8859-6-e"), ("iso8859_6",)),
    **dict.fromkeys(("x-mac-roman", "macintosh", "mac"), ("mac_roman",)),
    "x-mac-cyrillic": ("mac_cyrillic",),
    **dict.fromkeys(("utf8", "utf-8", "x-utf-8", "unicode-1-1-utf-8", "utf-8-sig"), ("utf-8",)),
}
# Labels that say "I don't know": guess UTF-8, then Windows-1252 (which with
# latin-1 as the last resort never fails).
_UNKNOWN_CHARSET = ("utf-8", "cp1252", "latin-1")
_UNKNOWN_LABELS = frozenset(
    ("x-user-defined", "unknown", "x-unknown", "unknown-8bit", "default", "none", "x-none")
)
# Text codecs Python has that no mail charset means (and some that decode code).
_REFUSED_CODECS = frozenset(
    ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem")
)


def _charset_codecs(label: str | None) -> tuple[tuple[str, ...], bool]:
    """Codecs to try for a charset label, and whether the label was understood."""
    if label is None or not label.strip():
        return _ASCII, True  # RFC 2045 default, read as mail really is
    name = label.strip().strip("\"'").strip().lower().rstrip(";,. ")
    if name.startswith("3d"):  # "charset=3Diso-8859-1": a quoted-printable leftover
        name = name[2:]
    if name in _CHARSET_ALIASES:
        return _CHARSET_ALIASES[name], True
    if name in _UNKNOWN_LABELS:
        return _UNKNOWN_CHARSET, False
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return _UNKNOWN_CHARSET, False
    if not getattr(info, "_is_text_encoding", True) or (
        info.name.replace("-", "_") in _REFUSED_CODECS
    ):
        return _UNKNOWN_CHARSET, False
    return (info.name,), True


def _decode_bytes(
    data: bytes, label: str | None, defects: _Defects, where: str, *, truncated: bool = False
) -> str:
    """Bytes in a declared charset -> text, never failing; guesses are recorded as defects."""
    candidates, known = _charset_codecs(label)
    if not known:
        defects.add(f"{where}: unknown charset {label!r}, read as UTF-8 or Windows-1252")
    for codec in candidates:
        try:
            return _decode_strict(data, codec, truncated)
        except (UnicodeError, LookupError, ValueError):
            continue
    if "utf-8" not in candidates:
        try:
            text = _decode_strict(data, "utf-8", truncated)
        except (UnicodeError, ValueError):
            pass
        else:
            defects.add(f"{where}: labelled {label!r} but the bytes are UTF-8")
            return text
    elif not _mostly_utf8(data):
        # Labelled UTF-8 but written in a legacy charset (mail clients that
        # label everything UTF-8): Windows-1252 reads it, latin-1 never fails.
        defects.add(f"{where}: labelled {label!r} but the bytes are Windows-1252")
        for codec in ("cp1252", "latin-1"):
            try:
                return _decode_strict(data, codec, truncated)
            except (UnicodeError, ValueError):
                continue
    defects.add(f"{where}: bytes not valid in {label or 'us-ascii'!r}, replaced")
    try:
        return data.decode(candidates[0], errors="replace")
    except (LookupError, ValueError):
        return data.decode("latin-1")


def _mostly_utf8(data: bytes) -> bool:
    """UTF-8 with a few bad bytes (a cut or a stray byte), not text in another charset.

    At least three well-formed multi-byte characters per invalid byte: text in
    a legacy charset almost never forms even one.
    """
    text = data.decode("utf-8", errors="replace")
    invalid = text.count("\ufffd") - data.count(b"\xef\xbf\xbd")
    valid = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    return valid > 0 and invalid * 3 <= valid


def _decode_strict(data: bytes, codec: str, truncated: bool) -> str:
    if not truncated:
        text = data.decode(codec)
    else:
        # A cut body may end inside a multi-byte character: let the incremental
        # decoder hold the incomplete tail back instead of failing on it.
        text = codecs.getincrementaldecoder(codec)().decode(data, final=False)
    return text[1:] if text.startswith("\ufeff") else text
