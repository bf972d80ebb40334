"""JSON encoding of workflow values — never pickle.

Checkpoints must outlive the process that wrote them and must be safe to load, so values are
stored as JSON with a small tag where JSON alone would lose the type::

    {"__hitl__": "dataclass", "t": "my_app.review:HumanReviewRequest", "v": {...fields...}}

Dataclasses, pydantic models and enums round-trip to their own classes; tuples, sets,
datetimes, dates, times, timedeltas, UUIDs, decimals, bytes, non-finite floats and dicts with
non-string keys round-trip too. Anything else raises :class:`SerializationError` naming the
path of the offending value, at the moment the value is handed to the workflow — not later, as
a logged warning and a lost checkpoint.

Decoding resolves a tagged class by ``module:qualname`` and only accepts dataclasses, pydantic
models and enums, so a tampered checkpoint cannot make the loader call arbitrary callables.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import importlib
import math
import uuid
from decimal import Decimal
from typing import Any

from pydantic import BaseModel

from .errors import SerializationError

TAG = "__hitl__"

_registry: dict[str, type] = {}
_field_cache: dict[type, tuple[str, ...]] = {}


def type_name(cls: type) -> str:
    """The stable ``module:qualname`` name used in checkpoints for ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_type(cls: type) -> type:
    """Make ``cls`` resolvable by name even when it cannot be imported (e.g. defined in a function)."""
    _registry[type_name(cls)] = cls
    return cls


def resolve_type(name: str) -> type:
    """Find the class stored under ``name``; only dataclasses, pydantic models and enums qualify."""
    cls = _registry.get(name)
    if cls is not None:
        return cls
    module_name, _, qualname = name.partition(":")
    if not module_name or not qualname or "<locals>" in qualname:
        raise SerializationError(
            f"cannot resolve stored type {name!r}: define it at module level so another process can import it"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise SerializationError(f"cannot resolve stored type {name!r}: {exc}") from exc
    if not isinstance(obj, type) or not (
        dataclasses.is_dataclass(obj) or issubclass(obj, BaseModel | enum.Enum)
    ):
        raise SerializationError(f"stored type {name!r} is not a dataclass, pydantic model or enum")
    _registry[name] = obj
    return obj


def _dataclass_fields(cls: type) -> tuple[str, ...]:
    names = _field_cache.get(cls)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        _field_cache[cls] = names
    return names


def encode(value: Any, path: str = "value") -> Any:
    """Turn ``value`` into JSON-compatible data, tagging what JSON would lose."""
    if value is None or value is True or value is False or type(value) is str or type(value) is int:
        return value
    if type(value) is float:
        if math.isfinite(value):
            return value
        return {TAG: "float", "v": repr(value)}
    if type(value) is list:
        return [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if type(value) is dict:
        if TAG not in value and all(type(k) is str for k in value):
            return {k: encode(v, f"{path}[{k!r}]") for k, v in value.items()}
        return {TAG: "dict", "v": [[encode(k, f"{path}<key>"), encode(v, f"{path}[{k!r}]")] for k, v in value.items()]}
    cls: type
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        _registry.setdefault(type_name(cls), cls)
        return {
            TAG: "dataclass",
            "t": type_name(cls),
            "v": {name: encode(getattr(value, name), f"{path}.{name}") for name in _dataclass_fields(cls)},
        }
    if isinstance(value, BaseModel):
        cls = type(value)
        _registry.setdefault(type_name(cls), cls)
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:
            raise SerializationError(f"{path}: pydantic model {type_name(cls)} cannot be dumped: {exc}") from exc
        return {TAG: "model", "t": type_name(cls), "v": dumped}
    if isinstance(value, enum.Enum):
        cls = type(value)
        _registry.setdefault(type_name(cls), cls)
        return {TAG: "enum", "t": type_name(cls), "v": encode(value.value, f"{path}.value")}
    if isinstance(value, bool | int | str):  # subclasses that are not enums
        return encode(bool(value) if isinstance(value, bool) else (int(value) if isinstance(value, int)
                                                                    else str(value)), path)
    if isinstance(value, float):
        return encode(float(value), path)
    if isinstance(value, tuple):
        return {TAG: "tuple", "v": [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]}
    if isinstance(value, frozenset | set):
        kind = "frozenset" if isinstance(value, frozenset) else "set"
        return {TAG: kind, "v": [encode(item, f"{path}{{}}") for item in value]}
    if isinstance(value, list):
        return [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return encode(dict(value), path)
    if isinstance(value, dt.datetime):
        return {TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {TAG: "time", "v": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {TAG: "uuid", "v": str(value)}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "v": str(value)}
    if isinstance(value, bytes | bytearray):
        return {TAG: "bytes", "v": base64.b64encode(bytes(value)).decode("ascii")}
    raise SerializationError(
        f"{path}: a {type(value).__module__}.{type(value).__qualname__} cannot be stored in a checkpoint; "
        "use primitives, dataclasses or pydantic models"
    )


def decode(data: Any) -> Any:
    """Inverse of :func:`encode`."""
    if type(data) is list:
        return [decode(item) for item in data]
    if type(data) is not dict:
        return data
    tag = data.get(TAG)
    if tag is None:
        return {k: decode(v) for k, v in data.items()}
    payload: Any = data.get("v")
    if tag == "dataclass":
        cls = resolve_type(data["t"])
        values = {k: decode(v) for k, v in payload.items()}
        init_names = {f.name for f in dataclasses.fields(cls) if f.init}
        obj = cls(**{k: v for k, v in values.items() if k in init_names})
        for k, v in values.items():
            if k not in init_names:
                object.__setattr__(obj, k, v)
        return obj
    if tag == "model":
        model_cls = resolve_type(data["t"])
        return model_cls.model_validate(payload)  # type: ignore[attr-defined]
    if tag == "enum":
        return resolve_type(data["t"])(decode(payload))
    if tag == "tuple":
        return tuple(decode(item) for item in payload)
    if tag == "set":
        return {decode(item) for item in payload}
    if tag == "frozenset":
        return frozenset(decode(item) for item in payload)
    if tag == "dict":
        return {decode(k): decode(v) for k, v in payload}
    if tag == "datetime":
        return dt.datetime.fromisoformat(payload)
    if tag == "date":
        return dt.date.fromisoformat(payload)
    if tag == "time":
        return dt.time.fromisoformat(payload)
    if tag == "timedelta":
        return dt.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2])
    if tag == "uuid":
        return uuid.UUID(payload)
    if tag == "decimal":
        return Decimal(payload)
    if tag == "bytes":
        return base64.b64decode(payload)
    if tag == "float":
        return float(payload)
    raise SerializationError(f"unknown tag {tag!r} in stored data")


def plain(data: Any) -> Any:
    """The untagged JSON view of encoded data, for people and HTTP clients (not reversible)."""
    if type(data) is list:
        return [plain(item) for item in data]
    if type(data) is not dict:
        return data
    tag = data.get(TAG)
    if tag is None:
        return {k: plain(v) for k, v in data.items()}
    payload: Any = data.get("v")
    if tag in ("dataclass", "enum"):
        return plain(payload)
    if tag == "model":
        return payload
    if tag in ("tuple", "set", "frozenset"):
        return [plain(item) for item in payload]
    if tag == "dict":
        return {str(plain(k)): plain(v) for k, v in payload}
    if tag == "timedelta":
        return dt.timedelta(days=payload[0], seconds=payload[1], microseconds=payload[2]).total_seconds()
    if tag == "float":
        return payload
    return payload
