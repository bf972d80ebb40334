"""How a deployment declares its workflows to the service.

A :class:`WorkflowSpec` names a workflow, declares the pydantic model its start input must
match, and builds the workflow graph against the storage the service uses. The HTTP API's
``POST /api/workflows/{workflow}/sessions`` validates input with ``input_model`` and hands
``start_message(model)`` to the start executor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .checkpoint.base import CheckpointStorage
from .settings import Settings
from .workflow.workflow import Workflow


def _identity(model: BaseModel) -> Any:
    return model


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
