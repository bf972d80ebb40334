"""What a storage on one Cosmos DB container holds and closes (no SDK import: the Agent Framework
checkpoint storage imports the Cosmos DB SDK only when it is used)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from azure.cosmos.aio import ContainerProxy, CosmosClient


class ContainerOwner:
    """What a storage on one Cosmos DB container holds and closes, shared by every Cosmos DB storage of
    the project: the container (or the client and names to resolve it on first use), whether it may be
    created, whether writes go in one transactional batch (Azure; the stand-in cannot replace inside a
    batch), and the client and credential it opened itself."""

    def _own_container(self, container: ContainerProxy | str, *, client: CosmosClient | None, database: str,
                       create_if_missing: bool, close_client: bool, credential: Any, stand_in: bool,
                       transactional_batch: bool | None) -> None:
        if isinstance(container, str) and client is None:
            raise TypeError("pass a ContainerProxy, or client= and a container name")
        self._client = client
        self._database_name = database
        self._container_name = container if isinstance(container, str) else str(container.id)
        self._container: ContainerProxy | None = None if isinstance(container, str) else container
        self._create_if_missing = create_if_missing
        self._init_lock = asyncio.Lock()
        self._close_client = close_client
        self._credential = credential
        self.stand_in = stand_in
        self.transactional_batch = (not stand_in) if transactional_batch is None else transactional_batch

    async def close(self) -> None:
        """Close the client and credential this storage created (not ones passed in)."""
        if self._close_client and self._client is not None:
            await self._client.close()
        if self._credential is not None:
            await self._credential.close()
