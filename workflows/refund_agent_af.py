"""A refund agent written against Microsoft Agent Framework 1.23 only (no hitl imports).

The agent reads a customer's refund claim and calls the ``refund`` tool. Because the tool is
declared with ``approval_mode="always_require"``, Agent Framework does not run it: the agent's
turn ends with a ``function_approval_request`` and the workflow pauses with a ``request_info``
event. Whoever hosts the workflow shows the request to a person, then resumes the workflow - on a
new ``Workflow`` instance if it likes, from a checkpoint - with the person's answer::

    workflow = build_refund_workflow()
    result = await workflow.run("Refund order A-1001, 250.00 EUR: parcel arrived broken",
                                checkpoint_storage=storage)
    [event] = result.get_request_info_events()
    # event.data: Content(type="function_approval_request"), event.response_type: Content
    answer = approve(event.data)  # or reject(event.data, "no photo of the damage")
    checkpoint = await storage.get_latest(workflow_name=WORKFLOW_NAME)
    result = await build_refund_workflow().run(checkpoint_id=checkpoint.checkpoint_id,
                                               checkpoint_storage=storage,
                                               responses={event.request_id: answer})
    result.get_outputs()  # ["Refunded 250.00 EUR for order A-1001 (refund R-0001)."]

Approval policy. Agent Framework 1.23 decides whether a call needs approval from the tool alone
(``FunctionTool.approval_mode`` is ``"always_require"`` or ``"never_require"``; there is no
per-call predicate), so it cannot auto-approve small refunds by itself. ``refund`` therefore
always asks, and the amount policy belongs to the hosting declaration: ``requires_human_approval``
tells the host whether a request is above ``APPROVAL_THRESHOLD`` (a person must decide) or at or
below it (the host may answer ``approve(request)`` itself).

Rejection reasons. ``Content.to_function_approval_response(approved)`` takes no reason, and a
rejected call reaches the model as Agent Framework's fixed tool result
``"Error: Tool call invocation was rejected by user."``. ``reject(request, reason)`` stores the
reason under ``additional_properties["reason"]`` of the response, and two small middlewares on the
agent append it to that tool result, so the model (scripted or real) can tell the customer why.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Never

from agent_framework import (
    Agent,
    AgentContext,
    AgentExecutor,
    AgentExecutorRequest,
    AgentExecutorResponse,
    AgentMiddleware,
    BaseChatClient,
    ChatContext,
    ChatMiddleware,
    ChatMiddlewareLayer,
    ChatOptions,
    ChatResponse,
    ChatResponseUpdate,
    Content,
    Executor,
    FinishReasonLiteral,
    FunctionInvocationLayer,
    FunctionTool,
    Message,
    ResponseStream,
    SupportsChatGetResponse,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    register_checkpoint_type,
    tool,
)
from agent_framework.observability import ChatTelemetryLayer
from pydantic import Field

__all__ = [
    "APPROVAL_THRESHOLD",
    "LEDGER",
    "REFUND_TOOL_NAME",
    "REJECTION_REASON_KEY",
    "WORKFLOW_NAME",
    "RefundClaim",
    "RefundLedger",
    "RefundRecord",
    "ScriptedChatClient",
    "approve",
    "build_refund_agent",
    "build_refund_workflow",
    "make_refund_tool",
    "refund",
    "reject",
    "requires_human_approval",
]

WORKFLOW_NAME: Final = "refund-agent"
"""The workflow's name; checkpoints are filed under it (``storage.get_latest(workflow_name=...)``)."""

REFUND_TOOL_NAME: Final = "refund"

APPROVAL_THRESHOLD: Final = 100.0
"""Refunds above this amount need a person's approval; at or below it the host may approve itself."""

REJECTION_REASON_KEY: Final = "reason"
"""Key in a rejection response's ``additional_properties`` that carries the reviewer's reason."""

AGENT_INSTRUCTIONS: Final = (
    "You handle refund claims. Read the customer's order number, amount, currency and reason, call "
    "the refund tool once with them, then tell the customer the outcome in one sentence. If the refund "
    "was not approved, say so and give the reviewer's reason."
)

# The tool result Agent Framework 1.23 substitutes for a call whose approval was refused
# (agent_framework/_tools.py); the scripted model and the reason forwarding recognise it.
_AF_REJECTED_RESULT: Final = "Error: Tool call invocation was rejected by user."
_REASON_LABEL: Final = "Reason given by the reviewer:"
_REASONS_STATE_KEY: Final = "refund_agent.rejection_reasons"

_INTAKE_ID: Final = "intake"
_AGENT_ID: Final = "refund_agent"
_ANSWER_ID: Final = "answer"


# region Ledger and tool


@dataclass(frozen=True, slots=True)
class RefundRecord:
    """One refund the ledger has paid out."""

    refund_id: str
    order: str
    amount: float
    currency: str
    reason: str


class RefundLedger:
    """Where refunds are paid out: a stand-in for the payment system, injectable for tests."""

    def __init__(self) -> None:
        self._records: list[RefundRecord] = []

    def pay(self, *, order: str, amount: float, currency: str, reason: str) -> RefundRecord:
        record = RefundRecord(f"R-{len(self._records) + 1:04d}", order, amount, currency, reason)
        self._records.append(record)
        return record

    @property
    def records(self) -> tuple[RefundRecord, ...]:
        return tuple(self._records)

    @property
    def count(self) -> int:
        """How many refunds were paid."""
        return len(self._records)


LEDGER: Final = RefundLedger()
"""The ledger ``build_refund_workflow()`` pays from unless it is given another one."""


def make_refund_tool(ledger: RefundLedger) -> FunctionTool:
    """The ``refund`` tool, paying out of ``ledger``. It never runs without an approval."""

    @tool(name=REFUND_TOOL_NAME, approval_mode="always_require")
    async def refund(
        order: Annotated[str, Field(min_length=1, description="The order number, e.g. A-1001.")],
        amount: Annotated[float, Field(gt=0, description="The amount to refund.")],
        currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR.")],
        reason: Annotated[str, Field(description="Why the customer is refunded.")],
    ) -> str:
        """Refund money to the customer for an order. A person must approve every call."""
        record = ledger.pay(order=order, amount=amount, currency=currency, reason=reason)
        return f"Refund {record.refund_id} issued: {amount:.2f} {currency} for order {order}."

    return refund


refund: Final = make_refund_tool(LEDGER)
"""The ``refund`` tool bound to the module's ``LEDGER``."""


# endregion

# region Approval answers


def approve(request: Content) -> Content:
    """The response value that approves ``request`` (a ``function_approval_request``)."""
    return request.to_function_approval_response(approved=True)


def reject(request: Content, reason: str | None = None) -> Content:
    """The response value that rejects ``request``; ``reason`` is passed on to the model if given."""
    response = request.to_function_approval_response(approved=False)
    if reason is not None and reason.strip():
        # A new dict, so the request's own additional_properties are never touched.
        response.additional_properties = {**response.additional_properties, REJECTION_REASON_KEY: reason.strip()}
    return response


def requires_human_approval(request: Content, threshold: float = APPROVAL_THRESHOLD) -> bool:
    """Whether a person must decide ``request``: any call but a ``refund`` at or below ``threshold``."""
    call = request.function_call
    if request.type != "function_approval_request" or call is None or call.name != REFUND_TOOL_NAME:
        return True
    amount = (call.parse_arguments() or {}).get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return True
    return float(amount) > threshold


class _CaptureRejectionReasons(AgentMiddleware):
    """Remember, in the agent session, the reason given with each rejected call.

    The session is part of the AgentExecutor's checkpoint, so the reasons travel with it.
    """

    async def process(self, context: AgentContext, call_next: Callable[[], Awaitable[None]]) -> None:
        reasons: dict[str, str] = {}
        for message in context.messages:
            for content in message.contents:
                call = content.function_call
                reason = content.additional_properties.get(REJECTION_REASON_KEY)
                if (
                    content.type == "function_approval_response"
                    and content.approved is not True
                    and call is not None
                    and call.call_id
                    and isinstance(reason, str)
                ):
                    reasons[call.call_id] = reason
        if reasons and context.session is not None:
            stored = context.session.state.setdefault(_REASONS_STATE_KEY, {})
            stored.update(reasons)
        await call_next()


class _ForwardRejectionReasons(ChatMiddleware):
    """Append the remembered reason to the rejected call's tool result, in what the model reads.

    The replacement is local to each model call: the agent's history keeps Agent Framework's result.
    """

    async def process(self, context: ChatContext, call_next: Callable[[], Awaitable[None]]) -> None:
        reasons = context.session.state.get(_REASONS_STATE_KEY) if context.session is not None else None
        if isinstance(reasons, dict) and reasons:
            context.messages = [self._with_reasons(context, message, reasons) for message in context.messages]
        await call_next()

    @staticmethod
    def _with_reasons(context: ChatContext, message: Message, reasons: Mapping[str, str]) -> Message:
        contents: list[Content] = []
        for content in message.contents:
            reason = reasons.get(content.call_id or "")
            if content.type == "function_result" and reason and content.result == _AF_REJECTED_RESULT:
                content = Content.from_function_result(
                    call_id=content.call_id or "",
                    id=content.id,
                    result=f"{_AF_REJECTED_RESULT} {_REASON_LABEL} {reason}",
                    additional_properties=dict(content.additional_properties),
                )
            contents.append(content)
        if all(new is old for new, old in zip(contents, message.contents, strict=True)):
            return message
        replacement = Message(
            message.role,
            contents,
            author_name=message.author_name,
            message_id=message.message_id,
            additional_properties=dict(message.additional_properties),
        )
        return context.record_message_replacement(replacement, message)


# endregion

# region Scripted model

_CLAIM = re.compile(
    r"order\s+(?P<order>[A-Za-z0-9][\w-]*)\W+"
    r"(?P<amount>\d+(?:\.\d+)?)\s*(?P<currency>[A-Za-z]{3})\b"
    r"(?:\s*[:\-]\s*(?P<reason>\S.*))?",
    re.IGNORECASE | re.DOTALL,
)


class ScriptedChatClient(
    FunctionInvocationLayer[ChatOptions[None]],
    ChatMiddlewareLayer[ChatOptions[None]],
    ChatTelemetryLayer[ChatOptions[None]],
    BaseChatClient[ChatOptions[None]],
):
    """A deterministic stand-in for the language model: none can be reached from this machine.

    It is an Agent Framework 1.23 chat client like the real ones - ``BaseChatClient`` composed with
    the function-invocation, chat-middleware and telemetry layers - so everything around the model
    (tool calls, ``approval_mode``, approval requests, middleware, checkpoints) is Agent Framework's
    own code. Only the answers are scripted:

    * on the customer's claim ("Refund order A-1001, 250.00 EUR: parcel arrived broken") it calls
      ``refund(order="A-1001", amount=250.0, currency="EUR", reason="parcel arrived broken")``;
    * once the conversation ends with that call's result it answers with a one-line summary:
      "Refunded 250.00 EUR for order A-1001 (refund R-0001)." or, after a rejection,
      "The refund of 250.00 EUR for order A-1001 was not approved: <reviewer's reason>.";
    * a claim it cannot read gets a text answer asking for the order, amount and currency.

    In production pass a real chat client as ``build_refund_workflow(client=...)``: e.g.
    ``agent_framework.openai.OpenAIChatClient`` (package ``agent-framework-openai``; it talks to
    OpenAI or, given an Azure OpenAI endpoint and credential, to Azure OpenAI) or
    ``agent_framework.foundry.FoundryChatClient`` (package ``agent-framework-foundry``). The agent's
    instructions, the tool and the approval flow stay as they are.
    """

    OTEL_PROVIDER_NAME = "scripted"

    def _inner_get_response(
        self,
        *,
        messages: Sequence[Message],
        stream: bool,
        options: Mapping[str, Any],
        **kwargs: Any,
    ) -> Awaitable[ChatResponse] | ResponseStream[ChatResponseUpdate, ChatResponse]:
        reply = self._reply(messages)
        finish_reason: FinishReasonLiteral = (
            "tool_calls" if any(c.type == "function_call" for c in reply.contents) else "stop"
        )
        if stream:

            async def updates() -> AsyncIterator[ChatResponseUpdate]:
                await self._validate_options(options)
                yield ChatResponseUpdate(contents=reply.contents, role="assistant", finish_reason=finish_reason)

            return self._build_response_stream(updates())

        async def response() -> ChatResponse:
            await self._validate_options(options)
            return ChatResponse(messages=[reply], finish_reason=finish_reason)

        return response()

    def _reply(self, messages: Sequence[Message]) -> Message:
        conversation = [message for message in messages if message.role != "system"]
        if conversation and conversation[-1].role == "tool":
            results = [c for c in conversation[-1].contents if c.type == "function_result"]
            if results:
                return Message("assistant", [self._summary(conversation, result) for result in results])
        claim = next((message.text for message in reversed(conversation) if message.role == "user"), "")
        match = _CLAIM.search(claim)
        if match is None:
            return Message(
                "assistant",
                [
                    "Which order should I refund, and how much in which currency? For example: "
                    "'Refund order A-1001, 250.00 EUR: parcel arrived broken'."
                ],
            )
        calls_so_far = sum(c.type == "function_call" for m in conversation for c in m.contents)
        arguments = {
            "order": match["order"],
            "amount": float(match["amount"]),
            "currency": match["currency"].upper(),
            "reason": (match["reason"] or "not given").strip(),
        }
        call = Content.from_function_call(
            call_id=f"call_{calls_so_far + 1}", name=REFUND_TOOL_NAME, arguments=arguments
        )
        return Message("assistant", [call])

    @staticmethod
    def _summary(conversation: Sequence[Message], result: Content) -> Content:
        call = next(
            (c for m in conversation for c in m.contents if c.type == "function_call" and c.call_id == result.call_id),
            None,
        )
        arguments = (call.parse_arguments() if call is not None else None) or {}
        amount = arguments.get("amount")
        what = (
            f"{float(amount):.2f} {arguments.get('currency')} for order {arguments.get('order')}"
            if isinstance(amount, int | float)
            else "the refund"
        )
        text = str(result.result or "")
        if text.startswith(_AF_REJECTED_RESULT):
            reason = text.partition(_REASON_LABEL)[2].strip() or "the reviewer gave no reason"
            return Content.from_text(f"The refund of {what} was not approved: {reason.rstrip('.')}.")
        if result.exception is not None or text.startswith("Error"):
            return Content.from_text(f"The refund of {what} failed: {text}")
        refund_id = re.search(r"\bR-\d+\b", text)
        suffix = f" (refund {refund_id.group()})" if refund_id else ""
        return Content.from_text(f"Refunded {what}{suffix}.")


# endregion

# region Workflow


@dataclass(frozen=True, slots=True)
class RefundClaim:
    """A structured refund claim; the workflow turns it into the customer's message."""

    order: str
    amount: float
    currency: str
    reason: str

    def to_message(self) -> str:
        return f"Refund order {self.order}, {self.amount:.2f} {self.currency}: {self.reason}"


# A RefundClaim given to workflow.run() is part of the first checkpoint (the entry message);
# Agent Framework's restricted checkpoint decoder only rebuilds registered application types.
register_checkpoint_type(RefundClaim)


class _ClaimIntake(Executor):
    """Turns the workflow's input (text or a RefundClaim) into the customer's message to the agent."""

    @handler
    async def from_text(self, text: str, ctx: WorkflowContext[AgentExecutorRequest]) -> None:
        await ctx.send_message(AgentExecutorRequest(messages=[Message("user", [text])]))

    @handler
    async def from_claim(self, claim: RefundClaim, ctx: WorkflowContext[AgentExecutorRequest]) -> None:
        await ctx.send_message(AgentExecutorRequest(messages=[Message("user", [claim.to_message()])]))


class _AgentAnswer(Executor):
    """Yields the agent's final answer text as the workflow's output."""

    @handler
    async def answer(self, response: AgentExecutorResponse, ctx: WorkflowContext[Never, str]) -> None:
        await ctx.yield_output(response.agent_response.text)


def build_refund_agent(
    *, ledger: RefundLedger | None = None, client: SupportsChatGetResponse[Any] | None = None
) -> Agent:
    """The refund agent: ``client`` (default ScriptedChatClient) with the ``refund`` tool."""
    return Agent(
        client=client if client is not None else ScriptedChatClient(),
        instructions=AGENT_INSTRUCTIONS,
        name=_AGENT_ID,
        description="Refunds customers' orders; every refund needs an approval.",
        tools=[make_refund_tool(ledger if ledger is not None else LEDGER)],
        middleware=[_CaptureRejectionReasons(), _ForwardRejectionReasons()],
    )


def build_refund_workflow(
    *, ledger: RefundLedger | None = None, client: SupportsChatGetResponse[Any] | None = None
) -> Workflow:
    """A new ``refund-agent`` workflow: input ``str`` or ``RefundClaim``, output the agent's answer (``str``).

    It pauses with one ``request_info`` event per refund call: ``data`` is the
    ``function_approval_request`` Content, ``response_type`` is ``Content``; answer it with
    ``approve(data)`` / ``reject(data, reason)``. Every call builds fresh executors, so a workflow
    resumed from a checkpoint needs nothing from the instance that paused.
    """
    intake = _ClaimIntake(_INTAKE_ID)
    agent = AgentExecutor(build_refund_agent(ledger=ledger, client=client), id=_AGENT_ID)
    answer = _AgentAnswer(_ANSWER_ID)
    return (
        WorkflowBuilder(
            name=WORKFLOW_NAME,
            description="A refund agent whose refunds wait for a person's approval.",
            start_executor=intake,
            output_from=[answer],
        )
        .add_edge(intake, agent)
        .add_edge(agent, answer)
        .build()
    )


# endregion
