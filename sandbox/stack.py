"""The pieces of one sandbox: moto and the Discord emulator as detached processes, the resources Terraform would
create (made in moto), the machine that plays the instance, and ansible-playbook runs against it.

Processes are recorded in <state dir>/sandbox/<machine>/sandbox.json with their PID and kernel start time, so a
later command stops exactly the processes it started and never a stranger that reused the PID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3

from sandbox import machine
from sandbox.settings import BOT_OBJECT_KEY, REGION, REPO_ROOT, Settings
from tests.discord_emulator import EmulatorClient
from tests.discord_emulator.cli import say_once

SERVICE_START_TIMEOUT = 30.0
SERVICE_STOP_TIMEOUT = 10.0
BOT_ANSWER_TIMEOUT = 30.0
RECAP_LINE = re.compile(
    r"^(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)"
)


class SandboxError(RuntimeError):
    """A step of the sandbox failed; the message says what happened and what to do."""


# ----------------------------------------------------------------------------------------------------------------
# Processes


def _start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` in clock ticks, or None if there is no such process (or it is a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def process_alive(record: dict[str, Any] | None) -> bool:
    """Whether the process of a {pid, start_time} record still runs (and is the same process)."""
    if not record:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(int(record["pid"]), os.WNOHANG)
    return _start_time(int(record["pid"])) == record.get("start_time")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # State 0A is LISTEN; the local address ends in the port in hex.
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def port_owner(port: int) -> tuple[int, str] | None:
    """The (pid, command line) of the process listening on TCP `port`, (0, '?') if unknown, None if free."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        return int(proc.name), command.strip()
    return 0, "?"


def _spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    # A new session keeps the service running after this command ends and away from the terminal's Ctrl-C.
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603
            argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
    deadline = time.monotonic() + 5
    start_time = _start_time(process.pid)
    while start_time is None and time.monotonic() < deadline:
        time.sleep(0.05)
        start_time = _start_time(process.pid)
    return {"pid": process.pid, "start_time": start_time, "argv": argv}


def stop_process(record: dict[str, Any] | None, timeout: float = SERVICE_STOP_TIMEOUT) -> None:
    """SIGTERM the recorded process, SIGKILL it after `timeout`; nothing happens if it is gone already."""
    if not process_alive(record):
        return
    pid = int(record["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(record):
        time.sleep(0.1)
    if process_alive(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_alive(record):
            time.sleep(0.1)
    if process_alive(record):
        raise SandboxError(f"process {pid} ({' '.join(record.get('argv', []))}) survives SIGKILL")


def _wait_until(ready: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if ready():
                return True
        time.sleep(interval)
    return False


# ----------------------------------------------------------------------------------------------------------------
# The record of a sandbox


def read_record(settings: Settings) -> dict[str, Any]:
    try:
        return json.loads(settings.record_file.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        # A record cut short by a crash says nothing reliable; the processes it named are found by port instead.
        return {"corrupt": True}


def write_record(settings: Settings, record: dict[str, Any]) -> None:
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    temporary = settings.record_file.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(settings.record_file)


def sandbox_token(settings: Settings) -> str:
    """The emulator's bot token: made once per sandbox, kept 0600 in its state dir, never on a command line."""
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    try:
        token = settings.token_file.read_text().strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    token = "sandbox." + secrets.token_urlsafe(32)
    descriptor = os.open(settings.token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


# ----------------------------------------------------------------------------------------------------------------
# moto and the emulator


def moto_healthy(settings: Settings) -> bool:
    try:
        # The dashboard page answers at once; data.json serialises every resource and slows down as they grow.
        urllib.request.urlopen(f"{settings.moto_url}/moto-api/", timeout=5).close()  # noqa: S310
    except (OSError, urllib.error.URLError):
        return False
    return True


def emulator_healthy(settings: Settings) -> bool:
    try:
        with urllib.request.urlopen(f"{settings.emulator_control_url}/info", timeout=2) as response:  # noqa: S310
            return "bot_user_id" in json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return False


def _refuse_foreign_port(port: int, what: str, flag: str) -> None:
    owner = port_owner(port)
    if owner is not None:
        pid, command = owner
        raise SandboxError(
            f"127.0.0.1:{port}, the port for {what}, is taken by another program (pid {pid}: {command[:120]}); "
            f"stop it, or give this sandbox another port with {flag}"
        )


def start_moto(settings: Settings) -> dict[str, Any]:
    _refuse_foreign_port(settings.moto_port, "moto", "--moto-port or SANDBOX_MOTO_PORT")
    moto = str(Path(sys.executable).with_name("moto_server"))
    env = {**os.environ, **settings.aws_environment()}
    record = _spawn([moto, "-H", "127.0.0.1", "-p", str(settings.moto_port)], settings.moto_log, env)
    if not _wait_until(lambda: moto_healthy(settings) or not process_alive(record), SERVICE_START_TIMEOUT) or (
        not process_alive(record)
    ):
        stop_process(record)
        raise SandboxError(f"moto did not start on {settings.moto_url}; see {settings.moto_log}")
    return record


def start_emulator(settings: Settings, token: str) -> dict[str, Any]:
    _refuse_foreign_port(settings.emulator_port, "the Discord emulator", "--emulator-port or SANDBOX_EMULATOR_PORT")
    settings.emulator_info_file.unlink(missing_ok=True)
    # The token travels in the environment, which only root and the process itself can read, never in argv.
    env = {**os.environ, "DISCORD_EMULATOR_TOKEN": token}
    argv = [sys.executable, "-m", "tests.discord_emulator", "serve", "--host", "127.0.0.1",
            "--port", str(settings.emulator_port), "--info-file", str(settings.emulator_info_file)]
    if settings.emulator_message_rate_limit is not None:
        argv += ["--message-rate-limit", str(settings.emulator_message_rate_limit)]
    record = _spawn(argv, settings.emulator_log, env)
    if not _wait_until(lambda: settings.emulator_info_file.exists() or not process_alive(record),
                       SERVICE_START_TIMEOUT) or not process_alive(record):
        stop_process(record)
        raise SandboxError(
            f"the Discord emulator did not start on {settings.emulator_url}; see {settings.emulator_log}"
        )
    return record


# ----------------------------------------------------------------------------------------------------------------
# AWS resources in moto


def aws_client(settings: Settings, service: str, **credentials: str) -> Any:
    keys = settings.aws_environment()
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=settings.moto_url,
        aws_access_key_id=credentials.get("access_key", keys["AWS_ACCESS_KEY_ID"]),
        aws_secret_access_key=credentials.get("secret_key", keys["AWS_SECRET_ACCESS_KEY"]),
    )


def ensure_buckets(settings: Settings) -> None:
    """The versioned bot code bucket and the Session Manager transfer bucket, as terraform/storage.tf makes them."""
    s3 = aws_client(settings, "s3")
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for bucket in (settings.bot_bucket, settings.ssm_transfer_bucket):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_versioning(Bucket=settings.bot_bucket, VersioningConfiguration={"Status": "Enabled"})


def ensure_secret(settings: Settings, token: str) -> str:
    """The secret with the emulator's token; returns its ARN."""
    client = aws_client(settings, "secretsmanager")
    try:
        described = client.describe_secret(SecretId=settings.secret_name)
    except client.exceptions.ResourceNotFoundException:
        return client.create_secret(Name=settings.secret_name, SecretString=token)["ARN"]
    current = client.get_secret_value(SecretId=settings.secret_name)["SecretString"]
    if current != token:
        client.put_secret_value(SecretId=settings.secret_name, SecretString=token)
    return described["ARN"]


def ensure_bot_code(settings: Settings, source: Path | None = None) -> bool:
    """Upload bot/echo.py with its digest, as deploy_bot.yml does, unless that content is there; True if uploaded."""
    path = source or REPO_ROOT / "bot" / "echo.py"
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()
    s3 = aws_client(settings, "s3")
    try:
        head = s3.head_object(Bucket=settings.bot_bucket, Key=BOT_OBJECT_KEY)
    except s3.exceptions.ClientError:
        head = {}
    if head.get("Metadata", {}).get("sha256") == digest:
        return False
    s3.put_object(Bucket=settings.bot_bucket, Key=BOT_OBJECT_KEY, Body=body, Metadata={"sha256": digest})
    return True


def ensure_instance(settings: Settings, booted: machine.Machine, secret_arn: str) -> str:
    """The EC2 instance record the inventory finds, tagged as Terraform tags it; returns its id."""
    ec2 = aws_client(settings, "ec2")
    tags = settings.instance_tags(booted.ssh_port, booted.ssh_private_key, secret_arn)
    found = ec2.describe_instances(Filters=[
        {"Name": "tag:SandboxMachine", "Values": [settings.machine_name]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])
    instances = [instance for reservation in found["Reservations"] for instance in reservation["Instances"]]
    tag_list = [{"Key": key, "Value": value} for key, value in tags.items()]
    if instances:
        instance_id = instances[0]["InstanceId"]
        ec2.create_tags(Resources=[instance_id], Tags=tag_list)
        for extra in instances[1:]:
            ec2.terminate_instances(InstanceIds=[extra["InstanceId"]])
        return instance_id
    image_id = ec2.describe_images()["Images"][0]["ImageId"]
    return ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t4g.nano",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )["Instances"][0]["InstanceId"]


def instance_id(settings: Settings) -> str | None:
    """The id of this sandbox's instance record in moto, or None when moto is down or holds none."""
    if not moto_healthy(settings):
        return None
    found = aws_client(settings, "ec2").describe_instances(Filters=[
        {"Name": "tag:SandboxMachine", "Values": [settings.machine_name]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ])
    ids = [instance["InstanceId"] for reservation in found["Reservations"] for instance in reservation["Instances"]]
    return ids[0] if ids else None


# ----------------------------------------------------------------------------------------------------------------
# Ansible


@dataclasses.dataclass
class PlaybookRun:
    """One ansible-playbook run: its exit status, the full output (also kept in a log file) and the recap."""

    playbook: str
    returncode: int
    output: str
    log_file: Path
    seconds: float

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters by host."""
        counters: dict[str, dict[str, int]] = {}
        in_recap = False
        for line in self.output.splitlines():
            if line.startswith("PLAY RECAP"):
                in_recap = True
                continue
            match = RECAP_LINE.match(line.strip()) if in_recap else None
            if match:
                host = match.group("host")
                counters[host] = {key: int(value) for key, value in match.groupdict().items() if key != "host"}
        return counters

    def total(self, counter: str) -> int:
        return sum(host[counter] for host in self.recap.values())

    def failed_tasks(self) -> list[str]:
        """The names of the tasks that failed (without the role prefix), and the steps their messages name."""
        names: list[str] = []
        task = ""
        failure: list[str] | None = None

        def close() -> None:
            if failure is not None:
                # The YAML callback wraps long messages; the step name may span lines.
                names.extend(re.findall(r'failed at step "([^"]+)"', " ".join(" ".join(failure).split())))

        for line in self.output.splitlines():
            if failure is not None and line.startswith((" ", "\t")):
                failure.append(line)
                continue
            close()
            failure = None
            if line.startswith("TASK ["):
                task = line[len("TASK ["):].rsplit("]", 1)[0].split(" : ", 1)[-1]
            elif line.startswith(("fatal:", "failed:")):
                names.append(task)
                failure = [line]
        close()
        return names

    def failure_summary(self, lines: int = 40) -> str:
        """The lines that explain a failure: each error or failed result with its indented details, else the tail."""
        wanted: list[str] = []
        inside = False
        for line in self.output.splitlines():
            if line.startswith(("fatal:", "failed:", "ERROR!", "[ERROR]")):
                inside = True
                wanted.append(line)
            elif inside and line.startswith((" ", "\t")):
                wanted.append(line)
            else:
                inside = False
        return "\n".join(wanted[-lines:] or self.output.splitlines()[-lines:])


def run_playbook(
    settings: Settings,
    playbook: str,
    *extra_args: str,
    env_overrides: dict[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    timeout: float = 1800,
) -> PlaybookRun:
    """Run `ansible-playbook PLAYBOOK` from the repository root against this sandbox, keeping a log file."""
    settings.ansible_log_dir.mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "ssh-control").mkdir(parents=True, exist_ok=True)
    (settings.stack_dir / "ansible-tmp").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log_file = settings.ansible_log_dir / f"{stamp}-{Path(playbook).stem}.log"
    env = settings.ansible_environment()
    env.update(env_overrides or {})
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), playbook, *extra_args]
    started = time.monotonic()
    collected: list[str] = []
    with log_file.open("w") as log:
        process = subprocess.Popen(  # noqa: S603
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        assert process.stdout is not None  # noqa: S101 - Popen was given stdout=PIPE
        for line in process.stdout:
            log.write(line)
            collected.append(line)
            if echo is not None:
                echo(line.rstrip("\n"))
            if time.monotonic() - started > timeout:
                process.kill()
        returncode = process.wait()
    return PlaybookRun(playbook, returncode, "".join(collected), log_file, time.monotonic() - started)


# ----------------------------------------------------------------------------------------------------------------
# The bot, seen from the emulator and the machine


def emulator_client(settings: Settings) -> EmulatorClient:
    return EmulatorClient(settings.emulator_control_url)


def say(settings: Settings, text: str, timeout: float = BOT_ANSWER_TIMEOUT) -> dict[str, Any]:
    """Post '<@bot> text' as the guild's member and wait for the answer; returns it with the round trip."""
    return say_once(emulator_client(settings), text, timeout)


def running_machine(settings: Settings) -> machine.Machine:
    found = machine.info(settings.machine_name, settings.state_dir)
    if found is None:
        raise SandboxError(f"the sandbox machine {settings.machine_name} is not running; start it with `make sandbox`")
    return found


def unit_properties(booted: machine.Machine, *names: str, unit: str = "discord-bot.service") -> dict[str, str]:
    """systemctl show of the bot's unit inside the machine, as a dict."""
    result = booted.exec(["systemctl", "show", unit, "--property=" + ",".join(names)], check=True, timeout=30)
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


@contextlib.contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """Measure a block: the yielded function returns the seconds since the block began."""
    started = time.monotonic()
    yield lambda: time.monotonic() - started
