# dev: smallest sizes, one zone's worth of NAT, no standby, cheap to tear down.
region      = "us-east-1"
environment = "dev"

vpc_cidr         = "10.20.0.0/16"
az_count         = 2
nat_gateway_mode = "single"

lake_force_destroy         = true
quarantine_expiration_days = 14
fragment_retention_days    = 3

kinesis_stream_mode     = "PROVISIONED"
kinesis_shard_count     = 1
kinesis_retention_hours = 24

db_instance_class           = "db.t4g.micro"
db_allocated_storage_gb     = 20
db_max_allocated_storage_gb = 50
db_multi_az                 = false
db_deletion_protection      = false
db_backup_retention_days    = 1

cache_node_type = "cache.t4g.micro"
cache_replicas  = 0

services = {
  "ws-ingest" = { cpu = 256, memory = 512, desired_count = 1 }
  "live"      = { cpu = 512, memory = 1024, desired_count = 1 }
  "api"       = { cpu = 256, memory = 512, desired_count = 1 }
}

api_autoscaling = {
  min_capacity = 1
  max_capacity = 2
  cpu_target   = 70
}

alb_deletion_protection = false

batch_max_vcpus = 8
batch_shards    = 1
batch_vcpu      = 1
batch_memory    = 4096

schedule_enabled   = true
log_retention_days = 14
