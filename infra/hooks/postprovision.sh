#!/bin/sh
# azd postprovision hook: grant the function app's managed identity the Microsoft Graph application
# permissions with which HITL_DIRECTORY=graph reads the directory (least privileged; the code's list
# is GRAPH_APPLICATION_PERMISSIONS in hitl_core/directory/graph.py, and tests/infra checks both agree):
#   User.Read.All          a user by id, user principal name or e-mail; their manager; their groups
#   GroupMember.Read.All   the transitive members of the role groups (HITL_GRAPH_ROLE_GROUPS)
#
# Why a hook and not Bicep: an application permission is an app role assignment in Microsoft Entra
# ID, not an Azure resource. Bicep can declare one only through the Microsoft Graph Bicep extension
# (`extension microsoftGraphV1`, Microsoft.Graph/appRoleAssignedTo), which pycep-parser and checkov,
# the offline validation of infra/ (tests/infra), cannot parse.
#
# Idempotent: it reads the identity's existing assignments and grants only what is missing, so every
# `azd provision` may run it. It uses the Azure CLI (`az login`) as a user who may grant application
# permissions (Privileged Role Administrator or Global Administrator). If it cannot, it prints the
# requests for an administrator and exits 0: until they are granted, the app's directory answers
# with an error that names the missing permissions.
#   azd env set HITL_GRAPH_GRANT false   # skip (an administrator grants the permissions)
set -eu

PERMISSIONS="User.Read.All GroupMember.Read.All"
GRAPH_APP_ID="00000003-0000-0000-c000-000000000000"  # Microsoft Graph's application id (every tenant)
GRAPH="https://graph.microsoft.com/v1.0"

if [ "${HITL_DIRECTORY:-graph}" != "graph" ]; then
  echo "HITL_DIRECTORY=${HITL_DIRECTORY}: the app needs no Microsoft Graph permission."
  exit 0
fi
if [ "${HITL_GRAPH_GRANT:-true}" = "false" ]; then
  echo "HITL_GRAPH_GRANT=false: not granting Microsoft Graph permissions ($PERMISSIONS)."
  exit 0
fi
PRINCIPAL="${AZURE_FUNCTION_APP_PRINCIPAL_ID:-}"
if [ -z "$PRINCIPAL" ]; then
  echo "AZURE_FUNCTION_APP_PRINCIPAL_ID is not set: provision infra/main.bicep first." >&2
  exit 1
fi

manual() {
  cat >&2 <<EOF
WARNING: could not grant the Microsoft Graph permissions ($1).
The app's managed identity ($PRINCIPAL) needs the Microsoft Graph application permissions
$PERMISSIONS for HITL_DIRECTORY=graph. A Privileged Role Administrator can grant them by
running 'azd hooks run postprovision' in this azd environment, or with, for each permission,
POST $GRAPH/servicePrincipals/{Microsoft Graph's service principal id}/appRoleAssignedTo
  {"principalId": "$PRINCIPAL", "resourceId": "{that id}", "appRoleId": "{the permission's id}"}
Until then the directory answers 403.
EOF
  exit 0
}

command -v az >/dev/null 2>&1 || manual "the Azure CLI (az) is not installed"

GRAPH_SP=$(az rest --method get --url "$GRAPH/servicePrincipals(appId='$GRAPH_APP_ID')?\$select=id" \
  --query id -o tsv) || manual "az could not read Microsoft Graph's service principal; is az signed in?"
[ -n "$GRAPH_SP" ] || manual "Microsoft Graph's service principal was not found in the tenant"
ROLES=$(az rest --method get --url "$GRAPH/servicePrincipals/$GRAPH_SP?\$select=appRoles" \
  --query "appRoles[?contains(allowedMemberTypes, 'Application')].[value, id]" -o tsv) \
  || manual "az could not read Microsoft Graph's app roles"
ASSIGNED=$(az rest --method get --url "$GRAPH/servicePrincipals/$PRINCIPAL/appRoleAssignments" \
  --query "value[?resourceId=='$GRAPH_SP'].appRoleId" -o tsv) \
  || manual "az could not read the identity's app role assignments"

for permission in $PERMISSIONS; do
  role=$(printf '%s\n' "$ROLES" | awk -F '\t' -v p="$permission" '$1 == p { print $2; exit }' | tr -d '\r')
  if [ -z "$role" ]; then
    manual "Microsoft Graph has no application permission named $permission"
  fi
  if printf '%s\n' "$ASSIGNED" | tr -d '\r' | grep -qix "$role"; then
    echo "Microsoft Graph $permission: already granted to $PRINCIPAL."
    continue
  fi
  az rest --method post --url "$GRAPH/servicePrincipals/$GRAPH_SP/appRoleAssignedTo" \
    --headers "Content-Type=application/json" \
    --body "{\"principalId\":\"$PRINCIPAL\",\"resourceId\":\"$GRAPH_SP\",\"appRoleId\":\"$role\"}" \
    --output none || manual "granting $permission was refused"
  echo "Microsoft Graph $permission: granted to $PRINCIPAL."
done
