"""A directory kept in a JSON file: for development, tests and small deployments.

Format (``HITL_DIRECTORY_FILE``)::

    {"people": [
        {"id": "amy", "email": "amy@contoso.example", "display_name": "Amy Adams",
         "roles": ["managers"], "manager": "mona", "aliases": ["amy.adams"]},
        ...
    ]}

Roles are lower-cased. A ``manager`` must be the id of another person in the file, and ids,
e-mails and aliases must be unique (case-insensitively): a file that breaks either rule is
refused at load with the offending entry named, so an ambiguous identity never reaches an
authorisation decision.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from .models import DirectoryError, Person


class _DirectoryFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    people: list[Person]


class FileDirectory:
    """An in-memory directory loaded from a JSON file (or built from people, for tests)."""

    def __init__(self, people: Iterable[Person]) -> None:
        self._by_key: dict[str, Person] = {}
        self._people: list[Person] = []
        for raw in people:
            person = raw.model_copy(update={"roles": tuple(dict.fromkeys(r.lower() for r in raw.roles))})
            for key in self._keys(person):
                other = self._by_key.get(key)
                if other is not None:
                    raise DirectoryError(f"{key!r} identifies both {other.id!r} and {person.id!r}")
                self._by_key[key] = person
            self._people.append(person)
        ids = {p.id.lower() for p in self._people}
        for person in self._people:
            if person.manager is not None and person.manager.lower() not in ids:
                raise DirectoryError(f"{person.id!r} names manager {person.manager!r}, who is not in the directory")

    @staticmethod
    def _keys(person: Person) -> list[str]:
        keys = [person.id, *(person.aliases)]
        if person.email:
            keys.append(person.email)
        return list(dict.fromkeys(k.strip().lower() for k in keys if k.strip()))

    @classmethod
    def from_path(cls, path: Path) -> FileDirectory:
        try:
            document = _DirectoryFile.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise DirectoryError(f"cannot read the directory file {path}: {exc.strerror}") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first.get("loc", ()))
            raise DirectoryError(f"{path} is not a valid directory file: {where}: {first.get('msg')}") from None
        return cls(document.people)

    @property
    def people(self) -> list[Person]:
        return list(self._people)

    async def person(self, key: str) -> Person | None:
        return self._by_key.get(key.strip().lower())

    async def members(self, role: str) -> list[Person]:
        wanted = role.strip().lower()
        return [p for p in self._people if wanted in p.roles]

    async def manager_of(self, person_id: str) -> Person | None:
        person = self._by_key.get(person_id.strip().lower())
        if person is None or person.manager is None:
            return None
        return self._by_key.get(person.manager.lower())

    async def close(self) -> None:
        """Nothing to release."""

    def to_json(self) -> str:
        return json.dumps({"people": [p.model_dump(mode="json", exclude_defaults=True) for p in self._people]},
                          indent=2)
