# Pipeline health on one page: runs and their durations, rows, gaps, quarantined rows, the live
# flow's lag behind Kinesis, API latency and 5xx. Custom metrics come from the jobs themselves
# (core/metrics.py, namespace var.metrics_namespace, dimension Job); the rest are AWS's own.

data "aws_region" "current" {}

locals {
  ns    = var.metrics_namespace
  day   = 86400
  jobs  = "{${var.metrics_namespace},Job}"
  sfn   = var.state_machine_arn == null ? [] : [var.state_machine_arn]
  lb    = var.alb_arn_suffix == null ? [] : [var.alb_arn_suffix]
  kin   = var.kinesis_stream_name == null ? [] : [var.kinesis_stream_name]
  width = 8

  # One SEARCH over the jobs' metrics per panel: every job that publishes the metric shows up.
  job_panels = [
    { title = "Step durations (s)", search = "MetricName=\"seconds\"", stat = "Maximum" },
    { title = "Rows written", search = "MetricName=\"rows\" OR MetricName=\"bars\"", stat = "Sum" },
    { title = "Gaps", search = "MetricName=\"unexplained_gaps\" OR MetricName=\"symbol_gaps\" OR MetricName=\"market_gaps\"", stat = "Maximum" },
    { title = "Quarantined rows", search = "MetricName=\"quarantined\"", stat = "Sum" },
  ]

  panels = concat(
    [{
      title  = "Daily runs"
      stat   = "Sum"
      period = local.day
      metrics = concat(
        [for arn in local.sfn : ["AWS/States", "ExecutionsSucceeded", "StateMachineArn", arn]],
        [for arn in local.sfn : ["AWS/States", "ExecutionsFailed", "StateMachineArn", arn]],
        [[local.ns, "runs_succeeded"], [local.ns, "runs_failed"]],
      )
    }],
    [{
      title  = "Run duration (s)"
      stat   = "Maximum"
      period = local.day
      metrics = concat(
        [for arn in local.sfn : [{ expression = "m0 / 1000", label = "state machine", id = "e0" }]],
        [for arn in local.sfn : ["AWS/States", "ExecutionTime", "StateMachineArn", arn, { id = "m0", visible = false }]],
        [[local.ns, "run_seconds", { label = "batch.pipeline" }]],
      )
    }],
    [for p in local.job_panels : {
      title   = p.title
      stat    = p.stat
      period  = local.day
      metrics = [[{ expression = "SEARCH('${local.jobs} ${p.search}', '${p.stat}', ${local.day})", id = "s0" }]]
    }],
    [for s in local.kin : {
      title   = "Live flow lag behind Kinesis (ms)"
      stat    = "Maximum"
      period  = 60
      metrics = [["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", s]]
    }],
    [for lb in local.lb : {
      title  = "API latency (s)"
      stat   = "p99"
      period = 60
      metrics = [
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", lb, { stat = "p50", label = "p50" }],
        ["AWS/ApplicationELB", "TargetResponseTime", "LoadBalancer", lb, { stat = "p99", label = "p99" }],
      ]
    }],
    [for lb in local.lb : {
      title  = "API 5xx"
      stat   = "Sum"
      period = 60
      metrics = [
        ["AWS/ApplicationELB", "HTTPCode_Target_5XX_Count", "LoadBalancer", lb],
        ["AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count", "LoadBalancer", lb],
      ]
    }],
  )
}

resource "aws_cloudwatch_dashboard" "pipeline" {
  count = var.dashboard ? 1 : 0

  dashboard_name = "${var.name}-pipeline"
  dashboard_body = jsonencode({
    widgets = [
      for i, p in local.panels : {
        type   = "metric"
        x      = (i % 3) * local.width
        y      = floor(i / 3) * 6
        width  = local.width
        height = 6
        properties = {
          title   = p.title
          region  = data.aws_region.current.name
          view    = "timeSeries"
          stat    = p.stat
          period  = p.period
          metrics = p.metrics
        }
      }
    ]
  })
}
