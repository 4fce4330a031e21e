"""Chaos: processes die mid-work; afterwards every message from a contact is exactly one engagement,
every engagement was published, and each one by exactly one distinct engagement.created event (copies
of the same event id are redeliveries, allowed and counted; a second different event is a double).

The kill is proven to have landed mid-batch: at the moment of the kill -9 there were engagements whose
rows were committed but not yet marked published. A kill that misses is retried with a new wave."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.exactly_once import audit_engagements, unpublished
from tests.support.kafka_tail import group_lag
from tests.support.procs import MAILSYNC, Proc, free_port
from tests.support.stack import Mailbox, Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

MESSAGES = 40
KILL_ATTEMPTS = 4
# Every Graph request takes this long during the kill test: a batch of 40 messages (4 fetches in flight
# per mailbox) then spends seconds between its first committed engagement and its publication.
GRAPH_LATENCY_MS = 150


async def deliver_wave(stack: Stack, mailbox: Mailbox, sender: str, tag: str, n: int) -> list[str]:
    return list(await asyncio.gather(*(stack.deliver(mailbox, **{"from": sender, "subject": f"{tag}-{i}"})
                                       for i in range(n))))


async def redeliver_all(stack: Stack, mailbox: Mailbox) -> int:
    """Sends the webhook, as Graph would on a redelivery, one genuine `created` notification for every
    message in the mailbox; returns how many."""
    subs = await stack.sandbox("GET", "/sandbox/subscriptions")
    sub = next(s for s in (subs["value"] if isinstance(subs, dict) else subs) if mailbox.graph_id in s["resource"])
    messages = (await stack.sandbox("GET", f"/sandbox/mailboxes/{mailbox.graph_id}/messages"))["value"]
    items = [{"subscriptionId": sub["id"], "clientState": sub["clientState"],
              "tenantId": sub.get("tenantId") or mailbox.tenant_id, "changeType": "created",
              "resource": f"Users/{mailbox.graph_id}/Messages/{m['id']}",
              "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "id": m["id"]}} for m in messages]
    assert stack.http is not None
    for i in range(0, len(items), 50):
        async with stack.http.post(f"{stack.api_url}/graph/notifications", json={"value": items[i:i + 50]}) as resp:
            assert resp.status == 202, await resp.text()
    return len(items)


def restart_matcher(stack: Stack) -> None:
    port = free_port()
    stack.procs["matcher"] = Proc("matcher-restarted", [*MAILSYNC, "matcher"],
                                  {**stack.env, "MAILSYNC_HTTP_PORT": str(port)})
    stack.procs["matcher"].wait_http_ok(f"http://127.0.0.1:{port}/readyz")
    stack.ports["matcher"] = port


async def test_matcher_killed_mid_batch(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "chaos@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    group = stack.env.get("MAILSYNC_MATCHER_GROUP", "mailsync-matcher")
    bootstrap = stack.env["MAILSYNC_KAFKA_BOOTSTRAP"]
    imids: list[str] = []
    evidence: dict[str, object] | None = None
    misses = 0
    await stack.sandbox("POST", "/sandbox/faults", {"graph_latency_ms": GRAPH_LATENCY_MS})
    try:
        for attempt in range(KILL_ATTEMPTS):
            imids += await deliver_wave(stack, mailbox, "chaos@client.example", f"a{attempt}", MESSAGES)

            async def window_open() -> list[str]:
                return await unpublished(db, account)

            try:
                await wait_until(window_open, timeout=30, interval=0.01, what="a committed, unpublished engagement")
            except AssertionError:
                misses += 1  # the whole wave went through between two looks: try again
                continue
            stack.procs["matcher"].kill()  # kill -9: no shutdown, no publish, no commit
            # Nothing publishes engagements while the matcher is dead: this is the state the kill left.
            at_kill = await unpublished(db, account)
            lag = await group_lag(bootstrap, group, "mailsync.notifications.v1")
            await engagements_tail.poll()
            on_kafka = {v.get("engagement_id") for v in engagements_tail.matching(type="engagement.created")}
            restart_matcher(stack)
            if at_kill:
                evidence = {"attempt": attempt + 1, "unpublished_at_kill": len(at_kill),
                            "of_those_already_on_kafka": len(set(at_kill) & on_kafka), "group_lag_at_kill": lag,
                            "stored_at_kill": await db.fetchval(
                                "SELECT count(*) FROM engagements WHERE account_id = $1", account)}
                break
            misses += 1
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    assert evidence is not None, f"the kill never landed mid-batch in {KILL_ATTEMPTS} attempts ({misses} missed)"
    assert evidence["group_lag_at_kill"] > 0  # records not committed: the restarted matcher sees them again
    audit = await audit_engagements(db, engagements_tail, account, imids, timeout=120)
    # Graph delivers at least once: every notification again, now that every engagement is published. A
    # matcher that announced an engagement anew on redelivery (a second, different event) fails the audit.
    again = await redeliver_all(stack, mailbox)

    async def consumed() -> bool:
        return await group_lag(bootstrap, group, "mailsync.notifications.v1") == 0

    await wait_until(consumed, timeout=90, interval=0.5, what="the redelivered notifications consumed")
    audit = await audit_engagements(db, engagements_tail, account, imids, timeout=30)
    print(f"\nmatcher kill: {evidence}; then {again} notifications delivered again; {audit.summary()}")


async def test_half_the_graph_answers_throttled(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "throttled@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    # The renewer's first poll of a new mailbox runs at once; let it finish so the matcher's fetches
    # are what meets the throttling.
    # The same goes for the back-fill a connect queues: the renewer lists the mailbox's recent mail.
    await stack.wait_row("SELECT 1 FROM mailbox_connections c WHERE connection_id = $1::uuid"
                         " AND last_polled_at IS NOT NULL AND poll_lease_until IS NULL AND NOT EXISTS"
                         " (SELECT 1 FROM sync_jobs j WHERE j.connection_id = c.connection_id"
                         "  AND j.status IN ('queued', 'running'))",
                         mailbox.connection_id, what="the first delta poll and the back-fill", timeout=60)
    await stack.sandbox("POST", "/sandbox/faults", {"throttle": {"concurrent": 1}, "graph_latency_ms": 100})
    try:
        imids = list(await asyncio.gather(*(stack.deliver(mailbox, **{"from": "throttled@client.example"})
                                            for _ in range(30))))
        audit = await audit_engagements(db, engagements_tail, account, imids, timeout=90)
        print(f"\nthrottled: {audit.summary()}")
        stats = await stack.sandbox("GET", "/sandbox/stats")
        entry = stats["mailboxes"].get(mailbox.graph_id) or stats["mailboxes"].get(mailbox.address)
        assert entry["throttled"] > 0  # the fault bit…
        assert entry.get("early_retries", 0) == 0  # …and no request came before its Retry-After
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
