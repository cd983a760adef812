"""Connecting to Redis: URL forms, passwords from secrets, schema checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError

from router.config import load_config
from router.keys import SCHEMA_VERSION
from router.store import SchemaMismatch, Store
from tests.support import RedisServer, free_port, write_config


async def test_password_from_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = RedisServer(tmp_path / "r", password="s3cret pass")
    server.start()
    try:
        monkeypatch.setenv("ROUTER_API_TOKEN", "t")
        monkeypatch.setenv("REDIS_PW", "s3cret pass")
        path = write_config(
            tmp_path / "router.yaml",
            server.url,
            free_port(),
            **{"redis.password": {"env": "REDIS_PW"}},
        )
        store = Store.open(load_config(path))
        assert await store.check_server() >= "6.2"
        await store.close()
        monkeypatch.setenv("REDIS_PW", "wrong")
        store = Store.open(load_config(path))
        with pytest.raises(AuthenticationError):
            await store.check_server()
        await store.close()
    finally:
        server.kill()


async def test_schema_version_and_partitions_are_checked(
    store: Store, tmp_path: Path, redis_server: RedisServer
) -> None:
    meta = await store.redis.hgetall(store.keys.meta)
    assert meta["schema_version"] == str(SCHEMA_VERSION) and meta["partitions"] == "4"
    other = Store(store.redis, store.keys, store.scripts, partitions=8)
    with pytest.raises(SchemaMismatch, match=r"ingest\.partitions: 8"):
        await other.prepare([], {})
    await store.redis.hset(store.keys.meta, "schema_version", "99")
    with pytest.raises(SchemaMismatch, match="schema version 99"):
        await store.prepare([], {})


async def test_published_queues_and_scripts(store: Store) -> None:
    queues = await store.redis.hgetall(store.keys.queues)
    assert set(queues) == {"general", "support-es", "vip"}
    shas = await store.redis.hgetall(store.keys.scripts)
    for sha in shas.values():
        assert (await store.redis.script_exists(sha)) == [True]
