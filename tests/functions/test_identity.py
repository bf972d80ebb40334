"""Who decides: the Easy Auth principal is trusted only in easyauth mode; dev mode reads X-HITL-User."""

from __future__ import annotations

import base64
import json

import pytest

from hitl_core.functions.identity import caller_from_request
from hitl_core.settings import Settings

from .conftest import http


def principal(name: str, roles: list[str]) -> str:
    claims = [{"typ": "preferred_username", "val": name}] + [{"typ": "roles", "val": r} for r in roles]
    body = {"auth_typ": "aad", "claims": claims, "name_typ": "preferred_username", "role_typ": "roles"}
    return base64.b64encode(json.dumps(body).encode()).decode()


def test_easyauth_reads_the_principal_and_ignores_the_dev_header() -> None:
    req = http("GET", "/", headers={"x-ms-client-principal": principal("ann@contoso.test", ["finance"]),
                                    "x-hitl-user": "mallory", "x-forwarded-for": "203.0.113.9, 10.0.0.1"})
    caller = caller_from_request(req, Settings(auth_mode="easyauth"))
    assert caller.user == "ann@contoso.test" and caller.roles == ("finance",)
    assert caller.source == "203.0.113.9" and caller.via == "easyauth"


def test_dev_mode_ignores_the_principal_header() -> None:
    req = http("GET", "/", headers={"x-ms-client-principal": principal("ann@contoso.test", ["finance"]),
                                    "x-hitl-user": "bob", "x-hitl-roles": "reviewers, qa"})
    caller = caller_from_request(req, Settings(auth_mode="dev"))
    assert caller.user == "bob" and caller.roles == ("reviewers", "qa")


@pytest.mark.parametrize("header", ["not base64!!", base64.b64encode(b"[1,2]").decode(), ""])
def test_a_malformed_principal_means_anonymous(header: str) -> None:
    req = http("GET", "/", headers={"x-ms-client-principal": header})
    caller = caller_from_request(req, Settings(auth_mode="easyauth"))
    assert caller.user is None and caller.roles == ()
