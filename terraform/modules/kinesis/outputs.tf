output "stream_name" {
  description = "Name of the ticks stream (KINESIS_STREAM)."
  value       = aws_kinesis_stream.ticks.name
}

output "stream_arn" {
  description = "ARN of the ticks stream."
  value       = aws_kinesis_stream.ticks.arn
}
