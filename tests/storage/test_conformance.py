"""Every registered checkpoint backend against the shared conformance suite.

The backends come from ``BACKEND_FACTORIES`` in ``conftest.py`` (memory, file, sqlite, redis,
plus any ``backends_*.py`` module); the checks from :mod:`hitl_core.testing.conformance`.
"""

from __future__ import annotations

import pytest

from hitl_core.testing import CHECKS, Backend, Check, check_id


@pytest.mark.parametrize("check", CHECKS, ids=check_id)
async def test_conformance(backend: Backend, check: Check) -> None:
    await check(backend)


def test_suite_has_every_check() -> None:
    """The suite covers the protocol's promises (a check dropped by accident shows up here)."""
    names = {check_id(c) for c in CHECKS}
    assert names >= {
        "round_trip", "create_only", "stale_version_conflicts", "versions_change_on_every_save", "delete",
        "list_sessions_filters", "list_sessions_paging", "ttl_expiry", "inbox_order", "inbox_deadline_order",
        "inbox_filters", "inbox_paging", "inbox_follows_saves", "inbox_any_of_assignees", "inbox_multi_key_paging",
        "bad_continuation", "audit", "size_guard", "unicode", "large_payload", "concurrent_writers",
        "approval_fields_round_trip", "stale_vote_and_claim_conflict",
        "delegation_round_trip", "delegation_create_only", "delegation_versions", "delegation_delete",
        "delegation_listing", "delegation_ended_never_returned", "delegation_expiry",
        "delegation_concurrent_writers", "delegation_unicode",
        "inbox_claimed_by", "inbox_due_before", "inbox_counts", "sessions_by_participant",
    }
