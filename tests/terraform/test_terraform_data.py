"""Where data lives: the two buckets, the token secret and the log group."""

import re

import pytest

from tests.terraform.hcl_model import TerraformConfig, reference, walk_strings

BUCKETS = ("bot_code", "ssm_transfer")

# The retention periods CloudWatch Logs accepts (PutRetentionPolicy), plus 0 for "never expire".
CLOUDWATCH_RETENTION_DAYS = {
    0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
}


def bucket_settings(tf: TerraformConfig, resource_type: str, bucket: str) -> list[dict]:
    """The blocks of one kind (versioning, policy, ...) that apply to aws_s3_bucket.<bucket>."""
    return [
        body
        for body in tf.resources_of(resource_type).values()
        if reference(body["bucket"]) == f"aws_s3_bucket.{bucket}.id"
    ]


def test_exactly_the_two_buckets_exist(tf):
    """The configuration creates the bot code bucket and the SSM transfer bucket, nothing else."""
    assert sorted(tf.resources_of("aws_s3_bucket")) == sorted(BUCKETS)


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_blocks_all_public_access(tf, bucket):
    """All four public access block settings are on for each bucket."""
    (block,) = bucket_settings(tf, "aws_s3_bucket_public_access_block", bucket)
    for setting in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"):
        assert block[setting] is True, f"{bucket}: {setting}"


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_disables_acls(tf, bucket):
    """Object ownership is BucketOwnerEnforced, which turns ACLs off."""
    (controls,) = bucket_settings(tf, "aws_s3_bucket_ownership_controls", bucket)
    assert controls["rule"] == [{"object_ownership": "BucketOwnerEnforced"}]


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_encrypts_with_kms_by_default(tf, bucket):
    """Objects are encrypted server-side with KMS, with a bucket key to keep KMS requests few."""
    (encryption,) = bucket_settings(tf, "aws_s3_bucket_server_side_encryption_configuration", bucket)
    (rule,) = encryption["rule"]
    (default,) = rule["apply_server_side_encryption_by_default"]
    assert default["sse_algorithm"] == "aws:kms"
    assert rule["bucket_key_enabled"] is True


@pytest.mark.parametrize("bucket", BUCKETS)
def test_bucket_policy_denies_requests_without_tls(tf, bucket):
    """The bucket policy denies every request on the bucket and its objects that does not use TLS."""
    (policy,) = bucket_settings(tf, "aws_s3_bucket_policy", bucket)
    document = re.fullmatch(r"data\.aws_iam_policy_document\.(\w+)\.json", reference(policy["policy"])).group(1)
    deny_plain_http = [
        s
        for s in tf.policy_statements(document)
        if s.effect == "Deny"
        and s.actions == ["s3:*"]
        and s.body["principals"] == [{"type": "*", "identifiers": ["*"]}]
        and s.conditions == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]
    ]
    assert len(deny_plain_http) == 1, f"{bucket}: no TLS-only statement"
    arn = "${aws_s3_bucket." + bucket + ".arn}"
    assert sorted(deny_plain_http[0].resources) == sorted([arn, arn + "/*"])


def test_bot_code_bucket_is_versioned(tf):
    """The bot code bucket keeps versions, so a bad upload can be rolled back."""
    (versioning,) = bucket_settings(tf, "aws_s3_bucket_versioning", "bot_code")
    assert versioning["versioning_configuration"] == [{"status": "Enabled"}]


def test_ssm_transfer_bucket_is_not_versioned(tf):
    """The transfer bucket has no versioning, so transferred modules do not pile up as old versions."""
    assert bucket_settings(tf, "aws_s3_bucket_versioning", "ssm_transfer") == []


def test_bot_code_noncurrent_versions_expire_by_count_and_age(tf):
    """Superseded code versions expire after a configurable age, beyond a configurable number kept."""
    (lifecycle,) = bucket_settings(tf, "aws_s3_bucket_lifecycle_configuration", "bot_code")
    expirations = [rule["noncurrent_version_expiration"][0] for rule in lifecycle["rule"]
                   if "noncurrent_version_expiration" in rule and rule["status"] == "Enabled"]
    assert expirations == [{
        "noncurrent_days": "${var.bot_code_noncurrent_version_days}",
        "newer_noncurrent_versions": "${var.bot_code_noncurrent_versions_to_keep}",
    }]
    assert tf.variables["bot_code_noncurrent_version_days"]["default"] >= 1
    assert tf.variables["bot_code_noncurrent_versions_to_keep"]["default"] >= 1


def test_ssm_transfer_objects_expire_after_a_day(tf):
    """Whatever an interrupted transfer leaves behind is deleted after one day."""
    (lifecycle,) = bucket_settings(tf, "aws_s3_bucket_lifecycle_configuration", "ssm_transfer")
    (rule,) = lifecycle["rule"]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == [{}], "the rule must cover the whole bucket"
    assert rule["expiration"] == [{"days": 1}]


@pytest.mark.parametrize("bucket", BUCKETS)
def test_lifecycle_rules_cover_the_whole_bucket_and_abort_stale_uploads(tf, bucket):
    """Each bucket drops incomplete multipart uploads, and its rules use the explicit whole-bucket filter."""
    (lifecycle,) = bucket_settings(tf, "aws_s3_bucket_lifecycle_configuration", bucket)
    assert all(rule["filter"] == [{}] for rule in lifecycle["rule"])
    assert any(rule.get("abort_incomplete_multipart_upload") == [{"days_after_initiation": 1}]
               for rule in lifecycle["rule"])


def test_token_variable_is_ephemeral_sensitive_and_required(tf):
    """The token variable is never stored (ephemeral), never shown (sensitive) and has no default."""
    token = tf.variables["discord_token"]
    assert token["ephemeral"] is True
    assert token["sensitive"] is True
    assert "default" not in token


def test_token_reaches_only_the_write_only_argument(tf):
    """var.discord_token is referenced in secret_string_wo and nowhere else, so no argument stores it in state."""
    blocks = {
        "resource": tf.resources,
        "data": tf.data,
        "output": tf.outputs,
        "locals": tf.locals,
        "provider": tf.providers,
    }
    uses = [
        f"{kind}.{path}"
        for kind, body in blocks.items()
        for path, value in walk_strings(body)
        if re.search(r"\bvar\.discord_token\b(?!_)", value)
    ]
    assert uses == ["resource.aws_secretsmanager_secret_version.discord_token.secret_string_wo"]


def test_token_version_writes_with_the_write_only_pair(tf):
    """The secret version uses secret_string_wo with its version counter and no state-stored value argument."""
    version = tf.resource("aws_secretsmanager_secret_version", "discord_token")
    assert reference(version["secret_id"]) == "aws_secretsmanager_secret.discord_token.id"
    assert reference(version["secret_string_wo_version"]) == "var.discord_token_version"
    assert not {"secret_string", "secret_binary"} & version.keys()
    for resource_type, by_name in tf.resources.items():
        for name, body in by_name.items():
            assert "secret_string" not in body, f"{resource_type}.{name} stores a secret string in state"


def test_secret_uses_the_aws_managed_key_unless_a_customer_key_is_given(tf):
    """The secret is encrypted with aws/secretsmanager by default and with secret_kms_key_arn when set."""
    secret = tf.resource("aws_secretsmanager_secret", "discord_token")
    assert reference(secret["kms_key_id"]) == "var.secret_kms_key_arn"
    assert tf.variables["secret_kms_key_arn"]["default"] is None


def test_log_group_keeps_logs_30_days_by_default(tf):
    """The bot's log group has a retention period, 30 days unless log_retention_days says otherwise."""
    log_group = tf.resource("aws_cloudwatch_log_group", "bot")
    assert reference(log_group["retention_in_days"]) == "var.log_retention_days"
    assert tf.variables["log_retention_days"]["default"] == 30


def test_log_retention_validation_allows_exactly_the_cloudwatch_values(tf):
    """log_retention_days accepts the retention periods CloudWatch Logs accepts, and no other."""
    (validation,) = tf.variables["log_retention_days"]["validation"]
    listed = re.search(r"contains\(\[([0-9, ]+)\], var\.log_retention_days\)", validation["condition"])
    assert listed, validation["condition"]
    assert {int(day) for day in listed.group(1).split(",")} == CLOUDWATCH_RETENTION_DAYS


def test_alarm_mail_is_optional(tf):
    """The SNS topic and its e-mail subscription exist only when alarm_email is set."""
    assert tf.variables["alarm_email"]["default"] is None
    for resource_type, name in (("aws_sns_topic", "alarms"), ("aws_sns_topic_subscription", "alarm_email")):
        assert tf.resource(resource_type, name)["count"] == "${var.alarm_email == null ? 0 : 1}"
    subscription = tf.resource("aws_sns_topic_subscription", "alarm_email")
    assert subscription["protocol"] == "email"
    assert reference(subscription["endpoint"]) == "var.alarm_email"
    for alarm in tf.resources_of("aws_cloudwatch_metric_alarm").values():
        assert "local.alarm_notification_arns" in alarm["alarm_actions"]
