"""Azure Functions adapter: the ONLY code that imports azure.functions / azure.durable_functions.

``function_app.py`` calls :func:`configure` with the deployment's workflows and registers
:func:`blueprints`. The blueprints parse requests, call :class:`hitl_core.service.HitlService`
and map :class:`hitl_core.errors.HitlError` to HTTP problem+json.
"""

from __future__ import annotations

import azure.durable_functions as df

from .runtime import configure, get_runtime, reset_runtime


def blueprints() -> list[df.Blueprint]:
    """Every blueprint of the service, in registration order."""
    from . import decide, durable, events, http, webapp

    return [http.bp, decide.bp, webapp.bp, events.bp, durable.bp]


__all__ = ["blueprints", "configure", "get_runtime", "reset_runtime"]
