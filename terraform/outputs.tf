output "instance_id" {
  description = "Id of the bot instance."
  value       = aws_instance.bot.id
}

output "instance_public_ip" {
  description = "Public IPv4 address of the instance, if it has one. Nothing listens on it unless SSH was enabled."
  value       = aws_instance.bot.public_ip
}

output "bot_bucket_name" {
  description = "Bucket holding the bot code."
  value       = aws_s3_bucket.bot_code.bucket
}

output "bot_object_key" {
  description = "Object key of the bot code in the bot bucket."
  value       = local.bot_object_key
}

output "ssm_transfer_bucket_name" {
  description = "Bucket the Session Manager connection of Ansible transfers files through."
  value       = aws_s3_bucket.ssm_transfer.bucket
}

output "bot_secret_arn" {
  description = "ARN of the secret holding the bot token (the bot's DISCORD_TOKEN_SECRET_ID)."
  value       = aws_secretsmanager_secret.discord_token.arn
}

output "log_group_name" {
  description = "CloudWatch Logs group for the bot's logs."
  value       = aws_cloudwatch_log_group.bot.name
}

output "aws_region" {
  description = "Region of every resource (the bot's AWS_REGION)."
  value       = local.region
}

output "session_manager_command" {
  description = "Opens an interactive shell on the instance (needs the AWS CLI and its Session Manager plugin)."
  value       = "aws ssm start-session --region ${local.region} --target ${aws_instance.bot.id}"
}

output "ansible_inventory" {
  description = "What the amazon.aws.aws_ec2 inventory needs: the Region, the tag filters, the tags it reads."
  value = {
    regions = [local.region]
    filters = {
      "tag:Project"         = var.project
      "tag:Environment"     = var.environment
      "tag:Role"            = local.bot_role_tag
      "instance-state-name" = "running"
    }
    host_tags = local.inventory_tags
  }
}

output "operator_policy_arn" {
  description = "Managed policy to attach to the user or role that runs Ansible."
  value       = aws_iam_policy.operator.arn
}

output "operator_policy_json" {
  description = "The operator policy document, for review or for use in another account setup."
  value       = data.aws_iam_policy_document.operator.json
}

output "instance_role_name" {
  description = "IAM role of the instance."
  value       = aws_iam_role.bot.name
}

output "alarm_topic_arn" {
  description = "SNS topic alarms notify, or null when alarm_email is not set."
  value       = one(aws_sns_topic.alarms[*].arn)
}
