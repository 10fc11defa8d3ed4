# Two keys carry the policies rendered from kms-policies/*.template.json by
# `make policies` (the single source of truth, also loaded by the local KMS emulator):
#   data-owner  - seals datasets; only an attested enclave may unwrap their data keys;
#   model-owner - protects checkpoints; the attested enclave writes, the model owner reads.
# A third key, storage, is S3/EBS encryption at rest for this deployment's buckets and
# disks. It protects nothing the data-owner key does not already protect end to end.

locals {
  create_data_owner_key  = var.data_owner_key_arn == null
  create_model_owner_key = var.model_owner_key_arn == null

  data_owner_key_arn  = local.create_data_owner_key ? aws_kms_key.data_owner[0].arn : var.data_owner_key_arn
  model_owner_key_arn = local.create_model_owner_key ? aws_kms_key.model_owner[0].arn : var.model_owner_key_arn
}

resource "aws_kms_key" "data_owner" {
  count = local.create_data_owner_key ? 1 : 0

  description             = "Hermetic data-owner key: sealed datasets, released only to the attested enclave image"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = var.data_owner_key_policy

  tags = merge(local.tags, { Name = "${var.name}-data-owner" })

  # The policy names the parent role as a principal: KMS rejects a policy whose
  # principal does not exist yet.
  depends_on = [aws_iam_role.parent]

  lifecycle {
    precondition {
      condition     = var.data_owner_key_policy != null
      error_message = "Set data_owner_key_policy (run `make policies`) or data_owner_key_arn."
    }
    precondition {
      condition     = strcontains(coalesce(var.data_owner_key_policy, "-"), local.parent_role_arn)
      error_message = "The data-owner key policy does not name this deployment's parent role; render it with PARENT_ROLE_ARN=${local.parent_role_arn}."
    }
    precondition {
      condition     = can(regex("kms:RecipientAttestation:ImageSha384", coalesce(var.data_owner_key_policy, "-")))
      error_message = "The data-owner key policy has no attestation condition; render it from kms-policies/data-owner.template.json."
    }
  }
}

resource "aws_kms_alias" "data_owner" {
  count = local.create_data_owner_key ? 1 : 0

  name          = "alias/${var.name}-data-owner"
  target_key_id = aws_kms_key.data_owner[0].key_id
}

resource "aws_kms_key" "model_owner" {
  count = local.create_model_owner_key ? 1 : 0

  description             = "Hermetic model-owner key: encrypted checkpoints written by the attested enclave"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = var.model_owner_key_policy

  tags = merge(local.tags, { Name = "${var.name}-model-owner" })

  depends_on = [aws_iam_role.parent]

  lifecycle {
    precondition {
      condition     = var.model_owner_key_policy != null
      error_message = "Set model_owner_key_policy (run `make policies`) or model_owner_key_arn."
    }
    precondition {
      condition     = strcontains(coalesce(var.model_owner_key_policy, "-"), local.parent_role_arn)
      error_message = "The model-owner key policy does not name this deployment's parent role; render it with PARENT_ROLE_ARN=${local.parent_role_arn}."
    }
    precondition {
      condition     = can(regex("kms:RecipientAttestation:ImageSha384", coalesce(var.model_owner_key_policy, "-")))
      error_message = "The model-owner key policy has no attestation condition; render it from kms-policies/model-owner.template.json."
    }
  }
}

resource "aws_kms_alias" "model_owner" {
  count = local.create_model_owner_key ? 1 : 0

  name          = "alias/${var.name}-model-owner"
  target_key_id = aws_kms_key.model_owner[0].key_id
}

resource "aws_kms_key" "storage" {
  description             = "Hermetic storage key: S3 and EBS encryption at rest"
  enable_key_rotation     = true
  rotation_period_in_days = 365
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.storage_key.json

  tags = merge(local.tags, { Name = "${var.name}-storage" })
}

resource "aws_kms_alias" "storage" {
  name          = "alias/${var.name}-storage"
  target_key_id = aws_kms_key.storage.key_id
}

data "aws_iam_policy_document" "storage_key" {
  #checkov:skip=CKV_AWS_109:This is a key policy: Resource "*" means this one key, and administration is limited to the account's own IAM principals.
  #checkov:skip=CKV_AWS_111:This is a key policy: Resource "*" means this one key; use is further limited to S3 and EC2 through kms:ViaService.
  #checkov:skip=CKV_AWS_356:This is a key policy: Resource "*" is the only valid resource and means this one key.
  # Key administration stays with the account's IAM (the deploying principal).
  statement {
    sid = "AccountAdministersKey"
    actions = [
      "kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
      "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
      "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
    ]
    resources = ["*"] # in a key policy "*" means this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # Use of the key only through S3 and EC2 (EBS) on behalf of principals in this account.
  statement {
    sid       = "UseThroughS3AndEbs"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com", "ec2.${local.region}.amazonaws.com"]
    }
  }

  # Uploaders and readers from other accounts need the key through S3 too.
  dynamic "statement" {
    for_each = length(concat(var.data_uploader_arns, var.result_reader_arns)) > 0 ? [1] : []

    content {
      sid       = "ExternalPrincipalsThroughS3"
      actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey*", "kms:DescribeKey"]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = distinct(concat(var.data_uploader_arns, var.result_reader_arns))
      }

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["s3.${local.region}.amazonaws.com"]
      }
    }
  }
}
