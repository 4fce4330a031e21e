"""Structured JSON logs (secrets never formatted in) and the health/metrics endpoints every service serves."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# A log field is redacted when one of these is a whole word of its name (`access_token`, `code`,
# `client_state`), not a substring: `error_code` carries the AADSTS code operators need to read.
_SECRET_WORDS = frozenset({"token", "tokens", "secret", "password", "authorization", "code", "verifier",
                           "session", "cookie", "assertion", "jwt"})
_SECRET_NAMES = frozenset({"client_state", "clientstate", "state"})


def is_secret_field(name: str) -> bool:
    lowered = name.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return lowered in _SECRET_NAMES or (bool(words & _SECRET_WORDS) and lowered not in _PUBLIC_NAMES)


_PUBLIC_NAMES = frozenset({"error_code", "status_code", "reason_code"})


# The request or Kafka record being handled: every log line written while handling it carries it.
CORRELATION: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)


@web.middleware
async def correlation_middleware(request: web.Request, handler: Callable[[web.Request],
                                                                       Awaitable[web.StreamResponse]]
                                 ) -> web.StreamResponse:
    """A request id per HTTP request (the caller's X-Request-Id when it is sane), echoed back."""
    given = request.headers.get("X-Request-Id", "")
    request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
    token = CORRELATION.set(request_id)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers["X-Request-Id"] = request_id
        raise
    finally:
        CORRELATION.reset(token)
    response.headers["X-Request-Id"] = request_id
    return response


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        correlation = CORRELATION.get()
        if correlation:
            entry["correlation_id"] = correlation
        for key, value in record.__dict__.items():
            if key in _STANDARD or key.startswith("_"):
                continue
            entry[key] = "[redacted]" if is_secret_field(key) else value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiokafka", "kafka", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # aiohttp's access log prints full URLs, which can carry ?session= or ?code=: keep it off.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class Liveness:
    """The main loop ticks; /healthz fails when it has not ticked for `stale_after_s`."""

    def __init__(self, stale_after_s: float = 120.0) -> None:
        self._last = time.monotonic()
        self._stale_after = stale_after_s

    def tick(self) -> None:
        self._last = time.monotonic()

    @property
    def alive(self) -> bool:
        return time.monotonic() - self._last < self._stale_after


def add_health_routes(
    app: web.Application, ready: Callable[[], Awaitable[dict[str, bool]]], liveness: Liveness | None = None
) -> None:
    async def healthz(_: web.Request) -> web.Response:
        if liveness is not None and not liveness.alive:
            return web.json_response({"status": "stalled"}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks = await ready()
        ok = all(checks.values())
        return web.json_response({"status": "ok" if ok else "unavailable", "checks": checks},
                                 status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
