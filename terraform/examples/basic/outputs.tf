output "instance_id" {
  value = module.hermetic.instance_id
}

output "parent_role_arn" {
  value = module.hermetic.parent_role_arn
}

output "data_owner_key_arn" {
  value = module.hermetic.data_owner_key_arn
}

output "model_owner_key_arn" {
  value = module.hermetic.model_owner_key_arn
}

output "sealed_bucket" {
  value = module.hermetic.sealed_bucket
}

output "results_bucket" {
  value = module.hermetic.results_bucket
}

output "artifacts_bucket" {
  value = module.hermetic.artifacts_bucket
}

output "ledger_bucket" {
  value = module.hermetic.ledger_bucket
}

output "ledger_location" {
  value = module.hermetic.ledger_location
}

output "kms_endpoint_host" {
  value = module.hermetic.kms_endpoint_host
}
