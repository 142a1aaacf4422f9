"""REST building blocks: Discord's error bodies, rate-limit buckets and headers, injected failures."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

from .model import bucket_hash

# Discord answers through Google's front end; discord.py treats a 429 without this header as a Cloudflare ban.
VIA_HEADER = "1.1 google"
API_PREFIX = "/api/v10"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON the way Discord labels it: a bare "application/json", which discord.py compares for equality."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status,
                        headers={"Content-Type": "application/json", "Via": VIA_HEADER, **(headers or {})})


def error_response(status: int, message: str, code: int = 0, *, errors: dict | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status, headers)


def generic_error(status: int) -> web.Response:
    """The body Discord sends for errors without a specific code, e.g. {"message": "404: Not Found", "code": 0}."""
    return error_response(status, f"{status}: {HTTPStatus(status).phrase}")


def form_error(field_path: str, error_code: str, message: str) -> web.Response:
    """Discord's 50035 Invalid Form Body, with the failing field nested the way Discord nests it."""
    errors: dict[str, Any] = {"_errors": [{"code": error_code, "message": message}]}
    for part in reversed(field_path.split(".")):
        errors = {part: errors}
    return error_response(400, "Invalid Form Body", 50035, errors=errors)


@dataclass
class InjectedError:
    status: int
    remaining: int
    route_contains: str
    method: str | None
    retry_after: float
    is_global: bool
    code: int
    message: str | None

    def matches(self, method: str, path: str) -> bool:
        return self.route_contains in path and (self.method is None or self.method == method)

    def response(self, bucket: RateLimitBucket | None) -> web.Response:
        if self.status == 429:
            return rate_limited_response(self.retry_after, is_global=self.is_global, bucket=bucket)
        if self.message is not None:
            return error_response(self.status, self.message, self.code)
        return generic_error(self.status)

    def describe(self) -> dict[str, Any]:
        return {"status": self.status, "remaining": self.remaining, "route_contains": self.route_contains,
                "method": self.method, "retry_after": self.retry_after, "global": self.is_global}


def rate_limited_response(retry_after: float, *, is_global: bool, bucket: RateLimitBucket | None) -> web.Response:
    headers = {
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Scope": "global" if is_global else "user",
    }
    if is_global:
        headers["X-RateLimit-Global"] = "true"
    if bucket is not None:
        headers.update(bucket.headers(remaining_override=0, reset_after_override=retry_after))
    body = {"message": "You are being rate limited.", "retry_after": round(retry_after, 3), "global": is_global}
    return json_response(body, 429, headers)


class RateLimitBucket:
    """A fixed window per route and major parameter, reported through Discord's X-RateLimit-* headers."""

    def __init__(self, route_template: str, limit: int, window_s: float) -> None:
        self.hash = bucket_hash(route_template)
        self.limit = limit
        self.window_s = window_s
        self.used = 0
        self.resets_at = 0.0

    def _roll(self, now: float) -> None:
        if now >= self.resets_at:
            self.used = 0
            self.resets_at = now + self.window_s

    def try_take(self) -> float | None:
        """Counts one request; None when allowed, else the seconds until the window resets."""
        now = time.time()
        self._roll(now)
        if self.used >= self.limit:
            return max(self.resets_at - now, 0.001)
        self.used += 1
        return None

    def headers(self, *, remaining_override: int | None = None,
                reset_after_override: float | None = None) -> dict[str, str]:
        now = time.time()
        remaining = self.limit - self.used if remaining_override is None else remaining_override
        reset_after = self.resets_at - now if reset_after_override is None else reset_after_override
        # Rounded up so a client that sleeps exactly this long never arrives before the window has reset.
        reset_after = math.ceil(max(reset_after, 0.0) * 1000) / 1000
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(remaining, 0)),
            "X-RateLimit-Reset": f"{now + reset_after:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.hash,
        }


class RateLimiter:
    def __init__(self, *, message_limit: int, message_window_s: float, default_limit: int = 50,
                 default_window_s: float = 1.0) -> None:
        self.message_limit = message_limit
        self.message_window_s = message_window_s
        self.default_limit = default_limit
        self.default_window_s = default_window_s
        self._buckets: dict[tuple[str, str, str], RateLimitBucket] = {}

    def bucket_for(self, method: str, route_template: str, major_parameter: str) -> RateLimitBucket:
        key = (method, route_template, major_parameter)
        if key not in self._buckets:
            if method == "POST" and route_template.endswith("/channels/{channel_id}/messages"):
                limit, window = self.message_limit, self.message_window_s
            else:
                limit, window = self.default_limit, self.default_window_s
            self._buckets[key] = RateLimitBucket(f"{method} {route_template}", limit, window)
        return self._buckets[key]
