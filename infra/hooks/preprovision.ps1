# azd preprovision hook (Windows): make sure the azd environment has a decision-link signing key.
# The key is generated once (256 random bits, hex) and kept in the azd environment. Rotate with:
#   azd env set HITL_LINK_SIGNING_KEYS "<new-key>,<old-key>"; azd provision
$ErrorActionPreference = 'Stop'
if ([string]::IsNullOrEmpty($env:HITL_LINK_SIGNING_KEYS)) {
    $bytes = [System.Security.Cryptography.RandomNumberGenerator]::GetBytes(32)
    $key = -join ($bytes | ForEach-Object { $_.ToString('x2') })
    azd env set HITL_LINK_SIGNING_KEYS $key
    if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
    Write-Host 'Generated HITL_LINK_SIGNING_KEYS for this azd environment.'
}
