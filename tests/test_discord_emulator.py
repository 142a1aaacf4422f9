"""The Discord emulator against the real, unmodified discord.py client and against raw protocol clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket

from tests.discord_emulator import EmulatorClient, EmulatorControlError, RunningEmulator, running_emulator

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "emulator-test-token.abc123"
FAST_HEARTBEAT_MS = 300


class TinyBot:
    """A minimal discord.py client on its own thread: records events and echoes messages that mention it."""

    def __init__(self, emu: RunningEmulator | None = None, *, token: str = TOKEN,
                 intents: discord.Intents | None = None, answer: bool = True) -> None:
        if intents is None:
            intents = discord.Intents.default()
            intents.message_content = True
        self.token = token
        self.answer = answer
        self.client = discord.Client(intents=intents, guild_ready_timeout=0.05)
        self.messages: list[discord.Message] = []
        self.events: list[str] = []
        self.error: BaseException | None = None
        self.reply_with: Callable[[discord.Message], Any] | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._finished = threading.Event()
        self._changed = threading.Condition()
        self._register_events()

    def _record(self, name: str) -> None:
        with self._changed:
            self.events.append(name)
            self._changed.notify_all()

    def _register_events(self) -> None:
        client = self.client

        @client.event
        async def on_ready() -> None:
            self._record("ready")

        @client.event
        async def on_resumed() -> None:
            self._record("resumed")

        @client.event
        async def on_message(message: discord.Message) -> None:
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()
            if not self.answer or message.author == client.user or client.user not in message.mentions:
                return
            if self.reply_with is not None:
                await self.reply_with(message)
            else:
                await message.channel.send(message.content, allowed_mentions=discord.AllowedMentions.none())

    async def _run(self) -> None:
        try:
            await self.client.start(self.token)
        except BaseException as error:  # recorded for the test to assert on
            self.error = error
        finally:
            self._finished.set()

    def start(self) -> TinyBot:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._run(), self._loop)
        return self

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}; events={self.events} error={self.error!r}")

    def wait_ready(self, timeout: float = 10) -> None:
        self.wait_for(lambda: "ready" in self.events or self.error is not None, timeout, "on_ready")
        assert self.error is None, f"client failed: {self.error!r}"

    def wait_message(self, content: str, timeout: float = 10) -> discord.Message:
        self.wait_for(lambda: any(m.content == content for m in self.messages), timeout, f"message {content!r}")
        return next(m for m in self.messages if m.content == content)

    def wait_finished(self, timeout: float = 10) -> BaseException | None:
        assert self._finished.wait(timeout), f"client still running; events={self.events}"
        return self.error

    def call(self, coroutine: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        if not self.client.is_closed():
            with contextlib.suppress(Exception):
                self.call(self.client.close())
        self._finished.wait(5)
        with contextlib.suppress(Exception):
            self.call(self._cancel_leftover_tasks())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    @staticmethod
    async def _cancel_leftover_tasks() -> None:
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An emulator with fast heartbeats, with discord.py pointed at it for the test."""
    with running_emulator(token=TOKEN, heartbeat_interval_ms=FAST_HEARTBEAT_MS) as emulator:
        point_discord_py_at(monkeypatch, emulator)
        yield emulator


def point_discord_py_at(monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", emulator.api_base)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(emulator.gateway_url))


@pytest.fixture
def bots() -> Iterator[Callable[..., TinyBot]]:
    started: list[TinyBot] = []

    def start(*args: Any, **kwargs: Any) -> TinyBot:
        bot = TinyBot(*args, **kwargs).start()
        started.append(bot)
        return bot

    yield start
    for bot in started:
        bot.stop()


def http_get(url: str, headers: dict[str, str]) -> bytes:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http only, asserted above
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http only
        return response.read()


def wait_state(emu: RunningEmulator, predicate: Callable[[dict], bool], timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    state = emu.state()
    while not predicate(state):
        if time.monotonic() > deadline:
            raise AssertionError(f"emulator state never matched: {state}")
        time.sleep(0.02)
        state = emu.state()
    return state


def test_login_ready_and_guild_create_fill_discord_py_cache(emu, bots):
    """Login, READY and GUILD_CREATE give discord.py the bot user, the guild and its text channels."""
    bot = bots()
    bot.wait_ready()
    client = bot.client
    assert str(client.user.id) == emu.bot_user_id
    assert client.user.bot is True
    assert str(client.application_id) == emu.application_id
    guild = client.get_guild(int(emu.guild_id))
    assert guild is not None and not guild.unavailable
    channel = guild.get_channel(int(emu.channel_id))
    assert isinstance(channel, discord.TextChannel)
    assert guild.default_role.id == int(emu.guild_id)
    assert guild.get_role(int(emu.role_id)) is not None
    assert guild.me is not None and guild.me.id == client.user.id
    assert guild.member_count == 4  # the bot, the owner, the default user and another bot
    assert channel.permissions_for(guild.me).send_messages
    assert not guild.get_channel(int(emu.read_only_channel_id)).permissions_for(guild.me).send_messages
    state = emu.state()
    assert state["connected"] and state["identify_count"] == 1 and state["compression"] == "zlib-stream"
    assert state["intents"] == client.intents.value
    assert state["rest_requests"][:2] == ["GET /users/@me", "GET /oauth2/applications/@me"]
    assert state["unknown_routes"] == []
    assert "token" not in state["last_identify"]


def test_on_message_fires_with_mentions_computed_like_discord(emu, bots):
    """MESSAGE_CREATE carries author, member, and mentions parsed from <@id>, <@!id> and <@&id>."""
    bot = bots(answer=False)
    bot.wait_ready()
    content = f"hi <@{emu.bot_user_id}> and <@!{emu.user_id}> and <@&{emu.role_id}> and <@123>"
    posted = emu.post_message(content)
    message = bot.wait_message(content)
    assert str(message.author.id) == emu.user_id
    assert isinstance(message.author, discord.Member)
    assert {str(user.id) for user in message.mentions} == {emu.bot_user_id, emu.user_id}
    assert [str(role.id) for role in message.role_mentions] == [emu.role_id]
    assert message.mention_everyone is False
    assert str(message.guild.id) == emu.guild_id and str(message.channel.id) == emu.channel_id
    assert posted["id"] == str(message.id)
    assert [m["id"] for m in posted["mentions"]] == [emu.bot_user_id, emu.user_id]


def test_everyone_mentions_count_only_when_the_poster_may(emu, bots):
    """@everyone sets mention_everyone for a member with Mention Everyone, not for an ordinary member."""
    bot = bots(answer=False)
    bot.wait_ready()
    emu.post_message("@everyone from a member")
    emu.post_message("@here from a moderator", author_role_ids=[emu.role_id])
    emu.post_message("@everyone from a webhook", webhook_id="777000777000777000")
    assert bot.wait_message("@everyone from a member").mention_everyone is False
    assert bot.wait_message("@here from a moderator").mention_everyone is True
    hooked = bot.wait_message("@everyone from a webhook")
    assert hooked.mention_everyone is True and hooked.webhook_id == 777000777000777000


def test_direct_messages_reach_the_bot_and_its_answers_go_back(emu, bots):
    """A DM arrives without guild or member in a DMChannel, with content even without the intent."""
    bot = bots(intents=discord.Intents.default())
    bot.wait_ready()
    emu.post_message(f"<@{emu.bot_user_id}> in private", channel_id=emu.dm_channel_id)
    emu.post_message("no mention needed", channel_id=emu.dm_channel_id)
    received = bot.wait_message(f"<@{emu.bot_user_id}> in private")
    assert isinstance(received.channel, discord.DMChannel) and received.guild is None
    assert isinstance(received.author, discord.User) and str(received.author.id) == emu.user_id
    assert bot.wait_message("no mention needed").content == "no mention needed"
    [answer] = emu.wait_for_bot_messages(1)
    assert answer["channel_id"] == emu.dm_channel_id


def test_the_members_intent_gets_all_members_and_answers_member_queries(emu, bots):
    """With the members intent GUILD_CREATE lists every member, and op 8 queries get a matching chunk."""
    intents = discord.Intents.default()
    intents.members = True
    bot = bots(intents=intents)
    bot.wait_ready()
    guild = bot.client.get_guild(int(emu.guild_id))
    assert guild.chunked
    assert {str(member.id) for member in guild.members} >= {emu.bot_user_id, emu.user_id, emu.owner_id}
    found = bot.call(guild.query_members(query="ali"))
    assert [str(member.id) for member in found] == [emu.user_id]
    by_id = bot.call(guild.query_members(user_ids=[int(emu.owner_id)]))
    assert [str(member.id) for member in by_id] == [emu.owner_id]


def test_a_send_is_recorded_exactly_as_discord_py_sent_it(emu, bots):
    """content, allowed_mentions and message_reference of a reply arrive exactly; the bot sees its own message."""
    bot = bots()
    allowed = discord.AllowedMentions(everyone=False, roles=False, users=[discord.Object(int(emu.user_id))],
                                      replied_user=False)

    async def reply(message: discord.Message) -> None:
        await message.reply(f"echo: {message.content}", allowed_mentions=allowed)

    bot.reply_with = reply
    bot.wait_ready()
    posted = emu.post_message(f"<@{emu.bot_user_id}> ping <@{emu.user_id}> @everyone")
    [sent] = emu.wait_for_bot_messages(1)
    assert sent["content"] == f"echo: {posted['content']}"
    assert sent["allowed_mentions"] == json.loads(json.dumps(allowed.to_dict()))
    assert sent["message_reference"]["message_id"] in (posted["id"], int(posted["id"]))
    assert sent["channel_id"] == emu.channel_id and sent["tts"] is False
    own = bot.wait_message(sent["content"])
    assert own.author == bot.client.user
    assert own.type is discord.MessageType.reply
    assert [user.id for user in own.mentions] == [int(emu.user_id)]
    assert own.mention_everyone is False


def test_the_uncompressed_gateway_works_too(emu, bots, monkeypatch):
    """With no compress parameter the emulator sends plain JSON text frames and the round trip works."""
    original = DiscordWebSocket.from_client.__func__

    async def uncompressed(cls: type, client: discord.Client, **kwargs: Any) -> DiscordWebSocket:
        return await original(cls, client, **{**kwargs, "compress": False})

    monkeypatch.setattr(DiscordWebSocket, "from_client", classmethod(uncompressed))
    bot = bots()
    bot.wait_ready()
    assert emu.state()["compression"] is None
    emu.post_message(f"<@{emu.bot_user_id}> plain")
    assert emu.wait_for_bot_messages(1)[0]["content"] == f"<@{emu.bot_user_id}> plain"


def test_a_wrong_token_fails_login_with_401(emu, bots):
    """discord.py's login gets 401 for a wrong token and raises LoginFailure; no IDENTIFY happens."""
    bot = bots(token="not-the-token")
    assert isinstance(bot.wait_finished(), discord.LoginFailure)
    state = emu.state()
    assert state["rest_requests"] == ["GET /users/@me"] and state["identify_count"] == 0
    with pytest.raises(urllib.error.HTTPError) as failure:
        http_get(emu.api_base + "/users/@me", {"Authorization": "Bot wrong"})
    assert failure.value.code == 401
    assert json.loads(failure.value.read()) == {"message": "401: Unauthorized", "code": 0}


def test_a_revoked_token_closes_the_session_with_4004_and_a_new_token_works(emu, bots):
    """revoke_token ends the session with 4004 (ConnectionClosed); set_token lets a new client in."""
    bot = bots()
    bot.wait_ready()
    assert emu.revoke_token() == 1
    error = bot.wait_finished()
    assert isinstance(error, discord.ConnectionClosed) and error.code == 4004
    assert emu.state()["last_close_code"] == 4004
    assert isinstance(bots().wait_finished(), discord.LoginFailure)
    emu.set_token("rotated-token")
    bots(token="rotated-token").wait_ready()
    assert emu.state()["identify_count"] == 2


def test_identify_with_a_revoked_token_is_closed_with_4004(emu, bots):
    """A token revoked between login and IDENTIFY gets close 4004, which discord.py does not retry."""
    real_identify = DiscordWebSocket.identify

    async def revoke_then_identify(ws: DiscordWebSocket) -> None:
        await asyncio.to_thread(emu.revoke_token)
        await real_identify(ws)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DiscordWebSocket, "identify", revoke_then_identify)
        error = bots().wait_finished()
    assert isinstance(error, discord.ConnectionClosed) and error.code == 4004
    state = emu.state()
    assert state["identify_count"] == 0 and state["last_close_code"] == 4004 and state["last_close_by"] == "server"


def test_refused_message_content_intent_closes_with_4014(monkeypatch, bots):
    """With the intent off in the emulated portal, asking for it ends in PrivilegedIntentsRequired."""
    with running_emulator(token=TOKEN, heartbeat_interval_ms=FAST_HEARTBEAT_MS, refuse_message_content=True) as strict:
        point_discord_py_at(monkeypatch, strict)
        error = bots(strict).wait_finished()
        assert isinstance(error, discord.PrivilegedIntentsRequired)
        assert strict.state()["last_close_code"] == 4014


def test_without_the_message_content_intent_only_mentions_carry_content(emu, bots):
    """Like Discord, content is blanked for a client without the intent unless the message mentions it."""
    bot = bots(intents=discord.Intents.default(), answer=False)
    bot.wait_ready()
    emu.post_message("not for the bot")
    emu.post_message(f"<@{emu.bot_user_id}> for the bot")
    bot.wait_message(f"<@{emu.bot_user_id}> for the bot")
    assert [m.content for m in bot.messages] == ["", f"<@{emu.bot_user_id}> for the bot"]


def test_a_dropped_connection_is_resumed_and_missed_messages_replayed(emu, bots):
    """After a cut without a close frame the client RESUMEs and gets what was dispatched meanwhile."""
    bot = bots()
    bot.wait_ready()
    assert emu.drop_connection(hold_seconds=1.0) == 1
    missed = f"<@{emu.bot_user_id}> sent while you were away"
    emu.post_message(missed)
    assert not any(m.content == missed for m in bot.messages)
    bot.wait_message(missed)
    bot.wait_for(lambda: "resumed" in bot.events, what="on_resumed")
    assert emu.wait_for_bot_messages(1)[0]["content"] == missed
    state = emu.state()
    assert (state["identify_count"], state["resume_count"], state["connections"]) == (1, 1, 2)
    assert state["close_history"][0]["code"] == 1006 and state["gateway_path"] == "/resume"


def test_reconnect_opcode_leads_to_a_resume(emu, bots):
    """Op 7 RECONNECT makes discord.py reconnect to resume_gateway_url and RESUME the same session."""
    bot = bots()
    bot.wait_ready()
    session_id = emu.state()["session_id"]
    assert emu.send_reconnect() == 1
    state = wait_state(emu, lambda s: s["resume_count"] == 1 and s["connected"])
    assert state["identify_count"] == 1 and state["session_id"] == session_id


def test_a_non_resumable_invalid_session_makes_the_client_identify_again(emu, bots):
    """Op 9 with d=false forces a fresh IDENTIFY and a new session id."""
    bot = bots()
    bot.wait_ready()
    session_id = emu.state()["session_id"]
    emu.send_invalid_session(resumable=False)
    state = wait_state(emu, lambda s: s["identify_count"] == 2 and s["connected"])
    assert state["resume_count"] == 0 and state["session_id"] != session_id
    emu.post_message(f"<@{emu.bot_user_id}> after invalid session")
    assert emu.wait_for_bot_messages(1)[0]["content"].endswith("after invalid session")


def test_a_resumable_invalid_session_and_a_4000_close_are_resumed(emu, bots):
    """Op 9 with d=true and a 4000 close frame both lead discord.py to RESUME, not IDENTIFY."""
    bot = bots()
    bot.wait_ready()
    emu.send_invalid_session(resumable=True)
    wait_state(emu, lambda s: s["resume_count"] == 1 and s["connected"])
    emu.close_gateway(4000, "testing")
    state = wait_state(emu, lambda s: s["resume_count"] == 2 and s["connected"])
    assert state["identify_count"] == 1
    assert {"code": 4000, "reason": "testing", "by": "server"}.items() <= state["close_history"][-1].items()


def test_an_injected_429_is_retried_after_retry_after_and_delivered_once(emu, bots):
    """discord.py honours retry_after from the 429 body and sends the message exactly once."""
    bot = bots()
    bot.wait_ready()
    emu.inject_rest_errors(status=429, count=1, retry_after=0.4, route_contains="/messages")
    started = time.time()
    emu.post_message(f"<@{emu.bot_user_id}> limited")
    [sent] = emu.wait_for_bot_messages(1)
    assert sent["received_at"] - started >= 0.4
    time.sleep(0.2)
    assert len(emu.bot_messages()) == 1
    state = emu.state()
    assert state["rest_errors_injected"] == 1 and state["pending_rest_errors"] == []
    assert state["rest_requests"].count(f"POST /channels/{emu.channel_id}/messages") == 2


def test_an_injected_500_is_retried(emu, bots):
    """A 500 with Discord's body is retried by discord.py and the message arrives once."""
    bot = bots()
    bot.wait_ready()
    emu.inject_rest_errors(status=500, count=1, route_contains="/messages")
    emu.post_message(f"<@{emu.bot_user_id}> flaky")
    assert [m["content"] for m in emu.wait_for_bot_messages(1)] == [f"<@{emu.bot_user_id}> flaky"]
    assert emu.state()["rest_requests"].count(f"POST /channels/{emu.channel_id}/messages") == 2


def test_rate_limit_headers_make_discord_py_wait_instead_of_hitting_429(monkeypatch, bots):
    """X-RateLimit-* headers are accurate enough that discord.py pre-emptively waits for the window."""
    with running_emulator(token=TOKEN, heartbeat_interval_ms=FAST_HEARTBEAT_MS, message_rate_limit=2,
                          message_rate_window_s=1.0) as emu:
        point_discord_py_at(monkeypatch, emu)
        bot = bots(emu)
        bot.wait_ready()
        channel = bot.client.get_channel(int(emu.channel_id))

        async def send_three() -> None:
            for number in range(3):
                await channel.send(f"burst {number}")

        bot.call(send_three())
        sent = emu.wait_for_bot_messages(3)
        assert [m["content"] for m in sent] == ["burst 0", "burst 1", "burst 2"]
        assert sent[2]["received_at"] - sent[0]["received_at"] >= 0.5
        assert emu.state()["rate_limited"] == 0


def test_unknown_routes_get_discords_404_and_are_recorded(emu):
    """An unknown REST route answers Discord's 404 JSON and shows up in state()['unknown_routes']."""
    with pytest.raises(urllib.error.HTTPError) as failure:
        http_get(emu.api_base + "/guilds/1/audit-logs/nothing", {"Authorization": f"Bot {TOKEN}"})
    assert failure.value.code == 404
    assert failure.value.headers["Content-Type"] == "application/json"
    assert json.loads(failure.value.read()) == {"message": "404: Not Found", "code": 0}
    assert emu.state()["unknown_routes"] == ["GET /guilds/1/audit-logs/nothing"]


def test_raw_gateway_protocol_zlib_stream_hello_ready_and_sequence(emu):
    """One zlib stream per connection, Z_SYNC_FLUSH-terminated frames; HELLO, ACK, READY, GUILD_CREATE in order."""

    async def session() -> list[dict]:
        inflater = zlib.decompressobj()
        async with aiohttp.ClientSession() as http, http.ws_connect(
                emu.gateway_url + "?v=10&encoding=json&compress=zlib-stream") as ws:

            async def receive() -> dict:
                frame = await ws.receive_bytes(timeout=5)
                assert frame.endswith(b"\x00\x00\xff\xff")
                return json.loads(inflater.decompress(frame))

            received = [await receive()]
            await ws.send_json({"op": 1, "d": None})
            received.append(await receive())
            await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {"os": "linux"}}})
            received += [await receive(), await receive()]
            return received

    hello, ack, ready, guild_create = asyncio.run(session())
    assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == FAST_HEARTBEAT_MS
    assert ack == {"op": 11, "d": None, "s": None, "t": None}
    assert (ready["t"], ready["s"], guild_create["t"], guild_create["s"]) == ("READY", 1, "GUILD_CREATE", 2)
    data = ready["d"]
    assert data["v"] == 10 and data["user"]["id"] == emu.bot_user_id and data["user"]["bot"] is True
    assert len(data["user"]["discriminator"]) in (1, 4)
    assert data["guilds"] == [{"id": emu.guild_id, "unavailable": True}]
    assert data["resume_gateway_url"].startswith(emu.gateway_url.rstrip("/"))
    assert data["application"]["id"] == emu.application_id and "shard" not in data
    assert guild_create["d"]["id"] == emu.guild_id


@pytest.mark.parametrize(("first_payload", "close_code"), [
    ({"op": 3, "d": {"status": "online"}}, 4003),
    ({"op": 2, "d": {"token": TOKEN, "intents": 1 << 30, "properties": {}}}, 4013),
    ({"op": 2, "d": {"token": "wrong", "intents": 1, "properties": {}}}, 4004),
    ({"op": 99, "d": None}, 4001),
    ("not json", 4002),
])
def test_raw_gateway_protocol_errors_close_with_discords_codes(emu, first_payload, close_code):
    """Payloads before IDENTIFY, bad intents, bad tokens, unknown opcodes and garbage get Discord's close codes."""

    async def session() -> int | None:
        async with aiohttp.ClientSession() as http, http.ws_connect(emu.gateway_url + "?v=10&encoding=json") as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["op"] == 10
            if isinstance(first_payload, str):
                await ws.send_str(first_payload)
            else:
                await ws.send_json(first_payload)
            message = await ws.receive(timeout=5)
            assert message.type is aiohttp.WSMsgType.CLOSE
            return message.data

    assert asyncio.run(session()) == close_code


def test_zstd_stream_is_refused_with_an_explanation(emu):
    """compress=zstd-stream is not implemented: the upgrade is refused with a 400 that says what to use."""

    async def attempt() -> tuple[int, dict]:
        async with aiohttp.ClientSession() as http, http.get(
                emu.gateway_url.replace("ws://", "http://") + "?v=10&encoding=json&compress=zstd-stream",
                headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                         "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as response:
            return response.status, await response.json()

    status, body = asyncio.run(attempt())
    assert status == 400 and "zstd-stream is not supported" in body["message"]
    assert "zstd-stream" in emu.state()["rejected_connections"][0]["reason"]


def test_control_api_reports_bad_requests_and_timeouts_clearly(emu):
    """Bad control input raises EmulatorControlError with the reason; a wait that expires says what arrived."""
    with pytest.raises(EmulatorControlError, match="no gateway session is connected"):
        emu.drop_connection()
    with pytest.raises(EmulatorControlError, match="unknown channel_id"):
        emu.post_message("hello", channel_id="42")
    with pytest.raises(EmulatorControlError, match="content is 4001 characters; Discord allows 4000"):
        emu.post_message("x" * 4001)
    with pytest.raises(EmulatorControlError, match="status must be"):
        emu.inject_rest_errors(status=200)
    with pytest.raises(TimeoutError, match=r"expected 1 bot message\(s\) after index 0 within 0.2s, got 0"):
        emu.wait_for_bot_messages(1, timeout=0.2)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests.discord_emulator", *args], cwd=REPO_ROOT, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})}, check=False)


def test_cli_serve_say_state_and_sigterm(tmp_path, monkeypatch, bots):
    """serve prints its info line, say round-trips through a connected client, state prints JSON, SIGTERM exits 0."""
    info_file = tmp_path / "emulator.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.discord_emulator", "serve", "--port", "0", "--heartbeat-interval-ms", "500",
         "--info-file", str(info_file)],
        cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "DISCORD_EMULATOR_TOKEN": TOKEN})
    try:
        info = json.loads(server.stdout.readline())
        assert json.loads(info_file.read_text()) == info
        assert info["pid"] == server.pid and info["api_base"].endswith("/api/v10")
        control = EmulatorClient(info["control_url"])
        monkeypatch.setattr(discord.http.Route, "BASE", info["api_base"])
        monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(info["gateway_url"]))
        bot = bots()
        bot.wait_ready()
        control.wait_for_ready(5)
        said = run_cli("say", "--control-url", info["control_url"], "hello there")
        assert said.returncode == 0, said.stderr
        answer, round_trip = said.stdout.splitlines()
        assert answer == f"<@{info['bot_user_id']}> hello there"
        assert round_trip.startswith("round trip: ") and round_trip.endswith(" ms")
        state = json.loads(run_cli("state", "--control-url", info["control_url"]).stdout)
        assert state["identify_count"] == 1 and state["bot_message_count"] == 1
        bot.stop()
        silent = run_cli("say", "--control-url", info["control_url"], "--timeout", "0.3", "anyone?")
        assert silent.returncode == 1 and "no answer from the bot within 0.3s" in silent.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(10) == 0
        log = server.stderr.read()
        assert "IDENTIFY on connection" in log and TOKEN not in log
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)


@pytest.mark.parametrize(("args", "message"), [
    (["serve", "--port", "70000", "--token", "x"], "is not a port"),
    (["serve", "--heartbeat-interval-ms", "1", "--token", "x"], "too small"),
    (["serve"], "a token is required"),
    (["say", "hello"], "--control-url is required"),
    (["frobnicate"], "invalid choice"),
])
def test_cli_bad_arguments_are_argparse_errors(args, message):
    """Bad command lines exit 2 with a message that names the problem."""
    result = run_cli(*args, env={"DISCORD_EMULATOR_TOKEN": "", "DISCORD_EMULATOR_CONTROL_URL": ""})
    assert result.returncode == 2 and message in result.stderr


async def identify_raw(ws: aiohttp.ClientWebSocketResponse, **extra: Any) -> list[dict]:
    """Reads HELLO, sends IDENTIFY and returns READY and GUILD_CREATE from an uncompressed connection."""
    assert (await ws.receive_json(timeout=5))["op"] == 10
    await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {"os": "linux"}, **extra}})
    return [await ws.receive_json(timeout=5), await ws.receive_json(timeout=5)]


async def next_close_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.CLOSE:
            return message.data
        if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None


def test_raw_gateway_sessions_resume_rules(emu):
    """Shard echo in READY, 4005 on a second IDENTIFY, op 9 for an unknown session, 4007 for a future seq."""

    async def scenario() -> dict[str, Any]:
        url = emu.gateway_url + "?v=10&encoding=json"
        results: dict[str, Any] = {}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url) as ws:
                ready, _ = await identify_raw(ws, shard=[0, 1])
                results["shard"] = ready["d"]["shard"]
                session_id = ready["d"]["session_id"]
                await ws.send_json({"op": 2, "d": {"token": TOKEN, "intents": 513, "properties": {}}})
                results["second_identify"] = await next_close_code(ws)
            async with http.ws_connect(url) as ws:
                await ws.receive_json(timeout=5)
                await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": "f" * 32, "seq": 1}})
                results["unknown_session"] = await ws.receive_json(timeout=5)
            async with http.ws_connect(url) as ws:
                await ws.receive_json(timeout=5)
                await ws.send_json({"op": 6, "d": {"token": TOKEN, "session_id": session_id, "seq": 99}})
                results["future_seq"] = await next_close_code(ws)
            async with http.ws_connect(emu.gateway_url + "?v=9&encoding=json") as ws:
                results["old_version"] = await next_close_code(ws)
        return results

    results = asyncio.run(scenario())
    assert results["shard"] == [0, 1]
    assert results["second_identify"] == 4005
    assert results["unknown_session"]["op"] == 9 and results["unknown_session"]["d"] is False
    assert results["future_seq"] == 4007
    assert results["old_version"] == 4012


def test_urls_in_ready_and_gateway_follow_the_host_the_client_used(emu):
    """resume_gateway_url and GET /gateway name the address the client dialled, so they work from a container."""

    async def scenario() -> tuple[str, dict]:
        headers = {"Host": "emulator.test:4242"}
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(emu.gateway_url + "?v=10&encoding=json", headers=headers) as ws:
                ready, _ = await identify_raw(ws)
            async with http.get(emu.api_base + "/gateway", headers={**headers, "Authorization": f"Bot {TOKEN}"}
                                ) as response:
                return ready["d"]["resume_gateway_url"], await response.json()

    resume_url, gateway = asyncio.run(scenario())
    assert resume_url == "ws://emulator.test:4242/resume"
    assert gateway == {"url": "ws://emulator.test:4242"}


def test_a_silent_client_is_closed_with_4009():
    """A connection that stops heartbeating is closed with 4009 Session timed out."""

    async def silent(gateway_url: str) -> int | None:
        async with aiohttp.ClientSession() as http, http.ws_connect(gateway_url + "?v=10&encoding=json") as ws:
            await identify_raw(ws)
            return await next_close_code(ws)

    with running_emulator(token=TOKEN, heartbeat_interval_ms=100, heartbeat_timeout_ms=400) as emulator:
        started = time.monotonic()
        assert asyncio.run(silent(emulator.gateway_url)) == 4009
        assert time.monotonic() - started < 4
        assert emulator.state()["sessions"] == 0


def test_rest_rejects_what_discord_rejects(emu, bots):
    """Empty and over-long messages, unknown channels and channels without Send Messages fail like on Discord."""
    bot = bots()
    bot.wait_ready()
    http = bot.client.http
    with pytest.raises(discord.HTTPException) as empty:
        bot.call(http.request(discord.http.Route("POST", "/channels/{channel_id}/messages",
                                                 channel_id=int(emu.channel_id)), json={}))
    assert (empty.value.status, empty.value.code) == (400, 50006)
    with pytest.raises(discord.HTTPException) as too_long:
        bot.call(bot.client.get_channel(int(emu.channel_id)).send("x" * 2001))
    assert (too_long.value.status, too_long.value.code) == (400, 50035)
    assert "content" in too_long.value.text
    with pytest.raises(discord.Forbidden) as forbidden:
        bot.call(bot.client.get_channel(int(emu.read_only_channel_id)).send("hi"))
    assert forbidden.value.code == 50013
    with pytest.raises(discord.NotFound) as unknown:
        bot.call(bot.client.get_partial_messageable(424242).send("hi"))
    assert unknown.value.code == 10003
    assert emu.bot_messages() == []


def test_files_typing_edits_and_history_work_through_discord_py(emu, bots):
    """Multipart uploads, typing, edits, deletes and history answer the way discord.py expects."""
    import io

    bot = bots(answer=False)
    bot.wait_ready()
    channel = bot.client.get_channel(int(emu.channel_id))

    async def exercise() -> tuple[list[str], str, bytes]:
        async with channel.typing():
            sent = await channel.send("with a file", file=discord.File(io.BytesIO(b"hello"), "greeting.txt"))
        edited = await sent.edit(content="edited")
        history = [message.content async for message in channel.history(limit=5)]
        await edited.delete()
        return history, edited.content, await sent.attachments[0].read()

    history, edited_content, downloaded = bot.call(exercise())
    assert edited_content == "edited" and downloaded == b"hello" and history == ["edited"]
    [recorded] = emu.bot_messages()
    assert recorded["attachments"] == ["greeting.txt"] and recorded["content"] == "with a file"
    assert f"POST /channels/{emu.channel_id}/typing" in emu.state()["rest_requests"]


@pytest.mark.parametrize("how", ["sigint", "control"])
def test_cli_serve_also_stops_cleanly_on_sigint_and_on_shutdown_request(how):
    """serve exits 0 on SIGINT and when shutdown() is called through the control API."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.discord_emulator", "serve", "--port", "0", "--token", TOKEN],
        cwd=REPO_ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        info = json.loads(server.stdout.readline())
        if how == "sigint":
            server.send_signal(signal.SIGINT)
        else:
            EmulatorClient(info["control_url"]).shutdown()
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
