"""What infra/ provisions: the resources and the security properties issue 6 asks for."""

from __future__ import annotations

import pytest

from hitl_core.notify.models import REQUEST_EVENT_TYPES

from ._bicep import Resource, all_resources, literal, param_default
from .conftest import InfraScan

# Contract with hitl_core.functions: the Event Grid trigger function that notifies reviewers.
NOTIFY_FUNCTION = "notify_reviewers"


def one(scan: InfraScan, type_: str) -> Resource:
    found = [r for r in all_resources(scan.templates, type_) if not r.existing]
    assert len(found) == 1, f"expected one {type_}, found {[r.symbol for r in found]}"
    return found[0]


def test_flex_consumption_plan(infra_scan: InfraScan) -> None:
    plan = one(infra_scan, "Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan.properties["reserved"] is True


def test_function_app_python_311_with_identity_based_deployment(infra_scan: InfraScan) -> None:
    app = one(infra_scan, "Microsoft.Web/sites")
    template = infra_scan.template(app.file)
    assert app.body["identity"] == {"type": "SystemAssigned"}
    assert app.properties["httpsOnly"] is True
    config = app.properties["functionAppConfig"]
    assert literal(config["runtime"]) == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    scale = config["scaleAndConcurrency"]
    assert set(scale) == {"maximumInstanceCount", "instanceMemoryMB"}
    assert param_default(template, scale["instanceMemoryMB"]) == 2048


def test_storage_disallows_shared_keys(infra_scan: InfraScan) -> None:
    storage = one(infra_scan, "Microsoft.Storage/storageAccounts")
    assert storage.properties["allowSharedKeyAccess"] is False
    assert storage.properties["allowBlobPublicAccess"] is False
    assert storage.properties["minimumTlsVersion"] == "TLS1_2"


def test_event_grid_topic_cloudevents_without_local_auth(infra_scan: InfraScan) -> None:
    topic = one(infra_scan, "Microsoft.EventGrid/topics")
    assert topic.properties["inputSchema"] == "CloudEventSchemaV1_0"
    assert topic.properties["disableLocalAuth"] is True
    assert topic.body["identity"] == {"type": "SystemAssigned"}, "dead-lettering uses the topic's identity"


def test_event_subscription_targets_the_notification_function(infra_scan: InfraScan) -> None:
    subscription = one(infra_scan, "Microsoft.EventGrid/topics/eventSubscriptions")
    props = subscription.properties
    assert props["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    destination = props["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"].endswith(f"/functions/{NOTIFY_FUNCTION}")
    # exactly the event types the notification dispatcher handles (it ignores every other type)
    assert set(literal(props["filter"]["includedEventTypes"])) == set(REQUEST_EVENT_TYPES)
    assert {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"} <= set(props["retryPolicy"])
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert "blobContainerName" in dead_letter["deadLetterDestination"]["properties"]


def test_key_vault_is_rbac_only(infra_scan: InfraScan) -> None:
    vault = one(infra_scan, "Microsoft.KeyVault/vaults")
    assert vault.properties["enableRbacAuthorization"] is True
    assert vault.properties["enableSoftDelete"] is True


def test_application_insights_on_log_analytics_without_local_auth(infra_scan: InfraScan) -> None:
    one(infra_scan, "Microsoft.OperationalInsights/workspaces")
    insights = one(infra_scan, "Microsoft.Insights/components")
    assert insights.properties["DisableLocalAuth"] is True
    assert "WorkspaceResourceId" in insights.properties


def test_easy_auth_is_always_on(infra_scan: InfraScan) -> None:
    """HITL_AUTH_MODE=easyauth trusts X-MS-CLIENT-PRINCIPAL: only safe behind App Service Authentication."""
    (auth,) = [
        r for r in all_resources(infra_scan.templates, "Microsoft.Web/sites/config")
        if r.body.get("name") == "authsettingsV2"
    ]
    assert not auth.conditional
    assert auth.properties["platform"] == {"enabled": True}
    variables = infra_scan.template(auth.file)["variables"]
    validations = [literal(v["value"]) for k, v in variables.items() if k.startswith("validation")]
    assert validations and all(v["requireAuthentication"] is True for v in validations)


@pytest.mark.parametrize(
    "output", ["FUNCTION_APP_URL", "HITL_EVENTGRID_TOPIC_ENDPOINT", "HITL_COSMOS_ENDPOINT", "AZURE_KEY_VAULT_NAME"]
)
def test_outputs_for_azd_and_the_readme(infra_scan: InfraScan, output: str) -> None:
    assert output in infra_scan.template("infra/main.bicep")["outputs"]
