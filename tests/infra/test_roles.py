"""Each data-plane dependency of the code has a role assignment for the app's identity, and the
identity has no role that no dependency explains (least privilege).

The dependencies are read from the code: the Azure SDKs in requirements.txt (what a Functions
deployment installs) and the secret settings of hitl_core.settings (Key Vault references). The
role assignments are read from the parsed Bicep.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest

from hitl_core.settings import SETTINGS

from ._bicep import Resource, all_resources, guids_in, resources
from .conftest import REPO, AppFunction, InfraScan

# Built-in role definition ids (the same in every tenant).
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
STORAGE_QUEUE_DATA_CONTRIBUTOR = "974c5e8b-45b9-4653-ba55-5f855dd0fb88"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
COSMOS_DB_BUILT_IN_DATA_CONTRIBUTOR = "00000000-0000-0000-0000-000000000002"  # a Cosmos SQL role

STORAGE = "Microsoft.Storage/storageAccounts"
COSMOS = "Microsoft.DocumentDB/databaseAccounts"
TOPIC = "Microsoft.EventGrid/topics"
VAULT = "Microsoft.KeyVault/vaults"
APP_INSIGHTS = "Microsoft.Insights/components"
BLOB_CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"

APP_PRINCIPAL = "appPrincipalId"  # roles.bicep parameter: the function app's identity
TOPIC_PRINCIPAL = "topicPrincipalId"  # roles.bicep parameter: the Event Grid topic's identity


@dataclass(frozen=True)
class Grant:
    kind: str  # "rbac" (Microsoft.Authorization) or "cosmos-sql" (Cosmos DB data-plane RBAC)
    role: str
    scope_type: str
    principal: str


def rbac(role: str, scope_type: str) -> Grant:
    return Grant("rbac", role, scope_type, APP_PRINCIPAL)


# Azure SDK (requirements.txt name) -> the grants its data-plane calls need.
SDK_GRANTS: dict[str, set[Grant]] = {
    "azure-cosmos": {Grant("cosmos-sql", COSMOS_DB_BUILT_IN_DATA_CONTRIBUTOR, COSMOS, APP_PRINCIPAL)},
    "azure-eventgrid": {rbac(EVENTGRID_DATA_SENDER, TOPIC)},
    # The Functions host: AzureWebJobsStorage__accountName (blobs) and the Flex deployment package.
    "azure-functions": {rbac(STORAGE_BLOB_DATA_OWNER, STORAGE)},
    # Durable Functions' Azure Storage task hub: queues, tables and blobs.
    "azure-functions-durable": {
        rbac(STORAGE_BLOB_DATA_OWNER, STORAGE),
        rbac(STORAGE_QUEUE_DATA_CONTRIBUTOR, STORAGE),
        rbac(STORAGE_TABLE_DATA_CONTRIBUTOR, STORAGE),
    },
}
# Azure packages that make no data-plane call of their own (azure-functions-runtime is the Python
# worker that Azure runs the app with, pinned for runtime version control; it talks to the host only).
NO_DATA_PLANE = {"azure-identity", "azure-core", "azure-functions-runtime"}
KEY_VAULT_REFERENCES = {rbac(KEY_VAULT_SECRETS_USER, VAULT)}
APP_INSIGHTS_ENTRA_AUTH = {rbac(MONITORING_METRICS_PUBLISHER, APP_INSIGHTS)}
# Event Grid dead-letters undeliverable events with the topic's own identity (deadLetterWithResourceIdentity).
TOPIC_DEAD_LETTERING = {Grant("rbac", STORAGE_BLOB_DATA_CONTRIBUTOR, BLOB_CONTAINER, TOPIC_PRINCIPAL)}


# Bindings of the app's functions that run on the host storage account (AzureWebJobsStorage):
# Durable Functions' task hub (control/work-item queues, history/instances tables, lease blobs) and
# the timer trigger's schedule monitor and singleton locks (blobs).
DURABLE_BINDINGS = {"orchestrationTrigger", "activityTrigger", "entityTrigger", "durableClient"}
BINDING_GRANTS: dict[str, set[Grant]] = {
    **{binding: SDK_GRANTS["azure-functions-durable"] for binding in DURABLE_BINDINGS},
    "timerTrigger": {rbac(STORAGE_BLOB_DATA_OWNER, STORAGE)},
}


def deployed_packages() -> set[str]:
    names = set()
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line)
        if match:
            names.add(re.sub(r"[._]+", "-", match[0]).lower())
    return names


def code_dependencies() -> dict[str, set[Grant]]:
    """What the code reaches on a data plane, each with the grants it needs."""
    deps = {pkg: SDK_GRANTS[pkg] for pkg in deployed_packages() if pkg in SDK_GRANTS}
    if any(spec.secret and not spec.local_only for spec in SETTINGS):
        deps["Key Vault references (secret settings)"] = KEY_VAULT_REFERENCES
    deps["Application Insights with Entra ID auth"] = APP_INSIGHTS_ENTRA_AUTH
    return deps


def _scope_type(resource: Resource, template: dict[str, Any], key: str) -> str:
    symbol = resource.body.get(key)
    assert isinstance(symbol, str), f"{resource.file}: {resource.symbol}.{key} must name a resource symbol"
    scopes = {r.symbol: r.type for r in resources(resource.file, template)}
    assert symbol in scopes, f"{resource.file}: {resource.symbol}.{key} = {symbol!r} is not a resource here"
    return scopes[symbol]


def _single_role(resource: Resource) -> str:
    roles = guids_in(resource.properties.get("roleDefinitionId"))
    assert len(roles) == 1, f"{resource.file}: {resource.symbol} must name its role definition id literally"
    return roles.pop()


@pytest.fixture(scope="module")
def grants(infra_scan: InfraScan) -> set[Grant]:
    found: set[Grant] = set()
    for r in all_resources(infra_scan.templates, "Microsoft.Authorization/roleAssignments"):
        template = infra_scan.templates[r.file]
        found.add(Grant("rbac", _single_role(r), _scope_type(r, template, "scope"), r.properties["principalId"]))
    for r in all_resources(infra_scan.templates, "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"):
        template = infra_scan.templates[r.file]
        found.add(Grant("cosmos-sql", _single_role(r), _scope_type(r, template, "parent"), r.properties["principalId"]))
    return found


def test_no_unmapped_azure_sdk() -> None:
    unknown = {
        pkg for pkg in deployed_packages()
        if pkg.startswith("azure-") and pkg not in SDK_GRANTS and pkg not in NO_DATA_PLANE
    }
    assert not unknown, (
        f"requirements.txt has Azure SDKs with no known role mapping: {unknown}. Add the role "
        "assignment to infra/modules/roles.bicep and the package to SDK_GRANTS in this test."
    )


@pytest.mark.parametrize("dependency", sorted(code_dependencies()))
def test_each_data_plane_dependency_has_its_roles(grants: set[Grant], dependency: str) -> None:
    missing = code_dependencies()[dependency] - grants
    assert not missing, f"{dependency}: no role assignment for {missing}"


def test_no_role_beyond_what_the_code_needs(grants: set[Grant]) -> None:
    needed = set().union(*code_dependencies().values()) | TOPIC_DEAD_LETTERING
    assert grants - needed == set(), "role assignments no dependency explains (least privilege)"


def test_host_storage_roles_cover_the_apps_durable_and_timer_functions(
    app_functions: dict[str, AppFunction], grants: set[Grant]
) -> None:
    """Read from function_app.py: request_deadline / send_reminder / apply_timeout / track_deadlines
    need the Durable task hub's queues, tables and blobs; sweep_outbox the timer's blob locks."""
    used = {b: {f.name for f in app_functions.values() if b in f.bindings} for b in BINDING_GRANTS}
    used = {b: names for b, names in used.items() if names}
    assert used.keys() & DURABLE_BINDINGS, "the app has no Durable function: is this still the hitl app?"
    assert "azure-functions-durable" in deployed_packages()
    for binding, names in sorted(used.items()):
        missing = BINDING_GRANTS[binding] - grants
        assert not missing, f"{binding} ({sorted(names)}): no role assignment for {missing}"


def test_durable_task_hub_name_is_valid_for_azure_storage() -> None:
    """host.json's hub name prefixes the task hub's queues, tables and blob containers."""
    host = json.loads((REPO / "host.json").read_text(encoding="utf-8"))
    hub = host["extensions"]["durableTask"]["hubName"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,44}", hub), f"invalid Durable task hub name {hub!r}"


def test_cosmos_data_role_is_scoped_to_the_account(infra_scan: InfraScan) -> None:
    (assignment,) = all_resources(infra_scan.templates, "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments")
    assert "sqlRoleDefinitions/" + COSMOS_DB_BUILT_IN_DATA_CONTRIBUTOR in assignment.properties["roleDefinitionId"]
    assert assignment.properties["scope"] != "/", "the SQL role must be scoped to the account, not broader"


def test_role_assignment_names_are_deterministic(infra_scan: InfraScan) -> None:
    """guid(scope, principal, role): redeploying updates the same assignment instead of failing."""
    for r in all_resources(infra_scan.templates, "Microsoft.Authorization/roleAssignments") + all_resources(
        infra_scan.templates, "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments"
    ):
        name = r.body.get("name")
        assert isinstance(name, dict) and name.get("function", {}).get("type") == "guid", r.symbol
        assert r.properties["principalId"] in str(name), f"{r.symbol}: the name must include the principal"


def test_main_passes_the_identities_of_the_app_and_the_topic(infra_scan: InfraScan) -> None:
    main = infra_scan.template("infra/main.bicep")
    roles_modules = [m for m in main["modules"].values() if m["detail"]["path"].endswith("roles.bicep")]
    assert len(roles_modules) == 1
    params = roles_modules[0]["config"]["params"]
    app = str(params[APP_PRINCIPAL])
    topic = str(params[TOPIC_PRINCIPAL])
    assert "functionApp" in app and "principalId" in app, f"{APP_PRINCIPAL} is not the function app's identity: {app}"
    assert "eventGridTopic" in topic and "principalId" in topic, f"{TOPIC_PRINCIPAL} is not the topic's identity"
