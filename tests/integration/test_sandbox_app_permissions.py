"""The sandbox's application permissions over real HTTPS: admin consent, client credentials (secret and
certificate assertion through azure-identity), app-only Graph access, access policy, shared mailboxes,
verified domains, consent revocation."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from mailsync_sandbox.app_certificate import certificate_pem, ensure_app_certificate
from mailsync_sandbox.local_ca import local_tls
from services.core.adapters.app_credential import AppCredentials
from services.core.adapters.config import Settings
from services.core.adapters.graph.errors import GraphError, Severity
from tests.integration.sandbox_support import CA_FILE, CLIENT_ID, TLS_DIR, Env, env, jwt_claims, servers

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]
REDIRECT = "https://127.0.0.1:9/admin-callback"


async def _tenant(env: Env, *addresses: str, shared: str | None = None) -> tuple[str, list[dict]]:
    tenant = str(uuid.uuid4())
    boxes = []
    for address in addresses:
        boxes.append(await env.control("POST", "/sandbox/mailboxes", {
            "user_id": str(uuid.uuid4()), "tenant_id": tenant, "address": address}, expect=201))
    if shared:
        boxes.append(await env.control("POST", "/sandbox/mailboxes", {
            "user_id": str(uuid.uuid4()), "tenant_id": tenant, "address": shared, "shared": True}, expect=201))
    return tenant, boxes


async def _consent(env: Env, tenant: str) -> dict[str, str]:
    params = {"client_id": CLIENT_ID, "scope": "https://graph.microsoft.com/.default", "redirect_uri": REDIRECT,
              "state": "s-1"}
    async with env.http.get(f"{env.url}/{tenant}/v2.0/adminconsent", params=params, allow_redirects=False) as r:
        await r.read()
        assert r.status == 302, r.status
        return {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}


async def _app_token(env: Env, tenant: str) -> tuple[int, dict]:
    return await env.token_post({"grant_type": "client_credentials",
                                 "scope": "https://graph.microsoft.com/.default"}, tenant=tenant)


async def test_admin_consent_then_client_credentials_reach_every_mailbox_of_the_tenant_only(env: Env):
    tenant, (alice, bob, support) = await _tenant(env, "alice@t1.example", "bob@t1.example",
                                                  shared="support@t1.example")
    status, body = await _app_token(env, tenant)
    assert status == 400 and body["error_codes"] == [700016], body  # no consent yet
    # The page waits for the administrator; with auto_admin_consent it returns at once.
    async with env.http.get(f"{env.url}/{tenant}/v2.0/adminconsent", params={
            "client_id": CLIENT_ID, "redirect_uri": REDIRECT, "state": "x"}, allow_redirects=False) as r:
        assert r.status == 200 and "Permissions requested" in await r.text()
    await env.control("POST", f"/sandbox/tenants/{tenant}/policy", {"auto_admin_consent": True})
    answer = await _consent(env, tenant)
    assert answer == {"admin_consent": "True", "tenant": tenant, "state": "s-1",
                      "scope": "https://graph.microsoft.com/.default"}

    status, body = await _app_token(env, tenant)
    assert status == 200 and "refresh_token" not in body, body
    claims = jwt_claims(body["access_token"])
    assert "Mail.Read" in claims["roles"] and "scp" not in claims and claims["tid"] == tenant
    token = body["access_token"]
    await env.deliver(support["user_id"], subject="to the shared mailbox")
    for box in (alice, bob, support):
        status, page, _ = await env.graph("GET", f"/users/{box['address']}/messages", token)
        assert status == 200, page
    status, page, _ = await env.graph("GET", f"/users/{support['user_id']}/messages", token)
    assert [m["subject"] for m in page["value"]] == ["to the shared mailbox"]
    status, _, _ = await env.graph("GET", "/me/messages", token)
    assert status == 400
    _, (stranger,) = await _tenant(env, "carol@t2.example")
    status, body, _ = await env.graph("GET", f"/users/{stranger['user_id']}/messages", token)
    assert status == 404 and body["error"]["code"] == "ErrorInvalidUser"
    # Nobody signs in to a shared mailbox.
    await env.control("POST", "/sandbox/tokens", {"user_id": support["user_id"]}, expect=400)

    status, org, _ = await env.graph("GET", "/organization", token)
    assert status == 200 and [d["name"] for d in org["value"][0]["verifiedDomains"]] == ["t1.example"]
    await env.control("POST", f"/sandbox/tenants/{tenant}/policy", {"verified_domains": ["other.example"]})
    status, org, _ = await env.graph("GET", "/organization", token)
    assert [d["name"] for d in org["value"][0]["verifiedDomains"]] == ["other.example"]


async def test_application_access_policy_limits_mail_and_subscriptions(env: Env):
    tenant, (alice, bob) = await _tenant(env, "alice@p.example", "bob@p.example")
    await env.control("POST", f"/sandbox/tenants/{tenant}/policy",
                      {"auto_admin_consent": True, "application_access_policy": ["alice@p.example"]})
    await _consent(env, tenant)
    _, body = await _app_token(env, tenant)
    token = body["access_token"]
    status, _, _ = await env.graph("GET", f"/users/{alice['user_id']}/messages", token)
    assert status == 200
    status, denied, _ = await env.graph("GET", f"/users/{bob['user_id']}/messages", token)
    assert status == 403 and denied["error"]["code"] == "ErrorAccessDenied" and "AccessPolicy" in \
        denied["error"]["message"]
    sub = {"changeType": "created", "notificationUrl": f"{env.receiver.url}/notify",
           "resource": f"/users/{bob['user_id']}/messages", "expirationDateTime": "2099-01-01T00:00:00Z"}
    status, _, _ = await env.graph("POST", "/subscriptions", token, body=sub)
    assert status in (400, 403)
    sub["resource"] = f"/users/{alice['user_id']}/messages"
    sub["expirationDateTime"] = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status, created, _ = await env.graph("POST", "/subscriptions", token, body=sub)
    assert status == 201, created
    live = [s for s in (await env.control("GET", "/sandbox/subscriptions"))["value"] if s["id"] == created["id"]]
    assert live and live[0]["delegated"] is False
    # A password reset removes delegated subscriptions only.
    answer = await env.control("POST", f"/sandbox/users/{alice['user_id']}/revoke", {"reason": "password_reset"})
    assert answer["subscriptions_removed"] == []


async def test_certificate_assertion_through_azure_identity_and_revoked_consent(env: Env):
    tenant, (alice,) = await _tenant(env, "alice@cert.example")
    await env.control("POST", f"/sandbox/tenants/{tenant}/policy", {"auto_admin_consent": True})
    await _consent(env, tenant)
    ca = local_tls(TLS_DIR)["ca"]
    pem = ensure_app_certificate(TLS_DIR, ca[0], ca[1], CLIENT_ID)
    settings = replace(Settings(kafka_bootstrap="-", database_url="-"), login_url=env.url, client_id=CLIENT_ID,
                       app_cert_file=str(pem), ca_file=CA_FILE())
    credentials = AppCredentials(settings, env.http)
    try:
        with pytest.raises(GraphError) as unregistered:
            await credentials.token(tenant)
        assert unregistered.value.classified.error_code == "AADSTS700027"
        assert unregistered.value.classified.severity is Severity.PERMANENT
        await env.control("POST", f"/sandbox/apps/{CLIENT_ID}/certificates", {"pem": certificate_pem(pem)},
                          expect=201)
        token, _ = await credentials.token(tenant, fresh=True)
        again, _ = await credentials.token(tenant)
        assert again == token  # the library caches
        status, _, _ = await env.graph("GET", f"/users/{alice['user_id']}/messages", token)
        assert status == 200

        answer = await env.control("POST", f"/sandbox/tenants/{tenant}/policy", {"revoke_admin_consent": True})
        assert answer["admin_consents_revoked"] == 1
        status, body, _ = await env.graph("GET", f"/users/{alice['user_id']}/messages", token)
        assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
        with pytest.raises(GraphError) as revoked:
            await credentials.token(tenant, fresh=True)
        assert revoked.value.classified.severity is Severity.CONSENT
        assert revoked.value.classified.error_code == "AADSTS700016"
    finally:
        await credentials.close()
