"""The directory in Microsoft Entra ID, read through Microsoft Graph v1.0 (``HITL_DIRECTORY=graph``).

The function app reads Graph with its own managed identity (a token for
``https://graph.microsoft.com/.default`` from ``azure.identity``); no secret is configured. The
identity needs two Microsoft Graph *application* permissions (:data:`GRAPH_APPLICATION_PERMISSIONS`),
which ``infra/hooks/postprovision`` grants:

``User.Read.All``
    read a user by id or user principal name, find a user by e-mail, read a user's manager and a
    user's transitive group memberships.
``GroupMember.Read.All``
    list a group's transitive members (the members of a role).

Requests (each documented at https://learn.microsoft.com/graph/api/<page>)::

    GET /users/{id | userPrincipalName}?$select=id,displayName,mail,userPrincipalName   user-get
    GET /users?$filter=mail eq '{mail}'&$select=...                                     user-list
    GET /users/{id}/manager?$select=id                                                  user-list-manager
    GET /users/{id}/transitiveMemberOf/microsoft.graph.group?$select=id,displayName     user-list-transitivememberof
    GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=...                 group-list-transitivemembers

The two OData casts (``/microsoft.graph.group``, ``/microsoft.graph.user``) are sent as advanced
queries (``ConsistencyLevel: eventual`` and ``$count=true``), which Graph requires for a cast on a
transitive membership list (https://learn.microsoft.com/graph/aad-advanced-queries). Every list
follows ``@odata.nextLink`` (https://learn.microsoft.com/graph/paging), only to the configured
Graph host: the bearer token is never sent anywhere else.

How keys map to people:

- an object id (a GUID) is read directly;
- a key with ``@`` is tried as a user principal name, then as an e-mail address (``mail``);
  two users with the same address are refused, as :class:`FileDirectory` refuses ambiguity;
- any other key (a bare ``rita``) is unknown to Entra ID: None, without a request.

User input never reaches a URL unescaped: path segments are percent-encoded (``/`` included) and
OData string literals double their single quotes. A user principal name that starts with ``$``
uses the key form ``/users('$x@y')`` that Graph documents for it.

Roles: ``HITL_GRAPH_ROLE_GROUPS`` maps each role to a group object id; a person has the role when
they are a direct or nested member of that group. :meth:`GraphDirectory.person` returns every
role; :meth:`GraphDirectory.members` lists a role's members with that role only (reading each
member's other groups and manager would cost two requests per member): call ``person`` for the
full record. App roles assigned to users are not read from Graph: they arrive as role claims in
the sign-in token (Easy Auth), which the access policy already adds to a caller's roles.

Answers (a person, "unknown", a manager, a role's members) are cached for
``HITL_DIRECTORY_CACHE_SECONDS`` in a small bounded cache. A 404 for a person means "unknown"
(None); anything else that fails (network, 401/403, 429, 5xx, a malformed answer) raises
:class:`DirectoryError` with the status and Graph's error code, never the token. A throttling
answer (429/503/504) whose ``Retry-After`` is at most a couple of seconds is retried once
(https://learn.microsoft.com/graph/throttling); a longer wait is reported, not slept through.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from ..netaddr import is_loopback_host
from .models import DirectoryError, Person

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["GRAPH_APPLICATION_PERMISSIONS", "GraphDirectory", "TokenProvider", "graph_scope", "odata_string"]

#: An async callable that returns a bearer token for Microsoft Graph.
TokenProvider = Callable[[], Awaitable[str]]

#: The Microsoft Graph application permissions (app roles) the app's identity needs, least privileged.
GRAPH_APPLICATION_PERMISSIONS: tuple[str, ...] = ("User.Read.All", "GroupMember.Read.All")

USER_FIELDS = "id,displayName,mail,userPrincipalName"
GROUP_FIELDS = "id,displayName"
PAGE_SIZE = 999  # the largest page Graph serves for directory objects
MAX_PAGES = 1000
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.\-]{1,80}$")
_THROTTLED = frozenset({429, 503, 504})
_USER_TYPE = "#microsoft.graph.user"


def odata_string(value: str) -> str:
    """``value`` as an OData string literal: in single quotes, each single quote doubled."""
    return "'" + value.replace("'", "''") + "'"


def graph_scope(base_url: str) -> str:
    """The token scope of the Graph endpoint ``base_url`` (``https://graph.microsoft.com/.default``)."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/.default"


def _segment(value: str) -> str:
    """One URL path segment: everything but unreserved characters and ``@`` percent-encoded."""
    return quote(value, safe="@")


def _query(params: Mapping[str, str]) -> str:
    return "&".join(f"{name}={quote(value, safe=',')}" for name, value in params.items())


class _TTLCache[V]:
    """At most ``max_entries`` values, each for ``ttl`` seconds (least recently used evicted first)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> tuple[bool, V | None]:
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: str, value: V) -> None:
        if self._ttl <= 0 or self._max <= 0:
            return
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class GraphDirectory:
    """People, roles and managers from Microsoft Entra ID (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        role_groups: Iterable[tuple[str, str]] | Mapping[str, str],
        cache_seconds: float,
        token_provider: TokenProvider,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        cache_size: int = 2048,
        max_retry_wait: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        base = base_url.strip().rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise DirectoryError(f"HITL_GRAPH_BASE_URL must be an https URL, got {base_url!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise DirectoryError(f"HITL_GRAPH_BASE_URL must use https (plain http only on loopback), got {base_url!r}")
        self._base = base
        self._origin = (parts.scheme, parts.netloc.lower())
        self._group_of: dict[str, str] = {}
        pairs = role_groups.items() if isinstance(role_groups, Mapping) else role_groups
        for raw_role, raw_group in pairs:
            role, group = raw_role.strip().lower(), raw_group.strip().lower()
            if not role:
                raise DirectoryError("HITL_GRAPH_ROLE_GROUPS has an empty role name")
            if not _GUID.match(group):
                raise DirectoryError(
                    f"HITL_GRAPH_ROLE_GROUPS: role {role!r} must map to a group object id (a GUID), got {raw_group!r}"
                )
            if self._group_of.get(role, group) != group:
                raise DirectoryError(f"HITL_GRAPH_ROLE_GROUPS maps role {role!r} to two groups")
            self._group_of[role] = group
        self._token_provider = token_provider
        self._client = client if client is not None else httpx.AsyncClient(
            timeout=timeout, follow_redirects=False, headers={"Accept": "application/json"}
        )
        self._owns_client = client is None
        self._max_retry_wait = max_retry_wait
        self._on_close = on_close
        self._closed = False
        self._people: _TTLCache[Person | None] = _TTLCache(cache_seconds, cache_size, clock)
        self._members: _TTLCache[tuple[Person, ...]] = _TTLCache(cache_seconds, max(16, len(self._group_of)), clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> GraphDirectory:
        """The directory of ``settings``, reading Graph with the app's managed identity.

        ``DefaultAzureCredential`` is the managed identity in Azure and, on a laptop, whoever is
        signed in to the Azure CLI / azd / VS Code (that user then needs the same Graph access).
        """
        from azure.identity.aio import DefaultAzureCredential

        scope = graph_scope(settings.graph_base_url)
        credential: DefaultAzureCredential | None = None  # created on first use, so a refused setting leaks none

        async def token() -> str:
            nonlocal credential
            if credential is None:
                credential = DefaultAzureCredential()
            access = await credential.get_token(scope)
            return str(access.token)

        async def close_credential() -> None:
            if credential is not None:
                await credential.close()

        return cls(
            settings.graph_base_url,
            settings.graph_role_groups,
            settings.directory_cache_seconds,
            token,
            on_close=close_credential,
        )

    @property
    def role_groups(self) -> dict[str, str]:
        """Role -> group object id, as configured."""
        return dict(self._group_of)

    # -- the Directory protocol ---------------------------------------------------------------------
    async def person(self, key: str) -> Person | None:
        wanted = key.strip()
        if not wanted:
            return None
        cache_key = wanted.lower()
        hit, cached = self._people.get(cache_key)
        if hit:
            return cached
        user = await self._find_user(wanted)
        person = await self._complete(user) if user is not None else None
        self._people.put(cache_key, person)
        if person is not None:
            for other in (person.id, person.email, *person.aliases):
                if other:
                    self._people.put(other.lower(), person)
        return person

    async def members(self, role: str) -> list[Person]:
        wanted = role.strip().lower()
        group = self._group_of.get(wanted)
        if group is None:
            return []
        hit, cached = self._members.get(wanted)
        if hit and cached is not None:
            return list(cached)
        path = f"/groups/{_segment(group)}/transitiveMembers/microsoft.graph.user"
        users = await self._list(path, {"$select": USER_FIELDS}, advanced=True, missing_ok=True)
        if users is None:
            raise DirectoryError(
                f"HITL_GRAPH_ROLE_GROUPS maps role {wanted!r} to group {group}, which Microsoft Graph does not know"
            )
        people: dict[str, Person] = {}
        for user in users:
            person = self._to_person(user, roles=(wanted,), manager=None)
            if person is not None:
                people.setdefault(person.id.lower(), person)
        result = tuple(people.values())
        self._members.put(wanted, result)
        return list(result)

    async def manager_of(self, person_id: str) -> Person | None:
        person = await self.person(person_id)
        if person is None or person.manager is None:
            return None
        return await self.person(person.manager)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._people.clear()
        self._members.clear()
        try:
            if self._owns_client:
                await self._client.aclose()
        finally:
            if self._on_close is not None:
                await self._on_close()

    # -- lookups ------------------------------------------------------------------------------------
    async def _find_user(self, key: str) -> dict[str, Any] | None:
        select = {"$select": USER_FIELDS}
        if _GUID.match(key):
            return await self._get(f"/users/{_segment(key)}", select, missing_ok=True)
        if "@" not in key:
            return None  # not an object id, a user principal name or an e-mail address
        if key.startswith("$"):
            # Graph's documented form for a user principal name that starts with "$" (user-get).
            path = "/users(" + quote(odata_string(key), safe="@$'") + ")"
        else:
            path = f"/users/{_segment(key)}"
        user = await self._get(path, select, missing_ok=True)
        if user is not None:
            return user
        found = await self._get("/users", {"$filter": f"mail eq {odata_string(key)}", **select})
        assert found is not None  # missing_ok=False: a 404 raised
        users = [u for u in _values(found, "/users") if isinstance(u, dict)]
        if len(users) > 1:
            raise DirectoryError(f"{len(users)} users in Microsoft Entra ID have the e-mail address {key!r}")
        return users[0] if users else None

    async def _complete(self, user: dict[str, Any]) -> Person | None:
        user_id = user.get("id")
        if not isinstance(user_id, str) or not user_id:
            raise DirectoryError("Microsoft Graph returned a user without an id")
        roles, manager = await asyncio.gather(self._roles_of(user_id), self._manager_id(user_id))
        return self._to_person(user, roles=roles, manager=manager)

    async def _roles_of(self, user_id: str) -> tuple[str, ...]:
        if not self._group_of:
            return ()
        path = f"/users/{_segment(user_id)}/transitiveMemberOf/microsoft.graph.group"
        groups = await self._list(path, {"$select": GROUP_FIELDS}, advanced=True, missing_ok=True)
        ids = {g["id"].lower() for g in groups or () if isinstance(g, dict) and isinstance(g.get("id"), str)}
        return tuple(role for role, group in self._group_of.items() if group in ids)

    async def _manager_id(self, user_id: str) -> str | None:
        manager = await self._get(f"/users/{_segment(user_id)}/manager", {"$select": "id"}, missing_ok=True)
        if manager is None:
            return None
        if manager.get("@odata.type", _USER_TYPE) != _USER_TYPE:
            return None  # an organizational contact cannot sign in or decide
        manager_id = manager.get("id")
        return manager_id if isinstance(manager_id, str) and manager_id else None

    @staticmethod
    def _to_person(user: dict[str, Any], *, roles: tuple[str, ...], manager: str | None) -> Person | None:
        user_id = user.get("id")
        if not isinstance(user_id, str) or not user_id:
            return None
        mail = user.get("mail")
        email = mail.strip() if isinstance(mail, str) and mail.strip() and len(mail) <= 320 else None
        upn = user.get("userPrincipalName")
        aliases = (upn.strip(),) if isinstance(upn, str) and upn.strip() else ()
        if email and aliases and aliases[0].lower() == email.lower():
            aliases = ()
        name = user.get("displayName")
        return Person(
            id=user_id,
            email=email,
            display_name=name.strip()[:256] if isinstance(name, str) else "",
            roles=roles,
            manager=manager,
            aliases=aliases,
        )

    # -- HTTP ----------------------------------------------------------------------------------------
    async def _get(self, path: str, params: Mapping[str, str], *, missing_ok: bool = False,
                   advanced: bool = False) -> dict[str, Any] | None:
        return await self._fetch(f"{self._base}{path}?{_query(params)}", path, missing_ok=missing_ok,
                                 advanced=advanced)

    async def _list(self, path: str, params: Mapping[str, str], *, advanced: bool,
                    missing_ok: bool = False) -> list[Any] | None:
        """Every item of a collection, following ``@odata.nextLink``; None on 404 with ``missing_ok``."""
        query = {**params, "$top": str(PAGE_SIZE)}
        if advanced:
            query["$count"] = "true"
        url: str | None = f"{self._base}{path}?{_query(query)}"
        items: list[Any] = []
        pages = 0
        while url is not None:
            pages += 1
            if pages > MAX_PAGES:
                raise DirectoryError(f"Microsoft Graph returned more than {MAX_PAGES} pages for {path}")
            page = await self._fetch(url, path, missing_ok=missing_ok and pages == 1, advanced=advanced)
            if page is None:
                return None
            items.extend(_values(page, path))
            next_link = page.get("@odata.nextLink")
            if next_link is not None and not isinstance(next_link, str):
                raise DirectoryError(f"Microsoft Graph returned a malformed @odata.nextLink for {path}")
            if next_link is not None:
                self._check_origin(next_link, path)
            url = next_link
        return items

    def _check_origin(self, url: str, path: str) -> None:
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc.lower()) != self._origin:
            raise DirectoryError(
                f"Microsoft Graph's next-page link for {path} points to another host; it is not followed "
                "(the token is only sent to HITL_GRAPH_BASE_URL)"
            )

    async def _token(self) -> str:
        try:
            token = await self._token_provider()
        except Exception as exc:  # any credential failure is reported as the directory's failure
            detail = " ".join(str(exc).split())[:300]
            raise DirectoryError(
                f"could not get a Microsoft Graph token for the app's identity ({type(exc).__name__}: {detail})"
            ) from None
        if not token or any(c in token for c in "\r\n"):
            raise DirectoryError("the token provider returned no usable Microsoft Graph token")
        return token

    async def _fetch(self, url: str, what: str, *, missing_ok: bool, advanced: bool) -> dict[str, Any] | None:
        if self._closed:
            raise DirectoryError("the Graph directory is closed")
        headers = {"Authorization": f"Bearer {await self._token()}"}
        if advanced:
            headers["ConsistencyLevel"] = "eventual"
        response = await self._send(url, headers, what)
        if response.status_code in _THROTTLED:
            wait = _retry_after(response)
            if wait is not None and wait <= self._max_retry_wait:
                await asyncio.sleep(wait)
                response = await self._send(url, headers, what)
        status = response.status_code
        if status == 200:
            try:
                body = response.json()
            except ValueError:
                raise DirectoryError(f"Microsoft Graph answered {what} with something that is not JSON") from None
            if not isinstance(body, dict):
                raise DirectoryError(f"Microsoft Graph answered {what} with a JSON value that is not an object")
            return body
        if status == 404 and missing_ok:
            return None
        raise DirectoryError(_failure(response, what))

    async def _send(self, url: str, headers: dict[str, str], what: str) -> httpx.Response:
        try:
            return await self._client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            # ``from None``: an httpx exception carries the request, and the request the token.
            raise DirectoryError(f"Microsoft Graph could not be reached for {what} ({type(exc).__name__})") from None


def _values(page: dict[str, Any], what: str) -> list[Any]:
    value = page.get("value")
    if not isinstance(value, list):
        raise DirectoryError(f"Microsoft Graph answered {what} without a 'value' list")
    return value


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date)."""
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _failure(response: httpx.Response, what: str) -> str:
    """A DirectoryError message: the status, Graph's error code and message, what to do."""
    status = response.status_code
    code = detail = ""
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            raw_code, raw_message = error.get("code"), error.get("message")
            if isinstance(raw_code, str) and _ERROR_CODE.match(raw_code):
                code = f" {raw_code}"
            if isinstance(raw_message, str) and raw_message.strip():
                detail = ": " + " ".join(raw_message.split())[:200]
    except (ValueError, AttributeError):
        pass
    head = f"Microsoft Graph answered {status}{code} to {what}{detail}"
    if status in _THROTTLED:
        wait = _retry_after(response)
        hint = f"; retry after {wait:.0f} s" if wait is not None else "; retry later"
        return f"{head} (throttled or unavailable{hint})"
    if status in (401, 403):
        needed = " and ".join(GRAPH_APPLICATION_PERMISSIONS)
        return (f"{head} (the app's identity needs the Microsoft Graph application permissions {needed}, "
                "granted by infra/hooks/postprovision)")
    return head
