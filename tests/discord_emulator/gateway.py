"""Gateway sessions and connections: sequence numbers, the replay buffer, zlib-stream framing."""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway).
OP_DISPATCH = 0
OP_HEARTBEAT = 1
OP_IDENTIFY = 2
OP_PRESENCE_UPDATE = 3
OP_VOICE_STATE_UPDATE = 4
OP_RESUME = 6
OP_RECONNECT = 7
OP_REQUEST_GUILD_MEMBERS = 8
OP_INVALID_SESSION = 9
OP_HELLO = 10
OP_HEARTBEAT_ACK = 11
OP_REQUEST_SOUNDBOARD_SOUNDS = 31
CLIENT_OPCODES = {
    OP_HEARTBEAT, OP_IDENTIFY, OP_PRESENCE_UPDATE, OP_VOICE_STATE_UPDATE, OP_RESUME, OP_REQUEST_GUILD_MEMBERS,
    OP_REQUEST_SOUNDBOARD_SOUNDS,
}

# Close codes with the reason texts Discord sends.
CLOSE_REASONS = {
    4000: "Unknown error.",
    4001: "Unknown opcode.",
    4002: "Error while decoding payload.",
    4003: "Not authenticated.",
    4004: "Authentication failed.",
    4005: "Already authenticated.",
    4007: "Invalid seq.",
    4008: "Rate limited.",
    4009: "Session timed out.",
    4010: "Invalid shard.",
    4011: "Sharding required.",
    4012: "Invalid API version.",
    4013: "Invalid intent(s).",
    4014: "Disallowed intent(s).",
}
# After these the session cannot be resumed: the client must IDENTIFY again (or give up).
SESSION_ENDING_CLOSE_CODES = {4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}
# A client that closes with these ends its session on purpose (Discord then shows the bot offline).
CLIENT_SESSION_ENDING_CLOSE_CODES = {1000, 1001}

# Discord allows 120 gateway events per connection per 60 seconds.
GATEWAY_EVENTS_PER_MINUTE = 120
REPLAY_BUFFER_LIMIT = 2000

_connection_ids = itertools.count(1)


def encode_payload(op: int, data: Any = None, *, event: str | None = None, sequence: int | None = None) -> dict:
    return {"op": op, "d": data, "s": sequence, "t": event}


@dataclass
class GatewaySession:
    """One IDENTIFY's worth of state; survives dropped connections so that RESUME can continue it."""

    intents: int
    shard: list[int] | None
    properties: dict[str, Any]
    presence: dict[str, Any] | None
    large_threshold: int
    session_id: str = field(default_factory=lambda: secrets.token_hex(16))
    sequence: int = 0
    replay_buffer: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REPLAY_BUFFER_LIMIT))
    connection: GatewayConnection | None = None
    invalidated: bool = False
    created_at: float = field(default_factory=time.time)
    disconnected_at: float | None = None
    dispatch_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def next_dispatch(self, event: str, data: Any) -> dict[str, Any]:
        self.sequence += 1
        payload = encode_payload(OP_DISPATCH, data, event=event, sequence=self.sequence)
        self.replay_buffer.append(payload)
        return payload

    def missed_since(self, sequence: int) -> list[dict[str, Any]] | None:
        """Dispatches after `sequence`, or None when some of them have already left the replay buffer."""
        missed = [payload for payload in self.replay_buffer if payload["s"] > sequence]
        if missed and missed[0]["s"] != sequence + 1:
            return None
        if not missed and sequence != self.sequence:
            return None
        return missed


class GatewayConnection:
    """One WebSocket. Owns the zlib-stream compressor, which must see every frame of the connection in order."""

    def __init__(self, websocket: web.WebSocketResponse, request: web.Request, *, compression: str | None) -> None:
        self.id = next(_connection_ids)
        self.websocket = websocket
        self.request = request
        self.compression = compression
        self.path = request.path
        self._compressor = zlib.compressobj() if compression == "zlib-stream" else None
        self._send_lock = asyncio.Lock()
        self.session: GatewaySession | None = None
        # Set once READY (or RESUMED) has gone out: from then on the session counts as connected.
        self.ready = False
        self.opened_at = time.monotonic()
        self.last_heartbeat_at = time.monotonic()
        self.event_times: deque[float] = deque()
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.closed_by: str | None = None
        self.frames_sent = 0

    @property
    def is_open(self) -> bool:
        return not self.websocket.closed and self.closed_by is None

    @property
    def peer(self) -> str:
        peername = self.request.transport.get_extra_info("peername") if self.request.transport else None
        return f"{peername[0]}:{peername[1]}" if peername else "unknown"

    async def send(self, payload: dict[str, Any]) -> bool:
        """Sends one gateway payload; False when the connection is already gone (the caller keeps it for replay)."""
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        async with self._send_lock:
            if self.websocket.closed:
                return False
            try:
                if self._compressor is not None:
                    frame = self._compressor.compress(text.encode()) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.websocket.send_bytes(frame)
                else:
                    await self.websocket.send_str(text)
            except (ConnectionError, RuntimeError):
                return False
            self.frames_sent += 1
            return True

    def count_event(self) -> bool:
        """Records one received event; False once the client exceeds Discord's gateway send limit."""
        now = time.monotonic()
        self.event_times.append(now)
        while self.event_times and self.event_times[0] < now - 60:
            self.event_times.popleft()
        return len(self.event_times) <= GATEWAY_EVENTS_PER_MINUTE

    def record_client_close(self, code: int, reason: str) -> None:
        if self.closed_by is None:
            self.closed_by = "client"
            self.close_code = code
            self.close_reason = reason

    async def close(self, code: int, reason: str | None = None) -> None:
        if self.closed_by is None:
            self.closed_by = "server"
            self.close_code = code
            self.close_reason = reason if reason is not None else CLOSE_REASONS.get(code, "")
        await self.websocket.close(code=code, message=self.close_reason.encode())

    def abort(self) -> None:
        """Cuts the TCP connection without a close frame, like a network failure."""
        if self.closed_by is None:
            self.closed_by = "abrupt"
            self.close_code = 1006
            self.close_reason = "connection dropped without a close frame"
        transport = self.request.transport
        if transport is not None:
            transport.abort()
