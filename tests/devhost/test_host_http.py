"""HTTP triggers through the real DevHost over real HTTP: routing, params, methods, responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devhost.server import DevHost, RouteTemplate
from tests.devhost import sample_app


@pytest.fixture
async def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DevHost]:
    monkeypatch.setenv("SAMPLE_RECORD_DIR", str(tmp_path))
    devhost = DevHost(sample_app.app, port=0, data_dir=tmp_path / "data", timers=False, smtp=False)
    await devhost.start()
    try:
        yield devhost
    finally:
        await devhost.stop()


@pytest.fixture
async def client(host: DevHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host.base_url, timeout=10) as http:
        yield http


async def test_route_params_query_headers_and_body_reach_the_function(client: httpx.AsyncClient) -> None:
    resp = await client.post("/api/items/42/Widget%20A?x=1&x=2&y=z", content=b"payload",
                             headers={"x-custom": "kept", "content-type": "text/plain"})
    assert resp.status_code == 201
    assert resp.headers["x-echo"] == "yes"
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert body["method"] == "POST"
    assert body["route_params"] == {"id": "42", "name": "Widget A"}
    assert body["params"] == {"x": "1,2", "y": "z"}
    assert body["x_custom"] == "kept"
    assert body["body"] == "payload"
    assert body["function"] == "echo"
    assert body["url"].endswith("/api/items/42/Widget%20A?x=1&x=2&y=z")


async def test_optional_parameter_may_be_missing_and_literals_ignore_case(client: httpx.AsyncClient) -> None:
    resp = await client.get("/API/Items/7")
    assert resp.status_code == 200
    assert resp.json()["route_params"] == {"id": "7"}


async def test_constraint_failure_and_unknown_routes_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/items/abc")).status_code == 404
    assert (await client.get("/api/nope")).status_code == 404
    assert (await client.get("/elsewhere")).status_code == 404


async def test_method_not_allowed(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/api/items/1")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST"
    assert (await client.post("/api/hello")).status_code == 405


async def test_string_return_and_catch_all(client: httpx.AsyncClient) -> None:
    resp = await client.get("/api/hello", params={"who": "dev"})
    assert resp.status_code == 200
    assert resp.text == "hello dev"
    assert resp.headers["content-type"].startswith("text/plain")
    resp = await client.get("/api/files/a/b/c.txt")
    assert resp.text == "a/b/c.txt"


async def test_function_errors_are_500_and_keys_are_not_required(client: httpx.AsyncClient) -> None:
    # the app's auth level is FUNCTION: locally no key is needed
    assert (await client.get("/api/boom")).status_code == 500
    assert (await client.get("/api/hello")).status_code == 200


async def test_dev_functions_lists_what_was_discovered(client: httpx.AsyncClient, host: DevHost) -> None:
    listing = (await client.get("/api/_dev/functions")).json()
    names = {f["name"]: f for f in listing["functions"]}
    assert {"echo", "hello", "files", "boom", "slow", "publish", "on_event", "tick"} <= set(names)
    assert names["echo"]["url"] == host.api_url + "/items/{id:int}/{name?}"
    assert names["echo"]["methods"] == ["GET", "POST"]
    assert names["on_event"]["trigger"] == "eventGridTrigger"


def test_route_templates() -> None:
    t = RouteTemplate("orders/{id:int:min(1)}/lines/{line=1}")
    assert t.match("/orders/5/lines") == {"id": "5", "line": "1"}
    assert t.match("/orders/5/lines/3") == {"id": "5", "line": "3"}
    assert t.match("/orders/0/lines") is None
    assert RouteTemplate("f/{name}.{ext}").match("/f/report.pdf") == {"name": "report", "ext": "pdf"}
    assert RouteTemplate("u/{id:guid}").match("/u/not-a-guid") is None
    assert RouteTemplate("r/{code:regex(^[a-z]{{2}}$)}").match("/r/ab") == {"code": "ab"}
    assert RouteTemplate("r/{code:regex(^[a-z]{{2}}$)}").match("/r/abc") is None
    assert RouteTemplate("").match("") == {}
    with pytest.raises(ValueError, match="unknown route constraint"):
        RouteTemplate("x/{id:nonsense}")


async def test_stop_lets_in_flight_requests_finish_then_refuses_new_ones(tmp_path: Path) -> None:
    devhost = DevHost(sample_app.app, port=0, data_dir=tmp_path / "data", timers=False, smtp=False)
    await devhost.start()
    slow = next(f for f in devhost.functions if f.name == "slow")
    async with httpx.AsyncClient(base_url=devhost.base_url, timeout=10) as http:
        pending = asyncio.create_task(http.get("/api/slow", params={"s": "0.5"}))
        while slow.invocations == 0:  # noqa: ASYNC110 - the host exposes a counter, not an event
            await asyncio.sleep(0.01)
        await devhost.stop()
        resp = await pending
        assert (resp.status_code, resp.text) == (200, "done")
        with pytest.raises(httpx.ConnectError):
            await http.get("/api/hello")


@pytest.mark.parametrize(("prefix", "path"), [("v1", "/v1/hello"), ("", "/hello")])
async def test_route_prefix_comes_from_host_json_beside_the_app(tmp_path: Path, prefix: str, path: str) -> None:
    (tmp_path / "host.json").write_text(json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": prefix}}}))
    async with DevHost(sample_app.app, port=0, data_dir=tmp_path / "data", app_dir=tmp_path, timers=False,
                       smtp=False) as devhost, httpx.AsyncClient(base_url=devhost.base_url, timeout=10) as http:
        assert devhost.api_url == devhost.base_url + (f"/{prefix}" if prefix else "")
        assert (await http.get(path)).text == "hello world"
        if prefix:
            assert (await http.get("/api/hello")).status_code == 404
        assert (await http.get("/api/_dev/functions")).status_code == 200  # dev routes stay put
