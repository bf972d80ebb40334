"""Who is calling: App Service Authentication (Easy Auth) principal or the dev header.

``HITL_AUTH_MODE=easyauth`` (Azure default) trusts ``X-MS-CLIENT-PRINCIPAL`` — App Service
strips it from incoming requests and sets it after authenticating, so it is trusted only in
that mode. ``dev`` (the local host) takes the caller's name from ``X-HITL-User`` and roles from
``X-HITL-Roles``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import azure.functions as func

from ..service import Caller
from ..settings import Settings

_NAME_CLAIMS = ("preferred_username", "email", "emails", "upn", "name",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
_ROLE_CLAIMS = ("roles", "groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")


def _source(req: func.HttpRequest) -> str | None:
    forwarded: str | None = req.headers.get("x-forwarded-for")
    if forwarded:
        return forwarded.split(",")[0].strip()[:64]
    direct: str | None = req.headers.get("x-client-ip") or req.headers.get("x-hitl-client-ip")
    return direct


def _principal(header: str) -> tuple[str | None, tuple[str, ...]]:
    try:
        data: Any = json.loads(base64.b64decode(header))
    except (ValueError, UnicodeError):
        return None, ()
    if not isinstance(data, dict):
        return None, ()
    raw_claims = data.get("claims")
    claims: list[Any] = raw_claims if isinstance(raw_claims, list) else []
    values: dict[str, list[str]] = {}
    for claim in claims:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            values.setdefault(claim["typ"], []).append(claim["val"])
    name_typ = data.get("name_typ")
    role_typ = data.get("role_typ")
    user = None
    for typ in ((name_typ,) if name_typ else ()) + _NAME_CLAIMS:
        if typ in values:
            user = values[typ][0]
            break
    roles: dict[str, None] = {}  # ordered and without repeats
    for typ in ((role_typ,) if role_typ else ()) + _ROLE_CLAIMS:
        roles.update(dict.fromkeys(values.get(typ, [])))
    return user, tuple(roles)


def caller_from_request(req: func.HttpRequest, settings: Settings) -> Caller:
    if settings.auth_mode == "easyauth":
        header = req.headers.get("x-ms-client-principal")
        user, roles = _principal(header) if header else (None, ())
        return Caller(user=user, roles=roles, source=_source(req), via="easyauth")
    user = (req.headers.get("x-hitl-user") or "").strip() or None
    roles = tuple(r.strip() for r in (req.headers.get("x-hitl-roles") or "").split(",") if r.strip())
    return Caller(user=user, roles=roles, source=_source(req), via="dev")
