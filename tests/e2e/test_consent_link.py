"""The link a user's settings page gives them for their IT administrator, when their organisation requires an
administrator's approval: the administrator opens it, Microsoft returns to mailsync, and the page they land on
says the approval is recorded; the user can then connect. The link carries no state (it belongs to no
tenant-wide connection), so it must not be refused as "not one mailsync made"."""

from __future__ import annotations

import html
import re
import uuid

from tests.support.stack import Stack
from tests.support.stack import browser as stack_browser


async def test_the_administrators_link_from_the_settings_page_records_consent_and_the_user_connects(stack: Stack):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False, tenant_id=str(uuid.uuid4()))
    await stack.sandbox("POST", f"/sandbox/tenants/{mailbox.tenant_id}/policy", {"admin_consent_required": True})
    session = stack.session_token(mailbox.user_id, account)
    async with stack_browser(stack) as tab:
        async with tab.get(f"{stack.api_url}/oauth/microsoft365/start",
                           params={"session": session, "csrf": stack.csrf(session),
                                   "login_hint": mailbox.address}) as resp:
            assert resp.status == 200 and "notice=refused" in str(resp.url), resp.url
        async with tab.get(f"{stack.api_url}/settings/email") as resp:
            page = await resp.text()
    found = re.search(r'id="consent-link" readonly value="([^"]+)"', page)
    assert found, "the settings page shows the administrator's link"
    link = html.unescape(found.group(1))
    # The user's tenant is not known before a successful sign-in: Microsoft's `organizations` lets the
    # administrator sign in to their own.
    assert "/adminconsent?" in link and (f"/{mailbox.tenant_id}/" in link or "/organizations/" in link), link

    # The administrator opens it in their own browser, signs in (their organisation is the user's) and accepts.
    admin = await stack.new_mailbox(account, connect=False, tenant_id=mailbox.tenant_id)
    assert stack.http is not None
    async with stack.http.get(link) as resp:
        consent_page = await resp.text()
        assert resp.status == 200, consent_page
        flow = re.search(r'name="flow" value="([^"]+)"', consent_page)
        assert flow, consent_page
        form = {"flow": html.unescape(flow.group(1)), "login": admin.address, "action": "accept"}
        async with stack.http.post(str(resp.url), data=form) as answer:
            landed = await answer.text()
            assert answer.status == 200, landed
    assert "Consent recorded" in landed and "not one mailsync made" not in landed

    # Declined: said plainly, nothing changed.
    async with stack.http.get(f"{stack.api_url}/oauth/microsoft365/admin-callback",
                              params={"error": "access_denied", "error_description": "AADSTS65004: declined"}) as resp:
        assert resp.status == 400 and "declined" in await resp.text()

    await stack.connect(mailbox)  # the user's own sign-in now succeeds
    status, view = await stack.api("GET", f"/api/v1/users/{mailbox.user_id}/connection")
    assert status == 200 and view["status"] == "connected", view
