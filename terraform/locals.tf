data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  name_prefix = "${var.project}-${var.environment}"
  account_id  = data.aws_caller_identity.current.account_id
  partition   = data.aws_partition.current.partition
  region      = var.aws_region

  # The Role tag is what the Ansible inventory groups the host by; it names the kind of host, not the project.
  bot_role_tag   = "discord-bot"
  bot_object_key = "${var.bot_code_key_prefix}${var.bot_code_object_name}"

  # Bucket names are global across all AWS accounts: the account id and Region make them unique and predictable.
  bot_bucket_name          = "${local.name_prefix}-bot-${local.account_id}-${local.region}"
  ssm_transfer_bucket_name = "${local.name_prefix}-ssm-${local.account_id}-${local.region}"

  log_group_name = "/${var.project}/${var.environment}/bot"
  secret_name    = "${var.project}/${var.environment}/discord-token"

  # The contract with the Ansible side: its dynamic inventory selects the host by Project, Environment and Role and
  # reads the rest as host variables, so nothing has to be copied from Terraform outputs by hand.
  inventory_tags = {
    Project           = var.project
    Environment       = var.environment
    Role              = local.bot_role_tag
    Name              = local.name_prefix
    BotBucket         = aws_s3_bucket.bot_code.bucket
    BotObjectKey      = local.bot_object_key
    BotSecretId       = aws_secretsmanager_secret.discord_token.arn
    SsmTransferBucket = aws_s3_bucket.ssm_transfer.bucket
    BotLogGroup       = aws_cloudwatch_log_group.bot.name
  }
}
