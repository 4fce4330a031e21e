"""The renewer makes the system complete by construction: polls, lifecycle, back-fill, back-sync."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def contact_and_mailbox(stack: Stack, address: str):
    account = stack.new_account()
    contact = await stack.add_contact(account, address)
    await stack.wait_contact(contact)
    return account, contact, await stack.new_mailbox(account)


async def test_with_every_notification_dropped_the_poll_still_finds_the_mail(stack: Stack, engagements_tail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "dropped@client.example")
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        imids = [await stack.deliver(mailbox, folder=folder, **{"from": "dropped@client.example"})
                 for folder in ("inbox", "inbox", "Clients/Acme")]
        status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
        assert status == 202
        for imid in imids:
            event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
            assert event["source"] in ("delta", "backfill") and event["contact_ids"] == [contact]
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


async def test_a_removed_subscription_is_recreated_and_the_gap_caught_up(stack: Stack, db, engagements_tail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "gap@client.example")
    old = await db.fetchval("SELECT subscription_id FROM subscriptions WHERE connection_id = $1::uuid",
                            mailbox.connection_id)
    await stack.sandbox("POST", "/sandbox/lifecycle", {"subscription_id": old, "event": "subscriptionRemoved"})
    imid = await stack.deliver(mailbox, **{"from": "gap@client.example"})  # no live subscription: no push

    new = await stack.wait_row("SELECT subscription_id FROM subscriptions WHERE connection_id = $1::uuid"
                               " AND subscription_id <> $2", mailbox.connection_id, old, what="a new subscription")
    assert new["subscription_id"] != old
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
    assert event["contact_ids"] == [contact]


async def test_reconnect_after_two_weeks_imports_the_whole_gap(stack: Stack, db, engagements_tail):
    _account, _contact, mailbox = await contact_and_mailbox(stack, "longgap@client.example")
    status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
    assert status == 200
    # The last successful sync was two weeks ago; mail kept arriving since.
    await db.execute("UPDATE mailbox_connections SET last_synced_at = now() - interval '15 days'"
                     " WHERE connection_id = $1::uuid", mailbox.connection_id)
    imids = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "longgap@client.example"})
             for d in (14, 10, 6, 2, 0.1)]
    await stack.connect(mailbox)
    for imid in imids:
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)
    job = await db.fetchrow("SELECT * FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backfill'"
                            " ORDER BY created_at DESC LIMIT 1", mailbox.connection_id)
    assert job["since"] <= datetime.now(UTC) - timedelta(days=14)


async def test_a_backsync_reports_progress_and_completes(stack: Stack, engagements_tail):
    _account, _contact, mailbox = await contact_and_mailbox(stack, "history@client.example")
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})  # only the back-sync sees them
    try:
        old = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "history@client.example"})
               for d in (40, 35, 31)]
        await stack.deliver(mailbox, received_at=ago(days=50), **{"from": "history@client.example"})  # outside
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    status, dry = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/backsyncs",
                                  {"since": ago(days=45), "until": ago(days=30), "dry_run": True})
    assert status == 202

    async def finished(backsync_id: str) -> dict | None:
        _, view = await stack.api("GET", f"/api/v1/backsyncs/{backsync_id}")
        return view if view["status"] in ("done", "failed") else None

    view = await wait_until(lambda: finished(dry["backsync_id"]), timeout=40, what="the dry run")
    assert view["status"] == "done" and view["messages_seen"] == 3 and view["estimated_total"] == 3
    await engagements_tail.poll()
    assert not [e for e in engagements_tail.records if e[1].get("internet_message_id") in old]

    status, real = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/backsyncs",
                                   {"since": ago(days=45), "until": ago(days=30)})
    view = await wait_until(lambda: finished(real["backsync_id"]), timeout=40, what="the back-sync")
    assert view["status"] == "done" and view["messages_seen"] == 3
    for imid in old:
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["source"] == "backsync"

    async def counted() -> dict | None:
        _, view = await stack.api("GET", f"/api/v1/backsyncs/{real['backsync_id']}")
        return view if view["engagements_created"] == 3 else None

    await wait_until(counted, what="three engagements counted on the back-sync")


@pytest.mark.parametrize("body", [{}, {"since": "yesterday", "until": "now"},
                                  {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}])
async def test_backsync_input_is_checked(stack: Stack, body):
    mailbox = await stack.new_mailbox(stack.new_account())
    status, error = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/backsyncs", body)
    assert status == 400 and error["error"]["message"]


async def test_an_expiring_subscription_is_renewed_before_expiry(stack: Stack, db):
    mailbox = await stack.new_mailbox(stack.new_account())
    sub = await db.fetchrow("SELECT subscription_id, expires_at FROM subscriptions WHERE connection_id = $1::uuid",
                            mailbox.connection_id)
    # It now expires in 20 minutes (inside the renewal window): the renewer must PATCH it ahead of time.
    await db.execute("UPDATE subscriptions SET expires_at = now() + interval '20 minutes' WHERE subscription_id = $1",
                     sub["subscription_id"])
    renewed = await stack.wait_row(
        "SELECT expires_at, renewed_at FROM subscriptions WHERE subscription_id = $1 AND renewed_at IS NOT NULL",
        sub["subscription_id"], what="the renewal")
    assert renewed["expires_at"] > datetime.now(UTC) + timedelta(days=2)  # the lifetime Graph granted
    live = await stack.sandbox("GET", "/sandbox/subscriptions")
    items = live["value"] if isinstance(live, dict) else live
    assert [s["id"] for s in items if s["id"] == sub["subscription_id"]]


async def test_a_renewal_answered_404_recreates_and_catches_up(stack: Stack, db, engagements_tail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "expired@client.example")
    old = await db.fetchval("SELECT subscription_id FROM subscriptions WHERE connection_id = $1::uuid",
                            mailbox.connection_id)
    await stack.sandbox("POST", f"/sandbox/subscriptions/{old}/expire")  # Graph forgot it, silently
    imid = await stack.deliver(mailbox, **{"from": "expired@client.example"})
    await db.execute("UPDATE subscriptions SET expires_at = now() + interval '5 minutes' WHERE subscription_id = $1",
                     old)
    await stack.wait_row("SELECT 1 FROM subscriptions WHERE connection_id = $1::uuid AND subscription_id <> $2",
                         mailbox.connection_id, old, what="the recreated subscription")
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
    assert event["contact_ids"] == [contact]


async def test_two_renewers_never_renew_or_poll_the_same_mailbox_twice(stack: Stack, db):
    from tests.support.procs import MAILSYNC, Proc, free_port

    port = free_port()
    second = Proc("renewer-2", [*MAILSYNC, "renewer"], {**stack.env, "MAILSYNC_HTTP_PORT": str(port)})
    try:
        second.wait_http_ok(f"http://127.0.0.1:{port}/readyz")
        account = stack.new_account()
        boxes = [await stack.new_mailbox(account) for _ in range(8)]
        ids = [b.connection_id for b in boxes]
        await wait_until(lambda: db.fetchval(
            "SELECT count(*) = 8 FROM mailbox_connections WHERE connection_id = ANY($1::uuid[])"
            " AND last_polled_at IS NOT NULL AND poll_lease_until IS NULL", ids), what="first polls")
        before_polls = await db.fetch("SELECT connection_id, last_polled_at FROM mailbox_connections"
                                      " WHERE connection_id = ANY($1::uuid[])", ids)
        stats_before = await stack.sandbox("GET", "/sandbox/stats")
        await db.execute("UPDATE subscriptions SET expires_at = now() + interval '20 minutes'"
                         " WHERE connection_id = ANY($1::uuid[])", ids)
        await db.execute("UPDATE mailbox_connections SET next_poll_at = now() WHERE connection_id = ANY($1::uuid[])",
                         ids)
        try:
            await wait_until(lambda: db.fetchval(
                "SELECT count(*) = 8 FROM subscriptions WHERE connection_id = ANY($1::uuid[])"
                " AND expires_at > now() + interval '1 day'", ids), timeout=120, what="every renewal")
        except AssertionError as exc:  # say where they stand, and what else was due, so a failure has a cause
            rows = await db.fetch(
                "SELECT s.subscription_id, s.expires_at, s.renew_lease_until, s.reauth_failed_at, c.status"
                " FROM subscriptions s JOIN mailbox_connections c USING (connection_id)"
                " WHERE s.connection_id = ANY($1::uuid[])", ids)
            due = await db.fetchval("SELECT count(*) FROM subscriptions WHERE expires_at < now() + interval '1 day'")
            raise AssertionError(f"{exc}; ours: {[dict(r) for r in rows]}; due overall: {due}") from None
        polled = {str(r["connection_id"]): r["last_polled_at"] for r in before_polls}

        async def all_polled_again() -> bool:
            rows = await db.fetch("SELECT connection_id, last_polled_at FROM mailbox_connections"
                                  " WHERE connection_id = ANY($1::uuid[]) AND poll_lease_until IS NULL", ids)
            return len(rows) == 8 and all(r["last_polled_at"] > polled[str(r["connection_id"])] for r in rows)

        await wait_until(all_polled_again, what="every second poll")
        stats_after = await stack.sandbox("GET", "/sandbox/stats")
        for box in boxes:
            renewals = _count(stats_after, box, "subscription_renewals") - _count(stats_before, box,
                                                                                   "subscription_renewals")
            assert renewals == 1, (box.graph_id, renewals)
            # An idle mailbox's second poll costs what its first one did: one page per folder, once.
            first_poll = _count(stats_before, box, "delta_requests")
            second_poll = _count(stats_after, box, "delta_requests") - first_poll
            assert second_poll == first_poll > 0, (box.graph_id, first_poll, second_poll)
    finally:
        assert second.stop() == 0


def _count(stats: dict, box, key: str) -> float:
    entry = stats.get("mailboxes", {}).get(box.graph_id, {})
    return float(entry.get(key, 0))


async def test_expired_delta_state_restarts_only_that_folder_with_a_bounded_relist(stack: Stack, db, engagements_tail):
    _account, contact, mailbox = await contact_and_mailbox(stack, "delta410@client.example")
    await stack.wait_row("SELECT 1 FROM delta_cursors WHERE connection_id = $1::uuid AND delta_link IS NOT NULL",
                         mailbox.connection_id, what="delta links from the first poll")
    await stack.sandbox("POST", "/sandbox/faults", {"expire_delta_tokens": True, "notification_drop_rate": 1.0})
    try:
        imid = await stack.deliver(mailbox, **{"from": "delta410@client.example"})
        status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
        assert status == 202
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["source"] == "delta" and event["contact_ids"] == [contact]
        restarted = await db.fetchval("SELECT sum(restarts) FROM delta_cursors WHERE connection_id = $1::uuid",
                                      mailbox.connection_id)
        assert restarted >= 1
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
