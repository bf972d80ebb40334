"""Fixtures of the worker stage: the app loaded by the Azure Functions worker runtime, and the devhost.

* ``worker_app`` (session): ``function_app.py`` indexed and loaded **once** through
  ``azure-functions-runtime`` (:func:`devhost.worker.load_app_with_worker`). The runtime keeps
  module-global state (its function registry, the threadpool), and the app module is imported
  into this process, so a second load would only re-index the same module.
* ``devhost`` (module): ``python -m devhost`` serving the same app in a subprocess
  (:class:`tests.e2e.host.LocalHost`), with its local Event Grid topic, Durable runtime and SMTP
  sink.
* ``app_env`` (test): the environment of the in-process app the worker invokes, pointed at the
  devhost's data folder so both sides read and write the **same** SQLite checkpoints (a session
  started through one is read through the other), the devhost's public URL and its SMTP sink (a
  notification sent through the worker lands in the devhost's mailbox), and the same directory of
  people (devhost/demo-directory.json), so both sides know the same people and roles and a caller
  named by ``X-HITL-User`` is the same person on either. No Event Grid endpoint by default. Every
  variable is restored afterwards and the app's runtime is closed, so the in-process tests of
  ``tests/functions`` (which import the same ``function_app``) run before or after these unaffected.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devhost.worker import WorkerApp, load_app_with_worker
from hitl_core.settings import setting_names
from tests.e2e.host import LocalHost

REPO = Path(__file__).resolve().parents[2]
#: Who gets a request nobody named can be e-mailed about (the devhost's and the app's fallback).
DEFAULT_RECIPIENTS = "reviewers@worker.test"
#: The directory of people on both sides (what ``python -m devhost`` uses by default).
DIRECTORY = {"HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(REPO / "devhost" / "demo-directory.json")}


def _forget_function_names() -> None:
    """Let ``app.get_functions()`` run again on the already imported app.

    ``FunctionApp.get_functions`` records the names it built and refuses a second call with
    "does not have a unique function name". The worker's indexing calls it, and so do
    ``tests/functions`` (``app_functions()``) and the devhost's discovery; whichever runs first
    must not break the others in one pytest process.
    """
    module = sys.modules.get("function_app")
    app: Any = getattr(module, "app", None)
    if app is not None:
        app.functions_bindings = None


@pytest.fixture(scope="session")
def worker_app() -> WorkerApp:
    """``function_app.py`` as the Azure Functions Python worker indexes and loads it (once)."""
    _forget_function_names()
    loaded = asyncio.run(load_app_with_worker(REPO))
    _forget_function_names()
    return loaded


@pytest.fixture(scope="module")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    """The local development host serving the same app (subprocess), once per test module."""
    host = LocalHost(tmp_path_factory.mktemp("worker-devhost"),
                     {"HITL_NOTIFY_DEFAULT_RECIPIENTS": DEFAULT_RECIPIENTS, **DIRECTORY})
    host.start()
    try:
        yield host
    finally:
        host.stop()


@dataclass(frozen=True)
class AppEnv:
    """What the in-process app was configured with (the devhost's values where they matter)."""

    data_dir: Path
    base_url: str
    smtp_port: int
    topic_url: str
    topic_key: str


def _smtp_port(host: LocalHost) -> int:
    response = httpx.get(f"{host.base}/api/_dev/mailbox", timeout=10)
    response.raise_for_status()
    smtp = response.json()["smtp"]
    assert smtp is not None, "the devhost runs without its SMTP sink"
    return int(smtp["port"])


async def close_app_runtime() -> None:
    """Close the in-process app's service and notification dispatcher, as a stopping worker would."""
    from hitl_core.functions import reset_runtime
    from hitl_core.functions.runtime import close_runtime

    await close_runtime()
    reset_runtime()


@pytest.fixture
async def app_env(devhost: LocalHost, worker_app: WorkerApp,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[AppEnv]:
    """Settings of the in-process app: the devhost's data folder, URL, SMTP sink and directory; no topic."""
    from devhost.durable import reset_durable_sdk_session
    from devhost.eventgrid import topic_url

    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    port = _smtp_port(devhost)
    values = {
        "HITL_STORAGE": "sqlite",
        "HITL_DATA_DIR": str(devhost.data_dir),
        "HITL_AUTH_MODE": "dev",
        "HITL_PUBLIC_BASE_URL": devhost.base,
        "HITL_SMTP_HOST": "127.0.0.1",
        "HITL_SMTP_PORT": str(port),
        "HITL_SMTP_STARTTLS": "false",
        "HITL_NOTIFY_DEFAULT_RECIPIENTS": DEFAULT_RECIPIENTS,
        **DIRECTORY,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    await close_app_runtime()  # whatever an earlier test (any folder) left behind
    await reset_durable_sdk_session()
    key = (devhost.data_dir / "eventgrid-topic.key").read_text().strip()
    yield AppEnv(data_dir=devhost.data_dir, base_url=devhost.base, smtp_port=port,
                 topic_url=topic_url(devhost.base), topic_key=key)
    await close_app_runtime()
    await reset_durable_sdk_session()
