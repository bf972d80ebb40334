"""The one module that reads environment variables.

Every setting the service understands is declared once in :data:`SETTINGS` (name, default,
whether it is secret, whether it only matters on a laptop, and what it is for). The README's
settings table, ``local.settings.json.example`` and the infrastructure test that compares the
code's settings with the Bicep app settings are all checked against this list, so a setting
cannot be read somewhere without being documented here.

Values are parsed into a frozen :class:`Settings` object; nothing else in the code base calls
``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

StorageKind = Literal["sqlite", "file", "memory", "redis", "cosmos"]
AuthMode = Literal["easyauth", "dev"]
DirectoryKind = Literal["none", "file", "graph"]


@dataclass(frozen=True)
class SettingSpec:
    """One environment variable: its name, default and purpose."""

    name: str
    default: str | None
    doc: str
    secret: bool = False
    local_only: bool = False


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("HITL_STORAGE", "sqlite", "Checkpoint backend: sqlite | file | memory | redis | cosmos."),
    SettingSpec("HITL_DATA_DIR", ".hitl", "Folder for SQLite/file checkpoints and local host state.",
                local_only=True),
    SettingSpec("HITL_PORT", "7071", "Port of the local host (`make run`), bound to 127.0.0.1.",
                local_only=True),
    SettingSpec("HITL_REDIS_URL", None, "redis:// or rediss:// URL (password in the URL) for HITL_STORAGE=redis.",
                secret=True),
    SettingSpec("HITL_COSMOS_ENDPOINT", None, "Cosmos DB account endpoint for HITL_STORAGE=cosmos."),
    SettingSpec("HITL_COSMOS_KEY", None, "Cosmos DB key; omit it to use managed identity (Azure default).",
                secret=True, local_only=True),
    SettingSpec("HITL_COSMOS_DATABASE", "hitl", "Cosmos DB database name."),
    SettingSpec("HITL_COSMOS_CONTAINER", "sessions", "Cosmos DB container name (partition key /session_id)."),
    SettingSpec("HITL_COSMOS_VERIFY_TLS", "true", "Verify Cosmos TLS; false only for the local stand-in.",
                local_only=True),
    SettingSpec("HITL_SESSION_TTL_SECONDS", "2592000",
                "TTL applied to completed/cancelled/failed sessions (default 30 days); 0 keeps them forever."),
    SettingSpec("HITL_AUDIT_TTL_SECONDS", "0", "TTL of audit records; 0 keeps them forever."),
    SettingSpec("HITL_RESUME_LEASE_SECONDS", "30",
                "How long a resume may hold a session before another call may finish it (crash recovery)."),
    SettingSpec("HITL_EVENTGRID_TOPIC_ENDPOINT", None,
                "Event Grid custom topic endpoint; unset publishes nowhere but the outbox."),
    SettingSpec("HITL_EVENTGRID_TOPIC_KEY", None,
                "Event Grid topic access key; omit it to use managed identity (Azure default).",
                secret=True, local_only=True),
    SettingSpec("HITL_PUBLIC_BASE_URL", "http://127.0.0.1:7071",
                "Base URL used in decision links sent to reviewers."),
    SettingSpec("HITL_AUTH_MODE", "easyauth",
                "Who is the caller: easyauth (X-MS-CLIENT-PRINCIPAL, Azure) or dev (X-HITL-User header)."),
    SettingSpec("HITL_DIRECTORY", "none",
                "Who is who (people, e-mails, roles, managers): none | file | graph (Microsoft Entra ID via "
                "Microsoft Graph, with the app's managed identity)."),
    SettingSpec("HITL_DIRECTORY_FILE", None,
                "The JSON directory file for HITL_DIRECTORY=file (`make run` uses devhost/demo-directory.json).",
                local_only=True),
    SettingSpec("HITL_GRAPH_ROLE_GROUPS", None,
                "Roles backed by Entra groups for HITL_DIRECTORY=graph: comma-separated role=group-object-id "
                "(e.g. finance=0b1c...,admins=7f2e...). App roles in a signed-in caller's token count too."),
    SettingSpec("HITL_GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0",
                "Microsoft Graph endpoint (tests point it at a local protocol stand-in).", local_only=True),
    SettingSpec("HITL_DIRECTORY_CACHE_SECONDS", "300",
                "How long a person, a role's members or a manager read from the directory is reused."),
    SettingSpec("HITL_TRUSTED_PROXY_HOPS", "1",
                "How many X-Forwarded-For entries, counted from the right, were appended by proxies you trust "
                "(App Service's front end appends one); the client address recorded is the leftmost of those."),
    SettingSpec("HITL_START_PRINCIPALS", None,
                "Under easyauth: comma-separated client ids of service principals (daemon apps) that may start "
                "sessions besides signed-in people."),
    SettingSpec("HITL_REFUSAL_AUDIT_LIMIT", "20",
                "Refused attempts audited per request per hour; more are refused without an audit record."),
    SettingSpec("HITL_CLAIM_SECONDS", "1800",
                "How long a reviewer's claim on a request lasts (they may renew it); then it lapses by itself."),
    SettingSpec("HITL_LINK_SIGNING_KEYS", None,
                "Comma-separated HMAC keys for decision links; the first signs, all verify (rotation).",
                secret=True),
    SettingSpec("HITL_LINK_TTL_SECONDS", "604800", "Lifetime of a decision link (default 7 days)."),
    SettingSpec("HITL_WEBHOOK_URL", None,
                "Notification webhook URL (JSON POST); unset or `off` disables the channel."),
    SettingSpec("HITL_WEBHOOK_SECRET", None, "HMAC-SHA256 key for the webhook signature header.",
                secret=True),
    SettingSpec("HITL_SMTP_HOST", None,
                "SMTP server for e-mail notifications; `off` disables e-mail (unset: `make run` uses its SMTP sink, "
                "Azure sends no e-mail)."),
    SettingSpec("HITL_SMTP_PORT", "587", "SMTP port."),
    SettingSpec("HITL_SMTP_USERNAME", None, "SMTP login user (optional)."),
    SettingSpec("HITL_SMTP_PASSWORD", None, "SMTP login password (optional).", secret=True),
    SettingSpec("HITL_SMTP_STARTTLS", "true", "Use STARTTLS on the SMTP connection."),
    SettingSpec("HITL_SMTP_FROM", "hitl@localhost", "Sender address of notification e-mails."),
    SettingSpec("HITL_NOTIFY_DEFAULT_RECIPIENTS", None,
                "Comma-separated e-mail addresses notified when a request names no e-mail approver."),
    SettingSpec("HITL_NOTIFY_CLAIM_LEASE_SECONDS", "30",
                "How long a notification send may hold its claim before a redelivery may send instead."),
    SettingSpec("HITL_REMINDER_INTERVAL_SECONDS", "86400", "Interval between reminders for a pending request."),
    SettingSpec("HITL_EXPENSE_MANAGER_DEADLINE_SECONDS", "172800",
                "Deadline of the expense-approval manager request."),
    SettingSpec("HITL_EXPENSE_FINANCE_DEADLINE_SECONDS", "259200",
                "Deadline of the expense-approval finance request."),
    SettingSpec("HITL_CONTRACT_DEADLINE_SECONDS", "432000",
                "Deadline of the contract-signoff legal review (it expires then)."),
)

_SPEC_BY_NAME = {spec.name: spec for spec in SETTINGS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def _raw(env: Mapping[str, str], name: str) -> str | None:
    spec = _SPEC_BY_NAME[name]
    value = env.get(name)
    if value is None or value.strip() == "":
        return spec.default
    return value.strip()


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = (_raw(env, name) or "").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _int(env: Mapping[str, str], name: str, *, minimum: int = 0) -> int:
    value = _raw(env, name) or "0"
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {number}")
    return number


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in (_raw(env, name) or "").split(",") if item.strip())


#: The explicit "switched off" value of a channel setting (an empty value means "unset": the
#: local host then fills in its own SMTP sink, so "off" is how to turn e-mail off there too).
OFF = "off"


def _switchable(env: Mapping[str, str], name: str) -> str | None:
    value = _raw(env, name)
    return None if value is not None and value.lower() == OFF else value


def notification_channels_configured(env: Mapping[str, str]) -> bool:
    """Whether ``env`` configures a notification channel (``HITL_WEBHOOK_URL`` or ``HITL_SMTP_HOST``,
    neither empty nor ``off``), as :class:`Settings` reads them. It never raises: the app asks it at
    import time, where an error would leave the Functions host with no functions at all."""
    return any(_switchable(env, name) for name in ("HITL_WEBHOOK_URL", "HITL_SMTP_HOST"))


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = _raw(env, name)
    return Path(value) if value else None


def _pairs(env: Mapping[str, str], name: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in _list(env, name):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SettingsError(f"{name} must be comma-separated name=value pairs, got {item!r}")
        pairs.append((key.strip().lower(), value.strip()))
    return tuple(pairs)


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = (_raw(env, name) or "").lower()
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Parsed, validated settings. Build with :meth:`from_env`."""

    storage: StorageKind = "sqlite"
    data_dir: Path = Path(".hitl")
    port: int = 7071
    redis_url: str | None = None
    cosmos_endpoint: str | None = None
    cosmos_key: str | None = field(default=None, repr=False)
    cosmos_database: str = "hitl"
    cosmos_container: str = "sessions"
    cosmos_verify_tls: bool = True
    session_ttl_seconds: int = 2592000
    audit_ttl_seconds: int = 0
    resume_lease_seconds: int = 30
    eventgrid_topic_endpoint: str | None = None
    eventgrid_topic_key: str | None = field(default=None, repr=False)
    public_base_url: str = "http://127.0.0.1:7071"
    auth_mode: AuthMode = "easyauth"
    directory: DirectoryKind = "none"
    directory_file: Path | None = None
    graph_role_groups: tuple[tuple[str, str], ...] = ()
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    directory_cache_seconds: int = 300
    trusted_proxy_hops: int = 1
    start_principals: tuple[str, ...] = ()
    refusal_audit_limit: int = 20
    claim_seconds: int = 1800
    link_signing_keys: tuple[str, ...] = field(default=(), repr=False)
    link_ttl_seconds: int = 604800
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_starttls: bool = True
    smtp_from: str = "hitl@localhost"
    notify_default_recipients: tuple[str, ...] = ()
    notify_claim_lease_seconds: int = 30
    reminder_interval_seconds: int = 86400
    expense_manager_deadline_seconds: int = 172800
    expense_finance_deadline_seconds: int = 259200
    contract_deadline_seconds: int = 432000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every ``HITL_`` setting from ``env`` (default: the process environment)."""
        source: Mapping[str, str] = os.environ if env is None else env
        storage = _choice(source, "HITL_STORAGE", ("sqlite", "file", "memory", "redis", "cosmos"))
        settings = cls(
            storage=storage,  # type: ignore[arg-type]
            data_dir=Path(_raw(source, "HITL_DATA_DIR") or ".hitl"),
            port=_int(source, "HITL_PORT", minimum=1),
            redis_url=_raw(source, "HITL_REDIS_URL"),
            cosmos_endpoint=_raw(source, "HITL_COSMOS_ENDPOINT"),
            cosmos_key=_raw(source, "HITL_COSMOS_KEY"),
            cosmos_database=_raw(source, "HITL_COSMOS_DATABASE") or "hitl",
            cosmos_container=_raw(source, "HITL_COSMOS_CONTAINER") or "sessions",
            cosmos_verify_tls=_bool(source, "HITL_COSMOS_VERIFY_TLS"),
            session_ttl_seconds=_int(source, "HITL_SESSION_TTL_SECONDS"),
            audit_ttl_seconds=_int(source, "HITL_AUDIT_TTL_SECONDS"),
            resume_lease_seconds=_int(source, "HITL_RESUME_LEASE_SECONDS", minimum=1),
            eventgrid_topic_endpoint=_raw(source, "HITL_EVENTGRID_TOPIC_ENDPOINT"),
            eventgrid_topic_key=_raw(source, "HITL_EVENTGRID_TOPIC_KEY"),
            public_base_url=(_raw(source, "HITL_PUBLIC_BASE_URL") or "").rstrip("/"),
            auth_mode=_choice(source, "HITL_AUTH_MODE", ("easyauth", "dev")),  # type: ignore[arg-type]
            directory=_choice(source, "HITL_DIRECTORY", ("none", "file", "graph")),  # type: ignore[arg-type]
            directory_file=_path(source, "HITL_DIRECTORY_FILE"),
            graph_role_groups=_pairs(source, "HITL_GRAPH_ROLE_GROUPS"),
            graph_base_url=(_raw(source, "HITL_GRAPH_BASE_URL") or "").rstrip("/"),
            directory_cache_seconds=_int(source, "HITL_DIRECTORY_CACHE_SECONDS"),
            trusted_proxy_hops=_int(source, "HITL_TRUSTED_PROXY_HOPS"),
            start_principals=_list(source, "HITL_START_PRINCIPALS"),
            refusal_audit_limit=_int(source, "HITL_REFUSAL_AUDIT_LIMIT"),
            claim_seconds=_int(source, "HITL_CLAIM_SECONDS", minimum=1),
            link_signing_keys=_list(source, "HITL_LINK_SIGNING_KEYS"),
            link_ttl_seconds=_int(source, "HITL_LINK_TTL_SECONDS", minimum=1),
            webhook_url=_switchable(source, "HITL_WEBHOOK_URL"),
            webhook_secret=_raw(source, "HITL_WEBHOOK_SECRET"),
            smtp_host=_switchable(source, "HITL_SMTP_HOST"),
            smtp_port=_int(source, "HITL_SMTP_PORT", minimum=1),
            smtp_username=_raw(source, "HITL_SMTP_USERNAME"),
            smtp_password=_raw(source, "HITL_SMTP_PASSWORD"),
            smtp_starttls=_bool(source, "HITL_SMTP_STARTTLS"),
            smtp_from=_raw(source, "HITL_SMTP_FROM") or "hitl@localhost",
            notify_default_recipients=_list(source, "HITL_NOTIFY_DEFAULT_RECIPIENTS"),
            notify_claim_lease_seconds=_int(source, "HITL_NOTIFY_CLAIM_LEASE_SECONDS", minimum=1),
            reminder_interval_seconds=_int(source, "HITL_REMINDER_INTERVAL_SECONDS", minimum=1),
            expense_manager_deadline_seconds=_int(source, "HITL_EXPENSE_MANAGER_DEADLINE_SECONDS", minimum=1),
            expense_finance_deadline_seconds=_int(source, "HITL_EXPENSE_FINANCE_DEADLINE_SECONDS", minimum=1),
            contract_deadline_seconds=_int(source, "HITL_CONTRACT_DEADLINE_SECONDS", minimum=1),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject combinations that cannot work, naming the missing variable."""
        if self.storage == "redis" and not self.redis_url:
            raise SettingsError("HITL_STORAGE=redis needs HITL_REDIS_URL")
        if self.storage == "cosmos" and not self.cosmos_endpoint:
            raise SettingsError("HITL_STORAGE=cosmos needs HITL_COSMOS_ENDPOINT")
        if self.directory == "file" and self.directory_file is None:
            raise SettingsError("HITL_DIRECTORY=file needs HITL_DIRECTORY_FILE")

    def secrets(self) -> tuple[str, ...]:
        """Every configured secret value, so tests and log filters can look for leaks."""
        values = [self.cosmos_key, self.eventgrid_topic_key, self.webhook_secret, self.smtp_password]
        values.extend(self.link_signing_keys)
        if self.redis_url and "@" in self.redis_url:
            values.append(self.redis_url)
        return tuple(v for v in values if v)


def setting_names() -> frozenset[str]:
    """All environment variable names the service reads."""
    return frozenset(_SPEC_BY_NAME)


def markdown_table() -> str:
    """The README's settings table (the README test checks it is current)."""
    rows = ["| variable | default | what it is |", "|---|---|---|"]
    for spec in SETTINGS:
        flags = [flag for flag, on in (("secret", spec.secret), ("local only", spec.local_only)) if on]
        extra = f" *({', '.join(flags)})*" if flags else ""
        default = f"`{spec.default}`" if spec.default else "—"
        rows.append(f"| `{spec.name}` | {default} | {spec.doc}{extra} |")
    return "\n".join(rows)
