"""RedisCheckpointStorage beyond the shared conformance suite: what only Redis can get wrong.

Round trips per call (counted with the server's own MONITOR), the key layout and TTLs,
lazy removal of expired sessions from the indexes, ids with the inbox member's separator bytes,
short pages under a scan budget, and the translation of server failures: a killed and restarted
server, a script holding the server busy, a password-protected server reached by URL (right and
wrong password) and a TLS server reached by ``rediss://``. Everything runs against real
``redis-server`` processes (see ``tests/support/redis_server.py``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from hitl_core.checkpoint.base import NO_DEADLINE, encode_token, sort_stamp
from hitl_core.checkpoint.redis import RedisCheckpointStorage
from hitl_core.errors import ConcurrencyError, StorageError, StorageUnavailableError
from hitl_core.testing import make_audit, make_checkpoint, make_request
from tests.support.redis_server import RedisServer, redis_server

T0 = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
async def storage(redis_url: str) -> AsyncIterator[RedisCheckpointStorage]:
    store = RedisCheckpointStorage(redis_url, key_prefix=f"t-{uuid.uuid4().hex[:10]}:")
    yield store
    keys = [k async for k in store.client.scan_iter(match=f"{store.key_prefix}*")]
    if keys:
        await store.client.delete(*keys)
    await store.close()


async def _commands_during(redis_url: str, action: Callable[[], Awaitable[object]]) -> list[str]:
    """The command names the server received (outside scripts) while ``action`` ran."""
    watcher = aioredis.Redis.from_url(redis_url)
    marker = aioredis.Redis.from_url(redis_url)
    await marker.ping()  # connect now, so its handshake is not seen below
    sentinel = f"sentinel-{uuid.uuid4().hex}"
    try:
        async with watcher.monitor() as monitor:
            await action()
            await marker.echo(sentinel)
            seen: list[str] = []
            while True:
                info = await asyncio.wait_for(monitor.next_command(), timeout=5)
                if sentinel in info["command"]:
                    return seen
                if info["client_type"] != "lua":
                    seen.append(info["command"].split(" ", 1)[0].upper())
    finally:
        await watcher.aclose()
        await marker.aclose()


def test_importing_hitl_core_does_not_import_redis() -> None:
    code = (
        "import sys, hitl_core, hitl_core.checkpoint as c\n"
        "assert 'redis' not in sys.modules, 'import hitl_core loaded redis'\n"
        "cls = c.RedisCheckpointStorage\n"
        "assert 'redis' in sys.modules and cls.__module__ == 'hitl_core.checkpoint.redis'\n"
        "import hitl_core as h\n"
        "assert h.RedisCheckpointStorage is cls\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_every_call_is_one_round_trip(storage: RedisCheckpointStorage, redis_url: str) -> None:
    ck = make_checkpoint("rt", requests=[make_request("c1", approvers=["ann", "bob"])])
    version = await storage.save(ck, expected_version=None)  # warms the connection and the script cache
    await storage.load("rt")
    await storage.list_pending_requests()
    await storage.list_sessions()
    await storage.delete("warm-up-missing")

    async def save() -> None:
        await storage.save(ck, expected_version=version, audit=[make_audit("rt", 1), make_audit("rt", 2)])

    assert await _commands_during(redis_url, save) == ["EVALSHA"]
    assert await _commands_during(redis_url, lambda: storage.load("rt")) == ["HMGET"]
    assert await _commands_during(redis_url, lambda: storage.list_pending_requests(assignee="ann")) == ["EVALSHA"]
    assert await _commands_during(redis_url, lambda: storage.list_sessions(status="pending")) == ["EVALSHA"]
    assert await _commands_during(redis_url, lambda: storage.list_audit("rt")) == ["LRANGE"]
    assert await _commands_during(redis_url, lambda: storage.delete("rt")) == ["EVALSHA"]
    assert await storage.load("rt") is None


async def test_script_cache_flush_is_survived(storage: RedisCheckpointStorage) -> None:
    """After SCRIPT FLUSH (a failover, a restart) redis-py reloads the script transparently."""
    v1 = await storage.save(make_checkpoint("flush"), expected_version=None)
    await storage.client.script_flush()
    v2 = await storage.save(make_checkpoint("flush", superstep=2), expected_version=v1)
    stored = await storage.load("flush")
    assert stored is not None and stored.version == v2 and stored.checkpoint.superstep == 2


async def test_key_layout_and_ttls(storage: RedisCheckpointStorage) -> None:
    p, c = storage.key_prefix, storage.client
    ck = make_checkpoint("lay", workflow="expense", status="completed",
                         requests=[make_request("c1", approvers=["ann"])])
    version = await storage.save(ck, expected_version=None, ttl_seconds=60, audit=[make_audit("lay", 1)])
    row = await c.hgetall(f"{p}session:lay")
    assert {k.decode(): v.decode() for k, v in row.items() if k != b"doc"} == {
        "version": version, "workflow": "expense", "status": "completed", "updated_at": T0.isoformat()}
    assert 59_000 < await c.pttl(f"{p}session:lay") <= 60_000
    assert 59_000 < await c.pttl(f"{p}requests:lay") <= 60_000
    assert await c.pttl(f"{p}audit:lay") == -1, "audit must not expire with the session"
    assert await c.pttl(f"{p}refs:lay") == -1, "the refs list must outlive the session to clean the indexes"
    member = "\x00".join((NO_DEADLINE + sort_stamp(T0), "lay", "c1")).encode()  # the inbox order key
    for index in ("idx:inbox", "idx:inbox:wf:expense", "idx:inbox:as:ann"):
        assert await c.zrange(f"{p}{index}", 0, -1) == [member], index
    assert await c.zrange(f"{p}idx:sessions:wf:expense", 0, -1) == [b"lay"]
    # a later save without ttl_seconds makes it permanent again
    await storage.save(ck.model_copy(update={"status": "pending"}), expected_version=version)
    assert await c.pttl(f"{p}session:lay") == -1
    assert await c.pttl(f"{p}requests:lay") == -1


async def test_created_at_offsets_sort_chronologically(storage: RedisCheckpointStorage) -> None:
    """Inbox order compares instants: 04:00+02:00 (02:00 UTC) comes before 03:00 UTC."""
    plus2 = dt.timezone(dt.timedelta(hours=2))
    await storage.save(make_checkpoint("utc", requests=[make_request("a", created_at=T0.replace(hour=3))]),
                       expected_version=None)
    await storage.save(make_checkpoint("plus2", requests=[make_request("b", created_at=T0.replace(
        hour=4, tzinfo=plus2))]), expected_version=None)
    items = (await storage.list_pending_requests()).items
    assert [(e.session_id, e.request.created_at.utcoffset()) for e in items] == [
        ("plus2", dt.timedelta(hours=2)), ("utc", dt.timedelta(0))]


async def test_expired_sessions_leave_the_indexes(storage: RedisCheckpointStorage) -> None:
    p, c = storage.key_prefix, storage.client
    for sid in ("gone-1", "gone-2"):
        await storage.save(make_checkpoint(sid, workflow="w", requests=[make_request("c", approvers=["ann"])]),
                           expected_version=None, ttl_seconds=1, audit=[make_audit(sid, 1)])
    await storage.save(make_checkpoint("stays", workflow="w", requests=[make_request("c", approvers=["ann"])]),
                       expected_version=None)
    indexes = [f"{p}idx:inbox", f"{p}idx:inbox:wf:w", f"{p}idx:inbox:as:ann", f"{p}idx:sessions",
               f"{p}idx:sessions:wf:w"]
    assert [await c.zcard(k) for k in indexes] == [3, 3, 3, 3, 3]
    await asyncio.sleep(1.1)
    assert await c.exists(f"{p}session:gone-1", f"{p}requests:gone-1") == 0, "Redis did not expire the keys"
    # an inbox read skips the dangling entries and removes every index entry of those sessions
    page = await storage.list_pending_requests(assignee="ann")
    assert [e.session_id for e in page.items] == ["stays"]
    assert [await c.zcard(k) for k in indexes] == [1, 1, 1, 1, 1]
    assert await c.exists(f"{p}refs:gone-1", f"{p}refs:gone-2") == 0
    assert [r.seq for r in await storage.list_audit("gone-1")] == [1], "audit must survive the expiry"
    # purge_expired does the same eagerly
    await storage.save(make_checkpoint("gone-3", requests=[make_request("c")]), expected_version=None)
    await c.delete(f"{p}session:gone-3", f"{p}requests:gone-3")  # what expiry does
    assert await storage.purge_expired() == 1
    assert await c.zcard(f"{p}idx:inbox") == 1 and await c.zcard(f"{p}idx:sessions") == 1


async def test_separator_bytes_in_ids_keep_order(storage: RedisCheckpointStorage) -> None:
    """Ids containing the member's NUL separator or escape byte still sort as (session, call) tuples."""
    ids = ["t", "t\x00", "t\x00a", "t\x01", "t\x01\x02", "t\x02", "ta", "\x00"]
    for sid in ids:
        await storage.save(make_checkpoint(sid, requests=[make_request("c\x00\x01"), make_request("c")]),
                           expected_version=None)
    expected = sorted((sid, cid) for sid in ids for cid in ("c", "c\x00\x01"))
    got: list[tuple[str, str]] = []
    token: str | None = None
    while True:
        page = await storage.list_pending_requests(limit=3, continuation=token)
        got += [(e.session_id, e.request.call_id) for e in page.items]
        if (token := page.continuation) is None:
            break
    assert got == expected
    assert [s.session_id for s in (await storage.list_sessions()).items] == sorted(ids)
    stored = await storage.load("t\x00a")
    assert stored is not None and stored.checkpoint.session_id == "t\x00a"


async def test_scan_budget_gives_short_pages_that_still_complete(redis_url: str) -> None:
    store = RedisCheckpointStorage(redis_url, key_prefix=f"t-{uuid.uuid4().hex[:10]}:", scan_budget=3)
    try:
        for n in range(10):
            await store.save(make_checkpoint(f"b-{n}", status="completed" if n >= 8 else "pending",
                                             requests=[make_request("c", approvers=["z"] if n >= 8 else [])]),
                             expected_version=None)
        first = await store.list_sessions(status="completed", limit=5)
        assert first.items == [] and first.continuation is not None, "a call must stop after scan_budget entries"
        pages, token, found = 0, None, []
        while True:
            page = await store.list_sessions(status="completed", limit=5, continuation=token)
            pages += 1
            found += [s.session_id for s in page.items]
            if (token := page.continuation) is None:
                break
        assert found == ["b-8", "b-9"] and pages >= 3
        inbox, token = [], None
        while True:
            ipage = await store.list_pending_requests(workflow="wf", limit=1, continuation=token)
            inbox += [e.session_id for e in ipage.items]
            if (token := ipage.continuation) is None:
                break
        assert inbox == [f"b-{n}" for n in range(10)]
    finally:
        await store.close()


async def test_tokens_are_portable_between_instances(storage: RedisCheckpointStorage, redis_url: str) -> None:
    """A continuation issued by one process continues in another (stateless keyset tokens)."""
    for n in range(5):
        await storage.save(make_checkpoint(f"k-{n}", requests=[make_request("c")]), expected_version=None)
    first = await storage.list_pending_requests(limit=2)
    other = RedisCheckpointStorage(redis_url, key_prefix=storage.key_prefix)
    try:
        rest = await other.list_pending_requests(limit=10, continuation=first.continuation)
    finally:
        await other.close()
    assert [e.session_id for e in first.items + rest.items] == [f"k-{n}" for n in range(5)]
    assert first.continuation == encode_token([NO_DEADLINE + sort_stamp(T0), "k-1", "c"])


async def test_constructor_validation(redis_url: str) -> None:
    with pytest.raises(ValueError, match="url="):
        RedisCheckpointStorage()
    with pytest.raises(ValueError, match="redis://"):
        RedisCheckpointStorage("http://127.0.0.1:6379")
    with pytest.raises(ValueError, match="scan_budget"):
        RedisCheckpointStorage(redis_url, scan_budget=0)


async def test_injected_client_is_used_and_left_open(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    prefix = f"t-{uuid.uuid4().hex[:10]}:"
    try:
        store = RedisCheckpointStorage(client=client, key_prefix=prefix)
        v = await store.save(make_checkpoint("inj", requests=[make_request("c", approvers=["ü"])]),
                             expected_version=None, audit=[make_audit("inj", 1)])
        stored = await store.load("inj")
        assert stored is not None and stored.version == v
        assert [e.session_id for e in (await store.list_pending_requests(assignee="ü")).items] == ["inj"]
        assert [r.seq for r in await store.list_audit("inj")] == [1]
        with pytest.raises(ConcurrencyError):
            await store.save(make_checkpoint("inj"), expected_version=None)
        await store.close()
        assert await client.ping() is True, "close() must not close a client the caller owns"
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_password_in_url() -> None:
    password = "s3cr3t-" + uuid.uuid4().hex[:8]
    with redis_server(password=password) as server:
        good = RedisCheckpointStorage(server.url)
        try:
            v = await good.save(make_checkpoint("pw"), expected_version=None)
            stored = await good.load("pw")
            assert stored is not None and stored.version == v
        finally:
            await good.close()
        for url in (f"redis://:wrong-{password}@127.0.0.1:{server.port}/0", f"redis://127.0.0.1:{server.port}/0"):
            bad = RedisCheckpointStorage(url)
            try:
                with pytest.raises(StorageUnavailableError) as caught:
                    await bad.load("pw")
            finally:
                await bad.close()
            message = str(caught.value)
            assert "rejected the credentials" in message and "HITL_REDIS_URL" in message
            assert password not in message, "the error must not echo the password"
            assert caught.value.retry_after is None, "a wrong password is not fixed by retrying"


async def test_rediss_url_with_password() -> None:
    with redis_server(password="tls-pw", tls=True) as server:
        assert server.url.startswith("rediss://:tls-pw@")
        store = RedisCheckpointStorage(server.url, ssl_ca_certs=str(server.ca_file))
        try:
            v = await store.save(make_checkpoint("tls", requests=[make_request("c")]), expected_version=None)
            stored = await store.load("tls")
            assert stored is not None and stored.version == v
            assert [e.session_id for e in (await store.list_pending_requests()).items] == ["tls"]
        finally:
            await store.close()
        untrusting = RedisCheckpointStorage(server.url)  # the self-signed certificate is not trusted
        try:
            with pytest.raises(StorageUnavailableError):
                await untrusting.load("tls")
        finally:
            await untrusting.close()


async def test_server_killed_then_restarted() -> None:
    server = RedisServer()
    try:
        server.start()
        store = RedisCheckpointStorage(server.url)
        try:
            v = await store.save(make_checkpoint("crash"), expected_version=None)
            server.kill()
            started = time.monotonic()
            for attempt in (store.save(make_checkpoint("crash"), expected_version=v), store.load("crash"),
                            store.list_pending_requests(), store.list_audit("crash"), store.delete("crash"),
                            store.ping()):
                with pytest.raises(StorageUnavailableError) as caught:
                    await attempt
                assert caught.value.retry_after == 1
                assert "unreachable" in str(caught.value) and f"127.0.0.1:{server.port}" in str(caught.value)
                assert isinstance(caught.value, StorageError)
            assert time.monotonic() - started < 10, "an outage must surface quickly, not after long retries"
            server.start()  # same port; nothing was persisted
            await store.ping()
            assert await store.load("crash") is None
            v2 = await store.save(make_checkpoint("crash", superstep=2), expected_version=None)
            stored = await store.load("crash")
            assert stored is not None and stored.version == v2 and stored.checkpoint.superstep == 2
        finally:
            await store.close()
    finally:
        server.cleanup()


async def test_busy_server_is_unavailable_then_recovers() -> None:
    with redis_server(extra_args=("--busy-reply-threshold", "50")) as server:
        hog = aioredis.Redis.from_url(server.url)
        store = RedisCheckpointStorage(server.url)
        try:
            await store.ping()
            spin = asyncio.create_task(hog.eval("while true do end", 0))
            await asyncio.sleep(0.3)
            with pytest.raises(StorageUnavailableError) as caught:
                await store.load("any")
            assert caught.value.retry_after == 1 and "BUSY" in str(caught.value)
            killer = aioredis.Redis.from_url(server.url)
            try:
                await killer.script_kill()
            finally:
                await killer.aclose()
            with pytest.raises(Exception, match=r"[Kk]illed"):
                await spin
            assert await store.load("any") is None
            await store.save(make_checkpoint("any"), expected_version=None)
            assert await store.load("any") is not None
        finally:
            await store.close()
            await hog.aclose()


async def test_storage_from_settings(redis_url: str) -> None:
    from hitl_core.checkpoint.factory import storage_from_settings
    from hitl_core.settings import Settings

    store = storage_from_settings(Settings(storage="redis", redis_url=redis_url))
    assert isinstance(store, RedisCheckpointStorage)
    sid = f"settings-{uuid.uuid4().hex}"
    try:
        v = await store.save(make_checkpoint(sid), expected_version=None)
        stored = await store.load(sid)
        assert stored is not None and stored.version == v
        assert await store.delete(sid) is True
    finally:
        await store.close()


# -- the multi-key inbox: a merge of the assignees' indexes inside the script ---------------------
async def _drain_inbox(store: RedisCheckpointStorage, limit: int, **filters: Any) -> tuple[list[tuple[str, str]], int]:
    got: list[tuple[str, str]] = []
    token: str | None = None
    for pages in range(1, 1000):
        page = await store.list_pending_requests(limit=limit, continuation=token, **filters)
        got += [(e.session_id, e.request.call_id) for e in page.items]
        if (token := page.continuation) is None:
            return got, pages
    raise AssertionError("paging did not end")


async def test_multi_key_inbox_is_one_round_trip_and_writes_nothing(storage: RedisCheckpointStorage,
                                                                    redis_url: str) -> None:
    for n in range(6):
        approvers = [["user:amy", "role:fin"], ["role:fin"], ["role:hr"]][n % 3]
        await storage.save(make_checkpoint(f"m-{n}", requests=[make_request("c", approvers=approvers)]),
                           expected_version=None)
    await storage.list_pending_requests(assignees=["user:amy", "role:fin"])  # warm the script cache
    before = sorted([k async for k in storage.client.scan_iter(match="*")])
    assert await _commands_during(
        redis_url, lambda: storage.list_pending_requests(assignees=["user:amy", "role:fin", "role:x"], limit=2)
    ) == ["EVALSHA"]
    assert sorted([k async for k in storage.client.scan_iter(match="*")]) == before, "no temporary keys"
    got, _ = await _drain_inbox(storage, 1, assignees=["user:amy", "role:fin"])
    assert got == [("m-0", "c"), ("m-1", "c"), ("m-3", "c"), ("m-4", "c")]


async def test_multi_key_scan_budget_gives_short_pages_that_still_complete(redis_url: str) -> None:
    """The budget counts index entries: a request under three keys costs three, and is returned once."""
    store = RedisCheckpointStorage(redis_url, key_prefix=f"t-{uuid.uuid4().hex[:10]}:", scan_budget=2)
    keys = ["user:amy", "role:fin", "role:audit"]
    try:
        for n in range(12):
            approvers = keys if n % 4 == 0 else [keys[n % 3]] if n % 4 == 1 else ["role:hr"] if n % 4 == 2 \
                else keys[:2]
            await store.save(make_checkpoint(f"b-{n:02d}", workflow="even" if n % 2 == 0 else "odd",
                                             requests=[make_request("c", approvers=approvers)]),
                             expected_version=None)
        expected = [(f"b-{n:02d}", "c") for n in range(12) if n % 4 != 2]
        first = await store.list_pending_requests(assignees=keys, limit=5)
        assert [e.session_id for e in first.items] == ["b-00"] and first.continuation is not None, \
            "b-00 alone (three index entries) spends the budget of 2"
        got, pages = await _drain_inbox(store, 5, assignees=keys)
        assert got == expected and pages > 3
        got, _ = await _drain_inbox(store, 1, assignees=keys, workflow="odd")
        assert got == [s for s in expected if int(s[0][2:]) % 2 == 1]
    finally:
        await store.close()


async def test_multi_key_merge_keeps_byte_order_with_separator_bytes(storage: RedisCheckpointStorage) -> None:
    """Members differing only after the NUL separator, or in escaped bytes, merge in (session, call) order."""
    ids = ["t", "t\x00", "t\x00a", "t\x01", "t\x01\x02", "t\x02", "ta", "\x00", "tä", "t\U0001f600", "T"]
    for n, sid in enumerate(ids):
        await storage.save(make_checkpoint(sid, requests=[
            make_request("c\x00\x01", approvers=["role:a"] if n % 2 else ["role:b", "role:a"]),
            make_request("c", approvers=["role:b"] if n % 3 else ["role:c"])]), expected_version=None)
    expected = sorted((sid, cid) for sid in ids for cid in ("c", "c\x00\x01"))
    for limit in (1, 2, 3, 50):
        got, _ = await _drain_inbox(storage, limit, assignees=["role:c", "role:b", "role:a"])
        assert got == expected, limit


@pytest.mark.parametrize("width", ["native", "4"])
async def test_lua_byte_order_matches_zrangebylex(storage: RedisCheckpointStorage, width: str) -> None:
    """The script's sort key orders arbitrary byte strings exactly as the sorted set does."""
    from hitl_core.checkpoint.redis import _LUA_BYTE_ORDER

    helpers = _LUA_BYTE_ORDER
    if width == "4":  # the fallback for servers whose C long cannot hold 48 bits
        helpers = helpers.replace("local W = struct.unpack", "local W = 4 or struct.unpack", 1)
    script = helpers + r"""
local items = {}
for i = 1, #ARGV do items[i] = {s = ARGV[i], k = sortkey(ARGV[i])} end
table.sort(items, function(x, y) return before(x.k, y.k) end)
local out = {}
for i = 1, #items do out[i] = items[i].s end
return out
"""
    rnd = random.Random(7)
    alphabet = [0, 1, 2, 0x2B, 0x2E, 0x30, 0x39, 0x41, 0x61, 0x7F, 0x80, 0xC3, 0xE4, 0xFF]
    values = {bytes(rnd.choice(alphabet) for _ in range(rnd.randint(0, 15))) for _ in range(400)}
    values |= {b"", b"\x00", b"\x00\x00", b"a", b"a\x00", b"a\x00\x00\x00\x00\x00\x00", b"\xff" * 13,
               b"2030-01-02T03:04:05+00:00", b"2030-01-02T03:04:05.000001+00:00"}
    members = sorted(values)
    shuffled = list(members)
    rnd.shuffle(shuffled)
    key = f"{storage.key_prefix}order"
    await storage.client.zadd(key, dict.fromkeys(shuffled, 0))
    assert await storage.client.zrangebylex(key, "-", "+") == members
    assert await storage.client.eval(script, 0, *shuffled) == members


async def test_multi_key_walk_drops_expired_sessions_from_every_index(storage: RedisCheckpointStorage) -> None:
    p, c = storage.key_prefix, storage.client
    await storage.save(make_checkpoint("gone", requests=[make_request("c", approvers=["user:amy", "role:fin"])]),
                       expected_version=None, ttl_seconds=1)
    await storage.save(make_checkpoint("stays", requests=[make_request("c", approvers=["role:fin"])]),
                       expected_version=None)
    await c.delete(f"{p}session:gone", f"{p}requests:gone")  # what expiry does
    page = await storage.list_pending_requests(assignees=["user:amy", "role:fin"])
    assert [e.session_id for e in page.items] == ["stays"] and page.continuation is None
    sessions = {index: [m.split(b"\x00")[1] for m in await c.zrange(f"{p}{index}", 0, -1)]
                for index in ("idx:inbox", "idx:inbox:as:user:amy", "idx:inbox:as:role:fin")}
    assert sessions == {"idx:inbox": [b"stays"], "idx:inbox:as:user:amy": [], "idx:inbox:as:role:fin": [b"stays"]}
    assert await c.exists(f"{p}refs:gone") == 0
