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
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, get_args, get_origin, is_typeddict

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import SchemaValidator

from ..checkpoint.models import StoredCheckpoint, WorkflowCheckpoint
from ..errors import ResponseValidationError, SerializationError
from ..serialization import decode, resolve_type
from .events import RequestInfoEvent
from .executor import Executor, WorkflowContext, handler
from .policy import ApprovalPolicy, first_deadline_offset
from .typing_utils import describe

#: Fields of the base class; the rest of a request's fields are its ``data`` for reviewers.
BASE_REQUEST_FIELDS = ("request_id", "source_executor_id", "approvers", "deadline", "timeout_policy", "subject",
                       "approval")

USER_PREFIX = "user:"
ROLE_PREFIX = "role:"


@dataclass
class Approvers:
    """Who may answer a request: named people and roles, kept apart so a user id never matches a role.

    ``users`` are person ids, e-mails or sign-in names (the service resolves each through the
    directory to one person); ``roles`` are role or group names (any member may answer).
    """

    users: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)


def approver_entries(approvers: Approvers | list[str] | tuple[str, ...] | None) -> list[str]:
    """Canonical approver entries ``user:<name>`` / ``role:<name>``, de-duplicated, in order.

    The shorthand of a plain list of strings has one meaning: each string names a **user**,
    unless it is written ``role:<name>`` (or ``user:<name>``). Role names are lower-cased; user
    names are lower-cased too and resolved to directory ids by the service.
    """
    if approvers is None:
        return []
    if isinstance(approvers, Approvers):
        raw = [USER_PREFIX + u for u in approvers.users] + [ROLE_PREFIX + r for r in approvers.roles]
    else:
        raw = [a if a.lower().startswith((USER_PREFIX, ROLE_PREFIX)) else USER_PREFIX + a for a in approvers]
    entries: dict[str, None] = {}
    for entry in raw:
        kind, _, name = entry.partition(":")
        name = name.strip().lower()
        if name:
            entries[f"{kind.lower()}:{name}"] = None
    return list(entries)


def split_entries(entries: list[str]) -> tuple[list[str], list[str]]:
    """(users, roles) of canonical entries; a plain string (older checkpoints) is a user."""
    users: list[str] = []
    roles: list[str] = []
    for entry in entries:
        if entry.startswith(ROLE_PREFIX):
            roles.append(entry[len(ROLE_PREFIX):])
        else:
            users.append(entry[len(USER_PREFIX):] if entry.startswith(USER_PREFIX) else entry.lower())
    return users, roles


def _new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass
class RequestInfoMessage:
    """Base of every request to a person.

    ``request_id`` becomes the ``call_id`` the answer must carry. ``approvers`` (an
    :class:`Approvers`, or a list of strings each naming a user, ``role:<name>`` for a role),
    ``subject`` (the person the request is about, who may not approve it), ``deadline`` and
    ``timeout_policy`` are optional routing hints for the service; they are keyword-only so
    subclasses can declare fields freely.
    """

    request_id: str = field(default_factory=_new_request_id)
    source_executor_id: str | None = None
    approvers: Approvers | list[str] = field(default_factory=list, kw_only=True)
    deadline: dt.datetime | None = field(default=None, kw_only=True)
    timeout_policy: dict[str, Any] | None = field(default=None, kw_only=True)
    subject: str | None = field(default=None, kw_only=True)
    #: How several approvers resolve the request (quorum, veto); None: the first answer decides.
    approval: ApprovalPolicy | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        # With an escalation chain and no deadline, the deadline is when the chain's first step that takes
        # the request away from its approvers is due (so its deadline is tracked; hitl_core.escalation).
        # A subclass that defines __post_init__ calls super().__post_init__().
        if self.deadline is None and self.approval is not None and self.approval.escalation:
            offset = first_deadline_offset(self.approval.escalation)
            if offset is not None:
                self.deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)


@dataclass
class RequestResponse[TRequest, TResponse]:
    """A person's answer, delivered to the executor that asked."""

    data: TResponse
    original_request: TRequest
    request_id: str
    decided_by: str | None = None
    #: Every vote when the request resolved under a quorum policy: ``{"voter", "approve", "result", "at"}``;
    #: ``data`` is then the deciding vote's answer. Empty for single-answer requests.
    votes: list[dict[str, Any]] = field(default_factory=list)
    #: When a delegate answered for an absent approver: that approver ("ron for amy": decided_by ron).
    on_behalf_of: str | None = None


def response_spec(message_type: Any) -> tuple[type, Any] | None:
    """For ``RequestResponse[Req, Resp]`` return ``(Req, Resp)``; otherwise None."""
    if get_origin(message_type) is RequestResponse:
        args = get_args(message_type)
        if len(args) == 2 and isinstance(args[0], type):
            return args[0], args[1]
    return None


def find_response_type(executor: Executor, request_type: type, request: Any = None) -> Any | None:
    """The response type ``executor`` declares for answers to ``request_type`` (most specific).

    An executor whose answers' type depends on the request itself (one that hosts another engine's
    requests, such as :mod:`hitl_core.agent_framework`) defines ``response_type_for(request)``; given
    the request, its answer (when not None) wins over the handlers' declared types."""
    dynamic = getattr(executor, "response_type_for", None)
    if request is not None and callable(dynamic):
        chosen = dynamic(request)
        if chosen is not None:
            return chosen
    best: tuple[int, Any] | None = None
    for spec in executor.handlers:
        pair = response_spec(spec.message_type)
        if pair is None or not issubclass(request_type, pair[0]):
            continue
        distance = request_type.__mro__.index(pair[0])
        if best is None or distance < best[0]:
            best = (distance, pair[1])
    return None if best is None else best[1]


logger = logging.getLogger("hitl_core.workflow")

_adapters: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _adapters.get(tp)
    if adapter is None:
        adapter = TypeAdapter(tp)
        _adapters[tp] = adapter
    return adapter


#: Core-schema nodes that hold named fields; the error types pydantic reports for a field they do not declare.
_FIELD_HOLDERS = ("model-fields", "dataclass-args", "typed-dict")
_UNDECLARED = ("extra_forbidden", "unexpected_keyword_argument")
_WRAPPERS = ("function-before", "function-after", "function-wrap")
_shape_validators: dict[Any, SchemaValidator | None] = {}
_stand_ins: dict[type, type] = {}


def _stand_in(cls: type) -> type:
    """A plain class named like ``cls``: the shape check builds these, never the real classes."""
    stand_in = _stand_ins.get(cls)
    if stand_in is None:
        stand_in = type(cls.__name__, (), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})
        _stand_ins[cls] = stand_in
    return stand_in


def _closed_shape(node: Any, inherited: str | None = None) -> Any:
    """The field structure of a pydantic core schema, closed: every model, dataclass and TypedDict
    refuses fields it does not declare, unless it declares ``extra="allow"`` (``model_config``, a
    pydantic dataclass's ``config``, a TypedDict's ``__pydantic_config__``; plain dataclasses and
    TypedDicts cannot, so they always refuse).

    Custom validators are left out and models/dataclasses are built as plain stand-in classes (a
    class's own prebuilt validator would ignore the change), so the check runs no user code; it
    only finds undeclared fields. (``validate_python(extra="forbid")`` is not enough: it overrides
    every type in the tree, also a nested model that allows extra fields.)
    """
    if isinstance(node, list | tuple):
        return type(node)(_closed_shape(item) for item in node)
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind in _WRAPPERS or kind == "function-plain":  # a validator: keep the structure it wraps
        inner = _closed_shape(node["schema"], inherited) if kind in _WRAPPERS else {"type": "any"}
        return {**inner, "ref": node["ref"]} if "ref" in node else inner
    raw_config = node.get("config")
    config: dict[str, Any] = dict(raw_config) if isinstance(raw_config, dict) else {}
    behaviour = config.get("extra_fields_behavior") if kind in ("model", "dataclass", "typed-dict") else None
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("default", "metadata", "serialization", "cls", "config"):
            out[key] = value  # values, not schemas
        elif key == "schema" and kind in ("model", "dataclass"):
            out[key] = _closed_shape(value, behaviour or inherited)  # the fields of this model
        else:
            out[key] = _closed_shape(value)
    if kind in ("model", "dataclass"):
        out["cls"] = _stand_in(node["cls"])
        out.pop("post_init", None)
        out.update(custom_init=False) if kind == "model" else out.update(slots=False, frozen=False)
    if kind in ("model", "dataclass", "typed-dict") and behaviour != "allow":
        out["config"] = {**config, "extra_fields_behavior": "forbid"}
    if kind in _FIELD_HOLDERS and (node.get("extra_behavior") or behaviour or inherited) != "allow":
        out["extra_behavior"] = "forbid"
    return out


def _undeclared_fields(candidate: Any, response_type: Any) -> list[dict[str, Any]]:
    """Errors for the fields of ``candidate`` that ``response_type`` does not declare (loc names each)."""
    if response_type not in _shape_validators:
        try:
            _shape_validators[response_type] = SchemaValidator(_closed_shape(_adapter(response_type).core_schema))
        except Exception:  # pragma: no cover - a schema pydantic-core will not rebuild: validate as declared
            logger.warning("cannot check %s for undeclared fields; validating it as declared", describe(response_type))
            _shape_validators[response_type] = None
    validator = _shape_validators[response_type]
    if validator is None:
        return []
    try:
        validator.validate_python(candidate)
    except PydanticValidationError as exc:
        return [{"loc": list(e.get("loc", ())), "msg": "not a declared field (undeclared fields are refused)",
                 "type": "extra_forbidden"} for e in exc.errors() if e.get("type") in _UNDECLARED]
    except Exception:  # pragma: no cover - the shape check must never be the reason an answer fails
        logger.warning("checking an answer to %s for undeclared fields failed", describe(response_type), exc_info=True)
    return []


def validate_response(result: Any, response_type: Any, *, call_id: str, session_id: str | None = None) -> Any:
    """Coerce a dataclass, pydantic model or plain dict into ``response_type`` (or raise).

    A field the response type does not declare is an error naming it (the request stays pending),
    unless the type allows extra fields (``model_config = ConfigDict(extra="allow")``): an answer
    is never trimmed to what was expected, so nothing a person sent is silently dropped.
    """
    if isinstance(response_type, type) and not is_typeddict(response_type):
        try:
            if isinstance(result, response_type):
                return result
        except TypeError:  # a type isinstance() cannot check (a non-runtime Protocol...): validate the value
            pass
    candidate = result
    if hasattr(result, "model_dump") and callable(result.model_dump):
        candidate = result.model_dump()
    elif dataclasses.is_dataclass(result) and not isinstance(result, type):
        candidate = dataclasses.asdict(result)
    undeclared = _undeclared_fields(candidate, response_type)
    try:
        value = _adapter(response_type).validate_python(candidate)
    except PydanticValidationError as exc:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
                  for e in exc.errors() if e.get("type") not in _UNDECLARED]
        named = {tuple(e["loc"]) for e in errors}
        errors += [e for e in undeclared if tuple(e["loc"]) not in named]
        raise ResponseValidationError(call_id, describe(response_type), errors, session_id=session_id) from None
    if undeclared:
        raise ResponseValidationError(call_id, describe(response_type), undeclared, session_id=session_id)
    return value


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
