"""Wiring of the matcher: directory and notification consumers, health and metrics endpoints."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from aiohttp import web

from services.core.adapters import tls
from services.core.adapters.config import Settings
from services.core.adapters.consuming import run_batches
from services.core.adapters.crypto import TokenBox
from services.core.adapters.db.pool import create_pool
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.kafka import Publisher, consumer
from services.core.adapters.observability import Liveness, add_health_routes
from services.core.adapters.runtime import Readiness, every, serve, until_a_worker_ends
from services.core.application import engagements, outbox
from services.core.application.connections import StatusReporter, TokenService
from services.core.domain import events
from services.matcher.consumer import DirectoryBatch, NotificationBatch
from services.matcher.folders import FolderResolver
from services.matcher.handler import MatcherDeps
from services.matcher.rematch import Rematcher

log = logging.getLogger(__name__)


async def run(settings: Settings) -> None:
    pool = await create_pool(settings, max_size=20)
    publisher = Publisher(settings)
    await publisher.start()
    session = tls.client_session(settings.ca_file)
    # The live path gets most of Outlook's 10,000 requests/10 min per mailbox; the renewer's bulk work
    # (polls, back-fills, back-syncs) and the subscriber share the rest.
    graph = GraphClient(session, settings.graph_url, per_mailbox=settings.live_graph_slots,
                        budget_per_10min=6000)
    status = StatusReporter(pool, publisher, settings.app_url)
    tokens = TokenService(pool, TokenBox(settings.token_keys), IdentityClient(session, settings), status)
    deps = MatcherDeps(pool=pool, graph=graph, tokens=tokens, folders=FolderResolver(graph))
    directory = consumer(settings, events.DIRECTORY, group=f"{settings.matcher_group}-directory")
    notifications = consumer(settings, events.NOTIFICATIONS, group=settings.matcher_group,
                             max_poll_interval_ms=600_000)
    rematcher = Rematcher(pool, publisher, window=timedelta(days=settings.rematch_window_days))
    liveness = Liveness()
    stop = asyncio.Event()
    app = web.Application()
    add_health_routes(app, Readiness(settings, pool), liveness)
    try:
        await directory.start()
        await notifications.start()
        workers = [
            asyncio.create_task(run_batches(directory, DirectoryBatch(pool, rematcher), publisher=publisher, stop=stop,
                                            max_records=500), name="directory consumer"),
            asyncio.create_task(run_batches(notifications, NotificationBatch(deps, publisher), publisher=publisher,
                                            stop=stop, liveness=liveness, max_records=settings.matcher_batch_size),
                                name="notification consumer"),
            # Until the release that drops engagements.published_at: engagements the previous release left
            # unannounced move into the outbox.
            asyncio.create_task(every(10.0, stop, lambda: engagements.publish_left_behind(
                pool, publisher, older_than=timedelta(minutes=2)), "legacy engagement drain"),
                                name="legacy engagement drain"),
            # The outbox relay: events a writer committed but could not publish (killed, Kafka away).
            asyncio.create_task(every(outbox.RELAY_EVERY_S, stop, lambda: outbox.relay_once(pool, publisher),
                                      "outbox relay"),
                                name="outbox relay"),
        ]

        try:
            await serve(app, settings.http_host, settings.http_port, name="matcher",
                        until=lambda: until_a_worker_ends(workers))
        finally:
            stop.set()  # the loops finish the batch in hand and commit
            results = await asyncio.gather(*workers, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    log.error("consumer loop failed", exc_info=result)
    finally:
        await directory.stop()
        await notifications.stop()
        await publisher.stop()
        await session.close()
        await pool.close()
