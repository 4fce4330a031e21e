"""The organisation-wide (tenant) connection on the pages, through the real stack: the panel of
/admin/email (status, plain reason, mailbox counts, a consent link created on demand with the words to send,
a form that starts the connection) and /settings/email for a user synced through the organisation."""

from __future__ import annotations

import html as htmllib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.test_self_service import Tab, admin_token, by_id, text_of
from tests.support.stack import Stack, browser
from tests.support.tenant import connection, follow, org, tenant_view
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

ADMIN = "/admin/email"


def _value(page: str, element_id: str) -> str:
    found = re.search(rf'<(?:input|textarea)[^>]*\sid="{re.escape(element_id)}"[^>]*?(?:value="([^"]*)"[^>]*)?>'
                      rf'(?:([^<]*)</textarea>)?', page, re.S)
    assert found, f"no #{element_id} in the page"
    return htmllib.unescape(found.group(1) if found.group(1) is not None else found.group(2) or "")


async def _counts(stack: Stack, account: str, **want: int) -> dict[str, Any] | None:
    view = await tenant_view(stack, account)
    return view if all(view["mailboxes"][k] == n for k, n in want.items()) else None


async def test_the_admin_panel_starts_the_connection_and_shows_status_counts_and_a_fresh_link(stack: Stack, db):
    account = stack.new_account()
    tenant, (inside, outside) = await org(stack, account, 2)
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"application_access_policy": [inside.address]})
    async with browser(stack) as member_http, browser(stack) as admin_http:
        member = await Tab.open(stack, member_http, admin_token(stack, outside.user_id, account, role="member"), ADMIN)
        status, page = await member.get(ADMIN)
        assert status == 403 and "Administrators only" in page  # unchanged for members
        status, _, page = await member.post(f"{ADMIN}/tenant", tenant_id=tenant)
        assert status == 403
        assert await db.fetchval("SELECT count(*) FROM tenant_connections WHERE account_id = $1", account) == 0

        admin = await Tab.open(stack, admin_http, admin_token(stack, inside.user_id, account), ADMIN)
        async with admin_http.get(f"{stack.api_url}{ADMIN}") as resp:
            page = await resp.text()
            assert resp.status == 200 and "script-src 'self'" in resp.headers["Content-Security-Policy"]
        assert "Connect the organisation" in by_id(page, "tenant-start") and 'id="tenant-id-input"' in page

        # The tenant id is checked; a forged form (no CSRF token) changes nothing.
        for bad in ("common", "<script>alert(1)</script>", ""):
            status, _, page = await admin.post(f"{ADMIN}/tenant", tenant_id=bad)
            assert status == 400 and "tenant id" in by_id(page, "tenant-error"), bad
            assert "<script>alert" not in page  # autoescaped where it is shown again
        status, _, _ = await admin.post(f"{ADMIN}/tenant", csrf="forged", tenant_id=tenant)
        assert status == 403
        assert await db.fetchval("SELECT count(*) FROM tenant_connections WHERE account_id = $1", account) == 0

        # Started: the answer shows a fresh link once, with the words to send.
        status, _, page = await admin.post(f"{ADMIN}/tenant", tenant_id=tenant)
        assert status == 200, page
        assert by_id(page, "tenant-status") == "Waiting for an administrator"
        link = _value(page, "tenant-link")
        assert link.startswith(f"{stack.sandbox_url}/{tenant}/v2.0/adminconsent?") and "state=" in link
        assert link in _value(page, "tenant-words") and 'data-copy="tenant-link"' in page
        state_id = parse_qs(urlsplit(link).query)["state"][0].split(".")[0]
        assert await db.fetchval("SELECT expires_at > now() + interval '23 hours' AND used_at IS NULL"
                                 " FROM tenant_consent_states WHERE state_id = $1", state_id)
        # Showing the page issues no link (states are single-use: only the form makes one).
        states = await db.fetchval("SELECT count(*) FROM tenant_consent_states WHERE account_id = $1", account)
        status, page = await admin.get(ADMIN)
        assert 'id="tenant-link"' not in page and "Create consent link" in by_id(page, "tenant-new-link")
        assert await db.fetchval("SELECT count(*) FROM tenant_consent_states WHERE account_id = $1",
                                 account) == states

        status, answer = await follow(stack, link)  # the IT administrator, in their own browser
        assert status == 200 and "Consent recorded" in answer, answer
        await wait_until(lambda: _counts(stack, account, enrolled=1, out_of_scope=1), timeout=30,
                         what="one mailbox enrolled, one outside the access policy")
        status, page = await admin.get(ADMIN)
        assert re.search(r'id="tenant-status" data-status="connected"', page), page
        assert (by_id(page, "tenant-enrolled"), by_id(page, "tenant-out-of-scope"), by_id(page, "tenant-failed")) \
            == ("1", "1", "0")
        assert 'id="tenant-new-link"' not in page and 'id="tenant-id-input"' not in page  # nothing to do
        assert "application access policy" in by_id(page, "tenant-out-of-scope-todo")
        row = re.search(rf'<tr data-user="{outside.user_id}">(.*?)</tr>', page, re.S)
        assert row and "application access policy" in text_of(row.group(1)), page
        row = re.search(rf'<tr data-user="{inside.user_id}">(.*?)</tr>', page, re.S)
        assert row and "tenant" in text_of(row.group(1))

        # Consent withdrawn: the status and its plain reason; a new link on demand brings it back.
        await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"revoke_admin_consent": True})
        await wait_until(lambda: _status(stack, account, "consent_revoked"), timeout=45, what="consent_revoked")
        status, page = await admin.get(ADMIN)
        assert by_id(page, "tenant-status") == "Consent withdrawn" and "AADSTS700016" in by_id(page, "tenant-reason")
        status, _, page = await admin.post(f"{ADMIN}/tenant", tenant_id=tenant)
        assert status == 200
        renewed = _value(page, "tenant-link")
        assert renewed != link and "state=" in renewed
        status, answer = await follow(stack, renewed)
        assert status == 200 and "Consent recorded" in answer, answer
        await wait_until(lambda: _status(stack, account, "connected"), timeout=30, what="connected again")


async def _status(stack: Stack, account: str, status: str) -> dict[str, Any] | None:
    view = await tenant_view(stack, account)
    return view if view["status"] == status else None


async def test_a_user_synced_through_the_organisation_sees_it_and_has_nothing_to_connect(stack: Stack):
    account = stack.new_account()
    tenant, (user, admin_user) = await org(stack, account, 2)
    await stack.publish_directory({"type": "user.upserted", "version": 1, "event_id": "e-" + admin_user.user_id,
                                   "occurred_at": "2026-01-01T00:00:00Z", "user_id": admin_user.user_id,
                                   "account_id": account, "email": admin_user.address, "role": "admin"})
    status, created = await stack.api("POST", f"/api/v1/accounts/{account}/tenant-connection", {"tenant_id": tenant})
    assert status == 200
    status, answer = await follow(stack, created["admin_consent_url"])
    assert status == 200 and "Consent recorded" in answer, answer
    await wait_until(lambda: _counts(stack, account, enrolled=2), timeout=30, what="both enrolled")
    async with browser(stack) as http:
        tab = await Tab.open(stack, http, stack.session_token(user.user_id, account))
        status, page = await tab.get()
        assert status == 200
        assert by_id(page, "status") == "Connected through your organisation"
        assert by_id(page, "mode") == "Your organisation's Microsoft 365 connection"
        covered = by_id(page, "tenant-covered")
        assert "nothing to connect or reconnect" in covered and admin_user.address in covered
        for control in ('id="connect"', 'id="disconnect"', 'id="consent-link"'):
            assert control not in page, control
        assert 'id="sync-now"' in page  # still useful: the mailbox is connected

        # A forged Connect changes nothing: the organisation's connection keeps syncing it.
        status, url, _ = await tab.post("/settings/email/connect")
        assert status == 200 and "notice=tenant_managed" in url
        assert (await connection(stack, user.user_id))["mode"] == "tenant"

        # Dropped by the access policy: what it means and who can change it, still no Reconnect.
        await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy",
                            {"application_access_policy": [admin_user.address]})
        view = await connection(stack, user.user_id)
        await stack.api("POST", f"/api/v1/connections/{view['connection_id']}/sync")
        await wait_until(lambda: _counts(stack, account, out_of_scope=1), timeout=30, what="out_of_scope")
        status, page = await tab.get()
        assert by_id(page, "status") == "Outside your organisation's access policy"
        assert "application access policy" in by_id(page, "reason")
        assert "administrator must add" in by_id(page, "todo")
        for control in ('id="connect"', 'id="disconnect"', 'id="consent-link"', 'id="sync-now"'):
            assert control not in page, control
