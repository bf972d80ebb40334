"""Settings: one declared list, parsed strictly, documented in local.settings.json.example and the README."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hitl_core.settings import SETTINGS, Settings, SettingsError, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_parse() -> None:
    settings = Settings.from_env({})
    assert settings.storage == "sqlite" and settings.auth_mode == "easyauth" and settings.port == 7071


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HITL_STORAGE": "mongo"}, "HITL_STORAGE must be one of"),
        ({"HITL_PORT": "seventy"}, "HITL_PORT must be a whole number"),
        ({"HITL_SMTP_STARTTLS": "perhaps"}, "HITL_SMTP_STARTTLS must be true or false"),
        ({"HITL_STORAGE": "redis"}, "HITL_STORAGE=redis needs HITL_REDIS_URL"),
        ({"HITL_STORAGE": "cosmos"}, "HITL_STORAGE=cosmos needs HITL_COSMOS_ENDPOINT"),
        ({"HITL_LINK_TTL_SECONDS": "0"}, "HITL_LINK_TTL_SECONDS must be at least 1"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_secrets_are_not_in_repr_and_are_listed() -> None:
    settings = Settings.from_env({"HITL_SMTP_PASSWORD": "pw-123", "HITL_LINK_SIGNING_KEYS": "k1,k2"})
    assert "pw-123" not in repr(settings) and "k1" not in repr(settings)
    assert set(settings.secrets()) == {"pw-123", "k1", "k2"}


def test_example_local_settings_document_every_setting_without_secrets() -> None:
    example = json.loads((ROOT / "local.settings.json.example").read_text())
    names = {spec.name for spec in SETTINGS}
    assert names <= set(example["Values"]) and names <= set(example["_comments"])
    for spec in SETTINGS:
        if spec.secret:
            assert example["Values"][spec.name] == "", spec.name


def test_readme_settings_table_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README table with hitl_core.settings.markdown_table()"
