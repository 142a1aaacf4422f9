# Inputs. Each validation catches at plan time a mistake that AWS would otherwise reject halfway through an apply,
# or that would silently produce something insecure or expensive.

variable "aws_region" {
  description = "AWS Region for every resource, for example us-east-1 or eu-central-1."
  type        = string
  default     = "us-east-1"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]+$", var.aws_region))
    error_message = "Set aws_region to a Region code such as us-east-1, eu-central-1 or us-gov-west-1."
  }
}

variable "project" {
  description = "Project name: prefix of every resource name and the Project tag the Ansible inventory selects on."
  type        = string
  default     = "discord-bot"
  nullable    = false

  # Lower case and at most 20 characters, because the value is part of S3 bucket names: 63 characters at most,
  # together with environment, account id and Region.
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.project))
    error_message = "Use 2-20 lower-case letters, digits or '-' for project, starting with a letter, not ending in '-'."
  }
}

variable "environment" {
  description = "Environment name such as prod or dev: part of every resource name and the Environment tag."
  type        = string
  default     = "prod"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{0,9}$", var.environment))
    error_message = "Use 1-10 lower-case letters or digits for environment, starting with a letter (prod, dev)."
  }
}

variable "instance_type" {
  description = "EC2 instance type: a t2, t3, t3a or t4g (Graviton, arm64) size from nano to 2xlarge."
  type        = string
  default     = "t2.micro"
  nullable    = false

  # Burstable families only: an echo bot idles nearly all the time, README.md prices exactly these, and the
  # instance is pinned to the standard CPU credit mode (compute.tf), which exists for T families only.
  validation {
    condition     = can(regex("^(t2|t3|t3a|t4g)[.](nano|micro|small|medium|large|xlarge|2xlarge)$", var.instance_type))
    error_message = "Set instance_type to a t2, t3, t3a or t4g size from nano to 2xlarge, e.g. t2.micro or t4g.nano."
  }
}

variable "architecture" {
  description = "CPU architecture of the Amazon Linux 2023 image; null derives it from instance_type (t4g: arm64)."
  type        = string
  default     = null

  validation {
    condition     = contains(["x86_64", "arm64", "derive"], coalesce(var.architecture, "derive"))
    error_message = "Set architecture to null (derive it from instance_type), \"x86_64\" or \"arm64\"."
  }

  validation {
    condition = (
      var.architecture == null ||
      var.architecture == (startswith(var.instance_type, "t4g.") ? "arm64" : "x86_64")
    )
    error_message = "The architecture does not fit instance_type: t4g runs arm64, t2/t3/t3a x86_64. Leave it null."
  }
}

variable "replace_instance_on_ami_update" {
  description = <<-EOT
    Replace the instance whenever AWS publishes a newer Amazon Linux 2023 image. Off by default: the instance
    keeps the image it was launched from and is patched by dnf, and a replacement needs the Ansible playbooks to
    run again before the bot is back. Switching this on replaces the instance once.
  EOT
  type        = bool
  default     = false
  nullable    = false
}

variable "root_volume_size_gib" {
  description = "Size of the encrypted gp3 root volume in GiB; the Amazon Linux 2023 image needs at least 8."
  type        = number
  default     = 8
  nullable    = false

  validation {
    condition = (
      var.root_volume_size_gib >= 8 && var.root_volume_size_gib <= 100 &&
      floor(var.root_volume_size_gib) == var.root_volume_size_gib
    )
    error_message = "Set root_volume_size_gib to a whole number from 8 (the image's own size) to 100."
  }
}

variable "detailed_monitoring" {
  description = <<-EOT
    Enable EC2 detailed (1-minute) monitoring, billed per metric. The status checks the recovery alarm uses are
    1-minute metrics without it.
  EOT
  type        = bool
  default     = false
  nullable    = false
}

variable "subnet_id" {
  description = <<-EOT
    Subnet for the instance. null picks a default-for-AZ subnet of the default VPC, in an Availability Zone that
    offers instance_type.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.subnet_id == null || can(regex("^subnet-([0-9a-f]{8}|[0-9a-f]{17})$", var.subnet_id))
    error_message = "Set subnet_id to null or a subnet id such as subnet-0123456789abcdef0."
  }
}

variable "associate_public_ip_address" {
  description = <<-EOT
    Give the instance a public IPv4 address (billed hourly, see README.md). The default VPC has no NAT gateway, so
    without one the bot cannot reach Discord, the AWS APIs or the package repositories. Set false only in a subnet
    with a NAT gateway or VPC endpoints.
  EOT
  type        = bool
  default     = true
  nullable    = false
}

variable "ssh_allowed_cidr" {
  description = <<-EOT
    Optional single address allowed to reach port 22: an IPv4 /32 or an IPv6 /128. null, the default, opens no
    inbound port at all; Ansible and interactive shells go through Session Manager.
  EOT
  type        = string
  default     = null

  # One host only: a range, let alone 0.0.0.0/0 or ::/0, would expose sshd to every scanner for no benefit.
  validation {
    condition = var.ssh_allowed_cidr == null || (
      can(regex("^[0-9.]+/32$|^[0-9a-fA-F:]+/128$", var.ssh_allowed_cidr)) &&
      can(cidrhost(var.ssh_allowed_cidr, 0))
    )
    error_message = "Set ssh_allowed_cidr to null or one address, 203.0.113.7/32 or 2001:db8::7/128, not a range."
  }
}

variable "ssh_public_key_path" {
  description = <<-EOT
    Optional path to an OpenSSH public key (for example ~/.ssh/id_ed25519.pub) to register as the instance's key
    pair. Only useful together with ssh_allowed_cidr.
  EOT
  type        = string
  default     = null

  validation {
    condition     = endswith(coalesce(var.ssh_public_key_path, "unset.pub"), ".pub")
    error_message = "Point ssh_public_key_path at the public half of a key pair, a file whose name ends in .pub."
  }
}

variable "bot_code_key_prefix" {
  description = "Key prefix of the bot code in the bot bucket; the instance may read objects under this prefix only."
  type        = string
  default     = "bot/"
  nullable    = false

  validation {
    condition     = can(regex("^([A-Za-z0-9_.-]+/)+$", var.bot_code_key_prefix))
    error_message = "Set bot_code_key_prefix to path segments of letters, digits, '_', '.', '-', each ending in '/'."
  }
}

variable "bot_code_object_name" {
  description = "File name of the bot code under bot_code_key_prefix; together they give the key bot/echo.py."
  type        = string
  default     = "echo.py"
  nullable    = false

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+$", var.bot_code_object_name))
    error_message = "Set bot_code_object_name to a plain file name of letters, digits, '_', '.' or '-', without '/'."
  }
}

variable "bot_code_noncurrent_versions_to_keep" {
  description = <<-EOT
    How many superseded versions of each bot code object S3 keeps whatever their age, for a quick rollback. null
    keeps none beyond bot_code_noncurrent_version_days.
  EOT
  type        = number
  default     = 5

  validation {
    condition = var.bot_code_noncurrent_versions_to_keep == null || try(
      var.bot_code_noncurrent_versions_to_keep >= 1 && var.bot_code_noncurrent_versions_to_keep <= 100 &&
      floor(var.bot_code_noncurrent_versions_to_keep) == var.bot_code_noncurrent_versions_to_keep,
      false
    )
    error_message = "Set bot_code_noncurrent_versions_to_keep to null or a whole number from 1 to 100 (the S3 limit)."
  }
}

variable "bot_code_noncurrent_version_days" {
  description = "Days a superseded bot code version stays before S3 deletes it, unless it is among the versions kept."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition = (
      var.bot_code_noncurrent_version_days >= 1 &&
      floor(var.bot_code_noncurrent_version_days) == var.bot_code_noncurrent_version_days
    )
    error_message = "Set bot_code_noncurrent_version_days to a whole number of days, at least 1."
  }
}

variable "bot_bucket_force_destroy" {
  description = <<-EOT
    Let terraform destroy delete the bot bucket although it still holds object versions. Set it true and apply
    just before destroying; the code can be uploaded again from the repository at any time.
  EOT
  type        = bool
  default     = false
  nullable    = false
}

variable "secret_kms_key_arn" {
  description = <<-EOT
    Optional ARN of a customer managed KMS key for the token secret. null uses the AWS managed key
    aws/secretsmanager, which has no monthly charge.
  EOT
  type        = string
  default     = null

  validation {
    condition = var.secret_kms_key_arn == null || can(regex(
      "^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]{36}$", coalesce(var.secret_kms_key_arn, "unset")
    ))
    error_message = "Set secret_kms_key_arn to null or a key ARN (arn:aws:kms:REGION:ACCOUNT:key/UUID), not an alias."
  }
}

variable "secret_recovery_window_days" {
  description = <<-EOT
    Days a destroyed token secret can still be restored. 0 deletes it at once, so that the same name can be
    created again right after a destroy.
  EOT
  type        = number
  default     = 7
  nullable    = false

  validation {
    condition = var.secret_recovery_window_days == 0 || (
      var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30 &&
      floor(var.secret_recovery_window_days) == var.secret_recovery_window_days
    )
    error_message = "Set secret_recovery_window_days to 0 or a whole number from 7 to 30, as Secrets Manager requires."
  }
}

variable "discord_token" {
  description = <<-EOT
    The bot token from the Discord developer portal. Write-only: it is sent to Secrets Manager when
    discord_token_version changes and is stored neither in the state nor in a saved plan. Pass it through the
    TF_VAR_discord_token environment variable, never in a file.
  EOT
  type        = string
  sensitive   = true
  ephemeral   = true
  nullable    = false

  # Catches the usual copy mistakes (a "Bot " prefix, quotes, a trailing newline, the application id or public key
  # instead of the token). The message does not mention the value, so nothing of it is printed.
  validation {
    condition     = can(regex("^[A-Za-z0-9_-]+[.][A-Za-z0-9_-]+[.][A-Za-z0-9_-]+$", var.discord_token))
    error_message = "The discord_token is not a bot token (three dot-separated parts). Reset and copy it again."
  }
}

variable "discord_token_version" {
  description = <<-EOT
    Increase this number to write a new discord_token to Secrets Manager. Terraform cannot see the write-only
    value, so this number is what tells it that the token changed.
  EOT
  type        = number
  default     = 1
  nullable    = false

  validation {
    condition     = var.discord_token_version >= 1 && floor(var.discord_token_version) == var.discord_token_version
    error_message = "Set discord_token_version to a whole number, at least 1."
  }
}

variable "log_retention_days" {
  description = "Days CloudWatch Logs keeps the bot's log events; 0 keeps them forever."
  type        = number
  default     = 30
  nullable    = false

  # The values the CloudWatch Logs PutRetentionPolicy API accepts, plus 0 for "never expire".
  validation {
    condition = contains(
      [0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653],
      var.log_retention_days
    )
    error_message = "Set log_retention_days to 0 or one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ..., 3653."
  }
}

variable "alarm_email" {
  description = <<-EOT
    Optional e-mail address told when an alarm fires or clears. AWS first sends a confirmation mail; nothing is
    delivered until its link is followed.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@ ]+@[^@ ]+[.][^@ .]+$", coalesce(var.alarm_email, "x")))
    error_message = "Set alarm_email to null or a single e-mail address such as ops@example.com."
  }
}
