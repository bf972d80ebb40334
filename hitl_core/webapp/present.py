"""A request's data as a person reads it: labels from the request type, money with its currency,
times in the reader's zone with "due in 2 days", long text folded.

Pure functions over JSON values and schemas, shared by the reviewer app and the decision-link page.
Times are rendered server-side in UTC inside ``<time datetime=…>``; the page's script rewrites
them into the reader's own time zone (without the script they stay correct, in UTC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Numeric fields that are money when the request also has a ``currency``.
MONEY_FIELDS = ("amount", "value", "total", "price", "cost")
#: Text longer than this is folded behind its first line.
FOLD_AT = 280


@dataclass(frozen=True)
class Row:
    label: str
    text: str
    description: str = ""
    #: ISO instant when the value is a time (the page localises it), else "".
    instant: str = ""
    relative: str = ""
    folded: bool = False
    summary: str = ""


def relative(moment: dt.datetime, now: dt.datetime) -> str:
    """"in 2 days", "3 hours ago", "in 5 minutes", "now"."""
    seconds = (moment - now).total_seconds()
    ahead = seconds >= 0
    span = abs(seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if span >= size * 0.95:  # 1 day 23 hours reads "in 2 days", as a person would say it
            count = max(1, round(span / size))
            text = f"{count} {unit}{'s' if count != 1 else ''}"
            return f"in {text}" if ahead else f"{text} ago"
    return "now"


def utc_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _instant(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or len(value) < 16 or "T" not in value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def money(amount: float | int, currency: str) -> str:
    """``5,000.00 EUR`` (grouped, two decimals, the ISO code after: unambiguous in every locale)."""
    return f"{amount:,.2f} {currency}"


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, int | float):
        return f"{value:,}"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "—"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_plain(v)}" for k, v in value.items()) or "—"
    if value is None or value == "":
        return "—"
    return str(value)


def rows(data: Mapping[str, Any], schema: Mapping[str, Any], now: dt.datetime) -> list[Row]:
    """The request's fields in the type's order, each labelled by its title."""
    props: Mapping[str, Any] = schema.get("properties") or {}
    order = [name for name in props if name in data] + [name for name in data if name not in props]
    currency = data.get("currency") if isinstance(data.get("currency"), str) else None
    money_field = next((n for n in MONEY_FIELDS if currency and isinstance(data.get(n), int | float)
                        and not isinstance(data.get(n), bool)), None)
    out: list[Row] = []
    for name in order:
        if name == "currency" and money_field:
            continue
        found = props.get(name)
        prop: Mapping[str, Any] = found if isinstance(found, dict) else {}
        label = str(prop.get("title") or name.replace("_", " ").capitalize())
        description = str(prop.get("description") or "")
        value = data[name]
        if name == money_field and currency:
            out.append(Row(label, money(value, currency), description))
            continue
        moment = _instant(value)
        if moment is not None:
            out.append(Row(label, utc_text(moment), description, instant=moment.isoformat(),
                           relative=relative(moment, now)))
            continue
        text = _plain(value)
        if len(text) > FOLD_AT or text.count("\n") > 4:
            first = text.splitlines()[0] if text.strip() else text
            out.append(Row(label, text, description, folded=True, summary=first[:120] + "…"))
        else:
            out.append(Row(label, text, description))
    return out


#: A deadline nearer than this is urgent: marked in red, and the inbox's "due within a day" filter.
URGENT = dt.timedelta(days=1)


def due(deadline: dt.datetime | None, now: dt.datetime) -> dict[str, str] | None:
    """The deadline as the page shows it (None: no deadline)."""
    if deadline is None:
        return None
    moment = deadline if deadline.tzinfo else deadline.replace(tzinfo=dt.UTC)
    overdue = moment <= now
    return {"instant": moment.isoformat(), "text": utc_text(moment),
            "relative": ("overdue since " + relative(moment, now).removesuffix(" ago")) if overdue
            else "due " + relative(moment, now), "urgent": "yes" if moment - now < URGENT else ""}


def approvals_needed(view: Any) -> int | None:
    """How many approvals resolve a request view (None: one answer decides, there are no votes)."""
    from ..workflow.policy import ApprovalPolicy
    from ..workflow.request_info import split_entries

    if not view.approval:
        return None
    policy = ApprovalPolicy.model_validate(view.approval)
    if not policy.votes:
        return None
    users, _ = split_entries(view.approvers)
    return policy.needed(len(users))


async def person_label(directory: Any, person_id: Any) -> str:
    """A person as readers know them: the directory's display name (the id when unknown; "someone": none)."""
    if not isinstance(person_id, str) or not person_id:
        return "someone"
    person = await directory.person(person_id)
    return str(person.label) if person else person_id


async def approvers_text(directory: Any, entries: Sequence[str]) -> str:
    """Who may decide, as people read it: names, and "everyone in the finance role" for a role entry."""
    parts = [f"everyone in the {entry.removeprefix('role:')} role" if entry.startswith("role:")
             else await person_label(directory, entry.removeprefix("user:")) for entry in entries]
    return ", ".join(parts) or "anyone signed in"
