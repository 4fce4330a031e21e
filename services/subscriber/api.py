"""The service API, errors as {"error": {"code", "message"}}.

Two kinds of bearer (services/subscriber/auth.py): the operator's `MAILSYNC_API_TOKEN` sees every account;
an account-scoped JWT sees only its account. Every query below filters on the caller's account, so anything
of another account answers 404 exactly as an id that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from services.core import engagements as engagement_queries
from services.core.crypto import TokenBox, TokenDecryptError
from services.core.diagnose import DiagnoseError, diagnose, parse_headers
from services.core.domain import ConnectionStatus
from services.core.subscriptions import delete_pending, deletion_failed, mark_for_deletion
from services.subscriber.auth import CALLER, Caller, api_auth, caller
from services.subscriber.keys import GRAPH, POOL, SETTINGS, STATUS, TOKENS, TRUST

__all__ = ["CALLER", "Caller", "api_auth", "api_error", "caller", "connection_view", "disconnect_connection",
           "in_scope"]

log = logging.getLogger(__name__)


# Every query of the API ends with this filter on the caller's account ($n: None for the operator), so a
# record of another account is simply not found: the same 404, body included, as an id that never existed.
def in_scope(column: str, n: int) -> str:
    return f"(${n}::text IS NULL OR {column} = ${n})"


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _uuid_or_none(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


async def connection_view(pool: Any, user_id: str, *, account_id: str | None = None) -> dict[str, Any] | None:
    """The user's connection as the API shows it; `account_id` (a scoped caller's) filters every query."""
    row = await pool.fetchrow(
        f"""SELECT c.connection_id, c.user_id, c.account_id, c.status, c.reason, c.error_code, c.scopes,
                  c.connected_at, c.last_synced_at, c.mailbox_address, c.status_changed_at, c.mode
             FROM mailbox_connections c WHERE c.user_id = $1 AND {in_scope("c.account_id", 2)}""",  # noqa: S608
        user_id, account_id)
    if row is None:
        return None
    subs = await pool.fetch(
        "SELECT subscription_id, resource, expires_at FROM subscriptions WHERE connection_id = $1"
        " AND account_id = $2 ORDER BY expires_at", row["connection_id"], row["account_id"])
    pending = await pool.fetch(
        "SELECT subscription_id, resource, expires_at, pending_since, attempts, last_error"
        " FROM subscription_deletions WHERE connection_id = $1 AND account_id = $2 ORDER BY pending_since",
        row["connection_id"], row["account_id"])
    return {
        "connection_id": str(row["connection_id"]), "user_id": row["user_id"], "account_id": row["account_id"],
        "status": row["status"], "reason": row["reason"], "error_code": row["error_code"],
        # "tenant": synced through the organisation's consent (no sign-in of the user); "user": their own.
        "mode": row["mode"],
        "scopes": list(row["scopes"]), "connected_at": _iso(row["connected_at"]),
        "last_synced_at": _iso(row["last_synced_at"]), "mailbox_address": row["mailbox_address"],
        "status_changed_at": _iso(row["status_changed_at"]),
        "subscriptions": [{"id": s["subscription_id"], "resource": s["resource"],
                           "expires_at": _iso(s["expires_at"])} for s in subs],
        # Subscriptions a disconnect could not delete at Graph yet: never renewed, their notifications
        # ignored; the renewer deletes them once it can, or forgets them after their expiry.
        "subscriptions_pending_delete": len(pending),
        "pending_deletions": [{"id": p["subscription_id"], "resource": p["resource"],
                               "expires_at": _iso(p["expires_at"]), "since": _iso(p["pending_since"]),
                               "attempts": p["attempts"], "last_error": p["last_error"]} for p in pending],
    }


def _no_user(user_id: str) -> web.Response:
    return api_error(404, "not_found", f"no user {user_id[:64]!r}")


async def get_connection(request: web.Request) -> web.Response:
    user_id, scope = request.match_info["user_id"], caller(request).account_id
    pool = request.app[POOL]
    view = await connection_view(pool, user_id, account_id=scope)
    if view is None:
        account_id = await pool.fetchval(
            f"SELECT account_id FROM users WHERE user_id = $1 AND {in_scope('account_id', 2)}",  # noqa: S608
            user_id, scope)
        if account_id is None:
            return _no_user(user_id)
        view = {"connection_id": None, "user_id": user_id, "account_id": account_id,
                "status": ConnectionStatus.NEVER_CONNECTED.value, "mode": "user", "reason": None,
                "error_code": None,
                "scopes": [], "connected_at": None, "last_synced_at": None, "subscriptions": [],
                "subscriptions_pending_delete": 0, "pending_deletions": []}
    return web.json_response(view)


DISCONNECTED_REASON = "You disconnected this mailbox; mailsync no longer reads it."
GRAPH_CLEANUP_S = 15.0  # the request waits this long at most for Graph; the renewer retries the rest


async def disconnect_connection(app: web.Application, connection_id: str, *, account_id: str | None = None) -> bool:
    """Stop reading the mailbox. One short transaction wipes the tokens, sets `disconnected` and marks the
    subscriptions pending deletion; only after the commit are they deleted at Graph, best effort, with the
    access token read before the wipe (never refreshed: the user asked us to stop). What Graph did not
    confirm stays pending for the renewer. Returns False if the connection is unknown (to the caller)."""
    pool, settings = app[POOL], app[SETTINGS]
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""SELECT graph_user_id, access_token_enc, access_expires_at FROM mailbox_connections
                 WHERE connection_id = $1::uuid AND {in_scope("account_id", 2)} FOR UPDATE""",  # noqa: S608
            connection_id, account_id)
        if row is None:
            return False
        token = _usable_access_token(settings, connection_id, row)
        await conn.execute(
            "UPDATE mailbox_connections SET access_token_enc = NULL, refresh_token_enc = NULL,"
            " access_expires_at = NULL, refresh_lease_until = NULL, updated_at = now()"
            " WHERE connection_id = $1::uuid",
            connection_id)
        changed = await app[STATUS].record(conn, connection_id, ConnectionStatus.DISCONNECTED, DISCONNECTED_REASON,
                                           None)
        pending = await mark_for_deletion(conn, connection_id)
    app[TOKENS].forget(connection_id)
    for subscription_id in pending:
        app[TRUST].forget(subscription_id)
    if changed is not None:
        await app[STATUS].publish(changed)  # after the commit: no network call inside the transaction
    if pending and token is None:
        for subscription_id in pending:  # visible as such in the status until a new grant or their expiry
            await deletion_failed(pool, subscription_id, "no_usable_access_token")
    elif pending and token is not None:
        try:
            async with asyncio.timeout(GRAPH_CLEANUP_S):
                await delete_pending(pool, app[GRAPH], token=token, graph_user_id=row["graph_user_id"] or "",
                                     subscription_ids=pending)
        except TimeoutError:
            log.warning("subscriptions left pending deletion", extra={"connection_id": connection_id})
    return True


def _usable_access_token(settings: Any, connection_id: str, row: Any) -> str | None:
    """The stored access token if it is still valid, decrypted in memory only; never a refresh."""
    if row["access_token_enc"] is None or row["access_expires_at"] is None:
        return None
    if row["access_expires_at"] <= datetime.now(UTC) + timedelta(seconds=30):
        return None
    try:
        return TokenBox(settings.token_keys).decrypt(row["access_token_enc"], bound_to=connection_id)
    except TokenDecryptError:
        return None  # unreadable: the subscriptions die with their expiry at Graph


async def post_disconnect(request: web.Request) -> web.Response:
    scope = caller(request).account_id
    connection_id = _uuid_or_none(request.match_info["connection_id"])
    if connection_id is None or not await disconnect_connection(request.app, connection_id, account_id=scope):
        return api_error(404, "not_found", "no such connection")
    pool = request.app[POOL]
    user_id = await pool.fetchval(
        f"SELECT user_id FROM mailbox_connections WHERE connection_id = $1::uuid AND {in_scope('account_id', 2)}",  # noqa: S608
        connection_id, scope)
    return web.json_response(await connection_view(pool, user_id, account_id=scope))


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
    found = await request.app[POOL].fetchval(
        f"SELECT user_id FROM users WHERE user_id = $1 AND {in_scope('account_id', 2)}",  # noqa: S608
        user_id, caller(request).account_id)
    if found is None:
        return _no_user(user_id)
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
