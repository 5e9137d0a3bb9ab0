data "aws_region" "current" {}
data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition   = data.aws_partition.current.partition
  submit_sync = "arn:${local.partition}:states:::batch:submitJob.sync"
  sns_publish = "arn:${local.partition}:states:::sns:publish"

  catch = [{ ErrorEquals = ["States.ALL"], ResultPath = "$.error", Next = "NotifyFailure" }]
  retry = [{ ErrorEquals = ["Batch.AWSBatchException", "Batch.ServerException"], IntervalSeconds = 30, MaxAttempts = 3, BackoffRate = 2 }]

  single_jobs = ["replay", "metadata", "backfill", "actions", "consolidate", "gaps", "retention"]

  array_properties = {
    for k in var.sharded_jobs : k => { ArrayProperties = { Size = var.shards } } if var.shards > 1
  }

  # One Batch step: submit and wait; JOB_ARGS carries extra arguments (resample intervals).
  steps = merge(
    {
      for k in local.single_jobs : k => {
        Type     = "Task"
        Resource = local.submit_sync
        Parameters = merge(
          {
            JobName       = "${var.name}-${k}"
            JobQueue      = var.job_queue_arn
            JobDefinition = var.job_definition_arns[k]
          },
          try(local.array_properties[k], {}),
        )
        ResultPath = null
        Retry      = local.retry
      }
    },
    {
      for n in var.resample_intervals : "resample-${n}d" => {
        Type     = "Task"
        Resource = local.submit_sync
        Parameters = merge(
          {
            JobName            = "${var.name}-resample-${n}d"
            JobQueue           = var.job_queue_arn
            JobDefinition      = var.job_definition_arns["resample"]
            ContainerOverrides = { Environment = [{ Name = "JOB_ARGS", Value = "--intervals ${n}" }] }
          },
          try(local.array_properties["resample"], {}),
        )
        ResultPath = null
        Retry      = local.retry
      }
    },
  )

  definition = {
    Comment = "Daily pipeline: replay and metadata (then new listings' history), corporate actions, consolidate, gaps, six resamples, retention"
    StartAt = "Ingest"
    States = {
      Ingest = {
        Type = "Parallel"
        Branches = [
          { StartAt = "Replay", States = { Replay = merge(local.steps["replay"], { End = true }) } },
          {
            StartAt = "Metadata"
            States = {
              Metadata    = merge(local.steps["metadata"], { Next = "BackfillNew" })
              BackfillNew = merge(local.steps["backfill"], { End = true })
            }
          },
        ]
        ResultPath = null
        Next       = "CorporateActions"
        Catch      = local.catch
      }
      # splits and dividends before consolidation, so the resample adjusts with today's splits
      CorporateActions = merge(local.steps["actions"], { Next = "Consolidate", Catch = local.catch })
      Consolidate      = merge(local.steps["consolidate"], { Next = "Gaps", Catch = local.catch })
      Gaps             = merge(local.steps["gaps"], { Next = "Resample", Catch = local.catch })
      Resample = {
        Type = "Parallel"
        Branches = [
          for n in var.resample_intervals : {
            StartAt = "Resample${n}d"
            States  = { "Resample${n}d" = merge(local.steps["resample-${n}d"], { End = true }) }
          }
        ]
        ResultPath = null
        Next       = "Retention"
        Catch      = local.catch
      }
      Retention = merge(local.steps["retention"], { End = true, Catch = local.catch })
      NotifyFailure = {
        Type     = "Task"
        Resource = local.sns_publish
        Parameters = {
          TopicArn    = var.sns_topic_arn
          Subject     = "${var.name}: daily pipeline failed"
          "Message.$" = "States.JsonToString($.error)"
        }
        Next = "Failed"
      }
      Failed = { Type = "Fail", Error = "PipelineFailed", Cause = "A step failed; see the SNS message and the batch logs." }
    }
  }
}

# ---- state machine ---------------------------------------------------------------------------

data "aws_iam_policy_document" "states_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "states" {
  name               = "${var.name}-pipeline"
  assume_role_policy = data.aws_iam_policy_document.states_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "states" {
  statement {
    sid     = "SubmitJobs"
    actions = ["batch:SubmitJob"]
    resources = concat(
      [var.job_queue_arn],
      [for a in values(var.job_definition_arns) : "${replace(a, "/:[0-9]+$/", "")}:*"],
    )
  }

  statement {
    sid       = "WatchJobs"
    actions   = ["batch:DescribeJobs", "batch:TerminateJob"]
    resources = ["*"]
  }

  statement {
    sid       = "SyncRule"
    actions   = ["events:PutTargets", "events:PutRule", "events:DescribeRule"]
    resources = ["arn:${local.partition}:events:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:rule/StepFunctionsGetEventsForBatchJobsRule"]
  }

  statement {
    sid       = "NotifyFailure"
    actions   = ["sns:Publish"]
    resources = [var.sns_topic_arn]
  }

  statement {
    sid       = "NotifyFailureKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.sns_kms_key_arn]
  }

  statement {
    sid = "Logs"
    actions = [
      "logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery", "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries", "logs:PutResourcePolicy", "logs:DescribeResourcePolicies", "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "states" {
  name   = "run-pipeline"
  role   = aws_iam_role.states.id
  policy = data.aws_iam_policy_document.states.json
}

resource "aws_sfn_state_machine" "pipeline" {
  name       = "${var.name}-daily"
  role_arn   = aws_iam_role.states.arn
  definition = jsonencode(local.definition)

  logging_configuration {
    log_destination        = "${var.log_group_arn}:*"
    include_execution_data = false
    level                  = "ERROR"
  }

  tracing_configuration {
    enabled = true
  }

  tags = var.tags
}

# ---- schedule --------------------------------------------------------------------------------

data "aws_iam_policy_document" "scheduler_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  name               = "${var.name}-pipeline-schedule"
  assume_role_policy = data.aws_iam_policy_document.scheduler_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.pipeline.arn]
  }
}

resource "aws_iam_role_policy" "scheduler" {
  name   = "start-pipeline"
  role   = aws_iam_role.scheduler.id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "daily" {
  name                         = "${var.name}-daily"
  description                  = "Runs the daily pipeline after the close"
  schedule_expression          = var.schedule_expression
  schedule_expression_timezone = var.schedule_timezone
  state                        = var.schedule_enabled ? "ENABLED" : "DISABLED"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_sfn_state_machine.pipeline.arn
    role_arn = aws_iam_role.scheduler.arn
    input    = jsonencode({ trigger = "schedule" })

    retry_policy {
      maximum_retry_attempts = 3
    }
  }
}

# Failures the state machine cannot catch itself (timeouts, aborts) also reach the topic.
resource "aws_cloudwatch_event_rule" "pipeline_failed" {
  name        = "${var.name}-pipeline-failed"
  description = "Daily pipeline execution failed, timed out or was aborted"
  event_pattern = jsonencode({
    source      = ["aws.states"]
    detail-type = ["Step Functions Execution Status Change"]
    detail = {
      status          = ["FAILED", "TIMED_OUT", "ABORTED"]
      stateMachineArn = [aws_sfn_state_machine.pipeline.arn]
    }
  })
  tags = var.tags
}

resource "aws_cloudwatch_event_target" "pipeline_failed" {
  rule      = aws_cloudwatch_event_rule.pipeline_failed.name
  target_id = "sns"
  arn       = var.sns_topic_arn
}
