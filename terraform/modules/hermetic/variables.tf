variable "name" {
  description = "Prefix for every resource name. The parent role is named \"<name>-parent\": render the key policies for that ARN."
  type        = string
  default     = "hermetic"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,24}$", var.name))
    error_message = "name must be 2-25 characters of lower-case letters, digits and hyphens (it is part of bucket names)."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the VPC. Security groups allow HTTPS only inside it (to the interface endpoints)."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.vpc_cidr))
    error_message = "vpc_cidr must be an IPv4 CIDR block."
  }
}

variable "az_count" {
  description = "Number of availability zones (one private subnet each) for the interface endpoints."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 4
    error_message = "az_count must be between 1 and 4."
  }
}

variable "instance_type" {
  description = "Nitro-based instance type with at least 4 vCPUs (enclaves are not supported on t-family or smaller sizes)."
  type        = string
  default     = "m5.xlarge"

  validation {
    condition     = !can(regex("^(t[0-9]|[a-z0-9-]+\\.(nano|micro|small|medium|large)$)", var.instance_type))
    error_message = "Nitro Enclaves need a Nitro instance with at least 4 vCPUs (for example m5.xlarge, c5.2xlarge, m6i.2xlarge)."
  }
}

variable "ami_id" {
  description = "AMI for the parent instance. Default: the latest Amazon Linux 2023 x86_64 AMI (the user data uses dnf)."
  type        = string
  default     = null
}

variable "root_volume_size_gib" {
  description = "Root volume size: the EIF, the Python environment and job outputs live here."
  type        = number
  default     = 40
}

variable "enclave_cpu_count" {
  description = "vCPUs the Nitro Enclaves allocator reserves for the enclave (whole cores: even on hyper-threaded types; the parent keeps the rest)."
  type        = number
  default     = 2

  validation {
    condition     = var.enclave_cpu_count >= 2 && var.enclave_cpu_count % 2 == 0
    error_message = "enclave_cpu_count must be an even number of at least 2 (enclaves get whole cores)."
  }
}

variable "enclave_memory_mib" {
  description = "Memory (MiB) the allocator reserves for the enclave; the EIF plus the training working set must fit."
  type        = number
  default     = 8192

  validation {
    condition     = var.enclave_memory_mib >= 1024
    error_message = "enclave_memory_mib must be at least 1024."
  }
}

variable "enclave_cid" {
  description = "vsock CID given to the enclave by run-enclave (4 and up; the parent is CID 3)."
  type        = number
  default     = 16

  validation {
    condition     = var.enclave_cid >= 4
    error_message = "enclave_cid must be 4 or more (0-2 are reserved, 3 is the parent)."
  }
}

variable "vsock_proxy_port" {
  description = "vsock port on which vsock-proxy accepts the enclave's KMS connections (the image dials vsock://3:8000)."
  type        = number
  default     = 8000
}

variable "s3_relay_port" {
  description = "vsock port on which vsock-proxy accepts the enclave's S3 connections for the budget ledger (the image dials vsock://3:8001)."
  type        = number
  default     = 8001
}

variable "kms_relay" {
  description = <<-EOT
    Which systemd service holds vsock port vsock_proxy_port and relays the enclave's KMS
    connections: "vsock-proxy" (AWS vsock-proxy) or "hermetic" (`hermetic parent serve`,
    JSON logs). Both allow only kms.<region>.amazonaws.com:443; the two units conflict,
    so exactly one runs.
  EOT
  type        = string
  default     = "vsock-proxy"

  validation {
    condition     = contains(["vsock-proxy", "hermetic"], var.kms_relay)
    error_message = "kms_relay must be \"vsock-proxy\" or \"hermetic\"."
  }
}

variable "data_owner_key_policy" {
  description = "Rendered data-owner key policy (JSON, from `make policies`). Ignored when data_owner_key_arn is set."
  type        = string
  default     = null

  validation {
    condition     = var.data_owner_key_policy == null || can(jsondecode(var.data_owner_key_policy).Statement)
    error_message = "data_owner_key_policy must be a rendered JSON key policy: run `make policies` (kms-policies/rendered/data-owner.json)."
  }
}

variable "model_owner_key_policy" {
  description = "Rendered model-owner key policy (JSON, from `make policies`). Ignored when model_owner_key_arn is set."
  type        = string
  default     = null

  validation {
    condition     = var.model_owner_key_policy == null || can(jsondecode(var.model_owner_key_policy).Statement)
    error_message = "model_owner_key_policy must be a rendered JSON key policy: run `make policies` (kms-policies/rendered/model-owner.json)."
  }
}

variable "data_owner_key_arn" {
  description = "An existing data-owner KMS key (for example in the data owner's own account) instead of creating one here."
  type        = string
  default     = null
}

variable "model_owner_key_arn" {
  description = "An existing model-owner KMS key instead of creating one here."
  type        = string
  default     = null
}

variable "data_uploader_arns" {
  description = "IAM principals (data owners) allowed to upload sealed datasets to the sealed-data bucket."
  type        = list(string)
  default     = []
}

variable "result_reader_arns" {
  description = "IAM principals (model owners, auditors) allowed to download from the results bucket."
  type        = list(string)
  default     = []
}

variable "enable_ssm_endpoints" {
  description = "Create interface endpoints for Session Manager (ssm, ssmmessages, ec2messages) so operators reach the instance without SSH or internet."
  type        = bool
  default     = true
}

variable "noncurrent_version_retention_days" {
  description = "Days a superseded object version is kept in the data buckets."
  type        = number
  default     = 90
}

variable "log_retention_days" {
  description = "Days access logs and VPC flow logs are kept."
  type        = number
  default     = 365
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a scheduled KMS key deletion takes effect."
  type        = number
  default     = 30
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete non-empty buckets (test deployments only)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "ledger_bucket_policy" {
  description = "Rendered bucket policy of the budget ledger (JSON, from `make policies LEDGER_BUCKET=<name>-ledger-<account>-<region>`)."
  type        = string
  default     = null

  validation {
    condition     = var.ledger_bucket_policy == null || can(jsondecode(var.ledger_bucket_policy).Statement)
    error_message = "ledger_bucket_policy must be a rendered JSON bucket policy: run `make policies` (kms-policies/rendered/ledger-bucket.json)."
  }
}

variable "ledger_retention_days" {
  description = "Default COMPLIANCE retention of the ledger bucket, for objects put without their own (the enclave sets ten years on each slot). Nobody can delete a locked object before it ends."
  type        = number
  default     = 3653

  validation {
    condition     = var.ledger_retention_days >= 1 && var.ledger_retention_days <= 36500
    error_message = "ledger_retention_days must be between 1 and 36500."
  }
}

variable "ledger_prefix" {
  description = "Key prefix of the ledgers in the ledger bucket (the ledger_location output); each dataset's slots are PREFIX/DATASET_ID/SEQ."
  type        = string
  default     = "ledger/default"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*$", var.ledger_prefix))
    error_message = "ledger_prefix must be '/'-separated segments of letters, digits, '.', '_' and '-' (no empty, '.' or '..' segment)."
  }
}
