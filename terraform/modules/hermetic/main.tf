data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first az_count zones by name are used (slice below); a zone AWS adds later sorts after them, so the subnets never move.
  state = "available"
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  azs        = slice(data.aws_availability_zones.available.names, 0, var.az_count)

  # The only host the enclave may reach, through vsock-proxy and the KMS interface
  # endpoint (private DNS makes this name resolve to the endpoint inside the VPC).
  kms_endpoint_host = "kms.${local.region}.amazonaws.com"
  # The budget ledger's S3 requests (path-style) go to the regional S3 name, through the
  # S3 relay and the S3 gateway endpoint.
  s3_endpoint_host = "s3.${local.region}.amazonaws.com"

  # Deterministic so the key policies can be rendered before the role exists.
  parent_role_name = "${var.name}-parent"
  parent_role_arn  = "arn:${local.partition}:iam::${local.account_id}:role/${local.parent_role_name}"

  bucket_suffix = "${local.account_id}-${local.region}"

  tags = merge({ Project = "hermetic", ManagedBy = "terraform" }, var.tags)
}
