"""Test helpers shipped with the library: the conformance suites every backend must pass.

``hitl_core.testing.conformance`` holds the checkpoint-storage suite; a third-party backend can
run it with :func:`run_conformance` or parametrize pytest over :data:`CHECKS`.
"""

from .conformance import (
    CHECKS,
    Backend,
    BackendFactory,
    Check,
    ConformanceError,
    ManualClock,
    check_id,
    make_audit,
    make_checkpoint,
    make_request,
    run_conformance,
)

__all__ = [
    "CHECKS",
    "Backend",
    "BackendFactory",
    "Check",
    "ConformanceError",
    "ManualClock",
    "check_id",
    "make_audit",
    "make_checkpoint",
    "make_request",
    "run_conformance",
]
