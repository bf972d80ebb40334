"""Signed decision links: safe to put in an e-mail.

A token binds (session, call_id, approver) and an expiry, signed with HMAC-SHA256. ``approver``
is the directory id of the person the link was e-mailed to: the decision is made *as that
person*. A token without an approver is a sign-in link (sent to fallback recipients when nobody
named can be e-mailed): whoever opens it must sign in, and decides as themselves. The first
configured key signs; every configured key verifies, so keys can be rotated by prepending a new
one and dropping the old one after the link lifetime. A token is usable once in practice: the
decision consumes the request, and a reused token finds it answered.

Format: ``base64url(json payload) "." base64url(hmac)`` — no secrets inside, only ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence

from pydantic import BaseModel, ValidationError

from .errors import HitlError

#: Longer than any token this signer mints (ids are at most 128 characters each).
MAX_TOKEN_LENGTH = 2048


class LinkTokenError(HitlError):
    """A decision link token is forged, tampered with, malformed or expired."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


class DecisionClaims(BaseModel):
    session_id: str
    call_id: str
    approver: str | None = None
    expires_at: int
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and verifies decision tokens with rotating HMAC keys."""

    def __init__(self, keys: Sequence[str], *, ttl_seconds: int, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("LinkSigner needs at least one key")
        self._keys = [k.encode("utf-8") for k in keys]
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def sign(self, session_id: str, call_id: str, approver: str | None = None, *,
             ttl_seconds: int | None = None) -> str:
        claims = DecisionClaims(
            session_id=session_id,
            call_id=call_id,
            approver=approver,
            expires_at=int(self._clock()) + (ttl_seconds or self.ttl_seconds),
            nonce=secrets.token_urlsafe(8),
        )
        payload = _b64(claims.model_dump_json().encode("utf-8"))
        mac = hmac.new(self._keys[0], payload.encode("ascii"), hashlib.sha256).digest()
        return f"{payload}.{_b64(mac)}"

    def verify(self, token: str) -> DecisionClaims:
        """The claims of a correctly signed, unexpired token; :class:`LinkTokenError` otherwise.

        Any text is answered with a claim set or that error (never another exception): tokens
        arrive from URLs and forms, truncated, re-encoded or forged.
        """
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise LinkTokenError("decision link is malformed")
        try:
            payload, signature = token.split(".")
            given = _unb64(signature)
        except (ValueError, UnicodeError):
            raise LinkTokenError("decision link is malformed") from None
        if not any(
            hmac.compare_digest(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest(), given)
            for key in self._keys
        ):
            raise LinkTokenError("decision link signature is invalid")
        try:
            claims = DecisionClaims.model_validate(json.loads(_unb64(payload)))
        except (ValueError, ValidationError, UnicodeError, RecursionError):
            raise LinkTokenError("decision link is malformed") from None
        if claims.expires_at <= self._clock():
            raise LinkTokenError("decision link has expired", expired=True)
        return claims
