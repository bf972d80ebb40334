"""The process-wide service the functions share, built lazily from settings.

Azure Functions runs every async function of a worker on one event loop, so one service (one
storage client, one publisher) per process is right; tests and the local host call
:func:`reset_runtime` between event loops.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint.factory import storage_from_settings
from ..events.publisher import BatchingEventPublisher, EventPublisher, NullEventPublisher
from ..links import LinkSigner
from ..registry import WorkflowSpec
from ..service import HitlService
from ..settings import Settings

logger = logging.getLogger("hitl_core.functions")

_specs: list[WorkflowSpec] = []


@dataclass
class Runtime:
    settings: Settings
    service: HitlService
    loop: asyncio.AbstractEventLoop | None
    #: The notification dispatcher (built on first use by ``notify_reviewers``), closed with the runtime.
    dispatcher: Any = None


_runtime: Runtime | None = None
_long_lived_frozen = False


def configure(specs: Sequence[WorkflowSpec]) -> None:
    """Declare the deployment's workflows (function_app.py calls this once at import)."""
    _specs.clear()
    _specs.extend(specs)
    reset_runtime()


def _dev_signing_key(data_dir: Path) -> str:
    """The local host's link-signing key: generated once per data folder, never logged."""
    path = data_dir / "link-signing.key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path.write_text(key)
    path.chmod(0o600)
    return key


def _publisher(settings: Settings) -> EventPublisher:
    if not settings.eventgrid_topic_endpoint:
        return NullEventPublisher()
    from ..events.eventgrid import EventGridEventPublisher

    return BatchingEventPublisher(
        EventGridEventPublisher(settings.eventgrid_topic_endpoint, key=settings.eventgrid_topic_key)
    )


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or Settings.from_env()
    keys = settings.link_signing_keys
    if not keys and settings.auth_mode == "dev":
        keys = (_dev_signing_key(settings.data_dir),)
    signer = LinkSigner(keys, ttl_seconds=settings.link_ttl_seconds) if keys else None
    from ..directory import directory_from_settings

    service = HitlService(settings=settings, storage=storage_from_settings(settings), publisher=_publisher(settings),
                          workflows=list(_specs), signer=signer, directory=directory_from_settings(settings))
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    return Runtime(settings=settings, service=service, loop=loop)


def get_runtime() -> Runtime:
    """The shared runtime; rebuilt if the event loop changed (tests, local host restarts)."""
    global _runtime
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if _runtime is None or (_runtime.loop is not None and loop is not None and _runtime.loop is not loop):
        _runtime = build_runtime()
        _freeze_long_lived_objects()
    return _runtime


def _freeze_long_lived_objects() -> None:
    """Once per process, after the first runtime is built: ``gc.freeze()``.

    Why: by then the worker, the SDKs, pydantic's schemas, the workflows and the runtime are all
    loaded, and they live as long as the process. A full collection walks every tracked object;
    under load two such passes paused the event loop for 80-90 ms each (measured on the local host),
    every request in flight waiting. Frozen objects are skipped by the collector (reference counting
    still frees them), so a full pass then takes a few milliseconds. Only objects made before this
    call are frozen; everything made later is collected as usual.
    """
    global _long_lived_frozen
    if not _long_lived_frozen:
        _long_lived_frozen = True
        gc.freeze()


def reset_runtime() -> None:
    global _runtime
    _runtime = None


async def close_runtime() -> None:
    global _runtime
    if _runtime is not None:
        runtime, _runtime = _runtime, None
        if runtime.dispatcher is not None:
            await runtime.dispatcher.aclose()
        await runtime.service.close()
