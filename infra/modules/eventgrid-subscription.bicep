// Event subscription: hitl.request.* events that need a reviewer to be told something go to the
// notification function (Event Grid trigger `notify_reviewers`). The destination is the function
// resource itself (endpoint type AzureFunction), so no function key is read or stored here.
//
// Event Grid checks that the function exists when the subscription is created, so this module
// can only be deployed after the code: main.bicep includes it when enableEventSubscription is
// true, which the azd postdeploy hook (infra/hooks/postdeploy.*) turns on after the first deploy.

@description('Name of the Event Grid custom topic (CloudEvents 1.0 input schema).')
param topicName string

@description('Name of the function app that hosts notify_reviewers.')
param functionAppName string

@description('Resource id of the storage account that receives dead-lettered events.')
param deadLetterStorageAccountId string

@description('Blob container that receives dead-lettered events.')
param deadLetterContainerName string

@description('How many times Event Grid retries a delivery before dead-lettering it.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes an event may wait for delivery before it is dead-lettered.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource topic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: topicName
}

resource notifyApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource notifySubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'notify-reviewers'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${notifyApp.id}/functions/notify_reviewers'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'hitl.request.created'
        'hitl.request.reminder'
        'hitl.request.escalated'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output subscriptionName string = notifySubscription.name
