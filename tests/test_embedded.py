"""The embedded Redis: its log goes into the daemon's log (the journal), the
daemon restarts it when it dies (its AOF replayed, nothing acknowledged is
lost), a stalled one gets webhooks a 503 within the ingest bound, and the
loops that retry while Redis is away log an outage, not a line a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import capture_logs

from router.adapters.chat import ChatHub
from router.embedded import EmbeddedRedis
from router.metrics import Metrics
from router.overflow import OverflowWorker
from router.routing import Routing
from router.store import INGEST_TIMEOUT, Store
from tests.support import (
    API_TOKEN,
    DaemonProcess,
    RedisServer,
    free_port,
    queued_message_ids,
    write_config,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
# A killed embedded Redis is restarted 0.25 s after it exits and replays its
# AOF (milliseconds here); 202s must be back well within this.
RESTART_BOUND_S = 5.0
# A stalled Redis: the ingest path gives up after INGEST_TIMEOUT (2 s); the
# 503 must come within that plus scheduling slack on a busy test machine.
STALL_BOUND_S = INGEST_TIMEOUT + 1.0


def embedded_daemon(tmp_path: Path, **overrides: Any) -> DaemonProcess:
    port = free_port()
    config = write_config(tmp_path / "router.yaml", "embedded", port, **overrides)
    return DaemonProcess(config, port).start()


def redis_pid(tmp_path: Path) -> int:
    return int((tmp_path / "state" / "redis" / "redis.pid").read_text())


async def post(http: aiohttp.ClientSession, daemon: DaemonProcess, body: dict) -> tuple[int, Any]:
    async with http.post(
        f"{daemon.url}/v1/messages",
        json=body,
        headers=AUTH,
        timeout=aiohttp.ClientTimeout(total=30),
    ) as r:
        return r.status, await r.json()


def test_redis_logs_into_the_daemon_log_and_writes_no_file(tmp_path: Path) -> None:
    redis_dir = tmp_path / "state" / "redis"
    daemon = embedded_daemon(tmp_path)
    try:
        lines = daemon.events("embedded_redis_log")
        texts = [e["text"] for e in lines]
        assert any("ready to accept connections" in t for t in texts), texts
        assert all(e["redis_pid"] == redis_pid(tmp_path) for e in lines if "redis_pid" in e)
        assert {e["level"] for e in lines} <= {"info", "warning", "debug"}
    finally:
        assert daemon.stop() == 0
    # the goodbye is relayed too, and nothing was written beside the AOF
    goodbye = [e for e in daemon.events("embedded_redis_log") if "SIGTERM" in e["text"]]
    assert goodbye and goodbye[0]["level"] == "info"
    assert any("ready to exit" in e["text"] for e in daemon.events("embedded_redis_log"))
    assert not (redis_dir / "redis.log").exists()
    assert not list((tmp_path / "state").rglob("*.log"))


async def test_a_start_failure_says_why_in_redis_own_words(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", appendfsync="sometimes")
    with capture_logs() as logs, pytest.raises(RuntimeError) as err:
        await server.start(timeout=10)
    await server.stop()
    message = str(err.value)
    assert message.startswith("embedded redis-server exited with code 1: ")
    assert "appendfsync" in message and "FATAL CONFIG FILE ERROR" in message
    assert any(e["event"] == "embedded_redis_log" for e in logs)  # and it was logged
    assert not (tmp_path / "redis" / "redis.log").exists()


async def test_a_killed_embedded_redis_is_restarted_and_keeps_what_was_acknowledged(
    tmp_path: Path,
) -> None:
    # appendfsync always: with everysec, Redis may postpone its AOF write by up
    # to 2 s while an fsync is slow, and still answer, so a SIGKILL of Redis on
    # a busy disk can drop that much (seen in CI); README "Operations" says so.
    daemon = embedded_daemon(tmp_path, **{"redis.embedded": {"appendfsync": "always"}})
    try:
        async with aiohttp.ClientSession() as http:
            bodies = [
                {"from": f"c{i}@x.org", "text": "Where is it?", "id": f"k{i}"} for i in range(20)
            ]
            accepted = {}
            for body in bodies:
                status, answer = await post(http, daemon, body)
                assert status == 202, answer
                accepted[body["id"]] = answer["id"]
            old = redis_pid(tmp_path)
            killed_at = time.monotonic()
            os.kill(old, signal.SIGKILL)
            # 503s while it is down (never a hang), then 202s again
            statuses = []
            while True:
                status, _ = await post(http, daemon, {"from": "n@x.org", "text": "new"})
                statuses.append(status)
                if status == 202:
                    break
                assert status == 503
                assert time.monotonic() - killed_at < RESTART_BOUND_S, statuses
                await asyncio.sleep(0.05)
            assert time.monotonic() - killed_at < RESTART_BOUND_S
            assert redis_pid(tmp_path) != old
            # every message acknowledged before the kill is still there: a retry
            # is a duplicate of the same message, and each is routed once
            for body in bodies:
                assert await post(http, daemon, body) == (
                    202,
                    {"id": accepted[body["id"]], "duplicate": True},
                )
        r = aioredis.Redis(
            unix_socket_path=str(tmp_path / "state" / "redis" / "redis.sock"),
            decode_responses=True,
        )
        try:

            async def routed() -> list[str]:
                return await queued_message_ids(r)

            deadline = time.monotonic() + 20
            while len(await routed()) < 21 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            ids = await routed()
            assert sorted(set(accepted.values()) - set(ids)) == []
            assert len(ids) == len(set(ids)) == 21
        finally:
            await r.aclose()
        # logged once per event
        exited = daemon.events("embedded_redis_exited")
        assert len(exited) == 1 and exited[0]["signal"] == "SIGKILL"
        assert exited[0]["level"] == "error"
        restarted = daemon.events("embedded_redis_restarted")
        assert len(restarted) == 1 and restarted[0]["down_seconds"] < RESTART_BOUND_S
        assert len(daemon.events("embedded_redis_started")) == 2
        assert len(daemon.events("ingest_unavailable")) <= 1
    finally:
        assert daemon.stop() == 0


async def test_a_stalled_embedded_redis_gets_a_503_within_the_bound(tmp_path: Path) -> None:
    daemon = embedded_daemon(tmp_path)
    pid = redis_pid(tmp_path)
    try:
        async with aiohttp.ClientSession() as http:
            status, _ = await post(http, daemon, {"from": "a@x.org", "text": "before"})
            assert status == 202
            os.kill(pid, signal.SIGSTOP)
            try:
                # one webhook alone, then a burst that queues behind a stuck batch
                started = time.monotonic()
                status, answer = await post(http, daemon, {"from": "a@x.org", "text": "stalled"})
                single = time.monotonic() - started
                assert status == 503, answer
                started = time.monotonic()
                burst = await asyncio.gather(
                    *(post(http, daemon, {"from": f"b{i}@x.org", "text": "x"}) for i in range(20))
                )
                slowest = time.monotonic() - started
                assert {s for s, _ in burst} == {503}
                async with http.get(f"{daemon.url}/healthz") as r:
                    assert r.status == 200  # the daemon itself is alive
            finally:
                os.kill(pid, signal.SIGCONT)
            assert single < STALL_BOUND_S, single
            assert slowest < STALL_BOUND_S, slowest
            # it was stalled, not dead: not restarted, and it takes messages again
            deadline = time.monotonic() + 10
            while (await post(http, daemon, {"from": "a@x.org", "text": "after"}))[0] != 202:
                assert time.monotonic() < deadline, "no 202 after SIGCONT"
                await asyncio.sleep(0.1)
        assert redis_pid(tmp_path) == pid
        assert daemon.events("embedded_redis_exited") == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        assert daemon.stop() == 0


# -- the loops that retry while Redis is away ------------------------------------


def outage_lines(logs: list[dict], event: str) -> list[dict]:
    return [e for e in logs if e["event"] == event]


async def test_overflow_logs_a_redis_outage_once_not_every_tick(
    store: Store, redis_server: RedisServer
) -> None:
    def no_routing() -> Routing:
        raise AssertionError("nothing is due: the worker never needs the routing")

    worker = OverflowWorker(store, no_routing, Metrics(), interval=0.05)
    stop = asyncio.Event()
    with capture_logs() as logs:
        redis_server.kill()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.sleep(1.5)  # about 30 failed ticks
        redis_server.start()
        deadline = time.monotonic() + 10
        while not outage_lines(logs, "overflow_resumed"):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.05)
        stop.set()
        await task
    assert len(outage_lines(logs, "overflow_paused")) == 1
    assert len(outage_lines(logs, "overflow_resumed")) == 1


async def test_the_chat_push_listener_logs_a_redis_outage_once(
    store: Store, redis_server: RedisServer
) -> None:
    hub = ChatHub(store.redis, store.keys.prefix)
    with capture_logs() as logs:
        task = asyncio.create_task(hub.listen())
        await asyncio.sleep(0.3)
        redis_server.kill()
        await asyncio.sleep(3.5)  # resubscribes every second
        redis_server.start()
        deadline = time.monotonic() + 10
        while not outage_lines(logs, "chat_push_listener_resumed"):
            assert time.monotonic() < deadline, logs
            await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(outage_lines(logs, "chat_push_listener_restarting")) == 1
    resumed = outage_lines(logs, "chat_push_listener_resumed")
    assert len(resumed) == 1 and resumed[0]["failures"] >= 3


def test_outage_lines_can_be_errors() -> None:
    from router.logs import Outage

    with capture_logs() as logs:
        outage = Outage(structlog.get_logger("t"), "down", "up", level="error")
        outage.failed()
        outage.failed()
        outage.ok()
    assert [(e["event"], e["log_level"]) for e in logs] == [("down", "error"), ("up", "info")]
