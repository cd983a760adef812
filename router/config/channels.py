"""The per-channel settings: the JSON API, Twilio (SMS, WhatsApp, voice), X,
web chat and e-mail (IMAP in, SMTP out), and the check of what a channel
needs from the rest of the config."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator

from router.config.types import Duration, Problem, Secret, Strict

if TYPE_CHECKING:
    from router.config.daemon import Config

# ROUTER_API_TOKEN is a secret: it is referenced, never copied into the config.
API_TOKEN_ENV = "ROUTER_API_TOKEN"


class ApiCallbackSettings(Strict):
    """Where agent replies to `api`-channel conversations are POSTed."""

    url: str
    secret: Secret | None = None
    timeout: Duration = 10.0

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://", v):
            raise ValueError("callback url must start with http:// or https://")
        return v


class ApiChannelSettings(Strict):
    """The generic JSON API: ``POST /v1/messages`` with a bearer token."""

    enabled: bool = True
    token: Secret | None = None
    callback: ApiCallbackSettings | None = None

    @model_validator(mode="after")
    def _token_needed(self) -> ApiChannelSettings:
        if self.enabled and self.token is None:
            raise ValueError(
                f"the API needs a token: token: {{env: {API_TOKEN_ENV}}} (or set enabled: false)"
            )
        return self


class TwilioVoiceSettings(Strict):
    """Incoming calls: a greeting in the caller's language, then a voicemail."""

    enabled: bool = True
    max_length: Duration = 120.0
    # how long to wait for Twilio's transcription before routing the voicemail without it
    transcription_wait: Duration = 600.0
    # TTS voice per language (e.g. {te: Google.te-IN-Standard-A}); default: Twilio's
    voices: dict[str, str] = {}
    # spoken prompt per language with {eta}; the built-in ones cover common languages
    prompts: dict[str, str] = {}


class TwilioSettings(Strict):
    """SMS, MMS, WhatsApp and voice through Twilio.

    Webhooks (configure them on your Twilio numbers): ``POST
    {http.public_url}/twilio/sms`` (messages), ``/twilio/sms/status``
    (status callbacks), ``/twilio/voice`` (incoming calls) and
    ``/twilio/voice/status`` (call status). Every request's
    X-Twilio-Signature is checked against ``http.public_url``.
    """

    enabled: bool = False
    account_sid: str = ""
    auth_token: Secret | None = None
    # our numbers (E.164, or whatsapp:+...); replies go out from the number
    # the customer wrote to, else from default_sender
    numbers: list[str] = []
    default_sender: str | None = None
    # sender per customer country (ISO 3166), e.g. {LV: "+37166000000"}
    senders: dict[str, str] = {}
    # WhatsApp allows free-form replies only this long after the customer's last message
    whatsapp_window: Duration = 86400.0
    # the Twilio REST API (a test emulator may stand in for it)
    api_base_url: str = "https://api.twilio.com"
    request_timeout: Duration = 10.0
    voice: TwilioVoiceSettings = TwilioVoiceSettings()

    @model_validator(mode="after")
    def _complete(self) -> TwilioSettings:
        if self.enabled and (not self.account_sid or self.auth_token is None):
            raise ValueError("twilio needs account_sid and auth_token: {env: TWILIO_AUTH_TOKEN}")
        return self


class XSettings(Strict):
    """Mentions, brand search and direct messages on X, polled with tweepy.

    App-only ``bearer_token`` reads mentions and search; OAuth 1.0a user
    credentials (``consumer_key``... of the support account) read and send
    DMs and post replies.
    """

    enabled: bool = False
    account_id: str = ""  # the support account's numeric user id
    bearer_token: Secret | None = None
    consumer_key: Secret | None = None
    consumer_secret: Secret | None = None
    access_token: Secret | None = None
    access_token_secret: Secret | None = None
    poll_interval: Duration = 60.0
    direct_messages: bool = True
    # posts that name the brand without tagging it, e.g. '"Acme Shoes" -is:retweet'
    search_query: str | None = None
    # only one daemon polls the account at a time; the lease lasts this long
    lease_ttl: Duration = 180.0
    # the X API (a test emulator may stand in for it)
    api_base_url: str = "https://api.twitter.com"

    @model_validator(mode="after")
    def _complete(self) -> XSettings:
        if self.enabled:
            missing = [
                k
                for k in (
                    "bearer_token",
                    "consumer_key",
                    "consumer_secret",
                    "access_token",
                    "access_token_secret",
                )
                if getattr(self, k) is None
            ]
            if not self.account_id or missing:
                raise ValueError(
                    "x needs account_id and the secrets "
                    + ", ".join(missing or ["(all given)"])
                    + " (e.g. bearer_token: {env: X_BEARER_TOKEN})"
                )
            if self.lease_ttl <= self.poll_interval:
                raise ValueError("lease_ttl must be longer than poll_interval")
        return self


class ChatSettings(Strict):
    """Web chat: a WebSocket at ``/chat/ws`` and the widget at ``/chat/widget.js``."""

    enabled: bool = False
    # signs visitor tokens (HMAC-SHA256): a visitor can only ever resume their own chat
    secret: Secret | None = None
    # pages allowed to open the socket (their Origin), e.g. https://www.example.com
    allowed_origins: list[str] = []
    max_frame_bytes: int = Field(default=16_384, ge=256)
    max_text_chars: int = Field(default=4_000, ge=1)
    # per connection: at most `burst` messages at once, refilled at `rate` per second
    rate: float = Field(default=1.0, gt=0)
    burst: int = Field(default=8, ge=1)
    # what is kept for a visitor to resume (agent replies after a reconnect)
    history: int = Field(default=500, ge=10)
    history_ttl: Duration = 7 * 86400.0
    # a visitor not connected for this long is "gone": replies also go by e-mail
    # (a transcript) when they gave an address
    away_after: Duration = 120.0
    # a visitor token is good for this long after it was issued; every hello
    # (the visitor coming back) gets a fresh one, so only an idle chat expires
    token_ttl: Duration = Field(default=30 * 86400.0, gt=0)
    # hellos being answered at once (their Redis work is batched); more are
    # told to come back later (error "busy" with retry_after) instead of
    # queueing on Redis: a restart's burst of widgets cannot starve other channels
    max_pending_hellos: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _secret(self) -> ChatSettings:
        if self.enabled and self.secret is None:
            raise ValueError("chat needs a secret to sign visitor tokens: {env: CHAT_SECRET}")
        return self


class ImapAccountSettings(Strict):
    """One mailbox account the daemon reads (IMAP4rev1, IDLE when offered)."""

    name: str
    host: str
    port: int | None = None  # default: 993 with tls, 143 otherwise
    security: Literal["tls", "starttls", "none"] = "tls"
    verify_tls: bool = True
    ca_file: Path | None = None
    username: str
    password: Secret
    folders: list[str] = ["INBOX"]
    # after a message is stored: add a keyword (default), or move it to a folder
    processed: Literal["flag", "move"] = "flag"
    processed_flag: str = "$Routed"
    processed_folder: str = "Processed"
    idle: bool = True  # use IDLE when the server offers it; else poll
    # leave IDLE this often to re-check the folder (a recreated folder, with a
    # new UIDVALIDITY, sends no push to a session that watched the old one)
    idle_renew: Duration = 300.0
    poll_interval: Duration = 60.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
            raise ValueError("use letters, digits and . _ - (it names the account in Redis keys)")
        return v


class SmtpSettings(Strict):
    """Where replies by e-mail are sent."""

    host: str
    port: int | None = None  # default: 465 with tls, 587 with starttls, 25 with none
    security: Literal["tls", "starttls", "none"] = "starttls"
    verify_tls: bool = True
    ca_file: Path | None = None
    username: str | None = None
    password: Secret | None = None
    timeout: Duration = 30.0
    from_address: str
    from_name: str | None = None
    # a From per queue (brands, departments): {billing: billing@example.com}
    from_by_queue: dict[str, str] = {}
    message_id_domain: str | None = None


class EmailSettings(Strict):
    """E-mail: IMAP in (IDLE), SMTP out."""

    enabled: bool = False
    accounts: list[ImapAccountSettings] = []
    smtp: SmtpSettings | None = None
    max_message_bytes: int = Field(default=25_000_000, ge=10_000)

    @model_validator(mode="after")
    def _something(self) -> EmailSettings:
        if self.enabled and not self.accounts and self.smtp is None:
            raise ValueError("e-mail needs at least one of accounts (IMAP) or smtp")
        return self


class ChannelsSettings(Strict):
    api: ApiChannelSettings = ApiChannelSettings(enabled=False)
    email: EmailSettings = EmailSettings()
    chat: ChatSettings = ChatSettings()
    twilio: TwilioSettings = TwilioSettings()
    x: XSettings = XSettings()


def check_channels(cfg: Config) -> Iterator[Problem]:
    """What an enabled channel needs from outside its own section."""
    twilio = cfg.channels.twilio
    if twilio.enabled and not cfg.http.public_url:
        yield (
            ("channels", "twilio"),
            (
                "twilio needs http.public_url (the https URL Twilio calls, e.g. "
                "https://support.example.com): webhook signatures are checked against it"
            ),
        )
