"""Who may do what: every act is checked against a known person, their roles, and the session.

The rules (the README's authorisation table is this docstring):

==============================  ===============================================================
act                             allowed to
==============================  ===============================================================
start a session                 ``dev``: anyone (a named caller is recorded as the initiator);
                                ``easyauth``: a signed-in person, or a service principal whose
                                client id is in ``HITL_START_PRINCIPALS``
read a session, its audit       its initiator, the subject of any of its requests, every
                                approver its requests named (users, and members of named roles),
                                now or earlier, and the ``auditors`` and ``admins`` roles; anyone
                                else gets 404, as if the session did not exist
decide a request                an approver of that request (a named user, or a member of a named
                                role); a request that names nobody: any known person. Never the
                                request's subject; never the initiator when the workflow asks for
                                separation of duties
cancel a session                its initiator, or the ``admins`` role
set or end a delegation         the delegator, or the ``admins`` role (read: also the delegate,
                                ``auditors``); while it lasts the delegate decides, reads and
                                receives what the delegator would (see :mod:`hitl_core.delegation`)
the inbox                       the requests the caller may decide (also as a delegate); ``scope=all`` (every pending
                                request) only for ``admins`` and ``auditors``
==============================  ===============================================================

Identities are compared by directory id, never by spelling: ``Rita@Example.com`` and ``rita``
are the same person when the directory says so, and a user id never matches a role name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from .checkpoint.models import PendingRequest, WorkflowCheckpoint
from .directory import Directory, OpenDirectory, Person
from .workflow.request_info import ROLE_PREFIX, USER_PREFIX, split_entries

AUDITORS = "auditors"
ADMINS = "admins"
#: Session metadata key: who may read the session (users and roles ever named on it).
ACCESS_KEY = "access"


@dataclass(frozen=True)
class Caller:
    """Who is acting, as established by the host (Easy Auth principal, dev header, signed link).

    ``roles`` are the roles the *sign-in* vouches for (Easy Auth token claims; the dev header
    only when no directory is configured). ``client_id`` is set for an app-only (service
    principal) sign-in.
    """

    user: str | None = None
    roles: tuple[str, ...] = ()
    source: str | None = None
    #: The channel of the act: ``api`` (HTTP API), ``link`` (an e-mailed decision link), ``system``.
    via: str = "api"
    client_id: str | None = None
    #: What vouches for ``user``: ``easyauth`` (App Service Authentication), ``dev`` (the dev header),
    #: ``token`` (a signed decision link bound to that person), ``system``.
    auth: str = "dev"


@dataclass(frozen=True)
class Identity:
    """A caller resolved through the directory."""

    person_id: str | None
    label: str | None
    roles: frozenset[str] = field(default_factory=frozenset)
    via: str = "api"
    source: str | None = None
    client_id: str | None = None
    person: Person | None = None
    #: Set when this person acts as a delegate: the approver (directory id) they act for.
    on_behalf_of: str | None = None

    @property
    def known(self) -> bool:
        return self.person_id is not None

    def is_any(self, *roles: str) -> bool:
        return bool(self.roles & set(roles))

    def assignee_keys(self) -> list[str]:
        """The inbox keys of everything this person may decide: themselves and each role."""
        keys = [USER_PREFIX + self.person_id] if self.person_id else []
        return keys + [ROLE_PREFIX + r for r in sorted(self.roles)]


class AccessPolicy:
    """Resolves callers and approvers through the directory and answers the rules above."""

    def __init__(self, directory: Directory | None = None) -> None:
        self.directory: Directory = directory or OpenDirectory()
        #: With a real directory, roles come from it (a header cannot grant a role).
        self.directory_is_authoritative = not isinstance(self.directory, OpenDirectory)

    async def person_id(self, key: str | None) -> str | None:
        """The directory id of whoever ``key`` names (id, e-mail, alias), lower-cased; None if unknown."""
        if not key or not key.strip():
            return None
        person = await self.directory.person(key)
        return person.id.lower() if person else None

    async def identify(self, caller: Caller | None) -> Identity:
        if caller is None:
            return Identity(person_id=None, label=None, via="system")
        person = await self.directory.person(caller.user) if caller.user else None
        # Roles a sign-in vouches for: Easy Auth's token claims always; the dev header only when no
        # directory is configured (with one, a header cannot grant a role the directory does not).
        vouched = caller.auth == "easyauth" or not self.directory_is_authoritative
        roles = {r.strip().lower() for r in caller.roles if r.strip()} if vouched else set()
        if person is not None:
            roles |= set(person.roles)
        return Identity(person_id=person.id.lower() if person else None,
                        label=person.label if person else caller.user,
                        roles=frozenset(roles), via=caller.via, source=caller.source,
                        client_id=caller.client_id, person=person)

    # -- approvers ------------------------------------------------------------------------------
    async def resolve_request(self, pending: PendingRequest) -> None:
        """Canonical ``user:<directory id>`` entries and subject (unknown names stay as written)."""
        resolved: dict[str, None] = {}
        for entry in pending.approvers:
            if entry.startswith(ROLE_PREFIX):
                resolved[entry] = None
                continue
            name = entry[len(USER_PREFIX):] if entry.startswith(USER_PREFIX) else entry.lower()
            resolved[USER_PREFIX + (await self.person_id(name) or name)] = None
        pending.approvers = list(resolved)
        if pending.subject:
            pending.subject = await self.person_id(pending.subject) or pending.subject.lower()
        pending.resolved = True

    async def prepare(self, cp: WorkflowCheckpoint) -> None:
        """Resolve new requests and widen who may read the session (the engine's ``prepare`` hook)."""
        for pending in cp.pending_requests:
            if not pending.resolved:
                await self.resolve_request(pending)
        grant_access(cp, cp.pending_requests)

    # -- the rules --------------------------------------------------------------------------------
    def refusal_to_decide(self, who: Identity, pending: PendingRequest, cp: WorkflowCheckpoint) -> str | None:
        """Why ``who`` may not decide ``pending`` (None: they may)."""
        return self.barred(who, pending, cp) or self.not_approver(who, pending)

    @staticmethod
    def barred(who: Identity, pending: PendingRequest, cp: WorkflowCheckpoint) -> str | None:
        """Why ``who`` may never decide ``pending``, even for someone else: unknown, its subject, its
        initiator under separation of duties (None: not barred)."""
        if not who.known:
            return "deciding needs a known person: the caller is not signed in or not in the directory"
        name = who.label or who.person_id
        if pending.subject and pending.subject == who.person_id:
            return f"{name} is the subject of request {json.dumps(pending.call_id)} and may not decide it"
        initiator = cp.metadata.get("started_by")
        if cp.metadata.get("separation_of_duties") and initiator and str(initiator).lower() == who.person_id:
            return f"{name} started session {json.dumps(cp.session_id)} and may not approve it (separation of duties)"
        return None

    @staticmethod
    def not_approver(who: Identity, pending: PendingRequest) -> str | None:
        """Why ``who`` is not among ``pending``'s approvers (None: they are, or it names nobody)."""
        users, roles = split_entries(pending.approvers)
        if (users or roles) and who.person_id not in users and not who.roles & set(roles):
            return f"{who.label or who.person_id} is not an approver of request {json.dumps(pending.call_id)}"
        return None

    def may_read(self, who: Identity, cp: WorkflowCheckpoint) -> bool:
        if who.is_any(AUDITORS, ADMINS):
            return True
        if not who.known:
            return False
        users, roles = readers(cp)
        return who.person_id in users or bool(who.roles & roles)

    def may_cancel(self, who: Identity, cp: WorkflowCheckpoint) -> bool:
        if who.is_any(ADMINS):
            return True
        initiator = cp.metadata.get("started_by")
        return who.known and initiator is not None and str(initiator).lower() == who.person_id


def grant_access(cp: WorkflowCheckpoint, requests: Iterable[PendingRequest]) -> None:
    """Remember every approver and subject named on the session: they keep read access afterwards."""
    access = cp.metadata.setdefault(ACCESS_KEY, {"users": [], "roles": []})
    users: dict[str, None] = dict.fromkeys(access.get("users", []))
    roles: dict[str, None] = dict.fromkeys(access.get("roles", []))
    for pending in requests:
        named_users, named_roles = split_entries(pending.approvers)
        users.update(dict.fromkeys(named_users))
        roles.update(dict.fromkeys(named_roles))
        if pending.subject:
            users[pending.subject] = None
    access["users"], access["roles"] = list(users), list(roles)


def grant_reader(cp: WorkflowCheckpoint, user: str) -> None:
    """Let one more person (a delegate who acted) read the session."""
    access = cp.metadata.setdefault(ACCESS_KEY, {"users": [], "roles": []})
    if user not in access.setdefault("users", []):
        access["users"].append(user)


def readers(cp: WorkflowCheckpoint) -> tuple[set[str], set[str]]:
    """(users, roles) who may read the session, older checkpoints included."""
    access = cp.metadata.get(ACCESS_KEY) or {}
    users = {str(u) for u in access.get("users", [])}
    roles = {str(r) for r in access.get("roles", [])}
    for pending in cp.pending_requests:
        named_users, named_roles = split_entries(pending.approvers)
        users.update(named_users)
        roles.update(named_roles)
        if pending.subject:
            users.add(pending.subject)
    if cp.metadata.get("started_by"):
        users.add(str(cp.metadata["started_by"]).lower())
    return users, roles
