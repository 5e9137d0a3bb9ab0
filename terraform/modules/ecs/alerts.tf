# ---- alerts: the topic every alert is also published to ---------------------------------------
# The live flow publishes each alert (and each rate-limit summary) with `owner` and `event_id`
# message attributes, so a subscription can take one owner's alerts with a filter policy.
# Encrypted with the AWS managed SNS key unless a key of our own is given.

resource "aws_sns_topic" "alerts" {
  name              = "${var.name}-alerts"
  kms_master_key_id = coalesce(var.alerts_kms_key_arn, "alias/aws/sns")
  tags              = var.tags
}

data "aws_iam_policy_document" "alerts_publish" {
  statement {
    sid       = "PublishAlerts"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
  }

  dynamic "statement" {
    for_each = var.alerts_kms_key_arn == null ? [] : [var.alerts_kms_key_arn]
    content {
      sid       = "AlertsKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}
