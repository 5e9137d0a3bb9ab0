output "bucket_name" {
  description = "Name of the lake bucket."
  value       = aws_s3_bucket.lake.id
}

output "bucket_arn" {
  description = "ARN of the lake bucket."
  value       = aws_s3_bucket.lake.arn
}

output "lake_url" {
  description = "LAKE_URL for the services (s3://bucket)."
  value       = "s3://${aws_s3_bucket.lake.id}"
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the lake."
  value       = aws_kms_key.lake.arn
}
