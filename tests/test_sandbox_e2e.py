"""The whole deployment on one sandbox: site.yml, deploys and their rollbacks, crashes, reboots, token handling, IAM.

One sandbox for the module, on ports and a machine name of its own (moto 5850, emulator 5851, SSH 2350, machine
sandbox-e2e) and a temporary state dir, so it never meets a developer's `make sandbox` or a molecule scenario. The
tests run in file order and each leaves the bot answering for the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox import machine, stack
from sandbox.settings import ACCOUNT_ID, BOT_CODE_KEY_PREFIX, BOT_OBJECT_KEY, REGION, REPO_ROOT, Settings
from tests.terraform.hcl_model import load_terraform_config

E2E_MOTO_PORT = 5850
E2E_EMULATOR_PORT = 5851
E2E_SSH_PORT = 2350
E2E_CLOSED_PORT = 5859
E2E_MACHINE = "sandbox-e2e"
UNIT = "discord-bot.service"
ECHO_SOURCE = REPO_ROOT / "bot" / "echo.py"
PREFIX = "v2: "
# From roles/discord_bot/defaults/main.yml; the restart delay a killed bot waits before systemd starts it again.
RESTART_SEC = 10
# Generous for a loaded two-core machine: a start is the interpreter, discord.py's import, the token fetch, IDENTIFY.
START_SECONDS = 20


def _machines_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the sandbox boots systemd-nspawn machines, which needs root"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container debootstrap util-linux)"
    return None


pytestmark = [
    pytest.mark.machine,
    pytest.mark.skipif(_machines_unavailable() is not None, reason=_machines_unavailable() or ""),
    pytest.mark.timeout(900),
]


class Sandbox:
    """The module's sandbox and the handful of things the tests do to it."""

    def __init__(self, settings: Settings, up_output: str) -> None:
        self.settings = settings
        self.up_output = up_output
        self.token = settings.token_file.read_text().strip()

    @property
    def machine(self) -> machine.Machine:
        return stack.running_machine(self.settings)

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sandbox", *args, *self.flags()], cwd=REPO_ROOT, capture_output=True, text=True,
            timeout=timeout, check=False,
        )

    def flags(self) -> list[str]:
        return ["--state-dir", str(self.settings.state_dir), "--moto-port", str(self.settings.moto_port),
                "--emulator-port", str(self.settings.emulator_port), "--machine", self.settings.machine_name,
                "--ssh-port", str(self.settings.ssh_port)]

    def playbook(self, playbook: str, *args: str, **overrides: str) -> stack.PlaybookRun:
        return stack.run_playbook(self.settings, playbook, *args, env_overrides=overrides or None)

    def deploy(self, source: Path, *args: str) -> stack.PlaybookRun:
        return self.playbook("deploy_bot.yml", "-e", f"deploy_bot_source={source}", *args)

    def say(self, text: str, timeout: float = 15) -> str:
        """Mention the bot with `text` and return its answer to that very message (other answers may interleave)."""
        client = stack.emulator_client(self.settings)
        already = len(client.bot_messages())
        client.post_message(f"<@{client.bot_user_id}> {text}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in client.bot_messages()[already:]:
                if message["content"].endswith(text):
                    return message["content"]
            time.sleep(0.1)
        raise TimeoutError(f"no answer to {text!r} within {timeout:g} s")

    def wait_answering(self, timeout: float) -> float:
        """Mention the bot until it answers; return how long that took."""
        started = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError, OSError, RuntimeError):
                self.say("are you there", timeout=2)
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"the bot did not answer within {timeout:.0f} s; {self.unit()}")

    def unit(self, *names: str) -> dict[str, str]:
        wanted = names or ("MainPID", "ActiveState", "SubState", "Result", "ExecMainStatus", "NRestarts")
        return stack.unit_properties(self.machine, *wanted)

    def current_release(self) -> str:
        return self.machine.exec(["readlink", "/opt/discord-bot/current"]).stdout.strip()

    def ready_count(self) -> int:
        """How often the bot's unit reached READY on this boot: systemd logs 'Started' once per READY."""
        journal = self.machine.exec(["journalctl", "-b", "-u", UNIT, "--no-pager", "-o", "cat"]).stdout
        return sum(1 for line in journal.splitlines() if line.startswith("Started discord-bot.service"))

    def restore_running_bot(self) -> None:
        """Bring the bot back to answering after a test that stopped it on purpose."""
        if self.unit("ActiveState")["ActiveState"] != "active":
            self.machine.exec(["systemctl", "reset-failed", UNIT], check=False)
            self.machine.exec(["systemctl", "start", UNIT], check=False, timeout=180)
        self.wait_answering(60)


def _variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of bot/echo.py with one exact edit; fails if bot/echo.py no longer has the text to edit."""
    source = ECHO_SOURCE.read_text()
    assert source.count(old) == 1, f"bot/echo.py no longer contains exactly one {old!r}; update this test"
    path = tmp_path / name / "echo.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source.replace(old, new))
    return path


def prefixed_echo(tmp_path: Path) -> Path:
    return _variant(tmp_path, "prefixed", "await message.channel.send(part)",
                    f"await message.channel.send({PREFIX!r} + part)")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox brought up with `python -m sandbox up`, torn down with `python -m sandbox down`."""
    state_dir = tmp_path_factory.mktemp("sandbox-e2e")
    with pytest.MonkeyPatch.context() as patch:
        # Shares the debootstrapped root with every other user of the machines; building it takes minutes.
        patch.setenv(machine.ROOTS_DIR_ENV, os.environ.get(machine.ROOTS_DIR_ENV)
                     or str(machine.DEFAULT_STATE_DIR / "roots"))
        yield from _sandbox_in(state_dir)


def _sandbox_in(state_dir: Path) -> Iterator[Sandbox]:
    settings = Settings.resolve(state_dir, moto_port=E2E_MOTO_PORT, emulator_port=E2E_EMULATOR_PORT,
                                machine_name=E2E_MACHINE, ssh_port=E2E_SSH_PORT)
    up = subprocess.run(
        [sys.executable, "-m", "sandbox", "up", "--state-dir", str(state_dir), "--moto-port", str(E2E_MOTO_PORT),
         "--emulator-port", str(E2E_EMULATOR_PORT), "--machine", E2E_MACHINE, "--ssh-port", str(E2E_SSH_PORT)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    try:
        assert up.returncode == 0, f"sandbox up failed:\n{up.stdout}\n{up.stderr}"
        yield Sandbox(settings, up.stdout + up.stderr)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "sandbox", "down", "--state-dir", str(state_dir), "--moto-port",
             str(E2E_MOTO_PORT), "--emulator-port", str(E2E_EMULATOR_PORT), "--machine", E2E_MACHINE],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )
        assert down.returncode == 0, f"sandbox down failed:\n{down.stdout}\n{down.stderr}"
        left = {port: stack.port_owner(port) for port in (E2E_MOTO_PORT, E2E_EMULATOR_PORT, E2E_SSH_PORT)}
        assert not any(left.values()), f"still listening after sandbox down: {left}"


@pytest.fixture(scope="module")
def verbose_site_run(sandbox: Sandbox) -> stack.PlaybookRun:
    """site.yml run a second time with -v, whose output the idempotence and token tests both read."""
    return sandbox.playbook("site.yml", "-v")


# ----------------------------------------------------------------------------------------------------------------
# site.yml


def test_fresh_site_run_makes_the_bot_answer_a_mention(sandbox: Sandbox) -> None:
    """`sandbox up` on a fresh machine runs site.yml and shows the bot echoing a mention, with the round trip."""
    assert "bot:  hello from the sandbox" in sandbox.up_output
    assert "round trip:" in sandbox.up_output
    assert sandbox.say("echo this back") == "echo this back"


def test_second_site_run_reports_zero_changes(verbose_site_run: stack.PlaybookRun) -> None:
    """site.yml on a configured machine changes nothing, as the PLAY RECAP counts it."""
    assert verbose_site_run.returncode == 0, verbose_site_run.failure_summary()
    assert verbose_site_run.recap, "no PLAY RECAP in the output"
    assert verbose_site_run.total("changed") == 0, verbose_site_run.recap
    assert verbose_site_run.total("failed") == 0


def test_sandbox_up_again_reuses_the_healthy_sandbox(sandbox: Sandbox) -> None:
    """A second `sandbox up` keeps moto, the emulator and the bot's process and says it reuses them."""
    pid = sandbox.unit("MainPID")["MainPID"]
    again = sandbox.cli("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "reusing the running sandbox" in again.stderr
    assert "changed=0" in again.stdout
    assert sandbox.unit("MainPID")["MainPID"] == pid


def test_sandbox_up_repairs_a_half_finished_sandbox(sandbox: Sandbox) -> None:
    """With the emulator gone, `sandbox up` says so in a note, starts it again and the bot answers through it."""
    record = stack.read_record(sandbox.settings)
    os.kill(record["emulator"]["pid"], signal.SIGKILL)
    again = sandbox.cli("up")
    assert again.returncode == 0, again.stdout + again.stderr
    notes = [line for line in again.stderr.splitlines() if line.startswith("note:")]
    assert notes[0] == "note: cleaning up the half-finished sandbox of an earlier run (the emulator is not running)"
    assert notes[1:] == ["note: restarting the bot, which still knows the user id the previous emulator gave it"]
    assert stack.read_record(sandbox.settings)["emulator"]["pid"] != record["emulator"]["pid"]
    assert stack.read_record(sandbox.settings)["moto"] == record["moto"]
    assert sandbox.say("after the repair") == "after the repair"


# ----------------------------------------------------------------------------------------------------------------
# deploy_bot.yml


def test_deploy_with_changed_code_changes_the_answer(sandbox: Sandbox, tmp_path: Path) -> None:
    """deploy_bot.yml with an echo.py that prefixes its replies makes the bot answer with the prefix, and every
    mention sent during the deploy is answered by the old or the new process."""
    before = sandbox.current_release()
    with MentionSender(sandbox) as sender:
        run = sandbox.deploy(prefixed_echo(tmp_path))
        time.sleep(2)
    assert run.returncode == 0, run.failure_summary()
    assert sandbox.current_release() != before
    assert sandbox.say("new code") == PREFIX + "new code"
    assert sender.sent, "no mention was sent during the deploy"
    assert_all_answered(sender)


def test_deploy_of_unchanged_code_keeps_the_running_process(sandbox: Sandbox, tmp_path: Path) -> None:
    """deploy_bot.yml with the code that already runs neither restarts the bot nor makes it send READY again."""
    pid = sandbox.unit("MainPID")["MainPID"]
    readies = sandbox.ready_count()
    identifies = stack.emulator_client(sandbox.settings).state()["identify_count"]
    run = sandbox.deploy(prefixed_echo(tmp_path))
    assert run.returncode == 0, run.failure_summary()
    assert run.total("changed") == 0, run.recap
    assert sandbox.unit("MainPID")["MainPID"] == pid
    assert sandbox.ready_count() == readies
    assert stack.emulator_client(sandbox.settings).state()["identify_count"] == identifies
    assert sandbox.say("same code") == PREFIX + "same code"


class MentionSender:
    """Mentions the bot every `interval` seconds in the background and records what it sent when."""

    # Slower than the emulator's limit of 5 bot messages per channel per 5 s (Discord's), so answers are not
    # held back by rate limiting.
    def __init__(self, sandbox: Sandbox, interval: float = 1.2) -> None:
        self.client = stack.emulator_client(sandbox.settings)
        self.bot = self.client.bot_user_id
        self.interval = interval
        self.sent: list[tuple[float, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            number += 1
            text = f"during-deploy-{number}-{time.monotonic_ns()}"
            with contextlib.suppress(OSError, RuntimeError):
                self.client.post_message(f"<@{self.bot}> {text}")
                self.sent.append((time.monotonic(), text))
            self.stopping.wait(self.interval)

    def __enter__(self) -> MentionSender:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(10)

    def answered(self) -> set[str]:
        return {message["content"] for message in self.client.bot_messages()}


def assert_all_answered(sender: MentionSender, timeout: float = 20) -> None:
    """Every mention the sender posted is answered, those sent while the bot restarted included: each start
    resumes the gateway session the stopped process handed over, and Discord replays what it missed."""
    deadline = time.monotonic() + timeout
    while True:
        answered = sender.answered()
        missing = [text for _, text in sender.sent if not any(answer.endswith(text) for answer in answered)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not missing, f"mentions sent during or after the deploy were never answered: {missing}"


# What each broken copy of echo.py changes, and the deploy steps that may catch it: a release that dies at start is
# caught by the pre-flight check of the new release, or else by the restart onto it.
BROKEN_RELEASES = {
    "syntax error": ("", "def _broken(:\n", ("Byte-compile the release",)),
    "exits at start": (
        'log = logging.getLogger("echo")\n',
        'log = logging.getLogger("echo")\nsys.exit(3)\n',
        ("Check that the new release reads its settings", "Restart the bot on the new release"),
    ),
    # Connects and answers, but never tells systemd it is ready, so the unit's start timeout has to catch it.
    "never becomes ready": (
        'self.notifier.notify("READY=1", ',
        'self.notifier.notify("STATUS=never ready", ',
        ("Restart the bot on the new release", "Check the new release"),
    ),
}


@pytest.mark.parametrize("kind", list(BROKEN_RELEASES))
def test_broken_release_is_rolled_back(sandbox: Sandbox, tmp_path: Path, kind: str) -> None:
    """A release that does not parse, exits at start or never reports ready fails the play and leaves the old bot."""
    old, new, failing_steps = BROKEN_RELEASES[kind]
    if old:
        broken = _variant(tmp_path, "broken", old, new)
    else:
        broken = tmp_path / "broken" / "echo.py"
        broken.parent.mkdir()
        broken.write_text(ECHO_SOURCE.read_text() + "\n" + new)
    before = sandbox.current_release()
    with MentionSender(sandbox) as sender:
        run = sandbox.deploy(broken)
        finished = time.monotonic()
        time.sleep(3)
    assert run.returncode != 0, "the deploy of a broken release succeeded"
    failed = run.failed_tasks()
    assert any(name.startswith(failing_steps) for name in failed), (failed, run.failure_summary())
    assert sandbox.current_release() == before
    assert sandbox.unit("ActiveState")["ActiveState"] == "active"
    assert sandbox.say("still there") == PREFIX + "still there"
    assert any(sent_at > finished for sent_at, _ in sender.sent), "no mention was sent after the deploy ended"
    assert_all_answered(sender)


def test_deploy_with_s3_unreachable_fails_and_leaves_the_bot_running(sandbox: Sandbox, tmp_path: Path) -> None:
    """With S3 unreachable the deploy fails naming the S3 step, and the running bot keeps its process."""
    pid = sandbox.unit("MainPID")["MainPID"]
    release = sandbox.current_release()
    changed = _variant(tmp_path, "unreachable", "await message.channel.send(part)",
                       "await message.channel.send('v3: ' + part)")
    run = sandbox.deploy(changed, "-e", f"discord_bot_aws_endpoint_url=http://127.0.0.1:{E2E_CLOSED_PORT}")
    assert run.returncode != 0
    assert "Could not connect to the endpoint URL" in run.output or "Connect" in run.failure_summary(), (
        run.failure_summary()
    )
    assert "Look up the code in S3" in run.output
    assert sandbox.unit("MainPID")["MainPID"] == pid
    assert sandbox.current_release() == release
    assert sandbox.say("untouched") == PREFIX + "untouched"


def test_deploy_with_the_token_secret_unreadable_leaves_the_bot_running(sandbox: Sandbox, tmp_path: Path) -> None:
    """With the token secret unreadable during a deploy, the play fails and the running bot keeps its process."""
    pid = sandbox.unit("MainPID")["MainPID"]
    release = sandbox.current_release()
    secrets_client = stack.aws_client(sandbox.settings, "secretsmanager")
    # moto serves every AWS service on one port, so Secrets Manager alone cannot be made unreachable; a secret
    # that cannot be read is what the new process meets either way.
    secrets_client.delete_secret(SecretId=sandbox.settings.secret_name, ForceDeleteWithoutRecovery=True)
    try:
        changed = _variant(tmp_path, "nosecret", "await message.channel.send(part)",
                           "await message.channel.send('v4: ' + part)")
        run = sandbox.deploy(changed)
    finally:
        secrets_client.create_secret(Name=sandbox.settings.secret_name, SecretString=sandbox.token)
    try:
        assert run.returncode != 0
        assert "Check that the new release reads its settings and token" in run.failed_tasks(), run.failure_summary()
        assert sandbox.current_release() == release
        assert sandbox.unit("MainPID")["MainPID"] == pid, "the running bot was restarted"
        assert sandbox.say("untouched") == PREFIX + "untouched"
    finally:
        # The secret's ARN changed with its re-creation; the instance record and the bot follow it.
        secret_arn = secrets_client.describe_secret(SecretId=sandbox.settings.secret_name)["ARN"]
        stack.ensure_instance(sandbox.settings, sandbox.machine, secret_arn)
        sandbox.deploy(prefixed_echo(tmp_path))
        site = sandbox.playbook("site.yml")
        assert site.returncode == 0, site.failure_summary()
        sandbox.restore_running_bot()


# ----------------------------------------------------------------------------------------------------------------
# The bot under systemd


def test_killed_bot_is_back_within_the_restart_delay(sandbox: Sandbox) -> None:
    """SIGKILL of the bot: systemd starts it again after RestartSec and it answers within that plus a start."""
    pid = int(sandbox.unit("MainPID")["MainPID"])
    restarts = int(sandbox.unit("NRestarts")["NRestarts"])
    sandbox.machine.exec(["kill", f"-{signal.SIGKILL.value}", str(pid)])
    back_after = sandbox.wait_answering(RESTART_SEC + START_SECONDS + 10)
    assert back_after <= RESTART_SEC + START_SECONDS, f"answered only after {back_after:.1f} s"
    assert int(sandbox.unit("MainPID")["MainPID"]) != pid
    assert int(sandbox.unit("NRestarts")["NRestarts"]) == restarts + 1


def test_rebooted_machine_brings_the_bot_back(sandbox: Sandbox) -> None:
    """After a reboot of the machine the bot starts by itself and answers."""
    machine.reboot(sandbox.settings.machine_name, sandbox.settings.state_dir)
    sandbox.wait_answering(120)
    assert sandbox.say("after reboot") == PREFIX + "after reboot"


# ----------------------------------------------------------------------------------------------------------------
# The token


def test_token_never_appears_in_journal_output_files_or_environment(
    sandbox: Sandbox, verbose_site_run: stack.PlaybookRun
) -> None:
    """The token is not in the journal, ansible-playbook -v output, files under /opt/discord-bot or the unit's env."""
    token = sandbox.token
    booted = sandbox.machine
    journal = booted.exec(["journalctl", "--no-pager", "-o", "cat"], timeout=120).stdout
    assert "Logged on as" in journal, "the journal does not show the bot at all; the check would prove nothing"
    assert token not in journal
    assert verbose_site_run.output, "no ansible-playbook -v output to check"
    assert token not in verbose_site_run.output
    listing = booted.exec(["find", "/opt/discord-bot", "/etc/discord-bot", "-type", "f", "-print0"], timeout=120)
    files = [path for path in listing.stdout.split("\0") if path]
    assert any(path.endswith("/echo.py") for path in files)
    upper = Path(booted.upper_dir)
    for path in files:
        # The whole tree was created by the role, so the machine's overlay upper layer holds every file of it.
        content = (upper / path.lstrip("/")).read_bytes()
        assert token.encode() not in content, f"{path} contains the token"
    environment = sandbox.unit("Environment")["Environment"]
    assert token not in environment
    main_pid = sandbox.unit("MainPID")["MainPID"]
    process_environment = booted.exec(["cat", f"/proc/{main_pid}/environ"]).stdout
    assert "DISCORD_TOKEN_SECRET_ID" in process_environment
    assert token not in process_environment
    assert "DISCORD_TOKEN=" not in process_environment


def test_revoked_token_stops_the_bot_without_a_restart_loop(sandbox: Sandbox) -> None:
    """A token revoked in the emulator ends the bot with status 83, and systemd does not restart it."""
    client = stack.emulator_client(sandbox.settings)
    restarts = int(sandbox.unit("NRestarts")["NRestarts"])
    client.revoke_token()
    try:
        deadline = time.monotonic() + 60
        while sandbox.unit("ExecMainStatus")["ExecMainStatus"] != "83" and time.monotonic() < deadline:
            time.sleep(0.5)
        state = sandbox.unit()
        assert state["ExecMainStatus"] == "83", state
        # Longer than RestartSec: a restart, had systemd planned one, would have happened by now.
        time.sleep(RESTART_SEC + 5)
        state = sandbox.unit()
        assert state["ActiveState"] in ("failed", "inactive"), state
        assert int(state["NRestarts"]) == restarts, state
    finally:
        client.set_token(sandbox.token)
        sandbox.restore_running_bot()


# ----------------------------------------------------------------------------------------------------------------
# IAM


def rendered_instance_policy(bucket_arn: str, secret_arn: str, log_group_arn: str) -> dict[str, Any]:
    """The instance role's policy from terraform/iam.tf as IAM JSON, with the sandbox's ARNs substituted."""
    references = {
        "${aws_s3_bucket.bot_code.arn}": bucket_arn,
        "${var.bot_code_key_prefix}": BOT_CODE_KEY_PREFIX,
        "${aws_secretsmanager_secret.discord_token.arn}": secret_arn,
        "${aws_cloudwatch_log_group.bot.arn}": log_group_arn,
    }

    def render(value: str) -> str:
        for reference, replacement in references.items():
            value = value.replace(reference, replacement)
        assert "${" not in value, f"terraform/iam.tf uses {value!r}, which this test does not know how to render"
        return value

    statements = []
    for statement in load_terraform_config().policy_statements("bot_instance"):
        if statement.dynamic:
            # The only dynamic statement is the KMS one, which exists only with a customer managed key.
            continue
        assert not statement.conditions, f"statement {statement.sid} has conditions this test does not render"
        statements.append({
            "Sid": statement.sid,
            "Effect": statement.effect,
            "Action": statement.actions,
            "Resource": [render(resource) for resource in statement.resources],
        })
    assert statements, "no statements found in data.aws_iam_policy_document.bot_instance"
    return {"Version": "2012-10-17", "Statement": statements}


def test_instance_policy_reads_only_the_bot_object_and_the_secret(sandbox: Sandbox) -> None:
    """Under moto's IAM, the rendered instance policy reads the bot object, not another key; it names one secret."""
    settings = sandbox.settings
    secret_arn = stack.aws_client(settings, "secretsmanager").describe_secret(SecretId=settings.secret_name)["ARN"]
    bucket_arn = f"arn:aws:s3:::{settings.bot_bucket}"
    log_group_arn = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{settings.log_group}"
    policy = rendered_instance_policy(bucket_arn, secret_arn, log_group_arn)

    s3 = stack.aws_client(settings, "s3")
    s3.put_object(Bucket=settings.bot_bucket, Key="other/private.txt", Body=b"not for the bot")
    iam = stack.aws_client(settings, "iam")
    user = f"sandbox-instance-{time.monotonic_ns()}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="bot-instance", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    instance = stack.aws_client(settings, "s3", access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])

    control = f"{settings.moto_url}/moto-api/reset-auth"

    def reset_auth(body: bytes) -> None:
        request = urllib.request.Request(  # noqa: S310 - moto on loopback
            control, data=body, method="POST", headers={"Content-Type": "text/plain"}
        )
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - moto on loopback

    reset_auth(b"0")
    try:
        body = instance.get_object(Bucket=settings.bot_bucket, Key=BOT_OBJECT_KEY)["Body"].read()
        assert b"discord" in body
        with pytest.raises(instance.exceptions.ClientError) as refused:
            instance.get_object(Bucket=settings.bot_bucket, Key="other/private.txt")
        assert refused.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(instance.exceptions.ClientError) as refused_put:
            instance.put_object(Bucket=settings.bot_bucket, Key=BOT_OBJECT_KEY, Body=b"tampered")
        assert refused_put.value.response["Error"]["Code"] == "AccessDenied"
    finally:
        reset_auth(b"inf")

    # moto checks Secrets Manager actions against "*" only, so a policy scoped to one secret is refused even for
    # that secret there; the scoping is therefore checked on the rendered policy itself.
    secret_statements = [s for s in policy["Statement"] if any(a.startswith("secretsmanager:") for a in s["Action"])]
    assert secret_statements == [
        {"Sid": "ReadBotToken", "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"],
         "Resource": [secret_arn]}
    ]
    assert all("*" not in s["Resource"] for s in policy["Statement"])
