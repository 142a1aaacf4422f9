"""Everything the sandbox does differently from production, in one place: ports, names, endpoints, credentials.

The playbooks, roles and inventory are production's. The sandbox only chooses where the stand-ins listen (moto
for AWS, the Discord emulator for Discord), what the Terraform-like resources in moto are called, which
systemd-nspawn machine plays the EC2 instance, and the environment ansible-playbook runs with so that
inventory/sandbox (SSH instead of SSM, moto and emulator endpoints) is layered over inventory/production.

Each setting has a command-line flag and an environment variable; the flag wins.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from sandbox import machine

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_MOTO_PORT = 5800
DEFAULT_EMULATOR_PORT = 5801
DEFAULT_MACHINE_NAME = "sandbox-bot-1"
REGION = "eu-west-1"
PROJECT = "discord-bot"
ENVIRONMENT = "sandbox"
# moto's default account; Terraform would read the real one from aws_caller_identity.
ACCOUNT_ID = "123456789012"
BOT_OBJECT_KEY = "bot/echo.py"
# The prefix terraform/variables.tf gives bot_code_key_prefix by default; the instance policy is scoped to it.
BOT_CODE_KEY_PREFIX = "bot/"
# moto accepts any credentials while IAM enforcement is off, but boto3 refuses to sign without some. The
# inventory gives the bot the same pair (discord_bot_extra_environment in inventory/sandbox).
AWS_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox"}
SANDBOX_INVENTORY = "inventory/production,inventory/sandbox"

MOTO_PORT_ENV = "SANDBOX_MOTO_PORT"
EMULATOR_PORT_ENV = "SANDBOX_EMULATOR_PORT"
MACHINE_NAME_ENV = "SANDBOX_MACHINE"
SSH_PORT_ENV = "SANDBOX_SSH_PORT"


class SettingsError(ValueError):
    """A setting has a value the sandbox cannot use; the message names the flag or variable to fix."""


def _port(value: str | int, what: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise SettingsError(f"{what} is {value!r}; give a TCP port number between 1024 and 65535") from None
    if not 1024 <= port <= 65535:
        raise SettingsError(f"{what} is {port}; give a TCP port number between 1024 and 65535")
    return port


@dataclasses.dataclass(frozen=True)
class Settings:
    """One sandbox: its state dir, the ports of its stand-ins and the machine that plays the instance."""

    state_dir: Path
    moto_port: int = DEFAULT_MOTO_PORT
    emulator_port: int = DEFAULT_EMULATOR_PORT
    machine_name: str = DEFAULT_MACHINE_NAME
    ssh_port: int | None = None
    # Messages the bot may create per channel per 5 s; None keeps the emulator's default, which is Discord's (5).
    # The benchmark raises it, since its sender mentions the bot every 50 ms.
    emulator_message_rate_limit: int | None = None

    @classmethod
    def resolve(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        moto_port: int | None = None,
        emulator_port: int | None = None,
        machine_name: str | None = None,
        ssh_port: int | None = None,
        environ: dict[str, str] | None = None,
    ) -> Settings:
        """Combine flags (given here) with environment variables and defaults, and validate the result."""
        env = os.environ if environ is None else environ
        chosen_state_dir = machine.StatePaths.resolve(
            state_dir or env.get(machine.STATE_DIR_ENV) or None
        ).state_dir
        moto = _port(moto_port if moto_port is not None else env.get(MOTO_PORT_ENV, DEFAULT_MOTO_PORT),
                     f"the moto port (--moto-port or {MOTO_PORT_ENV})")
        emulator = _port(
            emulator_port if emulator_port is not None else env.get(EMULATOR_PORT_ENV, DEFAULT_EMULATOR_PORT),
            f"the emulator port (--emulator-port or {EMULATOR_PORT_ENV})",
        )
        if moto == emulator:
            raise SettingsError(f"moto and the emulator cannot share port {moto}; give them different ports")
        name = machine_name or env.get(MACHINE_NAME_ENV) or DEFAULT_MACHINE_NAME
        try:
            machine.validate_name(name)
        except machine.MachineError as error:
            raise SettingsError(f"the machine name (--machine or {MACHINE_NAME_ENV}): {error}") from None
        raw_ssh = ssh_port if ssh_port is not None else env.get(SSH_PORT_ENV)
        ssh = _port(raw_ssh, f"the SSH port (--ssh-port or {SSH_PORT_ENV})") if raw_ssh not in (None, "") else None
        if ssh in (moto, emulator):
            raise SettingsError(f"the SSH port {ssh} is also the port of moto or the emulator; choose another")
        return cls(state_dir=chosen_state_dir, moto_port=moto, emulator_port=emulator, machine_name=name,
                   ssh_port=ssh)

    # Files of this sandbox inside the state dir, which sandbox.machine shares for its machines and key.

    @property
    def stack_dir(self) -> Path:
        return self.state_dir / "sandbox" / self.machine_name

    @property
    def record_file(self) -> Path:
        return self.stack_dir / "sandbox.json"

    @property
    def token_file(self) -> Path:
        return self.stack_dir / "discord-token"

    @property
    def moto_log(self) -> Path:
        return self.stack_dir / "moto.log"

    @property
    def emulator_log(self) -> Path:
        return self.stack_dir / "emulator.log"

    @property
    def emulator_info_file(self) -> Path:
        return self.stack_dir / "emulator.json"

    @property
    def ansible_log_dir(self) -> Path:
        return self.stack_dir / "ansible"

    # Endpoints.

    @property
    def moto_url(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.emulator_port}"

    @property
    def discord_api_base(self) -> str:
        return f"{self.emulator_url}/api/v10"

    @property
    def discord_gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.emulator_port}/"

    @property
    def emulator_control_url(self) -> str:
        return f"{self.emulator_url}/_emulator"

    # What Terraform would name (terraform/locals.tf), with moto's account id.

    @property
    def name_prefix(self) -> str:
        return f"{PROJECT}-{ENVIRONMENT}"

    @property
    def bot_bucket(self) -> str:
        return f"{self.name_prefix}-bot-{ACCOUNT_ID}-{REGION}"

    @property
    def ssm_transfer_bucket(self) -> str:
        return f"{self.name_prefix}-ssm-{ACCOUNT_ID}-{REGION}"

    @property
    def secret_name(self) -> str:
        return f"{PROJECT}/{ENVIRONMENT}/discord-token"

    @property
    def log_group(self) -> str:
        return f"/{PROJECT}/{ENVIRONMENT}/bot"

    def instance_tags(self, ssh_port: int, ssh_key_file: str, secret_arn: str) -> dict[str, str]:
        """The tags terraform/locals.tf gives the instance, plus how the sandbox inventory reaches the machine."""
        return {
            "Project": PROJECT,
            "Environment": ENVIRONMENT,
            "Role": "discord-bot",
            "Name": self.name_prefix,
            "BotBucket": self.bot_bucket,
            "BotObjectKey": BOT_OBJECT_KEY,
            "BotSecretId": secret_arn,
            "SsmTransferBucket": self.ssm_transfer_bucket,
            "BotLogGroup": self.log_group,
            "SandboxMachine": self.machine_name,
            "SandboxSshPort": str(ssh_port),
            "SandboxSshKeyFile": ssh_key_file,
        }

    def aws_environment(self) -> dict[str, str]:
        """What boto3 (here and in Ansible's controller-side tasks) needs to talk to this sandbox's moto."""
        return {"AWS_ENDPOINT_URL": self.moto_url, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION,
                **AWS_CREDENTIALS}

    def ansible_environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of ansible-playbook: production's inventory and playbooks, the sandbox's overrides."""
        source = os.environ if base is None else base
        # A developer's own AWS profile or Ansible settings must not leak into the rehearsal.
        env = {key: value for key, value in source.items() if not key.startswith(("AWS_", "ANSIBLE_"))}
        venv_bin = str(Path(sys.executable).parent)
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
        env.update(self.aws_environment())
        env.update({
            "ANSIBLE_CONFIG": str(REPO_ROOT / "ansible.cfg"),
            "ANSIBLE_INVENTORY": SANDBOX_INVENTORY,
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_DEPRECATION_WARNINGS": "false",
            "DISCORD_BOT_AWS_REGION": REGION,
            "DISCORD_BOT_PROJECT": PROJECT,
            "SANDBOX_DISCORD_API_BASE": self.discord_api_base,
            "SANDBOX_DISCORD_GATEWAY_URL": self.discord_gateway_url,
            # Each sandbox keeps its SSH control sockets apart from other runs on the same machine.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.stack_dir / "ssh-control"),
            "ANSIBLE_LOCAL_TEMP": str(self.stack_dir / "ansible-tmp"),
        })
        return env
