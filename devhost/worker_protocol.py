"""The smallest stand-in for the Functions host's gRPC messages that ``azure-functions-runtime`` needs.

Why this exists: in Azure the .NET Functions host talks to the Python worker over gRPC, and the
worker's *proxy* (not on PyPI) hands the runtime package a ``protos`` module generated from the
host's ``FunctionRpc.proto``. ``azure-functions-runtime`` itself — the code that indexes the app,
validates every function, converts trigger payloads and calls the user function — is on PyPI, and
it only touches those messages as plain objects: it constructs them with keyword arguments, reads
their fields, and asks ``WhichOneof`` which member of a ``oneof`` is set. So this module defines
just those messages, with just the fields the runtime reads or writes, named as the host's
protocol names them. Nothing of the runtime's rules is re-implemented here: every decision
(which function loads, which annotation is refused, how an Event Grid payload becomes an object,
what an HTTP response looks like on the wire) is the runtime's own code.

Field semantics follow protobuf where the runtime relies on them: an unset scalar reads as its
default, an unset message field reads as an empty message, and ``WhichOneof`` answers ``None``
when no member is set.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

__all__ = [
    "BindingInfo",
    "FunctionEnvironmentReloadResponse",
    "FunctionLoadResponse",
    "FunctionMetadataResponse",
    "InvocationRequest",
    "InvocationResponse",
    "NullableBool",
    "NullableDouble",
    "NullableString",
    "NullableTimestamp",
    "ParameterBinding",
    "RetryContext",
    "RpcException",
    "RpcFunctionMetadata",
    "RpcHttp",
    "RpcHttpCookie",
    "RpcRetryOptions",
    "RpcTraceContext",
    "StatusResult",
    "TypedData",
    "WorkerInitResponse",
    "WorkerMetadata",
]


class _Message:
    """Keyword construction, protobuf-style defaults and ``WhichOneof`` for one ``oneof`` group."""

    _oneof: ClassVar[tuple[str, tuple[str, ...]] | None] = None

    def WhichOneof(self, group: str) -> str | None:
        if self._oneof is None or self._oneof[0] != group:
            raise ValueError(f"{type(self).__name__} has no oneof group {group!r}")
        for member in self._oneof[1]:
            if getattr(self, member, None) is not None:
                return member
        return None

    def HasField(self, name: str) -> bool:
        return getattr(self, name, None) is not None


# --- results and errors -------------------------------------------------------------------------


@dataclass
class RpcException(_Message):
    message: str = ""
    stack_trace: str = ""
    source: str = ""


@dataclass
class StatusResult(_Message):
    Failure: ClassVar[int] = 0
    Success: ClassVar[int] = 1
    Cancelled: ClassVar[int] = 2

    status: int = 0
    result: str = ""
    exception: RpcException | None = None


@dataclass
class WorkerMetadata(_Message):
    runtime_name: str = ""
    runtime_version: str = ""
    worker_version: str = ""
    worker_bitness: str = ""
    custom_properties: dict[str, str] = field(default_factory=dict)


@dataclass
class WorkerInitResponse(_Message):
    capabilities: dict[str, str] = field(default_factory=dict)
    worker_metadata: WorkerMetadata | None = None
    result: StatusResult = field(default_factory=StatusResult)


@dataclass
class FunctionEnvironmentReloadResponse(_Message):
    capabilities: dict[str, str] = field(default_factory=dict)
    worker_metadata: WorkerMetadata | None = None
    result: StatusResult = field(default_factory=StatusResult)


# --- indexing -------------------------------------------------------------------------------------


@dataclass
class BindingInfo(_Message):
    # Direction
    in_: ClassVar[int] = 0
    out: ClassVar[int] = 1
    inout: ClassVar[int] = 2
    # DataType
    undefined: ClassVar[int] = 0
    string: ClassVar[int] = 1
    binary: ClassVar[int] = 2
    stream: ClassVar[int] = 3

    type: str = ""
    direction: int = 0
    data_type: int = 0


@dataclass
class RpcRetryOptions(_Message):
    max_retry_count: int = 0
    retry_strategy: Any = None
    delay_interval: dt.timedelta | None = None
    minimum_interval: dt.timedelta | None = None
    maximum_interval: dt.timedelta | None = None


@dataclass
class RpcFunctionMetadata(_Message):
    name: str = ""
    function_id: str = ""
    directory: str = ""
    script_file: str = ""
    entry_point: str = ""
    language: str = ""
    is_proxy: bool = False
    managed_dependency_enabled: bool = False
    bindings: dict[str, BindingInfo] = field(default_factory=dict)
    raw_bindings: list[str] = field(default_factory=list)
    retry_options: RpcRetryOptions | None = None
    properties: dict[str, str] = field(default_factory=dict)


@dataclass
class FunctionMetadataResponse(_Message):
    use_default_metadata_indexing: bool = False
    function_metadata_results: list[RpcFunctionMetadata] | None = None
    result: StatusResult = field(default_factory=StatusResult)


@dataclass
class FunctionLoadResponse(_Message):
    function_id: str = ""
    result: StatusResult = field(default_factory=StatusResult)


# --- invocation ----------------------------------------------------------------------------------


@dataclass
class NullableString(_Message):
    value: str = ""


@dataclass
class NullableBool(_Message):
    value: bool = False


@dataclass
class NullableDouble(_Message):
    value: float = 0.0


@dataclass
class NullableTimestamp(_Message):
    value: Any = None


@dataclass
class RpcHttpCookie(_Message):
    class SameSite:
        Lax: ClassVar[int] = 1
        Strict: ClassVar[int] = 2
        ExplicitNone: ClassVar[int] = 3

    name: str = ""
    value: str = ""
    domain: NullableString | None = None
    path: NullableString | None = None
    expires: NullableTimestamp | None = None
    secure: NullableBool | None = None
    http_only: NullableBool | None = None
    same_site: int = 0
    max_age: NullableDouble | None = None


setattr(RpcHttpCookie.SameSite, "None", 0)


@dataclass
class RpcHttp(_Message):
    method: str = ""
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: TypedData | None = None
    params: dict[str, str] = field(default_factory=dict)
    status_code: str = ""
    query: dict[str, str] = field(default_factory=dict)
    enable_content_negotiation: bool = False
    cookies: list[RpcHttpCookie] | None = None


@dataclass
class TypedData(_Message):
    _oneof: ClassVar[tuple[str, tuple[str, ...]] | None] = ("data", (
        "string", "json", "bytes", "stream", "http", "int", "double", "collection_bytes",
        "collection_string", "collection_double", "collection_sint64", "model_binding_data",
        "collection_model_binding_data"))

    string: str | None = None
    json: str | None = None
    bytes: builtins.bytes | None = None
    stream: builtins.bytes | None = None
    http: RpcHttp | None = None
    int: builtins.int | None = None
    double: float | None = None
    collection_bytes: Any = None
    collection_string: Any = None
    collection_double: Any = None
    collection_sint64: Any = None
    model_binding_data: Any = None
    collection_model_binding_data: Any = None


@dataclass
class ParameterBinding(_Message):
    _oneof: ClassVar[tuple[str, tuple[str, ...]] | None] = ("rpc_data", ("data", "rpc_shared_memory"))

    name: str = ""
    data: TypedData | None = None
    rpc_shared_memory: Any = None


@dataclass
class RpcTraceContext(_Message):
    trace_parent: str = ""
    trace_state: str = ""
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class RetryContext(_Message):
    retry_count: int = 0
    max_retry_count: int = 0
    exception: RpcException = field(default_factory=RpcException)


@dataclass
class InvocationRequest(_Message):
    invocation_id: str = ""
    function_id: str = ""
    input_data: list[ParameterBinding] = field(default_factory=list)
    trigger_metadata: Mapping[str, TypedData] = field(default_factory=dict)
    trace_context: RpcTraceContext = field(default_factory=RpcTraceContext)
    retry_context: RetryContext = field(default_factory=RetryContext)


@dataclass
class InvocationResponse(_Message):
    invocation_id: str = ""
    return_value: TypedData | None = None
    result: StatusResult = field(default_factory=StatusResult)
    output_data: list[ParameterBinding] = field(default_factory=list)
