"""Delegations beyond the conformance suite: what only Redis, SQLite or the file backend can get wrong.

Redis: the key layout (one hash per delegator, PEXPIREAT at ``ends_at``, per-delegate sorted sets
kept in the same script), one round trip per call, and index entries of expired delegations
dropped on read. SQLite: parameterised statements, the delegate index, purge of ended rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from hitl_core.checkpoint import FileCheckpointStorage, SqliteCheckpointStorage
from hitl_core.checkpoint.redis import RedisCheckpointStorage
from hitl_core.testing import ManualClock
from hitl_core.testing.conformance import make_delegation

from . import test_redis
from .test_redis import _commands_during
from .test_sqlite import _Recorder

#: test_redis.py's fixture (a fresh key prefix, its keys deleted afterwards), named for this module.
redis_storage = test_redis.storage


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def _members(storage: RedisCheckpointStorage, key: str) -> list[str]:
    return [m.decode() for m in await storage.client.zrange(f"{storage.key_prefix}{key}", 0, -1)]


async def test_redis_key_layout_and_expiry_at_ends_at(redis_storage: RedisCheckpointStorage) -> None:
    storage, p = redis_storage, redis_storage.key_prefix
    delegation = make_delegation("amy", "ron", now=_now(), ends_in=3600)
    version = await storage.save_delegation(delegation, expected_version=None)
    assert version == "1"
    raw = await storage.client.hgetall(f"{p}delegation:amy")
    assert {k.decode(): v.decode() for k, v in raw.items() if k != b"doc"} == {"version": "1", "delegate": "ron"}
    assert await storage.client.pexpiretime(f"{p}delegation:amy") == int(delegation.ends_at.timestamp() * 1000)
    assert await _members(storage, "idx:delegations") == ["amy"]
    assert await _members(storage, "idx:delegations:to:ron") == ["amy"]
    # a replace moves amy from ron's set to sam's, in the same script
    await storage.save_delegation(make_delegation("amy", "sam", now=_now()), expected_version=version)
    assert await _members(storage, "idx:delegations:to:ron") == []
    assert await _members(storage, "idx:delegations:to:sam") == ["amy"]
    assert await storage.delete_delegation("amy") is True
    assert await storage.client.exists(f"{p}delegation:amy") == 0
    assert await _members(storage, "idx:delegations") == [] and await _members(storage, "idx:delegations:to:sam") == []
    # an ends_at already past: Redis drops the hash at once and nothing is indexed
    await storage.save_delegation(make_delegation("bob", "ron", now=_now(), ends_in=-5), expected_version=None)
    assert await storage.client.exists(f"{p}delegation:bob") == 0
    assert await _members(storage, "idx:delegations") == [] and await _members(storage, "idx:delegations:to:ron") == []


async def test_redis_every_delegation_call_is_one_round_trip(redis_storage: RedisCheckpointStorage,
                                                             redis_url: str) -> None:
    storage = redis_storage
    now = _now()
    # warm the connection and the script cache
    await storage.save_delegation(make_delegation("warm", "up", now=now), expected_version=None)
    await storage.load_delegation("warm")
    await storage.list_delegations()
    await storage.delete_delegation("warm")

    async def save() -> Any:
        return await storage.save_delegation(make_delegation("amy", "ron", now=now), expected_version=None)

    assert await _commands_during(redis_url, save) == ["EVALSHA"]
    assert await _commands_during(redis_url, lambda: storage.load_delegation("amy")) == ["HMGET"]
    assert await _commands_during(redis_url, lambda: storage.list_delegations(delegate="ron")) == ["EVALSHA"]
    assert await _commands_during(redis_url, lambda: storage.delete_delegation("amy")) == ["EVALSHA"]


async def test_redis_drops_index_entries_of_expired_delegations_on_read(redis_storage: RedisCheckpointStorage) -> None:
    storage = redis_storage
    await storage.save_delegation(make_delegation("amy", "ron", now=_now(), ends_in=0.3), expected_version=None)
    await storage.save_delegation(make_delegation("bob", "ron", now=_now()), expected_version=None)
    await asyncio.sleep(0.4)
    assert await _members(storage, "idx:delegations:to:ron") == ["amy", "bob"]  # Redis cannot tell the sets
    assert [d.delegator for d in await storage.list_delegations()] == ["bob"]
    # the walk of every delegation also dropped amy from ron's set and the delegate map
    assert await _members(storage, "idx:delegations") == ["bob"]
    assert await _members(storage, "idx:delegations:to:ron") == ["bob"]
    assert await storage.client.hkeys(f"{storage.key_prefix}idx:delegations:delegate") == [b"bob"]


async def test_redis_listing_walks_in_script_sized_steps(redis_url: str) -> None:
    storage = RedisCheckpointStorage(redis_url, key_prefix=f"t-{uuid.uuid4().hex[:10]}:", scan_budget=3)
    try:
        now = _now()
        names = [f"p{n:02d}" for n in range(10)]
        for name in reversed(names):
            await storage.save_delegation(make_delegation(name, "ron" if name != "p04" else "sam", now=now),
                                          expected_version=None)
        assert [d.delegator for d in await storage.list_delegations()] == names
        assert [d.delegator for d in await storage.list_delegations(delegate="ron")] == [n for n in names if n != "p04"]
    finally:
        keys = [k async for k in storage.client.scan_iter(match=f"{storage.key_prefix}*")]
        if keys:
            await storage.client.delete(*keys)
        await storage.close()


async def test_sqlite_statements_are_parameterised_and_use_the_delegate_index(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    storage = SqliteCheckpointStorage(tmp_path / "hitl.db", clock=clock)
    evil = "x') OR 1=1 --"
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    real = storage._db
    recorder = _Recorder(real)
    storage._db = recorder  # type: ignore[assignment]
    try:
        v1 = await storage.save_delegation(make_delegation(evil, evil, now=now), expected_version=None)
        await storage.save_delegation(make_delegation(evil, "ron", now=now), expected_version=v1)
        assert [d.delegator for d in await storage.list_delegations(delegate="ron")] == [evil]
        assert await storage.list_delegations(delegate=evil) == []
        await storage.delete_delegation(evil)
        assert recorder.calls and not any(evil in sql for sql, _ in recorder.calls)
        listing = next(c for c in recorder.calls if "delegate = ?" in c[0])
        plan = " | ".join(str(row[-1]) for row in real.execute("EXPLAIN QUERY PLAN " + listing[0], listing[1]))
        assert "delegations_by_delegate" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        storage._db = real
    await storage.close()


async def test_sqlite_purge_removes_ended_delegations(tmp_path: Path) -> None:
    clock = ManualClock(time.time())
    storage = SqliteCheckpointStorage(tmp_path / "hitl.db", clock=clock)
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    await storage.save_delegation(make_delegation("amy", "ron", now=now, ends_in=10), expected_version=None)
    await storage.save_delegation(make_delegation("bob", "ron", now=now, ends_in=100), expected_version=None)
    clock.advance(20)
    storage.purge_expired()
    rows = storage._db.execute("SELECT delegator FROM delegations ORDER BY delegator").fetchall()
    assert rows == [("bob",)]
    await storage.close()


@pytest.mark.parametrize("kind", ["sqlite", "file", "memory"])
async def test_a_delegation_over_an_ended_one_does_not_reuse_its_version(kind: str, tmp_path: Path) -> None:
    """Backends that keep the ended record count on from it: a version handed out earlier never matches again."""
    from hitl_core.checkpoint import InMemoryCheckpointStorage

    clock = ManualClock(time.time())
    storage: Any = {"sqlite": lambda: SqliteCheckpointStorage(tmp_path / "hitl.db", clock=clock),
                    "file": lambda: FileCheckpointStorage(tmp_path / "files", clock=clock),
                    "memory": lambda: InMemoryCheckpointStorage(clock=clock)}[kind]()
    now = dt.datetime.fromtimestamp(clock(), dt.UTC)
    old = await storage.save_delegation(make_delegation("amy", "ron", now=now, ends_in=5), expected_version=None)
    clock.advance(10)
    new = await storage.save_delegation(make_delegation("amy", "sam", now=now, ends_in=100), expected_version=None)
    assert new != old
    await storage.close()
