"""RedisCheckpointStorage: sessions in Redis (Azure Cache for Redis, or any Redis >= 5).

Why this layout
---------------
Every write is ONE round trip: a Lua script (``EVALSHA`` through redis-py's
``register_script``) compares the version and, atomically in the same call, rewrites the
session, its inbox and listing index entries, appends the audit records and sets or clears the
TTL. Redis runs a script without interleaving other commands, so the compare-and-set cannot
race and no WATCH/MULTI retry loop is needed. Reads of one session (``load``) are a single
``HMGET``; listings are one script call per page.

Keys (``P`` is ``key_prefix``, default ``"hitl:"``)::

    P session:{sid}        hash  doc, version, workflow, status, updated_at   (TTL when finished)
    P requests:{sid}       hash  call_id -> PendingRequest JSON               (same TTL)
    P refs:{sid}           list  [zset key, member, zset key, member, ...]: every index entry
                                 this session owns, so any script can remove them exactly
    P audit:{sid}          list  AuditRecord JSON, appended in save order (no TTL: audit
                                 records outlive the session, as in the other backends)
    P idx:sessions         zset  score 0, member sid           list_sessions (ZRANGEBYLEX)
    P idx:sessions:wf:{w}  zset  the same, one workflow
    P idx:sessions:who:{p} zset  the same, sessions person ``p`` took part in (``participants()``)
    P idx:inbox            zset  score 0, member order \\0 sid \\0 call_id   the inbox
    P idx:inbox:wf:{w}     zset  the same, one workflow
    P idx:inbox:as:{a}     zset  the same, requests that list ``a`` among their approvers
    P idx:inbox:claim:{p}  zset  the same, requests ``p`` claimed (``claimed_by`` and ``claimed_until`` set)
    P idx:inbox:claim-until:{p}  zset  the same members, score = ``claimed_until`` in epoch microseconds
                                 (not walked: ZSCORE tells whether a claim is still live)
    P idx:inbox:ttl        zset  score 0, member sid: sessions saved with a TTL that list requests
                                 (the only ones whose inbox entries expiry can strand; see counts)
    P delegation:{d}       hash  doc, version, delegate   an out-of-office delegation of ``d``
                                 (PEXPIREAT its ``ends_at``: Redis drops it when it ends)
    P idx:delegations      zset  score 0, member delegator          list_delegations()
    P idx:delegations:to:{x} zset  the same, delegations to ``x``     list_delegations(delegate=x)
    P idx:delegations:delegate  hash  delegator -> delegate: which ``to:`` set lists a delegator
                                 (no TTL, so the entry can be removed after the delegation expired)

The version is a per-session counter kept in the hash (a hash rather than a plain string so
the version, workflow and status can be compared and filtered inside scripts without parsing
the document). All walked index sets use score 0 and lexicographic members, so keyset paging is a
``ZRANGEBYLEX (last +`` with no OFFSET. Inbox members are the request's inbox order key
(:func:`~hitl_core.checkpoint.base.inbox_order`: deadline, then creation time, both as UTC
stamps), session id and call id joined by NUL bytes after an order-preserving escape (``\\0`` ->
``\\1\\1``, ``\\1`` -> ``\\1\\2``), so byte order of the member equals the (order, session_id,
call_id) tuple order the other backends use, even for ids containing the separator.

An inbox for several assignee keys (a person's ``user:`` key and each ``role:`` key) walks the
union of their ``idx:inbox:as:`` sets: the listing script merges them itself (a k-way merge over
one cursor per set, in byte order, each member once), so a page is still one round trip, no
temporary key is written, and memory is bounded by the number of keys times the batch size.

Filters. ``list_sessions(participant=p)`` walks ``idx:sessions:who:p`` (a workflow or status filter
checked in the script). ``list_pending_requests(claimed_by=p)`` walks ``idx:inbox:claim:p`` (a person
holds few claims) and keeps an entry only while its ``idx:inbox:claim-until:p`` score is after now,
this process's real time (claims are not given a Redis TTL: the request stays, only the claim runs
out); assignee keys are then ZSCORE checks in their ``as:`` sets. ``due_before=T`` is an upper bound on
every walk, ``ZRANGEBYLEX ... (stamp(T)``: members start with the order key, which starts with the
deadline's stamp (no deadline sorts after every stamp), so the walk ends at the first request not due.
``count_pending_requests`` is one script call (``_COUNT``) that reads no request: ZLEXCOUNT when one
index answers, else ZSCORE checks of the walked entries, a union counted once per member. It has no
scan budget (it has no continuation): it visits the entries of the smallest index that answers. Sessions
saved before these indexes existed are found by ``participant`` and ``claimed_by`` once saved again.

Expiry: Redis drops ``session:`` and ``requests:`` itself when a finished session's TTL runs
out, but cannot tell the indexes. Reads therefore check each index entry's session key; an
entry whose session is gone is skipped and the session's ``refs:`` list is used, in the same
script, to remove all of its index entries (lazy cleanup). :meth:`purge_expired` walks the
indexes to do the same eagerly. A count cannot skip what ZLEXCOUNT does not visit, so it first
forgets the sessions of ``idx:inbox:ttl`` whose ``session:`` key is gone; every entry left then belongs
to a live session. A listing script scans at most ``scan_budget`` index entries
per call so one call can never block Redis for long; a page may then hold fewer than ``limit``
items but still carries a continuation.

Delegations follow the same pattern: one script compares the version and, atomically, rewrites
the ``delegation:`` hash, sets its PEXPIREAT and moves the delegator between the ``to:`` sets,
so listing one delegate's delegations is a ``ZRANGEBYLEX`` of one set (no SCAN), already in
delegator order. A ``delegation:`` hash that expired leaves index entries behind; the listing
script drops them (and the rest of that delegator's index entries) when it meets them. A
delegation's version counts from 1 again once Redis has dropped the ended one, as a session's does.

Cluster: the scripts touch keys derived from the data (not all passed in ``KEYS``), which a
single Redis or an Azure Cache non-clustered tier accepts. On a Redis Cluster give every key
the same hash slot with a hash-tagged prefix, e.g. ``key_prefix="{hitl}:"``.

Errors are translated: connection failures, timeouts and BUSY/LOADING/TRYAGAIN/READONLY/OOM
replies become :class:`StorageUnavailableError` (``retry_after=1``); rejected credentials become
a :class:`StorageUnavailableError` that says so (without the password) and is not retryable.

redis-py is imported when this module is imported, which ``hitl_core.checkpoint`` does only on
first use of ``RedisCheckpointStorage`` (``pip install hitl_core[redis]``).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "RedisCheckpointStorage needs the redis package: pip install 'hitl_core[redis]'"
    ) from exc

from ..errors import ConcurrencyError, StorageError, StorageUnavailableError
from .base import (
    DEFAULT_MAX_DOCUMENT_BYTES,
    InvalidContinuationError,
    decode_document,
    decode_token,
    due_stamp,
    encode_document,
    encode_token,
    epoch_seconds,
    inbox_assignees,
    inbox_order,
    participants,
)
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

if TYPE_CHECKING:
    from ..settings import Settings

# Replies that mean "the server is there but cannot serve right now": retry later.
_TRANSIENT_REPLIES = frozenset({"BUSY", "LOADING", "TRYAGAIN", "MASTERDOWN", "READONLY", "OOM", "CLUSTERDOWN"})
_AUTH_REPLIES = frozenset({"NOAUTH", "WRONGPASS", "NOPERM"})

# Shared Lua helpers: undo the member escape and drop every index entry a session owns.
_LUA_HELPERS = r"""
local function unescape(s)
  return (string.gsub(s, '\1([\1\2])', function(c) if c == '\1' then return '\0' end return '\1' end))
end
local function parse_member(m)
  local a = string.find(m, '\0', 1, true)
  local b = string.find(m, '\0', a + 1, true)
  return unescape(string.sub(m, a + 1, b - 1)), unescape(string.sub(m, b + 1))
end
local function forget(prefix, sid)
  local refs = prefix .. 'refs:' .. sid
  local old = redis.call('LRANGE', refs, 0, -1)
  for i = 1, #old, 2 do redis.call('ZREM', old[i], old[i + 1]) end
  redis.call('DEL', refs, prefix .. 'requests:' .. sid)
end
"""

# KEYS: session, requests, refs, audit
# ARGV: mode ('create'|'update'), expected, doc, workflow, status, updated_at, ttl_ms, n_requests,
#       (call_id, json) * n_requests, n_refs, (zset, score, member) * n_refs, audit json...
_SAVE = r"""
local cur = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == 'create' then
  if cur then return {0, cur} end
elseif cur ~= ARGV[2] then
  return {0, cur or ''}
end
local version = (tonumber(cur) or 0) + 1
local old = redis.call('LRANGE', KEYS[3], 0, -1)
for i = 1, #old, 2 do redis.call('ZREM', old[i], old[i + 1]) end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'doc', ARGV[3], 'version', version, 'workflow', ARGV[4],
           'status', ARGV[5], 'updated_at', ARGV[6])
local pos = 9
local nreq = tonumber(ARGV[8])
for _ = 1, nreq do
  redis.call('HSET', KEYS[2], ARGV[pos], ARGV[pos + 1])
  pos = pos + 2
end
local nrefs = tonumber(ARGV[pos])
pos = pos + 1
for _ = 1, nrefs do
  redis.call('ZADD', ARGV[pos], ARGV[pos + 1], ARGV[pos + 2])
  redis.call('RPUSH', KEYS[3], ARGV[pos], ARGV[pos + 2])
  pos = pos + 3
end
for i = pos, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
local ttl = tonumber(ARGV[7])
if ttl ~= 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  if nreq > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
else
  redis.call('PERSIST', KEYS[1])
end
return {1, version}
"""

# KEYS: session, requests, refs, audit.  ARGV: check ('1'|'0'), expected
_DELETE = r"""
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and ARGV[1] == '1' and cur ~= ARGV[2] then return {-1, cur} end
local old = redis.call('LRANGE', KEYS[3], 0, -1)
for i = 1, #old, 2 do redis.call('ZREM', old[i], old[i + 1]) end
redis.call('DEL', KEYS[2], KEYS[3])
if not cur then return {0, ''} end
redis.call('DEL', KEYS[1], KEYS[4])
return {1, cur}
"""

# Byte order for Lua, exactly as ZRANGEBYLEX orders members. Lua's own string comparison uses
# strcoll, i.e. the server's LC_COLLATE, which need not be byte order, so strings are compared
# through a sort key instead: the bytes (zero-padded to whole chunks) read as big-endian unsigned
# numbers by the struct library, W bytes each (6 below 2^53, exact in Lua's doubles; 4 on a build
# whose C long cannot hold 48 bits), followed by the string's length. Common chunks decide; if
# they tie, the string with fewer chunks, then the shorter one, is the prefix and comes first.
_LUA_BYTE_ORDER = r"""
local W = struct.unpack('>I6', '\1\0\0\0\0\0') == 1099511627776 and 6 or 4
local sortkey_formats = {}
local function sortkey(s)
  local n = #s
  local c = math.ceil(n / W)
  local f = sortkey_formats[c]
  if not f then
    f = '>' .. string.rep('I' .. W, c)
    sortkey_formats[c] = f
  end
  local k = {struct.unpack(f, s .. string.rep('\0', c * W - n))}
  k[c + 1] = n
  return k
end
local function before(x, y)
  local cx, cy = #x - 1, #y - 1
  for i = 1, (cx < cy and cx or cy) do
    local a, b = x[i], y[i]
    if a ~= b then return a < b end
  end
  if cx ~= cy then return cx < cy end
  return x[cx + 1] < y[cy + 1]
end
"""

# Shared by the inbox listing and the count: the filters checked per index entry, beyond the walk.
# ``in_any`` -- the entry is in one of KEYS[first .. first + n - 1] (assignee sets, when the walk is
# a person's claim index); ``claim_live`` -- its claim-until score (epoch microseconds) is after now.
_LUA_FILTERS = r"""
local function in_any(first, n, m)
  if n == 0 then return true end
  for i = first, first + n - 1 do
    if redis.call('ZSCORE', KEYS[i], m) then return true end
  end
  return false
end
local function claim_live(until_key, m, now)
  if not until_key then return true end
  local s = redis.call('ZSCORE', until_key, m)
  return s and tonumber(s) > now
end
"""

# KEYS: the inbox indexes to walk (n_walk), then n_any assignee sets an entry must be in one of,
#       then the claim-until set if claims are filtered.
#       The script walks the UNION of the walked indexes in member order, each member once (one
#       index: no filter, a workflow's, one assignee's or one person's claims; several: one per
#       assignee key).
# ARGV: prefix, start, want, budget, workflow filter flag, workflow, upper (``+``, or ``(`` due bound),
#       n_walk, n_any, claim filter flag, now (epoch microseconds)
# Returns {done, last member scanned, removed, (member, workflow, request json)...}
#
# A k-way merge. Each index is read through a cursor that buffers one ZRANGEBYLEX batch at a time
# (a share of the page, never more than the scan budget left), and a binary heap of the cursors,
# ordered by _LUA_BYTE_ORDER, yields the smallest member next; every cursor showing that same
# member moves past it, so a request listed under several keys is scanned and returned once.
# Memory is bounded by the number of indexes times the batch; nothing is written but the lazy
# cleanup (no temporary keys). The budget counts index entries consumed: a member under three of
# the walked keys costs three. With one index there is no heap and no sort key. ``due_before`` is
# the walk's upper bound (``upper``), so the walk ends at the first request not yet due.
_INBOX = _LUA_HELPERS + _LUA_BYTE_ORDER + _LUA_FILTERS + r"""
local prefix, start = ARGV[1], ARGV[2]
local want, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local by_workflow, workflow = ARGV[5] == '1', ARGV[6]
local upper, nkeys, n_any = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9])
local until_key = ARGV[10] == '1' and KEYS[nkeys + n_any + 1] or nil
local now = tonumber(ARGV[11])
local out, found, scanned, removed, last, done = {}, 0, 0, 0, '', 0
local buf, pos, more, cur, key = {}, {}, {}, {}, {}
local function fill(i, from)
  local share = math.max(want - found, 64)
  if nkeys > 1 then share = math.max(math.ceil(share / nkeys), 16) end
  local size = math.max(1, math.min(budget - scanned, share))
  local batch = redis.call('ZRANGEBYLEX', KEYS[i], from, upper, 'LIMIT', 0, size)
  buf[i], pos[i], more[i], cur[i] = batch, 1, #batch == size, batch[1]
  if cur[i] and nkeys > 1 then key[i] = sortkey(cur[i]) end
end
local function advance(i)
  local p = pos[i] + 1
  if p <= #buf[i] then
    pos[i], cur[i] = p, buf[i][p]
    if nkeys > 1 then key[i] = sortkey(cur[i]) end
  elseif more[i] then
    fill(i, '(' .. buf[i][#buf[i]])
  else
    cur[i] = nil
  end
  return cur[i] ~= nil
end
local heap, size = {}, 0
local function down(k)
  while true do
    local l, m = k * 2, k
    if l <= size and before(key[heap[l]], key[heap[m]]) then m = l end
    if l + 1 <= size and before(key[heap[l + 1]], key[heap[m]]) then m = l + 1 end
    if m == k then return end
    heap[k], heap[m] = heap[m], heap[k]
    k = m
  end
end
for i = 1, nkeys do
  fill(i, start)
  if cur[i] then
    size = size + 1
    heap[size] = i
    local k = size
    while k > 1 do
      local parent = math.floor(k / 2)
      if not before(key[heap[k]], key[heap[parent]]) then break end
      heap[k], heap[parent] = heap[parent], heap[k]
      k = parent
    end
  end
end
while size > 0 and found < want and scanned < budget do
  local m = cur[heap[1]]
  local holders = {}
  repeat
    local i = heap[1]
    holders[#holders + 1] = KEYS[i]
    if not advance(i) then
      heap[1] = heap[size]
      heap[size] = nil
      size = size - 1
    end
    if size > 1 then down(1) end
  until size == 0 or cur[heap[1]] ~= m
  scanned = scanned + #holders
  last = m
  local sid, call_id = parse_member(m)
  local wf = redis.call('HGET', prefix .. 'session:' .. sid, 'workflow')
  if not wf then
    forget(prefix, sid)
    for _, k in ipairs(holders) do redis.call('ZREM', k, m) end
    removed = removed + 1
  elseif ((not by_workflow) or wf == workflow) and in_any(nkeys + 1, n_any, m)
      and claim_live(until_key, m, now) then
    local doc = redis.call('HGET', prefix .. 'requests:' .. sid, call_id)
    if doc then
      out[#out + 1] = m
      out[#out + 1] = wf
      out[#out + 1] = doc
      found = found + 1
    else
      for _, k in ipairs(holders) do redis.call('ZREM', k, m) end
    end
  end
end
if size == 0 then done = 1 end
local reply = {done, last, removed}
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
"""

# KEYS: the session index to walk (every session, a workflow's, or a participant's).
# ARGV: prefix, start, want, budget, status filter flag, status, workflow filter flag, workflow
# Returns {done, last sid scanned, removed, (sid, workflow, status, updated_at)...}
_SESSIONS = _LUA_HELPERS + r"""
local prefix, cursor = ARGV[1], ARGV[2]
local want, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local by_status, status = ARGV[5] == '1', ARGV[6]
local by_workflow, workflow = ARGV[7] == '1', ARGV[8]
local out, found, scanned, removed, last, done = {}, 0, 0, 0, '', 0
while found < want and scanned < budget do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], cursor, '+', 'LIMIT', 0,
                           math.min(budget - scanned, math.max(want - found, 64)))
  if #batch == 0 then done = 1 break end
  for _, sid in ipairs(batch) do
    scanned = scanned + 1
    last = sid
    local row = redis.call('HMGET', prefix .. 'session:' .. sid, 'workflow', 'status', 'updated_at')
    if not row[1] then
      forget(prefix, sid)
      redis.call('ZREM', KEYS[1], sid)
      removed = removed + 1
    elseif ((not by_status) or row[2] == status) and ((not by_workflow) or row[1] == workflow) then
      out[#out + 1] = sid
      out[#out + 1] = row[1]
      out[#out + 1] = row[2] or ''
      out[#out + 1] = row[3] or ''
      found = found + 1
    end
    if found >= want then break end
  end
  cursor = '(' .. last
end
local reply = {done, last, removed}
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
"""

# KEYS: the inbox indexes to walk (n_walk), then n_any assignee sets an entry must be in one of,
#       then the workflow set an entry must be in (if filtered), then the claim-until set (if filtered).
# ARGV: prefix, upper (``+``, or ``(`` due bound), n_walk, n_any, workflow flag, claim flag, now (epoch us)
# Returns the number of distinct entries of the walked indexes' union, below ``upper``, passing the filters.
#
# First the sessions in ``idx:inbox:ttl`` (saved with a TTL while listing requests: the only ones whose
# index entries Redis can strand) that Redis has expired are forgotten, so every entry left belongs to a
# live session and one index with no further filter is counted by ZLEXCOUNT alone. One index and a
# workflow set: the smaller of the two is walked and membership checked in the other (ZSCORE). Otherwise
# the walked entries are checked by ZSCORE (assignee sets, workflow set, claim-until score) and, with
# several walked indexes, counted once each through a table of members seen. No request is read.
_COUNT = _LUA_HELPERS + _LUA_FILTERS + r"""
local prefix, upper = ARGV[1], ARGV[2]
local n_walk, n_any = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = tonumber(ARGV[7])
local walk = {}
for i = 1, n_walk do walk[i] = KEYS[i] end
local k = n_walk + n_any + 1
local wf_key, until_key = nil, nil
if ARGV[5] == '1' then wf_key = KEYS[k] k = k + 1 end
if ARGV[6] == '1' then until_key = KEYS[k] end
for _, sid in ipairs(redis.call('ZRANGE', prefix .. 'idx:inbox:ttl', 0, -1)) do
  if redis.call('EXISTS', prefix .. 'session:' .. sid) == 0 then forget(prefix, sid) end
end
if n_walk == 1 and n_any == 0 and not until_key then
  if not wf_key then return redis.call('ZLEXCOUNT', walk[1], '-', upper) end
  if redis.call('ZLEXCOUNT', wf_key, '-', upper) < redis.call('ZLEXCOUNT', walk[1], '-', upper) then
    walk[1], wf_key = wf_key, walk[1]
  end
end
local seen = n_walk > 1 and {} or nil
local count = 0
for i = 1, n_walk do
  local from = '-'
  while true do
    local batch = redis.call('ZRANGEBYLEX', walk[i], from, upper, 'LIMIT', 0, 1000)
    for _, m in ipairs(batch) do
      if not (seen and seen[m]) then
        if seen then seen[m] = true end
        if ((not wf_key) or redis.call('ZSCORE', wf_key, m)) and in_any(n_walk + 1, n_any, m)
            and claim_live(until_key, m, now) then
          local sid = parse_member(m)
          if redis.call('EXISTS', prefix .. 'session:' .. sid) == 1 then
            count = count + 1
          else
            forget(prefix, sid)
          end
        end
      end
    end
    if #batch < 1000 then break end
    from = '(' .. batch[#batch]
  end
end
return count
"""

# Delegations. Drop every index entry of a delegator (its ``delegate`` mapping says which ``to:`` set).
_LUA_DELEGATION_HELPERS = r"""
local function drop_delegation(prefix, delegator)
  local map = prefix .. 'idx:delegations:delegate'
  local to = redis.call('HGET', map, delegator)
  if to then redis.call('ZREM', prefix .. 'idx:delegations:to:' .. to, delegator) end
  redis.call('ZREM', prefix .. 'idx:delegations', delegator)
  redis.call('HDEL', map, delegator)
end
"""

# KEYS: delegation.  ARGV: prefix, delegator, mode ('create'|'update'), expected, doc, delegate, ends_at_ms
# Returns {1, version} or {0, current version or ''}
_DELEGATION_SAVE = _LUA_DELEGATION_HELPERS + r"""
local prefix, delegator = ARGV[1], ARGV[2]
local cur = redis.call('HGET', KEYS[1], 'version')
if ARGV[3] == 'create' then
  if cur then return {0, cur} end
elseif cur ~= ARGV[4] then
  return {0, cur or ''}
end
drop_delegation(prefix, delegator)
local version = (tonumber(cur) or 0) + 1
redis.call('HSET', KEYS[1], 'doc', ARGV[5], 'version', version, 'delegate', ARGV[6])
redis.call('PEXPIREAT', KEYS[1], ARGV[7])
if redis.call('EXISTS', KEYS[1]) == 1 then  -- an ends_at in the past deleted it at once
  redis.call('ZADD', prefix .. 'idx:delegations', 0, delegator)
  redis.call('ZADD', prefix .. 'idx:delegations:to:' .. ARGV[6], 0, delegator)
  redis.call('HSET', prefix .. 'idx:delegations:delegate', delegator, ARGV[6])
end
return {1, version}
"""

# KEYS: delegation.  ARGV: prefix, delegator, check ('1'|'0'), expected
# Returns {1, version} deleted, {0, ''} absent, {-1, version} version mismatch
_DELEGATION_DELETE = _LUA_DELEGATION_HELPERS + r"""
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and ARGV[3] == '1' and cur ~= ARGV[4] then return {-1, cur} end
drop_delegation(ARGV[1], ARGV[2])
if not cur then return {0, ''} end
redis.call('DEL', KEYS[1])
return {1, cur}
"""

# KEYS: the index to walk (every delegation, or one delegate's).
# ARGV: prefix, start, budget, delegate filter flag, delegate
# Returns {done, last delegator scanned, doc...}; entries of expired delegations are dropped.
_DELEGATION_LIST = _LUA_DELEGATION_HELPERS + r"""
local prefix, budget = ARGV[1], tonumber(ARGV[3])
local by_delegate, delegate = ARGV[4] == '1', ARGV[5]
local batch = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, budget)
local reply = {#batch < budget and 1 or 0, batch[#batch] or ''}
for _, delegator in ipairs(batch) do
  local row = redis.call('HMGET', prefix .. 'delegation:' .. delegator, 'doc', 'delegate')
  if not row[1] then
    drop_delegation(prefix, delegator)
  elseif by_delegate and row[2] ~= delegate then
    redis.call('ZREM', KEYS[1], delegator)
  else
    reply[#reply + 1] = row[1]
  end
end
return reply
"""

_UNESCAPE = re.compile("\x01([\x01\x02])")


def _escape(part: str) -> str:
    """Order-preserving escape that frees NUL to act as the lowest-sorting separator."""
    return part.replace("\x01", "\x01\x02").replace("\x00", "\x01\x01")


def _unescape(part: str) -> str:
    return _UNESCAPE.sub(lambda m: "\x00" if m.group(1) == "\x01" else "\x01", part)


def _inbox_member(created_at: str, session_id: str, call_id: str) -> str:
    return "\x00".join((created_at, _escape(session_id), _escape(call_id)))


def _split_member(member: str) -> tuple[str, str, str]:
    created_at, sid, call_id = member.split("\x00")
    return created_at, _unescape(sid), _unescape(call_id)


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _upper(due_before: dt.datetime | None) -> str:
    """The inbox walk's upper bound: before the due stamp (an order key below it is due), else none."""
    return "(" + due_stamp(due_before) if due_before is not None else "+"


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _epoch_micros(moment: dt.datetime) -> int:
    """Exact microseconds since the epoch (a naive value is UTC): a claim-until score, exact in a double."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _now_micros() -> int:
    """Now, for claims: this process's real time (as a claim's ``claimed_until`` was set)."""
    return time.time_ns() // 1000


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _key_token(token: str, arity: int) -> list[str]:
    """Decode a continuation token this backend issued: a list of ``arity`` strings."""
    values = decode_token(token, arity)
    if not all(isinstance(v, str) for v in values):
        raise InvalidContinuationError("continuation token is malformed")
    return values


def _where(url: str) -> str:
    """host:port/db of a URL, never its credentials (safe for messages and logs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def pooled_client(url: str, *, socket_timeout: float, connect_timeout: float, retries: int,
                  max_connections: int, **client_options: Any) -> aioredis.Redis:
    """A redis-py client on a blocking pool for ``url`` (``redis://``, ``rediss://`` or ``unix://``),
    shared by every Redis storage of the project. ``retries`` bounds the reconnect attempts (short
    jittered backoff); TCP keepalive replaces health-check PINGs; under a burst, callers wait for a
    free connection (up to the socket timeout) instead of failing with "Too many connections"."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"Redis URL must start with redis://, rediss:// or unix://, got {scheme}://")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries),
        "socket_keepalive": True,
    }
    options.update(client_options)
    options["decode_responses"] = False
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=socket_timeout,
                                                    **options)
    return aioredis.Redis.from_pool(pool)


class RedisCheckpointStorage:
    """Checkpoints in Redis; every write is one atomic script call (see the module docstring)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        client: aioredis.Redis | None = None,
        key_prefix: str = "hitl:",
        max_document_bytes: int | None = DEFAULT_MAX_DOCUMENT_BYTES,
        scan_budget: int = 1000,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        max_connections: int = 64,
        **client_options: Any,
    ) -> None:
        """Connect with ``url`` (``redis://``, ``rediss://`` or ``unix://``; password in the URL) or
        use ``client`` (then the caller owns it and :meth:`close` leaves it open).

        ``retries`` bounds redis-py's reconnect attempts (short jittered backoff) so an outage
        surfaces quickly as :class:`StorageUnavailableError` instead of stalling a function
        invocation. A retried save whose first attempt did reach the server reports a
        :class:`ConcurrencyError` (its own write moved the version): reload and compare, as after
        any conflict. TCP keepalive is on instead of redis-py's health-check PINGs, which would
        add a round trip to the first call after an idle spell. At most ``max_connections`` are
        open; further callers wait for one. ``client_options`` go to the connection pool
        (e.g. ``ssl_ca_certs``, ``health_check_interval``).
        """
        if client is None:
            if not url:
                raise ValueError("RedisCheckpointStorage needs url= (HITL_REDIS_URL) or client=")
            client = pooled_client(url, socket_timeout=socket_timeout, connect_timeout=connect_timeout,
                                   retries=retries, max_connections=max_connections, **client_options)
            self._owns_client = True
            self._where = _where(url)
        else:
            self._owns_client = False
            kwargs = client.connection_pool.connection_kwargs
            self._where = f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        if scan_budget < 1:
            raise ValueError("scan_budget must be at least 1")
        self._client = client
        self.key_prefix = key_prefix
        self.max_document_bytes = max_document_bytes
        self.scan_budget = scan_budget
        self._save_script = client.register_script(_SAVE)
        self._delete_script = client.register_script(_DELETE)
        self._inbox_script = client.register_script(_INBOX)
        self._sessions_script = client.register_script(_SESSIONS)
        self._count_script = client.register_script(_COUNT)
        self._delegation_save_script = client.register_script(_DELEGATION_SAVE)
        self._delegation_delete_script = client.register_script(_DELEGATION_DELETE)
        self._delegation_list_script = client.register_script(_DELEGATION_LIST)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> RedisCheckpointStorage:
        """The storage ``HITL_STORAGE=redis`` selects: ``HITL_REDIS_URL`` (password inside the URL)."""
        if not settings.redis_url:
            raise ValueError("HITL_STORAGE=redis needs HITL_REDIS_URL (redis://:PASSWORD@host:6379/0 or rediss://...)")
        return cls(settings.redis_url, **overrides)

    @property
    def client(self) -> aioredis.Redis:
        """The redis-py client (for health checks and tests)."""
        return self._client

    # -- keys -------------------------------------------------------------------------------
    def _session_keys(self, session_id: str) -> list[str]:
        p = self.key_prefix
        return [f"{p}session:{session_id}", f"{p}requests:{session_id}", f"{p}refs:{session_id}",
                f"{p}audit:{session_id}"]

    def _inbox_index(self, *, workflow: str | None = None, assignee: str | None = None) -> str:
        if assignee is not None:
            return f"{self.key_prefix}idx:inbox:as:{assignee}"
        if workflow is not None:
            return f"{self.key_prefix}idx:inbox:wf:{workflow}"
        return f"{self.key_prefix}idx:inbox"

    def _claim_indexes(self, person: str) -> tuple[str, str]:
        """The person's claims: (walked in inbox order, score = claimed_until in epoch microseconds)."""
        return f"{self.key_prefix}idx:inbox:claim:{person}", f"{self.key_prefix}idx:inbox:claim-until:{person}"

    def _sessions_index(self, workflow: str | None = None, *, participant: str | None = None) -> str:
        if participant is not None:
            return f"{self.key_prefix}idx:sessions:who:{participant}"
        if workflow is not None:
            return f"{self.key_prefix}idx:sessions:wf:{workflow}"
        return f"{self.key_prefix}idx:sessions"

    def _refs(self, checkpoint: WorkflowCheckpoint, *, expiring: bool) -> list[tuple[str, int, str]]:
        """Every (index key, score, member) entry the checkpoint must be listed under.

        ``expiring``: the session is saved with a TTL, so its inbox entries go in ``idx:inbox:ttl``.
        """
        sid, wf = checkpoint.session_id, checkpoint.workflow
        refs = [(self._sessions_index(), 0, sid), (self._sessions_index(wf), 0, sid)]
        refs.extend((self._sessions_index(participant=person), 0, sid) for person in participants(checkpoint))
        for pending in checkpoint.pending_requests:
            member = _inbox_member(inbox_order(pending), sid, pending.call_id)
            refs.append((self._inbox_index(), 0, member))
            refs.append((self._inbox_index(workflow=wf), 0, member))
            refs.extend((self._inbox_index(assignee=a), 0, member) for a in dict.fromkeys(pending.approvers))
            if pending.claimed_by and pending.claimed_until is not None:
                walked, until = self._claim_indexes(pending.claimed_by)
                refs.append((walked, 0, member))
                refs.append((until, _epoch_micros(pending.claimed_until), member))
        if expiring and checkpoint.pending_requests:
            refs.append((f"{self.key_prefix}idx:inbox:ttl", 0, sid))
        return refs

    def _inbox_plan(
        self, workflow: str | None, keys: tuple[str, ...] | None, claimed_by: str | None
    ) -> tuple[list[str], list[str], str | None]:
        """What an inbox call walks: (indexes whose union is walked, assignee sets an entry must be
        in one of, the claim-until set to check). A workflow filter is applied on top, except when
        the workflow's own index is the walk."""
        if claimed_by is not None:
            walked, until = self._claim_indexes(claimed_by)
            return [walked], [self._inbox_index(assignee=k) for k in keys or ()], until
        if keys is None:
            return [self._inbox_index(workflow=workflow)], [], None
        return [self._inbox_index(assignee=k) for k in keys], [], None

    # -- error translation ------------------------------------------------------------------
    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        """Turn redis-py errors into the project's error tree (never echoing credentials)."""
        try:
            yield
        except redis_errors.AuthenticationError as exc:
            raise self._auth_error(what, exc) from exc
        except redis_errors.BusyLoadingError as exc:
            raise StorageUnavailableError(
                f"redis at {self._where} is loading its data set ({what}); retry shortly", retry_after=1
            ) from exc
        except (TimeoutError, redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise StorageUnavailableError(
                f"redis at {self._where} is unreachable ({what}): {exc}", retry_after=1
            ) from exc
        except redis_errors.ResponseError as exc:
            code = str(exc).split(" ", 1)[0].upper()
            if code in _AUTH_REPLIES:
                raise self._auth_error(what, exc) from exc
            if code in _TRANSIENT_REPLIES:
                raise StorageUnavailableError(
                    f"redis at {self._where} cannot serve {what} right now ({code}): {exc}", retry_after=1
                ) from exc
            raise StorageError(f"redis at {self._where} refused {what}: {exc}") from exc
        except redis_errors.RedisError as exc:
            raise StorageError(f"redis at {self._where} failed during {what}: {exc}") from exc

    def _auth_error(self, what: str, exc: Exception) -> StorageUnavailableError:
        return StorageUnavailableError(
            f"redis at {self._where} rejected the credentials ({what}): {exc}. "
            "Check the password in HITL_REDIS_URL (redis://:PASSWORD@host:port/0 or rediss://...).",
            retry_after=None,
        )

    # -- the protocol -----------------------------------------------------------------------
    async def load(self, session_id: str) -> StoredCheckpoint | None:
        with self._translated("load"):
            doc, version = await self._client.hmget(self._session_keys(session_id)[0], ["doc", "version"])
        if doc is None or version is None:
            return None
        return StoredCheckpoint(checkpoint=decode_document(doc), version=_text(version))

    async def save(
        self,
        checkpoint: WorkflowCheckpoint,
        *,
        expected_version: str | None,
        ttl_seconds: int | None = None,
        audit: Sequence[AuditRecord] = (),
    ) -> str:
        text = encode_document(checkpoint, self.max_document_bytes)  # raises before any write
        sid = checkpoint.session_id
        ttl_ms = int(ttl_seconds * 1000) if ttl_seconds else 0
        args: list[str | int] = [
            "create" if expected_version is None else "update",
            expected_version or "",
            text,
            checkpoint.workflow,
            checkpoint.status,
            checkpoint.updated_at.isoformat(),
            ttl_ms,
            len(checkpoint.pending_requests),
        ]
        for pending in checkpoint.pending_requests:
            args += [pending.call_id, pending.model_dump_json()]
        refs = self._refs(checkpoint, expiring=ttl_ms != 0)
        args.append(len(refs))
        for key, score, member in refs:
            args += [key, score, member]
        args += [record.model_dump_json() for record in audit]
        with self._translated("save"):
            ok, value = await self._save_script(keys=self._session_keys(sid), args=args)
        if int(ok) != 1:
            actual = _text(value)
            raise ConcurrencyError(sid, expected_version, actual or None)
        return _text(value)

    async def delete(self, session_id: str, *, expected_version: str | None = None) -> bool:
        args = ["0", ""] if expected_version is None else ["1", expected_version]
        with self._translated("delete"):
            ok, value = await self._delete_script(keys=self._session_keys(session_id), args=args)
        if int(ok) == -1:
            raise ConcurrencyError(session_id, expected_version, _text(value))
        return int(ok) == 1

    async def list_sessions(
        self,
        *,
        workflow: str | None = None,
        status: str | None = None,
        participant: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> Page[SessionSummary]:
        """One script call per page: a walk of the participant's, the workflow's or every session's index."""
        start = "(" + _key_token(continuation, 1)[0] if continuation else "-"
        if limit <= 0:
            return Page[SessionSummary](items=[], continuation=None)
        if participant is not None:
            index, by_workflow = self._sessions_index(participant=participant), workflow is not None
        else:
            index, by_workflow = self._sessions_index(workflow), False
        filters: list[str | int] = [_flag(status is not None), status or "", _flag(by_workflow), workflow or ""]
        done, last, rows = await self._walk(self._sessions_script, [index], start, limit, filters, "list_sessions")
        items = [
            SessionSummary.model_validate({"session_id": _text(rows[i]), "workflow": _text(rows[i + 1]),
                                           "status": _text(rows[i + 2]), "updated_at": _text(rows[i + 3])})
            for i in range(0, len(rows), 4)
        ]
        token: str | None = None
        if len(items) > limit:
            items = items[:limit]
            token = encode_token([items[-1].session_id])
        elif not done and last:
            token = encode_token([last])
        return Page[SessionSummary](items=items, continuation=token)

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
        """One script call per page: a walk of the narrowest index, or of the union of the keys' indexes.

        The narrowest index is the person's claim index with ``claimed_by`` (the assignee keys then
        checked by ``ZSCORE``), else the assignee keys' ``idx:inbox:as:`` sets merged by the script
        (see ``_INBOX``), else the workflow's or the whole inbox. A workflow filter on top of a claim
        or assignee walk is checked in the script; ``due_before`` bounds the walk from above.
        """
        keys = inbox_assignees(assignee, assignees)
        start = "(" + _inbox_member(*_key_token(continuation, 3)) if continuation else "-"
        if limit <= 0 or keys == ():
            return Page[PendingRequestEntry](items=[], continuation=None)
        walked, any_of, until = self._inbox_plan(workflow, keys, claimed_by)
        by_workflow = workflow is not None and (claimed_by is not None or keys is not None)
        filters: list[str | int] = [
            _flag(by_workflow), workflow or "", _upper(due_before), len(walked), len(any_of), _flag(until is not None),
            _now_micros(),
        ]
        done, last, rows = await self._walk(
            self._inbox_script, [*walked, *any_of, *([until] if until else [])], start, limit, filters,
            "list_pending_requests",
        )
        members = [_text(rows[i]) for i in range(0, len(rows), 3)]
        items = [
            PendingRequestEntry(
                session_id=_split_member(members[n])[1],
                workflow=_text(rows[3 * n + 1]),
                request=PendingRequest.model_validate_json(rows[3 * n + 2]),
            )
            for n in range(len(members))
        ]
        token: str | None = None
        if len(items) > limit:
            items = items[:limit]
            token = encode_token(list(_split_member(members[limit - 1])))
        elif not done and last:
            token = encode_token(list(_split_member(last)))
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
        """One script call (``_COUNT``): ZLEXCOUNT where one index answers, else ZSCORE checks of the
        walked index entries; no request document is read."""
        keys = inbox_assignees(assignee, assignees)
        if keys == ():
            return 0
        walked, any_of, until = self._inbox_plan(workflow, keys, claimed_by)
        wf_set = [self._inbox_index(workflow=workflow)] if workflow is not None and (
            claimed_by is not None or keys is not None) else []
        args: list[str | int] = [
            self.key_prefix, _upper(due_before), len(walked), len(any_of), _flag(bool(wf_set)),
            _flag(until is not None), _now_micros(),
        ]
        with self._translated("count_pending_requests"):
            count = await self._count_script(keys=[*walked, *any_of, *wf_set, *([until] if until else [])], args=args)
        return int(count)

    async def _walk(
        self, script: Any, keys: Sequence[str], start: str, limit: int, filters: Sequence[str | int], what: str
    ) -> tuple[bool, str, list[Any]]:
        """Run one listing script call: (indexes exhausted?, last entry scanned, flat rows)."""
        args: list[str | int] = [self.key_prefix, start, limit + 1, self.scan_budget, *filters]
        with self._translated(what):
            reply = await script(keys=list(keys), args=args)
        return int(reply[0]) == 1, _text(reply[1]), list(reply[3:])

    async def list_audit(self, session_id: str) -> list[AuditRecord]:
        with self._translated("list_audit"):
            raw = await self._client.lrange(self._session_keys(session_id)[3], 0, -1)
        records = [AuditRecord.model_validate_json(item) for item in raw]
        records.sort(key=lambda r: r.seq)  # stable: equal seqs keep their append order
        return records

    async def purge_expired(self) -> int:
        """Remove the index entries of sessions Redis has expired; returns how many were dropped.

        Reads clean up lazily anyway; run this from a timer to keep the indexes small when
        nobody lists them. The audit lists of expired sessions are kept, as in the other backends.
        """
        removed = 0
        walks: list[tuple[Any, str, list[str | int]]] = [
            (self._sessions_script, self._sessions_index(), ["0", "", "0", ""]),
            (self._inbox_script, self._inbox_index(), ["0", "", "+", 1, 0, "0", 0]),
        ]
        for script, index, filters in walks:
            start = "-"
            while True:
                args: list[str | int] = [self.key_prefix, start, self.scan_budget + 1, self.scan_budget, *filters]
                with self._translated("purge_expired"):
                    reply = await script(keys=[index], args=args)
                removed += int(reply[2])
                last = _text(reply[1])
                if int(reply[0]) == 1 or not last:
                    break
                start = "(" + last
        return removed

    # -- delegations --------------------------------------------------------------------------
    def _delegation_key(self, delegator: str) -> str:
        return f"{self.key_prefix}delegation:{delegator}"

    async def load_delegation(self, delegator: str) -> StoredDelegation | None:
        """One ``HMGET``; Redis itself dropped the hash if the delegation has ended."""
        with self._translated("load_delegation"):
            doc, version = await self._client.hmget(self._delegation_key(delegator), ["doc", "version"])
        if doc is None or version is None:
            return None
        return StoredDelegation(delegation=Delegation.model_validate_json(doc), version=_text(version))

    async def save_delegation(self, delegation: Delegation, *, expected_version: str | None) -> str:
        """One script call: compare the version, write, PEXPIREAT ``ends_at``, move the index entries."""
        delegator = delegation.delegator
        args: list[str | int] = [
            self.key_prefix, delegator, "create" if expected_version is None else "update", expected_version or "",
            delegation.model_dump_json(), delegation.delegate, int(epoch_seconds(delegation.ends_at) * 1000),
        ]
        with self._translated("save_delegation"):
            ok, value = await self._delegation_save_script(keys=[self._delegation_key(delegator)], args=args)
        if int(ok) != 1:
            raise ConcurrencyError(delegator, expected_version, _text(value) or None)
        return _text(value)

    async def delete_delegation(self, delegator: str, *, expected_version: str | None = None) -> bool:
        args = [self.key_prefix, delegator, *(["0", ""] if expected_version is None else ["1", expected_version])]
        with self._translated("delete_delegation"):
            ok, value = await self._delegation_delete_script(keys=[self._delegation_key(delegator)], args=args)
        if int(ok) == -1:
            raise ConcurrencyError(delegator, expected_version, _text(value))
        return int(ok) == 1

    async def list_delegations(self, *, delegate: str | None = None) -> list[Delegation]:
        """A walk of one index in delegator order, ``scan_budget`` entries per script call."""
        p = self.key_prefix
        index = f"{p}idx:delegations" if delegate is None else f"{p}idx:delegations:to:{delegate}"
        found: list[Delegation] = []
        start = "-"
        while True:
            args: list[str | int] = [p, start, self.scan_budget, "0" if delegate is None else "1", delegate or ""]
            with self._translated("list_delegations"):
                reply = await self._delegation_list_script(keys=[index], args=args)
            found.extend(Delegation.model_validate_json(doc) for doc in reply[2:])
            last = _text(reply[1])
            if int(reply[0]) == 1 or not last:
                return found
            start = "(" + last

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailableError` unless Redis answers (for health checks)."""
        with self._translated("ping"):
            await self._client.ping()

    async def close(self) -> None:
        """Close the connection pool if this storage created the client."""
        if self._owns_client:
            await self._client.aclose()
