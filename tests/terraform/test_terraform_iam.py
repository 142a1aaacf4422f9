"""IAM: least privilege for the instance, and an operator policy scoped to this project's resources."""

import re

import pytest

from tests.terraform.hcl_model import PolicyStatement, TerraformConfig, reference, walk_strings

# Actions that AWS does not scope to any resource, so "*" is the only resource a statement can name for them.
ACTIONS_WITHOUT_RESOURCE_SCOPE = {"ec2:DescribeInstances", "ec2:DescribeRegions"}

# Everything the instance may do, by statement. Widening it must be a deliberate change to this table.
INSTANCE_PERMISSIONS = {
    "ReadBotCode": {"s3:GetObject", "s3:GetObjectVersion"},
    "LocateBotCodeBucket": {"s3:ListBucket"},
    "ReadBotToken": {"secretsmanager:GetSecretValue"},
    "WriteBotLogs": {"logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"},
    "DecryptBotTokenThroughSecretsManager": {"kms:Decrypt"},
}

# References that name this project's own resources (or the key the user supplies for its secret).
PROJECT_RESOURCE_REFERENCES = (
    "aws_s3_bucket.bot_code.arn",
    "aws_s3_bucket.ssm_transfer.arn",
    "aws_secretsmanager_secret.discord_token.arn",
    "aws_cloudwatch_log_group.bot.arn",
)


def expand_locals(tf: TerraformConfig, expression: str, depth: int = 5) -> str:
    """Replace ${local.x} by the local's own text, so that ARN patterns built in locals can be inspected."""
    for _ in range(depth):
        expanded = re.sub(
            r"\$\{local\.(\w+)\}",
            lambda match: tf.locals[match.group(1)] if isinstance(tf.locals.get(match.group(1)), str) else match[0],
            expression,
        )
        if expanded == expression:
            break
        expression = expanded
    return expression


def _is_project_scoped(tf: TerraformConfig, statement: PolicyStatement, resource: str) -> bool:
    expanded = expand_locals(tf, resource)
    if any(expanded.startswith("${" + ref + "}") for ref in PROJECT_RESOURCE_REFERENCES):
        return True
    if statement.dynamic and expanded == "${statement.value}":
        return True
    # An ARN pattern of this account and Region, such as the instances or sessions of the operator policy.
    return expanded.startswith("arn:${data.aws_partition.current.partition}:") and (
        ":${var.aws_region}:${data.aws_caller_identity.current.account_id}:" in expanded
    )


def test_every_statement_has_a_sid(tf):
    """Each statement of each policy document says what it is for."""
    statements = tf.all_policy_statements()
    assert statements
    for statement in statements:
        assert statement.sid and re.fullmatch(r"[A-Za-z0-9]+", statement.sid), statement
    for document in tf.data["aws_iam_policy_document"]:
        sids = [s.sid for s in tf.policy_statements(document)]
        assert len(sids) == len(set(sids)), f"duplicate sid in {document}: {sids}"


def test_allow_statements_name_no_wildcard_action(tf):
    """No Allow statement grants a whole service or everything ("s3:*", "*")."""
    for statement in tf.all_policy_statements():
        if statement.effect == "Allow":
            for action in statement.actions:
                assert "*" not in action, f"{statement.document}/{statement.sid} allows {action}"


def test_wildcard_resources_only_for_actions_without_resource_scope(tf):
    """Resource "*" appears only with actions AWS cannot scope to a resource."""
    for statement in tf.all_policy_statements():
        if "*" in statement.resources:
            assert statement.resources == ["*"], statement
            assert set(statement.actions) <= ACTIONS_WITHOUT_RESOURCE_SCOPE, f"{statement.sid}: {statement.actions}"


def test_wildcard_resource_statements_are_explained_in_a_comment(tf):
    """Each statement with resources = ["*"] has a comment right above it saying why."""
    for name, text in tf.sources.items():
        lines = text.splitlines()
        for number, line in enumerate(lines):
            if re.match(r'\s*resources\s*=\s*\["\*"\]', line):
                start = max(i for i in range(number) if re.match(r"\s*statement\s*\{", lines[i]))
                assert lines[start - 1].strip().startswith("#"), f"{name}:{number + 1} has no comment above it"


def test_every_statement_is_scoped_to_project_resources(tf):
    """Every resource of every statement is one of this project's resources or ARNs of this account and Region."""
    for statement in tf.all_policy_statements():
        if statement.document == "instance_assume_role":
            continue
        assert statement.resources, f"{statement.document}/{statement.sid} names no resource"
        for resource in statement.resources:
            if resource == "*":
                continue
            assert _is_project_scoped(tf, statement, resource), f"{statement.document}/{statement.sid}: {resource}"


def test_instance_permissions_are_exactly_the_expected_ones(tf):
    """The instance role reads its code and token and writes its logs; nothing more."""
    statements = tf.policy_statements("bot_instance")
    assert {s.sid: set(s.actions) for s in statements} == INSTANCE_PERMISSIONS
    assert all(s.effect == "Allow" and "*" not in s.resources for s in statements)


def test_instance_reads_only_the_bot_code_prefix(tf):
    """Object and object-version reads are limited to the bot's key prefix in the bot bucket."""
    (read_code,) = [s for s in tf.policy_statements("bot_instance") if s.sid == "ReadBotCode"]
    assert read_code.resources == ["${aws_s3_bucket.bot_code.arn}/${var.bot_code_key_prefix}*"]


def test_instance_may_locate_only_the_bot_code_bucket(tf):
    """The bucket-level permission HeadBucket needs is granted on the bot code bucket and no other."""
    (locate,) = [s for s in tf.policy_statements("bot_instance") if s.sid == "LocateBotCodeBucket"]
    assert locate.resources == ["${aws_s3_bucket.bot_code.arn}"]


def test_instance_reads_only_its_own_secret(tf):
    """GetSecretValue is granted on the bot token secret alone."""
    (read_token,) = [s for s in tf.policy_statements("bot_instance") if s.sid == "ReadBotToken"]
    assert read_token.resources == ["${aws_secretsmanager_secret.discord_token.arn}"]


def test_instance_writes_only_its_own_log_group(tf):
    """Log permissions cover the bot's log group and its streams only."""
    (write_logs,) = [s for s in tf.policy_statements("bot_instance") if s.sid == "WriteBotLogs"]
    assert write_logs.resources == ["${aws_cloudwatch_log_group.bot.arn}", "${aws_cloudwatch_log_group.bot.arn}:*"]


def test_customer_key_permission_exists_only_with_a_customer_key(tf):
    """kms:Decrypt is generated only for secret_kms_key_arn, and only through Secrets Manager."""
    (decrypt,) = [s for s in tf.policy_statements("bot_instance") if s.sid == "DecryptBotTokenThroughSecretsManager"]
    assert decrypt.dynamic
    (generator,) = tf.data_source("aws_iam_policy_document", "bot_instance")["dynamic"]
    assert generator["statement"]["for_each"] == "${var.secret_kms_key_arn == null ? [] : [var.secret_kms_key_arn]}"
    assert {c["variable"]: c["values"] for c in decrypt.conditions} == {
        "kms:ViaService": ["secretsmanager.${local.region}.amazonaws.com"]
    }


def test_only_the_session_manager_managed_policy_is_attached(tf):
    """The single AWS managed policy on the role is AmazonSSMManagedInstanceCore."""
    attachments = tf.resources_of("aws_iam_role_policy_attachment")
    assert [a["policy_arn"] for a in attachments.values()] == [
        "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
    ]
    assert all(reference(a["role"]) == "aws_iam_role.bot.name" for a in attachments.values())


def test_every_policy_comes_from_a_checked_policy_document(tf):
    """No inline JSON policy bypasses the statement checks: every policy argument is a policy document's json."""
    policy_arguments = {"policy", "assume_role_policy", "inline_policy"}
    found = 0
    for resource_type, by_name in tf.resources.items():
        for name, body in by_name.items():
            for argument in policy_arguments & body.keys():
                found += 1
                expression = reference(body[argument])
                assert re.fullmatch(r"data\.aws_iam_policy_document\.\w+\.json", expression), (
                    f"{resource_type}.{name}.{argument} = {body[argument]}"
                )
    assert found >= 5


def test_role_trusts_only_ec2(tf):
    """Only the EC2 service may assume the instance role."""
    (trust,) = tf.policy_statements("instance_assume_role")
    assert trust.actions == ["sts:AssumeRole"]
    assert trust.body["principals"] == [{"type": "Service", "identifiers": ["ec2.amazonaws.com"]}]
    assert reference(tf.resource("aws_iam_role", "bot")["assume_role_policy"]) == (
        "data.aws_iam_policy_document.instance_assume_role.json"
    )


@pytest.mark.parametrize("tag", ["Project", "Environment", "Role"])
def test_operator_sessions_require_the_project_tags(tf, tag):
    """The operator may start sessions only on instances tagged with this project, environment and role."""
    (start_session,) = [s for s in tf.policy_statements("operator") if s.sid == "StartSessionOnBotInstance"]
    conditions = {c["variable"]: (c["test"], c["values"]) for c in start_session.conditions}
    expected = {"Project": "${var.project}", "Environment": "${var.environment}", "Role": "${local.bot_role_tag}"}
    assert conditions[f"ssm:resourceTag/{tag}"] == ("StringEquals", [expected[tag]])


def test_operator_policy_covers_what_ansible_does(tf):
    """The operator can find the instance, open and end sessions, use the transfer bucket and publish the code."""
    actions = {action for s in tf.policy_statements("operator") for action in s.actions}
    assert {
        "ec2:DescribeInstances",
        "ssm:StartSession",
        "ssm:TerminateSession",
        "ssmmessages:OpenDataChannel",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "s3:GetBucketOwnershipControls",
    } <= actions
    (publish,) = [s for s in tf.policy_statements("operator") if s.sid == "PublishBotCode"]
    assert publish.resources == ["${aws_s3_bucket.bot_code.arn}/${var.bot_code_key_prefix}*"]
    operator_policy = tf.resource("aws_iam_policy", "operator")["policy"]
    assert reference(operator_policy) == "data.aws_iam_policy_document.operator.json"


def test_no_policy_mentions_another_account_or_region_literally(tf):
    """ARNs are built from the caller's partition, account and Region, never from literal ids."""
    for document, body in tf.data["aws_iam_policy_document"].items():
        for path, value in walk_strings(body):
            assert not re.search(r"\b\d{12}\b", value), f"{document}.{path}: {value}"
            assert not re.search(r"\b(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d\b", value), f"{document}.{path}: {value}"
