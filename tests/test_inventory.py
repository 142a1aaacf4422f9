"""The aws_ec2 inventory in inventory/production, pointed at moto's EC2, and the sandbox overrides on top of it."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.moto_server import REGION, MotoServer

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ANSIBLE_BIN = pathlib.Path(sys.executable).parent
SANDBOX_INVENTORY = "inventory/production,inventory/sandbox"

BOT_TAGS = {
    "Project": "discord-bot",
    "Environment": "prod",
    "Role": "discord-bot",
    "Name": "discord-bot-prod",
    "BotBucket": "discord-bot-prod-code",
    "BotObjectKey": "bot/echo.py",
    "BotSecretId": f"arn:aws:secretsmanager:{REGION}:123456789012:secret:discord-bot/token-AbCdEf",
    "SsmTransferBucket": "discord-bot-prod-ssm-transfer",
    "BotLogGroup": "/discord-bot/prod",
}


def run_instance(aws: MotoServer, tags: dict[str, str], *, stopped: bool = False) -> str:
    ec2 = aws.client("ec2")
    image_id = ec2.describe_images()["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image_id,
        MinCount=1,
        MaxCount=1,
        InstanceType="t4g.micro",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": key, "Value": value} for key, value in tags.items()]}
        ],
    )["Instances"][0]
    if stopped:
        ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    return instance["InstanceId"]


def ansible_env(aws: MotoServer, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
    env.update(aws.env())
    env.update({"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_DEPRECATION_WARNINGS": "false"})
    env.update(extra)
    return env


def inventory_list(aws: MotoServer, **extra: str) -> dict:
    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-inventory"), "--list"],
        cwd=REPO_ROOT, env=ansible_env(aws, **extra), capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def resolved_vars(aws: MotoServer, names: list[str], **extra: str) -> subprocess.CompletedProcess[str]:
    """Template `names` for each discord_bot host as a play would (debug runs on the controller only)."""
    expression = "{{ {" + ", ".join(f"'{name}': {name}" for name in names) + "} | to_json }}"
    return subprocess.run(
        [str(ANSIBLE_BIN / "ansible"), "discord_bot", "-m", "ansible.builtin.debug", "-a", f"msg={expression}"],
        cwd=REPO_ROOT, env=ansible_env(aws, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="json",
                                       **extra),
        capture_output=True, text=True, timeout=120, check=False,
    )


def vars_by_host(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert result.returncode == 0, result.stdout + result.stderr
    hosts = json.loads(result.stdout)["plays"][0]["tasks"][0]["hosts"]
    return {host: json.loads(outcome["msg"]) for host, outcome in hosts.items()}


def test_finds_only_running_bot_instances_named_by_instance_id(aws: MotoServer) -> None:
    """Running instances tagged Role=discord-bot of the project are hosts named by instance id, grouped by env."""
    bot = run_instance(aws, BOT_TAGS)
    run_instance(aws, {**BOT_TAGS, "Role": "bastion"})
    run_instance(aws, {**BOT_TAGS, "Project": "another-project"})
    run_instance(aws, BOT_TAGS, stopped=True)

    inventory = inventory_list(aws)

    assert inventory["discord_bot"]["hosts"] == [bot]
    assert inventory["env_prod"]["hosts"] == [bot]


def test_host_gets_ssm_connection_and_bot_settings_from_its_tags(aws: MotoServer) -> None:
    """Group vars connect over SSM with the instance's region and transfer bucket and read bucket and secret."""
    bot = run_instance(aws, BOT_TAGS)
    names = [
        "ansible_connection", "ansible_aws_ssm_region", "ansible_aws_ssm_bucket_name",
        "ansible_aws_ssm_s3_addressing_style", "ansible_become", "ansible_become_user", "ansible_remote_tmp",
        "discord_bot_bucket", "discord_bot_object_key", "discord_bot_secret_id", "discord_bot_region",
    ]

    settings = vars_by_host(resolved_vars(aws, names))

    assert settings == {
        bot: {
            "ansible_connection": "amazon.aws.aws_ssm",
            "ansible_aws_ssm_region": REGION,
            "ansible_aws_ssm_bucket_name": BOT_TAGS["SsmTransferBucket"],
            "ansible_aws_ssm_s3_addressing_style": "virtual",
            "ansible_become": True,
            "ansible_become_user": "root",
            "ansible_remote_tmp": "/tmp/.ansible-${USER}/tmp",
            "discord_bot_bucket": BOT_TAGS["BotBucket"],
            "discord_bot_object_key": BOT_TAGS["BotObjectKey"],
            "discord_bot_secret_id": BOT_TAGS["BotSecretId"],
            "discord_bot_region": REGION,
        }
    }


def test_object_key_defaults_when_the_tag_is_absent(aws: MotoServer) -> None:
    """Without a BotObjectKey tag the bot's code is read from bot/echo.py in the bucket."""
    tags = {key: value for key, value in BOT_TAGS.items() if key != "BotObjectKey"}
    bot = run_instance(aws, tags)

    assert vars_by_host(resolved_vars(aws, ["discord_bot_object_key"])) == {
        bot: {"discord_bot_object_key": "bot/echo.py"}
    }


def test_missing_bucket_tag_is_named_in_the_error(aws: MotoServer) -> None:
    """An instance without its BotBucket tag fails with a message naming the tag."""
    run_instance(aws, {key: value for key, value in BOT_TAGS.items() if key != "BotBucket"})

    result = resolved_vars(aws, ["discord_bot_bucket"])

    assert result.returncode != 0
    assert "the instance has no BotBucket tag" in result.stdout + result.stderr


def test_sandbox_overrides_only_the_connection_and_endpoints(aws: MotoServer) -> None:
    """Layered on production, inventory/sandbox swaps SSM for SSH on loopback and points the bot at the stand-ins."""
    bot = run_instance(aws, {**BOT_TAGS, "SandboxSshPort": "2399", "SandboxSshKeyFile": "/tmp/sandbox-key"})
    names = [
        "ansible_connection", "ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
        "discord_bot_bucket", "discord_bot_secret_id", "discord_bot_aws_endpoint_url", "discord_bot_api_base",
        "discord_bot_gateway_url", "discord_bot_ip_address_allow",
    ]

    settings = vars_by_host(resolved_vars(
        aws, names, ANSIBLE_INVENTORY=SANDBOX_INVENTORY,
        SANDBOX_DISCORD_API_BASE="http://127.0.0.1:8790/api/v10", SANDBOX_DISCORD_GATEWAY_URL="ws://127.0.0.1:8790/",
    ))

    assert settings == {
        bot: {
            "ansible_connection": "ansible.builtin.ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": "2399",
            "ansible_user": "root",
            "ansible_ssh_private_key_file": "/tmp/sandbox-key",
            "discord_bot_bucket": BOT_TAGS["BotBucket"],
            "discord_bot_secret_id": BOT_TAGS["BotSecretId"],
            "discord_bot_aws_endpoint_url": aws.url,
            "discord_bot_api_base": "http://127.0.0.1:8790/api/v10",
            "discord_bot_gateway_url": "ws://127.0.0.1:8790/",
            "discord_bot_ip_address_allow": ["localhost"],
        }
    }


@pytest.mark.parametrize("missing", ["SANDBOX_DISCORD_API_BASE", "SANDBOX_DISCORD_GATEWAY_URL"])
def test_sandbox_without_emulator_address_names_the_variable(aws: MotoServer, missing: str) -> None:
    """The sandbox inventory refuses to run without the emulator's address and names the variable to set."""
    run_instance(aws, {**BOT_TAGS, "SandboxSshPort": "2399", "SandboxSshKeyFile": "/tmp/sandbox-key"})
    emulator = {"SANDBOX_DISCORD_API_BASE": "http://127.0.0.1:1/api/v10", "SANDBOX_DISCORD_GATEWAY_URL": "ws://x/"}
    del emulator[missing]

    result = resolved_vars(aws, ["discord_bot_api_base", "discord_bot_gateway_url"],
                           ANSIBLE_INVENTORY=SANDBOX_INVENTORY, **emulator)

    assert result.returncode != 0
    assert missing in result.stdout + result.stderr


def test_playbooks_stop_with_a_hint_when_no_instance_is_found(aws: MotoServer) -> None:
    """With no tagged instance running, a playbook fails in its first play and says what to check."""
    run_instance(aws, {**BOT_TAGS, "Role": "bastion"})

    result = subprocess.run(
        [str(ANSIBLE_BIN / "ansible-playbook"), "playbooks/status.yml"],
        cwd=REPO_ROOT, env=ansible_env(aws), capture_output=True, text=True, timeout=120, check=False,
    )

    assert result.returncode != 0
    assert "found no running instance tagged Role=discord-bot" in " ".join(result.stdout.split())
