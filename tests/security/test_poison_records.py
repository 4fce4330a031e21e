"""Issue 10, findings 2 and 3 replayed against the running stack: no record stops a consumer, and one
mailbox whose stored token cannot be read stops nobody else."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from services.core.domain import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack
from tests.support.wait import wait_until

pytestmark = [pytest.mark.e2e]

# Each of these once stopped a consumer loop or stalled its partition for good (RecursionError in decode;
# a lone surrogate that PostgreSQL and the DLQ encoder refuse).
POISON = (
    b"[" * 5000,
    b'{"type":"contact.upserted","v":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    b'{"type":"contact.upserted","account_id":"a","contact_id":"c","emails":["\\ud800@x.example"]}',
    b"\xff\xfe not utf-8",
)


async def _raw_producer(stack: Stack) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], acks="all")
    await producer.start()
    return producer


async def test_poison_directory_records_go_to_the_dlq_and_later_records_are_applied(stack: Stack, db):
    account = stack.new_account()
    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], events.dlq(events.DIRECTORY)).start()
    producer = await _raw_producer(stack)
    try:
        for raw in POISON:  # one partition for all: the valid records queue behind the poison
            await producer.send_and_wait(events.DIRECTORY, raw, key=account.encode())
    finally:
        await producer.stop()
    contacts = [await stack.add_contact(account, f"after-{i}@acme-{account}.example") for i in range(3)]

    async def applied() -> bool:
        return await db.fetchval("SELECT count(*) FROM contacts WHERE contact_id = ANY($1)", contacts) == 3

    await wait_until(applied, timeout=30, what="the valid records published after the poison")
    reasons = [r["error"] for r in (await wait_until(lambda: _dlq_for(dlq, account, len(POISON)),
                                                     what="every poison record in the DLQ"))]
    assert sum("nests deeper" in r for r in reasons) == 2
    assert sum("lone surrogate" in r for r in reasons) == 1 and sum("not JSON" in r for r in reasons) == 1
    assert stack.procs["matcher"].popen.poll() is None  # still running: no restart was needed
    await dlq.stop()


async def _dlq_for(dlq: Tail, key: str, count: int) -> list[dict] | None:
    await dlq.poll()
    mine = [v for k, v in dlq.records if k == key]
    return mine if len(mine) >= count else None


async def test_poison_notifications_do_not_stop_the_matcher(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, f"jane@acme-{account}.example")
    await stack.wait_contact(contact)
    mailbox = await stack.new_mailbox(account)
    producer = await _raw_producer(stack)
    try:
        for raw in POISON:  # keyed like real notifications: the same partition as the mail below
            await producer.send_and_wait(events.NOTIFICATIONS, raw, key=mailbox.connection_id.encode())
    finally:
        await producer.stop()
    imids = [await stack.deliver(mailbox, **{"from": f"jane@acme-{account}.example", "subject": f"after {i}"})
             for i in range(3)]
    for imid in imids:
        await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)
    assert stack.procs["matcher"].popen.poll() is None


async def test_an_unreadable_token_marks_its_connection_and_stops_nobody_else(stack: Stack, db, engagements_tail):
    account = stack.new_account()
    contact = await stack.add_contact(account, f"jane@acme-{account}.example")
    await stack.wait_contact(contact)
    broken, healthy = await stack.new_mailbox(account), await stack.new_mailbox(account)
    sealed = await db.fetchrow("SELECT access_token_enc, refresh_token_enc FROM mailbox_connections"
                               " WHERE connection_id = $1::uuid", broken.connection_id)
    # As if the key these blobs were sealed with had been dropped before `rotate-keys` finished.
    await db.execute(
        """UPDATE mailbox_connections SET access_token_enc = overlay(access_token_enc placing 'zz' from 4 for 2),
                  refresh_token_enc = overlay(refresh_token_enc placing 'zz' from 4 for 2)
            WHERE connection_id = $1::uuid""", broken.connection_id)

    lost = await stack.deliver(broken, **{"from": f"jane@acme-{account}.example", "subject": "to the broken one"})

    async def marked() -> bool:
        row = await db.fetchrow("SELECT status, error_code FROM mailbox_connections WHERE connection_id = $1::uuid",
                                broken.connection_id)
        return (row["status"], row["error_code"]) == ("reconnect_required", "token_unreadable")

    await wait_until(marked, timeout=30, what="the connection marked token_unreadable")
    status, view = await stack.api("GET", f"/api/v1/users/{broken.user_id}/connection")
    assert status == 200 and "Reconnect" in view["reason"]
    decision = await stack.wait_row(
        "SELECT reasons FROM match_decisions WHERE user_id = $1 AND decision = 'not_seen'", broken.user_id,
        what="the message recorded as not seen (it is imported on reconnect)")
    assert "not_connected" in str(decision["reasons"])
    assert not await db.fetchval("SELECT 1 FROM engagements WHERE internet_message_id = $1", lost)
    # Positive control: the colleague's mail, behind it on the same topic, still becomes an engagement.
    imid = await stack.deliver(healthy, **{"from": f"jane@acme-{account}.example", "subject": f"ok {uuid.uuid4()}"})
    await engagements_tail.wait_for(type="engagement.created", internet_message_id=imid, timeout=30)

    # The key comes back (the blobs readable again, as after a rollout reaches the last replica): the
    # renewer heals the connection by itself and the catch-up poll imports the mail of the gap.
    await db.execute("UPDATE mailbox_connections SET access_token_enc = $2, refresh_token_enc = $3"
                     " WHERE connection_id = $1::uuid", broken.connection_id, sealed["access_token_enc"],
                     sealed["refresh_token_enc"])
    await engagements_tail.wait_for(type="engagement.created", internet_message_id=lost, timeout=60)
    status, view = await stack.api("GET", f"/api/v1/users/{broken.user_id}/connection")
    assert status == 200 and view["status"] == "connected" and view["error_code"] is None, view

