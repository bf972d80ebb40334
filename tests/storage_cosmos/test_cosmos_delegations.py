"""Delegations on Cosmos DB: one fixed partition, one request per operation, TTL from ends_at.

The behaviour every backend shares is in the conformance suite (``check_delegation_*``); these tests
pin down what is specific to Cosmos: the document layout, that listing is a single-partition query
with its values as parameters, the number of requests each operation costs, and the per-item ``ttl``.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from hitl_core.checkpoint.cosmos import DELEGATIONS_PARTITION, CosmosDBCheckpointStorage, delegation_item_id
from hitl_core.checkpoint.models import Delegation
from hitl_core.errors import ConcurrencyError
from hitl_core.testing import ManualClock, make_checkpoint, make_request
from hitl_core.testing.conformance import make_delegation

from .conftest import StorageFactory
from .cosmos_proxy import CosmosProxy


def _now(clock: ManualClock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock(), dt.UTC)


async def test_a_delegation_is_one_document_in_the_delegations_partition(make_storage: StorageFactory,
                                                                          proxy: CosmosProxy) -> None:
    clock = ManualClock()
    storage = await make_storage(proxy, clock=clock)
    delegation = make_delegation("amy", "ron", now=_now(clock), ends_in=3 * 86_400 + 0.25)
    version = await storage.save_delegation(delegation, expected_version=None)
    container = await storage._ready()
    doc = await container.read_item(delegation_item_id("amy"), partition_key=DELEGATIONS_PARTITION)
    assert doc["session_id"] == DELEGATIONS_PARTITION == "~delegations"
    assert doc["kind"] == "delegation" and doc["id"] == "delegation:amy"
    assert (doc["delegator"], doc["delegate"]) == ("amy", "ron")
    assert doc["expires_at"] == delegation.ends_at.timestamp()
    assert doc["ttl"] == 3 * 86_400 + 1  # Cosmos counts it from the write: rounded up, never early
    assert Delegation.model_validate_json(doc["delegation"]) == delegation
    assert version == f"{doc['_etag']}~{delegation.ends_at.timestamp()!r}"


async def test_each_operation_is_one_request_and_listing_never_fans_out(make_storage: StorageFactory,
                                                                         proxy: CosmosProxy) -> None:
    clock = ManualClock()
    storage = await make_storage(proxy, clock=clock)
    now = _now(clock)
    v1 = await storage.save_delegation(make_delegation("amy", "ron", now=now), expected_version=None)
    assert dict(storage.ops) == {"create": 1}
    storage.ops.clear()
    assert await storage.load_delegation("amy") is not None
    assert dict(storage.ops) == {"read": 1}
    storage.ops.clear()
    await storage.save_delegation(make_delegation("amy", "sam", now=now), expected_version=v1)
    assert dict(storage.ops) == {"replace": 1}  # If-Match: no read first
    await storage.save_delegation(make_delegation("bob", "sam", now=now), expected_version=None)
    storage.ops.clear()
    proxy.clear()
    listed = await storage.list_delegations(delegate="sam")
    assert [d.delegator for d in listed] == ["amy", "bob"]
    assert dict(storage.ops) == {"query": 1}
    queries = [r for r in proxy.requests if r.kind == "query"]
    assert len(queries) == 1 and not queries[0].cross_partition
    assert json.loads(queries[0].partition_key or "null") == [DELEGATIONS_PARTITION]
    body = json.loads(queries[0].body)
    assert "@delegate" in body["query"] and "sam" not in body["query"]  # values travel as parameters
    assert {p["name"]: p["value"] for p in body["parameters"]}["@delegate"] == "sam"
    storage.ops.clear()
    assert await storage.delete_delegation("bob") is True
    assert dict(storage.ops) == {"read": 1, "delete": 1}


async def test_delegations_never_show_as_sessions_or_in_the_inbox(storage: CosmosDBCheckpointStorage) -> None:
    now = dt.datetime.now(dt.UTC)
    await storage.save(make_checkpoint("s-1", requests=[make_request("c1", approvers=["ron"])]), expected_version=None)
    await storage.save_delegation(make_delegation("amy", "ron", now=now), expected_version=None)
    assert [s.session_id for s in (await storage.list_sessions()).items] == ["s-1"]
    assert [e.session_id for e in (await storage.list_pending_requests()).items] == ["s-1"]
    assert await storage.load(DELEGATIONS_PARTITION) is None
    assert await storage.delete("amy") is False and await storage.load_delegation("amy") is not None


async def test_a_far_end_gets_no_ttl_and_an_ended_one_the_shortest(make_storage: StorageFactory) -> None:
    clock = ManualClock()
    storage = await make_storage(clock=clock)
    now = _now(clock)
    far_end = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
    await storage.save_delegation(make_delegation("amy", "ron", now=now, ends_at=far_end), expected_version=None)
    await storage.save_delegation(make_delegation("bob", "ron", now=now, ends_in=-60), expected_version=None)
    container = await storage._ready()
    far = await container.read_item(delegation_item_id("amy"), partition_key=DELEGATIONS_PARTITION)
    ended = await container.read_item(delegation_item_id("bob"), partition_key=DELEGATIONS_PARTITION)
    assert "ttl" not in far  # over Cosmos' largest ttl: expires_at alone ends it
    assert ended["ttl"] == 1
    assert [d.delegator for d in await storage.list_delegations()] == ["amy"]


@pytest.mark.parametrize("delegator", ["a" * 300, "..", "x/y\\z?#", "sha256%" + "0" * 64])
async def test_any_delegator_gets_a_valid_distinct_id(delegator: str, storage: CosmosDBCheckpointStorage) -> None:
    item_id = delegation_item_id(delegator)
    assert item_id.startswith("delegation:") and len(item_id) <= 255 and not any(c in item_id for c in "/\\?#")
    now = dt.datetime.now(dt.UTC)
    v1 = await storage.save_delegation(make_delegation(delegator, "ron", now=now), expected_version=None)
    with pytest.raises(ConcurrencyError):
        await storage.save_delegation(make_delegation(delegator, "sam", now=now), expected_version=None)
    stored = await storage.load_delegation(delegator)
    assert stored is not None and stored.version == v1 and stored.delegation.delegator == delegator


async def test_a_version_with_a_rewritten_expiry_matches_nothing(make_storage: StorageFactory) -> None:
    """``<etag>~1.50`` names the same instant as ``<etag>~1.5`` but was never issued: a conflict."""
    clock = ManualClock()
    storage = await make_storage(clock=clock)
    now = _now(clock)
    v1 = await storage.save_delegation(make_delegation("amy", "ron", now=now, ends_in=100.5), expected_version=None)
    assert v1.endswith(".5")
    with pytest.raises(ConcurrencyError) as err:
        await storage.save_delegation(make_delegation("amy", "sam", now=now), expected_version=v1 + "0")
    assert err.value.actual == v1
