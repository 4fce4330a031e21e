"""The matcher stores a batch's messages together (one directory read, one transaction per group); a message
whose data PostgreSQL refuses still goes to the DLQ alone, and the rest of its batch is stored and announced."""

from __future__ import annotations

import uuid

import pytest

from services.core.domain import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack, quiet
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

GOOD = 6


async def test_a_message_the_database_refuses_goes_to_the_dlq_alone_and_its_batch_is_stored(
        stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "ana@batch-client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    await quiet(stack, db, mailbox)  # only the records below make the matcher read this mailbox
    await stack.sandbox("POST", "/sandbox/faults", {"notification_drop_rate": 1.0})
    try:
        created: dict[str, str] = {}  # Graph id -> internetMessageId
        for subject in [f"fine {i}" for i in range(GOOD // 2)] + ["nul \u0000 inside"] + [
                f"fine {i}" for i in range(GOOD // 2, GOOD)]:
            imid = f"<batch-{uuid.uuid4()}@batch.example>"
            message = await stack.sandbox("POST", f"/sandbox/mailboxes/{mailbox.graph_id}/messages", {
                "folder": "inbox", "from": "ana@batch-client.example", "to": [mailbox.address],
                "subject": subject, "body": "x", "internet_message_id": imid})
            created[message["id"]] = imid
    finally:
        await stack.sandbox("POST", "/sandbox/faults", {"reset": True})
    bad_id = list(created)[GOOD // 2]
    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.dlq(events.NOTIFICATIONS)).start()
    try:
        # One publish, one key: consecutive records of one partition, read by the matcher as one batch.
        assert stack.publisher is not None
        await stack.publisher.publish_many(events.NOTIFICATIONS, [(mailbox.connection_id, events.envelope(
            "message.changed", {"connection_id": mailbox.connection_id, "account_id": account, "message_id": m,
                                "change_type": "created", "source": "delta"})) for m in created])

        async def refused() -> list[dict]:
            await dlq.poll()
            return [r for r in dlq.matching(type="dlq.record") if bad_id in r["value"]]

        [record] = await wait_until(refused, timeout=60, what="the refused message in the DLQ")
        assert record["error"].startswith("refused by the database"), record["error"]
    finally:
        await dlq.stop()

    good = [imid for graph_id, imid in created.items() if graph_id != bad_id]
    for imid in good:
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
    rows = await db.fetch("SELECT message_key, decision FROM match_decisions WHERE connection_id = $1::uuid",
                          mailbox.connection_id)
    assert sorted((r["message_key"], r["decision"]) for r in rows) == sorted((i, "matched") for i in good)
    assert await db.fetchval("SELECT count(*) FROM engagements WHERE account_id = $1", account) == GOOD
