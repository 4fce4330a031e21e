"""Wiring of the subscriber: the only HTTP edge (Graph webhooks, OAuth, settings page, service API)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from services.core.adapters import tls
from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.config import BULK_GRAPH_SLOTS, Settings
from services.core.adapters.crypto import TokenBox
from services.core.adapters.db.pool import create_pool
from services.core.adapters.graph.client import GraphClient
from services.core.adapters.graph.identity import IdentityClient
from services.core.adapters.kafka import Publisher
from services.core.adapters.observability import add_health_routes, correlation_middleware
from services.core.adapters.runtime import Readiness
from services.core.application.connections import StatusReporter, TokenService
from services.core.domain import json_limits
from services.subscriber import oauth, webhooks
from services.subscriber.admin_page import add_admin_routes
from services.subscriber.api import add_api_routes, api_auth
from services.subscriber.keys import (
    GRAPH,
    HTTP,
    IDENTITY,
    POOL,
    PUBLISHER,
    READINESS,
    SETTINGS,
    STATUS,
    TOKENS,
    TRUST,
)
from services.subscriber.send_api import add_send_routes
from services.subscriber.settings_page import add_settings_routes
from services.subscriber.sync_api import add_sync_routes
from services.subscriber.tenant_api import APP_CREDENTIALS, add_tenant_routes
from services.subscriber.trust import SubscriptionTrust

MAX_BODY = 1024 * 1024  # Graph batches stay far below this; larger bodies get 413
FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})  # pages' forms: not JSON
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def bounded_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every body is checked for size and nesting before any handler parses it (400, never a 500)."""
    if request.can_read_body and request.content_type not in FORMS:
        try:
            body = await request.read()
            json_limits.check(body, max_bytes=MAX_BODY)  # the webhooks parse with the same bounds themselves
            if request.path.startswith("/api/") and json_limits.holds_lone_surrogate(body):
                raise json_limits.JsonRefused("value holds a lone surrogate (half a UTF-16 pair), which is not text")
        except json_limits.JsonRefused as exc:
            return web.json_response({"error": {"code": "bad_request", "message": f"body refused: {exc}"}},
                                     status=400)
    return await handler(request)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY,
                          middlewares=[correlation_middleware, api_auth, bounded_json])
    app[SETTINGS] = settings

    async def resources(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        publisher = Publisher(settings, timeout_s=settings.webhook_publish_timeout_s)
        await publisher.start()
        session = tls.client_session(settings.ca_file)
        app[POOL], app[PUBLISHER], app[HTTP] = pool, publisher, session
        app[TRUST] = SubscriptionTrust(pool, ttl_s=settings.clientstate_cache_s)
        app[GRAPH] = GraphClient(session, settings.graph_url, per_mailbox=BULK_GRAPH_SLOTS)  # connect-time calls
        app[IDENTITY] = IdentityClient(session, settings)
        app[STATUS] = StatusReporter(pool, publisher, settings.app_url)
        app[APP_CREDENTIALS] = AppCredentials(settings, session)  # tenant-wide connection (azure-identity)
        app[TOKENS] = TokenService(pool, TokenBox(settings.token_keys), app[IDENTITY], app[STATUS],
                                   app[APP_CREDENTIALS])
        readiness = Readiness(settings, pool)
        app[READINESS] = readiness
        yield
        # Requests are finished by now (runner shutdown); flush what was accepted, then close.
        await publisher.flush()
        await publisher.stop()
        await app[APP_CREDENTIALS].close()
        await session.close()
        await pool.close()

    app.cleanup_ctx.append(resources)

    async def ready() -> dict[str, bool]:
        return await app[READINESS]()

    add_health_routes(app, ready)
    app.router.add_post("/graph/notifications", webhooks.handle_notifications)
    app.router.add_post("/graph/lifecycle", webhooks.handle_lifecycle)
    app.router.add_get("/oauth/microsoft365/start", oauth.start)
    app.router.add_get("/oauth/microsoft365/callback", oauth.callback)
    add_settings_routes(app)
    add_admin_routes(app)
    add_api_routes(app)
    add_sync_routes(app)
    add_tenant_routes(app)
    add_send_routes(app)
    return app
