"""The control API under /_emulator: what tests and the CLI use to play the other side of the conversation."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import DiscordEmulator

CONTROL_PREFIX = "/_emulator"
MAX_WAIT_S = 600


def add_routes(app: web.Application, emulator: DiscordEmulator) -> None:
    handlers = ControlHandlers(emulator)
    routes: list[tuple[str, str, Callable[[dict[str, Any]], Awaitable[Any]]]] = [
        ("GET", "/info", handlers.info),
        ("GET", "/state", handlers.state),
        ("POST", "/wait-ready", handlers.wait_ready),
        ("POST", "/messages", handlers.post_message),
        ("GET", "/bot-messages", handlers.bot_messages),
        ("POST", "/wait-bot-messages", handlers.wait_bot_messages),
        ("DELETE", "/messages", handlers.reset_messages),
        ("POST", "/gateway/drop", handlers.drop_connection),
        ("POST", "/gateway/close", handlers.close_gateway),
        ("POST", "/gateway/reconnect", handlers.send_reconnect),
        ("POST", "/gateway/invalid-session", handlers.send_invalid_session),
        ("POST", "/rest-errors", handlers.inject_rest_errors),
        ("POST", "/token/revoke", handlers.revoke_token),
        ("PUT", "/token", handlers.set_token),
        ("POST", "/shutdown", handlers.shutdown),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, CONTROL_PREFIX + path, _json_endpoint(handler))


class ControlRequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_endpoint(handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> Callable:
    async def endpoint(request: web.Request) -> web.Response:
        from .server import EmulatorError

        try:
            text = await request.text()
            body = json.loads(text) if text else {}
        except ValueError:
            return web.json_response({"error": "the request body must be a JSON object"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "the request body must be a JSON object"}, status=400)
        try:
            result = await handler(body)
        except ControlRequestError as error:
            return web.json_response({"error": str(error)}, status=error.status)
        except (EmulatorError, ValueError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(result)

    return endpoint


def _number(body: dict[str, Any], name: str, default: float, *, minimum: float = 0, maximum: float = MAX_WAIT_S
            ) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not minimum <= value <= maximum:
        raise ControlRequestError(400, f"{name} must be a number between {minimum} and {maximum}, got {value!r}")
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int, *, minimum: int = 0) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ControlRequestError(400, f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _only(body: dict[str, Any], *allowed: str) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise ControlRequestError(400, f"unknown field(s) {unknown}; allowed: {sorted(allowed)}")


class ControlHandlers:
    def __init__(self, emulator: DiscordEmulator) -> None:
        self.emulator = emulator

    async def info(self, _body: dict[str, Any]) -> dict[str, Any]:
        return self.emulator.info()

    async def state(self, _body: dict[str, Any]) -> dict[str, Any]:
        return self.emulator.state()

    async def wait_ready(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "timeout")
        timeout = _number(body, "timeout", 10)
        if not await self.emulator.wait_until(self.emulator.is_connected, timeout):
            state = self.emulator.state()
            raise ControlRequestError(408, (
                f"no gateway session became ready within {timeout:g}s: connections={state['connections']} "
                f"identify_count={state['identify_count']} last_close_code={state['last_close_code']} "
                f"rejected={state['rejected_connections'][-1:]} rest_requests={state['rest_requests'][-5:]}"))
        return self.emulator.state()

    async def post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "content", "author_id", "author_bot", "webhook_id", "message_type", "channel_id",
              "mention_everyone", "author_role_ids")
        if "content" not in body:
            raise ControlRequestError(400, "content is required")
        return await self.emulator.post_message(
            body["content"], author_id=body.get("author_id"), author_bot=bool(body.get("author_bot", False)),
            webhook_id=body.get("webhook_id"), message_type=body.get("message_type", 0),
            channel_id=body.get("channel_id"), mention_everyone=body.get("mention_everyone"),
            author_role_ids=body.get("author_role_ids"))

    async def bot_messages(self, _body: dict[str, Any]) -> list[dict[str, Any]]:
        return list(self.emulator.bot_messages)

    async def wait_bot_messages(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        _only(body, "count", "timeout", "after")
        count = _integer(body, "count", 1, minimum=1)
        after = _integer(body, "after", 0)
        timeout = _number(body, "timeout", 10)
        emulator = self.emulator
        if not await emulator.wait_until(lambda: len(emulator.bot_messages) >= after + count, timeout):
            arrived = emulator.bot_messages[after:]
            state = emulator.state()
            raise ControlRequestError(408, (
                f"expected {count} bot message(s) after index {after} within {timeout:g}s, got {len(arrived)}: "
                f"{[message['content'] for message in arrived]}; connected={state['connected']} "
                f"posted_messages={state['posted_message_count']} last REST calls={state['rest_requests'][-5:]} "
                f"pending injected errors={state['pending_rest_errors']}"))
        return emulator.bot_messages[after:after + count]

    async def reset_messages(self, _body: dict[str, Any]) -> dict[str, Any]:
        self.emulator.reset_messages()
        return {"ok": True}

    async def drop_connection(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "hold_seconds")
        dropped = await self.emulator.drop_connection(_number(body, "hold_seconds", 0.0, maximum=60))
        return {"dropped": dropped}

    async def close_gateway(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "code", "reason")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason.encode()) > 123):
            raise ControlRequestError(400, "reason must be a string of at most 123 bytes (a WebSocket limit)")
        closed = await self.emulator.close_gateway(_integer(body, "code", 4000), reason)
        return {"closed": closed}

    async def send_reconnect(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body)
        return {"sent": await self.emulator.send_reconnect()}

    async def send_invalid_session(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "resumable")
        resumable = body.get("resumable", False)
        if not isinstance(resumable, bool):
            raise ControlRequestError(400, f"resumable must be true or false, got {resumable!r}")
        return {"sent": await self.emulator.send_invalid_session(resumable)}

    async def inject_rest_errors(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "status", "count", "retry_after", "route_contains", "method", "global", "code", "message")
        if "status" not in body:
            raise ControlRequestError(400, "status is required, e.g. 429 or 500")
        self.emulator.inject_rest_errors(
            status=body["status"], count=body.get("count", 1), retry_after=body.get("retry_after", 1.0),
            route_contains=body.get("route_contains", ""), method=body.get("method"),
            is_global=bool(body.get("global", False)), code=body.get("code", 0), message=body.get("message"))
        return {"pending": [error.describe() for error in self.emulator.injected_errors]}

    async def revoke_token(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body)
        return {"closed": await self.emulator.revoke_token()}

    async def set_token(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body, "token")
        self.emulator.set_token(body.get("token"))
        return {"ok": True}

    async def shutdown(self, body: dict[str, Any]) -> dict[str, Any]:
        _only(body)
        callback = self.emulator.on_shutdown_request
        if callback is None:
            raise ControlRequestError(409, "this emulator is not managed by a runner that can shut it down")
        # Answered first, stopped right after, so the caller gets its reply.
        asyncio.get_running_loop().call_later(0.05, callback)
        return {"ok": True}
