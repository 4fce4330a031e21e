"""README promises that had no test: lifecycle events, engagement paging, the notifications DLQ, the
directory events that change matching, the back-fill windows and the per-mailbox Graph concurrency.

Every "nothing happened" assertion here comes after a positive control that shows the same path did
work (a later record on the same partition processed, the job finished, the sibling message matched)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.core.domain import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Mailbox, Stack, quiet
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def contact_and_mailbox(stack: Stack, *addresses: str) -> tuple[str, list[str], Mailbox]:
    account = stack.new_account()
    contacts = [await stack.add_contact(account, a) for a in addresses]
    for contact in contacts:
        await stack.wait_contact(contact)
    return account, contacts, await stack.new_mailbox(account)


async def decision_of(db, user_id: str, imid: str, timeout: float = 20.0):
    return await wait_until(lambda: db.fetchrow(
        "SELECT * FROM match_decisions WHERE user_id = $1 AND message_key = $2", user_id, imid),
        timeout=timeout, what=f"a decision on {imid}")


def codes(decision) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


async def mailbox_stats(stack: Stack, mailbox: Mailbox) -> dict[str, Any]:
    stats = await stack.sandbox("GET", "/sandbox/stats")
    return stats.get("mailboxes", {}).get(mailbox.graph_id, {})


async def subscription_of(stack: Stack, mailbox: Mailbox) -> dict[str, Any]:
    live = await stack.sandbox("GET", "/sandbox/subscriptions")
    return next(s for s in live["value"] if mailbox.graph_id in s["resource"])


# --- lifecycle events ------------------------------------------------------------------------------

async def test_reauthorization_required_renews_with_a_fresh_token_and_catches_up(stack: Stack, db,
                                                                                 engagements_tail):
    """The subscription's authorization had lapsed (the token it held expired): Graph paused delivery, so
    the PATCH that reauthorizes it is followed by a catch-up poll; and push works again after it."""
    _account, (contact,), mailbox = await contact_and_mailbox(stack, "reauth@client.example")
    await quiet(stack, db, mailbox)
    sub = await subscription_of(stack, mailbox)
    await db.execute("UPDATE subscriptions SET authorized_until = now() - interval '5 minutes'"
                     " WHERE subscription_id = $1", sub["id"])
    renewals = (await mailbox_stats(stack, mailbox)).get("subscription_renewals", 0)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})  # its push is lost
    try:
        imid = await stack.deliver(mailbox, **{"from": "reauth@client.example", "subject": "while paused"})
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    sent = await stack.sandbox("POST", "/sandbox/lifecycle",
                               {"subscription_id": sub["id"], "event": "reauthorizationRequired"})
    assert sent["sent"] is True

    async def reauthorized() -> dict[str, Any] | None:
        now = await subscription_of(stack, mailbox)
        return now if not now["paused"] else None

    # Graph resumes delivery only after a PATCH with a valid token: that is the renewal.
    await wait_until(reauthorized, timeout=40, what="the subscription reauthorized (PATCHed)")
    assert (await mailbox_stats(stack, mailbox))["subscription_renewals"] == renewals + 1
    row = await stack.wait_row("SELECT renewed_at, authorized_until FROM subscriptions WHERE subscription_id = $1"
                               " AND renewed_at IS NOT NULL", sub["id"], what="the renewal recorded")
    assert row["renewed_at"] > datetime.now(UTC) - timedelta(minutes=1)
    assert row["authorized_until"] is None or row["authorized_until"] > datetime.now(UTC)
    # The mail whose notification was lost comes in by the catch-up poll (the next regular one is a day away).
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
    assert event["source"] == "delta" and event["contact_ids"] == [contact]
    pushed = await stack.deliver(mailbox, **{"from": "reauth@client.example", "subject": "after"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=pushed, timeout=40)
    assert event["source"] == "webhook"  # delivery resumed


async def test_a_missed_lifecycle_event_runs_a_catch_up_poll(stack: Stack, db, engagements_tail):
    _account, (contact,), mailbox = await contact_and_mailbox(stack, "missed@client.example")
    await quiet(stack, db, mailbox)
    sub = await subscription_of(stack, mailbox)
    before = await mailbox_stats(stack, mailbox)
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        imid = await stack.deliver(mailbox, **{"from": "missed@client.example", "subject": "missed"})

        async def dropped() -> bool:
            counts = (await mailbox_stats(stack, mailbox))["notifications"]
            return counts["dropped"] > before["notifications"]["dropped"]

        await wait_until(dropped, what="the message's notification dropped")  # only a poll can find it now
        await stack.sandbox("POST", "/sandbox/lifecycle", {"subscription_id": sub["id"], "event": "missed"})
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["source"] == "delta" and event["contact_ids"] == [contact]
        # `missed` asks for a catch-up, not a renewal.
        assert (await mailbox_stats(stack, mailbox))["subscription_renewals"] == before["subscription_renewals"]
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


# --- engagement paging -----------------------------------------------------------------------------

async def test_contact_engagements_page_newest_first_with_next_before(stack: Stack, db, engagements_tail):
    _account, (contact,), mailbox = await contact_and_mailbox(stack, "pages@client.example")
    # Seven messages, two of them at the very same instant (the cursor must break the tie).
    tie = ago(minutes=30)
    stamps = [ago(minutes=50), ago(minutes=40), tie, tie, ago(minutes=20), ago(minutes=10), ago(minutes=5)]
    imids = [await stack.deliver(mailbox, received_at=at, sent_at=at, **{"from": "pages@client.example",
                                                                         "subject": f"page {i}"})
             for i, at in enumerate(stamps)]
    for imid in imids:
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)

    seen: list[dict[str, Any]] = []
    pages = 0
    cursor: str | None = None
    while True:
        path = f"/api/v1/contacts/{contact}/engagements?limit=3" + (f"&before={cursor}" if cursor else "")
        status, page = await stack.api("GET", path)
        assert status == 200, page
        pages += 1
        assert len(page["engagements"]) <= 3
        seen += page["engagements"]
        cursor = page["next_before"]
        if cursor is None:
            break
        assert len(page["engagements"]) == 3 and pages < 5
    assert pages == 3  # 3 + 3 + 1
    ids = [e["engagement_id"] for e in seen]
    assert len(ids) == len(set(ids)) == 7  # no duplicates, none missing
    assert sorted(e["internet_message_id"] for e in seen) == sorted(imids)
    keys = [(datetime.fromisoformat(e["occurred_at"]), e["engagement_id"]) for e in seen]
    assert keys == sorted(keys, reverse=True)  # newest first, ties in a stable order
    assert [e["internet_message_id"] for e in seen[:2]] == [imids[6], imids[5]]
    assert seen[-1]["internet_message_id"] == imids[0]

    status, error = await stack.api("GET", f"/api/v1/contacts/{contact}/engagements?before=not-a-cursor")
    assert status == 400 and error["error"]["message"]


# --- the notifications DLQ -------------------------------------------------------------------------

async def test_an_unprocessable_notification_ends_in_the_dlq_and_the_matcher_keeps_going(stack: Stack,
                                                                                          engagements_tail):
    _account, (contact,), mailbox = await contact_and_mailbox(stack, "dlq@client.example")
    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.dlq(events.NOTIFICATIONS)).start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["MAILSYNC_KAFKA_BOOTSTRAP"])
    await producer.start()
    try:
        key = mailbox.connection_id.encode()  # the same partition as this mailbox's real notifications
        not_json = b'{"type": "message.changed", "connection_id": ' + key + b"}"
        no_message_id = events.encode(events.envelope("message.changed", {
            "connection_id": mailbox.connection_id, "change_type": "created", "source": "webhook"}))
        for value in (not_json, no_message_id):
            await producer.send_and_wait(events.NOTIFICATIONS, value, key=key)
        # Positive control: a real notification behind them on the same partition is still processed.
        imid = await stack.deliver(mailbox, **{"from": "dlq@client.example"})
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["contact_ids"] == [contact]

        async def dead() -> list[dict[str, Any]]:
            await dlq.poll()
            return [v for _, v in dlq.records if v.get("key") == mailbox.connection_id]

        records = await wait_until(lambda: _at_least(dead, 2), what="both records in the DLQ")
        assert len(records) == 2
        for record in records:
            assert record["type"] == "dlq.record" and record["topic"] == events.NOTIFICATIONS
            assert isinstance(record["offset"], int) and record["error"]
        unparsable = next(r for r in records if r["value"] == not_json.decode())  # kept as it was, byte for byte
        assert "JSON" in unparsable["error"]
        incomplete = next(r for r in records if r is not unparsable)
        assert json.loads(incomplete["value"]) == json.loads(no_message_id) and "message_id" in incomplete["error"]
    finally:
        await producer.stop()
        await dlq.stop()


async def _at_least(probe, n: int) -> list[dict[str, Any]]:
    found = await probe()
    return found if len(found) >= n else []


# --- directory events through Kafka ----------------------------------------------------------------

async def test_blocklist_upserted_through_kafka_stops_matching_and_lifting_it_rematches(stack: Stack, db,
                                                                                       engagements_tail):
    account, (blocked, by_domain, fine), mailbox = await contact_and_mailbox(
        stack, "blocked@client.example", "anyone@blocked-domain.example", "fine@client.example")
    await quiet(stack, db, mailbox)  # no poll may decide the held-back mail again: only the rematch does
    await stack.publish_directory(events.envelope("blocklist.upserted", {
        "account_id": account, "entries": ["Blocked@Client.EXAMPLE", "@Blocked-Domain.example"]}))
    await wait_until(lambda: db.fetchval("SELECT count(*) = 2 FROM blocklist_entries WHERE account_id = $1", account),
                     what="the blocklist applied")

    by_address = await stack.deliver(mailbox, **{"from": "blocked@client.example"})
    in_domain = await stack.deliver(mailbox, **{"from": "anyone@blocked-domain.example"})
    control = await stack.deliver(mailbox, **{"from": "fine@client.example"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=control)
    assert event["contact_ids"] == [fine]  # the same path, unblocked, does match

    first = await decision_of(db, mailbox.user_id, by_address)
    second = await decision_of(db, mailbox.user_id, in_domain)
    assert first["decision"] == "not_matched" and "blocklisted_address" in codes(first)
    assert second["decision"] == "not_matched" and "blocklisted_domain" in codes(second)
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == 1

    # Lifting the block: the mail it held back is decided again and becomes engagements.
    await stack.publish_directory(events.envelope("blocklist.upserted", {"account_id": account, "entries": []}))
    for imid, contact in ((by_address, blocked), (in_domain, by_domain)):
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
        assert event["contact_ids"] == [contact] and event["source"] == "rematch"


async def test_account_upserted_through_kafka_turns_domain_matching_on(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    client = f"client-{uuid.uuid4().hex[:8]}"
    await stack.publish_directory(events.envelope("client.upserted", {
        "client_id": client, "account_id": account, "name": "Partner", "domains": ["partner-co.example"]}))
    await stack.wait_row("SELECT 1 FROM client_domains WHERE client_id = $1", client, what="the client's domain")
    mailbox = await stack.new_mailbox(account)

    off = await stack.deliver(mailbox, **{"from": "someone@partner-co.example"})
    decision = await decision_of(db, mailbox.user_id, off)
    assert decision["decision"] == "not_matched" and "no_known_participant" in codes(decision)

    await stack.publish_directory(events.envelope("account.upserted", {
        "account_id": account, "name": "Acme", "domain_matching": True}))
    await stack.wait_row("SELECT 1 FROM accounts WHERE account_id = $1 AND domain_matching", account,
                         what="domain matching on")
    on = await stack.deliver(mailbox, **{"from": "someone.else@partner-co.example"})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=on)
    assert event["client_ids"] == [client] and event["contact_ids"] == []
    assert codes(await decision_of(db, mailbox.user_id, on))[0] == "client_domain"


async def test_user_deleted_through_kafka_is_no_longer_a_colleague(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    mailbox = await stack.new_mailbox(account)
    leaver = await stack.new_mailbox(account, connect=False)  # a colleague, in the directory
    contact = await stack.add_contact(account, leaver.address)  # ...who is also a contact's address
    await stack.wait_contact(contact)

    while_employed = await stack.deliver(mailbox, **{"from": leaver.address})
    decision = await decision_of(db, mailbox.user_id, while_employed)
    assert decision["decision"] == "not_matched" and "internal_only" in codes(decision)

    await stack.publish_directory(events.envelope("user.deleted", {"user_id": leaver.user_id, "account_id": account}))
    await stack.wait_row("SELECT 1 FROM users WHERE user_id = $1 AND deleted_at IS NOT NULL", leaver.user_id,
                         what="the user deleted")
    after = await stack.deliver(mailbox, **{"from": leaver.address})
    event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=after)
    assert event["contact_ids"] == [contact]


# --- back-fill windows -----------------------------------------------------------------------------

async def test_a_first_connection_imports_the_last_24_hours_only(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "firstday@client.example")
    await stack.wait_contact(contact)
    fresh = await stack.new_mailbox(account, connect=False)  # mail arrived before the user ever connected
    inside = [await stack.deliver(fresh, received_at=ago(hours=h), **{"from": "firstday@client.example"})
              for h in (23, 2)]
    outside = [await stack.deliver(fresh, received_at=ago(hours=h), **{"from": "firstday@client.example"})
               for h in (26, 40, 24 * 5)]
    fresh.connection_id = await stack.connect(fresh)
    for imid in inside:
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=40)
        assert event["contact_ids"] == [contact] and event["source"] in ("backfill", "delta")
    job = await db.fetchrow("SELECT * FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backfill'",
                            fresh.connection_id)
    assert abs((job["until"] - job["since"]) - timedelta(hours=24)) < timedelta(minutes=1)
    await quiet(stack, db, fresh)  # the back-fill and the first poll are both over
    for imid in outside:
        assert await db.fetchval("SELECT count(*) FROM match_decisions WHERE user_id = $1 AND message_key = $2",
                                 fresh.user_id, imid) == 0, f"mail older than 24 h was imported ({imid})"
    await engagements_tail.poll()
    assert not [v for _, v in engagements_tail.records if v.get("internet_message_id") in outside]


async def test_a_reconnect_imports_the_gap_up_to_60_days(stack: Stack, db, engagements_tail):
    _account, (contact,), mailbox = await contact_and_mailbox(stack, "longgone@client.example")
    await quiet(stack, db, mailbox)
    status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/disconnect")
    assert status == 200
    # Last successful sync 90 days ago; mail kept arriving all along.
    await db.execute("UPDATE mailbox_connections SET last_synced_at = now() - interval '90 days'"
                     " WHERE connection_id = $1::uuid", mailbox.connection_id)
    inside = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "longgone@client.example"})
              for d in (59, 30, 3)]
    outside = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "longgone@client.example"})
               for d in (61, 80)]
    await stack.connect(mailbox)
    for imid in inside:
        event = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)
        assert event["contact_ids"] == [contact] and event["source"] == "backfill"
    job = await db.fetchrow("SELECT * FROM sync_jobs WHERE connection_id = $1::uuid AND kind = 'backfill'"
                            " ORDER BY created_at DESC LIMIT 1", mailbox.connection_id)
    assert abs((job["until"] - job["since"]) - timedelta(days=60)) < timedelta(minutes=1)
    await wait_until(lambda: db.fetchval("SELECT status = 'done' FROM sync_jobs WHERE job_id = $1", job["job_id"]),
                     timeout=40, what="the back-fill finished")
    for imid in outside:
        assert await db.fetchval("SELECT count(*) FROM match_decisions WHERE user_id = $1 AND message_key = $2",
                                 mailbox.user_id, imid) == 0, f"mail older than 60 days was imported ({imid})"


# --- Graph concurrency per mailbox -----------------------------------------------------------------

async def test_at_most_4_graph_requests_in_flight_per_mailbox(stack: Stack, db, engagements_tail):
    _account, _contacts, mailbox = await contact_and_mailbox(stack, "burst@client.example")
    await quiet(stack, db, mailbox)
    faults = await stack.sandbox("POST", "/sandbox/faults", {"graph_latency_ms": 150})
    assert faults["throttle"]["concurrent"] == 4  # Outlook's limit: a fifth concurrent request is a 429
    try:
        before = await mailbox_stats(stack, mailbox)

        async def burst(tag: str, n: int) -> None:
            imids = await asyncio.gather(*(stack.deliver(mailbox, **{"from": "burst@client.example",
                                                                     "subject": f"{tag} {i}"}) for i in range(n)))
            for imid in imids:
                await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)

        await burst("burst", 24)
        after = await mailbox_stats(stack, mailbox)
        assert after["throttled"] == before["throttled"], "a request was throttled for concurrency"
        assert after["max_concurrent"] <= 4
        # Positive control: the same burst against a limit of 2 is throttled, so the matcher does run its 3
        # live slots side by side (the fourth is the bulk path's), and the sandbox counts what exceeds the limit.
        await stack.sandbox("POST", "/sandbox/faults", {"throttle": {"concurrent": 2}})
        await burst("over the limit", 24)  # still all delivered: 429s are retried after Retry-After
        assert (await mailbox_stats(stack, mailbox))["throttled"] > after["throttled"]
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})


async def test_at_most_4_in_flight_per_mailbox_with_the_renewer_working_the_same_mailbox(stack: Stack, db,
                                                                                          engagements_tail):
    """End to end, not per process: Outlook's limit of 4 concurrent requests is per application and
    mailbox, so the matcher's fetches and the renewer's poll and back-sync of the same mailbox share it."""
    _account, _contacts, mailbox = await contact_and_mailbox(stack, "shared.limit@client.example")
    await quiet(stack, db, mailbox)
    await stack.sandbox("POST", "/sandbox/faults", {"graph_latency_ms": 150})
    try:
        history = [await stack.deliver(mailbox, received_at=ago(days=d), **{"from": "shared.limit@client.example"})
                   for d in range(3, 40, 3)]
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=history[-1], timeout=60)
        before = await mailbox_stats(stack, mailbox)
        status, job = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/backsyncs",
                                      {"since": ago(days=45), "until": ago(days=1)})
        assert status == 202
        status, _ = await stack.api("POST", f"/api/v1/connections/{mailbox.connection_id}/sync")
        assert status == 202

        async def backsync(*states: str) -> bool:
            _, view = await stack.api("GET", f"/api/v1/backsyncs/{job['backsync_id']}")
            return view["status"] in states

        await wait_until(lambda: backsync("running", "done"), what="the back-sync started")
        imids = await asyncio.gather(*(stack.deliver(mailbox, **{"from": "shared.limit@client.example",
                                                                 "subject": f"live {i}"}) for i in range(32)))
        for imid in imids:
            await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=60)
        await wait_until(lambda: backsync("done"), timeout=60, what="the back-sync")
        after = await mailbox_stats(stack, mailbox)
        assert after["requests"] - before["requests"] > 32 + 14  # the three kinds of work did run
        assert after["throttled"] == before["throttled"], (
            f"{after['throttled'] - before['throttled']} request(s) throttled for concurrency and "
            f"{after['early_retries'] - before['early_retries']} sent before a Retry-After had elapsed")
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
