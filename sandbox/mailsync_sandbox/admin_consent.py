"""Application permissions: the admin consent endpoint and the client credentials grant.

`GET /{tenant}/v2.0/adminconsent?client_id=&scope=https://graph.microsoft.com/.default&redirect_uri=&state=`
shows an administrator the permissions the application asks for the whole organisation (Accept / Cancel;
for `common`/`organizations` it asks who signs in, and the tenant is theirs). Accept records the consent
and redirects to `redirect_uri` with `admin_consent=True&tenant=<tenant id>&state=&scope=` (entra-docs,
v2-admin-consent); Cancel with `error=access_denied` and AADSTS65004. A tenant with the
`auto_admin_consent` policy consents at once (scripts and tests, no browser).

`grant_type=client_credentials` (entra-docs, v2-oauth2-client-creds-grant-flow): `scope` must be
`<resource>/.default` (else AADSTS1002012); the credential is a `client_secret` (any, as the sandbox keeps
no secrets) or an RFC 7523 `client_assertion` checked against the application's registered certificates
(client_assertion.py); the tenant must be named (`common`/`organizations`: AADSTS50059). Without an admin
consent of that tenant (never given, or revoked) the answer is 400 `unauthorized_client` AADSTS700016 —
what Entra answers when the application has no service principal in the tenant ("...has not been
installed by the administrator of the tenant or consented to by any user in the tenant"). Tokens carry
`roles`, no refresh token.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from html import escape

from aiohttp import web
from yarl import URL

from mailsync_sandbox import client_assertion
from mailsync_sandbox.flows import AuthRequest
from mailsync_sandbox.state import SANDBOX, Sandbox
from mailsync_sandbox.tokens import APP_ROLES

ANY_TENANT = ("common", "organizations")
_STYLE = ('body{font-family:"Segoe UI",system-ui,sans-serif;background:#f2f2f2;margin:0}main{max-width:460px;'
          'margin:48px auto;background:#fff;padding:36px 44px}h1{font-size:22px;font-weight:600}ul{font-size:14px}'
          'button{min-width:108px;padding:6px 12px;font-size:15px;border:0}button.primary{background:#0067b8;'
          'color:#fff}.error{color:#e81123}')


def _html(title: str, content: str, status: int = 200) -> web.Response:
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{_STYLE}</style></head><body><main><div>Microsoft 365 sandbox</div>{content}</main></body></html>')
    return web.Response(status=status, text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def _error_page(code: int, message: str, status: int = 400) -> web.Response:
    return _html("Sign in to your account", f'<h1>Sorry, but we\'re having trouble signing you in.</h1>'
                                            f'<p class="error" id="error">AADSTS{code}: {escape(message)}</p>', status)


def _redirect(redirect_uri: str, params: dict[str, str], state: str | None) -> web.Response:
    if state is not None:
        params["state"] = state
    return web.Response(status=302, headers={"Location": str(URL(redirect_uri).update_query(params))})


def _consented(sb: Sandbox, tenant_id: str, auth: AuthRequest) -> web.Response:
    sb.tokens.grant_admin_consent(tenant_id, auth.client_id)
    return _redirect(auth.redirect_uri, {"admin_consent": "True", "tenant": tenant_id,
                                         "scope": "https://graph.microsoft.com/.default"}, auth.state)


def _declined(auth: AuthRequest) -> web.Response:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = (f"AADSTS65004: User declined to consent to access the app. Trace ID: {uuid.uuid4()} "
            f"Correlation ID: {uuid.uuid4()} Timestamp: {stamp}")
    return _redirect(auth.redirect_uri, {"error": "access_denied", "error_description": text,
                                         "error_subcode": "cancel", "admin_consent": "True"}, auth.state)


def _page(request: web.Request, flow: str, auth: AuthRequest, error: str | None = None) -> web.Response:
    ask_login = auth.tenant.lower() in ANY_TENANT
    login = ('<label for="login">Administrator\'s email address</label> <input type="email" id="login" '
             'name="login" required>') if ask_login else ""
    roles = "".join(f"<li>{escape(r)} (application)</li>" for r in APP_ROLES)
    problem = f'<p class="error" id="error" role="alert">{escape(error)}</p>' if error else ""
    content = f"""<h1>Permissions requested</h1><p>Accept for your organisation</p>
<form method="post" action="{escape(request.path)}"><input type="hidden" name="flow" value="{escape(flow)}">
{login}{problem}<p>The application <code>{escape(auth.client_id)}</code> would like to, for every user of
your organisation:</p><ul id="roles">{roles}</ul>
<p>Consent on behalf of your organisation: nobody else will be asked.</p>
<button type="submit" name="action" value="accept" class="primary" id="accept">Accept</button>
<button type="submit" name="action" value="cancel" id="cancel" formnovalidate>Cancel</button></form>"""
    return _html("Permissions requested", content)


async def admin_consent(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    tenant = request.match_info["tenant"]
    if tenant.lower() not in ANY_TENANT and tenant.lower() not in sb.mail.tenants():
        return _error_page(90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.")
    if request.method == "POST":
        return await _post(request, sb)
    query = request.query
    client_id = query.get("client_id", "").strip()
    if not client_id:
        return _error_page(900144, "The request body must contain the following parameter: 'client_id'.")
    redirect_uri = query.get("redirect_uri", "")
    try:
        target = URL(redirect_uri)
    except ValueError:
        target = URL()
    if target.scheme not in ("http", "https") or not target.host or target.fragment:
        return _error_page(50011, f"The redirect URI '{redirect_uri}' specified in the request does not match the "
                                  f"redirect URIs configured for the application '{client_id}'.")
    auth = AuthRequest(tenant, client_id, redirect_uri, (), query.get("state"), None, None, "", time.time())
    if tenant.lower() not in ANY_TENANT and sb.tokens.auto_admin_consent.get(tenant.lower(), False):
        return _consented(sb, _tenant_id(sb, tenant), auth)
    flow = sb.flows.add(auth)
    return _page(request, flow, auth)


def _tenant_id(sb: Sandbox, tenant: str) -> str:
    """The tenant id as its mailboxes spell it."""
    return next((m.tenant_id for m in sb.mail.mailboxes.values() if m.tenant_id.lower() == tenant.lower()), tenant)


async def _post(request: web.Request, sb: Sandbox) -> web.Response:
    form = await request.post()
    flow = str(form.get("flow", ""))
    auth = sb.flows.get(flow)
    if auth is None:
        return _error_page(50089, "Authentication failed due to flow token expired. Start the sign-in again.")
    if form.get("action") == "cancel":
        sb.flows.pop(flow)
        return _declined(auth)
    tenant_id = _tenant_id(sb, auth.tenant)
    if auth.tenant.lower() in ANY_TENANT:
        admin = sb.mail.by_sign_in_name(str(form.get("login", "")))
        if admin is None or getattr(admin, "shared", False):
            return _page(request, flow, auth, "This username may be incorrect. (AADSTS50034)")
        tenant_id = admin.tenant_id
    sb.flows.pop(flow)
    return _consented(sb, tenant_id, auth)


# --- token endpoint: client credentials --------------------------------------------------------------

def client_credentials(request: web.Request, sb: Sandbox, form: dict[str, str], client_id: str
                       ) -> web.Response:
    from mailsync_sandbox.identity import aad_error  # identity imports this module for the grant

    tenant = request.match_info["tenant"]
    if tenant.lower() in ANY_TENANT:
        return aad_error(request, "invalid_request", 50059, "No tenant-identifying information found in either "
                         "the request or implied by any provided credentials.")
    scope = form.get("scope", "").split()
    if len(scope) != 1 or not scope[0].endswith("/.default"):
        given = form.get("scope", "")[:80]
        return aad_error(request, "invalid_scope", 1002012, f"The provided value for scope {given!r} is not valid."
                         " Client credential flows must have a scope value with /.default suffixed "
                         "to the resource identifier (application ID URI).")
    assertion = form.get("client_assertion")
    if assertion:
        if form.get("client_assertion_type") != client_assertion.ASSERTION_TYPE:
            return aad_error(request, "invalid_request", 70002, "client_assertion_type must be "
                             f"{client_assertion.ASSERTION_TYPE}.")
        try:
            client_assertion.verify(assertion, client_id=client_id,
                                    token_url_path=f"/{tenant}/oauth2/v2.0/token",
                                    certificates=sb.tokens.app_certificates.get(client_id, []), now=time.time(),
                                    seen_jti=sb.tokens.seen_assertions)
        except client_assertion.AssertionRefused as exc:
            return aad_error(request, "invalid_client", exc.code, exc.message, status=401)
    tenant_id = _tenant_id(sb, tenant)
    if not sb.tokens.admin_consented(tenant_id, client_id):
        return aad_error(request, "unauthorized_client", 700016,
                         f"Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. "
                         "This can happen if the application has not been installed by the administrator of the "
                         "tenant or consented to by any user in the tenant. You may have sent your authentication "
                         "request to the wrong tenant.")
    grant = sb.tokens.app_grant(tenant_id, client_id)
    access, lifetime = sb.tokens.issue_app_access(grant, sb.faults.access_token_lifetime_s)
    sb.stats.token_endpoint.issued += 1
    return web.json_response({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                              "access_token": access}, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
