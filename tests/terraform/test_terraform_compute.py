"""The EC2 instance: image, hardening, and the tags the Ansible inventory depends on."""

import re

from tests.terraform.hcl_model import TerraformConfig, reference

# The contract with the Ansible side: tag name -> the expression Terraform must give it.
INVENTORY_TAG_EXPRESSIONS = {
    "Project": "${var.project}",
    "Environment": "${var.environment}",
    "Role": "${local.bot_role_tag}",
    "Name": "${local.name_prefix}",
    "BotBucket": "${aws_s3_bucket.bot_code.bucket}",
    "BotObjectKey": "${local.bot_object_key}",
    "BotSecretId": "${aws_secretsmanager_secret.discord_token.arn}",
    "SsmTransferBucket": "${aws_s3_bucket.ssm_transfer.bucket}",
    "BotLogGroup": "${aws_cloudwatch_log_group.bot.name}",
}


def _instance(tf: TerraformConfig) -> dict:
    instances = tf.resources_of("aws_instance")
    assert list(instances) == ["bot"], f"expected exactly one instance, aws_instance.bot; found {sorted(instances)}"
    return instances["bot"]


def test_instance_requires_imdsv2_with_hop_limit_one(tf):
    """The instance metadata service answers only token-bearing (IMDSv2) requests from the instance itself."""
    (options,) = _instance(tf)["metadata_options"]
    assert options["http_tokens"] == "required"
    assert options["http_endpoint"] == "enabled"
    assert options["http_put_response_hop_limit"] == 1


def test_root_volume_is_encrypted_gp3_of_8_gib_by_default(tf):
    """The root volume is an encrypted gp3 volume, 8 GiB unless root_volume_size_gib says otherwise."""
    (root,) = _instance(tf)["root_block_device"]
    assert root["encrypted"] is True
    assert root["volume_type"] == "gp3"
    assert reference(root["volume_size"]) == "var.root_volume_size_gib"
    assert tf.variables["root_volume_size_gib"]["default"] == 8


def test_instance_has_no_user_data(tf):
    """Nothing configures the instance at boot: Ansible does all configuration over Session Manager."""
    instance = _instance(tf)
    assert not {"user_data", "user_data_base64", "user_data_replace_on_change"} & instance.keys()
    assert "aws_launch_template" not in tf.resources


def test_instance_defaults_to_t2_micro_with_basic_monitoring(tf):
    """The default is a t2.micro with detailed monitoring off and CPU credits never billed beyond the baseline."""
    instance = _instance(tf)
    assert reference(instance["instance_type"]) == "var.instance_type"
    assert tf.variables["instance_type"]["default"] == "t2.micro"
    assert reference(instance["monitoring"]) == "var.detailed_monitoring"
    assert tf.variables["detailed_monitoring"]["default"] is False
    assert instance["credit_specification"] == [{"cpu_credits": "standard"}]


def test_instance_profile_is_attached(tf):
    """The instance runs with the project's instance profile, which carries the bot's role."""
    assert reference(_instance(tf)["iam_instance_profile"]) == "aws_iam_instance_profile.bot.name"
    profile = tf.resource("aws_iam_instance_profile", "bot")
    assert reference(profile["role"]) == "aws_iam_role.bot.name"


def test_image_is_latest_amazon_linux_2023_for_the_derived_architecture(tf):
    """The image comes from the public AL2023 parameter, arm64 for t4g (Graviton) types and x86_64 otherwise."""
    parameter = tf.data_source("aws_ssm_parameter", "al2023_ami")
    assert parameter["name"] == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${local.architecture}"
    assert reference(_instance(tf)["ami"]) == "data.aws_ssm_parameter.al2023_ami.insecure_value"
    derivation = tf.locals["architecture"]
    assert "var.architecture" in derivation
    assert re.search(r'startswith\(var\.instance_type, "t4g\."\) \? "arm64" : "x86_64"', derivation), derivation


def test_new_image_does_not_replace_instance_unless_asked(tf):
    """A newer AMI leaves the instance alone by default; replace_instance_on_ami_update opts into replacement."""
    (lifecycle,) = _instance(tf)["lifecycle"]
    assert "ami" in lifecycle["ignore_changes"]
    assert lifecycle["replace_triggered_by"] == ["${terraform_data.ami_release}"]
    trigger = tf.resource("terraform_data", "ami_release")["input"]
    latest_image = "data.aws_ssm_parameter.al2023_ami.insecure_value"
    assert trigger.startswith(f"${{var.replace_instance_on_ami_update ? {latest_image} :")
    assert tf.variables["replace_instance_on_ami_update"]["default"] is False


def test_instance_carries_every_inventory_tag(tf):
    """The instance is tagged with exactly the names and values the Ansible inventory reads."""
    assert reference(_instance(tf)["tags"]) == "local.inventory_tags"
    assert tf.locals["inventory_tags"] == INVENTORY_TAG_EXPRESSIONS


def test_inventory_tag_values_default_to_the_documented_ones(tf):
    """By default Project is discord-bot, Environment prod, Role discord-bot and the object key bot/echo.py."""
    assert tf.variables["project"]["default"] == "discord-bot"
    assert tf.variables["environment"]["default"] == "prod"
    assert tf.locals["bot_role_tag"] == "discord-bot"
    assert tf.locals["name_prefix"] == "${var.project}-${var.environment}"
    assert tf.locals["bot_object_key"] == "${var.bot_code_key_prefix}${var.bot_code_object_name}"
    default_key = tf.variables["bot_code_key_prefix"]["default"] + tf.variables["bot_code_object_name"]["default"]
    assert default_key == "bot/echo.py"


def test_provider_tags_every_resource_with_project_and_environment(tf):
    """default_tags put Project and Environment on everything, including the root volume."""
    (provider,) = tf.providers["aws"]
    (default_tags,) = provider["default_tags"]
    assert default_tags["tags"]["Project"] == "${var.project}"
    assert default_tags["tags"]["Environment"] == "${var.environment}"
    assert reference(provider["region"]) == "var.aws_region"


def test_recovery_alarm_watches_the_system_status_check(tf):
    """A failed system status check triggers the EC2 recover action on the bot instance."""
    alarm = tf.resource("aws_cloudwatch_metric_alarm", "system_status_check")
    assert alarm["namespace"] == "AWS/EC2"
    assert alarm["metric_name"] == "StatusCheckFailed_System"
    assert reference(alarm["dimensions"]["InstanceId"]) == "aws_instance.bot.id"
    assert ":ec2:recover" in alarm["alarm_actions"]
