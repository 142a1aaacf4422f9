"""`python -m sandbox`: the whole deployment rehearsed on this machine, and the commands to play with it.

    up       start moto and the Discord emulator, create what Terraform would in moto, boot the machine,
             run site.yml, and send the bot a mention
    say      send one mention and print the answer      chat     the same, interactively
    deploy   run deploy_bot.yml (after editing bot/echo.py)
    status   run playbooks/status.yml                   logs     the bot's journal from the machine
    down     stop the machine, moto and the emulator, and check that nothing is left
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sandbox import machine, stack
from sandbox.settings import (
    EMULATOR_PORT_ENV,
    MACHINE_NAME_ENV,
    MOTO_PORT_ENV,
    SSH_PORT_ENV,
    Settings,
    SettingsError,
)
from tests.discord_emulator import EmulatorControlError

NEXT_STEPS = """\
Try next:
  make sandbox-say TEXT='hello'   send one mention and see the echo  (python -m sandbox say hello)
  make sandbox-chat               talk to the bot interactively      (python -m sandbox chat)
  make sandbox-deploy             ship your edited bot/echo.py       (python -m sandbox deploy)
  make sandbox-status             service state, release, last logs  (python -m sandbox status)
  make sandbox-logs               the bot's journal                  (python -m sandbox logs --follow)
  make sandbox-down               stop and remove everything         (python -m sandbox down)"""


def _print(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _note(line: str) -> None:
    sys.stderr.write(f"note: {line}\n")
    sys.stderr.flush()


class Progress:
    """Numbered steps, each printed when it starts and again with its duration when it ends."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    def step(self, title: str, action: Callable[[], str | None]) -> None:
        self.number += 1
        _print(f"[{self.number}/{self.total}] {title} ...")
        began = time.monotonic()
        detail = action()
        suffix = f": {detail}" if detail else ""
        _print(f"      done in {time.monotonic() - began:.1f} s{suffix}")

    def finish(self) -> None:
        _print(f"Sandbox ready in {time.monotonic() - self.started:.1f} s.")


def _require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise stack.SandboxError(
            f"`{command}` boots or enters systemd-nspawn machines and must run as root (sudo make sandbox)"
        )


# ----------------------------------------------------------------------------------------------------------------
# up


def _earlier_sandbox(settings: Settings) -> tuple[dict[str, Any], list[str]]:
    """The record of an earlier `up` and what is wrong with it (empty when it is healthy or absent)."""
    record = stack.read_record(settings)
    if not record:
        return record, []
    problems = []
    if record.get("corrupt"):
        problems.append("its record is unreadable")
    if not (stack.process_alive(record.get("moto")) and stack.moto_healthy(settings)):
        problems.append("moto is not running")
    if not (stack.process_alive(record.get("emulator")) and stack.emulator_healthy(settings)):
        problems.append("the emulator is not running")
    if machine.info(settings.machine_name, settings.state_dir) is None:
        problems.append("the machine is not running")
    if not record.get("complete") and not problems:
        problems.append("it stopped before site.yml finished")
    return record, problems


def up(settings: Settings, verbose: bool = False) -> int:
    """Bring the sandbox up (or reuse a healthy one) and show the bot answering."""
    _require_root("up")
    settings.stack_dir.mkdir(parents=True, exist_ok=True)
    record, problems = _earlier_sandbox(settings)
    if record and not problems:
        _note(f"reusing the running sandbox of {settings.machine_name} (moto {settings.moto_url}, emulator "
              f"{settings.emulator_url}); site.yml runs again to check it")
    elif record:
        _note(f"cleaning up the half-finished sandbox of an earlier run ({'; '.join(problems)})")
        # Only the broken service is restarted: a running moto keeps its resources and a running machine its bot.
        if not (stack.process_alive(record.get("moto")) and stack.moto_healthy(settings)):
            stack.stop_process(record.get("moto"))
            record.pop("moto", None)
        if not (stack.process_alive(record.get("emulator")) and stack.emulator_healthy(settings)):
            stack.stop_process(record.get("emulator"))
            record.pop("emulator", None)
        record["complete"] = False
    record = {key: value for key, value in record.items() if key != "corrupt"}
    record.update({"machine": settings.machine_name, "moto_port": settings.moto_port,
                   "emulator_port": settings.emulator_port})
    token = stack.sandbox_token(settings)
    progress = Progress(8)
    state: dict[str, Any] = {}

    def start_moto() -> str:
        if stack.process_alive(record.get("moto")):
            return "already running"
        record["moto"] = stack.start_moto(settings)
        stack.write_record(settings, record)
        return f"pid {record['moto']['pid']}, log {settings.moto_log}"

    def start_emulator() -> str:
        if stack.process_alive(record.get("emulator")):
            return "already running"
        # Each emulator start makes new ids, the bot's own user id among them; a bot that was connected to the
        # previous emulator keeps looking for mentions of its old id, so it is restarted once site.yml is done.
        state["bot_outlived_emulator"] = machine.info(settings.machine_name, settings.state_dir) is not None
        record["emulator"] = stack.start_emulator(settings, token)
        stack.write_record(settings, record)
        return f"pid {record['emulator']['pid']}, log {settings.emulator_log}"

    def create_resources() -> str:
        stack.ensure_buckets(settings)
        state["secret_arn"] = stack.ensure_secret(settings, token)
        return f"buckets {settings.bot_bucket}, {settings.ssm_transfer_bucket}; secret {settings.secret_name}"

    def upload_code() -> str:
        uploaded = stack.ensure_bot_code(settings)
        return "uploaded bot/echo.py with its digest" if uploaded else "S3 already holds this bot/echo.py"

    def boot_machine() -> str:
        state["machine"] = machine.up(settings.machine_name, ssh_port=settings.ssh_port, state_dir=settings.state_dir)
        return f"SSH on 127.0.0.1:{state['machine'].ssh_port}"

    def tag_instance() -> str:
        record["instance_id"] = stack.ensure_instance(settings, state["machine"], state["secret_arn"])
        stack.write_record(settings, record)
        return record["instance_id"]

    def run_site() -> str:
        run = stack.run_playbook(settings, "site.yml", echo=_print if verbose else None)
        if run.returncode != 0:
            raise stack.SandboxError(
                f"site.yml failed (exit status {run.returncode}); full output in {run.log_file}:\n"
                f"{run.failure_summary()}"
            )
        record["complete"] = True
        stack.write_record(settings, record)
        return f"ok={run.total('ok')} changed={run.total('changed')}, log {run.log_file}"

    def greet() -> str:
        if state.get("bot_outlived_emulator"):
            _note("restarting the bot, which still knows the user id the previous emulator gave it")
            state["machine"].exec(["systemctl", "restart", "discord-bot.service"], timeout=300)
        try:
            result = stack.say(settings, "hello from the sandbox")
        except TimeoutError:
            raise stack.SandboxError(
                f"the bot did not answer within {stack.BOT_ANSWER_TIMEOUT:g} s although site.yml succeeded; see "
                "`make sandbox-status` and `make sandbox-logs`"
            ) from None
        state["answer"] = result
        return f"the bot answered {result['answer']!r} in {result['round_trip_ms']:.0f} ms"

    progress.step(f"Start moto (AWS stand-in) on {settings.moto_url}", start_moto)
    progress.step(f"Start the Discord emulator on {settings.emulator_url}", start_emulator)
    progress.step("Create the buckets and the token secret in moto, as Terraform would", create_resources)
    progress.step("Upload bot/echo.py to the code bucket, as deploy_bot.yml would", upload_code)
    progress.step(f"Boot the machine {settings.machine_name} (systemd-nspawn)", boot_machine)
    progress.step("Create the tagged EC2 instance record the inventory finds", tag_instance)
    progress.step("Run ansible-playbook site.yml" + ("" if verbose else " (add --verbose to watch)"), run_site)
    progress.step("Mention the bot through the emulator", greet)
    progress.finish()
    _print()
    _print(f"  you:  @bot hello from the sandbox\n  bot:  {state['answer']['answer']}\n"
           f"  round trip: {state['answer']['round_trip_ms']:.1f} ms")
    _print()
    _print(NEXT_STEPS)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The companions


def _require_up(settings: Settings) -> None:
    record, problems = _earlier_sandbox(settings)
    if not record:
        raise stack.SandboxError(f"no sandbox of {settings.machine_name} is up; start one with `make sandbox`")
    if problems:
        raise stack.SandboxError(
            f"the sandbox of {settings.machine_name} is not healthy ({'; '.join(problems)}); "
            "run `make sandbox` again to repair it"
        )


def say(settings: Settings, text: str, timeout: float) -> int:
    """Send one mention and print the bot's answer and the round trip."""
    try:
        result = stack.say(settings, text, timeout)
    except TimeoutError as error:
        raise stack.SandboxError(
            f"no answer from the bot within {timeout:g} s; see `make sandbox-status` and `make sandbox-logs` "
            f"({error})"
        ) from None
    except EmulatorControlError as error:
        raise stack.SandboxError(f"{error}; is the sandbox up? (make sandbox)") from None
    _print(result["answer"])
    _print(f"round trip: {result['round_trip_ms']:.1f} ms")
    return 0


def chat(settings: Settings, timeout: float) -> int:
    """Read lines from the terminal and show the bot's answer to each."""
    _print("Type a message for the bot; an empty line or Ctrl-D quits.")
    while True:
        try:
            text = input("you> ")
        except (EOFError, KeyboardInterrupt):
            _print()
            return 0
        if not text.strip():
            return 0
        try:
            result = stack.say(settings, text, timeout)
        except TimeoutError:
            _print(f"bot> (no answer within {timeout:g} s; see `make sandbox-logs`)")
            continue
        except EmulatorControlError as error:
            raise stack.SandboxError(f"{error}; is the sandbox up? (make sandbox)") from None
        _print(f"bot> {result['answer']}    ({result['round_trip_ms']:.0f} ms)")


def deploy(settings: Settings, source: Path | None, extra: Sequence[str]) -> int:
    """Run deploy_bot.yml against the sandbox, then show the bot's answer."""
    _require_up(settings)
    args = list(extra)
    if source is not None:
        if not source.is_file():
            raise stack.SandboxError(f"--source {source} is not a file; give the path of an echo.py to ship")
        args += ["-e", f"deploy_bot_source={source.resolve()}"]
    run = stack.run_playbook(settings, "deploy_bot.yml", *args, echo=_print)
    if run.returncode != 0:
        _print(f"deploy_bot.yml failed (exit status {run.returncode}); log in {run.log_file}")
        return run.returncode
    result = stack.say(settings, "hello after the deploy")
    _print(f"Deployed in {run.seconds:.1f} s; the bot answers {result['answer']!r} "
           f"({result['round_trip_ms']:.0f} ms round trip).")
    return 0


def status(settings: Settings, extra: Sequence[str]) -> int:
    """Run playbooks/status.yml against the sandbox."""
    _require_up(settings)
    run = stack.run_playbook(settings, "playbooks/status.yml", *extra, echo=_print)
    return run.returncode


def logs(settings: Settings, lines: int, follow: bool) -> int:
    """Print the bot's journal from inside the machine."""
    _require_root("logs")
    booted = stack.running_machine(settings)
    argv = ["journalctl", "--unit=discord-bot.service", f"--lines={lines}", "--no-pager", "--output=short-iso"]
    if follow:
        argv.append("--follow")
    return machine.exec_in(booted.name, argv, settings.state_dir)


def down(settings: Settings) -> int:
    """Stop the machine and the recorded processes, then check that nothing of this sandbox is left."""
    _require_root("down")
    record = stack.read_record(settings)
    began = time.monotonic()
    was_running = machine.info(settings.machine_name, settings.state_dir) is not None
    machine.down(settings.machine_name, settings.state_dir)
    if was_running:
        _print(f"Machine {settings.machine_name} powered off and removed.")
    for name in ("emulator", "moto"):
        entry = record.get(name)
        if stack.process_alive(entry):
            stack.stop_process(entry)
            _print(f"Stopped {name} (pid {entry['pid']}).")
    left = []
    if machine.info(settings.machine_name, settings.state_dir) is not None:
        left.append(f"machine {settings.machine_name} still runs")
    for name in ("emulator", "moto"):
        if stack.process_alive(record.get(name)):
            left.append(f"{name} (pid {record[name]['pid']}) still runs")
    if not left:
        # The token belongs to this sandbox; the next `up` makes a new one.
        settings.token_file.unlink(missing_ok=True)
        settings.record_file.unlink(missing_ok=True)
        settings.emulator_info_file.unlink(missing_ok=True)
        shutil.rmtree(settings.stack_dir / "ssh-control", ignore_errors=True)
        shutil.rmtree(settings.stack_dir / "ansible-tmp", ignore_errors=True)
    if left:
        raise stack.SandboxError("some of the sandbox is still running: " + "; ".join(left))
    for port, what in ((settings.moto_port, "moto"), (settings.emulator_port, "emulator")):
        owner = stack.port_owner(port)
        if owner is not None:
            _note(f"port {port} ({what}'s) is in use by pid {owner[0]} ({owner[1][:80]}), which this sandbox did "
                  "not start")
    _print(f"Nothing of the sandbox {settings.machine_name} is left running ({time.monotonic() - began:.1f} s). "
           f"Logs stay in {settings.stack_dir}.")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", help=f"state directory (env {machine.STATE_DIR_ENV}; default "
                        f"{machine.DEFAULT_STATE_DIR})")
    common.add_argument("--moto-port", type=int, help=f"moto's port on 127.0.0.1 (env {MOTO_PORT_ENV}; default 5800)")
    common.add_argument("--emulator-port", type=int,
                        help=f"the Discord emulator's port on 127.0.0.1 (env {EMULATOR_PORT_ENV}; default 5801)")
    common.add_argument("--machine", help=f"machine name (env {MACHINE_NAME_ENV}; default sandbox-bot-1)")
    common.add_argument("--ssh-port", type=int,
                        help=f"the machine's SSH port (env {SSH_PORT_ENV}; default: a free one)")
    commands = parser.add_subparsers(dest="command", required=True)
    up_command = commands.add_parser("up", parents=[common], help="bring the sandbox up and show the bot answering")
    up_command.add_argument("--verbose", action="store_true", help="stream ansible-playbook's output")
    say_command = commands.add_parser("say", parents=[common], help="send one mention and print the answer")
    say_command.add_argument("text", nargs="+")
    say_command.add_argument("--timeout", type=float, default=stack.BOT_ANSWER_TIMEOUT)
    chat_command = commands.add_parser("chat", parents=[common], help="talk to the bot interactively")
    chat_command.add_argument("--timeout", type=float, default=stack.BOT_ANSWER_TIMEOUT)
    deploy_command = commands.add_parser("deploy", parents=[common], help="run deploy_bot.yml")
    deploy_command.add_argument("--source", type=Path, help="ship this file instead of bot/echo.py")
    deploy_command.add_argument("ansible_args", nargs=argparse.REMAINDER, help="more ansible-playbook arguments")
    status_command = commands.add_parser("status", parents=[common], help="run playbooks/status.yml")
    status_command.add_argument("ansible_args", nargs=argparse.REMAINDER, help="more ansible-playbook arguments")
    logs_command = commands.add_parser("logs", parents=[common], help="show the bot's journal")
    logs_command.add_argument("--lines", type=int, default=100)
    logs_command.add_argument("--follow", action="store_true")
    commands.add_parser("down", parents=[common], help="stop and remove everything of the sandbox")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.resolve(args.state_dir, moto_port=args.moto_port, emulator_port=args.emulator_port,
                                    machine_name=args.machine, ssh_port=args.ssh_port)
    except SettingsError as error:
        parser.error(str(error))
    try:
        if args.command == "up":
            return up(settings, args.verbose)
        if args.command == "say":
            return say(settings, " ".join(args.text), args.timeout)
        if args.command == "chat":
            return chat(settings, args.timeout)
        if args.command == "deploy":
            return deploy(settings, args.source, [arg for arg in args.ansible_args if arg != "--"])
        if args.command == "status":
            return status(settings, [arg for arg in args.ansible_args if arg != "--"])
        if args.command == "logs":
            return logs(settings, args.lines, args.follow)
        return down(settings)
    except (stack.SandboxError, machine.MachineError) as error:
        sys.stderr.write(f"error: {error}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to continue, or `make sandbox-down`\n")
        return 130
