"""Quorum votes on the Cosmos DB stand-in: concurrent voters, no vote lost, one resume.

The workflow and the reference model are those of tests/storage/test_votes.py.
"""

from __future__ import annotations

import pytest

from tests.storage.test_policy_model import burst_with_duplicates_and_strangers, voters_and_delegates_vote_at_once
from tests.storage.test_votes import CONCURRENT, everyone_votes_at_once, play, service_on

from .conftest import StorageFactory


@pytest.mark.parametrize(("quorum", "voters", "accepted"), CONCURRENT)
async def test_concurrent_votes_on_cosmos(make_storage: StorageFactory, quorum: int | str, voters: int,
                                          accepted: int) -> None:
    await everyone_votes_at_once(service_on(await make_storage()), quorum, voters, accepted)


async def test_a_veto_and_a_duplicate_vote_on_cosmos(make_storage: StorageFactory) -> None:
    storage = await make_storage()
    await play(storage, ["ann", "bob", "cy"], 2, True, [("ann", True), ("ann", True), ("bob", False), ("cy", True)])
    await play(storage, ["ann", "bob", "cy"], "all", False, [("ann", False), ("bob", True), ("cy", True)])


async def test_voters_and_delegates_at_once_on_cosmos(make_storage: StorageFactory) -> None:
    await voters_and_delegates_vote_at_once(service_on(await make_storage()), 6, 3)


async def test_a_burst_with_duplicates_and_strangers_on_cosmos(make_storage: StorageFactory) -> None:
    await burst_with_duplicates_and_strangers(service_on(await make_storage()))
