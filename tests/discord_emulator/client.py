"""Synchronous control of an emulator over its HTTP control API, in this process or another one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

from .server import DiscordEmulator

# Extra seconds a long-polling control call may take beyond its own timeout before the HTTP call gives up.
HTTP_SLACK_S = 5.0


class EmulatorControlError(RuntimeError):
    """The emulator refused a control request; the message is the emulator's explanation."""


class EmulatorClient:
    """Drives an emulator through http://HOST:PORT/_emulator; every method blocks until the emulator answered."""

    def __init__(self, control_url: str) -> None:
        parsed = urllib.parse.urlsplit(control_url)
        if parsed.scheme != "http" or not parsed.netloc:
            raise ValueError(f"control_url must look like http://127.0.0.1:PORT/_emulator, got {control_url!r}")
        self.control_url = control_url.rstrip("/")
        self._info: dict[str, Any] | None = None

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 10.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http in __init__
            self.control_url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", error.reason)
            except (ValueError, AttributeError):
                message = error.reason
            if error.code == 408:
                raise TimeoutError(message) from None
            raise EmulatorControlError(f"{method} {path}: {message}") from None
        except urllib.error.URLError as error:
            raise EmulatorControlError(f"cannot reach the emulator at {self.control_url}: {error.reason}") from None

    # -- addresses ------------------------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self._call("GET", "/info")
        return self._info

    @property
    def api_base(self) -> str:
        return self.info()["api_base"]

    @property
    def gateway_url(self) -> str:
        return self.info()["gateway_url"]

    @property
    def bot_user_id(self) -> str:
        return self.info()["bot_user_id"]

    @property
    def application_id(self) -> str:
        return self.info()["application_id"]

    @property
    def guild_id(self) -> str:
        return self.info()["guild_id"]

    @property
    def channel_id(self) -> str:
        return self.info()["channel_id"]

    @property
    def read_only_channel_id(self) -> str:
        return self.info()["read_only_channel_id"]

    @property
    def dm_channel_id(self) -> str:
        return self.info()["dm_channel_id"]

    @property
    def user_id(self) -> str:
        return self.info()["user_id"]

    @property
    def owner_id(self) -> str:
        return self.info()["owner_id"]

    @property
    def role_id(self) -> str:
        return self.info()["role_id"]

    # -- control --------------------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return self._call("GET", "/state")

    def wait_for_ready(self, timeout: float = 10) -> dict[str, Any]:
        """Blocks until a gateway session has identified (READY sent) and its connection is open."""
        return self._call("POST", "/wait-ready", {"timeout": timeout}, timeout=timeout + HTTP_SLACK_S)

    def post_message(self, content: str, *, author_id: str | None = None, author_bot: bool = False,
                     webhook_id: str | None = None, message_type: int = 0, channel_id: str | None = None,
                     mention_everyone: bool | None = None, author_role_ids: list[str] | None = None
                     ) -> dict[str, Any]:
        """Posts as a user (default: the guild's ordinary member) and returns the MESSAGE_CREATE data."""
        body: dict[str, Any] = {"content": content, "author_bot": author_bot, "message_type": message_type}
        optional = {"author_id": author_id, "webhook_id": webhook_id, "channel_id": channel_id,
                    "mention_everyone": mention_everyone, "author_role_ids": author_role_ids}
        body.update({key: value for key, value in optional.items() if value is not None})
        return self._call("POST", "/messages", body)

    def bot_messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/bot-messages")

    def wait_for_bot_messages(self, count: int, timeout: float = 10, after: int = 0) -> list[dict[str, Any]]:
        """The `count` bot messages after index `after`, once they exist; TimeoutError lists what did arrive."""
        return self._call("POST", "/wait-bot-messages", {"count": count, "timeout": timeout, "after": after},
                          timeout=timeout + HTTP_SLACK_S)

    def reset_messages(self) -> None:
        self._call("DELETE", "/messages")

    def drop_connection(self, hold_seconds: float = 0.0) -> int:
        """Cuts the gateway TCP connection without a close frame; the client must RESUME."""
        return self._call("POST", "/gateway/drop", {"hold_seconds": hold_seconds})["dropped"]

    def close_gateway(self, code: int = 4000, reason: str | None = None) -> int:
        body: dict[str, Any] = {"code": code}
        if reason is not None:
            body["reason"] = reason
        return self._call("POST", "/gateway/close", body)["closed"]

    def send_reconnect(self) -> int:
        return self._call("POST", "/gateway/reconnect", {})["sent"]

    def send_invalid_session(self, resumable: bool = False) -> int:
        return self._call("POST", "/gateway/invalid-session", {"resumable": resumable})["sent"]

    def inject_rest_errors(self, status: int = 500, count: int = 1, *, retry_after: float = 1.0,
                           route_contains: str = "", method: str | None = None, is_global: bool = False,
                           code: int = 0, message: str | None = None) -> list[dict[str, Any]]:
        """The next `count` REST calls whose path contains route_contains get this error instead of an answer."""
        body: dict[str, Any] = {"status": status, "count": count, "retry_after": retry_after,
                                "route_contains": route_contains, "global": is_global, "code": code}
        if method is not None:
            body["method"] = method
        if message is not None:
            body["message"] = message
        return self._call("POST", "/rest-errors", body)["pending"]

    def revoke_token(self) -> int:
        return self._call("POST", "/token/revoke", {})["closed"]

    def set_token(self, token: str) -> None:
        self._call("PUT", "/token", {"token": token})

    def shutdown(self) -> None:
        self._call("POST", "/shutdown", {})


class RunningEmulator(EmulatorClient):
    """An emulator served from a background thread with its own event loop, controlled like a remote one."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self.emulator: DiscordEmulator | None = None

    def start(self, timeout: float = 10.0) -> RunningEmulator:
        self._thread = threading.Thread(target=self._serve, name="discord-emulator", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"the emulator did not start within {timeout}s")
        if self._startup_error is not None:
            raise self._startup_error
        assert self.emulator is not None
        super().__init__(self.emulator.control_url)
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.emulator = DiscordEmulator(**self._options)
            self.emulator.on_shutdown_request = lambda: loop.create_task(self.emulator.stop())
            loop.run_until_complete(self.emulator.start())
        except BaseException as error:  # handed to the starting thread, which re-raises it
            self._startup_error = error
            self._started.set()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_until_complete(self.emulator.wait_stopped())
        finally:
            loop.close()

    def shutdown(self, timeout: float = 10.0) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        assert self.emulator is not None
        future = asyncio.run_coroutine_threadsafe(self.emulator.stop(), self._loop)
        with contextlib.suppress(RuntimeError):
            future.result(timeout)
        self._thread.join(timeout)


@contextlib.contextmanager
def running_emulator(token: str, heartbeat_interval_ms: int = 41250, refuse_message_content: bool = False,
                     **options: Any) -> Iterator[RunningEmulator]:
    """An emulator on 127.0.0.1 and an ephemeral port for the duration of the block."""
    emulator = RunningEmulator(token=token, heartbeat_interval_ms=heartbeat_interval_ms,
                               refuse_message_content=refuse_message_content, **options).start()
    try:
        yield emulator
    finally:
        emulator.shutdown()
