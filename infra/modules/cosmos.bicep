// Cosmos DB for NoSQL: the checkpoint store (HITL_STORAGE=cosmos). Serverless by default, so an
// idle deployment costs only the stored GBs; provisioned or autoscale throughput is a parameter.
// Key-based (local) auth is off: the app reaches the data plane with its managed identity and the
// Cosmos DB Built-in Data Contributor SQL role (roles.bicep).
//
// The container layout below is a literal copy of hitl_core/checkpoint/cosmos_layout.py
// (PARTITION_KEY_PATH, DEFAULT_TTL, INDEXING_POLICY). Bicep cannot import Python, so
// tests/infra/test_cosmos_layout.py compares the two: change them together.

@description('Azure region of the account (single region, no failover).')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Cosmos DB account name (3-44 lowercase letters, digits and hyphens).')
param accountName string

@description('Database name; the app reads it from HITL_COSMOS_DATABASE.')
param databaseName string

@description('Container name; the app reads it from HITL_COSMOS_CONTAINER.')
param containerName string

@description('serverless: pay per request (default); provisioned: fixed RU/s; autoscale: RU/s scale between 10% and the maximum.')
@allowed([
  'serverless'
  'provisioned'
  'autoscale'
])
param capacityMode string = 'serverless'

@description('RU/s of the container when capacityMode is provisioned.')
@minValue(400)
param provisionedThroughput int = 400

@description('Maximum RU/s of the container when capacityMode is autoscale.')
@minValue(1000)
param autoscaleMaxThroughput int = 1000

var provisionedOptions = {
  throughput: provisionedThroughput
}
var autoscaleOptions = {
  autoscaleSettings: {
    maxThroughput: autoscaleMaxThroughput
  }
}
var containerOptions = (capacityMode == 'provisioned') ? provisionedOptions : ((capacityMode == 'autoscale') ? autoscaleOptions : {})
var serverlessCapabilities = [
  {
    name: 'EnableServerless'
  }
]

resource account 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: accountName
  location: location
  tags: tags
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: (capacityMode == 'serverless') ? serverlessCapabilities : []
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    publicNetworkAccess: 'Enabled'
    enableAutomaticFailover: false
    enableMultipleWriteLocations: false
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: account
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource sessionsContainer 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          '/session_id'
        ]
        kind: 'Hash'
        version: 2
      }
      defaultTtl: -1
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          {
            path: '/kind/?'
          }
          {
            path: '/session_id/?'
          }
          {
            path: '/workflow/?'
          }
          {
            path: '/status/?'
          }
          {
            path: '/expires_at/?'
          }
          {
            path: '/inbox_oldest_created_at/?'
          }
          {
            path: '/inbox_newest_created_at/?'
          }
          {
            path: '/assignees/[]/?'
          }
          {
            path: '/inbox_index/[]/inbox_order/?'
          }
          {
            path: '/inbox_index/[]/approvers/[]/?'
          }
          {
            path: '/inbox_index/[]/claimed_by/?'
          }
          {
            path: '/inbox_index/[]/claimed_until/?'
          }
          {
            path: '/participants/[]/?'
          }
          {
            path: '/delegate/?'
          }
        ]
        excludedPaths: [
          {
            path: '/*'
          }
          {
            path: '/"_etag"/?'
          }
        ]
        compositeIndexes: [
          [
            {
              path: '/kind'
              order: 'ascending'
            }
            {
              path: '/inbox_oldest_created_at'
              order: 'ascending'
            }
          ]
          [
            {
              path: '/kind'
              order: 'ascending'
            }
            {
              path: '/workflow'
              order: 'ascending'
            }
            {
              path: '/inbox_oldest_created_at'
              order: 'ascending'
            }
          ]
        ]
      }
    }
    options: containerOptions
  }
}

output accountName string = account.name
output endpoint string = account.properties.documentEndpoint
output databaseName string = database.name
output containerName string = sessionsContainer.name
