// The function app's app settings: the Functions host's identity-based connections and every
// setting of hitl_core.settings.SETTINGS that matters in Azure (local_only=False).
// tests/infra/test_app_settings.py reads the names below out of this file and compares them with
// the code's list, so a setting cannot be added on one side only.
//
// No keys or connection strings: storage, Cosmos DB and Event Grid are reached with the app's
// managed identity; the secret settings are Key Vault references. An empty value means "unset"
// to hitl_core.settings, so optional settings left empty fall back to the code's defaults.

@description('Function app name.')
param functionAppName string

@description('Host storage account name (AzureWebJobsStorage__accountName, identity-based).')
param storageAccountName string

@description('Application Insights connection string (ingestion endpoint; local auth is disabled).')
param applicationInsightsConnectionString string

@description('Cosmos DB account endpoint.')
param cosmosEndpoint string

@description('Cosmos DB database name.')
param cosmosDatabaseName string

@description('Cosmos DB container name.')
param cosmosContainerName string

@description('Event Grid topic endpoint.')
param eventGridTopicEndpoint string

@description('Base URL of decision links; empty: the app\'s https default host name.')
param publicBaseUrl string = ''

@description('Versionless Key Vault secret URI of the decision-link signing keys.')
param linkSigningKeysSecretUri string

@description('Versionless Key Vault secret URI of the webhook secret; empty: not configured.')
param webhookSecretUri string = ''

@description('Versionless Key Vault secret URI of the SMTP password; empty: not configured.')
param smtpPasswordSecretUri string = ''

@description('Versionless Key Vault secret URI of the Redis URL; empty: not configured.')
param redisUrlSecretUri string = ''

@description('HITL_WEBHOOK_URL; empty disables the webhook channel.')
param webhookUrl string = ''

@description('HITL_SMTP_HOST; empty disables e-mail.')
param smtpHost string = ''

@description('HITL_SMTP_PORT; empty: the code default (587).')
param smtpPort string = ''

@description('HITL_SMTP_USERNAME; empty: no SMTP login.')
param smtpUsername string = ''

@description('HITL_SMTP_STARTTLS (true/false); empty: the code default (true).')
param smtpStartTls string = ''

@description('HITL_SMTP_FROM; empty: the code default.')
param smtpFrom string = ''

@description('HITL_NOTIFY_DEFAULT_RECIPIENTS: comma-separated e-mail addresses; empty: none.')
param notifyDefaultRecipients string = ''

@description('HITL_SESSION_TTL_SECONDS; empty: the code default (30 days).')
param sessionTtlSeconds string = ''

@description('HITL_AUDIT_TTL_SECONDS; empty: the code default (0, kept forever).')
param auditTtlSeconds string = ''

@description('HITL_RESUME_LEASE_SECONDS; empty: the code default (30).')
param resumeLeaseSeconds string = ''

@description('HITL_NOTIFY_CLAIM_LEASE_SECONDS; empty: the code default (30).')
param notifyClaimLeaseSeconds string = ''

@description('HITL_LINK_TTL_SECONDS; empty: the code default (7 days).')
param linkTtlSeconds string = ''

@description('HITL_REMINDER_INTERVAL_SECONDS; empty: the code default (1 day).')
param reminderIntervalSeconds string = ''

@description('HITL_EXPENSE_MANAGER_DEADLINE_SECONDS; empty: the code default (2 days).')
param expenseManagerDeadlineSeconds string = ''

@description('HITL_EXPENSE_FINANCE_DEADLINE_SECONDS; empty: the code default (3 days).')
param expenseFinanceDeadlineSeconds string = ''

@description('HITL_CONTRACT_DEADLINE_SECONDS; empty: the code default (5 days).')
param contractDeadlineSeconds string = ''

@description('HITL_DIRECTORY: graph (Microsoft Entra ID through Microsoft Graph, with the app\'s managed identity) or none.')
@allowed([
  'graph'
  'none'
])
param directory string = 'graph'

@description('HITL_GRAPH_ROLE_GROUPS: comma-separated role=group-object-id pairs; empty: no role comes from a group.')
param graphRoleGroups string = ''

@description('HITL_DIRECTORY_CACHE_SECONDS; empty: the code default (300).')
param directoryCacheSeconds string = ''

@description('HITL_TRUSTED_PROXY_HOPS: X-Forwarded-For entries appended by trusted proxies (App Service\'s front end: 1).')
param trustedProxyHops string = '1'

@description('HITL_START_PRINCIPALS: comma-separated client ids of service principals that may start sessions; empty: none.')
param startPrincipals string = ''

@description('HITL_REFUSAL_AUDIT_LIMIT; empty: the code default (20 per request per hour).')
param refusalAuditLimit string = ''

@description('HITL_CLAIM_SECONDS; empty: the code default (1800 s).')
param claimSeconds string = ''

var baseUrl = empty(publicBaseUrl) ? 'https://${site.properties.defaultHostName}' : publicBaseUrl

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: {
    // Functions host and Durable Functions task hub: identity-based storage connection.
    AzureWebJobsStorage__accountName: storageAccountName
    // Application Insights with Microsoft Entra ID authentication (system-assigned identity).
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'

    // hitl_core.settings (every setting with local_only=False).
    HITL_STORAGE: 'cosmos'
    HITL_COSMOS_ENDPOINT: cosmosEndpoint
    HITL_COSMOS_DATABASE: cosmosDatabaseName
    HITL_COSMOS_CONTAINER: cosmosContainerName
    HITL_REDIS_URL: empty(redisUrlSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${redisUrlSecretUri})'
    HITL_SESSION_TTL_SECONDS: sessionTtlSeconds
    HITL_AUDIT_TTL_SECONDS: auditTtlSeconds
    HITL_RESUME_LEASE_SECONDS: resumeLeaseSeconds
    HITL_NOTIFY_CLAIM_LEASE_SECONDS: notifyClaimLeaseSeconds
    HITL_EVENTGRID_TOPIC_ENDPOINT: eventGridTopicEndpoint
    HITL_PUBLIC_BASE_URL: baseUrl
    HITL_AUTH_MODE: 'easyauth'
    HITL_START_PRINCIPALS: startPrincipals
    HITL_TRUSTED_PROXY_HOPS: trustedProxyHops
    HITL_REFUSAL_AUDIT_LIMIT: refusalAuditLimit
    HITL_CLAIM_SECONDS: claimSeconds
    // Who is who: Microsoft Entra ID through Microsoft Graph (the Graph application permissions are
    // granted by infra/hooks/postprovision). HITL_DIRECTORY_FILE (HITL_DIRECTORY=file) and
    // HITL_GRAPH_BASE_URL (a local stand-in) are not used in Azure.
    HITL_DIRECTORY: directory
    HITL_GRAPH_ROLE_GROUPS: graphRoleGroups
    HITL_DIRECTORY_CACHE_SECONDS: directoryCacheSeconds
    HITL_LINK_SIGNING_KEYS: '@Microsoft.KeyVault(SecretUri=${linkSigningKeysSecretUri})'
    HITL_LINK_TTL_SECONDS: linkTtlSeconds
    HITL_WEBHOOK_URL: webhookUrl
    HITL_WEBHOOK_SECRET: empty(webhookSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${webhookSecretUri})'
    HITL_SMTP_HOST: smtpHost
    HITL_SMTP_PORT: smtpPort
    HITL_SMTP_USERNAME: smtpUsername
    HITL_SMTP_PASSWORD: empty(smtpPasswordSecretUri) ? '' : '@Microsoft.KeyVault(SecretUri=${smtpPasswordSecretUri})'
    HITL_SMTP_STARTTLS: smtpStartTls
    HITL_SMTP_FROM: smtpFrom
    HITL_NOTIFY_DEFAULT_RECIPIENTS: notifyDefaultRecipients
    HITL_REMINDER_INTERVAL_SECONDS: reminderIntervalSeconds
    HITL_EXPENSE_MANAGER_DEADLINE_SECONDS: expenseManagerDeadlineSeconds
    HITL_EXPENSE_FINANCE_DEADLINE_SECONDS: expenseFinanceDeadlineSeconds
    HITL_CONTRACT_DEADLINE_SECONDS: contractDeadlineSeconds
  }
}

output publicBaseUrl string = baseUrl
