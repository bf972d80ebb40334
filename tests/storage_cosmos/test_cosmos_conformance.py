"""The shared storage conformance suite (``hitl_core.testing``) against the Cosmos DB backend.

Runs every check twice on the local stand-in: as the app runs against the stand-in
(``stand_in=True``: audit records written after the session document) and on the Azure code path
(``stand_in=False``: transactional batches, 404 for a missing read), the latter through the
recording proxy that makes the stand-in answer like Azure where it has gaps (see
``cosmos_proxy.py``). Each check gets a fresh container. Expiry is driven by the suite's manual
clock (the storage honours ``expires_at`` on its clock) and the stored ``ttl`` is probed too,
because the stand-in never deletes expired documents.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hitl_core.checkpoint.base import CheckpointStorage
from hitl_core.checkpoint.cosmos import CosmosDBCheckpointStorage, session_item_id
from hitl_core.testing import CHECKS, Backend, Check, ManualClock, check_id

from .conftest import StorageFactory
from .cosmos_proxy import CosmosProxy


@pytest.fixture(params=["stand_in", "azure"])
async def backend(request: pytest.FixtureRequest, make_storage: StorageFactory, proxy: CosmosProxy,
                  azure_proxy: CosmosProxy) -> AsyncIterator[Backend]:
    azure = request.param == "azure"
    wire = azure_proxy if azure else proxy
    clock = ManualClock()
    storage = await make_storage(wire, azure=azure, clock=clock)

    async def ttl_probe(session_id: str) -> float | None:
        container = await storage._ready()
        doc = await container.read_item(session_item_id(session_id), partition_key=session_id)
        ttl = doc.get("ttl")
        return float(ttl) if ttl is not None else None

    async def second() -> CheckpointStorage:
        """Another process's view: its own client on the same container."""
        other: CosmosDBCheckpointStorage = await make_storage(wire, azure=azure, clock=clock,
                                                              container=storage._container_name)
        return other

    yield Backend(f"cosmos-{request.param}", storage, clock=clock, ttl_probe=ttl_probe, second_storage=second)


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
async def test_conformance(backend: Backend, check: Check) -> None:
    await check(backend)
