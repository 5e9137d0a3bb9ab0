output "database_name" {
  description = "Glue database holding the lake's tables (query it from Athena)."
  value       = aws_glue_catalog_database.lake.name
}

output "table_names" {
  description = "Glue tables, by dataset."
  value       = { for k, t in aws_glue_catalog_table.this : k => t.name }
}
