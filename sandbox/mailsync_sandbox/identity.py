"""The Microsoft identity platform: `/{tenant}/oauth2/v2.0/authorize` and `/{tenant}/oauth2/v2.0/token`.

`{tenant}` is `common`, `organizations` or a tenant id some mailbox belongs to. Authorize shows a
sign-in + consent page (or, for an `auto_consent` mailbox named by `login_hint`, redirects straight
back with a code). Errors after the redirect URI is known go back to it as `error` and
`error_description` ("AADSTSnnnn: ..."); the token endpoint answers errors in AAD's JSON shape
(`error`, `error_description`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`),
400 (401 for `invalid_client`).

Error codes chosen (all real AADSTS codes):
- code redemption: missing parameter 900144; unknown code 9002313; reused 54005; expired 70008;
  other client 70000; redirect_uri differs 500112; PKCE verifier wrong 501481.
- refresh: unknown 9002313; already rotated 70000; revoked `password_reset` 50173, `inactive` 700082
  (both `invalid_grant`), `mfa_required` 50076 (`interaction_required`); tenant requires admin consent
  65001 (`invalid_grant`: the user's consent no longer suffices); scope never consented 65001.
- authorize: tenant requires admin consent -> `error=consent_required`, `AADSTS90094`; Cancel ->
  `error=access_denied`, `AADSTS65004`; unknown sign-in name -> the page shows AADSTS50034.
- client credentials and the admin consent endpoint: admin_consent.py (AADSTS700016 without consent).
- shared mailboxes cannot sign in: AADSTS50057 (account disabled).
- injected outage (`token_endpoint_status`): `temporarily_unavailable` / `server_error` 90033.
- Conditional Access block on the tenant (`POST /sandbox/tenants/{id}/policy {"conditional_access_block":
  true}`): the token endpoint answers `interaction_required`, AADSTS53003, `suberror: message_only` (the
  shape Entra returns for "Access has been blocked by Conditional Access policies. The access policy does
  not allow token issuance."; entra-docs reference-error-codes lists 53003 BlockedByConditionalAccess), and
  authorize redirects back with `error=access_denied` (entra error docs: access_denied covers "a conditional
  access request failed").

Refresh tokens are reusable until they expire (tokens.py). The `claims` parameter (OIDC claims request,
entra-docs claims-challenge) is read on every token request: `xms_cc` values containing `cp1` make the
access token a CAE-capable one (JWT claim `xms_cc: ["cp1"]`), and an `nbf` claim answering a challenge
changes nothing else: for a revoked user the request fails with the revocation's AADSTS code, exactly as
a plain refresh does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

from mailsync_sandbox import admin_consent, pages
from mailsync_sandbox.flows import AuthRequest
from mailsync_sandbox.model import Mailbox
from mailsync_sandbox.state import SANDBOX, Sandbox
from mailsync_sandbox.tokens import (
    GRAPH_APP_ID,
    Grant,
    claims_request,
    declares_cp1,
    graph_scopes,
    normalize_scopes,
)

REVOCATION_ERRORS = {
    "password_reset": ("invalid_grant", 50173,
                       "The provided grant has expired due to it being revoked, a fresh auth token is needed. "
                       "The user might have changed or reset their password."),
    "inactive": ("invalid_grant", 700082, "The refresh token has expired due to inactivity. The token was issued "
                 "on a date after which it was inactive for 90.00:00:00."),
    "mfa_required": ("interaction_required", 50076,
                     "Due to a configuration change made by your administrator, or because you moved to a new "
                     f"location, you must use multi-factor authentication to access '{GRAPH_APP_ID}'."),
}


def _base(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


CA_BLOCKED = (53003, "Access has been blocked by Conditional Access policies. The access policy does not allow "
                     "token issuance.")


def aad_error(request: web.Request, error: str, code: int, description: str, *, status: int = 400,
              headers: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> web.Response:
    stamp = request.app[SANDBOX].clock.now().strftime("%Y-%m-%d %H:%M:%SZ")
    trace = str(uuid.uuid4())
    correlation = request.headers.get("client-request-id") or str(uuid.uuid4())
    body = {
        "error": error,
        "error_description": (f"AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}"
                              f"\r\nTimestamp: {stamp}"),
        "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": correlation,
        "error_uri": f"{_base(request)}/error?code={code}",
        **(extra or {}),
    }
    request.app[SANDBOX].stats.token_endpoint.errors += 1
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store", **(headers or {})})


def _tenant_problem(sb: Sandbox, tenant: str) -> tuple[int, str] | None:
    if tenant.lower() in ("common", "organizations") or tenant.lower() in sb.mail.tenants():
        return None
    if tenant.lower() == "consumers":
        return 9002331, "Application is configured for use by Microsoft Account users only."
    return 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing " \
                  "into the correct cloud."


def _page(status: int, code: int, message: str) -> web.Response:
    return web.Response(status=status, text=pages.error_page(code, message), content_type="text/html")


def _redirect(auth: AuthRequest, params: dict[str, str]) -> web.Response:
    if auth.state is not None:
        params["state"] = auth.state
    return web.Response(status=302, headers={"Location": str(URL(auth.redirect_uri).update_query(params))})


def _redirect_error(auth: AuthRequest, error: str, code: int, description: str, **extra: str) -> web.Response:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    text = f"AADSTS{code}: {description} Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} Timestamp: {stamp}"
    return _redirect(auth, {"error": error, "error_description": text, **extra})


def _valid_redirect_uri(value: str) -> bool:
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host) and not url.fragment


async def authorize(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    tenant = request.match_info["tenant"]
    problem = _tenant_problem(sb, tenant)
    if problem is not None:
        return _page(400, *problem)
    if request.method == "POST":
        return await _authorize_post(request, sb)
    query = request.query
    client_id = query.get("client_id", "").strip()
    if not client_id:
        return _page(400, 900144, "The request body must contain the following parameter: 'client_id'.")
    redirect_uri = query.get("redirect_uri", "")
    if not _valid_redirect_uri(redirect_uri):
        return _page(400, 50011, f"The redirect URI '{redirect_uri}' specified in the request does not match the "
                                 f"redirect URIs configured for the application '{client_id}'.")
    challenge = query.get("code_challenge") or None
    method = (query.get("code_challenge_method") or "plain") if challenge else None
    auth = AuthRequest(tenant, client_id, redirect_uri, normalize_scopes(query.get("scope", "")),
                       query.get("state"), challenge, method, query.get("login_hint", ""), time.time())
    if query.get("response_type") != "code":
        return _redirect_error(auth, "unsupported_response_type", 70005,
                               f"response_type '{query.get('response_type', '')}' is not enabled for the application.")
    if query.get("response_mode", "query") != "query":
        return _redirect_error(auth, "invalid_request", 900144, "The sandbox supports response_mode=query only.")
    if not auth.scopes:
        return _redirect_error(auth, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'scope'.")
    if challenge is not None and (method not in ("S256", "plain") or not 43 <= len(challenge) <= 128):
        return _redirect_error(auth, "invalid_request", 501491, "Invalid size of Code_Challenge parameter.")
    hinted = sb.mail.by_sign_in_name(auth.login_hint) if auth.login_hint else None
    if hinted is not None and hinted.auto_consent:
        return _complete(sb, auth, hinted)
    if query.get("prompt") == "none":
        return _redirect_error(auth, "login_required", 50058,
                               "A silent sign-in request was sent but no user is signed in.")
    flow = sb.flows.add(auth)
    return _sign_in(request, auth, flow, auth.login_hint, None)


def _sign_in(request: web.Request, auth: AuthRequest, flow: str, login: str, error: str | None) -> web.Response:
    html = pages.sign_in_page(action=request.path, flow=flow, login=login, client_id=auth.client_id,
                              scopes=auth.scopes, error=error)
    return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _authorize_post(request: web.Request, sb: Sandbox) -> web.Response:
    form = await request.post()
    flow = str(form.get("flow", ""))
    auth = sb.flows.get(flow)
    if auth is None:
        return _page(400, 50089, "Authentication failed due to flow token expired. Start the sign-in again.")
    if form.get("action") == "cancel":
        sb.flows.pop(flow)
        return _redirect_error(auth, "access_denied", 65004, "User declined to consent to access the app.",
                               error_subcode="cancel")
    login = str(form.get("login", "")).strip()
    mailbox = sb.mail.by_sign_in_name(login) if login else None
    if mailbox is None:
        return _sign_in(request, auth, flow, login, "This username may be incorrect. Make sure you typed it "
                                                    "correctly. Otherwise, contact your admin. (AADSTS50034)")
    sb.flows.pop(flow)
    return _complete(sb, auth, mailbox)


def _complete(sb: Sandbox, auth: AuthRequest, mailbox: Mailbox) -> web.Response:
    if getattr(mailbox, "shared", False):
        # A shared mailbox's account has sign-in blocked; only application permissions reach it.
        return _page(400, 50057, f"The user account {mailbox.address} is disabled.")
    if auth.tenant.lower() not in ("common", "organizations") and auth.tenant.lower() != mailbox.tenant_id.lower():
        return _page(400, 50020, f"User account '{mailbox.address}' from identity provider does not exist in "
                                 f"tenant '{auth.tenant}' and cannot access the application '{auth.client_id}'.")
    if sb.tokens.ca_blocked(mailbox.tenant_id):
        return _redirect_error(auth, "access_denied", CA_BLOCKED[0], CA_BLOCKED[1])
    if sb.tokens.consent_blocked(mailbox.tenant_id, auth.client_id):
        return _redirect_error(
            auth, "consent_required", 90094,
            f"Administrator approval required: an administrator of tenant '{mailbox.tenant_id}' has set a policy "
            f"that prevents users from granting '{auth.client_id}' the permissions it is requesting. An "
            "administrator of the tenant must grant these permissions to the app.")
    grant = sb.tokens.grant(mailbox.user_id, mailbox.tenant_id, auth.client_id, auth.scopes)
    code = sb.tokens.issue_code(grant, auth.redirect_uri, auth.challenge, auth.method)
    return _redirect(auth, {"code": code, "session_state": str(uuid.uuid4())})


# --- token endpoint ---------------------------------------------------------------------------


def _injected_failure(request: web.Request, sb: Sandbox) -> web.Response | None:
    faults = sb.faults
    status = faults.token_endpoint_status
    if status is None:
        return None
    if faults.token_endpoint_fail_count is not None:
        if faults.token_endpoint_fail_count <= 0:
            faults.token_endpoint_status, faults.token_endpoint_fail_count = None, None
            return None
        faults.token_endpoint_fail_count -= 1
        if faults.token_endpoint_fail_count <= 0:
            faults.token_endpoint_status, faults.token_endpoint_fail_count = None, None
    sb.stats.token_endpoint.injected_failures += 1
    error = "temporarily_unavailable" if status in (429, 503, 504) else "server_error"
    headers = {"Retry-After": "1"} if status in (429, 503) else None
    return aad_error(request, error, 90033, "A transient error has occurred. Please try again.", status=status,
                     headers=headers)


async def token(request: web.Request) -> web.Response:
    sb = request.app[SANDBOX]
    sb.stats.token_endpoint.requests += 1
    injected = _injected_failure(request, sb)
    if injected is not None:
        return injected
    raw = await request.post()
    form = {k: v for k, v in raw.items() if isinstance(v, str)}
    problem = _tenant_problem(sb, request.match_info["tenant"])
    if problem is not None:
        return aad_error(request, "invalid_request", *problem)
    client_id = form.get("client_id", "")
    if not client_id:
        return aad_error(request, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    if not form.get("client_secret") and not form.get("client_assertion"):
        return aad_error(request, "invalid_client", 7000218, "The request body must contain the following "
                         "parameter: 'client_assertion' or 'client_secret'.", status=401)
    try:
        claims = claims_request(form.get("claims", ""))
    except ValueError:
        return aad_error(request, "invalid_request", 90014, "The claims parameter is not valid JSON.")
    grant_type = form.get("grant_type", "")
    if grant_type == "authorization_code":
        outcome = _redeem_code(request, sb, form, client_id)
    elif grant_type == "refresh_token":
        outcome = _redeem_refresh(request, sb, form, client_id)
    elif grant_type == "client_credentials":
        return admin_consent.client_credentials(request, sb, form, client_id)
    elif not grant_type:
        return aad_error(request, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'grant_type'.")
    else:
        return aad_error(request, "unsupported_grant_type", 70003,
                         f"The app requested an unsupported grant type '{grant_type[:40]}'.")
    if isinstance(outcome, web.Response):
        return outcome
    return _issue(request, sb, outcome, cp1=declares_cp1(claims))


def _common_checks(request: web.Request, sb: Sandbox, grant: Grant) -> web.Response | None:
    revocation = sb.tokens.revoked(grant)
    if revocation is not None:
        error, code, text = REVOCATION_ERRORS[revocation.reason]
        return aad_error(request, error, code, text)
    tenant = request.match_info["tenant"]
    if tenant.lower() not in ("common", "organizations") and tenant.lower() != grant.tenant_id.lower():
        return aad_error(request, "invalid_grant", 50020, f"User account does not exist in tenant '{tenant}'.")
    if sb.tokens.ca_blocked(grant.tenant_id):
        return aad_error(request, "interaction_required", *CA_BLOCKED, extra={"suberror": "message_only"})
    if sb.tokens.consent_blocked(grant.tenant_id, grant.client_id):
        return aad_error(request, "invalid_grant", 65001, _not_consented(grant.client_id))
    return None


def _not_consented(client_id: str) -> str:
    return (f"The user or administrator has not consented to use the application with ID '{client_id}' named "
            f"'{client_id}'. Send an interactive authorization request for this user and resource.")


def _redeem_code(request: web.Request, sb: Sandbox, form: dict[str, str], client_id: str) -> Grant | web.Response:
    code = form.get("code", "")
    if not code:
        return aad_error(request, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'code'.")
    record = sb.tokens.codes.get(code)
    if record is None:
        return aad_error(request, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if record.used:
        return aad_error(request, "invalid_grant", 54005, "OAuth2 Authorization code was already redeemed, please "
                         "retry with a new valid code or use an existing refresh token.")
    record.used = True  # single use, whatever the outcome
    if record.expires_at <= sb.clock.time():
        return aad_error(request, "invalid_grant", 70008, "The provided authorization code or refresh token has "
                         "expired due to inactivity. Send a new interactive authorization request for this user "
                         "and resource.")
    if record.grant.client_id != client_id:
        return aad_error(request, "invalid_grant", 70000, "The provided authorization code was issued to another "
                         "client.")
    redirect_uri = form.get("redirect_uri", "")
    if redirect_uri != record.redirect_uri:
        return aad_error(request, "invalid_grant", 500112, f"The reply address '{redirect_uri}' does not match the "
                         f"reply address '{record.redirect_uri}' provided when requesting Authorization code.")
    if record.challenge is not None:
        verifier = form.get("code_verifier", "")
        if record.method == "S256":
            computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        else:
            computed = verifier
        if not verifier or not hmac.compare_digest(computed, record.challenge):
            return aad_error(request, "invalid_grant", 501481,
                             "The Code_Verifier does not match the code_challenge supplied in the authorization "
                             "request.")
    return _common_checks(request, sb, record.grant) or record.grant


def _redeem_refresh(request: web.Request, sb: Sandbox, form: dict[str, str], client_id: str
                    ) -> Grant | web.Response:
    token = form.get("refresh_token", "")
    if not token:
        return aad_error(request, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'refresh_token'.")
    record = sb.tokens.refresh.get(token)
    if record is None:
        return aad_error(request, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid.")
    if record.grant.client_id != client_id:
        return aad_error(request, "invalid_grant", 70000, "Provided grant is invalid or malformed: the refresh "
                         "token was issued to another client.")
    problem = _common_checks(request, sb, record.grant)
    if problem is not None:
        return problem
    if record.expires_at <= sb.clock.time():
        return aad_error(request, "invalid_grant", *REVOCATION_ERRORS["inactive"][1:])
    wanted = normalize_scopes(form.get("scope", ""))
    granted = {s.lower() for s in record.grant.scopes}
    if any(s.lower() not in granted for s in wanted):
        return aad_error(request, "invalid_grant", 65001, _not_consented(client_id))
    return sb.tokens.regrant(record.grant, record.grant.scopes)


def _issue(request: web.Request, sb: Sandbox, grant: Grant, *, cp1: bool = False) -> web.Response:
    mailbox = sb.mail.mailboxes.get(grant.user_id)
    if mailbox is None:
        return aad_error(request, "invalid_grant", 50034,
                         f"The user account {grant.user_id} does not exist in the directory.")
    access, lifetime = sb.tokens.issue_access(grant, sb.faults.access_token_lifetime_s,
                                              name=mailbox.display_name, upn=mailbox.address, cp1=cp1)
    lowered = {s.lower() for s in grant.scopes}
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "scope": " ".join([*graph_scopes(grant.scopes), *(s for s in ("profile", "openid", "email") if s in lowered)]),
        "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access,
    }
    if "offline_access" in lowered:
        body["refresh_token"] = sb.tokens.issue_refresh(grant)
    if "openid" in lowered:
        body["id_token"] = sb.tokens.id_token(grant, name=mailbox.display_name, upn=mailbox.address)
    sb.stats.token_endpoint.issued += 1
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})
