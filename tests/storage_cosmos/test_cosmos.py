"""CosmosDBCheckpointStorage against the local Cosmos DB stand-in (real server, real SDK).

Every test talks to ``@vercel/cosmosdb-server`` through the real ``azure-cosmos`` async client; the
recording proxy in front of it (``cosmos_proxy.py``) counts requests on the wire and injects the
faults the stand-in cannot produce (429, 503). Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import subprocess
import sys
import time
from typing import Any

import pytest
from azure.core.credentials import AccessToken

from hitl_core.checkpoint import InMemoryCheckpointStorage, InvalidContinuationError
from hitl_core.checkpoint.base import NO_DEADLINE
from hitl_core.checkpoint.cosmos import (
    COSMOS_ITEM_LIMIT_BYTES,
    DEFAULT_COSMOS_MAX_DOCUMENT_BYTES,
    SYSTEM_PROPERTIES_BYTES,
    CosmosDBCheckpointStorage,
    is_loopback_endpoint,
    session_item_id,
)
from hitl_core.checkpoint.cosmos_layout import DEFAULT_TTL, INDEXING_POLICY, PARTITION_KEY_PATH
from hitl_core.checkpoint.models import AuditRecord, PendingRequest, WorkflowCheckpoint
from hitl_core.errors import CheckpointTooLargeError, ConcurrencyError, StorageError, StorageUnavailableError
from hitl_core.settings import Settings, SettingsError
from tests.support.cosmos_server import CosmosStandIn, cosmos_stand_in

from .conftest import StorageFactory
from .cosmos_proxy import CosmosProxy

T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def pending(call_id: str, *, minutes: float = 0, approvers: tuple[str, ...] = ()) -> PendingRequest:
    return PendingRequest(
        call_id=call_id, executor_id="review", request_executor_id="request_info", request_type="ApprovalRequest",
        request={"amount": 42, "call": call_id}, created_at=T0 + dt.timedelta(minutes=minutes),
        approvers=list(approvers),
    )


def checkpoint(session_id: str, *, workflow: str = "expense", status: str = "pending",
               requests: list[PendingRequest] | None = None, **extra: Any) -> WorkflowCheckpoint:
    extra.setdefault("created_at", T0)  # a session keeps its creation time across saves
    return WorkflowCheckpoint(session_id=session_id, workflow=workflow, status=status,
                              pending_requests=requests if requests is not None else [pending(f"{session_id}-c1")],
                              **extra)


def audit(session_id: str, seq: int, action: str = "decision") -> AuditRecord:
    return AuditRecord(session_id=session_id, seq=seq, action=action, call_id="c1", actor="bob",
                       at=T0 + dt.timedelta(seconds=seq), detail={"approved": True})


async def raw(storage: CosmosDBCheckpointStorage, session_id: str, item_id: str | None = None) -> dict[str, Any]:
    """The stored document itself, read with the container client (bypassing the storage)."""
    container = await storage._ready()
    doc: dict[str, Any] = await container.read_item(item_id or session_item_id(session_id),
                                                    partition_key=session_id)
    return doc


async def raw_all(storage: CosmosDBCheckpointStorage, session_id: str) -> list[dict[str, Any]]:
    container = await storage._ready()
    return [d async for d in container.query_items(
        "SELECT * FROM c WHERE c.session_id = @sid", parameters=[{"name": "@sid", "value": session_id}],
        partition_key=session_id)]


# -- basics ---------------------------------------------------------------------------------------
async def test_round_trip_version_is_the_etag_and_document_shape(storage: CosmosDBCheckpointStorage) -> None:
    cp = checkpoint("s-1", requests=[pending("c1", approvers=("bob", "alice")), pending("c2", minutes=5,
                                                                                          approvers=("bob",))],
                    shared_state={"note": "héllo ☃"})
    version = await storage.save(cp, expected_version=None)
    loaded = await storage.load("s-1")
    assert loaded is not None
    assert loaded.checkpoint == cp
    assert loaded.version == version

    doc = await raw(storage, "s-1")
    assert doc["_etag"] == version
    assert doc["id"] == "s-1" and doc["session_id"] == "s-1" and doc["kind"] == "session"
    assert doc["workflow"] == "expense" and doc["status"] == "pending"
    # the inbox order key: no deadline (last), then the creation time
    assert doc["inbox_oldest_created_at"] == NO_DEADLINE + "2025-01-01T00:00:00.000000Z"
    assert doc["inbox_newest_created_at"] == NO_DEADLINE + "2025-01-01T00:05:00.000000Z"
    assert doc["assignees"] == ["alice", "bob"]
    assert "ttl" not in doc and doc["expires_at"] is None
    assert doc["checkpoint"] == cp.model_dump_json()  # exact JSON text (see the module docstring)
    assert doc["inbox"] == [p.model_dump_json() for p in cp.pending_requests]


async def test_missing_session_loads_as_none(storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    assert await storage.load("never-saved") is None
    # the stand-in's gap, pinned: a missing item read answers 500 (Azure: 404); stand_in mode copes
    [read] = [r for r in proxy.requests if r.kind == "read"]
    assert read.status == 500


async def test_a_500_is_an_error_outside_stand_in_mode(make_storage: StorageFactory,
                                                       azure_proxy: CosmosProxy) -> None:
    storage = await make_storage(azure_proxy, azure=True)
    assert await storage.load("absent") is None  # Azure answers 404
    azure_proxy.fail("read", 500, times=-1)
    with pytest.raises(StorageUnavailableError):
        await storage.load("absent")


async def test_create_twice_and_stale_etag_are_concurrency_errors_never_retried(
        storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    v1 = await storage.save(checkpoint("s-2"), expected_version=None)
    proxy.clear()
    with pytest.raises(ConcurrencyError) as created:
        await storage.save(checkpoint("s-2"), expected_version=None)
    assert created.value.expected is None and created.value.actual == v1
    assert proxy.ops()["create"] == 1  # the 409 was not retried

    v2 = await storage.save(checkpoint("s-2", status="completed", requests=[]), expected_version=v1)
    proxy.clear()
    with pytest.raises(ConcurrencyError) as stale:
        await storage.save(checkpoint("s-2"), expected_version=v1)
    assert stale.value.expected == v1 and stale.value.actual == v2
    assert proxy.ops()["replace"] == 1  # the 412 was not retried
    with pytest.raises(ConcurrencyError) as gone:
        await storage.save(checkpoint("s-absent"), expected_version=v1)
    assert gone.value.actual is None


async def test_two_concurrent_resumes_exactly_one_wins(storage: CosmosDBCheckpointStorage) -> None:
    v1 = await storage.save(checkpoint("s-3"), expected_version=None)
    results = await asyncio.gather(
        *(storage.save(checkpoint("s-3", status="completed", requests=[], metadata={"by": i}),
                       expected_version=v1, audit=[audit("s-3", 1)]) for i in range(4)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, str)]
    losers = [r for r in results if isinstance(r, ConcurrencyError)]
    assert len(winners) == 1 and len(losers) == 3
    loaded = await storage.load("s-3")
    assert loaded is not None and loaded.version == winners[0]
    assert [r.seq for r in await storage.list_audit("s-3")] == [1]  # losers wrote no audit record


# -- operation counts -------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stand_in", "azure"])
async def test_start_and_resume_operation_counts(mode: str, make_storage: StorageFactory,
                                                 proxy: CosmosProxy, azure_proxy: CosmosProxy) -> None:
    """Start = 1 create; resume = 1 point read + 1 conditional replace; no query on either path.

    Counted twice: by the storage's own ``ops`` counter and on the wire by the proxy. With audit
    records, Azure mode sends the replace and the audit creates as one transactional batch; the
    stand-in (no replace in a batch) sends the replace, then the audit upsert.
    """
    wire = proxy if mode == "stand_in" else azure_proxy
    storage = await make_storage(wire, azure=mode == "azure")

    # start
    v1 = await storage.save(checkpoint("s-ops"), expected_version=None)
    assert dict(storage.ops) == {"create": 1}
    assert wire.ops() == {"create": 1}

    # resume: load + conditional replace
    storage.ops.clear()
    wire.clear()
    stored = await storage.load("s-ops")
    assert stored is not None
    v2 = await storage.save(checkpoint("s-ops", status="pending", requests=[pending("c2")]),
                            expected_version=stored.version)
    assert dict(storage.ops) == {"read": 1, "replace": 1}
    assert wire.ops() == {"read": 1, "replace": 1}
    [replace] = [r for r in wire.requests if r.kind == "replace"]
    assert replace.headers.get("If-Match") == v1

    # resume that also appends an audit record (what the service does for a decision)
    storage.ops.clear()
    wire.clear()
    stored = await storage.load("s-ops")
    assert stored is not None and stored.version == v2
    await storage.save(checkpoint("s-ops", status="completed", requests=[]), expected_version=stored.version,
                       ttl_seconds=60, audit=[audit("s-ops", 1)])
    expected = {"read": 1, "batch": 1} if mode == "azure" else {"read": 1, "replace": 1, "upsert": 1}
    assert dict(storage.ops) == expected
    assert wire.ops() == expected
    assert not any(r.kind in ("query", "query_plan") for r in wire.requests)
    assert {r.partition_key for r in wire.requests} == {'["s-ops"]'}


async def test_start_with_audit_is_one_batch_in_azure_mode(make_storage: StorageFactory,
                                                          azure_proxy: CosmosProxy) -> None:
    storage = await make_storage(azure_proxy, azure=True)
    await storage.save(checkpoint("s-b"), expected_version=None, audit=[audit("s-b", 1), audit("s-b", 2)])
    assert azure_proxy.ops() == {"batch": 1}
    assert [r.seq for r in await storage.list_audit("s-b")] == [1, 2]


async def test_batch_conflict_on_the_session_writes_nothing(make_storage: StorageFactory,
                                                             azure_proxy: CosmosProxy) -> None:
    storage = await make_storage(azure_proxy, azure=True)
    v1 = await storage.save(checkpoint("s-c"), expected_version=None, audit=[audit("s-c", 1)])
    v2 = await storage.save(checkpoint("s-c"), expected_version=v1, audit=[audit("s-c", 2)])
    with pytest.raises(ConcurrencyError) as err:
        await storage.save(checkpoint("s-c"), expected_version=v1, audit=[audit("s-c", 3)])
    assert err.value.actual == v2
    assert [r.seq for r in await storage.list_audit("s-c")] == [1, 2]


async def test_an_audit_id_that_exists_fails_the_batch_without_saving(make_storage: StorageFactory,
                                                                       azure_proxy: CosmosProxy) -> None:
    storage = await make_storage(azure_proxy, azure=True)
    v1 = await storage.save(checkpoint("s-d"), expected_version=None, audit=[audit("s-d", 1)])
    with pytest.raises(StorageError, match=r"seq 1 .*exists already") as err:
        await storage.save(checkpoint("s-d", status="completed", requests=[]), expected_version=v1,
                           audit=[audit("s-d", 1)])
    assert not isinstance(err.value, ConcurrencyError)  # retrying would not help
    loaded = await storage.load("s-d")
    assert loaded is not None and loaded.version == v1 and loaded.checkpoint.status == "pending"


# -- TTL and expiry ---------------------------------------------------------------------------------
async def test_container_is_created_with_the_declared_layout(storage: CosmosDBCheckpointStorage) -> None:
    container = await storage._ready()
    props = await container.read()
    assert props["partitionKey"]["paths"] == [PARTITION_KEY_PATH]
    assert props["defaultTtl"] == DEFAULT_TTL == -1
    assert props["indexingPolicy"]["compositeIndexes"] == INDEXING_POLICY["compositeIndexes"]
    assert props["indexingPolicy"]["includedPaths"] == INDEXING_POLICY["includedPaths"]


async def test_finished_session_gets_ttl_and_audit_records_their_own(make_storage: StorageFactory,
                                                                      proxy: CosmosProxy) -> None:
    storage = await make_storage(proxy, audit_ttl_seconds=31_536_000)
    v1 = await storage.save(checkpoint("s-ttl"), expected_version=None, audit=[audit("s-ttl", 1)])
    assert "ttl" not in await raw(storage, "s-ttl")  # pending: never expires (container default -1)
    await storage.save(checkpoint("s-ttl", status="completed", requests=[]), expected_version=v1,
                       ttl_seconds=3600, audit=[audit("s-ttl", 2)])
    docs = await raw_all(storage, "s-ttl")
    [session] = [d for d in docs if d["kind"] == "session"]
    audits = [d for d in docs if d["kind"] == "audit"]
    assert session["ttl"] == 3600
    assert session["expires_at"] == pytest.approx(time.time() + 3600, abs=60)
    assert [a["ttl"] for a in audits] == [31_536_000, 31_536_000]


async def test_audit_records_without_audit_ttl_never_expire(storage: CosmosDBCheckpointStorage) -> None:
    await storage.save(checkpoint("s-at"), expected_version=None, ttl_seconds=10, audit=[audit("s-at", 1)])
    [audit_doc] = [d for d in await raw_all(storage, "s-at") if d["kind"] == "audit"]
    assert "ttl" not in audit_doc


async def test_expired_session_is_gone_for_reads_and_queries_but_not_its_audit(
        make_storage: StorageFactory, proxy: CosmosProxy) -> None:
    now = [1_000_000.0]
    storage = await make_storage(proxy, clock=lambda: now[0])
    v1 = await storage.save(checkpoint("s-exp"), expected_version=None)
    v2 = await storage.save(checkpoint("s-exp", status="pending"), expected_version=v1, ttl_seconds=30,
                            audit=[audit("s-exp", 1)])
    doc = await raw(storage, "s-exp")
    assert v2 == f"{doc['_etag']}~{1_000_030.0!r}"  # a session with a TTL carries its expiry in its version
    await storage.save(checkpoint("s-live"), expected_version=None)
    now[0] += 29
    loaded = await storage.load("s-exp")
    assert loaded is not None and loaded.version == v2
    now[0] += 1
    assert await storage.load("s-exp") is None
    assert [s.session_id for s in (await storage.list_sessions()).items] == ["s-live"]
    assert [e.session_id for e in (await storage.list_pending_requests()).items] == ["s-live"]
    assert [r.seq for r in await storage.list_audit("s-exp")] == [1]
    assert await storage.delete("s-exp") is False
    proxy.clear()
    with pytest.raises(ConcurrencyError) as err:  # refused without a write (the stand-in keeps the document)
        await storage.save(checkpoint("s-exp"), expected_version=v2)
    assert err.value.actual is None and proxy.ops() == {"read": 1}
    # the id can be started again (the stand-in never deletes; Azure would have)
    fresh = await storage.save(checkpoint("s-exp", created_at=T0 + dt.timedelta(days=1)), expected_version=None,
                               audit=[audit("s-exp", 1)])
    loaded = await storage.load("s-exp")
    assert loaded is not None and loaded.version == fresh and "~" not in fresh
    assert [r.seq for r in await storage.list_audit("s-exp")] == [1, 1]  # both trails kept, oldest first


# -- size guard -------------------------------------------------------------------------------------
async def test_oversized_checkpoint_fails_before_any_request(storage: CosmosDBCheckpointStorage,
                                                             proxy: CosmosProxy) -> None:
    assert storage.max_document_bytes == DEFAULT_COSMOS_MAX_DOCUMENT_BYTES
    big = checkpoint("s-big", shared_state={"blob": "x" * 2_000_000})
    with pytest.raises(CheckpointTooLargeError) as err:
        await storage.save(big, expected_version=None)
    assert err.value.session_id == "s-big" and err.value.size == len(big.model_dump_json())
    assert err.value.limit == DEFAULT_COSMOS_MAX_DOCUMENT_BYTES
    assert "s-big" in str(err.value) and str(err.value.size) in str(err.value)
    assert proxy.ops() == {}
    assert await storage.load("s-big") is None


async def test_the_whole_document_is_checked_against_the_cosmos_item_limit(
        storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    """The checkpoint is stored as JSON text: quotes are escaped again, which can double its size."""
    quoted = checkpoint("s-quotes", shared_state={"blob": '"' * 900_000})
    assert len(quoted.model_dump_json()) < storage.max_document_bytes  # the checkpoint alone is allowed
    with pytest.raises(CheckpointTooLargeError) as err:
        await storage.save(quoted, expected_version=None)
    assert err.value.limit == COSMOS_ITEM_LIMIT_BYTES - SYSTEM_PROPERTIES_BYTES
    assert err.value.size > 3_600_000 and err.value.session_id == "s-quotes"
    assert proxy.ops() == {}
    # what is sent is what was measured: a document just under the item limit is accepted
    fits = checkpoint("s-fits", shared_state={"blob": '"' * 520_000})
    await storage.save(fits, expected_version=None)
    doc = await raw(storage, "s-fits")
    user = {k: v for k, v in doc.items() if k not in ("_rid", "_self", "_etag", "_ts")}
    assert len(json.dumps(user, separators=(",", ":"), ensure_ascii=False).encode()) < COSMOS_ITEM_LIMIT_BYTES


async def test_integers_beyond_double_precision_survive(storage: CosmosDBCheckpointStorage) -> None:
    cp = checkpoint("s-int", shared_state={"big": 2**63 + 7, "neg": -(2**62) - 1, "f": 0.1},
                    requests=[pending("c1")])
    cp.pending_requests[0].request = {"id": 2**60 + 1}
    record = audit("s-int", 1).model_copy(update={"detail": {"n": 2**55 + 1}})
    await storage.save(cp, expected_version=None, audit=[record])
    loaded = await storage.load("s-int")
    assert loaded is not None and loaded.checkpoint.shared_state["big"] == 2**63 + 7
    [entry] = (await storage.list_pending_requests()).items
    assert entry.request.request == {"id": 2**60 + 1}
    [stored_record] = await storage.list_audit("s-int")
    assert stored_record.detail == {"n": 2**55 + 1}


async def test_near_limit_document_is_written(storage: CosmosDBCheckpointStorage) -> None:
    cp = checkpoint("s-1.9mb", shared_state={"blob": "z" * 1_900_000})
    version = await storage.save(cp, expected_version=None)
    loaded = await storage.load("s-1.9mb")
    assert loaded is not None and loaded.version == version
    assert len(loaded.checkpoint.shared_state["blob"]) == 1_900_000


# -- errors: throttling, unavailability, connection failures -----------------------------------
async def test_429_is_retried_by_the_sdk_honouring_retry_after(storage: CosmosDBCheckpointStorage,
                                                               proxy: CosmosProxy) -> None:
    proxy.fail("create", 429, times=2, retry_after_ms=20)
    started = time.monotonic()
    await storage.save(checkpoint("s-429"), expected_version=None)
    assert time.monotonic() - started >= 0.04
    creates = [r for r in proxy.requests if r.kind == "create"]
    assert [r.status for r in creates] == [429, 429, 201]
    assert storage.ops["create"] == 1  # one logical operation


async def test_persistent_429_becomes_storage_unavailable_with_retry_after(
        storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    v1 = await storage.save(checkpoint("s-429b"), expected_version=None)
    proxy.fail("replace", 429, times=-1, retry_after_ms=250)
    with pytest.raises(StorageUnavailableError) as err:
        await storage.save(checkpoint("s-429b"), expected_version=v1)
    assert err.value.retry_after == pytest.approx(0.25)
    assert "429" in str(err.value) and "s-429b" in str(err.value)
    assert len([r for r in proxy.requests if r.kind == "replace"]) == 3  # the SDK's policy: 1 + retry_total
    loaded = await storage.load("s-429b")
    assert loaded is not None and loaded.version == v1


@pytest.mark.parametrize("kind", ["read", "replace", "query"])
async def test_503_becomes_storage_unavailable(kind: str, storage: CosmosDBCheckpointStorage,
                                               proxy: CosmosProxy) -> None:
    v1 = await storage.save(checkpoint("s-503"), expected_version=None)
    proxy.fail(kind, 503, times=-1)
    with pytest.raises(StorageUnavailableError) as err:
        if kind == "read":
            await storage.load("s-503")
        elif kind == "replace":
            await storage.save(checkpoint("s-503"), expected_version=v1)
        else:
            await storage.list_pending_requests()
    assert "503" in str(err.value)


@pytest.mark.parametrize("kind", ["read", "replace"])
async def test_one_503_is_retried_by_the_sdk_on_the_azure_path(kind: str, make_storage: StorageFactory,
                                                              azure_proxy: CosmosProxy) -> None:
    """The SDK retries a 503 once in the same region (a 503 means the request was not processed)."""
    storage = await make_storage(azure_proxy, azure=True)
    v1 = await storage.save(checkpoint("s-503r"), expected_version=None)
    azure_proxy.fail(kind, 503, times=1)
    if kind == "read":
        assert await storage.load("s-503r") is not None
    else:
        await storage.save(checkpoint("s-503r", status="completed", requests=[]), expected_version=v1)
    assert [r.status for r in azure_proxy.requests if r.kind == kind] == [503, 200]
    assert storage.ops[kind] == 1


async def test_without_endpoint_discovery_the_sdk_does_not_retry_a_503(storage: CosmosDBCheckpointStorage,
                                                                      proxy: CosmosProxy) -> None:
    """Stand-in mode turns endpoint discovery off, and with it the SDK's 503 retry: one attempt."""
    await storage.save(checkpoint("s-503s"), expected_version=None)
    proxy.fail("read", 503, times=1)
    with pytest.raises(StorageUnavailableError):
        await storage.load("s-503s")
    assert [r.status for r in proxy.requests if r.kind == "read"] == [503]
    assert await storage.load("s-503s") is not None


async def test_unreachable_account_is_storage_unavailable(cosmos_server: CosmosStandIn) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # stand_in=True with an explicit container: nothing is created, the first request is the read
    storage = CosmosDBCheckpointStorage.from_endpoint(
        f"http://127.0.0.1:{port}", key=cosmos_server.key, create_if_missing=False,
        retry_total=0, connection_timeout=2)
    try:
        with pytest.raises(StorageUnavailableError):
            await storage.load("anything")
    finally:
        await storage.close()


# -- ids --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("session_id", ["a/b", "x?y#z\\w", "p%2Fq", "audit:1:0000000001", "ünï ☃", "k" * 300,
                                        "..", "tab\tand\nnewline", "trailing "])
async def test_any_session_id_round_trips(session_id: str, storage: CosmosDBCheckpointStorage) -> None:
    version = await storage.save(checkpoint(session_id), expected_version=None, audit=[audit(session_id, 1)])
    loaded = await storage.load(session_id)
    assert loaded is not None and loaded.version == version and loaded.checkpoint.session_id == session_id
    assert [r.seq for r in await storage.list_audit(session_id)] == [1]
    assert [s.session_id for s in (await storage.list_sessions()).items] == [session_id]
    assert await storage.delete(session_id) is True
    assert await storage.load(session_id) is None


def test_item_ids_are_escaped_only_where_cosmos_needs_it() -> None:
    assert session_item_id("workflow-123") == "workflow-123"
    assert session_item_id("a/b") == "a%2Fb"
    assert session_item_id("a%2Fb") == "a%252Fb"
    assert session_item_id("audit:1") == "audit%3A1"
    assert session_item_id("tab\there") == "tab%09here"
    assert session_item_id("..").startswith("sha256%") and session_item_id("trailing ").startswith("sha256%")
    assert len(session_item_id("k" * 300)) <= 255


# -- delete and audit -------------------------------------------------------------------------------
async def test_delete_removes_session_and_audit_trail(storage: CosmosDBCheckpointStorage) -> None:
    v1 = await storage.save(checkpoint("s-del"), expected_version=None, audit=[audit("s-del", 1)])
    await storage.save(checkpoint("s-keep"), expected_version=None, audit=[audit("s-keep", 1)])
    with pytest.raises(ConcurrencyError):
        await storage.delete("s-del", expected_version="not-the-etag")
    assert await storage.delete("s-del", expected_version=v1) is True
    assert await storage.load("s-del") is None
    assert await storage.list_audit("s-del") == []
    assert await raw_all(storage, "s-del") == []
    assert await storage.delete("s-del") is False
    assert [r.seq for r in await storage.list_audit("s-keep")] == [1]


async def test_audit_records_come_back_in_order(storage: CosmosDBCheckpointStorage) -> None:
    version = await storage.save(checkpoint("s-aud"), expected_version=None, audit=[audit("s-aud", 1)])
    for seq in (2, 3, 4):
        version = await storage.save(checkpoint("s-aud"), expected_version=version,
                                     audit=[audit("s-aud", seq, action=f"a{seq}")])
    records = await storage.list_audit("s-aud")
    assert [(r.seq, r.action) for r in records] == [(1, "decision"), (2, "a2"), (3, "a3"), (4, "a4")]
    assert records[0] == audit("s-aud", 1)


async def test_queries_stay_in_their_partition(storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    """The stand-in does not scope ``partition_key=`` queries: the storage must filter by session."""
    await storage.save(checkpoint("s-p1"), expected_version=None, audit=[audit("s-p1", 1)])
    await storage.save(checkpoint("s-p2"), expected_version=None, audit=[audit("s-p2", 1), audit("s-p2", 2)])
    proxy.clear()
    assert [r.session_id for r in await storage.list_audit("s-p1")] == ["s-p1"]
    [query] = [r for r in proxy.requests if r.kind == "query"]
    assert query.partition_key == '["s-p1"]'


# -- inbox and listing ----------------------------------------------------------------------------
def _dataset(seed: int) -> list[WorkflowCheckpoint]:
    rnd = random.Random(seed)
    people = ["alice", "bob", "carol"]
    cps = []
    for i in range(14):
        n = rnd.choice([0, 1, 1, 2, 3])
        reqs = [pending(f"c{j}", minutes=rnd.choice([0, 1, 2, 5, 5, 9]) + (j % 2) * rnd.choice([0, 7]),
                        approvers=tuple(rnd.sample(people, rnd.randint(0, 2)))) for j in range(n)]
        cps.append(checkpoint(f"s{rnd.randint(0, 99):02d}-{i}", workflow=rnd.choice(["expense", "travel"]),
                              status="pending" if reqs else rnd.choice(["completed", "running"]), requests=reqs))
    return cps


async def _all_pages(store: Any, method: str, limit: int, **filters: Any) -> list[list[Any]]:
    pages, token = [], None
    for _ in range(100):
        page = await getattr(store, method)(limit=limit, continuation=token, **filters)
        pages.append(page.items)
        token = page.continuation
        if token is None:
            return pages
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_inbox_matches_the_reference_backend_page_by_page(seed: int,
                                                                storage: CosmosDBCheckpointStorage) -> None:
    reference = InMemoryCheckpointStorage()
    for cp in _dataset(seed):
        await reference.save(cp, expected_version=None)
        await storage.save(cp, expected_version=None)
    filter_sets: list[dict[str, Any]] = [
        {}, {"workflow": "travel"}, {"assignee": "bob"}, {"workflow": "expense", "assignee": "carol"},
        {"assignee": "nobody"}, {"assignees": ["alice", "carol"]}, {"assignees": ["bob", "carol", "alice"]},
        {"assignees": ["carol", "bob"], "workflow": "expense"}, {"assignees": ["nobody", "alice"]},
        {"assignees": ["nobody", "noone"]},
    ]
    for filters in filter_sets:
        for limit in (1, 2, 3, 50):
            expected = await _all_pages(reference, "list_pending_requests", limit, **filters)
            got = await _all_pages(storage, "list_pending_requests", limit, **filters)
            assert got == expected, (filters, limit)
            first_ref = await reference.list_pending_requests(limit=limit, **filters)
            first = await storage.list_pending_requests(limit=limit, **filters)
            assert first.continuation == first_ref.continuation  # the same keyset token


async def test_inbox_orders_requests_across_sessions(storage: CosmosDBCheckpointStorage,
                                                     proxy: CosmosProxy) -> None:
    await storage.save(checkpoint("A", requests=[pending("a1", minutes=1), pending("a2", minutes=5)]),
                       expected_version=None)
    await storage.save(checkpoint("B", requests=[pending("b1", minutes=3)]), expected_version=None)
    await storage.save(checkpoint("C", requests=[pending("c1", minutes=3)]), expected_version=None)
    await storage.save(checkpoint("D", status="completed", requests=[]), expected_version=None)
    proxy.clear()
    page = await storage.list_pending_requests(limit=3)
    assert [(e.session_id, e.request.call_id) for e in page.items] == [("A", "a1"), ("B", "b1"), ("C", "c1")]
    assert all(e.workflow == "expense" and e.request.request == {"amount": 42, "call": e.request.call_id}
               for e in page.items)
    assert storage.ops["query"] == 1
    rest = await storage.list_pending_requests(limit=3, continuation=page.continuation)
    assert [(e.session_id, e.request.call_id) for e in rest.items] == [("A", "a2")]
    assert rest.continuation is None
    queries = [r for r in proxy.requests if r.kind == "query"]
    assert queries and all(q.cross_partition for q in queries)


async def test_inbox_page_reads_little_beyond_the_page(storage: CosmosDBCheckpointStorage,
                                                       proxy: CosmosProxy) -> None:
    """With 60 waiting sessions, a page of 3 stops after the first result page of the query."""
    for n in range(60):
        await storage.save(checkpoint(f"w-{n:02d}", requests=[pending("c1", minutes=n), pending("c2", minutes=n + 1)]),
                           expected_version=None)
    storage.ops.clear()
    proxy.clear()
    page = await storage.list_pending_requests(limit=3)
    assert [(e.session_id, e.request.call_id) for e in page.items] == [("w-00", "c1"), ("w-00", "c2"),
                                                                       ("w-01", "c1")]
    assert storage.ops == {"query": 1} and proxy.ops() == {"query": 1}
    page = await storage.list_pending_requests(limit=3, continuation=page.continuation)
    assert [(e.session_id, e.request.call_id) for e in page.items] == [("w-01", "c2"), ("w-02", "c1"),
                                                                       ("w-02", "c2")]
    assert storage.ops == {"query": 2}


async def test_inbox_query_is_parameterised(storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    evil = "x' OR 1=1 --"
    await storage.save(checkpoint("s-q", requests=[pending("c1", approvers=("bob",))]), expected_version=None)
    proxy.clear()
    assert (await storage.list_pending_requests(workflow=evil, assignee=evil)).items == []
    [query] = [r for r in proxy.requests if r.kind == "query"]
    assert evil.encode() not in query.body.split(b'"parameters"')[0]


async def test_multi_key_inbox_is_one_parameterised_cross_partition_query(
        storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    evil = ["x' OR 1=1 --", "role:\") OR true OR (\"", "user:amy"]
    await storage.save(checkpoint("s-m1", requests=[pending("c1", approvers=("user:amy", "role:fin"))]),
                       expected_version=None)
    await storage.save(checkpoint("s-m2", requests=[pending("c1", minutes=1, approvers=("role:hr",))]),
                       expected_version=None)
    proxy.clear()
    storage.ops.clear()
    page = await storage.list_pending_requests(assignees=evil, workflow="expense")
    assert [(e.session_id, e.request.call_id) for e in page.items] == [("s-m1", "c1")]
    assert storage.ops == {"query": 1}
    [query] = [r for r in proxy.requests if r.kind == "query"]
    assert query.cross_partition
    sent = json.loads(query.body)
    assert "(ARRAY_CONTAINS(c.assignees, @a0) OR ARRAY_CONTAINS(c.assignees, @a1) OR " \
           "ARRAY_CONTAINS(c.assignees, @a2))" in sent["query"]
    for key in evil:
        assert key not in sent["query"]
    assert {"name": "@a0", "value": evil[0]} in sent["parameters"]


async def test_the_server_applies_the_assignee_clause(storage: CosmosDBCheckpointStorage, proxy: CosmosProxy) -> None:
    """The stand-in evaluates the OR'ed ARRAY_CONTAINS itself: sessions naming none of the keys never come back."""
    await storage.save(checkpoint("s-a", requests=[pending("c1", approvers=("user:amy",))]), expected_version=None)
    await storage.save(checkpoint("s-b", requests=[pending("c1", approvers=("role:fin", "role:hr"))]),
                       expected_version=None)
    await storage.save(checkpoint("s-c", requests=[pending("c1", approvers=("role:hr",))]), expected_version=None)
    await storage.save(checkpoint("s-d", requests=[pending("c1", approvers=())]), expected_version=None)
    proxy.clear()
    page = await storage.list_pending_requests(assignees=["user:amy", "role:fin"])
    assert [e.session_id for e in page.items] == ["s-a", "s-b"]
    [query] = [r for r in proxy.requests if r.kind == "query"]
    sent = json.loads(query.body)
    container = await storage._ready()
    rows = [row async for row in container.query_items(sent["query"], parameters=sent["parameters"])]
    assert sorted(row["session_id"] for row in rows) == ["s-a", "s-b"]


async def test_inbox_assignee_arguments_are_checked_before_any_request(storage: CosmosDBCheckpointStorage,
                                                                       proxy: CosmosProxy) -> None:
    proxy.clear()
    with pytest.raises(ValueError, match="not both"):
        await storage.list_pending_requests(assignee="user:amy", assignees=["role:fin"])
    with pytest.raises(ValueError, match="at most 50"):
        await storage.list_pending_requests(assignees=[f"role:r{n}" for n in range(51)])
    with pytest.raises(TypeError):
        await storage.list_pending_requests(assignees="user:amy")
    assert (await storage.list_pending_requests(assignees=[])).items == []
    assert proxy.ops() == {}


async def test_inbox_rejects_a_foreign_continuation(storage: CosmosDBCheckpointStorage) -> None:
    with pytest.raises(InvalidContinuationError):
        await storage.list_pending_requests(continuation="not-a-token")
    with pytest.raises(InvalidContinuationError):
        await storage.list_sessions(continuation="not-a-token")
    assert (await storage.list_pending_requests(limit=0)).items == []


@pytest.mark.parametrize("seed", [4, 5])
async def test_list_sessions_matches_the_reference_backend(seed: int, storage: CosmosDBCheckpointStorage) -> None:
    reference = InMemoryCheckpointStorage()
    for cp in _dataset(seed):
        await reference.save(cp, expected_version=None)
        await storage.save(cp, expected_version=None)
    for filters in ({}, {"workflow": "expense"}, {"status": "pending"}, {"workflow": "travel", "status": "completed"}):
        for limit in (1, 4, 100):
            assert (await _all_pages(storage, "list_sessions", limit, **filters)
                    == await _all_pages(reference, "list_sessions", limit, **filters)), (filters, limit)


# -- construction -----------------------------------------------------------------------------------
async def test_from_settings(cosmos_server: CosmosStandIn) -> None:
    settings = Settings(storage="cosmos", cosmos_endpoint=cosmos_server.endpoint, cosmos_key=cosmos_server.key,
                        cosmos_database="hitl-settings", cosmos_container="sessions", cosmos_verify_tls=False,
                        audit_ttl_seconds=86_400)
    storage = CosmosDBCheckpointStorage.from_settings(settings)
    try:
        assert storage.stand_in and not storage.transactional_batch  # loopback endpoint
        assert storage.audit_ttl_seconds == 86_400
        await storage.save(checkpoint("s-set"), expected_version=None, audit=[audit("s-set", 1)])
        [audit_doc] = [d for d in await raw_all(storage, "s-set") if d["kind"] == "audit"]
        assert audit_doc["ttl"] == 86_400
    finally:
        await storage.close()
    with pytest.raises(SettingsError, match="HITL_COSMOS_ENDPOINT"):
        CosmosDBCheckpointStorage.from_settings(Settings(storage="sqlite"))


async def test_existing_container_client_can_be_passed_in(make_storage: StorageFactory,
                                                           proxy: CosmosProxy) -> None:
    owner = await make_storage(proxy)
    container = await owner._ready()
    shared = CosmosDBCheckpointStorage(container, stand_in=True)
    await shared.save(checkpoint("s-shared"), expected_version=None)
    assert await owner.load("s-shared") is not None
    await shared.close()  # does not close a client it did not create
    assert await owner.load("s-shared") is not None


class _StaticToken:
    """A token credential for the stand-in (which ignores auth): proves the AAD code path, offline."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []
        self.closed = False

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("token-for-the-stand-in", int(time.time()) + 3600)

    async def close(self) -> None:
        self.closed = True


async def test_token_credential_path() -> None:
    """An Azure AD token credential (what managed identity gives) against the stand-in over HTTPS.

    The SDK refuses to send a bearer token over plain HTTP, so this test starts its own stand-in
    with TLS (self-signed certificate, hence ``verify_tls=False``).
    """
    credential = _StaticToken()
    with cosmos_stand_in(tls=True) as server:
        assert server.endpoint.startswith("https://127.0.0.1:")
        storage = CosmosDBCheckpointStorage.from_endpoint(server.endpoint, credential=credential, verify_tls=False)
        try:
            await storage.save(checkpoint("s-aad"), expected_version=None)
            assert await storage.load("s-aad") is not None
            assert credential.scopes and credential.scopes[0][0].startswith("https://")
        finally:
            await storage.close()
    assert not credential.closed  # not the storage's to close


async def test_default_azure_credential_without_key() -> None:
    from azure.identity.aio import DefaultAzureCredential

    storage = CosmosDBCheckpointStorage.from_endpoint("https://example-account.documents.azure.com:443/")
    assert isinstance(storage._credential, DefaultAzureCredential)
    assert not storage.stand_in and storage.transactional_batch
    await storage.close()  # closes the credential it created; no request was sent


def test_loopback_detection() -> None:
    assert is_loopback_endpoint("http://127.0.0.1:8081")
    assert is_loopback_endpoint("https://localhost:8081/")
    assert is_loopback_endpoint("http://[::1]:8081")
    assert not is_loopback_endpoint("https://acct.documents.azure.com:443/")


def test_importing_hitl_core_loads_no_cosmos_sdk() -> None:
    """The Cosmos backend is exposed lazily: only using it imports azure.cosmos / azure.identity."""
    code = ("import sys, hitl_core, hitl_core.checkpoint; "
            "print(sorted(m for m in sys.modules if m.startswith(('azure.cosmos', 'azure.identity'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys, hitl_core.checkpoint as c; c.CosmosDBCheckpointStorage; "
            "print('azure.cosmos' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


async def test_a_missing_container_is_a_clear_error(cosmos_server: CosmosStandIn) -> None:
    storage = CosmosDBCheckpointStorage.from_endpoint(cosmos_server.endpoint, key=cosmos_server.key,
                                                      database="nowhere", container="missing",
                                                      create_if_missing=False)
    try:
        with pytest.raises(StorageError, match="container 'missing' of database 'nowhere' does not exist"):
            await storage.load("s-1")
        assert storage.ops["read"] == 0  # nothing was read as "session not found"
    finally:
        await storage.close()
