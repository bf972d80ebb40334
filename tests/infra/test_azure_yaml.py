"""azure.yaml (azd) and infra/main.parameters.json fit the Bicep and the repository."""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest

from ._bicep import literal
from .conftest import INFRA, REPO, InfraScan


@pytest.fixture(scope="module")
def azure_yaml(infra_scan: InfraScan) -> dict[str, Any]:
    assert "azure.yaml" not in infra_scan.yaml_errors, infra_scan.yaml_errors.get("azure.yaml")
    document = infra_scan.yaml_documents.get("azure.yaml")
    assert isinstance(document, dict), "azure.yaml is missing or not a mapping"
    return document


def test_names_the_infra(azure_yaml: dict[str, Any]) -> None:
    assert isinstance(azure_yaml.get("name"), str) and len(azure_yaml["name"]) >= 2
    infra = azure_yaml["infra"]
    assert infra.get("provider", "bicep") == "bicep"
    assert infra["path"] == "infra"
    assert (REPO / infra["path"] / f"{infra.get('module', 'main')}.bicep").is_file()


def test_one_python_function_service(azure_yaml: dict[str, Any], infra_scan: InfraScan) -> None:
    services = azure_yaml["services"]
    assert len(services) == 1, "the whole service is one function app"
    (name, service), = services.items()
    assert service["language"] == "python"
    assert service["host"] == "function"
    project = REPO / service["project"]
    assert project.is_dir()
    assert (project / "requirements.txt").is_file(), "the Functions host installs requirements.txt"
    # azd finds the app by its azd-service-name tag, set from main.bicep's serviceName.
    main = infra_scan.template("infra/main.bicep")
    assert literal(main["variables"]["serviceName"]["value"]) == name


def test_hooks_exist(azure_yaml: dict[str, Any]) -> None:
    hooks = azure_yaml.get("hooks", {})
    assert {"preprovision", "postdeploy"} <= set(hooks)
    for event, hook in hooks.items():
        for platform in ("posix", "windows"):
            script = REPO / hook[platform]["run"]
            assert script.is_file(), f"{event}/{platform}: {script} is missing"
            if platform == "posix":
                assert os.access(script, os.X_OK), f"{script} is not executable"


def test_parameters_file_matches_main_bicep(infra_scan: InfraScan) -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    declared = infra_scan.template("infra/main.bicep")["parameters"]
    assert set(parameters) <= set(declared), f"unknown parameters: {set(parameters) - set(declared)}"
    required = {name for name, p in declared.items() if p.get("default") is None}
    assert required <= set(parameters), f"required parameters azd cannot fill: {required - set(parameters)}"
    for name, entry in parameters.items():
        value = entry["value"]
        assert isinstance(value, str) and re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(=[^}]*)?\}", value), (
            f"{name}: azd placeholders only (defaults belong in main.bicep)"
        )


def test_secure_parameters_have_no_real_default(infra_scan: InfraScan) -> None:
    for path, template in infra_scan.templates.items():
        for name, param in (template.get("parameters") or {}).items():
            if any(d.get("type") == "secure" for d in param.get("decorators", [])):
                assert param.get("default") in (None, ""), f"{path}: secure parameter {name} has a default value"


def _deploy_docs() -> tuple[str, str]:
    """The README's Deploy section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Deploy\b.*?(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Deploy' section"
    return "README.md (## Deploy)", match[0]


def test_deploy_docs_describe_every_parameter(infra_scan: InfraScan) -> None:
    where, text = _deploy_docs()
    missing = [name for name in infra_scan.template("infra/main.bicep")["parameters"] if f"`{name}`" not in text]
    assert not missing, f"{where} does not document the main.bicep parameters {missing}"
