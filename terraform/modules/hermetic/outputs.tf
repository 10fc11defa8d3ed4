output "vpc_id" {
  value = aws_vpc.this.id
}

output "private_subnet_ids" {
  value = aws_subnet.private[*].id
}

output "instance_id" {
  description = "Parent instance (connect with `aws ssm start-session --target <id>`)."
  value       = aws_instance.parent.id
}

output "parent_role_arn" {
  description = "The PARENT_ROLE_ARN the key policies must name (PCR3 of the enclave is derived from it)."
  value       = aws_iam_role.parent.arn
}

output "data_owner_key_arn" {
  value = local.data_owner_key_arn
}

output "model_owner_key_arn" {
  value = local.model_owner_key_arn
}

output "storage_key_arn" {
  value = aws_kms_key.storage.arn
}

output "sealed_bucket" {
  value = aws_s3_bucket.sealed.id
}

output "results_bucket" {
  value = aws_s3_bucket.results.id
}

output "artifacts_bucket" {
  value = aws_s3_bucket.artifacts.id
}

output "logs_bucket" {
  value = aws_s3_bucket.logs.id
}

output "kms_endpoint_host" {
  description = "The only host on the vsock-proxy allow-list."
  value       = local.kms_endpoint_host
}

output "ledger_bucket" {
  value = aws_s3_bucket.ledger.id
}

output "ledger_location" {
  description = "The budget ledger location (s3://BUCKET/PREFIX?owner=ACCOUNT) to seal datasets with; each dataset keeps its slots under PREFIX/DATASET_ID/."
  value       = "s3://${aws_s3_bucket.ledger.id}/${var.ledger_prefix}?owner=${local.account_id}"
}
