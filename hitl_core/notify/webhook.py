"""Generic webhook channel: a signed JSON POST, retried with exponential backoff.

Request
-------
``POST <url>`` with ``content-type: application/json`` and the body::

    {"event": <the CloudEvent as received>,
     "notification": {"subject": str, "text": str, "recipients": [str], "decide_url": str}}

Headers: ``X-HITL-Event-Id`` (the CloudEvent id: deduplicate on it, delivery is at least once),
``X-HITL-Event-Type``, ``X-HITL-Timestamp`` (unix seconds when this attempt was signed) and
``X-HITL-Signature``.

Signature scheme (how a receiver verifies)
------------------------------------------
``X-HITL-Signature: sha256=<hex>`` where ``<hex>`` is
``HMAC-SHA256(key=secret, msg=f"{X-HITL-Timestamp}.".encode() + raw_body)``. A receiver must:

1. compute the HMAC over the *raw* request bytes (before any JSON parsing/re-serialising),
2. compare in constant time (``hmac.compare_digest``),
3. reject timestamps more than a few minutes from its clock (replay protection); the
   timestamp is signed, so it cannot be changed without breaking the signature,
4. deduplicate on ``X-HITL-Event-Id``.

:func:`verify_signature` does steps 1-3. The header may carry several comma-separated
``sha256=`` values; any match is accepted (lets a sender sign with old and new keys while a
secret is rotated). Each retry is signed afresh with its own timestamp.

Retries
-------
Connection errors, timeouts, 408, 429 and 5xx are retried up to ``max_attempts`` times with
exponential backoff (``backoff_base * 2**n``, capped at ``max_backoff``) and jitter; a 429's
``Retry-After`` is honoured up to ``max_retry_after``. Other 4xx (and 3xx: a webhook should not
redirect a POST) fail at once. ``max_elapsed`` bounds the whole send, so that the Event Grid
trigger answers before Event Grid's own delivery timeout (30 s) and a retry is decided by
Event Grid's schedule rather than overlapping ours.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from .models import CloudEvent, Notification, NotificationDeliveryError

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-HITL-Signature"
TIMESTAMP_HEADER = "X-HITL-Timestamp"
EVENT_ID_HEADER = "X-HITL-Event-Id"
EVENT_TYPE_HEADER = "X-HITL-Event-Type"

_RETRYABLE_4XX = frozenset({408, 429})


def sign(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The ``X-HITL-Signature`` value for ``body`` signed at ``timestamp``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: int | str | None,
    body: bytes | str,
    header: str | None,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True if ``header`` signs ``body`` at ``timestamp`` with ``secret`` and the timestamp is fresh.

    Never raises on malformed input (a missing header, a non-numeric timestamp): a receiver
    just answers 401 when this returns False.
    """
    if not header or timestamp is None:
        return False
    try:
        stamp = int(str(timestamp).strip())
    except ValueError:
        return False
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else body
    expected = sign(secret, stamp, raw)
    candidates = [part.strip() for part in header.split(",")]
    # compare every candidate (no early exit) so timing does not reveal which one matched
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(candidate.encode(), expected.encode())
    return matched


def redact_url(url: str) -> str:
    """``url`` without user info, query string and fragment (where webhook secrets hide)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparseable url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class WebhookChannel:
    """POST each notification to one URL, signed with ``secret``.

    ``secret=None`` sends unsigned requests (no ``X-HITL-Signature`` header); only sensible for
    a receiver that authenticates otherwise. Pass ``client`` to share a connection pool (it is
    then not closed by :meth:`aclose`); otherwise one is created on first use.
    """

    def __init__(
        self,
        url: str,
        secret: str | None,
        *,
        client: httpx.AsyncClient | None = None,
        max_attempts: int = 5,
        backoff_base: float = 0.2,
        timeout: float = 5.0,
        max_backoff: float = 5.0,
        max_retry_after: float = 10.0,
        max_elapsed: float | None = 25.0,
        name: str = "webhook",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"webhook URL must be http(s)://..., got {redact_url(url)!r}")
        self.name = name
        self._url = url
        self._secret = secret
        self._client = client
        self._owns_client = client is None
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.max_elapsed = max_elapsed

    @property
    def target(self) -> str:
        """The URL as it may be logged (no query string, no credentials)."""
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"WebhookChannel({self.target!r}, signed={self._secret is not None})"

    @staticmethod
    def payload(event: CloudEvent, notification: Notification) -> bytes:
        """The exact bytes POSTed (and signed)."""
        body = {
            "event": event.model_dump(mode="json"),
            "notification": {
                "subject": notification.subject,
                "text": notification.text,
                "recipients": notification.recipients,
                "decide_url": notification.decide_url,
            },
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    async def send(self, event: CloudEvent, notification: Notification) -> None:
        """Deliver once (2xx) or raise :class:`NotificationDeliveryError` after the last attempt."""
        import httpx

        client = self._get_client()
        body = self.payload(event, notification)
        started = time.monotonic()
        last_status: int | None = None
        last_problem = "no attempt made"
        attempt = 0
        while attempt < self.max_attempts:
            attempt += 1
            retry_after: float | None = None
            headers = self._headers(event, body)
            try:
                response = await client.post(self._url, content=body, headers=headers, timeout=self.timeout)
            except httpx.TransportError as exc:  # connection errors and timeouts
                last_status = None
                last_problem = f"{type(exc).__name__}: {_describe(exc, self._url, self.target)}"
            else:
                last_status = response.status_code
                if response.is_success:
                    logger.debug("webhook %s accepted event %s (attempt %d)", self.target, event.id, attempt)
                    return
                last_problem = f"HTTP {response.status_code}"
                if not (response.status_code in _RETRYABLE_4XX or response.status_code >= 500):
                    raise self._failure(attempt, last_status, last_problem, permanent=True)
                if response.status_code == 429:
                    retry_after = _parse_retry_after(response.headers.get("retry-after"))
            if attempt >= self.max_attempts:
                break
            delay = self._delay(attempt, retry_after)
            if self.max_elapsed is not None and time.monotonic() - started + delay > self.max_elapsed:
                logger.warning(
                    "webhook %s: giving up on event %s after %d attempt(s), next retry would exceed %.1fs",
                    self.target, event.id, attempt, self.max_elapsed,
                )
                break
            logger.warning(
                "webhook %s: attempt %d/%d for event %s failed (%s); retrying in %.2fs",
                self.target, attempt, self.max_attempts, event.id, last_problem, delay,
            )
            await asyncio.sleep(delay)
        raise self._failure(attempt, last_status, last_problem, permanent=False)

    async def aclose(self) -> None:
        """Close the HTTP client if this channel created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(follow_redirects=False, headers={"user-agent": "hitl-notify/1"})
        return self._client

    def _headers(self, event: CloudEvent, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            EVENT_ID_HEADER: _header_safe(event.id),
            EVENT_TYPE_HEADER: _header_safe(event.type),
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_backoff, self.backoff_base * (2.0 ** (attempt - 1)))
        # "equal jitter": at least half the exponential step, so backoff always grows,
        # plus a random half so that many failing senders do not retry in lockstep
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _failure(
        self, attempts: int, status: int | None, problem: str, *, permanent: bool
    ) -> NotificationDeliveryError:
        why = "rejected the notification (not retried)" if permanent else f"failed after {attempts} attempt(s)"
        return NotificationDeliveryError(
            f"webhook {self.target} {why}; last status: {status if status is not None else 'none'} ({problem})",
            channel=self.name,
            target=self.target,
            attempts=attempts,
            last_status=status,
        )


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def _header_safe(value: str) -> str:
    return "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value)


def _describe(exc: BaseException, url: str, safe: str) -> str:
    text = str(exc).replace(url, safe)
    return text if text else "no detail"
