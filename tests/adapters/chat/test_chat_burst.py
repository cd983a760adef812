"""Every open widget says ``hello`` at once when the daemon restarts: a real
daemon, real sockets. Each socket gets a welcome or a polite retry frame (none
is dropped without a frame, no ERROR in the daemon's log), and the API keeps
taking messages meanwhile (issue 14, item 3)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from router.adapters.chat import sign_visitor
from tests.adapters.chat.test_chat import ORIGIN, SECRET, chat_config, entries, start
from tests.support import API_TOKEN, DaemonProcess, RedisServer

SOCKETS = 500
POSTS = 60


async def say_hello(
    http: aiohttp.ClientSession, url: str, i: int, opened: list[int], go: asyncio.Event
) -> str:
    """One widget: open the socket, wait for everyone, say hello; the first
    frame's type (and code for an error), or how the socket ended without one."""
    ws = await http.ws_connect(f"{url}/chat/ws", headers={"Origin": ORIGIN})
    opened.append(i)
    try:
        await go.wait()
        # half come back with a token (a resume reads their stream), half are new
        hello: dict[str, Any] = {"type": "hello", "timezone": "Europe/Riga"}
        if i % 2:
            hello["token"] = sign_visitor(SECRET, f"v_burst{i:05d}xxxxxxxxxxxx")
        await ws.send_str(json.dumps(hello))
        async with asyncio.timeout(30):
            msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return f"closed without a frame: {msg.type.name} {msg.data}"
        frame = json.loads(msg.data)
        if frame["type"] == "error":
            assert frame["code"] == "busy", frame
            assert 1 <= frame["retry_after"] <= 60, frame
            # then the socket is closed: "try again later"
            async with asyncio.timeout(10):
                end = await ws.receive()
            assert end.type == aiohttp.WSMsgType.CLOSE and end.data == 1013, end
            return "busy"
        return str(frame["type"])
    finally:
        await ws.close()


async def post(http: aiohttp.ClientSession, url: str, i: int) -> int:
    body = {"from": f"burst{i}@example.com", "text": f"where is order {i}?", "id": f"b{i}"}
    async with http.post(
        f"{url}/v1/messages",
        json=body,
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    ) as r:
        return r.status


@pytest.mark.parametrize(
    "bound",
    [
        None,  # the default bound: a restart's burst is answered, batched
        2,  # a tiny bound: most are told to come back, politely
    ],
)
async def test_500_hellos_at_once_get_a_frame_each_and_the_api_keeps_accepting(
    tmp_path: Path, redis_server: RedisServer, bound: int | None
) -> None:
    path, port = chat_config(tmp_path, redis_server.url)
    if bound is not None:
        config = yaml.safe_load(path.read_text())
        config["channels"]["chat"]["max_pending_hellos"] = bound
        path.write_text(yaml.safe_dump(config))
    daemon: DaemonProcess = start(path, port)
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            go, opened = asyncio.Event(), []
            hellos = [
                asyncio.create_task(say_hello(http, daemon.url, i, opened, go))
                for i in range(SOCKETS)
            ]
            # every socket open before anyone speaks: one burst, as after a restart
            async with asyncio.timeout(60):
                while len(opened) < SOCKETS:
                    await asyncio.sleep(0.05)
            began = time.monotonic()
            go.set()
            posts = [asyncio.create_task(post(http, daemon.url, i)) for i in range(POSTS)]
            outcomes = Counter(await asyncio.gather(*hellos))
            took = time.monotonic() - began
            statuses = Counter(await asyncio.gather(*posts))
        print(f"{SOCKETS} hellos in {took:.2f}s: {dict(outcomes)}; api: {dict(statuses)}")
        assert set(outcomes) <= {"welcome", "busy"}, outcomes
        assert outcomes["welcome"] > 0
        if bound is not None:
            assert outcomes["busy"] > 0
            # turned away visitors are a warning, at most a line a minute
            assert len(daemon.events("chat_busy")) == 1
        assert statuses == Counter({202: POSTS}), statuses
        # and routing went on: every posted message reached a queue
        r = redis_server.client()

        def queued() -> int:
            return sum(len(entries(r, q)) for q in ("general", "support-en", "support-jp"))

        for _ in range(200):
            if await asyncio.to_thread(queued) >= POSTS:
                break
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(queued) == POSTS
        log = daemon.log()
        assert '"level":"error"' not in log, log[-4000:]
        assert "Traceback" not in log, log[-4000:]
        assert "MaxConnectionsError" not in log
    finally:
        daemon.stop()


async def test_the_widget_comes_back_after_retry_after_jittered(tmp_path: Path) -> None:
    """The real widget in headless Chromium against a socket that answers
    ``busy`` (retry_after 4) three times: each reconnect comes between half
    and one and a half times retry_after later (plus the close's slack),
    never at once, and the fourth socket's welcome is taken."""
    from aiohttp import web

    from tests.adapters.chat.test_chat_browser import (
        CHROMIUM,
        FLAGS,
        NEEDS_CHROMIUM,
        async_playwright,
    )
    from tests.support import ROOT, free_port

    if async_playwright is None or not await asyncio.to_thread(Path(CHROMIUM).exists):
        pytest.skip(NEEDS_CHROMIUM)
    hellos: list[float] = []

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if json.loads(msg.data)["type"] != "hello":
                continue
            hellos.append(time.monotonic())
            if len(hellos) <= 3:
                busy = {"type": "error", "code": "busy", "message": "busy", "retry_after": 4}
                await ws.send_str(json.dumps(busy))
                await ws.close(code=1013, message=b"try again later")
            else:
                await ws.send_str(json.dumps({"type": "welcome", "visitor": "v_x", "token": "t"}))
        return ws

    widget = await asyncio.to_thread((ROOT / "router" / "static" / "chat-widget.js").read_text)

    async def script(_: web.Request) -> web.Response:
        return web.Response(text=widget, content_type="application/javascript")

    async def page_html(_: web.Request) -> web.Response:
        html = '<html><body><script src="/chat/widget.js"></script></body></html>'
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/chat/ws", socket)
    app.router.add_get("/chat/widget.js", script)
    app.router.add_get("/", page_html)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{port}/")
            await page.get_by_role("button", name="Chat with us").click()
            async with asyncio.timeout(20):
                while len(hellos) < 4:
                    await asyncio.sleep(0.05)
            await page.wait_for_function(
                f"JSON.parse(localStorage.getItem('router-chat:127.0.0.1:{port}')).token === 't'"
            )
            await browser.close()
    finally:
        await runner.cleanup()
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(hellos)]
    print("reconnect gaps after busy (retry_after 4):", gaps)
    assert all(1.95 <= g <= 6.6 for g in gaps), gaps


async def test_with_redis_away_a_hello_is_told_to_come_back_not_dropped(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis trouble during a hello is an ``unavailable`` frame with
    ``retry_after`` and close 1013, and a throttled warning; no traceback."""
    daemon = start(*chat_config(tmp_path, redis_server.url))
    try:
        redis_server.stop()
        async with aiohttp.ClientSession() as http:
            for _ in range(5):
                ws = await http.ws_connect(f"{daemon.url}/chat/ws", headers={"Origin": ORIGIN})
                await ws.send_str(json.dumps({"type": "hello"}))
                async with asyncio.timeout(15):
                    frame = json.loads((await ws.receive()).data)
                    end = await ws.receive()
                assert frame["type"] == "error" and frame["code"] in ("unavailable", "busy")
                assert 1 <= frame["retry_after"] <= 60
                assert end.type == aiohttp.WSMsgType.CLOSE and end.data == 1013
                await ws.close()
    finally:
        daemon.stop()
    assert not daemon.events("http_handler_failed")
    assert len(daemon.events("chat_redis_unavailable")) == 1
