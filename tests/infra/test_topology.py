"""What infra/ provisions: the resources and the security properties issue 6 asks for."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from hitl_core.events.models import EventType
from hitl_core.functions.events import SUBSCRIPTIONS
from hitl_core.notify.models import REQUEST_EVENT_TYPES

from ._bicep import Resource, all_resources, literal, param_default, resolve_variables
from .conftest import INFRA, AppFunction, InfraScan

# The Python version the app runs on in Azure (functionAppConfig.runtime.version).
PYTHON_VERSION = "3.13"
# Runtime version control (azure-functions-runtime pinned in requirements.txt) exists from 3.13 on.
RUNTIME_VERSION_CONTROL_SINCE = Version("3.13")

EVENT_GRID_TRIGGER = "eventGridTrigger"
SUBSCRIPTION = "Microsoft.EventGrid/topics/eventSubscriptions"
SUBSCRIPTION_MODULE = "infra/modules/eventgrid-subscription.bicep"

# What each Event Grid trigger function of the app consumes: the filter of its subscription, as the app
# declares it (the local host delivers by the same table).
EVENT_FILTERS: dict[str, frozenset[str]] = {name: frozenset(str(t) for t in declared["includedEventTypes"])
                                            for name, declared in SUBSCRIPTIONS.items()}


def test_the_declared_filters_cover_what_each_function_handles() -> None:
    assert EVENT_FILTERS["notify_reviewers"] == frozenset(str(t) for t in REQUEST_EVENT_TYPES)
    assert EVENT_FILTERS["track_deadlines"] == {str(EventType.REQUEST_CREATED), str(EventType.REQUEST_RESOLVED),
                                                str(EventType.REQUEST_EXPIRED)}
    # track_deadlines is woken only for requests a deadline orchestration watches
    assert SUBSCRIPTIONS["track_deadlines"]["advancedFilters"] == [
        {"operatorType": "BoolEquals", "key": "data.deadline_tracked", "value": True}]
    assert "advancedFilters" not in SUBSCRIPTIONS["notify_reviewers"]


_FUNCTION_DESTINATION = re.compile(r"/functions/([A-Za-z_][A-Za-z0-9_]*)$")
_HOOK_LIST = {
    "infra/hooks/postdeploy.sh": re.compile(r'^FUNCTIONS="([^"]*)"$', re.MULTILINE),
    "infra/hooks/postdeploy.ps1": re.compile(r"^\$Functions = '([^']*)'$", re.MULTILINE),
}


def one(scan: InfraScan, type_: str) -> Resource:
    found = [r for r in all_resources(scan.templates, type_) if not r.existing]
    assert len(found) == 1, f"expected one {type_}, found {[r.symbol for r in found]}"
    return found[0]


def test_flex_consumption_plan(infra_scan: InfraScan) -> None:
    plan = one(infra_scan, "Microsoft.Web/serverfarms")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan.properties["reserved"] is True


def test_function_app_python_313_with_identity_based_deployment(infra_scan: InfraScan) -> None:
    app = one(infra_scan, "Microsoft.Web/sites")
    template = infra_scan.template(app.file)
    assert app.body["identity"] == {"type": "SystemAssigned"}
    assert app.properties["httpsOnly"] is True
    config = app.properties["functionAppConfig"]
    assert literal(config["runtime"]) == {"name": "python", "version": PYTHON_VERSION}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    scale = config["scaleAndConcurrency"]
    assert set(scale) == {"maximumInstanceCount", "instanceMemoryMB"}
    assert param_default(template, scale["instanceMemoryMB"]) == 2048


def test_azure_python_is_the_projects_python(infra_scan: InfraScan) -> None:
    """The Python the Bicep deploys satisfies pyproject's requires-python, and a pinned worker
    runtime (azure-functions-runtime in requirements.txt) is only honoured from Python 3.13 on."""
    runtime = literal(one(infra_scan, "Microsoft.Web/sites").properties["functionAppConfig"]["runtime"])
    version = Version(runtime["version"])
    project = tomllib.loads((INFRA.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requires = SpecifierSet(project["requires-python"])
    assert version in requires, f"Azure runs Python {version}, the project requires {requires}"
    requirements = (INFRA.parent / "requirements.txt").read_text(encoding="utf-8")
    if re.search(r"^azure-functions-runtime\b", requirements, re.MULTILINE):
        assert version >= RUNTIME_VERSION_CONTROL_SINCE, (
            f"requirements.txt pins azure-functions-runtime, which Python {version} apps ignore"
        )


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


@pytest.fixture(scope="module")
def event_grid_functions(app_functions: dict[str, AppFunction]) -> set[str]:
    """Names of the app's functions triggered by Event Grid (read from function_app.py)."""
    return {name for name, fn in app_functions.items() if fn.trigger == EVENT_GRID_TRIGGER}


@pytest.fixture(scope="module")
def subscriptions(infra_scan: InfraScan) -> dict[str, Resource]:
    """Destination function name -> its Event Grid subscription in the Bicep."""
    found: dict[str, Resource] = {}
    for subscription in all_resources(infra_scan.templates, SUBSCRIPTION):
        assert not subscription.existing
        destination = subscription.properties["destination"]
        assert destination["endpointType"] == "AzureFunction", subscription.symbol
        match = _FUNCTION_DESTINATION.search(str(destination["properties"]["resourceId"]))
        assert match, f"{subscription.symbol}: resourceId must end with /functions/<function name>"
        assert match[1] not in found, f"two subscriptions deliver to {match[1]}"
        found[match[1]] = subscription
    return found


def test_the_app_has_the_event_grid_functions_the_filters_describe(event_grid_functions: set[str]) -> None:
    assert "track_deadlines" in event_grid_functions, "track_deadlines is not an Event Grid trigger of the app"
    assert event_grid_functions == set(EVENT_FILTERS), (
        f"Event Grid triggers of function_app.py {sorted(event_grid_functions)} != {sorted(EVENT_FILTERS)}: "
        "give a new one its filter here, a subscription in eventgrid-subscription.bicep, and add it to the "
        "postdeploy hooks"
    )


def test_the_bicep_subscribes_exactly_the_event_grid_functions(
    subscriptions: dict[str, Resource], event_grid_functions: set[str]
) -> None:
    assert set(subscriptions) == event_grid_functions


@pytest.mark.parametrize("function", sorted(EVENT_FILTERS))
def test_event_subscription_delivers_its_events_to_its_function(
    infra_scan: InfraScan, subscriptions: dict[str, Resource], function: str
) -> None:
    subscription = subscriptions[function]
    props = subscription.properties
    assert subscription.file == SUBSCRIPTION_MODULE
    assert props["eventDeliverySchema"] == "CloudEventSchemaV1_0"
    # the trigger functions take one event per invocation
    assert props["destination"]["properties"]["maxEventsPerBatch"] == 1
    assert set(literal(props["filter"]["includedEventTypes"])) == EVENT_FILTERS[function]
    # the advanced filters are the app's, operator for operator (the local host applies the same ones)
    declared = SUBSCRIPTIONS[function].get("advancedFilters", [])
    assert literal(props["filter"].get("advancedFilters", [])) == json.loads(json.dumps(declared))
    assert set(props["filter"]) <= {"includedEventTypes", "advancedFilters"}
    # created only once the function is deployed: when main.bicep passes its name
    assert subscription.conditional
    template = infra_scan.template(subscription.file)
    condition = template["resources"][subscription.symbol]["config"]["condition"]
    assert f'"{function}"' in json.dumps(condition) and '"functionNames"' in json.dumps(condition), (
        f"{subscription.symbol} must be conditional on {function!r} being in functionNames"
    )
    assert {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"} <= set(resolve_variables(props["retryPolicy"], template))
    dead_letter = resolve_variables(props["deadLetterWithResourceIdentity"], template)
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert "blobContainerName" in dead_letter["deadLetterDestination"]["properties"]


def test_event_subscriptions_share_one_delivery_policy(
    infra_scan: InfraScan, subscriptions: dict[str, Resource]
) -> None:
    """Same retries and the same dead-letter container for every subscription."""
    policies = {
        json.dumps(
            resolve_variables(
                {key: s.properties[key] for key in ("retryPolicy", "deadLetterWithResourceIdentity")},
                infra_scan.template(s.file),
            ),
            sort_keys=True,
        )
        for s in subscriptions.values()
    }
    assert len(policies) == 1, f"the subscriptions' delivery policies differ: {policies}"


def test_subscribable_functions_are_the_event_grid_functions(
    infra_scan: InfraScan, event_grid_functions: set[str]
) -> None:
    """The module accepts, and the postdeploy hooks subscribe, exactly the app's Event Grid triggers."""
    module = infra_scan.template(SUBSCRIPTION_MODULE)
    decorators = module["parameters"]["functionNames"].get("decorators", [])
    allowed = [d["argument"] for d in decorators if d.get("type") == "allowed"]
    assert allowed and set(allowed[0]) == event_grid_functions
    for hook, pattern in _HOOK_LIST.items():
        text = (INFRA.parent / hook).read_text(encoding="utf-8")
        listed = pattern.findall(text)
        assert len(listed) == 1, f"{hook}: no single list of the functions to subscribe"
        assert set(listed[0].split(",")) == event_grid_functions, f"{hook} subscribes {listed[0]}"


def test_main_subscribes_the_functions_named_in_its_parameter(infra_scan: InfraScan) -> None:
    main = infra_scan.template("infra/main.bicep")
    (module,) = [m for m in main["modules"].values() if m["detail"]["path"].endswith("eventgrid-subscription.bicep")]
    assert "condition" in module["config"], "the subscriptions must wait for the code deploy (postdeploy hook)"
    assert param_default(main, "eventSubscriptions") == "", "no subscription before the code is deployed"
    assert "eventSubscriptions" in json.dumps(main["variables"][module["config"]["config"]["params"]["functionNames"]])
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert parameters["eventSubscriptions"]["value"].startswith("${HITL_EVENT_SUBSCRIPTIONS")


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


def test_notify_reviewers_is_subscribed_only_with_a_notification_channel(
    infra_scan: InfraScan, subscriptions: dict[str, Resource]
) -> None:
    """As the app declares (``deployed_subscriptions``) and the local host delivers: without a webhook
    URL or an SMTP host (empty or ``off``) the Bicep makes no notify_reviewers subscription, which
    would only wake an execution per request to ignore it; track_deadlines does not depend on it."""
    module = infra_scan.template(SUBSCRIPTION_MODULE)

    def condition(function: str) -> str:
        return json.dumps(module["resources"][subscriptions[function].symbol]["config"]["condition"])

    assert '"notificationChannelConfigured"' in condition("notify_reviewers")
    assert "notificationChannelConfigured" not in condition("track_deadlines")
    main = infra_scan.template("infra/main.bicep")
    assert main["modules"]["eventSubscription"]["config"]["config"]["params"]["notificationChannelConfigured"] == (
        "notificationChannelConfigured")
    computed = main["variables"]["notificationChannelConfigured"]["value"]
    assert computed["operator"]["type"] == "or"
    for operand, setting in zip(computed["operator"]["operands"].values(), ("webhookUrl", "smtpHost"), strict=True):
        both = operand["operator"]
        assert both["type"] == "and"  # set, and not "off"
        is_set, not_off = both["operands"].values()
        assert is_set == {"operator": {"type": "not", "operands": {"bool_value": {
            "function": {"type": "empty", "parameters": {"item_to_test": setting}}}}}}, is_set
        assert not_off == {"operator": {"type": "not_equals", "operands": {
            "operand_1": {"function": {"type": "to_lower", "parameters": {"string_to_change": setting}}},
            "operand_2": "off"}}}, not_off
