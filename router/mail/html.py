"""HTML -> readable text (``inscriptis`` on an ``lxml`` tree), with and without
the quoted replies mail clients mark in it."""

from __future__ import annotations

import re
from html import unescape as unescape_html

from inscriptis import Inscriptis
from inscriptis.model.config import ParserConfig
from lxml import etree
from lxml import html as lxml_html

from router.mail.defects import _Defects

_HTML_CONFIG = ParserConfig(display_links=False, display_images=False)
_XML_DECL_RE = re.compile(r"^\s*<\?xml[^>]*\?>")
_QUOTE_XPATH = (
    "//blockquote"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_quote ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' yahoo_quoted ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' moz-cite-prefix ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' gmail_signature ')]"
    "|//*[contains(concat(' ', normalize-space(@class), ' '), ' moz-signature ')]"
    "|//*[@id='divRplyFwdMsg']|//*[@id='appendonsend']"
)


def _html_to_text(html: str, defects: _Defects) -> tuple[str, str]:
    """Readable text from HTML (inscriptis): the whole of it, and without quoted replies.

    The tree is parsed once; the second rendering only happens when the HTML
    has reply-quote elements to drop (conversion is the slow step).
    """
    source = _XML_DECL_RE.sub("", html, count=1).strip()
    if not source:
        return "", ""
    try:
        try:
            tree = lxml_html.document_fromstring(source)
        except etree.ParserError:
            tree = lxml_html.document_fromstring("<pre>" + source + "</pre>")
        for element in tree.xpath("//script|//style|//noscript|//template|//head"):
            element.drop_tree()
        full = _tidy(Inscriptis(tree, _HTML_CONFIG).get_text())
        quotes = tree.xpath(_QUOTE_XPATH)
        if not quotes:
            return full, full
        for element in quotes:
            if element.getparent() is not None:
                # Outlook's reply header div: everything after it is history too.
                if element.get("id") in ("divRplyFwdMsg", "appendonsend"):
                    for sibling in list(element.itersiblings()):
                        sibling.drop_tree()
                element.drop_tree()
        return full, _tidy(Inscriptis(tree, _HTML_CONFIG).get_text())
    except Exception as exc:  # lxml refuses some inputs (control characters, huge trees)
        defects.add(f"HTML not convertible ({type(exc).__name__}), tags stripped instead")
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", source)
        text = re.sub(r"(?i)<br\s*/?>|</(?:p|div|tr|li|h\d)\s*>", "\n", text)
        text = _tidy(unescape_html(re.sub(r"<[^>]*>", " ", text)))
        return text, text


def _tidy(text: str) -> str:
    text = text.replace("\xa0", " ").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").strip()
