data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  user_data = templatefile("${path.module}/templates/user_data.sh.tpl", {
    region             = local.region
    kms_endpoint_host  = local.kms_endpoint_host
    vsock_proxy_port   = var.vsock_proxy_port
    s3_endpoint_host   = local.s3_endpoint_host
    s3_relay_port      = var.s3_relay_port
    kms_relay          = var.kms_relay
    enclave_cpu_count  = var.enclave_cpu_count
    enclave_memory_mib = var.enclave_memory_mib
    enclave_cid        = var.enclave_cid
    artifacts_bucket   = aws_s3_bucket.artifacts.id
    sealed_bucket      = aws_s3_bucket.sealed.id
    results_bucket     = aws_s3_bucket.results.id
  })
}

resource "aws_instance" "parent" {
  ami                         = coalesce(var.ami_id, try(nonsensitive(data.aws_ssm_parameter.al2023[0].value), null))
  instance_type               = var.instance_type
  subnet_id                   = aws_subnet.private[0].id
  vpc_security_group_ids      = [aws_security_group.parent.id]
  iam_instance_profile        = aws_iam_instance_profile.parent.name
  associate_public_ip_address = false
  ebs_optimized               = true
  monitoring                  = true
  user_data                   = local.user_data
  user_data_replace_on_change = true

  enclave_options {
    enabled = true
  }

  # IMDSv2 only, one hop: containers or forwarded traffic cannot reach the role's
  # credentials; the enclave never talks to IMDS (the parent hands it credentials).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  root_block_device {
    encrypted             = true
    kms_key_id            = aws_kms_key.storage.arn
    volume_type           = "gp3"
    volume_size           = var.root_volume_size_gib
    delete_on_termination = true
  }

  tags        = merge(local.tags, { Name = "${var.name}-parent" })
  volume_tags = merge(local.tags, { Name = "${var.name}-parent-root" })

  lifecycle {
    # A new AMI release must not silently replace a running enclave host.
    ignore_changes = [ami]

    # A variable's validation cannot name another variable before Terraform 1.9.
    precondition {
      condition     = var.s3_relay_port != var.vsock_proxy_port
      error_message = "s3_relay_port must differ from vsock_proxy_port (each relay holds its own vsock port)."
    }
  }

  depends_on = [
    aws_vpc_endpoint.s3,
    aws_vpc_endpoint.kms,
    aws_vpc_endpoint.ssm,
    aws_route_table_association.private,
  ]
}
