"""Fixtures for the Cosmos DB backend: one stand-in per test session, a proxy and a container per test.

The stand-in (npm ``@vercel/cosmosdb-server``, pinned in ``tools/cosmos-stand-in``) is started once
on a loopback port by :mod:`tests.support.cosmos_server`; every test gets its own container (the
server keeps them in memory, creating one costs a millisecond), so tests never see each other's
sessions, and its own proxy (:mod:`.cosmos_proxy`) that records the requests and can inject faults.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from hitl_core.checkpoint.cosmos import CosmosDBCheckpointStorage
from tests.support.cosmos_server import CosmosStandIn

from .cosmos_proxy import CosmosProxy

# Short SDK retry budgets so that fault tests finish quickly (the policy is the SDK's own).
FAST_RETRIES: dict[str, Any] = {"retry_total": 2, "retry_backoff_max": 1, "connection_timeout": 5}

StorageFactory = Callable[..., Awaitable[CosmosDBCheckpointStorage]]


@pytest.fixture
async def proxy(cosmos_server: CosmosStandIn) -> AsyncIterator[CosmosProxy]:
    """A recording proxy in front of the raw stand-in (its quirks included)."""
    p = CosmosProxy(cosmos_server.endpoint)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def azure_proxy(cosmos_server: CosmosStandIn) -> AsyncIterator[CosmosProxy]:
    """A recording proxy that makes the stand-in answer like Azure where it has gaps (404, batch)."""
    p = CosmosProxy(cosmos_server.endpoint, emulate_azure=True)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def make_storage(cosmos_server: CosmosStandIn) -> AsyncIterator[StorageFactory]:
    """Build storages on fresh containers; every one is closed after the test."""
    made: list[CosmosDBCheckpointStorage] = []

    async def make(proxy: CosmosProxy | None = None, *, container: str | None = None,
                   azure: bool = False, **options: Any) -> CosmosDBCheckpointStorage:
        endpoint = proxy.endpoint if proxy is not None else cosmos_server.endpoint
        client_options = dict(FAST_RETRIES)
        if azure:  # the Azure code path (SDK defaults, endpoint discovery on): needs the emulate_azure proxy
            options.setdefault("stand_in", False)
            options.setdefault("create_if_missing", True)
        client_options.update(options.pop("client_options", {}))
        storage = CosmosDBCheckpointStorage.from_endpoint(
            endpoint, key=cosmos_server.key, database="hitl-tests",
            container=container or f"c-{uuid.uuid4().hex[:12]}", **options, **client_options)
        await storage.ensure_container()
        storage.ops.clear()
        if proxy is not None:
            proxy.clear()
        made.append(storage)
        return storage

    yield make
    for storage in made:
        await storage.close()


@pytest.fixture
async def storage(make_storage: StorageFactory, proxy: CosmosProxy) -> CosmosDBCheckpointStorage:
    """The storage as the app builds it for the stand-in (``stand_in`` detected from loopback)."""
    return await make_storage(proxy)
