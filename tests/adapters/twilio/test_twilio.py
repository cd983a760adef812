"""SMS, WhatsApp and voice through Twilio, end to end: the daemon as a process,
webhooks signed as Twilio signs them, replies through the real twilio client
pointed at a local emulator of the REST API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
from twilio.request_validator import RequestValidator

from router.adapters.twilio import split_text
from tests.adapters.twilio.twilio_emulator import TwilioEmulator, sign
from tests.support import API_TOKEN, DaemonProcess, RedisServer, cli, free_port, write_config

OUR_NUMBER = "+15005550006"
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
HINDI = "नमस्ते, मेरा ऑर्डर अभी तक नहीं आया है, कृपया मदद करें।"
LATVIAN = "Labdien, mans pasūtījums vēl nav pienācis, lūdzu palīdziet."


def test_twilio_documented_signature_example() -> None:
    """Twilio's own example (webhook security page), through the validator we use."""
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert sign("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert RequestValidator("12345").validate(url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not RequestValidator("12345").validate(
        url, {**params, "Digits": "9"}, "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    )


def test_long_texts_split_at_sentences() -> None:
    text = ("This is a sentence of about forty characters. " * 60).strip()
    parts = split_text(text)
    assert len(parts) == 2 and all(len(p) <= 1600 for p in parts)
    assert parts[0].endswith(".") and " ".join(parts) == text
    assert split_text("short") == ["short"]
    assert split_text("x" * 3300) == ["x" * 1600, "x" * 1600, "x" * 100]


class Phone:
    """Twilio's side of the daemon: signed webhooks in, the emulator for REST."""

    def __init__(
        self, daemon: DaemonProcess, emulator: TwilioEmulator, http: aiohttp.ClientSession
    ) -> None:
        self.daemon, self.emulator, self.http = daemon, emulator, http
        self.sids = 0

    async def post(
        self,
        path: str,
        params: dict[str, str],
        *,
        token: str | None = None,
        signed: bool = True,
        data: Any = None,
        headers: dict[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        url = f"{self.daemon.url}{path}"
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if signed:
            hdrs["X-Twilio-Signature"] = sign(token or self.emulator.auth_token, url, params)
        async with self.http.post(url, data=params if data is None else data, headers=hdrs) as resp:
            await resp.read()
            return resp

    async def sms(
        self, sender: str, body: str, sid: str | None = None, token: str | None = None, **extra: str
    ) -> aiohttp.ClientResponse:
        self.sids += 1
        return await self.post(
            "/twilio/sms",
            {
                "MessageSid": sid or f"SM{self.sids:032x}",
                "AccountSid": self.emulator.account_sid,
                "From": sender,
                "To": OUR_NUMBER,
                "Body": body,
                "NumMedia": "0",
                **extra,
            },
            token=token,
        )


@pytest.fixture
async def phone(
    tmp_path: Path, redis_server: RedisServer, twilio_emulator: TwilioEmulator
) -> AsyncIterator[Phone]:
    port = free_port()
    config = write_config(
        tmp_path / "router.yaml",
        redis_server.url,
        port,
        **{
            "http.public_url": f"http://127.0.0.1:{port}",
            "channels.twilio": {
                "enabled": True,
                "account_sid": twilio_emulator.account_sid,
                "auth_token": {"env": "TWILIO_AUTH_TOKEN"},
                "numbers": [OUR_NUMBER],
                "api_base_url": twilio_emulator.base_url,
                "voice": {"transcription_wait": "2s"},
            },
            "routing": {
                "languages": ["en", "hi", "lv", "ru"],
                "default_language": "en",
                "default_queue": "general",
            },
            "teams": {"india": {"languages": ["hi", "en"]}, "latvia": {"languages": ["lv", "ru"]}},
            "queues": {
                "support-in": {"team": "india"},
                "support-lv": {"team": "latvia"},
                "general": {},
            },
            "rules": [],
        },
    )
    daemon = DaemonProcess(config, port, env={"TWILIO_AUTH_TOKEN": twilio_emulator.auth_token})
    daemon.start()
    async with aiohttp.ClientSession() as http:
        yield Phone(daemon, twilio_emulator, http)
    daemon.stop()


def entries(r: redis_sync.Redis, queue: str) -> list[dict[str, str]]:
    return [f for b in range(4) for _, f in r.xrange(f"router:q:{{{queue}}}:p{b}")]


def work_items(r: redis_sync.Redis) -> list[dict[str, str]]:
    """Every entry of the fixture's queues, with its ``queue``."""
    return [
        {**e, "queue": q} for q in ("general", "support-in", "support-lv") for e in entries(r, q)
    ]


def decision(r: redis_sync.Redis, entry: dict[str, str]) -> dict[str, Any]:
    return json.loads(r.hget(f"router:msg:{{{entry['message_id']}}}", "decision"))


async def until(predicate: Any, timeout: float = 15, what: str = "") -> Any:
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_sms_in_hindi_and_latvian_reach_their_teams_in_their_zones(
    phone: Phone, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    resp = await phone.sms("+919812345678", HINDI, FromCountry="IN")
    assert resp.status == 200 and resp.content_type == "text/xml"
    assert (await phone.sms("+37129123456", LATVIAN)).status == 200
    (hi,) = await until(lambda: entries(r, "support-in"), what="Hindi routed")
    (lv,) = await until(lambda: entries(r, "support-lv"), what="Latvian routed")
    d = decision(r, hi)
    assert (hi["channel"], d["language"], d["timezone"], d["country"]) == (
        "sms",
        "hi",
        "Asia/Kolkata",
        "IN",
    )
    d = decision(r, lv)
    assert (d["language"], d["timezone"], d["timezone_source"], d["country"]) == (
        "lv",
        "Europe/Riga",
        "phone",
        "LV",
    )
    # each new conversation got an acknowledgement in its language, from our number
    sent = await until(
        lambda: len(phone.emulator.messages) >= 2 and phone.emulator.messages,
        what="acknowledgements sent",
    )
    by_to = {m["to"]: m for m in sent}
    assert by_to["+919812345678"]["from"] == OUR_NUMBER
    assert "धन्यवाद" in by_to["+919812345678"]["body"] or "संदेश" in by_to["+919812345678"]["body"]
    assert "ziņ" in by_to["+37129123456"]["body"]


async def test_forged_missing_replayed_huge_and_malformed_requests(
    phone: Phone, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    forged = await phone.sms("+919812345678", "hi", token="not-the-token")
    assert forged.status == 403
    unsigned = await phone.post(
        "/twilio/sms", {"MessageSid": "SMx", "From": "+919812345678", "Body": "hi"}, signed=False
    )
    assert unsigned.status == 403
    odd = {"MessageSid": "SMy", "From": "+919812345678", "Body": "hi"}
    not_ascii = await phone.post(
        "/twilio/sms", odd, signed=False, headers={"X-Twilio-Signature": "é" * 28}
    )
    assert not_ascii.status == 403
    # header bytes that are not UTF-8 at all (aiohttp cannot send them: a raw request)
    host, port = phone.daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    body = b"MessageSid=SMz&From=%2B919812345678&Body=hi"
    writer.write(
        b"POST /twilio/sms HTTP/1.1\r\nHost: x\r\nX-Twilio-Signature: \xff\xfe\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert (await reader.readline()).startswith(b"HTTP/1.1 403")
    writer.close()
    # Twilio's back end sometimes signs the URL without its port: accepted too
    params = {**odd, "MessageSid": "SM" + "b" * 32, "Body": "signed without the port"}
    signature = sign(phone.emulator.auth_token, "http://127.0.0.1/twilio/sms", params)
    no_port = await phone.post(
        "/twilio/sms", params, signed=False, headers={"X-Twilio-Signature": signature}
    )
    assert no_port.status == 200
    # a Twilio retry of one message: stored once
    for _ in range(3):
        assert (await phone.sms("+919812345678", "same one", sid="SM" + "a" * 32)).status == 200
    huge = await phone.sms("+919812345678", "x" * (2 * 1024 * 1024))
    assert huge.status == 413
    garbage = await phone.post(
        "/twilio/sms", {}, data=b"\xff\xfe%%%=&&=", headers={"Content-Type": "text/plain"}
    )
    assert garbage.status == 400
    no_sid = await phone.post("/twilio/sms", {"From": "+919812345678", "Body": "x"})
    assert no_sid.status == 400
    ok = await phone.sms("+37129123456", LATVIAN)
    assert ok.status == 200  # still serving
    await until(lambda: entries(r, "support-lv"), what="routed after the bad requests")
    # both from one number: one conversation, one work item holding both messages
    (item,) = await until(
        lambda: entries(r, "support-in") + entries(r, "general"), what="both routed"
    )
    conv = f"router:conv:{{{item['conversation_id']}}}"
    await until(lambda: r.hget(conv, "item_message_count") == "2", what="both routed")
    texts = [
        r.hget(f"router:msg:{{{f['message_id']}}}", "text")
        for _, f in r.xrange(f"{conv}:timeline")
        if f.get("direction") == "in"
    ]
    assert sorted(texts) == ["same one", "signed without the port"]
    assert phone.daemon.events("twilio_signature_rejected")


async def test_voicemail_with_transcription_is_a_call_back_task(
    phone: Phone, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    call = {
        "CallSid": "CA" + "1" * 32,
        "From": "+919812345678",
        "To": OUR_NUMBER,
        "CallStatus": "ringing",
        "FromCountry": "IN",
    }
    resp = await phone.post("/twilio/voice", call)
    assert resp.status == 200
    async with phone.http.post(
        f"{phone.daemon.url}/twilio/voice",
        data=call,
        headers={
            "X-Twilio-Signature": sign(
                phone.emulator.auth_token, f"{phone.daemon.url}/twilio/voice", call
            )
        },
    ) as again:
        twiml = await again.text()
    assert '<Say language="hi-IN">' in twiml and "कॉल करने के लिए धन्यवाद" in twiml
    assert "GMT+05:30" in twiml  # the call-back time, in the caller's local time
    assert 'transcribe="true"' in twiml and "/twilio/voice/transcription" in twiml
    recording = "https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1"
    assert (
        await phone.post(
            "/twilio/voice/recorded", {**call, "RecordingUrl": recording, "RecordingDuration": "14"}
        )
    ).status == 200
    assert (
        await phone.post("/twilio/voice/status", {**call, "CallStatus": "completed"})
    ).status == 204
    assert entries(r, "support-in") == []  # waits for its transcription
    assert (
        await phone.post(
            "/twilio/voice/transcription",
            {
                **call,
                "TranscriptionStatus": "completed",
                "RecordingUrl": recording,
                "TranscriptionText": "मेरा ऑर्डर अभी तक नहीं आया, कृपया मुझे वापस कॉल करें",
            },
        )
    ).status == 204
    (task,) = await until(lambda: entries(r, "support-in"), what="voicemail routed")
    msg = r.hgetall(f"router:msg:{{{task['message_id']}}}")
    assert task["channel"] == "voice" and msg["source_id"] == call["CallSid"]
    assert msg["text"].startswith("मेरा ऑर्डर") and decision(r, task)["language"] == "hi"
    assert json.loads(msg["meta"])["call_sid"] == call["CallSid"]
    assert json.loads(msg["attachments"])[0]["url"] == recording


async def test_voicemail_without_transcription_and_missed_call(
    phone: Phone, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    silent = {"CallSid": "CA" + "2" * 32, "From": "+37129123456", "To": OUR_NUMBER}
    await phone.post(
        "/twilio/voice/recorded",
        {**silent, "RecordingUrl": "https://x/RE2", "RecordingDuration": "9"},
    )
    missed = {
        "CallSid": "CA" + "3" * 32,
        "From": "+37129123457",
        "To": OUR_NUMBER,
        "CallStatus": "completed",
    }
    assert (await phone.post("/twilio/voice/status", missed)).status == 204
    # the transcription never comes: after transcription_wait it is routed with a note
    tasks = await until(
        lambda: len(entries(r, "support-lv")) == 2 and entries(r, "support-lv"),
        timeout=30,
        what="voicemail and missed call routed",
    )
    notes = sorted(
        json.loads(r.hget(f"router:msg:{{{t['message_id']}}}", "meta"))["note"] for t in tasks
    )
    assert notes == [
        "Missed call, no voicemail: please call back.",
        "Voicemail without a transcription: listen to the recording, then call back.",
    ]
    # no words from the caller: their number's country gave the language (Latvian)
    assert {decision(r, t)["language"] for t in tasks} == {"lv"}


async def test_replies_status_callbacks_consent_and_whatsapp_window(
    phone: Phone, redis_server: RedisServer, tmp_path: Path
) -> None:
    r = redis_server.client()
    em = phone.emulator
    await phone.sms("+919812345678", HINDI)
    (entry,) = await until(lambda: entries(r, "support-in"), what="routed")
    conv = entry["conversation_id"]
    await until(lambda: len(em.messages) == 1, what="the acknowledgement")
    config = phone.daemon.config
    long_reply = "Your order has shipped today. " * 70
    out = cli(config, "reply", conv, "--text", long_reply, "--agent", "asha", "--json")
    assert out.returncode == 0, out.stderr
    outbox_id = json.loads(out.stdout)["outbox_id"]
    await until(lambda: len(em.messages) == 3, what="the reply, in two parts")
    parts = em.messages[1:]
    assert all(m["to"] == "+919812345678" and m["from"] == OUR_NUMBER for m in parts)
    assert " ".join(m["body"] for m in parts) == long_reply.strip()
    delivery = await until(
        lambda: (
            r.hget(f"router:delivery:{{{outbox_id}}}", "status") == "sent"
            and r.hgetall(f"router:delivery:{{{outbox_id}}}")
        ),
        what="sent",
    )
    assert delivery["provider_id"] == ",".join(m["sid"] for m in parts)
    # Twilio reports delivery through the signed status callback
    assert await em.send_status(parts[0]["sid"], "delivered") == 204
    assert r.hget(f"router:delivery:{{{outbox_id}}}", "status") == "delivered"

    # STOP: recorded on the profile; nothing is sent any more, not even an acknowledgement
    await phone.sms("+919812345678", "STOP")
    customer = entry["customer_id"]
    await until(
        lambda: r.hget(f"router:customer:{{{customer}}}", "consent_phone") == "opted_out",
        what="opt-out recorded",
    )
    out = cli(config, "reply", conv, "--text", "Are you still there?", "--json")
    stopped = json.loads(out.stdout)["outbox_id"]
    await until(
        lambda: r.hget(f"router:delivery:{{{stopped}}}", "status") == "failed", what="refused"
    )
    assert "opted out" in r.hget(f"router:delivery:{{{stopped}}}", "last_error")
    assert len(em.messages) == 3
    await phone.sms("+919812345678", "START")
    await until(
        lambda: r.hget(f"router:customer:{{{customer}}}", "consent_phone") == "opted_in",
        what="opt-in recorded",
    )
    cli(config, "reply", conv, "--text", "Welcome back")
    await until(lambda: len(em.messages) == 4, what="sent again after START")

    # WhatsApp: replies go out as WhatsApp inside the 24-hour window, refused outside it
    await phone.sms("whatsapp:+37129123456", LATVIAN, ProfileName="Ilze")
    (wa,) = await until(lambda: entries(r, "support-lv"), what="WhatsApp routed")
    assert wa["channel"] == "whatsapp"
    await until(
        lambda: any(m["to"] == "whatsapp:+37129123456" for m in em.messages),
        what="WhatsApp acknowledgement",
    )
    r.hset(f"router:conv:{{{wa['conversation_id']}}}", "last_inbound_at", "1000")
    out = cli(config, "reply", wa["conversation_id"], "--text", "Labdien!", "--json")
    late = json.loads(out.stdout)["outbox_id"]
    await until(
        lambda: r.hget(f"router:delivery:{{{late}}}", "status") == "failed",
        what="refused outside the window",
    )
    assert "24-hour customer-care window" in r.hget(f"router:delivery:{{{late}}}", "last_error")


async def test_twilio_errors_are_retried_or_refused(
    phone: Phone, redis_server: RedisServer
) -> None:
    r = redis_server.client()
    em = phone.emulator
    em.reject(to="+37129123456", code=21610)  # Twilio: unsubscribed recipient
    await phone.sms("+37129123456", LATVIAN)
    (entry,) = await until(lambda: entries(r, "support-lv"), what="routed")
    dead = await until(lambda: r.xrange("router:deadletter"), what="dead letter")
    assert "Twilio error 21610" in dead[0][1]["reason"]
    em.clear_faults()
    em.fail_next(status=503, times=1)
    out = cli(phone.daemon.config, "reply", entry["conversation_id"], "--text", "Paldies", "--json")
    oid = json.loads(out.stdout)["outbox_id"]
    d = await until(
        lambda: (
            r.hget(f"router:delivery:{{{oid}}}", "status") == "sent"
            and r.hgetall(f"router:delivery:{{{oid}}}")
        ),
        what="sent after a retry",
    )
    assert d["attempts"] == "2"


async def test_media_count_and_recording_duration_are_parsed_strictly(
    phone: Phone, redis_server: RedisServer
) -> None:
    """Issue 14: a signed ``NumMedia=abc`` gave a 500, and ``NumMedia=5000000``
    held the event loop for 0.6 s looping over the caller's count."""
    r = redis_server.client()
    bad = {"abc": "abc", "huge": "5000000", "eleven": "11", "negative": "-1", "spaced": " 1_0 "}
    for name, value in bad.items():
        resp = await phone.sms("+37129123456", f"media {name}", NumMedia=value)
        assert resp.status == 400, (name, resp.status)
    refused = phone.daemon.events("twilio_webhook_refused")
    assert len(refused) == len(bad) and all("NumMedia" in e["reason"] for e in refused)
    assert "+37129123456" not in phone.daemon.log()  # the reason names the field, not the sender
    silly = {"CallSid": "CA" + "9" * 32, "From": "+37129123456", "To": OUR_NUMBER}
    for duration in ("abc", "99999999999999999999"):
        resp = await phone.post(
            "/twilio/voice/recorded",
            {**silly, "RecordingUrl": "https://x/RE9", "RecordingDuration": duration},
        )
        assert resp.status == 400
    # Twilio's most: ten media; a MediaUrl beyond the count is not an attachment
    media = {f"MediaUrl{i}": f"https://api.twilio.com/media/ME{i}" for i in range(11)}
    types = {f"MediaContentType{i}": "image/jpeg" for i in range(11)}
    ok = await phone.sms("+37129123456", "", NumMedia="10", **media, **types)
    assert ok.status == 200
    queues = ("support-in", "support-lv", "general")
    (entry,) = await until(
        lambda: [e for q in queues for e in entries(r, q)], what="the MMS routed"
    )
    assert entry["channel"] == "mms"
    stored = r.hgetall(f"router:msg:{{{entry['message_id']}}}")
    urls = [a["url"] for a in json.loads(stored["attachments"])]
    assert urls == [f"https://api.twilio.com/media/ME{i}" for i in range(10)]


async def test_a_flood_of_forged_webhooks_logs_a_few_lines_and_counts_them_all(
    phone: Phone,
) -> None:
    """Issue 14: ``twilio_signature_rejected`` was one WARNING per request."""
    semaphore = asyncio.Semaphore(20)

    async def forged(i: int) -> int:
        async with semaphore:
            resp = await phone.sms("+37129123456", f"forged {i}", token="not-the-token")
            return resp.status

    statuses = await asyncio.gather(*(forged(i) for i in range(1000)))
    assert set(statuses) == {403}
    lines = phone.daemon.events("twilio_signature_rejected")
    # the first at once, then at most one a minute (the test takes seconds)
    assert 1 <= len(lines) <= 2, len(lines)
    assert lines[0]["refused_total"] == 1 and lines[0]["level"] == "warning"
    # every refusal is counted on /metrics
    async with phone.http.get(f"{phone.daemon.url}/metrics") as resp:
        metrics = await resp.text()
    assert 'router_adapter_state{adapter="twilio",name="signatures_rejected"} 1000.0' in metrics
    assert (await phone.sms("+37129123456", "still served")).status == 200


def test_refusal_log_is_bounded_and_keeps_the_count() -> None:
    from router.logs import RefusalLog

    class Lines:
        def __init__(self) -> None:
            self.lines: list[tuple[str, dict[str, Any]]] = []

        def warning(self, event: str, **fields: Any) -> None:
            self.lines.append((event, fields))

    now = [0.0]
    logger = Lines()
    refusals = RefusalLog(logger, "refused", every=60, clock=lambda: now[0])
    for i in range(10_000):  # 100 a second for 100 s
        now[0] = i / 100
        refusals.refused(path="/twilio/sms")
    assert refusals.total == 10_000
    assert len(logger.lines) == 2  # at 0 s and at 60 s
    assert [f["refused_since_last_line"] for _, f in logger.lines] == [1, 6000]
    assert logger.lines[-1][1]["refused_total"] == 6001


async def test_a_follow_up_on_another_channel_joins_the_waiting_work_item(
    phone: Phone, redis_server: RedisServer
) -> None:
    """One conversation, one work item: an API message, then SMS follow-ups
    from the same customer join its queue entry (one item, one owner, one due
    time) until an agent acks it; the next message makes a new one."""
    r = redis_server.client()
    ana_phone = "+351912345678"
    body = {
        "from": "ana@example.com",
        "text": "My order 1234 has not arrived",
        "id": "crm-1",
        "identities": [ana_phone],
    }
    url = f"{phone.daemon.url}/v1/messages"
    async with phone.http.post(url, json=body, headers=API_AUTH) as resp:
        assert resp.status == 202
    (first,) = await until(lambda: work_items(r), what="the API message routed")
    queue = first["queue"]
    conv_key = f"router:conv:{{{first['conversation_id']}}}"
    # a follow-up by SMS while it waits: no second entry, raised a band, same due time
    assert (await phone.sms(ana_phone, "Any news on my order?")).status == 200
    await until(lambda: r.hget(conv_key, "item_message_count") == "2", what="the SMS joined")
    (waiting,) = work_items(r)
    assert waiting["message_id"] == first["message_id"]
    assert waiting["due_at"] == first["due_at"] and waiting["priority"] == "high"
    assert waiting["queue"] == queue and r.xlen(f"router:q:{{{queue}}}:p1") == 1
    # alice takes it; a third message joins it in her hands, bob gets nothing
    config = phone.daemon.config
    out = cli(config, "queue", "pull", queue, "--agent", "alice", "--json")
    assert out.returncode == 0, out.stderr
    pulled = json.loads(out.stdout)
    assert pulled["message_id"] == first["message_id"] and pulled["message_count"] == "2"
    assert pulled["conversation_id"] == first["conversation_id"]
    assert (await phone.sms(ana_phone, "Hello??")).status == 200
    await until(lambda: r.hget(conv_key, "item_message_count") == "3", what="the 3rd joined")
    assert len(work_items(r)) == 1
    assert r.hget(conv_key, "owner") == "alice"
    assert cli(config, "queue", "pull", queue, "--agent", "bob").returncode == 3
    assert [e["joined_work_item"] for e in phone.daemon.events("routed")[1:]] == [True, True]
    # alice finishes it: the next message is a new work item
    out = cli(config, "queue", "ack", queue, pulled["entry_id"], "--agent", "alice")
    assert out.returncode == 0, out.stderr
    assert (await phone.sms(ana_phone, "Thanks, got it")).status == 200
    (new,) = await until(lambda: work_items(r), what="a new work item")
    assert new["message_id"] != first["message_id"]
    assert new["conversation_id"] == first["conversation_id"]
    assert r.hget(conv_key, "item_message_count") == "1"
