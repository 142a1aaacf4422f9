"""Wrong or missing role inputs fail before any change, with a message that names the variable to fix.

Each case applies a role to this machine in check mode over the local connection: the input checks are the
roles' first tasks, so a failing case stops before any task that could touch the machine, and check mode
keeps even a wrongly passing case from changing anything.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).with_name("ansible-playbook")

VALID_BOT_VARS = {
    "discord_bot_bucket": "discord-bot-prod-code",
    "discord_bot_secret_id": "discord-bot/token",
    "discord_bot_region": "eu-west-1",
}


def apply_role(tmp_path: pathlib.Path, role: str, role_vars: dict[str, object],
               tasks_from: str = "main") -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "apply.yml"
    playbook.write_text(json.dumps([{
        "name": "Apply the role",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [{"name": "Run the role", "ansible.builtin.include_role": {"name": role, "tasks_from": tasks_from},
                   "vars": role_vars}],
    }]))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_ROLES_PATH": str(REPO_ROOT / "roles")})
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "--check", "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def assert_failed_before_any_change(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "changed=0" in output, output
    for text in expected:
        assert text in output, output


@pytest.mark.parametrize("missing", sorted(VALID_BOT_VARS))
def test_discord_bot_names_a_missing_required_input(tmp_path: pathlib.Path, missing: str) -> None:
    """Leaving out a required discord_bot input fails in the argument check, naming that input."""
    role_vars = {key: value for key, value in VALID_BOT_VARS.items() if key != missing}

    result = apply_role(tmp_path, "discord_bot", role_vars)

    assert_failed_before_any_change(result, "Validating arguments against arg spec 'main'", missing)


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("discord_bot_releases_to_keep", "many", "discord_bot_releases_to_keep"),
        ("discord_bot_log_level", "LOUD", "discord_bot_log_level"),
        ("discord_bot_ip_address_allow", {"any": True}, "discord_bot_ip_address_allow"),
    ],
)
def test_discord_bot_names_an_input_of_the_wrong_type(tmp_path: pathlib.Path, name: str, value: object,
                                                      complaint: str) -> None:
    """An input of the wrong type or outside its choices fails in the argument check, naming the input."""
    result = apply_role(tmp_path, "discord_bot", {**VALID_BOT_VARS, name: value})

    assert_failed_before_any_change(result, "Validating arguments against arg spec 'main'", complaint)


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"discord_bot_bucket": ""}, "discord_bot_bucket is empty"),
        ({"discord_bot_region": "Ireland"}, 'discord_bot_region "Ireland" is not an AWS region name'),
        ({"discord_bot_api_base": "http://127.0.0.1:1/api/v10"}, "must be set together"),
        ({"discord_bot_extra_environment": {"DISCORD_TOKEN": "x"}}, "must not carry DISCORD_TOKEN"),
        ({"discord_bot_extra_environment": {"A": 'say "hi"'}}, "must not contain quotes"),
        ({"discord_bot_releases_to_keep": 1}, "discord_bot_releases_to_keep is 1"),
    ],
)
def test_discord_bot_rejects_inputs_the_types_allow(tmp_path: pathlib.Path, overrides: dict[str, object],
                                                   complaint: str) -> None:
    """Well-typed but unusable inputs fail in the role's first task with a message naming the variable."""
    result = apply_role(tmp_path, "discord_bot", {**VALID_BOT_VARS, **overrides})

    assert_failed_before_any_change(result, "Check the bot's settings", complaint)


def test_deploy_entry_point_requires_a_version(tmp_path: pathlib.Path) -> None:
    """The deploy entry point refuses to run without the S3 version it is to deploy."""
    result = apply_role(tmp_path, "discord_bot", {**VALID_BOT_VARS, "discord_bot_object_version": ""}, "deploy")

    assert_failed_before_any_change(result, "discord_bot_object_version is empty")


@pytest.mark.parametrize(("value", "complaint"), [({"major": 3}, "python_version"), ("3", 'got "3"')])
def test_python_names_a_bad_version(tmp_path: pathlib.Path, value: object, complaint: str) -> None:
    """A python_version that is not a major.minor string fails before anything is installed."""
    result = apply_role(tmp_path, "python", {"python_version": value})

    assert_failed_before_any_change(result, complaint)
