#!/bin/sh
# azd postdeploy hook: Event Grid only accepts a subscription to an Azure Function that exists,
# so the subscription to notify_reviewers is created after the first code deployment, by turning
# on enableEventSubscription (main.parameters.json) and provisioning again. Later runs are no-ops.
set -eu
if [ "${HITL_EVENT_SUBSCRIPTION:-false}" != "true" ]; then
  echo "Creating the Event Grid subscription to notify_reviewers..."
  azd env set HITL_EVENT_SUBSCRIPTION true
  azd provision --no-prompt
fi
