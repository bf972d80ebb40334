#!/bin/sh
# azd postdeploy hook: Event Grid only accepts a subscription to an Azure Function that exists,
# so the subscriptions to the app's Event Grid trigger functions are created after the code
# deployment, by setting eventSubscriptions (main.parameters.json: HITL_EVENT_SUBSCRIPTIONS) and
# provisioning again. A no-op once the environment already subscribes exactly these functions;
# when a release adds a function, the next `azd up` deploys it first, then subscribes it here.
set -eu
# Must list every Event Grid trigger of function_app.py (tests/infra/test_topology.py checks it).
FUNCTIONS="notify_reviewers,track_deadlines"
if [ "${HITL_EVENT_SUBSCRIPTIONS:-}" != "$FUNCTIONS" ]; then
  echo "Creating the Event Grid subscriptions to $FUNCTIONS..."
  azd env set HITL_EVENT_SUBSCRIPTIONS "$FUNCTIONS"
  azd provision --no-prompt
fi
