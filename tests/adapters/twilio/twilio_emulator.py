"""A local Twilio REST API emulator the *real* twilio client can be pointed at.

It speaks the wire format of the parts of the Twilio API the daemon uses:

* ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded To, From or
  MessagingServiceSid, Body, MediaUrl..., StatusCallback), HTTP basic auth
  ``AccountSid:AuthToken`` (or an API key ``SK...:secret`` from ``api_keys``), answers
  201 with a JSON Message resource shaped like Twilio's;
* ``GET /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json``: the stored resource;
* errors use Twilio's legacy JSON error body ``{"code", "message", "more_info",
  "status"}``, which twilio-python turns into ``TwilioRestException``;
* status callbacks (``send_status``) and any other webhook (``post_webhook``) are POSTed
  form-encoded and signed with ``X-Twilio-Signature`` exactly like Twilio does
  (HMAC-SHA1 of the URL as configured + sorted params, keyed with the auth token).

Redirecting the real client (see ``TwilioEmulator.client``): ``client.api.base_url``
is the only thing to change. ``Messages.create_async`` builds its URL as
``Domain.absolute_url(Version.relative_uri(uri))`` = ``api.base_url`` + ``/2010-04-01``
+ ``/Accounts/{sid}/Messages.json``; ``ClientBase.get_hostname`` leaves it untouched as
long as ``client.edge`` and ``client.region`` are unset (they are read from
``TWILIO_EDGE``/``TWILIO_REGION`` too, so they are cleared explicitly). Other domains
(``messaging``, ``verify``...) still point at ``*.twilio.com``; the clients made here
carry an aiohttp trace hook that refuses any request not addressed to the emulator.

Caveats of twilio's ``AsyncTwilioHttpClient`` (twilio 9.13, aiohttp 3.14):

* it creates its ``aiohttp.ClientSession`` in ``__init__``, so it must be built while
  an event loop is running, and the session must be closed (``await
  client.http_client.close()``); ``stop()`` closes every client made by ``client()``;
* it passes ``timeout=None`` explicitly to ``session.request`` for every API call,
  which aiohttp turns into ``ClientTimeout(total=None)``: neither the constructor's
  ``timeout=`` nor a session-level ``ClientTimeout`` applies. Only an asyncio-level
  timeout (``asyncio.timeout`` / ``wait_for``) bounds a hanging Twilio call.

Use from tests: ``from tests.adapters.twilio.twilio_emulator import twilio_emulator`` in a test module
(or in ``tests/conftest.py`` to make the fixture global), then take ``twilio_emulator``
as a fixture argument.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest_asyncio
from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

API_VERSION = "2010-04-01"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Error texts as Twilio returns them (https://www.twilio.com/docs/api/errors).
ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource {path} was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number {to} is not a valid phone number.",
    21602: "Message body is required.",
    21603: "A 'From' or 'MessagingServiceSid' parameter is required to send a message.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}

# GSM 03.38 basic set and extension table (extension chars cost two septets).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXT = frozenset("^{}\\[~]|€\f")

# Keys of a `messages` record that are not part of the wire resource.
_EXTRA_KEYS = frozenset({"status_callback", "media_urls", "form", "callbacks"})


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def sign(auth_token: str, url: str, params: dict[str, str] | Any) -> str:
    """``X-Twilio-Signature`` for a webhook POST to ``url`` carrying ``params``."""
    return str(RequestValidator(auth_token).compute_signature(url, params))


def twilio_error(status: int, code: int, message: str | None = None, **fmt: str) -> dict[str, Any]:
    """Twilio's legacy JSON error body (``fmt`` fills placeholders of the default text)."""
    default = ERROR_MESSAGES.get(code, "Error").format_map(_Blank(fmt))
    text = message if message is not None else default
    return {
        "code": code,
        "message": text,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def num_segments(body: str) -> int:
    """SMS segment count: GSM-7 (160, or 153 per part) else UCS-2 (70, or 67 per part)."""
    if not body:
        return 1
    if all(c in _GSM_BASIC or c in _GSM_EXT for c in body):
        units = sum(2 if c in _GSM_EXT else 1 for c in body)
        single, multi = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi = 70, 67
    return 1 if units <= single else -(-units // multi)


def _now_rfc2822() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


@dataclass
class _Fault:
    kind: str  # "error" | "slow" | "drop"
    remaining: int | None  # None: forever
    status: int = 500
    body: dict[str, Any] | None = None
    raw: str | None = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0
    after_create: bool = False


@dataclass
class _Rejection:
    to: str | None
    from_: str | None
    status: int
    body: dict[str, Any]
    remaining: int | None


class TwilioEmulator:
    """Twilio REST API (Messages) on 127.0.0.1 for the real twilio client."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        port: int = 0,
        webhook_timeout: float = 15.0,
    ) -> None:
        self.account_sid = account_sid or "AC" + uuid.uuid4().hex
        self.auth_token = auth_token or uuid.uuid4().hex
        self.port = port
        self.webhook_timeout = webhook_timeout
        self.api_keys: dict[str, str] = {}  # SK... -> secret, also accepted for basic auth
        self.messages: list[dict[str, Any]] = []  # every created message, in order
        self.requests: list[dict[str, Any]] = []  # every API request received
        self.webhooks: list[dict[str, Any]] = []  # every webhook/callback POSTed
        self.client_urls: list[str] = []  # every URL a client() made here requested
        self._by_sid: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._rejections: list[_Rejection] = []
        self._clients: list[Client] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._closing = asyncio.Event()
        app = web.Application()
        app.router.add_post("/2010-04-01/Accounts/{account}/Messages.json", self._create)
        app.router.add_get("/2010-04-01/Accounts/{account}/Messages/{sid}.json", self._fetch)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.webhook_timeout)
        )

    async def stop(self) -> None:
        self._closing.set()  # releases handlers sleeping in slow_next()
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.http_client.close()  # type: ignore[attr-defined]
        self._clients.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> TwilioEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ client
    def client(
        self,
        *,
        auth_token: str | None = None,
        username: str | None = None,
        account_sid: str | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        guard: bool = True,
    ) -> Client:
        """A real ``twilio.rest.Client`` on ``AsyncTwilioHttpClient`` aimed at the emulator.

        Must be called with an event loop running (the http client opens an aiohttp
        session in its constructor); ``stop()`` closes it. ``timeout`` is handed to
        ``AsyncTwilioHttpClient`` as the daemon would, but twilio ignores it (see the
        module docstring). ``guard`` makes any request to another host fail loudly.
        """
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_client_request)
        if guard:
            trace.on_request_start.append(self._guard_client_request)
        http = AsyncTwilioHttpClient(
            timeout=timeout, max_retries=max_retries, trace_configs=[trace]
        )
        client = Client(
            username or self.account_sid,
            auth_token if auth_token is not None else self.auth_token,
            account_sid=account_sid or self.account_sid,
            http_client=http,
        )
        # edge/region fall back to TWILIO_EDGE/TWILIO_REGION and would make
        # get_hostname() rewrite "127.0.0.1:PORT" as if it were "api.twilio.com".
        client.edge = None
        client.region = None
        client.api.base_url = self.base_url
        self._clients.append(client)
        return client

    async def _on_client_request(self, _session: Any, _ctx: Any, params: Any) -> None:
        self.client_urls.append(str(params.url))

    async def _guard_client_request(self, _session: Any, _ctx: Any, params: Any) -> None:
        url = params.url
        if (url.host, url.port) != ("127.0.0.1", self.port):
            raise RuntimeError(f"twilio client tried to reach {url}, not the emulator")

    # ------------------------------------------------------------------ programming
    def fail_next(
        self,
        status: int = 500,
        times: int | None = 1,
        *,
        code: int | None = None,
        message: str | None = None,
        raw: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` message creations (None: all) with an error.

        The body is Twilio's JSON error (code defaults to 20000 + status, e.g. 20500,
        20503, 20429) unless ``raw`` gives a non-JSON body (e.g. a proxy's HTML 502).
        Nothing is created. ``headers`` e.g. ``{"Retry-After": "1"}``.
        """
        body = twilio_error(status, code if code is not None else 20000 + status, message)
        self._faults.append(_Fault("error", times, status, body, raw, headers))

    def slow_next(
        self, seconds: float, times: int | None = 1, *, after_create: bool = True
    ) -> None:
        """Delay the answer to the next ``times`` message creations by ``seconds``.

        With ``after_create`` (default) the message is created and recorded first, as
        when Twilio accepted a message but the answer came too late: a client that
        times out and retries will create a duplicate. Otherwise the delay happens
        before anything is looked at (the message is still created afterwards if the
        client has not hung up). ``stop()`` cuts pending delays short.
        """
        self._faults.append(_Fault("slow", times, seconds=seconds, after_create=after_create))

    def drop_next(self, times: int | None = 1, *, after_create: bool = False) -> None:
        """Close the connection without an answer (optionally after creating the message)."""
        self._faults.append(_Fault("drop", times, after_create=after_create))

    def reject(
        self,
        to: str | None = None,
        code: int = 21610,
        message: str | None = None,
        status: int = 400,
        *,
        from_: str | None = None,
        times: int | None = None,
    ) -> None:
        """Refuse creations to ``to`` (and/or from ``from_``) with a Twilio error.

        E.g. ``reject(to="+15555550100", code=21610)``: "Attempt to send to unsubscribed
        recipient", status 400. ``times=None`` (default) keeps the rule forever.
        """
        body = twilio_error(status, code, message, to=to or "", path="")
        self._rejections.append(_Rejection(to, from_, status, body, times))

    def clear_faults(self) -> None:
        self._faults.clear()
        self._rejections.clear()

    def message(self, sid: str) -> dict[str, Any]:
        return self._by_sid[sid]

    # ------------------------------------------------------------------ webhooks
    async def post_webhook(
        self,
        url: str,
        params: dict[str, str],
        *,
        auth_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """POST ``params`` form-encoded to ``url``, signed as Twilio signs; the HTTP status.

        ``auth_token`` overrides the signing key (to test a daemon rejecting forgeries).
        Connection errors and the timeout (``webhook_timeout``) propagate.
        """
        assert self._session is not None, "start() the emulator first"
        signature = sign(auth_token or self.auth_token, url, params)
        hdrs = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
            "X-Home-Region": "us1",
            SIGNATURE_HEADER: signature,
            **(headers or {}),
        }
        entry: dict[str, Any] = {"url": url, "params": dict(params), "signature": signature}
        self.webhooks.append(entry)
        async with self._session.post(url, data=params, headers=hdrs) as resp:
            entry["status"] = resp.status
            entry["response"] = await resp.text()
            return resp.status

    async def send_status(
        self,
        sid: str,
        status: str,
        error_code: int | None = None,
        *,
        url: str | None = None,
        auth_token: str | None = None,
    ) -> int:
        """Move message ``sid`` to ``status`` and POST Twilio's status callback for it.

        Returns the HTTP status the callback URL answered. ``url`` overrides (or
        supplies, if the message had none) the StatusCallback URL.
        """
        rec = self._by_sid[sid]
        target = url or rec.get("status_callback")
        if not target:
            raise ValueError(f"message {sid} has no StatusCallback and no url= was given")
        now = _now_rfc2822()
        rec["status"] = status
        rec["date_updated"] = now
        if status in ("sent", "delivered", "undelivered", "read") and rec["date_sent"] is None:
            rec["date_sent"] = now
        if error_code is not None:
            rec["error_code"] = error_code
            rec["error_message"] = ERROR_MESSAGES.get(error_code, "Error")
        params: dict[str, str] = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "From": rec["from"] or "",
            "MessageSid": sid,
            "MessageStatus": status,
            "SmsSid": sid,
            "SmsStatus": status,
            "To": rec["to"],
        }
        if rec["messaging_service_sid"]:
            params["MessagingServiceSid"] = rec["messaging_service_sid"]
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        code = await self.post_webhook(target, params, auth_token=auth_token)
        rec["callbacks"].append({"status": status, "params": params, "answered": code})
        return code

    # ------------------------------------------------------------------ handlers
    @staticmethod
    def _json(
        body: dict[str, Any], status: int, headers: dict[str, str] | None = None
    ) -> web.Response:
        hdrs = {"Twilio-Request-Id": "RQ" + uuid.uuid4().hex, **(headers or {})}
        return web.json_response(body, status=status, headers=hdrs)

    def _authenticated(self, request: web.Request) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if login == self.account_sid:
            return password == self.auth_token
        return login in self.api_keys and password == self.api_keys[login]

    def _unauthorized(self) -> web.Response:
        body = twilio_error(401, 20003)
        body["detail"] = "Your AccountSid or AuthToken was incorrect."
        return self._json(body, 401, {"WWW-Authenticate": 'Basic realm="Twilio API"'})

    def _not_found_body(self, path: str) -> web.Response:
        return self._json(twilio_error(404, 20404, path=path), 404)

    def _take(self, kind: str) -> _Fault | None:
        for fault in self._faults:
            if fault.kind == kind:
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _log(self, request: web.Request) -> dict[str, Any]:
        form = await request.post()
        entry = {
            "method": request.method,
            "path": request.path,
            "form": {k: form.getall(k) for k in form},
            "headers": dict(request.headers),
        }
        self.requests.append(entry)
        return entry

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._log(request)
        if not self._authenticated(request):
            return self._unauthorized()
        return self._not_found_body(request.path)

    async def _fetch(self, request: web.Request) -> web.Response:
        await self._log(request)
        if not self._authenticated(request):
            return self._unauthorized()
        rec = self._by_sid.get(request.match_info["sid"])
        if request.match_info["account"] != self.account_sid or rec is None:
            return self._not_found_body(request.path)
        return self._json(self._wire(rec), 200)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        slow = self._take("slow")
        if slow is not None and not slow.after_create:
            await self._sleep(slow.seconds)
        entry = await self._log(request)
        if not self._authenticated(request):
            return self._unauthorized()
        if request.match_info["account"] != self.account_sid:
            return self._not_found_body(request.path)
        drop = self._take("drop")
        if drop is not None and not drop.after_create:
            return self._drop(request)
        error = self._take("error")
        if error is not None:
            if error.raw is not None:
                return web.Response(
                    status=error.status,
                    text=error.raw,
                    content_type="text/html",
                    headers=error.headers,
                )
            assert error.body is not None
            return self._json(error.body, error.status, error.headers)

        form: dict[str, list[str]] = entry["form"]
        first = {k: v[0] for k, v in form.items() if v}
        to = first.get("To")
        from_ = first.get("From")
        service = first.get("MessagingServiceSid")
        body = first.get("Body", "")
        media = form.get("MediaUrl", [])
        if not to:
            return self._json(twilio_error(400, 21604), 400)
        if not from_ and not service:
            return self._json(twilio_error(400, 21603), 400)
        if not body and not media and not first.get("ContentSid"):
            return self._json(twilio_error(400, 21602), 400)
        if len(body) > 1600:
            return self._json(twilio_error(400, 21617), 400)
        for rule in self._rejections:
            if (rule.to is None or rule.to == to) and (rule.from_ is None or rule.from_ == from_):
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rejections.remove(rule)
                return self._json(rule.body, rule.status)

        rec = self._new_message(to, from_, service, body, media, first.get("StatusCallback"))
        rec["form"] = form
        if drop is not None:
            return self._drop(request)
        if slow is not None and slow.after_create:
            await self._sleep(slow.seconds)
        return self._json(self._wire(rec), 201)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    def _new_message(
        self,
        to: str,
        from_: str | None,
        service: str | None,
        body: str,
        media: list[str],
        status_callback: str | None,
    ) -> dict[str, Any]:
        sid = ("MM" if media else "SM") + uuid.uuid4().hex
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}"
        now = _now_rfc2822()
        rec: dict[str, Any] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": from_,
            "messaging_service_sid": service,
            "num_media": str(len(media)),
            # Twilio reports 0 segments until a Messaging Service has picked a sender.
            "num_segments": "0" if service and not from_ else str(num_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Messaging Service sends start "accepted", direct ones "queued".
            "status": "accepted" if service else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": to,
            "uri": f"{uri}.json",
            # not part of the wire resource:
            "status_callback": status_callback,
            "media_urls": list(media),
            "callbacks": [],
        }
        self.messages.append(rec)
        self._by_sid[sid] = rec
        return rec

    @staticmethod
    def _wire(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k not in _EXTRA_KEYS}


@pytest_asyncio.fixture
async def twilio_emulator() -> AsyncIterator[TwilioEmulator]:
    """A started ``TwilioEmulator`` (function-scoped); stopped afterwards."""
    emulator = TwilioEmulator()
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()
