"""The sandbox's identity platform over real HTTP: authorize, consent page, PKCE, refresh, revocation."""

from __future__ import annotations

import re
import time

import pytest

from tests.integration.sandbox_support import CLIENT_ID, Env, env, jwt_claims, pkce, query, servers
from tests.support.wait import wait_until

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["env", "servers"]

AAD_KEYS = {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id", "error_uri"}
REDIRECT = "http://127.0.0.1:9/callback"


def assert_aad(body: dict, error: str, code: int) -> None:
    assert set(body) >= AAD_KEYS, body
    assert body["error"] == error and body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}: "), body["error_description"]


async def test_auto_consent_code_flow_with_pkce_gives_working_tokens(env: Env):
    box = await env.mailbox()
    verifier, challenge = pkce()
    resp = await env.authorize(box["address"].upper(), challenge=challenge)
    assert resp.status == 302 and resp.headers["Location"].startswith(REDIRECT + "?")
    answer = query(resp)
    assert answer["state"] == "st-1" and answer["code"]
    status, body = await env.token_post({"grant_type": "authorization_code", "code": answer["code"],
                                         "code_verifier": verifier, "redirect_uri": REDIRECT})
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["expires_in"] == 4500 and body["ext_expires_in"] == 4500
    assert set(body["scope"].split()) == {"User.Read", "Mail.Read", "openid", "profile", "email"}
    assert body["refresh_token"] and body["access_token"].count(".") == 2
    claims = jwt_claims(body["id_token"])
    assert (claims["oid"], claims["tid"], claims["preferred_username"]) == (
        box["user_id"], box["tenant_id"], box["address"])
    status, me, _ = await env.graph("GET", "/me", body["access_token"])
    assert status == 200 and me["id"] == box["user_id"]

    status, again = await env.token_post({"grant_type": "authorization_code", "code": answer["code"],
                                          "code_verifier": verifier, "redirect_uri": REDIRECT})
    assert status == 400
    assert_aad(again, "invalid_grant", 54005)  # codes are single-use


@pytest.mark.parametrize(("change", "code"), [
    ({"code_verifier": "x" * 43}, 501481),
    ({"code_verifier": ""}, 501481),
    ({"redirect_uri": "http://127.0.0.1:9/other"}, 500112),
    ({"client_id": "another-app"}, 70000),
])
async def test_code_redemption_checks_pkce_redirect_uri_and_client(env: Env, change: dict, code: int):
    box = await env.mailbox()
    verifier, challenge = pkce()
    resp = await env.authorize(box["address"], challenge=challenge)
    form = {"grant_type": "authorization_code", "code": query(resp)["code"], "code_verifier": verifier,
            "redirect_uri": REDIRECT, **change}
    status, body = await env.token_post(form)
    assert status == 400
    assert_aad(body, "invalid_grant", code)


async def test_token_endpoint_requires_a_client_secret(env: Env):
    async with env.http.post(f"{env.url}/common/oauth2/v2.0/token",
                             data={"client_id": CLIENT_ID, "grant_type": "refresh_token", "refresh_token": "x"}) as r:
        assert r.status == 401
        assert_aad(await r.json(), "invalid_client", 7000218)


async def test_refresh_rotates_and_the_old_refresh_token_keeps_working(env: Env):
    # Microsoft: refresh tokens are not revoked when used; a new one comes back and both work until expiry.
    box = await env.mailbox()
    first = await env.sign_in(box["address"])
    status, second = await env.token_post({"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                           "scope": "offline_access Mail.Read"}, tenant=box["tenant_id"])
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    status, reused = await env.token_post({"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert status == 200 and reused["refresh_token"] not in (first["refresh_token"], second["refresh_token"])
    status, third = await env.token_post({"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert status == 200 and third["refresh_token"]
    status, wider = await env.token_post({"grant_type": "refresh_token", "refresh_token": third["refresh_token"],
                                          "scope": "Mail.ReadWrite"})
    assert status == 400
    assert_aad(wider, "invalid_grant", 65001)  # never consented


@pytest.mark.parametrize(("reason", "error", "code"), [
    ("password_reset", "invalid_grant", 50173),
    ("inactive", "invalid_grant", 700082),
    ("mfa_required", "interaction_required", 50076),
])
async def test_revocation_fails_refresh_with_the_matching_error_and_access_tokens_live_on(
        env: Env, reason: str, error: str, code: int):
    # Without the cp1 capability Graph accepts an access token until it expires, whatever happened since
    # (continuous access evaluation challenges only clients that declared cp1: test_sandbox_fidelity.py).
    box = await env.mailbox()
    tokens = await env.sign_in(box["address"])
    explorer = await env.token(box["user_id"])
    assert (await env.graph("GET", "/me/messages", tokens["access_token"]))[0] == 200
    revoked = await env.control("POST", f"/sandbox/users/{box['user_id']}/revoke", {"reason": reason})
    assert (revoked["access_tokens_live"], revoked["access_tokens_challenged"]) == (2, 0)
    for token in (tokens["access_token"], explorer):
        status, _, _ = await env.graph("GET", "/me/messages", token)
        assert status == 200
    status, refreshed = await env.token_post({"grant_type": "refresh_token",
                                              "refresh_token": tokens["refresh_token"]})
    assert status == 400
    assert_aad(refreshed, error, code)
    fresh = await env.sign_in(box["address"])  # signing in again works
    assert (await env.graph("GET", "/me", fresh["access_token"]))[0] == 200


async def test_tenant_requiring_admin_consent(env: Env):
    box = await env.mailbox()
    tokens = await env.sign_in(box["address"])
    await env.control("POST", f"/sandbox/tenants/{box['tenant_id']}/policy", {"admin_consent_required": True})
    resp = await env.authorize(box["address"])
    assert resp.status == 302
    answer = query(resp)
    assert answer["error"] == "consent_required" and answer["state"] == "st-1"
    assert answer["error_description"].startswith("AADSTS90094:")
    status, body = await env.token_post({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 400
    assert_aad(body, "invalid_grant", 65001)
    await env.control("POST", f"/sandbox/tenants/{box['tenant_id']}/policy", {"admin_consent_required": False})
    assert (await env.authorize(box["address"])).status == 302
    assert "code" in query(await env.authorize(box["address"]))


async def test_sign_in_and_consent_page(env: Env):
    box = await env.mailbox(auto_consent=False)
    params = {"client_id": CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT, "scope": "Mail.Read",
              "state": "s", "login_hint": "nobody@contoso.example"}
    async with env.http.get(f"{env.url}/common/oauth2/v2.0/authorize", params=params) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        page = await resp.text()
    assert 'value="nobody@contoso.example"' in page and "Mail.Read" in page
    assert re.search(r"<button[^>]*>Accept</button>", page) and re.search(r"<button[^>]*>Cancel</button>", page)
    flow = re.search(r'name="flow" value="([^"]+)"', page).group(1)
    action = f"{env.url}/common/oauth2/v2.0/authorize"

    async with env.http.post(action, data={"flow": flow, "login": "nobody@contoso.example", "action": "accept"},
                             allow_redirects=False) as resp:
        assert resp.status == 200 and "AADSTS50034" in await resp.text()  # unknown address: the page says so
    async with env.http.post(action, data={"flow": flow, "login": box["address"], "action": "accept"},
                             allow_redirects=False) as resp:
        assert resp.status == 302 and query(resp)["code"] and query(resp)["state"] == "s"

    async with env.http.get(f"{env.url}/common/oauth2/v2.0/authorize", params=params) as resp:
        flow = re.search(r'name="flow" value="([^"]+)"', await resp.text()).group(1)
    async with env.http.post(action, data={"flow": flow, "login": box["address"], "action": "cancel"},
                             allow_redirects=False) as resp:
        answer = query(resp)
        assert answer["error"] == "access_denied" and answer["error_description"].startswith("AADSTS65004:")


async def test_token_endpoint_outage_fault_then_recovery(env: Env):
    box = await env.mailbox()
    tokens = await env.sign_in(box["address"])
    await env.control("POST", "/sandbox/faults", {"token_endpoint_status": 503, "token_endpoint_fail_count": 2})
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    for _ in range(2):
        status, body = await env.token_post(form)
        assert status == 503 and body["error"] == "temporarily_unavailable"
    status, body = await env.token_post(form)
    assert status == 200, body
    assert (await env.control("GET", "/sandbox/faults"))["token_endpoint_status"] is None


async def test_access_tokens_expire_after_the_configured_lifetime(env: Env):
    box = await env.mailbox()
    await env.control("POST", "/sandbox/faults", {"access_token_lifetime_s": 1})
    tokens = await env.sign_in(box["address"])
    assert tokens["expires_in"] == 1
    started = time.monotonic()

    async def expired() -> dict | None:
        status, body, _ = await env.graph("GET", "/me", tokens["access_token"])
        return body if status == 401 else None

    body = await wait_until(expired, timeout=5, what="the access token to expire")
    assert "expired" in body["error"]["message"] and time.monotonic() - started >= 0.5
