resource "aws_kinesis_stream" "ticks" {
  name             = "${var.name}-ticks"
  shard_count      = var.stream_mode == "PROVISIONED" ? var.shard_count : null
  retention_period = var.retention_hours
  encryption_type  = "KMS"
  kms_key_id       = coalesce(var.kms_key_id, "alias/aws/kinesis")

  stream_mode_details {
    stream_mode = var.stream_mode
  }

  shard_level_metrics = ["IncomingRecords", "IteratorAgeMilliseconds"]

  tags = var.tags
}
