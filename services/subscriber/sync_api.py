"""Sync now, back-syncs and their progress (service API). Every read filters on the caller's account; the
decisions are services/core/application/sync_requests.py's, shared with the settings page."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from services.core.adapters.store.jobs import SyncJobs
from services.core.adapters.store.mailbox.connections import MailboxConnections
from services.core.application.sync_requests import Refused, queue_backsync, queue_sync
from services.subscriber.api import api_error, caller
from services.subscriber.keys import POOL


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


def _no_connection() -> web.Response:
    return api_error(404, "not_found", "no such connection")


async def _connection(request: web.Request) -> tuple[str, str] | web.Response:
    connection_id = _uuid(request.match_info["connection_id"])
    row = connection_id and await MailboxConnections(request.app[POOL]).status_of(connection_id,
                                                                                  caller(request).account_id)
    if not row:
        return _no_connection()
    return str(row["connection_id"]), row["status"]


async def post_sync(request: web.Request) -> web.Response:
    found = await _connection(request)
    if isinstance(found, web.Response):
        return found
    connection_id, status = found
    try:
        await queue_sync(MailboxConnections(request.app[POOL]), connection_id, caller(request).account_id, status)
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
        job_id = await queue_backsync(SyncJobs(request.app[POOL]), connection_id, caller(request).account_id, status,
                                      since=since, until=until, dry_run=dry_run)
    except Refused as exc:
        return api_error(exc.http_status, exc.code, str(exc))
    return web.json_response({"backsync_id": job_id}, status=202)


async def get_backsync(request: web.Request) -> web.Response:
    job_id = _uuid(request.match_info["backsync_id"])
    row = job_id and await SyncJobs(request.app[POOL]).in_account(job_id, caller(request).account_id)
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
