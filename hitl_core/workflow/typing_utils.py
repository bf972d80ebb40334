"""Small helpers to reason about handler annotations at run time.

Handlers are dispatched by the type annotation of their message parameter, so the engine needs
``isinstance`` that understands ``X | Y``, ``Any``, ``list[ChatMessage]`` and
``RequestResponse[Req, Resp]``. Checks on containers look at the elements (shallowly), which is
what lets a workflow have both a ``str`` and a ``list[ChatMessage]`` handler.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union, get_args, get_origin


def flatten_union(tp: Any) -> tuple[Any, ...]:
    """``A | B | None`` -> ``(A, B, NoneType)``; anything else -> ``(tp,)``."""
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        out: list[Any] = []
        for arg in get_args(tp):
            out.extend(flatten_union(arg))
        return tuple(out)
    if tp is None:
        return (type(None),)
    return (tp,)


def matches(value: Any, tp: Any) -> bool:
    """``isinstance`` for annotations (unions, Any, parametrised builtins)."""
    if tp is Any or tp is object:
        return True
    origin = get_origin(tp)
    if origin is Union or origin is types.UnionType:
        return any(matches(value, arg) for arg in get_args(tp))
    if origin is typing.Literal:
        return value in get_args(tp)
    if origin is None:
        return isinstance(tp, type) and isinstance(value, tp)
    if not isinstance(origin, type) or not isinstance(value, origin):
        return False
    container: Any = value
    args = get_args(tp)
    if not args:
        return True
    if origin in (list, set, frozenset):
        return all(matches(item, args[0]) for item in container)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(item, args[0]) for item in container)
        return len(args) == len(container) and all(matches(v, a) for v, a in zip(container, args, strict=True))
    if origin is dict:
        return all(matches(k, args[0]) and matches(v, args[1]) for k, v in container.items())
    return True


def describe(tp: Any) -> str:
    """A readable name for an annotation, for error messages."""
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp.__qualname__
    return repr(tp).replace("typing.", "")


def runtime_class(tp: Any) -> type | None:
    """The class behind an annotation (``list[int]`` -> ``list``), or None for Any/unions."""
    if isinstance(tp, type) and get_origin(tp) is None:
        return tp
    origin = get_origin(tp)
    return origin if isinstance(origin, type) else None
