# The bot token. Terraform creates the secret and writes the token through a write-only argument: the value goes
# from the ephemeral variable straight to Secrets Manager and is kept neither in the state nor in a saved plan.
# The instance reads it at start-up (DISCORD_TOKEN_SECRET_ID is the ARN, set by the Ansible role).

resource "aws_secretsmanager_secret" "discord_token" {
  #checkov:skip=CKV2_AWS_57:Discord tokens can only be reset in the developer portal; no rotation function can do it.
  name                    = local.secret_name
  description             = "Discord bot token of ${local.name_prefix}"
  kms_key_id              = var.secret_kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
}

resource "aws_secretsmanager_secret_version" "discord_token" {
  secret_id                = aws_secretsmanager_secret.discord_token.id
  secret_string_wo         = var.discord_token
  secret_string_wo_version = var.discord_token_version
}
