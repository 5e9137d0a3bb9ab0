variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "app_env" {
  description = "APP_ENV of the services."
  type        = string

  validation {
    condition     = contains(["dev", "test", "staging", "prod"], var.app_env)
    error_message = "app_env must be dev, test, staging or prod."
  }
}

variable "vpc_id" {
  description = "VPC the tasks run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets for the tasks."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "image_tag" {
  description = "Tag of the application image in the module's ECR repository."
  type        = string
  default     = "latest"

  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a valid Docker tag."
  }
}

variable "lake_url" {
  description = "LAKE_URL (s3://bucket)."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]+[a-z0-9](/.*)?$", var.lake_url))
    error_message = "lake_url must be an s3:// URL."
  }
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the lake's KMS key."
  type        = string
}

variable "kinesis_stream_name" {
  description = "Name of the ticks stream (KINESIS_STREAM)."
  type        = string
}

variable "kinesis_stream_arn" {
  description = "ARN of the ticks stream."
  type        = string
}

variable "database_url" {
  description = "DATABASE_URL without a password (it comes from PGPASSWORD), e.g. postgresql://user@host:5432/db?sslmode=require."
  type        = string

  validation {
    condition     = can(regex("^postgres(ql)?://[^:@/]+@", var.database_url))
    error_message = "database_url must be a postgresql:// URL with a user and no password."
  }
}

variable "db_secret_arn" {
  description = "RDS-managed master secret (JSON with a password key)."
  type        = string
}

variable "redis_url_secret_arn" {
  description = "Secret holding REDIS_URL."
  type        = string
}

variable "secret_kms_key_arns" {
  description = "KMS keys the secrets are encrypted with (execution roles get kms:Decrypt on them)."
  type        = list(string)
  default     = []
}

variable "log_group_names" {
  description = "Log group per service: keys ws-ingest, live and api."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["ws-ingest", "live", "api"] : contains(keys(var.log_group_names), k)])
    error_message = "log_group_names needs the keys ws-ingest, live and api."
  }
}

variable "services" {
  description = "Size per service (keys ws-ingest, live, api): Fargate cpu units, memory MiB and desired count."
  type = map(object({
    cpu           = number
    memory        = number
    desired_count = number
  }))

  validation {
    condition     = alltrue([for k in ["ws-ingest", "live", "api"] : contains(keys(var.services), k)])
    error_message = "services needs the keys ws-ingest, live and api."
  }

  validation {
    condition     = try(var.services["live"].desired_count <= 1, true)
    error_message = "services.live.desired_count must be 0 or 1: the live flow's recovery store serves one task (more shards go to more Bytewax workers in that task)."
  }

  validation {
    condition     = alltrue([for s in values(var.services) : contains([256, 512, 1024, 2048, 4096, 8192, 16384], s.cpu)])
    error_message = "cpu must be a Fargate size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "api_autoscaling" {
  description = "API autoscaling bounds and the average CPU it keeps."
  type = object({
    min_capacity = number
    max_capacity = number
    cpu_target   = number
  })
  default = {
    min_capacity = 1
    max_capacity = 4
    cpu_target   = 60
  }

  validation {
    condition     = var.api_autoscaling.min_capacity >= 1 && var.api_autoscaling.max_capacity >= var.api_autoscaling.min_capacity && var.api_autoscaling.cpu_target > 0 && var.api_autoscaling.cpu_target < 100
    error_message = "api_autoscaling needs 1 <= min_capacity <= max_capacity and 0 < cpu_target < 100."
  }
}

variable "attach_load_balancer" {
  description = "Register the API tasks with api_target_group_arn."
  type        = bool
  default     = true
}

variable "api_target_group_arn" {
  description = "Target group of the API (when attach_load_balancer)."
  type        = string
  default     = null
}

variable "alb_security_group_id" {
  description = "Security group of the load balancer allowed to reach the API port."
  type        = string
  default     = null
}

variable "container_insights" {
  description = "Enable Container Insights on the cluster (needed for the running-task alarms)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "recovery_kms_key_arn" {
  description = "KMS key encrypting the live flow's recovery store on EFS; null uses the AWS managed key."
  type        = string
  default     = null
}

variable "alerts_kms_key_arn" {
  description = "KMS key encrypting the alerts topic; null uses the AWS managed SNS key."
  type        = string
  default     = null
}

variable "alerts_max_per_minute" {
  description = "ALERTS_MAX_PER_MINUTE of the live flow: alerts per owner per minute before the rest go out as one summary."
  type        = number
  default     = 30

  validation {
    condition     = var.alerts_max_per_minute >= 1 && floor(var.alerts_max_per_minute) == var.alerts_max_per_minute
    error_message = "alerts_max_per_minute must be a whole number of at least 1."
  }
}
