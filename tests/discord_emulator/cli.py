"""Command line: serve the emulator as a long-lived process, talk to the bot through it, inspect its state."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .client import EmulatorClient, EmulatorControlError
from .server import DISCORD_HEARTBEAT_INTERVAL_MS, DiscordEmulator, check_token

TOKEN_ENV = "DISCORD_EMULATOR_TOKEN"
CONTROL_URL_ENV = "DISCORD_EMULATOR_CONTROL_URL"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port: use 1-65535, or 0 for any free port")
    return value


def _positive_int(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: use at least {minimum}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("use a number of seconds greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.discord_emulator",
                                     description="A local stand-in for Discord's REST API and gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the emulator until SIGTERM or SIGINT")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--advertise-host",
                       help="address to put into URLs, when clients reach the emulator by another name or address")
    serve.add_argument("--port", type=_port, default=0, help="port to listen on; 0 picks a free one (default)")
    serve.add_argument("--token", help=f"the bot token to accept; prefer the {TOKEN_ENV} environment variable, "
                                       "which does not show up in ps")
    serve.add_argument("--heartbeat-interval-ms", type=_positive_int(50), default=DISCORD_HEARTBEAT_INTERVAL_MS,
                       help=f"heartbeat interval sent in HELLO (default {DISCORD_HEARTBEAT_INTERVAL_MS}, Discord's)")
    serve.add_argument("--refuse-message-content", action="store_true",
                       help="act as if the message-content intent were off in the developer portal (close 4014)")
    serve.add_argument("--bot-username", default="echo-bot", help="the bot user's name (default echo-bot)")
    serve.add_argument("--message-rate-limit", type=_positive_int(1), default=5,
                       help="messages the bot may post per channel per window (default 5, like Discord)")
    serve.add_argument("--message-rate-window", type=_positive_float, default=5.0,
                       help="length of that window in seconds (default 5)")
    serve.add_argument("--info-file", type=Path, help="also write the JSON info line to this file")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    for name, help_text in (("say", "post '<@bot> TEXT' as the guild member and print the bot's answer"),
                            ("chat", "an interactive loop of say"),
                            ("state", "print the emulator's state as JSON")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--control-url", default=os.environ.get(CONTROL_URL_ENV),
                             help=f"the control_url from serve's info line (or {CONTROL_URL_ENV})")
        if name in ("say", "chat"):
            command.add_argument("--timeout", type=_positive_float, default=10.0,
                                 help="seconds to wait for the answer (default 10)")
            command.add_argument("--json", action="store_true", help="print one JSON object per answer")
        if name == "say":
            command.add_argument("text", help="what to say to the bot")
    return parser


async def _serve(args: argparse.Namespace, token: str) -> int:
    emulator = DiscordEmulator(
        token, host=args.host, port=args.port, heartbeat_interval_ms=args.heartbeat_interval_ms,
        refuse_message_content=args.refuse_message_content, bot_username=args.bot_username,
        message_rate_limit=args.message_rate_limit, message_rate_window_s=args.message_rate_window,
        advertise_host=args.advertise_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    emulator.on_shutdown_request = stop.set
    try:
        await emulator.start()
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    line = json.dumps(emulator.info())
    if args.info_file is not None:
        temporary = args.info_file.with_name(args.info_file.name + ".tmp")
        temporary.write_text(line + "\n")
        temporary.replace(args.info_file)
    print(line, flush=True)
    await stop.wait()
    await emulator.stop()
    return 0


def _control_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> EmulatorClient:
    if not args.control_url:
        parser.error(f"--control-url is required (or set {CONTROL_URL_ENV})")
    try:
        return EmulatorClient(args.control_url)
    except ValueError as error:
        parser.error(str(error))
        raise  # parser.error exits; this keeps type checkers content


def say_once(client: EmulatorClient, text: str, timeout: float) -> dict[str, Any]:
    """Posts '<@bot> text' and waits for the bot's next message; returns the answer and the round trip."""
    already = len(client.bot_messages())
    started = time.time()
    client.post_message(f"<@{client.bot_user_id}> {text}")
    answer = client.wait_for_bot_messages(1, timeout=timeout, after=already)[0]
    return {"answer": answer["content"], "round_trip_ms": round((answer["received_at"] - started) * 1000, 1),
            "message": answer}


def _print_answer(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"answer": result["answer"], "round_trip_ms": result["round_trip_ms"]}), flush=True)
    else:
        print(result["answer"])
        print(f"round trip: {result['round_trip_ms']:.1f} ms", flush=True)


def _say(client: EmulatorClient, text: str, timeout: float, as_json: bool) -> bool:
    try:
        result = say_once(client, text, timeout)
    except TimeoutError as error:
        print(f"no answer from the bot within {timeout:g}s (is it running and connected?): {error}", file=sys.stderr)
        return False
    except EmulatorControlError as error:
        print(str(error), file=sys.stderr)
        return False
    _print_answer(result, as_json)
    return True


def _chat(client: EmulatorClient, timeout: float, as_json: bool) -> int:
    print("Type a message for the bot; an empty line or end of input quits.", file=sys.stderr)
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            return 0
        if not text.strip():
            return 0
        _say(client, text, timeout, as_json)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        token = args.token or os.environ.get(TOKEN_ENV)
        if not token:
            parser.error(f"a token is required: set {TOKEN_ENV} or pass --token")
        logging.basicConfig(level=args.log_level, stream=sys.stderr,
                            format="%(asctime)s discord-emulator %(levelname)s %(message)s")
        try:
            check_token(token)
        except ValueError as error:
            parser.error(str(error))
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(_serve(args, token))
        return 0
    client = _control_client(args, parser)
    try:
        if args.command == "state":
            print(json.dumps(client.state(), indent=2))
            return 0
        if args.command == "say":
            return 0 if _say(client, args.text, args.timeout, args.json) else 1
        return _chat(client, args.timeout, args.json)
    except EmulatorControlError as error:
        print(str(error), file=sys.stderr)
        return 1
