"""The reviewer app's HTTP functions (under ``/api/app``): pages for the people in the loop.

Who is signed in: under ``easyauth``, App Service Authentication (a page without a sign-in
redirects to ``/.auth/login/aad``); under ``dev``, the person picked on the dev sign-in page (a
cookie) or the ``X-HITL-User`` header. Every form carries a CSRF token bound to that person; every
page is sent with a Content-Security-Policy without ``unsafe-inline`` (the CSS and the script are
files of their own). Every refusal is a readable page with its reason, never a stack trace, and
nothing is written by a GET.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.cookies
import logging
import re
import urllib.parse
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from ..access import Caller, Identity
from ..checkpoint.models import PendingRequest, WorkflowCheckpoint, utcnow
from ..delegation import DelegationBody
from ..errors import (
    DelegationRefusedError,
    NotAuthorizedError,
    RequestAlreadyHandledError,
    RequestClaimedError,
    ResponseValidationError,
    SessionClosedError,
    SessionNotFoundError,
    StorageUnavailableError,
    UnknownRequestError,
    VoteAlreadyRecordedError,
)
from ..serialization import plain
from ..webapp import BASE, STATIC, CsrfTokens, render, static_file
from ..webapp.forms import build_form, field_errors, read_answer
from ..webapp.present import (
    MONEY_FIELDS,
    URGENT,
    approvals_needed,
    approvers_text,
    due,
    money,
    person_label,
    relative,
    rows,
    utc_text,
)
from .identity import caller_from_request
from .runtime import get_runtime

logger = logging.getLogger(__name__)
bp = df.Blueprint()

COOKIE = "hitl_dev_user"
CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP}
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
PAGE_SIZE = 50

_tokens: dict[tuple[str, ...], CsrfTokens] = {}


def _csrf() -> CsrfTokens:
    keys = get_runtime().settings.link_signing_keys
    if keys not in _tokens:
        _tokens[keys] = CsrfTokens(keys)
    return _tokens[keys]


class PageError(Exception):
    """A refusal shown as a page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status, self.title, self.message = status, title, message


def page(template: str, status: int = 200, headers: dict[str, str] | None = None, **context: Any) -> func.HttpResponse:
    return func.HttpResponse(render(template, **context), status_code=status, mimetype="text/html", charset="utf-8",
                             headers={**HEADERS, **(headers or {})})


def redirect(location: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(status_code=303, headers={**HEADERS, "Location": location, **(headers or {})})


def _cookies(req: func.HttpRequest) -> dict[str, str]:
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    try:
        jar.load(req.headers.get("cookie") or "")
    except http.cookies.CookieError:
        return {}
    return {key: morsel.value for key, morsel in jar.items()}


def _caller(req: func.HttpRequest) -> Caller | None:
    settings = get_runtime().settings
    if settings.auth_mode == "dev":
        user = _cookies(req).get(COOKIE)
        if user and len(user) <= 256:
            caller = caller_from_request(req, settings, via="app")
            return Caller(user=user, source=caller.source, via="app", auth="dev")
    caller = caller_from_request(req, settings, via="app")
    return caller if caller.user else None


def _sign_in(req: func.HttpRequest) -> func.HttpResponse:
    target = urllib.parse.urlsplit(req.url)
    back = target.path + (f"?{target.query}" if target.query else "")
    if get_runtime().settings.auth_mode == "dev":
        return redirect(f"{BASE}/signin?next={urllib.parse.quote(back, safe='')}")
    return redirect(f"/.auth/login/aad?post_login_redirect_uri={urllib.parse.quote(back, safe='')}")


def _form(req: func.HttpRequest) -> dict[str, list[str]]:
    body = (req.get_body() or b"")[:262144]
    try:
        return urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        raise PageError(400, "Bad request", "The form could not be read.") from None


def _first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0]


def _check_id(value: str | None, what: str) -> str:
    if value is None or not _ID.fullmatch(value):
        raise PageError(404, "Not found", f"There is no such {what}.")
    return value


async def _context(req: func.HttpRequest, caller: Caller) -> dict[str, Any]:
    who = await get_runtime().service.access.identify(caller)
    return {"me": {"id": who.person_id or caller.user, "label": who.label or caller.user, "roles": sorted(who.roles)},
            "dev": get_runtime().settings.auth_mode == "dev", "csrf": _csrf().issue(who.person_id or caller.user or ""),
            "who": who}


def _verify_csrf(ctx: dict[str, Any], form: dict[str, list[str]]) -> None:
    if not _csrf().valid(ctx["me"]["id"] or "", _first(form, "csrf")):
        raise PageError(403, "Form expired", "This form is out of date or was not sent from this app. "
                                             "Go back, reload the page and try again.")


async def _serve(req: func.HttpRequest, handler: Any, *, signed_in: bool = True) -> func.HttpResponse:
    """Run a page handler: sign-in first, then every failure as a readable page."""
    caller = _caller(req)
    if signed_in and caller is None:
        return _sign_in(req)
    ctx: dict[str, Any] = {"me": None, "dev": False, "csrf": ""}
    try:
        if caller is not None:
            ctx = await _context(req, caller)
        response: func.HttpResponse = await (handler(req, caller, ctx) if signed_in else handler(req, ctx))
        return response
    except PageError as exc:
        return page("message.html", exc.status, title=exc.title, message=exc.message, bad=True, back=f"{BASE}/inbox",
                    back_label="My inbox", **ctx)
    except SessionNotFoundError:
        return page("message.html", 404, title="Not found", message="There is no such session, or it is not yours "
                    "to see.", bad=True, back=f"{BASE}/inbox", back_label="My inbox", **ctx)
    except NotAuthorizedError as exc:
        return page("message.html", 403, title="Not allowed", message=str(exc), bad=True, back=f"{BASE}/inbox",
                    back_label="My inbox", **ctx)
    except StorageUnavailableError:
        return page("message.html", 503, title="Try again shortly", message="The service cannot reach its storage "
                    "right now. Nothing was changed.", bad=True, headers={"Retry-After": "5"}, **ctx)
    except Exception:
        logger.exception("reviewer app page failed")
        return page("message.html", 503, title="Something went wrong", message="The page could not be shown. "
                    "Nothing was changed; try again later.", bad=True, **ctx)


# -- sign-in (dev), static files ----------------------------------------------------------------------
@bp.route(route="app/signin", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_signin(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, ctx: dict[str, Any]) -> func.HttpResponse:
        rt = get_runtime()
        if rt.settings.auth_mode != "dev":
            return redirect("/.auth/login/aad?post_login_redirect_uri=" + urllib.parse.quote(f"{BASE}/inbox"))
        nxt = req.params.get("next") or f"{BASE}/inbox"
        if req.method == "POST":
            form = _form(req)
            user = _first(form, "user")
            nxt = _first(form, "next") or nxt
            person = await rt.service.directory.person(user) if user else None
            if person is None:
                raise PageError(422, "Unknown person", "Choose one of the people listed.")
            target = nxt if nxt.startswith(BASE + "/") else f"{BASE}/inbox"
            return redirect(target, {"Set-Cookie": f"{COOKIE}={urllib.parse.quote(person.id)}; Path=/api; "
                                                   "HttpOnly; SameSite=Strict"})
        people = [{"id": p.id, "label": p.label, "roles": list(p.roles)} for p in await _people()]
        return page("signin.html", title="Sign in (local development)", people=people,
                    next=nxt if nxt.startswith(BASE + "/") else f"{BASE}/inbox", **ctx)

    return await _serve(req, handle, signed_in=False)


async def _people() -> list[Any]:
    directory = get_runtime().service.directory
    listed = getattr(directory, "people", None)
    return list(listed) if listed is not None else []


@bp.route(route="app/signout", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_signout(req: func.HttpRequest) -> func.HttpResponse:
    if get_runtime().settings.auth_mode != "dev":
        return redirect("/.auth/logout")
    return redirect(f"{BASE}/signin", {"Set-Cookie": f"{COOKIE}=; Path=/api; Max-Age=0; HttpOnly; SameSite=Strict"})


@bp.route(route="app/static/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_static(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params.get("name") or ""
    content = static_file(name)
    if content is None:
        return func.HttpResponse("not found", status_code=404, mimetype="text/plain", headers=dict(HEADERS))
    return func.HttpResponse(content, status_code=200, mimetype=STATIC[name],
                             headers={**HEADERS, "Cache-Control": "public, max-age=300"})


# -- the inbox ------------------------------------------------------------------------------------
@bp.route(route="app", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_home(req: func.HttpRequest) -> func.HttpResponse:
    return redirect(f"{BASE}/inbox")


def _summary(view: Any) -> str:
    """A line that says what the request is about: its first descriptive text, and the money at stake."""
    data = view.data or {}
    text = next((str(data[k]) for k in ("title", "description", "draft", "question", "summary", "stage")
                 if isinstance(data.get(k), str) and data[k].strip()), "")
    first = text.splitlines()[0] if text else str(view.request_type)
    first = (first[:80] + "…") if len(first) > 80 else first
    amount = next((data[k] for k in MONEY_FIELDS if isinstance(data.get(k), int | float)
                   and not isinstance(data.get(k), bool)), None)
    if amount is not None and isinstance(data.get("currency"), str):
        return f"{first} · {money(amount, data['currency'])}"
    return first


def _progress(view: Any) -> str:
    needed = approvals_needed(view)
    if needed is None:
        return ""
    return f"{sum(1 for v in view.votes if v.get('approve'))} of {needed} approvals"


@bp.route(route="app/inbox", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_inbox(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        service = get_runtime().service
        workflow = req.params.get("workflow") or None
        if workflow is not None and workflow not in service.specs:
            workflow = None
        soon, mine = req.params.get("due") == "soon", req.params.get("claimed") == "me"
        continuation = req.params.get("continuation") or None
        if continuation is not None and len(continuation) > 512:
            continuation = None
        now = utcnow()
        me = ctx["me"]["id"]
        # every filter is the storage's: "due within a day" is a bound on the deadline order,
        # "claimed by me" the storage's claim index, so each page is full and the counts are exact
        soon_bound = now + URGENT
        filters: dict[str, Any] = {"workflow": workflow, "due_before": soon_bound if soon else None,
                                   "claimed_by": me if mine else None}
        queries: dict[str, dict[str, Any]] = {"all": {}, "due": {"due_before": soon_bound},
                                              "claimed": {"claimed_by": me}}
        if soon and mine:
            queries["listed"] = {"due_before": soon_bound, "claimed_by": me}
        try:
            found, counts = await service.inbox_and_counts(queries, continuation=continuation, limit=PAGE_SIZE,
                                                           caller=caller, **filters)
        except ValueError:  # a continuation token this storage did not issue: start again
            found, counts = await service.inbox_and_counts(queries, limit=PAGE_SIZE, caller=caller, **filters)
        counts.setdefault("listed", counts["claimed"] if mine else counts["due"] if soon else counts["all"])
        items: list[dict[str, Any]] = []
        for view in found.items:
            items.append({"session_id": view.session_id, "call_id": view.call_id, "workflow": view.workflow,
                          "summary": _summary(view), "due": due(view.deadline, now), "claimed_by": view.claimed_by,
                          "progress": _progress(view),
                          "created": {"instant": (view.created_at or now).isoformat(),
                                      "text": utc_text(view.created_at or now)}})
        next_page = None
        if found.continuation:
            query = {k: v for k, v in (("workflow", workflow), ("due", "soon" if soon else None),
                                       ("claimed", "me" if mine else None),
                                       ("continuation", found.continuation)) if v}
            next_page = f"{BASE}/inbox?{urllib.parse.urlencode(query)}"
        return page("inbox.html", title="My inbox", items=items, shown=len(items), next_page=next_page,
                    counts=counts,
                    workflows=sorted(service.specs), delegators=found.on_behalf_of,
                    filters={"workflow": workflow, "due": soon, "claimed": mine}, **ctx)

    return await _serve(req, handle)


# -- a request: read, claim, decide --------------------------------------------------------------
async def _already(cp: WorkflowCheckpoint, call_id: str, ctx: dict[str, Any], status: int) -> func.HttpResponse:
    """What became of a request that is no longer pending: "you approved it", or "already decided by X at T"."""
    decision = cp.find_decision(call_id)
    if decision is None:
        raise PageError(404, "Not found", "This request does not exist in this session.")
    result = plain(decision.result)
    verdict = ""
    if isinstance(result, dict) and isinstance(result.get("approved"), bool):
        verdict = "approved" if result["approved"] else "rejected"
    when = utc_text(decision.decided_at)
    back: dict[str, Any] = {"back": f"{BASE}/sessions/{cp.session_id}", "back_label": "See the session and its history"}
    if decision.outcome == "expired":
        return page("message.html", status, title="Expired", bad=False, **back, **ctx,
                    message=f"This request expired at {when} without a decision.")
    me = (ctx.get("me") or {}).get("id")
    if me and decision.decided_by == me and decision.outcome == "answered":
        for_whom = f" for {decision.on_behalf_of}" if decision.on_behalf_of else ""
        return page("message.html", status, title="Thank you", bad=False, **back, **ctx,
                    message=f"You {verdict or 'answered'} this request{for_whom} at {when}. "
                            "The workflow has continued.")
    who = await person_label(get_runtime().service.directory, decision.decided_by)
    if decision.on_behalf_of:
        who += f" for {decision.on_behalf_of}"
    outcome = {"answered": "decided", "cancelled": "cancelled",
               "auto_responded": "answered automatically"}.get(decision.outcome, "closed")
    return page("message.html", status, title="Already decided", bad=False, **back, **ctx,
                message=f"Already {outcome}{f' ({verdict})' if verdict else ''} by {who} at {when}.")


async def _request_page(caller: Caller, ctx: dict[str, Any], session_id: str, call_id: str, *,
                        form: Any = None, status: int = 200, notice: str = "",
                        notice_bad: bool = False) -> func.HttpResponse:
    service = get_runtime().service
    cp, _ = await service.readable_session(session_id, caller)
    pending = cp.find_pending(call_id)
    if pending is None:
        return await _already(cp, call_id, ctx, status)
    view = service.request_view(cp, pending)
    now = utcnow()
    acting: Identity | None = None
    refusal = ""
    try:
        acting = await service.decider(session_id, call_id, caller, checkpoint=cp)
    except NotAuthorizedError as exc:
        refusal = str(exc)
    decision_field = (view.approval or {}).get("decision_field", "approved")
    form = form or build_form(view.response_schema, decision_field=decision_field)
    base = f"{BASE}/sessions/{session_id}/requests/{call_id}"
    audit = await _audit_rows(session_id, caller)
    approvers = await approvers_text(service.directory, view.approvers)
    votes = [{**v, "at_text": utc_text(dt.datetime.fromisoformat(v["at"])) if v.get("at") else ""}
             for v in view.votes]
    claimed_until = {"instant": view.claimed_until.isoformat(), "text": utc_text(view.claimed_until)} \
        if view.claimed_until else None
    return page("request.html", status, title=_summary(view), request=view,
                rows=rows(view.data, service.request_schema(pending), now), due=due(view.deadline, now),
                created={"instant": (view.created_at or now).isoformat(), "text": utc_text(view.created_at or now)},
                approvers=approvers, subject=view.subject, needed=approvals_needed(view),
                approvals=sum(1 for v in view.votes if v.get("approve")), votes=votes,
                claimed_by=view.claimed_by, claimed_until=claimed_until,
                may_decide=acting is not None, refusal=refusal,
                acting_for=acting.on_behalf_of if acting is not None else None,
                form=form, decide_action=base, claim_action=f"{base}/claim", notice=notice, notice_bad=notice_bad,
                audit=audit["records"], verified=audit["verified"], broken_at=audit["broken_at"], **ctx)


async def _audit_rows(session_id: str, caller: Caller) -> dict[str, Any]:
    view = await get_runtime().service.audit(session_id, verify=True, caller=caller)
    records = []
    for record in view.records:
        detail = record.detail or {}
        shown = {k: v for k, v in detail.items() if k in ("via", "on_behalf_of", "reason", "approve", "claimed_by")}
        records.append({"instant": record.at.isoformat(), "text": utc_text(record.at), "action": record.action,
                        "actor": record.actor, "detail": ", ".join(f"{k}: {v}" for k, v in shown.items())})
    verification = view.verification
    return {"records": records, "verified": bool(verification and verification.valid),
            "broken_at": verification.first_broken_seq if verification else None}


@bp.route(route="app/sessions/{session_id}/requests/{call_id}", methods=["GET", "POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
async def app_request(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        session_id = _check_id(req.route_params.get("session_id"), "session")
        call_id = _check_id(req.route_params.get("call_id"), "request")
        done = req.params.get("done")
        if req.method == "GET":
            notice = {"voted": "Your vote is recorded; the request waits for the others.",
                      "claimed": "You claimed this request: others see you are on it.",
                      "released": "You released your claim."}.get(done or "", "")
            return await _request_page(caller, ctx, session_id, call_id, notice=notice)
        posted = _form(req)
        _verify_csrf(ctx, posted)
        service = get_runtime().service
        cp, _ = await service.readable_session(session_id, caller)
        pending = cp.find_pending(call_id)
        if pending is None:
            return await _already(cp, call_id, ctx, 409)
        view = service.request_view(cp, pending)
        form = build_form(view.response_schema, decision_field=(view.approval or {}).get("decision_field", "approved"))
        answer, readable = read_answer(form, posted)
        if not readable:
            return await _request_page(caller, ctx, session_id, call_id, form=form, status=422,
                                       notice="Some answers need attention; nothing was recorded.", notice_bad=True)
        try:
            after = await service.respond(session_id, call_id, answer, caller=caller)
        except ResponseValidationError as exc:
            field_errors(form, exc.errors)
            return await _request_page(caller, ctx, session_id, call_id, form=form, status=422,
                                       notice="Some answers need attention; nothing was recorded.", notice_bad=True)
        except (RequestAlreadyHandledError, UnknownRequestError, SessionClosedError):
            cp, _ = await service.readable_session(session_id, caller)
            return await _already(cp, call_id, ctx, 409)
        except VoteAlreadyRecordedError as exc:
            return await _request_page(caller, ctx, session_id, call_id, status=409, notice_bad=True,
                                       notice=f"{exc.vote.get('voter')}'s vote was recorded already; a person votes "
                                              "once.")
        except RequestClaimedError as exc:
            return await _request_page(caller, ctx, session_id, call_id, status=409, notice_bad=True,
                                       notice=f"{exc.claimed_by} has claimed this request; wait for them to release "
                                              "it.")
        still = any(r.call_id == call_id for r in after.pending_requests)
        return redirect(f"{BASE}/sessions/{session_id}/requests/{call_id}" + ("?done=voted" if still else ""))

    return await _serve(req, handle)


@bp.route(route="app/sessions/{session_id}/requests/{call_id}/claim", methods=["POST"],
          auth_level=func.AuthLevel.ANONYMOUS)
async def app_claim(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        session_id = _check_id(req.route_params.get("session_id"), "session")
        call_id = _check_id(req.route_params.get("call_id"), "request")
        posted = _form(req)
        _verify_csrf(ctx, posted)
        release = _first(posted, "action") == "release"
        service = get_runtime().service
        try:
            await service.claim(session_id, call_id, caller=caller, release=release)
        except RequestClaimedError as exc:
            return await _request_page(caller, ctx, session_id, call_id, status=409, notice_bad=True,
                                       notice=f"{exc.claimed_by} claimed it first.")
        except RequestAlreadyHandledError:
            cp, _ = await service.readable_session(session_id, caller)
            return await _already(cp, call_id, ctx, 409)
        done = "released" if release else "claimed"
        return redirect(f"{BASE}/sessions/{session_id}/requests/{call_id}?done={done}")

    return await _serve(req, handle)


# -- sessions and history ---------------------------------------------------------------------------
@bp.route(route="app/sessions/{session_id}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_session(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        session_id = _check_id(req.route_params.get("session_id"), "session")
        service = get_runtime().service
        view = await service.get_session(session_id, caller=caller)
        audit = await _audit_rows(session_id, caller)
        return page("session.html", title=f"Session {session_id}", session=view, decisions=view.decisions,
                    audit=audit["records"], verified=audit["verified"], broken_at=audit["broken_at"], **ctx)

    return await _serve(req, handle)


@bp.route(route="app/history", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_history(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        service = get_runtime().service
        me = ctx["me"]["id"]
        continuation = req.params.get("continuation") or None
        if continuation is not None and len(continuation) > 512:
            continuation = None
        try:
            found = await service.history(me, continuation=continuation, limit=PAGE_SIZE)
        except ValueError:  # a continuation token this storage did not issue: start again
            found = await service.history(me, limit=PAGE_SIZE)
        loaded = await asyncio.gather(*(service.storage.load(s.session_id) for s in found.items))
        items: list[dict[str, Any]] = []
        for summary, stored in zip(found.items, loaded, strict=True):
            if stored is not None:
                items.append({"session_id": summary.session_id, "workflow": summary.workflow,
                              "status": summary.status, "part": _part(stored.checkpoint, me)})
        next_page = None
        if found.continuation:
            next_page = f"{BASE}/history?{urllib.parse.urlencode({'continuation': found.continuation})}"
        return page("history.html", title="History", items=items, next_page=next_page, **ctx)

    return await _serve(req, handle)


def _part(cp: WorkflowCheckpoint, me: str | None) -> str:
    """What ``me`` did in a session ("" when nothing): started it, decided, voted."""
    if not me:
        return ""
    acts = []
    if str(cp.metadata.get("started_by") or "").lower() == me:
        acts.append("started it")
    for decision in cp.decisions:
        if decision.decided_by == me:
            acts.append("decided" + (f" for {decision.on_behalf_of}" if decision.on_behalf_of else ""))
        elif any(v.get("voter") == me or v.get("by") == me for v in decision.votes):
            acts.append("voted")
    pending: list[PendingRequest] = cp.pending_requests
    if any(v.get("voter") == me or v.get("by") == me for p in pending for v in p.votes):
        acts.append("voted")
    return ", ".join(dict.fromkeys(acts))


# -- out of office ----------------------------------------------------------------------------------
@bp.route(route="app/delegation", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def app_delegation(req: func.HttpRequest) -> func.HttpResponse:
    async def handle(req: func.HttpRequest, caller: Caller, ctx: dict[str, Any]) -> func.HttpResponse:
        service = get_runtime().service
        me = ctx["me"]["id"] or ""
        notice, bad, days, reason, days_error = "", False, None, "", ""
        status = 200
        if req.method == "POST":
            posted = _form(req)
            _verify_csrf(ctx, posted)
            if _first(posted, "action") == "end":
                await service.delegations.end(me, caller)
                notice = "Your delegation has ended: requests for you wait for you again."
            else:
                days_text, reason = _first(posted, "days"), _first(posted, "reason")[:500]
                if not re.fullmatch(r"[0-9]{1,3}", days_text) or not 1 <= int(days_text) <= 366:
                    days_error, bad, status = "Enter a whole number of days from 1 to 366.", True, 422
                    notice = "The delegation was not saved."
                else:
                    days = int(days_text)
                    body = DelegationBody(delegate=_first(posted, "delegate") or "-", reason=reason,
                                          ends_at=utcnow() + dt.timedelta(days=days))
                    try:
                        saved = await service.delegations.put(me, body, caller)
                        notice = f"Saved: {saved.delegate} decides for you for {days} day(s)."
                    except DelegationRefusedError as exc:
                        notice, bad, status = f"Not saved: {exc}", True, 409 if exc.kind == "cycle" else 422
        view = await service.delegations.get(me, caller)
        now = utcnow()
        current = None
        if view.delegation is not None:
            d = view.delegation
            current = {"delegate": d.delegate, "reason": d.reason, "starts_at": d.starts_at.isoformat(),
                       "starts_text": utc_text(d.starts_at), "ends_at": d.ends_at.isoformat(),
                       "ends_text": f"{utc_text(d.ends_at)} ({relative(d.ends_at, now)})"}
        to_me = [{"delegator": d.delegator, "ends_at": d.ends_at.isoformat(), "ends_text": utc_text(d.ends_at)}
                 for d in view.delegated_to_them]
        people = [{"id": p.id.lower(), "label": p.label} for p in await _people() if p.id.lower() != me]
        return page("delegation.html", status, title="Out of office", current=current, to_me=to_me, people=people,
                    notice=notice, notice_bad=bad, days=days, reason=reason, days_error=days_error, **ctx)

    return await _serve(req, handle)


__all__ = ["bp"]
