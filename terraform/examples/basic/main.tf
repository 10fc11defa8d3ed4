# Example root: one Hermetic deployment with both keys created here. Render the key
# policies and the ledger's bucket policy first (`make policies`, see docs/DEPLOY.md);
# this root only reads them, so kms-policies/*.template.json stays the single source of truth.

locals {
  policy_dir         = coalesce(var.policy_dir, "${path.module}/../../../kms-policies/rendered")
  data_owner_policy  = "${local.policy_dir}/data-owner.json"
  model_owner_policy = "${local.policy_dir}/model-owner.json"
  ledger_policy      = "${local.policy_dir}/ledger-bucket.json"
}

module "hermetic" {
  source = "../../modules/hermetic"

  name               = var.name
  instance_type      = var.instance_type
  enclave_cpu_count  = var.enclave_cpu_count
  enclave_memory_mib = var.enclave_memory_mib
  data_uploader_arns = var.data_uploader_arns
  result_reader_arns = var.result_reader_arns

  data_owner_key_arn  = var.data_owner_key_arn
  model_owner_key_arn = var.model_owner_key_arn

  # null when the file is missing: the module then stops with "run `make policies`".
  data_owner_key_policy  = fileexists(local.data_owner_policy) ? file(local.data_owner_policy) : null
  model_owner_key_policy = fileexists(local.model_owner_policy) ? file(local.model_owner_policy) : null
  ledger_bucket_policy   = fileexists(local.ledger_policy) ? file(local.ledger_policy) : null
}
