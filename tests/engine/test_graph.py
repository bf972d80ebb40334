"""Executors, handler dispatch and graph validation at build()."""

from __future__ import annotations

from typing import Any, Never

import pytest

from hitl_core import (
    ChatMessage,
    Executor,
    RequestInfoExecutor,
    Role,
    WorkflowBuilder,
    WorkflowContext,
    WorkflowDefinitionError,
    WorkflowRunError,
    handler,
)


class Multi(Executor):
    """Different handlers for str, list[ChatMessage], int | float and a catch-all."""

    def __init__(self) -> None:
        super().__init__(id="multi")
        self.calls: list[str] = []

    @handler
    async def on_text(self, message: str, ctx: WorkflowContext) -> None:
        self.calls.append("text")

    @handler
    async def on_chat(self, messages: list[ChatMessage], ctx: WorkflowContext) -> None:
        self.calls.append("chat")

    @handler
    async def on_number(self, value: int | float, ctx: WorkflowContext) -> None:
        self.calls.append("number")

    @handler
    async def on_bool(self, value: bool, ctx: WorkflowContext) -> None:
        self.calls.append("bool")


def test_dispatch_follows_the_message_annotation() -> None:
    ex = Multi()
    assert ex.find_handler("hi").name == "on_text"  # type: ignore[union-attr]
    assert ex.find_handler([ChatMessage(Role.USER, text="x")]).name == "on_chat"  # type: ignore[union-attr]
    assert ex.find_handler(3).name == "on_number"  # type: ignore[union-attr]
    assert ex.find_handler(2.5).name == "on_number"  # type: ignore[union-attr]
    assert ex.find_handler(True).name == "on_bool"  # type: ignore[union-attr]  # exact type beats int
    assert ex.find_handler(["not", "chat"]) is None
    assert ex.find_handler(b"bytes") is None


def test_handler_must_be_async() -> None:
    with pytest.raises(WorkflowDefinitionError, match="async def"):

        class Bad(Executor):
            @handler  # type: ignore[type-var]
            def sync(self, message: str, ctx: WorkflowContext) -> None:
                return None


def test_handler_needs_a_message_annotation() -> None:
    class NoAnnotation(Executor):
        @handler
        async def h(self, message, ctx: WorkflowContext) -> None:  # type: ignore[no-untyped-def]
            return None

    with pytest.raises(WorkflowDefinitionError, match="type annotation on 'message'"):
        NoAnnotation()


def test_executor_without_handlers_is_rejected() -> None:
    class Empty(Executor):
        pass

    with pytest.raises(WorkflowDefinitionError, match="no @handler"):
        Empty(id="empty")


class Upper(Executor):
    @handler
    async def run(self, text: str, ctx: WorkflowContext[str, str]) -> None:
        await ctx.send_message(text.upper())


class Sink(Executor):
    @handler
    async def run(self, text: str, ctx: WorkflowContext[Any, str]) -> None:
        await ctx.yield_output(text)


class IntSink(Executor):
    @handler
    async def run(self, value: int, ctx: WorkflowContext) -> None:
        return None


class Silent(Executor):
    @handler
    async def run(self, text: str, ctx: WorkflowContext[Any]) -> None:
        return None


def test_build_rejects_unreachable_executors_by_name() -> None:
    a, b, c, d = Upper(id="a"), Sink(id="b"), Upper(id="c"), Sink(id="d")
    builder = WorkflowBuilder().set_start_executor(a).add_edge(a, b).add_edge(c, d)
    with pytest.raises(WorkflowDefinitionError) as info:
        builder.build()
    assert "'c'" in str(info.value) and "'d'" in str(info.value) and "'a'" in str(info.value)


def test_build_rejects_an_edge_no_handler_can_receive() -> None:
    a, b = Upper(id="upper"), IntSink(id="ints")
    with pytest.raises(WorkflowDefinitionError) as info:
        WorkflowBuilder().set_start_executor(a).add_edge(a, b).build()
    message = str(info.value)
    assert "'upper' -> 'ints'" in message and "str" in message and "int" in message


def test_build_rejects_an_edge_from_an_executor_declared_to_send_nothing() -> None:
    class Mute(Executor):
        @handler
        async def run(self, text: str, ctx: WorkflowContext[Never]) -> None:
            return None

    a, b = Mute(id="mute"), Sink(id="sink")
    with pytest.raises(WorkflowDefinitionError, match="'mute' -> 'sink'"):
        WorkflowBuilder().set_start_executor(a).add_edge(a, b).build()


def test_build_rejects_request_info_edge_to_executor_without_response_handler() -> None:
    info, sink = RequestInfoExecutor(id="ri"), Sink(id="sink")
    up = Upper(id="up")
    with pytest.raises(WorkflowDefinitionError, match="RequestResponse"):
        WorkflowBuilder().set_start_executor(up).add_edge(up, sink).add_edge(sink, info).add_edge(info, sink).build()


def test_build_requires_a_start_executor_and_unique_ids() -> None:
    with pytest.raises(WorkflowDefinitionError, match="set_start_executor"):
        WorkflowBuilder().build()
    with pytest.raises(WorkflowDefinitionError, match="'x'"):
        WorkflowBuilder().set_start_executor(Upper(id="x")).add_edge(Upper(id="x"), Sink(id="y"))


async def test_conditions_filter_messages_on_edges() -> None:
    a, short, long_ = Upper(id="a"), Sink(id="short"), Sink(id="long")
    wf = (
        WorkflowBuilder()
        .set_start_executor(a)
        .add_edge(a, short, condition=lambda m: len(m) <= 3)
        .add_edge(a, long_, condition=lambda m: len(m) > 3)
        .build()
    )
    out = await wf.run("hello")
    assert [(e.source_executor_id, e.data) for e in out if hasattr(e, "source_executor_id") and e.data] == [
        ("long", "HELLO")
    ]


async def test_fan_out_delivers_to_every_target() -> None:
    a, b, c = Upper(id="a"), Sink(id="b"), Sink(id="c")
    wf = WorkflowBuilder().set_start_executor(a).add_edge(a, b).add_edge(a, c).build()
    assert sorted((await wf.run("x")).get_outputs()) == ["X", "X"]


async def test_start_message_of_the_wrong_type_is_refused() -> None:
    a, b = Upper(id="a"), Sink(id="b")
    wf = WorkflowBuilder().set_start_executor(a).add_edge(a, b).build()
    with pytest.raises(WorkflowRunError, match="start executor 'a' has no handler for int"):
        await wf.run(42)


async def test_sending_to_an_executor_without_an_edge_fails_in_the_sender() -> None:
    class Jumper(Executor):
        @handler
        async def run(self, text: str, ctx: WorkflowContext[str]) -> None:
            await ctx.send_message(text, target_id="c")

    a, b, c = Jumper(id="a"), Sink(id="b"), Sink(id="c")
    wf = WorkflowBuilder().set_start_executor(a).add_edge(a, b).add_edge(b, c).build()
    with pytest.raises(WorkflowRunError, match=r"no edge between them: add_edge\('a', 'c'\)"):
        await wf.run("x")
