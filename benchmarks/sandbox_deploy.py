"""Benchmark of the playbooks on a sandbox of its own: how long they take, how many modules they run on the host,
and the bot's downtime during a deploy, side by side with the same update done by hand over SSH.

Each of N runs (default 3) boots a fresh machine and measures, in this order:

    site.yml on the fresh machine; site.yml again (nothing to change);
    deploy_bot.yml with changed code; deploy_bot.yml with the same code again;
    the bot's downtime during a deploy with changed code;
    the baseline: scp the changed echo.py into the running release over SSH, `systemctl restart` (which, for this
    Type=notify unit, returns once the new process sent READY=1), with its downtime.

Downtime is measured from the emulator: a sender mentions the bot every 50 ms, the old and the new code answer with
different prefixes, and the downtime is the time from the old process's last answer to the new one's first, by the
emulator's receive timestamps. Module invocations are counted from the JSON callback: every task result on the
host (each loop item counts), leaving out skipped ones and the actions that run on the controller only (set_fact,
assert, include_*, meta, debug, fail, argument validation, anything delegated to localhost); over SSM each one
is a round trip.

    sudo .venv/bin/python -m benchmarks.sandbox_deploy [--runs 3] [--json build/benchmarks/sandbox_deploy.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import cli, machine, stack  # noqa: E402
from sandbox.settings import Settings  # noqa: E402

BENCH_MOTO_PORT = 5855
BENCH_EMULATOR_PORT = 5856
BENCH_SSH_PORT = 2355
BENCH_MACHINE = "sandbox-bench"
SEND_INTERVAL = 0.05
ECHO_SOURCE = REPO / "bot" / "echo.py"
SEND_LINE = "await message.channel.send(part)"
# Actions that ansible runs on the controller; they cost no round trip to the host.
CONTROLLER_ACTIONS = {
    "ansible.builtin.set_fact", "set_fact", "ansible.builtin.assert", "assert", "ansible.builtin.debug", "debug",
    "ansible.builtin.fail", "fail", "ansible.builtin.meta", "meta", "ansible.builtin.include_tasks",
    "include_tasks", "ansible.builtin.import_tasks", "import_tasks", "ansible.builtin.include_role", "include_role",
    "ansible.builtin.validate_argument_spec", "validate_argument_spec",
}


def variant(directory: pathlib.Path, prefix: str) -> pathlib.Path:
    """bot/echo.py answering with `prefix` in front, to tell the old process's answers from the new one's."""
    source = ECHO_SOURCE.read_text()
    if source.count(SEND_LINE) != 1:
        raise SystemExit(f"bot/echo.py no longer contains exactly one {SEND_LINE!r}; update this benchmark")
    path = directory / prefix.strip(": ") / "echo.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source.replace(SEND_LINE, f"await message.channel.send({prefix!r} + part)"))
    return path


def playbook(settings: Settings, name: str, *args: str) -> tuple[float, dict[str, int], stack.PlaybookRun]:
    """Run a playbook with the JSON callback; return its duration, invocation counts and the run."""
    run = stack.run_playbook(settings, name, *args, env_overrides={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
                                                                    "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1"})
    if run.returncode != 0:
        raise SystemExit(f"{name} failed (exit status {run.returncode}); see {run.log_file}")
    return run.seconds, count_invocations(run.output), run


def count_invocations(output: str) -> dict[str, int]:
    document = json.loads(output[output.index("{"):])
    host = controller = 0
    for play in document["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                items = result.get("results") if isinstance(result.get("results"), list) else [result]
                for item in items:
                    if item.get("skipped"):
                        continue
                    delegated = (item.get("_ansible_delegated_vars") or {}).get("ansible_host") in (
                        "localhost", "127.0.0.1") and item.get("_ansible_delegated_vars", {}).get(
                        "ansible_connection") == "local"
                    if result.get("action") in CONTROLLER_ACTIONS or delegated:
                        controller += 1
                    else:
                        host += 1
    return {"host": host, "controller": controller}


class Sender:
    """Mentions the bot every SEND_INTERVAL seconds until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.client = stack.emulator_client(settings)
        self.bot = self.client.bot_user_id
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.start_index = len(self.client.bot_messages())

    def _run(self) -> None:
        number = 0
        while not self.stopping.is_set():
            number += 1
            with contextlib.suppress(OSError, RuntimeError):
                self.client.post_message(f"<@{self.bot}> ping {number}")
            self.stopping.wait(SEND_INTERVAL)

    def __enter__(self) -> Sender:
        self.thread.start()
        time.sleep(1)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(2)
        self.stopping.set()
        self.thread.join(10)

    def downtime(self, old_prefix: str, new_prefix: str) -> float:
        answers = self.client.bot_messages()[self.start_index:]
        old = [m["received_at"] for m in answers if m["content"].startswith(old_prefix)]
        new = [m["received_at"] for m in answers if m["content"].startswith(new_prefix)]
        if not old or not new:
            raise SystemExit(f"cannot measure downtime: {len(old)} answers from the old code, {len(new)} from the new")
        return min(new) - max(a for a in old if a < min(new))


def fresh_machine(settings: Settings) -> machine.Machine:
    machine.down(settings.machine_name, settings.state_dir)
    shutil.rmtree(settings.stack_dir / "ssh-control", ignore_errors=True)
    booted = machine.up(settings.machine_name, ssh_port=settings.ssh_port, state_dir=settings.state_dir)
    stack.ensure_bot_code(settings)
    arn = stack.aws_client(settings, "secretsmanager").describe_secret(SecretId=settings.secret_name)["ARN"]
    stack.ensure_instance(settings, booted, arn)
    return booted


def one_run(settings: Settings, work: pathlib.Path, number: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    booted = fresh_machine(settings)
    a, b, c = (variant(work / f"run{number}", prefix) for prefix in ("a: ", "b: ", "c: "))
    figures["site_fresh_s"], figures["site_fresh_modules"], _ = playbook(settings, "site.yml")
    figures["site_again_s"], figures["site_again_modules"], run = playbook(settings, "site.yml")
    changed = sum(stats["changed"] for stats in json.loads(run.output[run.output.index("{"):])["stats"].values())
    if changed:
        raise SystemExit(f"the second site.yml changed {changed} things; the figures would not be of a no-op run")
    figures["deploy_change_s"], figures["deploy_change_modules"], _ = playbook(
        settings, "deploy_bot.yml", "-e", f"deploy_bot_source={a}")
    figures["deploy_same_s"], figures["deploy_same_modules"], _ = playbook(
        settings, "deploy_bot.yml", "-e", f"deploy_bot_source={a}")
    with Sender(settings) as sender:
        playbook(settings, "deploy_bot.yml", "-e", f"deploy_bot_source={b}")
    figures["deploy_downtime_s"] = sender.downtime("a: ", "b: ")
    with Sender(settings) as sender:
        started = time.monotonic()
        release = booted.run("readlink -f /opt/discord-bot/current").stdout.strip()
        subprocess.run(
            ["scp", "-q", "-i", booted.ssh_private_key, "-P", str(booted.ssh_port), "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", str(c),
             f"{booted.ssh_user}@{booted.ssh_host}:{release}/echo.py"], check=True, timeout=60)
        # A Type=notify unit's restart returns once the new process sent READY=1.
        booted.run("systemctl restart discord-bot.service", timeout=180)
        figures["baseline_s"] = time.monotonic() - started
    figures["baseline_downtime_s"] = sender.downtime("b: ", "c: ")
    # scp, then one ssh for the release path and one for the restart.
    figures["baseline_modules"] = {"host": 3, "controller": 0}
    return figures


ROWS = (
    ("site.yml, fresh machine", "site_fresh_s", "site_fresh_modules"),
    ("site.yml again (no change)", "site_again_s", "site_again_modules"),
    ("deploy_bot.yml, changed code", "deploy_change_s", "deploy_change_modules"),
    ("deploy_bot.yml, same code", "deploy_same_s", "deploy_same_modules"),
    ("bot downtime during deploy_bot.yml", "deploy_downtime_s", None),
    ("baseline: scp + systemctl restart", "baseline_s", "baseline_modules"),
    ("bot downtime during the baseline", "baseline_downtime_s", None),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=pathlib.Path, default=REPO / "build" / "benchmarks" / "sandbox_deploy.json")
    parser.add_argument("--state-dir", type=pathlib.Path, default=pathlib.Path("/var/lib/discord-bot-sandbox-bench"))
    parser.add_argument("--keep", action="store_true", help="leave the benchmark's sandbox running afterwards")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        parser.error("the benchmark boots systemd-nspawn machines; run it as root")
    os.environ.setdefault(machine.ROOTS_DIR_ENV, str(machine.DEFAULT_STATE_DIR / "roots"))
    settings = dataclasses.replace(
        Settings.resolve(args.state_dir, moto_port=BENCH_MOTO_PORT, emulator_port=BENCH_EMULATOR_PORT,
                         machine_name=BENCH_MACHINE, ssh_port=BENCH_SSH_PORT),
        # Discord's 5 answers per 5 s would turn the 50 ms sender's load into rate-limit waits, not downtime.
        emulator_message_rate_limit=10_000,
    )
    work = settings.stack_dir / "bench-variants"
    runs = []
    try:
        cli.up(settings)
        for number in range(1, args.runs + 1):
            print(f"run {number}/{args.runs} ...", flush=True)
            runs.append(one_run(settings, work, number))
    finally:
        if not args.keep:
            cli.down(settings)
    table: dict[str, Any] = {}
    print(f"\nMedian of {args.runs} run(s); modules = task results on the host (controller-only ones apart)\n")
    print(f"{'measurement':40} {'seconds':>8} {'min':>7} {'max':>7} {'host modules':>13} {'controller':>10}")
    for label, seconds_key, modules_key in ROWS:
        values = [run[seconds_key] for run in runs]
        row: dict[str, Any] = {"median_s": statistics.median(values), "min_s": min(values), "max_s": max(values),
                               "runs_s": values}
        modules = ""
        controller = ""
        if modules_key:
            row["host_modules"] = statistics.median(run[modules_key]["host"] for run in runs)
            row["controller_tasks"] = statistics.median(run[modules_key]["controller"] for run in runs)
            modules = f"{row['host_modules']:g}"
            controller = f"{row['controller_tasks']:g}"
        table[seconds_key] = {"label": label, **row}
        print(f"{label:40} {row['median_s']:8.2f} {row['min_s']:7.2f} {row['max_s']:7.2f} {modules:>13} "
              f"{controller:>10}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"runs": args.runs, "results": table, "raw": runs}, indent=2) + "\n")
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
