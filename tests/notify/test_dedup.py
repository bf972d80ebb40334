"""DedupStore implementations: one winner per key, release/confirm, expiry, persistence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hitl_core.errors import StorageUnavailableError
from hitl_core.notify import DedupStore, InMemoryDedupStore, RedisDedupStore, SqliteDedupStore
from tests.support.redis_server import RedisServer, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    made: Any
    if request.param == "memory":
        made = InMemoryDedupStore()
    elif request.param == "sqlite":
        made = SqliteDedupStore(tmp_path / "dedup.db")
    else:
        server: RedisServer = request.getfixturevalue("notify_redis")
        made = RedisDedupStore(server.url, prefix=f"test:{request.node.name}:")
    yield made
    await made.close()


async def test_claim_release_confirm(store: Any) -> None:
    assert isinstance(store, DedupStore)
    assert await store.claim("evt-1", 60) is True
    assert await store.claim("evt-1", 60) is False
    assert await store.claim("evt-2", 60) is True
    await store.release("evt-1")
    assert await store.claim("evt-1", 60) is True
    await store.confirm("evt-1", 3600)
    assert await store.claim("evt-1", 60) is False
    await store.release("never-claimed")  # harmless


async def test_concurrent_claims_have_one_winner(store: Any) -> None:
    results = await asyncio.gather(*(store.claim("race", 60) for _ in range(25)))
    assert results.count(True) == 1


async def test_redis_keys_expire(notify_redis: RedisServer) -> None:
    store = RedisDedupStore(notify_redis.url, prefix="test:expiry:")
    try:
        assert await store.claim("evt", 1)
        assert not await store.claim("evt", 1)
        await asyncio.sleep(1.2)
        assert await store.claim("evt", 1)
    finally:
        await store.close()


async def test_redis_with_an_existing_client(notify_redis: RedisServer) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(notify_redis.url)
    store = RedisDedupStore(client=client, prefix="test:client:")
    assert await store.claim("evt", 30)
    await store.close()
    assert await client.exists("test:client:evt") == 1  # still usable: the store did not close it
    await client.aclose()
    with pytest.raises(ValueError):
        RedisDedupStore()


async def test_redis_down_is_a_storage_error() -> None:
    store = RedisDedupStore(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StorageUnavailableError, match="redis dedup store unavailable"):
        await store.claim("evt", 30)
    await store.close()


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_expiry_with_a_clock(kind: str, tmp_path: Path) -> None:
    clock = Clock()
    store: Any = (
        InMemoryDedupStore(clock=clock) if kind == "memory" else SqliteDedupStore(tmp_path / "d.db", clock=clock)
    )
    assert await store.claim("evt", 10)
    clock.now += 9
    assert not await store.claim("evt", 10)
    clock.now += 2
    assert await store.claim("evt", 10)  # the old claim expired: taken over
    await store.confirm("evt", 100)
    clock.now += 50
    assert not await store.claim("evt", 10)
    await store.close()


async def test_sqlite_survives_reopening_and_is_shared_between_connections(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dedup.db"
    first = SqliteDedupStore(path)
    assert await first.claim("email:evt-1", 3600)
    await first.confirm("email:evt-1", 3600)
    other = SqliteDedupStore(path)  # another process on the same machine
    assert not await other.claim("email:evt-1", 3600)
    assert await other.claim("webhook:evt-1", 3600)
    await first.close()
    await other.close()

    reopened = SqliteDedupStore(path)
    assert not await reopened.claim("email:evt-1", 3600)
    assert not await reopened.claim("webhook:evt-1", 3600)
    await reopened.release("webhook:evt-1")
    assert await reopened.claim("webhook:evt-1", 3600)
    await reopened.close()
    with pytest.raises(StorageUnavailableError, match="closed"):
        await reopened.claim("x", 1)


async def test_sqlite_keys_are_parameters_not_sql(tmp_path: Path) -> None:
    store = SqliteDedupStore(tmp_path / "d.db")
    nasty = "x'); DROP TABLE notify_dedup; --"
    assert await store.claim(nasty, 60)
    assert not await store.claim(nasty, 60)
    assert await store.claim("still-works", 60)
    await store.close()
