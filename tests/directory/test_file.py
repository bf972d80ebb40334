"""FileDirectory: the JSON directory file (development, tests, small deployments), and the demo file
that ``make run`` uses (devhost/demo-directory.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hitl_core.directory import Directory, DirectoryError, FileDirectory, Person, directory_from_settings
from hitl_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "devhost" / "demo-directory.json"

PEOPLE: list[dict[str, Any]] = [
    {"id": "mona", "email": "mona@contoso.example", "display_name": "Mona Meyer", "roles": ["Managers"]},
    {"id": "amy", "email": "Amy@Contoso.example", "display_name": "Amy Adams", "roles": ["managers", "Finance"],
     "manager": "Mona", "aliases": ["amy.adams", "AAdams@corp.example"]},
    {"id": "fay", "email": "fay@contoso.example", "roles": ["finance"], "manager": "amy"},
    {"id": "ed"},
]


def write(tmp_path: Path, document: Any, name: str = "directory.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def directory(tmp_path: Path) -> FileDirectory:
    return FileDirectory.from_path(write(tmp_path, {"people": PEOPLE}))


async def test_loads_a_file(directory: FileDirectory) -> None:
    assert isinstance(directory, Directory)
    assert [p.id for p in directory.people] == ["mona", "amy", "fay", "ed"]
    amy = await directory.person("amy")
    assert amy == Person(id="amy", email="Amy@Contoso.example", display_name="Amy Adams",
                         roles=("managers", "finance"), manager="Mona", aliases=("amy.adams", "AAdams@corp.example"))
    ed = await directory.person("ed")
    assert ed is not None and ed.label == "ed" and ed.email is None and ed.roles == ()


@pytest.mark.parametrize("key", ["amy", " AMY ", "amy@contoso.example", "AMY@CONTOSO.EXAMPLE", "Amy.Adams",
                                 "aadams@corp.example"])
async def test_lookups_are_case_insensitive_by_id_email_and_alias(directory: FileDirectory, key: str) -> None:
    person = await directory.person(key)
    assert person is not None and person.id == "amy"


async def test_unknown_keys(directory: FileDirectory) -> None:
    for key in ("rita", "", "   ", "amy@other.example", "managers"):
        assert await directory.person(key) is None


async def test_members_of_a_role(directory: FileDirectory) -> None:
    assert [p.id for p in await directory.members("managers")] == ["mona", "amy"]
    assert [p.id for p in await directory.members(" FINANCE ")] == ["amy", "fay"]
    assert await directory.members("auditors") == []


async def test_manager_of(directory: FileDirectory) -> None:
    boss = await directory.manager_of("amy")
    assert boss is not None and boss.id == "mona"  # the file says "Mona": ids match case-insensitively
    assert (await directory.manager_of("FAY@contoso.example")) == await directory.person("amy")
    assert await directory.manager_of("mona") is None  # nobody above her
    assert await directory.manager_of("rita") is None  # unknown person


@pytest.mark.parametrize(
    ("people", "message"),
    [
        ([{"id": "amy", "email": "a@x.example"}, {"id": "bob", "email": "A@X.example"}],
         r"'a@x\.example' identifies both 'amy' and 'bob'"),
        ([{"id": "amy"}, {"id": "AMY"}], "'amy' identifies both 'amy' and 'AMY'"),
        ([{"id": "amy", "aliases": ["boss"]}, {"id": "boss"}], "'boss' identifies both 'amy' and 'boss'"),
    ],
)
def test_duplicate_keys_are_refused(people: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(DirectoryError, match=message):
        FileDirectory(Person.model_validate(p) for p in people)


def test_a_manager_who_is_not_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {"people": [{"id": "amy", "manager": "mona"}, {"id": "ed"}]})
    with pytest.raises(DirectoryError, match="'amy' names manager 'mona', who is not in the directory"):
        FileDirectory.from_path(path)


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"people": [{"id": "amy"}, {"email": "nobody@x.example"}]}, "people.1.id"),
        ({"people": [{"id": "amy", "nickname": "A"}]}, "people.0.nickname"),
        ({"people": [{"id": "amy", "roles": "managers"}]}, "people.0.roles"),
        ({"persons": []}, "people"),
        ('{"people": [', ""),
    ],
)
def test_a_malformed_file_names_the_entry(tmp_path: Path, document: Any, where: str) -> None:
    path = write(tmp_path, document)
    with pytest.raises(DirectoryError, match="is not a valid directory file") as caught:
        FileDirectory.from_path(path)
    assert str(path) in str(caught.value)
    assert where in str(caught.value)


def test_a_missing_file_is_a_directory_error(tmp_path: Path) -> None:
    with pytest.raises(DirectoryError, match="cannot read the directory file"):
        FileDirectory.from_path(tmp_path / "absent.json")


async def test_round_trip_through_json(directory: FileDirectory, tmp_path: Path) -> None:
    again = FileDirectory.from_path(write(tmp_path, directory.to_json(), "copy.json"))
    assert again.people == directory.people


async def test_settings_select_the_file_directory(tmp_path: Path) -> None:
    path = write(tmp_path, {"people": PEOPLE})
    d = directory_from_settings(Settings.from_env({"HITL_DIRECTORY": "file", "HITL_DIRECTORY_FILE": str(path)}))
    assert isinstance(d, FileDirectory)
    assert (await d.person("amy")) is not None
    await d.close()


# -- the demo directory ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo() -> FileDirectory:
    return FileDirectory.from_path(DEMO)


def test_the_demo_directory_loads_and_every_manager_exists(demo: FileDirectory) -> None:
    ids = {p.id.lower() for p in demo.people}
    assert demo.people, "the demo directory is empty"
    assert all(p.manager is None or p.manager.lower() in ids for p in demo.people)
    assert any(p.manager for p in demo.people), "the expense workflow needs people with managers"


@pytest.mark.parametrize(
    ("role", "at_least"),
    [("managers", 1), ("finance", 2), ("finance-managers", 1), ("reviewers", 1), ("auditors", 1), ("admins", 1)],
)
async def test_the_demo_directory_has_every_role(demo: FileDirectory, role: str, at_least: int) -> None:
    members = await demo.members(role)
    assert len(members) >= at_least, f"{role}: {[p.id for p in members]}"
    assert all(p.email and "@" in p.email for p in members), f"{role} has members without an e-mail address"


async def test_the_demo_employees_managers_have_emails(demo: FileDirectory) -> None:
    for person in demo.people:
        if person.manager:
            boss = await demo.manager_of(person.id)
            assert boss is not None and boss.email, person.id
