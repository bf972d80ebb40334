# azd postdeploy hook (Windows): create the Event Grid subscriptions to the app's Event Grid trigger
# functions once they exist, by setting eventSubscriptions (HITL_EVENT_SUBSCRIPTIONS) and
# provisioning again. A no-op once the environment already subscribes exactly these functions.
$ErrorActionPreference = 'Stop'
# Must list every Event Grid trigger of function_app.py (tests/infra/test_topology.py checks it).
$Functions = 'notify_reviewers,track_deadlines'
if ($env:HITL_EVENT_SUBSCRIPTIONS -ne $Functions) {
    Write-Host "Creating the Event Grid subscriptions to $Functions..."
    azd env set HITL_EVENT_SUBSCRIPTIONS $Functions
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    azd provision --no-prompt
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}
