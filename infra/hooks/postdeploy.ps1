# azd postdeploy hook (Windows): create the Event Grid subscription to notify_reviewers once the
# function exists, by turning on enableEventSubscription and provisioning again.
$ErrorActionPreference = 'Stop'
if ($env:HITL_EVENT_SUBSCRIPTION -ne 'true') {
    Write-Host 'Creating the Event Grid subscription to notify_reviewers...'
    azd env set HITL_EVENT_SUBSCRIPTION true
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    azd provision --no-prompt
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
}
