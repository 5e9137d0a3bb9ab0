variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,26}[a-z0-9]$", var.name))
    error_message = "name must be 3-28 characters of lower-case letters, digits and hyphens (load balancer names are short)."
  }
}

variable "vpc_id" {
  description = "VPC of the load balancer and the API tasks."
  type        = string
}

variable "public_subnet_ids" {
  description = "Public subnets of the load balancer (two zones or more)."
  type        = list(string)

  validation {
    condition     = length(var.public_subnet_ids) >= 2
    error_message = "public_subnet_ids needs at least two subnets."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the HTTPS listener (pass it at apply time, e.g. TF_VAR_api_certificate_arn)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$", var.certificate_arn))
    error_message = "certificate_arn must be an ACM certificate ARN."
  }
}

variable "allowed_cidrs" {
  description = "IPv4 CIDRs allowed to reach the API over HTTPS."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_cidrs must be IPv4 CIDR blocks."
  }
}

variable "container_port" {
  description = "Port the API containers listen on."
  type        = number
  default     = 8000

  validation {
    condition     = var.container_port >= 1024 && var.container_port <= 65535
    error_message = "container_port must be an unprivileged port (1024-65535)."
  }
}

variable "health_check_path" {
  description = "Path the target group checks."
  type        = string
  default     = "/health"

  validation {
    condition     = startswith(var.health_check_path, "/")
    error_message = "health_check_path must start with /."
  }
}

variable "deletion_protection" {
  description = "Refuse to delete the load balancer."
  type        = bool
  default     = false
}

variable "access_logs_bucket" {
  description = "Bucket for load balancer access logs; none when null."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
