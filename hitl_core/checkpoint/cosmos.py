"""CosmosDBCheckpointStorage: sessions in one Azure Cosmos DB (NoSQL API) container, async SDK.

Data model, designed for cost
-----------------------------
One container, partitioned by ``/session_id`` (layout in :mod:`.cosmos_layout`, mirrored in Bicep).
Every document of a session lives in its partition:

* the **session document** (``kind: "session"``, ``id`` = the session id, escaped where Cosmos
  forbids a character) holds the whole checkpoint — state, pending requests, decisions, outbox —
  plus the few top-level fields the queries read: ``workflow``, ``status``, ``updated_at``,
  ``expires_at``, ``participants`` (:func:`~hitl_core.checkpoint.base.participants`: who took part,
  for ``list_sessions(participant=...)``) and, while requests are pending,
  ``inbox_oldest_created_at``, ``inbox_newest_created_at``, ``assignees`` (every approver of a
  pending request), ``inbox_index`` (one small object per pending request: its ``inbox_order``,
  ``approvers`` and, while it is claimed, ``claimed_by`` and ``claimed_until`` as a sort stamp — what
  the ``claimed_by`` / ``due_before`` filters and the inbox count query) and ``inbox`` (the pending
  requests again, so the inbox query never reads the checkpoint);
* **audit documents** (``kind: "audit"``), one per record, written in the same call as the
  checkpoint that caused them, with their own TTL (none by default), so they outlive the session.

Out-of-office **delegations** (``kind: "delegation"``, one per delegator) all live in ONE fixed
logical partition, :data:`DELEGATIONS_PARTITION` (``"~delegations"``: ``~`` is outside the session
id alphabet, so no session shares it), so that listing them is a single-partition query, never a
fan-out. A delegation document holds ``delegator``, ``delegate``, ``expires_at`` (its ``ends_at``,
in epoch seconds), a ``ttl`` that makes Cosmos delete it when it ends, and the delegation itself as
JSON text. Loading one is a point read; saving is a create (none may exist) or a replace with
``If-Match`` (its version is ``<etag>~<ends_at>``, the form of a session with a TTL, so a version
of an ended delegation is refused without a read); listing is
``SELECT VALUE c.delegation ... WHERE c.kind = 'delegation' AND c.expires_at > @now
[AND c.delegate = @delegate]`` in that partition, sorted by delegator here.

The checkpoint, the inbox entries and the audit records are stored as JSON *text* inside the
document, not as nested JSON: Cosmos DB (and the JavaScript tooling around it) reads numbers as
IEEE doubles, so an integer above 2**53 in workflow state would silently change. Text keeps every
value exact and saves a parse/re-serialise on each write; only the fields above are queried.

A start is one ``create``; a resume is one point read (``load``) and one conditional replace
(``If-Match: <etag>``) — with audit records, the replace and the audit creates travel in one
transactional batch instead (still one round trip, atomic). Nothing on that path queries.

Why the inbox reads session documents, not per-request documents
----------------------------------------------------------------
Per-request index documents would make the inbox a plain ``ORDER BY created_at`` query, but every
save would then have to delete and recreate them: a resume would become a batch of several
operations and pay for several writes, on the path that runs for every decision. The inbox is
read far less often than sessions are written, so the cost goes there instead: the inbox query
selects the session documents holding at least one pending request not older than the page's
keyset (``inbox_newest_created_at >= after``), ordered by their *oldest* pending request, and
projects only ``inbox``. (The ``inbox_*_created_at`` fields hold each request's inbox order key,
:func:`~hitl_core.checkpoint.base.inbox_order`: deadline, then creation time; the names stay for the
index policy's sake.) Python flattens those into rows and merges them in the reference order
``(inbox order, session_id, call_id)``; it stops reading as soon as the next session's oldest
request is newer than the page's last row (nothing after it can sort earlier), so it reads few
documents beyond the page — sessions rarely hold more than a couple of pending requests. The
continuation token is the keyset of the page's last row (the token the SQLite backend issues),
not an SDK continuation: it stays valid across deployments and costs nothing to resume.

The filters narrow the sessions in the query and every request read is checked again here
(:func:`~hitl_core.checkpoint.base.inbox_matches`): ``due_before`` is
``c.inbox_oldest_created_at < @due`` (a session's earliest order key is below the bound exactly when
one of its requests is due); ``claimed_by`` is an ``EXISTS`` over ``inbox_index`` for a request
that person holds a claim on whose ``claimed_until`` stamp is after the stamp of the storage's clock
(a claim runs out without a write, so the clock is a query parameter, never stored).
``count_pending_requests`` is one aggregate, ``SELECT VALUE COUNT(1) FROM c JOIN r IN
c.inbox_index WHERE ...``, with the request filters on ``r`` and expiry on ``c.expires_at``: only
the number comes back.

Documents written by the previous version (without ``participants`` and ``inbox_index``) still
load, save and list in the inbox (filtered here from ``inbox``), but until they are next saved they
are absent from participant listings, from ``claimed_by`` listings and from counts.

TTL
---
The container's ``defaultTtl`` is -1: nothing expires unless it carries its own ``ttl``. A save
with ``ttl_seconds`` (the engine passes it for finished sessions) sets ``ttl`` on the session
document; audit documents get ``audit_ttl_seconds`` (None: kept forever). The session document
also records ``expires_at`` on the storage's clock, which ``load`` and the queries honour, so
expiry is exact before Cosmos' background deletion too (and on the local stand-in, which never
deletes). A session with a TTL has the version ``<etag>~<expires_at>``, so a save can refuse an
expired session without reading it first; a live session's version is its bare ``_etag``.

Errors
------
SDK errors become the project's error tree here: 404/409/412 on a write are a
:class:`ConcurrencyError` (never retried: the caller must reload), 429 after the SDK's own
throttling retries is :class:`StorageUnavailableError` carrying ``x-ms-retry-after-ms`` as
``retry_after``, and 408/5xx, time-outs and connection failures are :class:`StorageUnavailableError`
too. Retries of 429 and transient failures are the SDK's policy (tune it with the client's
``retry_*`` options); this class never retries a conflict.

Size
----
Like every backend, a checkpoint whose JSON exceeds ``max_document_bytes`` (default 2,000,000
UTF-8 bytes) is refused with :class:`CheckpointTooLargeError` before anything is sent. The whole
document — checkpoint text as Cosmos stores it (escaped), inbox copy, envelope — is checked as well
against Cosmos' real item limit (2 MiB less room for system properties), so a write that Cosmos
would reject fails first, with the session's name and the document's size.

Local stand-in (``stand_in=True``)
----------------------------------
npm ``@vercel/cosmosdb-server`` answers a read of a missing item with 500 and cannot run replace
operations in a transactional batch. With ``stand_in=True`` (the default of :meth:`from_endpoint`
for a loopback endpoint) exactly that 500 counts as "not found" — any other 500 stays an error —
and the session document is written on its own, then the audit documents (not atomic: should the
second write fail, the session is saved without those records, and the error says so).
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.cosmos import PartitionKey
from azure.cosmos.aio import ContainerProxy, CosmosClient
from azure.cosmos.exceptions import CosmosClientTimeoutError

from ..errors import CheckpointTooLargeError, ConcurrencyError, StorageError, StorageUnavailableError
from ..netaddr import is_loopback_endpoint, proxy_configured
from ..settings import Settings, SettingsError
from .base import (
    Clock,
    InvalidContinuationError,
    decode_token,
    due_stamp,
    encode_document,
    encode_token,
    epoch_seconds,
    inbox_assignees,
    inbox_key,
    inbox_matches,
    inbox_order,
    participants,
    sort_stamp,
)
from .cosmos_container import ContainerOwner
from .cosmos_layout import DEFAULT_TTL, INDEXING_POLICY, PARTITION_KEY_PATH
from .models import (
    AuditRecord,
    Delegation,
    Page,
    PendingRequest,
    PendingRequestEntry,
    SessionSummary,
    StoredCheckpoint,
    StoredDelegation,
    WorkflowCheckpoint,
)

#: Cosmos DB's hard limit for one item (the UTF-8 length of its JSON).
COSMOS_ITEM_LIMIT_BYTES = 2 * 1024 * 1024
#: Room kept under the item limit for the system properties Cosmos adds (_rid, _self, _etag, ...).
SYSTEM_PROPERTIES_BYTES = 1024
#: Default checkpoint limit: leaves ~96 KB of the item for escaping, the inbox copy and the envelope.
DEFAULT_COSMOS_MAX_DOCUMENT_BYTES = 2_000_000
#: Most operations one transactional batch may hold.
BATCH_LIMIT = 100

_SESSION = "session"
_AUDIT = "audit"
_DELEGATION = "delegation"
#: The one logical partition (``session_id`` value) of every delegation document. Session ids
#: taken by the API match ``[A-Za-z0-9._:-]`` (``hitl_core.openapi.ID_PATTERN``): never ``~``.
DELEGATIONS_PARTITION = "~delegations"
_DELEGATION_ID_PREFIX = "delegation:"
#: Largest per-item ``ttl`` Cosmos DB accepts (seconds); a later ``ends_at`` is left to ``expires_at``.
_MAX_ITEM_TTL = 2**31 - 1
_CONFLICT_STATUSES = frozenset({404, 409, 412})
_UNAVAILABLE_STATUSES = frozenset({408, 410, 429, 449, 500, 502, 503, 504})
_TRANSPORT_ERRORS = (CosmosClientTimeoutError, ServiceRequestError, ServiceResponseError, TimeoutError, OSError)
# Characters an item id may not hold (the SDK rejects / \ ? # and tab/CR/LF; control characters
# are escaped too), '%' so the escape stays reversible, and ':' which audit ids use, so an escaped
# session id never equals an audit id.
_ID_ESCAPES = {c: f"%{ord(c):02X}" for c in "%/\\?#:" + "".join(map(chr, range(0x20))) + "\x7f"}
_MAX_ID_LENGTH = 255
_STAND_IN_MISSING_READ = "Cannot read properties of undefined"
_EXPIRY_MARK = "~"

T = TypeVar("T")


class _Conflict(Exception):
    """A conditional write lost (404/409/412); ``save`` decides what that means."""


@dataclass(frozen=True, slots=True)
class _Target:
    """One document that reads, conditional writes and deletes address, and how their errors name it.

    A session document is named by its session (``session_id``); a delegation document lives in
    no session's partition, so errors name ``subject`` instead. ``owner`` is the id a
    :class:`ConcurrencyError` carries (the session id, or the delegator).
    """

    item_id: str
    partition: str
    owner: str
    session_id: str | None = None
    subject: str | None = None

    @classmethod
    def session(cls, session_id: str) -> _Target:
        return cls(session_item_id(session_id), session_id, session_id, session_id=session_id)

    @classmethod
    def delegation(cls, delegator: str) -> _Target:
        return cls(delegation_item_id(delegator), DELEGATIONS_PARTITION, delegator,
                   subject=f"the delegation of {delegator!r}")


def session_item_id(session_id: str) -> str:
    """The session document's ``id``: the session id, escaped where Cosmos forbids a character.

    Ids are unique per partition and the partition *is* the session, so the escape only has to be
    injective among one session's documents. Ids that would not fit (or that URL paths would
    resolve, like ``..``) use a digest instead.
    """
    escaped = "".join(_ID_ESCAPES.get(c, c) for c in session_id)
    if 0 < len(escaped) <= _MAX_ID_LENGTH and escaped.strip(".") and not escaped.endswith(" "):
        return escaped
    return "sha256%" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def delegation_item_id(delegator: str) -> str:
    """A delegation document's ``id`` in :data:`DELEGATIONS_PARTITION`: the escaped delegator, prefixed.

    ``:`` is escaped in :func:`session_item_id`, so the prefix keeps it apart from any session id.
    """
    item_id = _DELEGATION_ID_PREFIX + session_item_id(delegator)
    if len(item_id) <= _MAX_ID_LENGTH:
        return item_id
    return _DELEGATION_ID_PREFIX + "sha256%" + hashlib.sha256(delegator.encode("utf-8", "surrogatepass")).hexdigest()


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _header(exc: BaseException, name: str) -> str | None:
    headers = getattr(exc, "headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return str(value) if value is not None else None


def _owner_missing(exc: BaseException) -> bool:
    """A 404 about the database or container, not the item (Cosmos sub-status 1003)."""
    return _status(exc) == 404 and _header(exc, "x-ms-substatus") == "1003"


def _retry_after(exc: BaseException) -> float | None:
    """Seconds to wait, from Cosmos' ``x-ms-retry-after-ms`` (or a plain ``Retry-After``)."""
    for name, scale in (("x-ms-retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = _header(exc, name)
        if value:
            try:
                return max(float(value) / scale, 0.0)
            except ValueError:
                continue
    return None


def _message(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def _index_entry(request: PendingRequest) -> dict[str, Any]:
    """What the inbox queries filter one pending request by (an element of ``inbox_index``).

    ``inbox_order`` is :func:`~hitl_core.checkpoint.base.inbox_order` (compared with
    :func:`~hitl_core.checkpoint.base.due_stamp` for ``due_before``); ``claimed_by`` and
    ``claimed_until`` (a :func:`~hitl_core.checkpoint.base.sort_stamp`, compared with the stamp of
    the storage's clock) are present only while the request carries a claim.
    """
    entry: dict[str, Any] = {"inbox_order": inbox_order(request), "approvers": list(request.approvers)}
    if request.claimed_by and request.claimed_until is not None:
        entry["claimed_by"] = request.claimed_by
        entry["claimed_until"] = sort_stamp(request.claimed_until)
    return entry


_AUDIT_ATTEMPTS = 4


def connect(endpoint: str, *, key: str | None, credential: Any, verify_tls: bool, local: bool,
            **client_options: Any) -> tuple[CosmosClient, Any]:
    """A ``CosmosClient`` for ``endpoint`` (with ``key``, else ``credential``, else a
    ``DefaultAzureCredential``, returned second so its owner closes it), shared by every Cosmos DB
    storage of the project. A loopback stand-in gets endpoint discovery off (the SDK would chase the
    https endpoints it advertises); without an HTTP proxy the transport does not re-read the proxy
    variables and ``~/.netrc`` on every request (:func:`~hitl_core.netaddr.proxy_configured`)."""
    owned_credential = None
    if key:
        auth: Any = key
    elif credential is not None:
        auth = credential
    else:
        from azure.identity.aio import DefaultAzureCredential

        auth = owned_credential = DefaultAzureCredential()
    options: dict[str, Any] = {"connection_verify": verify_tls}
    if not proxy_configured():  # the Cosmos client builds its transport without our options: give it one
        from azure.core.pipeline.transport import AioHttpTransport

        options["transport"] = AioHttpTransport(use_env_settings=False, connection_verify=verify_tls)
    if local:
        options["enable_endpoint_discovery"] = False
    options.update(client_options)
    return CosmosClient(endpoint, credential=auth, **options), owned_credential


class CosmosDBCheckpointStorage(ContainerOwner):
    """Checkpoints in Azure Cosmos DB: one document per session, audit records beside it.

    Build it from an existing container (``CosmosDBCheckpointStorage(container)``), from a client
    (``CosmosDBCheckpointStorage("sessions", client=client, database="hitl")``), from an endpoint
    (:meth:`from_endpoint`: key, a token credential, or ``DefaultAzureCredential``) or from the
    app's settings (:meth:`from_settings`). With ``create_if_missing=True`` the database and
    container are created on first use with the layout of :mod:`.cosmos_layout`; in Azure, Bicep
    creates them and the app's identity needs no control-plane rights.

    ``ops`` counts the data-plane requests this storage sent, by kind (``read``, ``create``,
    ``replace``, ``batch``, ``delete``, ``query`` — one per result page), for metrics and tests.
    """

    def __init__(
        self,
        container: ContainerProxy | str = "sessions",
        *,
        client: CosmosClient | None = None,
        database: str = "hitl",
        create_if_missing: bool = False,
        stand_in: bool = False,
        transactional_batch: bool | None = None,
        audit_ttl_seconds: int | None = None,
        max_document_bytes: int = DEFAULT_COSMOS_MAX_DOCUMENT_BYTES,
        clock: Clock = time.time,
        close_client: bool = False,
        credential: Any = None,
    ) -> None:
        # Audit records ride in one transactional batch with the session write (Azure); the stand-in
        # cannot replace inside a batch, so there they follow the session write.
        self._own_container(container, client=client, database=database, create_if_missing=create_if_missing,
                            close_client=close_client, credential=credential, stand_in=stand_in,
                            transactional_batch=transactional_batch)
        self.audit_ttl_seconds = audit_ttl_seconds or None
        self.max_document_bytes = max_document_bytes
        self._clock = clock
        self.ops: Counter[str] = Counter()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_endpoint(
        cls,
        endpoint: str,
        *,
        key: str | None = None,
        credential: Any = None,
        database: str = "hitl",
        container: str = "sessions",
        verify_tls: bool = True,
        stand_in: bool | None = None,
        create_if_missing: bool | None = None,
        transactional_batch: bool | None = None,
        audit_ttl_seconds: int | None = None,
        max_document_bytes: int = DEFAULT_COSMOS_MAX_DOCUMENT_BYTES,
        clock: Clock = time.time,
        **client_options: Any,
    ) -> CosmosDBCheckpointStorage:
        """Connect to an account: with ``key``, else ``credential``, else ``DefaultAzureCredential``.

        ``stand_in`` defaults to True for a loopback endpoint (the local stand-in, which also gets
        ``enable_endpoint_discovery=False`` so the SDK does not chase the https endpoints it
        advertises) and ``create_if_missing`` defaults to ``stand_in`` (the stand-in starts empty;
        in Azure the container comes from Bicep). ``client_options`` go to ``CosmosClient``
        (e.g. ``retry_total``, ``retry_backoff_max``, ``connection_timeout``).
        """
        local = is_loopback_endpoint(endpoint) if stand_in is None else stand_in
        client, owned_credential = connect(endpoint, key=key, credential=credential, verify_tls=verify_tls,
                                           local=local, **client_options)
        return cls(
            container,
            client=client,
            database=database,
            create_if_missing=local if create_if_missing is None else create_if_missing,
            stand_in=local,
            transactional_batch=transactional_batch,
            audit_ttl_seconds=audit_ttl_seconds,
            max_document_bytes=max_document_bytes,
            clock=clock,
            close_client=True,
            credential=owned_credential,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> CosmosDBCheckpointStorage:
        """Build from the app's settings (``HITL_COSMOS_*``, ``HITL_AUDIT_TTL_SECONDS``).

        No key (the Azure default) means managed identity via ``DefaultAzureCredential``. The
        session TTL (``HITL_SESSION_TTL_SECONDS``) is not kept here: the service passes it as
        ``ttl_seconds`` when it saves a finished session.
        """
        if not settings.cosmos_endpoint:
            raise SettingsError("HITL_STORAGE=cosmos needs HITL_COSMOS_ENDPOINT")
        options: dict[str, Any] = {
            "key": settings.cosmos_key,
            "database": settings.cosmos_database,
            "container": settings.cosmos_container,
            "verify_tls": settings.cosmos_verify_tls,
            "audit_ttl_seconds": settings.audit_ttl_seconds or None,
        }
        options.update(overrides)
        return cls.from_endpoint(settings.cosmos_endpoint, **options)

    async def _ready(self) -> ContainerProxy:
        """The container, created on first use if asked (once, even under concurrent callers)."""
        if self._container is not None:
            return self._container
        async with self._init_lock:
            if self._container is None:
                assert self._client is not None
                client = self._client
                if self._create_if_missing:
                    database = await self._call(
                        "create_database", None, partial(client.create_database_if_not_exists, self._database_name))
                    self._container = await self._call(
                        "create_container", None,
                        partial(database.create_container_if_not_exists, id=self._container_name,
                                partition_key=PartitionKey(path=PARTITION_KEY_PATH), default_ttl=DEFAULT_TTL,
                                indexing_policy=INDEXING_POLICY),
                    )
                else:
                    container = client.get_database_client(self._database_name).get_container_client(
                        self._container_name)
                    # One metadata read per process: a missing container is a clear error now, not
                    # a stream of "session not found" (a 404 on an item read looks the same).
                    try:
                        await self._call("read_container", None, container.read, passthrough=frozenset({404}))
                    except HttpResponseError as exc:
                        raise StorageError(
                            f"Cosmos DB container {self._container_name!r} of database {self._database_name!r} "
                            "does not exist: deploy it (infra/) or pass create_if_missing=True") from exc
                    self._container = container
        return self._container

    async def ensure_container(self) -> None:
        """Create (if asked) and resolve the container now rather than on the first call."""
        await self._ready()

    # -- SDK calls and error translation -----------------------------------------------------------
    async def _call(
        self,
        op: str,
        session_id: str | None,
        fn: Callable[[], Awaitable[T]],
        *,
        passthrough: frozenset[int] = frozenset(),
        subject: str | None = None,
    ) -> T:
        """Run one SDK request, counting it and translating its failure into the error tree.

        An SDK error whose status is in ``passthrough`` is re-raised for the caller to interpret.
        ``subject`` names what the request is about in error messages when it is not a session.
        """
        self.ops[op] += 1
        try:
            return await fn()
        except HttpResponseError as exc:
            if _status(exc) in passthrough and not _owner_missing(exc):
                raise
            raise self._translate(exc, op, session_id, subject=subject) from exc
        except _TRANSPORT_ERRORS as exc:
            raise self._translate(exc, op, session_id, subject=subject) from exc

    def _translate(self, exc: BaseException, op: str, session_id: str | None, *,
                   subject: str | None = None) -> StorageError:
        if subject is not None:
            where = f"{op} of {subject}"
        else:
            where = f"{op} of session {session_id!r}" if session_id is not None else op
        status = _status(exc)
        if isinstance(exc, ClientAuthenticationError) or status in (401, 403):
            return StorageError(
                f"Cosmos DB refused the {where} ({status}): check HITL_COSMOS_KEY or the app identity's "
                f"data-plane role: {_message(exc)}")
        if status == 429:
            return StorageUnavailableError(
                f"Cosmos DB is throttling (429) the {where} after the SDK's retries: {_message(exc)}",
                retry_after=_retry_after(exc))
        if status in _UNAVAILABLE_STATUSES or status is None:
            return StorageUnavailableError(
                f"Cosmos DB is unavailable for the {where} ({status or type(exc).__name__}): {_message(exc)}",
                retry_after=_retry_after(exc))
        if status == 404:
            return StorageError(
                f"Cosmos DB found nothing for the {where} (404): does container {self._container_name!r} of "
                f"database {self._database_name!r} exist? {_message(exc)}")
        if status in (409, 412):
            return ConcurrencyError(session_id or "", None, None)
        return StorageError(f"Cosmos DB failed the {where} ({status}): {_message(exc)}")

    def _is_missing_read(self, exc: HttpResponseError) -> bool:
        status = _status(exc)
        if status == 404:
            return not _owner_missing(exc)
        # The stand-in dereferences the missing document and answers 500 with exactly this text.
        return self.stand_in and status == 500 and _STAND_IN_MISSING_READ in _message(exc)

    # -- documents and versions ------------------------------------------------------------------
    def _expired(self, doc: dict[str, Any]) -> bool:
        expires_at = doc.get("expires_at")
        return isinstance(expires_at, (int, float)) and expires_at <= self._clock()

    @staticmethod
    def _version(doc: dict[str, Any]) -> str:
        """The session's version: its etag, plus its expiry when it has one."""
        etag = str(doc["_etag"])
        expires_at = doc.get("expires_at")
        if isinstance(expires_at, (int, float)):
            return f"{etag}{_EXPIRY_MARK}{float(expires_at)!r}"
        return etag

    def _etag_of(self, version: str) -> str | None:
        """The etag to send as If-Match, or None when the version cannot match a live session."""
        if version in ("", "*"):  # "" would send no If-Match at all, "*" matches anything
            return None
        etag, mark, expiry = version.rpartition(_EXPIRY_MARK)
        if not mark:
            return version
        try:
            expires_at = float(expiry)
        except ValueError:
            return version
        if not math.isfinite(expires_at) or f"{expires_at!r}" != expiry:
            return version  # not a version this storage issued (e.g. "...~12.50"): matches no etag
        return etag if etag and expires_at > self._clock() else None

    def _session_document(self, checkpoint: WorkflowCheckpoint, ttl_seconds: int | None) -> dict[str, Any]:
        """The session document, refused before any write if it would be too large."""
        text = encode_document(checkpoint, self.max_document_bytes)
        sid = checkpoint.session_id
        doc: dict[str, Any] = {
            "id": session_item_id(sid),
            "session_id": sid,
            "kind": _SESSION,
            "workflow": checkpoint.workflow,
            "status": checkpoint.status,
            "updated_at": checkpoint.updated_at.isoformat(),
            "expires_at": (self._clock() + ttl_seconds) if ttl_seconds else None,
            "participants": participants(checkpoint),
        }
        if ttl_seconds:
            doc["ttl"] = int(ttl_seconds)
        if checkpoint.pending_requests:
            created = [inbox_order(p) for p in checkpoint.pending_requests]  # the inbox order key
            doc["inbox_oldest_created_at"] = min(created)
            doc["inbox_newest_created_at"] = max(created)
            doc["assignees"] = sorted({a for p in checkpoint.pending_requests for a in p.approvers})
            doc["inbox_index"] = [_index_entry(p) for p in checkpoint.pending_requests]
            doc["inbox"] = [p.model_dump_json() for p in checkpoint.pending_requests]
        head = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        stored = json.dumps(text, ensure_ascii=False)  # the checkpoint as Cosmos stores it: escaped text
        size = _utf8_len(head) + len(',"checkpoint":') + _utf8_len(stored)
        limit = COSMOS_ITEM_LIMIT_BYTES - SYSTEM_PROPERTIES_BYTES
        if size > limit:
            raise CheckpointTooLargeError(sid, size, limit)
        doc["checkpoint"] = text
        return doc

    def _audit_document(self, checkpoint: WorkflowCheckpoint, record: AuditRecord) -> dict[str, Any]:
        # The session's creation time keeps ids unique when an expired session id is started
        # again: the old trail outlives the session and the new one numbers from 1 again.
        incarnation = int(checkpoint.created_at.timestamp() * 1_000_000)
        doc: dict[str, Any] = {
            "id": f"audit:{incarnation}:{record.seq:010d}",
            "session_id": checkpoint.session_id,
            "kind": _AUDIT,
            "incarnation": incarnation,
            "seq": record.seq,
            "record": record.model_dump_json(),
        }
        if self.audit_ttl_seconds:
            doc["ttl"] = int(self.audit_ttl_seconds)
        return doc

    @staticmethod
    def _written_etag(result: Any) -> str:
        """The new etag from a write's response headers (``no_response``) or its body."""
        getter = getattr(result, "get_response_headers", None)
        if getter is not None:
            etag = getter().get("etag")
            if etag:
                return str(etag)
        if isinstance(result, dict) and result.get("_etag"):
            return str(result["_etag"])
        raise StorageError("Cosmos DB answered a write without an etag")

    async def _read_raw(self, target: _Target) -> dict[str, Any] | None:
        """The document as stored (expired or not), or None: one point read."""
        container = await self._ready()
        try:
            doc: dict[str, Any] = await self._call(
                "read", target.session_id,
                partial(container.read_item, target.item_id, partition_key=target.partition),
                passthrough=frozenset({404, 500}), subject=target.subject,
            )
        except HttpResponseError as exc:
            if self._is_missing_read(exc):
                return None
            raise self._translate(exc, "read", target.session_id, subject=target.subject) from exc
        return doc

    async def _read_live(self, target: _Target) -> dict[str, Any] | None:
        """The document unless absent or expired (ended): one point read."""
        doc = await self._read_raw(target)
        return None if doc is None or self._expired(doc) else doc

    async def _current_version(self, target: _Target) -> str | None:
        current = await self._read_live(target)
        return None if current is None else self._version(current)

    async def _create_or_replace(self, target: _Target, doc: dict[str, Any], etag: str | None) -> str:
        """Create (``etag`` None) or replace-if-match one document; its new version, or _Conflict."""
        container = await self._ready()
        try:
            if etag is None:
                result = await self._call("create", target.session_id,
                                          partial(container.create_item, doc, no_response=True),
                                          passthrough=_CONFLICT_STATUSES, subject=target.subject)
            else:
                result = await self._call(
                    "replace", target.session_id,
                    partial(container.replace_item, target.item_id, doc, etag=etag,
                            match_condition=MatchConditions.IfNotModified, no_response=True),
                    passthrough=_CONFLICT_STATUSES, subject=target.subject)
        except HttpResponseError as exc:
            raise _Conflict from exc
        return self._version({"_etag": self._written_etag(result), "expires_at": doc["expires_at"]})

    async def _save_if_match(self, target: _Target, expected_version: str | None,
                             write: Callable[[str | None], Awaitable[str]]) -> str:
        """``write(etag)`` as a create (``expected_version=None``) or a replace with ``If-Match``.

        A create that finds an *expired* document replaces it (as if Cosmos had deleted it
        already); any other lost race is a :class:`ConcurrencyError` naming the current version.
        """
        if expected_version is None:
            try:
                return await write(None)
            except _Conflict:
                pass
            current = await self._read_raw(target)
            if current is not None and self._expired(current):
                try:
                    return await write(str(current["_etag"]))
                except _Conflict:
                    pass
        else:
            etag = self._etag_of(expected_version)
            if etag is not None:
                try:
                    return await write(etag)
                except _Conflict:
                    pass
        raise ConcurrencyError(target.owner, expected_version, await self._current_version(target))

    async def _delete_if_match(self, target: _Target, expected_version: str | None) -> bool:
        """A point read, then a delete conditional on the etag read; False if absent or expired.

        Losing to a concurrent write is a :class:`ConcurrencyError` when ``expected_version`` was
        given; otherwise the document is read again and the delete retried.
        """
        container = await self._ready()
        while True:
            current = await self._read_live(target)
            if current is None:
                return False
            version = self._version(current)
            if expected_version is not None and version != expected_version:
                raise ConcurrencyError(target.owner, expected_version, version)
            try:
                await self._call(
                    "delete", target.session_id,
                    partial(container.delete_item, target.item_id, partition_key=target.partition,
                            etag=str(current["_etag"]), match_condition=MatchConditions.IfNotModified),
                    passthrough=_CONFLICT_STATUSES, subject=target.subject)
                return True
            except HttpResponseError as exc:
                if _status(exc) == 404:
                    return False
                if expected_version is not None:
                    raise ConcurrencyError(target.owner, expected_version,
                                           await self._current_version(target)) from exc
                # changed between the read and the delete: read it again

    # -- protocol --------------------------------------------------------------------------------
    async def load(self, session_id: str) -> StoredCheckpoint | None:
        """One point read (never a query): the session, unless absent or expired."""
        doc = await self._read_live(_Target.session(session_id))
        if doc is None:
            return None
        return StoredCheckpoint(checkpoint=WorkflowCheckpoint.model_validate_json(doc["checkpoint"]),
                                version=self._version(doc))

    async def save(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        expected_version: str | None,
        ttl_seconds: int | None = None,
        audit: Sequence[AuditRecord] = (),
    ) -> str:
        """Create (``expected_version=None``) or conditionally replace the session document.

        A create that finds an *expired* session document replaces it (as if Cosmos had deleted
        it already); any other lost race is a :class:`ConcurrencyError` naming the current version.
        """
        doc = self._session_document(checkpoint, ttl_seconds)
        audit_docs = [self._audit_document(checkpoint, r) for r in audit]
        return await self._save_if_match(_Target.session(checkpoint.session_id), expected_version,
                                         partial(self._write, doc, audit_docs))

    async def _write(self, doc: dict[str, Any], audit_docs: list[dict[str, Any]], etag: str | None) -> str:
        """Create (``etag`` None) or replace-if-match the session document, with its audit documents."""
        container = await self._ready()
        sid: str = doc["session_id"]
        if audit_docs and self.transactional_batch:
            head = audit_docs[: BATCH_LIMIT - 1]  # more than 99 records in one save: the rest follow
            operations: list[Any] = [
                ("create", (doc,)) if etag is None else ("replace", (doc["id"], doc), {"if_match_etag": etag})
            ]
            operations.extend(("create", (a,)) for a in head)
            try:
                results = await self._call("batch", sid, partial(container.execute_item_batch, operations,
                                                                 partition_key=sid),
                                           passthrough=_CONFLICT_STATUSES)
            except HttpResponseError as exc:
                index = getattr(exc, "error_index", 0) or 0
                if index > 0:  # the session write was fine; an audit id exists already
                    raise StorageError(
                        f"audit record seq {head[index - 1]['seq']} of session {sid!r} exists already "
                        f"({_status(exc)}); nothing was saved") from exc
                raise _Conflict from exc
            first = results[0]
            version = str(first.get("eTag") or first["resourceBody"]["_etag"])
            await self._create_audit(audit_docs[len(head):], sid)
            return self._version({"_etag": version, "expires_at": doc["expires_at"]})
        version = await self._create_or_replace(_Target.session(sid), doc, etag)
        await self._create_audit(audit_docs, sid)
        return version

    async def _create_audit(self, audit_docs: list[dict[str, Any]], sid: str) -> None:
        """Audit documents written after their session document (when no batch carried them).

        Only the stand-in takes this path (Azure writes session and audit in one atomic batch).
        The session write has landed, so a transient failure here is retried a few times with
        upserts (ids are fixed, a retry cannot duplicate); a failure that outlasts the retries
        leaves the decision recorded without its audit record — hence the batch in production.
        """
        if not audit_docs:
            return
        container = await self._ready()
        delay = 0.2
        for attempt in range(_AUDIT_ATTEMPTS):
            try:
                # side by side: their ids are fixed and each is whole on its own (a quorum write carries many)
                await asyncio.gather(*(self._call("upsert", sid, partial(container.upsert_item, audit_doc,
                                                                         no_response=True))
                                       for audit_doc in audit_docs))
                return
            except StorageUnavailableError as exc:
                if attempt + 1 < _AUDIT_ATTEMPTS:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                seqs = ", ".join(str(a["seq"]) for a in audit_docs)
                raise StorageUnavailableError(
                    f"session {sid!r} was saved but its audit records (seq {seqs}) were not: {exc}",
                    retry_after=exc.retry_after) from exc
            except StorageError as exc:
                seqs = ", ".join(str(a["seq"]) for a in audit_docs)
                raise StorageError(f"session {sid!r} was saved but its audit records (seq {seqs}) were not: {exc}"
                                   ) from exc

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        """Remove the session document (conditionally on its etag), then its audit trail."""
        if not await self._delete_if_match(_Target.session(session_id), expected_version):
            return False
        container = await self._ready()
        ids = await self._query(
            container,
            "SELECT VALUE c.id FROM c WHERE c.session_id = @sid AND c.kind = @kind",
            [{"name": "@sid", "value": session_id}, {"name": "@kind", "value": _AUDIT}],
            session_id=session_id,
        )
        for audit_id in ids:
            try:
                await self._call("delete", session_id,
                                 partial(container.delete_item, audit_id, partition_key=session_id),
                                 passthrough=frozenset({404}))
            except HttpResponseError:
                continue  # gone already (its TTL, or a concurrent delete)
        return True

    async def _query(
        self,
        container: ContainerProxy,
        query: str,
        parameters: list[dict[str, Any]],
        *,
        session_id: str | None = None,
        subject: str | None = None,
    ) -> list[Any]:
        """Run a parameterised query to its end (within one partition when ``session_id``)."""
        return [item async for item in self._stream(container, query, parameters, session_id=session_id,
                                                    subject=subject)]

    async def _stream(
        self,
        container: ContainerProxy,
        query: str,
        parameters: list[dict[str, Any]],
        *,
        session_id: str | None = None,
        max_item_count: int | None = None,
        subject: str | None = None,
    ) -> AsyncIterator[Any]:
        """Yield query results page by page, counting and translating each page request.

        Each ``by_page`` step is one request (the SDK fetches a page, then iterates it locally),
        so a caller that stops early pays for no further page.
        """
        kwargs: dict[str, Any] = {"parameters": parameters}
        if session_id is not None:
            kwargs["partition_key"] = session_id
        if max_item_count is not None:
            kwargs["max_item_count"] = max_item_count
        pages = container.query_items(query, **kwargs).by_page()
        while True:
            try:
                page = await pages.__anext__()
            except StopAsyncIteration:
                return
            except (HttpResponseError, *_TRANSPORT_ERRORS) as exc:
                self.ops["query"] += 1
                raise self._translate(exc, "query", session_id, subject=subject) from exc
            self.ops["query"] += 1
            async for item in page:
                yield item

    async def list_sessions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        participant: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> Page[SessionSummary]:
        """Sessions ordered by id: a keyset (``session_id > @after``) query with ``TOP limit+1``.

        ``participant`` is ``ARRAY_CONTAINS(c.participants, @participant)``, served by the
        ``/participants/[]`` index. A session document written before ``participants`` was stored
        has none, so it is left out of participant listings until it is next saved.
        """
        after = ""
        if continuation:
            value = decode_token(continuation, 1)[0]
            if not isinstance(value, str):
                raise InvalidContinuationError("continuation token is malformed")
            after = value
        if limit <= 0:
            return Page[SessionSummary](items=[], continuation=None)
        container = await self._ready()
        clauses = ["c.kind = @kind", "c.session_id > @after", "(IS_NULL(c.expires_at) OR c.expires_at > @now)"]
        parameters: list[dict[str, Any]] = [
            {"name": "@n", "value": limit + 1},
            {"name": "@kind", "value": _SESSION},
            {"name": "@after", "value": after},
            {"name": "@now", "value": self._clock()},
        ]
        if workflow is not None:
            clauses.append("c.workflow = @workflow")
            parameters.append({"name": "@workflow", "value": workflow})
        if status is not None:
            clauses.append("c.status = @status")
            parameters.append({"name": "@status", "value": status})
        if participant is not None:
            clauses.append("ARRAY_CONTAINS(c.participants, @participant)")
            parameters.append({"name": "@participant", "value": participant})
        where = " AND ".join(clauses)  # fixed clauses: every value travels as a parameter
        query = f"SELECT TOP @n c.session_id, c.workflow, c.status, c.updated_at FROM c WHERE {where}"  # noqa: S608
        query += " ORDER BY c.session_id"
        rows = await self._query(container, query, parameters)
        items = [SessionSummary(session_id=r["session_id"], workflow=r["workflow"], status=r["status"],
                                updated_at=r["updated_at"]) for r in rows[:limit]]
        token = encode_token([items[-1].session_id]) if len(rows) > limit and items else None
        return Page[SessionSummary](items=items, continuation=token)

    def _now(self) -> tuple[float, dt.datetime]:
        """The storage's clock, read once: epoch seconds (``expires_at``) and the instant (claims)."""
        clock = self._clock()
        return clock, dt.datetime.fromtimestamp(clock, dt.UTC)

    @staticmethod
    def _inbox_filter(
        *,
        workflow: str | None,
        keys: tuple[str, ...] | None,
        claimed_by: str | None,
        due_before: dt.datetime | None,
        now: dt.datetime,
    ) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """The inbox filters as query text: clauses on the session document ``c``, conditions on one
        ``inbox_index`` element ``r``, and their parameters (only ``@name``s are built here; every
        value travels as a parameter).

        The session clauses hold for every document holding a matching request (a superset when
        there are request conditions); the request conditions select exactly the matching requests.
        """
        session = ["c.kind = @kind"]
        request: list[str] = []
        parameters: list[dict[str, Any]] = [{"name": "@kind", "value": _SESSION}]
        if workflow is not None:
            session.append("c.workflow = @workflow")
            parameters.append({"name": "@workflow", "value": workflow})
        if keys is not None:
            # one ARRAY_CONTAINS per key (served by the /assignees/[] index): only @aN names are built here
            session.append("(" + " OR ".join(f"ARRAY_CONTAINS(c.assignees, @a{n})" for n in range(len(keys))) + ")")
            request.append("(" + " OR ".join(f"ARRAY_CONTAINS(r.approvers, @a{n})" for n in range(len(keys))) + ")")
            parameters.extend({"name": f"@a{n}", "value": key} for n, key in enumerate(keys))
        if claimed_by is not None:
            request.append("r.claimed_by = @claimed_by AND r.claimed_until > @now_stamp")
            parameters.append({"name": "@claimed_by", "value": claimed_by})
            parameters.append({"name": "@now_stamp", "value": sort_stamp(now)})
        if due_before is not None:
            # the session's earliest order key is below the bound exactly when one of its requests is due
            session.append("c.inbox_oldest_created_at < @due")
            request.append("r.inbox_order < @due")
            parameters.append({"name": "@due", "value": due_stamp(due_before)})
        return session, request, parameters

    async def list_pending_requests(
        self,
        *,
        workflow: str | None = None,
        assignee: str | None = None,
        assignees: Sequence[str] | None = None,
        claimed_by: str | None = None,
        due_before: dt.datetime | None = None,
        limit: int = 50,
        continuation: str | None = None,
    ) -> Page[PendingRequestEntry]:
        """The reviewer inbox in inbox order, paged by the keyset of the page's last row.

        One cross-partition query over session documents (see the module docstring); it never
        runs on the start or resume path. Assignee keys become ``ARRAY_CONTAINS(c.assignees, @aN)``
        clauses joined by OR (each key a parameter): a session document matches once however many
        keys it holds, and its requests are then filtered one by one, so none is listed twice.
        ``due_before`` is ``c.inbox_oldest_created_at < @due`` (exact per session: the oldest order
        key is below the bound iff a request is due); ``claimed_by`` is an ``EXISTS`` over
        ``c.inbox_index`` holding a live claim of that person (``claimed_until`` after the stamp of
        the storage's clock) that also meets the other request filters. Every request read is then
        checked here with :func:`~hitl_core.checkpoint.base.inbox_matches`, the reference filter.
        """
        keys = inbox_assignees(assignee, assignees)
        after: tuple[str, str, str] | None = None
        if continuation:
            values = decode_token(continuation, 3)
            if not all(isinstance(v, str) for v in values):
                raise InvalidContinuationError("continuation token is malformed")
            after = (values[0], values[1], values[2])
        if limit <= 0 or keys == ():
            return Page[PendingRequestEntry](items=[], continuation=None)
        container = await self._ready()
        clock, now = self._now()
        clauses, request, parameters = self._inbox_filter(workflow=workflow, keys=keys, claimed_by=claimed_by,
                                                          due_before=due_before, now=now)
        clauses.append("c.inbox_newest_created_at >= @after")
        parameters.append({"name": "@after", "value": after[0] if after else ""})
        if claimed_by is not None:
            # a session without such a claim is never read (documents that predate inbox_index never match)
            exists = " AND ".join(request)  # fixed conditions: every value travels as a parameter
            clauses.append(f"EXISTS(SELECT VALUE r FROM r IN c.inbox_index WHERE {exists})")  # noqa: S608
        order = "c.kind, c.inbox_oldest_created_at"  # served by a composite index (cosmos_layout)
        if workflow is not None:
            order = "c.kind, c.workflow, c.inbox_oldest_created_at"
        where = " AND ".join(clauses)  # fixed clauses: every value travels as a parameter
        query = (
            "SELECT c.session_id, c.workflow, c.expires_at, c.inbox_oldest_created_at, c.inbox"  # noqa: S608
            f" FROM c WHERE {where} ORDER BY {order}"
        )
        found: list[tuple[tuple[str, str, str], PendingRequestEntry]] = []
        async for row in self._stream(container, query, parameters, max_item_count=min(max(limit + 1, 10), 100)):
            # Rows come ordered by their oldest request: once one starts after the page's last row
            # (and a row beyond the page proves there is more), nothing later can sort earlier.
            if len(found) > limit and str(row["inbox_oldest_created_at"]) > found[limit - 1][0][0]:
                break
            expires_at = row.get("expires_at")
            if isinstance(expires_at, (int, float)) and expires_at <= clock:
                continue
            entries = [PendingRequestEntry(session_id=row["session_id"], workflow=row["workflow"],
                                           request=PendingRequest.model_validate_json(text))
                       for text in row.get("inbox") or ()]
            for entry in inbox_matches(entries, workflow=workflow, assignees=keys, claimed_by=claimed_by,
                                       due_before=due_before, now=now):
                key = inbox_key(entry)
                if after is not None and key <= after:
                    continue
                bisect.insort(found, (key, entry), key=lambda pair: pair[0])
        items = [entry for _, entry in found[:limit]]
        token = encode_token(list(found[limit - 1][0])) if len(found) > limit else None
        return Page[PendingRequestEntry](items=items, continuation=token)

    async def count_pending_requests(
        self,
        *,
        workflow: str | None = None,
        assignee: str | None = None,
        assignees: Sequence[str] | None = None,
        claimed_by: str | None = None,
        due_before: dt.datetime | None = None,
    ) -> int:
        """How many requests the inbox lists with these filters: one cross-partition aggregate,
        ``SELECT VALUE COUNT(1) FROM c JOIN r IN c.inbox_index WHERE ...`` (the filters of
        :meth:`list_pending_requests`, the request ones on ``r``; expiry on ``c.expires_at``).
        Nothing but the count comes back. Session documents written before ``inbox_index`` was
        stored count for nothing until they are next saved.
        """
        keys = inbox_assignees(assignee, assignees)
        if keys == ():
            return 0
        container = await self._ready()
        clock, now = self._now()
        clauses, request, parameters = self._inbox_filter(workflow=workflow, keys=keys, claimed_by=claimed_by,
                                                          due_before=due_before, now=now)
        clauses.append("(IS_NULL(c.expires_at) OR c.expires_at > @now)")
        parameters.append({"name": "@now", "value": clock})
        where = " AND ".join(clauses + request)  # fixed clauses: every value travels as a parameter
        query = f"SELECT VALUE COUNT(1) FROM c JOIN r IN c.inbox_index WHERE {where}"  # noqa: S608
        # One value; should a gateway hand back per-partition partial counts instead, they add up.
        return sum(int(n) for n in await self._query(container, query, parameters))

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        """The session's audit records in order: one query within the session's partition."""
        container = await self._ready()
        rows = await self._query(
            container,
            "SELECT c.incarnation, c.seq, c.record FROM c WHERE c.session_id = @sid AND c.kind = @kind",
            [{"name": "@sid", "value": session_id}, {"name": "@kind", "value": _AUDIT}],
            session_id=session_id,
        )
        rows.sort(key=lambda r: (r.get("incarnation") or 0, r.get("seq") or 0))
        return [AuditRecord.model_validate_json(r["record"]) for r in rows]

    # -- delegations ------------------------------------------------------------------------------
    def _delegation_document(self, delegation: Delegation) -> dict[str, Any]:
        ends_at = epoch_seconds(delegation.ends_at)
        doc: dict[str, Any] = {
            "id": delegation_item_id(delegation.delegator),
            "session_id": DELEGATIONS_PARTITION,
            "kind": _DELEGATION,
            "delegator": delegation.delegator,
            "delegate": delegation.delegate,
            "expires_at": ends_at,
            "delegation": delegation.model_dump_json(),
        }
        # Cosmos counts ``ttl`` from the write; an ended delegation still gets a second (ttl > 0).
        ttl = max(1, math.ceil(ends_at - self._clock()))
        if ttl <= _MAX_ITEM_TTL:
            doc["ttl"] = ttl
        return doc

    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        """One point read in the delegations partition: the delegation, unless absent or ended."""
        doc = await self._read_live(_Target.delegation(delegator))
        if doc is None:
            return None
        return StoredDelegation(delegation=Delegation.model_validate_json(doc["delegation"]),
                                version=self._version(doc))

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        """A create (``expected_version=None``) or a replace with ``If-Match``: one write when uncontended.

        A create that finds an *ended* delegation replaces it (as if Cosmos had deleted it already).
        """
        target = _Target.delegation(delegation.delegator)
        doc = self._delegation_document(delegation)
        return await self._save_if_match(target, expected_version, partial(self._create_or_replace, target, doc))

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        """A point read, then a delete conditional on the etag read."""
        return await self._delete_if_match(_Target.delegation(delegator), expected_version)

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        """One single-partition query (in :data:`DELEGATIONS_PARTITION`), sorted by delegator here."""
        container = await self._ready()
        query = "SELECT VALUE c.delegation FROM c WHERE c.kind = @kind AND c.expires_at > @now"
        parameters: list[dict[str, Any]] = [{"name": "@kind", "value": _DELEGATION},
                                            {"name": "@now", "value": self._clock()}]
        if delegate is not None:
            query += " AND c.delegate = @delegate"
            parameters.append({"name": "@delegate", "value": delegate})
        rows = await self._query(container, query, parameters, session_id=DELEGATIONS_PARTITION,
                                 subject="the delegations")
        return sorted((Delegation.model_validate_json(text) for text in rows), key=lambda d: d.delegator)

