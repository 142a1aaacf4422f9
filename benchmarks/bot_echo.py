"""Benchmark of bot/echo.py against the Discord emulator on loopback.

Prints latency (p50/p99 of the round trip from posting a mention to the echo reaching the emulator),
sustained echoes per second, CPU time per echo and the bot's memory, and writes them as JSON.

    .venv/bin/python -m benchmarks.bot_echo [--messages 1000] [--json build/benchmarks/bot_echo.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.bot_process import BotProcess  # noqa: E402
from tests.discord_emulator import EmulatorClient  # noqa: E402

TOKEN = "benchmark.token.0123456789"  # noqa: S105 - the emulator's own token, not a secret
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_mib(pid: int, field: str) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextlib.contextmanager
def emulator_process():
    """The emulator in a process of its own, so that it competes with neither the bot nor this loop."""
    with tempfile.TemporaryDirectory(prefix="bot-echo-bench-") as directory:
        info_file = pathlib.Path(directory) / "emulator.json"
        # The per-channel message limit is Discord's (5 per 5 s); lifted so the figures measure the bot.
        command = [
            sys.executable,
            "-m",
            "tests.discord_emulator",
            "serve",
            "--port",
            "0",
            "--log-level",
            "WARNING",
            "--message-rate-limit",
            "1000000",
            "--info-file",
            str(info_file),
        ]
        env = {**os.environ, "DISCORD_EMULATOR_TOKEN": TOKEN}
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not info_file.exists() or not info_file.read_text().strip():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the Discord emulator did not start")
                time.sleep(0.05)
            info = json.loads(info_file.read_text())
            yield info, EmulatorClient(info["control_url"])
        finally:
            process.terminate()
            process.wait(10)


def run(messages: int, bot_python: str) -> dict[str, float]:
    with emulator_process() as (info, emu):
        bot = BotProcess(
            {"DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": info["api_base"], "DISCORD_GATEWAY_URL": info["gateway_url"]},
            python=bot_python,
        )
        try:
            bot.wait_ready()
            emu.wait_for_ready()
            time.sleep(1.0)
            rss_after_start = memory_mib(bot.pid, "VmRSS")
            mention = f"<@{info['bot_user_id']}>"

            latencies_ms = []
            for index in range(messages):
                posted_at = time.time()
                emu.post_message(f"{mention} latency {index}")
                [answer] = emu.wait_for_bot_messages(1, after=index, timeout=10)
                latencies_ms.append((answer["received_at"] - posted_at) * 1000)
            emu.reset_messages()

            cpu_before = cpu_seconds(bot.pid)
            started = time.time()
            for index in range(messages):
                emu.post_message(f"{mention} burst {index}")
            answers = emu.wait_for_bot_messages(messages, timeout=120)
            elapsed = answers[-1]["received_at"] - started
            cpu_used = cpu_seconds(bot.pid) - cpu_before

            return {
                "messages": messages,
                "latency_p50_ms": statistics.median(latencies_ms),
                "latency_p99_ms": percentile(latencies_ms, 0.99),
                "echoes_per_second": messages / elapsed,
                "cpu_ms_per_echo": cpu_used * 1000 / messages,
                "cpu_seconds_per_1000_echoes": cpu_used * 1000 / messages,
                "rss_after_start_mib": rss_after_start,
                "rss_after_run_mib": memory_mib(bot.pid, "VmRSS"),
                "rss_peak_mib": memory_mib(bot.pid, "VmHWM"),
            }
        finally:
            bot.terminate()
            bot.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per phase (default 1000)")
    parser.add_argument("--json", type=pathlib.Path, default=REPO / "build" / "benchmarks" / "bot_echo.json")
    parser.add_argument(
        "--bot-python", default=sys.executable, help="interpreter of the bot's environment (default: this one)"
    )
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    results = run(args.messages, args.bot_python)
    rows = [
        ("echo round trip p50", f"{results['latency_p50_ms']:.2f} ms"),
        ("echo round trip p99", f"{results['latency_p99_ms']:.2f} ms"),
        ("sustained echoes", f"{results['echoes_per_second']:.0f} /s"),
        ("CPU per 1000 echoes", f"{results['cpu_seconds_per_1000_echoes']:.2f} s"),
        ("RSS after start", f"{results['rss_after_start_mib']:.1f} MiB"),
        ("RSS after the run", f"{results['rss_after_run_mib']:.1f} MiB"),
        ("RSS peak", f"{results['rss_peak_mib']:.1f} MiB"),
    ]
    print(f"bot/echo.py against the Discord emulator, {args.messages} messages per phase")
    for name, value in rows:
        print(f"  {name:<22} {value:>12}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
