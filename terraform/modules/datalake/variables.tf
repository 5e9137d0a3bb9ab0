variable "bucket_name" {
  description = "Globally unique name of the lake bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("\\.\\.", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)."
  }
}

variable "force_destroy" {
  description = "Let terraform destroy the bucket with its objects (dev only)."
  type        = bool
  default     = false
}

variable "fragment_prefix" {
  description = "Prefix of the per-day bronze fragments that consolidation merges."
  type        = string
  default     = "bronze/raw_ohlcv/"
}

variable "fragment_expiration_days" {
  description = "Days after which noncurrent (superseded) fragment versions are removed."
  type        = number
  default     = 7

  validation {
    condition     = var.fragment_expiration_days >= 1 && var.fragment_expiration_days <= 3650
    error_message = "fragment_expiration_days must be between 1 and 3650."
  }
}

variable "quarantine_expiration_days" {
  description = "Days rows that failed validation stay under quarantine/ before expiring."
  type        = number
  default     = 30

  validation {
    condition     = var.quarantine_expiration_days >= 1 && var.quarantine_expiration_days <= 3650
    error_message = "quarantine_expiration_days must be between 1 and 3650."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days noncurrent versions of any object are kept (undo window)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && var.noncurrent_version_expiration_days <= 3650
    error_message = "noncurrent_version_expiration_days must be between 1 and 3650."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the lake KMS key is deleted."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "trades_prefix" {
  description = "Prefix of the raw trades archive the live flow writes."
  type        = string
  default     = "bronze/trades/"

  validation {
    condition     = can(regex("^[A-Za-z0-9_=./-]+/$", var.trades_prefix))
    error_message = "trades_prefix must be a key prefix ending in a slash."
  }
}

variable "minutes_by_symbol_prefix" {
  description = "Prefix of the per-symbol month files of minute bars (a derived read path)."
  type        = string
  default     = "bronze/raw_ohlcv_1m_by_symbol/"

  validation {
    condition     = can(regex("^[A-Za-z0-9_=./-]+/$", var.minutes_by_symbol_prefix))
    error_message = "minutes_by_symbol_prefix must be a key prefix ending in a slash."
  }
}

variable "trades_retention_days" {
  description = "Days archived raw trades are kept before they expire (TRADES_RETENTION_DAYS)."
  type        = number
  default     = 30

  validation {
    condition     = var.trades_retention_days >= 1 && var.trades_retention_days <= 3650 && floor(var.trades_retention_days) == var.trades_retention_days
    error_message = "trades_retention_days must be a whole number between 1 and 3650."
  }
}
