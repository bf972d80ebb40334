"""Storage test fixtures: one ``backend`` fixture parametrized over every checkpoint backend.

How backends are registered
---------------------------
:data:`BACKEND_FACTORIES` maps a backend name (the test id) to a factory: a callable taking the
pytest ``request`` and returning an async context manager that yields a fresh, empty
:class:`hitl_core.testing.Backend` and cleans up after it. The factory pulls whatever it needs
from pytest lazily (``request.getfixturevalue("tmp_path")``, ``"redis_url"``...), so a server
starts only when a test of that backend runs.

Adding a backend without touching this file: create ``tests/storage/backends_<name>.py`` that
defines ``BACKENDS = {"<name>": factory}``. Every such module is imported here before the
``backend`` fixture is defined, its ``BACKENDS`` merged in, and any pytest fixtures it defines
(e.g. a session-scoped server) are exposed to the tests of this folder. For Cosmos DB::

    # tests/storage/backends_cosmos.py
    @asynccontextmanager
    async def cosmos_backend(request):
        endpoint = request.getfixturevalue("cosmos_endpoint")   # a fixture defined in this module
        storage = CosmosDBCheckpointStorage(...)
        yield Backend("cosmos", storage, ttl_probe=..., second_storage=...)
        await storage.close()

    BACKENDS = {"cosmos": cosmos_backend}

(The alternative is one line here: ``"cosmos": _cosmos,`` in :data:`BACKEND_FACTORIES`.)

Redis: the session-scoped ``redis_server_process`` / ``redis_url`` fixtures start one real
``redis-server`` (see ``tests/support/redis_server.py``) on a free loopback port for the whole
run; each test gets its own key prefix on it, so tests never see each other's keys. They can
move to ``tests/conftest.py`` unchanged to serve other test folders.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest
from _pytest.fixtures import getfixturemarker

from hitl_core.checkpoint import FileCheckpointStorage, InMemoryCheckpointStorage, SqliteCheckpointStorage
from hitl_core.checkpoint.base import CheckpointStorage
from hitl_core.testing import Backend, ManualClock

BackendMaker = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Backend]]


# -- backend factories ----------------------------------------------------------------------------
@asynccontextmanager
async def _memory(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    clock = ManualClock()
    storage = InMemoryCheckpointStorage(clock=clock)
    yield Backend("memory", storage, clock=clock)
    await storage.close()


@asynccontextmanager
async def _file(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    root: Path = request.getfixturevalue("tmp_path") / "files"
    clock = ManualClock()
    storage = FileCheckpointStorage(root, clock=clock)

    async def second() -> CheckpointStorage:
        return FileCheckpointStorage(root, clock=clock)

    yield Backend("file", storage, clock=clock, second_storage=second)
    await storage.close()


@asynccontextmanager
async def _sqlite(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    path: Path = request.getfixturevalue("tmp_path") / "hitl.db"
    clock = ManualClock()
    storage = SqliteCheckpointStorage(path, clock=clock)

    async def second() -> CheckpointStorage:
        return SqliteCheckpointStorage(path, clock=clock)

    yield Backend("sqlite", storage, clock=clock, second_storage=second)
    await storage.close()


@asynccontextmanager
async def _redis(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    from hitl_core.checkpoint.redis import RedisCheckpointStorage

    url: str = request.getfixturevalue("redis_url")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    storage = RedisCheckpointStorage(url, key_prefix=prefix)

    async def ttl_probe(session_id: str) -> float | None:
        millis = int(await storage.client.pttl(f"{prefix}session:{session_id}"))
        return None if millis < 0 else millis / 1000

    async def second() -> CheckpointStorage:
        return RedisCheckpointStorage(url, key_prefix=prefix)

    yield Backend("redis", storage, real_expiry=True, ttl_probe=ttl_probe, second_storage=second)
    keys = [key async for key in storage.client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await storage.client.delete(*keys)
    await storage.close()


BACKEND_FACTORIES: dict[str, BackendMaker] = {
    "memory": _memory,
    "file": _file,
    "sqlite": _sqlite,
    "redis": _redis,
    # "cosmos": registered by tests/storage/backends_cosmos.py (see the module docstring)
}


def _load_backend_modules() -> None:
    """Merge ``BACKENDS`` (and expose the fixtures) of every ``backends_*.py`` beside this file."""
    for path in sorted(Path(__file__).parent.glob("backends_*.py")):
        module = importlib.import_module(f"{__package__}.{path.stem}")
        for name, maker in getattr(module, "BACKENDS", {}).items():
            if name in BACKEND_FACTORIES:
                raise RuntimeError(f"{path.name} registers backend {name!r}, which is already registered")
            BACKEND_FACTORIES[name] = maker
        for attr, value in vars(module).items():
            if not attr.startswith("_") and attr not in globals() and getfixturemarker(value) is not None:
                globals()[attr] = value


_load_backend_modules()


@pytest.fixture(params=list(BACKEND_FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A fresh, empty storage of each registered backend in turn."""
    async with BACKEND_FACTORIES[request.param](request) as made:
        yield made

