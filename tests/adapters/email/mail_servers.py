"""Real mail servers for tests, on loopback: pymap (IMAP, pure Python, always
there), Dovecot (IMAP, Debian's dovecot-imapd, for IDLE/STARTTLS/MOVE/UIDVALIDITY)
and aiosmtpd (SMTP, receives the daemon's replies)."""

from __future__ import annotations

import email
import email.policy
import imaplib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port, wait_for

USER, PASSWORD = "support@example.com", "s3cret-pass"
DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class ImapServer:
    """Common helpers: append, flags, folders (through Python's imaplib)."""

    port: int
    user: str
    password: str
    tls_context: ssl.SSLContext | None = None

    def session(self) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port)
        if self.tls_context is not None:
            client.starttls(self.tls_context)
        client.login(self.user, self.password)
        return client

    def append(self, folder: str, raw: bytes, client: imaplib.IMAP4 | None = None) -> None:
        c = client or self.session()
        typ, data = c.append(f'"{folder}"', None, None, raw)
        assert typ == "OK", data
        if client is None:
            c.logout()

    def create(self, folder: str) -> None:
        c = self.session()
        c.create(f'"{folder}"')
        c.logout()

    def delete(self, folder: str) -> None:
        c = self.session()
        c.delete(f'"{folder}"')
        c.logout()

    def messages(self, folder: str) -> list[tuple[int, str, bytes]]:
        """(uid, flags, raw) of every message of ``folder``."""
        c = self.session()
        typ, _ = c.select(f'"{folder}"', readonly=True)
        out: list[tuple[int, str, bytes]] = []
        if typ == "OK":
            typ, data = c.uid("FETCH", "1:*", "(UID FLAGS BODY.PEEK[])")
            for item in data:
                if isinstance(item, tuple):
                    head = item[0].decode()
                    uid = int(head.split("UID ")[1].split()[0])
                    flags = head.split("FLAGS (")[1].split(")")[0]
                    out.append((uid, flags, item[1]))
        c.logout()
        return out


class PymapServer(ImapServer):
    """pymap's in-memory backend (user demouser / demopass)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.user, self.password = "demouser", "demopass"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PymapServer:
        exe = Path(sys.executable).with_name("pymap")
        self.proc = subprocess.Popen(
            [str(exe), "--port", str(self.port), "--no-tls", "dict", "--demo-data"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _port_open(self.port), what="pymap listening")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class DovecotServer(ImapServer):
    """A private Dovecot (dovecot-imapd) with its own config under a temp dir."""

    available = Path(DOVECOT).exists() and os.geteuid() == 0

    def __init__(self, starttls: bool = False) -> None:
        self.port = free_port()
        self.user, self.password = USER, PASSWORD
        self.dir = Path(tempfile.mkdtemp(prefix="dovecot-"))
        self.starttls = starttls
        self.tls_port = free_port()  # implicit TLS (imaps), with starttls=True
        self.proc: subprocess.Popen[bytes] | None = None
        self.cert = self.dir / "cert.pem"
        self.key = self.dir / "key.pem"

    def _config(self) -> Path:
        d = self.dir
        for sub in ("run", "state", "mail", "home"):
            (d / sub).mkdir(exist_ok=True)
        os.chmod(d, 0o755)
        for sub in ("mail", "home"):
            os.chmod(d / sub, 0o777)
        (d / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        ssl_lines = ["ssl = no"]
        if self.starttls:
            subprocess.run(
                [
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1",
                    "-keyout",
                    str(self.key),
                    "-out",
                    str(self.cert),
                ],
                check=True,
                capture_output=True,
            )
            os.chmod(self.key, 0o644)
            ssl_lines = ["ssl = required", f"ssl_cert = <{self.cert}", f"ssl_key = <{self.key}"]
            ctx = ssl.create_default_context(cafile=str(self.cert))
            self.tls_context = ctx
        conf = d / "dovecot.conf"
        conf.write_text(
            "\n".join(
                [
                    f"base_dir = {d}/run",
                    f"state_dir = {d}/state",
                    f"log_path = {d}/dovecot.log",
                    "protocols = imap",
                    "listen = 127.0.0.1",
                    f"mail_location = maildir:{d}/mail/%n",
                    "mail_uid = nobody",
                    "mail_gid = nogroup",
                    "default_internal_user = nobody",
                    "default_login_user = nobody",
                    "first_valid_uid = 0",
                    "disable_plaintext_auth = no",
                    "auth_mechanisms = plain login",
                    *ssl_lines,
                    "passdb {",
                    "  driver = passwd-file",
                    f"  args = scheme=PLAIN {d}/passwd",
                    "}",
                    "userdb {",
                    "  driver = static",
                    f"  args = uid=nobody gid=nogroup home={d}/home/%n",
                    "}",
                    "service imap-login {",
                    "  inet_listener imap {",
                    "    address = 127.0.0.1",
                    f"    port = {self.port}",
                    "  }",
                    "  inet_listener imaps {",
                    "    address = 127.0.0.1",
                    f"    port = {self.tls_port if self.starttls else 0}",
                    "    ssl = yes",
                    "  }",
                    "}",
                    "namespace inbox {",
                    "  inbox = yes",
                    "  separator = /",
                    "}",
                    "",
                ]
            )
        )
        return conf

    def start(self) -> DovecotServer:
        conf = self._config()
        self.proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(
            lambda: _port_open(self.port) or self.proc.poll() is not None,  # type: ignore[union-attr]
            what="dovecot listening",
        )
        assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else b""
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class SmtpInbox:
    """An aiosmtpd server that keeps what it receives."""

    port: int = 0
    received: list[Any] = field(default_factory=list)
    controller: Any = None
    fail_next: list[int] = field(default_factory=list)  # SMTP codes to answer DATA with
    # SMTP codes to answer RCPT with; the answer quotes the address, as servers do
    refuse_rcpt_next: list[int] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)  # Message-ID of every DATA, refused too
    # STARTTLS (required) with this certificate, and AUTH with this user:password
    cert: tuple[Path, Path] | None = None
    login: tuple[str, str] | None = None
    logins: list[str] = field(default_factory=list)

    def start(self) -> SmtpInbox:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        inbox = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if inbox.refuse_rcpt_next:
                    code = inbox.refuse_rcpt_next.pop(0)
                    return f"{code} 5.1.1 <{address}>: Recipient address rejected: User unknown"
                envelope.rcpt_tos.append(address)
                envelope.rcpt_options.extend(options)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                head = email.message_from_bytes(envelope.content, policy=email.policy.compat32)
                inbox.attempts.append(str(head.get("Message-ID", "")))
                if inbox.fail_next:
                    code = inbox.fail_next.pop(0)
                    return f"{code} try later" if code < 500 else f"{code} mailbox unavailable"
                msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
                inbox.received.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
                return "250 OK"

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> Any:
            ok = (
                isinstance(data, LoginPassword)
                and inbox.login is not None
                and (data.login.decode(), data.password.decode()) == inbox.login
            )
            if ok:
                inbox.logins.append(data.login.decode())
            return AuthResult(success=ok)

        kwargs: dict[str, Any] = {}
        if self.cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cert[0]), str(self.cert[1]))
            kwargs.update(tls_context=ctx, require_starttls=True)
        if self.login is not None:
            kwargs.update(
                authenticator=authenticate,
                auth_required=True,
                auth_require_tls=self.cert is not None,
            )
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    def wait(self, count: int, timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} mails, got {len(self.received)}")
            time.sleep(0.05)
        return self.received
