terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.50" # rotation_period_in_days on aws_kms_key
    }
  }
}
