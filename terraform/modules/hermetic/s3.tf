# Buckets: sealed datasets (in), results (out: encrypted checkpoints, certificates),
# artifacts (the EIF and the parent's Python wheels), and logs (S3 access logs and VPC
# flow logs). The three data buckets share one configuration, kept in this file once
# per concern with for_each so that no bucket can drift from the others.

locals {
  data_buckets = {
    sealed    = aws_s3_bucket.sealed
    results   = aws_s3_bucket.results
    artifacts = aws_s3_bucket.artifacts
  }
  all_buckets = merge(local.data_buckets, { logs = aws_s3_bucket.logs })
}

resource "aws_s3_bucket" "sealed" {
  #checkov:skip=CKV_AWS_144:Single-region appliance; sealed files are ciphertext the data owner keeps and can upload again, so replication would only multiply copies.
  #checkov:skip=CKV2_AWS_62:Jobs are started by the operator, not by bucket events; no consumer exists for notifications.
  bucket        = "${var.name}-sealed-${local.bucket_suffix}"
  force_destroy = var.force_destroy_buckets
  tags          = merge(local.tags, { Name = "${var.name}-sealed", Purpose = "sealed-datasets" })
}

resource "aws_s3_bucket" "results" {
  #checkov:skip=CKV_AWS_144:Single-region appliance; results are encrypted checkpoints and certificates that their owners download, replication is left to them.
  #checkov:skip=CKV2_AWS_62:Results are fetched by their owners on demand; no consumer exists for notifications.
  bucket        = "${var.name}-results-${local.bucket_suffix}"
  force_destroy = var.force_destroy_buckets
  tags          = merge(local.tags, { Name = "${var.name}-results", Purpose = "job-results" })
}

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_144:Artifacts (EIF, wheels) are rebuilt reproducibly from source; replication adds nothing.
  #checkov:skip=CKV2_AWS_62:Artifacts are pulled by the install script on the instance; no consumer exists for notifications.
  bucket        = "${var.name}-artifacts-${local.bucket_suffix}"
  force_destroy = var.force_destroy_buckets
  tags          = merge(local.tags, { Name = "${var.name}-artifacts", Purpose = "eif-and-wheels" })
}

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log destination; logging it into itself would loop.
  #checkov:skip=CKV_AWS_144:Logs stay in the region they describe; replicate them with the organisation's log archive if required.
  #checkov:skip=CKV_AWS_145:S3 server access logging only delivers to buckets with SSE-S3 (AES256) default encryption, not SSE-KMS.
  #checkov:skip=CKV2_AWS_62:Log delivery is continuous; no consumer exists for notifications.
  bucket        = "${var.name}-logs-${local.bucket_suffix}"
  force_destroy = var.force_destroy_buckets
  tags          = merge(local.tags, { Name = "${var.name}-logs", Purpose = "access-and-flow-logs" })
}

resource "aws_s3_bucket_ownership_controls" "all" {
  for_each = local.all_buckets

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs off
  }
}

resource "aws_s3_bucket_public_access_block" "all" {
  for_each = local.all_buckets

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "all" {
  for_each = local.all_buckets

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = local.data_buckets

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.storage.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256" # the only default encryption server access logging supports
    }
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each = local.data_buckets

  bucket        = each.value.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/${each.key}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = local.data_buckets

  bucket = each.value.id

  rule {
    id     = "expire-noncurrent-and-abort-uploads"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_retention_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-logs"
    status = "Enabled"
    filter {}

    expiration {
      days = var.log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.all]
}

# ------------------------------------------------------------------ bucket policies

data "aws_iam_policy_document" "tls_only" {
  for_each = local.all_buckets

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [each.value.arn, "${each.value.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

data "aws_iam_policy_document" "sealed" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["sealed"].json]

  dynamic "statement" {
    for_each = length(var.data_uploader_arns) > 0 ? [1] : []

    content {
      sid       = "DataOwnersUploadSealedDatasets"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.sealed.arn}/*"]

      principals {
        type        = "AWS"
        identifiers = var.data_uploader_arns
      }
    }
  }
}

data "aws_iam_policy_document" "results" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["results"].json]

  dynamic "statement" {
    for_each = length(var.result_reader_arns) > 0 ? [1] : []

    content {
      sid       = "OwnersReadResults"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = ["${aws_s3_bucket.results.arn}/*"]

      principals {
        type        = "AWS"
        identifiers = var.result_reader_arns
      }
    }
  }
}

data "aws_iam_policy_document" "logs" {
  source_policy_documents = [data.aws_iam_policy_document.tls_only["logs"].json]

  statement {
    sid       = "S3ServerAccessLogDelivery"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/s3-access/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "FlowLogDelivery"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/vpc-flow-logs/*"]

    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
    condition {
      test     = "StringEquals"
      variable = "s3:x-amz-acl"
      values   = ["bucket-owner-full-control"]
    }
  }

  statement {
    sid       = "FlowLogAclCheck"
    effect    = "Allow"
    actions   = ["s3:GetBucketAcl"]
    resources = [aws_s3_bucket.logs.arn]

    principals {
      type        = "Service"
      identifiers = ["delivery.logs.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_s3_bucket_policy" "sealed" {
  bucket     = aws_s3_bucket.sealed.id
  policy     = data.aws_iam_policy_document.sealed.json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

resource "aws_s3_bucket_policy" "results" {
  bucket     = aws_s3_bucket.results.id
  policy     = data.aws_iam_policy_document.results.json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

resource "aws_s3_bucket_policy" "artifacts" {
  bucket     = aws_s3_bucket.artifacts.id
  policy     = data.aws_iam_policy_document.tls_only["artifacts"].json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

resource "aws_s3_bucket_policy" "logs" {
  bucket     = aws_s3_bucket.logs.id
  policy     = data.aws_iam_policy_document.logs.json
  depends_on = [aws_s3_bucket_public_access_block.all]
}

# ------------------------------------------------------------------ budget ledger
# Each sealed dataset's budget ledger: numbered write-once slots the enclave writes with
# If-None-Match and COMPLIANCE Object Lock (enclave/ledger/s3.py). The bucket policy,
# rendered by `make policies` from kms-policies/ledger-bucket.template.json, forbids
# deleting, overwriting or unlocking a slot to everyone, the parent role included.
# Compliance retention cannot be shortened by anyone: objects stay (and are billed)
# until it ends, and the bucket cannot be emptied or destroyed before then.

resource "aws_s3_bucket" "ledger" {
  #checkov:skip=CKV_AWS_144:A second region would be another set of slots the enclave does not read; the slots are locked in place instead.
  #checkov:skip=CKV2_AWS_62:The enclave reads the ledger itself; no consumer exists for notifications.
  #checkov:skip=CKV2_AWS_61:No lifecycle: expiring current versions would stack delete markers over locked slots, and the bucket policy forbids lifecycle rules.
  bucket              = "${var.name}-ledger-${local.bucket_suffix}"
  object_lock_enabled = true
  # Compliance-locked objects cannot be deleted before their retention ends, so
  # force_destroy could never empty this bucket: refuse to pretend otherwise.
  force_destroy = false
  tags          = merge(local.tags, { Name = "${var.name}-ledger", Purpose = "budget-ledger" })
}

resource "aws_s3_bucket_ownership_controls" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  rule {
    object_ownership = "BucketOwnerEnforced" # ACLs off
  }
}

resource "aws_s3_bucket_public_access_block" "ledger" {
  bucket                  = aws_s3_bucket.ledger.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# Object Lock needs versioning; S3 refuses to suspend it on such a bucket.
resource "aws_s3_bucket_versioning" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  versioning_configuration {
    status = "Enabled"
  }
}

# The enclave sets each slot's retention itself; this default covers any object put
# without one (which the bucket policy refuses anyway).
resource "aws_s3_bucket_object_lock_configuration" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.ledger_retention_days
    }
  }
  depends_on = [aws_s3_bucket_versioning.ledger]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.storage.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "ledger" {
  bucket        = aws_s3_bucket.ledger.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "s3-access/ledger/"
}

resource "aws_s3_bucket_policy" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  policy = var.ledger_bucket_policy

  # The policy denies changing the lock configuration: set it first.
  depends_on = [aws_s3_bucket_public_access_block.ledger, aws_s3_bucket_object_lock_configuration.ledger]

  lifecycle {
    precondition {
      condition     = var.ledger_bucket_policy != null
      error_message = "Set ledger_bucket_policy: run `make policies LEDGER_BUCKET=${var.name}-ledger-${local.bucket_suffix}` (kms-policies/rendered/ledger-bucket.json)."
    }
    precondition {
      condition     = strcontains(coalesce(var.ledger_bucket_policy, "-"), "arn:${local.partition}:s3:::${var.name}-ledger-${local.bucket_suffix}/*")
      error_message = "The ledger bucket policy names another bucket; render it with LEDGER_BUCKET=${var.name}-ledger-${local.bucket_suffix}."
    }
    precondition {
      condition     = strcontains(coalesce(var.ledger_bucket_policy, "-"), local.parent_role_arn)
      error_message = "The ledger bucket policy does not name this deployment's parent role; render it with PARENT_ROLE_ARN=${local.parent_role_arn}."
    }
    precondition {
      condition     = can(regex("s3:if-none-match", coalesce(var.ledger_bucket_policy, "-")))
      error_message = "The ledger bucket policy has no conditional-write rule; render it from kms-policies/ledger-bucket.template.json."
    }
  }
}
