"""Self-test of the Twilio emulator, driven by the real twilio client."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator

from tests.adapters.twilio.twilio_emulator import TwilioEmulator, num_segments
from tests.adapters.twilio.twilio_emulator import twilio_emulator as twilio_emulator  # fixture

TO = "+15005550006"
FROM = "+15005550001"


class Receiver:
    """A loopback webhook endpoint that validates X-Twilio-Signature like our daemon must."""

    def __init__(self, auth_token: str) -> None:
        self.validator = RequestValidator(auth_token)
        self.received: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        signature = request.headers.get("X-Twilio-Signature", "")
        ok = self.validator.validate(str(request.url), form, signature)
        self.received.append(
            {"url": str(request.url), "form": dict(form), "valid": ok, "headers": request.headers}
        )
        return web.Response(status=204 if ok else 403)


@pytest_asyncio.fixture
async def receiver(twilio_emulator: TwilioEmulator) -> AsyncIterator[Receiver]:
    rx = Receiver(twilio_emulator.auth_token)
    app = web.Application()
    app.router.add_post("/twilio/status", rx.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rx.url = f"http://127.0.0.1:{port}/twilio/status"
    yield rx
    await runner.cleanup()


def test_segment_counting() -> None:
    assert num_segments("hello") == 1
    assert num_segments("a" * 160) == 1
    assert num_segments("a" * 161) == 2
    assert num_segments("€" * 80) == 1  # extension chars count double: 160 septets
    assert num_segments("é" * 160) == 1  # é is in the GSM basic set
    assert num_segments("ą" * 70) == 1  # not GSM: UCS-2
    assert num_segments("ą" * 71) == 2


async def test_create_and_fetch_with_real_client(twilio_emulator: TwilioEmulator) -> None:
    emu = twilio_emulator
    client = emu.client()
    msg = await client.messages.create_async(
        to=TO, from_=FROM, body="Hello from the router", status_callback="http://127.0.0.1:9/cb"
    )
    assert re.fullmatch(r"SM[0-9a-f]{32}", msg.sid or "")
    assert msg.status == "queued"
    assert msg.direction == "outbound-api"
    assert msg.account_sid == emu.account_sid
    assert (msg.to, msg.from_, msg.body) == (TO, FROM, "Hello from the router")
    assert msg.num_segments == "1" and msg.num_media == "0"
    assert isinstance(msg.date_created, datetime) and msg.date_created.tzinfo is not None
    assert msg.uri == f"/2010-04-01/Accounts/{emu.account_sid}/Messages/{msg.sid}.json"

    assert [m["sid"] for m in emu.messages] == [msg.sid]
    assert emu.messages[0]["status_callback"] == "http://127.0.0.1:9/cb"
    sent = emu.requests[0]
    assert sent["form"] == {
        "To": [TO],
        "From": [FROM],
        "Body": ["Hello from the router"],
        "StatusCallback": ["http://127.0.0.1:9/cb"],
    }
    assert sent["headers"]["Authorization"] == aiohttp.encode_basic_auth(
        emu.account_sid, emu.auth_token
    )

    fetched = await client.messages(msg.sid).fetch_async()
    assert fetched.sid == msg.sid and fetched.status == "queued"

    # Every request the client made went to the emulator, none to *.twilio.com.
    assert emu.client_urls == [
        f"{emu.base_url}/2010-04-01/Accounts/{emu.account_sid}/Messages.json",
        f"{emu.base_url}/2010-04-01/Accounts/{emu.account_sid}/Messages/{msg.sid}.json",
    ]


async def test_edge_and_region_from_environment_do_not_escape(
    twilio_emulator: TwilioEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    client = twilio_emulator.client()
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert msg.sid == twilio_emulator.messages[0]["sid"]


async def test_other_domains_are_refused_not_sent_to_twilio(
    twilio_emulator: TwilioEmulator,
) -> None:
    client = twilio_emulator.client()
    with pytest.raises(RuntimeError, match=r"lookups\.twilio\.com.*not the emulator"):
        await client.lookups.v2.phone_numbers(TO).fetch_async()


async def test_messaging_service_and_media(twilio_emulator: TwilioEmulator) -> None:
    client = twilio_emulator.client()
    msg = await client.messages.create_async(
        to=TO,
        messaging_service_sid="MG" + "a" * 32,
        media_url=["https://example.org/a.png", "https://example.org/b.png"],
    )
    assert re.fullmatch(r"MM[0-9a-f]{32}", msg.sid or "")
    assert msg.status == "accepted" and msg.from_ is None
    assert msg.num_media == "2" and msg.num_segments == "0"
    rec = twilio_emulator.messages[0]
    assert rec["media_urls"] == ["https://example.org/a.png", "https://example.org/b.png"]


async def test_wrong_auth_token_is_401(twilio_emulator: TwilioEmulator) -> None:
    client = twilio_emulator.client(auth_token="not-the-token")
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert info.value.status == 401
    assert info.value.code == 20003
    assert "Authenticate" in info.value.msg
    assert twilio_emulator.messages == []


async def test_api_key_auth(twilio_emulator: TwilioEmulator) -> None:
    twilio_emulator.api_keys["SK" + "b" * 32] = "key-secret"
    client = twilio_emulator.client(username="SK" + "b" * 32, auth_token="key-secret")
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert msg.account_sid == twilio_emulator.account_sid


async def test_validation_errors(twilio_emulator: TwilioEmulator) -> None:
    client = twilio_emulator.client()
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=TO, body="no sender")
    assert (info.value.status, info.value.code) == (400, 21603)
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=TO, from_=FROM)
    assert (info.value.status, info.value.code) == (400, 21602)
    with pytest.raises(TwilioRestException) as info:
        await client.messages("SM" + "0" * 32).fetch_async()
    assert (info.value.status, info.value.code) == (404, 20404)


async def test_programmed_rejection_21610(twilio_emulator: TwilioEmulator) -> None:
    twilio_emulator.reject(to="+15555550100", code=21610)
    client = twilio_emulator.client()
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to="+15555550100", from_=FROM, body="x")
    assert info.value.code == 21610
    assert info.value.status == 400
    assert "Attempt to send to unsubscribed recipient" in info.value.msg
    # The rule is sticky and only for that recipient.
    with pytest.raises(TwilioRestException):
        await client.messages.create_async(to="+15555550100", from_=FROM, body="again")
    ok = await client.messages.create_async(to=TO, from_=FROM, body="fine")
    assert [m["sid"] for m in twilio_emulator.messages] == [ok.sid]


async def test_fail_next_then_succeed(twilio_emulator: TwilioEmulator) -> None:
    twilio_emulator.fail_next(status=500, times=2)
    client = twilio_emulator.client()
    for _ in range(2):
        with pytest.raises(TwilioRestException) as info:
            await client.messages.create_async(to=TO, from_=FROM, body="x")
        assert (info.value.status, info.value.code) == (500, 20500)
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert msg.status == "queued"
    assert len(twilio_emulator.messages) == 1 and len(twilio_emulator.requests) == 3


async def test_non_json_error_body(twilio_emulator: TwilioEmulator) -> None:
    twilio_emulator.fail_next(status=502, raw="<html>Bad Gateway</html>")
    client = twilio_emulator.client()
    with pytest.raises(TwilioRestException) as info:
        await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert (info.value.status, info.value.code) == (502, 502)


async def test_max_retries_retries_server_errors_transparently(
    twilio_emulator: TwilioEmulator,
) -> None:
    # AsyncTwilioHttpClient(max_retries=N) wraps the session in aiohttp_retry, which
    # retries 5xx on every method, POST included.
    twilio_emulator.fail_next(status=503, times=2)
    client = twilio_emulator.client(max_retries=3)
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert msg.status == "queued"
    assert len(twilio_emulator.requests) == 3


async def test_http_client_timeout_is_ignored_by_twilio(twilio_emulator: TwilioEmulator) -> None:
    # twilio passes timeout=None per request, so AsyncTwilioHttpClient(timeout=...) is
    # not applied: the slow answer still arrives.
    twilio_emulator.slow_next(0.6)
    client = twilio_emulator.client(timeout=0.1)
    start = time.monotonic()
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert time.monotonic() - start >= 0.6
    assert msg.sid == twilio_emulator.messages[0]["sid"]


async def test_asyncio_timeout_and_message_created_anyway(
    twilio_emulator: TwilioEmulator,
) -> None:
    twilio_emulator.slow_next(30)  # cut short by stop()
    client = twilio_emulator.client()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.messages.create_async(to=TO, from_=FROM, body="x")
    # Twilio had accepted it: a blind retry would send a duplicate.
    assert len(twilio_emulator.messages) == 1


async def test_dropped_connection(twilio_emulator: TwilioEmulator) -> None:
    twilio_emulator.drop_next()
    client = twilio_emulator.client()
    with pytest.raises(aiohttp.ClientError):
        await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert twilio_emulator.messages == []
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    assert msg.status == "queued"


async def test_status_callbacks_are_signed(
    twilio_emulator: TwilioEmulator, receiver: Receiver
) -> None:
    emu = twilio_emulator
    client = emu.client()
    callback = receiver.url + "?outbox=42&attempt=1"
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x", status_callback=callback)
    assert msg.sid is not None

    assert await emu.send_status(msg.sid, "sent") == 204
    assert await emu.send_status(msg.sid, "undelivered", error_code=30003) == 204
    assert [r["valid"] for r in receiver.received] == [True, True]
    first, second = (r["form"] for r in receiver.received)
    assert first == {
        "AccountSid": emu.account_sid,
        "ApiVersion": "2010-04-01",
        "From": FROM,
        "MessageSid": msg.sid,
        "MessageStatus": "sent",
        "SmsSid": msg.sid,
        "SmsStatus": "sent",
        "To": TO,
    }
    assert second["MessageStatus"] == "undelivered" and second["ErrorCode"] == "30003"
    assert receiver.received[0]["url"] == callback
    assert receiver.received[0]["headers"]["Content-Type"].startswith(
        "application/x-www-form-urlencoded"
    )

    fetched = await client.messages(msg.sid).fetch_async()
    assert fetched.status == "undelivered" and fetched.error_code == 30003
    assert fetched.date_sent is not None

    # A forged signature is refused by a validating receiver.
    assert await emu.send_status(msg.sid, "delivered", auth_token="wrong") == 403
    assert receiver.received[-1]["valid"] is False


async def test_send_status_without_callback_needs_url(twilio_emulator: TwilioEmulator) -> None:
    client = twilio_emulator.client()
    msg = await client.messages.create_async(to=TO, from_=FROM, body="x")
    with pytest.raises(ValueError, match="no StatusCallback"):
        await twilio_emulator.send_status(msg.sid or "", "delivered")
