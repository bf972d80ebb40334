"""GraphDirectory against a LOCAL protocol stand-in for Microsoft Graph v1.0.

Microsoft Graph cannot be reached from here, so these tests run an aiohttp server on 127.0.0.1
that answers the documented request and response shapes of the five endpoints the directory
uses (user by id or user principal name, users filtered by ``mail``, a user's manager, a user's
transitive groups, a group's transitive user members), with Graph's paging (``@odata.nextLink``
with ``$skiptoken``), its error bodies (``{"error": {"code", "message"}}``), its advanced-query
rule for OData casts (``ConsistencyLevel: eventual`` and ``$count=true``, else 400) and its
``Retry-After`` on throttling. It is a stand-in for the protocol, not a copy of Graph: what it
proves is that the client sends the documented requests (exact paths, escaped filters, the bearer
token) and reads the documented answers; the real tenant's data and permissions are checked in
Azure, by the app's own error messages.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

import pytest
from aiohttp import web

from hitl_core.directory import Directory, DirectoryError, Person, directory_from_settings
from hitl_core.directory.graph import GRAPH_APPLICATION_PERMISSIONS, GraphDirectory, graph_scope, odata_string
from hitl_core.settings import Settings

# -- the tenant the stand-in serves ------------------------------------------------------------------
MONA = "0a000000-0000-4000-8000-000000000001"
AMY = "0a000000-0000-4000-8000-000000000002"
FAY = "0a000000-0000-4000-8000-000000000003"
FRED = "0a000000-0000-4000-8000-000000000004"
FIONA = "0a000000-0000-4000-8000-000000000005"
KEVIN = "0a000000-0000-4000-8000-000000000006"
OPS = "0a000000-0000-4000-8000-000000000007"
PAT = "0a000000-0000-4000-8000-000000000008"
SVC = "0a000000-0000-4000-8000-000000000009"
CORA = "0a000000-0000-4000-8000-00000000000a"
TWIN1 = "0a000000-0000-4000-8000-00000000000b"
TWIN2 = "0a000000-0000-4000-8000-00000000000c"
CONTACT = "0c000000-0000-4000-8000-000000000001"
NOBODY = "0a000000-0000-4000-8000-0000000000ff"

MANAGERS_G = "0b000000-0000-4000-8000-000000000001"
LEADS_G = "0b000000-0000-4000-8000-000000000002"  # nested in MANAGERS_G
FINANCE_G = "0b000000-0000-4000-8000-000000000003"
FINANCE_TEAM_G = "0b000000-0000-4000-8000-000000000004"  # nested in FINANCE_G
FIN_MANAGERS_G = "0b000000-0000-4000-8000-000000000005"
SOCIAL_G = "0b000000-0000-4000-8000-000000000006"  # maps to no role
ADMINS_G = "0b000000-0000-4000-8000-000000000007"  # empty
GHOST_G = "0b000000-0000-4000-8000-0000000000ff"  # no such group

ROLE_GROUPS = (
    ("managers", MANAGERS_G),
    ("Finance", FINANCE_G),
    ("finance-managers", FIN_MANAGERS_G),
    ("admins", ADMINS_G),
    ("ghost", GHOST_G),
)
USER_SELECT = "id,displayName,mail,userPrincipalName"


def _user(uid: str, name: str, upn: str, mail: str | None) -> dict[str, Any]:
    return {"id": uid, "displayName": name, "mail": mail, "userPrincipalName": upn}


USERS = {
    u["id"]: u
    for u in (
        _user(MONA, "Mona Meyer", "mona@contoso.example", "mona@contoso.example"),
        _user(AMY, "Amy Adams", "amy.adams@contoso.example", "amy@contoso.example"),
        _user(FAY, "Fay Fischer", "fay@contoso.example", "fay@contoso.example"),
        _user(FRED, "Fred Fox", "fred@contoso.example", "fred@contoso.example"),
        _user(FIONA, "Fiona Finch", "fiona@contoso.example", "fiona@contoso.example"),
        _user(KEVIN, "Kevin O'Brien", "kevin.o'brien@contoso.example", "kevin@contoso.example"),
        _user(OPS, "Ops EU", "opseu@contoso.example", "ops/eu@contoso.example"),
        _user(PAT, "Pat O'Neil", "pat@contoso.example", "pat.o'neil@contoso.example"),
        _user(SVC, "Service Desk", "$svc@contoso.example", None),
        _user(CORA, "Cora Contractor", "cora@contoso.example", "cora@contoso.example"),
        _user(TWIN1, "Twin One", "twin1@contoso.example", "shared@contoso.example"),
        _user(TWIN2, "Twin Two", "twin2@contoso.example", "shared@contoso.example"),
    )
}
MANAGERS: dict[str, dict[str, Any]] = {
    AMY: {"@odata.type": "#microsoft.graph.user", "id": MONA},
    FAY: {"@odata.type": "#microsoft.graph.user", "id": MONA},
    FRED: {"@odata.type": "#microsoft.graph.user", "id": MONA},
    FIONA: {"@odata.type": "#microsoft.graph.user", "id": FAY},
    CORA: {"@odata.type": "#microsoft.graph.orgContact", "id": CONTACT},
}
# Direct members (users and groups); the stand-in flattens them like Graph's transitive lists.
GROUPS: dict[str, tuple[str, set[str]]] = {
    MANAGERS_G: ("Managers", {MONA, LEADS_G}),
    LEADS_G: ("Team leads", {AMY}),
    FINANCE_G: ("Finance", {FAY, FRED, FINANCE_TEAM_G}),
    FINANCE_TEAM_G: ("Finance team", {FIONA}),
    FIN_MANAGERS_G: ("Finance managers", {MONA}),
    SOCIAL_G: ("Social club", {AMY, FAY}),
    ADMINS_G: ("Admins", set()),
}


def _flatten(group: str) -> set[str]:
    """The users of ``group``, nested groups included."""
    found: set[str] = set()
    for member in GROUPS[group][1]:
        found |= _flatten(member) if member in GROUPS else {member}
    return found


def _graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@dataclass
class Seen:
    """One request as the stand-in received it."""

    raw_path: str  # exactly as sent, percent-encoding included
    segments: list[str]  # decoded path segments after /v1.0/
    query: dict[str, str]  # decoded query parameters
    headers: dict[str, str]


@dataclass
class GraphStandIn:
    """A local protocol stand-in for Microsoft Graph v1.0 (see the module docstring)."""

    token: str = field(default_factory=lambda: "stand-in-token-" + secrets.token_hex(12))
    member_page_size: int = 2
    memberof_page_size: int = 1
    foreign_next_link: bool = False
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1.0"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def token_provider(self) -> str:
        return self.token

    def fail_next(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self.failures.append((status, headers or {}, {"error": {"code": code, "message": message}}))

    def paths(self) -> list[str]:
        return [s.raw_path for s in self.seen]

    # -- the protocol --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path
        path, _, query_string = raw_path.partition("?")
        query = dict(parse_qsl(query_string, keep_blank_values=True))
        assert path.startswith("/v1.0/"), path
        segments = [unquote(s) for s in path[len("/v1.0/"):].split("/")]
        self.seen.append(Seen(raw_path, segments, query, dict(request.headers)))
        if self.failures:
            status, headers, body = self.failures.pop(0)
            return web.json_response(body, status=status, headers=headers)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _graph_error(401, "InvalidAuthenticationToken", "Access token validation failure.")
        user_select = query.get("$select") == USER_SELECT
        match segments:
            case ["users"]:
                return self._users_by_mail(query)
            case [single] if (literal := re.fullmatch(r"users\('((?:[^']|'')*)'\)", single)):
                return self._user(literal[1].replace("''", "'"), user_select)
            case ["users", key]:
                return self._user(key, user_select)
            case ["users", key, "manager"]:
                manager = MANAGERS.get(key.lower())
                if key.lower() not in USERS or manager is None:
                    return _graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
                return web.json_response(manager)
            case ["users", key, "transitiveMemberOf", "microsoft.graph.group"]:
                if refusal := self._advanced_query_refusal(request, query):
                    return refusal
                if key.lower() not in USERS:
                    return _graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")
                groups = [{"id": g, "displayName": GROUPS[g][0]} for g in sorted(GROUPS) if key.lower() in _flatten(g)]
                return self._page(request, path, query, groups, self.memberof_page_size)
            case ["groups", group, "transitiveMembers", "microsoft.graph.user"]:
                if refusal := self._advanced_query_refusal(request, query):
                    return refusal
                if group.lower() not in GROUPS:
                    return _graph_error(404, "Request_ResourceNotFound", f"Resource '{group}' does not exist.")
                members = [USERS[u] for u in sorted(_flatten(group.lower()))]
                return self._page(request, path, query, members, self.member_page_size)
        return _graph_error(400, "BadRequest", f"the stand-in does not serve {path}")

    def _user(self, key: str, user_select: bool) -> web.Response:
        if not user_select:
            return _graph_error(400, "BadRequest", "the directory always sends $select")
        wanted = key.lower()
        for user in USERS.values():
            if wanted in (user["id"], user["userPrincipalName"].lower()):
                return web.json_response(user)
        return _graph_error(404, "Request_ResourceNotFound", f"Resource '{key}' does not exist.")

    def _users_by_mail(self, query: dict[str, str]) -> web.Response:
        literal = re.fullmatch(r"mail eq '((?:[^']|'')*)'", query.get("$filter", ""))
        if literal is None:
            return _graph_error(400, "Request_UnsupportedQuery", "Unsupported query.")
        mail = literal[1].replace("''", "'").lower()
        found = [u for u in USERS.values() if (u["mail"] or "").lower() == mail]
        return web.json_response({"@odata.context": "$metadata#users", "value": found})

    @staticmethod
    def _advanced_query_refusal(request: web.Request, query: dict[str, str]) -> web.Response | None:
        """Graph's rule: an OData cast on a transitive list is an advanced query."""
        if request.headers.get("ConsistencyLevel") != "eventual" or query.get("$count") != "true":
            return _graph_error(400, "Request_UnsupportedQuery",
                                "OData cast needs ConsistencyLevel: eventual and $count=true.")
        return None

    def _page(self, request: web.Request, path: str, query: dict[str, str], items: list[dict[str, Any]],
              size: int) -> web.Response:
        start = int(query.get("$skiptoken", "0"))
        body: dict[str, Any] = {"@odata.count": len(items), "value": items[start:start + size]}
        if start + size < len(items):
            rest = "&".join(f"{k}={v}" for k, v in parse_qsl(request.query_string) if k != "$skiptoken")
            host = "graph.invalid" if self.foreign_next_link else request.host
            body["@odata.nextLink"] = f"http://{host}{path}?{rest}&$skiptoken={start + size}"
        return web.json_response(body)


@pytest.fixture
async def graph() -> AsyncIterator[GraphStandIn]:
    """A local aiohttp PROTOCOL STAND-IN for Microsoft Graph v1.0, on 127.0.0.1 (the real Graph
    cannot be reached from here); it records every request it receives."""
    stand_in = GraphStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def directory(graph: GraphStandIn, clock: Clock) -> AsyncIterator[GraphDirectory]:
    d = GraphDirectory(graph.base_url, ROLE_GROUPS, 300, graph.token_provider, clock=clock)
    yield d
    await d.close()


# -- people ------------------------------------------------------------------------------------------
async def test_is_a_directory_and_sends_the_bearer_token(directory: GraphDirectory, graph: GraphStandIn) -> None:
    assert isinstance(directory, Directory)
    assert await directory.person(AMY) is not None
    assert graph.seen, "no request reached the stand-in"
    assert all(s.headers.get("Authorization") == f"Bearer {graph.token}" for s in graph.seen)


async def test_person_by_object_id(directory: GraphDirectory, graph: GraphStandIn) -> None:
    amy = await directory.person(AMY.upper())
    assert amy == Person(id=AMY, email="amy@contoso.example", display_name="Amy Adams", roles=("managers",),
                         manager=MONA, aliases=("amy.adams@contoso.example",))
    assert graph.paths()[0] == f"/v1.0/users/{AMY.upper()}?$select={USER_SELECT}"


async def test_person_by_user_principal_name(directory: GraphDirectory, graph: GraphStandIn) -> None:
    amy = await directory.person("  Amy.Adams@Contoso.example ")
    assert amy is not None and amy.id == AMY
    assert graph.paths()[0] == f"/v1.0/users/Amy.Adams@Contoso.example?$select={USER_SELECT}"


async def test_person_by_email_falls_back_to_a_mail_filter(directory: GraphDirectory, graph: GraphStandIn) -> None:
    amy = await directory.person("amy@contoso.example")
    assert amy is not None and amy.id == AMY
    by_upn, by_mail = graph.seen[0], graph.seen[1]
    assert by_upn.segments == ["users", "amy@contoso.example"]
    assert by_mail.segments == ["users"]
    assert by_mail.query == {"$filter": "mail eq 'amy@contoso.example'", "$select": USER_SELECT}


async def test_unknown_people_are_none(directory: GraphDirectory, graph: GraphStandIn) -> None:
    assert await directory.person(NOBODY) is None
    assert await directory.person("nobody@contoso.example") is None
    assert await directory.person("") is None
    before = len(graph.seen)
    assert await directory.person("rita") is None  # neither an object id nor an address: no request
    assert len(graph.seen) == before


async def test_two_users_with_one_address_are_refused(directory: GraphDirectory) -> None:
    with pytest.raises(DirectoryError, match=r"2 users .* 'shared@contoso\.example'"):
        await directory.person("shared@contoso.example")


async def test_upn_and_email_are_aliases_of_one_person(directory: GraphDirectory) -> None:
    kevin = await directory.person(KEVIN)
    assert kevin is not None
    assert kevin.email == "kevin@contoso.example" and kevin.aliases == ("kevin.o'brien@contoso.example",)
    svc = await directory.person(SVC)
    assert svc is not None and svc.email is None and svc.aliases == ("$svc@contoso.example",)


# -- roles and members ---------------------------------------------------------------------------------
async def test_roles_come_from_transitive_group_membership_across_pages(
    directory: GraphDirectory, graph: GraphStandIn
) -> None:
    mona = await directory.person(MONA)
    assert mona is not None and mona.roles == ("managers", "finance-managers")
    fiona = await directory.person(FIONA)  # finance through the nested "Finance team" group
    assert fiona is not None and fiona.roles == ("finance",)
    amy = await directory.person(AMY)  # managers through "Team leads"; "Social club" maps to no role
    assert amy is not None and amy.roles == ("managers",)
    pages = [s for s in graph.seen if s.segments == ["users", AMY, "transitiveMemberOf", "microsoft.graph.group"]]
    assert len(pages) == 3, "Amy's three groups come one per page: @odata.nextLink must be followed"
    assert pages[0].query == {"$select": "id,displayName", "$top": "999", "$count": "true"}
    assert [p.query.get("$skiptoken") for p in pages] == [None, "1", "2"]
    assert all(p.headers.get("ConsistencyLevel") == "eventual" for p in pages)


async def test_members_of_a_role_across_pages(directory: GraphDirectory, graph: GraphStandIn) -> None:
    finance = await directory.members(" FINANCE ")
    assert sorted(p.id for p in finance) == sorted([FAY, FRED, FIONA])
    assert all(p.email and p.roles == ("finance",) for p in finance)
    pages = [s for s in graph.seen if s.segments[:1] == ["groups"]]
    assert [p.segments for p in pages] == [["groups", FINANCE_G, "transitiveMembers", "microsoft.graph.user"]] * 2
    assert pages[0].query == {"$select": USER_SELECT, "$top": "999", "$count": "true"}
    assert pages[1].query["$skiptoken"] == "2"


async def test_members_of_unmapped_empty_and_missing_groups(directory: GraphDirectory, graph: GraphStandIn) -> None:
    assert await directory.members("reviewers") == []
    assert not graph.seen, "a role without a group needs no request"
    assert await directory.members("admins") == []
    with pytest.raises(DirectoryError, match=f"role 'ghost' to group {GHOST_G}"):
        await directory.members("ghost")


async def test_no_role_groups_means_no_membership_requests(graph: GraphStandIn) -> None:
    d = GraphDirectory(graph.base_url, (), 300, graph.token_provider)
    try:
        amy = await d.person(AMY)
        assert amy is not None and amy.roles == () and amy.manager == MONA
        assert not any("transitiveMemberOf" in s.segments for s in graph.seen)
    finally:
        await d.close()


# -- managers -------------------------------------------------------------------------------------------
async def test_manager_of(directory: GraphDirectory, graph: GraphStandIn) -> None:
    boss = await directory.manager_of(AMY)
    assert boss is not None and boss.id == MONA and boss.email == "mona@contoso.example"
    assert f"/v1.0/users/{AMY}/manager?$select=id" in graph.paths()
    assert await directory.manager_of(MONA) is None  # Graph answers 404: no manager
    assert await directory.manager_of("amy@contoso.example") == boss
    assert await directory.manager_of(NOBODY) is None


async def test_a_contact_as_manager_is_no_manager(directory: GraphDirectory) -> None:
    cora = await directory.person(CORA)
    assert cora is not None and cora.manager is None
    assert await directory.manager_of(CORA) is None


# -- caching --------------------------------------------------------------------------------------------
async def test_lookups_within_the_ttl_make_no_request(
    directory: GraphDirectory, graph: GraphStandIn, clock: Clock
) -> None:
    amy = await directory.person(AMY)
    await directory.members("finance")
    assert await directory.person(NOBODY) is None
    count = len(graph.seen)
    assert await directory.person(AMY) == amy
    assert await directory.person("AMY@contoso.example") == amy  # cached under her e-mail too
    assert await directory.person("amy.adams@contoso.example") == amy  # and her UPN
    assert await directory.person(NOBODY) is None  # "unknown" is cached as well
    assert len(await directory.members("finance")) == 3
    assert len(graph.seen) == count, "a second lookup within the TTL reached Graph"

    clock.now += 301
    assert await directory.person(AMY) == amy
    assert len(graph.seen) > count, "an expired entry must be read again"


async def test_cache_seconds_zero_disables_the_cache(graph: GraphStandIn) -> None:
    d = GraphDirectory(graph.base_url, ROLE_GROUPS, 0, graph.token_provider)
    try:
        await d.person(MONA)
        count = len(graph.seen)
        await d.person(MONA)
        assert len(graph.seen) == 2 * count
    finally:
        await d.close()


async def test_the_cache_is_bounded(graph: GraphStandIn) -> None:
    d = GraphDirectory(graph.base_url, (), 300, graph.token_provider, cache_size=3)
    try:
        for uid in (MONA, AMY, FAY, FRED, FIONA):
            await d.person(uid)
        assert len(d._people) == 3
    finally:
        await d.close()


# -- failures -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "code"), [(429, "TooManyRequests"), (503, "ServiceUnavailable")])
async def test_throttling_becomes_a_directory_error_without_the_token(
    directory: GraphDirectory, graph: GraphStandIn, status: int, code: str
) -> None:
    graph.fail_next(status, code, "Please retry later.", {"Retry-After": "30"})
    with pytest.raises(DirectoryError) as caught:
        await directory.person(AMY)
    message = str(caught.value)
    assert str(status) in message and code in message and "retry after 30 s" in message
    assert graph.token not in message and "Bearer" not in message
    assert len(graph.seen) == 1, "a 30 s Retry-After is reported, not slept through"


async def test_a_short_retry_after_is_retried_once(directory: GraphDirectory, graph: GraphStandIn) -> None:
    graph.fail_next(429, "TooManyRequests", "Slow down.", {"Retry-After": "0"})
    amy = await directory.person(AMY)
    assert amy is not None and amy.id == AMY
    assert graph.seen[0].raw_path == graph.seen[1].raw_path


async def test_a_refusal_names_the_permissions(directory: GraphDirectory, graph: GraphStandIn) -> None:
    graph.fail_next(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    with pytest.raises(DirectoryError) as caught:
        await directory.person(AMY)
    message = str(caught.value)
    assert "403 Authorization_RequestDenied" in message
    assert all(p in message for p in GRAPH_APPLICATION_PERMISSIONS)
    assert graph.token not in message


async def test_a_wrong_token_is_refused(graph: GraphStandIn) -> None:
    async def wrong() -> str:
        return "not-the-token"

    d = GraphDirectory(graph.base_url, ROLE_GROUPS, 300, wrong)
    try:
        with pytest.raises(DirectoryError, match="401 InvalidAuthenticationToken") as caught:
            await d.person(AMY)
        assert "not-the-token" not in str(caught.value)
    finally:
        await d.close()


async def test_a_token_failure_is_a_directory_error(graph: GraphStandIn) -> None:
    async def broken() -> str:
        raise RuntimeError("no managed identity endpoint")

    d = GraphDirectory(graph.base_url, ROLE_GROUPS, 300, broken)
    try:
        with pytest.raises(DirectoryError, match=r"could not get a Microsoft Graph token .*no managed identity"):
            await d.person(AMY)
        assert not graph.seen
    finally:
        await d.close()


async def test_an_unreachable_graph_is_a_directory_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "secret-" + secrets.token_hex(8)

    async def provider() -> str:
        return token

    d = GraphDirectory(f"http://127.0.0.1:{port}/v1.0", ROLE_GROUPS, 300, provider, timeout=2)
    try:
        with pytest.raises(DirectoryError, match="could not be reached") as caught:
            await d.person(AMY)
        assert token not in str(caught.value)
    finally:
        await d.close()


async def test_a_next_link_to_another_host_is_not_followed(directory: GraphDirectory, graph: GraphStandIn) -> None:
    graph.foreign_next_link = True
    with pytest.raises(DirectoryError, match="another host"):
        await directory.members("finance")
    assert len(graph.seen) == 1


# -- escaping ---------------------------------------------------------------------------------------------
async def test_a_quote_in_a_user_principal_name_is_percent_encoded(
    directory: GraphDirectory, graph: GraphStandIn
) -> None:
    kevin = await directory.person("kevin.o'brien@contoso.example")
    assert kevin is not None and kevin.id == KEVIN
    assert graph.paths()[0] == f"/v1.0/users/kevin.o%27brien@contoso.example?$select={USER_SELECT}"


async def test_a_slash_is_encoded_in_the_path_and_the_filter(directory: GraphDirectory, graph: GraphStandIn) -> None:
    ops = await directory.person("ops/eu@contoso.example")
    assert ops is not None and ops.id == OPS
    by_upn, by_mail = graph.seen[0], graph.seen[1]
    assert by_upn.raw_path == f"/v1.0/users/ops%2Feu@contoso.example?$select={USER_SELECT}"
    assert by_mail.raw_path.startswith("/v1.0/users?$filter=mail%20eq%20%27ops%2Feu%40contoso.example%27&")
    assert by_mail.query["$filter"] == "mail eq 'ops/eu@contoso.example'"


async def test_a_quote_in_an_email_is_doubled_in_the_filter(directory: GraphDirectory, graph: GraphStandIn) -> None:
    pat = await directory.person("pat.o'neil@contoso.example")
    assert pat is not None and pat.id == PAT
    assert graph.seen[1].query["$filter"] == "mail eq 'pat.o''neil@contoso.example'"
    assert "'" not in graph.seen[1].raw_path, "quotes travel percent-encoded"


async def test_a_filter_injection_stays_inside_the_literal(directory: GraphDirectory, graph: GraphStandIn) -> None:
    sneaky = "x@y' or mail eq 'amy@contoso.example"
    assert await directory.person(sneaky) is None
    assert graph.seen[1].query["$filter"] == "mail eq 'x@y'' or mail eq ''amy@contoso.example'"
    assert graph.seen[0].segments == ["users", sneaky]


async def test_a_dollar_upn_uses_the_key_form(directory: GraphDirectory, graph: GraphStandIn) -> None:
    svc = await directory.person("$svc@contoso.example")
    assert svc is not None and svc.id == SVC
    assert graph.paths()[0] == f"/v1.0/users('$svc@contoso.example')?$select={USER_SELECT}"


def test_odata_string_literals() -> None:
    assert odata_string("o'brien") == "'o''brien'"
    assert odata_string("''") == "''''''"


# -- configuration ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base_url", "groups", "message"),
    [
        ("http://graph.microsoft.com/v1.0", (), "must use https"),
        ("graph.microsoft.com", (), "must be an https URL"),
        ("https://graph.microsoft.com/v1.0", (("finance", "Finance Team"),), "group object id"),
        ("https://graph.microsoft.com/v1.0", (("finance", FINANCE_G), ("finance", ADMINS_G)), "two groups"),
    ],
)
async def test_bad_configuration_is_refused(base_url: str, groups: tuple[tuple[str, str], ...], message: str) -> None:
    async def token() -> str:
        return "t"

    with pytest.raises(DirectoryError, match=message):
        GraphDirectory(base_url, groups, 300, token)


def test_graph_scope() -> None:
    assert graph_scope("https://graph.microsoft.com/v1.0") == "https://graph.microsoft.com/.default"
    assert graph_scope("https://graph.microsoft.us/v1.0/") == "https://graph.microsoft.us/.default"


async def test_directory_from_settings_wires_the_managed_identity(graph: GraphStandIn) -> None:
    settings = Settings.from_env({
        "HITL_DIRECTORY": "graph",
        "HITL_GRAPH_ROLE_GROUPS": f"Finance={FINANCE_G},admins={ADMINS_G}",
        "HITL_GRAPH_BASE_URL": graph.base_url,
        "HITL_DIRECTORY_CACHE_SECONDS": "60",
    })
    d = directory_from_settings(settings)
    assert isinstance(d, GraphDirectory)
    assert d.role_groups == {"finance": FINANCE_G, "admins": ADMINS_G}
    await d.close()
    await d.close()  # idempotent
    with pytest.raises(DirectoryError, match="closed"):
        await d.person(AMY)


async def test_from_settings_asks_the_credential_for_a_graph_token(
    graph: GraphStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The managed identity's token (here a fake credential's) is what reaches Graph, for Graph's scope."""
    scopes: list[str] = []
    closed: list[bool] = []

    class FakeCredential:
        async def get_token(self, *wanted: str) -> Any:
            scopes.extend(wanted)
            return type("AccessToken", (), {"token": graph.token, "expires_on": 0})()

        async def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr("azure.identity.aio.DefaultAzureCredential", FakeCredential)
    settings = Settings.from_env({"HITL_DIRECTORY": "graph", "HITL_GRAPH_BASE_URL": graph.base_url})
    d = GraphDirectory.from_settings(settings)
    amy = await d.person(AMY)
    assert amy is not None and amy.id == AMY
    assert set(scopes) == {graph_scope(graph.base_url)}
    await d.close()
    assert closed == [True]
