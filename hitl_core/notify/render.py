"""Turn a request event into a human-readable :class:`Notification` (subject, text, HTML).

Why this is separate from the channels: every channel (webhook, e-mail, whatever comes next)
must say the same thing, and the rendering is the part worth unit-testing without a server.

Everything in a request view comes from workflow authors or their users, so every value is
treated as untrusted: HTML output escapes each value with :func:`html.escape`, only
``http``/``https`` links are made clickable, and the subject is a single line without control
characters (a newline in a header would be header injection).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from ..settings import Settings
from .models import REQUEST_ESCALATED, REQUEST_REMINDER, CloudEvent, Notification, Recipient, RequestView

#: Longest rendered value of one ``data`` field; longer ones end in an ellipsis.
MAX_VALUE_CHARS = 500
#: At most this many ``data`` fields are listed; the rest are counted.
MAX_FIELDS = 50
#: Longest summary in a subject line.
MAX_SUBJECT_SUMMARY = 80

_SUMMARY_KEYS = ("title", "summary", "subject", "name", "question", "description", "prompt", "message", "text")
_EMAIL = re.compile(r"^[^@\s<>,;:\"()\[\]\\]+@[^@\s<>,;:\"()\[\]\\]+\.[^@\s<>,;:\"()\[\]\\]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s+")


def render_notification(
    event: CloudEvent | Any,
    settings: Settings | None = None,
    *,
    now: datetime | None = None,
    public_base_url: str | None = None,
    default_recipients: Sequence[str] | None = None,
    recipient: Recipient | None = None,
    recipients: Sequence[Recipient] | None = None,
) -> Notification:
    """Render a ``hitl.request.*`` event.

    ``settings`` supplies ``public_base_url`` (for the fallback decide link) and
    ``notify_default_recipients`` (when no approver is an e-mail address); the keyword
    arguments override them. ``now`` fixes the clock for the relative deadline.
    """
    cloud_event = CloudEvent.coerce(event)
    request = RequestView.from_event(cloud_event)
    settings = settings or Settings()
    base_url = (public_base_url if public_base_url is not None else settings.public_base_url).rstrip("/")
    defaults = (
        tuple(default_recipients)
        if default_recipients is not None
        else tuple(getattr(settings, "notify_default_recipients", ()))
    )
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)

    summary = short_summary(request)
    subject = _subject(cloud_event.type, request, summary)
    if recipient is not None and recipient.decide_url:
        request = request.model_copy(update={"decide_url": recipient.decide_url})
    decide_url, fallback = _decide_link(request, base_url)
    deadline = _deadline(request.deadline, moment)
    fields = list(_data_fields(request.data, moment))
    expected = describe_response_schema(request.response_schema)
    return Notification(
        event_id=cloud_event.id,
        event_type=cloud_event.type,
        workflow=request.workflow,
        session_id=request.session_id,
        call_id=request.call_id,
        subject=subject,
        text=_text(cloud_event.type, request, summary, deadline, fields, expected, decide_url, fallback,
                   personal=recipient is not None, on_behalf_of=recipient.on_behalf_of if recipient else None),
        html=_html(cloud_event.type, request, summary, subject, deadline, fields, expected, decide_url, fallback,
                   personal=recipient is not None, on_behalf_of=recipient.on_behalf_of if recipient else None),
        recipients=([recipient.email] if recipient is not None
                    else [r.email for r in recipients] if recipients
                    else recipients_for(request.approvers, defaults)),
        decide_url=decide_url,
        personal=recipient,
    )


def recipients_for(approvers: Iterable[str], defaults: Iterable[str] = ()) -> list[str]:
    """Approvers that look like e-mail addresses (deduplicated, order kept); else the defaults.

    Approvers can also be user ids or group names, which no mail server can deliver to, so
    they are left out rather than sent as bogus addresses.
    """
    found = _unique(a.strip() for a in approvers if isinstance(a, str) and _EMAIL.match(a.strip()))
    return found or _unique(d.strip() for d in defaults if d and _EMAIL.match(d.strip()))


def quorum_progress(request: RequestView) -> str:
    """"2 approvals needed; 1 so far (fay approved)" for a request under a quorum policy, else ""."""
    approval = getattr(request, "approval", None)
    if not isinstance(approval, dict) or approval.get("quorum", 1) in (1, None):
        return ""  # no policy, or one whose first answer decides (kept for its claim rule or escalation chain)
    votes = [v for v in (getattr(request, "votes", None) or []) if isinstance(v, dict)]
    approvals = sum(1 for v in votes if v.get("approve"))
    cast = ", ".join(f"{v.get('voter')} {'approved' if v.get('approve') else 'rejected'}" for v in votes)
    needed = approval.get("quorum")
    veto = " One rejection ends it." if approval.get("veto", True) else ""
    return f"{needed} approvals needed; {approvals} so far" + (f" ({cast})." if cast else ".") + veto


def short_summary(request: RequestView) -> str:
    """One line describing the request: a title-like field of ``data``, else the first text."""
    data = request.data
    candidate: str | None = None
    if isinstance(data, dict):
        lowered = {str(k).lower(): v for k, v in data.items()}
        for key in _SUMMARY_KEYS:
            value = lowered.get(key)
            if isinstance(value, str) and value.strip():
                candidate = value
                break
        if candidate is None:
            candidate = next((v for v in data.values() if isinstance(v, str) and v.strip()), None)
    elif isinstance(data, str) and data.strip():
        candidate = data
    if candidate is None:
        candidate = request.request_type or request.call_id
    return _truncate(_one_line(candidate), MAX_SUBJECT_SUMMARY)


def describe_response_schema(schema: dict[str, Any]) -> list[str]:
    """Human lines for the expected answer: ``name: type (required) — description``."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        required = set(schema.get("required") or ())
        lines = []
        for name, prop in properties.items():
            kind = _schema_type(prop, defs)
            flag = "required" if name in required else "optional"
            description = prop.get("description") if isinstance(prop, dict) else None
            line = f"{name}: {kind} ({flag})"
            if isinstance(description, str) and description.strip():
                line += f" - {_truncate(_one_line(description), 200)}"
            lines.append(line)
        return lines
    if schema:
        return [f"a JSON value of type {_schema_type(schema, defs)}"]
    return ["any JSON value"]


def _subject(event_type: str, request: RequestView, summary: str) -> str:
    prefix = "[hitl] "
    if event_type == REQUEST_REMINDER:
        number = request.reminder_number
        prefix += f"Reminder {number}: " if number else "Reminder: "
    elif event_type == REQUEST_ESCALATED:
        prefix += f"Escalated ({position}): " if (position := _step_position(request)) else "Escalated: "
    return _one_line(f"{prefix}Approval needed: {request.workflow} \u2014 {summary}")


def _decide_link(request: RequestView, base_url: str) -> tuple[str, str | None]:
    """The link to decide, and (when the service sent none) how to answer through the API."""
    if request.decide_url:
        return request.decide_url, None
    session_path = f"/api/sessions/{quote(request.session_id, safe='')}"
    example = json.dumps({"call_id": request.call_id, "result": "..."}, ensure_ascii=False)
    fallback = (
        f"To decide, POST to {base_url}{session_path}/responses with a JSON body {example}, "
        "where result is the answer described above."
    )
    return f"{base_url}{session_path}", fallback


def _deadline(deadline: datetime | None, now: datetime) -> str:
    if deadline is None:
        return "no deadline"
    stamp = deadline.astimezone(UTC).isoformat(timespec="seconds")
    return f"{stamp} ({relative_time(deadline, now)})"


def relative_time(when: datetime, now: datetime) -> str:
    """``in 2 days`` / ``overdue by 3 hours``: rounded to the largest sensible unit."""
    seconds = (when - now).total_seconds()
    span = abs(seconds)
    if span < 60:
        return "in less than a minute" if seconds >= 0 else "overdue by less than a minute"
    if span >= 86400:
        amount, unit = round(span / 86400), "day"
    elif span >= 3600:
        amount, unit = round(span / 3600), "hour"
    else:
        amount, unit = round(span / 60), "minute"
    phrase = f"{amount} {unit}{'' if amount == 1 else 's'}"
    return f"in {phrase}" if seconds >= 0 else f"overdue by {phrase}"


def _data_fields(data: Any, now: datetime | None = None) -> Iterable[tuple[str, str]]:
    """The request's fields as the reviewer app shows them (labels, money with its currency, times)."""
    from ..webapp.present import rows

    if isinstance(data, dict):
        shown = rows({str(k): v for k, v in data.items()}, {}, now or datetime.now(UTC))
        for row in shown[:MAX_FIELDS]:
            text = f"{row.text} ({row.relative})" if row.relative else row.text
            yield _truncate(_one_line(row.label), 100), _truncate(text, MAX_VALUE_CHARS)
        if len(shown) > MAX_FIELDS:
            yield "\u2026", f"{len(shown) - MAX_FIELDS} more field(s) not shown"
    elif data is not None and data != "":
        yield "value", _format_value(data)


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return _truncate(text, MAX_VALUE_CHARS)


def _text(
    event_type: str,
    request: RequestView,
    summary: str,
    deadline: str,
    fields: list[tuple[str, str]],
    expected: list[str],
    decide_url: str,
    fallback: str | None,
    *,
    personal: bool = False,
    on_behalf_of: str | None = None,
) -> str:
    lines = [f"Approval needed: {request.workflow} - {summary}"]
    if on_behalf_of:
        lines.append(_standing_in(on_behalf_of))
    if request.decide_url and "token=" in request.decide_url:
        lines.append("This link is yours alone: whoever uses it decides in your name.")
    note = _note(event_type, request, personal)
    if note:
        lines.append(note)
    lines += [
        "",
        f"Workflow:  {request.workflow}",
        f"Session:   {request.session_id}",
        f"Call id:   {request.call_id}",
    ]
    if request.request_type:
        lines.append(f"Request:   {request.request_type}")
    lines += [
        f"Deadline:  {deadline}",
        f"Approvers: {', '.join(request.approvers) if request.approvers else 'anyone allowed to decide'}",
        *([f"Votes:     {quorum_progress(request)}"] if quorum_progress(request) else []),
        "",
        "Details:",
    ]
    if fields:
        for key, value in fields:
            value_lines = value.splitlines() or [""]
            lines.append(f"  {key}: {value_lines[0]}")
            lines.extend(f"    {more}" for more in value_lines[1:])
    else:
        lines.append("  (none)")
    lines += ["", "Expected answer:"]
    lines.extend(f"  {line}" for line in expected)
    lines += ["", f"{'See the request' if fallback else 'Decide'}: {decide_url}"]
    if fallback:
        lines.append(fallback)
    return "\n".join(lines) + "\n"


def _html(
    event_type: str,
    request: RequestView,
    summary: str,
    subject: str,
    deadline: str,
    fields: list[tuple[str, str]],
    expected: list[str],
    decide_url: str,
    fallback: str | None,
    *,
    personal: bool = False,
    on_behalf_of: str | None = None,
) -> str:
    e = _escape
    rows = [
        ("Workflow", e(request.workflow)),
        ("Session", f"<code>{e(request.session_id)}</code>"),
        ("Call id", f"<code>{e(request.call_id)}</code>"),
    ]
    if request.request_type:
        rows.append(("Request", e(request.request_type)))
    rows += [
        ("Deadline", e(deadline)),
        ("Approvers", e(", ".join(request.approvers)) if request.approvers else "anyone allowed to decide"),
    ]
    if quorum_progress(request):
        rows.append(("Votes", e(quorum_progress(request))))
    meta = "\n".join(f'<tr><th align="left">{name}</th><td>{value}</td></tr>' for name, value in rows)
    details = (
        "\n".join(
            f'<tr><th align="left" valign="top">{e(key)}</th>'
            f'<td><pre style="white-space:pre-wrap;margin:0">{e(value)}</pre></td></tr>'
            for key, value in fields
        )
        or "<tr><td>(none)</td></tr>"
    )
    answer = "\n".join(f"<li>{e(line)}</li>" for line in expected)
    if _is_web_url(decide_url):
        link = f'<a href="{e(decide_url)}">{e(decide_url)}</a>'
    else:
        link = f"<code>{e(decide_url)}</code>"
    note = _note(event_type, request, personal)
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>' + e(subject) + "</title></head><body>",
        f"<h2>Approval needed: {e(request.workflow)} \u2014 {e(summary)}</h2>",
    ]
    if on_behalf_of:
        parts.append(f"<p><strong>{e(_standing_in(on_behalf_of))}</strong></p>")
    if note:
        parts.append(f"<p><strong>{e(note)}</strong></p>")
    parts += [
        f"<table>\n{meta}\n</table>",
        "<h3>Details</h3>",
        f"<table>\n{details}\n</table>",
        "<h3>Expected answer</h3>",
        f"<ul>\n{answer}\n</ul>",
        f"<p>{'See the request' if fallback else 'Decide'}: {link}</p>",
    ]
    if fallback:
        parts.append(f"<p>{e(fallback)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _step_position(request: RequestView) -> str:
    """"step 2 of 3" when an escalation chain's step sent the event, else ""."""
    info = request.escalation or {}
    step, of = info.get("step"), info.get("of")
    if isinstance(step, int) and isinstance(of, int) and not isinstance(step, bool) and 0 < step <= of:
        return f"step {step} of {of}"
    return ""


def _standing_in(on_behalf_of: str) -> str:
    return (f"You receive this for {on_behalf_of}, who is away and delegated their approvals to you: "
            f"your answer counts as theirs and is recorded as given by you for {on_behalf_of}.")


def _note(event_type: str, request: RequestView, personal: bool = False) -> str | None:
    position = _step_position(request)
    chain = f" (escalation {position})" if position else ""
    if event_type == REQUEST_REMINDER:
        number = f" {request.reminder_number}" if request.reminder_number else ""
        return f"Reminder{number}{chain}: this request is still waiting for a decision."
    if event_type == REQUEST_ESCALATED:
        previous = (request.escalation or {}).get("from") or request.escalated_from
        who = ", ".join(str(p) for p in previous) if isinstance(previous, list) else ""
        missed = _when((request.escalation or {}).get("missed_deadline"))
        if position:
            target = "you" if personal else ", ".join(request.approvers) or "new approvers"
            reason = f"no decision by {missed}" if missed else "no decision in time"
            return (f"Escalated to {target}: {reason}{f' from {who}' if who else ''}. "
                    f"This is {position} of the request's escalation chain.")
        if who:
            return f"Escalated: no decision from {who} in time."
        return "Escalated: no decision was made in time."
    return None


def _when(value: Any) -> str:
    """An ISO timestamp as UTC to the second ("" when it is none)."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _truncate(_one_line(value), 40)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _schema_type(prop: Any, defs: dict[str, Any], depth: int = 0) -> str:
    if not isinstance(prop, dict) or depth > 4:
        return "any"
    if "$ref" in prop and isinstance(prop["$ref"], str):
        name = prop["$ref"].rsplit("/", 1)[-1]
        target = defs.get(name)
        if isinstance(target, dict) and "enum" in target:
            return _schema_type(target, defs, depth + 1)
        return name
    if "const" in prop:
        return json.dumps(prop["const"], ensure_ascii=False, default=str)
    if isinstance(prop.get("enum"), list):
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False, default=str) for v in prop["enum"])
    for combinator in ("anyOf", "oneOf"):
        options = prop.get(combinator)
        if isinstance(options, list) and options:
            return " | ".join(_unique(_schema_type(o, defs, depth + 1) for o in options))
    kind = prop.get("type")
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if kind == "array":
        return f"array of {_schema_type(prop.get('items'), defs, depth + 1)}"
    if isinstance(kind, str):
        return kind
    return "any"


def _escape(value: str) -> str:
    return html.escape(value, quote=True)


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _one_line(value: str) -> str:
    return _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()


def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "\u2026"


def _unique(values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for value in values:
        key = value.lower()
        if value and key not in seen:
            seen.add(key)
            out.append(value)
    return out
