"""The Cosmos DB container in the Bicep is exactly the one the storage code declares.

``hitl_core/checkpoint/cosmos_layout.py`` is the single source of truth; Bicep keeps a literal copy
(it cannot import Python) and this test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

import pytest

from hitl_core.checkpoint import cosmos_layout
from hitl_core.settings import SETTINGS

from ._bicep import NotLiteral, Resource, all_resources, literal, param_default, to_bicep
from .conftest import InfraScan

CONTAINER_TYPE = "Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers"


@pytest.fixture(scope="module")
def container(infra_scan: InfraScan) -> Resource:
    found = all_resources(infra_scan.templates, CONTAINER_TYPE)
    assert len(found) == 1, f"expected one Cosmos DB container, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def container_resource(container: Resource, infra_scan: InfraScan) -> dict[str, Any]:
    template = infra_scan.template(container.file)
    body = dict(container.properties["resource"])
    body.pop("id")  # the container name is a parameter (HITL_COSMOS_CONTAINER)
    try:
        value = literal(body, template)
    except NotLiteral as exc:
        pytest.fail(f"the container's partitionKey, defaultTtl and indexingPolicy must be literals: {exc}")
    assert isinstance(value, dict)
    return value


def _normalized(policy: dict[str, Any]) -> dict[str, Any]:
    """Path lists are sets to Cosmos DB; each composite index is an ordered list."""
    out = dict(policy)
    for key in ("includedPaths", "excludedPaths"):
        if key in out:
            out[key] = sorted(out[key], key=lambda p: p["path"])
    if "compositeIndexes" in out:
        out["compositeIndexes"] = sorted(out["compositeIndexes"], key=repr)
    return out


def test_partition_key(container_resource: dict[str, Any]) -> None:
    key = container_resource["partitionKey"]
    assert key["paths"] == [cosmos_layout.PARTITION_KEY_PATH]
    assert key.get("kind", "Hash") == "Hash"


def test_default_ttl(container_resource: dict[str, Any]) -> None:
    assert container_resource["defaultTtl"] == cosmos_layout.DEFAULT_TTL


def test_indexing_policy_equals_the_code_declaration(container_resource: dict[str, Any]) -> None:
    expected = cosmos_layout.INDEXING_POLICY
    assert _normalized(container_resource["indexingPolicy"]) == _normalized(expected), (
        "infra/modules/cosmos.bicep drifted from hitl_core/checkpoint/cosmos_layout.py; its copy should be:\n"
        "      indexingPolicy: " + to_bicep(expected, 3)
    )


def test_declared_composite_indexes_are_well_formed() -> None:
    """A composite index needs two or more paths, each with an explicit order (the inbox ORDER BY)."""
    composites = cosmos_layout.INDEXING_POLICY.get("compositeIndexes")
    assert composites, "the inbox query's multi-property ORDER BY needs composite indexes"
    for composite in composites:
        assert len(composite) >= 2
        assert all(e["path"].startswith("/") and e["order"] in ("ascending", "descending") for e in composite)


def test_container_has_no_extra_settings(container_resource: dict[str, Any]) -> None:
    assert set(container_resource) == {"partitionKey", "defaultTtl", "indexingPolicy"}


def test_database_and_container_names_default_to_the_code_defaults(infra_scan: InfraScan) -> None:
    main = infra_scan.template("infra/main.bicep")
    defaults = {spec.name: spec.default for spec in SETTINGS}
    assert param_default(main, "cosmosDatabaseName") == defaults["HITL_COSMOS_DATABASE"]
    assert param_default(main, "cosmosContainerName") == defaults["HITL_COSMOS_CONTAINER"]


def test_serverless_by_default_and_local_auth_disabled(infra_scan: InfraScan) -> None:
    main = infra_scan.template("infra/main.bicep")
    assert param_default(main, "cosmosCapacityMode") == "serverless"
    accounts = all_resources(infra_scan.templates, "Microsoft.DocumentDB/databaseAccounts")
    (account,) = [a for a in accounts if not a.existing]
    assert account.properties["disableLocalAuth"] is True
    assert account.properties["disableKeyBasedMetadataWriteAccess"] is True
    assert "serverlessCapabilities" in str(account.properties["capabilities"])
    serverless = infra_scan.template(account.file)["variables"]["serverlessCapabilities"]["value"]
    assert serverless == [{"name": "EnableServerless"}]
