"""Call the registered user functions directly, as the Functions host would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from hitl_core.events import InMemoryEventPublisher
from hitl_core.functions import get_runtime, reset_runtime
from hitl_core.functions.runtime import close_runtime

_FUNCTIONS: dict[str, Any] = {}


def app_functions() -> dict[str, Any]:
    """name -> user function of function_app.app (get_functions() may be called once per app)."""
    if not _FUNCTIONS:
        import function_app

        function_app.app.functions_bindings = None  # the worker stage may have indexed the app already
        for f in function_app.app.get_functions():
            _FUNCTIONS[f.get_function_name()] = f.get_user_function()
    return _FUNCTIONS


async def app_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      **env: str) -> AsyncIterator[InMemoryEventPublisher]:
    """A fresh service on SQLite in tmp_path, dev auth, events captured in memory (plus ``env``)."""
    monkeypatch.setenv("HITL_STORAGE", "sqlite")
    monkeypatch.setenv("HITL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HITL_AUTH_MODE", "dev")
    monkeypatch.delenv("HITL_EVENTGRID_TOPIC_ENDPOINT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app_functions()
    reset_runtime()
    publisher = InMemoryEventPublisher()
    get_runtime().service.publisher = publisher
    yield publisher
    await close_runtime()


@pytest.fixture
async def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InMemoryEventPublisher]:
    """The service with no directory configured: a person is whoever signs in."""
    async for publisher in app_runtime(tmp_path, monkeypatch):
        yield publisher


def http(method: str, url: str, *, body: Any = None, raw: bytes | None = None, route: dict[str, str] | None = None,
         params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    hdrs = {"content-type": "application/json"} if data and raw is None else {}
    hdrs.update(DEFAULT_IDENTITY)
    hdrs.update(headers or {})
    return func.HttpRequest(method=method, url=url, headers=hdrs, params=params or {}, route_params=route or {},
                            body=data)


#: Who calls when a test does not say: a reviewer who is also admin and auditor (no directory is
#: configured here, so the dev header's roles count). Tests about authorisation name their caller.
DEFAULT_IDENTITY = {"x-hitl-user": "tess", "x-hitl-roles": "reviewers,admins,auditors"}

Call = Callable[..., Any]


async def call(name: str, req: func.HttpRequest) -> tuple[int, dict[str, Any] | str, func.HttpResponse]:
    response: func.HttpResponse = await app_functions()[name](req)
    text = response.get_body().decode()
    try:
        return response.status_code, json.loads(text), response
    except ValueError:
        return response.status_code, text, response
