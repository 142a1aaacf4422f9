# Two buckets with different jobs. The bot bucket holds the code the instance runs, versioned so that a bad upload
# can be rolled back. The transfer bucket is scratch space for the Session Manager connection of Ansible, which
# puts every module and file it transfers there and deletes it afterwards; it is deliberately unversioned, because
# in a versioned bucket each of those transient objects would be kept as a noncurrent version for good.

# ---------------------------------------------------------------------------------------------------------------
# Bot code
# ---------------------------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "bot_code" {
  #checkov:skip=CKV_AWS_18:Access logs would need a third bucket; CloudTrail already records who wrote the code.
  #checkov:skip=CKV_AWS_144:The code is uploaded from the repository again at will; a replica adds cost only.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to uploads; Ansible restarts the bot after it puts a new object.
  bucket        = local.bot_bucket_name
  force_destroy = var.bot_bucket_force_destroy
}

resource "aws_s3_bucket_versioning" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_public_access_block" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs disabled: access is decided by IAM and the bucket policy alone, and every object belongs to this account.
resource "aws_s3_bucket_ownership_controls" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-KMS with the AWS managed key aws/s3: no key to administer and no monthly key charge; the bucket key cuts the
# KMS requests (billed per 10,000) to a handful.
resource "aws_s3_bucket_server_side_encryption_configuration" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id
  policy = data.aws_iam_policy_document.bot_code_bucket.json

  # S3 rejects a bucket policy while the public access block is still being applied.
  depends_on = [aws_s3_bucket_public_access_block.bot_code]
}

data "aws_iam_policy_document" "bot_code_bucket" {
  statement {
    sid       = "DenyRequestsWithoutTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.bot_code.arn, "${aws_s3_bucket.bot_code.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# Superseded versions are kept for a rollback, but not forever: S3 deletes a noncurrent version once it is older
# than bot_code_noncurrent_version_days AND more than bot_code_noncurrent_versions_to_keep newer versions exist.
resource "aws_s3_bucket_lifecycle_configuration" "bot_code" {
  bucket = aws_s3_bucket.bot_code.id

  rule {
    id     = "expire-superseded-bot-code"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days           = var.bot_code_noncurrent_version_days
      newer_noncurrent_versions = var.bot_code_noncurrent_versions_to_keep
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  # Once all noncurrent versions of a deleted object have expired, its delete marker is clutter.
  rule {
    id     = "remove-orphaned-delete-markers"
    status = "Enabled"

    filter {}

    expiration {
      expired_object_delete_marker = true
    }
  }

  # Lifecycle rules on noncurrent versions are only accepted once versioning is on.
  depends_on = [aws_s3_bucket_versioning.bot_code]
}

# ---------------------------------------------------------------------------------------------------------------
# Session Manager file transfer (Ansible's amazon.aws.aws_ssm connection)
# ---------------------------------------------------------------------------------------------------------------

resource "aws_s3_bucket" "ssm_transfer" {
  #checkov:skip=CKV_AWS_21:Unversioned on purpose: every transferred module would otherwise stay as an old version.
  #checkov:skip=CKV_AWS_18:Objects live for seconds and are deleted by the connection itself; nothing to audit.
  #checkov:skip=CKV_AWS_144:Transient transfer objects have no value in a second Region.
  #checkov:skip=CKV2_AWS_62:Nothing reacts to transfer objects; the connection reads them back itself.
  bucket = local.ssm_transfer_bucket_name

  # Only transient objects ever land here, so destroy may always empty it.
  force_destroy = true
}

resource "aws_s3_bucket_public_access_block" "ssm_transfer" {
  bucket = aws_s3_bucket.ssm_transfer.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "ssm_transfer" {
  bucket = aws_s3_bucket.ssm_transfer.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# The connection uploads with presigned SigV4 URLs, which work with SSE-KMS under the AWS managed key as they do
# with SSE-S3, so both buckets use the same encryption.
resource "aws_s3_bucket_server_side_encryption_configuration" "ssm_transfer" {
  bucket = aws_s3_bucket.ssm_transfer.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_policy" "ssm_transfer" {
  bucket = aws_s3_bucket.ssm_transfer.id
  policy = data.aws_iam_policy_document.ssm_transfer_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.ssm_transfer]
}

data "aws_iam_policy_document" "ssm_transfer_bucket" {
  statement {
    sid       = "DenyRequestsWithoutTls"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.ssm_transfer.arn, "${aws_s3_bucket.ssm_transfer.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# The connection deletes each object once transferred; this catches what an interrupted run leaves behind.
resource "aws_s3_bucket_lifecycle_configuration" "ssm_transfer" {
  bucket = aws_s3_bucket.ssm_transfer.id

  rule {
    id     = "expire-transfer-leftovers"
    status = "Enabled"

    filter {}

    expiration {
      days = 1
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}
