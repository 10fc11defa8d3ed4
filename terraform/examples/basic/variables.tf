variable "region" {
  description = "AWS region of the deployment (the vsock-proxy allow-list holds kms.<region>.amazonaws.com)."
  type        = string
}

variable "name" {
  description = "Resource-name prefix; the parent role becomes <name>-parent."
  type        = string
  default     = "hermetic"
}

variable "instance_type" {
  type    = string
  default = "m5.xlarge"
}

variable "enclave_cpu_count" {
  type    = number
  default = 2
}

variable "enclave_memory_mib" {
  type    = number
  default = 8192
}

variable "policy_dir" {
  description = "Where `make policies` wrote data-owner.json and model-owner.json."
  type        = string
  default     = null
}

variable "data_uploader_arns" {
  type    = list(string)
  default = []
}

variable "result_reader_arns" {
  type    = list(string)
  default = []
}

variable "data_owner_key_arn" {
  description = "Use the data owner's existing key (e.g. in its own account) instead of creating one from the rendered policy."
  type        = string
  default     = null
}

variable "model_owner_key_arn" {
  description = "Use the model owner's existing key instead of creating one from the rendered policy."
  type        = string
  default     = null
}
