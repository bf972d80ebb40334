# azd postprovision hook (Windows): grant the function app's managed identity the Microsoft Graph
# application permissions with which HITL_DIRECTORY=graph reads the directory (least privileged; the
# code's list is GRAPH_APPLICATION_PERMISSIONS in hitl_core/directory/graph.py):
#   User.Read.All          a user by id, user principal name or e-mail; their manager; their groups
#   GroupMember.Read.All   the transitive members of the role groups (HITL_GRAPH_ROLE_GROUPS)
# Same steps as postprovision.sh (see there why this is a hook and not Bicep). Idempotent: grants only
# what the identity does not have yet. Needs the Azure CLI signed in (az login) as a Privileged Role
# Administrator (or Global Administrator); otherwise it prints what an administrator must do and
# exits 0. Skip with: azd env set HITL_GRAPH_GRANT false
$ErrorActionPreference = 'Stop'

$Permissions = @('User.Read.All', 'GroupMember.Read.All')
$GraphAppId = '00000003-0000-0000-c000-000000000000'  # Microsoft Graph's application id (every tenant)
$Graph = 'https://graph.microsoft.com/v1.0'

$directory = if ([string]::IsNullOrEmpty($env:HITL_DIRECTORY)) { 'graph' } else { $env:HITL_DIRECTORY }
if ($directory -ne 'graph') {
    Write-Host "HITL_DIRECTORY=${directory}: the app needs no Microsoft Graph permission."
    exit 0
}
if ($env:HITL_GRAPH_GRANT -eq 'false') {
    Write-Host "HITL_GRAPH_GRANT=false: not granting Microsoft Graph permissions ($($Permissions -join ', '))."
    exit 0
}
$principal = $env:AZURE_FUNCTION_APP_PRINCIPAL_ID
if ([string]::IsNullOrEmpty($principal)) {
    [Console]::Error.WriteLine('AZURE_FUNCTION_APP_PRINCIPAL_ID is not set: provision infra/main.bicep first.')
    exit 1
}

function Show-Manual([string]$Reason) {
    Write-Warning "could not grant the Microsoft Graph permissions ($Reason)."
    Write-Host "The app's managed identity ($principal) needs the Microsoft Graph application permissions"
    Write-Host "$($Permissions -join ' and ') for HITL_DIRECTORY=graph. A Privileged Role Administrator can grant"
    Write-Host "them by running 'azd hooks run postprovision' in this azd environment, or with"
    Write-Host "POST $Graph/servicePrincipals/{Microsoft Graph's service principal id}/appRoleAssignedTo"
    Write-Host "  {`"principalId`": `"$principal`", `"resourceId`": `"{that id}`", `"appRoleId`": `"{the permission's id}`"}"
    Write-Host 'Until then the directory answers 403.'
    exit 0
}

# az rest, its JSON answer as an object; $null when az fails.
function Invoke-Graph([string]$Method, [string]$Url, [string]$BodyFile) {
    $azArgs = @('rest', '--method', $Method, '--url', $Url)
    if ($BodyFile) {
        $azArgs += @('--headers', 'Content-Type=application/json', '--body', "@$BodyFile", '--output', 'none')
    }
    $out = & az @azArgs 2>$null
    if ($LASTEXITCODE -ne 0) { return $null }
    if (-not $out) { return [pscustomobject]@{} }
    return ($out -join "`n") | ConvertFrom-Json
}

if (-not (Get-Command az -ErrorAction SilentlyContinue)) { Show-Manual 'the Azure CLI (az) is not installed' }

$graphSp = Invoke-Graph 'get' "$Graph/servicePrincipals(appId='$GraphAppId')?`$select=id,appRoles"
if ($null -eq $graphSp) { Show-Manual "az could not read Microsoft Graph's service principal; is az signed in?" }
$assignments = Invoke-Graph 'get' "$Graph/servicePrincipals/$principal/appRoleAssignments"
if ($null -eq $assignments) { Show-Manual "az could not read the identity's app role assignments" }
$assigned = @($assignments.value | Where-Object { $_.resourceId -eq $graphSp.id } | ForEach-Object { $_.appRoleId })

foreach ($permission in $Permissions) {
    $role = $graphSp.appRoles |
        Where-Object { $_.value -eq $permission -and $_.allowedMemberTypes -contains 'Application' } |
        Select-Object -First 1
    if ($null -eq $role) { Show-Manual "Microsoft Graph has no application permission named $permission" }
    if ($assigned -contains $role.id) {
        Write-Host "Microsoft Graph ${permission}: already granted to $principal."
        continue
    }
    $body = [System.IO.Path]::GetTempFileName()
    try {
        $json = @{ principalId = $principal; resourceId = $graphSp.id; appRoleId = $role.id } | ConvertTo-Json -Compress
        [System.IO.File]::WriteAllText($body, $json)  # UTF-8 without a byte order mark
        $granted = Invoke-Graph 'post' "$Graph/servicePrincipals/$($graphSp.id)/appRoleAssignedTo" $body
    } finally {
        Remove-Item -Path $body -ErrorAction SilentlyContinue
    }
    if ($null -eq $granted) { Show-Manual "granting $permission was refused" }
    Write-Host "Microsoft Graph ${permission}: granted to $principal."
}
