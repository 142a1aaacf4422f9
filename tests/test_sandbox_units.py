"""The sandbox's settings, process bookkeeping and playbook-output parsing, without booting anything."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox import cli, stack
from sandbox.settings import DEFAULT_EMULATOR_PORT, DEFAULT_MOTO_PORT, Settings, SettingsError

RECAP_OUTPUT = """\
TASK [discord_bot : Restart the bot on the new release and wait for its ready notification] ***
fatal: [i-0abc]: FAILED! => changed=false msg: Unable to restart service discord-bot
    See "systemctl status discord-bot.service" for details.
TASK [discord_bot : Fail with the step that broke the deploy] ***
fatal: [i-0abc]: FAILED! =>
    msg: 'Deploying v1 on i-0abc failed at step "Check the new
        release" (down); rolled back'

PLAY RECAP *********************************************************************
i-0abc                     : ok=12   changed=3    unreachable=0    failed=1    skipped=2    rescued=1    ignored=0
i-0def                     : ok=10   changed=0    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
"""


def test_defaults_are_the_documented_ports_and_machine(tmp_path: Path) -> None:
    """Without flags or variables the sandbox uses 5800, 5801 and machine sandbox-bot-1."""
    settings = Settings.resolve(tmp_path, environ={})
    assert (settings.moto_port, settings.emulator_port) == (DEFAULT_MOTO_PORT, DEFAULT_EMULATOR_PORT)
    assert settings.machine_name == "sandbox-bot-1"
    assert settings.ssh_port is None
    assert settings.stack_dir == tmp_path / "sandbox" / "sandbox-bot-1"


def test_flags_win_over_environment_variables(tmp_path: Path) -> None:
    """A flag overrides the SANDBOX_* variable, which overrides the default."""
    environ = {"SANDBOX_MOTO_PORT": "6000", "SANDBOX_EMULATOR_PORT": "6001", "SANDBOX_MACHINE": "from-env"}
    settings = Settings.resolve(tmp_path, moto_port=7000, environ=environ)
    assert settings.moto_port == 7000
    assert settings.emulator_port == 6001
    assert settings.machine_name == "from-env"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"moto_port": 80}, "moto port"),
        ({"environ": {"SANDBOX_EMULATOR_PORT": "lots"}}, "SANDBOX_EMULATOR_PORT"),
        ({"moto_port": 6000, "emulator_port": 6000}, "cannot share port"),
        ({"machine_name": "Bad_Name"}, "machine name"),
        ({"ssh_port": 5800}, "SSH port 5800"),
    ],
)
def test_bad_settings_name_what_to_fix(tmp_path: Path, arguments: dict, message: str) -> None:
    """Unusable ports or names are refused with a message naming the flag or variable."""
    arguments.setdefault("environ", {})
    with pytest.raises(SettingsError, match=message):
        Settings.resolve(tmp_path, **arguments)


def test_instance_tags_are_terraforms_plus_the_ssh_ones(tmp_path: Path) -> None:
    """The instance record carries the inventory tags of terraform/locals.tf and how to reach the machine."""
    settings = Settings.resolve(tmp_path, environ={})
    tags = settings.instance_tags(2222, "/key", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:x")
    terraform_tags = {"Project", "Environment", "Role", "Name", "BotBucket", "BotObjectKey", "BotSecretId",
                      "SsmTransferBucket", "BotLogGroup"}
    assert terraform_tags <= set(tags)
    assert tags["Role"] == "discord-bot"
    assert (tags["SandboxSshPort"], tags["SandboxSshKeyFile"]) == ("2222", "/key")


def test_ansible_environment_layers_the_sandbox_inventory_and_drops_foreign_aws_settings(tmp_path: Path) -> None:
    """ansible-playbook gets both inventories and the sandbox endpoints, never the caller's AWS profile."""
    settings = Settings.resolve(tmp_path, moto_port=6100, emulator_port=6101, environ={})
    env = settings.ansible_environment({"AWS_PROFILE": "work", "ANSIBLE_INVENTORY": "x", "PATH": "/usr/bin"})
    assert "AWS_PROFILE" not in env
    assert env["ANSIBLE_INVENTORY"] == "inventory/production,inventory/sandbox"
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:6100"
    assert env["SANDBOX_DISCORD_API_BASE"] == "http://127.0.0.1:6101/api/v10"
    assert env["SANDBOX_DISCORD_GATEWAY_URL"] == "ws://127.0.0.1:6101/"


def test_token_is_made_once_and_kept_private(tmp_path: Path) -> None:
    """The sandbox token is generated on first use, stored 0600 and returned unchanged afterwards."""
    settings = Settings.resolve(tmp_path, environ={})
    token = stack.sandbox_token(settings)
    assert len(token) > 30
    assert " " not in token
    assert settings.token_file.stat().st_mode & 0o777 == 0o600
    assert stack.sandbox_token(settings) == token


def test_process_record_tells_a_reused_pid_from_the_original() -> None:
    """A record matches its process only while PID and start time both match."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = {"pid": child.pid, "start_time": stack._start_time(child.pid)}
        assert stack.process_alive(record)
        assert not stack.process_alive({**record, "start_time": record["start_time"] + 1})
        stack.stop_process(record, timeout=5)
        assert not stack.process_alive(record)
    finally:
        child.kill()
        child.wait()
    assert not stack.process_alive(None)


def test_port_owner_finds_the_listening_process() -> None:
    """port_owner names this process for a socket it listens on, and None for a free port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert stack.port_owner(port)[0] == os.getpid()
    assert stack.port_owner(port) is None


def test_foreign_port_is_refused_with_the_flag_to_change(tmp_path: Path) -> None:
    """Starting moto on a port another program holds fails naming that program and --moto-port."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings = Settings.resolve(tmp_path, moto_port=listener.getsockname()[1], environ={})
        with pytest.raises(stack.SandboxError, match=rf"taken by another program \(pid {os.getpid()}.*--moto-port"):
            stack.start_moto(settings)


def test_recap_and_failed_steps_are_parsed() -> None:
    """PLAY RECAP counters are read per host and failed tasks include the step a rescue reported."""
    run = stack.PlaybookRun("deploy_bot.yml", 2, RECAP_OUTPUT, Path("/dev/null"), 1.0)
    assert run.recap["i-0abc"]["changed"] == 3
    assert run.recap["i-0def"]["skipped"] == 4
    assert run.total("failed") == 1
    assert run.failed_tasks() == [
        "Restart the bot on the new release and wait for its ready notification",
        "Fail with the step that broke the deploy",
        "Check the new release",
    ]
    assert '    See "systemctl status discord-bot.service" for details.' in run.failure_summary()
    assert "PLAY RECAP" not in run.failure_summary()


def test_companions_refuse_without_a_sandbox(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """deploy and status on a state dir with no sandbox say how to start one instead of failing obscurely."""
    for command in ("deploy", "status"):
        assert cli.main([command, "--state-dir", str(tmp_path), "--moto-port", "6200", "--emulator-port", "6201"]) == 1
        assert "start one with `make sandbox`" in capsys.readouterr().err
