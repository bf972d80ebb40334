"""Who is who: a person, and the directory protocol every implementation answers.

Why a directory: approvers, initiators and subjects are people, not spellings. ``Rita@Example.com``,
``rita`` and Entra object id ``6f1…`` are one person; a user named ``finance`` is not the
``finance`` role; an expense's approver is the employee's manager *according to the directory*,
not whoever the initiator typed. Every identity the service compares goes through
:meth:`Directory.person` first and is compared by :attr:`Person.id`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Person(BaseModel):
    """One person as the directory knows them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="Stable id (Entra object id, or the file's id).")
    email: str | None = Field(default=None, max_length=320, description="Where notifications go.")
    display_name: str = Field(default="", max_length=256)
    roles: tuple[str, ...] = Field(default=(), description="Roles or groups, lower-case.")
    manager: str | None = Field(default=None, description="The manager's person id.")
    aliases: tuple[str, ...] = Field(default=(), description="Other names that identify the person (UPN...).")

    @property
    def label(self) -> str:
        """How the person is shown: display name, else e-mail, else id."""
        return self.display_name or self.email or self.id

    def has_role(self, role: str) -> bool:
        return role.lower() in self.roles


@runtime_checkable
class Directory(Protocol):
    """People, roles and managers. Keys are matched case-insensitively."""

    async def person(self, key: str) -> Person | None:
        """The person with this id, e-mail or alias; None if nobody is known by it."""
        ...

    async def members(self, role: str) -> list[Person]:
        """Everyone who has ``role`` (directly or through a group)."""
        ...

    async def manager_of(self, person_id: str) -> Person | None:
        """The person's manager, if the directory names one."""
        ...

    async def close(self) -> None:
        """Release connections (idempotent)."""
        ...


class DirectoryError(Exception):
    """The directory could not be read (unreachable, refused, malformed)."""
