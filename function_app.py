"""The Azure Functions app: the service's blueprints plus this deployment's workflows.

Nothing else belongs here — behaviour lives in hitl_core (library, service, adapter) and the
workflows in workflows/.
"""

import azure.durable_functions as df
import azure.functions as func

import workflows
from hitl_core.functions import blueprints, configure
from hitl_core.functions.events import deployed_subscriptions

configure(workflows.ALL)

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in blueprints():
    app.register_functions(blueprint)
# the Event Grid subscriptions and their filters (the Bicep's in Azure; the local host reads them)
app.eventgrid_subscriptions = deployed_subscriptions()
