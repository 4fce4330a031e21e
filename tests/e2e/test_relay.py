"""The relay: an engagement committed but never announced (its batch failed after the commit and its record
went to the DLQ, as after a PostgreSQL crash) is published by the matcher's relay, with its stable event id."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]


async def test_an_engagement_left_unpublished_is_published_by_the_relay(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, "relay@client.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    imid = await stack.deliver(mailbox, **{"from": "relay@client.example"})
    first = await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid)
    # The matcher marks its outbox row published just after Kafka acknowledged (the consumer here may see the
    # record first): wait for that mark, or it would overwrite the NULL written below.
    await wait_until(lambda: db.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1::uuid",
                                         first["event_id"]),
                     timeout=10, what="the matcher's own published mark")
    # As a crash between the commit and the publish leaves it, and long enough ago that no batch owns it.
    await db.execute("UPDATE outbox SET published_at = NULL, created_at = now() - interval '3 minutes'"
                     " WHERE event_id = $1::uuid", first["event_id"])

    async def announced_again() -> list[dict]:
        await engagements_tail.poll()
        mine = engagements_tail.matching(type="engagement.created", engagement_id=first["engagement_id"])
        return mine if len(mine) >= 2 else []

    records = await wait_until(announced_again, timeout=45, what="the relay's publication")
    assert {r["event_id"] for r in records} == {first["event_id"]}  # the same event: consumers dedupe
    # Marked once Kafka acknowledged: the mark follows the record it confirms.
    await wait_until(lambda: db.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1::uuid",
                                         first["event_id"]),
                     timeout=10, what="the engagement marked published")
