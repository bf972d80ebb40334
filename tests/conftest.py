"""Fixtures shared by every test folder."""

from __future__ import annotations

import os

# The Durable SDK runs in strict typing mode in every test and in every subprocess the tests start
# (they copy os.environ): ``df_loads`` never rebuilds custom objects from ``sys.modules`` and never
# emits its "called without expected_type" advisory; ``df_dumps`` refuses values that are not plain
# JSON. ``azure.functions._durable_functions`` reads the variable on every call, so setting it
# here - before any test module is collected - covers the whole session.
os.environ["AZURE_FUNCTIONS_DURABLE_STRICT_TYPING"] = "1"

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hitl_core import CheckpointStorage, FileCheckpointStorage, InMemoryCheckpointStorage, SqliteCheckpointStorage
from tests.support.cosmos_server import CosmosStandIn, cosmos_stand_in
from tests.support.redis_server import RedisServer, redis_server


@pytest.fixture(params=["memory", "sqlite", "file"])
async def local_storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CheckpointStorage]:
    """Each embedded backend in turn (the engine must behave the same on all of them)."""
    storage: CheckpointStorage
    if request.param == "memory":
        storage = InMemoryCheckpointStorage()
    elif request.param == "sqlite":
        storage = SqliteCheckpointStorage(tmp_path / "hitl.db")
    else:
        storage = FileCheckpointStorage(storage_path=tmp_path / "checkpoints")
    yield storage
    await storage.close()


@pytest.fixture
async def sqlite_storage(tmp_path: Path) -> AsyncIterator[SqliteCheckpointStorage]:
    storage = SqliteCheckpointStorage(tmp_path / "hitl.db")
    yield storage
    await storage.close()


@pytest.fixture(scope="session")
def redis_server_process() -> Iterator[RedisServer]:
    """One real redis-server for the test session (installed with apt-get if missing)."""
    with redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_url(redis_server_process: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's redis-server."""
    return redis_server_process.url


@pytest.fixture(scope="session")
def cosmos_server() -> Iterator[CosmosStandIn]:
    """One Cosmos DB stand-in (npm @vercel/cosmosdb-server, installed on first use) per test session."""
    with cosmos_stand_in() as server:
        yield server
