"""The Azure SDK clients read the proxy variables only when a proxy is configured.

aiohttp's ``trust_env`` re-reads the proxy variables and ``~/.netrc`` on every request (about a fifth
of the CPU per decision on Cosmos DB, bench/app_cost.py); without a proxy the clients skip it, with
one they honour it."""

from __future__ import annotations

import pytest

from hitl_core.checkpoint.cosmos import CosmosDBCheckpointStorage
from hitl_core.events.eventgrid import EventGridEventPublisher
from hitl_core.netaddr import PROXY_VARIABLES, proxy_configured


def _transport_trusts_env(client: object) -> bool:
    """Whether the aiohttp transport under an SDK client (however deeply wrapped) trusts the environment."""
    seen: set[int] = set()
    todo = [client]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if hasattr(node, "_use_env_settings"):
            return bool(node._use_env_settings)
        for name in ("_client", "client_connection", "pipeline_client", "_pipeline", "_transport"):
            child = getattr(node, name, None)
            if child is not None:
                todo.append(child)
    raise AssertionError(f"no transport found under {client!r}")


@pytest.mark.parametrize("proxy", [None, "http://proxy.example:3128"])
async def test_clients_read_the_environment_only_behind_a_proxy(monkeypatch: pytest.MonkeyPatch,
                                                                proxy: str | None) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
    assert proxy_configured() is bool(proxy)
    publisher = EventGridEventPublisher("https://topic.example/api/events", key="k" * 44)
    storage = CosmosDBCheckpointStorage.from_endpoint("https://account.example:443/", key="a2V5" * 11,
                                                      database="db", container="c")
    try:
        assert _transport_trusts_env(publisher) is bool(proxy)
        assert _transport_trusts_env(storage) is bool(proxy)
    finally:
        await publisher.close()
        await storage.close()
