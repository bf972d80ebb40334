"""WorkflowAgent: drive a workflow through the agent protocol (the seed's function-call bridge).

A pending request surfaces as ``FunctionCallContent(call_id=request_id,
name=WorkflowAgent.REQUEST_INFO_FUNCTION_NAME, arguments={...})``; the host answers with a
tool-role ``ChatMessage`` carrying ``FunctionResultContent(call_id=..., result=decision)``.
With a ``checkpoint_id`` nothing is kept in process memory between calls: the first
``run(prompt, checkpoint_id=k)`` starts session k, later calls resume it from storage, in any
process.
"""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from ..checkpoint.models import FINISHED_STATUSES
from ..errors import SerializationError, SessionClosedError
from ..serialization import encode, plain, resolve_type, type_name
from .events import RequestInfoEvent, WorkflowEvent, WorkflowOutputEvent
from .request_info import RequestInfoMessage
from .typing_utils import matches
from .workflow import Workflow


class Role(enum.StrEnum):
    """Who wrote a chat message."""

    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass
class TextContent:
    text: str


@dataclass
class FunctionCallContent:
    """A call the host must answer; for workflow requests ``call_id`` is the request id."""

    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class FunctionResultContent:
    """The host's answer to a :class:`FunctionCallContent`."""

    call_id: str
    result: Any = None


Content = TextContent | FunctionCallContent | FunctionResultContent


@dataclass
class ChatMessage:
    """One message of a conversation; ``text=`` is shorthand for a single TextContent."""

    role: Role = Role.USER
    contents: list[Any] = field(default_factory=list)
    author_name: str | None = None

    def __init__(self, role: Role | str = Role.USER, contents: Sequence[Any] | None = None, *,
                 text: str | None = None, author_name: str | None = None) -> None:
        self.role = Role(role)
        self.contents = list(contents or [])
        if text is not None:
            self.contents.insert(0, TextContent(text))
        self.author_name = author_name

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.contents if isinstance(c, TextContent))


@dataclass
class AgentRunResponse:
    messages: list[ChatMessage] = field(default_factory=list)
    raw_events: list[WorkflowEvent] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(m.text for m in self.messages if m.text)

    def function_calls(self) -> list[FunctionCallContent]:
        return [c for m in self.messages for c in m.contents if isinstance(c, FunctionCallContent)]


@dataclass
class AgentRunResponseUpdate:
    role: Role
    contents: list[Any]
    raw_event: WorkflowEvent | None = None

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.contents if isinstance(c, TextContent))


class WorkflowAgent:
    """Expose a workflow through ``run``/``run_stream`` with function calls for human requests."""

    REQUEST_INFO_FUNCTION_NAME = "request_info"

    @dataclass
    class RequestInfoFunctionArgs:
        """The arguments of a request_info call; ``data`` is the typed request."""

        request_id: str
        data: Any

        def to_dict(self) -> dict[str, Any]:
            return {
                "request_id": self.request_id,
                "request_type": type_name(type(self.data)),
                "data": plain(encode(self.data)),
            }

        def to_json(self) -> str:
            return json.dumps(self.to_dict())

        @classmethod
        def from_dict(cls, payload: Mapping[str, Any]) -> WorkflowAgent.RequestInfoFunctionArgs:
            if not isinstance(payload, Mapping) or "request_id" not in payload:
                raise ValueError("request_info arguments must be a mapping with 'request_id' and 'data'")
            data = payload.get("data")
            type_ref = payload.get("request_type")
            if type_ref and isinstance(data, Mapping):
                try:
                    request_cls = resolve_type(str(type_ref))
                    data = TypeAdapter(request_cls).validate_python(dict(data))
                except SerializationError:
                    pass  # type unknown here: keep the mapping
            return cls(request_id=str(payload["request_id"]), data=data)

        @classmethod
        def from_json(cls, text: str | bytes) -> WorkflowAgent.RequestInfoFunctionArgs:
            return cls.from_dict(json.loads(text))

    def __init__(self, workflow: Workflow, *, name: str | None = None) -> None:
        self.workflow = workflow
        self.name = name or workflow.name

    # -- input normalisation --------------------------------------------------------------
    @staticmethod
    def _messages(value: str | ChatMessage | Sequence[ChatMessage] | None) -> list[ChatMessage]:
        if value is None:
            return []
        if isinstance(value, str):
            return [ChatMessage(Role.USER, text=value)]
        if isinstance(value, ChatMessage):
            return [value]
        return list(value)

    def _start_input(self, raw: str | ChatMessage | Sequence[ChatMessage] | None, messages: list[ChatMessage]) -> Any:
        start = self.workflow.start_executor
        text = "\n".join(m.text for m in messages if m.text)
        if isinstance(raw, str) and start.can_handle(raw):
            return raw
        if start.can_handle(messages):
            return messages
        if start.can_handle(text):
            return text
        return messages

    @staticmethod
    def _results(messages: list[ChatMessage]) -> dict[str, Any]:
        return {c.call_id: c.result for m in messages for c in m.contents if isinstance(c, FunctionResultContent)}

    # -- running ------------------------------------------------------------------------
    async def run_stream(self, messages: str | ChatMessage | Sequence[ChatMessage] | None = None, *,
                         checkpoint_id: str | None = None) -> AsyncIterator[AgentRunResponseUpdate]:
        """Stream updates: assistant text for outputs, function calls for human requests."""
        async for event in self._events(messages, checkpoint_id):
            update = self._update_for(event)
            if update is not None:
                yield update

    async def run(self, messages: str | ChatMessage | Sequence[ChatMessage] | None = None, *,
                  checkpoint_id: str | None = None) -> AgentRunResponse:
        response = AgentRunResponse()
        async for event in self._events(messages, checkpoint_id):
            response.raw_events.append(event)
            update = self._update_for(event)
            if update is not None:
                response.messages.append(ChatMessage(update.role, update.contents, author_name=self.name))
        return response

    async def _events(self, raw: str | ChatMessage | Sequence[ChatMessage] | None,
                      checkpoint_id: str | None) -> AsyncIterator[WorkflowEvent]:
        messages = self._messages(raw)
        results = self._results(messages)
        wf = self.workflow
        if checkpoint_id is not None:
            storage = wf._storage_for(checkpoint_id)
            existing = await storage.load(checkpoint_id)
            if existing is None:
                if results:
                    from ..errors import SessionNotFoundError

                    raise SessionNotFoundError(checkpoint_id)
                stream = wf.run_stream(self._start_input(raw, messages), checkpoint_id=checkpoint_id)
            elif results:
                stream = wf.run_stream_from_checkpoint(checkpoint_id, responses=results)
            elif existing.checkpoint.status in FINISHED_STATUSES:
                raise SessionClosedError(checkpoint_id, existing.checkpoint.status)
            else:  # re-prompt with what is pending (or finish a crashed resume)
                stream = wf.run_stream_from_checkpoint(checkpoint_id)
        elif results:
            stream = wf.send_responses_streaming(results)
        else:
            stream = wf.run_stream(self._start_input(raw, messages))
        async for event in stream:
            yield event

    def _update_for(self, event: WorkflowEvent) -> AgentRunResponseUpdate | None:
        if isinstance(event, RequestInfoEvent):
            args = WorkflowAgent.RequestInfoFunctionArgs(request_id=event.request_id, data=event.data)
            call = FunctionCallContent(call_id=event.request_id, name=self.REQUEST_INFO_FUNCTION_NAME,
                                       arguments=args.to_dict())
            return AgentRunResponseUpdate(Role.ASSISTANT, [call], event)
        if isinstance(event, WorkflowOutputEvent):
            value = event.data
            if isinstance(value, ChatMessage):
                return AgentRunResponseUpdate(value.role, list(value.contents), event)
            if isinstance(value, list) and value and matches(value, list[ChatMessage]):
                return AgentRunResponseUpdate(Role.ASSISTANT, [c for m in value for c in m.contents], event)
            text = value if isinstance(value, str) else json.dumps(plain(encode(value)), default=str)
            return AgentRunResponseUpdate(Role.ASSISTANT, [TextContent(text)], event)
        return None


def extract_request_info_calls(response: AgentRunResponse) -> list[FunctionCallContent]:
    """The pending human requests in an agent response (helper for the seed's start_workflow)."""
    return [c for c in response.function_calls() if c.name == WorkflowAgent.REQUEST_INFO_FUNCTION_NAME]


__all__ = [
    "AgentRunResponse",
    "AgentRunResponseUpdate",
    "ChatMessage",
    "FunctionCallContent",
    "FunctionResultContent",
    "RequestInfoMessage",
    "Role",
    "TextContent",
    "WorkflowAgent",
    "extract_request_info_calls",
]
