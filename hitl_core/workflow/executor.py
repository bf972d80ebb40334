"""Executors, the ``@handler`` decorator and the context a handler receives.

An executor is a node of the workflow graph. Its ``@handler`` methods are chosen by the type
annotation of their message parameter; the ``WorkflowContext[T_Out, T_W_Out]`` annotation of the
context parameter declares what the handler may send (``T_Out``) and yield as output
(``T_W_Out``), which lets ``WorkflowBuilder.build()`` reject edges that can never carry a message.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Never, TypeVar, cast, get_args, get_origin, get_type_hints

from ..errors import WorkflowDefinitionError
from .events import WorkflowEvent
from .typing_utils import flatten_union, matches

if TYPE_CHECKING:
    from .runner import RunState

T_Out = TypeVar("T_Out", default=Never)
T_W_Out = TypeVar("T_W_Out", default=Never)

_HANDLER_MARK = "__hitl_handler__"


class WorkflowContext(Generic[T_Out, T_W_Out]):
    """What a handler can do: send messages, yield outputs, emit events, keep state.

    Executor state (``get_state``/``set_state``) and shared state survive checkpoints. Values are
    JSON-encoded the moment they are handed over, so a value that cannot be stored fails inside
    the handler that produced it.
    """

    def __init__(self, run: RunState, executor_id: str) -> None:
        self._run = run
        self._executor_id = executor_id

    @property
    def executor_id(self) -> str:
        return self._executor_id

    @property
    def session_id(self) -> str:
        return self._run.checkpoint.session_id

    async def send_message(self, message: T_Out, target_id: str | None = None) -> None:
        """Send ``message`` along this executor's edges (or only to ``target_id``)."""
        self._run.send(message, source_id=self._executor_id, target_id=target_id)

    async def yield_output(self, output: T_W_Out) -> None:
        """Publish a workflow output (returned by ``get_outputs()``, stored in the checkpoint)."""
        self._run.yield_output(output, source_id=self._executor_id)

    async def add_event(self, event: WorkflowEvent) -> None:
        """Emit a custom event to whoever streams the run."""
        if not isinstance(event, WorkflowEvent):
            raise TypeError(f"add_event expects a WorkflowEvent, got {type(event).__qualname__}")
        self._run.emit(event)

    async def get_state(self) -> Any:
        """This executor's state (None until set); a fresh copy each call."""
        return self._run.get_executor_state(self._executor_id)

    async def set_state(self, state: Any) -> None:
        self._run.set_executor_state(self._executor_id, state)

    async def get_shared_state(self, key: str, default: Any = None) -> Any:
        """A value every executor of the session can read."""
        return self._run.get_shared_state(key, default)

    async def set_shared_state(self, key: str, value: Any) -> None:
        self._run.set_shared_state(key, value)


HandlerFunc = Callable[[Any, Any, WorkflowContext[Any, Any]], Awaitable[None]]


def handler[F: Callable[..., Awaitable[None]]](func: F) -> F:
    """Mark an ``async def name(self, message: T, ctx: WorkflowContext[...])`` method as a handler."""
    if not inspect.iscoroutinefunction(func):
        raise WorkflowDefinitionError(f"handler {func.__qualname__} must be declared with 'async def'")
    setattr(func, _HANDLER_MARK, True)
    return cast(F, func)


@dataclass(frozen=True)
class HandlerSpec:
    """A handler and the types it accepts and may produce."""

    name: str
    func: HandlerFunc
    message_type: Any
    output_types: tuple[Any, ...] | None  # None: not declared (bare WorkflowContext)
    workflow_output_types: tuple[Any, ...] | None

    def accepts(self, message: Any) -> bool:
        return matches(message, self.message_type)


def _context_types(annotation: Any) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None]:
    origin = get_origin(annotation) or annotation
    if origin is not WorkflowContext:
        return None, None
    args = get_args(annotation)
    if not args:
        return None, None

    def expand(tp: Any) -> tuple[Any, ...]:
        if tp is Never:
            return ()
        return tuple(t for t in flatten_union(tp) if t is not type(None))

    outputs = expand(args[0])
    wf_outputs = expand(args[1]) if len(args) > 1 else ()
    return outputs, wf_outputs


class Executor:
    """A node of the workflow graph. Subclass it and add ``@handler`` methods.

    ``id`` must be stable across processes (it keys the executor's state in checkpoints); it
    defaults to the class name.
    """

    _handler_cache: dict[type, tuple[HandlerSpec, ...]] = {}

    def __init__(self, id: str | None = None) -> None:
        self.id = id or type(self).__name__
        if not self.id or not isinstance(self.id, str):
            raise WorkflowDefinitionError("executor id must be a non-empty string")
        self._handlers = self._collect_handlers()
        if not self._handlers:
            raise WorkflowDefinitionError(
                f"executor {self.id!r} ({type(self).__qualname__}) has no @handler methods"
            )

    @classmethod
    def _collect_handlers(cls) -> tuple[HandlerSpec, ...]:
        cached = Executor._handler_cache.get(cls)
        if cached is not None:
            return cached
        specs: list[HandlerSpec] = []
        seen: set[str] = set()
        for klass in cls.__mro__:
            for name, member in vars(klass).items():
                if name in seen or not getattr(member, _HANDLER_MARK, False):
                    continue
                seen.add(name)
                specs.append(cls._spec_for(name, member))
        Executor._handler_cache[cls] = tuple(specs)
        return tuple(specs)

    @classmethod
    def _spec_for(cls, name: str, func: Any) -> HandlerSpec:
        params = list(inspect.signature(func).parameters.values())
        if len(params) != 3:
            raise WorkflowDefinitionError(
                f"handler {cls.__qualname__}.{name} must take (self, message, ctx), got {len(params)} parameters"
            )
        try:
            hints = get_type_hints(func, include_extras=False)
        except Exception as exc:
            raise WorkflowDefinitionError(f"cannot resolve annotations of {cls.__qualname__}.{name}: {exc}") from exc
        message_param, ctx_param = params[1].name, params[2].name
        if message_param not in hints:
            raise WorkflowDefinitionError(
                f"handler {cls.__qualname__}.{name} needs a type annotation on {message_param!r}: "
                "handlers are dispatched by it"
            )
        outputs, wf_outputs = _context_types(hints.get(ctx_param))
        return HandlerSpec(name, cast(HandlerFunc, func), hints[message_param], outputs, wf_outputs)

    @property
    def handlers(self) -> tuple[HandlerSpec, ...]:
        return self._handlers

    def find_handler(self, message: Any) -> HandlerSpec | None:
        """The handler for ``message``: an exact type match wins over a subclass/union match."""
        exact = type(message)
        for spec in self._handlers:
            if spec.message_type is exact and spec.accepts(message):
                return spec
        for spec in self._handlers:
            if spec.accepts(message):
                return spec
        return None

    def can_handle(self, message: Any) -> bool:
        return self.find_handler(message) is not None

    def declared_output_types(self) -> tuple[Any, ...] | None:
        """Union of what the handlers say they send; None if any handler does not say."""
        found: list[Any] = []
        for spec in self._handlers:
            if spec.output_types is None:
                return None
            found.extend(spec.output_types)
        return tuple(found)

    def input_types(self) -> tuple[Any, ...]:
        return tuple(spec.message_type for spec in self._handlers)

    async def execute(self, message: Any, ctx: WorkflowContext[Any, Any]) -> None:
        spec = self.find_handler(message)
        if spec is None:
            raise LookupError(f"executor {self.id!r} has no handler for {type(message).__qualname__}")
        await spec.func(self, message, ctx)

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(id={self.id!r})"
