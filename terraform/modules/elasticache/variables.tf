variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC the resources live in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (at least two zones)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs at least two subnets."
  }
}

variable "allowed_security_group_ids" {
  description = "Security groups allowed to connect (the ECS tasks, batch jobs)."
  type        = list(string)
  default     = []
}

variable "engine" {
  description = "redis or valkey."
  type        = string
  default     = "valkey"

  validation {
    condition     = contains(["redis", "valkey"], var.engine)
    error_message = "engine must be redis or valkey."
  }
}

variable "engine_version" {
  description = "Engine version (valkey 7.2/8.0, redis 7.1)."
  type        = string
  default     = "8.0"
}

variable "node_type" {
  description = "Node type, e.g. cache.t4g.micro (dev) or cache.m7g.large (prod)."
  type        = string

  validation {
    condition     = can(regex("^cache\\.[a-z0-9]+\\.[a-z0-9]+$", var.node_type))
    error_message = "node_type must look like cache.<family>.<size>."
  }
}

variable "replicas" {
  description = "Read replicas besides the primary (>= 1 enables automatic failover and Multi-AZ)."
  type        = number
  default     = 0

  validation {
    condition     = var.replicas >= 0 && var.replicas <= 5
    error_message = "replicas must be between 0 and 5."
  }
}

variable "auth_token_secret_name" {
  description = "Name of a Secrets Manager secret (created before apply, see the README) whose value is the AUTH token (16-128 printable characters)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9/_+=.@-]{1,512}$", var.auth_token_secret_name))
    error_message = "auth_token_secret_name must be a valid Secrets Manager secret name."
  }
}

variable "snapshot_retention_days" {
  description = "Days automatic snapshots are kept (0 disables them)."
  type        = number
  default     = 1

  validation {
    condition     = var.snapshot_retention_days >= 0 && var.snapshot_retention_days <= 35
    error_message = "snapshot_retention_days must be between 0 and 35."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
