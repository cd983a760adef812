"""Every Redis key the daemon reads or writes, in one place.

The key schema is a public API for agent tools written in any language; it is
documented in ``docs/redis-schema.md``. Bump ``SCHEMA_VERSION`` when a key or
field changes meaning, and say so in the CHANGELOG.

Keys of one queue, conversation, customer or message carry a ``{hash tag}``
so related keys stay together on one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 2

# Consumer groups.
INGEST_GROUP = "routers"
QUEUE_GROUP = "agents"
OUTBOX_GROUP = "senders"

# Priority bands of an agent queue, highest first.
BANDS = (0, 1, 2, 3)


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (default ``router:``)."""

    prefix: str = "router:"

    # --- meta -------------------------------------------------------------
    @property
    def meta(self) -> str:
        """Hash: schema_version, partitions, created_at."""
        return f"{self.prefix}meta"

    @property
    def queues(self) -> str:
        """Hash: queue name -> JSON of its public settings (visibility timeout...)."""
        return f"{self.prefix}queues"

    @property
    def scripts(self) -> str:
        """Hash: script name -> SHA1 of the Lua scripts agent tools may EVALSHA."""
        return f"{self.prefix}scripts"

    # --- ingest -----------------------------------------------------------
    def ingest(self, partition: int) -> str:
        """Stream of one ingest partition, consumer group ``routers``."""
        return f"{self.prefix}ingest:{{{partition}}}"

    @property
    def routing_nodes(self) -> str:
        """Sorted set: routing nodes alive, score = when their heartbeat expires (ms)."""
        return f"{self.prefix}nodes:routing"

    def is_ingest(self, stream: str) -> bool:
        """Whether ``stream`` names an ingest partition's stream."""
        return stream.startswith(self.ingest(0).removesuffix("{0}"))

    def lease(self, partition: int) -> str:
        """String: node id of the daemon routing this partition (expires)."""
        return f"{self.prefix}lease:ingest:{{{partition}}}"

    def dedup(self, channel: str, source_id: str) -> str:
        """String: message id already given to (channel, source id); expires."""
        return f"{self.prefix}dedup:{channel}:{source_id}"

    def message(self, message_id: str) -> str:
        """Hash: one routed message (body, sender, routing result)."""
        return f"{self.prefix}msg:{{{message_id}}}"

    # --- profiles and conversations --------------------------------------
    def identity(self, kind: str, value: str) -> str:
        """String: customer id owning an identity (email address, phone...)."""
        return f"{self.prefix}identity:{kind}:{value}"

    def identity_of(self, identity: str) -> str:
        """:meth:`identity` of an identity string ``"email:ana@example.com"``."""
        kind, _, value = identity.partition(":")
        return self.identity(kind, value)

    def customer(self, customer_id: str) -> str:
        """Hash: the customer profile."""
        return f"{self.prefix}customer:{{{customer_id}}}"

    def customer_identities(self, customer_id: str) -> str:
        """Set: the identity strings (``email:ana@example.com``) of a customer."""
        return f"{self.prefix}customer:{{{customer_id}}}:identities"

    def customer_channels(self, customer_id: str) -> str:
        """Set: the channels a customer has used."""
        return f"{self.prefix}customer:{{{customer_id}}}:channels"

    def customer_conversations(self, customer_id: str) -> str:
        """Sorted set: a customer's conversations (score = created at)."""
        return f"{self.prefix}customer:{{{customer_id}}}:conversations"

    @property
    def merges(self) -> str:
        """Stream: profile merges (``from``, ``into``, ``at``, ``by``)."""
        return f"{self.prefix}merges"

    def thread(self, channel: str, ref: str) -> str:
        """String: the conversation a channel reference belongs to (an e-mail
        Message-ID, an X conversation id, a chat session...); expires."""
        return f"{self.prefix}thread:{channel}:{ref}"

    def conversation_refs(self, conversation_id: str) -> str:
        """Set: the thread keys pointing at a conversation (to erase them)."""
        return f"{self.prefix}conv:{{{conversation_id}}}:refs"

    def presence(self, agent: str) -> str:
        """String with a TTL: the agent is online while it exists (the agent
        tool refreshes it, e.g. ``SET {p}presence:alice 1 EX 60``)."""
        return f"{self.prefix}presence:{agent}"

    def queue_agents(self, queue: str) -> str:
        """Sorted set: the agents online for a queue, member = agent, score =
        when their presence ends (ms); a member whose score has passed is offline."""
        return f"{self.prefix}online:{{{queue}}}"

    def handle_time(self, queue: str) -> str:
        """Hash: a queue's rolling handle time (claim -> ack): ``mean`` (s,
        exponentially weighted, newest weighs 0.2), ``count``, ``last`` (s),
        ``updated_at``."""
        return f"{self.prefix}handle:{{{queue}}}"

    def conversation(self, conversation_id: str) -> str:
        """Hash: one conversation's state."""
        return f"{self.prefix}conv:{{{conversation_id}}}"

    def timeline(self, conversation_id: str) -> str:
        """Stream: the conversation's messages in and out, in order."""
        return f"{self.prefix}conv:{{{conversation_id}}}:timeline"

    # --- agent queues -----------------------------------------------------
    def queue(self, name: str, band: int) -> str:
        """Stream of one priority band of an agent queue, consumer group ``agents``."""
        return f"{self.prefix}q:{{{name}}}:p{band}"

    @staticmethod
    def personal_queue(agent: str) -> str:
        """The queue name of an agent's own follow-ups (sticky routing)."""
        return f"~{agent}"

    def queue_bands(self, name: str) -> list[str]:
        return [self.queue(name, b) for b in BANDS]

    @staticmethod
    def queue_due(stream: str) -> str:
        """Sorted set beside a band stream: its entries nobody has claimed yet,
        score = due time (ms; ``inf`` without one), member = entry id. Claims
        take the lowest score (due soonest; ties by entry id: arrival)."""
        return f"{stream}:due"

    @property
    def queue_pattern(self) -> str:
        """SCAN pattern matching every band stream of every agent queue."""
        return self.queue("*", 0).removesuffix("{*}:p0") + "*"

    def parse_queue(self, stream: str) -> tuple[str, int]:
        """``router:q:{support}:p2`` -> ``("support", 2)``."""
        head, _, band = stream.rpartition(":p")
        name = head.removeprefix(self.queue("", 0).removesuffix("}:p0")).removesuffix("}")
        return name, int(band)

    @property
    def overflow(self) -> str:
        """Sorted set: queue entries that move to their next target if still
        unclaimed at the score (ms); members are ``"<stream> <entry id>"``."""
        return f"{self.prefix}overflow"

    @property
    def sla(self) -> str:
        """Sorted set: the response targets being watched, member
        ``"<target> <conversation id>"`` (target ``first_response``), score =
        the work item's due time (ms); the SLA watch acts on each once."""
        return f"{self.prefix}sla"

    @property
    def events(self) -> str:
        """Stream: every lifecycle transition (``type``, ``at``, ``conversation_id``,
        ``queue``, ``agent``...), trimmed by age (``events.retention``)."""
        return f"{self.prefix}events"

    # --- outbox and dead letters ------------------------------------------
    @property
    def outbox(self) -> str:
        """Stream of replies to send, consumer group ``senders``."""
        return f"{self.prefix}outbox"

    @property
    def outbox_delayed(self) -> str:
        """Sorted set: outbox entries waiting for a retry (score = due, ms)."""
        return f"{self.prefix}outbox:delayed"

    def delivery(self, outbox_id: str) -> str:
        """Hash: delivery state of one outbound message."""
        return f"{self.prefix}delivery:{{{outbox_id}}}"

    @property
    def deadletter(self) -> str:
        """Stream: messages and replies that could not be handled, with the reason."""
        return f"{self.prefix}deadletter"

    # --- channel adapters -------------------------------------------------
    def adapter_state(self, adapter: str, key: str) -> str:
        """String (JSON), may expire: one piece of a channel adapter's own state
        (a cursor, a voicemail waiting for its transcription, a poll lease...)."""
        return f"{self.prefix}adapter:{adapter}:{key}"

    @property
    def chat_push(self) -> str:
        """Pub/sub channel: ``{"v": visitor, "id": event}``, heard by every daemon."""
        return f"{self.prefix}chat:push"

    def chat_events(self, visitor: str) -> str:
        """Stream: what was pushed to a chat visitor (``e`` = JSON event)."""
        return f"{self.prefix}chat:{{{visitor}}}:events"

    def chat_online(self, visitor: str) -> str:
        """String with a TTL: the visitor has a socket open (or had, lately)."""
        return f"{self.prefix}chat:{{{visitor}}}:online"

    def chat_claim(self, visitor: str) -> str:
        """Hash: a visitor's pending e-mail claim (email, mac, expires_at, attempts)."""
        return f"{self.prefix}chat:{{{visitor}}}:claim"

    def chat_claim_wait(self, visitor: str) -> str:
        """String: set while this visitor must wait before another code."""
        return f"{self.prefix}chat:{{{visitor}}}:claim-wait"

    def claim_mails(self, digest: str) -> str:
        """Counter: codes sent to one address this hour (keyed by a hash of it)."""
        return f"{self.prefix}claim-mails:{{{digest}}}"
