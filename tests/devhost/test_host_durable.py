"""Durable functions through the DevHost: the HTTP starter's durableClient binding, the mounted
webhook API, real timers, and a restart that continues a waiting orchestration from disk."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx

from devhost.server import DevHost
from tests.devhost import durable_sample_app


def _on(host: DevHost, url: str) -> str:
    """A management URL handed out by an earlier host, pointed at this host's port."""
    return re.sub(r"http://127\.0\.0\.1:\d+", host.base_url, url)


async def _finished(http: httpx.AsyncClient, status_url: str, within: float = 10) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status: dict[str, Any] = (await http.get(status_url)).json()
        if status["runtimeStatus"] in ("Completed", "Failed", "Terminated"):
            return status
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.05)


async def test_http_starter_runs_an_orchestration_with_a_real_timer(tmp_path: Path) -> None:
    async with DevHost(durable_sample_app.app, port=0, data_dir=tmp_path, smtp=False) as host:
        assert host.durable is not None
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(host.api_url + "/orchestrators/hello_orchestrator", json="dev")
            assert resp.status_code == 202
            links = resp.json()
            assert links["statusQueryGetUri"].startswith(host.base_url + "/runtime/webhooks/durabletask/instances/")
            assert (await _finished(http, links["statusQueryGetUri"]))["output"] == "Hello, dev!"

            started = asyncio.get_running_loop().time()
            resp = await http.post(host.api_url + "/orchestrators/approval_orchestrator",
                                   json={"reminder_seconds": 100, "deadline_seconds": 1})
            status = await _finished(http, resp.json()["statusQueryGetUri"])
            assert status["output"] == "expired"
            assert asyncio.get_running_loop().time() - started >= 0.9


async def test_a_restart_continues_a_waiting_orchestration_from_disk(tmp_path: Path) -> None:
    first = DevHost(durable_sample_app.app, port=0, data_dir=tmp_path, smtp=False)
    await first.start()
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(first.api_url + "/orchestrators/approval_orchestrator",
                               json={"reminder_seconds": 100, "deadline_seconds": 600})
        links = resp.json()
        status = (await http.get(links["statusQueryGetUri"])).json()
        assert status["runtimeStatus"] in ("Pending", "Running")
    await first.stop()

    async with DevHost(durable_sample_app.app, port=0, data_dir=tmp_path, smtp=False) as second, \
            httpx.AsyncClient(timeout=10) as http:
        raise_url = _on(second, links["sendEventPostUri"]).replace("{eventName}", "decided")
        assert (await http.post(raise_url, json="approved")).status_code == 202
        status = await _finished(http, _on(second, links["statusQueryGetUri"]))
        assert (status["runtimeStatus"], status["output"]) == ("Completed", "decided:approved")
