// Event Grid custom topic the service publishes hitl.* CloudEvents to (azure-eventgrid,
// HITL_EVENTGRID_TOPIC_ENDPOINT). Access keys and SAS are disabled: the app publishes with its
// managed identity (EventGrid Data Sender, roles.bicep). The topic's own system-assigned identity
// writes undeliverable events to the dead-letter blob container.

@description('Azure region of the topic.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Event Grid topic name.')
param topicName string

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  name: topicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
    dataResidencyBoundary: 'WithinRegion'
  }
}

output topicName string = topic.name
output endpoint string = topic.properties.endpoint
output principalId string = topic.identity.principalId
