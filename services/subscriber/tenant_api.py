"""The tenant-wide connection's API and the admin consent callback (docs/contract.md#tenant-connection).

- `POST /api/v1/accounts/{account_id}/tenant-connection {"tenant_id"}`: create (or renew the consent link
  of) the account's tenant connection; the tenant is fixed from here on.
- `GET` / `DELETE` the same path; `POST .../shared-mailboxes {"address"}`, `DELETE .../shared-mailboxes/{id}`.
- `GET /oauth/microsoft365/admin-callback`: where Microsoft returns the administrator. The consent link
  travels (a user forwards it to IT), so nothing binds it to a browser; instead the state is signed,
  single-use and expiring, the callback's `tenant` must be the one fixed at creation, and before anyone is
  enrolled the tenant's verified domains must cover the account's users' mail domains.

Account-scoped API tokens see their own account only: another account's paths answer 404.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from html import escape
from typing import Any

from aiohttp import web

from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.graph.errors import GraphError, Severity
from services.core.adapters.store.tenants import TenantConnections
from services.core.application.tenant import (
    REASON_WRONG_TENANT,
    StateRefused,
    TenantDeps,
    check_tenant_domains,
    disconnect_tenant,
    mailbox_counts,
    redeem_state,
    set_tenant_status,
    sync_tenant,
    view,
)
from services.core.application.tenant_connection import (
    TenantConflict,
    add_shared_mailbox,
    remove_shared_mailbox,
)
from services.core.application.tenant_connection import open_tenant_connection as opened
from services.core.domain.addresses import normalize_address
from services.subscriber.api import api_error, caller
from services.subscriber.keys import GRAPH, POOL, SETTINGS, STATUS, TOKENS
from services.subscriber.sessions import html_response, page_html

log = logging.getLogger(__name__)
APP_CREDENTIALS = web.AppKey("app_credentials", AppCredentials)
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}")


def deps(app: web.Application) -> TenantDeps:
    return TenantDeps(pool=app[POOL], graph=app[GRAPH], app=app[APP_CREDENTIALS], status=app[STATUS],
                      settings=app[SETTINGS], tokens=app[TOKENS])


def _account(request: web.Request) -> str | None:
    """The path's account if the caller may see it (the operator sees every account)."""
    account_id = request.match_info["account_id"]
    scope = caller(request).account_id
    return account_id if scope is None or scope == account_id else None


def _not_found(what: str = "no tenant connection for this account") -> web.Response:
    return api_error(404, "not_found", what)


async def _row(request: web.Request, account_id: str) -> Any:
    return await TenantConnections(request.app[POOL]).of_account(account_id)


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return api_error(400, "bad_request", "the body must be JSON")
    if not isinstance(body, dict):
        return api_error(400, "bad_request", "the body must be a JSON object")
    return body


TENANT_ID_RULE = ("tenant_id must be the organisation's tenant id (a GUID) or its domain; common, organizations "
                  "and consumers name no organisation")


def valid_tenant_id(raw: object) -> str | None:
    """The organisation's tenant id (a GUID or a domain) as typed, trimmed; None when it names none."""
    if not isinstance(raw, str) or not TENANT_ID.fullmatch(raw.strip()) or \
            raw.strip().lower() in ("common", "organizations", "consumers"):
        return None
    return raw.strip()


async def open_tenant_connection(app: web.Application, account_id: str, tenant_id: str) -> dict[str, Any]:
    """The API and /admin/email share it (services/core/application/tenant_connection.py)."""
    return await opened(app[POOL], app[SETTINGS], app[STATUS].publisher, account_id, tenant_id)


async def post_tenant_connection(request: web.Request) -> web.Response:
    account_id = _account(request)
    if account_id is None:
        return _not_found("no such account")
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    tenant_id = valid_tenant_id(body.get("tenant_id"))
    if tenant_id is None:
        return api_error(400, "bad_request", TENANT_ID_RULE)
    try:
        return web.json_response(await open_tenant_connection(request.app, account_id, tenant_id))
    except TenantConflict as exc:
        return api_error(409, "conflict", str(exc))


async def _tenant_view(request: web.Request, row: Any) -> web.Response:
    return web.json_response(view(row, await mailbox_counts(request.app[POOL], str(row["tenant_connection_id"]))))


async def get_tenant_connection(request: web.Request) -> web.Response:
    account_id = _account(request)
    row = await _row(request, account_id) if account_id is not None else None
    if row is None:
        return _not_found()
    return await _tenant_view(request, row)


async def delete_tenant_connection(request: web.Request) -> web.Response:
    account_id = _account(request)
    row = await _row(request, account_id) if account_id is not None else None
    if row is None:
        return _not_found()
    await disconnect_tenant(deps(request.app), str(row["tenant_connection_id"]))
    row = await _row(request, row["account_id"])
    return await _tenant_view(request, row)


async def post_shared_mailbox(request: web.Request) -> web.Response:
    account_id = _account(request)
    if account_id is None:
        return _not_found("no such account")
    body = await _body(request)
    if isinstance(body, web.Response):
        return body
    raw = body.get("address")
    address = normalize_address(raw) if isinstance(raw, str) else None
    if not address:
        return api_error(400, "bad_request", "address must be the shared mailbox's email address")
    mailbox_id = await add_shared_mailbox(request.app[POOL], account_id, address)
    return web.json_response({"mailbox_id": mailbox_id, "address": address}, status=201)


async def delete_shared_mailbox(request: web.Request) -> web.Response:
    account_id = _account(request)
    mailbox_id = request.match_info["mailbox_id"]
    if account_id is None or not re.fullmatch(r"[0-9a-fA-F-]{36}", mailbox_id):
        return _not_found("no such shared mailbox")
    if not await remove_shared_mailbox(deps(request.app), account_id, mailbox_id):
        return _not_found("no such shared mailbox")
    return web.json_response({"mailbox_id": mailbox_id, "deleted": True})


# --- the administrator's return ---------------------------------------------------------------------------

def _page(status: int, title: str, text: str) -> web.Response:
    body = f'<h1>{escape(title)}</h1><div class="card"><p class="notice" id="outcome">{escape(text)}</p></div>'
    return html_response(page_html(title, body), status=status)


async def admin_callback(request: web.Request) -> web.Response:
    query = request.query
    pool, settings = request.app[POOL], request.app[SETTINGS]
    publisher = request.app[STATUS].publisher
    if not query.get("state"):
        return _per_user_consent(query)
    try:
        state = await redeem_state(pool, settings, query.get("state", ""))
    except StateRefused as exc:
        return _page(400, "Consent link not accepted", str(exc))
    tenant_connection_id = state.tenant_connection_id
    if query.get("error"):
        description = query.get("error_description", "")
        code = re.search(r"AADSTS(\d+)", description)
        reason = ("The administrator declined mailsync's consent request." if query.get("error") == "access_denied"
                  else f"Microsoft 365 did not grant the consent ({query.get('error', '')[:60]}).")
        await set_tenant_status(pool, tenant_connection_id, "pending_consent", reason,
                                f"AADSTS{code.group(1)}" if code else query.get("error", "")[:60],
                                publisher=publisher)
        return _page(400, "Consent not granted", reason)
    returned = query.get("tenant", "")
    if query.get("admin_consent", "").lower() != "true" or not returned:
        return _page(400, "Consent not granted", "Microsoft 365 did not confirm the administrator's consent.")
    if returned.lower() != state.tenant_id.lower():
        reason = REASON_WRONG_TENANT.format(got=returned[:64], want=state.tenant_id)
        await set_tenant_status(pool, tenant_connection_id, "pending_consent", reason, "wrong_tenant",
                                publisher=publisher)
        log.warning("admin consent from another tenant refused", extra={"tenant_connection_id": tenant_connection_id})
        return _page(400, "Consent not used", reason)
    tenant = deps(request.app)
    try:
        refused = await check_tenant_domains(tenant, tenant_connection_id, state.account_id, state.tenant_id)
    except GraphError as exc:
        reason = ("mailsync could not read the organisation's verified domains yet "
                  f"({exc.classified.error_code}); open the consent link again in a few minutes.")
        if exc.classified.severity is not Severity.TRANSIENT:
            reason = f"mailsync could not use the consent: {exc.classified.reason}"
        await set_tenant_status(pool, tenant_connection_id, "pending_consent", reason, exc.classified.error_code,
                                publisher=publisher)
        return _page(502 if exc.transient else 400, "Consent not used yet", reason)
    if refused is not None:
        return _page(400, "Consent not used", refused)
    await set_tenant_status(pool, tenant_connection_id, "connected", None, None, publisher=publisher)
    try:
        counts = await sync_tenant(tenant, tenant_connection_id)
    except GraphError as exc:  # the renewer's next pass enrols the rest
        log.warning("first enrolment pass incomplete", extra={"tenant_connection_id": tenant_connection_id,
                                                              "error_code": exc.classified.error_code})
        counts = await mailbox_counts(pool, tenant_connection_id)
    return _page(200, "Consent recorded", f"mailsync now syncs your organisation's mailboxes for this account "
                                          f"({counts.get('enrolled', 0)} enrolled so far); you can close this page.")


def _per_user_consent(query: Mapping[str, str]) -> web.Response:
    """The link a user's settings page hands out when their organisation requires an administrator's approval
    carries no state (it belongs to no tenant connection): Microsoft returns here and nothing is changed; the
    administrator is told what happens next. The users themselves reconnect, which now succeeds."""
    if query.get("error"):
        reason = ("The administrator declined mailsync's consent request." if query.get("error") == "access_denied"
                  else f"Microsoft 365 did not grant the consent ({query.get('error', '')[:60]}).")
        return _page(400, "Consent not granted", reason)
    if query.get("admin_consent", "").lower() != "true":
        return _page(400, "Consent not granted", "Microsoft 365 did not confirm the administrator's consent.")
    return _page(200, "Consent recorded", "Microsoft 365 recorded your approval of mailsync for your organisation. "
                                          "The people who asked can now connect their mailbox from their Email "
                                          "settings page; you can close this page.")


def add_tenant_routes(app: web.Application) -> None:
    base = "/api/v1/accounts/{account_id}"
    app.router.add_post(f"{base}/tenant-connection", post_tenant_connection)
    app.router.add_get(f"{base}/tenant-connection", get_tenant_connection)
    app.router.add_delete(f"{base}/tenant-connection", delete_tenant_connection)
    app.router.add_post(f"{base}/shared-mailboxes", post_shared_mailbox)
    app.router.add_delete(f"{base}/shared-mailboxes/{{mailbox_id}}", delete_shared_mailbox)
    app.router.add_get("/oauth/microsoft365/admin-callback", admin_callback)
