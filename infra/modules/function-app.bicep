// Function app on the Flex Consumption plan (FC1): Python 3.13, scale to zero, a system-assigned
// managed identity. On Flex Consumption the runtime, its version and the scale limits live in
// functionAppConfig (FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION app settings are not
// used), and the deployment package is a blob that the app's identity reads.
//
// Python 3.13+ runs the Functions Python worker version that requirements.txt pins
// (azure-functions-runtime==x.y.z, "runtime version control"); that is opted into by the package
// reference alone, no app setting. Python 3.13 is not offered on the Linux Consumption plan.
//
// The app settings are a separate resource (app-settings.bicep) deployed after the role
// assignments, so the host never starts with identity-based connections it may not use yet.

@description('Azure region of the plan and the app (must offer Flex Consumption).')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Name of the azd service in azure.yaml; azd finds the app by this tag.')
param serviceName string

@description('Flex Consumption plan name.')
param planName string

@description('Function app name (also the default host name prefix).')
param functionAppName string

@description('Primary blob endpoint of the host storage account, with a trailing slash.')
param blobEndpoint string

@description('Blob container that holds the deployment package.')
param deploymentContainerName string

@description('Upper bound of instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of each instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    clientCertEnabled: false
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
    }
  }
}

output functionAppName string = functionApp.name
output functionAppId string = functionApp.id
output principalId string = functionApp.identity.principalId
output defaultHostName string = functionApp.properties.defaultHostName
output url string = 'https://${functionApp.properties.defaultHostName}'
