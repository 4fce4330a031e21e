"""Hostile crm.directory.v1 records: 10,000 generated records (valid, malformed, wrong types, binary,
other tenants' ids); the matcher keeps going, poison lands in the DLQ, a later record still applies."""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core import events
from tests.support.kafka_tail import Tail
from tests.support.stack import Stack

pytestmark = [pytest.mark.e2e]

CASES = int(os.environ.get("MAILSYNC_FUZZ_CASES", "10000"))
RUN = uuid.uuid4().hex[:8]
ACCOUNTS = [f"fuzz-{RUN}-{i}" for i in range(3)]

text = st.text(max_size=30)
junk = st.one_of(st.none(), st.booleans(), st.integers(), text, st.lists(text, max_size=3))
emails = st.lists(st.one_of(st.emails().map(str), text), max_size=4)
record = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["contact.upserted", "contact.deleted"]),
                           "account_id": st.sampled_from(ACCOUNTS), "contact_id": st.sampled_from(["c1", "c2", "c3"]),
                           "client_id": st.one_of(st.none(), st.just("k1"), junk), "emails": st.one_of(emails, junk)}),
    st.fixed_dictionaries({"type": st.sampled_from(["user.upserted", "user.deleted"]),
                           "account_id": st.sampled_from(ACCOUNTS), "user_id": st.sampled_from(["u1", "u2"]),
                           "email": st.one_of(st.emails().map(str), junk), "aliases": st.one_of(emails, junk)}),
    st.fixed_dictionaries({"type": st.just("client.upserted"), "account_id": st.sampled_from(ACCOUNTS),
                           "client_id": st.just("k1"), "name": junk,
                           "domains": st.one_of(st.lists(st.one_of(st.sampled_from(["acme.example", "bad domain"]),
                                                                   text), max_size=3), junk)}),
    st.fixed_dictionaries({"type": st.just("blocklist.upserted"), "account_id": st.sampled_from(ACCOUNTS),
                           "entries": st.one_of(emails, junk)}),
    st.dictionaries(text, junk, max_size=4),
)
raw = st.one_of(record.map(lambda r: json.dumps(r).encode()), st.binary(max_size=40))


def test_ten_thousand_hostile_directory_records(stack_processes: Stack):
    corpus: list[bytes] = []

    @settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(raw)
    def collect(value: bytes) -> None:
        corpus.append(value)

    collect()
    assert len(corpus) >= CASES
    asyncio.run(_publish_and_check(stack_processes, corpus))


async def _publish_and_check(stack: Stack, corpus: list[bytes]) -> None:
    bootstrap = stack.env["MAILSYNC_KAFKA_BOOTSTRAP"]
    dlq = await Tail(bootstrap, "crm.directory.v1.dlq").start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for i, value in enumerate(corpus):
            await producer.send("crm.directory.v1", value, key=ACCOUNTS[i % len(ACCOUNTS)].encode())
        marker = f"marker-{RUN}"
        await producer.send_and_wait("crm.directory.v1", events.encode(events.envelope("contact.upserted", {
            "contact_id": marker, "account_id": ACCOUNTS[0], "client_id": None,
            "emails": ["marker@fuzz.example"]})), key=ACCOUNTS[0].encode())
    finally:
        await producer.stop()
    import asyncpg

    conn = await asyncpg.connect(stack.env["MAILSYNC_DATABASE_URL"])
    try:
        for _ in range(600):  # up to 5 minutes for 10,000 records on 2 cores
            if await conn.fetchval("SELECT 1 FROM contacts WHERE contact_id = $1", marker):
                break
            await asyncio.sleep(0.5)
        else:
            raise AssertionError("the directory consumer did not reach the record after the fuzz")
        leaked = await conn.fetchval(
            "SELECT count(*) FROM contacts WHERE contact_id IN ('c1', 'c2', 'c3') AND account_id NOT LIKE 'fuzz-%'")
        assert leaked == 0
    finally:
        await conn.close()
    await dlq.poll()
    dead = [v for _, v in dlq.records if v.get("topic") == "crm.directory.v1"]
    assert dead and all(v["error"] for v in dead)  # poison was refused with a reason, and the consumer went on
    await dlq.stop()
