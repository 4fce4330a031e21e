"""Mailbox connections that heal themselves and say exactly when users must act."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.support.kafka_caught_up import CaughtUpTail
from tests.support.stack import Stack
from tests.support.stack import browser as stack_browser
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def connection(stack: Stack, user_id: str) -> dict:
    status, view = await stack.api("GET", f"/api/v1/users/{user_id}/connection")
    assert status == 200, view
    return view


async def test_revoked_user_becomes_reconnect_required_with_one_status_event(stack: Stack):
    tail = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "mailsync.connection-status.v1").start()
    # As at Microsoft, a password reset leaves access tokens valid until they expire (the client does not
    # declare cp1): tokens that live under the services' refresh margin make the next Graph call refresh,
    # which then fails with AADSTS50173, as it would at the latest one token lifetime after the reset.
    await stack.sandbox("POST", "/sandbox/faults", {"access_token_lifetime_s": 120})
    try:
        account = stack.new_account()
        mailbox = await stack.new_mailbox(account)
        await stack.sandbox("POST", f"/sandbox/users/{mailbox.graph_id}/revoke", {"reason": "password_reset"})
        # The next Graph call (a new mail's fetch, or recreating the removed subscription) refreshes the
        # token first; the refresh fails with AADSTS50173.
        await stack.deliver(mailbox, **{"from": "someone@client.example"})

        async def flagged() -> dict | None:
            view = await connection(stack, mailbox.user_id)
            return view if view["status"] == "reconnect_required" else None

        view = await wait_until(flagged, what="reconnect_required")
        assert view["error_code"] == "AADSTS50173" and "password" in view["reason"]
        # Outlook removed the user's subscription at the reset (subscriptionRemoved): more mail is not notified,
        # and mailsync, which cannot recreate it without a grant, leaves none behind.
        await stack.sandbox("POST", f"/sandbox/mailboxes/{mailbox.graph_id}/messages", {
            "folder": "inbox", "from": "someone.else@client.example", "to": [mailbox.address], "subject": "more",
            "body": "b", "internet_message_id": f"<{uuid.uuid4()}@test.example>"})
        status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
        assert status == 409  # more failures are not attempted ...
        marker = await tail.wait_for(connection_id=mailbox.connection_id, status="reconnect_required")
        live = (await stack.sandbox("GET", "/sandbox/subscriptions"))["value"]
        assert [s for s in live if mailbox.graph_id in s["resource"]] == []
        stats = await stack.sandbox("GET", "/sandbox/stats")
        assert stats["mailboxes"][mailbox.graph_id]["lifecycle"]["subscriptionRemoved"] == 1
        await tail.caught_up()  # every status event published so far has been read
        changes = [e for e in tail.matching(connection_id=mailbox.connection_id) if e["status"] != "connected"]
        assert [e["event_id"] for e in changes] == [marker["event_id"]]  # ...but exactly one status event

        await stack.connect(mailbox)  # reconnect heals it and keeps the connection's identity
        assert (await connection(stack, mailbox.user_id))["connection_id"] == mailbox.connection_id
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
        await tail.stop()


async def test_tenant_requiring_admin_consent_is_consent_required(stack: Stack):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account, connect=False)
    await stack.sandbox("POST", f"/sandbox/tenants/{mailbox.tenant_id}/policy", {"admin_consent_required": True})
    session = stack.session_token(mailbox.user_id, account)
    async with stack_browser(stack) as browser, browser.get(
            f"{stack.api_url}/oauth/microsoft365/start",
            params={"session": session, "csrf": stack.csrf(session), "login_hint": mailbox.address}) as resp:
        page = await resp.text()
    view = await connection(stack, mailbox.user_id)
    assert view["status"] == "consent_required" and view["error_code"] == "AADSTS90094"
    assert "administrator" in view["reason"].lower()
    assert "Administrator approval required" in page


async def test_token_endpoint_outage_changes_no_status_and_sync_resumes(stack: Stack, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "patient@client.example")
    await stack.wait_contact(contact)
    # Tokens that live under the refresh margin: every Graph call needs the token endpoint.
    await stack.sandbox("POST", "/sandbox/faults", {"access_token_lifetime_s": 120})
    try:
        mailbox = await stack.new_mailbox(account)
        await stack.sandbox("POST", "/sandbox/faults", {"token_endpoint_status": 503, "token_endpoint_fail_count": 3})
        imid = await stack.deliver(mailbox, **{"from": "patient@client.example"})
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)
        assert (await connection(stack, mailbox.user_id))["status"] == "connected"
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


async def test_tokens_are_ciphertext_in_the_database(stack: Stack, db):
    mailbox = await stack.new_mailbox(stack.new_account())
    row = await db.fetchrow("SELECT access_token_enc, refresh_token_enc FROM mailbox_connections"
                            " WHERE connection_id = $1::uuid", mailbox.connection_id)
    tokens = await stack.sandbox("POST", "/sandbox/tokens", {"user_id": mailbox.graph_id, "scopes": ["Mail.Read"]})
    for blob in (row["access_token_enc"], row["refresh_token_enc"]):
        assert blob.startswith(b"v1.k1.")
        assert tokens["access_token"].encode()[:16] not in blob
        assert not re.search(rb"eyJ[A-Za-z0-9_-]{10,}", blob)  # no JWT-looking plaintext


async def test_a_session_cannot_disconnect_another_users_mailbox(stack: Stack):
    account = stack.new_account()
    alice, bob = await stack.new_mailbox(account), await stack.new_mailbox(account)
    async with stack_browser(stack) as browser:
        async with browser.get(f"{stack.api_url}/settings/email",
                               params={"session": stack.session_token(alice.user_id, account)}) as resp:
            page = await resp.text()
            assert resp.status == 200 and alice.address in page and bob.address not in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        async with browser.post(f"{stack.api_url}/settings/email/disconnect",
                                data={"csrf": csrf, "connection_id": bob.connection_id},
                                allow_redirects=False) as resp:
            assert resp.status == 403
        async with browser.post(f"{stack.api_url}/settings/email/disconnect",
                                data={"csrf": "forged", "connection_id": alice.connection_id},
                                allow_redirects=False) as resp:
            assert resp.status == 403
        assert (await connection(stack, bob.user_id))["status"] == "connected"
        assert (await connection(stack, alice.user_id))["status"] == "connected"
        # Positive control: the same form with the page's own token, for her own mailbox, does disconnect;
        # so the 403s above were the CSRF and ownership checks, not a form that never works.
        async with browser.post(f"{stack.api_url}/settings/email/disconnect",
                                data={"csrf": csrf, "connection_id": alice.connection_id},
                                allow_redirects=False) as resp:
            assert resp.status in (302, 303) and "notice=disconnected" in resp.headers["Location"], resp.status
    assert (await connection(stack, alice.user_id))["status"] == "disconnected"
    assert (await connection(stack, bob.user_id))["status"] == "connected"


async def test_disconnect_removes_subscriptions_and_tokens(stack: Stack, db):
    mailbox = await stack.new_mailbox(stack.new_account())
    status, view = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
    assert status == 200 and view["status"] == "disconnected" and view["subscriptions"] == []
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = subs["value"] if isinstance(subs, dict) else subs
    assert not [s for s in items if mailbox.graph_id in s["resource"]]
    row = await db.fetchrow("SELECT access_token_enc, refresh_token_enc FROM mailbox_connections"
                            " WHERE connection_id = $1::uuid", mailbox.connection_id)
    assert row["access_token_enc"] is None and row["refresh_token_enc"] is None


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc"])
async def test_api_rejects_missing_or_wrong_bearer(stack: Stack, header):
    headers = {"Authorization": header} if header else {}
    async with stack.http.get(f"{stack.api_url}/api/v1/users/x/connection", headers=headers) as resp:
        assert resp.status == 401


def test_no_secret_reaches_the_service_logs(stack_processes: Stack):
    secrets = [stack_processes.env[k] for k in ("MAILSYNC_CLIENT_SECRET", "MAILSYNC_API_TOKEN",
                                                 "MAILSYNC_SESSION_SECRET")]
    secrets.append(stack_processes.env["MAILSYNC_TOKEN_KEYS"].split(":", 1)[1])
    for proc in stack_processes.procs.values():
        text = proc.log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret appears in {proc.name}'s log"
        assert not re.search(r"(access|refresh)_token[\"']?\s*[:=]\s*[\"']?[A-Za-z0-9._-]{20,}", text), proc.name
