"""Wiring of the renewer: lifecycle consumer, and the loops that keep every mailbox complete."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from services.core.adapters import tls
from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.config import BULK_GRAPH_SLOTS, Settings
from services.core.adapters.consuming import run_batches
from services.core.adapters.crypto import TokenBox
from services.core.adapters.db.pool import create_pool
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.kafka import Publisher, consumer
from services.core.adapters.observability import Liveness, add_health_routes
from services.core.adapters.runtime import Readiness, every, serve, until_a_worker_ends
from services.core.application import outbox
from services.core.application.connections import StatusReporter, TokenService
from services.core.application.tenant import TenantDeps
from services.core.domain import events
from services.renewer.cleanup import clean_up_deletions
from services.renewer.coverage import watch_coverage
from services.renewer.delta import PollDeps, claim_due, poll_claimed
from services.renewer.jobs import claim_job, run_job
from services.renewer.lifecycle import LifecycleBatch
from services.renewer.notices import move_legacy_outboxes, remind
from services.renewer.sends import TICK_S as SEND_TICK_S
from services.renewer.sends import SendDeps, run_due
from services.renewer.subscriptions import RenewerDeps, count_connections, ensure_subscriptions, renew_due
from services.renewer.tenant import sync_due_tenants
from services.renewer.tokens import refresh_due

log = logging.getLogger(__name__)
JOBS_IN_FLIGHT = 4  # back-fills and back-syncs of different mailboxes at once (one per mailbox)
COVERAGE_EVERY_S = 60.0  # the page computes coverage live; the metric and the status reason follow within this


async def run(settings: Settings) -> None:
    pool = await create_pool(settings, max_size=15)
    publisher = Publisher(settings)
    await publisher.start()
    session = tls.client_session(settings.ca_file)
    # One request in flight per mailbox, $batch steps one after another: the rest of Outlook's 4 is the
    # live path's (Settings.live_graph_slots).
    graph = GraphClient(session, settings.graph_url, per_mailbox=BULK_GRAPH_SLOTS, sequential_batches=True)
    status = StatusReporter(pool, publisher, settings.app_url)
    app_credentials = AppCredentials(settings, session)  # tenant-wide connection (azure-identity)
    tokens = TokenService(pool, TokenBox(settings.token_keys), IdentityClient(session, settings), status,
                          app_credentials)
    tenants = TenantDeps(pool=pool, graph=graph, app=app_credentials, status=status, settings=settings,
                         tokens=tokens)
    deps = RenewerDeps(pool=pool, graph=graph, tokens=tokens, settings=settings)
    polls = PollDeps(pool=pool, graph=graph, tokens=tokens, publisher=publisher,
                     interval=timedelta(seconds=settings.poll_interval_s),
                     relist_window=timedelta(hours=settings.relist_window_h))
    lifecycle = consumer(settings, events.LIFECYCLE, group="mailsync-renewer-lifecycle")
    liveness = Liveness()
    sends = SendDeps(pool=pool, graph=graph, tokens=tokens, publisher=publisher)
    stop = asyncio.Event()
    tick = settings.renewer_tick_s
    parallel = asyncio.Semaphore(8)

    async def maintain() -> None:
        # Each step on its own: one failing (the database blinked) never skips the others.
        steps: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
            ("readable tokens", lambda: tokens.recover_readable()),
            ("token refresh", lambda: refresh_due(pool, tokens, tick=timedelta(seconds=tick))),
            ("tenant connections", lambda: sync_due_tenants(tenants)),
            ("missing subscriptions", lambda: ensure_subscriptions(deps)),
            ("connection counts", lambda: count_connections(pool)),
            ("pending subscription deletions", lambda: clean_up_deletions(deps)),
        )
        for name, step in steps:
            try:
                await step()
            except Exception:
                log.exception(f"maintenance step {name} failed")

    async def poll() -> None:
        async def one(connection_id: str) -> None:
            async with parallel:
                await poll_claimed(polls, connection_id)

        # Keep claiming while mailboxes are due, for up to a tick: one claim of 50 per tick capped a renewer
        # at 6,000 polls an hour (bench renewer_scale). Rounds of 16 keep every claim well inside its lease.
        until = asyncio.get_running_loop().time() + tick
        while not stop.is_set() and asyncio.get_running_loop().time() < until:
            claimed = await claim_due(pool, limit=16, lease=timedelta(minutes=10))
            if not claimed:
                break
            await asyncio.gather(*(one(c) for c in claimed))

    async def notices() -> None:
        # Reminders first, so one queued now leaves in this same pass.
        await remind(pool, publisher=publisher, app_url=settings.app_url)
        await move_legacy_outboxes(pool, publisher, settings.app_url)

    async def jobs() -> None:
        # Several at once, topped up as each ends: one user's five-year import never holds back a new
        # mailbox's back-fill (head-of-line blocking when jobs ran one after another).
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                while not stop.is_set() and len(running) < JOBS_IN_FLIGHT and (job := await claim_job(pool)):
                    running.add(asyncio.create_task(run_job(polls, job, stop), name=f"job {job['job_id']}"))
                if not running:
                    return
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        log.error("sync job failed", exc_info=task.exception())
        finally:
            await asyncio.gather(*running, return_exceptions=True)

    app = web.Application()
    add_health_routes(app, Readiness(settings, pool), liveness)
    try:
        await lifecycle.start()
        workers = [
            asyncio.create_task(run_batches(lifecycle, LifecycleBatch(deps), publisher=publisher, stop=stop),
                                name="lifecycle consumer"),
            asyncio.create_task(every(tick, stop, maintain, "maintenance", liveness), name="maintenance"),
            # Renewals on their own loop: a slow maintenance step (many refreshes, creates) never delays them.
            asyncio.create_task(every(tick, stop, lambda: renew_due(deps), "renewals"), name="renewals"),
            asyncio.create_task(every(tick, stop, poll, "delta poll"), name="delta poll"),
            asyncio.create_task(every(tick, stop, jobs, "sync jobs"), name="sync jobs"),
            asyncio.create_task(every(tick, stop, notices, "notices"), name="notices"),
            asyncio.create_task(every(COVERAGE_EVERY_S, stop, lambda: watch_coverage(pool, status), "push coverage"),
                                name="push coverage"),
            # Sends from the application: own short tick (a send waits at most a second to start), sharing
            # the renewer's per-mailbox Graph slot so a send never adds to Outlook's 4 concurrent requests.
            asyncio.create_task(every(SEND_TICK_S, stop, lambda: run_due(sends, stop), "sends"), name="sends"),
            # The outbox relay (also in the matcher): events a writer committed but could not publish.
            asyncio.create_task(every(outbox.RELAY_EVERY_S, stop, lambda: outbox.relay_once(pool, publisher),
                                      "outbox relay"), name="outbox relay"),
        ]

        try:
            await serve(app, settings.http_host, settings.http_port, name="renewer",
                        until=lambda: until_a_worker_ends(workers))
        finally:
            stop.set()
            for result in await asyncio.gather(*workers, return_exceptions=True):
                if isinstance(result, BaseException):
                    log.error("renewer loop failed", exc_info=result)
    finally:
        await lifecycle.stop()
        await publisher.stop()
        await app_credentials.close()
        await session.close()
        await pool.close()
