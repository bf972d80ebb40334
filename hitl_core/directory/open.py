"""The directory used when none is configured (``HITL_DIRECTORY=none``).

It knows nobody in advance: a person is whoever signs in, identified by the name they sign in
with (lower-cased), their e-mail is that name when it is an address, and roles come only from the
caller's sign-in (the token's role claims under Easy Auth, ``X-HITL-Roles`` in dev mode).
Role members and managers are unknown, so a workflow that needs them (``expense-approval``'s
manager) refuses to start and says which setting to configure.
"""

from __future__ import annotations

import re

from .models import Person

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_NAME = 256


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        return False
    return True


class OpenDirectory:
    """Everybody is a person named by their sign-in name; no roles, members or managers are known."""

    async def person(self, key: str) -> Person | None:
        name = key.strip().lower()
        if not name or len(name) > MAX_NAME or not _encodable(name):
            return None  # not a name anyone signs in with: nobody
        return Person(id=name, email=name if _EMAIL.match(name) else None, display_name=key.strip())

    async def members(self, role: str) -> list[Person]:
        return []

    async def manager_of(self, person_id: str) -> Person | None:
        return None

    async def close(self) -> None:
        """Nothing to release."""
