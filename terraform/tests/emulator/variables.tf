variable "endpoint" {
  description = "URL of the AWS emulator (LocalStack or moto server) every service is sent to."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.endpoint))
    error_message = "endpoint must be an http(s) URL."
  }
}

variable "name" {
  description = "Prefix of every resource name; the test passes a unique one per run."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 lowercase letters, digits or hyphens, starting with a letter, not ending with a hyphen."
  }
}

variable "with_pipeline" {
  description = "Create the Step Functions pipeline; off on moto, which lacks ValidateStateMachineDefinition (the provider calls it on create)."
  type        = bool
  default     = true
}
