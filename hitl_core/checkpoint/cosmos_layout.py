"""The Cosmos DB container layout the checkpoint storage expects: the single source of truth.

``infra/modules/cosmos.bicep`` keeps a literal copy of these values (Bicep cannot import Python);
``tests/infra/test_cosmos_layout.py`` fails when the two drift apart. Change both together.

One container holds every document of a session, all sharing the partition key ``session_id``:
``kind`` is ``"session"`` (one per session: the checkpoint, its status and the denormalised inbox
fields) or ``"audit"`` (one per audit record). Out-of-office delegations (``kind: "delegation"``,
one per delegator) share the container but all sit in one fixed partition, ``session_id =
"~delegations"`` (a value no session id can take), with a per-item ``ttl`` ending at ``ends_at``.
See ``hitl_core/checkpoint/cosmos.py`` for why the inbox is served from the session documents
rather than from per-request documents.

The queries this policy serves (and nothing else is queried):

* reviewer inbox (cross-partition)::

      WHERE c.kind = 'session' [AND c.workflow = @workflow]
        [AND (ARRAY_CONTAINS(c.assignees, @a0) OR ARRAY_CONTAINS(c.assignees, @a1) ...)]
        [AND c.inbox_oldest_created_at < @due]
        AND c.inbox_newest_created_at >= @after
        [AND EXISTS(SELECT VALUE r FROM r IN c.inbox_index
                    WHERE [(ARRAY_CONTAINS(r.approvers, @a0) OR ...) AND]
                          r.claimed_by = @claimed_by AND r.claimed_until > @now_stamp
                          [AND r.inbox_order < @due])]
      ORDER BY c.kind, [c.workflow,] c.inbox_oldest_created_at

  (expiry, ``expires_at``, is checked on the rows read). The two composite indexes below serve
  exactly these two ORDER BY shapes (a multi-property ORDER BY *requires* its composite index; the
  equality-filtered properties lead it); the assignee keys (a caller's ``user:`` id and each of
  their ``role:`` keys, one to fifty) are served by the ``/assignees/[]`` range index, the
  ``claimed_by`` filter (``EXISTS``, only when given) by the ``/inbox_index/[]/...`` paths.
* inbox count (cross-partition aggregate, the same filters, the request ones per ``inbox_index``
  element)::

      SELECT VALUE COUNT(1) FROM c JOIN r IN c.inbox_index
      WHERE c.kind = 'session' [AND <the session clauses above>]
        AND (IS_NULL(c.expires_at) OR c.expires_at > @now)
        [AND (ARRAY_CONTAINS(r.approvers, @a0) OR ...)]
        [AND r.claimed_by = @claimed_by AND r.claimed_until > @now_stamp] [AND r.inbox_order < @due]

  (``/inbox_index/[]/inbox_order``, ``/approvers/[]``, ``/claimed_by`` and ``/claimed_until``).
* session listing (admin, cross-partition): ``WHERE c.kind = 'session' AND c.session_id > @after
  [AND c.workflow = @w] [AND c.status = @s] [AND ARRAY_CONTAINS(c.participants, @participant)] ...
  ORDER BY c.session_id`` (single-property range index; a person's history by ``/participants/[]``).
* audit trail (single partition): ``WHERE c.session_id = @sid AND c.kind = 'audit'``.
* delegations (single partition ``"~delegations"``, sorted by delegator in Python, no ORDER BY):
  ``SELECT VALUE c.delegation FROM c WHERE c.kind = 'delegation' AND c.expires_at > @now
  [AND c.delegate = @delegate]`` (``/delegate/?`` serves the filter by delegate).

Only the paths that queries touch are indexed (``/*`` is excluded): checkpoint documents carry
large state blobs under ``/checkpoint``, and indexing them would only raise the RU cost of every
write. A query on a path that is not listed here either scans or (with ORDER BY) fails, so add the
path here first.
"""

from __future__ import annotations

from typing import Any

#: Partition key path of the sessions container: every document of one session lives together.
PARTITION_KEY_PATH = "/session_id"

#: ``defaultTtl`` of the container: -1 turns TTL on without expiring anything by default; a
#: document expires only when it carries its own ``ttl`` (finished sessions, audit records).
DEFAULT_TTL = -1

#: Cosmos DB indexing policy of the sessions container (the JSON the service and Bicep use).
INDEXING_POLICY: dict[str, Any] = {
    "indexingMode": "consistent",
    "automatic": True,
    "includedPaths": [
        {"path": "/kind/?"},
        {"path": "/session_id/?"},
        {"path": "/workflow/?"},
        {"path": "/status/?"},
        {"path": "/expires_at/?"},
        {"path": "/inbox_oldest_created_at/?"},
        {"path": "/inbox_newest_created_at/?"},
        {"path": "/assignees/[]/?"},
        {"path": "/inbox_index/[]/inbox_order/?"},
        {"path": "/inbox_index/[]/approvers/[]/?"},
        {"path": "/inbox_index/[]/claimed_by/?"},
        {"path": "/inbox_index/[]/claimed_until/?"},
        {"path": "/participants/[]/?"},
        {"path": "/delegate/?"},
    ],
    "excludedPaths": [
        {"path": "/*"},
        {"path": '/"_etag"/?'},
    ],
    "compositeIndexes": [
        # inbox: WHERE c.kind = 'session' ... ORDER BY c.kind, c.inbox_oldest_created_at
        [
            {"path": "/kind", "order": "ascending"},
            {"path": "/inbox_oldest_created_at", "order": "ascending"},
        ],
        # inbox filtered by workflow: ... AND c.workflow = @workflow
        # ORDER BY c.kind, c.workflow, c.inbox_oldest_created_at
        [
            {"path": "/kind", "order": "ascending"},
            {"path": "/workflow", "order": "ascending"},
            {"path": "/inbox_oldest_created_at", "order": "ascending"},
        ],
    ],
}
