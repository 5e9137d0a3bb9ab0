variable "name" {
  description = "Name prefix for every resource (lower-case letters, digits and hyphens)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter."
  }
}

variable "log_group_names" {
  description = "Short names of the log groups to create, e.g. [\"ws-ingest\", \"live\", \"api\", \"batch\"]."
  type        = set(string)

  validation {
    condition     = alltrue([for n in var.log_group_names : can(regex("^[a-z][a-z0-9-]{0,40}$", n))])
    error_message = "log group names must be lower-case letters, digits and hyphens."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch keeps the logs."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, ... 3653)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (confirmation needed)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails must be e-mail addresses."
  }
}

variable "enabled_alarms" {
  description = "Alarms to create (their targets must be given): kinesis_lag, db, alb_5xx, ecs_running, pipeline_failed. A set of names, so it is known at plan time even when the targets are not."
  type        = set(string)
  default     = []

  validation {
    condition     = alltrue([for a in var.enabled_alarms : contains(["kinesis_lag", "db", "alb_5xx", "ecs_running", "pipeline_failed"], a)])
    error_message = "enabled_alarms may contain kinesis_lag, db, alb_5xx, ecs_running and pipeline_failed."
  }
}

variable "kinesis_stream_name" {
  description = "Ticks stream to watch for consumer lag (alarm in enabled_alarms)."
  type        = string
  default     = null
}

variable "kinesis_max_iterator_age_ms" {
  description = "Alarm when the live flow lags the stream by more than this."
  type        = number
  default     = 60000
}

variable "db_instance_identifier" {
  description = "RDS instance to watch (CPU, free storage) (alarm in enabled_alarms)."
  type        = string
  default     = null
}

variable "alb_arn_suffix" {
  description = "Load balancer ARN suffix to watch for 5xx (alarm in enabled_alarms)."
  type        = string
  default     = null
}

variable "ecs_cluster_name" {
  description = "ECS cluster of the services to watch (alarm in enabled_alarms)."
  type        = string
  default     = null
}

variable "ecs_service_names" {
  description = "ECS services that must keep at least one running task."
  type        = list(string)
  default     = []
}

variable "state_machine_arn" {
  description = "Step Functions state machine to watch for failed executions (alarm in enabled_alarms)."
  type        = string
  default     = null
}

variable "dashboard" {
  description = "Create the pipeline-health dashboard (<name>-pipeline)."
  type        = bool
  default     = false
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the jobs' own metrics (METRICS_NAMESPACE), plotted on the dashboard."
  type        = string
  default     = "Condvest/Pipeline"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
