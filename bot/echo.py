"""Echo bot: answers every guild message that mentions it with the same text, minus the mention.

Privileged intent: Message Content. Enable it in the Discord Developer Portal under
Applications > (your application) > Bot > Privileged Gateway Intents; without it the bot cannot read
what to echo and Discord refuses the connection (exit status 84).

Configuration comes from the environment only:

    DISCORD_TOKEN_SECRET_ID  name or ARN of the AWS Secrets Manager secret holding the token, either as
                             a plain string or as JSON {"token": "..."} (production)
    AWS_REGION               region of that secret (AWS_DEFAULT_REGION is accepted too)
    DISCORD_TOKEN            the token itself; used instead of Secrets Manager when set (local runs)
    DISCORD_API_BASE         REST base of a Discord-compatible server, e.g. http://127.0.0.1:8790/api/v10
    DISCORD_GATEWAY_URL      its gateway, e.g. ws://127.0.0.1:8790/ (set both or neither; unset means
                             discord.com, since discord.py connects straight to its default gateway)
    LOG_LEVEL                DEBUG, INFO (default), WARNING or ERROR

Under systemd (Type=notify) the bot reports READY=1 once connected, STATUS= lines, WATCHDOG=1 from
the event loop and STOPPING=1 on shutdown. Every start-up failure is one sentence and an exit status:

    78 configuration missing or invalid      81 the secret is empty
    79 the secret does not exist             82 AWS could not be reached, or failed otherwise
    80 access to the secret was denied       83 Discord rejected the token (do not restart)
                                             84 a privileged intent is not enabled (do not restart)

`python3 echo.py --check` stops after reading the token, with the same statuses: a deploy runs it before
it stops the running bot.

This file is deployed on its own: it imports only the standard library and bot/requirements.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import unicodedata
from dataclasses import dataclass
from urllib.parse import urlsplit

import discord
import yarl

log = logging.getLogger("echo")

EXIT_CONFIG = 78
EXIT_SECRET_NOT_FOUND = 79
EXIT_SECRET_ACCESS_DENIED = 80
EXIT_SECRET_EMPTY = 81
EXIT_AWS_ERROR = 82
EXIT_TOKEN_REJECTED = 83
EXIT_INTENTS_DISALLOWED = 84

# Discord refuses messages longer than this from a bot, while a Nitro user may send twice as much.
MESSAGE_LIMIT = 2000
# Messages kept in discord.py's cache. The bot never looks back, so a small cache is enough.
MESSAGE_CACHE_SIZE = 50
# discord.py declares itself ready this long after the last guild arrived. Its default of 2 s is
# dead time on every restart; a bot in a few guilds gets them all in one burst right after READY.
GUILD_READY_TIMEOUT_SECONDS = 0.5
# A saved gateway session older than this is not worth a RESUME attempt: Discord forgets sessions within
# minutes of their connection closing.
SESSION_HANDOFF_MAX_AGE_SECONDS = 300
# The token fetch runs in a child process, which boto3's retries and timeouts keep well below this.
TOKEN_FETCH_TIMEOUT_SECONDS = 60
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# Code points that belong to the character before them: splitting in front of one would cut a
# character (an accent, a skin tone, one half of a flag, or the joined parts of an emoji) in two.
_ZERO_WIDTH_JOINER = "\u200d"
_VARIATION_SELECTORS = range(0xFE00, 0xFE10)
_EMOJI_MODIFIERS = range(0x1F3FB, 0x1F400)
_TAG_CHARACTERS = range(0xE0020, 0xE0080)


class StartupError(Exception):
    """A failure at start that ends the process with one sentence and a distinct exit status."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(frozen=True)
class Settings:
    """Everything the bot reads from its environment, validated."""

    token_secret_id: str | None
    region: str | None
    api_base: str | None
    gateway_url: str | None
    log_level: str


def load_settings(environ: dict[str, str]) -> Settings:
    """Read and validate the settings; raise StartupError naming what to fix."""
    log_level = environ.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in LOG_LEVELS:
        raise StartupError(f"LOG_LEVEL is {log_level!r}; set it to one of {', '.join(LOG_LEVELS)}.", EXIT_CONFIG)

    api_base = environ.get("DISCORD_API_BASE", "").strip() or None
    gateway_url = environ.get("DISCORD_GATEWAY_URL", "").strip() or None
    if (api_base is None) != (gateway_url is None):
        raise StartupError(
            "DISCORD_API_BASE and DISCORD_GATEWAY_URL must be set together (or both left unset for discord.com).",
            EXIT_CONFIG,
        )
    if api_base is not None and urlsplit(api_base).scheme not in ("http", "https"):
        raise StartupError(f"DISCORD_API_BASE must be an http:// or https:// URL, not {api_base!r}.", EXIT_CONFIG)
    if gateway_url is not None and urlsplit(gateway_url).scheme not in ("ws", "wss"):
        raise StartupError(f"DISCORD_GATEWAY_URL must be a ws:// or wss:// URL, not {gateway_url!r}.", EXIT_CONFIG)

    if "DISCORD_TOKEN" in environ:
        if not environ["DISCORD_TOKEN"].strip():
            raise StartupError("DISCORD_TOKEN is set but empty; unset it or give the bot token.", EXIT_CONFIG)
        return Settings(None, None, api_base, gateway_url, log_level)

    secret_id = environ.get("DISCORD_TOKEN_SECRET_ID", "").strip()
    region = (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "").strip()
    if not secret_id:
        raise StartupError(
            "No token configured: set DISCORD_TOKEN_SECRET_ID (and AWS_REGION) to read it from Secrets Manager, "
            "or DISCORD_TOKEN for a local run.",
            EXIT_CONFIG,
        )
    if not region:
        raise StartupError(f"AWS_REGION is not set; give the region of the secret {secret_id!r}.", EXIT_CONFIG)
    return Settings(secret_id, region, api_base, gateway_url, log_level)


def configure_logging(level: str) -> None:
    """Send every log line, the library's included, through one handler to stdout."""
    # Under systemd the journal stamps each line itself; a second timestamp would only be noise.
    fmt = "%(levelname)s %(name)s: %(message)s"
    if "JOURNAL_STREAM" not in os.environ:
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(stream=sys.stdout, level=level, format=fmt, force=True)
    # discord.py logs every gateway payload, message contents included, at DEBUG only.
    logging.getLogger("discord").setLevel(level if level == "DEBUG" else max(logging.INFO, logging.getLevelName(level)))


def parse_secret(secret_string: str | None) -> str:
    """Return the token from a secret that is a plain string or JSON with a "token" key."""
    value = (secret_string or "").strip()
    if value.startswith("{"):
        try:
            document = json.loads(value)
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            token = document.get("token")
            value = token.strip() if isinstance(token, str) else ""
            if not value:
                raise StartupError('The secret holds JSON without a non-empty "token" key.', EXIT_SECRET_EMPTY)
    if not value:
        raise StartupError("The secret is empty; put the bot token in it.", EXIT_SECRET_EMPTY)
    return value


def fetch_token_from_secrets_manager(secret_id: str, region: str) -> str:
    """Read the token with boto3. Runs in a short-lived child so boto3 never stays in the bot's memory."""
    import boto3  # noqa: PLC0415 - imported here on purpose, see the docstring
    from botocore.config import Config  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError  # noqa: PLC0415

    config = Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 3, "mode": "standard"})
    try:
        client = boto3.client("secretsmanager", region_name=region, config=config)
        response = client.get_secret_value(SecretId=secret_id)
    except NoCredentialsError:
        raise StartupError(
            "No AWS credentials found; attach the instance profile or configure credentials for the bot.",
            EXIT_CONFIG,
        ) from None
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise StartupError(f"The secret {secret_id!r} does not exist in {region}.", EXIT_SECRET_NOT_FOUND) from None
        http_status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        # 403 covers denials whose body botocore cannot parse into an error code.
        if code in ("AccessDeniedException", "UnrecognizedClientException", "DecryptionFailure") or http_status == 403:
            raise StartupError(
                f"Access to the secret {secret_id!r} was denied ({code}); grant secretsmanager:GetSecretValue "
                "on it to the bot's role.",
                EXIT_SECRET_ACCESS_DENIED,
            ) from None
        message = f"Secrets Manager refused to return {secret_id!r}: {code or error}."
        raise StartupError(message, EXIT_AWS_ERROR) from None
    except BotoCoreError as error:
        raise StartupError(f"Secrets Manager could not be reached: {error}.", EXIT_AWS_ERROR) from None
    return parse_secret(response.get("SecretString"))


def read_token_in_child(settings: Settings) -> str:
    """Run this file with --print-token and read the token from its stdout pipe (never from disk)."""
    try:
        result = subprocess.run(  # noqa: S603 - our own interpreter and file, no shell
            [sys.executable, os.path.abspath(__file__), "--print-token"],
            capture_output=True,
            text=True,
            timeout=TOKEN_FETCH_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StartupError(
            f"Secrets Manager did not answer within {TOKEN_FETCH_TIMEOUT_SECONDS} seconds.", EXIT_AWS_ERROR
        ) from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        message = lines[-1] if lines else f"Reading the token failed with status {result.returncode}."
        status = result.returncode if EXIT_CONFIG <= result.returncode <= EXIT_AWS_ERROR else EXIT_AWS_ERROR
        raise StartupError(message, status)
    return result.stdout


def print_token(environ: dict[str, str]) -> int:
    """Child side of read_token_in_child: write the token to stdout, or one sentence to stderr."""
    try:
        settings = load_settings(environ)
        if settings.token_secret_id is None or settings.region is None:
            raise StartupError("DISCORD_TOKEN_SECRET_ID and AWS_REGION are needed to read the token.", EXIT_CONFIG)
        sys.stdout.write(fetch_token_from_secrets_manager(settings.token_secret_id, settings.region))
    except StartupError as error:
        sys.stderr.write(f"{error}\n")
        return error.exit_status
    return 0


def mention_pattern(user_id: int) -> re.Pattern[str]:
    """Match the user's mention in both forms, <@ID> and the legacy nickname form <@!ID>."""
    return re.compile(rf"<@!?{user_id}>")


def strip_mention(content: str, pattern: re.Pattern[str]) -> str:
    """Remove every mention matched by pattern, and the outer whitespace Discord would drop anyway."""
    # A mention between two words leaves two spaces behind; keep one so the words stay apart.
    text = re.sub(rf"(?<=\S) {pattern.pattern} (?=\S)", " ", content)
    return pattern.sub("", text).strip()


def _joins_previous(character: str) -> bool:
    """True when a split in front of this code point would cut a character in two."""
    point = ord(character)
    return (
        unicodedata.combining(character) != 0
        or character == _ZERO_WIDTH_JOINER
        or point in _VARIATION_SELECTORS
        or point in _EMOJI_MODIFIERS
        or point in _TAG_CHARACTERS
    )


def _safe_cut(text: str, limit: int) -> int:
    """The largest index <= limit that does not split a character; falls back to limit itself."""
    cut = limit
    while cut > 0 and (_joins_previous(text[cut]) or text[cut - 1] == _ZERO_WIDTH_JOINER):
        cut -= 1
    return cut or limit


def _utf16_length(text: str) -> int:
    # Discord counts length in UTF-16 code units, so an emoji outside the BMP weighs two.
    return len(text.encode("utf-16-le")) // 2


def _fit(text: str, limit: int) -> int:
    """The number of leading code points of text whose UTF-16 length fits in limit."""
    if _utf16_length(text) <= limit:
        return len(text)
    used = 0
    for index, character in enumerate(text):
        used += 2 if ord(character) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split text into parts of at most limit characters, at a line break, else a space, else a character."""
    parts: list[str] = []
    rest = text
    while rest:
        fit = _fit(rest, limit)
        if fit == len(rest):
            parts.append(rest)
            break
        window = rest[: fit + 1]  # the character just past the limit may itself be the break
        cut = window.rfind("\n")
        if cut <= 0:
            cut = max(window.rfind(" "), window.rfind("\t"))
        if cut <= 0:
            part, rest = rest[: _safe_cut(rest, fit)], rest[_safe_cut(rest, fit) :]
        else:
            part, rest = rest[:cut], rest[cut + 1 :]
        # Discord drops a message's outer whitespace; a part that is only whitespace would be refused.
        if part.strip():
            parts.append(part)
    return parts


class SystemdNotifier:
    """The sd_notify datagram protocol: a no-op unless systemd passed NOTIFY_SOCKET.

    The protocol is one datagram to a Unix socket; the Python packages for it are either unmaintained
    or need libsystemd's headers to build, so a dozen lines here are the smaller dependency.
    """

    def __init__(self, environ: dict[str, str]) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        if self._address:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        watchdog_usec = environ.get("WATCHDOG_USEC", "")
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        for_us = not watchdog_pid or watchdog_pid == str(os.getpid())
        self.watchdog_interval = int(watchdog_usec) / 2_000_000 if watchdog_usec.isdigit() and for_us else None

    def notify(self, *lines: str) -> None:
        if self._socket is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as error:
            log.warning("Could not notify systemd: %s", error)

    async def run_watchdog(self) -> None:
        """Ping the watchdog from the event loop, so a loop that blocks stops the pings and gets restarted."""
        if self.watchdog_interval is None:
            return
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)


@dataclass(frozen=True)
class GatewaySession:
    """What a new process needs to RESUME the gateway session of the one before it."""

    session_id: str
    sequence: int
    resume_gateway_url: str
    user_id: int
    saved_at: float


class SessionHandoff:
    """A gateway session passed from a stopping bot to the next one through systemd's StateDirectory.

    A restart (a deploy, a rollback) then RESUMEs instead of identifying anew: Discord replays every event
    the stopped process missed, so a mention sent while the bot restarted is still answered, and restarts
    do not use up the daily IDENTIFY allowance. The file holds no secret (RESUME also needs the token).
    Without STATE_DIRECTORY (a run outside systemd) nothing is saved.
    """

    FILE_NAME = "gateway-session.json"

    def __init__(self, environ: dict[str, str]) -> None:
        directory = environ.get("STATE_DIRECTORY", "").split(":")[0]
        self.path = os.path.join(directory, self.FILE_NAME) if directory else None

    def load(self, now: float) -> GatewaySession | None:
        """The saved session if there is a fresh one; it stays on disk until a RESUME has succeeded."""
        if self.path is None:
            return None
        try:
            with open(self.path, encoding="utf-8") as file:
                document = json.load(file)
            session = GatewaySession(
                session_id=str(document["session_id"]),
                sequence=int(document["sequence"]),
                resume_gateway_url=str(document["resume_gateway_url"]),
                user_id=int(document["user_id"]),
                saved_at=float(document["saved_at"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("Ignoring the saved gateway session %s: %s", self.path, error)
            self.discard()
            return None
        if not 0 <= now - session.saved_at <= SESSION_HANDOFF_MAX_AGE_SECONDS:
            log.info("The saved gateway session is too old to resume; identifying anew")
            self.discard()
            return None
        return session

    def save(self, session: GatewaySession) -> None:
        if self.path is None:
            return
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(session.__dict__, file)
            os.replace(temporary, self.path)
        except OSError as error:
            log.warning("Could not save the gateway session for the next start: %s", error)

    def discard(self) -> None:
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class ResumingWebSocket(discord.gateway.DiscordWebSocket):
    """discord.py's gateway connection, whose very first connect may RESUME a handed-off session.

    discord.py only resumes sessions it opened itself; its client has no setting for a session from
    elsewhere, so the first connect's parameters are swapped here. If Discord no longer knows the
    session, it answers INVALID_SESSION and discord.py identifies as usual.
    """

    handed_off: GatewaySession | None = None

    @classmethod
    async def from_client(
        cls, client, *, initial=False, gateway=None, session=None, sequence=None, resume=False, **kwargs
    ):  # type: ignore[override]
        handed_off, ResumingWebSocket.handed_off = ResumingWebSocket.handed_off, None
        if initial and handed_off is not None and client.user is not None and client.user.id == handed_off.user_id:
            log.info("Resuming the gateway session of the previous process")
            gateway = yarl.URL(handed_off.resume_gateway_url)
            session, sequence, resume = handed_off.session_id, handed_off.sequence, True
        return await super().from_client(
            client, initial=initial, gateway=gateway, session=session, sequence=sequence, resume=resume, **kwargs
        )


class EchoBot(discord.Client):
    """A client that repeats what a guild message addressed to it says."""

    def __init__(self, notifier: SystemdNotifier, handoff: SessionHandoff) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.guild_messages = True
        intents.message_content = True
        super().__init__(
            intents=intents,
            # Set once here so that no send can ping anyone, whatever the echoed text contains.
            allowed_mentions=discord.AllowedMentions.none(),
            member_cache_flags=discord.MemberCacheFlags.none(),
            chunk_guilds_at_startup=False,
            max_messages=MESSAGE_CACHE_SIZE,
            guild_ready_timeout=GUILD_READY_TIMEOUT_SECONDS,
        )
        self.notifier = notifier
        self.handoff = handoff
        self._mention: re.Pattern[str] | None = None
        self._watchdog: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        # Login has fetched the bot's own user by now; messages can arrive before on_ready.
        assert self.user is not None  # noqa: S101
        self._mention = mention_pattern(self.user.id)
        self._watchdog = asyncio.create_task(self.notifier.run_watchdog())

    async def on_ready(self) -> None:
        user = self.user
        assert user is not None  # noqa: S101 - discord.py sets it before READY is dispatched
        log.info("Logged on as %s#%s (%s)", user.name, user.discriminator, user.id)
        self._report_ready(f"Connected as {user.name} ({user.id})")

    async def on_resumed(self) -> None:
        user = self.user
        assert user is not None  # noqa: S101 - set at login
        log.info("Gateway session resumed as %s#%s (%s)", user.name, user.discriminator, user.id)
        # After a handed-off session, RESUMED is this process's first sign of being connected; READY=1 twice
        # is harmless to systemd.
        self._report_ready(f"Connected as {user.name} ({user.id}), session resumed")
        self.handoff.discard()

    def _report_ready(self, status: str) -> None:
        self.notifier.notify("READY=1", f"STATUS={status}")

    async def on_disconnect(self) -> None:
        self.notifier.notify("STATUS=Disconnected from the gateway, reconnecting")

    async def on_message(self, message: discord.Message) -> None:
        # Bots (this one included) and webhooks are never answered, so two bots can never loop.
        if message.author.bot or message.webhook_id is not None or message.author == self.user:
            return
        # Joins, pins, boosts and the like are written by Discord, not by a person.
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        # A resumed session has no guild cache, so a guild message may come with a partial channel instead.
        in_guild = message.guild is not None or getattr(message.channel, "guild_id", None) is not None
        if not in_guild or self._mention is None or not self._mention.search(message.content):
            return
        text = strip_mention(message.content, self._mention)
        if not text:
            log.debug("Message %s mentions the bot with nothing else; not answering", message.id)
            return
        parts = split_message(text)
        for part in parts:
            await message.channel.send(part)
        log.info(
            "Echoed message %s in channel %s: %d characters in %d part(s)",
            message.id,
            message.channel.id,
            len(text),
            len(parts),
        )

    async def close(self) -> None:
        self.notifier.notify("STOPPING=1", "STATUS=Shutting down")
        if self._watchdog is not None:
            self._watchdog.cancel()
        ws = self.ws
        await super().close()
        if ws is not None and ws.session_id and ws.sequence is not None and self.user is not None:
            self.handoff.save(GatewaySession(ws.session_id, ws.sequence, str(ws.gateway), self.user.id, time.time()))


def point_at_server(settings: Settings) -> None:
    """Aim discord.py at a Discord-compatible server instead of discord.com."""
    if settings.api_base is not None and settings.gateway_url is not None:
        discord.http.Route.BASE = settings.api_base.rstrip("/")
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)
        log.info("Using the Discord-compatible server at %s", settings.api_base)


async def run_bot(token: str, notifier: SystemdNotifier, handoff: SessionHandoff) -> int:
    """Connect and answer until SIGTERM or SIGINT; return the exit status."""
    ResumingWebSocket.handed_off = handoff.load(time.time())
    discord.client.DiscordWebSocket = ResumingWebSocket
    bot = EchoBot(notifier, handoff)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(bot.close()))
    try:
        async with bot:
            await bot.start(token, reconnect=True)
    except discord.LoginFailure:
        log.error("Discord rejected the bot token; put a valid token in the secret (the bot will not retry).")
        return EXIT_TOKEN_REJECTED
    except discord.PrivilegedIntentsRequired:
        log.error(
            "Discord refused the Message Content intent; enable it in the Developer Portal under Applications > "
            "(your application) > Bot > Privileged Gateway Intents, then start the bot again."
        )
        return EXIT_INTENTS_DISALLOWED
    except discord.ConnectionClosed as error:
        if error.code == 4004:
            log.error("Discord rejected the bot token (gateway close 4004); put a valid token in the secret.")
            return EXIT_TOKEN_REJECTED
        raise
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Discord echo bot; configured by environment variables.")
    parser.add_argument("--print-token", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the configuration and that the token can be read, then exit without connecting to Discord",
    )
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.print_token:
        return print_token(environ)

    configure_logging("INFO")
    notifier = SystemdNotifier(environ)
    try:
        settings = load_settings(environ)
        configure_logging(settings.log_level)
        # Child processes must not inherit the token.
        token = os.environ.pop("DISCORD_TOKEN", "").strip() or read_token_in_child(settings)
    except StartupError as error:
        log.error("%s", error)  # one plain sentence, no traceback
        notifier.notify(f"STATUS={error}")
        return error.exit_status
    if args.check:
        log.info("Configuration is complete and the token could be read (%d characters)", len(token))
        return 0
    point_at_server(settings)
    notifier.notify("STATUS=Connecting to Discord")
    return asyncio.run(run_bot(token, notifier, SessionHandoff(environ)))


if __name__ == "__main__":
    sys.exit(main())
