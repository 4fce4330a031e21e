"""The service API (`Authorization: Bearer MAILSYNC_API_TOKEN`), errors as {"error": {"code", "message"}}."""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from services.core import engagements as engagement_queries
from services.core.connections import NotConnected
from services.core.diagnose import DiagnoseError, diagnose, parse_headers
from services.core.domain import ConnectionStatus
from services.core.subscriptions import delete_connection_subscriptions
from services.subscriber.keys import GRAPH, POOL, SETTINGS, STATUS, TOKENS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def api_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/api/"):
        return await handler(request)
    expected = f"Bearer {request.app[SETTINGS].api_token}"
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return api_error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _uuid_or_404(raw: str, what: str) -> str:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise web.HTTPNotFound(text=f"no {what} {raw[:64]!r}") from None


async def connection_view(pool: Any, user_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow(
        """SELECT c.connection_id, c.user_id, c.account_id, c.status, c.reason, c.error_code, c.scopes,
                  c.connected_at, c.last_synced_at, c.mailbox_address, c.status_changed_at
             FROM mailbox_connections c WHERE c.user_id = $1""", user_id)
    if row is None:
        return None
    subs = await pool.fetch(
        "SELECT subscription_id, resource, expires_at FROM subscriptions WHERE connection_id = $1"
        " ORDER BY expires_at", row["connection_id"])
    return {
        "connection_id": str(row["connection_id"]), "user_id": row["user_id"], "account_id": row["account_id"],
        "status": row["status"], "reason": row["reason"], "error_code": row["error_code"],
        "scopes": list(row["scopes"]), "connected_at": _iso(row["connected_at"]),
        "last_synced_at": _iso(row["last_synced_at"]), "mailbox_address": row["mailbox_address"],
        "status_changed_at": _iso(row["status_changed_at"]),
        "subscriptions": [{"id": s["subscription_id"], "resource": s["resource"],
                           "expires_at": _iso(s["expires_at"])} for s in subs],
    }


async def get_connection(request: web.Request) -> web.Response:
    user_id = request.match_info["user_id"]
    view = await connection_view(request.app[POOL], user_id)
    if view is None:
        account_id = await request.app[POOL].fetchval("SELECT account_id FROM users WHERE user_id = $1", user_id)
        if account_id is None:
            return api_error(404, "not_found", f"no user {user_id[:64]!r}")
        view = {"connection_id": None, "user_id": user_id, "account_id": account_id,
                "status": ConnectionStatus.NEVER_CONNECTED.value, "reason": None, "error_code": None,
                "scopes": [], "connected_at": None, "last_synced_at": None, "subscriptions": []}
    return web.json_response(view)


async def disconnect_connection(app: web.Application, connection_id: str) -> bool:
    """Delete the Graph subscriptions, wipe the tokens, stop sync. Returns False if unknown."""
    pool = app[POOL]
    row = await pool.fetchrow("SELECT graph_user_id, status FROM mailbox_connections WHERE connection_id = $1::uuid",
                              connection_id)
    if row is None:
        return False
    token: str | None = None
    try:
        token = await app[TOKENS].access_token(connection_id)
    except NotConnected:
        token = None  # no usable grant: the subscriptions die with their expiry at Graph
    await delete_connection_subscriptions(pool, app[GRAPH], token=token, connection_id=connection_id,
                                          graph_user_id=row["graph_user_id"] or "")
    app[TOKENS].forget(connection_id)
    await pool.execute(
        "UPDATE mailbox_connections SET access_token_enc = NULL, refresh_token_enc = NULL,"
        " access_expires_at = NULL, updated_at = now() WHERE connection_id = $1::uuid", connection_id)
    await app[STATUS].set_status(connection_id, ConnectionStatus.DISCONNECTED,
                                 "You disconnected this mailbox; mailsync no longer reads it.", None)
    return True


async def post_disconnect(request: web.Request) -> web.Response:
    connection_id = _uuid_or_404(request.match_info["connection_id"], "connection")
    if not await disconnect_connection(request.app, connection_id):
        return api_error(404, "not_found", "no such connection")
    view = await connection_view(request.app[POOL], await request.app[POOL].fetchval(
        "SELECT user_id FROM mailbox_connections WHERE connection_id = $1::uuid", connection_id))
    return web.json_response(view)


async def get_contact_engagements(request: web.Request) -> web.Response:
    contact_id = request.match_info["contact_id"]
    try:
        limit = min(max(int(request.query.get("limit", "50")), 1), 200)
    except ValueError:
        return api_error(400, "bad_request", "limit must be an integer between 1 and 200")
    before = request.query.get("before")
    try:
        page = await engagement_queries.contact_timeline(request.app[POOL], contact_id, limit=limit, before=before)
    except ValueError as exc:
        return api_error(400, "bad_request", str(exc))
    return web.json_response(page)


async def _diagnose(request: web.Request, user_id: str, imid: str | None, raw_headers: str | None) -> web.Response:
    try:
        facts = parse_headers(raw_headers) if raw_headers is not None else None
        return web.json_response(await diagnose(request.app[POOL], user_id, imid, facts))
    except DiagnoseError as exc:
        return api_error(400, "bad_request", str(exc))
    except LookupError as exc:
        return api_error(404, "not_found", str(exc))


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
