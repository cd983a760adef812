"""Web chat over a real WebSocket to the daemon as a process: the protocol,
resume after a disconnect, forged tokens, origins, oversize frames, floods,
and replies reaching the socket on whichever daemon holds it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync

from router.adapters.chat import sign_visitor, verify_token
from tests.support import DaemonProcess, RedisServer, cli, free_port, per_message, write_config

SECRET = "chat-secret-for-tests"
ORIGIN = "https://shop.example"
JAPANESE = "こんにちは、先週注文した靴がまだ届いていません。確認していただけますか？"


def test_tokens_are_signed_per_visitor() -> None:
    token = sign_visitor(SECRET, "v_" + "a" * 24)
    assert verify_token(SECRET, token) == "v_" + "a" * 24
    assert verify_token("another-secret", token) is None
    forged = token.replace("v_aaaa", "v_bbbb")
    assert verify_token(SECRET, forged) is None
    assert verify_token(SECRET, "nonsense") is None


def chat_config(tmp: Path, redis_url: str, name: str = "d1", **extra: Any) -> tuple[Path, int]:
    port = free_port()
    path = write_config(
        tmp / f"{name}.yaml",
        redis_url,
        port,
        **{
            "instance_id": name,
            "state_dir": str(tmp / name),
            "channels.chat": {
                "enabled": True,
                "secret": {"env": "CHAT_SECRET"},
                "allowed_origins": [ORIGIN],
                "rate": 2,
                "burst": 5,
                "max_frame_bytes": 4096,
            },
            "routing": {
                "languages": ["en", "ja", "pt"],
                "default_language": "en",
                "default_queue": "general",
            },
            "teams": {"japan": {"languages": ["ja"]}, "world": {"languages": ["en", "pt"]}},
            "queues": {
                "support-jp": {"team": "japan"},
                "support-en": {"team": "world"},
                "general": {},
            },
            "rules": [],
            **extra,
        },
    )
    return path, port


def start(path: Path, port: int) -> DaemonProcess:
    return DaemonProcess(path, port, env={"CHAT_SECRET": SECRET}).start()


@pytest.fixture
async def chat(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[DaemonProcess]:
    daemon = start(*chat_config(tmp_path, redis_server.url))
    yield daemon
    daemon.stop()


class Visitor:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **frame: Any) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def recv(self, kind: str | None = None, timeout: float = 15) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket closed: {msg.type} {msg.data} {msg.extra}")
                frame = json.loads(msg.data)
                if kind is None or frame["type"] == kind:
                    return frame


async def connect(
    http: aiohttp.ClientSession, daemon: DaemonProcess, origin: str = ORIGIN, **hello: Any
) -> tuple[Visitor, dict[str, Any]]:
    ws = await http.ws_connect(f"{daemon.url}/chat/ws", headers={"Origin": origin})
    v = Visitor(ws)
    await v.send(type="hello", **hello)
    return v, await v.recv("welcome")


def entries(r: redis_sync.Redis, queue: str) -> list[dict[str, str]]:
    """One per routed message (follow-ups join their conversation's work item)."""
    return per_message(r, [f for b in range(4) for _, f in r.xrange(f"router:q:{{{queue}}}:p{b}")])


async def until(predicate: Callable[[], Any], timeout: float = 15, what: str = "") -> Any:
    for _ in range(int(timeout / 0.05)):
        if value := predicate():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_hello_message_routed_with_browser_hints_and_acknowledged(
    chat: DaemonProcess, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    async with aiohttp.ClientSession() as http:
        v, welcome = await connect(
            http, chat, timezone="Asia/Tokyo", locale="ja-JP", page="https://shop.example/cart"
        )
        assert verify_token(SECRET, welcome["token"]) == welcome["visitor"]
        await v.send(type="message", id="c1", text=JAPANESE)
        ack = await v.recv("ack")
        assert ack["id"] == "c1" and ack["duplicate"] is False
        await v.send(type="message", id="c1", text=JAPANESE)  # a re-send: same message
        assert (await v.recv("ack"))["duplicate"] is True
        (entry,) = await until(lambda: entries(r, "support-jp"), what="routed")
        decision = json.loads(r.hget(f"router:msg:{{{entry['message_id']}}}", "decision"))
        assert (decision["timezone"], decision["timezone_source"]) == ("Asia/Tokyo", "browser")
        assert decision["language"] == "ja"
        # the acknowledgement with the ETA arrives on the socket, in Japanese
        system = await v.recv("message")
        assert system["from"] == "system" and "GMT+09:00" in system["text"]
        # an agent's reply is pushed live
        out = cli(
            chat.config,
            "reply",
            entry["conversation_id"],
            "--text",
            "確認します！",
            "--agent",
            "yui",
        )
        assert out.returncode == 0, out.stderr
        reply = await v.recv("message")
        assert (reply["from"], reply["text"], reply["agent"]) == ("agent", "確認します！", "yui")
        await v.ws.close()


async def test_resume_after_a_disconnect_loses_no_reply(
    chat: DaemonProcess, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    async with aiohttp.ClientSession() as http:
        v, welcome = await connect(http, chat)
        await v.send(type="message", id="m1", text="Hello, where is my order 1234?")
        await v.recv("ack")
        first = await v.recv("message")  # the acknowledgement
        (entry,) = await until(lambda: entries(r, "support-en"), what="routed")
        await v.ws.close()  # the network blinks
        for text in ("First answer", "Second answer"):
            cli(chat.config, "reply", entry["conversation_id"], "--text", text)
        v2, again = await connect(http, chat, token=welcome["token"], last_seen=first["event"])
        assert again["visitor"] == welcome["visitor"]
        got = [(await v2.recv("message"))["text"] for _ in range(2)]
        assert got == ["First answer", "Second answer"]
        # the same chat continues: one conversation
        await v2.send(type="message", id="m2", text="Thanks!")
        await v2.recv("ack")
        both = await until(
            lambda: len(entries(r, "support-en")) == 2 and entries(r, "support-en"),
            what="second message",
        )
        assert len({e["conversation_id"] for e in both}) == 1
        await v2.ws.close()


async def test_forged_token_wrong_origin_oversize_bad_frames_and_flood(
    chat: DaemonProcess, redis_server: RedisServer
) -> None:
    async with aiohttp.ClientSession() as http:
        # someone else's chat cannot be read with a made-up token
        ws = await http.ws_connect(f"{chat.url}/chat/ws", headers={"Origin": ORIGIN})
        forged = sign_visitor("guessed-secret", "v_" + "x" * 24)
        await ws.send_str(json.dumps({"type": "hello", "token": forged}))
        err = json.loads((await ws.receive()).data)
        assert err == {
            "type": "error",
            "code": "bad_token",
            "message": "this token is not valid; starting a new chat",
        }
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 4401
        # a page that is not on the allow-list cannot open the socket
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(f"{chat.url}/chat/ws", headers={"Origin": "https://evil.example"})
        assert info.value.status == 403
        v, _ = await connect(http, chat)
        await v.ws.send_str("x" * 5000)
        assert (await v.recv("error"))["code"] == "too_large"
        await v.ws.send_str("{not json")
        assert (await v.recv("error"))["code"] == "bad_frame"
        await v.ws.send_bytes(b"\x00\x01")
        assert (await v.recv("error"))["code"] == "bad_frame"
        await v.send(type="message", id="", text="no id")
        assert (await v.recv("error"))["code"] == "bad_message"
        # a flood: the burst passes, then slow_down; the socket stays open
        for i in range(12):
            await v.send(type="message", id=f"f{i}", text=f"spam {i}")
        kinds: list[str] = []
        while len(kinds) < 12:  # (the acknowledgement "message" may come in between)
            if (kind := (await v.recv())["type"]) != "message":
                kinds.append(kind)
        assert kinds.count("ack") == 5 and kinds.count("error") == 7
        await asyncio.sleep(1.1)
        await v.send(type="message", id="later", text="a real question")
        assert (await v.recv("ack"))["id"] == "later"
        await v.ws.close()
    async with aiohttp.ClientSession() as http, http.get(f"{chat.url}/healthz") as resp:
        assert resp.status == 200


async def test_reply_reaches_the_socket_on_another_daemon_and_a_typed_email_ties_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    a = start(*chat_config(tmp_path, redis_server.url, "a"))
    b = start(*chat_config(tmp_path, redis_server.url, "b"))
    try:
        async with aiohttp.ClientSession() as http:
            v, welcome = await connect(http, b)
            await v.send(type="email", email="Ana@Example.com")
            ok = await v.recv("email_ok")
            # (no e-mail channel here: no code can prove it, so it stays a claim)
            assert (ok["email"], ok["verified"], ok["code_sent"]) == (
                "ana@example.com",
                False,
                False,
            )
            await v.send(type="message", id="q1", text="Do you ship to Portugal?")
            stored = await v.recv("ack")
            ack = await v.recv("message")  # the acknowledgement
            # (the question itself: b may have routed only the e-mail note so far)
            (entry,) = await until(
                lambda: [
                    e for e in entries(r, "support-en") if e["message_id"] == stored["message_id"]
                ],
                what="the question routed",
            )
            # the visitor's socket is on b; the reply, sent by whichever outbox takes it,
            # reaches it through Redis
            cli(a.config, "reply", entry["conversation_id"], "--text", "Yes, we do.")
            assert (await v.recv("message"))["text"] == "Yes, we do."
            # b dies; the widget reconnects to a and resumes after what it saw
            b.kill()
            v2, _ = await connect(http, a, token=welcome["token"], last_seen=ack["event"])
            assert (await v2.recv("message"))["text"] == "Yes, we do."
            cli(a.config, "reply", entry["conversation_id"], "--text", "Anything else?")
            assert (await v2.recv("message"))["text"] == "Anything else?"
            customer = r.hgetall(f"router:customer:{{{entry['customer_id']}}}")
            identities = r.smembers(f"router:customer:{{{entry['customer_id']}}}:identities")
            # a typed address is a claim, not an identity (test_chat_identity.py)
            assert identities == {f"chat:{welcome['visitor']}"}
            assert customer["message_count"] == "2"  # the e-mail note and the question
    finally:
        a.stop()
        b.kill()


async def test_a_visitor_who_left_gets_the_transcript_at_their_proven_address(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    from tests.adapters.email.mail_servers import SmtpInbox

    smtp = SmtpInbox().start()
    path, port = chat_config(
        tmp_path,
        redis_server.url,
        **{
            "channels.chat.away_after": "1s",
            "channels.email": {
                "enabled": True,
                "smtp": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from_address": "support@example.com",
                },
            },
        },
    )
    daemon = start(path, port)
    r = redis_server.client()
    try:
        async with aiohttp.ClientSession() as http:
            v, _ = await connect(http, daemon)
            await v.send(type="email", email="ana@example.com")
            assert (await v.recv("email_ok"))["code_sent"] is True
            ((_, to, mail),) = await asyncio.to_thread(smtp.wait, 1)
            assert to == ["ana@example.com"]
            code = re.search(r"Your code: (\d+)", mail.get_body(("plain",)).get_content())
            assert code is not None
            await v.send(type="verify", code=code.group(1))
            await v.recv("email_verified")
            await v.send(type="message", id="q", text="Can I change the size of my order?")
            await v.recv("ack")
            entry = (
                await until(
                    lambda: [e for e in entries(r, "support-en") if e["channel"] == "chat"][-1:],
                    what="routed",
                )
            )[0]
            await v.ws.close()  # the visitor leaves
        await asyncio.sleep(2.5)  # away_after passes
        cli(
            daemon.config,
            "reply",
            entry["conversation_id"],
            "--text",
            "Yes: reply with the size you need.",
            "--agent",
            "bob",
        )
        (_, (_, to, mail)) = await asyncio.to_thread(smtp.wait, 2)
        assert to == ["ana@example.com"]
        body = mail.get_body(("plain",)).get_content()
        assert "Can I change the size of my order?" in body
        assert "bob: Yes: reply with the size you need." in body
        assert "code" not in body  # the code e-mail is not part of the conversation
    finally:
        daemon.stop()
        smtp.stop()


def test_a_token_with_non_ascii_characters_is_refused_not_a_crash() -> None:
    visitor = "v_" + "a" * 24
    genuine = sign_visitor(SECRET, visitor)
    assert verify_token(SECRET, genuine[:-2] + "é€") is None
    assert verify_token(SECRET, f"{visitor}\n.{genuine.rpartition('.')[2]}") is None


async def open_sockets(http: aiohttp.ClientSession, daemon: DaemonProcess) -> float:
    async with http.get(f"{daemon.url}/metrics") as resp:
        text = await resp.text()
    found = re.search(r'^router_adapter_state\{[^}]*"open_sockets"[^}]*\} (\S+)$', text, re.M)
    assert found, "no open_sockets gauge on /metrics"
    return float(found.group(1))


async def test_frames_outside_the_message_rate_are_bounded_too(
    chat: DaemonProcess, redis_server: RedisServer
) -> None:
    """Issue 14 item 5: e-mail frames, hello loops, resumes, long addresses,
    non-ASCII tokens."""
    r = redis_server.client()
    async with aiohttp.ClientSession() as http:
        # a hello loop on one socket: one visitor, one presence key, the rest refused
        v, welcome = await connect(http, chat)
        for _ in range(50):
            await v.send(type="hello")
        errors = [await v.recv("error") for _ in range(50)]
        assert {e["code"] for e in errors} == {"hello_once"}
        assert len(r.keys("router:chat:*:online")) == 1
        assert await open_sockets(http, chat) == 1
        # e-mail frames take from the connection's rate, like messages
        for i in range(40):
            await v.send(type="email", email=f"someone{i}@example.com")
        answers = [await v.recv() for _ in range(40)]
        accepted = [a for a in answers if a["type"] == "email_ok"]
        assert len(accepted) <= 6  # the burst (5), and what refilled meanwhile
        assert [a["code"] for a in answers if a["type"] == "error"] == ["slow_down"] * (
            40 - len(accepted)
        )
        notes = await until(
            lambda: (
                (n := len(entries(r, "general")) + len(entries(r, "support-en"))) >= len(accepted)
                and n
            ),
            what="the notes routed",
        )
        await asyncio.sleep(0.5)
        assert len(entries(r, "general")) + len(entries(r, "support-en")) == notes == len(accepted)
        # an address is at most 254 characters
        await asyncio.sleep(1.1)
        await v.send(type="email", email="a" * 250 + "@example.com")
        assert (await v.recv("error"))["code"] == "bad_email"
        await v.ws.close()
        # a resume sends at most the latest 200 events, once per socket
        key = f"router:chat:{{{welcome['visitor']}}}:events"
        for i in range(300):
            r.xadd(key, {"e": json.dumps({"from": "agent", "text": f"reply {i}", "at": 0})})
        v2, _ = await connect(http, chat, token=welcome["token"])
        got = [(await v2.recv("message"))["text"] for _ in range(200)]
        assert got == [f"reply {i}" for i in range(100, 300)]
        await v2.send(type="hello", token=welcome["token"])
        assert (await v2.recv())["code"] == "hello_once"
        # a token with non-ASCII characters is a bad token, not a crash
        ws = await http.ws_connect(f"{chat.url}/chat/ws", headers={"Origin": ORIGIN})
        await ws.send_str(json.dumps({"type": "hello", "token": welcome["token"] + "é"}))
        assert json.loads((await ws.receive()).data)["code"] == "bad_token"
        assert (await ws.receive()).data == 4401
        await v2.ws.close()
        # every socket closed: none counted open
        for _ in range(40):
            if await open_sockets(http, chat) == 0:
                break
            await asyncio.sleep(0.05)
        assert await open_sockets(http, chat) == 0
    assert "Traceback" not in chat.log()


def test_tokens_expire_token_ttl_after_they_were_issued() -> None:
    """Issue 14 item 8: a visitor token is good for ``token_ttl`` after issue."""
    visitor, day = "v_" + "a" * 24, 86400.0
    now = 1_800_000_000.0
    token = sign_visitor(SECRET, visitor, issued=now - 29 * day)
    assert verify_token(SECRET, token, ttl=30 * day, now=now) == visitor
    assert verify_token(SECRET, token, ttl=28 * day, now=now) is None
    assert verify_token(SECRET, token) == visitor  # genuine, whatever its age
    # the issue time is signed: moving it forward breaks the signature
    body, _, mac = token.rpartition(".")
    later = f"{body.rpartition('.')[0]}.{int(now)}.{mac}"
    assert verify_token(SECRET, later, ttl=30 * day, now=now) is None
    # only ASCII digits (int() would take other scripts' digits)
    assert verify_token(SECRET, f"{visitor}.١٢٣.{mac}") is None
    # tokens of the old form (no issue time) never expired: they are refused
    assert verify_token(SECRET, f"{visitor}.{mac}") is None


async def test_an_expired_token_starts_a_new_chat_a_returning_one_is_refreshed(
    chat: DaemonProcess, redis_server: RedisServer
) -> None:
    """The default token_ttl is 30 days; every hello issues a fresh token, so
    only a visitor away for longer loses their chat. Refused tokens (expired or
    forged, one per request) are logged at most once a minute."""
    day = 86400.0
    visitor = "v_" + "r" * 24
    async with aiohttp.ClientSession() as http:
        back = sign_visitor(SECRET, visitor, issued=time.time() - 29 * day)
        _, welcome = await connect(http, chat, token=back)
        assert welcome["visitor"] == visitor
        issued = int(welcome["token"].rsplit(".", 2)[1])
        assert abs(issued - time.time()) < 60  # refreshed: 30 more days
        assert verify_token(SECRET, welcome["token"], ttl=30 * day) == visitor

        gone = sign_visitor(SECRET, visitor, issued=time.time() - 31 * day)
        for token in [gone] + [sign_visitor("guessed", f"v_{i:024d}") for i in range(20)]:
            ws = await http.ws_connect(f"{chat.url}/chat/ws", headers={"Origin": ORIGIN})
            await ws.send_str(json.dumps({"type": "hello", "token": token}))
            err = json.loads((await ws.receive()).data)
            assert err["code"] == "bad_token"
            if token is gone:
                assert err["message"] == "this chat has expired; starting a new chat"
            assert (await ws.receive()).data == 4401
    refused = chat.events("chat_token_refused")
    assert len(refused) == 1 and refused[0]["reason"] == "expired", refused
