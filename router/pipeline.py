"""The routing worker: one message's path from the ingest stream to a queue.

Read top to bottom, per batch of ingest entries:

1. **read**     XREADGROUP on the ingest partitions this daemon holds a lease on
2. **decode**   the normalised message the adapter stored
3. **identify** the customer behind the sender (profile created on first contact)
4. **thread**   the conversation the message joins
5. **route**    ``decide(config, message, profile, now)``, a pure function
6. **commit**   queue entry + message + profile + conversation + timeline + XACK,
                one atomic script per batch slice, item by item; a redelivered
                entry that was already committed is only acknowledged (never
                queued twice)
7. **report**   a log line and the metrics per message

A message that cannot be decoded or routed is dead-lettered with the reason;
Redis being unreachable only pauses the worker (entries stay pending and are
read again). One customer's messages share a partition, and a partition is
routed by one daemon at a time (a lease), in stream order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict

import orjson
import structlog
from redis.exceptions import RedisError

from router.config import PRIORITIES, Config, parse_duration
from router.deadletters import dead_letter_fields
from router.keys import INGEST_GROUP, Keys
from router.logs import Outage
from router.metrics import Metrics
from router.model import Decision, InboundMessage, OutboundMessage, new_id
from router.profiles.context import BatchThreads, Context, identify_many, thread
from router.profiles.identity import redact
from router.routing import Routing, decide
from router.scripts import pairs
from router.store import Store, evalsha_many

log = structlog.get_logger("router.pipeline")

#: Most messages committed by one script call (~100 us of Redis each).
COMMIT_SLICE = 50
#: Routing decisions between two returns to the event loop (~200 us each).
YIELD_EVERY = 64


@dataclass(slots=True)
class Entry:
    """One ingest stream entry being routed."""

    stream: str
    entry_id: str
    raw: bytes | str | None
    message: InboundMessage | None = None
    context: Context | None = None


class CommitItem(TypedDict):
    """One routed message, as the commit script (``lua/commit_route.lua``)
    takes it: a JSON object, read there as ``item.<field>``.

    The script builds every key from these with the prelude's ``K`` (from
    :class:`~router.keys.Keys`). Field lists are ``[k, v, ...]`` of strings,
    in the order the hash or stream entry keeps them (``scripts.pairs``).
    (A TypedDict, not a dataclass: orjson encodes a dict in a third of the
    time, and this is encoded once per message.)
    """

    ingest_stream: str  # the ingest entry to acknowledge: its stream...
    entry_id: str  # ...and id
    message_id: str
    customer_id: str
    conversation_id: str
    new_conversation: bool  # (the script may still join one another worker just opened)
    channel: str
    queue: str  # the queue the entry goes to (an agent's own one: sticky routing)
    band: int  # its priority band
    personal: bool  # an agent's own queue, whose group may not exist yet
    quiet: bool  # an auto-reply in an ongoing conversation: recorded, not queued
    queue_entry: list[str]  # the queue entry's fields
    message: list[str]  # the message hash's fields
    customer: list[str]  # profile fields routing learned
    conversation: list[str]  # conversation fields
    timeline_entry: list[str]  # the conversation timeline's entry
    thread_refs: list[str]  # channel references that thread later messages here
    overflow_at_ms: str  # when an unclaimed entry moves to its next target, or ""
    acknowledgement: str  # the acknowledgement's outbox entry (JSON), or ""


class Routed(NamedTuple):
    """A message routed and waiting for its commit."""

    entry: Entry
    decision: Decision
    item: CommitItem


@dataclass(slots=True)
class Failure:
    entry: Entry
    stage: str
    reason: str


# For demos and tests only: route as if the wall clock were this far ahead
# ("2d", "36h") or behind ("-3d"), so a weekday can be tried on a Sunday.
CLOCK_OFFSET_ENV = "ROUTER_CLOCK_OFFSET"


def clock_offset(env: dict[str, str] | None = None) -> float:
    """Seconds ``ROUTER_CLOCK_OFFSET`` adds to the clock of routing decisions.

    It shifts the ``now`` of routing (which shifts are open, due times, the
    acknowledgement's ETA, and the times routing records); queue ages,
    overflow waits, claims and retries keep the real clock. 0 when unset.
    """
    raw = (os.environ if env is None else env).get(CLOCK_OFFSET_ENV, "").strip()
    if not raw:
        return 0.0
    sign = -1.0 if raw.startswith("-") else 1.0
    magnitude = raw.lstrip("+-")
    try:
        return sign * parse_duration(float(magnitude) if magnitude.isdigit() else magnitude)
    except ValueError as exc:
        raise ValueError(f"{CLOCK_OFFSET_ENV}={raw!r}: {exc} (e.g. 2d, -36h, 5400s)") from None


class RoutingWorker:
    """Routes the ingest partitions this daemon holds a lease on."""

    def __init__(
        self, store: Store, get_routing: Callable[[], Routing], metrics: Metrics, node: str
    ) -> None:
        self.store = store
        self.get_routing = get_routing
        self.metrics = metrics
        self.node = node
        # partition -> read position: "0" while re-reading our pending entries
        # (after taking a partition over, or after an error), ">" for new ones.
        self.owned: dict[int, str] = {}
        # pulsed when the partitions we hold change (wakes idle lanes)
        self._changed = asyncio.Event()
        # queue depths for "skip_if: depth_over" rules, refreshed every second
        self.depths: dict[str, int] = {}
        self._depths_at = 0.0
        self._lease_outage = Outage(log, "lease_renewal_failed", "lease_renewal_recovered")
        self.clock_offset = clock_offset()
        if self.clock_offset:
            log.warning(
                "clock_offset",
                seconds=self.clock_offset,
                routes_as_of=time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.clock_offset)
                ),
                action=f"for demos and tests only: unset {CLOCK_OFFSET_ENV} in production",
            )

    # -- lifecycle ---------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Route until ``stop`` is set; then drain what is already in the
        partitions we hold (the caller bounds how long), and let go of them.

        ``workers.concurrency`` lanes route side by side, each its own share
        of the partitions (partition number modulo the lane count), so one
        lane's Python work overlaps another's Redis round trips. A partition
        is only ever in one lane: its entries stay in stream order.
        """
        cfg = self.get_routing().cfg
        lanes = cfg.workers.concurrency
        renewed, halt = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(
                self._lane(lane, lanes, stop, renewed, halt), name=f"routing-lane-{lane}"
            )
            for lane in range(lanes)
        ]
        try:
            while not all(t.done() for t in tasks):
                cfg = self.get_routing().cfg
                try:
                    await self.renew_leases(cfg.workers.lease_ttl, draining=stop.is_set())
                    self._lease_outage.ok(node=self.node)
                except (RedisError, OSError) as exc:
                    self._lease_outage.failed(
                        node=self.node,
                        error=f"{type(exc).__name__}: {exc}",
                        action="retrying; messages wait safely in the ingest stream",
                    )
                renewed.set()
                _raise_if_crashed(tasks)
                running = [t for t in tasks if not t.done()]
                if not running:  # (the last lane ended during the renewal)
                    break
                # until the next renewal, a lane ends, or we begin to stop (then
                # renew at once: a stopping node takes nothing new)
                stopping = None if stop.is_set() else asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait(
                        [*running, *([stopping] if stopping else [])],
                        timeout=cfg.workers.lease_ttl / 3,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    if stopping is not None:
                        stopping.cancel()
                _raise_if_crashed(tasks)
        finally:
            # The flag is what stops lanes: a cancellation can be lost inside a
            # redis-py command (seen with redis-py 8.1: the read completes and
            # the lane went on reading).
            halt.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self.release_leases()

    async def _lane(
        self,
        lane: int,
        lanes: int,
        stop: asyncio.Event,
        renewed: asyncio.Event,
        halt: asyncio.Event,
    ) -> None:
        """One routing loop over the partitions ``p`` we hold with ``p % lanes == lane``."""
        outage = Outage(log, "routing_paused", "routing_resumed")
        await renewed.wait()  # the first lease renewal decides what we hold
        while not halt.is_set():
            draining = stop.is_set()
            cfg = self.get_routing().cfg
            mine = [p for p in self.owned if p % lanes == lane]
            try:
                if not mine:
                    if draining:
                        break
                    # until a renewal hands us partitions (or we stop)
                    await _wait_any((stop, self._changed), cfg.workers.lease_ttl / 3)
                    continue
                entries = await self.read(
                    cfg.workers.batch_size, None if draining else cfg.workers.block, mine
                )
                if entries:
                    await self.route(entries)
                outage.ok(lane=lane)  # a read and its commit went through
                if not entries:
                    if draining and all(self.owned.get(p) != "0" for p in mine):
                        break
                elif len(entries) < cfg.workers.batch_size and cfg.workers.linger:
                    # under load, let a few ms of messages gather: fewer,
                    # larger batches cost far less per message
                    await asyncio.sleep(cfg.workers.linger)
            except (RedisError, OSError) as exc:
                if halt.is_set():
                    break
                if draining:
                    log.warning(
                        "drain_stopped",
                        error=f"{type(exc).__name__}: {exc}",
                        action="the rest is routed after the restart",
                    )
                    break
                outage.failed(
                    lane=lane,
                    error=f"{type(exc).__name__}: {exc}",
                    action="retrying every second; messages wait safely in the ingest stream",
                )
                for p in mine:  # re-read what we had read but not committed
                    if p in self.owned:
                        self.owned[p] = "0"
                await _wait_any((stop,), 1.0)

    async def renew_leases(self, ttl: float, draining: bool = False) -> None:
        """Keep our fair share of the partitions (ceil(partitions / live
        routing nodes)), take free ones up to it, let go of the rest, and
        adopt the stuck entries of those we take. ``draining``: keep what we
        hold until it is routed, take nothing new, and stop counting as a
        routing node (the others take over the rest at their next renewal)."""
        keys = self.store.keys
        held = await self.store.scripts.partition_lease(
            keys=[*(keys.lease(p) for p in range(self.store.partitions)), keys.routing_nodes],
            args=[self.node, int(ttl * 1000), *(["drain"] if draining else [])],
        )
        acquired: list[int] = []
        lost: list[int] = []
        released: list[int] = []
        for p, state in enumerate(held):
            if state == 1 and p not in self.owned:
                await self._adopt(p)
                self.owned[p] = "0"
                acquired.append(p)
            elif state != 1 and p in self.owned:
                del self.owned[p]
                (released if state == 2 else lost).append(p)
        if acquired:
            log.info("partitions_acquired", partitions=acquired, node=self.node)
        if released:
            log.info(
                "partitions_released",
                partitions=released,
                node=self.node,
                reason="another routing node joined; partitions are shared out evenly",
            )
        if lost:
            log.warning(
                "partitions_lost",
                partitions=lost,
                node=self.node,
                reason="lease expired and another daemon took over",
                action="check this daemon's Redis latency and event-loop stalls",
            )
        self.metrics.partitions_owned.set(len(self.owned))
        if acquired or lost or released:
            self._changed.set()  # wake the lanes that had nothing to route
            self._changed.clear()

    async def _adopt(self, partition: int) -> None:
        """Move entries left pending by a dead consumer to us, to route them first."""
        stream = self.store.keys.ingest(partition)
        cursor = "0-0"
        while True:
            # (not JUSTID: redis-py then drops the cursor from the reply)
            resp = await self.store.redis.xautoclaim(
                stream, INGEST_GROUP, self.node, 0, cursor, count=500
            )
            cursor = resp[0]
            if cursor in ("0-0", b"0-0"):
                break

    async def release_leases(self) -> None:
        """Let go of our partitions and leave the routing nodes (others take over at once)."""
        keys = self.store.keys
        await self.store.scripts.partition_unlease(
            keys=[*(keys.lease(p) for p in self.owned), keys.routing_nodes], args=[self.node]
        )
        self.owned.clear()
        self.metrics.partitions_owned.set(0)

    # -- 1. read -------------------------------------------------------------
    async def read(
        self, count: int, block: float | None, partitions: list[int] | None = None
    ) -> list[Entry]:
        """Next entries of our partitions (or of those of ``partitions`` we
        hold); waits up to ``block`` seconds (None: not at all)."""
        keys = self.store.keys
        owned = self.owned
        mine = list(owned) if partitions is None else [p for p in partitions if p in owned]
        if not mine:
            return []
        streams = {keys.ingest(p): owned[p] for p in mine}
        replaying = any(pos == "0" for pos in streams.values())
        resp = await self.store.redis.xreadgroup(
            INGEST_GROUP,
            self.node,
            streams,
            count=count,
            block=None if replaying or block is None else max(1, int(block * 1000)),
        )
        entries: list[Entry] = []
        got: set[str] = set()
        for stream, items in resp or []:
            if items:
                got.add(stream)
            for entry_id, fields in items:
                entries.append(Entry(stream, entry_id, (fields or {}).get("m")))
        if replaying:  # partitions whose pending list is now empty go on to new entries
            for p in mine:
                if owned.get(p) == "0" and keys.ingest(p) not in got:
                    owned[p] = ">"
        return entries

    # -- 2..7 route: the stages ------------------------------------------------
    async def route(self, entries: list[Entry]) -> None:
        """Route a batch read from the ingest stream, in its stages."""
        routing = self.get_routing()
        now = time.time() + self.clock_offset
        if routing.needs_depths and now - self._depths_at > 1.0:
            self.depths = await self.store.depths(routing.cfg.queues)
            self._depths_at = now
        failures: list[Failure] = []
        live = self._decode(entries, failures)
        await self._identify(live, now)
        routed = await self._thread_and_decide(routing, live, now, failures)
        results = await self._commit(routing.cfg, routed, now)
        self._report(routed, results, failures)
        if failures:
            await self._dead_letter(failures)

    # -- 2. decode -------------------------------------------------------------
    @staticmethod
    def _decode(entries: list[Entry], failures: list[Failure]) -> list[Entry]:
        """The entries whose message reads, in arrival order."""
        live: list[Entry] = []
        for e in entries:
            if e.raw is None:  # deleted while pending: nothing left to route
                failures.append(Failure(e, "decode", ""))
                continue
            try:
                e.message = InboundMessage.from_json(e.raw)
            except Exception as exc:
                failures.append(Failure(e, "decode", f"unreadable ingest entry: {exc}"))
                continue
            live.append(e)
        # Arrival order across partitions too: one customer's messages on two
        # channels sit in two partitions (within one partition it is stream order).
        live.sort(key=lambda e: e.message.received_at if e.message else 0.0)
        return live

    # -- 3. identify -----------------------------------------------------------
    async def _identify(self, live: list[Entry], now: float) -> None:
        """Attach each entry's customer context (one script call for the batch)."""
        if not live:
            return
        contexts = await identify_many(
            self.store.keys, self.store.scripts, [e.message for e in live if e.message], now
        )
        for e, ctx in zip(live, contexts, strict=True):
            e.context = ctx

    # -- 4 + 5. thread and decide ----------------------------------------------
    async def _thread_and_decide(
        self, routing: Routing, live: list[Entry], now: float, failures: list[Failure]
    ) -> list[Routed]:
        """Thread and decide each message, in order; a customer's later
        messages in the batch see the state the earlier ones leave behind."""
        cfg = routing.cfg
        threads = BatchThreads()
        routed: list[Routed] = []
        for n, e in enumerate(live, 1):
            if n % YIELD_EVERY == 0:
                # let intake run: a long batch must not hold the event loop
                await asyncio.sleep(0)
            assert e.message is not None and e.context is not None
            msg = e.message
            ctx = threads.context(e.context)
            try:
                conversation_id, new_conversation = thread(
                    ctx, msg, cfg.routing.conversation_window, now
                )
                decision = decide(routing, msg, ctx, now, self.depths)
            except Exception as exc:
                log.exception("routing_failed", message_id=msg.id)
                failures.append(Failure(e, "route", f"{type(exc).__name__}: {exc}"))
                continue
            item = self._commit_item(cfg, e, ctx, decision, conversation_id, new_conversation, now)
            routed.append(Routed(e, decision, item))
            threads.advance(ctx, conversation_id, new_conversation, decision.language, now)
        return routed

    # -- 6. commit -------------------------------------------------------------
    async def _commit(self, cfg: Config, routed: list[Routed], now: float) -> list[list[Any]]:
        """Commit the batch: per item {1 routed | 2 joined the conversation's
        work item | 0 already | -1 error, queue entry or error, conversation id}
        (see lua/commit_route.lua)."""
        # In slices, one after the other (in order): a script blocks Redis
        # while it runs, and intake's writes must not wait behind a long one.
        results: list[list[Any]] = []
        for k in range(0, len(routed), COMMIT_SLICE):
            results += await self.store.scripts.commit_route(
                args=[
                    self.store.keys.prefix,
                    f"{now:.3f}",
                    cfg.routing.conversation_window,
                    int(cfg.routing.message_retention),
                    orjson.dumps([r.item for r in routed[k : k + COMMIT_SLICE]]),
                ]
            )
        return results

    # -- 7. report -------------------------------------------------------------
    def _report(
        self, routed: list[Routed], results: list[list[Any]], failures: list[Failure]
    ) -> None:
        """One log line and the metrics per committed message; refusals to ``failures``."""
        for (e, decision, item), r in zip(routed, results, strict=True):
            assert e.message is not None
            if r[0] == -1:
                failures.append(Failure(e, "commit", f"Redis refused the commit: {r[1]}"))
                continue
            fresh = r[0] in (1, 2)  # 2: joined the conversation's waiting work item
            # (another worker may have opened the conversation first)
            conversation_id = r[2] or item["conversation_id"]
            latency = max(0.0, time.time() - e.message.received_at)
            queued = r[1] != ""  # an auto-reply is recorded, not queued
            if fresh and queued:
                self.metrics.child(self.metrics.routed, decision.queue).inc()
                self.metrics.routing_latency.observe(latency)
            log.info(
                ("routed" if queued else "recorded_auto_reply") if fresh else "already_routed",
                message_id=e.message.id,
                channel=e.message.channel,
                sender=redact(e.message.sender, self.store.log_key),
                customer_id=e.context.customer_id if e.context else None,
                conversation_id=conversation_id,
                queue=decision.queue,
                priority=decision.priority,
                rule=decision.rule,
                latency_ms=round(latency * 1000, 1),
                **({"joined_work_item": True} if r[0] == 2 else {}),
            )

    def _commit_item(
        self,
        cfg: Config,
        e: Entry,
        ctx: Context,
        decision: Decision,
        conversation_id: str,
        new_conversation: bool,
        now: float,
    ) -> CommitItem:
        """What the commit script writes for one routed message."""
        msg = e.message
        assert msg is not None
        now_s = f"{now:.3f}"
        # Sticky: a follow-up goes to its owner's own queue; unclaimed after
        # routing.sticky_wait it falls back to the queue routing chose.
        personal = Keys.personal_queue(decision.agent) if decision.agent else None
        overflow_at = decision.overflow_at
        if personal is not None:
            overflow_at = now + cfg.routing.sticky_wait
        queue_entry = {
            "message_id": msg.id,
            "conversation_id": conversation_id,
            "customer_id": ctx.customer_id,
            "channel": msg.channel,
            "priority": decision.priority,
            "language": decision.language,
            "queued_at": now_s,
            "due_at": f"{decision.due_at:.3f}" if decision.due_at else None,
            "team": decision.team,
            "rule": decision.rule,
            "target": decision.target_index,
            "agent": decision.agent,
            "fallback_queue": decision.queue if personal else None,
            "repeat": decision.repeat if decision.repeat > 1 else None,
        }
        message = {
            "id": msg.id,
            "channel": msg.channel,
            "source_id": msg.source_id,
            "sender": str(msg.sender),
            "display_name": msg.display_name,
            "subject": msg.subject,
            "text": msg.text,
            "references": " ".join(msg.references) if msg.references else None,
            "received_at": f"{msg.received_at:.3f}",
            "routed_at": now_s,
            "customer_id": ctx.customer_id,
            "conversation_id": conversation_id,
            "queue": decision.queue,
            "priority": decision.priority,
            "language": decision.language,
            "decision": orjson.dumps(decision).decode(),
            "hints": orjson.dumps(msg.hints).decode(),
            "attachments": orjson.dumps(msg.attachments).decode() if msg.attachments else None,
            "meta": orjson.dumps(msg.meta).decode() if msg.meta else None,
        }
        # what routing learned about the customer (a profile zone an admin set wins)
        learned_zone = decision.timezone_source in ("browser", "phone", "email_date")
        customer = {
            "last_seen": now_s,
            "last_channel": msg.channel,
            "display_name": msg.display_name,
            "open_conversation": conversation_id,
            "language": decision.language,
            "timezone": decision.timezone if learned_zone else None,
            "timezone_source": decision.timezone_source if learned_zone else None,
            "country": decision.country,
        }
        consent = msg.meta.get("consent")
        if consent in ("stop", "start"):  # STOP / START on a phone channel
            customer[f"consent_{msg.sender.kind}"] = (
                "opted_out" if consent == "stop" else "opted_in"
            )
            customer[f"consent_{msg.sender.kind}_at"] = now_s
        conversation = {
            "id": conversation_id,
            "customer_id": ctx.customer_id,
            "status": "open",
            "created_at": now_s if new_conversation else None,
            "subject": msg.subject if new_conversation else None,
            "channel": msg.channel,
            "reply_to": msg.sender.value,
            "last_message_id": msg.id,
            "last_thread_ref": msg.source_id or (msg.references[-1] if msg.references else None),
            "last_activity": now_s,
            "language": decision.language,
            "queue": decision.queue,
            # for replies: the address the customer wrote to, when they last wrote
            "our_address": msg.meta.get("our_address"),
            "last_inbound_at": now_s,
            "country": decision.country,
        }
        # an auto-reply (out of office) in an ongoing conversation is only recorded
        quiet = msg.meta.get("auto_reply") == "true" and not new_conversation
        if quiet:
            del conversation["status"]
        timeline = {
            "direction": "in",
            "message_id": msg.id,
            "channel": msg.channel,
            "at": now_s,
        }
        # channel references that will thread later messages into this conversation
        refs = [msg.source_id, *msg.references] if msg.source_id else list(msg.references)
        return CommitItem(
            ingest_stream=e.stream,
            entry_id=e.entry_id,
            message_id=msg.id,
            customer_id=ctx.customer_id,
            conversation_id=conversation_id,
            new_conversation=new_conversation,
            channel=msg.channel,
            queue=personal or decision.queue,
            band=PRIORITIES[decision.priority],
            personal=personal is not None,
            quiet=quiet,
            queue_entry=pairs(queue_entry),
            message=pairs(message),
            customer=pairs(customer),
            conversation=pairs(conversation),
            timeline_entry=pairs(timeline),
            thread_refs=list(dict.fromkeys(refs)),
            overflow_at_ms=str(int(overflow_at * 1000)) if overflow_at else "",
            acknowledgement=(
                self._acknowledgement(msg, decision, conversation_id) if decision.ack_text else ""
            ),
        )

    @staticmethod
    def _acknowledgement(msg: InboundMessage, decision: Decision, conversation_id: str) -> str:
        """The outbox entry of the automatic acknowledgement of a new conversation."""
        ack = OutboundMessage(
            id=new_id("o"),
            conversation_id=conversation_id,
            text=decision.ack_text or "",
            channel=msg.channel,
            to=msg.sender.value,
            subject=f"Re: {msg.subject}" if msg.subject else None,
            in_reply_to=msg.source_id,
            kind="ack",
        )
        return ack.to_json().decode()

    async def _dead_letter(self, failures: list[Failure]) -> None:
        keys = self.store.keys
        calls = []
        for f in failures:
            if f.entry.raw is None:  # a deleted entry: just clear it
                await self.store.redis.xack(f.entry.stream, INGEST_GROUP, f.entry.entry_id)
                continue
            message_id = f.entry.message.id if f.entry.message else None
            log.error(
                "message_dead_lettered",
                message_id=message_id,
                entry=f"{f.entry.stream} {f.entry.entry_id}",
                stage=f.stage,
                reason=f.reason,
                action="fix the cause, then `router dead-letters replay`",
            )
            calls.append(
                (
                    [f.entry.stream, keys.deadletter],
                    [
                        INGEST_GROUP,
                        f.entry.entry_id,
                        *dead_letter_fields(
                            "ingest",
                            f.stage,
                            f.reason,
                            f.entry.raw,
                            message_id=message_id,
                            source=f.entry.stream,
                        ),
                    ],
                )
            )
            self.metrics.dead_letters.labels("ingest").inc()
        if calls:
            for r in await evalsha_many(self.store.redis, self.store.scripts.dead_letter, calls):
                if isinstance(r, Exception):
                    raise r


def _raise_if_crashed(lanes: list[asyncio.Task[None]]) -> None:
    """A lane that died of an exception is a bug: fail loudly."""
    for t in lanes:
        if t.done() and not t.cancelled() and (exc := t.exception()) is not None:
            raise exc


async def _wait_any(events: tuple[asyncio.Event, ...], seconds: float) -> None:
    """Until one of ``events`` is set, at most ``seconds``."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
