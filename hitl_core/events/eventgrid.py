"""Publish to an Event Grid custom topic with the real azure-eventgrid client (CloudEvents 1.0).

Credentials: a topic key (``AzureKeyCredential``, sent as ``aeg-sas-key``) when one is
configured — the local host's topic takes that too — otherwise ``DefaultAzureCredential``
(managed identity in Azure; the app's identity needs "EventGrid Data Sender" on the topic).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid.aio import EventGridPublisherClient

from ..errors import StorageUnavailableError
from ..netaddr import proxy_configured


class EventPublishError(StorageUnavailableError):
    """The topic did not accept the events; they stay in the outbox."""


class EventGridEventPublisher:
    def __init__(self, endpoint: str, *, key: str | None = None, credential: Any = None) -> None:
        self.endpoint = endpoint
        if key:
            cred: Any = AzureKeyCredential(key)
        elif credential is not None:
            cred = credential
        else:
            from azure.identity.aio import DefaultAzureCredential

            cred = DefaultAzureCredential()
        self._client = EventGridPublisherClient(endpoint, cred, use_env_settings=proxy_configured())

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        cloud_events = [
            CloudEvent(
                source=e["source"],
                type=e["type"],
                data=e.get("data"),
                subject=e.get("subject"),
                id=e["id"],
                datacontenttype=e.get("datacontenttype", "application/json"),
            )
            for e in events
        ]
        try:
            await self._client.send(cloud_events)
        except HttpResponseError as exc:
            raise EventPublishError(f"event grid refused {len(events)} event(s): HTTP {exc.status_code}",
                                    retry_after=5) from None
        except AzureError as exc:
            raise EventPublishError(f"event grid unreachable: {type(exc).__name__}", retry_after=5) from None

    async def check(self) -> None:
        await self.publish([])

    async def close(self) -> None:
        await self._client.close()
