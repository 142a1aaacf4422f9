"""The emulator server: Discord's REST API, its gateway and a control API for tests, on one aiohttp app."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from . import control
from .gateway import (
    CLIENT_OPCODES,
    CLIENT_SESSION_ENDING_CLOSE_CODES,
    OP_HEARTBEAT,
    OP_HEARTBEAT_ACK,
    OP_HELLO,
    OP_IDENTIFY,
    OP_INVALID_SESSION,
    OP_PRESENCE_UPDATE,
    OP_RECONNECT,
    OP_REQUEST_GUILD_MEMBERS,
    OP_RESUME,
    SESSION_ENDING_CLOSE_CODES,
    GatewayConnection,
    GatewaySession,
    encode_payload,
)
from .model import (
    CHANNEL_TYPE_DM,
    CHANNEL_TYPE_GUILD_CATEGORY,
    EVERYONE_MENTION,
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_MESSAGE_CONTENT,
    KNOWN_INTENTS,
    MESSAGE_TYPE_DEFAULT,
    MESSAGE_TYPE_REPLY,
    PERM_MENTION_EVERYONE,
    PERM_SEND_MESSAGES,
    PERM_SEND_TTS_MESSAGES,
    PERM_VIEW_CHANNEL,
    Channel,
    User,
    World,
    iso_timestamp,
)
from .rest import (
    API_PREFIX,
    VIA_HEADER,
    InjectedError,
    RateLimiter,
    error_response,
    form_error,
    generic_error,
    json_response,
    rate_limited_response,
)

log = logging.getLogger("tests.discord_emulator")

DISCORD_HEARTBEAT_INTERVAL_MS = 41250
HEARTBEAT_ACK_DELAY_S = 0.02
MAX_CONTENT_LENGTH = 2000
# What a user with Nitro may post; bots stay at MAX_CONTENT_LENGTH.
MAX_USER_CONTENT_LENGTH = 4000
MAX_EMBEDS = 10
MAX_NONCE_LENGTH = 25
NONCE_DEDUPLICATION_S = 300
MAX_RECORDED_REQUESTS = 5000
MAX_IDLE_SESSIONS = 50
RESUME_HANDSHAKE_TIMEOUT_S = 5.0
MAX_STORED_ATTACHMENTS = 100


class EmulatorError(ValueError):
    """A control request that cannot be carried out; the message says what to change."""


class DiscordEmulator:
    """Discord as discord.py sees it: REST under /api/v10, the gateway at / and a control API under /_emulator."""

    def __init__(
        self,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval_ms: int = DISCORD_HEARTBEAT_INTERVAL_MS,
        refuse_message_content: bool = False,
        bot_username: str = "echo-bot",
        message_rate_limit: int = 5,
        message_rate_window_s: float = 5.0,
        heartbeat_timeout_ms: int | None = None,
        advertise_host: str | None = None,
    ) -> None:
        check_token(token)
        if not isinstance(heartbeat_interval_ms, int) or heartbeat_interval_ms < 50:
            raise ValueError(f"heartbeat_interval_ms must be an integer >= 50, got {heartbeat_interval_ms!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be 0 (ephemeral) or 1-65535, got {port!r}")
        if message_rate_limit < 1 or message_rate_window_s <= 0:
            raise ValueError("message_rate_limit must be >= 1 and message_rate_window_s > 0")
        self._token = token
        self.token_revoked = False
        self.host = host
        # The address put into URLs when the listening address is no use to a client (0.0.0.0, ::).
        self.advertise_host = advertise_host or ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host)
        self._requested_port = port
        self.port: int | None = None
        self.heartbeat_interval_ms = heartbeat_interval_ms
        if heartbeat_timeout_ms is not None and (not isinstance(heartbeat_timeout_ms, int) or heartbeat_timeout_ms < 1):
            raise ValueError(f"heartbeat_timeout_ms must be a positive integer, got {heartbeat_timeout_ms!r}")
        # Discord tolerates a late heartbeat; the grace keeps a busy test machine from looking like a dead client.
        self.heartbeat_timeout_ms = heartbeat_timeout_ms or heartbeat_interval_ms + max(heartbeat_interval_ms, 5000)
        self.world = World(bot_username=bot_username, refuse_message_content=refuse_message_content)
        self.rate_limiter = RateLimiter(message_limit=message_rate_limit, message_window_s=message_rate_window_s)
        self.sessions: dict[str, GatewaySession] = {}
        self.connections: dict[int, GatewayConnection] = {}
        self.bot_messages: list[dict[str, Any]] = []
        self.posted_messages: list[dict[str, Any]] = []
        self.injected_errors: list[InjectedError] = []
        self.counters: dict[str, int] = dict.fromkeys(
            ("identify_count", "resume_count", "heartbeat_count", "connections", "reconnects_sent",
             "invalid_sessions_sent", "rest_errors_injected", "rate_limited", "dispatches",
             "member_requests"), 0)
        self.rest_requests: deque[str] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.unknown_routes: deque[str] = deque(maxlen=MAX_RECORDED_REQUESTS)
        self.rejected_connections: deque[dict[str, Any]] = deque(maxlen=100)
        self.close_history: deque[dict[str, Any]] = deque(maxlen=100)
        self.last_close: dict[str, Any] | None = None
        self.last_identify: dict[str, Any] | None = None
        self.last_compression: str | None = None
        self.session_starts_used = 0
        self.attachments: dict[str, tuple[str, bytes]] = {}
        self.application_commands: dict[str, list[dict[str, Any]]] = {}
        self.gateway_hold_until = 0.0
        self._nonces: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task] = set()
        self.on_shutdown_request: Callable[[], None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the emulator is already running")
        # Created here so they belong to the loop that runs the server.
        self._changed = asyncio.Event()
        self._stopped = asyncio.Event()
        app = web.Application(middlewares=[self._api_middleware], client_max_size=32 * 1024 * 1024)
        self._add_api_routes(app)
        control.add_routes(app, self)
        app.router.add_get("/", self._handle_gateway)
        app.router.add_get("/resume", self._handle_gateway)
        # Attachment URLs in messages point here, the emulator's stand-in for Discord's CDN.
        app.router.add_get("/attachments/{channel_id}/{attachment_id}/{filename}", self._get_attachment)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, reuse_address=True)
        await site.start()
        sockets = site._server.sockets if site._server else []  # the only way to learn port 0's pick
        self.port = sockets[0].getsockname()[1]
        log.info("listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is None:
            return
        for connection in list(self.connections.values()):
            if connection.is_open:
                connection.abort()
        for task in list(self._tasks):
            task.cancel()
        await self._runner.cleanup()
        self._runner = None
        self._stopped.set()
        log.info("stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    # -- addresses ------------------------------------------------------------------------------------------------

    def _base(self, scheme: str) -> str:
        if self.port is None:
            raise RuntimeError("the emulator has not been started")
        host = f"[{self.advertise_host}]" if ":" in self.advertise_host else self.advertise_host
        return f"{scheme}://{host}:{self.port}"

    def _base_for(self, request: web.Request, scheme: str) -> str:
        """The address the client used to reach us, so URLs we hand out work from where it stands."""
        return f"{scheme}://{request.host}" if request.headers.get("Host") else self._base(scheme)

    @property
    def api_base(self) -> str:
        return self._base("http") + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return self._base("ws") + "/"

    @property
    def control_url(self) -> str:
        return self._base("http") + "/_emulator"

    def info(self) -> dict[str, Any]:
        world = self.world
        return {
            "api_base": self.api_base,
            "gateway_url": self.gateway_url,
            "control_url": self.control_url,
            "bot_user_id": world.bot.id,
            "bot_username": world.bot.username,
            "application_id": world.application_id,
            "guild_id": world.guild_id,
            "channel_id": world.text_channel.id,
            "read_only_channel_id": world.read_only_channel.id,
            "dm_channel_id": world.dm_channel.id,
            "user_id": world.default_user.id,
            "owner_id": world.owner.id,
            "role_id": world.moderator_role.id,
            "bot_role_id": world.bot_role.id,
            "pid": os.getpid(),
        }

    # -- tokens ---------------------------------------------------------------------------------------------------

    def token_is_valid(self, token: Any) -> bool:
        return isinstance(token, str) and not self.token_revoked and token == self._token

    async def revoke_token(self) -> int:
        """Invalidates the token: open sessions end with 4004, later IDENTIFY gets 4004 and REST 401."""
        self.token_revoked = True
        closed = 0
        for connection in [c for c in self.connections.values() if c.is_open and c.session is not None]:
            await self._close_connection(connection, 4004)
            closed += 1
        for session in self.sessions.values():
            session.invalidated = True
        log.info("token revoked; closed %d gateway connection(s)", closed)
        self._notify()
        return closed

    def set_token(self, token: str) -> None:
        check_token(token)
        self._token = token
        self.token_revoked = False
        log.info("a new token is now accepted")
        self._notify()

    # -- state ----------------------------------------------------------------------------------------------------

    def _authenticated_connections(self) -> list[GatewayConnection]:
        return [c for c in self.connections.values() if c.is_open and c.session is not None and c.ready]

    def is_connected(self) -> bool:
        return bool(self._authenticated_connections())

    def state(self) -> dict[str, Any]:
        live = self._authenticated_connections()
        current = live[-1] if live else None
        last_close = self.last_close or {}
        return {
            "connected": bool(live),
            "open_connections": len([c for c in self.connections.values() if c.is_open]),
            **self.counters,
            "last_close_code": last_close.get("code"),
            "last_close_reason": last_close.get("reason"),
            "last_close_by": last_close.get("by"),
            "close_history": list(self.close_history),
            "compression": current.compression if current else self.last_compression,
            "gateway_path": current.path if current else None,
            "intents": self.last_identify["intents"] if self.last_identify else None,
            "last_identify": self.last_identify,
            "session_id": current.session.session_id if current and current.session else None,
            "sequence": current.session.sequence if current and current.session else None,
            "sessions": len([s for s in self.sessions.values() if not s.invalidated]),
            "token_revoked": self.token_revoked,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "rest_requests": list(self.rest_requests),
            "unknown_routes": list(self.unknown_routes),
            "pending_rest_errors": [error.describe() for error in self.injected_errors],
            "rejected_connections": list(self.rejected_connections),
            "bot_message_count": len(self.bot_messages),
            "posted_message_count": len(self.posted_messages),
            "session_start_limit_remaining": 1000 - self.session_starts_used,
        }

    def reset_messages(self) -> None:
        self.bot_messages.clear()
        self.posted_messages.clear()
        self._notify()

    # -- gateway --------------------------------------------------------------------------------------------------

    def _reject_gateway(self, request: web.Request, reason: str) -> web.Response:
        self.rejected_connections.append({"query": request.query_string, "reason": reason, "at": time.time()})
        log.warning("rejected gateway connection: %s", reason)
        return json_response({"message": reason, "code": 0}, status=400)

    async def _handle_gateway(self, request: web.Request) -> web.StreamResponse:
        compression = request.query.get("compress")
        encoding = request.query.get("encoding", "json")
        if compression == "zstd-stream":
            return self._reject_gateway(
                request, "compress=zstd-stream is not supported by this emulator: use compress=zlib-stream or none")
        if compression not in (None, "zlib-stream"):
            return self._reject_gateway(request, f"unknown compress={compression!r}: use zlib-stream or leave it out")
        if encoding != "json":
            return self._reject_gateway(request, f"encoding={encoding!r} is not supported: use encoding=json")
        websocket = web.WebSocketResponse(compress=False, max_msg_size=4096 * 1024, autoclose=True)
        if not websocket.can_prepare(request).ok:
            return self._reject_gateway(request, "the gateway expects a WebSocket upgrade request")
        await websocket.prepare(request)
        connection = GatewayConnection(websocket, request, compression=compression)
        self.connections[connection.id] = connection
        self.counters["connections"] += 1
        self.last_compression = compression
        log.info("gateway connection %d opened from %s path=%s compress=%s", connection.id, connection.peer,
                 connection.path, compression or "none")
        try:
            await self._serve_connection(connection, request.query.get("v"))
        finally:
            self._connection_finished(connection)
        return websocket

    async def _serve_connection(self, connection: GatewayConnection, version: str | None) -> None:
        hold = self.gateway_hold_until - time.monotonic()
        if hold > 0:
            await asyncio.sleep(hold)
        if version != "10":
            await self._close_connection(connection, 4012)
            return
        await connection.send(encode_payload(OP_HELLO, {
            "heartbeat_interval": self.heartbeat_interval_ms,
            "_trace": [json.dumps(["discord-emulator", {"micros": 0}])],
        }))
        connection.last_heartbeat_at = time.monotonic()
        watchdog = self._spawn(self._heartbeat_watchdog(connection))
        try:
            await self._receive_loop(connection)
        finally:
            watchdog.cancel()

    async def _receive_loop(self, connection: GatewayConnection) -> None:
        while connection.is_open:
            message = await connection.websocket.receive()
            if message.type is WSMsgType.CLOSE:
                connection.record_client_close(message.data, message.extra or "")
                break
            if message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            if message.type is not WSMsgType.TEXT:
                # Clients must send JSON text; Discord treats anything else as undecodable.
                await self._close_connection(connection, 4002)
                break
            try:
                payload = json.loads(message.data)
            except ValueError:
                await self._close_connection(connection, 4002)
                break
            if not isinstance(payload, dict) or not isinstance(payload.get("op"), int):
                await self._close_connection(connection, 4002)
                break
            if not connection.count_event():
                await self._close_connection(connection, 4008)
                break
            try:
                await self._handle_client_payload(connection, payload)
            except Exception:
                # A bug here must not look like a protocol rule: close the way Discord does on internal errors.
                log.exception("internal error handling op %s on connection %d", payload.get("op"), connection.id)
                await self._close_connection(connection, 4000)
                break

    def _connection_finished(self, connection: GatewayConnection) -> None:
        if connection.closed_by is None:
            # The client went away without a close frame (killed, or its network failed).
            connection.closed_by = "client"
            connection.close_code = 1006
            connection.close_reason = "connection lost without a close frame"
        session = connection.session
        if session is not None and session.connection is connection:
            session.connection = None
            session.disconnected_at = time.time()
            if connection.closed_by == "client" and connection.close_code in CLIENT_SESSION_ENDING_CLOSE_CODES:
                session.invalidated = True
            if connection.closed_by == "server" and connection.close_code in SESSION_ENDING_CLOSE_CODES:
                session.invalidated = True
        self.connections.pop(connection.id, None)
        self.last_close = {"code": connection.close_code, "reason": connection.close_reason,
                           "by": connection.closed_by, "connection": connection.id, "at": time.time()}
        self.close_history.append(self.last_close)
        log.info("gateway connection %d closed by %s with code %s %s", connection.id, connection.closed_by,
                 connection.close_code, connection.close_reason)
        self._forget_idle_sessions()
        self._notify()

    def _forget_idle_sessions(self) -> None:
        """Keeps memory bounded for a client that IDENTIFYs over and over: the oldest idle sessions go first."""
        idle = sorted((s for s in self.sessions.values() if s.connection is None), key=lambda s: s.disconnected_at or 0)
        for session in idle[:max(len(idle) - MAX_IDLE_SESSIONS, 0)]:
            self.sessions.pop(session.session_id, None)

    async def _close_connection(self, connection: GatewayConnection, code: int, reason: str | None = None) -> None:
        try:
            await connection.close(code, reason)
        except (ConnectionError, RuntimeError):
            connection.abort()

    async def _heartbeat_watchdog(self, connection: GatewayConnection) -> None:
        timeout_s = self.heartbeat_timeout_ms / 1000
        while connection.is_open:
            await asyncio.sleep(min(timeout_s / 4, 1.0))
            if time.monotonic() - connection.last_heartbeat_at > timeout_s and connection.is_open:
                log.warning("gateway connection %d sent no heartbeat for %.1fs", connection.id, timeout_s)
                await self._close_connection(connection, 4009)
                return

    async def _handle_client_payload(self, connection: GatewayConnection, payload: dict[str, Any]) -> None:
        op = payload["op"]
        data = payload.get("d")
        if op not in CLIENT_OPCODES:
            await self._close_connection(connection, 4001)
        elif op == OP_HEARTBEAT:
            if data is not None and not isinstance(data, int):
                await self._close_connection(connection, 4002)
                return
            connection.last_heartbeat_at = time.monotonic()
            self.counters["heartbeat_count"] += 1
            # Discord's ACK takes a network round trip. One sent within microseconds on loopback reaches
            # discord.py before its keep-alive thread has noted the send, and it then warns that the socket
            # is a whole heartbeat interval "behind".
            await asyncio.sleep(HEARTBEAT_ACK_DELAY_S)
            await connection.send(encode_payload(OP_HEARTBEAT_ACK))
        elif op == OP_IDENTIFY:
            await self._identify(connection, data)
        elif op == OP_RESUME:
            await self._resume(connection, data)
        elif connection.session is None:
            await self._close_connection(connection, 4003)
        elif op == OP_PRESENCE_UPDATE:
            if isinstance(data, dict):
                connection.session.presence = data
        elif op == OP_REQUEST_GUILD_MEMBERS:
            self.counters["member_requests"] += 1
            await self._send_member_chunk(connection.session, data)

    async def _refuse_handshake(self, connection: GatewayConnection, data: Any, opcode: str, field: str,
                                field_type: type) -> bool:
        """Closes the connection as Discord does for a repeated, malformed or badly authenticated IDENTIFY or
        RESUME, and says whether it did."""
        if connection.session is not None:
            await self._close_connection(connection, 4005)
            return True
        if not isinstance(data, dict) or not isinstance(data.get(field), field_type) or "token" not in data:
            await self._close_connection(connection, 4002)
            return True
        if not self.token_is_valid(data["token"]):
            log.warning("%s on connection %d with an invalid or revoked token", opcode, connection.id)
            await self._close_connection(connection, 4004)
            return True
        return False

    async def _identify(self, connection: GatewayConnection, data: Any) -> None:
        if await self._refuse_handshake(connection, data, "IDENTIFY", "properties", dict):
            return
        intents = data.get("intents")
        if not isinstance(intents, int) or isinstance(intents, bool) or intents < 0 or intents & ~KNOWN_INTENTS:
            await self._close_connection(connection, 4013)
            return
        refused = self.world.refused_intents(intents)
        if refused:
            log.warning("IDENTIFY asked for disallowed intent(s): %s", ", ".join(refused))
            await self._close_connection(connection, 4014)
            return
        shard = data.get("shard")
        if shard is not None and not _valid_shard(shard):
            await self._close_connection(connection, 4010)
            return
        large_threshold = data.get("large_threshold", 50)
        if not isinstance(large_threshold, int) or not 50 <= large_threshold <= 250:
            await self._close_connection(connection, 4002, "large_threshold must be between 50 and 250.")
            return
        session = GatewaySession(intents=intents, shard=shard, properties=data["properties"],
                                 presence=data.get("presence"), large_threshold=large_threshold)
        self.sessions[session.session_id] = session
        session.connection = connection
        connection.session = session
        self.session_starts_used += 1
        self.counters["identify_count"] += 1
        self.last_identify = {key: value for key, value in data.items() if key != "token"}
        log.info("IDENTIFY on connection %d: session %s intents=%d", connection.id, session.session_id, intents)
        ready: dict[str, Any] = {
            "v": 10,
            "user": self.world.bot_user_payload(),
            "guilds": [{"id": self.world.guild_id, "unavailable": True}],
            "session_id": session.session_id,
            "session_type": "normal",
            "resume_gateway_url": self._base_for(connection.request, "ws") + "/resume",
            "application": {"id": self.world.application_id, "flags": self.world.application_flags},
            "user_settings": {},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["emulated"],
            "auth": {},
            "_trace": [json.dumps(["discord-emulator", {"micros": 0}])],
        }
        if shard is not None:
            ready["shard"] = shard
        guild = self.world.guild_payload(include_all_members=bool(intents & INTENT_GUILD_MEMBERS),
                                         large_threshold=large_threshold)
        async with session.dispatch_lock:
            await self._send_dispatch(session, "READY", ready)
            await self._send_dispatch(session, "GUILD_CREATE", guild)
        connection.ready = True
        self._notify()

    async def _resume(self, connection: GatewayConnection, data: Any) -> None:
        if await self._refuse_handshake(connection, data, "RESUME", "session_id", str):
            return
        session = self.sessions.get(data["session_id"])
        sequence = data.get("seq")
        missed = None
        if session is not None and not session.invalidated and isinstance(sequence, int):
            if sequence > session.sequence:
                await self._close_connection(connection, 4007)
                return
            missed = session.missed_since(sequence)
        if session is None or session.invalidated or missed is None:
            log.info("RESUME on connection %d refused: session cannot be resumed", connection.id)
            await self._send_invalid_session(connection, resumable=False)
            return
        previous = session.connection
        if previous is not None and previous is not connection and previous.is_open:
            # A session lives on one connection; the older one is closed like Discord does on a takeover.
            await self._close_connection(previous, 4000, "Session resumed elsewhere.")
        # Under the session's lock, so that a message dispatched meanwhile lands after the replay, in order.
        async with session.dispatch_lock:
            session.connection = connection
            connection.session = session
            session.disconnected_at = None
            self.counters["resume_count"] += 1
            log.info("RESUME on connection %d: session %s from seq %s, replaying %d dispatch(es)", connection.id,
                     session.session_id, sequence, len(missed))
            for payload in missed:
                await connection.send(payload)
            await self._send_dispatch(session, "RESUMED", {"_trace": [json.dumps(["discord-emulator", {}])]})
        connection.ready = True
        self._notify()

    async def _send_invalid_session(self, connection: GatewayConnection, *, resumable: bool) -> None:
        self.counters["invalid_sessions_sent"] += 1
        if not resumable and connection.session is not None:
            connection.session.invalidated = True
        await connection.send(encode_payload(OP_INVALID_SESSION, resumable))
        # The client should close and reconnect; a client that does not is cut off so it cannot linger.
        self._spawn(self._close_if_lingering(connection))

    async def _close_if_lingering(self, connection: GatewayConnection) -> None:
        await asyncio.sleep(RESUME_HANDSHAKE_TIMEOUT_S)
        if connection.is_open:
            await self._close_connection(connection, 4000, "Client did not reconnect.")

    async def _send_member_chunk(self, session: GatewaySession, data: Any) -> None:
        if not isinstance(data, dict) or "guild_id" not in data:
            return
        members = list(self.world.members.values())
        if data.get("user_ids"):
            wanted = {str(user_id) for user_id in data["user_ids"]}
            members = [member for member in members if member.user.id in wanted]
            not_found = sorted(wanted - {member.user.id for member in members})
        else:
            query = str(data.get("query") or "").lower()
            members = [member for member in members if member.user.username.lower().startswith(query)]
            not_found = []
        limit = data.get("limit") or len(members)
        chunk: dict[str, Any] = {
            "guild_id": str(data["guild_id"]),
            "members": [member.payload() for member in members[:limit]],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": not_found,
        }
        if data.get("nonce"):
            chunk["nonce"] = data["nonce"]
        await self._dispatch_to(session, "GUILD_MEMBERS_CHUNK", chunk)

    async def _dispatch_to(self, session: GatewaySession, event: str, data: Any) -> None:
        async with session.dispatch_lock:
            await self._send_dispatch(session, event, data)

    async def _send_dispatch(self, session: GatewaySession, event: str, data: Any) -> None:
        payload = session.next_dispatch(event, data)
        self.counters["dispatches"] += 1
        connection = session.connection
        if connection is not None and connection.is_open:
            await connection.send(payload)

    def live_sessions(self) -> list[GatewaySession]:
        return [session for session in self.sessions.values() if not session.invalidated]

    # -- gateway controls -----------------------------------------------------------------------------------------

    def _require_connections(self, action: str) -> list[GatewayConnection]:
        connections = self._authenticated_connections()
        if not connections:
            raise EmulatorError(f"cannot {action}: no gateway session is connected (call wait_for_ready first)")
        return connections

    async def drop_connection(self, hold_seconds: float = 0.0) -> int:
        """Cuts every session's TCP connection with no close frame; new connections wait hold_seconds for HELLO."""
        connections = self._require_connections("drop the connection")
        if hold_seconds < 0:
            raise EmulatorError("hold_seconds must be >= 0")
        self.gateway_hold_until = time.monotonic() + hold_seconds
        for connection in connections:
            connection.abort()
            if connection.session is not None and connection.session.connection is connection:
                # Detach now, so that anything dispatched from here on waits in the replay buffer.
                connection.session.connection = None
                connection.session.disconnected_at = time.time()
        log.info("dropped %d gateway connection(s) without a close frame", len(connections))
        self._notify()
        return len(connections)

    async def close_gateway(self, code: int, reason: str | None = None) -> int:
        if not isinstance(code, int) or not (code == 1000 or 1001 <= code <= 1003 or 3000 <= code <= 4999):
            raise EmulatorError(f"close code must be 1000-1003 or 3000-4999, got {code!r}")
        connections = self._require_connections("close the gateway")
        for connection in connections:
            self._spawn(self._close_connection(connection, code, reason))
        await asyncio.sleep(0.05)
        return len(connections)

    async def send_reconnect(self) -> int:
        connections = self._require_connections("send RECONNECT")
        for connection in connections:
            self.counters["reconnects_sent"] += 1
            await connection.send(encode_payload(OP_RECONNECT))
            self._spawn(self._close_if_lingering(connection))
        return len(connections)

    async def send_invalid_session(self, resumable: bool) -> int:
        connections = self._require_connections("send INVALID_SESSION")
        for connection in connections:
            await self._send_invalid_session(connection, resumable=resumable)
        return len(connections)

    def inject_rest_errors(self, *, status: int, count: int = 1, retry_after: float = 1.0, route_contains: str = "",
                           method: str | None = None, is_global: bool = False, code: int = 0,
                           message: str | None = None) -> None:
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise EmulatorError(f"status must be an HTTP error status 400-599, got {status!r}")
        if not isinstance(count, int) or count < 1:
            raise EmulatorError(f"count must be a positive integer, got {count!r}")
        if not isinstance(retry_after, int | float) or retry_after < 0:
            raise EmulatorError(f"retry_after must be a number of seconds >= 0, got {retry_after!r}")
        if not isinstance(route_contains, str):
            raise EmulatorError("route_contains must be a string")
        self.injected_errors.append(InjectedError(
            status=status, remaining=count, route_contains=route_contains,
            method=method.upper() if method else None, retry_after=float(retry_after), is_global=is_global,
            code=code, message=message))

    def _take_injected_error(self, method: str, path: str) -> InjectedError | None:
        for error in self.injected_errors:
            if error.matches(method, path):
                error.remaining -= 1
                if error.remaining == 0:
                    self.injected_errors.remove(error)
                self.counters["rest_errors_injected"] += 1
                return error
        return None

    # -- messages -------------------------------------------------------------------------------------------------

    def _channel(self, channel_id: str | None) -> Channel:
        channel = self.world.channels.get(channel_id or self.world.text_channel.id)
        if channel is None or channel.type == CHANNEL_TYPE_GUILD_CATEGORY:
            raise EmulatorError(f"unknown channel_id {channel_id!r}: use a text channel id from info()")
        return channel

    def _build_message(self, *, channel: Channel, author: dict[str, Any], content: str, mentions: list[User],
                       mention_roles: list[str], mention_everyone: bool, message_type: int, tts: bool = False,
                       nonce: Any = None, embeds: list | None = None, attachments: list | None = None,
                       flags: int = 0, message_reference: dict | None = None,
                       referenced_message: dict | None = None, webhook_id: str | None = None,
                       components: list | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.world.snowflakes.new(),
            "type": message_type,
            "channel_id": channel.id,
            "author": author,
            "content": content,
            "timestamp": iso_timestamp(),
            "edited_timestamp": None,
            "tts": tts,
            "mention_everyone": mention_everyone,
            "mentions": [self.world.mention_user_payload(user, channel) for user in mentions],
            "mention_roles": mention_roles,
            "attachments": attachments or [],
            "embeds": [{"type": "rich", **embed} for embed in embeds or []],
            "pinned": False,
            "flags": flags,
            "components": components or [],
        }
        if nonce is not None:
            message["nonce"] = nonce
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
        if message_reference is not None:
            message["message_reference"] = message_reference
            message["referenced_message"] = referenced_message
        channel.messages.append(message)
        channel.last_message_id = message["id"]
        return message

    def _gateway_message(self, message: dict[str, Any], channel: Channel, author_id: str | None) -> dict[str, Any]:
        """MESSAGE_CREATE's shape: the REST message plus guild_id and the author's member."""
        event = dict(message)
        if channel.guild_id is not None:
            event["guild_id"] = channel.guild_id
            member = self.world.members.get(author_id) if author_id and "webhook_id" not in message else None
            if member is not None:
                event["member"] = member.payload(with_user=False)
        return event

    async def _dispatch_message(self, event: str, message: dict[str, Any], channel: Channel) -> None:
        needed_intent = INTENT_DIRECT_MESSAGES if channel.type == CHANNEL_TYPE_DM else INTENT_GUILD_MESSAGES
        bot_id = self.world.bot.id
        for session in self.live_sessions():
            if not session.intents & needed_intent:
                continue
            data = message
            content_visible = (
                session.intents & INTENT_MESSAGE_CONTENT or channel.type == CHANNEL_TYPE_DM
                or message["author"]["id"] == bot_id or any(user["id"] == bot_id for user in message["mentions"])
            )
            if not content_visible:
                # What Discord does for apps without the message-content intent.
                data = {**message, "content": "", "embeds": [], "attachments": [], "components": []}
                data.pop("poll", None)
            await self._dispatch_to(session, event, data)

    async def post_message(self, content: str, *, author_id: str | None = None, author_bot: bool = False,
                           webhook_id: str | None = None, message_type: int = MESSAGE_TYPE_DEFAULT,
                           channel_id: str | None = None, mention_everyone: bool | None = None,
                           author_role_ids: list[str] | None = None) -> dict[str, Any]:
        """A message from someone other than the bot, dispatched as MESSAGE_CREATE; returns the event data."""
        if not isinstance(content, str) or not content:
            raise EmulatorError("content must be a non-empty string")
        if len(content) > MAX_USER_CONTENT_LENGTH:
            raise EmulatorError(f"content is {len(content)} characters; Discord allows {MAX_USER_CONTENT_LENGTH}")
        for name, value in (("author_id", author_id), ("webhook_id", webhook_id)):
            if value is not None and not (isinstance(value, str) and value.isdigit()):
                raise EmulatorError(f"{name} must be a snowflake string of digits, got {value!r}")
        if not isinstance(message_type, int) or isinstance(message_type, bool) or message_type < 0:
            raise EmulatorError(f"message_type must be a non-negative integer, got {message_type!r}")
        channel = self._channel(channel_id)
        world = self.world
        if webhook_id is not None:
            author = {"id": webhook_id, "username": "Emulated Webhook", "discriminator": "0000", "avatar": None,
                      "bot": True, "global_name": None, "public_flags": 0, "flags": 0}
            may_mention_everyone = True
            member_author_id = None
        else:
            default_author = world.other_bot if author_bot else world.default_user
            user = world.user_for(author_id) if author_id else default_author
            if author_role_ids is not None:
                if not isinstance(author_role_ids, list):
                    raise EmulatorError("author_role_ids must be a list of role ids")
                unknown = [role_id for role_id in author_role_ids if role_id not in world.roles]
                if unknown:
                    raise EmulatorError(f"unknown role id(s) {unknown}: use role ids from info()")
            author = user.payload()
            if author_bot:
                author["bot"] = True
            may_mention_everyone = bool(world.permissions_in(user.id, channel, author_role_ids) & PERM_MENTION_EVERYONE)
            member_author_id = user.id
        if mention_everyone is None:
            mention_everyone = bool(EVERYONE_MENTION.search(content)) and may_mention_everyone
        message = self._build_message(
            channel=channel, author=author, content=content, mentions=world.mentioned_users(content),
            mention_roles=world.mentioned_role_ids(content) if channel.guild_id else [],
            mention_everyone=bool(mention_everyone), message_type=message_type, webhook_id=webhook_id)
        event = self._gateway_message(message, channel, member_author_id)
        if author_role_ids is not None and "member" in event:
            # The roles apply to this message only, so one test's moderator does not leak into the next message.
            event["member"] = {**event["member"], "roles": [r for r in author_role_ids if r != world.guild_id]}
        self.posted_messages.append(event)
        await self._dispatch_message("MESSAGE_CREATE", event, channel)
        self._notify()
        return event

    # -- REST -----------------------------------------------------------------------------------------------------

    def _add_api_routes(self, app: web.Application) -> None:
        p = API_PREFIX
        router = app.router
        router.add_get(f"{p}/users/@me", self._get_current_user)
        router.add_get(f"{p}/users/{{user_id:\\d+}}", self._get_user)
        router.add_post(f"{p}/users/@me/channels", self._create_dm)
        router.add_get(f"{p}/oauth2/applications/@me", self._get_application)
        router.add_get(f"{p}/applications/@me", self._get_application)
        router.add_get(f"{p}/gateway", self._get_gateway)
        router.add_get(f"{p}/gateway/bot", self._get_gateway_bot)
        router.add_get(f"{p}/channels/{{channel_id:\\d+}}", self._get_channel)
        router.add_post(f"{p}/channels/{{channel_id:\\d+}}/messages", self._create_message)
        router.add_get(f"{p}/channels/{{channel_id:\\d+}}/messages", self._list_messages)
        router.add_get(f"{p}/channels/{{channel_id:\\d+}}/messages/{{message_id:\\d+}}", self._get_message)
        router.add_patch(f"{p}/channels/{{channel_id:\\d+}}/messages/{{message_id:\\d+}}", self._edit_message)
        router.add_delete(f"{p}/channels/{{channel_id:\\d+}}/messages/{{message_id:\\d+}}", self._delete_message)
        router.add_post(f"{p}/channels/{{channel_id:\\d+}}/typing", self._trigger_typing)
        router.add_put(f"{p}/channels/{{channel_id:\\d+}}/messages/{{message_id:\\d+}}/reactions/{{emoji}}/@me",
                       self._add_reaction)
        router.add_get(f"{p}/guilds/{{guild_id:\\d+}}", self._get_guild)
        router.add_get(f"{p}/guilds/{{guild_id:\\d+}}/members/{{user_id:\\d+}}", self._get_member)
        for path in (f"{p}/applications/{{application_id:\\d+}}/commands",
                     f"{p}/applications/{{application_id:\\d+}}/guilds/{{guild_id:\\d+}}/commands"):
            router.add_get(path, self._get_commands)
            router.add_put(path, self._put_commands)

    @web.middleware
    async def _api_middleware(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        relative_path = request.path.removeprefix(API_PREFIX) if request.path.startswith(API_PREFIX + "/") \
            else request.path
        line = f"{request.method} {relative_path}"
        self.rest_requests.append(line)
        response = await self._api_response(request, handler, line)
        if response.status >= 400:
            log.warning("REST %s -> %d", line, response.status)
        self._notify()
        return response

    async def _api_response(self, request: web.Request, handler: Callable, line: str) -> web.StreamResponse:
        match_info = request.match_info
        if match_info.http_exception is not None:
            status = match_info.http_exception.status
            self.unknown_routes.append(line)
            return generic_error(status)
        authorization = request.headers.get("Authorization", "")
        if not (authorization.startswith("Bot ") and self.token_is_valid(authorization[4:])):
            return error_response(401, "401: Unauthorized")
        template = match_info.route.resource.canonical if match_info.route.resource else request.path
        major = next((match_info[key] for key in ("channel_id", "guild_id", "webhook_id") if key in match_info), "")
        bucket = self.rate_limiter.bucket_for(request.method, template, major)
        injected = self._take_injected_error(request.method, request.path)
        if injected is not None:
            return injected.response(bucket)
        wait = bucket.try_take()
        if wait is not None:
            self.counters["rate_limited"] += 1
            return rate_limited_response(wait, is_global=False, bucket=bucket)
        response = await handler(request)
        response.headers.update(bucket.headers())
        response.headers["Via"] = VIA_HEADER
        return response

    async def _get_current_user(self, _request: web.Request) -> web.Response:
        return json_response(self.world.bot_user_payload())

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self.world.users.get(request.match_info["user_id"])
        if user is None:
            return error_response(404, "Unknown User", 10013)
        return json_response(user.payload())

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        recipient_id = str(body.get("recipient_id", ""))
        if not recipient_id.isdigit() or recipient_id not in self.world.users:
            return form_error("recipient_id", "NUMBER_TYPE_COERCE", f"Value \"{recipient_id}\" is not snowflake.")
        return json_response(self.world.open_dm(recipient_id).payload())

    async def _get_application(self, _request: web.Request) -> web.Response:
        return json_response(self.world.application_payload())

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return json_response({"url": self._base_for(request, "ws")})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return json_response({
            "url": self._base_for(request, "ws"),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 1000 - self.session_starts_used,
                                    "reset_after": 86_400_000, "max_concurrency": 1},
        })

    def _rest_message(self, request: web.Request) -> tuple[Channel, dict[str, Any]] | web.Response:
        """The channel and message a /channels/{id}/messages/{id} route names, or Discord's 404 for either."""
        channel = self._rest_channel(request)
        if isinstance(channel, web.Response):
            return channel
        message = channel.find_message(request.match_info["message_id"])
        if message is None:
            return error_response(404, "Unknown Message", 10008)
        return channel, message

    def _rest_channel(self, request: web.Request) -> Channel | web.Response:
        channel = self.world.channels.get(request.match_info["channel_id"])
        if channel is None:
            return error_response(404, "Unknown Channel", 10003)
        bot_permissions = self.world.permissions_in(self.world.bot.id, channel)
        if not bot_permissions & PERM_VIEW_CHANNEL:
            return error_response(403, "Missing Access", 50001)
        return channel

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel = self._rest_channel(request)
        if isinstance(channel, web.Response):
            return channel
        return json_response(channel.payload())

    async def _create_message(self, request: web.Request) -> web.Response:
        channel = self._rest_channel(request)
        if isinstance(channel, web.Response):
            return channel
        if channel.type == CHANNEL_TYPE_GUILD_CATEGORY:
            return error_response(400, "Cannot send messages in a non-text channel", 50008)
        body, uploads = await _message_body(request)
        if isinstance(body, web.Response):
            return body
        problem = _validate_message_body(body, uploads)
        if problem is not None:
            return problem
        world = self.world
        bot_permissions = world.permissions_in(world.bot.id, channel)
        if not bot_permissions & PERM_SEND_MESSAGES:
            return error_response(403, "Missing Permissions", 50013)
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            earlier = self._nonces.get((channel.id, str(nonce)))
            if earlier and time.time() - earlier[0] < NONCE_DEDUPLICATION_S:
                return json_response(earlier[1])
        content = body.get("content") or ""
        reference = body.get("message_reference")
        referenced = None
        if reference is not None:
            referenced = self._channel_message(reference, channel)
            if referenced is None and reference.get("fail_if_not_exists", True):
                return form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
        allowed = body.get("allowed_mentions")
        mentions, mention_roles, mention_everyone = self._allowed_mentions(content, allowed, referenced, channel,
                                                                           bot_permissions)
        attachments = [self._store_attachment(request, channel, *upload) for upload in uploads]
        message = self._build_message(
            channel=channel, author=world.bot.payload(), content=content, mentions=mentions,
            mention_roles=mention_roles, mention_everyone=mention_everyone,
            message_type=MESSAGE_TYPE_REPLY if referenced is not None else MESSAGE_TYPE_DEFAULT,
            tts=bool(body.get("tts")) and bool(bot_permissions & PERM_SEND_TTS_MESSAGES), nonce=nonce,
            embeds=body.get("embeds"), attachments=attachments, flags=body.get("flags") or 0,
            message_reference=_stored_reference(reference, channel), referenced_message=referenced,
            components=body.get("components"))
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(channel.id, str(nonce))] = (time.time(), message)
        self.bot_messages.append({
            "id": message["id"],
            "channel_id": channel.id,
            "content": body.get("content"),
            "allowed_mentions": allowed,
            "message_reference": reference,
            "tts": body.get("tts"),
            "nonce": nonce,
            "embeds": body.get("embeds"),
            "flags": body.get("flags"),
            "attachments": [attachment["filename"] for attachment in attachments],
            "received_at": time.time(),
            "raw": body,
        })
        await self._dispatch_message("MESSAGE_CREATE", self._gateway_message(message, channel, world.bot.id),
                                     channel)
        return json_response(message)

    def _store_attachment(self, request: web.Request, channel: Channel, filename: str, content_type: str,
                          data: bytes) -> dict[str, Any]:
        attachment_id = self.world.snowflakes.new()
        self.attachments[attachment_id] = (content_type, data)
        while len(self.attachments) > MAX_STORED_ATTACHMENTS:
            self.attachments.pop(next(iter(self.attachments)))
        url = f"{self._base_for(request, 'http')}/attachments/{channel.id}/{attachment_id}/{filename}"
        return {"id": attachment_id, "filename": filename, "size": len(data), "content_type": content_type,
                "url": url, "proxy_url": url}

    async def _get_attachment(self, request: web.Request) -> web.Response:
        stored = self.attachments.get(request.match_info["attachment_id"])
        if stored is None:
            return generic_error(404)
        return web.Response(body=stored[1], content_type=stored[0].split(";")[0])

    def _channel_message(self, reference: dict[str, Any], channel: Channel) -> dict[str, Any] | None:
        target = self.world.channels.get(str(reference.get("channel_id") or channel.id))
        return target.find_message(str(reference.get("message_id"))) if target else None

    def _allowed_mentions(self, content: str, allowed: dict | None, referenced: dict | None, channel: Channel,
                          bot_permissions: int) -> tuple[list[User], list[str], bool]:
        """What Discord pings for a message the bot sends, honouring allowed_mentions like Discord does."""
        world = self.world
        users = world.mentioned_users(content)
        roles = world.mentioned_role_ids(content) if channel.guild_id else []
        everyone = bool(EVERYONE_MENTION.search(content)) and bool(bot_permissions & PERM_MENTION_EVERYONE)
        replied_user = referenced is not None
        if allowed is not None:
            parse = allowed.get("parse", [])
            if "users" not in parse:
                permitted = {str(user_id) for user_id in allowed.get("users", [])}
                users = [user for user in users if user.id in permitted]
            if "roles" not in parse:
                permitted = {str(role_id) for role_id in allowed.get("roles", [])}
                roles = [role_id for role_id in roles if role_id in permitted]
            everyone = everyone and "everyone" in parse
            replied_user = replied_user and bool(allowed.get("replied_user", False))
        if replied_user and referenced is not None:
            author_id = referenced["author"]["id"]
            author = world.users.get(author_id)
            if author is not None and author not in users and author_id != world.bot.id:
                users.append(author)
        return users, roles, everyone

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel = self._rest_channel(request)
        if isinstance(channel, web.Response):
            return channel
        try:
            limit = int(request.query.get("limit", "50"))
        except ValueError:
            return form_error("limit", "NUMBER_TYPE_COERCE", "Value is not int.")
        if not 1 <= limit <= 100:
            return form_error("limit", "NUMBER_TYPE_MAX", "int value should be between 1 and 100.")
        messages = list(channel.messages)
        if "before" in request.query:
            messages = [m for m in messages if int(m["id"]) < int(request.query["before"])]
        if "after" in request.query:
            messages = [m for m in messages if int(m["id"]) > int(request.query["after"])]
        return json_response(list(reversed(messages))[:limit])

    async def _get_message(self, request: web.Request) -> web.Response:
        found = self._rest_message(request)
        if isinstance(found, web.Response):
            return found
        _channel, message = found
        return json_response(message)

    async def _edit_message(self, request: web.Request) -> web.Response:
        found = self._rest_message(request)
        if isinstance(found, web.Response):
            return found
        channel, message = found
        if message["author"]["id"] != self.world.bot.id:
            return error_response(403, "Cannot edit a message authored by another user", 50005)
        body = await _json_body(request)
        if isinstance(body, web.Response):
            return body
        if "content" in body:
            content = body["content"] or ""
            if len(content) > MAX_CONTENT_LENGTH:
                return form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
            message["content"] = content
        if "embeds" in body:
            message["embeds"] = [{"type": "rich", **embed} for embed in body["embeds"] or []]
        if "flags" in body:
            message["flags"] = body["flags"] or 0
        message["edited_timestamp"] = iso_timestamp()
        await self._dispatch_message("MESSAGE_UPDATE", self._gateway_message(message, channel, self.world.bot.id),
                                     channel)
        return json_response(message)

    async def _delete_message(self, request: web.Request) -> web.Response:
        found = self._rest_message(request)
        if isinstance(found, web.Response):
            return found
        channel, message = found
        channel.messages.remove(message)
        deleted: dict[str, Any] = {"id": message["id"], "channel_id": channel.id}
        if channel.guild_id:
            deleted["guild_id"] = channel.guild_id
        needed_intent = INTENT_DIRECT_MESSAGES if channel.type == CHANNEL_TYPE_DM else INTENT_GUILD_MESSAGES
        for session in self.live_sessions():
            if session.intents & needed_intent:
                await self._dispatch_to(session, "MESSAGE_DELETE", deleted)
        return web.Response(status=204)

    async def _trigger_typing(self, request: web.Request) -> web.Response:
        channel = self._rest_channel(request)
        if isinstance(channel, web.Response):
            return channel
        return web.Response(status=204)

    async def _add_reaction(self, request: web.Request) -> web.Response:
        found = self._rest_message(request)
        if isinstance(found, web.Response):
            return found
        _channel, message = found
        emoji = request.match_info["emoji"]
        reactions = message.setdefault("reactions", [])
        for reaction in reactions:
            if reaction["emoji"]["name"] == emoji:
                if not reaction["me"]:
                    reaction["me"] = True
                    reaction["count"] += 1
                break
        else:
            reactions.append({"count": 1, "me": True, "emoji": {"id": None, "name": emoji}, "burst_colors": [],
                              "count_details": {"burst": 0, "normal": 1}, "me_burst": False, "burst_me": False,
                              "burst_count": 0})
        return web.Response(status=204)

    async def _get_guild(self, request: web.Request) -> web.Response:
        if request.match_info["guild_id"] != self.world.guild_id:
            return error_response(404, "Unknown Guild", 10004)
        guild = self.world.guild_payload(include_all_members=False, large_threshold=250)
        for gateway_only in ("members", "channels", "threads", "presences", "voice_states", "stage_instances",
                             "guild_scheduled_events", "soundboard_sounds", "embedded_activities",
                             "activity_instances", "joined_at", "large", "unavailable", "member_count", "lazy",
                             "application_command_counts"):
            guild.pop(gateway_only, None)
        return json_response(guild)

    async def _get_member(self, request: web.Request) -> web.Response:
        if request.match_info["guild_id"] != self.world.guild_id:
            return error_response(404, "Unknown Guild", 10004)
        member = self.world.members.get(request.match_info["user_id"])
        if member is None:
            return error_response(404, "Unknown Member", 10007)
        return json_response(member.payload())

    def _command_key(self, request: web.Request) -> str | web.Response:
        if request.match_info["application_id"] != self.world.application_id:
            return error_response(403, "Missing Access", 50001)
        guild_id = request.match_info.get("guild_id")
        if guild_id is not None and guild_id != self.world.guild_id:
            return error_response(403, "Missing Access", 50001)
        return guild_id or "global"

    async def _get_commands(self, request: web.Request) -> web.Response:
        key = self._command_key(request)
        if isinstance(key, web.Response):
            return key
        return json_response(self.application_commands.get(key, []))

    async def _put_commands(self, request: web.Request) -> web.Response:
        key = self._command_key(request)
        if isinstance(key, web.Response):
            return key
        body = await _json_body(request, expect=list)
        if isinstance(body, web.Response):
            return body
        commands = []
        for command in body:
            if not isinstance(command, dict) or not command.get("name"):
                return form_error("0.name", "BASE_TYPE_REQUIRED", "This field is required")
            commands.append({"id": self.world.snowflakes.new(), "application_id": self.world.application_id,
                             "version": self.world.snowflakes.new(), "type": 1, "description": "",
                             "default_member_permissions": None, "nsfw": False, "contexts": None,
                             "integration_types": [0], **command,
                             **({"guild_id": key} if key != "global" else {})})
        self.application_commands[key] = commands
        return json_response(commands)


def check_token(token: Any) -> None:
    if not isinstance(token, str) or not token or token != token.strip() or " " in token:
        raise ValueError("token must be a non-empty string without spaces (the bot token, without the 'Bot ' prefix)")


def _valid_shard(shard: Any) -> bool:
    return (isinstance(shard, list) and len(shard) == 2 and all(isinstance(n, int) for n in shard)
            and shard[1] >= 1 and 0 <= shard[0] < shard[1])


async def _json_body(request: web.Request, expect: type = dict) -> Any:
    try:
        body = json.loads(await request.text() or "null")
    except ValueError:
        return error_response(400, "The request body contains invalid JSON.", 50109)
    if not isinstance(body, expect):
        return error_response(400, "The request body contains invalid JSON.", 50109)
    return body


async def _message_body(request: web.Request) -> tuple[Any, list[tuple[str, str, bytes]]]:
    """The JSON payload of a message create, from a JSON body or from multipart's payload_json plus files[n]."""
    if not request.content_type.startswith("multipart/"):
        return await _json_body(request), []
    body: Any = {}
    uploads: list[tuple[str, str, bytes]] = []
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if part.name == "payload_json":
            try:
                body = json.loads(await part.text())
            except ValueError:
                return error_response(400, "The request body contains invalid JSON.", 50109), []
        elif part.name and part.name.startswith("files["):
            data = await part.read()
            uploads.append((part.filename or "unknown", part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(data)))
    if not isinstance(body, dict):
        return error_response(400, "The request body contains invalid JSON.", 50109), []
    return body, uploads


def _validate_message_body(body: dict[str, Any], uploads: list) -> web.Response | None:
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        return form_error("content", "STRING_TYPE_CONVERT", "Could not interpret value as string.")
    if content is not None and len(content) > MAX_CONTENT_LENGTH:
        return form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    embeds = body.get("embeds")
    if embeds is not None and (not isinstance(embeds, list) or not all(isinstance(e, dict) for e in embeds)):
        return form_error("embeds", "LIST_TYPE_CONVERT", "Only iterables may be used in a ListType.")
    if embeds and len(embeds) > MAX_EMBEDS:
        return form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    nonce = body.get("nonce")
    nonce_ok = isinstance(nonce, int) or (isinstance(nonce, str) and len(nonce) <= MAX_NONCE_LENGTH)
    if nonce is not None and not nonce_ok:
        return form_error("nonce", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 25 in length.")
    allowed = body.get("allowed_mentions")
    if allowed is not None:
        if not isinstance(allowed, dict):
            return form_error("allowed_mentions", "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
        parse = allowed.get("parse", [])
        if not isinstance(parse, list) or any(kind not in ("users", "roles", "everyone") for kind in parse):
            return form_error("allowed_mentions.parse", "ENUM_TYPE_COERCE",
                              "Value must be one of ('users', 'roles', 'everyone').")
        for kind in ("users", "roles"):
            if kind in parse and allowed.get(kind):
                return form_error(f"allowed_mentions.{kind}", "SET_TYPE_ALREADY_CONTAINS_VALUE",
                                  f"The {kind} key is mutually exclusive with parse: [\"{kind}\"].")
    reference = body.get("message_reference")
    reference_ok = isinstance(reference, dict) and str(reference.get("message_id", "")).isdigit()
    if reference is not None and not reference_ok:
        return form_error("message_reference.message_id", "BASE_TYPE_REQUIRED", "This field is required")
    has_payload = bool(content) or bool(embeds) or bool(body.get("sticker_ids")) or bool(body.get("components")) \
        or bool(uploads) or bool(body.get("poll"))
    if not has_payload:
        return error_response(400, "Cannot send an empty message", 50006)
    return None


def _stored_reference(reference: dict | None, channel: Channel) -> dict | None:
    if reference is None:
        return None
    stored = {"type": reference.get("type", 0), "channel_id": str(reference.get("channel_id") or channel.id),
              "message_id": str(reference["message_id"])}
    if channel.guild_id:
        stored["guild_id"] = channel.guild_id
    return stored
