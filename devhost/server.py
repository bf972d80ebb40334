"""The local Functions host: serves an ``azure.functions.FunctionApp`` over real HTTP on 127.0.0.1.

Why not Core Tools: it needs .NET and a download, neither of which is available on every
developer or CI machine. The devhost runs the **same user functions** the Functions host would
call, discovered with ``app.get_functions()`` (called once per app object and cached — a second
call fails on "duplicate" names), so a route is declared exactly once, in the app.

What is mounted, per trigger type (see :class:`DevHost`):

=====================  =====================================================================
``httpTrigger``        ``/{routePrefix}/{route}`` — ``routePrefix`` from ``host.json``
                       (``extensions.http.routePrefix``) beside the app module, default ``api``;
                       ASP.NET-style templates (``{id}``, ``{id?}``, ``{id=7}``, ``{*rest}``,
                       constraints such as ``{id:int}``, ``{n:range(1,9)}``, ``{s:regex(...)}``);
                       ``methods`` honoured (405 with ``Allow`` otherwise). **Keys are not
                       checked** (``authLevel`` is ignored locally); headers pass unchanged.
``eventGridTrigger``   subscribed to the local topic (:mod:`devhost.eventgrid`), each
                       event decoded by ``azure.functions``' own converter, exactly as the worker
                       does: CloudEvents arrive as ``func.CloudEvent``.
``timerTrigger``       run on the NCRONTAB schedule (6 fields, UTC) or ``hh:mm:ss`` interval;
                       ``runOnStartup`` and ``useMonitor`` (past-due detection across restarts).
orchestration,         handed to the local Durable runtime (:mod:`devhost.durable`),
activity, entity       whose HTTP API is mounted at ``/runtime/webhooks/durabletask``.
``durableClient``      (input binding) the runtime's client binding JSON.
=====================  =====================================================================

The host's own routes live under ``/api/_dev/`` (``mailbox``, ``eventgrid``, ``functions``) and
win over an app route with the same path. The server binds loopback addresses only: nothing
here authenticates callers.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import datetime as dt
import importlib
import inspect
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from azure.functions import meta as func_meta
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.timer import TimerRequest

from .eventgrid import LocalEventGridTopic, RetryPolicy, load_or_create_topic_key, topic_url
from .smtp_sink import Mailbox, SmtpSink

__all__ = [
    "DURABLE_WEBHOOK_PREFIX",
    "CronSchedule",
    "DevHost",
    "DiscoveredFunction",
    "DurableComponent",
    "RouteTemplate",
    "discover_functions",
    "load_app",
    "read_route_prefix",
]

log = logging.getLogger("hitl.devhost")

DURABLE_WEBHOOK_PREFIX = "/runtime/webhooks/durabletask"
DEV_PREFIX = "/api/_dev"
MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the Functions host's request size limit

T = TypeVar("T")

DURABLE_TRIGGERS = frozenset({"orchestrationTrigger", "activityTrigger", "entityTrigger"})


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------


@dataclass
class DiscoveredFunction:
    """One function of the app, as the host indexes it (the ``function.json`` view plus the callable)."""

    name: str
    trigger_type: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    function: func.Function
    error: str | None = None
    invocations: int = 0
    failures: int = 0

    @property
    def is_async(self) -> bool:
        """Whether the worker would await the function (else it runs on a worker thread)."""
        return inspect.iscoroutinefunction(self.user_function)

    def binding_names(self) -> set[str]:
        return {str(b.get("name")) for b in self.bindings if b.get("name") != "$return"}

    def describe(self) -> dict[str, Any]:
        """The JSON shown by ``GET /api/_dev/functions``."""
        return {"name": self.name, "trigger": self.trigger_type, "bindings": self.bindings,
                "invocations": self.invocations, "failures": self.failures, "error": self.error}


_DISCOVERED: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()
_DISCOVERY_LOCK = threading.Lock()


def _get_functions_once(app: Any) -> list[func.Function]:
    """``app.get_functions()``, cached per app object.

    ``FunctionApp.get_functions`` builds the functions and records their names; called twice on
    the same app it fails with "does not have a unique function name". When something else already
    called it (a test, a linter), the name record is reset and the call repeated once; a genuine
    duplicate still fails.
    """
    with _DISCOVERY_LOCK:
        cached = _DISCOVERED.get(app)
        if cached is not None:
            return cached
        try:
            functions = list(app.get_functions())
        except ValueError as exc:
            if "unique function name" not in str(exc) or not getattr(app, "functions_bindings", None):
                raise
            app.functions_bindings = None
            functions = list(app.get_functions())
        _DISCOVERED[app] = functions
        return functions


def discover_functions(app: Any) -> list[DiscoveredFunction]:
    """Index the app the way the worker does: bindings from ``function.json``, callable from the builder."""
    found: list[DiscoveredFunction] = []
    for fn in _get_functions_once(app):
        spec = json.loads(fn.get_function_json())
        bindings: list[dict[str, Any]] = list(spec.get("bindings", []))
        trigger = next((b for b in bindings if str(b.get("type", "")).endswith("Trigger")), {})
        name = fn.get_function_name() or fn.get_user_function().__name__
        found.append(DiscoveredFunction(
            name=name, trigger_type=str(trigger.get("type", "")), trigger=trigger, bindings=bindings,
            user_function=fn.get_user_function(), function=fn))
    for item in found:
        item.error = _check_signature(item)
    return found


def _check_signature(fn: DiscoveredFunction) -> str | None:
    """The worker's indexing rule: parameters and binding names must correspond (plus ``context``)."""
    try:
        sig = inspect.signature(fn.user_function)
    except (TypeError, ValueError):
        return None
    params = {n for n, p in sig.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    names = fn.binding_names()
    extra = {n for n in params - names - {"context"}
             if sig.parameters[n].default is inspect.Parameter.empty}
    if extra:
        return f"parameters {sorted(extra)} are declared in Python but not as bindings"
    missing = names - params
    if missing and not takes_kwargs:
        return f"bindings {sorted(missing)} are declared but not parameters of the function"
    return None


def load_app(spec: str) -> tuple[Any, Path | None]:
    """Import ``module:attribute`` (default attribute ``app``); answers the app and its module's folder."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app")
    module_file = getattr(module, "__file__", None)
    return app, (Path(module_file).resolve().parent if module_file else None)


def read_route_prefix(app_dir: Path | None) -> str:
    """``extensions.http.routePrefix`` from ``host.json`` in ``app_dir`` (default ``api``)."""
    if app_dir is None:
        return "api"
    host_json = app_dir / "host.json"
    if not host_json.is_file():
        return "api"
    try:
        config = json.loads(host_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{host_json} is not valid JSON: {exc}") from exc
    prefix = config.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


# ---------------------------------------------------------------------------------------------
# invocation
# ---------------------------------------------------------------------------------------------


class _TraceContext:
    """A W3C trace context with a fresh trace id per invocation (no tracing backend locally)."""

    def __init__(self) -> None:
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext:
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count, self._max = retry_count, max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> None:
        return None


class _InvocationContext(func.Context):
    """What the worker passes as the ``context`` parameter."""

    def __init__(self, function_name: str, function_directory: str, retry_count: int = 0,
                 max_retry_count: int = 0) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace = _TraceContext()
        self._retry = _RetryContext(retry_count, max_retry_count)
        self._tls = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._tls

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace

    @property
    def retry_context(self) -> Any:
        return self._retry


class _Out(func.Out[Any]):
    """An output binding the devhost has no stand-in for: the value is kept but goes nowhere."""

    def __init__(self, function: str, name: str) -> None:
        self._value: Any = None
        self._where = f"{function}.{name}"

    def set(self, val: Any) -> None:
        log.warning("output binding %s is not emulated by the devhost; value dropped", self._where)
        self._value = val

    def get(self) -> Any:
        return self._value


@runtime_checkable
class DurableComponent(Protocol):
    """What the host needs from a local Durable runtime (:class:`~devhost.durable.LocalDurableRuntime`)."""

    def client_binding_json(self) -> str:
        """The JSON string the host passes for a ``durableClient`` input binding."""
        ...

    def webhook_app(self) -> web.Application:
        """The Durable extension's HTTP API, mounted at ``/runtime/webhooks/durabletask``."""
        ...

    async def start(self) -> None:
        """Resume pending orchestrations, re-arm timers."""
        ...

    async def stop(self) -> None:
        """Stop driving orchestrations; state stays on disk."""
        ...


DurableFactory = Callable[["DevHost", Sequence[DiscoveredFunction]], DurableComponent]


class _Invoker:
    """Calls user functions the way the Python worker does."""

    def __init__(self, app_dir: Path | None, durable: Callable[[], DurableComponent | None]) -> None:
        self._dir = str(app_dir or Path.cwd())
        self._durable = durable
        #: user function -> (awaited?, takes ``context``?): what the worker reads once when it loads a function
        self._shapes: dict[Any, tuple[bool, bool]] = {}
        self._client_binding: tuple[DurableComponent, str] | None = None

    def _shape(self, fn: DiscoveredFunction) -> tuple[bool, bool]:
        try:
            return self._shapes[fn.user_function]
        except KeyError:
            pass
        except TypeError:  # an unhashable callable: inspect it every time
            return fn.is_async, _takes_context(fn.user_function)
        shape = self._shapes[fn.user_function] = (fn.is_async, _takes_context(fn.user_function))
        return shape

    def _client_binding_json(self, durable: DurableComponent) -> str:
        """The durableClient binding JSON, built once per durable runtime (it names only fixed URLs)."""
        if self._client_binding is None or self._client_binding[0] is not durable:
            self._client_binding = (durable, durable.client_binding_json())
        return self._client_binding[1]

    async def invoke(self, fn: DiscoveredFunction, trigger_value: Any, *, retry_count: int = 0,
                     max_retry_count: int = 0) -> Any:
        kwargs: dict[str, Any] = {str(fn.trigger.get("name")): trigger_value}
        for binding in fn.bindings:
            name = str(binding.get("name"))
            if binding is fn.trigger or name == "$return" or name in kwargs:
                continue
            if binding.get("type") == "durableClient":
                durable = self._durable()
                if durable is None:
                    raise RuntimeError(f"{fn.name} needs a durableClient binding but the durable runtime is off")
                kwargs[name] = self._client_binding_json(durable)
            elif str(binding.get("direction", "")).upper() == "OUT":
                kwargs[name] = _Out(fn.name, name)
            else:
                kwargs[name] = None
        is_async, takes_context = self._shape(fn)
        if takes_context and "context" not in kwargs:
            kwargs["context"] = _InvocationContext(fn.name, self._dir, retry_count, max_retry_count)
        fn.invocations += 1
        try:
            if is_async:
                result = await fn.user_function(**kwargs)
            else:
                result = await asyncio.to_thread(fn.user_function, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException:
            fn.failures += 1
            raise
        return result


def _takes_context(user_function: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(user_function).parameters
    except (TypeError, ValueError):
        return False
    return "context" in params


# ---------------------------------------------------------------------------------------------
# HTTP routing
# ---------------------------------------------------------------------------------------------


def _int_in(lo: int, hi: int) -> Callable[[str, list[str]], bool]:
    def check(value: str, _args: list[str]) -> bool:
        try:
            number = int(value)
        except ValueError:
            return False
        return lo <= number <= hi and re.fullmatch(r"[+-]?\d+", value) is not None
    return check


def _is_float(value: str, _args: list[str]) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in {"nan", "inf", "-inf", "+inf", "infinity", "-infinity"}


def _is_datetime(value: str, _args: list[str]) -> bool:
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_guid(value: str, _args: list[str]) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _number_args(args: list[str]) -> list[int]:
    return [int(a.strip()) for a in args]


def _check_length(value: str, args: list[str]) -> bool:
    nums = _number_args(args)
    return len(value) == nums[0] if len(nums) == 1 else nums[0] <= len(value) <= nums[1]


def _check_min(value: str, args: list[str]) -> bool:
    return _int_in(-(2**63), 2**63 - 1)(value, []) and int(value) >= _number_args(args)[0]


def _check_max(value: str, args: list[str]) -> bool:
    return _int_in(-(2**63), 2**63 - 1)(value, []) and int(value) <= _number_args(args)[0]


def _check_range(value: str, args: list[str]) -> bool:
    lo, hi = _number_args(args)
    return _int_in(lo, hi)(value, [])


_CONSTRAINTS: dict[str, Callable[[str, list[str]], bool]] = {
    "int": _int_in(-(2**31), 2**31 - 1),
    "long": _int_in(-(2**63), 2**63 - 1),
    "bool": lambda v, _a: v.lower() in {"true", "false"},
    "float": _is_float,
    "double": _is_float,
    "decimal": _is_float,
    "datetime": _is_datetime,
    "guid": _is_guid,
    "alpha": lambda v, _a: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "required": lambda v, _a: v != "",
    "minlength": lambda v, a: len(v) >= _number_args(a)[0],
    "maxlength": lambda v, a: len(v) <= _number_args(a)[0],
    "length": _check_length,
    "min": _check_min,
    "max": _check_max,
    "range": _check_range,
    "regex": lambda v, a: re.search(",".join(a), v, re.IGNORECASE) is not None,
}


@dataclass
class _Param:
    name: str
    group: str
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    constraints: list[tuple[str, list[str]]] = field(default_factory=list)

    def accepts(self, value: str) -> bool:
        return all(_CONSTRAINTS[name](value, args) for name, args in self.constraints)


def _split_params(body: str) -> tuple[str, list[tuple[str, list[str]]], str | None, bool, bool]:
    """Parse the inside of ``{...}``: name, constraints, default, optional, catch-all."""
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    optional = False
    default: str | None = None
    # split on ':' outside parentheses
    parts: list[str] = []
    depth, current = 0, ""
    for ch in body:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        if ch == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    last = parts[-1]
    if "=" in last and "(" not in last.split("=", 1)[0]:
        last, default = last.split("=", 1)
    if last.endswith("?") and default is None:
        optional, last = True, last[:-1]
    parts[-1] = last
    name = parts[0].strip()
    if not name:
        raise ValueError("a route parameter needs a name")
    constraints: list[tuple[str, list[str]]] = []
    for raw in parts[1:]:
        match = re.fullmatch(r"\s*([A-Za-z]+)\s*(?:\((.*)\))?\s*", raw, re.DOTALL)
        if not match or match.group(1).lower() not in _CONSTRAINTS:
            raise ValueError(f"unknown route constraint {raw!r} on {{{name}}}")
        kind, args = match.group(1).lower(), match.group(2)
        arg_list = [args] if kind == "regex" and args is not None else ([a for a in args.split(",")] if args else [])
        constraints.append((kind, arg_list))
    return name, constraints, default, optional, catch_all


class RouteTemplate:
    """An ASP.NET-style route template compiled to a regular expression.

    Literals match case-insensitively (as in the Functions host); parameter values are URL-decoded;
    a failed constraint means "no match" (so the request falls through to other routes, then 404).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        text = template.strip()
        text = text[2:] if text.startswith("~/") else text
        text = text.strip("/")
        self.params: list[_Param] = []
        pieces: list[str] = []
        precedence: list[int] = []
        segments = text.split("/") if text else []
        for index, segment in enumerate(segments):
            tokens = self._tokenize(segment)
            if len(tokens) == 1 and isinstance(tokens[0], _Param):
                param = tokens[0]
                if param.catch_all:
                    if index != len(segments) - 1:
                        raise ValueError(f"a catch-all parameter must be the last segment of {template!r}")
                    pieces.append(f"(?:/(?P<{param.group}>.*))?")
                    precedence.append(5)
                elif param.optional or param.default is not None:
                    pieces.append(f"(?:/(?P<{param.group}>[^/]+))?")
                    precedence.append(3 if param.constraints else 4)
                else:
                    pieces.append(f"/(?P<{param.group}>[^/]+)")
                    precedence.append(3 if param.constraints else 4)
                continue
            regex = "/"
            for pos, token in enumerate(tokens):
                if isinstance(token, str):
                    regex += re.escape(token)
                else:
                    lazy = "?" if pos < len(tokens) - 1 else ""
                    body = f"(?P<{token.group}>[^/]+{lazy})"
                    regex += f"(?:{body})?" if token.optional else body
            pieces.append(regex)
            precedence.append(1 if all(isinstance(t, str) for t in tokens) else 2)
        self._regex = re.compile("^" + "".join(pieces) + "/?$", re.IGNORECASE)
        self.precedence: tuple[int, ...] = tuple(precedence)

    def _tokenize(self, segment: str) -> list[str | _Param]:
        tokens: list[str | _Param] = []
        literal = ""
        i = 0
        while i < len(segment):
            ch = segment[i]
            if segment.startswith("{{", i) or segment.startswith("}}", i):
                literal += ch
                i += 2
                continue
            if ch == "{":
                depth, j = 0, i + 1
                while j < len(segment):
                    if segment[j] == "(":
                        depth += 1
                    elif segment[j] == ")":
                        depth -= 1
                    elif segment[j] == "}" and depth <= 0:
                        break
                    j += 1
                if j >= len(segment):
                    raise ValueError(f"unclosed '{{' in route template {self.template!r}")
                if literal:
                    tokens.append(literal)
                    literal = ""
                inner = segment[i + 1:j].replace("{{", "{").replace("}}", "}")
                name, constraints, default, optional, catch_all = _split_params(inner)
                param = _Param(name=name, group=f"p{len(self.params)}", optional=optional, catch_all=catch_all,
                               default=default, constraints=constraints)
                self.params.append(param)
                tokens.append(param)
                i = j + 1
                continue
            literal += ch
            i += 1
        if literal:
            tokens.append(literal)
        return tokens

    def match(self, path: str) -> dict[str, str] | None:
        """Route params for an (encoded) path relative to the route prefix, or ``None``."""
        found = self._regex.match(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self.params:
            raw = found.group(param.group)
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            value = unquote(raw)
            if not param.accepts(value):
                return None
            values[param.name] = value
        return values


@dataclass
class _HttpRoute:
    function: DiscoveredFunction
    template: RouteTemplate
    methods: frozenset[str] | None
    order: int


def _join(values: Iterable[str]) -> str:
    return ",".join(values)


def _to_aiohttp(response: Any, fn_name: str) -> web.StreamResponse:
    """Map the function's return value the way the worker's HTTP converter does."""
    if response is None:
        return web.Response(status=204)
    if isinstance(response, str):
        return web.Response(status=200, body=response.encode("utf-8"),
                            headers={"Content-Type": "text/plain; charset=utf-8"})
    if not isinstance(response, func.HttpResponse):
        log.error("%s returned %s, which is not a func.HttpResponse or str", fn_name, type(response).__name__)
        return web.Response(status=500)
    headers = response.headers
    out = web.Response(status=int(response.status_code), body=response.get_body() or b"")
    out.headers.popall("Content-Type", None)
    has_type = False
    for name, value in headers.items():
        if name.lower() == "set-cookie":
            continue
        if name.lower() == "content-type":
            has_type = True
        out.headers.add(name, value)
    if "Set-Cookie" in headers:
        getter = getattr(headers, "get_all", None)
        cookies = getter("Set-Cookie") if callable(getter) else [headers["Set-Cookie"]]
        for cookie in cookies:
            out.headers.add("Set-Cookie", cookie)
    if not has_type:
        mimetype = response.mimetype or "text/plain"
        out.headers["Content-Type"] = (f"{mimetype}; charset={response.charset}" if mimetype.startswith("text/")
                                       else mimetype)
    return out


class _AccessLogger(AbstractAccessLogger):
    """Method, path without the query (decision links carry tokens there), status, duration."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info('%s %s -> %s (%.1f ms)', request.method, request.path, response.status, time * 1000)


# ---------------------------------------------------------------------------------------------
# timers
# ---------------------------------------------------------------------------------------------


_MONTHS = {n: i for i, n in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT",
                                       "NOV", "DEC"], start=1)}
_DAYS = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


def _cron_field(text: str, lo: int, hi: int, names: Mapping[str, int] | None = None) -> list[int]:
    values: set[int] = set()

    def number(token: str) -> int:
        token = token.strip().upper()
        if names and token[:3] in names and not token.isdigit():
            return names[token[:3]]
        value = int(token)
        if hi == 6 and value == 7:  # Sunday as 7
            value = 0
        if not lo <= value <= hi:
            raise ValueError(f"{value} is outside {lo}-{hi}")
        return value

    for part in text.split(","):
        step = 1
        stepped = "/" in part
        if stepped:
            part, step_text = part.split("/", 1)
            step = int(step_text)
            if step < 1:
                raise ValueError("a step must be at least 1")
        if part in ("*", ""):
            start, end = lo, hi
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = number(a), number(b)
        else:
            start = number(part)
            end = hi if stepped else start
        if start <= end:
            values.update(range(start, end + 1, step))
        else:  # wrap-around range such as FRI-MON
            values.update(v for i, v in enumerate(list(range(start, hi + 1)) + list(range(lo, end + 1)))
                          if i % step == 0)
    return sorted(values)


class CronSchedule:
    """An Azure Functions timer schedule: NCRONTAB with seconds, or a ``hh:mm:ss`` interval.

    ``{second} {minute} {hour} {day} {month} {day-of-week}``; each field takes ``*``, numbers,
    ranges ``a-b``, lists ``a,b`` and steps ``*/n`` / ``a-b/n``; months and days accept English
    three-letter names; day-of-week 0 (or 7) is Sunday. When both day fields are restricted, a
    time must match both (NCrontab's rule). Times are UTC, like the Functions host's default.
    """

    def __init__(self, expression: str) -> None:
        self.expression = expression.strip()
        self.interval: dt.timedelta | None = None
        interval = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})", self.expression)
        if interval:
            days, h, m, s = (int(g or 0) for g in interval.groups())
            self.interval = dt.timedelta(days=days, hours=h, minutes=m, seconds=s)
            if self.interval <= dt.timedelta(0):
                raise ValueError(f"timer interval {expression!r} must be positive")
            return
        fields = self.expression.split()
        if len(fields) != 6:
            raise ValueError(f"timer schedule {expression!r} must have 6 fields "
                             "(second minute hour day month day-of-week)")
        try:
            self.seconds = _cron_field(fields[0], 0, 59)
            self.minutes = _cron_field(fields[1], 0, 59)
            self.hours = _cron_field(fields[2], 0, 23)
            self.days = _cron_field(fields[3], 1, 31)
            self.months = _cron_field(fields[4], 1, 12, _MONTHS)
            self.weekdays = _cron_field(fields[5], 0, 6, _DAYS)
        except ValueError as exc:
            raise ValueError(f"invalid timer schedule {expression!r}: {exc}") from exc

    def next_after(self, after: dt.datetime) -> dt.datetime:
        """The first occurrence strictly after ``after`` (aware, UTC)."""
        after = after.astimezone(dt.UTC)
        if self.interval is not None:
            return after + self.interval
        start = after.replace(microsecond=0) + dt.timedelta(seconds=1)
        day = start.date()
        for _ in range(366 * 8):
            if day.month in self.months and day.day in self.days and (day.isoweekday() % 7) in self.weekdays:
                first = day == start.date()
                for hour in self.hours[bisect.bisect_left(self.hours, start.hour if first else 0):]:
                    same_hour = first and hour == start.hour
                    for minute in self.minutes[bisect.bisect_left(self.minutes, start.minute if same_hour else 0):]:
                        same_minute = same_hour and minute == start.minute
                        idx = bisect.bisect_left(self.seconds, start.second if same_minute else 0)
                        if idx < len(self.seconds):
                            return dt.datetime(day.year, day.month, day.day, hour, minute, self.seconds[idx],
                                               tzinfo=dt.UTC)
            day += dt.timedelta(days=1)
        raise ValueError(f"timer schedule {self.expression!r} never fires")


@dataclass
class _Timer:
    function: DiscoveredFunction
    schedule: CronSchedule
    run_on_startup: bool
    use_monitor: bool
    task: asyncio.Task[None] | None = None


class _TimerStatus:
    """``ScheduleStatus`` per timer (Last/Next/LastUpdated) in ``{data_dir}/timers.json``."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._data: dict[str, dict[str, str]] = {}
        if path.is_file():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                loaded = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(loaded, dict):
                    self._data = loaded

    def get(self, name: str) -> dict[str, str]:
        return dict(self._data.get(name, {}))

    def set(self, name: str, status: dict[str, str]) -> None:
        self._data[name] = status
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._data, indent=2), encoding="utf-8")
        os.replace(tmp, self._path)


# ---------------------------------------------------------------------------------------------
# the host
# ---------------------------------------------------------------------------------------------


def local_durable_runtime(host: DevHost, functions: Sequence[DiscoveredFunction]) -> DurableComponent:
    """The default durable factory: :class:`~devhost.durable.LocalDurableRuntime` on
    ``{data_dir}/durable.db``, handed the functions the host already discovered (``get_functions``
    may be called only once per app)."""
    from .durable import LocalDurableRuntime

    return LocalDurableRuntime([f.function for f in functions], store_path=host.data_dir / "durable.db",
                               base_url=host.base_url)


async def _reset_durable_sdk() -> None:
    """Drop the durable SDK's module-global aiohttp session (it is bound to this event loop)."""
    with contextlib.suppress(ImportError):
        from .durable import reset_durable_sdk_session

        await reset_durable_sdk_session()


class DevHost:
    """Serve an ``azure.functions.FunctionApp`` (or ``df.DFApp``) on a loopback address.

    ``port=0`` picks a free port (see :attr:`port` after :meth:`start`); ``sock`` hands over an
    already bound listening socket (``python -m devhost`` binds first so the URLs can be
    put into the app's environment before the app is imported). ``app_dir`` is where ``host.json``
    is looked for. ``durable``: ``"auto"`` starts the local Durable runtime when the app has
    durable functions, ``None`` disables it, or pass a factory ``(host, functions) -> component``.
    ``smtp``: ``True`` runs an SMTP sink on ``smtp_port`` (``0``: free), or pass a
    :class:`SmtpSink`; ``False`` runs none (the mailbox route then shows the file's messages).
    ``eventgrid_key``: the local topic's key (default: created once in ``data_dir``);
    ``eventgrid_retry``: the delivery :class:`RetryPolicy`. ``on_stop``: coroutines run after
    everything else stopped (e.g. closing the app's storage clients).
    """

    def __init__(
        self,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 7071,
        data_dir: Path | str = ".hitl",
        app_dir: Path | str | None = None,
        route_prefix: str | None = None,
        sock: socket.socket | None = None,
        eventgrid_key: str | None = None,
        eventgrid_retry: RetryPolicy | None = None,
        smtp: bool | SmtpSink = True,
        smtp_port: int = 0,
        durable: DurableFactory | Literal["auto"] | None = "auto",
        timers: bool = True,
        shutdown_timeout: float = 10.0,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        access_log: bool = True,
    ) -> None:
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the devhost binds loopback addresses only (it checks no keys), not {host!r}")
        self.app = app
        self.host = host
        self._access_log = access_log
        self._port = port
        self.data_dir = Path(data_dir)
        self.app_dir = Path(app_dir) if app_dir is not None else None
        self.route_prefix = (route_prefix if route_prefix is not None else read_route_prefix(self.app_dir)).strip("/")
        self._sock = sock
        self._eventgrid_key = eventgrid_key
        self._eventgrid_retry = eventgrid_retry
        self._smtp_option = smtp
        self._smtp_port = smtp_port
        self._durable_option = durable
        self._timers_enabled = timers
        self._shutdown_timeout = shutdown_timeout
        self._on_stop = list(on_stop)

        self.functions: list[DiscoveredFunction] = []
        self.durable: DurableComponent | None = None
        self.eventgrid: LocalEventGridTopic | None = None
        self.smtp: SmtpSink | None = smtp if isinstance(smtp, SmtpSink) else None
        self.mailbox: Mailbox = self.smtp.mailbox if self.smtp else Mailbox(self.data_dir / "mailbox.jsonl")
        self._routes: list[_HttpRoute] = []
        self._timers: list[_Timer] = []
        self._timer_status: _TimerStatus | None = None
        self._invoker = _Invoker(self.app_dir, lambda: self.durable)
        self._runner: web.AppRunner | None = None
        self._started = False
        self._stopping = asyncio.Event()

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the real one once started, also when ``0`` was asked for)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:{port}`` (IPv6 loopback in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def api_url(self) -> str:
        """Where the HTTP functions live, e.g. ``http://127.0.0.1:7071/api``."""
        return self.base_url + (f"/{self.route_prefix}" if self.route_prefix else "")

    @property
    def mailbox_url(self) -> str:
        return self.base_url + DEV_PREFIX + "/mailbox"

    def eventgrid_topic_url(self, topic: str = "local") -> str:
        """The endpoint for ``EventGridPublisherClient`` (``HITL_EVENTGRID_TOPIC_ENDPOINT``)."""
        return topic_url(self.base_url, topic)

    @property
    def http_routes(self) -> list[tuple[str, str, frozenset[str] | None]]:
        """``(function name, route template, methods or None for any)`` in matching order."""
        return [(r.function.name, r.template.template.strip("/"), r.methods) for r in self._routes]

    @property
    def eventgrid_key(self) -> str:
        """The local topic's key (secret: never log it)."""
        if self._eventgrid_key is None:
            self._eventgrid_key = load_or_create_topic_key(self.data_dir)
        return self._eventgrid_key

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> DevHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _bind(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self._port))
            except OSError:
                sock.close()
                raise
            self._sock = sock
        self._port = int(self._sock.getsockname()[1])
        return self._sock

    async def start(self) -> None:
        """Discover, bind, start the stand-ins, then serve. Raises if the port is taken."""
        if self._started:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        sock = self._bind()
        sock.listen(128)  # connections made while the stand-ins start wait in the backlog
        self._stopping.clear()
        try:
            await self._start(sock)
        except BaseException:
            await self.stop()
            raise
        self._started = True

    async def _start(self, sock: socket.socket) -> None:
        self.functions = discover_functions(self.app)
        by_kind: dict[str, list[DiscoveredFunction]] = {}
        for fn in self.functions:
            if fn.error:
                log.error("function %s failed to load: %s", fn.name, fn.error)
                continue
            by_kind.setdefault(fn.trigger_type, []).append(fn)
        self._routes = self._build_routes(by_kind.get("httpTrigger", []))
        for kind, fns in by_kind.items():
            if kind not in {"httpTrigger", "eventGridTrigger", "timerTrigger", *DURABLE_TRIGGERS}:
                log.warning("trigger %s is not emulated by the devhost; not started: %s",
                            kind or "(none)", ", ".join(f.name for f in fns))

        if self.smtp is None and self._smtp_option is True:
            self.smtp = SmtpSink(self.mailbox, port=self._smtp_port)
        if self.smtp is not None:
            await self.smtp.start()

        has_durable = any(kind in by_kind for kind in DURABLE_TRIGGERS)
        needs_client = any(b.get("type") == "durableClient" for f in self.functions for b in f.bindings)
        if (has_durable or needs_client) and self._durable_option is not None:
            factory = local_durable_runtime if self._durable_option == "auto" else self._durable_option
            loaded = [f for f in self.functions if not f.error]
            self.durable = factory(self, loaded)
            await self.durable.start()

        # An app may declare its subscriptions' filters (what the Bicep sets as the subscription's
        # filter: includedEventTypes, advancedFilters): each function then gets only those events, as in Azure.
        filters = getattr(self.app, "eventgrid_subscriptions", None)
        self.eventgrid = LocalEventGridTopic(
            db_path=self.data_dir / "eventgrid.db", key=self.eventgrid_key,
            subscribers=[f.name for f in by_kind.get("eventGridTrigger", [])],
            deliver=self._deliver_event, retry=self._eventgrid_retry,
            filters=filters if isinstance(filters, Mapping) else None)
        await self.eventgrid.start()

        web_app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        web_app.router.add_get(DEV_PREFIX + "/mailbox", self._dev_mailbox)
        web_app.router.add_delete(DEV_PREFIX + "/mailbox", self._dev_mailbox_clear)
        web_app.router.add_get(DEV_PREFIX + "/eventgrid", self._dev_eventgrid)
        web_app.router.add_get(DEV_PREFIX + "/functions", self._dev_functions)
        self.eventgrid.add_routes(web_app)
        if self.durable is not None:
            self._mount_durable(web_app, self.durable)
        # [\s\S]: every path, control characters (a %0A in a route value) included — the app answers, as in Azure
        web_app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch_http)
        self._runner = web.AppRunner(web_app, access_log_class=_AccessLogger,
                                     access_log=logging.getLogger("hitl.devhost.access") if self._access_log else None,
                                     shutdown_timeout=self._shutdown_timeout, handle_signals=False)
        await self._runner.setup()
        site = web.SockSite(self._runner, sock)
        await site.start()

        if self._timers_enabled:
            self._timer_status = _TimerStatus(self.data_dir / "timers.json")
            for fn in by_kind.get("timerTrigger", []):
                self._start_timer(fn)
        log.info("devhost serving %d function(s) on %s", len(self.functions), self.base_url)

    def _mount_durable(self, web_app: web.Application, durable: DurableComponent) -> None:
        """Mount the runtime's Durable extension HTTP API under ``/runtime/webhooks/durabletask``."""
        web_app.add_subapp(DURABLE_WEBHOOK_PREFIX, durable.webhook_app())

    async def stop(self) -> None:
        """Shut down without losing work; every step is idempotent.

        Order: timers stop; the Event Grid dispatcher stops starting deliveries and lets running
        ones finish (they may call this server, e.g. a durable client, so it still serves); then
        the server stops accepting and lets in-flight requests finish (events they publish are
        still persisted); then the topic's queue, the Durable runtime and the SMTP sink close,
        and the ``on_stop`` hooks run.
        """
        self._stopping.set()
        timers = [t.task for t in self._timers if t.task is not None]
        for task in timers:
            task.cancel()
        if timers:
            await asyncio.gather(*timers, return_exceptions=True)
        self._timers.clear()
        if self.eventgrid is not None:
            await self.eventgrid.stop_dispatch(grace=min(5.0, self._shutdown_timeout))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.eventgrid is not None:
            await self.eventgrid.close()
            self.eventgrid = None
        if self.durable is not None:
            try:
                await self.durable.stop()
            finally:
                self.durable = None
                await _reset_durable_sdk()
        for hook in self._on_stop:
            try:
                await hook()
            except Exception:
                log.exception("a shutdown hook failed")
        if self.smtp is not None:  # after the hooks: closing the app's runtime says QUIT on its kept connections
            await self.smtp.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._started:
            log.info("devhost stopped")
        self._started = False

    # -- HTTP functions --------------------------------------------------------------------

    def _build_routes(self, functions: Sequence[DiscoveredFunction]) -> list[_HttpRoute]:
        routes: list[_HttpRoute] = []
        for order, fn in enumerate(functions):
            template_text = fn.trigger.get("route") or fn.name
            try:
                template = RouteTemplate(str(template_text))
            except ValueError as exc:
                fn.error = str(exc)
                log.error("function %s failed to load: %s", fn.name, exc)
                continue
            methods = fn.trigger.get("methods")
            allowed = frozenset(str(m).upper() for m in methods) if methods else None
            routes.append(_HttpRoute(fn, template, allowed, order))
            if str(template_text).strip("/").lower().startswith("_dev") and self.route_prefix == "api":
                log.warning("route %s of %s is shadowed by the devhost's own /api/_dev routes", template_text, fn.name)
        routes.sort(key=lambda r: (r.template.precedence, r.order))
        return routes

    def _relative_path(self, raw_path: str) -> str | None:
        if not self.route_prefix:
            return raw_path
        prefix = "/" + self.route_prefix
        if raw_path.lower() == prefix.lower():
            return ""
        if raw_path.lower().startswith(prefix.lower() + "/"):
            return raw_path[len(prefix):]
        return None

    async def _dispatch_http(self, request: web.Request) -> web.StreamResponse:
        rel = self._relative_path(request.rel_url.raw_path)
        if rel is None:
            return web.Response(status=404)
        allowed: set[str] = set()
        for route in self._routes:
            params = route.template.match(rel)
            if params is None:
                continue
            if route.methods is not None and request.method.upper() not in route.methods:
                allowed.update(route.methods)
                continue
            return await self._call_http(route.function, request, params)
        if allowed:
            return web.Response(status=405, headers={"Allow": ", ".join(sorted(allowed))})
        return web.Response(status=404)

    async def _call_http(self, fn: DiscoveredFunction, request: web.Request,
                         route_params: dict[str, str]) -> web.StreamResponse:
        body = await request.read()
        headers = {name: _join(request.headers.getall(name)) for name in request.headers}
        # Like App Service's front end: append the socket peer to X-Forwarded-For, so the app can
        # take the address a trusted proxy vouches for (the right end), never the client's own claim.
        peer = request.remote or ""
        forwarded = next((k for k in headers if k.lower() == "x-forwarded-for"), "X-Forwarded-For")
        headers[forwarded] = ", ".join(v for v in (headers.get(forwarded, ""), peer) if v)
        query = request.rel_url.query
        params = {name: _join(query.getall(name)) for name in query}
        req = func.HttpRequest(method=request.method, url=str(request.url), headers=headers, params=params,
                               route_params=route_params, body=body)
        try:
            result = await self._invoker.invoke(fn, req)
        except Exception:
            log.exception("function %s raised", fn.name)
            return web.Response(status=500)
        return _to_aiohttp(result, fn.name)

    # -- Event Grid ------------------------------------------------------------------------

    async def _deliver_event(self, function_name: str, event: dict[str, Any]) -> None:
        fn = next((f for f in self.functions if f.name == function_name), None)
        if fn is None:
            raise LookupError(f"no Event Grid trigger function named {function_name!r}")
        datum = func_meta.Datum(json.dumps(event), "json")
        value = EventGridEventInConverter.decode(datum, trigger_metadata={})  # the worker's own converter
        await self._invoker.invoke(fn, value)

    # -- timers ----------------------------------------------------------------------------

    def _start_timer(self, fn: DiscoveredFunction) -> None:
        expression = str(fn.trigger.get("schedule", ""))
        setting = re.fullmatch(r"%([^%]+)%", expression)
        if setting:  # the host resolves %NAME% from app settings
            expression = os.environ.get(setting.group(1), "")
        try:
            schedule = CronSchedule(expression)
        except ValueError as exc:
            fn.error = str(exc)
            log.error("timer %s failed to load: %s", fn.name, exc)
            return
        now = dt.datetime.now(dt.UTC)
        first = schedule.next_after(now)
        period = schedule.next_after(first) - first
        use_monitor = bool(fn.trigger.get("useMonitor", period >= dt.timedelta(minutes=1)))
        timer = _Timer(fn, schedule, bool(fn.trigger.get("runOnStartup", False)), use_monitor)
        timer.task = asyncio.create_task(self._run_timer(timer), name=f"hitl-timer-{fn.name}")
        self._timers.append(timer)

    async def _run_timer(self, timer: _Timer) -> None:
        fn, status_store = timer.function, self._timer_status
        status = status_store.get(fn.name) if status_store and timer.use_monitor else {}
        now = dt.datetime.now(dt.UTC)
        missed = False
        if status.get("Next"):
            with contextlib.suppress(ValueError):
                missed = dt.datetime.fromisoformat(status["Next"]) < now
        if missed or timer.run_on_startup:
            await self._fire_timer(timer, past_due=missed, scheduled=now)
        while not self._stopping.is_set():
            due = timer.schedule.next_after(dt.datetime.now(dt.UTC))
            self._record_timer(timer, last=None, next_due=due)
            delay = (due - dt.datetime.now(dt.UTC)).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), max(0.0, delay))
                return
            late = (dt.datetime.now(dt.UTC) - due).total_seconds()
            await self._fire_timer(timer, past_due=late > 1.0, scheduled=due)

    async def _fire_timer(self, timer: _Timer, *, past_due: bool, scheduled: dt.datetime) -> None:
        fn = timer.function
        status = self._timer_status.get(fn.name) if self._timer_status else {}
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})
        try:
            await self._invoker.invoke(fn, request)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("timer function %s raised", fn.name)
        self._record_timer(timer, last=scheduled, next_due=timer.schedule.next_after(dt.datetime.now(dt.UTC)))

    def _record_timer(self, timer: _Timer, *, last: dt.datetime | None, next_due: dt.datetime) -> None:
        if self._timer_status is None or not timer.use_monitor:
            return
        status = self._timer_status.get(timer.function.name)
        if last is not None:
            status["Last"] = last.isoformat()
        status["Next"] = next_due.isoformat()
        status["LastUpdated"] = dt.datetime.now(dt.UTC).isoformat()
        self._timer_status.set(timer.function.name, status)

    # -- dev routes ------------------------------------------------------------------------

    async def _dev_mailbox(self, request: web.Request) -> web.Response:
        """``GET /api/_dev/mailbox[?to=addr]``: received mails, newest last."""
        messages = self.mailbox.messages()
        to = request.query.get("to")
        if to:
            messages = [m for m in messages if to.lower() in (a.lower() for a in m.get("to", []))
                        or to.lower() in (a.lower() for a in m.get("envelope", {}).get("rcpt_tos", []))]
        return web.json_response({"smtp": {"host": self.smtp.host, "port": self.smtp.port} if self.smtp else None,
                                  "file": str(self.mailbox.path) if self.mailbox.path else None,
                                  "count": len(messages), "messages": messages})

    async def _dev_mailbox_clear(self, request: web.Request) -> web.Response:
        return web.json_response({"deleted": self.mailbox.clear()})

    async def _dev_eventgrid(self, request: web.Request) -> web.Response:
        """``GET /api/_dev/eventgrid``: subscribers and delivered/failed/pending counts."""
        if self.eventgrid is None:
            return web.json_response({"error": "not started"}, status=503)
        stats = await self.eventgrid.stats()
        stats["endpoint"] = self.eventgrid_topic_url()
        return web.json_response(stats)

    async def _dev_functions(self, request: web.Request) -> web.Response:
        """``GET /api/_dev/functions``: what was discovered, how it is mounted, invocation counts."""
        items = []
        for fn in self.functions:
            entry = fn.describe()
            if fn.trigger_type == "httpTrigger":
                route = next((r for r in self._routes if r.function is fn), None)
                entry["url"] = (self.api_url + "/" + route.template.template.strip("/")) if route else None
                entry["methods"] = sorted(route.methods) if route and route.methods else None
            items.append(entry)
        return web.json_response({"route_prefix": self.route_prefix, "functions": items})
