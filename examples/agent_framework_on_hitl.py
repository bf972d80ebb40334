"""An Agent Framework workflow moved from Agent Framework's file storage onto the hitl service.

``python -m examples.agent_framework_on_hitl`` runs it both ways and prints what happened:

* ``before``: Agent Framework alone. The run pauses on ``ctx.request_info``, the checkpoint goes
  to ``FileCheckpointStorage``, and the application must route the question to a person, keep the
  request id, and call ``run(checkpoint_id=..., responses=...)`` itself — once, it hopes.
* ``after``: the same workflow, not one line of it changed, declared to the service with who
  answers its requests. The service starts it, turns the request into a hitl request (inbox,
  e-mail link, deadline, audit), and resumes it exactly once when the person decides.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from agent_framework import (
    Executor,
    FileCheckpointStorage,
    Workflow,
    WorkflowBuilder,
    WorkflowContext,
    handler,
    response_handler,
)
from pydantic import BaseModel, Field

from hitl_core import SqliteCheckpointStorage
from hitl_core.agent_framework import HumanStep, agent_framework_workflow
from hitl_core.events import InMemoryEventPublisher
from hitl_core.service import HitlService
from hitl_core.settings import Settings


# -- the Agent Framework workflow, as Agent Framework's own guide writes it ------------------------
class PressRelease(BaseModel):
    product: str = Field(min_length=1, max_length=200)


@dataclass
class ReleaseForSignOff:
    headline: str
    body: str


class SignOff(BaseModel):
    approved: bool = Field(title="Publish the release")
    note: str = Field(default="", max_length=1_000, title="Note to the writer")


class Writer(Executor):
    def __init__(self) -> None:
        super().__init__(id="writer")

    @handler
    async def write(self, job: PressRelease, ctx: WorkflowContext) -> None:
        release = ReleaseForSignOff(headline=f"Introducing {job.product}", body=f"{job.product} ships today.")
        await ctx.request_info(release, SignOff)

    @response_handler
    async def signed(self, release: ReleaseForSignOff, answer: SignOff, ctx: WorkflowContext[str, str]) -> None:
        await ctx.yield_output(f"published: {release.headline}" if answer.approved else f"held: {answer.note}")


def build_workflow() -> Workflow:
    return WorkflowBuilder(start_executor=Writer(), name="press-release").build()


ALLOWED = ["examples.agent_framework_on_hitl:SignOff"]


# -- before: Agent Framework's file storage; the application routes the question itself ------------
async def before(folder: Path) -> str:
    here = "examples.agent_framework_on_hitl"
    storage = FileCheckpointStorage(folder, allowed_checkpoint_types=[
        *ALLOWED, f"{here}:ReleaseForSignOff", f"{here}:PressRelease"])
    paused = await build_workflow().run(PressRelease(product="Otter 2"), checkpoint_storage=storage)
    request = paused.get_request_info_events()[0]
    checkpoint = await storage.get_latest(workflow_name="press-release")
    assert checkpoint is not None
    resumed = await build_workflow().run(checkpoint_id=checkpoint.checkpoint_id, checkpoint_storage=storage,
                                         responses={request.request_id: SignOff(approved=True)})
    return str(resumed.get_outputs()[0])


# -- after: the same workflow on the service (the lines the README shows) --------------------------
# after:begin
SPEC = agent_framework_workflow(
    "press-release",
    build=build_workflow,                      # the unchanged Agent Framework workflow
    input_model=PressRelease,                  # validates POST /api/workflows/press-release/sessions
    steps=[HumanStep(request_type=ReleaseForSignOff, approvers=["role:reviewers"],
                     question=lambda d: f"Publish '{d['headline']}'?")],
    allowed_checkpoint_types=ALLOWED,          # read back only through AF's restricted loader
)


async def after(db: Path) -> str:
    service = HitlService(settings=Settings(auth_mode="dev"), storage=SqliteCheckpointStorage(db),
                          publisher=InMemoryEventPublisher(), workflows=[SPEC])
    started = await service.start("press-release", input={"product": "Otter 2"}, session_id="pr-1")
    call_id = started.session.pending_requests[0].call_id   # in the inbox, the e-mail and the app
    done = await service.respond("pr-1", call_id, {"approved": True})   # exactly once, audited
    await service.close()
    return str(done.outputs[0])
# after:end


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        print("before (Agent Framework on its file storage):", asyncio.run(before(Path(tmp) / "af")))
        print("after (the same workflow on the service):   ", asyncio.run(after(Path(tmp) / "hitl.db")))


if __name__ == "__main__":
    # Run the module under its importable name: checkpoints name types by module, and "__main__"
    # is not a module another process (or the restricted loader's allow list) knows.
    from examples.agent_framework_on_hitl import main as run

    sys.exit(run())
