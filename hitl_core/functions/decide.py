"""Decision links: ``GET /api/decide?token=...`` shows a confirmation page; only POST decides.

Each e-mailed link carries a token signed for **one recipient** (their directory id): the page
says who is deciding, and the decision is authorised and recorded as that person, ``via: link``.
A token without a recipient is a *sign-in link* (sent to fallback recipients when nobody named
can be e-mailed): the page asks the reader to sign in (App Service Authentication) and the
decision is made as the signed-in person.

Mail scanners prefetch links, so opening a link never decides and never writes anything — not
even an audit record. Refusals of a POST are audited only when the token is correctly signed
(a forged token cannot write into any session's audit), as the person it names, and at most
``HITL_REFUSAL_AUDIT_LIMIT`` times per request per hour. Every outcome is a small HTML page with
strict security headers.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from ..access import Caller
from ..checkpoint.models import utcnow
from ..errors import (
    HitlError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    ResponseValidationError,
    SessionClosedError,
    SessionNotFoundError,
    UnknownRequestError,
)
from ..links import DecisionClaims, LinkTokenError
from ..views import RequestView
from ..webapp import render
from ..webapp.forms import DECISION, Form, build_form, field_errors, read_answer
from ..webapp.present import approvals_needed, approvers_text, due, person_label, rows
from .identity import caller_from_request, link_caller
from .runtime import get_runtime

bp = df.Blueprint()
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
}


def page(title: str, body: str, status: int = 200) -> func.HttpResponse:
    """A message page in the reviewer app's look; ``body`` is HTML its caller escaped."""
    document = render("raw.html", title=title, body=body, me=None, dev=False, csrf="")
    return func.HttpResponse(document, status_code=status, mimetype="text/html", charset="utf-8",
                             headers=dict(SECURITY_HEADERS))


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


def _acting(req: func.HttpRequest, claims: DecisionClaims) -> Caller:
    """Who decides through this link: the person it was minted for, or (sign-in link) the signed-in caller."""
    settings = get_runtime().settings
    if claims.approver:
        return link_caller(req, settings, claims.approver)
    return caller_from_request(req, settings, via="link")


def _sign_in_page(req: func.HttpRequest) -> func.HttpResponse:
    target = urllib.parse.quote(req.url, safe="")
    return page("Sign in to decide",
                "<p>This link was sent to a shared address. Sign in, then open it again: the decision is recorded "
                f"in your name.</p><p><a href='/.auth/login/aad?post_login_redirect_uri={html.escape(target)}'>"
                "Sign in</a></p>", 401)


async def _already(claims: DecisionClaims) -> func.HttpResponse:
    """"Already decided by X at T", from the stored decision (or a plain page if there is none)."""
    try:
        view = await get_runtime().service.get_session(claims.session_id)
    except HitlError:
        view = None
    decision = next((d for d in (view.decisions if view else []) if d.get("call_id") == claims.call_id), None)
    if decision is None:
        return page("Already decided", "<p>This request has already been decided or is no longer open.</p>", 410)
    who = await person_label(get_runtime().service.directory, decision.get("decided_by"))
    outcome = {"answered": "decided", "expired": "expired", "cancelled": "cancelled",
               "auto_responded": "answered automatically"}.get(str(decision.get("outcome")), "closed")
    return page("Already decided",
                f"<p>This request was already {html.escape(outcome)} by {html.escape(who)} at "
                f"{html.escape(str(decision.get('decided_at', ''))[:19].replace('T', ' '))} UTC.</p>", 410)


def _refused(exc: Exception) -> func.HttpResponse:
    if isinstance(exc, LinkTokenError):
        if exc.expired:
            return page("Link expired", "<p>This decision link has expired, so it can no longer decide anything. "
                        "If the request still waits for you, open it from <a href='/api/app/inbox'>your inbox</a> "
                        "in the reviewer app.</p>", 410)
        return page("Link not valid", f"<p>{html.escape(str(exc))}.</p>", 403)
    if isinstance(exc, SessionNotFoundError):
        return page("Not found", "<p>This request does not exist any more.</p>", 410)
    if isinstance(exc, NotAuthorizedError):
        return page("Not allowed", f"<p>{html.escape(str(exc))}</p>", 403)
    if isinstance(exc, ResponseValidationError):
        return page("Invalid answer", f"<p>{html.escape(str(exc))}</p>", 422)
    return page("Something went wrong", "<p>The decision could not be recorded. Try again later.</p>", 503)


async def _pending(claims: DecisionClaims) -> RequestView | None:
    view = await get_runtime().service.get_session(claims.session_id)
    return next((r for r in view.pending_requests if r.call_id == claims.call_id), None)


@bp.route(route="decide", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def decide_page(req: func.HttpRequest) -> func.HttpResponse:
    token = req.params.get("token")
    try:
        claims = _claims(token)
        request = await _pending(claims)
        if request is None:
            return await _already(claims)
        caller = _acting(req, claims)
        if caller.user is None:
            return _sign_in_page(req)
        return await _link_page(claims, token or "", request, caller)
    except (HitlError, LinkTokenError) as exc:  # opening a link never writes, not even a refusal record
        return _refused(exc)


async def _link_page(claims: DecisionClaims, token: str, request: RequestView, caller: Caller, *,
                     form: Form | None = None, status: int = 200, notice: str = "") -> func.HttpResponse:
    """The request as the reviewer app shows it, with the same generated form (the token rides in it),
    saying who decides through it ("Ron Rivera for Leo Lind" for a delegate), from one read."""
    service = get_runtime().service
    stored = await service.storage.load(claims.session_id)
    try:
        acting = await service.decider(claims.session_id, claims.call_id, caller,
                                       checkpoint=stored.checkpoint if stored else None)
    except NotAuthorizedError as exc:
        return page("Not allowed", f"<p>{html.escape(str(exc))}</p>", 403)
    who = await person_label(service.directory, caller.user)
    if acting.on_behalf_of:  # a delegate: say for whom, as the audit will
        who = f"{who} for {await person_label(service.directory, acting.on_behalf_of)}"
    pending = stored.checkpoint.find_pending(claims.call_id) if stored else None
    schema = service.request_schema(pending) if pending is not None else {}
    now = utcnow()
    approvers = await approvers_text(service.directory, request.approvers)
    voters = ", ".join(str(v.get("voter")) + (f" (by {v['by']})" if v.get("by") else "") for v in request.votes)
    form = form or build_form(request.response_schema,
                              decision_field=(request.approval or {}).get("decision_field", "approved"))
    document = render("link.html", title="Decision needed", me=None, dev=False, csrf="", deciding_as=who,
                      request=request, rows=rows(request.data, schema, now), due=due(request.deadline, now),
                      approvers=approvers, needed=approvals_needed(request),
                      approvals=sum(1 for v in request.votes if v.get("approve")), voters=voters or "nobody yet",
                      form=form, action="decide", token=token, notice=notice)
    return func.HttpResponse(document, status_code=status, mimetype="text/html", charset="utf-8",
                             headers=dict(SECURITY_HEADERS))


@bp.route(route="decide", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def decide_submit(req: func.HttpRequest) -> func.HttpResponse:
    form = urllib.parse.parse_qs((req.get_body() or b"")[:65536].decode("utf-8", "replace"),
                                 keep_blank_values=True, max_num_fields=200)
    token: str | None = (form.get("token") or [""])[0] or None
    decision = (form.get("decision") or [""])[0]  # the short form: decision=approve|reject, text=...
    text = (form.get("text") or [""])[0]
    try:
        claims = _claims(token)
    except LinkTokenError as exc:
        return _refused(exc)  # not signed by us (or no token): nothing is written anywhere
    caller = _acting(req, claims)
    service = get_runtime().service
    try:
        if caller.user is None:
            return _sign_in_page(req)
        generated = DECISION in form or any(k not in ("token", "decision", "text") for k in form)
        if not generated and decision not in ("approve", "reject"):
            return page("Invalid answer", "<p>Choose Approve or Reject.</p>", 400)
        request = await _pending(claims)
        if request is None:
            await service.audit_refusal(claims.session_id, claims.call_id, caller,
                                        "decision link used after the request was decided or closed")
            return await _already(claims)
        reason = await service.may_decide(claims.session_id, claims.call_id, caller)
        if reason is not None:
            await service.audit_refusal(claims.session_id, claims.call_id, caller, reason)
            return page("Not allowed", f"<p>{html.escape(reason)}</p>", 403)
        answer_form = build_form(request.response_schema,
                                 decision_field=(request.approval or {}).get("decision_field", "approved"))
        if generated:  # the page's own form, generated from the response schema
            result, readable = read_answer(answer_form, form)
            if not readable:
                return await _link_page(claims, token or "", request, caller, form=answer_form,
                                        status=422, notice="Some answers need attention; nothing was recorded.")
            decision = "approve" if result.get(answer_form.decision.name if answer_form.decision else "") else "reject"
        else:
            result = {"approved": decision == "approve"}
            field = _text_field(request.response_schema)
            if field and text:
                result[field] = text
        try:
            view = await service.respond(claims.session_id, claims.call_id, result, caller=caller)
        except ResponseValidationError as exc:
            field_errors(answer_form, exc.errors)
            return await _link_page(claims, token or "", request, caller, form=answer_form,
                                    status=422, notice="Some answers need attention; nothing was recorded.")
    except (RequestAlreadyHandledError, UnknownRequestError, SessionClosedError):
        await service.audit_refusal(claims.session_id, claims.call_id, caller,
                                    "decision link used after the request was decided or closed")
        return await _already(claims)
    except HitlError as exc:
        return _refused(exc)  # a refused decision was audited by the service
    verb = "approved" if decision == "approve" else "rejected"
    still = next((r for r in view.pending_requests if r.call_id == claims.call_id), None)
    if still is not None:  # a vote under a quorum policy: the request waits for more
        approvals = sum(1 for v in still.votes if v.get("approve"))
        return page("Vote recorded", f"<p>You {verb} the request. Your vote is recorded: {approvals} approval(s) "
                                     f"of {approvals_needed(still)} so far; the request waits for the others.</p>")
    return page("Thank you", f"<p>You {verb} the request. The workflow has continued.</p>")
