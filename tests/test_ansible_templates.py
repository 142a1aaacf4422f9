"""The discord_bot role's unit and environment file, rendered by Ansible with the role's own defaults."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
ROLE = REPO_ROOT / "roles" / "discord_bot"
ANSIBLE_PLAYBOOK = pathlib.Path(sys.executable).with_name("ansible-playbook")
REQUIRED = {
    "discord_bot_bucket": "code-bucket", "discord_bot_secret_id": "bot/token", "discord_bot_region": "eu-west-1",
}


def render(tmp_path: pathlib.Path, template: str, overrides: dict[str, object] | None = None) -> str:
    """Render one of the role's templates on the controller with its defaults, its vars and `overrides`."""
    output = tmp_path / "rendered"
    playbook = tmp_path / "render.yml"
    # A vars file after the role's own, because play vars rank below vars files.
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({**REQUIRED, **(overrides or {})}))
    playbook.write_text(json.dumps([{
        "name": "Render",
        "hosts": "localhost",
        "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml"), str(settings)],
        "tasks": [{"name": "Render the template", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / template), "dest": str(output), "mode": "0600"}}],
    }]))
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANSIBLE_")}
    env.update({"ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"})
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={sys.executable}", str(playbook)]
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return output.read_text()


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_unit_is_notify_with_watchdog_restart_policy_and_hardening(tmp_path: pathlib.Path) -> None:
    """The default unit waits for READY=1, has a watchdog and restart limits, never restarts on 83/84, is hardened."""
    unit = directives(render(tmp_path, "discord-bot.service.j2"))

    for directive in [
        "Type=notify", "WatchdogSec=60", "Restart=on-failure", "RestartSec=10", "StartLimitBurst=5",
        "StartLimitIntervalSec=600", "RestartPreventExitStatus=83 84", "User=discord-bot",
        "ExecStart=/opt/discord-bot/venv/bin/python /opt/discord-bot/current/echo.py",
        "EnvironmentFile=/etc/discord-bot/discord-bot.env", "StandardOutput=journal", "NoNewPrivileges=yes",
        "ProtectSystem=strict", "PrivateTmp=yes", "PrivateDevices=yes", "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "SystemCallFilter=@system-service",
    ]:
        assert directive in unit
    assert not [line for line in unit if line.startswith("IPAddress")]


def test_unit_limits_addresses_only_when_asked(tmp_path: pathlib.Path) -> None:
    """Address allow and deny lists become IPAddressAllow/IPAddressDeny lines."""
    unit = directives(render(tmp_path, "discord-bot.service.j2", {
        "discord_bot_ip_address_deny": ["any"], "discord_bot_ip_address_allow": ["localhost", "10.0.0.0/8"]}))

    assert "IPAddressDeny=any" in unit
    assert "IPAddressAllow=localhost 10.0.0.0/8" in unit


def test_environment_file_has_settings_and_no_token(tmp_path: pathlib.Path) -> None:
    """The environment file names the secret, region and log level, and leaves the Discord/AWS endpoints unset."""
    env_file = directives(render(tmp_path, "discord-bot.env.j2"))

    assert env_file == ['DISCORD_TOKEN_SECRET_ID="bot/token"', 'AWS_REGION="eu-west-1"', 'LOG_LEVEL="INFO"']


def test_environment_file_carries_sandbox_endpoints_and_extra_variables(tmp_path: pathlib.Path) -> None:
    """Endpoints and extra variables given to the role appear in the environment file, sorted by name."""
    env_file = directives(render(tmp_path, "discord-bot.env.j2", {
        "discord_bot_aws_endpoint_url": "http://127.0.0.1:5800",
        "discord_bot_api_base": "http://127.0.0.1:5801/api/v10",
        "discord_bot_gateway_url": "ws://127.0.0.1:5801/",
        "discord_bot_extra_environment": {"B_SETTING": "2", "A_SETTING": "1"},
    }))

    assert env_file[3:] == [
        'AWS_ENDPOINT_URL="http://127.0.0.1:5800"',
        'DISCORD_API_BASE="http://127.0.0.1:5801/api/v10"',
        'DISCORD_GATEWAY_URL="ws://127.0.0.1:5801/"',
        'A_SETTING="1"',
        'B_SETTING="2"',
    ]
