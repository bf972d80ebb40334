"""Counting a Cosmos DB container's data-plane requests, for the benchmarks that report request units.

The Cosmos DB stand-in reports no request charge, so the benchmarks estimate it from document sizes:
a point read max(1, ceil(KB)) RU, a create / replace / upsert :data:`WRITE_RU_PER_KB` RU per started
KB. :class:`CountedContainer` wraps an ``azure.cosmos.aio`` ContainerProxy and hands each request to
its subclass, which decides where the tally goes (``bench.app_cost`` per phase, ``bench.vote_bench``
per vote call or background task).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

WRITE_RU_PER_KB = 5.5


def started_kb(size: int) -> int:
    """Kilobytes as Cosmos DB charges them: every started KB, at least one."""
    return max(1, math.ceil(size / 1024))


def doc_size(doc: Any) -> int:
    """Bytes of a document's compact JSON."""
    return len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())


class CountedContainer:
    """A ContainerProxy whose point reads and writes are reported to :meth:`read` / :meth:`wrote`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def wrote(self, kind: str, doc: dict[str, Any]) -> None:
        """A create / replace / upsert (``kind``; ``batch <op>`` inside a transactional batch)."""
        raise NotImplementedError

    def read(self, doc: dict[str, Any] | None) -> None:
        """A point read; ``doc`` None when the item was missing (the request still costs 1 RU)."""
        raise NotImplementedError

    def batch(self) -> None:
        """A transactional batch request (its operations are reported to :meth:`wrote` as well)."""

    async def read_item(self, *args: Any, **kwargs: Any) -> Any:
        try:
            doc = await self._inner.read_item(*args, **kwargs)
        except Exception:
            self.read(None)
            raise
        self.read(doc)
        return doc

    async def create_item(self, body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.wrote("create", body)
        return await self._inner.create_item(body, *args, **kwargs)

    async def replace_item(self, item: Any, body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.wrote("replace", body)
        return await self._inner.replace_item(item, body, *args, **kwargs)

    async def upsert_item(self, body: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.wrote("upsert", body)
        return await self._inner.upsert_item(body, *args, **kwargs)

    async def execute_item_batch(self, operations: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        self.batch()
        for op in operations:
            self.wrote(f"batch {op[0]}", op[1][-1])
        return await self._inner.execute_item_batch(operations, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
