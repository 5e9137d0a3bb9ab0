output "dns_name" {
  description = "DNS name of the load balancer (point the API's CNAME or alias here)."
  value       = aws_lb.this.dns_name
}

output "zone_id" {
  description = "Hosted zone of the load balancer (for Route 53 aliases)."
  value       = aws_lb.this.zone_id
}

output "arn_suffix" {
  description = "ARN suffix of the load balancer (CloudWatch dimension)."
  value       = aws_lb.this.arn_suffix
}

output "target_group_arn" {
  description = "Target group the API service registers with."
  value       = aws_lb_target_group.api.arn
}

output "security_group_id" {
  description = "Security group of the load balancer."
  value       = aws_security_group.alb.id
}

output "https_listener_arn" {
  description = "ARN of the HTTPS listener."
  value       = try(aws_lb_listener.https.arn, null)
}
