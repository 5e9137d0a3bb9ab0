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

variable "engine_version" {
  description = "PostgreSQL major version (the parameter group family follows it)."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[4-7]$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL major version between 14 and 17."
  }
}

variable "instance_class" {
  description = "Instance class, e.g. db.t4g.micro (dev) or db.m7g.large (prod)."
  type        = string

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must look like db.<family>.<size>."
  }
}

variable "allocated_storage_gb" {
  description = "Initial gp3 storage in GiB."
  type        = number
  default     = 20

  validation {
    condition     = var.allocated_storage_gb >= 20 && var.allocated_storage_gb <= 65536
    error_message = "allocated_storage_gb must be between 20 and 65536."
  }
}

variable "max_allocated_storage_gb" {
  description = "Ceiling for storage autoscaling in GiB (0 disables it)."
  type        = number
  default     = 100
}

variable "database_name" {
  description = "Name of the application database."
  type        = string
  default     = "condvest"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.database_name))
    error_message = "database_name must be lower-case letters, digits and underscores, starting with a letter."
  }
}

variable "master_username" {
  description = "Master user name; its password is generated and kept by RDS in Secrets Manager."
  type        = string
  default     = "condvest"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,15}$", var.master_username)) && !contains(["admin", "postgres", "rdsadmin"], var.master_username)
    error_message = "master_username must be 1-16 lower-case letters, digits or underscores and not a reserved name."
  }
}

variable "backup_retention_days" {
  description = "Days automated backups are kept."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "multi_az" {
  description = "Run a synchronous standby in a second zone."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Refuse deletion (and take a final snapshot on destroy)."
  type        = bool
  default     = true
}

variable "performance_insights" {
  description = "Enable Performance Insights (7 days free tier)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
