"""The daemon as a process, over real HTTP, with a real Redis: the whole path,
bad input, reload, drain, systemd notifications, metrics, the embedded Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import redis
from aiohttp import web

from tests.support import (
    API_TOKEN,
    ROOT,
    DaemonProcess,
    RedisServer,
    cli,
    free_port,
    queued_message_ids,
    wait_for,
    write_config,
)

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


async def acli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(cli, config, *args)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_message_to_queue_to_agent_to_reply_end_to_end(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/replies", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    cb_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", cb_port).start()
    port = free_port()
    config = write_config(
        tmp_path / "router.yaml",
        redis_server.url,
        port,
        **{"channels.api.callback": {"url": f"http://127.0.0.1:{cb_port}/replies"}},
    )
    daemon = DaemonProcess(config, port).start()
    try:
        body = {
            "from": "Ana <Ana@Example.com>",
            "text": "Hola, mi pedido no ha llegado",
            "id": "crm-1",
            "hints": {"language": "es"},
            "subject": "Pedido 1234",
        }
        async with http.post(f"{daemon.url}/v1/messages", json=body, headers=AUTH) as r:
            assert r.status == 202
            accepted = await r.json()
        assert accepted["duplicate"] is False
        async with http.post(f"{daemon.url}/v1/messages", json=body, headers=AUTH) as r:
            assert (r.status, await r.json()) == (202, {"id": accepted["id"], "duplicate": True})

        # the agent pulls the most urgent entry of the Spanish queue
        pulled = None
        for _ in range(50):
            out = await acli(config, "queue", "pull", "support-es", "--agent", "bob", "--json")
            if out.returncode == 0:
                pulled = json.loads(out.stdout)
                break
            assert out.returncode == 3, out.stderr  # empty: not routed yet
            await asyncio.sleep(0.1)
        assert pulled is not None
        assert pulled["message_id"] == accepted["id"]
        assert pulled["message"]["text"] == "Hola, mi pedido no ha llegado"
        assert pulled["message"]["sender"] == "email:ana@example.com"
        listed = json.loads((await acli(config, "queue", "list", "--json")).stdout)
        es = next(q for q in listed if q["queue"] == "support-es")
        assert es["depth"] == 1 and es["claimed"] == 1 and es["oldest_age_seconds"] >= 0

        out = await acli(config, "queue", "ack", "support-es", pulled["entry_id"], "--agent", "bob")
        assert out.returncode == 0, out.stderr
        out = await acli(
            config,
            "reply",
            pulled["conversation_id"],
            "--text",
            "Lo enviamos hoy.",
            "--agent",
            "bob",
            "--json",
        )
        assert out.returncode == 0, out.stderr
        outbox_id = json.loads(out.stdout)["outbox_id"]
        for _ in range(100):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
        # first the automatic acknowledgement of the new conversation, in Spanish
        ack = received.pop(0)
        assert ack["kind"] == "ack" and ack["conversation_id"] == pulled["conversation_id"]
        assert ack["text"].startswith("Gracias por contactarnos.") and "GMT" in ack["text"]
        assert ack["to"] == "ana@example.com" and ack["subject"] == "Re: Pedido 1234"
        assert received == [
            {
                "id": outbox_id,
                "conversation_id": pulled["conversation_id"],
                "to": "ana@example.com",
                "text": "Lo enviamos hoy.",
                "subject": "Pedido 1234",
                "in_reply_to": "crm-1",
                "agent": "bob",
                "kind": "reply",
            }
        ]
        status = json.loads((await acli(config, "outbox", "status", outbox_id)).stdout)
        for _ in range(50):
            if status["status"] == "sent":
                break
            await asyncio.sleep(0.05)
            status = json.loads((await acli(config, "outbox", "status", outbox_id)).stdout)
        assert status["status"] == "sent"
        listed = json.loads((await acli(config, "queue", "list", "--json")).stdout)
        assert all(q["depth"] == 0 for q in listed)
        # no body and no raw address in the logs
        log = daemon.log()
        assert "Hola, mi pedido" not in log and "ana@example.com" not in log.lower()
        (routed,) = daemon.events("routed")
        assert routed["queue"] == "support-es" and routed["message_id"] == accepted["id"]
    finally:
        assert daemon.stop() == 0
        await runner.cleanup()


BAD_REQUESTS = [
    # (description, body bytes, headers, status, error fragment)
    ("malformed JSON", b'{"from": "a@b.c", "text": ', {}, 400, "not valid UTF-8 JSON"),
    ("not an object", b'["a"]', {}, 400, "must be a JSON object"),
    ("wrong type", b'{"from": "a@b.c", "text": 42}', {}, 400, "'text' must be a string, not int"),
    ("empty text", b'{"from": "a@b.c", "text": "   "}', {}, 400, "'text' must not be empty"),
    ("missing from", b'{"text": "hi"}', {}, 400, "'from' is required"),
    ("unknown field", b'{"from": "a@b.c", "text": "hi", "txet": 1}', {}, 400, "unknown field"),
    ("bad channel", b'{"from": "a@b.c", "text": "hi", "channel": "E M"}', {}, 400, "channel"),
    ("invalid UTF-8", b'{"from": "a@b.c", "text": "\xff\xfe"}', {}, 400, "UTF-8"),
    ("no token", b'{"from": "a@b.c", "text": "hi"}', {"Authorization": ""}, 401, "bearer"),
    ("bad token", b'{"from": "a@b.c", "text": "hi"}', {"Authorization": "Bearer x"}, 401, "bearer"),
]


async def test_bad_input_gets_a_clear_error_and_the_daemon_keeps_serving(
    daemon: DaemonProcess, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    url = f"{daemon.url}/v1/messages"
    for what, body, headers, status, fragment in BAD_REQUESTS:
        async with http.post(url, data=body, headers={**AUTH, **headers}) as r:
            payload = await r.json()
            assert r.status == status, what
            assert fragment.lower() in payload["error"].lower(), (what, payload)
    big = b'{"from": "a@b.c", "text": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    async with http.post(url, data=big, headers=AUTH) as r:
        assert r.status == 413
        assert "limit" in (await r.json())["error"]

    # chunked upload without Content-Length is cut off too
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b"x" * 100_000

    async with http.post(url, data=chunks(), headers=AUTH) as r:
        assert r.status == 413
    async with http.get(url, headers=AUTH) as r:
        assert r.status == 405
        assert "error" in await r.json()
    async with http.post(url, json={"from": "a@b.c", "text": "still here"}, headers=AUTH) as r:
        assert r.status == 202
    r = redis_server.client()
    assert sum(r.xlen(f"router:ingest:{{{p}}}") for p in range(4)) <= 1
    assert daemon.proc is not None and daemon.proc.poll() is None


async def test_sighup_reload_refuses_a_broken_config_and_applies_a_good_one(
    daemon: DaemonProcess, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    original = daemon.config.read_text()
    broken = original.replace("queue: support-es", "queue: support-fr")
    daemon.config.write_text(broken)
    daemon.signal(signal.SIGHUP)
    (refused,) = wait_for(lambda: daemon.events("config_reload_refused"), what="refusal")
    line = next(i for i, t in enumerate(broken.splitlines(), 1) if "support-fr" in t)
    assert refused["problems"] == [
        f"{daemon.config}:{line}: rule 'spanish' targets queue 'support-fr', which is not "
        "defined under queues: (defined: general, support-es, vip)"
    ]
    async with http.post(
        f"{daemon.url}/v1/messages",
        headers=AUTH,
        json={"from": "a@b.c", "text": "hola", "hints": {"language": "es"}},
    ) as r:
        assert r.status == 202  # still serving, old config still routes es

    # a good config: Spanish now goes to the vip queue
    daemon.config.write_text(original.replace("queue: support-es", "queue: vip"))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.events("config_reloaded"), what="reload")
    async with http.post(
        f"{daemon.url}/v1/messages",
        headers=AUTH,
        json={"from": "z@b.c", "text": "hola", "hints": {"language": "es"}},
    ) as r:
        assert r.status == 202
    rc = redis_server.client()
    wait_for(lambda: rc.xlen("router:q:{vip}:p2") == 1, what="routed to vip")
    assert rc.xlen("router:q:{support-es}:p2") == 1


async def test_sigterm_drains_and_exits_in_bounded_time(
    daemon: DaemonProcess, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    url = f"{daemon.url}/v1/messages"
    bodies = [{"from": f"u{i}@x.org", "text": "hi", "id": f"d{i}"} for i in range(300)]
    accepted: list[str] = []

    async def send(b: dict) -> None:
        try:
            async with http.post(url, json=b, headers=AUTH) as r:
                if r.status == 202:
                    accepted.append((await r.json())["id"])
        except aiohttp.ClientError:
            pass

    tasks = [asyncio.create_task(send(b)) for b in bodies]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    await asyncio.gather(*tasks)
    rc = await asyncio.to_thread(daemon.proc.wait, 30)  # type: ignore[union-attr]
    assert rc == 0
    assert time.monotonic() - started < 10  # shutdown_timeout of the test config
    assert daemon.events("stopped")
    # everything accepted before the drain was routed before exit
    r = redis.asyncio.Redis(port=redis_server.port, decode_responses=True)
    queued = await queued_message_ids(r)
    await r.aclose()
    assert sorted(queued) == sorted(accepted)


def test_systemd_notifications(tmp_path: Path, redis_server: RedisServer) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    port = free_port()
    config = write_config(tmp_path / "router.yaml", redis_server.url, port)
    daemon = DaemonProcess(
        config, port, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    )
    daemon.start(wait=False)
    try:
        messages: list[str] = []

        def until(state: str) -> None:
            while not any(state in m for m in messages):
                messages.append(sock.recv(4096).decode())

        until("READY=1")
        until("WATCHDOG=1")
        daemon.signal(signal.SIGHUP)
        until("RELOADING=1")
        daemon.signal(signal.SIGTERM)
        until("STOPPING=1")
        assert daemon.proc is not None and daemon.proc.wait(20) == 0
    finally:
        daemon.kill()
        sock.close()


async def test_health_readiness_and_metrics(
    daemon: DaemonProcess, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    async with http.get(f"{daemon.url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{daemon.url}/readyz") as r:
        assert r.status == 200 and (await r.json())["checks"]["redis"] == "ok"
    for i in range(3):
        async with http.post(
            f"{daemon.url}/v1/messages",
            headers=AUTH,
            json={"from": f"u{i}@x.org", "text": "hi", "id": "same"},
        ) as r:
            assert r.status == 202
    rc = redis_server.client()
    wait_for(lambda: rc.xlen("router:q:{general}:p2") == 1, what="routed")
    async with http.get(f"{daemon.url}/metrics") as r:
        text = await r.text()
    assert 'router_messages_in_total{channel="api",result="new"} 1.0' in text
    assert 'router_messages_in_total{channel="api",result="duplicate"} 2.0' in text
    assert 'router_messages_routed_total{queue="general"} 1.0' in text
    assert 'router_queue_depth{queue="general"} 1.0' in text
    assert "router_routing_latency_seconds_bucket" in text
    assert "\nrouter_ingest_backlog 0.0\n" in text  # everything stored was routed
    assert "\nrouter_ingest_oldest_age_seconds 0.0\n" in text
    # the operator's one-look view, from any host that reaches Redis
    out = cli(daemon.config, "status", "--json")
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    node = daemon.events("started")[0]["node"]
    assert [n["node"] for n in status["routing_nodes"]] == [node]
    assert {p["holder"] for p in status["ingest"]["partitions"]} == {node}
    assert status["ingest"]["backlog"] == 0 and status["problems"] == []
    assert next(q for q in status["queues"] if q["queue"] == "general")["depth"] == 1
    out = cli(daemon.config, "status")
    assert out.returncode == 0 and f"routing daemons alive: {node}\n" in out.stdout
    # Redis goes away: not ready, 503 on intake, still alive
    redis_server.stop()
    async with http.get(f"{daemon.url}/readyz") as r:
        assert r.status == 503 and (await r.json())["checks"]["redis"].startswith("unreachable")
    async with http.post(
        f"{daemon.url}/v1/messages", headers=AUTH, json={"from": "x@x.org", "text": "hi"}
    ) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "5"
    async with http.get(f"{daemon.url}/healthz") as r:
        assert r.status == 200
    redis_server.start()
    async with http.post(
        f"{daemon.url}/v1/messages", headers=AUTH, json={"from": "x@x.org", "text": "back"}
    ) as r:
        assert r.status == 202


async def test_embedded_redis_with_the_cli_and_persistence(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    config = write_config(tmp_path / "router.yaml", "embedded", port)
    daemon = DaemonProcess(config, port).start()
    try:
        async with http.post(
            f"{daemon.url}/v1/messages",
            headers=AUTH,
            json={"from": "ana@x.org", "text": "kept", "id": "e1"},
        ) as r:
            accepted = await r.json()

        def depth() -> int:
            out = cli(config, "queue", "list", "--json")
            assert out.returncode == 0, out.stderr
            return next(q["depth"] for q in json.loads(out.stdout) if q["queue"] == "general")

        wait_for(lambda: depth() == 1, what="routed in the embedded Redis")
    finally:
        assert daemon.stop() == 0
    sock = tmp_path / "state" / "redis" / "redis.sock"
    assert not sock.exists()  # the embedded Redis stopped with the daemon
    out = cli(config, "queue", "list")
    assert out.returncode == 1 and "embedded Redis is not running" in out.stderr
    daemon = DaemonProcess(config, port).start()
    try:
        assert depth() == 1  # survived the restart (AOF)
        async with (
            aiohttp.ClientSession() as fresh,
            fresh.post(
                f"{daemon.url}/v1/messages",
                headers=AUTH,
                json={"from": "ana@x.org", "text": "kept", "id": "e1"},
            ) as r,
        ):
            assert await r.json() == {"id": accepted["id"], "duplicate": True}
    finally:
        daemon.stop()


async def test_a_second_daemon_on_the_host_shares_the_routing_through_the_embedded_redis(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Scaling out on one host with the quick-start setup: a second daemon
    pointed at the first one's embedded Redis (its socket) takes half the
    partitions and routes; `router status` shows both; when it stops, the
    first takes everything back. Every message is queued once."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    port_a, port_b = free_port(), free_port()
    config_a = write_config(tmp_path / "a" / "router.yaml", "embedded", port_a)
    socket = tmp_path / "a" / "state" / "redis" / "redis.sock"
    config_b = write_config(tmp_path / "b" / "router.yaml", f"unix://{socket}", port_b)
    a, b = DaemonProcess(config_a, port_a), DaemonProcess(config_b, port_b)
    a.start()
    try:
        b.start()

        def holders() -> dict[str, int]:
            out = cli(config_a, "status", "--json")
            assert out.returncode == 0, out.stderr
            held: dict[str, int] = {}
            for p in json.loads(out.stdout)["ingest"]["partitions"]:
                if p["holder"]:
                    held[p["holder"]] = held.get(p["holder"], 0) + 1
            return held

        wait_for(lambda: sorted(holders().values()) == [2, 2], timeout=15, what="2 + 2")
        for i in range(40):
            async with http.post(
                f"{a.url}/v1/messages",
                headers=AUTH,
                json={"from": f"u{i}@x.org", "text": "Where is my parcel?", "id": f"s{i}"},
            ) as r:
                assert r.status == 202
        wait_for(
            lambda: len(a.events("routed")) + len(b.events("routed")) == 40, what="all 40 routed"
        )
        assert a.events("routed") and b.events("routed")  # both routed some
        assert b.stop() == 0
        wait_for(lambda: holders() == {a.events("started")[0]["node"]: 4}, what="a holds all")
        status = json.loads(cli(config_a, "status", "--json").stdout)
        general = next(q for q in status["queues"] if q["queue"] == "general")
        assert general["depth"] == 40 and status["ingest"]["backlog"] == 0
    finally:
        b.kill()
        assert a.stop() == 0


def test_embedded_redis_dies_with_a_killed_daemon(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path / "router.yaml", "embedded", port)
    daemon = DaemonProcess(config, port).start()
    pid = int((tmp_path / "state" / "redis" / "redis.pid").read_text())
    daemon.kill()

    def gone() -> bool:
        try:
            return "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        except FileNotFoundError:
            return True

    wait_for(gone, what="embedded redis-server to exit after SIGKILL of the daemon")
    daemon = DaemonProcess(config, port).start()  # and a new start works at once
    daemon.stop()


def test_cli_errors_are_clear(tmp_path: Path, redis_server: RedisServer) -> None:
    config = write_config(
        tmp_path / "router.yaml",
        redis_server.url,
        free_port(),
        **{"routing.default_queue": "missing"},
    )
    out = cli(config, "queue", "list")
    assert out.returncode == 2
    assert f"{config}:" in out.stderr and "default_queue 'missing' is not a queue" in out.stderr
    config = write_config(tmp_path / "router.yaml", "redis://127.0.0.1:1/0", free_port())
    out = cli(config, "queue", "list")
    assert out.returncode == 1 and "cannot reach Redis at redis://127.0.0.1:1/0" in out.stderr
    assert orjson.loads(b"{}") == {}


def test_explain_dry_run(config_path: Path) -> None:
    import os

    body = b'{"from": "+34 600 000 000", "text": "Hola", "hints": {"locale": "es-ES"}}'
    out = subprocess.run(
        [sys.executable, "-m", "router", "explain", "--config", str(config_path)],
        input=body,
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "ROUTER_API_TOKEN": ""},
    )
    assert out.returncode == 0, out.stderr
    decision = json.loads(out.stdout)
    assert decision["queue"] == "support-es" and decision["rule"] == "spanish"
    assert decision["language"] == "es" and decision["language_source"] == "channel_hint"
    bad = subprocess.run(
        [sys.executable, "-m", "router", "explain", "--config", str(config_path)],
        input=b'{"text": 1}',
        capture_output=True,
        cwd=ROOT,
    )
    assert bad.returncode == 1 and b"bad message on stdin" in bad.stderr


def _processes_with(marker: str) -> list[str]:
    """Processes whose environment holds ``marker`` (a daemon's children inherit it)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "environ").read_bytes():
                status = (proc / "status").read_text()
                if "zombie" not in status.lower():
                    found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def test_a_taken_http_port_stops_what_had_started_and_exits_non_zero(tmp_path: Path) -> None:
    """Issue 15: the bind fails after the embedded Redis, the workers and the
    adapters (the IMAP one with its parser processes) have started: the daemon
    says which address, undoes all of it in reverse order, and exits 1."""
    from tests.adapters.email.mail_servers import PymapServer

    imap = PymapServer().start()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(
            tmp_path / "router.yaml",
            "embedded",
            port,
            **{
                "channels.email": {
                    "enabled": True,
                    "accounts": [
                        {
                            "name": "support",
                            "host": "127.0.0.1",
                            "port": imap.port,
                            "security": "none",
                            "username": imap.user,
                            "password": {"env": "IMAP_PASSWORD"},
                            "folders": ["INBOX"],
                        }
                    ],
                }
            },
        )
        marker = f"ROUTER_TEST_RUN={time.monotonic_ns()}"
        name, value = marker.split("=")
        daemon = DaemonProcess(config, port, env={"IMAP_PASSWORD": imap.password, name: value})
        daemon.start(wait=False)
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == 1, daemon.log()
        failed = daemon.events("start_failed")
        assert len(failed) == 1 and failed[0]["level"] == "error", daemon.log()
        assert f"cannot listen on 127.0.0.1:{port}" in failed[0]["error"]
        assert "http.listen" in failed[0]["action"]
        # it had started Redis and the IMAP adapter's parser workers, and stopped them
        events = [json.loads(line).get("event") for line in daemon.log().splitlines()]
        assert daemon.events("imap_started")[0]["parser_workers"] >= 1
        assert events.index("imap_started") < events.index("imap_stopped") < events.index("stopped")
        redis_said = [e["text"] for e in daemon.events("embedded_redis_log")]
        assert any("ready to exit" in text for text in redis_said), daemon.log()
        # (multiprocessing's resource tracker leaves on its own once the daemon's
        # end of its pipe closes: a moment after the exit, never a leftover)
        try:
            wait_for(lambda: not _processes_with(marker), timeout=5, what="no process left")
        except TimeoutError:
            raise AssertionError(f"left running: {_processes_with(marker)}") from None
        assert "Traceback" not in daemon.log()
    finally:
        taken.close()
        imap.stop()


async def test_claims_within_a_band_take_the_entry_due_soonest(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """An e-mail due in 4 h that came first and a chat due in 5 min, in one
    band: the chat is claimed first, by `router queue pull` and by a raw
    EVALSHA of the published claim script."""
    port = free_port()
    config = write_config(
        tmp_path / "router.yaml",
        redis_server.url,
        port,
        **{"routing.first_response": {"default": "4h", "channels": {"chat": "5m"}}, "rules": []},
    )
    daemon = DaemonProcess(config, port).start()
    rc = redis_server.client()
    band = "router:q:{general}:p2"

    async def post(source_id: str, channel: str, sender: str, queued: int) -> None:
        body = {"from": sender, "text": "Where is my order?", "id": source_id, "channel": channel}
        async with http.post(f"{daemon.url}/v1/messages", json=body, headers=AUTH) as r:
            assert r.status == 202
        wait_for(lambda: rc.xlen(band) == queued, what=f"{source_id} routed")

    try:
        await post("mail-1", "email", "ana@example.com", 1)
        await post("chat-1", "chat", "bo@example.com", 2)
        (mail, _), (chat, _) = [(f["channel"], float(f["due_at"])) for _, f in rc.xrange(band)]
        assert (mail, chat) == ("email", "chat")
        out = await acli(config, "queue", "pull", "general", "--agent", "alice", "--json")
        assert out.returncode == 0, out.stderr
        pulled = json.loads(out.stdout)
        assert pulled["channel"] == "chat" and pulled["message"]["source_id"] == "chat-1"
        due = {f["channel"]: float(f["due_at"]) for _, f in rc.xrange(band)}
        assert 200 < due["chat"] - float(pulled["queued_at"]) <= 300 < due["email"] - due["chat"]

        # the same from a tool in any language: the published SHA, plain EVALSHA
        await post("mail-2", "email", "cy@example.com", 3)
        await post("chat-2", "chat", "di@example.com", 4)
        sha = rc.hget("router:scripts", "claim")
        bands = [f"router:q:{{general}}:p{b}" for b in range(4)]
        got = rc.evalsha(sha, 4, *bands, "agents", "bob", 600000)
        stream, _entry_id, deliveries, *flat = got
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        assert (stream, deliveries, fields["channel"]) == (band, 1, "chat")
        assert rc.hget(f"router:msg:{{{fields['message_id']}}}", "source_id") == "chat-2"
        # then the e-mails, first come first served (same target)
        order = []
        while got := rc.evalsha(sha, 4, *bands, "agents", "bob", 600000):
            order.append(rc.hget(f"router:msg:{{{got[4]}}}", "source_id"))
        assert order == ["mail-1", "mail-2"]
    finally:
        assert daemon.stop() == 0


async def test_every_transition_is_an_event_on_the_public_stream(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    """queued -> claimed -> acked -> replied -> resolved -> reopened (by the
    customer's next message) -> queued, on a real daemon: each once, in
    order, with the conversation's lifecycle times."""
    port = free_port()
    config = write_config(tmp_path / "router.yaml", redis_server.url, port, rules=[])
    daemon = DaemonProcess(config, port).start()
    rc = redis_server.client()

    async def post(source_id: str) -> None:
        body = {"from": "ana@example.com", "text": "My order is late", "id": source_id}
        async with http.post(f"{daemon.url}/v1/messages", json=body, headers=AUTH) as r:
            assert r.status == 202

    def events() -> list[dict[str, str]]:
        return [f for _, f in rc.xrange("router:events")]

    try:
        await post("q-1")
        wait_for(lambda: events(), what="queued")
        out = await acli(config, "queue", "pull", "general", "--agent", "alice", "--json")
        assert out.returncode == 0, out.stderr
        pulled = json.loads(out.stdout)
        conv_id = pulled["conversation_id"]
        out = await acli(config, "queue", "ack", "general", pulled["entry_id"], "--agent", "alice")
        assert out.returncode == 0, out.stderr
        item = rc.hmget(f"router:conv:{{{conv_id}}}", "item_claimed_at", "item_acked_at")
        assert float(item[0]) <= float(item[1])  # the work item's claim and ack times
        out = await acli(config, "reply", conv_id, "--text", "It ships today.", "--agent", "alice")
        assert out.returncode == 0, out.stderr
        out = await acli(config, "conversation", "resolve", conv_id, "--agent", "alice")
        assert out.returncode == 0, out.stderr
        await post("q-2")  # the customer writes again: reopened, and a new work item
        wait_for(lambda: len(events()) == 7, what="reopened and queued again")
        time.sleep(0.3)  # (nothing more comes)
        got = events()
        assert [e["type"] for e in got] == [
            "queued",
            "claimed",
            "acked",
            "replied",
            "resolved",
            "reopened",
            "queued",
        ]
        customer = pulled["customer_id"]
        for e in got:
            assert (e["conversation_id"], e["customer_id"]) == (conv_id, customer), e
            assert e["channel"] == "api" and e["language"] == "en", e
            assert e["queue"] == "general", e
        assert [e.get("agent") for e in got[1:5]] == ["alice"] * 4
        assert got[0]["priority"] == "normal" and "due_at" in got[0]
        assert got[1]["entry_id"] == pulled["entry_id"] and got[1]["deliveries"] == "1"
        times = [float(e["at"]) for e in got]
        assert times == sorted(times)
        conv = rc.hgetall(f"router:conv:{{{conv_id}}}")
        assert float(conv["first_claimed_at"]) == float(got[1]["at"])
        assert float(conv["first_response_at"]) == float(conv["last_response_at"])
        assert float(conv["first_response_at"]) == float(got[3]["at"])
        assert float(conv["resolved_at"]) == float(got[4]["at"])
        assert float(conv["reopened_at"]) == float(got[5]["at"])
        assert float(conv["queued_at"]) == float(got[6]["at"])
        assert "item_claimed_at" not in conv and "item_acked_at" not in conv  # a new item
    finally:
        assert daemon.stop() == 0
