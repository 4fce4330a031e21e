"""Chaos: processes die mid-work; afterwards every message from a contact is exactly one engagement
and one engagement.created (distinct event ids per engagement)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.procs import MAILSYNC, Proc, free_port
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

MESSAGES = 40


async def assert_exactly_once(stack: Stack, db, tail, account: str, imids: list[str]) -> None:
    for imid in imids:
        await tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=90)
    rows = await db.fetch("SELECT internet_message_id, count(*) AS n FROM engagements WHERE account_id = $1"
                          " GROUP BY internet_message_id", account)
    assert {r["internet_message_id"]: r["n"] for r in rows} == dict.fromkeys(imids, 1)
    await tail.poll()
    for imid in imids:
        ids = {e["event_id"] for e in tail.matching(type="engagement.created", internet_message_id=imid)}
        assert len(ids) == 1, (imid, ids)


async def test_matcher_killed_mid_batch(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "chaos@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    deliveries = [stack.deliver(mailbox, **{"from": "chaos@client.example", "subject": f"c{i}"})
                  for i in range(MESSAGES)]
    imids = list(await asyncio.gather(*deliveries))

    async def some_done() -> bool:
        return bool(await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account))

    await wait_until(some_done, what="the first engagements", interval=0.02)
    old = stack.procs["matcher"]
    old.kill()  # kill -9: no shutdown, no commit
    port = free_port()
    stack.procs["matcher"] = Proc("matcher-restarted", [*MAILSYNC, "matcher"],
                                  {**stack.env, "MAILSYNC_HTTP_PORT": str(port)})
    stack.procs["matcher"].wait_http_ok(f"http://127.0.0.1:{port}/readyz")
    stack.ports["matcher"] = port
    await assert_exactly_once(stack, db, engagements_tail, account, imids)


async def test_half_the_graph_answers_throttled(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "throttled@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    # The renewer's first poll of a new mailbox runs at once; let it finish so the matcher's fetches
    # are what meets the throttling.
    await stack.wait_row("SELECT 1 FROM mailbox_connections WHERE connection_id = $1::uuid"
                         " AND last_polled_at IS NOT NULL AND poll_lease_until IS NULL",
                         mailbox.connection_id, what="the first delta poll")
    await stack.sandbox("POST", "/sandbox/faults", {"throttle": {"concurrent": 1}, "graph_latency_ms": 100})
    try:
        imids = list(await asyncio.gather(*(stack.deliver(mailbox, **{"from": "throttled@client.example"})
                                            for _ in range(30))))
        await assert_exactly_once(stack, db, engagements_tail, account, imids)
        stats = await stack.sandbox("GET", "/sandbox/stats")
        entry = stats["mailboxes"].get(mailbox.graph_id) or stats["mailboxes"].get(mailbox.address)
        assert entry["throttled"] > 0  # the fault bit…
        assert entry.get("early_retries", 0) == 0  # …and no request came before its Retry-After
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
