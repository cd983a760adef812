"""SMS, MMS, WhatsApp and voice through Twilio: signed webhooks in, REST out.

Inbound
    ``POST /twilio/sms``: a message (SMS, MMS, or WhatsApp when ``From`` is
    ``whatsapp:+...``). ``POST /twilio/voice``: an incoming call, answered
    with TwiML in the caller's language (a greeting with an honest "we will
    call you back by ...", then a voicemail with transcription). The
    recording and transcription callbacks turn the voicemail into one
    call-back task; a call that ends without a voicemail leaves a
    missed-call task. Every request's ``X-Twilio-Signature`` is checked with
    the twilio library's RequestValidator against the public URL Twilio
    used (``http.public_url`` + path): forged or unsigned requests get 403
    and store nothing. The answer comes only once the message is durably
    stored (503 otherwise, so Twilio retries); a retried webhook (same
    MessageSid / CallSid) is a duplicate, not a new message.

Outbound
    Replies and acknowledgements go out with the twilio REST client (async),
    from the number the customer wrote to (or a configured sender), split
    into parts of at most 1,600 characters; a WhatsApp reply outside the
    24-hour customer-care window is refused with the reason. Status
    callbacks (``POST /twilio/sms/status``) update the delivery record.

STOP / UNSUBSCRIBE / CANCEL / END / QUIT and START are recorded as consent
on the customer's profile (``meta.consent``); nothing is ever sent to an
opted-out number (the outbox checks).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse
from twilio.twiml.voice_response import VoiceResponse

from router.adapters.base import AdapterContext, Channel, PermanentSendError, run_until
from router.config import TwilioSettings
from router.ingest import StoreUnavailable
from router.logs import Outage, RefusalLog
from router.model import Hints, InboundMessage, OutboundMessage
from router.profiles.identity import normalise_phone

log = structlog.get_logger("router.twilio")

SMS_LIMIT = 1600  # Twilio's limit for one message body (it concatenates segments)
CONSENT = {
    **dict.fromkeys(("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"), "stop"),
    **dict.fromkeys(("START", "YES", "UNSTOP"), "start"),
    **dict.fromkeys(("HELP", "INFO"), "help"),
}
SID_TTL = 7 * 86400  # how long a sent message's sid maps to its outbox id
MAX_MEDIA = 10  # Twilio sends at most 10 media per message (MediaUrl0..MediaUrl9)
MAX_RECORDING_SECONDS = 4 * 3600  # Twilio records at most 4 hours
# Forged or unsigned webhooks: the first is logged, then at most one line this often
# (with how many were refused since), so a flood cannot flood the journal.
REFUSALS_LOG_EVERY = 60.0


#: The answer to an SMS webhook (replies go through the REST API): built once.
EMPTY_MESSAGING_RESPONSE = str(MessagingResponse())


def twiml(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/xml")


class BadParameter(ValueError):
    """A signed webhook parameter that is not what Twilio sends; the text says why."""


def whole_number(params: dict[str, str], name: str, most: int) -> int:
    """``params[name]`` as a whole number from 0 to ``most`` (absent or empty: 0).

    Strict: only ASCII digits (``int()`` also takes ``" 1_0 "`` and Arabic-Indic digits),
    at most as many as ``most`` has, so nothing is converted at length.
    """
    raw = params.get(name, "")
    if not raw:
        return 0
    if len(raw) > len(str(most)) or not (raw.isascii() and raw.isdigit()) or int(raw) > most:
        raise BadParameter(f"{name} must be a whole number from 0 to {most}, not {raw[:20]!r}")
    return int(raw)


def split_text(text: str, limit: int = SMS_LIMIT) -> list[str]:
    """Cut a long reply into parts of at most ``limit`` characters, at a
    paragraph, sentence or word boundary when there is one."""
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), -1)
        if cut < limit // 2:
            cut = max(window.rfind(". "), window.rfind("! "), window.rfind("? "))
            cut = cut + 1 if cut >= limit // 2 else -1
        if cut < limit // 2:
            cut = window.rfind(" ")
        if cut < limit // 2:
            cut = limit
        parts.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        parts.append(rest)
    return parts


class TwilioAdapter:
    """The webhook side: messages, calls, voicemails and status callbacks."""

    name = "twilio"

    def __init__(
        self,
        settings: Callable[[], TwilioSettings],
        ctx: AdapterContext,
        public_url: Callable[[], str | None],
    ) -> None:
        self._settings = settings
        self.public_url = public_url
        self.ctx = ctx
        self.signature_refusals = RefusalLog(
            log, "twilio_signature_rejected", every=REFUSALS_LOG_EVERY
        )

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/twilio/sms", self.sms),
            web.post("/twilio/sms/status", self.sms_status),
            web.post("/twilio/voice", self.voice),
            web.post("/twilio/voice/recorded", self.voice_recorded),
            web.post("/twilio/voice/transcription", self.voice_transcription),
            web.post("/twilio/voice/status", self.voice_status),
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Webhooks come through the routes; this sweeps late voicemails until ``stop``."""
        await run_until(stop, {"twilio-voicemails": self._sweep_voicemails()})

    def ready(self) -> tuple[bool, str]:
        return True, "ok"

    def gauges(self) -> dict[str, float]:
        """For /metrics (``router_adapter_state{adapter="twilio"}``): webhooks refused
        for a forged or missing signature since start (the log lines are throttled)."""
        return {"signatures_rejected": float(self.signature_refusals.total)}

    @property
    def settings(self) -> TwilioSettings:
        return self._settings()

    # -- the door ------------------------------------------------------------------
    async def _form(self, request: web.Request) -> dict[str, str] | web.Response:
        """The request's parameters if Twilio signed them, else the error answer."""
        tw = self.settings
        if not tw.enabled or tw.auth_token is None:
            return web.Response(status=404, text="twilio channel is not enabled")
        if request.content_type != "application/x-www-form-urlencoded":
            return web.Response(status=400, text="expected a form-encoded body")
        try:
            form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="body too large")
        except (ValueError, UnicodeDecodeError) as exc:
            return web.Response(status=400, text=f"malformed form body: {exc}")
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        url = (self.public_url() or "").rstrip("/") + request.path_qs
        signature = request.headers.get("X-Twilio-Signature", "")
        validator = RequestValidator(tw.auth_token.value)
        if not signature or not (
            # the URL as configured: one HMAC (the common case, ~9 us)
            hmac.compare_digest(
                validator.compute_signature(url, params).encode(),
                signature.encode("utf-8", "surrogateescape"),  # (undecodable header bytes)
            )
            # else the library's whole check: the URL with and without its port,
            # as Twilio's back end signs either (~26 us)
            or validator.validate(url, params, signature)
        ):
            self.signature_refusals.refused(
                path=request.path,
                signed=bool(signature),
                action="answered 403 and stored nothing; if this is Twilio, check that "
                "http.public_url is the URL configured on the number",
            )
            return web.Response(status=403, text="invalid X-Twilio-Signature")
        return params

    async def _ingest(self, message: InboundMessage) -> web.Response | None:
        """None once stored (or known already), else the error answer."""
        if not self.ctx.accepting():
            return web.Response(status=503, text="shutting down", headers={"Retry-After": "5"})
        try:
            result = await self.ctx.ingest(message)
        except StoreUnavailable:  # (logged and counted by the ingestor)
            return web.Response(status=503, text="cannot store now", headers={"Retry-After": "5"})
        log.debug("twilio_stored", message_id=result.id, duplicate=result.duplicate)
        return None

    @staticmethod
    def _bad_parameter(request: web.Request, sid: str, exc: BadParameter) -> web.Response:
        """A signed request Twilio would never send: 400 with the reason, one log line
        (signed, so only Twilio or a holder of the auth token can send one)."""
        log.warning("twilio_webhook_refused", path=request.path, sid=sid[:64], reason=str(exc))
        return web.Response(status=400, text=str(exc))

    # -- messages ------------------------------------------------------------------
    async def sms(self, request: web.Request) -> web.Response:
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        sid = params.get("MessageSid") or params.get("SmsSid")
        sender = params.get("From", "")
        if not sid or not sender:
            return web.Response(status=400, text="MessageSid and From are required")
        phone = normalise_phone(sender)
        if phone is None:
            return web.Response(status=400, text="From is not a phone number")
        try:
            # a count the caller gives: bounded before anything iterates over it
            media = whole_number(params, "NumMedia", MAX_MEDIA)
        except BadParameter as exc:
            return self._bad_parameter(request, sid, exc)
        channel = (
            "whatsapp"
            if sender.lower().startswith("whatsapp:")
            else ("mms" if media > 0 else "sms")
        )
        body = params.get("Body", "")
        meta = {"our_address": params.get("To", ""), "provider": "twilio"}
        consent = CONSENT.get(body.strip().upper().rstrip(".!"))
        if consent in ("stop", "start"):
            meta["consent"] = consent
        attachments = [
            {"url": params[f"MediaUrl{i}"], "content_type": params.get(f"MediaContentType{i}", "")}
            for i in range(media)
            if f"MediaUrl{i}" in params
        ]
        message = InboundMessage(
            channel=channel,
            sender=_identity(phone),
            text=body or ("(media)" if attachments else ""),
            source_id=sid,
            display_name=params.get("ProfileName") or None,
            hints=Hints(country=params.get("FromCountry") or None),
            attachments=attachments,
            meta=meta,
        )
        if (err := await self._ingest(message)) is not None:
            return err
        return twiml(EMPTY_MESSAGING_RESPONSE)

    async def sms_status(self, request: web.Request) -> web.Response:
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
        outbox_id = await self.ctx.state.get(f"sid:{sid}") if sid else None
        if outbox_id and status:
            error = None
            if params.get("ErrorCode"):
                error = f"Twilio error {params['ErrorCode']}"
            await self.ctx.report_delivery(outbox_id, status, error)
        return web.Response(status=204)

    # -- calls -------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return (self.public_url() or "").rstrip("/") + path

    async def voice(self, request: web.Request) -> web.Response:
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        voice = self.settings.voice
        response = VoiceResponse()
        if not voice.enabled:
            response.reject()
            return twiml(str(response))
        caller, line = params.get("From", ""), params.get("To", "")
        if self.ctx.voice_prompt is not None:
            prompt = await self.ctx.voice_prompt(caller, line)
            say: dict[str, Any] = {"language": prompt.locale}
            if prompt.language in voice.voices:
                say["voice"] = voice.voices[prompt.language]
            response.say(prompt.text, **say)
        response.record(
            max_length=int(voice.max_length),
            play_beep=True,
            transcribe=True,
            transcribe_callback=self._url("/twilio/voice/transcription"),
            action=self._url("/twilio/voice/recorded"),
        )
        response.hangup()
        return twiml(str(response))

    async def voice_recorded(self, request: web.Request) -> web.Response:
        """The voicemail is recorded; its transcription follows (or not)."""
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        call = params.get("CallSid", "")
        url = params.get("RecordingUrl", "")
        try:
            duration = whole_number(params, "RecordingDuration", MAX_RECORDING_SECONDS)
        except BadParameter as exc:
            return self._bad_parameter(request, call, exc)
        if call and url and duration >= 1:
            await self.ctx.state.put(
                f"voicemail:{call}",
                {
                    "from": params.get("From", ""),
                    "to": params.get("To", ""),
                    "url": url,
                    "duration": duration,
                    "at": time.time(),
                    "country": params.get("FromCountry") or params.get("CallerCountry"),
                },
                ttl=self.settings.voice.transcription_wait * 4,
            )
        response = VoiceResponse()
        response.hangup()
        return twiml(str(response))

    async def voice_transcription(self, request: web.Request) -> web.Response:
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        call = params.get("CallSid", "")
        if not call:
            return web.Response(status=400, text="CallSid is required")
        pending = await self.ctx.state.get(f"voicemail:{call}") or {
            "from": params.get("From", ""),
            "to": params.get("To", ""),
            "url": params.get("RecordingUrl", ""),
            "duration": 0,
            "country": None,
        }
        text = (
            params.get("TranscriptionText", "")
            if params.get("TranscriptionStatus") == "completed"
            else ""
        )
        if (err := await self._voicemail(call, pending, text)) is not None:
            return err
        return web.Response(status=204)

    async def voice_status(self, request: web.Request) -> web.Response:
        """The call ended: without a voicemail it is a missed call to return."""
        params = await self._form(request)
        if isinstance(params, web.Response):
            return params
        call = params.get("CallSid", "")
        if not call or params.get("CallStatus") not in (
            "completed",
            "busy",
            "no-answer",
            "failed",
            "canceled",
        ):
            return web.Response(status=204)
        if await self.ctx.state.get(f"voicemail:{call}") is not None:
            return web.Response(status=204)  # the voicemail brings the task
        phone = normalise_phone(params.get("From", ""))
        if phone is None:
            return web.Response(status=204)  # anonymous caller: nobody to call back
        message = InboundMessage(
            channel="voice",
            sender=_identity(phone),
            text="",  # nothing the caller said: their number's country gives the language
            source_id=call,
            hints=Hints(country=params.get("FromCountry") or params.get("CallerCountry")),
            meta={
                "our_address": params.get("To", ""),
                "call_sid": call,
                "kind": "missed_call",
                "note": "Missed call, no voicemail: please call back.",
                "provider": "twilio",
            },
        )
        if (err := await self._ingest(message)) is not None:
            return err
        return web.Response(status=204)

    async def _voicemail(
        self, call: str, pending: dict[str, Any], text: str
    ) -> web.Response | None:
        phone = normalise_phone(pending.get("from") or "")
        if phone is None:
            await self.ctx.state.delete(f"voicemail:{call}")
            return None
        note = (
            "Voicemail: please call back."
            if text.strip()
            else "Voicemail without a transcription: listen to the recording, then call back."
        )
        message = InboundMessage(
            channel="voice",
            sender=_identity(phone),
            # the caller's own words only (they decide the language); ours go in meta
            text=text.strip(),
            source_id=call,
            hints=Hints(country=pending.get("country")),
            attachments=[
                {
                    "url": pending.get("url", ""),
                    "content_type": "audio/x-wav",
                    "duration": pending.get("duration", 0),
                }
            ],
            meta={
                "our_address": pending.get("to", ""),
                "call_sid": call,
                "kind": "voicemail",
                "recording_url": pending.get("url", ""),
                "note": note,
                "provider": "twilio",
            },
        )
        if (err := await self._ingest(message)) is not None:
            return err
        await self.ctx.state.delete(f"voicemail:{call}")
        return None

    async def _sweep_voicemails(self) -> None:
        """Voicemails whose transcription never came are routed without it."""
        # Redis away: try again next round, logged through the outage throttle
        outage = Outage(log, "voicemail_sweep_failed", "voicemail_sweep_resumed")
        while True:
            await asyncio.sleep(min(15.0, max(0.5, self.settings.voice.transcription_wait / 2)))
            try:
                await self.sweep_once(time.time())
            except Exception as exc:
                outage.failed(error=f"{type(exc).__name__}: {exc}")
            else:
                outage.ok()

    async def sweep_once(self, now: float) -> int:
        wait = self.settings.voice.transcription_wait
        done = 0
        for key, pending in await self.ctx.state.items("voicemail:"):
            if now - float(pending.get("at", now)) >= wait:
                if await self._voicemail(key.removeprefix("voicemail:"), pending, "") is None:
                    done += 1
        return done


def _identity(phone: str) -> Any:
    from router.model import Identity

    return Identity("phone", phone)


class TwilioSender:
    """Sends replies on sms, mms, whatsapp (and voice, as a text to the caller)."""

    def __init__(
        self,
        channel: str,
        settings: Callable[[], TwilioSettings],
        ctx: AdapterContext,
        public_url: Callable[[], str | None],
    ) -> None:
        self.channel = channel
        self.settings = settings
        self.public_url = public_url
        self.ctx = ctx
        self._client: Any = None
        self._client_key: tuple[str, str, str] | None = None

    def _twilio(self) -> Any:
        from twilio.http.async_http_client import AsyncTwilioHttpClient
        from twilio.rest import Client

        tw = self.settings()
        assert tw.auth_token is not None
        key = (tw.account_sid, tw.auth_token.value, tw.api_base_url)
        if self._client is None or self._client_key != key:
            client = Client(
                tw.account_sid,
                tw.auth_token.value,
                http_client=AsyncTwilioHttpClient(),
            )
            client.api.base_url = tw.api_base_url.rstrip("/")
            # TWILIO_EDGE / TWILIO_REGION would rewrite the host of api_base_url
            client.edge = client.region = None
            self._client, self._client_key = client, key
        return self._client

    def sender_for(self, message: OutboundMessage, tw: TwilioSettings) -> str | None:
        ours = message.meta.get("our_address", "")
        bare = ours.removeprefix("whatsapp:")
        if bare and (not tw.numbers or bare in {n.removeprefix("whatsapp:") for n in tw.numbers}):
            return bare
        country = message.meta.get("country", "")
        return tw.senders.get(country) or tw.default_sender

    async def send(self, message: OutboundMessage) -> str:
        tw = self.settings()
        public_url = self.public_url()
        if not tw.enabled:
            raise PermanentSendError("the twilio channel is not enabled")
        sender = self.sender_for(message, tw)
        if not sender:
            raise PermanentSendError(
                "no number to send from: set channels.twilio.default_sender or numbers"
            )
        to = message.to
        if message.channel == "whatsapp":
            last = float(message.meta.get("last_inbound_at", 0) or 0)
            if time.time() - last > tw.whatsapp_window:
                raise PermanentSendError(
                    "outside WhatsApp's 24-hour customer-care window (the customer last wrote "
                    f"{(time.time() - last) / 3600:.0f} h ago); a free-form reply is refused: "
                    "send an approved template, or reply on another channel"
                )
            to, sender = f"whatsapp:{to}", f"whatsapp:{sender}"
        client = self._twilio()
        sids = []
        callback = (public_url or "").rstrip("/") + "/twilio/sms/status"
        for part in split_text(message.text):
            try:
                # twilio's async client has no timeout of its own
                async with asyncio.timeout(tw.request_timeout):
                    sent = await client.messages.create_async(
                        to=to,
                        from_=sender,
                        body=part,
                        status_callback=callback if public_url else None,
                    )
            except TwilioRestException as exc:
                if exc.status in (400, 401, 403, 404):
                    raise PermanentSendError(f"Twilio error {exc.code}: {exc.msg}") from None
                raise RuntimeError(f"Twilio answered {exc.status}: {exc.msg}") from None
            sids.append(sent.sid)
            await self.ctx.state.put(f"sid:{sent.sid}", message.id, ttl=SID_TTL)
        return ",".join(sids)

    async def close(self) -> None:
        if self._client is not None:
            http = self._client.http_client
            with contextlib.suppress(Exception):
                await http.close()


TWILIO_CHANNELS = ("sms", "mms", "whatsapp", "voice")


def factory(
    settings: Callable[[], TwilioSettings],
    ctx: AdapterContext,
    public_url: Callable[[], str | None],
) -> Channel[TwilioSettings]:
    """Twilio: SMS, MMS, WhatsApp and voice webhooks in; messages out by its REST API."""
    senders = {
        channel: TwilioSender(channel, settings, ctx, public_url) for channel in TWILIO_CHANNELS
    }
    return Channel(
        adapter=TwilioAdapter(settings, ctx, public_url),
        senders=dict(senders),
        closers=[s.close for s in senders.values()],
    )
