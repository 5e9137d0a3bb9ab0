variable "database_name" {
  description = "Glue database of the lake's tables (lower-case letters, digits and underscores)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,254}$", var.database_name))
    error_message = "database_name must be lower-case letters, digits and underscores, starting with a letter."
  }
}

variable "lake_url" {
  description = "Root of the lake, s3://bucket or s3://bucket/prefix, without a trailing slash."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^/]+)*$", var.lake_url))
    error_message = "lake_url must be s3://bucket[/prefix] without a trailing slash."
  }
}

variable "first_year" {
  description = "First year the yearly partitions are projected from (daily history starts in 1962)."
  type        = number
  default     = 1962

  validation {
    condition     = var.first_year >= 1900 && floor(var.first_year) == var.first_year
    error_message = "first_year must be a whole year from 1900."
  }
}

variable "last_year" {
  description = "Last year the yearly partitions are projected to."
  type        = number
  default     = 2099

  validation {
    condition     = var.last_year >= 2000 && floor(var.last_year) == var.last_year
    error_message = "last_year must be a whole year from 2000."
  }
}

variable "first_minute_date" {
  description = "First session the minute-bar partitions are projected from (YYYY-MM-DD)."
  type        = string
  default     = "2003-09-10"

  validation {
    condition     = can(regex("^[0-9]{4}-[0-9]{2}-[0-9]{2}$", var.first_minute_date))
    error_message = "first_minute_date must be YYYY-MM-DD."
  }
}
