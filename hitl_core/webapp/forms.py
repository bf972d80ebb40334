"""Decision forms generated from a request's response JSON Schema, and answers read back from them.

The reviewer app and the decision-link page show the same form for the same request: a boolean
decision field becomes two clearly different actions (Approve / Reject), other booleans a
checkbox, enums a set of choices, strings a text box or area with their length limits, numbers
a number box with their bounds; required fields, defaults and descriptions come from the schema.
:func:`read_answer` turns a posted form back into the JSON answer the service validates, and
:func:`field_errors` puts the service's 422 errors next to the fields they concern.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

#: The form control that carries the decision (the name of the pressed button).
DECISION = "__decision"
#: Above this many characters allowed (or with no limit), a string is a text area, not a line.
AREA_THRESHOLD = 200

Kind = Literal["decision", "checkbox", "choice", "text", "area", "number", "json"]


@dataclass
class FormField:
    name: str
    label: str
    kind: Kind
    required: bool
    description: str = ""
    default: Any = None
    options: list[tuple[str, str]] = field(default_factory=list)  # (value as posted, label)
    min_length: int | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = False
    value: Any = None  # what the reader entered (shown again after an error)
    error: str | None = None


@dataclass
class Form:
    fields: list[FormField]
    #: The boolean that says approve (two buttons), or None: one Submit button.
    decision: FormField | None
    errors: list[str] = field(default_factory=list)  # errors that belong to no one field


def _resolve(prop: dict[str, Any], defs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The property's own schema (``$ref`` followed, ``X | None`` unwrapped) and whether null is allowed."""
    nullable = False
    if "$ref" in prop:
        prop = {**defs.get(str(prop["$ref"]).rsplit("/", 1)[-1], {}), **{k: v for k, v in prop.items() if k != "$ref"}}
    branches = prop.get("anyOf") or prop.get("oneOf")
    if isinstance(branches, list):
        real = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
        nullable = len(real) < len(branches)
        if len(real) == 1 and isinstance(real[0], dict):
            inner, _ = _resolve(real[0], defs)
            prop = {**inner, **{k: v for k, v in prop.items() if k not in ("anyOf", "oneOf")}}
        elif real and all(isinstance(b, dict) and "const" in b for b in real):
            prop = {**prop, "enum": [b["const"] for b in real]}
    return prop, nullable


def build_form(schema: Mapping[str, Any], *, decision_field: str = "approved") -> Form:
    """The form for answers of ``schema`` (a JSON Schema object, as the service's ``response_schema``)."""
    defs = schema.get("$defs") or {}
    required = set(schema.get("required") or [])
    fields: list[FormField] = []
    decision: FormField | None = None
    for name, raw in (schema.get("properties") or {}).items():
        if not isinstance(raw, dict):
            continue
        prop, nullable = _resolve(raw, defs)
        label = str(prop.get("title") or name.replace("_", " ").capitalize())
        common: dict[str, Any] = {"name": name, "label": label, "required": name in required and not nullable,
                                  "description": str(prop.get("description") or ""), "default": prop.get("default")}
        kind = prop.get("type")
        if "enum" in prop and isinstance(prop["enum"], list):
            options = [(str(v).lower() if isinstance(v, bool) else str(v), str(v)) for v in prop["enum"]]
            fields.append(FormField(kind="choice", options=options,
                                    integer=all(isinstance(v, int) for v in prop["enum"]), **common))
        elif kind == "boolean":
            entry = FormField(kind="checkbox", **common)
            if decision is None and (name == decision_field or (name in required and decision_field not in
                                                                  (schema.get("properties") or {}))):
                entry.kind = "decision"
                decision = entry
            fields.append(entry)
        elif kind == "string":
            limit = prop.get("maxLength")
            area = limit is None or int(limit) > AREA_THRESHOLD
            fields.append(FormField(kind="area" if area else "text", min_length=prop.get("minLength"),
                                    max_length=limit, **common))
        elif kind in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            fields.append(FormField(kind="number", minimum=low, maximum=high, integer=kind == "integer", **common))
        else:  # an object or list: typed as JSON (rare in answers; still answerable)
            fields.append(FormField(kind="json", **common))
    return Form(fields=fields, decision=decision)


def read_answer(form: Form, posted: Mapping[str, Sequence[str]]) -> tuple[dict[str, Any], bool]:
    """The JSON answer a posted form means, and whether it could be read at all (False: errors set on
    the fields, nothing to send). Empty optional fields are left out, so their defaults apply."""
    import json

    answer: dict[str, Any] = {}
    readable = True

    def first(name: str) -> str | None:
        values = posted.get(name) or []
        return values[0] if values else None

    for entry in form.fields:
        raw = first(entry.name)
        entry.value = raw
        if entry.kind == "decision":
            pressed = first(DECISION)
            if pressed not in ("true", "false"):
                entry.error = "Choose one of the actions."
                readable = False
                continue
            answer[entry.name] = pressed == "true"
            entry.value = pressed
        elif entry.kind == "checkbox":
            answer[entry.name] = raw is not None
        elif raw is None or raw == "":
            if entry.required and entry.kind not in ("text", "area"):
                entry.error = "This field is required."
                readable = False
            elif entry.required:
                answer[entry.name] = ""
        elif entry.kind == "choice":
            allowed = {value: label for value, label in entry.options}
            if raw not in allowed:
                entry.error = "Choose one of the options."
                readable = False
            elif raw in ("true", "false") and allowed[raw] in ("True", "False"):
                answer[entry.name] = raw == "true"
            else:
                answer[entry.name] = int(raw) if entry.integer else raw
        elif entry.kind == "number":
            try:
                answer[entry.name] = int(raw) if entry.integer else float(raw)
            except ValueError:
                entry.error = "Enter a whole number." if entry.integer else "Enter a number."
                readable = False
        elif entry.kind == "json":
            try:
                answer[entry.name] = json.loads(raw)
            except ValueError:
                entry.error = "Enter valid JSON."
                readable = False
        else:
            answer[entry.name] = raw
    return answer, readable


def field_errors(form: Form, errors: Sequence[Mapping[str, Any]]) -> None:
    """Put the service's validation errors (pydantic ``loc``/``msg``) next to their fields."""
    by_name = {entry.name: entry for entry in form.fields}
    for error in errors:
        loc = list(error.get("loc") or [])
        message = str(error.get("msg") or "Invalid value.")
        target = by_name.get(str(loc[0])) if loc else None
        if target is not None:
            target.error = message if target.error is None else f"{target.error} {message}"
        else:
            form.errors.append(message)
