variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "subnet_ids" {
  description = "Private subnets the jobs run in."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1
    error_message = "subnet_ids needs at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the jobs (the ECS tasks group: it may reach PostgreSQL and Redis)."
  type        = list(string)
}

variable "image" {
  description = "Image reference (repository URL and tag) the jobs run."
  type        = string
}

variable "repository_arn" {
  description = "ECR repository of the image."
  type        = string
}

variable "max_vcpus" {
  description = "Upper bound of vCPUs across all running jobs."
  type        = number
  default     = 16

  validation {
    condition     = var.max_vcpus >= 1 && var.max_vcpus <= 4096
    error_message = "max_vcpus must be between 1 and 4096."
  }
}

variable "app_env" {
  description = "APP_ENV of the jobs."
  type        = string

  validation {
    condition     = contains(["dev", "test", "staging", "prod"], var.app_env)
    error_message = "app_env must be dev, test, staging or prod."
  }
}

variable "lake_url" {
  description = "LAKE_URL (s3://bucket)."
  type        = string

  validation {
    condition     = can(regex("^s3://", var.lake_url))
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

variable "database_url" {
  description = "DATABASE_URL without a password (PGPASSWORD comes from db_secret_arn)."
  type        = string
}

variable "db_secret_arn" {
  description = "RDS-managed master secret (JSON with a password key)."
  type        = string
}

variable "polygon_secret_arn" {
  description = "Secret holding POLYGON_API_KEY (replay and metadata jobs)."
  type        = string
}

variable "secret_kms_key_arns" {
  description = "KMS keys the secrets are encrypted with."
  type        = list(string)
  default     = []
}

variable "sns_topic_arn" {
  description = "SNS_TOPIC_ARN the jobs publish failures to."
  type        = string
}

variable "sns_kms_key_arn" {
  description = "KMS key of the SNS topic."
  type        = string
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the jobs publish their counts to (METRICS_NAMESPACE)."
  type        = string
  default     = "Condvest/Pipeline"

  validation {
    condition     = can(regex("^[A-Za-z0-9._/#:-]{1,255}$", var.metrics_namespace)) && !startswith(var.metrics_namespace, "AWS/")
    error_message = "metrics_namespace must be 1-255 letters, digits and . _ / # : - and must not start with AWS/."
  }
}

variable "log_group_name" {
  description = "Log group of the jobs."
  type        = string
}

variable "fragment_retention_days" {
  description = "FRAGMENT_RETENTION_DAYS for the retention job."
  type        = number
  default     = 7

  validation {
    condition     = var.fragment_retention_days >= 0 && var.fragment_retention_days <= 3650
    error_message = "fragment_retention_days must be between 0 and 3650."
  }
}

variable "jobs" {
  description = "Batch jobs by name: command, Fargate vCPU and memory (MiB), timeout in seconds, and whether the job takes --shard I/N from its array index."
  type = map(object({
    command         = list(string)
    vcpu            = number
    memory          = number
    timeout_seconds = optional(number, 7200)
    sharded         = optional(bool, false)
    needs_polygon   = optional(bool, false)
  }))

  validation {
    condition     = alltrue([for k in keys(var.jobs) : can(regex("^[a-z][a-z0-9-]{0,40}$", k))])
    error_message = "job names must be lower-case letters, digits and hyphens."
  }

  validation {
    condition     = alltrue([for j in values(var.jobs) : contains([0.25, 0.5, 1, 2, 4, 8, 16], j.vcpu)])
    error_message = "vcpu must be a Fargate size: 0.25, 0.5, 1, 2, 4, 8 or 16."
  }
}

variable "shards" {
  description = "Array size of sharded jobs (SHARDS; each child runs --shard INDEX/SHARDS)."
  type        = number
  default     = 1

  validation {
    condition     = var.shards >= 1 && var.shards <= 1000
    error_message = "shards must be between 1 and 1000."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
