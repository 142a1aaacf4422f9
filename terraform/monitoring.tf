# Logs, alarms and notifications.

resource "aws_cloudwatch_log_group" "bot" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer key only adds cost and a key policy.
  #checkov:skip=CKV_AWS_338:Bot output is for debugging, not audit; log_retention_days sets any period up to forever.
  name              = local.log_group_name
  retention_in_days = var.log_retention_days
}

resource "aws_sns_topic" "alarms" {
  # CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key alias/aws/sns, whose key policy
  # cannot grant CloudWatch access; a customer key would cost $1 a month to protect messages that hold no secret.
  #checkov:skip=CKV_AWS_26:Alarm messages hold no secret and CloudWatch cannot publish under the AWS managed key.
  count = var.alarm_email == null ? 0 : 1

  name = "${local.name_prefix}-alarms"
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms[0].arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  alarm_notification_arns = aws_sns_topic.alarms[*].arn
}

# A failed system status check means the host under the instance is broken (power, network, hardware). The
# recover action moves the instance to healthy hardware, keeping its id, volume, private address and tags, so the
# inventory and the running configuration survive.
resource "aws_cloudwatch_metric_alarm" "system_status_check" {
  alarm_name          = "${local.name_prefix}-bot-system-status-check"
  alarm_description   = "The host of the bot instance failed its system status check; EC2 recovers the instance."
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_System"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "missing"

  dimensions = {
    InstanceId = aws_instance.bot.id
  }

  alarm_actions = concat(["arn:${local.partition}:automate:${local.region}:ec2:recover"], local.alarm_notification_arns)
  ok_actions    = local.alarm_notification_arns
}

# A failed instance status check is a problem inside the instance (kernel, memory exhaustion, network setup); a
# reboot is the standard remedy and loses nothing, since the bot runs as a service that starts at boot.
resource "aws_cloudwatch_metric_alarm" "instance_status_check" {
  alarm_name          = "${local.name_prefix}-bot-instance-status-check"
  alarm_description   = "The bot instance failed its instance status check for 3 minutes; EC2 reboots it."
  namespace           = "AWS/EC2"
  metric_name         = "StatusCheckFailed_Instance"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "missing"

  dimensions = {
    InstanceId = aws_instance.bot.id
  }

  alarm_actions = concat(["arn:${local.partition}:automate:${local.region}:ec2:reboot"], local.alarm_notification_arns)
  ok_actions    = local.alarm_notification_arns
}
