// App Service Authentication ("Easy Auth") in front of the function app. HITL_AUTH_MODE=easyauth
// makes the service trust the X-MS-CLIENT-PRINCIPAL header, which only the platform may set, so
// authentication is always on:
//   - with authClientId (a Microsoft Entra app registration): signed-in users and callers with a
//     token for that app reach the API; reviewers in a browser are sent to the sign-in page;
//   - without it: every request is answered 401 until an identity provider is configured
//     (closed by default rather than open to forged identity headers).
// Event Grid deliveries to the notification function are exempt: that webhook is protected by the
// Functions host's system key.

@description('Function app name.')
param functionAppName string

@description('Application (client) id of the Microsoft Entra app registration; empty: no provider, every request gets 401.')
param authClientId string = ''

@description('Tenant of the app registration.')
param authTenantId string = subscription().tenantId

@description('What an unauthenticated request gets once a provider is configured.')
@allowed([
  'RedirectToLoginPage'
  'Return401'
])
param unauthenticatedClientAction string = 'RedirectToLoginPage'

var hasProvider = !empty(authClientId)

var entraProvider = {
  azureActiveDirectory: {
    enabled: true
    registration: {
      clientId: authClientId
      openIdIssuer: '${environment().authentication.loginEndpoint}${authTenantId}/v2.0'
    }
    validation: {
      allowedAudiences: [
        'api://${authClientId}'
      ]
    }
  }
}

// Event Grid calls /runtime/webhooks/EventGrid?functionName=<notify_reviewers or track_deadlines>&code=<system key>.
var excludedPaths = [
  '/runtime/webhooks/eventgrid'
  '/runtime/webhooks/EventGrid'
]

var validationWithProvider = {
  requireAuthentication: true
  unauthenticatedClientAction: unauthenticatedClientAction
  redirectToProvider: 'azureactivedirectory'
  excludedPaths: excludedPaths
}

var validationWithoutProvider = {
  requireAuthentication: true
  unauthenticatedClientAction: 'Return401'
  excludedPaths: excludedPaths
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: hasProvider ? validationWithProvider : validationWithoutProvider
    identityProviders: hasProvider ? entraProvider : {}
    login: {
      tokenStore: {
        enabled: false
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}

output enabled bool = hasProvider
