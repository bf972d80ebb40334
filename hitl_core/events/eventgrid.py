"""Publish to an Event Grid custom topic with the real azure-eventgrid client (CloudEvents 1.0).

Credentials: a topic key (``AzureKeyCredential``, sent as ``aeg-sas-key``) when one is
configured — the local host's topic takes that too — otherwise ``DefaultAzureCredential``
(managed identity in Azure; the app's identity needs "EventGrid Data Sender" on the topic).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.core.rest import HttpRequest
from azure.eventgrid.aio import EventGridPublisherClient

from ..errors import StorageUnavailableError
from ..netaddr import proxy_configured

#: The Event Grid data-plane API version the batch is posted with (the SDK's own when it says).
API_VERSION = "2018-01-01"
CLOUD_EVENTS_BATCH = "application/cloudevents-batch+json; charset=utf-8"


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
        self._batch_sender = self._sender()
        self._api_version = getattr(getattr(self._client, "_client", None), "_api_version", None) or API_VERSION

    def _sender(self) -> Any | None:
        """The SDK's own request pipeline under the publisher client (its credential policy, retries
        and logging), when this SDK version has the shape that was tested; else None."""
        legacy = getattr(self._client, "_client", None)
        generated = getattr(legacy, "_client", None)
        if getattr(self._client, "_namespace", None) or not callable(getattr(generated, "send_request", None)):
            return None
        return generated

    async def publish(self, events: Sequence[dict[str, Any]]) -> None:
        """One batch request. The outbox already holds each event as CloudEvents 1.0 JSON
        (:func:`~hitl_core.events.models.make_event`), so the batch is that JSON, encoded once and sent
        through the SDK's pipeline: the SDK's generic serializer walked every value of every event's
        data and was the largest cost of a publish (bench/profile_host.py). An SDK of another shape
        gets the events through its public ``send``."""
        if not events:
            return
        sender = self._batch_sender
        try:
            if sender is None:
                await self._client.send([self._cloud_event(e) for e in events])
                return
            body = json.dumps([{"specversion": "1.0", **{k: v for k, v in e.items() if v is not None}}
                               for e in events], separators=(",", ":"), allow_nan=False)
            request = HttpRequest("POST", self.endpoint, params={"api-version": self._api_version},
                                  headers={"Content-Type": CLOUD_EVENTS_BATCH}, content=body)
            response = await sender.send_request(request)
            if response.status_code != 200:
                raise HttpResponseError(response=response)
        except HttpResponseError as exc:
            raise EventPublishError(f"event grid refused {len(events)} event(s): HTTP {exc.status_code}",
                                    retry_after=5) from None
        except AzureError as exc:
            raise EventPublishError(f"event grid unreachable: {type(exc).__name__}", retry_after=5) from None

    @staticmethod
    def _cloud_event(event: dict[str, Any]) -> CloudEvent[Any]:
        return CloudEvent(source=event["source"], type=event["type"], data=event.get("data"),
                          subject=event.get("subject"), id=event["id"],
                          time=dt.datetime.fromisoformat(event["time"]) if event.get("time") else None,
                          datacontenttype=event.get("datacontenttype", "application/json"))

    async def check(self) -> None:
        await self.publish([])

    async def close(self) -> None:
        await self._client.close()
