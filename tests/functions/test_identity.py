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
    # the right end is what App Service's front end appended; the left end is the client's own claim
    assert caller.source == "10.0.0.1" and caller.auth == "easyauth" and caller.via == "api"


@pytest.mark.parametrize(("forwarded", "hops", "expected"), [
    ("203.0.113.9, 10.0.0.1", 1, "10.0.0.1"),
    ("203.0.113.9, 10.0.0.1", 2, "203.0.113.9"),
    ("forged, 198.51.100.7:50123", 1, "198.51.100.7"),
    ("[2001:db8::1]:443", 1, "2001:db8::1"),
    ("", 1, "unknown"),
    ("not-an-address", 1, "unknown"),
    ("203.0.113.9", 2, "unknown"),
])
def test_the_source_is_the_address_a_trusted_proxy_appended(forwarded: str, hops: int, expected: str) -> None:
    req = http("GET", "/", headers={"x-forwarded-for": forwarded} if forwarded else {})
    assert caller_from_request(req, Settings(auth_mode="dev", trusted_proxy_hops=hops)).source == expected


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
