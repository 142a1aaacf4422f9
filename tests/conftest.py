"""Fixtures shared by the tests: moto's server, the Discord emulator, and the bot as a child process."""

from __future__ import annotations

import collections.abc

import pytest

from tests.bot_process import BotProcess
from tests.moto_server import MotoServer

EMULATOR_TOKEN = "emulator.bot-token.for-tests-0123456789"


@pytest.fixture(scope="session")
def moto() -> collections.abc.Iterator[MotoServer]:
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def aws(moto: MotoServer) -> collections.abc.Iterator[MotoServer]:
    """moto with no resources and IAM enforcement off, before and after the test."""
    moto.reset()
    yield moto
    moto.reset()


@pytest.fixture
def emulator():
    from tests.discord_emulator import running_emulator

    with running_emulator(token=EMULATOR_TOKEN, heartbeat_interval_ms=1000) as emu:
        yield emu


@pytest.fixture
def start_bot(emulator) -> collections.abc.Iterator[collections.abc.Callable[..., BotProcess]]:
    """Start bot/echo.py against the emulator; by default with the token in DISCORD_TOKEN."""
    started: list[BotProcess] = []

    def start(env: dict[str, str] | None = None, *, token: str | None = EMULATOR_TOKEN, **kwargs) -> BotProcess:
        bot_env = {"DISCORD_API_BASE": emulator.api_base, "DISCORD_GATEWAY_URL": emulator.gateway_url}
        if token is not None:
            bot_env["DISCORD_TOKEN"] = token
        bot_env.update(env or {})
        bot = BotProcess(bot_env, **kwargs)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.close()


@pytest.fixture
def ready_bot(start_bot, emulator) -> BotProcess:
    bot = start_bot()
    bot.wait_ready()
    emulator.wait_for_ready()
    return bot
