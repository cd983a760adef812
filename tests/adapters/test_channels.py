"""Channels plug in through one table (router/channels.py): a channel added to
the table alone, with a tiny adapter of its own (an HTTP route in, a sender
out), carries a message end to end through a real daemon and real Redis.

The daemon runs in this process (``Daemon.run`` on the test's event loop):
a ``router serve`` subprocess could not see a table entry made by a test.
Everything else is real: the HTTP server on a real port, the ingest, the
routing and outbox workers, Redis, and the agent's CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from router.adapters.base import AdapterContext, Channel
from router.app import Daemon
from router.channels import CHANNELS, ChannelPlugin
from router.config import load_config
from router.model import Identity, InboundMessage, OutboundMessage
from tests.support import API_TOKEN, RedisServer, cli, free_port, write_config


class EchoAdapter:
    """``POST /echo/in`` with ``{"from", "text", "id"}``: one message in."""

    name = "echo"

    def __init__(self, ctx: AdapterContext) -> None:
        self.ctx = ctx
        self.running = False

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/echo/in", self.receive)]

    async def run(self, stop: asyncio.Event) -> None:
        self.running = True
        try:
            await stop.wait()
        finally:
            self.running = False

    def ready(self) -> tuple[bool, str]:
        return self.running, "ok" if self.running else "not running"

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.json()
        message = InboundMessage(
            channel="echo",
            sender=Identity("api", body["from"]),
            text=body["text"],
            source_id=body["id"],
        )
        result = await self.ctx.ingest(message)
        return web.json_response({"id": result.id}, status=202)


class EchoSender:
    channel = "echo"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> str:
        self.sent.append(message)
        return f"echo-{len(self.sent)}"


def echo_factory(sender: EchoSender) -> Any:
    def factory(
        settings: Callable[[], Any], ctx: AdapterContext, public_url: Callable[[], str | None]
    ) -> Channel[Any]:
        assert settings() is None  # no section in the config: a test channel
        return Channel(adapter=EchoAdapter(ctx), senders={"echo": sender})

    return factory


async def test_a_channel_added_to_the_table_alone_receives_and_replies_end_to_end(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = EchoSender()
    monkeypatch.setitem(CHANNELS, "echo", ChannelPlugin(echo_factory(sender), {"echo": None}))
    monkeypatch.setenv("ROUTER_API_TOKEN", API_TOKEN)
    port = free_port()
    config = write_config(tmp_path / "router.yaml", redis_server.url, port)
    daemon = Daemon(config, load_config(config))
    running = asyncio.create_task(daemon.run())
    try:
        for _ in range(300):
            if daemon.accepting or running.done():
                break
            await asyncio.sleep(0.05)
        assert daemon.accepting, "the daemon did not start"
        assert "echo" in daemon.channels and "echo" in daemon.sendable(daemon.cfg)

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                assert r.status == 200
                assert (await r.json())["checks"]["echo"] == "ok"
            body = {"from": "ana-1", "text": "Hello, where is my order?", "id": "e-1"}
            async with http.post(f"http://127.0.0.1:{port}/echo/in", json=body) as r:
                assert r.status == 202
                message_id = (await r.json())["id"]

        pulled = None
        for _ in range(100):
            out = await asyncio.to_thread(
                cli, config, "queue", "pull", "general", "--agent", "bob", "--json"
            )
            if out.returncode == 0:
                pulled = json.loads(out.stdout)
                break
            assert out.returncode == 3, out.stderr  # empty: not routed yet
            await asyncio.sleep(0.1)
        assert pulled is not None and pulled["message_id"] == message_id
        assert pulled["message"]["channel"] == "echo"

        out = await asyncio.to_thread(
            cli,
            config,
            "reply",
            pulled["conversation_id"],
            "--text",
            "It ships today.",
            "--agent",
            "bob",
            "--json",
        )
        assert out.returncode == 0, out.stderr
        for _ in range(100):
            if any(m.kind == "reply" for m in sender.sent):
                break
            await asyncio.sleep(0.05)
        replies = [m for m in sender.sent if m.kind == "reply"]
        assert len(replies) == 1
        assert (replies[0].channel, replies[0].to, replies[0].text) == (
            "echo",
            "ana-1",
            "It ships today.",
        )
    finally:
        daemon._stop.set()
        assert await asyncio.wait_for(running, 30) == 0
    assert not daemon.adapters[-1].ready()[0]  # its loop was stopped with the daemon


class CrashingAdapter(EchoAdapter):
    """Its loop dies with a bug a moment after the daemon started."""

    name = "crashing"

    def routes(self) -> list[web.RouteDef]:
        return []

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0.5)
        raise RuntimeError("a bug in the crashing adapter")


async def test_a_crashed_adapter_loop_stops_the_daemon_loudly_and_cleanly(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    sender = EchoSender()

    def crashing(
        settings: Callable[[], Any], ctx: AdapterContext, public_url: Callable[[], str | None]
    ) -> Channel[Any]:
        return Channel(adapter=CrashingAdapter(ctx))

    monkeypatch.setitem(CHANNELS, "echo", ChannelPlugin(echo_factory(sender), {"echo": None}))
    monkeypatch.setitem(CHANNELS, "crashing", ChannelPlugin(crashing, {"crashing": None}))
    monkeypatch.setenv("ROUTER_API_TOKEN", API_TOKEN)
    config = write_config(tmp_path / "router.yaml", redis_server.url, free_port())
    daemon = Daemon(config, load_config(config))
    with capture_logs() as logs:
        code = await asyncio.wait_for(daemon.run(), 60)
    assert code == 1  # systemd restarts it
    crashed = [e for e in logs if e["event"] == "worker_crashed"]
    assert len(crashed) == 1 and crashed[0]["log_level"] == "error"
    assert crashed[0]["worker"] == "adapter-crashing" and "systemd" in crashed[0]["action"]
    events = [e["event"] for e in logs]
    assert events.index("worker_crashed") < events.index("stopping") < events.index("stopped")
    # the rest stopped too: the other channel's loop ended with the daemon
    echo = next(a for a in daemon.adapters if a.name == "echo")
    assert not echo.ready()[0]


def test_the_restart_only_settings_come_from_the_table_and_the_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a reload may not change is the list app.py spelled out before the
    table existed: the daemon's own, each channel's ``enabled`` (not the API's,
    which answers "disabled" itself), and what a built channel names."""
    monkeypatch.setenv("ROUTER_API_TOKEN", API_TOKEN)
    config = write_config(tmp_path / "router.yaml", "redis://127.0.0.1:1/0", free_port())
    daemon = Daemon(config, load_config(config))
    daemon.channels["email"] = Channel(adapter=None, restart_only=("accounts",))
    assert sorted(daemon._restart_only()) == sorted(
        [
            ("redis",),
            ("http", "listen"),
            ("state_dir",),
            ("ingest", "partitions"),
            ("instance_id",),
            ("channels", "twilio", "enabled"),
            ("channels", "x", "enabled"),
            ("channels", "chat", "enabled"),
            ("channels", "email", "enabled"),
            ("channels", "email", "accounts"),
        ]
    )


def test_the_tables_derived_from_the_channels_are_the_ones_spelled_out_before() -> None:
    from router.metrics import BUILTIN_CHANNELS
    from router.outbox import PHONE_CHANNELS
    from router.profiles.identity import _CHANNEL_KIND

    assert PHONE_CHANNELS == {"sms", "mms", "whatsapp", "voice"}
    assert _CHANNEL_KIND == {
        "email": "email",
        "sms": "phone",
        "mms": "phone",
        "whatsapp": "phone",
        "voice": "phone",
        "x": "x",
        "x_dm": "x",
        "chat": "chat",
    }
    assert BUILTIN_CHANNELS == {
        "api",
        "email",
        "chat",
        "sms",
        "mms",
        "whatsapp",
        "voice",
        "x",
        "x_dm",
    }
