"""Sync now, back-syncs and their progress (service API). Every query filters on the caller's account."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.subscriber.api import api_error, caller, in_scope
from services.subscriber.keys import POOL

MAX_RANGE_DAYS = 3650


def _uuid(raw: str) -> str | None:
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        return None


def _when(body: dict[str, Any], key: str) -> datetime:
    raw = body.get(key)
    if not isinstance(raw, str):
        raise ValueError(f"{key} must be an ISO-8601 date-time string")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{key} is not an ISO-8601 date-time: {raw[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Refused(Exception):
    """A sync or back-sync that cannot be queued; the API answers it as JSON, the settings page in words."""

    def __init__(self, http_status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.http_status, self.code = http_status, code


async def queue_sync(pool: Any, connection_id: str, account_id: str | None, status: str) -> None:
    """Sync now: the renewer polls the mailbox at its next tick. The API and the settings page share it."""
    if status != "connected":
        raise Refused(409, "not_connected", f"the mailbox is {status}; reconnect it first")
    updated = await pool.fetchval(
        f"UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = $1::uuid"  # noqa: S608
        f" AND {in_scope('account_id', 2)} RETURNING true", connection_id, account_id)
    if not updated:
        raise Refused(404, "not_found", "no such connection")


async def queue_backsync(pool: Any, connection_id: str, account_id: str | None, status: str, *,
                         since: datetime, until: datetime, dry_run: bool) -> str:
    """The one place a back-sync is queued (the API and the settings page's "Import older email"): the range
    is checked and capped at MAX_RANGE_DAYS, the mailbox must be connected. Returns the job id."""
    if since >= until:
        raise Refused(400, "bad_request", "since must be before until")
    if (until - since).days > MAX_RANGE_DAYS:
        raise Refused(400, "bad_request", f"a back-sync covers at most {MAX_RANGE_DAYS} days")
    if status != "connected":
        raise Refused(409, "not_connected", f"the mailbox is {status}; reconnect it first")
    job_id = await pool.fetchval(
        f"""INSERT INTO sync_jobs (connection_id, kind, since, until, dry_run)
            SELECT connection_id, 'backsync', $2, $3, $4 FROM mailbox_connections
             WHERE connection_id = $1::uuid AND {in_scope("account_id", 5)}
            RETURNING job_id""", connection_id, since, until, dry_run, account_id)  # noqa: S608
    if job_id is None:
        raise Refused(404, "not_found", "no such connection")
    return str(job_id)


def _no_connection() -> web.Response:
    return api_error(404, "not_found", "no such connection")


async def _connection(request: web.Request) -> tuple[str, str] | web.Response:
    connection_id = _uuid(request.match_info["connection_id"])
    row = connection_id and await request.app[POOL].fetchrow(
        f"SELECT connection_id, status FROM mailbox_connections WHERE connection_id = $1::uuid"  # noqa: S608
        f" AND {in_scope('account_id', 2)}", connection_id, caller(request).account_id)
    if not row:
        return _no_connection()
    return str(row["connection_id"]), row["status"]


async def post_sync(request: web.Request) -> web.Response:
    found = await _connection(request)
    if isinstance(found, web.Response):
        return found
    connection_id, status = found
    try:
        await queue_sync(request.app[POOL], connection_id, caller(request).account_id, status)
    except Refused as exc:
        return api_error(exc.http_status, exc.code, str(exc))
    return web.json_response({"connection_id": connection_id, "status": "queued"}, status=202)


async def post_backsync(request: web.Request) -> web.Response:
    found = await _connection(request)
    if isinstance(found, web.Response):
        return found
    connection_id, status = found
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        since, until = _when(body, "since"), _when(body, "until")
        dry_run = body.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ValueError("dry_run must be true or false")
    except ValueError as exc:
        return api_error(400, "bad_request", str(exc))
    try:
        job_id = await queue_backsync(request.app[POOL], connection_id, caller(request).account_id, status,
                                      since=since, until=until, dry_run=dry_run)
    except Refused as exc:
        return api_error(exc.http_status, exc.code, str(exc))
    return web.json_response({"backsync_id": job_id}, status=202)


async def get_backsync(request: web.Request) -> web.Response:
    job_id = _uuid(request.match_info["backsync_id"])
    row = job_id and await request.app[POOL].fetchrow(
        f"""SELECT j.* FROM sync_jobs j JOIN mailbox_connections c ON c.connection_id = j.connection_id
             WHERE j.job_id = $1::uuid AND {in_scope("c.account_id", 2)}""",  # noqa: S608
        job_id, caller(request).account_id)
    if not row:
        return api_error(404, "not_found", "no such back-sync")
    status = "running" if row["status"] == "running" else row["status"]
    return web.json_response({
        "backsync_id": str(row["job_id"]), "connection_id": str(row["connection_id"]), "kind": row["kind"],
        "status": status, "since": row["since"].isoformat(), "until": row["until"].isoformat(),
        "dry_run": row["dry_run"], "messages_seen": row["messages_seen"],
        "engagements_created": row["engagements_created"], "estimated_total": row["estimated_total"],
        "estimated_with_contacts": row["estimated_with_contacts"],
        "error": row["error"], "updated_at": row["updated_at"].isoformat()})


def add_sync_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/connections/{connection_id}/sync", post_sync)
    app.router.add_post("/api/v1/connections/{connection_id}/backsyncs", post_backsync)
    app.router.add_get("/api/v1/backsyncs/{backsync_id}", get_backsync)
