provider "aws" {
  region = var.aws_region

  # Every resource, including the instance's root volume, carries the project and environment, so cost reports
  # and clean-up can find everything this configuration created.
  default_tags {
    tags = {
      Project     = var.project
      Environment = var.environment
      ManagedBy   = "terraform"
    }
  }
}
