"""The reviewer's web app: an inbox, readable requests, decision forms from the response schema,
history with the audit badge, out-of-office delegation — server-rendered, served by the function app.

Framework-free pieces live here (forms, presentation, templates, CSRF tokens, static files);
the HTTP functions that serve them are in :mod:`hitl_core.functions.webapp`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from functools import cache
from importlib import resources
from typing import Any

import jinja2

#: Where the app lives under the API's route prefix.
BASE = "/api/app"
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}


@cache
def environment() -> jinja2.Environment:
    loader = jinja2.PackageLoader("hitl_core.webapp", "templates")
    env = jinja2.Environment(loader=loader, autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(base=BASE, **context)


@cache
def static_file(name: str) -> bytes | None:
    if name not in STATIC:
        return None
    return (resources.files("hitl_core.webapp") / "static" / name).read_bytes()


class CsrfTokens:
    """Form tokens bound to the signed-in person and the day: a page from another site cannot post a
    form as them, because it cannot read the token (and cookies are SameSite). Keyed by the link
    signing key when there is one (every instance agrees), else by a key of this process."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        secret = keys[0].encode() if keys else secrets.token_bytes(32)
        self._key = hmac.new(secret, b"hitl-csrf", hashlib.sha256).digest()

    def _mac(self, person: str, day: int) -> str:
        digest = hmac.new(self._key, f"{person}|{day}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:18]).decode()

    def issue(self, person: str) -> str:
        return self._mac(person, int(time.time() // 86400))

    def valid(self, person: str, token: str | None) -> bool:
        today = int(time.time() // 86400)
        return bool(token) and any(hmac.compare_digest(self._mac(person, day), token or "")
                                   for day in (today, today - 1))
