"""Schemathesis against the local host: generated requests from the OpenAPI document.

Fixed seed and bounded examples. Every response must conform to the document (status codes,
content types, bodies) and no request may produce a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, seed, settings

import workflows
from hitl_core.openapi import openapi_document

from .host import LocalHost

schema = schemathesis.openapi.from_dict(openapi_document({s.name: s.input_model for s in workflows.ALL}))
#: What the issue asks of every response: no 5xx, and conformance to the document. (Positive-data
#: acceptance does not apply: a decision's result is validated against the response type of the
#: request it answers, which the document cannot know in advance.)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]
FUZZ_CASES: list[int] = []


@pytest.fixture(scope="module")
def fuzz_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHost]:
    host = LocalHost(Path(tmp_path_factory.mktemp("fuzz")) / "data")
    host.start()
    with host.client() as client:  # something to find: a pending session
        client.post("/api/workflows/content-review/sessions",
                    json={"session_id": "fuzz-known", "input": {"draft": "seed"}})
    yield host
    host.stop()


@schema.parametrize()
@seed(20261125)
@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_api_conforms_and_never_fails(case: Any, fuzz_host: LocalHost) -> None:
    FUZZ_CASES.append(1)
    response = case.call(base_url=fuzz_host.base, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text}"
    case.validate_response(response, checks=CHECKS)


def test_fuzzing_ran_enough_cases() -> None:
    """Runs after the generated tests (file order): the run must not have been vacuous."""
    print(f"\nfuzz cases run: {len(FUZZ_CASES)}")
    assert len(FUZZ_CASES) >= 100
