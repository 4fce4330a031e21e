"""crm.directory.v1 → the directory tables, through the running matcher; poison goes to the DLQ."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer

from services.core.domain import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack

pytestmark = [pytest.mark.integration]


async def test_directory_records_are_applied_idempotently(stack: Stack, db):
    account = stack.new_account()
    client = f"client-{uuid.uuid4().hex[:8]}"
    contact_event = events.envelope("contact.upserted", {
        "contact_id": f"c-{uuid.uuid4().hex[:8]}", "account_id": account, "client_id": client,
        "emails": ["Jane <JANE@Acme.example>", "jane@acme.example", "j.doe@xn--mnchen-3ya.example"]})
    await stack.publish_directory(
        events.envelope("client.upserted", {"client_id": client, "account_id": account, "name": "Acme",
                                            "domains": ["Acme.example", "@münchen.example"]}),
        contact_event, contact_event)  # a redelivery changes nothing
    await stack.wait_contact(contact_event["contact_id"])
    rows = await db.fetch("SELECT address, is_primary FROM contact_addresses WHERE contact_id = $1 ORDER BY address",
                          contact_event["contact_id"])
    assert [(r["address"], r["is_primary"]) for r in rows] == [
        ("j.doe@xn--mnchen-3ya.example", False), ("jane@acme.example", True)]
    domains = await stack.wait_row("SELECT array_agg(domain ORDER BY domain) AS d FROM client_domains"
                                   " WHERE client_id = $1 HAVING count(*) > 0", client, what="client domains")
    assert domains["d"] == ["acme.example", "xn--mnchen-3ya.example"]


async def test_poison_records_go_to_the_dlq_and_the_consumer_keeps_going(stack: Stack):
    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "crm.directory.v1.dlq").start()
    producer = AIOKafkaProducer(bootstrap_servers=stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], acks="all")
    await producer.start()
    try:
        account = stack.new_account()
        marker = f"poison-{uuid.uuid4().hex[:6]}"
        for value in (b"\xff\xfe not json " + marker.encode(),
                      b'{"type": "contact.upserted", "account_id": "' + account.encode()
                      + b'", "contact_id": "nul\\u0000", "emails": ["ok@ok.example"]}',  # NUL: no text column takes it
                      events.encode({"type": "contact.upserted", "account_id": account, "contact_id": marker,
                                     "emails": ["not an address"]})):
            await producer.send_and_wait("crm.directory.v1", value, key=account.encode())
        after = await stack.add_contact(account, "fine@ok.example")
        await stack.wait_contact(after)
        dead = await dlq.wait_for(type="dlq.record", key=account)
        assert dead["topic"] == "crm.directory.v1" and dead["error"]
        await dlq.wait_for(type="dlq.record", error="emails holds 'not an address', which is not an email address")
    finally:
        await producer.stop()
        await dlq.stop()


async def test_a_record_cannot_move_a_contact_into_another_account(stack: Stack, db):
    dlq = await Tail(stack.env["MAILSYNC_KAFKA_BOOTSTRAP"], "crm.directory.v1.dlq").start()
    try:
        first, second = stack.new_account(), stack.new_account()
        contact = await stack.add_contact(first, "owner@tenant-a.example")
        await stack.wait_contact(contact)
        await stack.publish_directory(events.envelope("contact.upserted", {
            "contact_id": contact, "account_id": second, "client_id": None, "emails": ["thief@tenant-b.example"]}))
        dead = await dlq.wait_for(type="dlq.record", key=second)
        assert "belongs to another account" in dead["error"]
        rows = await db.fetch("SELECT account_id, address FROM contact_addresses WHERE contact_id = $1", contact)
        assert [(r["account_id"], r["address"]) for r in rows] == [(first, "owner@tenant-a.example")]
    finally:
        await dlq.stop()
