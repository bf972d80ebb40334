"""Out-of-office delegation: a person hands their approvals to another person for a period.

While a delegation is active the delegate may decide (or vote on) every request the delegator
may decide, recorded as "ron for amy": the decision and the audit name ron as the actor and
amy as ``on_behalf_of``; a vote counts as amy's (amy cannot then vote herself), and amy's
notifications go to ron. The rules, all checked here:

* the delegator sets or ends their own delegation; the ``admins`` role may do it for anyone;
  the delegator, the delegate, ``admins`` and ``auditors`` may read it;
* both people must be in the directory; a delegation to oneself is refused (422), and so is one
  that would close a cycle with delegations overlapping its period (amy → ron while ron → amy:
  409). Delegations do not chain: ron's own delegate does not act for amy;
* a delegate never acts on a request they are barred from themselves: its subject, or its
  initiator when the workflow asks for separation of duties;
* a person has one delegation at a time (setting another replaces it); it ends at ``ends_at``,
  when storage forgets it (TTL).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .access import ADMINS, AUDITORS, AccessPolicy, Caller, Identity
from .checkpoint.base import DelegationStorage
from .checkpoint.models import Delegation, PendingRequest, WorkflowCheckpoint, utcnow
from .errors import ConcurrencyError, DelegationRefusedError, NotAuthorizedError
from .errors import json_text as q

logger = logging.getLogger(__name__)

#: The longest delegation one may set (a year and a day: out of office, not a permanent transfer).
MAX_DELEGATION = dt.timedelta(days=366)
#: How far a cycle check follows delegate → delegate (a chain longer than this is refused).
MAX_CHAIN = 32


class DelegationBody(BaseModel):
    """Body of ``PUT /api/delegations/{user}``."""

    model_config = ConfigDict(extra="forbid")

    delegate: str = Field(min_length=1, max_length=256, description="Who acts in the user's place (id or e-mail).")
    starts_at: dt.datetime | None = Field(default=None, description="When it begins (default: now).")
    ends_at: dt.datetime = Field(description="When it ends (exclusive); at most 366 days ahead.")
    reason: str = Field(default="", max_length=500, description="Shown to the delegate, e.g. 'on leave'.")

    @field_validator("starts_at", "ends_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone (e.g. 2026-12-24T00:00:00Z)")
        return value.astimezone(dt.UTC) if value is not None else None


class DelegationView(BaseModel):
    delegator: str
    delegate: str
    starts_at: dt.datetime
    ends_at: dt.datetime
    reason: str
    set_by: str
    set_at: dt.datetime
    active: bool

    @classmethod
    def of(cls, d: Delegation, now: dt.datetime) -> DelegationView:
        return cls(**d.model_dump(), active=d.active(now))


class DelegationsView(BaseModel):
    """``GET /api/delegations/{user}``: the user's own delegation and those made to them."""

    user: str
    delegation: DelegationView | None
    delegated_to_them: list[DelegationView]


class Delegations:
    """Sets, ends and reads delegations, and answers who may act for whom."""

    def __init__(self, storage: DelegationStorage, access: AccessPolicy) -> None:
        self.storage = storage
        self.access = access

    # -- the API ------------------------------------------------------------------------------------
    async def _person(self, key: str, what: str) -> str:
        person_id = await self.access.person_id(key)
        if person_id is None:
            raise DelegationRefusedError(f"{what} {q(key)} is not in the directory", kind="unknown_person")
        return person_id

    async def _owner(self, user: str, caller: Caller, *, reading: bool) -> tuple[str, Identity]:
        who = await self.access.identify(caller)
        delegator = await self.access.person_id(user)
        if not who.known:
            raise NotAuthorizedError("delegations need a signed-in person known to the directory")
        allowed = who.is_any(ADMINS, AUDITORS) if reading else who.is_any(ADMINS)
        if delegator is None:
            if allowed:
                raise DelegationRefusedError(f"user {q(user)} is not in the directory", kind="unknown_person")
            raise NotAuthorizedError(f"{who.label} may only manage their own delegation")
        if delegator != who.person_id and not allowed:
            if reading:
                stored = await self.storage.load_delegation(delegator)
                if stored is not None and stored.delegation.delegate == who.person_id:
                    return delegator, who
            verb = "read" if reading else "set or end"
            raise NotAuthorizedError(f"{who.label} may not {verb} the delegation of {q(user)} "
                                     "(the person themselves or the admins role may)")
        return delegator, who

    async def put(self, user: str, body: DelegationBody, caller: Caller) -> DelegationView:
        """Set (or replace) ``user``'s delegation; refused for oneself, a cycle or a bad period."""
        delegator, who = await self._owner(user, caller, reading=False)
        delegate = await self._person(body.delegate, "delegate")
        if delegate == delegator:
            raise DelegationRefusedError(f"{q(delegator)} cannot delegate to themselves", kind="self")
        now = utcnow()
        starts = body.starts_at or now
        if body.ends_at <= max(starts, now):
            raise DelegationRefusedError("ends_at must be after starts_at and in the future", kind="period")
        if body.ends_at - now > MAX_DELEGATION:
            raise DelegationRefusedError(f"a delegation lasts at most {MAX_DELEGATION.days} days", kind="period")
        delegation = Delegation(delegator=delegator, delegate=delegate, starts_at=starts, ends_at=body.ends_at,
                                reason=body.reason, set_by=who.person_id or "", set_at=now)
        await self._refuse_cycle(delegation)
        while True:
            stored = await self.storage.load_delegation(delegator)
            try:
                await self.storage.save_delegation(delegation, expected_version=stored.version if stored else None)
            except ConcurrencyError:
                continue
            logger.info("delegation set: %s -> %s until %s by %s", delegator, delegate,
                        delegation.ends_at.isoformat(), delegation.set_by)
            return DelegationView.of(delegation, now)

    async def _refuse_cycle(self, new: Delegation) -> None:
        """Follow delegate → their delegate while periods overlap; reaching the delegator is a cycle."""
        current, path = new.delegate, [new.delegator, new.delegate]
        for _ in range(MAX_CHAIN):
            stored = await self.storage.load_delegation(current)
            if stored is None:
                return
            nxt = stored.delegation
            if nxt.ends_at <= new.starts_at or nxt.starts_at >= new.ends_at:
                return
            path.append(nxt.delegate)
            if nxt.delegate == new.delegator:
                raise DelegationRefusedError("the delegation would close a cycle: " + " → ".join(path), kind="cycle")
            current = nxt.delegate
        raise DelegationRefusedError("the delegation chain is too long to check", kind="cycle")

    async def get(self, user: str, caller: Caller) -> DelegationsView:
        delegator, _ = await self._owner(user, caller, reading=True)
        now = utcnow()
        stored = await self.storage.load_delegation(delegator)
        to_them = await self.storage.list_delegations(delegate=delegator)
        return DelegationsView(user=delegator,
                               delegation=DelegationView.of(stored.delegation, now) if stored else None,
                               delegated_to_them=[DelegationView.of(d, now) for d in to_them])

    async def end(self, user: str, caller: Caller) -> DelegationsView:
        """End ``user``'s delegation now (nothing to end is not an error)."""
        delegator, who = await self._owner(user, caller, reading=False)
        if await self.storage.delete_delegation(delegator):
            logger.info("delegation of %s ended by %s", delegator, who.person_id)
        return await self.get(user, caller)

    # -- who acts for whom ----------------------------------------------------------------------
    async def delegators(self, delegate: str) -> list[str]:
        """Whoever has an active delegation to ``delegate`` (directory ids)."""
        now = utcnow()
        return [d.delegator for d in await self.storage.list_delegations(delegate=delegate) if d.active(now)]

    async def active_delegates(self) -> dict[str, str]:
        """delegator → delegate for every active delegation (one storage query)."""
        now = utcnow()
        return {d.delegator: d.delegate for d in await self.storage.list_delegations() if d.active(now)}

    async def acting_for(self, who: Identity, pending: PendingRequest, cp: WorkflowCheckpoint, *,
                         on_behalf_of: str | None = None) -> Identity | None:
        """``who`` acting as the delegate of someone who may decide ``pending`` (None: nobody).

        With ``on_behalf_of`` only that delegator is considered; otherwise the first delegator (by id)
        who may decide and has not voted yet. The identity returned keeps ``who`` as the actor and
        names the delegator in ``on_behalf_of``.
        """
        if not who.known or self.access.barred(who, pending, cp) is not None:
            return None
        wanted = await self.access.person_id(on_behalf_of) if on_behalf_of else None
        voted = {str(v.get("voter")) for v in pending.votes}
        for delegator in sorted(await self.delegators(who.person_id or "")):
            if (wanted is not None and delegator != wanted) or (wanted is None and delegator in voted):
                continue
            absent = await self.access.identify(Caller(user=delegator, auth="system", via="system"))
            if self.access.refusal_to_decide(absent, pending, cp) is None:
                return replace(who, on_behalf_of=delegator)
        return None

    async def inbox_keys(self, who: Identity) -> tuple[list[str], list[str]]:
        """(everyone ``who`` acts for, their inbox keys: each one's ``user:`` id and roles)."""
        delegators = await self.delegators(who.person_id or "")
        keys: list[str] = []
        for delegator in delegators:
            absent = await self.access.identify(Caller(user=delegator, auth="system", via="system"))
            keys.extend(absent.assignee_keys())
        return delegators, keys
