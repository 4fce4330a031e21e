"""Wiring of the renewer: the lifecycle consumer and the renewal schedule."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

import aiohttp
from aiohttp import web

from services.core import events
from services.core.config import Settings
from services.core.connections import StatusReporter, TokenService
from services.core.consuming import run_batches
from services.core.crypto import TokenBox
from services.core.db.pool import create_pool
from services.core.graph.client import GraphClient
from services.core.graph.identity import IdentityClient
from services.core.kafka import Publisher, consumer
from services.core.observability import Liveness, add_health_routes
from services.core.runtime import Readiness, serve
from services.renewer.lifecycle import LifecycleBatch
from services.renewer.subscriptions import RenewerDeps, renew_due
from services.renewer.tokens import refresh_due

log = logging.getLogger(__name__)


async def renewal_loop(deps: RenewerDeps, stop: asyncio.Event, liveness: Liveness) -> None:
    while not stop.is_set():
        liveness.tick()
        try:
            await refresh_due(deps.pool, deps.tokens, tick=timedelta(seconds=deps.settings.renewer_tick_s))
            await renew_due(deps)
        except Exception:
            log.exception("renewal pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=deps.settings.renewer_tick_s)


async def run(settings: Settings) -> None:
    pool = await create_pool(settings)
    publisher = Publisher(settings)
    await publisher.start()
    session = aiohttp.ClientSession()
    graph = GraphClient(session, settings.graph_url, per_mailbox=settings.graph_concurrency_per_mailbox)
    tokens = TokenService(pool, TokenBox(settings.token_keys), IdentityClient(session, settings),
                          StatusReporter(pool, publisher))
    deps = RenewerDeps(pool=pool, graph=graph, tokens=tokens, settings=settings)
    lifecycle = consumer(settings, events.LIFECYCLE, group="mailsync-renewer-lifecycle")
    liveness = Liveness()
    stop = asyncio.Event()
    app = web.Application()
    add_health_routes(app, Readiness(settings, pool), liveness)
    try:
        await lifecycle.start()
        workers = [
            asyncio.create_task(run_batches(lifecycle, LifecycleBatch(deps), publisher=publisher, stop=stop)),
            asyncio.create_task(renewal_loop(deps, stop, liveness)),
        ]

        async def until_worker_dies() -> None:
            await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)

        try:
            await serve(app, settings.http_host, settings.http_port, name="renewer", until=until_worker_dies)
        finally:
            stop.set()
            for result in await asyncio.gather(*workers, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("renewer loop failed", exc_info=result)
    finally:
        await lifecycle.stop()
        await publisher.stop()
        await session.close()
        await pool.close()
