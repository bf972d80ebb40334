"""How a deployment declares its workflows to the service.

A :class:`WorkflowSpec` names a workflow, declares the pydantic model its start input must
match, and builds the workflow graph against the storage the service uses. The HTTP API's
``POST /api/workflows/{workflow}/sessions`` validates input with ``input_model`` and hands
``start_message(model)`` to the start executor.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .checkpoint.base import CheckpointStorage
from .directory import Directory
from .settings import Settings
from .workflow.executor import Executor
from .workflow.runner import ResumeMode
from .workflow.workflow import Workflow


def human_loop(name: str, executor: Executor, storage: CheckpointStorage, *,
               request_info_id: str = "request_info", resume_mode: ResumeMode = "claim") -> Workflow:
    """The shape most approval workflows take: one executor that asks people (through a
    :class:`RequestInfoExecutor` with id ``request_info_id``) and handles their answers, checkpointed
    in ``storage``. Written once so each workflow module holds only its own logic.

    ``resume_mode`` is the workflow's to choose (see :meth:`WorkflowBuilder.with_checkpointing`):
    ``"claim"`` runs the handlers exactly once per decision at the price of a second write;
    ``"optimistic"`` suits handlers that only touch workflow state."""
    from .workflow.request_info import RequestInfoExecutor
    from .workflow.workflow import WorkflowBuilder

    request_info = RequestInfoExecutor(id=request_info_id)
    return (WorkflowBuilder(name=name).set_start_executor(executor).add_edge(executor, request_info)
            .add_edge(request_info, executor).with_checkpointing(checkpoint_storage=storage, resume_mode=resume_mode)
            .build())


def _identity(model: BaseModel) -> Any:
    return model


@dataclass(frozen=True)
class StartContext:
    """What a workflow's ``prepare_input`` may consult: the directory and who is starting."""

    directory: Directory
    initiator: str | None


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow the service can start by name."""

    name: str
    input_model: type[BaseModel]
    build: Callable[[CheckpointStorage, Settings], Workflow]
    start_message: Callable[[BaseModel], Any] = field(default=_identity)
    description: str = ""
    #: The caller who started a session may not decide its requests (four-eyes principle).
    separation_of_duties: bool = False
    #: Completes the validated input from the directory before the session starts (for example the
    #: expense's approver is the employee's manager there, not a field the initiator fills in).
    #: Raise :class:`~hitl_core.errors.InputValidationError` to refuse the start with a 422.
    prepare_input: Callable[[BaseModel, StartContext], Awaitable[BaseModel]] | None = None
