variable "region" {
  description = "AWS region of the environment."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "environment" {
  description = "Environment name; also APP_ENV."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "project" {
  description = "Project prefix of every resource name."
  type        = string
  default     = "condvest"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,16}$", var.project))
    error_message = "project must be 2-17 lower-case letters, digits and hyphens."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be an IPv4 CIDR block."
  }
}

variable "az_count" {
  description = "Availability zones used."
  type        = number
  default     = 2
}

variable "nat_gateway_mode" {
  description = "none, single or per_az."
  type        = string
  default     = "single"
}

variable "lake_bucket_name" {
  description = "Lake bucket name; <project>-<env>-lake-<account id> when null."
  type        = string
  default     = null
}

variable "lake_force_destroy" {
  description = "Let destroy empty the lake bucket (dev only)."
  type        = bool
  default     = false
}

variable "quarantine_expiration_days" {
  description = "Days quarantined rows are kept."
  type        = number
  default     = 30
}

variable "trades_retention_days" {
  description = "Days the raw trades archive (bronze/trades/) is kept (TRADES_RETENTION_DAYS)."
  type        = number
  default     = 30
}

variable "fragment_retention_days" {
  description = "Days superseded bronze fragments are kept."
  type        = number
  default     = 7
}

variable "kinesis_stream_mode" {
  description = "ON_DEMAND or PROVISIONED."
  type        = string
  default     = "PROVISIONED"
}

variable "kinesis_shard_count" {
  description = "Shards when PROVISIONED."
  type        = number
  default     = 1
}

variable "kinesis_retention_hours" {
  description = "Hours ticks stay in the stream."
  type        = number
  default     = 24
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
}

variable "db_allocated_storage_gb" {
  description = "Initial RDS storage in GiB."
  type        = number
  default     = 20
}

variable "db_max_allocated_storage_gb" {
  description = "RDS storage autoscaling ceiling in GiB."
  type        = number
  default     = 100
}

variable "db_multi_az" {
  description = "RDS Multi-AZ standby."
  type        = bool
  default     = false
}

variable "db_deletion_protection" {
  description = "RDS deletion protection (and final snapshot)."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of RDS automated backups."
  type        = number
  default     = 7
}

variable "cache_node_type" {
  description = "ElastiCache node type."
  type        = string
}

variable "cache_replicas" {
  description = "ElastiCache replicas (>= 1 for failover)."
  type        = number
  default     = 0
}

variable "cache_auth_secret_name" {
  description = "Secrets Manager secret holding the cache AUTH token; <project>-<env>/redis-auth when null."
  type        = string
  default     = null
}

variable "image_tag" {
  description = "Application image tag to run."
  type        = string
  default     = "latest"
}

variable "services" {
  description = "Fargate size and count of ws-ingest, live and api."
  type = map(object({
    cpu           = number
    memory        = number
    desired_count = number
  }))
}

variable "api_autoscaling" {
  description = "API autoscaling bounds and CPU target."
  type = object({
    min_capacity = number
    max_capacity = number
    cpu_target   = number
  })
}

variable "api_certificate_arn" {
  description = "ACM certificate of the API's HTTPS listener; pass as TF_VAR_api_certificate_arn, never in a file."
  type        = string
}

variable "api_allowed_cidrs" {
  description = "CIDRs allowed to reach the API."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "alb_deletion_protection" {
  description = "Load balancer deletion protection."
  type        = bool
  default     = false
}

variable "batch_max_vcpus" {
  description = "vCPU ceiling of the batch compute environments."
  type        = number
  default     = 16
}

variable "batch_shards" {
  description = "Array size of the sharded batch jobs (consolidate, resample)."
  type        = number
  default     = 1
}

variable "batch_vcpu" {
  description = "vCPU per batch job."
  type        = number
  default     = 1
}

variable "batch_memory" {
  description = "Memory (MiB) per batch job."
  type        = number
  default     = 4096
}

variable "schedule_enabled" {
  description = "Run the daily pipeline on its schedule."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "CloudWatch Logs retention."
  type        = number
  default     = 30
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic."
  type        = list(string)
  default     = []
}
