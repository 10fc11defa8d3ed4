# The parent instance's role. The parent is untrusted: it may fetch ciphertext, store
# results and call KMS, but the key policies release data keys only with an enclave
# attestation document, so these permissions alone never expose plaintext.

data "aws_iam_policy_document" "parent_assume" {
  statement {
    sid     = "Ec2AssumesParentRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "parent" {
  name                 = local.parent_role_name
  description          = "Hermetic parent instance: relays ciphertext and attested KMS calls"
  assume_role_policy   = data.aws_iam_policy_document.parent_assume.json
  max_session_duration = 3600

  tags = merge(local.tags, { Name = local.parent_role_name })
}

resource "aws_iam_instance_profile" "parent" {
  name = local.parent_role_name
  role = aws_iam_role.parent.name
  tags = local.tags
}

data "aws_iam_policy_document" "parent" {
  statement {
    sid       = "ReadSealedDatasets"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.sealed.arn}/*"]
  }

  statement {
    sid       = "ReadArtifacts"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }

  # hermetic-install copies the release/ prefix recursively, which lists it first.
  statement {
    sid       = "ListReleases"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["release/*"]
    }
  }

  statement {
    sid       = "WriteResults"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.results.arn}/*"]
  }

  # The budget ledger (enclave/ledger/s3.py): the enclave signs these with the parent's
  # credentials. Slots are created only with If-None-Match; the bucket policy refuses
  # every delete, overwrite or weaker lock, whatever this role is granted.
  statement {
    sid       = "CreateLedgerSlots"
    effect    = "Allow"
    actions   = ["s3:PutObject", "s3:PutObjectRetention"]
    resources = ["${aws_s3_bucket.ledger.arn}/*"]

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["false"]
    }
  }

  # GetObjectRetention: without it S3 leaves the lock mode and date out of GetObject,
  # and the enclave would see every slot as unprotected.
  statement {
    sid       = "ReadLedgerSlots"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectRetention"]
    resources = ["${aws_s3_bucket.ledger.arn}/*"]
  }

  statement {
    sid       = "ListLedgerSlots"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.ledger.arn]
  }

  # The enclave signs these requests with the parent's credentials; the key policies
  # add the kms:RecipientAttestation:* conditions.
  statement {
    sid       = "AttestedKeyUse"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.data_owner_key_arn, local.model_owner_key_arn]
  }

  statement {
    sid       = "StorageKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.storage.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${local.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "parent" {
  name   = "${var.name}-parent"
  role   = aws_iam_role.parent.id
  policy = data.aws_iam_policy_document.parent.json
}

# Session Manager instead of SSH: no inbound port, sessions are logged by AWS.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  count = var.enable_ssm_endpoints ? 1 : 0

  role       = aws_iam_role.parent.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}
