"""Reading pycep-parser's JSON model of a Bicep file.

pycep turns a Bicep file into ``{"parameters", "variables", "resources", "modules", "outputs"}``;
an expression is a string (a literal *or* a bare symbol name), a list, an object, or a node
``{"operator": {...}}`` / ``{"function": {...}}``. A conditional resource (``= if (...) {...}``)
keeps its body under ``config.config`` next to ``config.condition``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)


class NotLiteral(ValueError):
    """The expression depends on parameters, variables, resources or functions."""


@dataclass(frozen=True)
class Resource:
    file: str  # "infra/modules/x.bicep"
    symbol: str  # the Bicep symbolic name
    type: str  # "Microsoft.Web/sites/config"
    existing: bool
    conditional: bool
    body: dict[str, Any]  # name, properties, scope, parent, ...

    @property
    def properties(self) -> dict[str, Any]:
        value = self.body.get("properties", {})
        assert isinstance(value, dict), f"{self.file}: {self.symbol}.properties is not an object literal"
        return value


def resources(file: str, template: dict[str, Any]) -> Iterator[Resource]:
    for symbol, declaration in (template.get("resources") or {}).items():
        config = declaration["config"]
        conditional = "condition" in config and isinstance(config.get("config"), dict)
        body = config["config"] if conditional else config
        yield Resource(file, symbol, declaration["type"], bool(declaration.get("existing")), conditional, body)


def all_resources(templates: dict[str, dict[str, Any]], type_: str | None = None) -> list[Resource]:
    found = [r for file, t in templates.items() for r in resources(file, t)]
    return [r for r in found if type_ is None or r.type.lower() == type_.lower()]


def symbols(template: dict[str, Any]) -> set[str]:
    """Names that a bare string in an expression may refer to."""
    names: set[str] = set()
    for section in ("parameters", "variables", "resources", "modules"):
        names.update((template.get(section) or {}).keys())
    return names


def literal(node: Any, template: dict[str, Any] | None = None) -> Any:
    """The value of a literal expression; NotLiteral if it depends on anything else.

    With ``template``, a bare string that names a symbol of that template is not a literal.
    """
    if isinstance(node, bool | int | float) or node is None:
        return node
    if isinstance(node, str):
        if template is not None and node in symbols(template):
            raise NotLiteral(node)
        if "${" in node:
            raise NotLiteral(node)
        return node
    if isinstance(node, list):
        return [literal(item, template) for item in node]
    if isinstance(node, dict):
        if set(node) == {"operator"}:
            operator = node["operator"]
            if operator.get("type") == "minus" and set(operator.get("operands", {})) == {"integer_value"}:
                return -literal(operator["operands"]["integer_value"], template)
            raise NotLiteral(str(node)[:200])
        if set(node) == {"function"}:
            raise NotLiteral(str(node)[:200])
        return {key: literal(value, template) for key, value in node.items()}
    raise NotLiteral(repr(node))


def resolve_variables(node: Any, template: dict[str, Any]) -> Any:
    """``node`` with every bare reference to one of the template's variables replaced by its value."""
    variables = template.get("variables") or {}
    if isinstance(node, str) and node in variables:
        return resolve_variables(variables[node]["value"], template)
    if isinstance(node, list):
        return [resolve_variables(item, template) for item in node]
    if isinstance(node, dict):
        return {key: resolve_variables(value, template) for key, value in node.items()}
    return node


def conditional_branches(node: Any) -> list[Any]:
    """The possible values of ``cond ? a : b`` (recursively); ``[node]`` for anything else."""
    if isinstance(node, dict) and set(node) == {"operator"} and node["operator"].get("type") == "conditional":
        operands = node["operator"]["operands"]
        return conditional_branches(operands["true_value"]) + conditional_branches(operands["false_value"])
    return [node]


def param_default(template: dict[str, Any], name: str) -> Any:
    parameters = template.get("parameters") or {}
    assert name in parameters, f"parameter {name!r} is not declared"
    return parameters[name].get("default")


def guids_in(node: Any) -> set[str]:
    """Every GUID anywhere in an expression (role definition ids are written as literals)."""
    if isinstance(node, str):
        return {match.lower() for match in GUID.findall(node)}
    if isinstance(node, list):
        return set().union(*(guids_in(item) for item in node)) if node else set()
    if isinstance(node, dict):
        return set().union(*(guids_in(value) for value in node.values())) if node else set()
    return set()


def to_bicep(value: Any, indent: int = 0) -> str:
    """Render a JSON-like literal as Bicep (to paste into a template when a copy drifted)."""
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + "".join(f"{inner}{to_bicep(v, indent + 1)}\n" for v in value) + f"{pad}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        lines = "".join(f"{inner}{k}: {to_bicep(v, indent + 1)}\n" for k, v in value.items())
        return "{\n" + lines + f"{pad}}}"
    raise TypeError(type(value))
