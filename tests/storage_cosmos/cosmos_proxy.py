"""A loopback HTTP proxy in front of the Cosmos DB stand-in: sees every request, injects faults.

Why a proxy rather than mocks: the storage under test talks to a real server through the real
SDK (its retry policies, headers and error classes included); the proxy only observes the wire
and, when told, answers a request itself (429 with ``x-ms-retry-after-ms``, 503, a 500...). That
lets the tests count storage operations exactly as Cosmos would bill them, prove that the resume
path sends no query, and exercise failures the stand-in cannot produce.

``emulate_azure=True`` also makes the stand-in answer like Azure where it has gaps, so the
storage's Azure code path (``stand_in=False``, endpoint discovery on) runs against it:

* the account metadata advertises the proxy itself as the write/read region (the stand-in
  advertises https on its own port), so the SDK's regional routing and 503 retries work;
* a point read of a missing item answers 404 (the stand-in answers 500 "Cannot read properties of
  undefined");
* each operation of a transactional batch gets the batch's partition key (Azure takes it from the
  request header; the stand-in reads it from the operation, which the SDK leaves out), so replace
  works in a batch;
* a batch whose create would conflict with an existing item fails as a whole before anything is
  applied (Azure's batches are atomic; the stand-in's apply the operations before the failing one).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}
_DOC_ITEM = re.compile(r"^/dbs/[^/]+/colls/[^/]+/docs/[^/]+/?$")
_DOCS = re.compile(r"^/dbs/[^/]+/colls/[^/]+/docs/?$")


def _true(headers: Any, name: str) -> bool:
    return str(headers.get(name, "")).lower() == "true"


@dataclass
class SeenRequest:
    """One request as it crossed the proxy."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    injected: bool = False

    @property
    def kind(self) -> str:
        """What Cosmos would bill: read, create, replace, delete, upsert, query, batch, or meta."""
        h = {k.lower(): v for k, v in self.headers.items()}
        if _DOC_ITEM.match(self.path):
            return {"GET": "read", "PUT": "replace", "DELETE": "delete", "PATCH": "patch"}.get(self.method, "other")
        if _DOCS.match(self.path) and self.method == "POST":
            if _true(h, "x-ms-cosmos-is-query-plan-request"):
                return "query_plan"
            if _true(h, "x-ms-documentdb-isquery") or h.get("content-type") == "application/query+json":
                return "query"
            if _true(h, "x-ms-cosmos-is-batch-request"):
                return "batch"
            if _true(h, "x-ms-documentdb-is-upsert"):
                return "upsert"
            return "create"
        return "meta"

    @property
    def cross_partition(self) -> bool:
        h = {k.lower(): v for k, v in self.headers.items()}
        return self.kind == "query" and "x-ms-documentdb-partitionkey" not in h

    @property
    def partition_key(self) -> str | None:
        h = {k.lower(): v for k, v in self.headers.items()}
        return h.get("x-ms-documentdb-partitionkey")


@dataclass
class Fault:
    """Answer matching requests with ``status`` (``times`` of them; -1: all)."""

    kind: str
    status: int
    times: int = 1
    retry_after_ms: int | None = None
    sub_status: int | None = None
    message: str = "injected by the test proxy"
    when: Callable[[SeenRequest], bool] | None = None

    def matches(self, request: SeenRequest) -> bool:
        if self.times == 0 or request.kind != self.kind:
            return False
        return self.when is None or self.when(request)


@dataclass
class CosmosProxy:
    upstream: str
    emulate_azure: bool = False
    requests: list[SeenRequest] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _batch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    endpoint: str = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.endpoint

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- test helpers -------------------------------------------------------------------------
    def fail(self, kind: str, status: int, *, times: int = 1, retry_after_ms: int | None = None,
             sub_status: int | None = None, when: Callable[[SeenRequest], bool] | None = None) -> Fault:
        fault = Fault(kind=kind, status=status, times=times, retry_after_ms=retry_after_ms,
                      sub_status=sub_status, when=when)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.requests.clear()
        self.faults.clear()

    def ops(self) -> Counter[str]:
        """Data-plane operations seen (metadata requests such as account/container reads left out)."""
        return Counter(r.kind for r in self.requests if r.kind != "meta")

    # -- the proxy ----------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = SeenRequest(method=request.method, path=request.path, headers=dict(request.headers), body=body)
        self.requests.append(seen)
        for fault in self.faults:
            if fault.matches(seen):
                if fault.times > 0:
                    fault.times -= 1
                seen.status, seen.injected = fault.status, True
                headers = {"x-ms-activity-id": str(uuid.uuid4()), "x-ms-request-charge": "0"}
                if fault.retry_after_ms is not None:
                    headers["x-ms-retry-after-ms"] = str(fault.retry_after_ms)
                if fault.sub_status is not None:
                    headers["x-ms-substatus"] = str(fault.sub_status)
                return web.json_response({"code": str(fault.status), "message": fault.message},
                                         status=fault.status, headers=headers)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if self.emulate_azure and seen.kind == "batch":
            body = self._batch_with_partition_keys(body, seen.partition_key)
            async with self._batch_lock:
                refusal = await self._atomic_batch_refusal(request.path, headers, body)
                if refusal is None:
                    status, payload, out_headers = await self._forward(request.method, request.path_qs, headers,
                                                                       body)
            if refusal is not None:
                seen.status = 207
                return web.json_response(refusal, status=207, headers={
                    "x-ms-activity-id": str(uuid.uuid4()), "x-ms-request-charge": "0"})
        else:
            status, payload, out_headers = await self._forward(request.method, request.path_qs, headers, body)
        if self.emulate_azure and seen.kind == "meta" and request.method == "GET" and request.path == "/":
            payload = self._advertise_self(payload)
        if (self.emulate_azure and seen.kind == "read" and status == 500
                and b"Cannot read properties of undefined" in payload):
            status = 404
            payload = json.dumps({"code": "NotFound", "message": "Entity with the specified id does not exist "
                                  "in the system."}).encode()
        seen.status = status
        return web.Response(status=status, body=payload, headers=out_headers)

    async def _forward(self, method: str, path_qs: str, headers: dict[str, str],
                       body: bytes) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None
        async with self._session.request(method, self.upstream + path_qs, headers=headers, data=body) as upstream:
            payload = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            return upstream.status, payload, out_headers

    def _advertise_self(self, payload: bytes) -> bytes:
        account = json.loads(payload)
        for key in ("writableLocations", "readableLocations"):
            for location in account.get(key) or ():
                location["databaseAccountEndpoint"] = self.endpoint + "/"
        return json.dumps(account).encode()

    async def _atomic_batch_refusal(self, docs_path: str, headers: dict[str, str],
                                    body: bytes) -> list[dict[str, Any]] | None:
        """Azure's answer to a batch that would fail part-way: the failing operation's status
        (412 for a replace whose If-Match is stale, 409 for a create of an existing id), 424 for
        every other operation, and nothing applied. Operations are checked in order, as Azure runs
        them; batches pass this check one at a time (``_batch_lock``), so none can slip in between.
        """
        operations = json.loads(body)
        read_headers = {k: v for k, v in headers.items()
                        if k.lower() not in ("x-ms-cosmos-is-batch-request", "x-ms-cosmos-batch-atomic",
                                             "content-type")}
        for index, op in enumerate(operations):
            kind = op.get("operationType")
            item_id = str(op.get("id") or (op.get("resourceBody") or {}).get("id", ""))
            if kind not in ("Create", "Replace"):
                continue
            status, payload, _ = await self._forward(
                "GET", f"{docs_path.rstrip('/')}/{quote(item_id, safe='')}", read_headers, b"")
            failed = None
            if kind == "Create" and status == 200:
                failed = 409
            elif kind == "Replace" and status != 200:
                failed = 404
            elif kind == "Replace" and op.get("ifMatch") and json.loads(payload).get("_etag") != op["ifMatch"]:
                failed = 412
            if failed is not None:
                return [{"statusCode": failed if i == index else 424, "requestCharge": 0}
                        for i in range(len(operations))]
        return None

    @staticmethod
    def _batch_with_partition_keys(body: bytes, partition_key: str | None) -> bytes:
        if partition_key is None:
            return body
        operations = json.loads(body)
        for op in operations:
            op.setdefault("partitionKey", partition_key)
        return json.dumps(operations).encode()
