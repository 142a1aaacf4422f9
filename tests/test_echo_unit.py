"""Unit tests for the pure parts of bot/echo.py: mention stripping, splitting, settings, secrets."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

BOT_FILE = pathlib.Path(__file__).resolve().parent.parent / "bot" / "echo.py"


def _load_echo():
    spec = importlib.util.spec_from_file_location("echo", BOT_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules["echo"] = module
    spec.loader.exec_module(module)
    return module


echo = _load_echo()
BOT_ID = 112233445566778899
MENTION = echo.mention_pattern(BOT_ID)


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"<@{BOT_ID}> hello", "hello"),
        (f"<@!{BOT_ID}> hello", "hello"),
        (f"hello <@{BOT_ID}> world", "hello world"),
        (f"hello <@{BOT_ID}>", "hello"),
        (f"<@{BOT_ID}> <@{BOT_ID}> twice", "twice"),
        (f"<@{BOT_ID}> hi <@42> and <@&77> and <#99>", "hi <@42> and <@&77> and <#99>"),
        (f"<@{BOT_ID}> **bold** _it_ ~~s~~ ||spoiler|| :smile: 🎉", "**bold** _it_ ~~s~~ ||spoiler|| :smile: 🎉"),
        (f"<@{BOT_ID}>\n```py\n  x = 1\n\n```", "```py\n  x = 1\n\n```"),
        (f"<@{BOT_ID}> grüße, 你好, שלום", "grüße, 你好, שלום"),
        (f"<@{BOT_ID}>", ""),
        (f"  <@!{BOT_ID}>  ", ""),
    ],
)
def test_strip_mention_removes_only_the_bots_own_mention(content, expected):
    """The bot's mention goes, in both forms; everything else stays exactly as written."""
    assert echo.strip_mention(content, MENTION) == expected


def test_mention_pattern_does_not_match_other_ids_with_the_same_prefix():
    """<@ID> of another user whose id starts with the bot's id is not the bot's mention."""
    assert not MENTION.search(f"<@{BOT_ID}0>")
    assert not MENTION.search(f"<@&{BOT_ID}>")


def test_split_keeps_short_text_whole():
    """Text within the limit is one message, unchanged."""
    assert echo.split_message("a" * 2000) == ["a" * 2000]


def test_split_prefers_line_breaks():
    """A long text breaks at the last line break that fits, and loses no line."""
    lines = [f"line {n} " + "x" * 90 for n in range(40)]
    text = "\n".join(lines)
    parts = echo.split_message(text)
    assert len(parts) > 1
    assert all(utf16_length(part) <= 2000 for part in parts)
    assert "\n".join(parts) == text


def test_split_falls_back_to_spaces():
    """Without line breaks, the text breaks between words and keeps every word."""
    words = [f"word{n}" for n in range(1000)]
    text = " ".join(words)
    parts = echo.split_message(text)
    assert all(utf16_length(part) <= 2000 for part in parts)
    assert " ".join(parts).split(" ") == words


def test_split_hard_cuts_one_long_word_without_losing_characters():
    """A 4000-character word is cut into parts of at most 2000 whose concatenation is the word."""
    text = "é" * 4000
    parts = echo.split_message(text)
    assert [len(part) for part in parts] == [2000, 2000]
    assert "".join(parts) == text


def test_split_never_cuts_an_emoji_or_a_combined_character():
    """Emoji outside the BMP count double, and ZWJ sequences, skin tones and accents stay whole."""
    family = "👩\u200d👩\u200d👧"
    thumbs = "👍🏽"
    accented = "e\u0301"
    for unit in (family, thumbs, accented):
        text = unit * (4100 // utf16_length(unit))
        parts = echo.split_message(text)
        assert "".join(parts) == text
        for part in parts:
            assert utf16_length(part) <= 2000
            assert len(part) % len(unit) == 0, f"{unit!r} was cut"


def test_split_drops_no_visible_text_between_parts():
    """Splitting a 4000-character message yields parts that together hold every non-space character."""
    text = ("abc def\n" * 500)[:4000]
    parts = echo.split_message(text)
    assert len(parts) >= 2
    assert "".join(parts).replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


@pytest.mark.parametrize(
    ("secret", "token"),
    [
        ("abc.def.ghi", "abc.def.ghi"),
        ("  abc.def.ghi\n", "abc.def.ghi"),
        ('{"token": " abc.def.ghi "}', "abc.def.ghi"),
        ('{"token": "abc", "note": "x"}', "abc"),
    ],
)
def test_parse_secret_accepts_plain_and_json(secret, token):
    """A plain-string secret and a JSON secret with a token key both yield the stripped token."""
    assert echo.parse_secret(secret) == token


@pytest.mark.parametrize("secret", [None, "", "   \n", '{"token": ""}', '{"other": "x"}', '{"token": 5}'])
def test_parse_secret_refuses_empty(secret):
    """An empty secret, or JSON without a usable token, is the 'secret empty' failure."""
    with pytest.raises(echo.StartupError) as raised:
        echo.parse_secret(secret)
    assert raised.value.exit_status == echo.EXIT_SECRET_EMPTY


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({}, "No token configured"),
        ({"DISCORD_TOKEN_SECRET_ID": "s"}, "AWS_REGION"),
        ({"DISCORD_TOKEN": "  "}, "DISCORD_TOKEN is set but empty"),
        ({"DISCORD_TOKEN": "t", "DISCORD_API_BASE": "http://127.0.0.1:1/api/v10"}, "set together"),
        ({"DISCORD_TOKEN": "t", "DISCORD_GATEWAY_URL": "ws://127.0.0.1:1/"}, "set together"),
        (
            {"DISCORD_TOKEN": "t", "DISCORD_API_BASE": "ftp://x", "DISCORD_GATEWAY_URL": "ws://127.0.0.1:1/"},
            "http:// or https://",
        ),
        (
            {"DISCORD_TOKEN": "t", "DISCORD_API_BASE": "http://x", "DISCORD_GATEWAY_URL": "http://x"},
            "ws:// or wss://",
        ),
        ({"DISCORD_TOKEN": "t", "LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
    ],
)
def test_load_settings_names_what_to_fix(environ, fragment):
    """Each configuration mistake is refused with the configuration exit status and says what to set."""
    with pytest.raises(echo.StartupError) as raised:
        echo.load_settings(environ)
    assert raised.value.exit_status == echo.EXIT_CONFIG
    assert fragment in str(raised.value)


def test_load_settings_accepts_aws_default_region():
    """AWS_DEFAULT_REGION stands in for AWS_REGION, as in the AWS tools."""
    settings = echo.load_settings({"DISCORD_TOKEN_SECRET_ID": "s", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert (settings.token_secret_id, settings.region) == ("s", "eu-west-1")


def test_notifier_is_a_no_op_without_notify_socket():
    """Outside systemd nothing is sent and no watchdog runs."""
    notifier = echo.SystemdNotifier({})
    notifier.notify("READY=1")
    assert notifier.watchdog_interval is None


def test_notifier_watchdog_interval_is_half_the_timeout_and_only_for_this_process():
    """WATCHDOG_USEC is halved; a WATCHDOG_PID for another process disables the pings."""
    assert echo.SystemdNotifier({"WATCHDOG_USEC": "2000000"}).watchdog_interval == 1.0
    assert echo.SystemdNotifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
