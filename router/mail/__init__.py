"""Raw RFC 822 mail -> one :class:`ParsedMail`: the email channel's wire format.

Pure: bytes in, a dataclass out, no I/O. The IMAP adapter calls :func:`parse`
on every fetched message; the routing side reads the fields it needs
(sender, thread ids, routed text, language / time-zone hints and the noise
flags that suppress acknowledgements).

Real mail is broken in every way there is, and a bad message must never stop
the adapter, so :func:`parse` reads leniently and records what it had to
repair in ``defects``; it raises :class:`MailError` only when nothing usable
is left (empty input, no header at all, neither a sender nor a body). The
structure comes from the standard library's ``email`` parser (modern policy);
header text is decoded here from the raw bytes because the header registry
mis-handles the real-world cases that matter (raw 8-bit headers in legacy
charsets, RFC 6532 addresses, encoded-words split mid-character, unknown
charsets). HTML is turned into text by ``inscriptis`` (on an ``lxml`` tree).

The package, by seam (each module imports only the ones above it):

- ``model``: the results (``ParsedMail``, ``Attachment``, ``DeliveryReport``)
  and ``MailError``;
- ``limits``: the bounds one message's parse keeps;
- ``defects``: the list of what was repaired, and the UTF-8 repair of text;
- ``charsets``: bytes in a declared (or lying, or unknown) charset -> text;
- ``headers``: header values, encoded-words, addresses, message ids;
- ``dates``, ``subjects``, ``quoted``: the ``Date:`` offset, the subject for
  threading, the customer's new words without quoted history;
- ``noise``: bulk, bounce and auto-reply flags;
- ``mime``: transfer encodings and the walk over the MIME tree;
- ``html``: HTML -> text, with and without quoted replies;
- ``reports``: delivery reports (RFC 3464 and plain-text bounces);
- ``structure``: ``check_structure``, the bounds checked on the raw lines
  before the standard library builds the tree;
- ``parser``: ``parse``, the one entry point, which puts them together.

Names with a leading underscore are private to the package: its modules
share them, nothing outside it uses them.
"""

from router.mail.limits import MAX_MIME_DEPTH, MAX_MIME_PARTS
from router.mail.model import Attachment, DeliveryReport, MailError, ParsedMail
from router.mail.parser import parse
from router.mail.quoted import strip_quoted
from router.mail.structure import check_structure
from router.mail.subjects import normalise_subject

__all__ = [
    "MAX_MIME_DEPTH",
    "MAX_MIME_PARTS",
    "Attachment",
    "DeliveryReport",
    "MailError",
    "ParsedMail",
    "check_structure",
    "normalise_subject",
    "parse",
    "strip_quoted",
]
