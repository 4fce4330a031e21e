"""`/admin/email`: every user of the account for its administrators (`role: "admin"` in the session JWT):
status, mode, reason, last sync and what they must do; a count per status, a filter, a CSV export; and the
organisation-wide (tenant) connection: its status, reason and mailbox counts, a form that starts it, and its
consent link.

The consent link is not stored (its state is signed, single-use and expires in 24 h), so the page never
shows an old one: a "Create consent link" form (POST, the page's CSRF token) issues a fresh state and the
answer shows that link once, with a copy button and the words to send. Rendering the page issues nothing, so
reloading or prefetching it neither fills the state table nor spends a link someone was sent."""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from typing import Any

import asyncpg
from aiohttp import web

from services.core.adapters.store.directory import Directory
from services.core.adapters.store.tenants import TenantConnections
from services.core.application.coverage import DEGRADED_REASON, load_account_coverage
from services.core.application.tenant import REASON_PENDING, mailbox_counts
from services.core.application.tenant_connection import TenantConflict
from services.core.domain.notices import what_to_do
from services.subscriber.keys import POOL, SETTINGS
from services.subscriber.oauth import redirect
from services.subscriber.page_words import TENANT_STATUS_WORDS, tenant_todo, tenant_words_to_send
from services.subscriber.sessions import (
    Session,
    confirm_switch,
    csrf_ok,
    csrf_token,
    html_response,
    remember,
    session_from,
)
from services.subscriber.settings_page import when
from services.subscriber.templating import render_page
from services.subscriber.tenant_api import TENANT_ID_RULE, open_tenant_connection, valid_tenant_id

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


# --- the organisation-wide (tenant) connection --------------------------------------------------------


async def tenant_connection(pool: asyncpg.Pool, account_id: str) -> dict[str, Any] | None:
    """The account's tenant connection as the panel shows it (None when the account has none): status in
    words, the plain reason, and how many mailboxes are enrolled, outside the access policy or failed."""
    row = await TenantConnections(pool).panel_row(account_id)
    if row is None:
        return None
    label, explanation = TENANT_STATUS_WORDS.get(row["status"], (row["status"], ""))
    return {"tenant_connection_id": str(row["tenant_connection_id"]), "tenant_id": row["tenant_id"],
            "status": row["status"], "status_label": label, "explanation": explanation,
            # The explanation already says what pending_consent's own reason would; other reasons are news.
            "reason": row["reason"] if row["status"] != "connected" and row["reason"] != REASON_PENDING else None,
            "error_code": row["error_code"],
            "counts": await mailbox_counts(pool, str(row["tenant_connection_id"])),
            "last_pass": when(row["last_synced_at"].isoformat()) if row["last_synced_at"] else "Not yet",
            # A new link only where one is needed; a connected organisation has consented already.
            "needs_link": row["status"] in ("pending_consent", "consent_revoked"),
            "can_start": row["status"] == "disconnected"}


def connection_mode(status: str, tenant: dict[str, Any] | None) -> str:
    """Mode "user": the user's own (delegated) connection; "tenant": synced through the organisation-wide one.
    (The page reads the mode from the connection row; this is the fallback words for a row without one.)"""
    if status != "connected" and tenant is not None and tenant.get("status") == "connected":
        return "tenant"
    return "user"


# --- the rows -------------------------------------------------------------------------------------------


async def account_rows(pool: asyncpg.Pool, account_id: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tenant = await tenant_connection(pool, account_id)
    coverage = await load_account_coverage(pool, account_id)
    records = await Directory(pool).overview(account_id)
    rows = []
    # The mode is the connection row's (tenant: enrolled through the organisation-wide connection).
    for r in records:
        status = r["status"]
        reason, todo = r["reason"] or "", what_to_do(status, r["error_code"])
        if r["mode"] == "tenant":
            todo = tenant_todo(status, r["error_code"]) or todo
        elif status == "never_connected" and r["tenant_state"] is not None:
            # Not enrolled by the organisation's connection: say why (outside the access policy, not found).
            reason = r["tenant_reason"] or ""
            todo = tenant_todo("consent_required", "out_of_scope" if r["tenant_state"] == "out_of_scope"
                               else None) or todo
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


async def _render(request: web.Request, session: Session, *, status: int = 200, link: str | None = None,
                  tenant_error: str | None = None, typed: str = "") -> web.Response:
    rows, tenant = await account_rows(request.app[POOL], session.account_id)
    per_status = Counter(r["status"] for r in rows)
    counts = [{"status": s, "label": label, "n": per_status.get(s, 0)} for s, label in STATUS_LABELS.items()]
    selected = _selected(request)
    shown = [r for r in rows if selected is None or r["status"] == selected]
    consent = None
    if link is not None and tenant is not None:
        consent = {"link": link, "words": tenant_words_to_send(link, tenant["tenant_id"])}
    return html_response(render_page(
        "admin.html", title="Email connections", script=True, rows=shown, counts=counts, total=len(rows),
        selected=selected, selected_label=STATUS_LABELS.get(selected or "", ""), tenant=tenant, consent=consent,
        csrf=csrf_token(request.app[SETTINGS].session_secret, session.token), tenant_error=tenant_error,
        typed=typed), status=status)


async def page(request: web.Request) -> web.Response:
    found = await _admin(request)
    if isinstance(found, web.Response):
        return found
    return await _render(request, found)


async def start_tenant(request: web.Request) -> web.Response:
    """The panel's form: create the account's tenant connection (tenant id typed) or a new consent link for
    it (tenant id fixed); the answer is the page with the fresh link, shown this once."""
    session, _ = session_from(request)
    if not session.is_admin:
        return forbidden()
    form = await request.post()
    if not csrf_ok(request, session, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="This form has expired. Reload the page and try again.")
    raw = str(form.get("tenant_id") or "")[:200]
    tenant_id = valid_tenant_id(raw)
    if tenant_id is None:
        return await _render(request, session, status=400, typed=raw,
                             tenant_error=f"That is not an organisation mailsync can use: {TENANT_ID_RULE}.")
    try:
        opened = await open_tenant_connection(request.app, session.account_id, tenant_id)
    except TenantConflict as exc:
        return await _render(request, session, status=409, typed=raw, tenant_error=f"Nothing changed: {exc}.")
    log.info("tenant consent link created on the admin page",
             extra={"tenant_connection_id": opened["tenant_connection_id"]})
    return await _render(request, session, link=str(opened["admin_consent_url"]))


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
    app.router.add_post("/admin/email/tenant", start_tenant)
