// Event subscriptions: the topic's hitl.request.* events go to the app's two Event Grid trigger
// functions, each with its own filter and the same delivery policy (retries, then dead-letter):
//
//   notify-reviewers -> notify_reviewers   created, reminder, escalated (tell people to act), only when
//                                          a notification channel (webhook, e-mail) is configured
//   track-deadlines  -> track_deadlines    created, resolved, expired   (start / end the per-request
//                                          deadline orchestration `request_deadline`, Durable Functions),
//                                          only when data.deadline_tracked is true
//
// The destination is the function resource itself (endpoint type AzureFunction), so no function
// key is read or stored here.
//
// Event Grid checks that the function exists when a subscription is created, so a subscription
// can only be deployed after the code that holds its function: main.bicep passes the functions
// named in eventSubscriptions, which the azd postdeploy hook (infra/hooks/postdeploy.*) sets after
// the code deploy. tests/infra/test_topology.py checks these names and filters against the app.

@description('Name of the Event Grid custom topic (CloudEvents 1.0 input schema).')
param topicName string

@description('Name of the function app that hosts the Event Grid trigger functions.')
param functionAppName string

@description('Event Grid trigger functions to subscribe; each must already be deployed.')
@allowed([
  'notify_reviewers'
  'track_deadlines'
])
param functionNames array

@description('Whether the app has a notification channel (webhook or e-mail); without one notify_reviewers gets no subscription: it would only be woken to ignore each request.')
param notificationChannelConfigured bool = true

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

// Shared by every subscription: one delivery policy for all functions.
var deliveryRetryPolicy = {
  maxDeliveryAttempts: maxDeliveryAttempts
  eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
}

// The topic's own identity writes the dead letters (Storage Blob Data Contributor on the container).
var deadLetterDelivery = {
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

resource topic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: topicName
}

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// hitl_core.events.models.REQUEST_EVENT_TYPES: the events that ask a person to act. Only with a
// notification channel (hitl_core.functions.events.deployed_subscriptions, which the local host follows).
resource notifySubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (contains(functionNames, 'notify_reviewers') && notificationChannelConfigured) {
  parent: topic
  name: 'notify-reviewers'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${app.id}/functions/notify_reviewers'
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
    retryPolicy: deliveryRetryPolicy
    deadLetterWithResourceIdentity: deadLetterDelivery
  }
}

// track_deadlines starts a request's deadline orchestration when it is created with a deadline
// or an escalation chain, and ends it when the request is resolved or expired. The advanced filter
// lets through only the events whose data says a deadline orchestration watches the request
// (hitl_core.events.models.DEADLINE_TRACKED): requests without one wake no execution.
resource deadlineSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (contains(functionNames, 'track_deadlines')) {
  parent: topic
  name: 'track-deadlines'
  // one subscription change at a time on the topic (no concurrent updates of the same parent)
  dependsOn: [
    notifySubscription
  ]
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${app.id}/functions/track_deadlines'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'hitl.request.created'
        'hitl.request.resolved'
        'hitl.request.expired'
      ]
      advancedFilters: [
        {
          operatorType: 'BoolEquals'
          key: 'data.deadline_tracked'
          value: true
        }
      ]
    }
    retryPolicy: deliveryRetryPolicy
    deadLetterWithResourceIdentity: deadLetterDelivery
  }
}

output subscribedFunctions array = functionNames
