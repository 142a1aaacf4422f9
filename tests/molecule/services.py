"""Starts and stops the stand-ins a molecule scenario's test host talks to: moto (AWS) and the Discord emulator.

They run detached from molecule, since a scenario's steps (prepare, converge, idempotence, verify) are separate
ansible-playbook runs, and are recorded in DIR/services.json for those steps and for `stop`:

    python -m tests.molecule.services start DIR --moto-port PORT
    python -m tests.molecule.services stop DIR

Both listen on 127.0.0.1, which the test hosts share with this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = "services.json"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10


class ServiceError(RuntimeError):
    """A stand-in service did not start or stop as expected."""


def _spawn(argv: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A new session keeps the service alive after this command and molecule's step end.
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
        )
    finally:
        log.close()


def _wait(ready, process: subprocess.Popen[bytes], what: str, log_path: Path):
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"{what} exited with status {process.returncode}; see {log_path}")
        with contextlib.suppress(OSError, ValueError):
            result = ready()
            if result:
                return result
        time.sleep(0.2)
    raise ServiceError(f"{what} did not become ready within {START_TIMEOUT_SECONDS} s; see {log_path}")


def start(state_dir: Path, moto_port: int) -> dict[str, object]:
    """Start moto on moto_port and the emulator on a free port; return and record how to reach them."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (state_dir / STATE_FILE).exists():
        stop(state_dir)
    bin_dir = Path(sys.executable).parent
    token = secrets.token_urlsafe(32)
    env = {**os.environ, "DISCORD_EMULATOR_TOKEN": token}
    moto_url = f"http://127.0.0.1:{moto_port}"
    moto_log = state_dir / "moto.log"
    moto = _spawn([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], moto_log, env)
    pids = [moto.pid]
    try:
        _wait(lambda: urllib.request.urlopen(f"{moto_url}/moto-api/data.json", timeout=1).close() or True,  # noqa: S310
              moto, f"moto_server on port {moto_port}", moto_log)
        info_file = state_dir / "emulator.json"
        info_file.unlink(missing_ok=True)
        emulator_log = state_dir / "emulator.log"
        emulator = _spawn(
            [sys.executable, "-m", "tests.discord_emulator", "serve", "--host", "127.0.0.1", "--port", "0",
             "--info-file", str(info_file)],
            emulator_log, env,
        )
        pids.append(emulator.pid)
        emulator_info = _wait(lambda: json.loads(info_file.read_text()), emulator, "the Discord emulator",
                              emulator_log)
    except ServiceError:
        _terminate(pids)
        raise
    state = {"moto_url": moto_url, "emulator": emulator_info, "token": token, "pids": pids}
    state_path = state_dir / STATE_FILE
    state_path.touch(mode=0o600)
    state_path.write_text(json.dumps(state, indent=2) + "\n")
    return state


def _terminate(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    # Reap our own children; for processes started by an earlier command, probe with signal 0.
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z")


def stop(state_dir: Path) -> None:
    """Stop the services recorded in state_dir, if any; a missing record is not an error."""
    state_path = state_dir / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        return
    _terminate([int(pid) for pid in state.get("pids", [])])
    state_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.molecule.services", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    start_command = commands.add_parser("start", help="start moto and the emulator, print their JSON record")
    start_command.add_argument("state_dir", type=Path)
    start_command.add_argument("--moto-port", type=int, required=True)
    stop_command = commands.add_parser("stop", help="stop the services recorded in STATE_DIR")
    stop_command.add_argument("state_dir", type=Path)
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "start":
            state = start(arguments.state_dir, arguments.moto_port)
            print(json.dumps({key: value for key, value in state.items() if key != "token"}))
        else:
            stop(arguments.state_dir)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
