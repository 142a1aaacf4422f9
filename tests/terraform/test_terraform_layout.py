"""Versions, variables, outputs, ignored files, checkov skips and the README of terraform/."""

import re
import subprocess

import pytest

from tests.terraform.hcl_model import REPOSITORY_ROOT, TERRAFORM_DIR, re2_search, regex_patterns

INVENTORY_TAGS = (
    "Project", "Environment", "Role", "Name", "BotBucket", "BotObjectKey", "BotSecretId", "SsmTransferBucket",
    "BotLogGroup",
)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _minimum_version(constraint: str) -> tuple[int, ...]:
    """The lowest version a constraint such as '>= 1.11.0' or '>= 6.0.0, < 7.0.0' admits."""
    lower_bounds = re.findall(r"(?:>=|~>)\s*([0-9.]+)", constraint)
    assert lower_bounds, f"constraint {constraint!r} has no lower bound"
    return max(_version_tuple(bound) for bound in lower_bounds)


def test_terraform_version_supports_write_only_arguments(tf):
    """Terraform is pinned to 1.11 or later, the first release with write-only arguments."""
    (settings,) = tf.settings
    assert _minimum_version(settings["required_version"]) >= (1, 11)


def test_aws_provider_is_pinned_to_a_major_version_with_the_features_used(tf):
    """The AWS provider comes from hashicorp/aws, at least 6.0 (write-only secrets), below the next major."""
    (settings,) = tf.settings
    (providers,) = settings["required_providers"]
    aws = providers["aws"]
    assert aws["source"] == "hashicorp/aws"
    assert _minimum_version(aws["version"]) >= (6, 0)
    assert re.search(r"<\s*7\.0\.0", aws["version"]) or aws["version"].startswith("~> 6."), aws["version"]


def test_every_variable_is_described_typed_and_defaulted(tf):
    """Every variable has a description and a type, and all but the token have a default."""
    for name, variable in tf.variables.items():
        assert variable.get("description", "").strip(), f"variable {name} has no description"
        assert variable.get("type"), f"variable {name} has no type"
        if name != "discord_token":
            assert "default" in variable, f"variable {name} has no default"


@pytest.mark.parametrize(
    "name",
    ["aws_region", "project", "environment", "instance_type", "ssh_allowed_cidr", "log_retention_days",
     "alarm_email", "subnet_id", "secret_recovery_window_days", "discord_token", "root_volume_size_gib"],
)
def test_cheap_to_catch_mistakes_are_validated(tf, name):
    """Variables whose bad values are easy to recognise carry a validation with a sentence as its message."""
    validations = tf.variables[name].get("validation", [])
    assert validations, f"variable {name} has no validation"
    for validation in validations:
        message = validation["error_message"]
        assert re.fullmatch(r"[A-Z].*[.?!]", message), f"{name}: error message is not a sentence: {message!r}"


def _accepts(tf, variable: str, value: str) -> bool:
    (validation,) = tf.variables[variable]["validation"]
    return all(re2_search(pattern, value) for pattern in regex_patterns(validation["condition"]))


@pytest.mark.parametrize(
    ("region", "accepted"),
    [("us-east-1", True), ("eu-central-2", True), ("ap-southeast-5", True), ("us-gov-west-1", True),
     ("il-central-1", True), ("US-EAST-1", False), ("us-east", False), ("useast1", False), ("us-east-1a", False)],
)
def test_region_validation(tf, region, accepted):
    """aws_region accepts Region codes and refuses zone names, upper case and malformed codes."""
    assert _accepts(tf, "aws_region", region) is accepted


@pytest.mark.parametrize(
    ("instance_type", "accepted"),
    [("t2.micro", True), ("t3.nano", True), ("t3a.small", True), ("t4g.nano", True), ("t4g.2xlarge", True),
     ("m5.large", False), ("t4g", False), ("t2.micro ", False), ("c7g.medium", False), ("t3.4xlarge", False)],
)
def test_instance_type_validation(tf, instance_type, accepted):
    """instance_type accepts burstable t2, t3, t3a and t4g sizes only."""
    assert _accepts(tf, "instance_type", instance_type) is accepted


@pytest.mark.parametrize(
    ("address", "accepted"),
    [("ops@example.com", True), ("first.last+bot@mail.example.org", True), ("ops@example", False),
     ("ops example@example.com", False), ("@example.com", False), ("ops@@example.com", False)],
)
def test_alarm_email_validation(tf, address, accepted):
    """alarm_email accepts one plausible address and refuses obvious typos."""
    assert _accepts(tf, "alarm_email", address) is accepted


@pytest.mark.parametrize(
    ("token", "accepted"),
    [("MTAxMjM0NTY3ODkwMTIzNDU2Nw.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789_-", True),
     ("Bot MTAxMjM0NTY3ODkwMTIzNDU2Nw.GaBcDe.abcdef", False), ("MTAxMjM0NTY3ODkw", False),
     ('"MTAx.GaBc.abcd"', False), ("MTAx.GaBc.abcd\n", False)],
)
def test_token_shape_validation(tf, token, accepted):
    """discord_token must look like a bot token: three dot-separated parts, no prefix, quotes or whitespace."""
    assert _accepts(tf, "discord_token", token) is accepted


def test_outputs_cover_what_users_and_the_inventory_need(tf):
    """The instance id, bucket names, secret ARN, log group, session command and inventory data are outputs."""
    required = {
        "instance_id", "bot_bucket_name", "bot_object_key", "ssm_transfer_bucket_name", "bot_secret_arn",
        "log_group_name", "session_manager_command", "ansible_inventory", "operator_policy_arn",
    }
    assert required <= tf.outputs.keys()
    for name, output in tf.outputs.items():
        assert output.get("description", "").strip(), f"output {name} has no description"
    command = tf.outputs["session_manager_command"]["value"]
    assert command.startswith("aws ssm start-session ") and "--target ${aws_instance.bot.id}" in command


def test_every_line_fits_in_120_columns():
    """Every file in terraform/ keeps to the project's line length."""
    for path in sorted(TERRAFORM_DIR.iterdir()):
        if path.is_file():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                assert len(line) <= 120, f"{path.name}:{number} is {len(line)} columns long"


def test_every_checkov_skip_gives_a_reason(tf):
    """A checkov skip names the check and explains, in a sentence, why it does not apply."""
    skips = [
        (name, line.strip())
        for name, text in tf.sources.items()
        for line in text.splitlines()
        if "checkov:skip" in line
    ]
    assert skips, "expected the documented skips"
    for name, line in skips:
        match = re.fullmatch(r"#checkov:skip=(CKV2?_AWS_\d+):(.+)", line)
        assert match, f"{name}: malformed skip {line!r}"
        reason = match.group(2).strip()
        assert len(reason.split()) >= 6, f"{name}: {match.group(1)} has no real reason: {reason!r}"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("terraform/dev.tfvars", True), ("terraform/prod.auto.tfvars", True), ("terraform/terraform.tfstate", True),
     ("terraform/terraform.tfstate.backup", True), ("terraform/.terraform/providers/x", True),
     ("terraform/dev.tfvars.example", False), ("terraform/.terraform.lock.hcl", False)],
)
def test_state_and_real_variable_files_are_ignored_by_git(path, ignored):
    """State and real .tfvars files never get committed; the example and the provider lock file do."""
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--quiet", path], cwd=REPOSITORY_ROOT, check=False,
    )
    assert result.returncode in (0, 1), "git check-ignore failed"
    assert (result.returncode == 0) is ignored


def test_example_variables_are_all_declared(tf):
    """dev.tfvars.example sets only variables that exist and never the token."""
    example = (TERRAFORM_DIR / "dev.tfvars.example").read_text(encoding="utf-8")
    assigned = re.findall(r"^([a-z_]+)\s*=", example, flags=re.MULTILINE)
    assert assigned
    assert set(assigned) <= tf.variables.keys()
    assert "discord_token" not in assigned


def test_readme_lists_the_inventory_tags_and_the_commands():
    """terraform/README.md documents the tag contract, the exact commands, the costs and the teardown."""
    readme = (TERRAFORM_DIR / "README.md").read_text(encoding="utf-8")
    for tag in INVENTORY_TAGS:
        assert f"| `{tag}` |" in readme, f"tag {tag} is missing from the README table"
    for command in ("terraform init", "terraform plan -var-file=", "terraform apply -var-file=",
                    "terraform destroy -var-file="):
        assert command in readme, command
    for cost_item in ("public IPv4", "Secrets Manager", "$0.40", "$0.005 an hour", "t2.micro", "t4g.nano"):
        assert cost_item in readme, cost_item
    for variable in ("DISCORD_TOKEN_SECRET_ID", "AWS_REGION"):
        assert variable in readme
