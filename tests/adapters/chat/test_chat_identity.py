"""An address typed into the chat is a claim, not an identity (issue 14, item 1).

On a real daemon with real sockets, a real SMTP server and the API channel
with a real callback: a visitor who types a customer's address merges
nothing, joins none of her conversations and never receives the agent's
reply to her; the code e-mailed to the address proves it, and only then do
the profiles merge.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
from aiohttp import web

from router.profiles.claims import CODES_PER_ADDRESS, MAX_ATTEMPTS
from tests.adapters.chat.test_chat import Visitor, chat_config, connect, entries, start, until
from tests.adapters.email.mail_servers import SmtpInbox
from tests.support import API_TOKEN, DaemonProcess, RedisServer, cli, free_port

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ANA = "ana@example.com"
SECRET_REPLY = "Your order 1234 leaves today for Rua das Flores 12, Lisboa."


@dataclass
class Callback:
    """The API channel's reply webhook: what reaches Ana through the API."""

    port: int = 0
    received: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class World:
    daemon: DaemonProcess
    smtp: SmtpInbox
    callback: Callback
    r: redis_sync.Redis


@pytest.fixture
async def world(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[World]:
    callback = Callback(port=free_port())

    async def hook(request: web.Request) -> web.Response:
        callback.received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/replies", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", callback.port).start()
    smtp = SmtpInbox().start()
    path, port = chat_config(
        tmp_path,
        redis_server.url,
        **{
            "channels.api": {
                "enabled": True,
                "token": {"env": "ROUTER_API_TOKEN"},
                "callback": {"url": f"http://127.0.0.1:{callback.port}/replies"},
            },
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
    try:
        yield World(daemon, smtp, callback, redis_server.client())
    finally:
        daemon.stop()
        smtp.stop()
        await runner.cleanup()


async def ana_writes_by_api(http: aiohttp.ClientSession, w: World) -> dict[str, str]:
    body = {"from": f"Ana <{ANA}>", "text": "Where is my order 1234?", "id": "crm-ana-1"}
    async with http.post(f"{w.daemon.url}/v1/messages", json=body, headers=AUTH) as resp:
        assert resp.status == 202, await resp.text()
    (entry,) = await until(
        lambda: [e for e in entries(w.r, "support-en") if e["channel"] == "api"],
        what="Ana's message routed",
    )
    return entry


def identities(r: redis_sync.Redis, customer: str) -> set[str]:
    return set(r.smembers(f"router:customer:{{{customer}}}:identities"))


async def codes_mailed(w: World, count: int) -> list[str]:
    """The codes in the first ``count`` e-mails the SMTP server received."""
    mails = await asyncio.to_thread(w.smtp.wait, count)
    codes = []
    for _, to, mail in mails[:count]:
        assert to == [ANA]
        body = mail.get_body(("plain",)).get_content()
        found = re.search(r"Your code: (\d{6})", body)
        assert found, body
        codes.append(found.group(1))
    return codes


async def frames_for(v: Visitor, seconds: float) -> list[dict[str, Any]]:
    """Every frame the socket receives within ``seconds``."""
    got: list[dict[str, Any]] = []
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                msg = await v.ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    got.append(json.loads(msg.data))
    return got


async def test_an_unverified_address_merges_nothing_and_gets_no_reply(world: World) -> None:
    w, r = world, world.r
    async with aiohttp.ClientSession() as http:
        ana = await ana_writes_by_api(http, w)
        # the attacker types Ana's address, then asks about "their" order
        mallory, welcome = await connect(http, w.daemon)
        await mallory.send(type="email", email="ANA@example.com")
        ok = await mallory.recv("email_ok")
        assert ok == {"type": "email_ok", "email": ANA, "verified": False, "code_sent": True}
        (code,) = await codes_mailed(w, 1)  # in Ana's mailbox, not on the socket
        await mallory.send(type="message", id="m1", text="Any news about my order?")
        stored = await mallory.recv("ack")
        (entry,) = await until(
            lambda: [
                e for e in entries(r, "support-en") if e["message_id"] == stored["message_id"]
            ],
            what="the attacker's message routed",
        )
        # a profile and a conversation of their own; Ana's profile untouched
        assert entry["customer_id"] != ana["customer_id"]
        assert entry["conversation_id"] != ana["conversation_id"]
        assert identities(r, ana["customer_id"]) == {f"email:{ANA}"}
        assert identities(r, entry["customer_id"]) == {f"chat:{welcome['visitor']}"}
        assert r.get(f"router:identity:email:{ANA}") == ana["customer_id"]
        assert r.xlen("router:merges") == 0
        # the agents see the claim as a note that says it is not verified
        note = [
            json.loads(m["meta"])
            for e in entries(r, "support-en")
            if (m := r.hgetall(f"router:msg:{{{e['message_id']}}}")).get("meta")
            and json.loads(m["meta"]).get("kind") == "contact"
        ]
        assert note and note[0]["claimed_email"] == ANA and "not verified" in note[0]["note"]
        # guessing: MAX_ATTEMPTS tries, then the claim is gone (even the right code fails)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for n in range(MAX_ATTEMPTS):
            await asyncio.sleep(0.6)  # (the frame rate of the test config: 2 a second)
            await mallory.send(type="verify", code=wrong)
            err = await mallory.recv("error")
            assert err["code"] == "bad_code", err
            assert str(MAX_ATTEMPTS - n - 1) in err["message"] or n == MAX_ATTEMPTS - 1
        await mallory.send(type="verify", code=code)
        assert (await mallory.recv("error"))["code"] == "no_code"
        # the agent answers Ana: the answer goes to Ana (the API callback), not to the socket
        out = cli(w.daemon.config, "reply", ana["conversation_id"], "--text", SECRET_REPLY)
        assert out.returncode == 0, out.stderr
        await until(
            lambda: [c for c in w.callback.received if c["text"] == SECRET_REPLY],
            what="the reply at Ana's callback",
        )
        heard = await frames_for(mallory, 1.5)
        assert not [f for f in heard if SECRET_REPLY in json.dumps(f)]
        assert r.xlen("router:merges") == 0
        await mallory.ws.close()


async def test_the_code_proves_the_address_and_only_then_profiles_merge(world: World) -> None:
    w, r = world, world.r
    async with aiohttp.ClientSession() as http:
        ana = await ana_writes_by_api(http, w)
        mallory, _ = await connect(http, w.daemon)
        await mallory.send(type="email", email=ANA)
        await mallory.recv("email_ok")
        # the real Ana opens the chat and claims her address too
        chat, welcome = await connect(http, w.daemon)
        await chat.send(type="email", email=ANA)
        assert (await chat.recv("email_ok"))["code_sent"] is True
        mallory_code, ana_code = await codes_mailed(w, 2)
        assert r.xlen("router:merges") == 0
        # a code proves the address only for the visitor it was sent for
        await mallory.send(type="verify", code=ana_code)
        if ana_code != mallory_code:
            assert (await mallory.recv("error"))["code"] == "bad_code"
        await chat.send(type="verify", code=ana_code)
        assert await chat.recv("email_verified") == {"type": "email_verified", "email": ANA}
        # now Ana's profile has her chat too (one merge: the chat's profile into hers)
        await until(
            lambda: f"chat:{welcome['visitor']}" in identities(r, ana["customer_id"]),
            what="the merge",
        )
        assert r.xlen("router:merges") == 1
        assert r.get(f"router:identity:email:{ANA}") == ana["customer_id"]
        # the attacker's visitor stays outside
        assert identities(r, ana["customer_id"]) == {f"email:{ANA}", f"chat:{welcome['visitor']}"}
        # a code is used once
        await chat.send(type="verify", code=ana_code)
        assert (await chat.recv("error"))["code"] == "no_code"
        # Ana's chat, now hers: a question and the agent's answer reach her socket only
        await chat.send(type="message", id="q1", text="Can you send it to my office instead?")
        stored = await chat.recv("ack")
        (entry,) = await until(
            lambda: [
                e for e in entries(r, "support-en") if e["message_id"] == stored["message_id"]
            ],
            what="Ana's chat message routed",
        )
        # (it joined the chat's work item, queued before the merge: the
        # conversation, not the entry, names the customer it belongs to now)
        conv = f"router:conv:{{{entry['conversation_id']}}}"
        assert r.hget(conv, "customer_id") == ana["customer_id"]
        out = cli(w.daemon.config, "reply", entry["conversation_id"], "--text", SECRET_REPLY)
        assert out.returncode == 0, out.stderr
        while (frame := await chat.recv("message"))["from"] != "agent":
            pass
        assert frame["text"] == SECRET_REPLY
        heard = await frames_for(mallory, 1.0)
        assert not [f for f in heard if SECRET_REPLY in json.dumps(f)]
        await chat.ws.close()
        await mallory.ws.close()


async def test_codes_are_rationed_per_visitor_and_per_address(world: World) -> None:
    w = world
    async with aiohttp.ClientSession() as http:
        first, welcome = await connect(http, w.daemon)
        await first.send(type="email", email=ANA)
        assert (await first.recv("email_ok"))["code_sent"] is True
        # the same visitor again at once: wait RESEND_AFTER
        await first.send(type="email", email="other@example.com")
        assert (await first.recv("error"))["code"] == "slow_down"
        # many visitors, one address: CODES_PER_ADDRESS an hour, whoever asks
        for n in range(1, CODES_PER_ADDRESS + 1):
            v, _ = await connect(http, w.daemon)
            await v.send(type="email", email=ANA)
            if n < CODES_PER_ADDRESS:
                assert (await v.recv("email_ok"))["code_sent"] is True
            else:
                err = await v.recv("error")
                assert err["code"] == "slow_down" and "hour" in err["message"]
            await v.ws.close()
        await codes_mailed(w, CODES_PER_ADDRESS)
        await asyncio.sleep(0.5)
        assert len(w.smtp.received) == CODES_PER_ADDRESS
        # the refused second claim left the first one pending; no code is stored
        claim = w.r.hgetall(f"router:chat:{{{welcome['visitor']}}}:claim")
        assert claim["email"] == ANA and set(claim) == {"email", "mac", "expires_at", "attempts"}
        await first.ws.close()
