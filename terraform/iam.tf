# Permissions. The instance role may read its own code, its own token and write its own logs, nothing else; the
# operator policy (attach it to whoever runs Ansible) covers exactly what the playbooks and the Session Manager
# connection do. Every statement names its resources by ARN; the few "*" resources are actions that AWS does not
# scope to a resource at all, and each says so.

# ---------------------------------------------------------------------------------------------------------------
# Instance role
# ---------------------------------------------------------------------------------------------------------------

data "aws_iam_policy_document" "instance_assume_role" {
  statement {
    sid     = "Ec2AssumesBotRole"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "bot" {
  name               = "${local.name_prefix}-bot-instance"
  description        = "Discord bot instance of ${local.name_prefix}: Session Manager, its code, its token, its logs"
  assume_role_policy = data.aws_iam_policy_document.instance_assume_role.json
}

resource "aws_iam_instance_profile" "bot" {
  name = "${local.name_prefix}-bot-instance"
  role = aws_iam_role.bot.name
}

# The Systems Manager agent needs this AWS managed policy to register the instance and carry Session Manager
# sessions (the channel Ansible uses); its "*" resources are AWS's, for actions with no resource-level scope.
resource "aws_iam_role_policy_attachment" "bot_ssm_core" {
  role       = aws_iam_role.bot.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "bot_instance" {
  statement {
    sid       = "ReadBotCode"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.bot_code.arn}/${var.bot_code_key_prefix}*"]
  }

  # The amazon.aws S3 modules the deploy role runs on the instance check the bucket with HeadBucket before they
  # read, and S3 authorizes HeadBucket as s3:ListBucket, which cannot be narrowed to a key prefix for that call.
  # The bucket holds nothing but the bot's code, so listing it reveals no more than the keys of that code.
  statement {
    sid       = "LocateBotCodeBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.bot_code.arn]
  }

  statement {
    sid       = "ReadBotToken"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [aws_secretsmanager_secret.discord_token.arn]
  }

  # CreateLogStream and DescribeLogStreams are checked against the log group, PutLogEvents against its streams
  # (log-group:NAME:log-stream:STREAM), which the ":*" form covers.
  statement {
    sid       = "WriteBotLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"]
    resources = [aws_cloudwatch_log_group.bot.arn, "${aws_cloudwatch_log_group.bot.arn}:*"]
  }

  # Only with a customer managed key: the AWS managed key's own policy already lets Secrets Manager decrypt for
  # any principal of the account that may read the secret.
  dynamic "statement" {
    for_each = var.secret_kms_key_arn == null ? [] : [var.secret_kms_key_arn]

    content {
      sid       = "DecryptBotTokenThroughSecretsManager"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = ["secretsmanager.${local.region}.amazonaws.com"]
      }
    }
  }
}

resource "aws_iam_role_policy" "bot_instance" {
  name   = "bot-code-token-logs"
  role   = aws_iam_role.bot.id
  policy = data.aws_iam_policy_document.bot_instance.json
}

# ---------------------------------------------------------------------------------------------------------------
# Operator policy: what the person or CI role running Ansible needs. Created unattached; attach it to that user,
# group or role (README.md shows how). It grants nothing until then.
# ---------------------------------------------------------------------------------------------------------------

locals {
  bot_instance_arn_pattern = "arn:${local.partition}:ec2:${local.region}:${local.account_id}:instance/*"
  session_arn_prefix       = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:session"
}

data "aws_iam_policy_document" "operator" {
  # The amazon.aws.aws_ec2 inventory lists instances and filters them by tag on the client side of the API;
  # DescribeInstances and DescribeRegions have no resource-level permissions, so "*" is the only possible resource.
  statement {
    sid       = "FindBotInstance"
    effect    = "Allow"
    actions   = ["ec2:DescribeInstances", "ec2:DescribeRegions"]
    resources = ["*"]
  }

  # Sessions only on instances tagged as this project's bot; the document access check makes the default shell
  # document, granted below, the only one that can be used.
  statement {
    sid       = "StartSessionOnBotInstance"
    effect    = "Allow"
    actions   = ["ssm:StartSession"]
    resources = [local.bot_instance_arn_pattern]

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/Project"
      values   = [var.project]
    }

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/Environment"
      values   = [var.environment]
    }

    condition {
      test     = "StringEquals"
      variable = "ssm:resourceTag/Role"
      values   = [local.bot_role_tag]
    }

    condition {
      test     = "BoolIfExists"
      variable = "ssm:SessionDocumentAccessCheck"
      values   = ["true"]
    }
  }

  statement {
    sid       = "StartSessionWithDefaultShellDocument"
    effect    = "Allow"
    actions   = ["ssm:StartSession"]
    resources = ["arn:${local.partition}:ssm:${local.region}:${local.account_id}:document/SSM-SessionManagerRunShell"]

    condition {
      test     = "BoolIfExists"
      variable = "ssm:SessionDocumentAccessCheck"
      values   = ["true"]
    }
  }

  # The Session Manager plugin opens the session's data channel with the caller's own credentials; AWS's user
  # policies grant this on the session ARNs. Without the token StartSession hands out, the channel cannot be opened,
  # so the sessions of this account and Region are the narrowest resource that works for users and roles alike.
  statement {
    sid       = "OpenSessionDataChannel"
    effect    = "Allow"
    actions   = ["ssmmessages:OpenDataChannel"]
    resources = ["${local.session_arn_prefix}/*"]
  }

  # The connection ends its session when a task is done. Session ids start with the IAM user name for users; for
  # assumed roles (SSO, CI) only the session's aws:ssmmessages:session-id tag identifies the caller.
  statement {
    sid       = "EndOwnSessionsAsUser"
    effect    = "Allow"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = ["${local.session_arn_prefix}/$${aws:username}-*"]
  }

  statement {
    sid       = "EndOwnSessionsAsRole"
    effect    = "Allow"
    actions   = ["ssm:TerminateSession", "ssm:ResumeSession"]
    resources = ["${local.session_arn_prefix}/*"]

    condition {
      test     = "StringLike"
      variable = "ssm:resourceTag/aws:ssmmessages:session-id"
      values   = ["$${aws:userid}"]
    }
  }

  # HeadBucket (ListBucket) finds the bucket's Region; the objects are written, read back by the instance through
  # presigned URLs signed with these credentials, and deleted.
  statement {
    sid       = "LocateTransferBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.ssm_transfer.arn]
  }

  statement {
    sid       = "UseTransferBucket"
    effect    = "Allow"
    actions   = ["s3:PutObject", "s3:GetObject", "s3:DeleteObject"]
    resources = ["${aws_s3_bucket.ssm_transfer.arn}/*"]
  }

  # amazon.aws.s3_object checks the bucket (HeadBucket, GetBucketOwnershipControls, to leave ACLs out), compares the
  # ETag of the current object and uploads a new one under the bot code prefix only.
  statement {
    sid       = "InspectBotCodeBucket"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:GetBucketOwnershipControls"]
    resources = [aws_s3_bucket.bot_code.arn]
  }

  statement {
    sid       = "PublishBotCode"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.bot_code.arn}/${var.bot_code_key_prefix}*"]
  }
}

resource "aws_iam_policy" "operator" {
  name        = "${local.name_prefix}-operator"
  description = "Run the Ansible playbooks of ${local.name_prefix}: inventory, sessions, transfer and code buckets"
  policy      = data.aws_iam_policy_document.operator.json
}
