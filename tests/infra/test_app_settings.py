"""The app settings the Bicep sets are exactly the settings the code reads.

The names come out of the parsed Bicep (the ``appsettings`` config resource), never out of a list
kept here; the code's side is ``hitl_core.settings.SETTINGS``. Settings marked ``local_only`` (a
laptop's data folder and port, keys that Azure replaces with managed identity, TLS relaxations for
the local stand-ins) must not be set in Azure.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from hitl_core.settings import SETTINGS, SettingSpec, setting_names

from ._bicep import NotLiteral, Resource, all_resources, conditional_branches, literal
from .conftest import REPO, InfraScan, bicep_files, rel

# What the Functions host itself needs on Flex Consumption with identity-based connections.
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",  # host + Durable task hub storage, managed identity
    "APPLICATIONINSIGHTS_CONNECTION_STRING",  # ingestion endpoint (local auth is disabled)
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",  # Entra ID auth for telemetry
}
# Rejected or meaningless on Flex Consumption (runtime/version live in functionAppConfig), or a
# key-based connection: none of them may appear.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "AzureWebJobsStorage",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}
KEY_VAULT_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{[A-Za-z0-9_.]+\}\)$")
# Ways a key or connection string could sneak into the Bicep.
KEY_MATERIAL = re.compile(
    r"listKeys\(|listConnectionStrings\(|\.listKeys|primaryMasterKey|AccountKey=|SharedAccessKey|"
    r"InstrumentationKey=",
)


@pytest.fixture(scope="module")
def app_settings(infra_scan: InfraScan) -> Resource:
    found = [
        r for r in all_resources(infra_scan.templates, "Microsoft.Web/sites/config")
        if r.body.get("name") == "appsettings"
    ]
    assert len(found) == 1, f"expected one appsettings config resource, found {[r.file for r in found]}"
    return found[0]


@pytest.fixture(scope="module")
def settings_in_bicep(app_settings: Resource) -> dict[str, Any]:
    return app_settings.properties


def _specs(*, local_only: bool) -> dict[str, SettingSpec]:
    return {spec.name: spec for spec in SETTINGS if spec.local_only == local_only}


def test_hitl_settings_equal_the_code_settings_minus_local_only(settings_in_bicep: dict[str, Any]) -> None:
    in_bicep = {name for name in settings_in_bicep if name.startswith("HITL_")}
    expected = set(_specs(local_only=False))
    assert expected <= setting_names()
    assert in_bicep - expected == set(), "set in the Bicep but not read by the code (or local-only)"
    assert expected - in_bicep == set(), "read by the code but not set in the Bicep app settings"


def test_no_local_only_setting_in_azure(settings_in_bicep: dict[str, Any]) -> None:
    leaked = set(_specs(local_only=True)) & set(settings_in_bicep)
    assert not leaked, f"local-only settings (keys, local paths, TLS relaxations) set in Azure: {leaked}"


def test_every_app_setting_is_known(settings_in_bicep: dict[str, Any]) -> None:
    unknown = {n for n in settings_in_bicep if not n.startswith("HITL_")} - HOST_SETTINGS
    assert not unknown, f"app settings neither read by hitl_core.settings nor needed by the host: {unknown}"
    assert HOST_SETTINGS <= set(settings_in_bicep)


def test_no_flex_incompatible_or_key_based_host_setting(settings_in_bicep: dict[str, Any]) -> None:
    assert set(settings_in_bicep) & FORBIDDEN_SETTINGS == set()
    assert literal(settings_in_bicep["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]) == "Authorization=AAD"


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.secret and not s.local_only], ids=lambda s: s.name)
def test_secret_settings_are_key_vault_references(settings_in_bicep: dict[str, Any], spec: SettingSpec) -> None:
    """A secret is either a Key Vault reference or (optional secrets, not configured) empty."""
    branches = conditional_branches(settings_in_bicep[spec.name])
    references = [b for b in branches if isinstance(b, str) and KEY_VAULT_REFERENCE.match(b)]
    others = [b for b in branches if b not in references]
    assert references, f"{spec.name} is not a @Microsoft.KeyVault(SecretUri=...) reference: {branches}"
    assert all(b == "" for b in others), f"{spec.name} may take a value that is not a Key Vault reference: {others}"


def test_non_secret_settings_are_not_key_vault_references(settings_in_bicep: dict[str, Any]) -> None:
    secret = {s.name for s in SETTINGS if s.secret}
    for name, value in settings_in_bicep.items():
        if name not in secret:
            assert "@Microsoft.KeyVault" not in str(value), f"{name} is not secret in the code"


def test_azure_runs_cosmos_storage_and_easy_auth(app_settings: Resource, infra_scan: InfraScan) -> None:
    template = infra_scan.template(app_settings.file)
    try:
        assert literal(app_settings.properties["HITL_STORAGE"], template) == "cosmos"
        assert literal(app_settings.properties["HITL_AUTH_MODE"], template) == "easyauth"
    except NotLiteral as exc:
        pytest.fail(f"HITL_STORAGE and HITL_AUTH_MODE must be literals in the Bicep: {exc}")


@pytest.mark.parametrize("path", [rel(p) for p in bicep_files()])
def test_no_keys_or_connection_strings(path: str) -> None:
    text = (REPO / path).read_text(encoding="utf-8")
    found = KEY_MATERIAL.findall(text)
    assert not found, f"{path}: key material or key listing in the Bicep: {found}"
