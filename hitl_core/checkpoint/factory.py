"""Build the configured checkpoint storage from settings (the only place that chooses)."""

from __future__ import annotations

from ..settings import Settings
from .base import CheckpointStorage
from .file import FileCheckpointStorage
from .memory import InMemoryCheckpointStorage
from .sqlite import SqliteCheckpointStorage


def storage_from_settings(settings: Settings) -> CheckpointStorage:
    """``HITL_STORAGE`` = sqlite (default) | file | memory | redis | cosmos."""
    if settings.storage == "sqlite":
        return SqliteCheckpointStorage(settings.data_dir / "checkpoints.db")
    if settings.storage == "file":
        return FileCheckpointStorage(storage_path=settings.data_dir / "checkpoints")
    if settings.storage == "memory":
        return InMemoryCheckpointStorage()
    if settings.storage == "redis":
        from .redis import RedisCheckpointStorage

        return RedisCheckpointStorage.from_settings(settings)
    from .cosmos import CosmosDBCheckpointStorage

    return CosmosDBCheckpointStorage.from_settings(settings)
