"""End-to-end tests: the real bot/echo.py, the real discord.py, the Discord emulator and moto's server."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import EMULATOR_TOKEN

# Written out rather than imported from bot/echo.py: the unit's RestartPreventExitStatus=83 84 and operators'
# alerts depend on these numbers, so a change to them must fail here.
EXIT_CONFIG = 78
EXIT_SECRET_NOT_FOUND = 79
EXIT_SECRET_ACCESS_DENIED = 80
EXIT_SECRET_EMPTY = 81
EXIT_AWS_ERROR = 82
EXIT_TOKEN_REJECTED = 83
EXIT_INTENTS_DISALLOWED = 84
NO_PINGS = {"parse": []}


def assert_only_answer_is_control(emulator, before: int) -> None:
    """Post a control mention and check it is the only thing answered since `before` messages."""
    emulator.post_message(f"<@{emulator.bot_user_id}> control")
    answers = emulator.wait_for_bot_messages(1, after=before)
    time.sleep(0.2)  # a wrongly answered message would have been sent before the control's answer
    contents = [message["content"] for message in emulator.bot_messages()[before:]]
    assert contents == ["control"], contents
    assert answers[0]["content"] == "control"


def test_echoes_a_mention_as_a_plain_message_without_pings(ready_bot, emulator):
    """The text after the mention comes back exactly, to the same channel, not as a reply, pinging nobody."""
    text = "hi <@42> **bold** `code` 🎉 grüße <@&7> @everyone\n```py\nx = 1\n```"
    emulator.post_message(f"<@{emulator.bot_user_id}> {text}")
    [sent] = emulator.wait_for_bot_messages(1)
    assert sent["content"] == text
    assert sent["channel_id"] == emulator.channel_id
    assert sent["message_reference"] is None
    assert sent["allowed_mentions"] == NO_PINGS


def test_echoes_the_legacy_nickname_mention(ready_bot, emulator):
    """<@!ID>, the form older clients send, triggers the echo as well."""
    emulator.post_message(f"<@!{emulator.bot_user_id}> legacy form")
    [sent] = emulator.wait_for_bot_messages(1)
    assert sent["content"] == "legacy form"


@pytest.mark.parametrize("content", ["@everyone hello", "@here hello", "<@&{role}> hello", "no mention at all"])
def test_ignores_everyone_here_and_role_mentions(ready_bot, emulator, content):
    """@everyone, @here and a role mention do not address the bot, even though discord.py's mentioned_in says so."""
    emulator.post_message(content.format(role=emulator.role_id), mention_everyone=content.startswith("@"))
    assert_only_answer_is_control(emulator, 0)


def test_ignores_bots_webhooks_and_system_messages(ready_bot, emulator):
    """Messages from bots, from the bot itself, from webhooks and from Discord itself are never answered."""
    mention = f"<@{emulator.bot_user_id}>"
    emulator.post_message(f"{mention} from a bot", author_bot=True, author_id="555555555555555555")
    emulator.post_message(f"{mention} from myself", author_bot=True, author_id=emulator.bot_user_id)
    emulator.post_message(f"{mention} from a webhook", webhook_id="666666666666666666")
    emulator.post_message(f"{mention} joined", message_type=7)
    assert_only_answer_is_control(emulator, 0)


def test_a_bare_mention_gets_no_reply(ready_bot, emulator):
    """A mention with nothing else to echo is not answered."""
    emulator.post_message(f"<@{emulator.bot_user_id}>   ")
    assert_only_answer_is_control(emulator, 0)


def test_a_4000_character_message_is_split_into_messages_within_the_limit(ready_bot, emulator):
    """A Nitro-length message comes back whole, in parts of at most 2000 characters cut at word boundaries."""
    mention = f"<@{emulator.bot_user_id}> "
    text = " ".join(f"w{n:04d}" for n in range(800))[: 4000 - len(mention)].rstrip()
    emulator.post_message(mention + text)
    emulator.wait_for_bot_messages(2)
    deadline = time.monotonic() + 10
    while " ".join(part["content"] for part in emulator.bot_messages()) != text and time.monotonic() < deadline:
        time.sleep(0.05)
    parts = emulator.bot_messages()
    assert " ".join(part["content"] for part in parts) == text
    assert all(len(part["content"]) <= 2000 for part in parts)
    assert all(part["allowed_mentions"] == NO_PINGS for part in parts)


def test_asks_only_for_the_intents_it_needs_over_zlib_stream(ready_bot, emulator):
    """Guilds, guild messages and message content only; no member chunking; zlib-stream, not zstd."""
    guilds, guild_messages, message_content = 1 << 0, 1 << 9, 1 << 15
    emulator.post_message(f"<@{emulator.bot_user_id}> ping")
    emulator.wait_for_bot_messages(1)
    state = emulator.state()
    assert state["intents"] == guilds | guild_messages | message_content
    assert state["compression"] == "zlib-stream"
    assert state["member_requests"] == 0


def test_logs_logged_on_as_and_never_message_contents(ready_bot, emulator):
    """The connect line names the bot; an echo is logged with ids and length, not with its text."""
    emulator.post_message(f"<@{emulator.bot_user_id}> secret-ish words")
    emulator.wait_for_bot_messages(1)
    ready_bot.wait_for_output(r"Echoed message \d+")
    output = ready_bot.output()
    assert re.search(rf"Logged on as \S+#\d+ \({emulator.bot_user_id}\)", output), output
    assert "secret-ish words" not in output
    assert EMULATOR_TOKEN not in output


def test_sigterm_closes_cleanly_and_notifies_systemd(start_bot, emulator):
    """READY=1, STATUS= and watchdog pings while running; STOPPING=1 and exit 0 within seconds of SIGTERM."""
    bot = start_bot({"WATCHDOG_USEC": "200000"})
    bot.wait_ready()
    bot.notify.wait_for("WATCHDOG=1", count=3, timeout=5)
    assert any(line.startswith("STATUS=Connected as ") for line in bot.notify.lines())
    started = time.monotonic()
    assert bot.terminate(timeout=10) == 0
    assert time.monotonic() - started < 5
    bot.notify.wait_for("STOPPING=1", timeout=1)
    # A close frame, not a dropped connection (1006). Its code is 4000 rather than 1000 because aiohttp
    # finishes a close that interrupts a pending receive with discord.py's default close code.
    state = emulator.state()
    assert state["last_close_by"] == "client"
    assert state["last_close_code"] in (1000, 4000)


def test_survives_a_dropped_connection_by_resuming(ready_bot, emulator):
    """A gateway connection lost without a close frame is resumed, not re-identified, and echoes go on."""
    emulator.drop_connection()
    deadline = time.monotonic() + 20
    while emulator.state()["resume_count"] < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    state = emulator.state()
    assert (state["resume_count"], state["identify_count"]) == (1, 1)
    emulator.post_message(f"<@{emulator.bot_user_id}> after resume")
    assert emulator.wait_for_bot_messages(1)[0]["content"] == "after resume"
    assert ready_bot.process.poll() is None


@pytest.mark.parametrize("fault", ["reconnect", "invalid_session", "close_4000"])
def test_survives_gateway_requests_to_reconnect(ready_bot, emulator, fault):
    """RECONNECT, a non-resumable INVALID_SESSION and a 4000 close are survived without exiting."""
    before = emulator.state()
    if fault == "reconnect":
        emulator.send_reconnect()
    elif fault == "invalid_session":
        emulator.send_invalid_session(resumable=False)
    else:
        emulator.close_gateway(4000, "unknown error")
    sessions_before = before["resume_count"] + before["identify_count"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = emulator.state()
        if state["connected"] and state["resume_count"] + state["identify_count"] > sessions_before:
            break
        time.sleep(0.1)
    emulator.post_message(f"<@{emulator.bot_user_id}> still here")
    assert emulator.wait_for_bot_messages(1, timeout=20)[0]["content"] == "still here"
    assert ready_bot.process.poll() is None
    if fault == "invalid_session":
        assert emulator.state()["identify_count"] == before["identify_count"] + 1


@pytest.mark.parametrize(("status", "count"), [(429, 1), (500, 2), (502, 1)])
def test_survives_rest_rate_limits_and_server_errors(ready_bot, emulator, status, count):
    """A 429 with retry-after and transient 5xx answers are retried; the echo arrives exactly once."""
    emulator.inject_rest_errors(status=status, count=count, retry_after=0.3, route_contains="/messages")
    emulator.post_message(f"<@{emulator.bot_user_id}> despite {status}")
    [sent] = emulator.wait_for_bot_messages(1, timeout=20)
    assert sent["content"] == f"despite {status}"
    time.sleep(0.5)
    assert len(emulator.bot_messages()) == 1
    assert ready_bot.process.poll() is None


def test_a_wrong_token_exits_with_the_do_not_restart_status(start_bot, emulator):
    """Discord refusing the token at login ends the bot with status 83 and one plain sentence."""
    bot = start_bot(token="not-the-token")
    assert bot.wait_exit() == EXIT_TOKEN_REJECTED
    assert "Discord rejected the bot token" in bot.output()
    assert "Traceback" not in bot.output()


def test_a_token_revoked_while_connected_exits_with_the_do_not_restart_status(ready_bot, emulator):
    """A gateway close 4004 (token reset in the portal) ends the bot with status 83 instead of a retry loop."""
    emulator.revoke_token()
    assert ready_bot.wait_exit() == EXIT_TOKEN_REJECTED
    assert "Discord rejected the bot token" in ready_bot.output()


def test_missing_message_content_intent_exits_with_the_fix_in_the_message(start_bot):
    """Close 4014 ends the bot with status 84 and tells the operator where to enable the intent."""
    from tests.discord_emulator import running_emulator

    with running_emulator(token=EMULATOR_TOKEN, refuse_message_content=True) as strict:
        bot = start_bot({"DISCORD_API_BASE": strict.api_base, "DISCORD_GATEWAY_URL": strict.gateway_url})
        assert bot.wait_exit() == EXIT_INTENTS_DISALLOWED
    assert "Developer Portal" in bot.output()
    assert "Privileged Gateway Intents" in bot.output()


def test_missing_configuration_exits_78(start_bot):
    """No token source configured at all is the configuration failure, before any connection."""
    bot = start_bot(token=None, notify=False)
    assert bot.wait_exit() == EXIT_CONFIG
    assert "No token configured" in bot.output()


def _secret_env(aws, secret_id: str) -> dict[str, str]:
    return {**aws.env(), "DISCORD_TOKEN_SECRET_ID": secret_id}


@pytest.mark.parametrize(
    "secret_string", [EMULATOR_TOKEN, f"  {EMULATOR_TOKEN}\n", json.dumps({"token": EMULATOR_TOKEN})]
)
def test_reads_the_token_from_secrets_manager(start_bot, emulator, aws, secret_string):
    """Plain-string and JSON secrets both work, whitespace stripped, and the token is in no output."""
    secrets = aws.client("secretsmanager")
    arn = secrets.create_secret(Name="discord-bot/token", SecretString=secret_string)["ARN"]
    bot = start_bot(_secret_env(aws, arn), token=None)
    bot.wait_ready()
    emulator.post_message(f"<@{emulator.bot_user_id}> from the vault")
    assert emulator.wait_for_bot_messages(1)[0]["content"] == "from the vault"
    assert EMULATOR_TOKEN not in bot.output()


def test_the_token_read_from_secrets_manager_is_not_in_the_bots_environment(start_bot, emulator, aws):
    """The secret's value reaches the bot's memory only: not its environment, not its output."""
    arn = aws.client("secretsmanager").create_secret(Name="t", SecretString=EMULATOR_TOKEN)["ARN"]
    bot = start_bot(_secret_env(aws, arn), token=None)
    bot.wait_ready()
    with open(f"/proc/{bot.pid}/environ", "rb") as environ:
        assert EMULATOR_TOKEN.encode() not in environ.read()
    assert EMULATOR_TOKEN not in bot.output()


def test_the_bot_does_not_keep_boto3_loaded(start_bot, emulator, aws):
    """The token is fetched in a child, so boto3 never sits in the long-lived process's memory."""
    arn = aws.client("secretsmanager").create_secret(Name="t", SecretString=EMULATOR_TOKEN)["ARN"]
    bot = start_bot(_secret_env(aws, arn), token=None)
    bot.wait_ready()
    with open(f"/proc/{bot.pid}/maps") as maps:
        mapped = maps.read()
    assert "botocore" not in mapped and "_cffi_backend" not in mapped
    with open(f"/proc/{bot.pid}/status") as status:
        rss_kib = int(next(line for line in status if line.startswith("VmRSS:")).split()[1])
    assert rss_kib < 80 * 1024


@pytest.mark.parametrize(
    ("prepare", "status", "fragment"),
    [
        ("missing", EXIT_SECRET_NOT_FOUND, "does not exist"),
        ("empty", EXIT_SECRET_EMPTY, "empty"),
        ("json_without_token", EXIT_SECRET_EMPTY, '"token"'),
        ("no_region", EXIT_CONFIG, "AWS_REGION"),
        ("unreachable", EXIT_AWS_ERROR, "could not be reached"),
    ],
)
def test_secret_failures_have_distinct_statuses(start_bot, aws, prepare, status, fragment):
    """Each way the secret can fail at start ends the bot with its own status and one sentence."""
    secrets = aws.client("secretsmanager")
    env = _secret_env(aws, "discord-bot/token")
    if prepare == "empty":
        secrets.create_secret(Name="discord-bot/token", SecretString=" ")
    elif prepare == "json_without_token":
        secrets.create_secret(Name="discord-bot/token", SecretString='{"tok": "x"}')
    elif prepare == "no_region":
        del env["AWS_REGION"]
    elif prepare == "unreachable":
        env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"
    bot = start_bot(env, token=None, notify=False)
    assert bot.wait_exit(timeout=40) == status
    assert fragment in bot.output()
    assert "Traceback" not in bot.output()


def test_access_denied_to_the_secret_exits_80(start_bot, aws):
    """Credentials whose IAM policy does not allow GetSecretValue get the access-denied status."""
    iam = aws.client("iam")
    aws.client("secretsmanager").create_secret(Name="discord-bot/token", SecretString=EMULATOR_TOKEN)
    iam.create_user(UserName="no-rights")
    key = iam.create_access_key(UserName="no-rights")["AccessKey"]
    env = _secret_env(aws, "discord-bot/token")
    env.update({"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
    aws.enforce_iam()
    try:
        bot = start_bot(env, token=None, notify=False)
        status = bot.wait_exit(timeout=40)
    finally:
        aws.relax_iam()
    assert status == EXIT_SECRET_ACCESS_DENIED, bot.output()
    assert "was denied" in bot.output()


def test_check_mode_reads_the_token_and_exits_without_connecting(start_bot, emulator, aws):
    """--check reads the secret, prints nothing of it, exits 0 and never opens a gateway connection."""
    arn = aws.client("secretsmanager").create_secret(Name="t", SecretString=EMULATOR_TOKEN)["ARN"]
    bot = start_bot(_secret_env(aws, arn), token=None, notify=False, args=("--check",))
    assert bot.wait_exit() == 0
    assert "the token could be read" in bot.output()
    assert EMULATOR_TOKEN not in bot.output()
    assert emulator.state()["connections"] == 0


def test_check_mode_fails_with_the_start_up_status(start_bot, emulator, aws):
    """--check ends with the same status as a real start would, here secret not found."""
    bot = start_bot(_secret_env(aws, "discord-bot/absent"), token=None, notify=False, args=("--check",))
    assert bot.wait_exit() == EXIT_SECRET_NOT_FOUND
    assert "does not exist" in bot.output()


def _saved_session(directory) -> dict:
    with open(directory / "gateway-session.json") as file:
        return json.load(file)


def test_a_restart_resumes_the_session_and_answers_what_was_sent_while_down(start_bot, emulator, tmp_path):
    """SIGTERM hands the gateway session to the next start, which RESUMEs it and gets the missed mention."""
    env = {"STATE_DIRECTORY": str(tmp_path)}
    first = start_bot(env)
    first.wait_ready()
    assert first.terminate() == 0
    saved = tmp_path / "gateway-session.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    assert EMULATOR_TOKEN not in saved.read_text()
    emulator.post_message(f"<@{emulator.bot_user_id}> sent while the bot restarted")
    second = start_bot(env)
    second.wait_ready()
    assert emulator.wait_for_bot_messages(1)[0]["content"] == "sent while the bot restarted"
    state = emulator.state()
    assert (state["identify_count"], state["resume_count"]) == (1, 1)
    assert not saved.exists()


@pytest.mark.parametrize(
    "tamper",
    ["stale", "unknown_session", "other_bot", "corrupt"],
)
def test_an_unusable_saved_session_falls_back_to_identify(start_bot, emulator, tmp_path, tamper):
    """A saved session that is too old, unknown to Discord, another bot's or unreadable leads to a normal IDENTIFY."""
    env = {"STATE_DIRECTORY": str(tmp_path)}
    first = start_bot(env)
    first.wait_ready()
    first.terminate()
    saved = tmp_path / "gateway-session.json"
    document = _saved_session(tmp_path)
    if tamper == "stale":
        document["saved_at"] -= 3600
    elif tamper == "unknown_session":
        document["session_id"] = "0" * 32
    elif tamper == "other_bot":
        document["user_id"] += 1
    saved.write_text("{not json" if tamper == "corrupt" else json.dumps(document))
    second = start_bot(env)
    second.wait_ready()
    emulator.post_message(f"<@{emulator.bot_user_id}> after {tamper}")
    assert emulator.wait_for_bot_messages(1)[0]["content"] == f"after {tamper}"
    state = emulator.state()
    assert state["identify_count"] == 2
    assert state["resume_count"] == 0
    assert second.process.poll() is None
