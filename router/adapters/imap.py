"""E-mail in: IMAP mailboxes watched with IDLE (or polled), messages stored once.

One watcher per (account, folder). It keeps a cursor (UIDVALIDITY, last UID)
in Redis, fetches new messages with ``UID FETCH ... BODY.PEEK[]`` (so nothing
is marked read by us), stores each one, and only then marks it processed: a
keyword (``$Routed`` by default) or a move to a folder. A crash between the
two re-fetches the message, and storing it again is a no-op (the message's
Message-ID, else mailbox + UIDVALIDITY + UID, is the deduplication key), so
a UIDVALIDITY change re-scans the folder without duplicating anything.

Delivery reports (multipart/report) do not open conversations: they mark the
outbound message they are about as failed. Auto-replies are recorded in
their conversation without reopening or re-prioritising it. Every failure
(network, TLS, login, a server that hangs up) reconnects with backoff and
jitter; a message that cannot be parsed is dead-lettered by the daemon with
the reason, and the rest flows on.

Mail is parsed in worker processes (:class:`MailParser`), never on the event
loop: the standard library's parser is pure Python, and one hostile message
(20,000 tiny MIME parts) held the loop, and the GIL, for seconds. The pool
belongs to the adapter: started with it, stopped (its processes killed) with
it. A message over the structure bounds of :func:`router.mail.check_structure`,
or whose parse outlasts ``PARSE_TIMEOUT`` or kills its worker, is dead-lettered
with that reason.

aioimaplib has no STARTTLS: the command is sent on the plain connection and
the transport upgraded with ``loop.start_tls``, then capabilities are asked
again (what the server advertised before TLS cannot be trusted).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import random
import re
import signal
import ssl
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import aioimaplib
import structlog

from router.adapters.base import AdapterContext, run_until
from router.config import EmailSettings, ImapAccountSettings
from router.mail import MailError, ParsedMail, parse
from router.model import Hints, Identity, InboundMessage

log = structlog.get_logger("router.imap")

FETCH_CHUNK = 25
IDLE_RENEW = 25 * 60.0  # RFC 2177: re-issue IDLE within 29 minutes
PARSE_WORKERS = 2  # processes; real mail parses in milliseconds, the bounded worst in ~0.5 s
PARSE_TIMEOUT = 60.0  # seconds of one parse before its worker is killed
# Bigger mail goes to the worker as a file: pickling it into the pool's pipe
# would hold the GIL (and so the loop) for tens of milliseconds per 20 MB.
PARSE_BY_FILE = 1_000_000
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ImapFailure(Exception):
    """The server refused or broke something; the watcher reconnects."""


def tls_context(verify: bool, ca_file: Any = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _ok(response: Any, what: str) -> Any:
    if response.result != "OK":
        detail = b" ".join(line for line in response.lines if isinstance(line, bytes))
        raise ImapFailure(f"{what}: {response.result} {detail.decode(errors='replace')[:200]}")
    return response


def _quote(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _QuietProtocol(aioimaplib.IMAP4ClientProtocol):
    """aioimaplib's protocol without its debug line per received chunk.

    aioimaplib 2.0 formats every chunk into that line (``'%s' % data``)
    whatever the log level: 30-50 ms of the event loop per chunk while a
    20 MB mail arrives. The rest is aioimaplib's own code.
    """

    def data_received(self, d: bytes) -> None:
        try:
            self._handle_responses(
                self.incomplete_line + d,  # type: ignore[has-type]
                self._handle_line,
                self.current_command,  # type: ignore[has-type]
            )
            self.incomplete_line = b""
            self.current_command = None
        except aioimaplib.IncompleteRead as incomplete_read:
            self.current_command = incomplete_read.cmd
            self.incomplete_line = incomplete_read.data


class _QuietClient:
    def create_client(self, *args: Any, **kwargs: Any) -> None:
        super().create_client(*args, **kwargs)  # type: ignore[misc]
        # before the connection is made: the transport gets the quiet protocol
        self.protocol.__class__ = _QuietProtocol  # type: ignore[attr-defined]


class _IMAP4(_QuietClient, aioimaplib.IMAP4):
    pass


class _IMAP4_SSL(_QuietClient, aioimaplib.IMAP4_SSL):
    pass


async def open_imap(account: ImapAccountSettings, timeout: float = 30.0) -> aioimaplib.IMAP4:
    """A logged-in connection (implicit TLS, STARTTLS or plain, as configured)."""
    port = account.port or (993 if account.security == "tls" else 143)
    ctx = tls_context(account.verify_tls, account.ca_file)
    client: aioimaplib.IMAP4
    if account.security == "tls":
        client = _IMAP4_SSL(host=account.host, port=port, timeout=timeout, ssl_context=ctx)
    else:
        client = _IMAP4(host=account.host, port=port, timeout=timeout)
    await client.wait_hello_from_server()
    if account.security == "starttls":
        await starttls(client, account.host, ctx, timeout)
    _ok(await client.login(account.username, account.password.value), "LOGIN")
    return client


async def starttls(
    client: aioimaplib.IMAP4, host: str, ctx: ssl.SSLContext, timeout: float
) -> None:
    """STARTTLS by hand: the command, the TLS upgrade of the transport, a fresh CAPABILITY."""
    protocol = client.protocol
    if "STARTTLS" not in protocol.capabilities:
        raise ImapFailure("the server does not offer STARTTLS")
    command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
    _ok(await asyncio.wait_for(protocol.execute(command), timeout), "STARTTLS")
    loop = asyncio.get_running_loop()
    transport = await loop.start_tls(protocol.transport, protocol, ctx, server_hostname=host)
    protocol.transport = transport
    protocol.capabilities = set()
    await asyncio.wait_for(protocol.capability(), timeout)


def to_message(parsed: ParsedMail, source_id: str, account: str, folder: str) -> InboundMessage:
    """The normalised message of an e-mail."""
    meta = {"kind": "email", "account": account, "folder": folder}
    if parsed.message_id:
        meta["message_id"] = parsed.message_id
    if parsed.auto_submitted:
        meta["auto_submitted"] = parsed.auto_submitted
    if parsed.bulk:
        meta["bulk"] = "true"
    if parsed.bounce:
        meta["bounce"] = "true"
    if parsed.auto_reply:
        meta["auto_reply"] = "true"
    if parsed.defects:
        meta["defects"] = "; ".join(parsed.defects)[:1000]
    assert parsed.sender is not None
    return InboundMessage(
        channel="email",
        sender=Identity("email", parsed.sender),
        text=parsed.text,
        source_id=source_id,
        subject=parsed.subject or None,
        display_name=parsed.display_name,
        references=[*parsed.references, *parsed.in_reply_to],
        hints=Hints(language=parsed.content_language, date_offset=parsed.date_offset),
        attachments=[
            {
                "filename": a.filename,
                "content_type": a.content_type,
                "size": a.size,
                "inline": a.inline,
            }
            for a in parsed.attachments
        ],
        meta=meta,
    )


def _worker_init(daemon_pid: int) -> None:
    # Ctrl-C in a terminal and systemd's stop reach the whole process group:
    # the daemon decides when its workers stop (MailParser.stop kills them),
    # so a parse in flight is not broken while the daemon drains.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # ...and a daemon that dies (SIGKILL) takes them with it (Linux).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != daemon_pid:  # it died before prctl
        os._exit(0)


def _warm_up() -> int:
    return os.getpid()


def _parse_file(path: str, function: Callable[[bytes], ParsedMail]) -> ParsedMail:
    with open(path, "rb") as f:
        return function(f.read())


def _to_file(raw: bytes) -> str:
    fd, path = tempfile.mkstemp(prefix="router-mail-", suffix=".eml")
    try:
        os.write(fd, raw)  # one call: the GIL is released for all of it
    finally:
        os.close(fd)
    return path


class MailParser:
    """:func:`router.mail.parse` in worker processes, so no message stalls the loop.

    Processes, not threads: the parser is pure Python and would hold the GIL.
    ``spawn``, not ``fork``: a fork of a running asyncio daemon copies its
    threads' locks and sockets. The workers start once (0.5 s for both on a
    busy 2-core machine, at :meth:`start`) and live as long as the adapter. At most ``workers``
    parses run at once, so the timeout counts parse time, not queueing.
    """

    def __init__(
        self,
        workers: int = PARSE_WORKERS,
        timeout: float = PARSE_TIMEOUT,
        function: Callable[[bytes], ParsedMail] = parse,  # module-level: it is pickled
    ) -> None:
        self.workers = max(1, min(workers, os.cpu_count() or 1))
        self.timeout = timeout
        self.function = function
        self._pool: ProcessPoolExecutor | None = None
        self._slots = asyncio.Semaphore(self.workers)
        self._retry = asyncio.Lock()  # retries after a broken pool run one at a time

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_worker_init,
            initargs=(os.getpid(),),
        )

    async def start(self) -> None:
        """Start the workers now, so the first mail does not pay for it."""
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(self._pool, _warm_up) for _ in range(self.workers))
        )

    async def parse(self, raw: bytes) -> ParsedMail:
        """The parsed mail; MailError (the dead-letter reason) when it cannot be had."""
        try:
            return await self._run(raw)
        except BrokenProcessPool:
            pass  # a worker died: maybe this message's doing, maybe another's
        async with self._retry:
            try:
                return await self._run(raw)
            except BrokenProcessPool:
                raise MailError("the parser process died on this message") from None

    async def _run(self, raw: bytes) -> ParsedMail:
        async with self._slots:
            if self._pool is None:
                self._pool = self._new_pool()
            pool = self._pool
            loop = asyncio.get_running_loop()
            path = None
            if len(raw) > PARSE_BY_FILE:
                with contextlib.suppress(OSError):  # no room: the pipe it is, GIL and all
                    path = await asyncio.to_thread(_to_file, raw)
            if path is None:
                future = loop.run_in_executor(pool, self.function, raw)
            else:
                future = loop.run_in_executor(pool, _parse_file, path, self.function)
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                self._discard(pool)
                raise MailError(
                    f"parsing took over {self.timeout:g} s; the parser process was stopped"
                ) from None
            except BrokenProcessPool:
                self._discard(pool)
                raise
            except MailError:
                raise
            except Exception as exc:  # parse() raises only MailError; this is the pool's
                raise MailError(f"the parser failed ({type(exc).__name__}: {exc})"[:300]) from exc
            finally:
                if path is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(path)

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        """Kill a pool's workers (a stuck or dead one cannot be reused); the next parse
        starts a new pool."""
        if self._pool is pool:
            self._pool = None
        processes = list(getattr(pool, "_processes", None) or {})
        pool.shutdown(wait=False, cancel_futures=True)
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop the workers: a parse in flight is abandoned (the mail stays unmarked
        on the server and is fetched again)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = dict(getattr(pool, "_processes", None) or {})
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():  # they hold nothing to save
            with contextlib.suppress(Exception):
                process.kill()

        def join() -> None:
            for process in processes.values():
                process.join(2.0)

        await asyncio.to_thread(join)


class FolderWatcher:
    """Watches one folder of one account until stopped."""

    def __init__(self, adapter: ImapAdapter, account_name: str, folder: str) -> None:
        self.adapter = adapter
        self.account_name = account_name
        self.folder = folder
        self.connected = False
        self.last_error: str | None = None
        self.stored = 0
        self.flag = "$Routed"  # what marks processed mail on this server

    @property
    def account(self) -> ImapAccountSettings:
        for a in self.adapter.settings().accounts:
            if a.name == self.account_name:
                return a
        raise ImapFailure(f"account {self.account_name} is no longer configured")

    @property
    def cursor_key(self) -> str:
        return f"cursor:{self.account_name}:{self.folder}"

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set (or the task is cancelled), reconnecting
        after any failure."""
        failures = 0
        task = asyncio.current_task()
        while not stop.is_set():
            client = None
            try:
                client = await open_imap(self.account)
                self.connected, failures = True, 0
                await self.watch(client)
            except Exception as exc:  # whatever breaks, the watcher reconnects: never stops
                # aioimaplib can turn a cancellation into an error of its own
                # (issue 14: the stop then waited for the next reconnect):
                # a cancelled watcher stops whatever was raised
                if stop.is_set() or (task is not None and task.cancelling()):
                    raise asyncio.CancelledError from exc
                failures += 1
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}"
                pause = min(300.0, 1.0 * 2 ** min(failures, 9)) * random.uniform(0.5, 1.5)
                log.warning(
                    "imap_reconnecting",
                    account=self.account_name,
                    folder=self.folder,
                    error=self.last_error,
                    retry_in_s=round(pause, 1),
                    action="nothing is lost: unprocessed mail stays on the server",
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
            finally:
                self.connected = False
                if client is not None:
                    # a server that is gone never answers: the stop does not wait for it
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(client.logout(), 1 if stop.is_set() else 5)

    async def watch(self, client: aioimaplib.IMAP4) -> None:
        account = self.account
        if account.processed == "move":  # "already exists" is fine
            await client.create(_quote(account.processed_folder))
        selected = _ok(await client.select(_quote(self.folder)), f"SELECT {self.folder}")
        validity = _uidvalidity(selected.lines)
        self.flag = account.processed_flag
        if not self.flag.startswith("\\") and not _keywords_allowed(selected.lines):
            # the server keeps no keywords here (PERMANENTFLAGS without \*)
            log.warning(
                "imap_keywords_unsupported",
                account=self.account_name,
                folder=self.folder,
                flag=self.flag,
                action="marking processed mail \\Seen instead; or use processed: move",
            )
            self.flag = "\\Seen"
        cursor = await self.adapter.ctx.state.get(self.cursor_key) or {}
        last = int(cursor.get("last_uid", 0))
        if cursor and cursor.get("uidvalidity") != validity:
            log.warning(
                "imap_uidvalidity_changed",
                account=self.account_name,
                folder=self.folder,
                old=cursor.get("uidvalidity"),
                new=validity,
                action="re-scanning the folder; Message-IDs keep it from duplicating",
            )
            last = 0
        idle = account.idle and "IDLE" in client.protocol.capabilities
        while True:
            # Again until a search finds nothing: the server reports mail that
            # arrives during our FETCH/STORE in their responses (which we do
            # not read), not later in IDLE, so it would wait for the next one.
            while (found := await self.fetch_new(client, validity, last)) != last:
                last = found
            if idle:
                await self.wait_idle(client, min(IDLE_RENEW, account.idle_renew))
            else:
                await asyncio.sleep(account.poll_interval)
            # look again: the folder may have been recreated under us
            again = _ok(await client.select(_quote(self.folder)), f"SELECT {self.folder}")
            if (now := _uidvalidity(again.lines)) != validity:
                log.warning(
                    "imap_uidvalidity_changed",
                    account=self.account_name,
                    folder=self.folder,
                    old=validity,
                    new=now,
                    action="re-scanning the folder; Message-IDs keep it from duplicating",
                )
                validity, last = now, 0

    async def fetch_new(self, client: aioimaplib.IMAP4, validity: str, last: int) -> int:
        account = self.account
        criteria = [f"UID {last + 1}:*"]
        if account.processed == "flag":
            criteria.append(_not_flagged(self.flag))
        found = _ok(await client.uid_search(*criteria, charset=None), "UID SEARCH")
        uids = sorted(int(u) for line in found.lines[:-1] for u in line.split() if u.isdigit())
        uids = [u for u in uids if u > last]
        for start in range(0, len(uids), FETCH_CHUNK):
            chunk = uids[start : start + FETCH_CHUNK]
            fetched = _ok(
                await client.uid("fetch", ",".join(map(str, chunk)), "(UID BODY.PEEK[])"),
                "UID FETCH",
            )
            bodies = _bodies(fetched.lines)
            await asyncio.gather(*(self.store(uid, validity, raw) for uid, raw in bodies.items()))
            done = ",".join(str(u) for u in chunk if u in bodies)
            if done:
                await self.mark_processed(client, done)
            last = max(chunk)
            await self.adapter.ctx.state.put(
                self.cursor_key, {"uidvalidity": validity, "last_uid": last}
            )
        return last

    async def store(self, uid: int, validity: str, raw: bytes) -> None:
        """Parse and store one message (or handle its delivery report); raises
        StoreUnavailable when Redis cannot take it (nothing is marked then)."""
        mailbox_key = f"{self.account_name}:{self.folder}:{validity}:{uid}"
        limit = self.adapter.settings().max_message_bytes
        try:
            if len(raw) > limit:
                raise MailError(f"message of {len(raw)} bytes is over the limit of {limit}")
            parsed = await self.adapter.parser.parse(raw)
            # A delivery report needs no sender: MTAs send them from "<>"
            # ("MAILER DAEMON <>"), and it is about our mail, not a customer.
            if parsed.sender is None and parsed.delivery_report is None:
                why = next((d.split(": ", 1)[1] for d in parsed.defects if "no dot" in d), "")
                raise MailError("no usable From address" + (f": {why}" if why else ""))
        except MailError as exc:
            await self.adapter.unparseable(mailbox_key, raw, str(exc))
            return
        if parsed.delivery_report is not None:
            await self.adapter.delivery_report(parsed, raw, mailbox_key)
            return
        source_id = parsed.message_id or mailbox_key
        await self.adapter.ctx.ingest(to_message(parsed, source_id, self.account_name, self.folder))
        self.stored += 1

    async def mark_processed(self, client: aioimaplib.IMAP4, uids: str) -> None:
        account = self.account
        if account.processed == "move":
            if "MOVE" in client.protocol.capabilities:
                _ok(await client.uid("move", uids, _quote(account.processed_folder)), "UID MOVE")
            else:
                _ok(await client.uid("copy", uids, _quote(account.processed_folder)), "UID COPY")
                _ok(await client.uid("store", uids, "+FLAGS", r"(\Deleted)"), "UID STORE")
                _ok(await client.uid("expunge", uids), "UID EXPUNGE")
        else:
            _ok(await client.uid("store", uids, "+FLAGS", f"({self.flag})"), "UID STORE")

    async def wait_idle(self, client: aioimaplib.IMAP4, renew: float) -> None:
        """Until the server says something changed (or it is time to renew IDLE)."""
        idle = await client.idle_start(timeout=renew + 30)
        deadline = time.monotonic() + renew
        try:
            while True:
                push = await client.wait_server_push(timeout=max(0.1, deadline - time.monotonic()))
                if push == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                if any(b"EXISTS" in line for line in push if isinstance(line, bytes)):
                    break
        except TimeoutError:
            pass
        finally:
            client.idle_done()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle, 10)


def _keywords_allowed(lines: list[Any]) -> bool:
    """Does SELECT's PERMANENTFLAGS let us create keywords (``\\*``)?"""
    for line in lines:
        if isinstance(line, bytes) and b"PERMANENTFLAGS" in line:
            return b"\\*" in line
    return True  # not said: try


def _not_flagged(flag: str) -> str:
    """The SEARCH criterion for messages without ``flag``."""
    system = {
        "\\Seen": "UNSEEN",
        "\\Flagged": "UNFLAGGED",
        "\\Answered": "UNANSWERED",
        "\\Draft": "UNDRAFT",
        "\\Deleted": "UNDELETED",
    }
    return system.get(flag, f"UNKEYWORD {flag}")


def _uidvalidity(lines: list[Any]) -> str:
    for line in lines:
        if isinstance(line, bytes) and (m := re.search(rb"UIDVALIDITY (\d+)", line)):
            return m.group(1).decode()
    raise ImapFailure("the server gave no UIDVALIDITY")


def _bodies(lines: list[Any]) -> dict[int, bytes]:
    """uid -> raw message from the lines of a ``UID FETCH (UID BODY.PEEK[])``."""
    out: dict[int, bytes] = {}
    pending: int | None = None
    for line in lines:
        if isinstance(line, bytes) and (m := re.search(rb"UID (\d+)", line)) and b"{" in line:
            pending = int(m.group(1))
        elif isinstance(line, bytearray | memoryview) and pending is not None:
            out[pending] = bytes(line)
            pending = None
    return out


class ImapAdapter:
    """All configured mailboxes."""

    name = "email"

    def __init__(self, settings: Callable[[], EmailSettings], ctx: AdapterContext) -> None:
        self.settings = settings
        self.ctx = ctx
        self.watchers = [
            FolderWatcher(self, a.name, f) for a in settings().accounts for f in a.folders
        ]
        self.parser = MailParser()

    def routes(self) -> list[Any]:
        return []

    async def run(self, stop: asyncio.Event) -> None:
        """The parser workers and one watcher per folder, until ``stop``; then the
        watchers end (a fetch in flight is abandoned: its mail stays unmarked on
        the server) and the parser workers are stopped."""
        try:
            await self.parser.start()
            log.info("imap_started", folders=len(self.watchers), parser_workers=self.parser.workers)
            await run_until(
                stop,
                {f"imap-{w.account_name}-{w.folder}": w.run(stop) for w in self.watchers},
            )
        finally:
            await self.parser.stop()
            log.info("imap_stopped")

    def ready(self) -> tuple[bool, str]:
        down = [
            f"{w.account_name}/{w.folder}: {w.last_error or 'connecting'}"
            for w in self.watchers
            if not w.connected
        ]
        return (not down, "ok" if not down else "; ".join(down)[:300])

    def gauges(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.watchers:
            out[f"connected_{w.account_name}_{w.folder}"] = float(w.connected)
            out[f"stored_{w.account_name}_{w.folder}"] = float(w.stored)
        return out

    async def unparseable(self, mailbox_key: str, raw: bytes, reason: str) -> None:
        log.error(
            "email_unparseable",
            mailbox=mailbox_key,
            reason=reason,
            action="kept in the dead-letter stream with the raw message",
        )
        assert self.ctx.dead_letter is not None
        await self.ctx.dead_letter(mailbox_key, raw, reason)

    async def delivery_report(self, parsed: ParsedMail, raw: bytes, mailbox_key: str) -> None:
        report = parsed.delivery_report
        assert report is not None
        outbox_id = None
        if report.original_message_id:
            outbox_id = await self.ctx.state.get(f"sent:{report.original_message_id}")
        if outbox_id is None:
            # not about mail we sent (backscatter, or older than we remember):
            # no conversation for it, but kept with the reason
            kind = "plain-text bounce" if report.plain_text else "delivery report"
            await self.unparseable(
                mailbox_key,
                raw,
                f"{kind} ({report.action or 'unknown action'}) about "
                f"{report.original_message_id or 'an unknown message'}, which the daemon "
                "did not send",
            )
            return
        status = (
            "delivered"
            if report.action == "delivered"
            else ("failed" if report.action == "failed" else (report.action or "failed"))
        )
        detail = report.diagnostic or report.status or "delivery report"
        await self.ctx.report_delivery(
            outbox_id, status, f"{report.recipient or ''}: {detail}".strip(": ")
        )
