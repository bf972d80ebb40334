"""Who is calling, and from where: App Service Authentication (Easy Auth) principal or the dev header.

``HITL_AUTH_MODE=easyauth`` (Azure default) trusts ``X-MS-CLIENT-PRINCIPAL`` — App Service
strips it from incoming requests and sets it after authenticating, so it is trusted only in
that mode. ``dev`` (the local host) takes the caller's name from ``X-HITL-User`` and, only when
no directory is configured, roles from ``X-HITL-Roles``.

**From where.** The address recorded is one the platform vouches for, never the client's own
claim: App Service's front end *appends* the client's address to ``X-Forwarded-For``, so the
entry ``HITL_TRUSTED_PROXY_HOPS`` from the right (default 1: the rightmost) is the one a trusted
proxy wrote; anything to its left was sent by the client and is ignored. The local host appends
the socket peer the same way. With no usable entry the source is ``"unknown"``, never null.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any

import azure.functions as func

from ..access import Caller
from ..settings import Settings

#: A principal header larger than this is not a principal App Service would send: anonymous.
MAX_PRINCIPAL_BYTES = 16 * 1024
MAX_CLAIMS = 500

_NAME_CLAIMS = ("preferred_username", "email", "emails", "upn", "name",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
                "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/upn")
_ROLE_CLAIMS = ("roles", "groups", "http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
_CLIENT_CLAIMS = ("appid", "azp")
UNKNOWN_SOURCE = "unknown"


def client_address(req: func.HttpRequest, hops: int) -> str:
    """The client address the trusted proxies recorded (see the module docstring)."""
    forwarded = req.headers.get("x-forwarded-for") or ""
    entries = [e.strip() for e in forwarded[:4096].split(",") if e.strip()]
    if hops < 1 or len(entries) < hops:
        return UNKNOWN_SOURCE
    candidate = entries[-hops]
    host = candidate
    if candidate.startswith("[") and "]" in candidate:  # [v6]:port
        host = candidate[1:candidate.index("]")]
    elif candidate.count(":") == 1:  # v4:port
        host = candidate.partition(":")[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return UNKNOWN_SOURCE


def _principal(header: str) -> tuple[str | None, tuple[str, ...], str | None]:
    """(user, roles, client id) from an Easy Auth principal; anything malformed is anonymous."""
    if len(header) > MAX_PRINCIPAL_BYTES:
        return None, (), None
    try:
        data: Any = json.loads(base64.b64decode(header.encode("ascii"), validate=False))
    except (ValueError, UnicodeError, binascii.Error, RecursionError):
        return None, (), None
    if not isinstance(data, dict):
        return None, (), None
    raw_claims = data.get("claims")
    claims: list[Any] = raw_claims[:MAX_CLAIMS] if isinstance(raw_claims, list) else []
    values: dict[str, list[str]] = {}
    for claim in claims:
        if isinstance(claim, dict) and isinstance(claim.get("typ"), str) and isinstance(claim.get("val"), str):
            values.setdefault(claim["typ"], []).append(claim["val"][:256])
    name_typ = data.get("name_typ") if isinstance(data.get("name_typ"), str) else None
    role_typ = data.get("role_typ") if isinstance(data.get("role_typ"), str) else None
    user = None
    for typ in ((name_typ,) if name_typ else ()) + _NAME_CLAIMS:
        if typ in values:
            user = values[typ][0]
            break
    roles: dict[str, None] = {}  # ordered and without repeats
    for typ in ((role_typ,) if role_typ else ()) + _ROLE_CLAIMS:
        roles.update(dict.fromkeys(values.get(typ, [])))
    client_id = next((values[typ][0] for typ in _CLIENT_CLAIMS if typ in values), None)
    return user, tuple(roles), client_id


def caller_from_request(req: func.HttpRequest, settings: Settings, *, via: str = "api") -> Caller:
    """The signed-in caller (or an anonymous one), acting through channel ``via``."""
    source = client_address(req, settings.trusted_proxy_hops)
    if settings.auth_mode == "easyauth":
        header = req.headers.get("x-ms-client-principal")
        user, roles, client_id = _principal(header) if header else (None, (), None)
        return Caller(user=user, roles=roles, source=source, via=via, client_id=client_id, auth="easyauth")
    user = _text(req.headers.get("x-hitl-user"))
    roles = tuple(r.strip() for r in (_text(req.headers.get("x-hitl-roles"), 4096) or "").split(",") if r.strip())
    return Caller(user=user[:256] if user else None, roles=roles, source=source, via=via, auth="dev")


def _text(value: str | None, limit: int = 256) -> str | None:
    """A header's text, or None when it is empty, too long, or not UTF-8 (nobody is named by it)."""
    if not value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value.strip() or None


def link_caller(req: func.HttpRequest, settings: Settings, person_id: str) -> Caller:
    """The person a signed decision link was minted for, acting through the link."""
    return Caller(user=person_id, source=client_address(req, settings.trusted_proxy_hops), via="link", auth="token")
