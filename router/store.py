"""The connection to Redis and the schema bookkeeping around it.

:class:`Store` bundles the client, the key names and the registered scripts,
and knows how to create consumer groups and publish the schema version.
Everything that reads or writes Redis goes through one Store.
"""

from __future__ import annotations

import math
import secrets
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from router.config import Config
from router.keys import BANDS, INGEST_GROUP, OUTBOX_GROUP, QUEUE_GROUP, SCHEMA_VERSION, Keys
from router.scripts import PUBLIC, Scripts

MIN_REDIS = (6, 2)

# How long the ingest path waits for Redis before it refuses a message (the
# webhook gets 503, the source is not acknowledged and delivers again). A
# healthy Redis answers an ingest batch in milliseconds; one that is stalled
# (SIGSTOP, a hung disk, a swapping host) must not hold webhooks for the 10 s
# of the general socket timeout, which is long because routing workers block
# on XREADGROUP.
INGEST_TIMEOUT = 2.0


class SchemaMismatch(RuntimeError):
    """Redis holds data written under another schema version or partitioning."""


def connect(
    cfg: Config, *, max_connections: int = 64, socket_timeout: float | None = None
) -> aioredis.Redis:
    """A redis-py asyncio client for the configured URL (or the embedded socket).

    ``socket_timeout`` (the ingest path's short one) defaults to a long one
    that outlasts the routing workers' blocking reads. A lost connection (a
    restarted Redis) is retried at once, twice; a timeout is not: the command
    may have run, and a second try would only wait as long again."""
    password = cfg.redis.password.value if cfg.redis.password else None
    # Few, fast retries: a caller that cannot store must hear about it
    # quickly (HTTP 503) rather than hang. (The asyncio Retry: the synchronous
    # one, given to an asyncio client, never retries anything.)
    retry = AsyncRetry(
        ExponentialWithJitterBackoff(base=0.05, cap=0.5),
        retries=2,
        supported_errors=(RedisConnectionError,),
    )
    kwargs: dict[str, Any] = dict(
        decode_responses=True,
        socket_connect_timeout=min(cfg.redis.connect_timeout, socket_timeout or math.inf),
        socket_timeout=socket_timeout or max(10.0, cfg.workers.block + 5),
        health_check_interval=30,
        max_connections=max_connections,
        retry=retry,
    )
    if password:
        kwargs["password"] = password
    return aioredis.Redis.from_url(cfg.redis_url, **kwargs)


async def evalsha_many(
    redis: aioredis.Redis, script: AsyncScript, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]
) -> list[Any]:
    """Run ``script`` once per (keys, args) in one pipeline.

    redis-py checks SCRIPT EXISTS before every pipeline that holds Script
    objects (an extra round trip); we send EVALSHA directly and load the
    script only when Redis answers NOSCRIPT (after a Redis restart).
    Results are values or exceptions, in order.
    """
    for _ in range(2):
        pipe = redis.pipeline(transaction=False)
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        results = await pipe.execute(raise_on_error=False)
        if not any(isinstance(r, NoScriptError) for r in results):
            return results
        await redis.script_load(script.script)
    return results


@dataclass
class Store:
    """Redis client + key names + scripts, for one config."""

    redis: aioredis.Redis
    keys: Keys
    scripts: Scripts
    partitions: int
    # the ingest path's own connections, with a short timeout (INGEST_TIMEOUT)
    ingest_redis: aioredis.Redis | None = None
    # this install's key for the pseudonyms of customers in logs (see prepare)
    log_key: bytes = b""

    @classmethod
    def open(cls, cfg: Config, client: aioredis.Redis | None = None) -> Store:
        ingest_client = None
        if client is None:
            client = connect(cfg)
            ingest_client = connect(cfg, max_connections=8, socket_timeout=INGEST_TIMEOUT)
        return cls(
            redis=client,
            keys=Keys(cfg.redis.prefix),
            scripts=Scripts.register(client),
            partitions=cfg.ingest.partitions,
            ingest_redis=ingest_client,
        )

    async def close(self) -> None:
        await self.redis.aclose()
        if self.ingest_redis is not None:
            await self.ingest_redis.aclose()

    async def check_server(self) -> str:
        """Refuse a Redis older than 6.2; return its version."""
        info = await self.redis.info("server")
        version = str(info.get("redis_version", "0"))
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        if parts < MIN_REDIS:
            raise RuntimeError(
                f"Redis {version} is too old: streams with XAUTOCLAIM need Redis 6.2 or newer"
            )
        return version

    async def prepare(
        self,
        queues: Iterable[str],
        queue_settings: dict[str, dict],
        message_retention: float = 90 * 86400,
        events_retention: float = 400 * 86400,
    ) -> None:
        """Create groups, check and publish the schema; safe to run on every start."""
        meta = await self.redis.hgetall(self.keys.meta)
        if meta:
            if meta.get("schema_version") != str(SCHEMA_VERSION):
                raise SchemaMismatch(
                    f"Redis key prefix {self.keys.prefix!r} holds schema version "
                    f"{meta.get('schema_version')}, this daemon writes {SCHEMA_VERSION}; "
                    "see CHANGELOG for the migration, or use another redis.prefix"
                )
            if meta.get("partitions") != str(self.partitions):
                raise SchemaMismatch(
                    f"Redis holds {meta.get('partitions')} ingest partitions but the config "
                    f"says ingest.partitions: {self.partitions}. Changing it needs an empty "
                    "ingest (drain, then delete the meta key); set it back to "
                    f"{meta.get('partitions')}"
                )
        else:
            await self.redis.hset(
                self.keys.meta,
                mapping={
                    "schema_version": SCHEMA_VERSION,
                    "partitions": self.partitions,
                    "created_at": int(time.time()),
                },
            )
        await self.redis.hset(
            self.keys.meta,
            mapping={
                "message_retention": int(message_retention),
                "events_retention": int(events_retention),
            },
        )
        # One random key per install (every daemon on this Redis reads the same
        # one): log lines name a customer by a keyed hash, which nobody without
        # the key can turn back into a phone number by trying them all.
        await self.redis.hsetnx(self.keys.meta, "log_key", secrets.token_hex(16))
        self.log_key = bytes.fromhex(await self.redis.hget(self.keys.meta, "log_key"))
        for p in range(self.partitions):
            await self.ensure_group(self.keys.ingest(p), INGEST_GROUP)
        for name in queues:
            for band in BANDS:
                await self.ensure_group(self.keys.queue(name, band), QUEUE_GROUP)
        await self.ensure_group(self.keys.outbox, OUTBOX_GROUP)
        await self.file_waiting_entries()
        await self.publish(queue_settings)

    async def file_waiting_entries(self) -> int:
        """Put the unclaimed entries of every band stream (agents' own ones
        too) that no due set holds into their band's due set, for claims in due
        order: those queued under schema 1 or added with a plain XADD. Safe
        to run on every start; returns how many it filed."""
        filed = 0
        async for key in self.redis.scan_iter(match=self.keys.queue_pattern, _type="stream"):
            filed += int(await self.scripts.file_waiting(keys=[key]))
        return filed

    async def publish(self, queue_settings: dict[str, dict]) -> None:
        """Publish what agent tools need: queues and their settings, script SHAs."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.queues)
        if queue_settings:
            pipe.hset(
                self.keys.queues,
                mapping={q: orjson.dumps(s).decode() for q, s in queue_settings.items()},
            )
        await pipe.execute()
        shas = {}
        for name, source in PUBLIC.items():
            shas[name] = await self.redis.script_load(source)
        await self.redis.hset(self.keys.scripts, mapping=shas)

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) if missing."""
        try:
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Entries in each queue (waiting + claimed), one round trip."""
        names = list(queues)
        pipe = self.redis.pipeline(transaction=False)
        for q in names:
            for band in BANDS:
                pipe.xlen(self.keys.queue(q, band))
        counts = await pipe.execute()
        n = len(BANDS)
        return {q: sum(counts[i * n : (i + 1) * n]) for i, q in enumerate(names)}

    def partition_of(self, sender_key: str) -> int:
        """Ingest partition of a sender: all of one sender's messages share one."""
        return zlib.crc32(sender_key.encode()) % self.partitions


class RedisAdapterState:
    """:class:`~router.adapters.base.AdapterState` in Redis, under
    :meth:`Keys.adapter_state` (``adapter:NAME:KEY``), values as JSON."""

    def __init__(self, store: Store, name: str) -> None:
        self.redis = store.redis
        self.scripts = store.scripts
        self.base = store.keys.adapter_state(name, "")  # + the adapter's own key

    async def lease(self, key: str, owner: str, ttl: float) -> bool:
        held = await self.scripts.lease(keys=[self.base + key], args=[owner, int(ttl * 1000)])
        return bool(held and int(held[0]) == 1)

    async def get(self, key: str) -> Any:
        raw = await self.redis.get(self.base + key)
        return None if raw is None else orjson.loads(raw)

    async def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        await self.redis.set(self.base + key, orjson.dumps(value), ex=int(ttl) if ttl else None)

    async def delete(self, key: str) -> None:
        await self.redis.delete(self.base + key)

    async def items(self, prefix: str) -> list[tuple[str, Any]]:
        out = []
        async for k in self.redis.scan_iter(match=self.base + prefix + "*", count=500):
            raw = await self.redis.get(k)
            if raw is not None:
                out.append((k[len(self.base) :], orjson.loads(raw)))
        return out
