"""Process plumbing shared by the services: serving an aiohttp app until SIGTERM, readiness checks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from services.core.adapters.config import Settings
from services.core.adapters.db.pool import database_reachable
from services.core.adapters.kafka import kafka_reachable
from services.core.adapters.observability import Liveness
from services.core.adapters.tls import server_context

log = logging.getLogger(__name__)


class Readiness:
    """Kafka and PostgreSQL reachable; cached briefly so probes do not hammer either."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, *, cache_s: float = 3.0) -> None:
        self._settings = settings
        self._pool = pool
        self._cache_s = cache_s
        self._at = 0.0
        self._last: dict[str, bool] = {}

    async def __call__(self) -> dict[str, bool]:
        if time.monotonic() - self._at < self._cache_s and self._last:
            return self._last
        kafka, db = await asyncio.gather(kafka_reachable(self._settings), database_reachable(self._pool))
        self._last, self._at = {"kafka": kafka, "postgresql": db}, time.monotonic()
        return self._last


class WorkerDied(RuntimeError):
    """A loop that must run for the process's whole life ended: the process exits non-zero so that
    Kubernetes restarts it, instead of staying up and doing nothing."""


async def until_a_worker_ends(workers: list[asyncio.Task[None]]) -> None:
    """Returns only by raising WorkerDied, as soon as any worker ends (crashed or not)."""
    done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_COMPLETED)
    task = next(iter(done))
    failure = None if task.cancelled() else task.exception()
    raise WorkerDied(f"worker {task.get_name()} ended" + (f": {failure!r}" if failure else "")) from failure


async def every(tick_s: float, stop: asyncio.Event, work: Callable[[], Awaitable[object]], name: str,
                liveness: Liveness | None = None) -> None:
    """Run `work`, then wait a tick (or less, if stopping); a failure is logged, never fatal."""
    while not stop.is_set():
        if liveness:
            liveness.tick()
        try:
            await work()
        except Exception:
            log.exception(f"{name} pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=tick_s)


def stop_event() -> asyncio.Event:
    """Set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@dataclass(frozen=True)
class HttpsListener:
    """A second, HTTPS listener for the same app: what Graph calls must be HTTPS."""

    cert_file: str
    key_file: str
    port: int


async def serve(app: web.Application, host: str, port: int, *, name: str,
                until: Callable[[], Awaitable[object]] | None = None, shutdown_timeout: float = 10.0,
                https: HttpsListener | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `until` returns); then stop accepting, finish in-flight requests."""
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    log.info(f"{name} listening", extra={"host": bound[0], "port": bound[1]})
    print(f"{name} listening on http://{bound[0]}:{bound[1]}", flush=True)
    if https is not None:
        secure = web.TCPSite(runner, host, https.port, ssl_context=server_context(https.cert_file, https.key_file))
        await secure.start()
        log.info(f"{name} listening (https)", extra={"host": host, "port": https.port})
        print(f"{name} listening on https://{host}:{https.port}", flush=True)
    stop = stop_event()
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if until is not None:
        waiters.append(asyncio.ensure_future(until()))
    try:
        done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # surface a crashed worker
    finally:
        log.info(f"{name} stopping")
        await runner.cleanup()
