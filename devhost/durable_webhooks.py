"""The Durable extension's HTTP API, served for :class:`~devhost.durable.LocalDurableRuntime`.

Why these exact paths and codes: ``DurableOrchestrationClient`` builds its URLs from the
starter's ``rpcBaseUrl`` (``.../runtime/webhooks/durabletask/``) and interprets status codes
itself, so the routes below are the ones the SDK calls and the codes are the ones it expects
(see ``azure/durable_functions/models/DurableOrchestrationClient.py``):

=======================================================  ======================================
``POST orchestrators/{name}[/{instanceId}]``             202 + management links; 400
                                                         ``{"ExceptionMessage"}`` unknown
                                                         orchestrator; 409 id still running
``POST instances/{id}/raiseEvent/{event}``               202; 404 unknown; 410 completed/failed/
                                                         terminated; 400 body not JSON
``GET instances/{id}``                                   200 Completed, 202 Pending/Running,
                                                         400 Failed/Terminated, 404 unknown
                                                         (empty body, as the extension)
``GET instances/`` (filters)                             200 list of statuses
``POST instances/{id}/terminate?reason=``                202; 404; 410 already terminal
``DELETE instances/{id}``                                200 ``{"instancesDeleted": 1}``; 404
                                                         unknown or not terminal
``DELETE instances/`` (filters)                          200 ``{"instancesDeleted": n}``
``POST instances/{id}/(suspend|resume|rewind|restart)``  501 (not supported locally)
=======================================================  ======================================

Query parameters the real extension needs (``taskHub``, ``connection``, ``code``) are accepted
and ignored: the devhost serves one task hub on 127.0.0.1 only.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .durable_history import parse_iso

if TYPE_CHECKING:
    from .durable import LocalDurableRuntime

_RUNTIME_KEY: web.AppKey[LocalDurableRuntime] = web.AppKey("durable_runtime")

_STATUS_CODES = {"Completed": 200, "Pending": 202, "Running": 202, "Failed": 400, "Terminated": 400}


def create_webhook_app(runtime: LocalDurableRuntime) -> web.Application:
    """An aiohttp application to mount with ``parent.add_subapp(DURABLE_WEBHOOK_PREFIX, app)``."""
    app = web.Application()
    app[_RUNTIME_KEY] = runtime
    app.add_routes(
        [
            web.post("/orchestrators/{function_name}", _start),
            web.post("/orchestrators/{function_name}/{instance_id}", _start),
            web.get("/instances", _list),
            web.get("/instances/", _list),
            web.delete("/instances", _purge_by),
            web.delete("/instances/", _purge_by),
            web.get("/instances/{instance_id}", _get_status),
            web.delete("/instances/{instance_id}", _purge),
            web.post("/instances/{instance_id}/raiseEvent/{event_name}", _raise_event),
            web.post("/instances/{instance_id}/terminate", _terminate),
            web.post("/instances/{instance_id}/{operation:suspend|resume|rewind|restart}", _not_supported),
        ]
    )
    return app


def _runtime(request: web.Request) -> LocalDurableRuntime:
    return request.config_dict[_RUNTIME_KEY]


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


async def _json_body(request: web.Request) -> tuple[bool, Any]:
    """(ok, value); an empty body is ``None`` (the SDK posts nothing for a missing input)."""
    raw = await request.read()
    if not raw.strip():
        return True, None
    try:
        return True, json.loads(raw)
    except ValueError:
        return False, None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message, "ExceptionMessage": message}, status=status)


async def _start(request: web.Request) -> web.Response:
    from .durable import InstanceAlreadyExistsError, OrchestratorNotFoundError, serialized_payload

    runtime = _runtime(request)
    ok, body = await _json_body(request)
    if not ok:
        return _error(400, "Only application/json request content is supported")
    try:
        instance_id = runtime.start_serialized(
            request.match_info["function_name"],
            request.match_info.get("instance_id"),
            serialized_payload(body),
            version=request.query.get("version", ""),
        )
    except OrchestratorNotFoundError as exc:
        return _error(400, str(exc))
    except InstanceAlreadyExistsError as exc:
        return _error(409, str(exc))
    payload = runtime.management_payload(instance_id, _origin(request))
    return web.json_response(
        payload, status=202, headers={"Location": payload["statusQueryGetUri"], "Retry-After": "1"}
    )


async def _raise_event(request: web.Request) -> web.Response:
    from .durable import InstanceCompletedError, InstanceNotFoundError, serialized_payload

    ok, body = await _json_body(request)
    if not ok:
        return _error(400, "Only application/json request content is supported")
    try:
        _runtime(request).raise_serialized(
            request.match_info["instance_id"], request.match_info["event_name"], serialized_payload(body)
        )
    except InstanceNotFoundError as exc:
        return _error(404, str(exc))
    except InstanceCompletedError as exc:
        return _error(410, str(exc))
    return web.json_response(None, status=202)


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


async def _get_status(request: web.Request) -> web.Response:
    status = await _runtime(request).get_status(
        request.match_info["instance_id"], show_history=_flag(request, "showHistory", False)
    )
    if status is None:
        return web.Response(status=404)
    return web.json_response(
        status.to_json(show_input=_flag(request, "showInput", True)),
        status=_STATUS_CODES.get(status.runtime_status, 200),
    )


def _time_filter(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    return parse_iso(value) if value else None


def _status_filter(request: web.Request) -> list[str] | None:
    value = request.query.get("runtimeStatus")
    return [s for s in value.split(",") if s] if value else None


async def _list(request: web.Request) -> web.Response:
    try:
        statuses = await _runtime(request).list_statuses(
            created_time_from=_time_filter(request, "createdTimeFrom"),
            created_time_to=_time_filter(request, "createdTimeTo"),
            runtime_status=_status_filter(request),
            instance_id_prefix=request.query.get("instanceIdPrefix") or None,
        )
    except ValueError as exc:
        return _error(400, str(exc))
    show_input = _flag(request, "showInput", True)
    return web.json_response([s.to_json(show_input=show_input) for s in statuses])


async def _terminate(request: web.Request) -> web.Response:
    from .durable import InstanceCompletedError, InstanceNotFoundError

    try:
        await _runtime(request).terminate(request.match_info["instance_id"], request.query.get("reason", ""))
    except InstanceNotFoundError as exc:
        return _error(404, str(exc))
    except InstanceCompletedError as exc:
        return _error(410, str(exc))
    return web.json_response(None, status=202)


async def _purge(request: web.Request) -> web.Response:
    deleted = await _runtime(request).purge(request.match_info["instance_id"])
    if not deleted:
        return web.Response(status=404)
    return web.json_response({"instancesDeleted": deleted})


async def _purge_by(request: web.Request) -> web.Response:
    try:
        deleted = await _runtime(request).purge_by(
            created_time_from=_time_filter(request, "createdTimeFrom"),
            created_time_to=_time_filter(request, "createdTimeTo"),
            runtime_status=_status_filter(request),
        )
    except ValueError as exc:
        return _error(400, str(exc))
    return web.json_response({"instancesDeleted": deleted})


async def _not_supported(request: web.Request) -> web.Response:
    operation = request.match_info["operation"]
    return _error(501, f"'{operation}' is not supported by the local durable runtime")
