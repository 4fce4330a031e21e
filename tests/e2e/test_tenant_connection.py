"""The tenant-wide connection through the real stack (issue 13): an administrator consents once through
the sandbox's admin consent page, and the account's mailboxes are synced without anyone signing in."""

from __future__ import annotations

import csv
import io
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import jwt
import pytest

from mailsync_sandbox.app_certificate import certificate_pem, ensure_app_certificate
from tests.support.private_infra import private_stack
from tests.support.stack import Mailbox, Stack, browser, local_tls
from tests.support.tenant import org as _org
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def _create(stack: Stack, account: str, tenant: str) -> dict[str, Any]:
    status, body = await stack.api("POST", f"/api/v1/accounts/{account}/tenant-connection", {"tenant_id": tenant})
    assert status == 200, body
    assert body["status"] in ("pending_consent", "consent_revoked", "connected") and body["tenant_id"] == tenant
    return body


async def _follow(stack: Stack, url: str) -> tuple[int, str]:
    """The administrator opens the link in their own browser: the sandbox's consent page answers at once
    (auto_admin_consent) and sends them to mailsync's admin callback."""
    assert stack.http is not None
    async with stack.http.get(url) as resp:
        return resp.status, await resp.text()


async def _tenant_view(stack: Stack, account: str) -> dict[str, Any]:
    status, body = await stack.api("GET", f"/api/v1/accounts/{account}/tenant-connection")
    assert status == 200, body
    return body


async def _engagement(db, account: str, imid: str) -> Any:
    return await db.fetchrow("SELECT engagement_id FROM engagements WHERE account_id = $1"
                             " AND internet_message_id = $2", account, imid)


async def _connection(stack: Stack, user_id: str) -> dict[str, Any]:
    status, view = await stack.api("GET", f"/api/v1/users/{user_id}/connection")
    assert status == 200, view
    return view


async def test_admin_consent_syncs_every_mailbox_without_sign_in(stack: Stack, db):
    account = stack.new_account()
    contact = await stack.add_contact(account, "buyer@client.example")
    await stack.wait_contact(contact)
    tenant, boxes = await _org(stack, account, 4)
    outsider = boxes[3]
    policy = [b.address for b in boxes[:3]] + [f"support@{account}.example"]
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"application_access_policy": policy})
    await stack.sandbox("POST", "/sandbox/mailboxes", {"user_id": str(uuid.uuid4()), "tenant_id": tenant,
                                                       "address": f"support@{account}.example", "shared": True})
    status, shared = await stack.api("POST", f"/api/v1/accounts/{account}/shared-mailboxes",
                                     {"address": f"Support@{account}.example"})
    assert status == 201, shared

    created = await _create(stack, account, tenant)
    assert created["admin_consent_url"].startswith(f"{stack.sandbox_url}/{tenant}/v2.0/adminconsent?")
    status, page = await _follow(stack, created["admin_consent_url"])
    assert status == 200 and "Consent recorded" in page, page

    view = await wait_until(lambda: _enrolled(stack, account, 4), timeout=30, what="four mailboxes enrolled")
    assert view["status"] == "connected" and view["mailboxes"]["out_of_scope"] == 1, view
    for box in boxes[:3]:
        connection = await _connection(stack, box.user_id)
        assert connection["mode"] == "tenant" and connection["status"] == "connected", connection
    assert (await _connection(stack, outsider.user_id))["mode"] == "user"  # never enrolled, never retried
    await wait_until(lambda: _subscribed(stack, [b.graph_id for b in boxes[:3]]), timeout=30,
                     what="app-only subscriptions for the three users")

    # Mail to each becomes an engagement; nobody ever signed in.
    for box in boxes[:3]:
        imid = await stack.deliver(box, **{"from": "buyer@client.example", "subject": f"to {box.user_id}"})
        await wait_until(lambda imid=imid: _engagement(db, account, imid), timeout=30, what="an engagement")
    shared_box = Mailbox(user_id="", account_id=account, graph_id=await _graph_id(stack, f"support@{account}.example"),
                         address=f"support@{account}.example", tenant_id=tenant)
    imid = await stack.deliver(shared_box, **{"from": "buyer@client.example", "subject": "to support"})
    await wait_until(lambda: _engagement(db, account, imid), timeout=30, what="the shared mailbox's engagement")

    # The seed's scenario: a password reset changes nothing for a tenant-mode mailbox.
    first = boxes[0]
    await stack.sandbox("POST", f"/sandbox/users/{first.graph_id}/revoke", {"reason": "password_reset"})
    imids = [await stack.deliver(first, **{"from": "buyer@client.example", "subject": f"after reset {i}"})
             for i in range(3)]
    for imid in imids:
        await wait_until(lambda imid=imid: _engagement(db, account, imid), timeout=30, what="mail after the reset")
    assert (await _connection(stack, first.user_id))["status"] == "connected"

    # Consent revoked: one step for the tenant and every mailbox; nothing more becomes an engagement.
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"revoke_admin_consent": True})
    late = await stack.deliver(first, **{"from": "buyer@client.example", "subject": "after revocation"})
    revoked = await wait_until(lambda: _status(stack, account, "consent_revoked"), timeout=45,
                               what="consent_revoked")
    assert revoked["error_code"] == "AADSTS700016" and "consent" in revoked["reason"]
    for box in boxes[:3]:
        assert (await _connection(stack, box.user_id))["status"] == "consent_required"
    assert await _engagement(db, account, late) is None

    # Consent restored (a new link, the administrator consents again): everything missed is imported.
    renewed = await _create(stack, account, tenant)
    assert renewed["status"] == "consent_revoked"
    status, page = await _follow(stack, renewed["admin_consent_url"])
    assert status == 200 and "Consent recorded" in page, page
    await wait_until(lambda: _engagement(db, account, late), timeout=60, what="the mail of the gap imported")
    assert (await _tenant_view(stack, account))["status"] == "connected"
    for box in boxes[:3]:
        assert (await _connection(stack, box.user_id))["status"] == "connected"


async def test_new_users_are_enrolled_and_delete_stops_reading(stack: Stack, db):
    account = stack.new_account()
    tenant, boxes = await _org(stack, account, 2)
    created = await _create(stack, account, tenant)
    status, page = await _follow(stack, created["admin_consent_url"])
    assert status == 200 and "Consent recorded" in page, page
    await wait_until(lambda: _enrolled(stack, account, 2), timeout=30, what="two mailboxes enrolled")

    # A user added to the directory later is synced within a minute, without signing in.
    newcomer = await stack.new_mailbox(account, connect=False, tenant_id=tenant, auto_consent=False)
    await wait_until(lambda: _enrolled(stack, account, 3), timeout=70, what="the new user enrolled")
    assert (await _connection(stack, newcomer.user_id))["mode"] == "tenant"
    graph_ids = [b.graph_id for b in (*boxes, newcomer)]
    await wait_until(lambda: _subscribed(stack, graph_ids), timeout=30, what="their subscriptions")
    # The administrator's page lists them in tenant mode.
    admin = jwt.encode({"sub": boxes[0].user_id, "account_id": account, "exp": int(time.time()) + 600,
                        "role": "admin"}, stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")
    async with browser(stack) as tab, tab.get(f"{stack.api_url}/admin/email.csv", params={"session": admin}) as r:
        rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert r.status == 200 and {row["user_id"]: row["mode"] for row in rows} == {
        b.user_id: "tenant" for b in (*boxes, newcomer)}, rows

    # DELETE: subscriptions deleted at Graph, every mailbox disconnected, nothing more read.
    status, gone = await stack.api("DELETE", f"/api/v1/accounts/{account}/tenant-connection")
    assert status == 200 and gone["status"] == "disconnected", gone
    live = (await stack.sandbox("GET", "/sandbox/subscriptions"))["value"]
    assert not [s for s in live if s["userId"] in graph_ids]
    for box in (*boxes, newcomer):
        view = await _connection(stack, box.user_id)
        assert view["status"] == "disconnected" and view["subscriptions"] == [], view
    assert not await db.fetchval("SELECT count(*) FROM mailbox_connections WHERE account_id = $1"
                                 " AND status = 'connected'", account)


async def _enrolled(stack: Stack, account: str, n: int) -> dict[str, Any] | None:
    view = await _tenant_view(stack, account)
    return view if view["mailboxes"]["enrolled"] >= n else None


async def _status(stack: Stack, account: str, status: str) -> dict[str, Any] | None:
    view = await _tenant_view(stack, account)
    return view if view["status"] == status else None


async def _subscribed(stack: Stack, graph_ids: list[str]) -> bool:
    live = (await stack.sandbox("GET", "/sandbox/subscriptions"))["value"]
    mine = {s["userId"] for s in live if not s["delegated"]}
    return all(g in mine for g in graph_ids)


async def _graph_id(stack: Stack, address: str) -> str:
    boxes = (await stack.sandbox("GET", "/sandbox/mailboxes"))["value"]
    return next(b["user_id"] for b in boxes if b["address"] == address)


async def test_consent_from_another_tenant_is_refused_and_enrols_nobody(stack: Stack):
    account = stack.new_account()
    tenant, _ = await _org(stack, account, 1)
    other_tenant, _ = await _org(stack, stack.new_account(), 1)
    created = await _create(stack, account, tenant)
    # The link forwarded to another organisation's administrator: the consent comes back for their tenant.
    parts = urlsplit(created["admin_consent_url"])
    forged = urlunsplit(parts._replace(path=parts.path.replace(f"/{tenant}/", f"/{other_tenant}/")))
    status, page = await _follow(stack, forged)
    assert status == 400 and other_tenant in page
    view = await _tenant_view(stack, account)
    assert view["status"] == "pending_consent" and view["error_code"] == "wrong_tenant"
    assert view["mailboxes"]["enrolled"] == 0


async def test_unverified_domain_is_refused_with_a_reason(stack: Stack):
    account = stack.new_account()
    tenant, boxes = await _org(stack, account, 2, verified_domains=["someone-else.example"])
    created = await _create(stack, account, tenant)
    status, page = await _follow(stack, created["admin_consent_url"])
    assert status == 400 and f"{account}.example" in page
    view = await _tenant_view(stack, account)
    assert view["status"] == "pending_consent" and view["error_code"] == "domain_not_verified"
    assert f"{account}.example" in view["reason"] and view["mailboxes"]["enrolled"] == 0
    assert (await _connection(stack, boxes[0].user_id))["status"] == "never_connected"


async def test_state_is_single_use_and_expires(stack: Stack, db):
    account = stack.new_account()
    tenant, _ = await _org(stack, account, 1)
    created = await _create(stack, account, tenant)
    assert stack.http is not None
    async with stack.http.get(created["admin_consent_url"], allow_redirects=False) as resp:
        callback = resp.headers["Location"]
    status, page = await _follow(stack, callback)
    assert status == 200 and "Consent recorded" in page
    status, page = await _follow(stack, callback)  # replayed
    assert status == 400 and "already used" in page

    renewed = await _create(stack, account, tenant)
    state = parse_qs(urlsplit(renewed["admin_consent_url"]).query)["state"][0]
    await db.execute("UPDATE tenant_consent_states SET expires_at = now() - interval '1 second'"
                     " WHERE state_id = $1", state.split(".")[0])
    status, page = await _follow(stack, renewed["admin_consent_url"])
    assert status == 400 and "expired" in page
    tampered = callback.replace("state=", "state=x")
    status, page = await _follow(stack, tampered)
    assert status == 400


async def test_another_accounts_token_sees_nothing(stack: Stack):
    account = stack.new_account()
    tenant, _ = await _org(stack, account, 1)
    await _create(stack, account, tenant)
    token = jwt.encode({"aud": "mailsync-api", "account_id": stack.new_account(), "exp": int(time.time()) + 600},
                       stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")
    own = jwt.encode({"aud": "mailsync-api", "account_id": account, "exp": int(time.time()) + 600},
                     stack.env["MAILSYNC_SESSION_SECRET"], algorithm="HS256")
    assert stack.http is not None
    base = f"{stack.api_url}/api/v1/accounts/{account}"
    for method, path, body in (("GET", "/tenant-connection", None), ("DELETE", "/tenant-connection", None),
                               ("POST", "/tenant-connection", {"tenant_id": tenant}),
                               ("POST", "/shared-mailboxes", {"address": f"sales@{account}.example"})):
        async with stack.http.request(method, base + path, json=body,
                                      headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 404, (method, path, resp.status)
            assert (await resp.json())["error"]["code"] == "not_found"
    async with stack.http.get(base + "/tenant-connection", headers={"Authorization": f"Bearer {own}"}) as resp:
        assert resp.status == 200 and (await resp.json())["tenant_id"] == tenant


async def test_certificate_credential_through_the_services(tmp_path):
    """The recommended credential: the services sign client assertions with MAILSYNC_APP_CERT_FILE
    (azure-identity's CertificateCredential). Refused until the certificate is registered with the app,
    which the administrator-facing page says in plain words; then mail syncs without anyone signing in."""
    ca_cert, ca_key = local_tls()["ca"]
    pem = ensure_app_certificate(tmp_path, ca_cert, ca_key, "mailsync-e2e")
    async with private_stack("tenant-cert-", MAILSYNC_APP_CERT_FILE=str(pem)) as (stack, _infra):
        account = stack.new_account()
        contact = await stack.add_contact(account, "buyer@client.example")
        await stack.wait_contact(contact)
        tenant, (box,) = await _org(stack, account, 1)
        status, page = await _follow(stack, (await _create(stack, account, tenant))["admin_consent_url"])
        assert status == 400 and "application credential" in page  # certificate not registered yet
        view = await _tenant_view(stack, account)
        assert view["status"] == "pending_consent" and view["error_code"] == "AADSTS700027"

        await stack.sandbox("POST", f"/sandbox/apps/{stack.env['MAILSYNC_CLIENT_ID']}/certificates",
                            {"pem": certificate_pem(pem)})
        status, page = await _follow(stack, (await _create(stack, account, tenant))["admin_consent_url"])
        assert status == 200 and "Consent recorded" in page, page
        await wait_until(lambda: _subscribed(stack, [box.graph_id]), timeout=30, what="the app-only subscription")
        imid = await stack.deliver(box, **{"from": "buyer@client.example", "subject": "certificate"})
        assert stack.pool is not None
        await wait_until(lambda: _engagement(stack.pool, account, imid), timeout=30, what="the engagement")
        assert (await _connection(stack, box.user_id))["mode"] == "tenant"
