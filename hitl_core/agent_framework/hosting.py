"""Host a Microsoft Agent Framework workflow on the service, unchanged.

Why this shape
--------------
An Agent Framework (AF) ``Workflow`` pauses with ``ctx.request_info(data, response_type)`` and
resumes with ``workflow.run(checkpoint_id=..., responses={request_id: answer})``. Everything the
service does for people — the inbox, links, deadlines, approval policies, audit, events and
exactly one resume per decision — belongs to hitl's own engine. So the AF workflow runs *inside*
one hitl executor, :class:`AgentFrameworkHost`, of a two-node hitl workflow (host <->
``RequestInfoExecutor``):

* on start, the host builds the AF workflow and runs it with the session's input, against an
  in-memory AF checkpoint storage for the length of that run;
* each AF request it paused on becomes one hitl request (:class:`AgentFrameworkRequest`: the
  request's data as JSON, who answers and under which policy from the :class:`HumanStep`
  declared beside the workflow, and the answer's JSON Schema from AF's ``response_type``);
* the AF checkpoint the run ended on is kept in the host's executor state, i.e. inside the
  session's own checkpoint document: it is written by the same conditional write that records
  the hitl request or the decision, so the AF state and the service's state can never disagree
  and a pause costs one write (AF's own storages write a file per superstep);
* on a decision, hitl's engine claims the request **before** the host runs (so a second,
  concurrent decision is refused and AF's ``@response_handler`` runs once), then the host
  restores a fresh AF workflow from the stored checkpoint and hands it the answer.

Tool approvals: a request whose data is AF's ``function_approval_request`` content (a tool with
``approval_mode="always_require"`` in an agent) becomes "approve a call of ``refund(...)``?" with
the arguments shown and a typed :class:`ToolApproval` answer, turned back into AF's approval
response when the workflow resumes.

Encoding: AF encodes values that JSON cannot hold with pickle (base64 inside its JSON). The host
stores AF's encoding as it is and reads it back **only** through AF's restricted loader
(``decode_checkpoint_value(..., allowed_types=...)``): AF's own and the standard types load;
an application type must be listed in ``allowed_checkpoint_types`` ("module:qualname") or
registered with ``agent_framework.register_checkpoint_type`` (the input model and the
``request_type`` of each :class:`HumanStep` are allowed already). The host decodes each checkpoint
once as it stores it, so a refused type fails the run that made it, before anyone is asked.
Prefer pydantic models and dataclasses of JSON values for requests and answers: they travel as
JSON in hitl's requests.

Nothing outside :mod:`hitl_core.agent_framework` imports this module; it needs the
``hitl_core[agent-framework]`` extra.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent_framework import Content, InMemoryCheckpointStorage, WorkflowCheckpointException
from agent_framework import Workflow as AgentWorkflow
from agent_framework import WorkflowCheckpoint as AgentCheckpoint
from agent_framework._workflows._checkpoint_encoding import decode_checkpoint_value, encode_checkpoint_value
from pydantic import BaseModel, Field, TypeAdapter

from ..checkpoint.base import CheckpointStorage
from ..errors import WorkflowRunError
from ..registry import StartContext, WorkflowSpec, human_loop
from ..serialization import resolve_type, type_name
from ..settings import Settings
from ..workflow.executor import Executor, WorkflowContext, handler
from ..workflow.policy import ApprovalPolicy
from ..workflow.request_info import Approvers, RequestInfoMessage, RequestResponse
from ..workflow.workflow import Workflow

#: The hitl executor ids of a hosted workflow (its two nodes).
HOST_ID = "agent_framework"
REQUEST_INFO_ID = "request_info"

#: Answer types that are not classes hitl resolves by name (dataclasses, models, enums).
_PLAIN_TYPES: dict[str, type] = {t.__name__: t for t in (bool, str, int, float, dict, list)}


class ToolApproval(BaseModel):
    """A person's answer to "approve this tool call?"."""

    approved: bool = Field(title="Approve the call", description="Approve: the agent calls the tool. "
                           "Reject: it does not, and is told so.")
    reason: str = Field(default="", max_length=2_000, title="Reason",
                        description="Why (shown in the audit; optional).")


@dataclass
class AgentFrameworkStart:
    """The first message of a hosted session: the validated start input, as JSON."""

    input: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentFrameworkRequest(RequestInfoMessage):
    """One request an Agent Framework workflow paused on, as the service's reviewers see it."""

    question: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    #: AF's request id (``responses={af_request_id: ...}`` on resume).
    af_request_id: str = ""
    #: ``tool_approval`` or ``request``.
    kind: str = "request"
    #: The type a person's answer is validated against (``module:qualname``, or a plain type's name).
    answer_type: str = ""


@dataclass(frozen=True)
class HumanStep:
    """Who answers one kind of Agent Framework request, under which policy.

    A step matches a tool approval when ``tool`` names the tool (``"*"``: any tool), and any
    other request when its data is an instance of ``request_type`` (None: any data). The first
    matching step of the declaration wins. ``approvers`` is the list/``Approvers`` itself, or a
    function of (the request's details as JSON, the session's input as JSON) returning it.
    """

    approvers: Approvers | list[str] | Callable[[dict[str, Any], dict[str, Any]], Approvers | list[str]]
    request_type: type | None = None
    tool: str | None = None
    question: str | Callable[[dict[str, Any]], str] = ""
    approval: ApprovalPolicy | None = None
    subject: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None

    def matches(self, data: Any, tool: str | None) -> bool:
        if tool is not None:
            return self.tool is not None and self.tool in ("*", tool)
        return self.tool is None and (self.request_type is None or isinstance(data, self.request_type))


@dataclass(frozen=True)
class HostedWorkflow:
    """An Agent Framework workflow and how the service hosts it (see :func:`agent_framework_workflow`)."""

    name: str
    build: Callable[[], AgentWorkflow]
    input_model: type[BaseModel]
    first_message: Callable[[BaseModel], Any]
    steps: tuple[HumanStep, ...]
    allowed_checkpoint_types: frozenset[str] = frozenset()


@functools.cache
def _adapter(cls: type) -> TypeAdapter[Any]:
    """One TypeAdapter per dataclass (building one costs most of a millisecond; bench/af_hosting.py)."""
    return TypeAdapter(cls)


def _as_json(value: Any) -> Any:
    """A request's data as JSON values for reviewers (models, dataclasses, AF contents, plain values)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _adapter(type(value)).dump_python(value, mode="json")
    if isinstance(value, Mapping):
        return {str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_json(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _tool_call(data: Any) -> tuple[str, dict[str, Any]] | None:
    """(tool name, arguments) when ``data`` is AF's function approval request, else None."""
    if not isinstance(data, Content) or data.type != "function_approval_request":
        return None
    call = data.function_call
    name = str(getattr(call, "name", "") or "")
    arguments: Any = getattr(call, "arguments", None)
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            arguments = {"arguments": arguments}
    return name, _as_json(arguments or {})


#: Where a rejection's reason travels on AF's approval response (AF's own response has no field for
#: it; an agent middleware may pass it on to the model, as workflows/refund_agent_af.py does).
REASON_KEY = "reason"


def tool_answer(request: Content, approval: Any) -> Content:
    """AF's approval response to ``request`` from a person's :class:`ToolApproval`."""
    approved = bool(getattr(approval, "approved", False))
    response = request.to_function_approval_response(approved=approved)
    reason = str(getattr(approval, "reason", "") or "").strip()
    if reason:
        response.additional_properties = {**(response.additional_properties or {}), REASON_KEY: reason}
    return response


def _answer_type_name(response_type: Any) -> str:
    if isinstance(response_type, type) and response_type.__name__ in _PLAIN_TYPES \
            and _PLAIN_TYPES[response_type.__name__] is response_type:
        return response_type.__name__
    if isinstance(response_type, type):
        return type_name(response_type)
    raise WorkflowRunError(f"the Agent Framework request expects a {response_type!r}; hosted requests need a class "
                           "(a pydantic model, a dataclass or a plain JSON type) as their response_type")


class AgentFrameworkHost(Executor):
    """The hitl executor that runs one Agent Framework workflow (module docstring)."""

    def __init__(self, hosted: HostedWorkflow) -> None:
        super().__init__(id=HOST_ID)
        self.hosted = hosted

    def response_type_for(self, request: Any) -> Any | None:
        """The type a person's answer to ``request`` must have: AF's own ``response_type``, or
        :class:`ToolApproval` for a tool call (hitl_core.workflow.request_info.find_response_type)."""
        if not isinstance(request, AgentFrameworkRequest) or not request.answer_type:
            return None
        plain = _PLAIN_TYPES.get(request.answer_type)
        return plain if plain is not None else resolve_type(request.answer_type)

    @handler
    async def start(self, message: AgentFrameworkStart,
                    ctx: WorkflowContext[AgentFrameworkRequest, Any]) -> None:
        first = self.hosted.first_message(self.hosted.input_model.model_validate(message.input))
        state: dict[str, Any] = {"input": message.input, "outstanding": [], "checkpoint": None}
        await self._run(ctx, state, message=first)

    @handler
    async def answered(self, answer: RequestResponse[AgentFrameworkRequest, Any],
                       ctx: WorkflowContext[AgentFrameworkRequest, Any]) -> None:
        state = await ctx.get_state()
        request = answer.original_request
        checkpoint = self._restore(state)
        value = answer.data
        if request.kind == "tool_approval":
            pending = checkpoint.pending_request_info_events.get(request.af_request_id)
            content = getattr(pending, "data", None)
            if not isinstance(content, Content):
                raise WorkflowRunError("the stored Agent Framework checkpoint has no tool call "
                                       f"{request.af_request_id!r}")
            value = tool_answer(content, answer.data)
        state["outstanding"] = [i for i in state["outstanding"] if i != request.af_request_id]
        await self._run(ctx, state, checkpoint=checkpoint, responses={request.af_request_id: value})

    def _restore(self, state: dict[str, Any]) -> AgentCheckpoint:
        encoded = state.get("checkpoint")
        if encoded is None:
            raise WorkflowRunError("the session holds no Agent Framework checkpoint to resume from")
        try:
            decoded = decode_checkpoint_value(encoded, allowed_types=self.hosted.allowed_checkpoint_types)
        except WorkflowCheckpointException as exc:
            raise WorkflowRunError(
                f"the Agent Framework checkpoint of {self.hosted.name!r} holds a type its restricted loader refuses "
                f"({exc}); list it in agent_framework_workflow(allowed_checkpoint_types=[...])") from None
        return AgentCheckpoint.from_dict(decoded)

    async def _run(self, ctx: WorkflowContext[AgentFrameworkRequest, Any], state: dict[str, Any], *,
                   message: Any = None, checkpoint: AgentCheckpoint | None = None,
                   responses: dict[str, Any] | None = None) -> None:
        """One AF run (a fresh workflow instance: AF holds a run's state in the instance), then the
        requests it paused on become hitl requests and its checkpoint goes into the session."""
        workflow = self.hosted.build()
        storage = InMemoryCheckpointStorage()
        if checkpoint is not None:
            await storage.save(checkpoint)
            result = await workflow.run(checkpoint_id=checkpoint.checkpoint_id, checkpoint_storage=storage,
                                        responses=responses)
        else:
            result = await workflow.run(message, checkpoint_storage=storage)
        for output in result.get_outputs():
            await ctx.yield_output(_as_json(output))
        latest = await storage.get_latest(workflow_name=workflow.name)
        state["checkpoint"] = encode_checkpoint_value(latest.to_dict()) if latest is not None else None
        if state["checkpoint"] is not None and result.get_request_info_events():
            self._restore(state)  # a type the restricted loader refuses fails now, before anyone is asked
        outstanding: list[str] = state["outstanding"]
        for event in result.get_request_info_events():
            if event.request_id in outstanding:
                continue  # still waiting for its person: asked once
            outstanding.append(event.request_id)
            await ctx.send_message(self._request(event, state["input"]), target_id=REQUEST_INFO_ID)
        await ctx.set_state(state)

    def _request(self, event: Any, start_input: dict[str, Any]) -> AgentFrameworkRequest:
        data = event.data
        call = _tool_call(data)
        tool = call[0] if call is not None else None
        step = next((s for s in self.hosted.steps if s.matches(data, tool)), None)
        what = f"a call of the tool {tool!r}" if tool is not None else f"a {type(data).__qualname__} request"
        if step is None:
            raise WorkflowRunError(f"the Agent Framework workflow {self.hosted.name!r} asked for {what}, and no "
                                   "HumanStep of its declaration says who answers it")
        if call is not None:
            details: dict[str, Any] = {"tool": call[0], "arguments": call[1]}
            arguments = ", ".join(f"{k}={v!r}" for k, v in call[1].items())
            default_question = f"Approve a call of {call[0]}({arguments})?"
            answer_type = type_name(ToolApproval)
        else:
            shown = _as_json(data)
            details = shown if isinstance(shown, dict) else {"value": shown}
            default_question = f"{self.hosted.name}: {type(data).__qualname__}"
            answer_type = _answer_type_name(event.response_type)
        question = step.question(details) if callable(step.question) else (step.question or default_question)
        approvers = step.approvers(details, start_input) if callable(step.approvers) else step.approvers
        subject = step.subject(details, start_input) if step.subject is not None else None
        return AgentFrameworkRequest(question=question, details=details, af_request_id=event.request_id,
                                     kind="tool_approval" if call is not None else "request",
                                     answer_type=answer_type, approvers=approvers, approval=step.approval,
                                     subject=subject)


def _model_itself(model: BaseModel) -> Any:
    return model


def agent_framework_workflow(
    name: str,
    *,
    build: Callable[[], AgentWorkflow],
    input_model: type[BaseModel],
    steps: Sequence[HumanStep],
    first_message: Callable[[BaseModel], Any] = _model_itself,
    description: str = "",
    separation_of_duties: bool = False,
    prepare_input: Callable[[BaseModel, StartContext], Awaitable[BaseModel]] | None = None,
    allowed_checkpoint_types: Sequence[str] = (),
) -> WorkflowSpec:
    """A :class:`~hitl_core.registry.WorkflowSpec` that runs the Agent Framework workflow ``build()``
    makes, started with ``first_message(input)``; ``steps`` say who answers its requests.

    ``build`` is called for every run (AF keeps one run's state in a ``Workflow`` instance), so it
    must build a new workflow each time, with the same executors and edges."""
    # the types the declaration names are the application's own: the restricted loader may build them
    declared = {type_name(input_model)} | {type_name(s.request_type) for s in steps if s.request_type is not None}
    hosted = HostedWorkflow(name=name, build=build, input_model=input_model, first_message=first_message,
                            steps=tuple(steps), allowed_checkpoint_types=frozenset(allowed_checkpoint_types) | declared)

    def build_host(storage: CheckpointStorage, settings: Settings) -> Workflow:
        return human_loop(name, AgentFrameworkHost(hosted), storage, request_info_id=REQUEST_INFO_ID)

    def start_message(model: BaseModel) -> AgentFrameworkStart:
        return AgentFrameworkStart(input=model.model_dump(mode="json"))

    return WorkflowSpec(name=name, input_model=input_model, build=build_host, start_message=start_message,
                        description=description, separation_of_duties=separation_of_duties,
                        prepare_input=prepare_input)
