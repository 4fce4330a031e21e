"""The tenant-wide connection's own status through the real stack: tenant_connection.status on
mailsync.connection-status.v1 for each change, and a mailbox the organisation's application access policy
drops after its enrolment becoming out_of_scope, then coming back once the policy includes it again."""

from __future__ import annotations

from typing import Any

import pytest

from services.core.domain import events
from tests.support.kafka_caught_up import CaughtUpTail
from tests.support.stack import Stack
from tests.support.tenant import connection, consent, create, follow, org, tenant_view
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def test_tenant_status_changes_are_published_keyed_by_the_tenant_connection(stack: Stack):
    tail = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.CONNECTION_STATUS).start()
    try:
        account = stack.new_account()
        tenant, _ = await org(stack, account, 1)
        created = await consent(stack, account, tenant)
        tcid = created["tenant_connection_id"]
        connected = await tail.wait_for(type="tenant_connection.status", tenant_connection_id=tcid,
                                        status="connected")
        assert connected["account_id"] == account and connected["tenant_id"] == tenant
        assert connected["reason"] is None and connected["error_code"] is None and connected["event_id"]
        assert (tcid, connected) in tail.records  # keyed by tenant_connection_id

        await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy", {"revoke_admin_consent": True})
        revoked = await tail.wait_for(timeout=45, type="tenant_connection.status", tenant_connection_id=tcid,
                                      status="consent_revoked")
        assert revoked["error_code"] == "AADSTS700016" and "consent" in revoked["reason"]

        status, _ = await stack.api("DELETE", f"/api/v1/accounts/{account}/tenant-connection")
        assert status == 200
        await tail.wait_for(type="tenant_connection.status", tenant_connection_id=tcid, status="disconnected")
        await tail.caught_up()
        # One event per change: a single consent_revoked however many mailboxes and passes noticed it.
        mine = [v["status"] for k, v in tail.records if k == tcid and v.get("type") == "tenant_connection.status"]
        assert mine.count("consent_revoked") == 1 and mine[-1] == "disconnected", mine
    finally:
        await tail.stop()


async def _counts(stack: Stack, account: str, **want: int) -> dict[str, Any] | None:
    view = await tenant_view(stack, account)
    return view if all(view["mailboxes"][k] == n for k, n in want.items()) else None


async def test_a_mailbox_dropped_by_the_access_policy_is_out_of_scope_until_the_policy_includes_it(
        stack: Stack, db):
    account = stack.new_account()
    contact = await stack.add_contact(account, "buyer@client.example")
    await stack.wait_contact(contact)
    tenant, (kept, dropped) = await org(stack, account, 2)
    created = await consent(stack, account, tenant)
    tcid = created["tenant_connection_id"]
    await wait_until(lambda: _counts(stack, account, enrolled=2), timeout=30, what="both mailboxes enrolled")
    dropped_view = await connection(stack, dropped.user_id)
    dropped_id = dropped_view["connection_id"]
    await wait_until(lambda: db.fetchval("SELECT count(*) FROM subscriptions WHERE connection_id = $1::uuid",
                                         dropped_id), timeout=30, what="the dropped mailbox's subscription")

    # The administrator narrows the policy: app-only calls for `dropped` now answer 403 ErrorAccessDenied.
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy",
                        {"application_access_policy": [kept.address]})
    status, _ = await stack.api("POST", f"/api/v1/connections/{dropped_id}/sync")  # the next poll, now
    assert status == 202
    view = await wait_until(lambda: _counts(stack, account, enrolled=1, out_of_scope=1), timeout=30,
                            what="the dropped mailbox out_of_scope")
    assert view["status"] == "connected"  # the tenant connection itself is fine
    shown = await connection(stack, dropped.user_id)
    assert shown["status"] == "consent_required" and shown["error_code"] == "out_of_scope", shown
    assert "application access policy" in shown["reason"] and "administrator must add" in shown["reason"]
    assert shown["subscriptions"] == []  # never renewed: pending deletion
    assert (await connection(stack, kept.user_id))["status"] == "connected"
    checked = await db.fetchval("SELECT checked_at FROM tenant_mailboxes WHERE tenant_connection_id = $1::uuid"
                                " AND user_id = $2", tcid, dropped.user_id)

    # Mail arrives while it is out; passes before the hourly recheck leave it alone (no loop).
    missed = await stack.deliver(dropped, **{"from": "buyer@client.example", "subject": "while out of policy"})
    await db.execute("UPDATE tenant_connections SET next_sync_at = now() WHERE tenant_connection_id = $1::uuid",
                     tcid)
    await wait_until(lambda: db.fetchval("SELECT last_synced_at > $2 FROM tenant_connections"
                                         " WHERE tenant_connection_id = $1::uuid", tcid, checked),
                     timeout=30, what="an enrolment pass")
    assert await db.fetchval("SELECT checked_at FROM tenant_mailboxes WHERE tenant_connection_id = $1::uuid"
                             " AND user_id = $2", tcid, dropped.user_id) == checked
    assert (await connection(stack, dropped.user_id))["status"] == "consent_required"

    # The policy includes it again; the hourly recheck comes due (its hour passed) and re-enrols it.
    await stack.sandbox("POST", f"/sandbox/tenants/{tenant}/policy",
                        {"application_access_policy": [kept.address, dropped.address]})
    await db.execute("UPDATE tenant_mailboxes SET checked_at = checked_at - interval '61 minutes'"
                     " WHERE tenant_connection_id = $1::uuid AND user_id = $2", tcid, dropped.user_id)
    await db.execute("UPDATE tenant_connections SET next_sync_at = now() WHERE tenant_connection_id = $1::uuid",
                     tcid)
    await wait_until(lambda: _counts(stack, account, enrolled=2, out_of_scope=0), timeout=30,
                     what="the mailbox enrolled again")
    back = await connection(stack, dropped.user_id)
    assert back["status"] == "connected" and back["mode"] == "tenant" and back["connection_id"] == dropped_id, back
    await wait_until(lambda: db.fetchrow("SELECT 1 FROM engagements WHERE account_id = $1"
                                         " AND internet_message_id = $2", account, missed),
                     timeout=60, what="the mail of the gap imported")


async def test_creating_the_connection_publishes_pending_consent(stack: Stack):
    tail = await CaughtUpTail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.CONNECTION_STATUS).start()
    try:
        account = stack.new_account()
        tenant, _ = await org(stack, account, 1, verified_domains=["someone-else.example"])
        created = await create(stack, account, tenant)
        tcid = created["tenant_connection_id"]
        await tail.wait_for(type="tenant_connection.status", tenant_connection_id=tcid, status="pending_consent")
        status, _ = await follow(stack, created["admin_consent_url"])
        assert status == 400
        refused = await tail.wait_for(type="tenant_connection.status", tenant_connection_id=tcid,
                                      error_code="domain_not_verified")
        assert refused["status"] == "pending_consent" and f"{account}.example" in refused["reason"]
    finally:
        await tail.stop()
