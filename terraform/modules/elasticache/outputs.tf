output "primary_endpoint" {
  description = "Host name of the primary node."
  value       = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "reader_endpoint" {
  description = "Host name of the reader endpoint (null without replicas)."
  value       = try(aws_elasticache_replication_group.this.reader_endpoint_address, null)
}

output "redis_url_secret_arn" {
  description = "Secret holding REDIS_URL (for ECS valueFrom)."
  value       = aws_secretsmanager_secret.redis_url.arn
}

output "kms_key_arn" {
  description = "KMS key encrypting the cache and the REDIS_URL secret (readers need kms:Decrypt)."
  value       = aws_kms_key.cache.arn
}

output "security_group_id" {
  description = "Security group of the cache."
  value       = aws_security_group.this.id
}
