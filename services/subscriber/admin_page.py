"""`/admin/email`: every user of the account for its administrators (`role: "admin"` in the session JWT):
status, mode, reason, last sync and what they must do; a count per status, a filter, a CSV export."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from typing import Any

import asyncpg
from aiohttp import web

from services.core.coverage import DEGRADED_REASON, load_account_coverage
from services.core.notices import what_to_do
from services.subscriber.keys import POOL
from services.subscriber.oauth import redirect
from services.subscriber.sessions import Session, confirm_switch, html_response, remember, session_from
from services.subscriber.settings_page import when
from services.subscriber.templating import render_page

log = logging.getLogger(__name__)

STATUS_LABELS = {
    "connected": "Connected",
    "reconnect_required": "Needs reconnect",
    "consent_required": "Needs administrator approval",
    "never_connected": "Not connected",
    "disconnected": "Disconnected",
}
CSV_COLUMNS = ("user_id", "email", "status", "mode", "reason", "error_code", "last_synced_at", "what_to_do")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: Any) -> str:
    """A spreadsheet shows a cell starting with = + - @ (or a tab/CR) as a formula: prefix a quote so it stays
    text (OWASP's CSV injection advice). The csv module does the quoting of commas and quotes."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


# --- the seam for the organisation-wide connection ----------------------------------------------------


async def tenant_connection(pool: asyncpg.Pool, account_id: str) -> dict[str, Any] | None:
    """The account's organisation-wide (tenant) connection, once the `tenant_connections` table exists (the
    tenant-wide issue creates it); None until then or when the account has none."""
    if not await pool.fetchval("SELECT to_regclass('tenant_connections') IS NOT NULL"):
        return None
    try:
        found = await pool.fetchval("SELECT to_jsonb(t) FROM tenant_connections t WHERE t.account_id = $1"
                                    " LIMIT 1", account_id)
    except asyncpg.PostgresError:
        log.warning("tenant_connections not readable as expected")
        return None
    if found is None:
        return None


    value = json.loads(found) if isinstance(found, str) else found
    return value if isinstance(value, dict) else None


def connection_mode(status: str, tenant: dict[str, Any] | None) -> str:
    """Mode "user": the user's own (delegated) connection; "tenant": synced through the organisation-wide one."""
    if status != "connected" and tenant is not None and tenant.get("status") == "connected":
        return "tenant"
    return "user"


# --- the rows -------------------------------------------------------------------------------------------


async def account_rows(pool: asyncpg.Pool, account_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tenant = await tenant_connection(pool, account_id)
    coverage = await load_account_coverage(pool, account_id)
    records = await pool.fetch(
        """SELECT u.user_id, u.email, c.connection_id, coalesce(c.status, 'never_connected') AS status,
                  c.reason, c.error_code, c.last_synced_at, c.mode
             FROM users u LEFT JOIN mailbox_connections c ON c.user_id = u.user_id AND c.account_id = u.account_id
            WHERE u.account_id = $1 AND u.deleted_at IS NULL ORDER BY u.email, u.user_id""", account_id)
    rows = []
    # The mode is the connection row's (tenant: enrolled through the organisation-wide connection).
    for r in records:
        status = r["status"]
        reason, todo = r["reason"] or "", what_to_do(status, r["error_code"])
        cover = coverage.get(str(r["connection_id"])) if r["connection_id"] else None
        if status == "connected" and cover is not None and cover.degraded:
            reason, todo = DEGRADED_REASON, "Nothing yet: mail still arrives through the hourly poll."
        rows.append({"user_id": r["user_id"], "email": r["email"], "status": status,
                     "status_label": STATUS_LABELS.get(status, status), "mode": r["mode"] or "user",
                     "reason": reason if status != "connected" or (cover is not None and cover.degraded) else "",
                     "error_code": r["error_code"] or "",
                     "last_synced_at": r["last_synced_at"].isoformat() if r["last_synced_at"] else "",
                     "last_sync": when(r["last_synced_at"].isoformat()) if r["last_synced_at"] else "Never",
                     "todo": todo})
    return rows, tenant


def forbidden() -> web.Response:
    body = ('<h1>Administrators only</h1><div class="card"><p id="forbidden">This page lists every user\'s mailbox '
            "connection; only an administrator of your account may see it. Your own settings are on the "
            '<a href="/settings/email">Email Authentication</a> page.</p></div>')
    return html_response(render_page("base.html", title="Administrators only", body=body), status=403)


async def _admin(request: web.Request) -> Session | web.Response:
    session, from_query = session_from(request)
    if from_query:
        confirmation = await confirm_switch(request, session, then="page")
        if confirmation is not None:
            return confirmation
        response = redirect(request.path)  # the token moves out of the URL into the cookie
        remember(response, request, session)
        return response
    return session if session.is_admin else forbidden()


def _selected(request: web.Request) -> str | None:
    wanted = request.query.get("status")
    return wanted if wanted in STATUS_LABELS else None


async def page(request: web.Request) -> web.Response:
    found = await _admin(request)
    if isinstance(found, web.Response):
        return found
    rows, tenant = await account_rows(request.app[POOL], found.account_id)
    per_status = Counter(r["status"] for r in rows)
    counts = [{"status": s, "label": label, "n": per_status.get(s, 0)} for s, label in STATUS_LABELS.items()]
    selected = _selected(request)
    shown = [r for r in rows if selected is None or r["status"] == selected]
    return html_response(render_page(
        "admin.html", title="Email connections", script=True, rows=shown, counts=counts, total=len(rows),
        selected=selected, selected_label=STATUS_LABELS.get(selected or "", ""), tenant=tenant))


async def export_csv(request: web.Request) -> web.Response:
    found = await _admin(request)
    if isinstance(found, web.Response):
        return found
    rows, _ = await account_rows(request.app[POOL], found.account_id)
    selected = _selected(request)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        if selected is None or r["status"] == selected:
            writer.writerow([csv_cell(r[c if c != "what_to_do" else "todo"]) for c in CSV_COLUMNS])
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": 'attachment; filename="email-connections.csv"',
                                 "Cache-Control": "no-store"})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_get("/admin/email", page)
    app.router.add_get("/admin/email.csv", export_csv)
