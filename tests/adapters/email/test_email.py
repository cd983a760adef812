"""E-mail end to end with real servers on loopback: pymap (IMAP) in the default
suite, Dovecot for IDLE, STARTTLS, UIDVALIDITY changes and MOVE, aiosmtpd
receiving the daemon's replies. The daemon runs as a process."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import yaml

from router.adapters.imap import MailParser
from router.mail import MailError, ParsedMail, parse
from tests.adapters.email.mail_servers import DovecotServer, ImapServer, PymapServer, SmtpInbox
from tests.support import (
    FIXTURES,
    DaemonProcess,
    RedisServer,
    cli,
    free_port,
    per_message,
    write_config,
)

FOLDER = "Support"
EMAILS = sorted(p for p in (FIXTURES / "emails").rglob("*") if p.is_file() and p.name != "LICENSE")


def mail(
    sender: str,
    subject: str,
    body: str,
    *,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    lines = [
        f"From: {sender}",
        "To: support@example.com",
        f"Subject: {subject}",
        f"Message-ID: {message_id or make_msgid(domain='customer.example')}",
        "Date: Sun, 22 Nov 2026 10:00:00 +0530",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    if in_reply_to:
        lines += [f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


@pytest.fixture
def pymap() -> Iterator[PymapServer]:
    server = PymapServer().start()
    server.create(FOLDER)
    yield server
    server.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpInbox]:
    inbox = SmtpInbox().start()
    yield inbox
    inbox.stop()


def mail_config(
    tmp: Path,
    redis_url: str,
    imap: ImapServer,
    smtp: SmtpInbox | None = None,
    name: str = "d1",
    **account: Any,
) -> Path:
    port = free_port()
    acct = {
        "name": "support",
        "host": "127.0.0.1",
        "port": imap.port,
        "security": "none",
        "username": imap.user,
        "password": {"env": "IMAP_PASSWORD"},
        "folders": [FOLDER],
        "poll_interval": "1s",
        **account,
    }
    email_cfg: dict[str, Any] = {"enabled": True, "accounts": [acct]}
    if smtp is not None:
        email_cfg["smtp"] = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from_address": "support@example.com",
            "from_name": "Acme Support",
        }
    return write_config(
        tmp / f"{name}.yaml",
        redis_url,
        port,
        **{
            "instance_id": name,
            "state_dir": str(tmp / name),
            "channels.email": email_cfg,
            "routing": {
                "languages": ["en", "ja", "ko", "de", "pt"],
                "default_language": "en",
                "default_queue": "general",
            },
            "queues": {"general": {}},
            "rules": [],
        },
    )


def start(config: Path, imap: ImapServer) -> DaemonProcess:
    port = int(yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1])
    return DaemonProcess(config, port, env={"IMAP_PASSWORD": imap.password}).start()


def queued(r: redis_sync.Redis) -> list[dict[str, str]]:
    """One per routed message (follow-ups join their conversation's work item)."""
    return per_message(r, [f for b in range(4) for _, f in r.xrange(f"router:q:{{general}}:p{b}")])


def dead(r: redis_sync.Redis) -> list[dict[str, str]]:
    return [f for _, f in r.xrange("router:deadletter")]


async def until(predicate: Callable[[], Any], timeout: float = 30, what: str = "") -> Any:
    for _ in range(int(timeout / 0.1)):
        if value := predicate():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_every_corpus_message_is_routed_or_dead_lettered(
    tmp_path: Path, redis_server: RedisServer, pymap: PymapServer
) -> None:
    r = redis_server.client()
    client = pymap.session()
    ids: dict[str, int] = {}
    expected_dead = 0
    refused = []
    for path in EMAILS:
        raw = path.read_bytes()
        if client.append(f'"{FOLDER}"', None, None, raw)[0] != "OK":
            refused.append(path.name)  # an IMAP server takes no empty message
            continue
        try:
            parsed = parse(raw)
            if parsed.sender is None or parsed.delivery_report is not None:
                expected_dead += 1
            elif parsed.message_id:
                ids[parsed.message_id] = ids.get(parsed.message_id, 0) + 1
        except MailError:
            expected_dead += 1
    client.logout()
    duplicates = sum(n - 1 for n in ids.values())
    assert len(EMAILS) == 104 and refused == ["sample_output_multipart"]
    daemon = start(mail_config(tmp_path, redis_server.url, pymap), pymap)
    try:
        total = len(EMAILS) - len(refused)
        await until(
            lambda: len(queued(r)) + len(dead(r)) + duplicates >= total,
            timeout=60,
            what=f"{total} messages routed or dead-lettered",
        )
        await asyncio.sleep(1.5)  # nothing more trickles in
        assert len(queued(r)) + len(dead(r)) + duplicates == total
        assert len(dead(r)) == expected_dead
        assert all(d["reason"] for d in dead(r))
        # every message on the server is marked processed: none left for a re-fetch
        flags = [f for _, f, _ in pymap.messages(FOLDER)]
        assert len(flags) == total and all("\\Seen" in f for f in flags), (
            flags
        )  # pymap: no keywords
        texts = [r.hget(f"router:msg:{{{e['message_id']}}}", "text") or "" for e in queued(r)]
        subjects = [r.hget(f"router:msg:{{{e['message_id']}}}", "subject") or "" for e in queued(r)]
        blob = "\n".join(texts + subjects)
        assert any("\u3042" <= ch <= "\u30ff" for ch in blob), "no readable Japanese"
        assert any("\uac00" <= ch <= "\ud7a3" for ch in blob), "no readable Korean"
        raw_dead = next(d for d in dead(r))
        assert base64.b64decode(raw_dead["payload"])  # the raw message is kept
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        daemon.stop()


async def test_reply_by_smtp_threads_both_ways(
    tmp_path: Path, redis_server: RedisServer, pymap: PymapServer, smtp: SmtpInbox
) -> None:
    r = redis_server.client()
    first_id = make_msgid(domain="customer.example")
    pymap.append(
        FOLDER,
        mail(
            "Ana Silva <ana@customer.example>",
            "Order 1234 missing",
            "Hello, my order 1234 has not arrived yet.",
            message_id=first_id,
        ),
    )
    daemon = start(mail_config(tmp_path, redis_server.url, pymap, smtp), pymap)
    try:
        (entry,) = await until(lambda: queued(r), what="routed")
        ack_from, ack_to, ack = (await asyncio.to_thread(smtp.wait, 1))[0]
        assert ack_to == ["ana@customer.example"] and ack["Auto-Submitted"] == "auto-replied"
        assert ack["In-Reply-To"] == first_id and ack["Subject"] == "Re: Order 1234 missing"
        out = cli(
            daemon.config,
            "reply",
            entry["conversation_id"],
            "--text",
            "Hi Ana,\nit ships today.",
            "--agent",
            "bob",
        )
        assert out.returncode == 0, out.stderr
        _, _, reply = (await asyncio.to_thread(smtp.wait, 2))[1]
        assert reply["In-Reply-To"] == first_id and "Auto-Submitted" not in reply
        assert reply["From"] == "Acme Support <support@example.com>"
        parts = {p.get_content_type(): p.get_content() for p in reply.iter_parts()}
        assert "it ships today." in parts["text/plain"]
        assert "it ships today." in parts["text/html"]
        # the customer answers our reply: it threads into the same conversation
        pymap.append(
            FOLDER,
            mail(
                "ana@customer.example",
                "Re: Order 1234 missing",
                "Great, thanks!\n\nOn Sunday Bob wrote:\n> it ships today.",
                in_reply_to=reply["Message-ID"],
            ),
        )
        second = await until(lambda: len(queued(r)) == 2 and queued(r)[1], what="answer")
        assert second["conversation_id"] == entry["conversation_id"]
        text = r.hget(f"router:msg:{{{second['message_id']}}}", "text")
        assert text.strip() == "Great, thanks!"  # quoted history stripped
    finally:
        daemon.stop()


async def test_auto_reply_storm_sends_nothing_and_reopens_nothing(
    tmp_path: Path, redis_server: RedisServer, pymap: PymapServer, smtp: SmtpInbox
) -> None:
    r = redis_server.client()
    client = pymap.session()
    for i in range(100):
        pymap.append(
            FOLDER,
            mail(
                f"person{i}@corp.example",
                "Out of office: your message",
                "I am out of the office until Monday.",
                headers={"Auto-Submitted": "auto-replied"},
            ),
            client,
        )
    client.logout()
    daemon = start(mail_config(tmp_path, redis_server.url, pymap, smtp), pymap)
    try:
        await until(lambda: len(queued(r)) == 100, timeout=60, what="100 auto-replies stored")
        await asyncio.sleep(3)
        assert smtp.received == []  # not one acknowledgement
        # an out-of-office answer on a resolved conversation leaves it resolved
        conv = queued(r)[0]["conversation_id"]
        cli(daemon.config, "conversation", "resolve", conv)
        sender = r.hget(f"router:conv:{{{conv}}}", "reply_to")
        pymap.append(
            FOLDER,
            mail(sender, "Automatic reply", "Away.", headers={"Auto-Submitted": "auto-replied"}),
        )
        await until(
            lambda: r.hget(f"router:conv:{{{conv}}}", "message_count") == "2",
            what="the second auto-reply recorded",
        )
        assert r.hget(f"router:conv:{{{conv}}}", "status") == "resolved"
        assert len(queued(r)) == 100 and smtp.received == []
    finally:
        daemon.stop()


@pytest.mark.parametrize(
    "report_from",
    # issue 14: a From without an address (read right item 2), and a bounce
    # written as plain text (judgement call: a report, not a conversation)
    ["MAILER-DAEMON@mx.customer.example", "MAILER DAEMON <>", "plain-text"],
    ids=["mailer-daemon", "empty-address", "plain-text"],
)
async def test_delivery_report_marks_the_reply_failed(
    tmp_path: Path,
    redis_server: RedisServer,
    pymap: PymapServer,
    smtp: SmtpInbox,
    report_from: str,
) -> None:
    r = redis_server.client()
    pymap.append(FOLDER, mail("ana@customer.example", "Question", "Do you ship to Japan?"))
    daemon = start(mail_config(tmp_path, redis_server.url, pymap, smtp), pymap)
    try:
        (entry,) = await until(lambda: queued(r), what="routed")
        out = cli(daemon.config, "reply", entry["conversation_id"], "--text", "Yes.", "--json")
        outbox_id = json.loads(out.stdout)["outbox_id"]
        sent = (await asyncio.to_thread(smtp.wait, 2))[1][2]
        report = (
            f"From: {report_from}\r\nTo: support@example.com\r\n"
            "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
            f"Message-ID: {make_msgid(domain='mx.customer.example')}\r\n"
            'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.customer.example\r\n\r\n"
            "Final-Recipient: rfc822; ana@customer.example\r\nAction: failed\r\n"
            "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 user unknown\r\n"
            "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"Message-ID: {sent['Message-ID']}\r\nSubject: Re: Question\r\n"
            "--B--\r\n"
        ).encode()
        if report_from == "plain-text":  # qmail's words
            report = (
                "From: MAILER-DAEMON@mx.customer.example\r\nTo: support@example.com\r\n"
                "Subject: failure notice\r\n"
                f"Message-ID: {make_msgid(domain='mx.customer.example')}\r\n\r\n"
                "Hi. This is the qmail-send program at mx.customer.example.\r\n"
                "I'm afraid I wasn't able to deliver your message to the following "
                "addresses.\r\n\r\n<ana@customer.example>:\r\n"
                "550 5.1.1 user unknown\r\n\r\n"
                "--- Below this line is a copy of the message.\r\n\r\n"
                f"Message-ID: {sent['Message-ID']}\r\nSubject: Re: Question\r\n\r\nYes.\r\n"
            ).encode()
        pymap.append(FOLDER, report)
        await until(
            lambda: r.hget(f"router:delivery:{{{outbox_id}}}", "status") == "failed",
            what="the reply marked failed",
        )
        assert "user unknown" in r.hget(f"router:delivery:{{{outbox_id}}}", "last_error")
        assert len(queued(r)) == 1  # no conversation for the bounce
        assert dead(r) == []
    finally:
        daemon.stop()


async def test_sigkill_during_a_500_message_fetch(
    tmp_path: Path, redis_server: RedisServer, pymap: PymapServer
) -> None:
    r = redis_server.client()
    client = pymap.session()
    for i in range(500):
        pymap.append(
            FOLDER,
            mail(
                f"c{i % 50}@customer.example",
                f"Question {i}",
                f"Question number {i}",
                message_id=f"<q{i}@customer.example>",
            ),
            client,
        )
    client.logout()
    config = mail_config(tmp_path, redis_server.url, pymap)
    daemon = start(config, pymap)
    await until(lambda: len(queued(r)) >= 60, what="part of the fetch done")
    daemon.kill()
    daemon = start(config, pymap)
    try:
        await until(lambda: len(queued(r)) >= 500, timeout=90, what="all 500 routed")
        await asyncio.sleep(2)
        sources = [r.hget(f"router:msg:{{{e['message_id']}}}", "source_id") for e in queued(r)]
        assert len(sources) == 500 and len(set(sources)) == 500
        flags = [f for _, f, _ in pymap.messages(FOLDER)]
        assert len(flags) == 500 and all("\\Seen" in f for f in flags)
    finally:
        daemon.stop()


def many_parts_mail(count: int) -> bytes:
    """A 1.9 MB mail of 20,000 tiny parts (count=20_000): 7-10 s of stdlib parsing."""
    head = mail("mallory@attacker.example", "parts", "").split(b"Content-Type:")[0]
    parts = b"".join(
        b"--x\r\nContent-Type: text/plain\r\n\r\n" + b"a" * 60 + b"\r\n" for _ in range(count)
    )
    return head + b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n' + parts + b"--x--\r\n"


def big_mail(attachment_bytes: int) -> bytes:
    """A short question with a large attachment (base64 on the wire)."""
    head = mail("big@customer.example", "big", "").split(b"Content-Type:")[0]
    data = base64.encodebytes(os.urandom(attachment_bytes)).replace(b"\n", b"\r\n")
    return (
        head
        + b'Content-Type: multipart/mixed; boundary="q"\r\n\r\n'
        + b"--q\r\nContent-Type: text/plain\r\n\r\nInvoice attached.\r\n"
        + b"--q\r\nContent-Type: application/pdf; name=scan.pdf\r\n"
        + b"Content-Transfer-Encoding: base64\r\n\r\n"
        + data
        + b"--q--\r\n"
    )


def nested_mail(depth: int) -> bytes:
    """Multiparts nested ``depth`` levels deep."""
    head = mail("mallory@attacker.example", "nested", "").split(b"Content-Type:")[0]
    opening = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (i, i + 1)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth + 1)))
    return (
        head
        + b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n'
        + opening
        + b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep" % depth
        + closing
        + b"\r\n"
    )


# Runs in a process of its own, so neither the test's own work (appending
# megabytes over IMAP) nor its GIL can delay the probes it measures.
_PROBE = """
import http.client, json, sys, threading, time
port, every = int(sys.argv[1]), float(sys.argv[2])
halt = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), halt.set()), daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
rows, failures, next_at = [], [], time.monotonic()
while not halt.is_set():
    started = time.monotonic()
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            failures.append(f"HTTP {response.status}")
    except (OSError, http.client.HTTPException) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    done = time.monotonic()
    rows.append((started, done))
    next_at += every
    halt.wait(max(0.0, next_at - time.monotonic()))
print(json.dumps({"rows": rows, "failures": failures}))
"""


class HealthProbe:
    """GET /healthz every 50 ms on one keep-alive connection, timing each answer."""

    def __init__(self, port: int, every: float = 0.05) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(port), str(every)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.latencies: list[float] = []
        self.gaps: list[float] = []
        self.failures: list[str] = []

    def stop(self) -> None:
        out, _ = self.proc.communicate(b"", timeout=30)
        result = json.loads(out)
        rows = result["rows"]
        self.failures = result["failures"]
        self.latencies = [done - started for started, done in rows]
        # between two answers: the 50 ms period plus any delay in either
        self.gaps = [b[1] - a[1] for a, b in itertools.pairwise(rows)]


async def test_mime_bombs_never_stall_the_daemon(tmp_path: Path, redis_server: RedisServer) -> None:
    """Issue 14, item 2: a 20,000-part mail held the event loop for 9.8 s.

    On a real daemon and a real IMAP server (Dovecot when it is installed,
    else pymap, which stores 300 levels at most), /healthz answers within 100 ms, polled every 50 ms, while a
    20,000-part mail and a 3,000-level nested one are fetched and
    dead-lettered with their reasons, and the mails after them (one of 1,000
    parts, one of 20 MB) are routed.
    """
    r = redis_server.client()
    server: ImapServer = (
        DovecotServer().start() if DovecotServer.available else PymapServer().start()
    )
    try:
        server.create(FOLDER)
        server.append(FOLDER, mail("ana@customer.example", "Before", "The first question"))
        daemon = start(mail_config(tmp_path, redis_server.url, server), server)
        probe: HealthProbe | None = None

        def subjects() -> set[str]:
            return {r.hget(f"router:msg:{{{e['message_id']}}}", "subject") for e in queued(r)}

        try:
            await until(lambda: len(queued(r)) == 1, what="the first mail routed")
            # within the bounds, so parsed and routed: about 0.4 s of CPU in a worker
            # pymap's own parser cannot store 500 levels: 300 there, still far over our 40
            depth = 3000 if isinstance(server, DovecotServer) else 300
            parts, nested, heavy = (
                many_parts_mail(20_000),
                nested_mail(depth),
                many_parts_mail(1000),
            )
            probe = HealthProbe(daemon.port)
            await asyncio.sleep(0.5)
            client = server.session()
            server.append(FOLDER, parts, client)
            server.append(FOLDER, nested, client)
            server.append(FOLDER, heavy, client)
            server.append(FOLDER, big_mail(15_000_000), client)  # 20 MB on the wire
            server.append(FOLDER, mail("bo@customer.example", "After", "The next question"), client)
            client.logout()
            await until(
                lambda: "After" in subjects(),
                timeout=90,
                what="the mail after the bombs routed",
            )
            await asyncio.sleep(1.0)  # and the loop stays free afterwards
            probe.stop()
            worst = max(probe.latencies)
            print(
                f"\n/healthz: {len(probe.latencies)} probes, worst answer "
                f"{worst * 1000:.1f} ms, worst gap between answers {max(probe.gaps) * 1000:.1f} ms"
            )
            assert probe.failures == []
            assert len(probe.latencies) >= 20
            assert worst < 0.1, sorted(probe.latencies)[-5:]
            # Between answers: the 50 ms period plus any delay on either side,
            # the probe's own scheduling on a loaded machine included (50-100 ms
            # measured on 2 busy cores).
            assert max(probe.gaps) < 0.25, sorted(probe.gaps)[-5:]
            reasons = sorted(d["reason"] for d in dead(r))
            assert "more than 1000 MIME parts" in reasons[1], reasons
            assert "MIME nesting deeper than 40 levels" in reasons[0], reasons
            assert {base64.b64decode(d["payload"])[:4] for d in dead(r)} == {b"From"}
            assert subjects() == {"Before", "parts", "big", "After"}
            assert daemon.proc is not None and daemon.proc.poll() is None
        finally:
            if probe is not None and probe.proc.poll() is None:
                probe.proc.kill()
            daemon.stop()
    finally:
        server.stop()


async def test_mail_arriving_during_a_fetch_does_not_wait_for_the_next_idle(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The server reports mail that arrives while the watcher fetches and
    stores in the responses to those commands, not later in IDLE: the watcher
    searches again before idling, or the mail waits for the next IDLE renewal
    (5 minutes by default)."""
    r = redis_server.client()
    server: ImapServer = (
        DovecotServer().start() if DovecotServer.available else PymapServer().start()
    )
    try:
        server.create(FOLDER)
        server.append(FOLDER, mail("ana@customer.example", "Before", "The first question"))
        daemon = start(mail_config(tmp_path, redis_server.url, server), server)
        try:
            await until(lambda: len(queued(r)) == 1, what="the first mail routed")
            client = server.session()
            for _ in range(6):  # about 0.4 s of parsing each
                server.append(FOLDER, many_parts_mail(1000), client)
            await until(lambda: len(queued(r)) >= 2, what="the first slow mail routed")
            server.append(FOLDER, mail("bo@customer.example", "Late", "Arrived meanwhile"), client)
            client.logout()
            await until(lambda: len(queued(r)) == 8, timeout=20, what="the late mail routed")
        finally:
            daemon.stop()
    finally:
        server.stop()


async def test_mail_cases_are_read_right_through_imap(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Issue 14, "e-mail read right": the hand-made cases of tests/fixtures/mail-cases,
    fetched from a real IMAP server by a real daemon, are routed with the words
    a mail client shows; the two bounces are reports (about mail this daemon
    did not send, so dead-lettered with the bounced Message-ID)."""
    r = redis_server.client()
    server: ImapServer = (
        DovecotServer().start() if DovecotServer.available else PymapServer().start()
    )
    cases = sorted((FIXTURES / "mail-cases").glob("*.eml"))
    assert len(cases) == 10, cases
    try:
        server.create(FOLDER)
        client = server.session()
        for path in cases:
            server.append(FOLDER, path.read_bytes(), client)
        client.logout()
        daemon = start(mail_config(tmp_path, redis_server.url, server), server)
        try:
            await until(lambda: len(queued(r)) + len(dead(r)) == 10, what="all ten handled")
            routed = {}
            for entry in queued(r):
                record = r.hgetall(f"router:msg:{{{entry['message_id']}}}")
                routed[record["subject"]] = record
            texts = {subject: record["text"] for subject, record in routed.items()}
            assert texts == {
                "MMS message": "My parcel arrived damaged, photo attached. Order 5521.",
                "Invoice question": "Please send the invoice for order 7788 again.",
                "Logs attached": "The checkout page says: payment declined, code 51.",
                "Frösche im Paket": "Ich habe Frösche bestellt.",
                "Юникод: заказ\ufffd не пришёл": "Заказ 4411 не пришёл.",
                "Delivery": "Grüße aus Köln, die Lieferung für Bestellung 9001 fehlt.",
                "Whitespace": "Where is my order 3141?",
                "Refund": "Hello, I returned the shoes (order 6060) two weeks ago.\n"
                "When will I get my refund?",
            }
            assert routed["Frösche im Paket"]["display_name"] == "Jürgen Müller"
            assert routed["Whitespace"]["sender"] == "email:ana@customer.example"
            reasons = sorted(d["reason"] for d in dead(r))
            assert "about reply-42@shop.example, which the daemon did not send" in reasons[0]
            assert "about reply-43@shop.example, which the daemon did not send" in reasons[1]
        finally:
            daemon.stop()
    finally:
        server.stop()


def parse_or_misbehave(raw: bytes) -> ParsedMail:
    """parse(), except that b"die" kills the worker and b"hang" never returns."""
    if raw == b"die":
        os._exit(3)
    if raw == b"hang":
        time.sleep(60)
    return parse(raw)


async def test_mail_parser_survives_a_dying_or_stuck_worker() -> None:
    """A parse that kills its worker process or hangs is a dead-letter reason
    for that mail alone; the mails parsed beside it and after it are read."""
    parser = MailParser(workers=2, timeout=3.0, function=parse_or_misbehave)
    await parser.start()
    good = mail("ana@customer.example", "Fine", "A normal question")
    try:
        results = await asyncio.gather(
            parser.parse(good), parser.parse(b"die"), parser.parse(good), return_exceptions=True
        )
        assert isinstance(results[1], MailError), results
        assert "the parser process died on this message" in str(results[1])
        assert [p.subject for p in results if isinstance(p, ParsedMail)] == ["Fine", "Fine"]
        started = time.monotonic()
        with pytest.raises(MailError, match="parsing took over 3 s"):
            await parser.parse(b"hang")
        assert time.monotonic() - started < 10
        assert (await parser.parse(good)).subject == "Fine"
        with pytest.raises(MailError, match="more than 1000 MIME parts"):
            await parser.parse(many_parts_mail(1001))
    finally:
        await parser.stop()
    assert parser._pool is None


dovecot_only = pytest.mark.skipif(
    not DovecotServer.available,
    reason="needs Debian's dovecot-imapd and root (the test runs its own Dovecot): run "
    "scripts/test as root (it installs it), or `apt-get install --no-install-recommends "
    "dovecot-imapd` and run the tests as root",
)


@dovecot_only
async def test_dovecot_idle_starttls_move_and_uidvalidity(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    dovecot = DovecotServer(starttls=True).start()
    try:
        dovecot.create(FOLDER)
        dovecot.append(
            FOLDER,
            mail(
                "ken@customer.example",
                "Hello",
                "First question",
                message_id="<k1@customer.example>",
            ),
        )
        config = mail_config(
            tmp_path,
            redis_server.url,
            dovecot,
            security="starttls",
            ca_file=str(dovecot.cert),
            processed="move",
            processed_folder="Processed",
            poll_interval="10m",
            idle_renew="2s",
        )
        daemon = start(config, dovecot)
        try:
            await until(lambda: len(queued(r)) == 1, what="first message")
            # IDLE: a new message arrives within seconds although polling is every 10 min
            t0 = time.monotonic()
            dovecot.append(
                FOLDER,
                mail(
                    "ken@customer.example",
                    "Again",
                    "Second question",
                    message_id="<k2@customer.example>",
                ),
            )
            await until(lambda: len(queued(r)) == 2, timeout=10, what="pushed by IDLE")
            assert time.monotonic() - t0 < 5  # IDLE renews every 15 s, polling every 10 min
            # MOVE: processed mail left the folder for Processed
            await until(lambda: len(dovecot.messages("Processed")) == 2, what="moved")
            assert dovecot.messages(FOLDER) == []
            # UIDVALIDITY changes (the folder is recreated with the same mail): no duplicate
            dovecot.delete(FOLDER)
            dovecot.create(FOLDER)
            for _, _, raw in dovecot.messages("Processed"):
                dovecot.append(FOLDER, raw)
            dovecot.append(
                FOLDER,
                mail(
                    "ken@customer.example",
                    "Third",
                    "Third question",
                    message_id="<k3@customer.example>",
                ),
            )
            await until(lambda: len(queued(r)) == 3, timeout=45, what="the new one only")
            await asyncio.sleep(2)
            assert len(queued(r)) == 3
        finally:
            daemon.stop()
        assert "imap_uidvalidity_changed" in daemon.log() or len(queued(r)) == 3
    finally:
        dovecot.stop()


async def test_smtp_failures_retry_then_give_up_and_imap_reconnects(
    tmp_path: Path, redis_server: RedisServer, smtp: SmtpInbox
) -> None:
    """A 4xx is retried, a 5xx is final; the IMAP server going away and coming
    back on the same port is survived; polling works where IDLE is not used."""
    r = redis_server.client()
    imap = PymapServer().start()
    imap.create(FOLDER)
    imap.create("Urgent")
    imap.append(FOLDER, mail("ana@customer.example", "Hi", "First question"))
    config = mail_config(
        tmp_path, redis_server.url, imap, smtp, idle=False, folders=[FOLDER, "Urgent"]
    )
    daemon = start(config, imap)
    try:
        (entry,) = await until(lambda: queued(r), what="routed by polling")
        await asyncio.to_thread(smtp.wait, 1)  # the acknowledgement
        smtp.fail_next = [451]
        out = cli(daemon.config, "reply", entry["conversation_id"], "--text", "Hello", "--json")
        oid = json.loads(out.stdout)["outbox_id"]
        await until(
            lambda: r.hget(f"router:delivery:{{{oid}}}", "status") == "sent",
            what="sent on the second attempt",
        )
        assert r.hget(f"router:delivery:{{{oid}}}", "attempts") == "2"
        # issue 14: one Message-ID per outbox id, so a retry's duplicate can be matched up
        first, second = smtp.attempts[-2:]
        assert first == second == f"<{r.hget(f'router:delivery:{{{oid}}}', 'provider_id')}>"
        smtp.fail_next = [550]
        out = cli(daemon.config, "reply", entry["conversation_id"], "--text", "Again", "--json")
        failed = json.loads(out.stdout)["outbox_id"]
        await until(
            lambda: r.hget(f"router:delivery:{{{failed}}}", "status") == "failed",
            what="refused for good",
        )
        assert "550" in r.hget(f"router:delivery:{{{failed}}}", "last_error")
        # issue 14: a refused recipient is named in no ERROR line (the server quotes it)
        smtp.refuse_rcpt_next = [550]
        out = cli(daemon.config, "reply", entry["conversation_id"], "--text", "3rd", "--json")
        refused = json.loads(out.stdout)["outbox_id"]
        await until(
            lambda: r.hget(f"router:delivery:{{{refused}}}", "status") == "failed",
            what="recipient refused for good",
        )
        error = r.hget(f"router:delivery:{{{refused}}}", "last_error")
        assert "550" in error and "User unknown" in error and "ana@" not in error
        (dead_line,) = [
            e for e in daemon.events("reply_dead_lettered") if e["outbox_id"] == refused
        ]
        assert "User unknown" in dead_line["reason"]
        errors = [line for line in daemon.log().splitlines() if '"error"' in line]
        assert errors and not [line for line in errors if "ana@customer.example" in line]
        # the IMAP server restarts (empty, same port): the watcher reconnects
        port = imap.port
        imap.stop()
        await asyncio.sleep(2)
        imap = PymapServer()
        imap.port = port
        imap.start()
        imap.create(FOLDER)
        imap.create("Urgent")
        imap.append("Urgent", mail("bo@customer.example", "Urgent", "Please call me"))
        await until(lambda: len(queued(r)) == 2, timeout=60, what="routed after reconnecting")
        assert daemon.events("imap_reconnecting")
    finally:
        daemon.stop()
        imap.stop()


@dovecot_only
async def test_implicit_tls_imap_and_smtp_starttls_with_auth(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    dovecot = DovecotServer(starttls=True).start()
    smtp = SmtpInbox(cert=(dovecot.cert, dovecot.key), login=("mailer", "smtp-pass")).start()
    try:
        dovecot.create(FOLDER)
        dovecot.append(FOLDER, mail("ken@customer.example", "Hello", "A question over TLS"))
        config = mail_config(
            tmp_path,
            redis_server.url,
            dovecot,
            smtp,
            security="tls",
            port=dovecot.tls_port,
            ca_file=str(dovecot.cert),
        )
        data = yaml.safe_load(config.read_text())
        data["channels"]["email"]["smtp"].update(
            security="starttls",
            ca_file=str(dovecot.cert),
            username="mailer",
            password={"env": "SMTP_PASSWORD"},
        )
        config.write_text(yaml.safe_dump(data))
        port = int(data["http"]["listen"].rsplit(":", 1)[1])
        daemon = DaemonProcess(
            config, port, env={"IMAP_PASSWORD": dovecot.password, "SMTP_PASSWORD": "smtp-pass"}
        ).start()
        try:
            await until(lambda: queued(r), what="routed over implicit TLS")
            ((_, to, ack),) = await asyncio.to_thread(smtp.wait, 1)
            assert to == ["ken@customer.example"] and smtp.logins == ["mailer"]
        finally:
            daemon.stop()
    finally:
        smtp.stop()
        dovecot.stop()


@pytest.mark.parametrize(
    ("kind", "auto", "subject"),
    [
        ("ack", "auto-replied", "Re: Order 1234"),
        ("verify", "auto-generated", "Your code for our chat"),
        ("transcript", "auto-generated", "Your chat with us"),
        ("reply", None, "Re: Order 1234"),
    ],
)
def test_mail_the_daemon_writes_itself_is_marked_so_no_responder_answers(
    kind: str, auto: str | None, subject: str
) -> None:
    """An acknowledgement answers a mail (auto-replied); a chat code or
    transcript is written by the daemon (auto-generated, RFC 3834): an
    auto-responder that answered one would open a conversation."""
    from router.adapters.smtp import build
    from router.config import SmtpSettings
    from router.model import OutboundMessage

    smtp = SmtpSettings(host="smtp.example.com", from_address="support@example.com")
    base = "Order 1234" if kind in ("ack", "reply") else subject
    out = build(
        OutboundMessage(
            id="o-1",
            conversation_id="v-1",
            text="Hello",
            to="ana@example.com",
            subject=base,
            kind=kind,
        ),
        smtp,
    )
    assert out["Auto-Submitted"] == auto
    assert out["Subject"] == subject
    assert (out["X-Auto-Response-Suppress"] == "All") == (auto is not None)


async def test_shutdown_honours_shutdown_timeout_when_the_imap_server_is_gone(
    tmp_path: Path, redis_server: RedisServer, pymap: PymapServer
) -> None:
    """Issue 14: SIGTERM took 15-16 s against ``shutdown_timeout: 10s`` once the IMAP
    server had gone away. The whole stop, IMAP logout and parser workers included,
    fits in the timeout."""
    config = mail_config(tmp_path, redis_server.url, pymap)
    cfg = yaml.safe_load(config.read_text())
    cfg["shutdown_timeout"] = "3s"
    config.write_text(yaml.safe_dump(cfg))
    daemon = start(config, pymap)
    pymap.stop()  # the server is gone: the watcher's connection dies or hangs
    await asyncio.sleep(1.5)
    began = time.monotonic()
    code = await asyncio.to_thread(daemon.stop, 30)
    took = time.monotonic() - began
    assert code == 0, daemon.log()
    assert took < 3 + 1.5, f"stopped in {took:.1f} s against shutdown_timeout 3 s"
    assert daemon.events("stopped")[0]["seconds"] <= 3.5
