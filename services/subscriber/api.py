"""The service API, errors as {"error": {"code", "message"}}.

Two kinds of bearer (services/subscriber/auth.py): the operator's `MAILSYNC_API_TOKEN` sees every account;
an account-scoped JWT sees only its account. Every read below filters on the caller's account (the store's
`in_scope`), so anything of another account answers 404 exactly as an id that does not exist.
"""

from __future__ import annotations

import uuid

from aiohttp import web

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.application import engagements as engagement_queries
from services.core.application.diagnose import DiagnoseError, diagnose, parse_headers
from services.core.application.mailbox import connection_view, disconnect, never_connected_view
from services.subscriber.auth import CALLER, Caller, api_auth, caller
from services.subscriber.keys import GRAPH, POOL, SETTINGS, STATUS, TOKENS, TRUST

__all__ = ["CALLER", "Caller", "api_auth", "api_error", "caller", "connection_view", "disconnect_connection"]


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _uuid_or_none(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def _no_user(user_id: str) -> web.Response:
    return api_error(404, "not_found", f"no user {user_id[:64]!r}")


async def get_connection(request: web.Request) -> web.Response:
    user_id, scope = request.match_info["user_id"], caller(request).account_id
    pool = request.app[POOL]
    view = await connection_view(pool, user_id, account_id=scope)
    if view is None:
        account_id = await Directory(pool).account_of(user_id, scope)
        if account_id is None:
            return _no_user(user_id)
        view = never_connected_view(user_id, account_id)
    return web.json_response(view)


async def disconnect_connection(app: web.Application, connection_id: str, *, account_id: str | None = None) -> bool:
    """Disconnect (services/core/application/mailbox.py); the tokens and trust this process caches of the
    connection and its subscriptions are forgotten once committed."""
    def forget(pending: list[str]) -> None:
        app[TOKENS].forget(connection_id)
        for subscription_id in pending:
            app[TRUST].forget(subscription_id)

    return await disconnect(app[POOL], app[SETTINGS], app[STATUS], app[GRAPH], connection_id,
                            account_id=account_id, forget=forget)


async def post_disconnect(request: web.Request) -> web.Response:
    scope = caller(request).account_id
    connection_id = _uuid_or_none(request.match_info["connection_id"])
    if connection_id is None or not await disconnect_connection(request.app, connection_id, account_id=scope):
        return api_error(404, "not_found", "no such connection")
    pool = request.app[POOL]
    user_id = await MailboxConnections(pool).user_of(connection_id, scope)
    return web.json_response(await connection_view(pool, user_id or "", account_id=scope))


async def get_contact_engagements(request: web.Request) -> web.Response:
    contact_id = request.match_info["contact_id"]
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), 200)
    except ValueError:
        return api_error(400, "bad_request", "limit must be an integer between 1 and 200")
    try:
        page = await engagement_queries.contact_timeline(request.app[POOL], contact_id, caller(request).account_id,
                                                         limit=limit, before=request.query.get("before"))
    except ValueError as exc:
        return api_error(400, "bad_request", str(exc))
    if page is None:
        return api_error(404, "not_found", f"no contact {contact_id[:64]!r}")
    return web.json_response(page)


async def _diagnose(request: web.Request, user_id: str, imid: str | None, raw_headers: str | None) -> web.Response:
    # The user is looked up in the caller's account; everything diagnose reads hangs off that user.
    account_id = await Directory(request.app[POOL]).account_of(user_id, caller(request).account_id)
    if account_id is None:
        return _no_user(user_id)
    found = user_id
    try:
        facts = parse_headers(raw_headers) if raw_headers is not None else None
        return web.json_response(await diagnose(request.app[POOL], found, imid, facts))
    except DiagnoseError as exc:
        return api_error(400, "bad_request", str(exc))
    except LookupError:
        return _no_user(user_id)


async def get_diagnose(request: web.Request) -> web.Response:
    user_id, imid = request.query.get("user_id"), request.query.get("internet_message_id")
    if not user_id or not imid:
        return api_error(400, "bad_request", "user_id and internet_message_id are required")
    return await _diagnose(request, user_id, imid, None)


async def post_diagnose(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return api_error(400, "bad_request", "body must be JSON: {\"user_id\", \"headers\"}")
    if not isinstance(body, dict) or not isinstance(body.get("user_id"), str) or not isinstance(
            body.get("headers"), str):
        return api_error(400, "bad_request", "user_id and headers (the raw Internet headers) are required strings")
    return await _diagnose(request, body["user_id"], None, body["headers"])


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/users/{user_id}/connection", get_connection)
    app.router.add_post("/api/v1/connections/{connection_id}/disconnect", post_disconnect)
    app.router.add_get("/api/v1/contacts/{contact_id}/engagements", get_contact_engagements)
    app.router.add_get("/api/v1/diagnose", get_diagnose)
    app.router.add_post("/api/v1/diagnose", post_diagnose)
