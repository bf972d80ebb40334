// Key Vault for the service's secrets: decision-link signing keys, webhook HMAC secret, SMTP
// password and (if ever used in Azure) the Redis URL. Authorization is Azure RBAC only; the app
// reads the secrets through Key Vault references in its app settings (app-settings.bicep), with its
// managed identity holding Key Vault Secrets User (roles.bicep). No secret value leaves this
// module: its outputs are versionless secret URIs, so a new secret version is picked up by the
// app without a redeployment of the app settings.

@description('Azure region of the vault.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Key Vault name (3-24 letters, digits and hyphens).')
@minLength(3)
@maxLength(24)
param keyVaultName string

@description('HITL_LINK_SIGNING_KEYS: comma-separated HMAC keys for decision links; the first signs, all verify.')
@secure()
@minLength(32)
param linkSigningKeys string

@description('HITL_WEBHOOK_SECRET: HMAC-SHA256 key of the webhook signature header (empty: no secret stored).')
@secure()
param webhookSecret string = ''

@description('HITL_SMTP_PASSWORD: SMTP login password (empty: no secret stored).')
@secure()
param smtpPassword string = ''

@description('HITL_REDIS_URL: rediss:// URL with password, only for HITL_STORAGE=redis (empty: no secret stored).')
@secure()
param redisUrl string = ''

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource linkSigningKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'hitl-link-signing-keys'
  properties: {
    value: linkSigningKeys
    contentType: 'text/plain'
  }
}

resource webhookSecretSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(webhookSecret)) {
  parent: vault
  name: 'hitl-webhook-secret'
  properties: {
    value: webhookSecret
    contentType: 'text/plain'
  }
}

resource smtpPasswordSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(smtpPassword)) {
  parent: vault
  name: 'hitl-smtp-password'
  properties: {
    value: smtpPassword
    contentType: 'text/plain'
  }
}

resource redisUrlSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(redisUrl)) {
  parent: vault
  name: 'hitl-redis-url'
  properties: {
    value: redisUrl
    contentType: 'text/plain'
  }
}

output keyVaultName string = vault.name
output keyVaultUri string = vault.properties.vaultUri
// Versionless secret URIs, built from the vault URI (no output refers to a secure parameter or a
// conditional resource). The optional secrets exist only when their parameter was given: main.bicep
// passes their URI on only then. The module finishes after every secret above exists, so app
// settings that use these URIs resolve on first start.
output linkSigningKeysSecretUri string = '${vault.properties.vaultUri}secrets/${linkSigningKeysSecret.name}'
output webhookSecretUri string = '${vault.properties.vaultUri}secrets/hitl-webhook-secret'
output smtpPasswordSecretUri string = '${vault.properties.vaultUri}secrets/hitl-smtp-password'
output redisUrlSecretUri string = '${vault.properties.vaultUri}secrets/hitl-redis-url'
