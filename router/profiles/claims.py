"""Identities a sender only asserts: a claim until proven.

A chat visitor may type any e-mail address. Taken as an identity, it would
merge the visitor into the profile of whoever owns that address, join that
customer's conversation and send the agent's next reply (their order, their
address) to the visitor's socket. So a typed address is a *claim*: agents see
it as a note, and nothing else happens, until the visitor proves they read
that mailbox by typing back a one-time code e-mailed to it (through the
outbox and SMTP, like every other e-mail the daemon sends). Only then does
the address become an identity of the visitor's profile.

Bounds (an attacker can open as many chats as they like, so each bound is on
what they cannot multiply for free):

- a code is ``CODE_DIGITS`` digits, valid ``CODE_TTL`` seconds, and allows
  ``MAX_ATTEMPTS`` tries; after that the claim is gone;
- one visitor gets a new code at most every ``RESEND_AFTER`` seconds;
- one address gets at most ``CODES_PER_ADDRESS`` codes per hour, whoever
  asks: its owner is not mail-bombed, and guessing a code stays hopeless
  (25 guesses an hour against a million codes).

Only a keyed hash of the code is stored (HMAC with the chat secret over the
visitor, the address and the code), never the code itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from router.keys import Keys
from router.model import OutboundMessage, new_id
from router.scripts import source

CODE_DIGITS = 6
CODE_TTL = 900.0
MAX_ATTEMPTS = 5
RESEND_AFTER = 30.0
CODES_PER_ADDRESS = 5  # per hour


def address_digest(email: str) -> str:
    """What names an address in ``claim-mails:{DIGEST}`` (not the address itself)."""
    return hashlib.sha256(email.encode()).hexdigest()[:24]


class ClaimRefused(Exception):
    """The claim or the code was refused; ``code`` is the chat error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Claim:
    """An address claimed by a visitor and the one-time code that proves it."""

    visitor: str
    email: str
    code: str


class EmailClaims:
    """Claimed e-mail addresses of chat visitors, and their verification."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._try = redis.register_script(source("claim_try"))  # lua/claim_try.lua

    # (the keys share the visitor's hash tag with the chat's other keys)
    def claim_key(self, visitor: str) -> str:
        """Hash: the pending claim (email, mac, expires_at, attempts); expires."""
        return self.keys.chat_claim(visitor)

    def resend_key(self, visitor: str) -> str:
        """String: set while this visitor must wait before another code."""
        return self.keys.chat_claim_wait(visitor)

    def address_key(self, email: str) -> str:
        """Counter: codes sent to one address this hour (keyed by a hash, not the address)."""
        return self.keys.claim_mails(address_digest(email))

    @staticmethod
    def _mac(secret: str, visitor: str, email: str, code: str) -> str:
        data = f"{visitor}\0{email}\0{code}".encode()
        return hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()

    async def start(self, secret: str, visitor: str, email: str) -> Claim:
        """A new claim with a fresh code (replacing any pending one of the visitor).

        Raises ClaimRefused (``slow_down``) within ``RESEND_AFTER`` of the
        visitor's last code, or past the address's hourly number of codes.
        """
        if not await self.redis.set(self.resend_key(visitor), "1", nx=True, ex=int(RESEND_AFTER)):
            raise ClaimRefused(
                "slow_down", f"a code was just sent; ask again in {int(RESEND_AFTER)} seconds"
            )
        counter = self.address_key(email)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(counter, 0, ex=3600, nx=True)  # (EXPIRE NX needs Redis 7)
        pipe.incr(counter)
        _, sent = await pipe.execute()
        if int(sent) > CODES_PER_ADDRESS:
            raise ClaimRefused(
                "slow_down", "too many codes were sent to this address; try again in an hour"
            )
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        key = self.claim_key(visitor)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(
            key,
            mapping={
                "email": email,
                "mac": self._mac(secret, visitor, email, code),
                "expires_at": f"{time.time() + CODE_TTL:.3f}",
                "attempts": 0,
            },
        )
        pipe.expire(key, int(CODE_TTL))
        await pipe.execute()
        return Claim(visitor, email, code)

    async def check(self, secret: str, visitor: str, code: str) -> str:
        """The address the visitor proved with ``code``; the claim stays until
        :meth:`done` (so a failure to record the proof can be tried again).

        Raises ClaimRefused: ``no_code`` (none pending, expired or used up),
        ``bad_code`` (wrong; the message says how many tries are left).
        """
        key = self.claim_key(visitor)
        row = await self._try(keys=[key])
        if not row:
            raise ClaimRefused("no_code", "no code is waiting: send your e-mail address again")
        attempts, email, mac, expires_at = int(row[0]), row[1], row[2], float(row[3] or 0)
        if attempts > MAX_ATTEMPTS or time.time() > expires_at or not email or not mac:
            await self.redis.delete(key)
            raise ClaimRefused("no_code", "that code has expired: send your e-mail address again")
        if not hmac.compare_digest(self._mac(secret, visitor, email, code.strip()), mac):
            left = MAX_ATTEMPTS - attempts
            if left <= 0:
                await self.redis.delete(key)
                raise ClaimRefused(
                    "bad_code", "that code is not right, and no tries are left: ask for a new one"
                )
            raise ClaimRefused("bad_code", f"that code is not right; {left} tries left")
        return str(email)

    async def done(self, visitor: str) -> None:
        """The proof is recorded: the code cannot be used again."""
        await self.redis.delete(self.claim_key(visitor))

    async def mail_code(
        self, claim: Claim, conversation_id: str, retention: int, language: str | None = None
    ) -> str:
        """Queue the e-mail with the code in the outbox, in the visitor's
        conversation. Its delivery is tracked like any reply's, but it is
        kept out of the conversation's timeline (so out of what agents read
        and of the chat's transcript), and the record never holds the code."""
        minutes = int(CODE_TTL // 60)
        out = OutboundMessage(
            id=new_id("o"),
            conversation_id=conversation_id,
            channel="email",
            to=claim.email,
            kind="verify",
            subject="Your code for our chat",
            text=(
                f"Your code: {claim.code}\n\n"
                "Type it in the chat window to confirm this e-mail address. "
                f"It is valid for {minutes} minutes.\n\n"
                "If you did not ask for it, ignore this e-mail: nobody can use "
                "your address in our chat without this code."
            ),
        )
        if language:
            out.meta["language"] = language
        delivery = self.keys.delivery(out.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(
            delivery,
            mapping={
                "id": out.id,
                "conversation_id": conversation_id,
                "channel": out.channel,
                "status": "queued",
                "attempts": 0,
                "created_at": f"{time.time():.3f}",
                "agent": "",
                "kind": out.kind,
                "text": "(a one-time code to confirm the address the visitor typed)",
            },
        )
        pipe.expire(delivery, retention)
        pipe.xadd(self.keys.outbox, {"o": out.to_json()})
        await pipe.execute()
        return out.id

    async def routed_conversation(
        self,
        message_id: str,
        timeout: float,
        read: Callable[[Callable[[Pipeline], Any]], Awaitable[Any]] | None = None,
    ) -> str | None:
        """The conversation a just-ingested message was routed into (None if
        routing did not get to it within ``timeout`` seconds). ``read`` runs
        each poll's one command (the chat's shared batch: many sockets
        waiting poll in one pipeline); without it, a round trip of its own."""
        key = self.keys.message(message_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if read is not None:
                conversation = await read(lambda p: p.hget(key, "conversation_id"))
            else:
                conversation = await self.redis.hget(key, "conversation_id")
            if conversation:
                return str(conversation)
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(0.05)
