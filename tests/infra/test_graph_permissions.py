"""The directory in Azure: HITL_DIRECTORY=graph by default, and the Microsoft Graph application
permissions the code needs are exactly what the azd ``postprovision`` hook grants, idempotently.

Why a hook: a Microsoft Graph application permission is an app role assignment in Microsoft Entra
ID, not an Azure resource. Bicep can declare one only with the Microsoft Graph Bicep extension
(``extension microsoftGraphV1`` + ``Microsoft.Graph/appRoleAssignedTo``), and pycep-parser 0.5.1,
the parser of checkov and of these offline tests, rejects the ``extension`` statement.

The POSIX hook is run here against a fake ``az`` on a hermetic PATH: a script that answers the
documented Microsoft Graph requests the hook sends through ``az rest`` (the Graph service principal
and its app roles, the identity's app role assignments, ``POST .../appRoleAssignedTo``) from canned
data in Graph's documented shapes, and applies ``--query`` with JMESPath and ``-o tsv`` as the
Azure CLI does. Nothing reaches Azure. The PowerShell hook is checked for the same permissions and
requests (no PowerShell here to run it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hitl_core.directory.graph import GRAPH_APPLICATION_PERMISSIONS
from hitl_core.settings import SETTINGS

from ._bicep import param_default
from .conftest import REPO, InfraScan, ensure_infra_venv

HOOK_SH = REPO / "infra" / "hooks" / "postprovision.sh"
HOOK_PS1 = REPO / "infra" / "hooks" / "postprovision.ps1"
GRAPH = "https://graph.microsoft.com/v1.0"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
GRAPH_SP = "5f0e2d3c-0000-4000-8000-00000000a001"  # the tenant's Microsoft Graph service principal
PRINCIPAL = "7c1b9e2a-0000-4000-8000-00000000b002"  # the function app's managed identity
# Microsoft Graph's application permission ids (the same in every tenant; permissions reference).
APP_ROLE_IDS = {
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "Group.Read.All": "5b567255-7703-4780-807c-7be8301ae99b",
    "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
}
APP_ROLES = [
    {"id": role_id, "value": value, "allowedMemberTypes": ["Application"], "isEnabled": True,
     "displayName": f"{value} (application)", "description": ""}
    for value, role_id in APP_ROLE_IDS.items()
]

FAKE_AZ = r'''#!{python}
"""A fake Azure CLI: `az rest` against canned Microsoft Graph data (tests/infra/test_graph_permissions.py)."""
import json, os, sys
import jmespath

GRAPH = "https://graph.microsoft.com/v1.0"
STATE = os.environ["FAKE_AZ_STATE"]
with open(STATE) as f:
    state = json.load(f)
argv = sys.argv[1:]
state["calls"].append(argv)


def save():
    with open(STATE, "w") as f:
        json.dump(state, f)


def fail(message, code=1):
    save()
    print(message, file=sys.stderr)
    sys.exit(code)


def option(*names):
    for name in names:
        if name in argv:
            return argv[argv.index(name) + 1]
    return None


def tsv(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(tsv_row(v) for v in value)
    return tsv_row(value)


def tsv_row(value):
    if isinstance(value, list):
        return "\t".join("" if v is None else str(v) for v in value)
    if isinstance(value, dict):
        return "\t".join("" if v is None else str(v) for v in value.values())
    return "" if value is None else str(value)


if argv[:1] != ["rest"]:
    fail(f"fake az: unexpected command {argv}", 2)
method, url = option("--method", "-m"), option("--url", "-u")
if state.get("refuse") == "all" or (state.get("refuse") == "post" and method == "post"):
    fail('ERROR: Forbidden({"error":{"code":"Authorization_RequestDenied",'
         '"message":"Insufficient privileges to complete the operation."}})')
graph_sp, principal = state["graph_sp"], state["principal"]
by_app_id = f"{GRAPH}/servicePrincipals(appId='00000003-0000-0000-c000-000000000000')"
if method == "get" and url == by_app_id + "?$select=id":
    body = {"id": graph_sp}
elif method == "get" and url == by_app_id + "?$select=id,appRoles":
    body = {"id": graph_sp, "appRoles": state["app_roles"]}
elif method == "get" and url == f"{GRAPH}/servicePrincipals/{graph_sp}?$select=appRoles":
    body = {"appRoles": state["app_roles"]}
elif method == "get" and url == f"{GRAPH}/servicePrincipals/{principal}/appRoleAssignments":
    body = {"value": state["assignments"]}
elif method == "post" and url == f"{GRAPH}/servicePrincipals/{graph_sp}/appRoleAssignedTo":
    if option("--headers") != "Content-Type=application/json":
        fail("fake az: POST without Content-Type=application/json", 2)
    raw = option("--body") or ""
    if raw.startswith("@"):
        with open(raw[1:]) as f:
            raw = f.read()
    grant = json.loads(raw)
    if set(grant) != {"principalId", "resourceId", "appRoleId"}:
        fail(f"fake az: Bad Request({grant})")
    if grant["principalId"] != principal or grant["resourceId"] != graph_sp:
        fail(f"fake az: Bad Request(wrong principal or resource: {grant})")
    if grant["appRoleId"] not in {r["id"] for r in state["app_roles"]}:
        fail(f"fake az: Bad Request(no app role {grant['appRoleId']})")
    if any(a["appRoleId"] == grant["appRoleId"] for a in state["assignments"]):
        fail('ERROR: Bad Request({"error":{"code":"Request_BadRequest",'
             '"message":"Permission being assigned already exists on the object"}})')
    body = {"id": f"assignment-{len(state['assignments'])}", "principalType": "ServicePrincipal", **grant}
    state["assignments"].append(body)
else:
    fail(f"fake az: no such request {method} {url}", 2)
query = option("--query")
result = jmespath.search(query, body) if query else body
save()
output = option("--output", "-o") or "json"
if output == "tsv":
    text = tsv(result)
    if text:
        print(text)
elif output != "none":
    print(json.dumps(result, indent=2))
'''


def _listed(path: Path, pattern: str) -> tuple[str, ...]:
    match = re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{path.name}: no permission list matching {pattern!r}"
    return tuple(re.findall(r"[A-Za-z]+\.[A-Za-z.]+", match[1]))


def test_the_hooks_grant_exactly_what_the_code_needs() -> None:
    assert _listed(HOOK_SH, r'^PERMISSIONS="([^"]*)"$') == GRAPH_APPLICATION_PERMISSIONS
    assert _listed(HOOK_PS1, r"^\$Permissions = @\(([^)]*)\)$") == GRAPH_APPLICATION_PERMISSIONS
    for hook in (HOOK_SH, HOOK_PS1):
        text = hook.read_text(encoding="utf-8")
        assert GRAPH_APP_ID in text
        assert "/appRoleAssignments" in text, f"{hook.name} must read existing assignments (idempotent)"
        assert "/appRoleAssignedTo" in text


def test_azure_yaml_runs_the_hook_after_provisioning(infra_scan: InfraScan) -> None:
    hook = infra_scan.yaml_documents["azure.yaml"]["hooks"]["postprovision"]
    assert hook["posix"]["run"] == "./infra/hooks/postprovision.sh"
    assert hook["windows"]["run"] == "./infra/hooks/postprovision.ps1"


def test_main_outputs_what_the_hook_reads(infra_scan: InfraScan) -> None:
    outputs = infra_scan.template("infra/main.bicep")["outputs"]
    principal = str(outputs["AZURE_FUNCTION_APP_PRINCIPAL_ID"]["value"])
    assert "functionApp" in principal and "principalId" in principal
    assert outputs["HITL_DIRECTORY"]["value"] == "directory"


def test_azure_reads_the_directory_from_graph_by_default(infra_scan: InfraScan) -> None:
    main = infra_scan.template("infra/main.bicep")
    app_settings = infra_scan.template("infra/modules/app-settings.bicep")
    assert param_default(main, "directory") == "graph"
    (module,) = [m for m in main["modules"].values() if m["detail"]["path"].endswith("app-settings.bicep")]
    assert module["config"]["params"]["directory"] == "directory"
    (resource,) = [r for r in app_settings["resources"].values() if r["type"] == "Microsoft.Web/sites/config"]
    assert resource["config"]["properties"]["HITL_DIRECTORY"] == "directory"
    assert param_default(app_settings, "directory") == "graph"
    # HITL_DIRECTORY=file would need a directory file, which Azure does not have.
    for template in (main, app_settings):
        (allowed,) = [d["argument"] for d in template["parameters"]["directory"]["decorators"]
                      if d["type"] == "allowed"]
        assert set(allowed) == {"graph", "none"}


def test_trusted_proxy_hops_default_to_app_services_front_end(infra_scan: InfraScan) -> None:
    assert param_default(infra_scan.template("infra/main.bicep"), "trustedProxyHops") == "1"
    assert param_default(infra_scan.template("infra/modules/app-settings.bicep"), "trustedProxyHops") == "1"


def test_graph_base_url_is_a_local_only_setting() -> None:
    """Azure uses Graph's global endpoint (the code default); only a laptop points elsewhere."""
    (spec,) = [s for s in SETTINGS if s.name == "HITL_GRAPH_BASE_URL"]
    assert spec.local_only and spec.default == GRAPH


# -- running the POSIX hook against the fake az ------------------------------------------------------------
class Hook:
    def __init__(self, tmp_path: Path, python: Path) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        for tool in ("awk", "cat", "grep", "tr"):
            found = shutil.which(tool)
            assert found, f"{tool} is needed to run the hook"
            (self.bin / tool).symlink_to(found)
        self.az = self.bin / "az"
        self.az.write_text(FAKE_AZ.replace("{python}", str(python)), encoding="utf-8")
        self.az.chmod(0o755)
        self.state_path = tmp_path / "az-state.json"
        self.state: dict[str, Any] = {"graph_sp": GRAPH_SP, "principal": PRINCIPAL, "app_roles": APP_ROLES,
                                      "assignments": [], "calls": [], "refuse": ""}

    def grant(self, *permissions: str) -> None:
        for p in permissions:
            self.state["assignments"].append({"id": f"pre-{p}", "appRoleId": APP_ROLE_IDS[p],
                                              "principalId": PRINCIPAL, "resourceId": GRAPH_SP})

    def run(self, **env: str) -> subprocess.CompletedProcess[str]:
        self.state_path.write_text(json.dumps(self.state), encoding="utf-8")
        environment = {"PATH": str(self.bin), "FAKE_AZ_STATE": str(self.state_path),
                       "AZURE_FUNCTION_APP_PRINCIPAL_ID": PRINCIPAL, **env}
        sh = shutil.which("sh")
        assert sh
        result = subprocess.run([sh, str(HOOK_SH)], env=environment, capture_output=True, text=True, timeout=60,
                                check=False)
        self.state = json.loads(self.state_path.read_text(encoding="utf-8"))
        return result

    def posts(self) -> list[dict[str, Any]]:
        grants = []
        for call in self.state["calls"]:
            if call[call.index("--method") + 1] == "post":
                grants.append(json.loads(call[call.index("--body") + 1]))
        return grants

    def granted(self) -> set[str]:
        names = {role_id: name for name, role_id in APP_ROLE_IDS.items()}
        return {names[a["appRoleId"]] for a in self.state["assignments"] if a["resourceId"] == GRAPH_SP}


@pytest.fixture
def hook(tmp_path: Path) -> Hook:
    if os.name == "nt":
        pytest.skip("the POSIX hook runs on POSIX")
    return Hook(tmp_path, ensure_infra_venv())


def test_the_hook_grants_the_permissions(hook: Hook) -> None:
    result = hook.run()
    assert result.returncode == 0, result.stderr
    assert hook.posts() == [
        {"principalId": PRINCIPAL, "resourceId": GRAPH_SP, "appRoleId": APP_ROLE_IDS[p]}
        for p in GRAPH_APPLICATION_PERMISSIONS
    ]
    assert hook.granted() == set(GRAPH_APPLICATION_PERMISSIONS)
    assert "User.Read.All: granted" in result.stdout and "GroupMember.Read.All: granted" in result.stdout


def test_the_hook_is_idempotent(hook: Hook) -> None:
    assert hook.run().returncode == 0
    hook.state["calls"] = []
    again = hook.run()
    assert again.returncode == 0, again.stderr
    assert hook.posts() == []
    assert again.stdout.count("already granted") == len(GRAPH_APPLICATION_PERMISSIONS)


def test_the_hook_grants_only_what_is_missing(hook: Hook) -> None:
    hook.grant("User.Read.All", "Directory.Read.All")
    result = hook.run()
    assert result.returncode == 0, result.stderr
    assert [g["appRoleId"] for g in hook.posts()] == [APP_ROLE_IDS["GroupMember.Read.All"]]


@pytest.mark.parametrize(("refuse", "reason"), [
    ("all", "is az signed in?"),  # az cannot even read Graph
    ("post", "granting User.Read.All was refused"),  # a user who may read but not grant
])
def test_without_the_right_to_grant_it_explains_and_does_not_fail(hook: Hook, refuse: str, reason: str) -> None:
    hook.state["refuse"] = refuse
    result = hook.run()
    assert reason in result.stderr
    assert result.returncode == 0
    assert "WARNING" in result.stderr and PRINCIPAL in result.stderr
    assert all(p in result.stderr for p in GRAPH_APPLICATION_PERMISSIONS)
    assert "azd hooks run postprovision" in result.stderr
    assert hook.granted() == set()
    assert len(hook.posts()) == (1 if refuse == "post" else 0), "it stops at the first refusal"


def test_without_az_it_explains_and_does_not_fail(hook: Hook) -> None:
    hook.az.unlink()
    result = hook.run()
    assert result.returncode == 0
    assert "Azure CLI (az) is not installed" in result.stderr and PRINCIPAL in result.stderr


@pytest.mark.parametrize("env", [{"HITL_DIRECTORY": "none"}, {"HITL_GRAPH_GRANT": "false"}])
def test_nothing_to_grant(hook: Hook, env: dict[str, str]) -> None:
    result = hook.run(**env)
    assert result.returncode == 0, result.stderr
    assert hook.state["calls"] == []


def test_the_identity_must_exist(hook: Hook) -> None:
    result = hook.run(AZURE_FUNCTION_APP_PRINCIPAL_ID="")
    assert result.returncode == 1
    assert "AZURE_FUNCTION_APP_PRINCIPAL_ID" in result.stderr
    assert hook.state["calls"] == []
