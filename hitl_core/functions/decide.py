"""Decision links: ``GET /api/decide?token=...`` shows a confirmation page; only POST decides.

Mail scanners prefetch links, so opening a link must never decide anything. The page shows the
request's summary and an Approve / Reject form (with a comment) that POSTs the token back.
Forged, tampered or malformed tokens get 403; expired tokens and requests already decided
(a reused link) get 410. Every outcome is a small HTML page.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from ..errors import (
    HitlError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    ResponseValidationError,
    SessionClosedError,
    SessionNotFoundError,
    UnknownRequestError,
)
from ..links import DecisionClaims, LinkSigner, LinkTokenError
from ..service import Caller
from ..views import RequestView
from .identity import _source
from .runtime import get_runtime

bp = df.Blueprint()

_STYLE = "body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem}" \
         "dt{font-weight:600}dd{margin:0 0 .6rem 0;white-space:pre-wrap}button{padding:.5rem 1.2rem;margin-right:.5rem}"


def page(title: str, body: str, status: int = 200) -> func.HttpResponse:
    document = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<meta name='robots' content='noindex'><style>{_STYLE}</style></head>"
                f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
    return func.HttpResponse(document, status_code=status, mimetype="text/html", charset="utf-8",
                             headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                      "X-Frame-Options": "DENY",
                                      "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                                                 "form-action 'self'"})


def _text_field(schema: dict[str, Any]) -> str | None:
    """The answer's free-text field (``feedback``, ``comment``...), if the schema has one."""
    for name, prop in (schema.get("properties") or {}).items():
        if name != "approved" and isinstance(prop, dict) and prop.get("type") == "string":
            return str(name)
    return None


def _claims(token: str | None) -> DecisionClaims:
    signer = get_runtime().service.signer
    if signer is None:
        raise LinkTokenError("decision links are not enabled (no HITL_LINK_SIGNING_KEYS)")
    if not token:
        raise LinkTokenError("the link has no token")
    return signer.verify(token)


async def _pending(claims: DecisionClaims) -> RequestView | None:
    view = await get_runtime().service.get_session(claims.session_id)
    return next((r for r in view.pending_requests if r.call_id == claims.call_id), None)


async def _audit_link_refusal(req: func.HttpRequest, token: str | None, exc: Exception) -> None:
    """Record a refused link (forged, expired, reused) on the session it names, if that exists."""
    claims = LinkSigner.unverified_claims(token) if token else None
    if claims is None:
        return
    caller = Caller(user=claims.approver or "decision-link", source=_source(req), via="link")
    try:
        await get_runtime().service.audit_refusal(claims.session_id, claims.call_id, caller,
                                                  f"decision link refused: {exc}")
    except HitlError:
        return


def _refused(exc: Exception) -> func.HttpResponse:
    if isinstance(exc, LinkTokenError):
        if exc.expired:
            return page("Link expired", "<p>This decision link has expired. Ask for a new one.</p>", 410)
        return page("Link not valid", f"<p>{html.escape(str(exc))}.</p>", 403)
    if isinstance(exc, RequestAlreadyHandledError | UnknownRequestError | SessionClosedError):
        return page("Already decided", "<p>This request has already been decided or is no longer open.</p>", 410)
    if isinstance(exc, SessionNotFoundError):
        return page("Not found", "<p>This request does not exist any more.</p>", 410)
    if isinstance(exc, NotAuthorizedError):
        return page("Not allowed", f"<p>{html.escape(str(exc))}</p>", 403)
    if isinstance(exc, ResponseValidationError):
        return page("Invalid answer", f"<p>{html.escape(str(exc))}</p>", 422)
    return page("Something went wrong", "<p>The decision could not be recorded. Try again later.</p>", 503)


@bp.route(route="decide", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def decide_page(req: func.HttpRequest) -> func.HttpResponse:
    try:
        token = req.params.get("token")
        claims = _claims(token)
        request = await _pending(claims)
        if request is None:
            raise RequestAlreadyHandledError(claims.call_id, {}, session_id=claims.session_id)
    except (HitlError, LinkTokenError) as exc:
        await _audit_link_refusal(req, token, exc)
        return _refused(exc)
    rows = "".join(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in request.data.items())
    deadline = html.escape(request.deadline.isoformat()) if request.deadline else "none"
    text_field = _text_field(request.response_schema)
    comment = (f"<p><label>{html.escape(text_field)}<br><textarea name='text' rows='4' cols='60'></textarea>"
               f"</label></p>") if text_field else ""
    body = (f"<p>Workflow <b>{html.escape(request.workflow)}</b>, session <code>{html.escape(request.session_id)}"
            f"</code>. Deadline: {deadline}.</p><dl>{rows}</dl>"
            f"<form method='post' action='decide'><input type='hidden' name='token' value='{html.escape(token or '')}'>"
            f"{comment}<button name='decision' value='approve'>Approve</button>"
            f"<button name='decision' value='reject'>Reject</button></form>")
    return page("Decision needed", body)


@bp.route(route="decide", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def decide_submit(req: func.HttpRequest) -> func.HttpResponse:
    form = urllib.parse.parse_qs((req.get_body() or b"")[:65536].decode("utf-8", "replace"))
    token: str | None = (form.get("token") or [""])[0] or None
    decision = (form.get("decision") or [""])[0]
    text = (form.get("text") or [""])[0]
    try:
        claims = _claims(token)
        if decision not in ("approve", "reject"):
            return page("Invalid answer", "<p>Choose Approve or Reject.</p>", 400)
        request = await _pending(claims)
        if request is None:
            raise RequestAlreadyHandledError(claims.call_id, {}, session_id=claims.session_id)
        result: dict[str, Any] = {"approved": decision == "approve"}
        field = _text_field(request.response_schema)
        if field and text:
            result[field] = text
        caller = Caller(user=claims.approver or "decision-link", source=_source(req), via="link")
        await get_runtime().service.respond(claims.session_id, claims.call_id, result, caller=caller)
    except (HitlError, LinkTokenError) as exc:
        if not isinstance(exc, NotAuthorizedError):  # the service audited that one already
            await _audit_link_refusal(req, token, exc)
        return _refused(exc)
    verb = "approved" if decision == "approve" else "rejected"
    return page("Thank you", f"<p>You {verb} the request. The workflow has continued.</p>")
