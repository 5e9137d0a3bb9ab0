# prod: a NAT gateway and subnets in three zones, Multi-AZ PostgreSQL with deletion protection,
# a cache replica, a week of stream retention, sharded batch jobs, long log retention.
region      = "us-east-1"
environment = "prod"

vpc_cidr         = "10.30.0.0/16"
az_count         = 3
nat_gateway_mode = "per_az"

lake_force_destroy         = false
quarantine_expiration_days = 90
fragment_retention_days    = 7

kinesis_stream_mode     = "PROVISIONED"
kinesis_shard_count     = 4
kinesis_retention_hours = 168

db_instance_class           = "db.m7g.large"
db_allocated_storage_gb     = 100
db_max_allocated_storage_gb = 500
db_multi_az                 = true
db_deletion_protection      = true
db_backup_retention_days    = 14

cache_node_type = "cache.m7g.large"
cache_replicas  = 1

services = {
  "ws-ingest" = { cpu = 512, memory = 1024, desired_count = 1 }
  "live"      = { cpu = 2048, memory = 4096, desired_count = 1 }
  "api"       = { cpu = 1024, memory = 2048, desired_count = 2 }
}

api_autoscaling = {
  min_capacity = 2
  max_capacity = 8
  cpu_target   = 60
}

alb_deletion_protection = true

batch_max_vcpus = 64
batch_shards    = 4
batch_vcpu      = 2
batch_memory    = 8192

schedule_enabled   = true
log_retention_days = 90
