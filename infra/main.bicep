// hitl: the whole system in one resource group.
//
//   Function app (Flex Consumption, Python 3.13, system-assigned identity)
//     -> Cosmos DB for NoSQL (checkpoints; serverless by default)       Cosmos DB Built-in Data Contributor
//     -> Event Grid custom topic (CloudEvents 1.0)                       EventGrid Data Sender
//     -> Storage (host, Durable task hub, deployment package)           Blob Owner, Queue/Table Contributor
//     -> Key Vault (link signing keys, webhook/SMTP secrets)            Key Vault Secrets User
//     -> Application Insights + Log Analytics (Entra ID auth)           Monitoring Metrics Publisher
//     -> Microsoft Graph (the Entra ID directory, HITL_DIRECTORY=graph)   User.Read.All, GroupMember.Read.All
//        (application permissions: granted by the azd postprovision hook, infra/hooks/postprovision)
//   Event Grid subscriptions -> notify_reviewers, track_deadlines (dead-letter to blob), once the
//   code is deployed (track_deadlines drives the Durable deadline orchestration request_deadline).
//
// Deploy with `azd up` (azure.yaml) or `az deployment group create -f infra/main.bicep`; see
// README.md ("Deploy"). Validated offline by tests/infra (pycep parse, checkov, settings/roles/
// Cosmos layout checks against the Python code).

targetScope = 'resourceGroup'

@minLength(1)
@maxLength(64)
@description('Name of the environment (azd environment name); seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Azure region of every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string = resourceGroup().location

@description('Decision-link signing keys (HITL_LINK_SIGNING_KEYS): comma-separated, the first signs, all verify. azd generates one (infra/hooks/preprovision).')
@secure()
@minLength(32)
param linkSigningKeys string

@description('Event Grid trigger functions to subscribe to the topic, comma-separated (notify_reviewers,track_deadlines); empty: none. Each must be deployed first: the azd postdeploy hook sets it.')
param eventSubscriptions string = ''

@description('Application (client) id of the Microsoft Entra app registration for App Service Authentication; empty: every request is answered 401.')
param authClientId string = ''

@description('Tenant of the app registration (default: the subscription\'s tenant).')
param authTenantId string = subscription().tenantId

@description('What an unauthenticated request gets once authClientId is set.')
@allowed([
  'RedirectToLoginPage'
  'Return401'
])
param authUnauthenticatedAction string = 'RedirectToLoginPage'

@description('Cosmos DB capacity: serverless (pay per request, default), provisioned or autoscale. Cannot be changed on an existing account.')
@allowed([
  'serverless'
  'provisioned'
  'autoscale'
])
param cosmosCapacityMode string = 'serverless'

@description('Container RU/s when cosmosCapacityMode is provisioned.')
@minValue(400)
param cosmosProvisionedThroughput int = 400

@description('Container maximum RU/s when cosmosCapacityMode is autoscale.')
@minValue(1000)
param cosmosAutoscaleMaxThroughput int = 1000

@description('Cosmos DB database name (HITL_COSMOS_DATABASE).')
param cosmosDatabaseName string = 'hitl'

@description('Cosmos DB container name (HITL_COSMOS_CONTAINER).')
param cosmosContainerName string = 'sessions'

@description('Upper bound of function app instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each function app instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Base URL of decision links (HITL_PUBLIC_BASE_URL); empty: the function app\'s https URL.')
param publicBaseUrl string = ''

@description('Notification webhook URL (HITL_WEBHOOK_URL); empty disables the webhook channel.')
param webhookUrl string = ''

@description('HMAC key of the webhook signature (HITL_WEBHOOK_SECRET), stored in Key Vault.')
@secure()
param webhookSecret string = ''

@description('SMTP server (HITL_SMTP_HOST); empty disables e-mail.')
param smtpHost string = ''

@description('SMTP port (HITL_SMTP_PORT); empty: 587.')
param smtpPort string = ''

@description('SMTP login user (HITL_SMTP_USERNAME).')
param smtpUsername string = ''

@description('SMTP password (HITL_SMTP_PASSWORD), stored in Key Vault.')
@secure()
param smtpPassword string = ''

@description('Use STARTTLS (HITL_SMTP_STARTTLS: true/false); empty: true.')
param smtpStartTls string = ''

@description('Sender address of notification e-mails (HITL_SMTP_FROM); empty: the code default.')
param smtpFrom string = ''

@description('E-mail addresses notified when a request names no e-mail approver (HITL_NOTIFY_DEFAULT_RECIPIENTS), comma-separated.')
param notifyDefaultRecipients string = ''

@description('Redis URL (HITL_REDIS_URL), stored in Key Vault; unused in Azure, where HITL_STORAGE is cosmos.')
@secure()
param redisUrl string = ''

@description('HITL_SESSION_TTL_SECONDS; empty: the code default (30 days).')
param sessionTtlSeconds string = ''

@description('HITL_AUDIT_TTL_SECONDS; empty: the code default (audit kept forever).')
param auditTtlSeconds string = ''

@description('HITL_RESUME_LEASE_SECONDS; empty: the code default (30 s).')
param resumeLeaseSeconds string = ''

@description('HITL_NOTIFY_CLAIM_LEASE_SECONDS; empty: the code default (30 s).')
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

@description('Who is who (HITL_DIRECTORY): graph reads people, managers and role groups from Microsoft Entra ID with the app\'s managed identity (the postprovision hook grants it the Microsoft Graph permissions User.Read.All and GroupMember.Read.All); none knows only who signs in.')
@allowed([
  'graph'
  'none'
])
param directory string = 'graph'

@description('Roles backed by Entra groups (HITL_GRAPH_ROLE_GROUPS): comma-separated role=group-object-id, e.g. finance=<id>,admins=<id>; empty: no role comes from a group.')
param graphRoleGroups string = ''

@description('HITL_DIRECTORY_CACHE_SECONDS; empty: the code default (300 s).')
param directoryCacheSeconds string = ''

@description('HITL_TRUSTED_PROXY_HOPS: X-Forwarded-For entries appended by proxies you trust; App Service\'s front end appends one (add one per proxy in front of it, e.g. Front Door).')
param trustedProxyHops string = '1'

@description('HITL_START_PRINCIPALS: comma-separated client ids of service principals (daemon apps) that may start sessions; empty: only signed-in people.')
param startPrincipals string = ''

@description('HITL_REFUSAL_AUDIT_LIMIT; empty: the code default (20 audited refusals per request per hour).')
param refusalAuditLimit string = ''

@description('HITL_CLAIM_SECONDS: how long a reviewer\'s claim lasts; empty: the code default (1800 s).')
param claimSeconds string = ''

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'hitl'
}
// Must equal the service name in azure.yaml (tests/infra/test_azure_yaml.py checks it).
var serviceName = 'api'
var functionAppName = 'func-hitl-${resourceToken}'
var deploymentContainerName = 'app-package-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'
var eventSubscriptionFunctions = split(replace(eventSubscriptions, ' ', ''), ',')
// As hitl_core.settings.notification_channels_configured reads HITL_WEBHOOK_URL and HITL_SMTP_HOST.
var notificationChannelConfigured = ((!empty(webhookUrl)) && (toLower(webhookUrl) != 'off')) || ((!empty(smtpHost)) && (toLower(smtpHost) != 'off'))

module monitoring './modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-hitl-${resourceToken}'
    applicationInsightsName: 'appi-hitl-${resourceToken}'
  }
}

module storage './modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    storageAccountName: 'sthitl${resourceToken}'
    deploymentContainerName: deploymentContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module cosmos './modules/cosmos.bicep' = {
  name: 'cosmos'
  params: {
    location: location
    tags: tags
    accountName: 'cosmos-hitl-${resourceToken}'
    databaseName: cosmosDatabaseName
    containerName: cosmosContainerName
    capacityMode: cosmosCapacityMode
    provisionedThroughput: cosmosProvisionedThroughput
    autoscaleMaxThroughput: cosmosAutoscaleMaxThroughput
  }
}

module eventGridTopic './modules/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  params: {
    location: location
    tags: tags
    topicName: 'evgt-hitl-${resourceToken}'
  }
}

module keyVault './modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    keyVaultName: 'kv-hitl-${resourceToken}'
    linkSigningKeys: linkSigningKeys
    webhookSecret: webhookSecret
    smtpPassword: smtpPassword
    redisUrl: redisUrl
  }
}

module functionApp './modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: tags
    serviceName: serviceName
    planName: 'plan-hitl-${resourceToken}'
    functionAppName: functionAppName
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: storage.outputs.deploymentContainerName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module roles './modules/roles.bicep' = {
  name: 'roles'
  params: {
    appPrincipalId: functionApp.outputs.principalId
    topicPrincipalId: eventGridTopic.outputs.principalId
    storageAccountName: storage.outputs.storageAccountName
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    cosmosAccountName: cosmos.outputs.accountName
    topicName: eventGridTopic.outputs.topicName
    keyVaultName: keyVault.outputs.keyVaultName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

// After the role assignments: the host starts with permissions for every connection it uses.
module appSettings './modules/app-settings.bicep' = {
  name: 'app-settings'
  dependsOn: [
    roles
  ]
  params: {
    functionAppName: functionApp.outputs.functionAppName
    storageAccountName: storage.outputs.storageAccountName
    applicationInsightsConnectionString: monitoring.outputs.applicationInsightsConnectionString
    cosmosEndpoint: cosmos.outputs.endpoint
    cosmosDatabaseName: cosmos.outputs.databaseName
    cosmosContainerName: cosmos.outputs.containerName
    eventGridTopicEndpoint: eventGridTopic.outputs.endpoint
    publicBaseUrl: publicBaseUrl
    linkSigningKeysSecretUri: keyVault.outputs.linkSigningKeysSecretUri
    webhookSecretUri: empty(webhookSecret) ? '' : keyVault.outputs.webhookSecretUri
    smtpPasswordSecretUri: empty(smtpPassword) ? '' : keyVault.outputs.smtpPasswordSecretUri
    redisUrlSecretUri: empty(redisUrl) ? '' : keyVault.outputs.redisUrlSecretUri
    webhookUrl: webhookUrl
    smtpHost: smtpHost
    smtpPort: smtpPort
    smtpUsername: smtpUsername
    smtpStartTls: smtpStartTls
    smtpFrom: smtpFrom
    notifyDefaultRecipients: notifyDefaultRecipients
    sessionTtlSeconds: sessionTtlSeconds
    auditTtlSeconds: auditTtlSeconds
    resumeLeaseSeconds: resumeLeaseSeconds
    notifyClaimLeaseSeconds: notifyClaimLeaseSeconds
    linkTtlSeconds: linkTtlSeconds
    reminderIntervalSeconds: reminderIntervalSeconds
    expenseManagerDeadlineSeconds: expenseManagerDeadlineSeconds
    expenseFinanceDeadlineSeconds: expenseFinanceDeadlineSeconds
    contractDeadlineSeconds: contractDeadlineSeconds
    directory: directory
    graphRoleGroups: graphRoleGroups
    directoryCacheSeconds: directoryCacheSeconds
    trustedProxyHops: trustedProxyHops
    startPrincipals: startPrincipals
    refusalAuditLimit: refusalAuditLimit
    claimSeconds: claimSeconds
  }
}

module easyAuth './modules/easy-auth.bicep' = {
  name: 'easy-auth'
  params: {
    functionAppName: functionApp.outputs.functionAppName
    authClientId: authClientId
    authTenantId: authTenantId
    unauthenticatedClientAction: authUnauthenticatedAction
  }
}

module eventSubscription './modules/eventgrid-subscription.bicep' = if (!empty(eventSubscriptions)) {
  name: 'eventgrid-subscription'
  dependsOn: [
    roles
    appSettings
  ]
  params: {
    topicName: eventGridTopic.outputs.topicName
    functionAppName: functionApp.outputs.functionAppName
    functionNames: eventSubscriptionFunctions
    notificationChannelConfigured: notificationChannelConfigured
    deadLetterStorageAccountId: storage.outputs.storageAccountId
    deadLetterContainerName: storage.outputs.deadLetterContainerName
  }
}

// azd stores these in the environment (.azure/<env>/.env); the README refers to them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.functionAppName
// Read by infra/hooks/postprovision: whose Microsoft Graph permissions to grant, and whether any are needed.
output AZURE_FUNCTION_APP_PRINCIPAL_ID string = functionApp.outputs.principalId
output HITL_DIRECTORY string = directory
output FUNCTION_APP_URL string = functionApp.outputs.url
output HITL_PUBLIC_BASE_URL string = appSettings.outputs.publicBaseUrl
output HITL_COSMOS_ENDPOINT string = cosmos.outputs.endpoint
output HITL_COSMOS_DATABASE string = cosmos.outputs.databaseName
output HITL_COSMOS_CONTAINER string = cosmos.outputs.containerName
output HITL_EVENTGRID_TOPIC_ENDPOINT string = eventGridTopic.outputs.endpoint
output AZURE_EVENTGRID_TOPIC_NAME string = eventGridTopic.outputs.topicName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.keyVaultName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.storageAccountName
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EASY_AUTH_PROVIDER_CONFIGURED bool = easyAuth.outputs.enabled
