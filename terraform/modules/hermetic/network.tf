# Private subnets only: there is no internet gateway and no NAT. Everything the parent
# needs (S3, KMS, Session Manager, the Amazon Linux package repositories on S3) is
# reached through VPC endpoints.

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true # required for the interface endpoints' private DNS

  tags = merge(local.tags, { Name = "${var.name}-vpc" })
}

# Deny everything on the default security group so nothing lands in it by accident.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${var.name}-default-deny" })
}

resource "aws_subnet" "private" {
  count = var.az_count

  vpc_id                  = aws_vpc.this.id
  availability_zone       = local.azs[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 8, count.index)
  map_public_ip_on_launch = false

  tags = merge(local.tags, { Name = "${var.name}-private-${local.azs[count.index]}", Tier = "private" })
}

# One route table for the private subnets: the local route plus the S3 gateway
# endpoint's prefix-list route, which AWS adds itself. No 0.0.0.0/0 route.
resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "${var.name}-private" })
}

resource "aws_route_table_association" "private" {
  count = var.az_count

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private.id
}

resource "aws_flow_log" "vpc" {
  vpc_id                   = aws_vpc.this.id
  traffic_type             = "ALL"
  log_destination_type     = "s3"
  log_destination          = "${aws_s3_bucket.logs.arn}/vpc-flow-logs/"
  max_aggregation_interval = 60

  tags = merge(local.tags, { Name = "${var.name}-flow-log" })

  depends_on = [aws_s3_bucket_policy.logs]
}

# ------------------------------------------------------------------ security groups

resource "aws_security_group" "parent" {
  name        = "${var.name}-parent"
  description = "Hermetic parent instance: no ingress; HTTPS egress to the VPC endpoints only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-parent" })
}

resource "aws_vpc_security_group_egress_rule" "parent_to_interface_endpoints" {
  security_group_id = aws_security_group.parent.id
  description       = "HTTPS to the interface endpoints (KMS, Session Manager) inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr
}

resource "aws_vpc_security_group_egress_rule" "parent_to_s3_gateway" {
  security_group_id = aws_security_group.parent.id
  description       = "HTTPS to S3 through the gateway endpoint (S3 prefix list)"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3.prefix_list_id
}

resource "aws_security_group" "endpoints" {
  name        = "${var.name}-endpoints"
  description = "Interface endpoints: HTTPS from the parent instance only"
  vpc_id      = aws_vpc.this.id

  tags = merge(local.tags, { Name = "${var.name}-endpoints" })
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_from_parent" {
  security_group_id            = aws_security_group.endpoints.id
  description                  = "HTTPS from the parent instance"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.parent.id
}

# ------------------------------------------------------------------ endpoints

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${local.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.private.id]
  policy            = data.aws_iam_policy_document.s3_endpoint.json

  tags = merge(local.tags, { Name = "${var.name}-s3" })
}

# Through this endpoint: our buckets, and reading the regional Amazon Linux 2023
# package repositories (how dnf installs aws-nitro-enclaves-cli without internet).
data "aws_iam_policy_document" "s3_endpoint" {
  #checkov:skip=CKV_AWS_283:dnf reads the public Amazon Linux repository bucket anonymously, so that one read-only statement cannot name a principal; it is limited to s3:GetObject on the regional al2023-repos bucket.
  statement {
    sid     = "HermeticBuckets"
    effect  = "Allow"
    actions = ["s3:GetObject", "s3:PutObject"]
    resources = [
      "${aws_s3_bucket.sealed.arn}/*",
      "${aws_s3_bucket.results.arn}/*",
      "${aws_s3_bucket.artifacts.arn}/*",
    ]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.parent.arn]
    }
  }

  statement {
    sid       = "ListReleases"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.parent.arn]
    }
  }

  # The enclave's budget-ledger calls leave through the parent, hence this endpoint.
  statement {
    sid       = "LedgerSlots"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectRetention", "s3:PutObject", "s3:PutObjectRetention"]
    resources = ["${aws_s3_bucket.ledger.arn}/*"]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.parent.arn]
    }
  }

  statement {
    sid       = "ListLedger"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.ledger.arn]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.parent.arn]
    }
  }

  statement {
    sid       = "AmazonLinuxRepositories"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["arn:${local.partition}:s3:::al2023-repos-${local.region}-de612dc2/*"]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }
  }
}

resource "aws_vpc_endpoint" "kms" {
  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${local.region}.kms"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]
  policy              = data.aws_iam_policy_document.kms_endpoint.json

  tags = merge(local.tags, { Name = "${var.name}-kms" })
}

# Only the parent role, only the two Hermetic keys. The key policies decide the rest
# (attestation conditions); this keeps the endpoint from serving any other key.
data "aws_iam_policy_document" "kms_endpoint" {
  statement {
    sid       = "HermeticKeysOnly"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [local.data_owner_key_arn, local.model_owner_key_arn]

    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.parent.arn]
    }
  }
}

resource "aws_vpc_endpoint" "ssm" {
  for_each = var.enable_ssm_endpoints ? toset(["ssm", "ssmmessages", "ec2messages"]) : toset([])

  vpc_id              = aws_vpc.this.id
  service_name        = "com.amazonaws.${local.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  private_dns_enabled = true
  subnet_ids          = aws_subnet.private[*].id
  security_group_ids  = [aws_security_group.endpoints.id]

  tags = merge(local.tags, { Name = "${var.name}-${each.key}" })
}
