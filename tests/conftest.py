"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hitl_core import CheckpointStorage, FileCheckpointStorage, InMemoryCheckpointStorage, SqliteCheckpointStorage


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
