"""Typed requests to people: RequestInfoMessage, RequestInfoExecutor and RequestResponse.

An executor subclasses :class:`RequestInfoMessage` with the fields a reviewer needs and sends it
with ``ctx.send_message(request, target_id=request_info_executor.id)``. The run pauses with the
request pending; the answer comes back to the requesting executor as
``RequestResponse[TheRequest, TheResponse]``, whose ``original_request`` is the typed request —
also after the checkpoint was restored in another process. The response type is the one the
requesting executor's handler declares, and answers are validated against it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from ..checkpoint.models import StoredCheckpoint, WorkflowCheckpoint
from ..errors import ResponseValidationError, SerializationError
from ..serialization import decode, resolve_type
from .events import RequestInfoEvent
from .executor import Executor, WorkflowContext, handler
from .typing_utils import describe

#: Fields of the base class; the rest of a request's fields are its ``data`` for reviewers.
BASE_REQUEST_FIELDS = ("request_id", "source_executor_id", "approvers", "deadline", "timeout_policy")


def _new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class RequestInfoMessage:
    """Base of every request to a person.

    ``request_id`` becomes the ``call_id`` the answer must carry. ``approvers`` (user ids,
    e-mails, group or role names), ``deadline`` and ``timeout_policy`` are optional routing hints
    for the service; they are keyword-only so subclasses can declare fields freely.
    """

    request_id: str = field(default_factory=_new_request_id)
    source_executor_id: str | None = None
    approvers: list[str] = field(default_factory=list, kw_only=True)
    deadline: dt.datetime | None = field(default=None, kw_only=True)
    timeout_policy: dict[str, Any] | None = field(default=None, kw_only=True)


@dataclass
class RequestResponse[TRequest, TResponse]:
    """A person's answer, delivered to the executor that asked."""

    data: TResponse
    original_request: TRequest
    request_id: str
    decided_by: str | None = None


def response_spec(message_type: Any) -> tuple[type, Any] | None:
    """For ``RequestResponse[Req, Resp]`` return ``(Req, Resp)``; otherwise None."""
    if get_origin(message_type) is RequestResponse:
        args = get_args(message_type)
        if len(args) == 2 and isinstance(args[0], type):
            return args[0], args[1]
    return None


def find_response_type(executor: Executor, request_type: type) -> Any | None:
    """The response type ``executor`` declares for answers to ``request_type`` (most specific)."""
    best: tuple[int, Any] | None = None
    for spec in executor.handlers:
        pair = response_spec(spec.message_type)
        if pair is None or not issubclass(request_type, pair[0]):
            continue
        distance = request_type.__mro__.index(pair[0])
        if best is None or distance < best[0]:
            best = (distance, pair[1])
    return None if best is None else best[1]


_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(tp)
    if adapter is None:
        adapter = TypeAdapter(tp)
        _adapters[tp] = adapter
    return adapter


def validate_response(result: Any, response_type: Any, *, call_id: str, session_id: str | None = None) -> Any:
    """Coerce a dataclass, pydantic model or plain dict into ``response_type`` (or raise)."""
    if isinstance(response_type, type) and isinstance(result, response_type):
        return result
    candidate = result
    if hasattr(result, "model_dump") and callable(result.model_dump):
        candidate = result.model_dump()
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        candidate = dataclasses.asdict(result)
    try:
        return _adapter(response_type).validate_python(candidate)
    except PydanticValidationError as exc:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors()]
        raise ResponseValidationError(call_id, describe(response_type), errors, session_id=session_id) from None


def response_json_schema(response_type: Any) -> dict[str, Any]:
    """JSON Schema of what a person must answer (for the HTTP API and UIs)."""
    try:
        return _adapter(response_type).json_schema()
    except Exception:  # a type pydantic cannot describe: accept anything
        return {}


def request_data_view(encoded_request: Any) -> dict[str, Any]:
    """The reviewer-facing fields of an encoded request (base-class routing fields removed)."""
    from ..serialization import plain

    view = plain(encoded_request)
    if isinstance(view, dict):
        return {k: v for k, v in view.items() if k not in BASE_REQUEST_FIELDS}
    return {"value": view}


class RequestInfoExecutor(Executor):
    """The gateway to people: records each request it receives and pauses the run."""

    def __init__(self, id: str = "request_info") -> None:
        super().__init__(id=id)

    @handler
    async def _on_request(self, message: RequestInfoMessage, ctx: WorkflowContext[Any]) -> None:
        ctx._run.register_request(message, request_executor_id=self.id)

    @staticmethod
    def pending_requests_from_checkpoint(
        checkpoint: WorkflowCheckpoint | StoredCheckpoint,
    ) -> list[RequestInfoEvent]:
        """What a checkpoint waits for, as typed RequestInfoEvents (answers can be prepared from them)."""
        cp = checkpoint.checkpoint if isinstance(checkpoint, StoredCheckpoint) else checkpoint
        events = []
        for pending in cp.pending_requests:
            request = decode(pending.request)
            response_type: Any = None
            if pending.response_type:
                try:
                    response_type = resolve_type(pending.response_type)
                except SerializationError:
                    response_type = None
            events.append(
                RequestInfoEvent(
                    data=request,
                    request_id=pending.call_id,
                    source_executor_id=pending.executor_id,
                    request_type=type(request),
                    response_type=response_type,
                )
            )
        return events
