"""Run the real bot/echo.py as a child process and watch what it logs and tells systemd."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
BOT_FILE = REPO / "bot" / "echo.py"

# Variables of the developer's shell that would change how the bot starts.
_BOT_VARIABLES = (
    "DISCORD_TOKEN",
    "DISCORD_TOKEN_SECRET_ID",
    "DISCORD_API_BASE",
    "DISCORD_GATEWAY_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "LOG_LEVEL",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
)


class NotifyListener:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET, recording every message."""

    def __init__(self) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="notify-")
        self.path = os.path.join(self._directory.name, "notify.sock")
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._socket.bind(self.path)
        self._socket.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._condition = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stopped:
            try:
                data = self._socket.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._condition:
                for line in data.decode().splitlines():
                    self.messages.append((time.monotonic(), line))
                self._condition.notify_all()

    def lines(self) -> list[str]:
        with self._condition:
            return [line for _, line in self.messages]

    def wait_for(self, line: str, timeout: float = 15.0, count: int = 1) -> None:
        """Wait until `line` (exactly, or as a prefix ending in '=') was received `count` times."""

        def matches() -> int:
            return sum(1 for _, got in self.messages if got == line or (line.endswith("=") and got.startswith(line)))

        with self._condition:
            if not self._condition.wait_for(lambda: matches() >= count, timeout):
                raise TimeoutError(f"no {line!r} x{count} on the notify socket within {timeout}s; got {self.lines()}")

    def close(self) -> None:
        self._stopped = True
        self._socket.close()
        self._thread.join(timeout=2)
        self._directory.cleanup()


class BotProcess:
    """bot/echo.py started with exactly the environment given, stdout and stderr captured to a file."""

    def __init__(
        self, env: dict[str, str], *, notify: bool = True, python: str = sys.executable, args: tuple[str, ...] = ()
    ) -> None:
        self.notify = NotifyListener() if notify else None
        self._log_file = tempfile.NamedTemporaryFile(prefix="echo-bot-", suffix=".log", delete=False)  # noqa: SIM115
        self.log_path = pathlib.Path(self._log_file.name)
        child_env = {key: value for key, value in os.environ.items() if key not in _BOT_VARIABLES}
        child_env.update(env)
        if self.notify is not None:
            child_env["NOTIFY_SOCKET"] = self.notify.path
        self.process = subprocess.Popen(
            [python, str(BOT_FILE), *args], env=child_env, stdout=self._log_file, stderr=subprocess.STDOUT
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait for a regular expression to appear in the bot's output."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output())
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        found = re.search(pattern, self.output())
        if found:
            return found
        raise TimeoutError(f"{pattern!r} not in the bot's output (exit {self.process.poll()}):\n{self.output()}")

    def wait_ready(self, timeout: float = 20.0) -> None:
        if self.notify is None:
            self.wait_for_output(r"Logged on as ", timeout)
        else:
            try:
                self.notify.wait_for("READY=1", timeout)
            except TimeoutError as error:
                raise TimeoutError(f"{error}\nbot output:\n{self.output()}") from None

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"the bot did not exit within {timeout}s:\n{self.output()}") from None

    def terminate(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.notify is not None:
            self.notify.close()
        self._log_file.close()
        self.log_path.unlink(missing_ok=True)
